//! Keeps `examples/aws-iam-policy.json` complete: every EC2 and Route53 operation the code calls
//! must be allowed by one of its statements.
//!
//! The list of operations is read from the source itself, not kept by hand, because a hand list
//! goes stale exactly when someone adds a call (that is how `ec2:GetConsoleOutput` went missing
//! and the host-key read failed with `UnauthorizedOperation` on real accounts). A call is
//! `<client>.<operation>()` where the client is `self.client` / `ec2.sdk()` / a local `sdk`; the
//! service is Route53 in the files named `route53*.rs` and EC2 everywhere else in this folder.
//! Test-only module.

use std::collections::BTreeSet;

/// `snake_case` SDK method → the IAM action's operation name (`RunInstances`). IAM matches action
/// names case-insensitively, which covers Route53's `AssociateVPCWithHostedZone`.
fn operation_name(method: &str) -> String {
    method
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// How AWS operation names begin; what else a client offers (`config()`, `region()`) does not.
const VERBS: &[&str] = &[
    "allocate",
    "associate",
    "attach",
    "authorize",
    "change",
    "copy",
    "create",
    "delete",
    "deregister",
    "describe",
    "detach",
    "disable",
    "disassociate",
    "enable",
    "get",
    "import",
    "list",
    "modify",
    "put",
    "reboot",
    "register",
    "release",
    "replace",
    "revoke",
    "run",
    "start",
    "stop",
    "terminate",
    "update",
];

/// The SDK operations called in `source` (whitespace removed first, so chains split over lines
/// read as one expression).
fn calls_in(source: &str) -> BTreeSet<String> {
    let flat: String = source.chars().filter(|c| !c.is_whitespace()).collect();
    let mut ops = BTreeSet::new();
    for receiver in [".client.", "sdk().", "=sdk.", "(sdk.", "&sdk."] {
        let mut rest = flat.as_str();
        while let Some(at) = rest.find(receiver) {
            rest = &rest[at + receiver.len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            let verb = name.split('_').next().unwrap_or_default();
            if VERBS.contains(&verb) && rest[name.len()..].starts_with("()") {
                ops.insert(operation_name(&name));
            }
        }
    }
    ops
}

/// Every `service:Operation` the aws provider calls, from the files of this folder.
fn called_actions() -> BTreeSet<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/provider/aws");
    let mut actions = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).expect("src/provider/aws is readable") {
        let path = entry.expect("dir entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("rs") {
            continue;
        }
        let service = match path.file_name().and_then(|n| n.to_str()) {
            Some(n) if n.starts_with("route53") => "route53",
            // This file's own tests mention calls in strings only.
            Some("iam_policy.rs") => continue,
            _ => "ec2",
        };
        let text = std::fs::read_to_string(&path).expect("source is readable");
        // Test modules call the SDK to check results, which the policy need not allow.
        let code = text
            .split("\n#[cfg(test)]\nmod tests")
            .next()
            .unwrap_or_default();
        for op in calls_in(code) {
            actions.insert(format!("{service}:{op}"));
        }
    }
    actions
}

/// Actions granted by an `Allow` statement of `policy` (IAM JSON), lowercased.
fn allowed_actions(policy: &serde_json::Value) -> Vec<String> {
    let mut allowed = Vec::new();
    for st in policy["Statement"].as_array().into_iter().flatten() {
        if st["Effect"] != "Allow" {
            continue;
        }
        match &st["Action"] {
            serde_json::Value::String(a) => allowed.push(a.to_lowercase()),
            serde_json::Value::Array(list) => allowed.extend(
                list.iter()
                    .filter_map(|a| a.as_str())
                    .map(str::to_lowercase),
            ),
            _ => {}
        }
    }
    allowed
}

fn is_allowed(allowed: &[String], action: &str) -> bool {
    let action = action.to_lowercase();
    allowed.iter().any(|a| match a.strip_suffix('*') {
        Some(prefix) => action.starts_with(prefix),
        None => *a == action,
    })
}

const POLICY: &str = include_str!("../../../examples/aws-iam-policy.json");

#[test]
fn scanner_reads_chained_calls_across_lines() {
    let src = "let out = self\n    .client\n    .run_instances()\n    .image_id(&ami);\n\
               let o = ec2.sdk().get_console_output().send();\n\
               let v = sdk\n  .create_volume()\n  .size(1);\n\
               let _ = self.client.modify_vpc_attribute().vpc_id(x);\n\
               self.client_token.len();\n\
               let r = sdk.region();";
    let ops: Vec<String> = calls_in(src).into_iter().collect();
    assert_eq!(
        ops,
        [
            "CreateVolume",
            "GetConsoleOutput",
            "ModifyVpcAttribute",
            "RunInstances"
        ]
    );
}

#[test]
fn the_example_policy_allows_every_call_the_provider_makes() {
    let policy: serde_json::Value = serde_json::from_str(POLICY).expect("policy is JSON");
    let allowed = allowed_actions(&policy);
    let called = called_actions();
    // The scan must see the calls it exists for, or a refactoring could make it vacuous.
    for known in [
        "ec2:RunInstances",
        "ec2:GetConsoleOutput",
        "ec2:CreateVolume",
        "ec2:DescribeInstanceTypeOfferings",
        "route53:ListHostedZonesByName",
        "route53:AssociateVpcWithHostedZone",
    ] {
        assert!(called.contains(known), "scanner missed {known}: {called:?}");
    }
    let missing: Vec<&String> = called.iter().filter(|a| !is_allowed(&allowed, a)).collect();
    assert!(
        missing.is_empty(),
        "examples/aws-iam-policy.json does not allow {missing:?}"
    );
}
