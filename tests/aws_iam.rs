//! The aws flow with IAM enforced (issue 13 §1): moto_server with authorization on
//! (`INITIAL_NO_AUTH_ACTION_COUNT`), and dbctl run with the keys of a user whose only policy is
//! `examples/aws-iam-policy.json`, so an EC2 call the policy does not allow fails the test.
//!
//! moto checks the signature and the action of every request, but not a statement's
//! `Resource` or `Condition` (moto/iam/access_control.py: "TODO add support for the Resource
//! and Condition parts"; a conditional statement is even taken as a deny). So the user gets the
//! policy's Allow statements with their actions only: what this proves is that every action
//! the flow calls, forward and in its rollback, is in the policy. The conditions themselves are
//! checked against the code by `provider::aws::iam_policy`'s unit tests. moto's signature
//! check is corrected for form bodies (`tests/fixtures/moto-sigv4/`). Without machines the
//! flow ends at deploy (no host key in an emulated console), as in `tests/aws_flow.rs`; the
//! register stage's Route53 calls are not reached here.

mod support;

use support::{Env, moto, stderr};

/// Requests moto serves unauthenticated after each reset: enough for the IAM setup below; the
/// rest are used up at once ([`end_of_no_auth`]), so nothing later depends on an exact count.
const NO_AUTH_CALLS: usize = 40;

/// Access keys moto gave a user.
struct Keys {
    id: String,
    secret: String,
}

/// One IAM query-API call, made while moto does not authenticate yet (the signature is not
/// checked then; the credential scope only tells moto the service). Returns the response body.
fn iam(port: u16, params: &[(&str, &str)]) -> String {
    support::aws::query(&format!("http://127.0.0.1:{port}"), "iam", "setup", params)
}

/// Spends moto's remaining unauthenticated requests (a harmless ListUsers each) until one is
/// refused for its made-up key: from then on every request is authenticated.
fn end_of_no_auth(port: u16) {
    for _ in 0..=NO_AUTH_CALLS {
        let endpoint = format!("http://127.0.0.1:{port}");
        let listed =
            support::aws::post_query(&endpoint, "iam", "setup", &[("Action", "ListUsers")]);
        if !listed.contains("<ListUsersResponse") {
            return;
        }
    }
    panic!("moto never started authenticating");
}

fn between<'a>(text: &'a str, open: &str, close: &str) -> &'a str {
    let start = text
        .find(open)
        .unwrap_or_else(|| panic!("{open} in {text}"))
        + open.len();
    let end = text[start..].find(close).unwrap() + start;
    &text[start..end]
}

/// A user with `policy` inline, and its keys (three calls).
fn user(port: u16, name: &str, policy: &serde_json::Value) -> Keys {
    iam(port, &[("Action", "CreateUser"), ("UserName", name)]);
    iam(
        port,
        &[
            ("Action", "PutUserPolicy"),
            ("UserName", name),
            ("PolicyName", "dbctl"),
            ("PolicyDocument", &policy.to_string()),
        ],
    );
    let r = iam(port, &[("Action", "CreateAccessKey"), ("UserName", name)]);
    Keys {
        id: between(&r, "<AccessKeyId>", "</AccessKeyId>").to_string(),
        secret: between(&r, "<SecretAccessKey>", "</SecretAccessKey>").to_string(),
    }
}

/// `examples/aws-iam-policy.json` as moto can evaluate it: its Allow statements' actions, on
/// every resource, unconditionally; `drop` left out.
fn shipped_policy_actions(drop: &[&str]) -> serde_json::Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/aws-iam-policy.json"
    ))
    .unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut actions: Vec<String> = Vec::new();
    for st in doc["Statement"].as_array().unwrap() {
        assert_eq!(
            st["Effect"], "Allow",
            "a Deny statement needs its conditions: {st}"
        );
        match &st["Action"] {
            serde_json::Value::String(a) => actions.push(a.clone()),
            serde_json::Value::Array(v) => {
                actions.extend(v.iter().map(|a| a.as_str().unwrap().to_string()))
            }
            other => panic!("Action {other}"),
        }
    }
    actions.retain(|a| !drop.contains(&a.as_str()));
    actions.sort();
    actions.dedup();
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{ "Effect": "Allow", "Action": actions, "Resource": "*" }]
    })
}

/// The run's error text, in its events and step errors (`dbctl status` and `logs`).
fn run_text(env: &Env, run: &str) -> String {
    let logs = env.run(&["logs", run], None);
    let (_, status) = env.json(&["status", run]);
    format!("{}\n{status}", support::stdout(&logs))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_shipped_iam_policy_allows_every_call_of_the_flow_and_its_rollback() {
    moto::enforce_iam_after(NO_AUTH_CALLS);
    let session = moto::session().await;
    let port = moto::server().port();
    let admin = user(
        port,
        "admin",
        &serde_json::json!({
            "Version": "2012-10-17",
            "Statement": [{ "Effect": "Allow", "Action": "*", "Resource": "*" }]
        }),
    );
    let dbctl_user = user(port, "dbctl", &shipped_policy_actions(&[]));
    let no_console = user(
        port,
        "dbctl-no-console",
        &shipped_policy_actions(&["ec2:GetConsoleOutput"]),
    );
    end_of_no_auth(port);
    // From here moto authenticates every request: this process reads EC2 as the admin.
    // SAFETY: this binary's only test; its SDK clients are built after this.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", &admin.id);
        std::env::set_var("AWS_SECRET_ACCESS_KEY", &admin.secret);
    }

    let as_user = |env: &Env, keys: &Keys, args: &[&str]| {
        env.command(args, None)
            .env("AWS_ACCESS_KEY_ID", &keys.id)
            .env("AWS_SECRET_ACCESS_KEY", &keys.secret)
            .output()
            .unwrap()
    };

    // IAM is on: the test's own static keys are refused.
    let env = support::aws::env();
    let refused = env
        .command(&["create", "refused"], None)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .output()
        .unwrap();
    assert!(!refused.status.success(), "moto enforces nothing");

    // The shipped policy: the flow runs to deploy (where an emulated instance has no host
    // key), then rolls back to nothing, every call allowed.
    let env = support::aws::env();
    let out = as_user(&env, &dbctl_user, &["create", "db"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("no SSH host key in its console output"),
        "the flow reached deploy: {err}"
    );
    let run = env.last_run();
    let text = run_text(&env, &run);
    for denied in ["AccessDenied", "UnauthorizedOperation", "not authorized"] {
        assert!(!text.contains(denied), "{denied} in run {run}:\n{text}");
    }
    assert!(
        text.contains("provision.vm.primary") && text.contains("provision.disk.primary"),
        "{text}"
    );
    let left = support::aws::tagged_by_kind(&run).await;
    assert!(left.is_empty(), "rolled back as the user: {left:?}");

    // Without ec2:GetConsoleOutput (what the policy once lacked) the host-key read is refused,
    // and the failure says so; the rollback still leaves nothing.
    let env = support::aws::env();
    let out = as_user(&env, &no_console, &["create", "db"]);
    assert!(!out.status.success());
    let run = env.last_run();
    let text = format!("{}\n{}", stderr(&out), run_text(&env, &run));
    assert!(
        text.contains("GetConsoleOutput")
            && (text.contains("AccessDenied") || text.contains("UnauthorizedOperation")),
        "the missing permission is named:\n{text}"
    );
    let left = support::aws::tagged_by_kind(&run).await;
    assert!(left.is_empty(), "{left:?}");
    drop(session);
}
