//! The aws provider through the real binary against moto_server: provisioning is tagged and
//! idempotent across crashes, the deploy stage fails clearly (an emulated instance has no SSH)
//! after a bounded wait, and every failure rolls back to zero resources tagged with the run.

mod support;

use std::collections::BTreeMap;

use dbctl::provider::aws::{AwsSettings, Ec2, ResourceKind};
use support::{Env, moto, stderr, was_killed};

fn aws_env() -> Env {
    support::aws::env()
}

async fn by_kind(run: &str) -> BTreeMap<String, usize> {
    support::aws::tagged_by_kind(run).await
}

#[tokio::test(flavor = "multi_thread")]
async fn provisioning_is_tagged_deploy_fails_at_ssh_and_rollback_leaves_nothing() {
    let _moto = moto::session().await;
    let env = aws_env();
    let out = env.run(&["create", "db", "--on-failure", "keep"], None);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("deploy.packages.primary")
            && err.contains("no SSH host key in its console output after 2 s"),
        "{err}"
    );
    let run = env.last_run();
    let kinds = by_kind(&run).await;
    for k in [
        "Vpc",
        "SecurityGroup",
        "Instance",
        "Volume:provision.disk.primary",
        "KeyPair",
    ] {
        assert_eq!(kinds.get(k), Some(&1), "{kinds:?}");
    }
    // What the instance and volume look like in EC2.
    let ec2 = Ec2::connect(&AwsSettings::default()).await.unwrap();
    let (_, st) = env.json(&["status", &run]);
    let step = |n: &str| {
        st["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == n)
            .unwrap()["outputs"]
            .clone()
    };
    let iid = step("provision.vm.primary")["instance_id"]
        .as_str()
        .unwrap()
        .to_string();
    let inst = ec2
        .sdk()
        .describe_instances()
        .instance_ids(&iid)
        .send()
        .await
        .unwrap();
    let i = &inst.reservations()[0].instances()[0];
    assert_eq!(
        i.metadata_options()
            .and_then(|m| m.http_tokens())
            .map(|t| t.as_str()),
        Some("required")
    );
    assert!(
        i.tags()
            .iter()
            .any(|t| t.key() == Some("dbctl:run") && t.value() == Some(run.as_str()))
    );
    let vid = step("provision.disk.primary")["volume_id"]
        .as_str()
        .unwrap()
        .to_string();
    let vol = ec2
        .sdk()
        .describe_volumes()
        .volume_ids(&vid)
        .send()
        .await
        .unwrap();
    let v = &vol.volumes()[0];
    assert_eq!(
        (v.encrypted(), v.volume_type().map(|t| t.as_str())),
        (Some(true), Some("gp3"))
    );
    assert_eq!(v.attachments()[0].instance_id(), Some(iid.as_str()));
    let sg = step("provision.firewall")["group_id"]
        .as_str()
        .unwrap()
        .to_string();
    let groups = ec2
        .sdk()
        .describe_security_groups()
        .group_ids(&sg)
        .send()
        .await
        .unwrap();
    for p in groups.security_groups()[0].ip_permissions() {
        let open = p
            .ip_ranges()
            .iter()
            .any(|r| r.cidr_ip() == Some("0.0.0.0/0"));
        assert!(
            !(open && p.from_port() == Some(5432)),
            "5432 open to the world"
        );
        if p.from_port() == Some(22) {
            assert!(
                p.ip_ranges()
                    .iter()
                    .all(|r| r.cidr_ip() == Some("203.0.113.0/24")),
                "{p:?}"
            );
        }
    }

    let out = env.run(&["rollback", &run], None);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(by_kind(&run).await.is_empty(), "{:?}", by_kind(&run).await);

    // Without --on-failure keep, the same failure rolls back by itself.
    let out = env.run(&["create", "db2"], None);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let run2 = env.last_run();
    assert!(
        by_kind(&run2).await.is_empty(),
        "{:?}",
        by_kind(&run2).await
    );
}

// Crash, failure, retry and repeat at every provision step: tests/fault_matrix.rs.

/// The outputs of step `name` in a `dbctl status --output json` document.
fn outputs<'a>(st: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    &st["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no step {name}: {st:#}"))["outputs"]
}

/// `dbctl create -f SPEC EXTRA…` with every RunInstances in `zone` refused for capacity, as
/// EC2 refuses for as long as a zone is short.
fn short_of_capacity(env: &Env, spec: &str, zone: &str, extra: &[&str]) -> std::process::Output {
    let path = env.path("spec.toml");
    std::fs::write(&path, spec).unwrap();
    let mut args = vec!["create", "-f", path.to_str().unwrap()];
    args.extend(extra);
    env.command(&args, None)
        .env(
            "DBCTL_AWS_FAULTS",
            format!("RunInstances@{zone}=capacity*1000"),
        )
        .output()
        .unwrap()
}

/// InsufficientInstanceCapacity in the planned zone (every attempt there, as EC2 says it for
/// as long as the zone is short): the node is launched in another zone the spec allows, with a
/// subnet of the run's network there, and the data disk is made in that zone too (it could
/// not attach otherwise); the failure at deploy (no SSH on moto) then rolls back to nothing.
/// With no other zone allowed, the step fails saying why instead.
#[tokio::test(flavor = "multi_thread")]
async fn no_capacity_in_the_planned_zone_moves_the_node_and_its_disk_to_another() {
    let _moto = moto::session().await;
    let env = aws_env();
    let out = short_of_capacity(
        &env,
        "name = \"db\"\nzones = [\"us-east-1a\", \"us-east-1c\"]\n",
        "us-east-1a",
        &["--on-failure", "keep"],
    );
    assert_eq!(
        out.status.code(),
        Some(5),
        "fails only at deploy: {}",
        stderr(&out)
    );
    let err = stderr(&out);
    let run = env.last_run();
    let (_, st) = env.json(&["status", &run]);
    let vm = outputs(&st, "provision.vm.primary");
    let disk = outputs(&st, "provision.disk.primary");
    assert_eq!(vm["zone"], "us-east-1c", "moved: {err}");
    assert_eq!(disk["zone"], "us-east-1c", "the disk follows the instance");
    let logs = support::stdout(&env.run(&["logs", &run], None));
    assert!(
        logs.contains("capacity in us-east-1a; trying us-east-1c")
            && logs.contains("placed in us-east-1c instead of us-east-1a"),
        "the run's log says why: {logs}\n{err}"
    );
    let ec2 = Ec2::connect(&AwsSettings::default()).await.unwrap();
    let subnet = ec2
        .sdk()
        .describe_subnets()
        .subnet_ids(vm["subnet_id"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(
        subnet.subnets()[0].availability_zone(),
        Some("us-east-1c"),
        "a subnet of the run's network in the new zone"
    );
    let kinds = by_kind(&run).await;
    assert_eq!(kinds.get("Instance"), Some(&1), "{kinds:?}");
    assert_eq!(
        kinds.get("Volume:provision.disk.primary"),
        Some(&1),
        "{kinds:?}"
    );
    let out = env.run(&["rollback", &run], None);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(by_kind(&run).await.is_empty(), "{:?}", by_kind(&run).await);

    // The only zone the spec allows has no capacity: the step fails naming it (after the
    // saga's retries, which try the zone again), and the failed run rolls back to nothing.
    let out = short_of_capacity(
        &env,
        "name = \"one\"\nzones = [\"us-east-1a\"]\n",
        "us-east-1a",
        &[],
    );
    let err = stderr(&out);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("capacity in us-east-1a nor in any other zone"),
        "says why: {err}"
    );
    let run = env.last_run();
    assert!(by_kind(&run).await.is_empty(), "{:?}", by_kind(&run).await);
}

/// HA keeps its anti-affinity when a node moves: the planned zones are a, b and c (ties go by
/// name), b has no capacity, so its node goes to d, the one allowed zone that holds no other
/// node; each data disk is in its instance's zone.
#[tokio::test(flavor = "multi_thread")]
async fn a_moved_ha_node_goes_to_a_zone_of_its_own() {
    let _moto = moto::session().await;
    // Long enough a wait for a host key that every node's provisioning ends (the move takes
    // a few more calls) before the first deploy step fails the run.
    let env = Env::aws("[aws]\nssh_wait_secs = 20\nssh_cidr = \"203.0.113.0/24\"\n");
    let out = short_of_capacity(
        &env,
        "name = \"ha\"\nha = true\n\
         zones = [\"us-east-1a\", \"us-east-1b\", \"us-east-1c\", \"us-east-1d\"]\n",
        "us-east-1b",
        &["--on-failure", "keep"],
    );
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let run = env.last_run();
    let (_, st) = env.json(&["status", &run]);
    let mut zones = Vec::new();
    for node in ["node-1", "node-2", "node-3"] {
        let vm = outputs(&st, &format!("provision.vm.{node}"));
        let disk = outputs(&st, &format!("provision.disk.{node}"));
        assert_eq!(vm["zone"], disk["zone"], "{node}'s disk beside it");
        zones.push(vm["zone"].as_str().unwrap().to_string());
    }
    zones.sort();
    assert_eq!(zones, ["us-east-1a", "us-east-1c", "us-east-1d"]);
    let logs = support::stdout(&env.run(&["logs", &run], None));
    assert!(
        logs.contains("placed in us-east-1d instead of us-east-1b"),
        "{logs}"
    );
    let out = env.run(&["rollback", &run], None);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(by_kind(&run).await.is_empty(), "{:?}", by_kind(&run).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn throttling_is_retried_and_the_run_goes_on() {
    let _moto = moto::session().await;
    let env = aws_env();
    let out = env
        .command(&["create", "db", "--on-failure", "keep"], None)
        // Each RunInstances attempt is throttled 4 times: more than the SDK's own 3 attempts, so
        // dbctl's step retry must take over.
        .env("DBCTL_AWS_FAULTS", "RunInstances=throttle*4")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(5),
        "fails only at deploy: {}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("provision.vm.primary: attempt 1 failed"),
        "{}",
        stderr(&out)
    );
    let run = env.last_run();
    let (_, st) = env.json(&["status", &run]);
    let vm = st["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "provision.vm.primary")
        .unwrap()
        .clone();
    assert_eq!(vm["state"], "done");
    assert!(vm["attempts"].as_u64().unwrap() >= 2, "{vm}");
    assert_eq!(by_kind(&run).await.get("Instance"), Some(&1));
    assert_eq!(env.run(&["rollback", &run], None).status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_checks_credentials_permissions_and_zones_and_lists_what_it_creates() {
    let _moto = moto::session().await;
    let env = aws_env();
    let (code, v) = env.json(&[
        "plan",
        "db",
        "--provider",
        "aws",
        "--instance-type",
        "m6i.large",
    ]);
    assert_eq!(code, 0, "{v}");
    let checks = v["preflight"]["checks"].as_array().unwrap();
    for name in [
        "zones",
        "permission ec2:CreateVolume",
        "permission ec2:RunInstances",
    ] {
        let c = checks
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no check {name}: {v}"));
        assert_eq!(c["ok"], true, "{c}");
    }
    let zones = v["preflight"]["zones"].as_array().unwrap();
    assert!(
        zones
            .iter()
            .any(|z| z == v["placement"]["nodes"][0]["zone"].as_str().unwrap()),
        "placed in an offered zone"
    );
    let creates = v["preflight"]["creates"].to_string();
    assert!(
        creates.contains("m6i.large")
            && creates.contains("gp3")
            && creates.contains("203.0.113.0/24"),
        "{creates}"
    );
    assert!(!env.journal_path().exists(), "plan journals nothing");
    // DryRun created nothing: no instance or volume exists at all.
    let ec2 = Ec2::connect(&AwsSettings::default()).await.unwrap();
    let inst = ec2.sdk().describe_instances().send().await.unwrap();
    assert!(inst.reservations().is_empty(), "{inst:?}");
    assert!(
        ec2.sdk()
            .describe_volumes()
            .send()
            .await
            .unwrap()
            .volumes()
            .is_empty()
    );

    // Without usable credentials the plan still shows, but the preflight fails (exit 2).
    let out = env
        .command(&["plan", "db", "--provider", "aws"], None)
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .env("AWS_MAX_ATTEMPTS", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("preflight failed"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn region_comes_from_aws_default_region_or_the_profile_like_every_aws_tool() {
    let _moto = moto::session().await;
    let env = aws_env();
    let plan_region = |cmd: &mut std::process::Command| {
        let out = cmd.env_remove("AWS_REGION").output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["spec"]["region"].as_str().unwrap_or_default().to_string()
    };
    let args = ["plan", "db", "--provider", "aws", "--output", "json"];

    let mut cmd = env.command(&args, None);
    cmd.env("AWS_DEFAULT_REGION", "eu-west-1");
    assert_eq!(plan_region(&mut cmd), "eu-west-1");

    let profile = env.path("aws-config");
    std::fs::write(&profile, "[profile dbctl-test]\nregion = ap-southeast-2\n").unwrap();
    let mut cmd = env.command(&args, None);
    cmd.env_remove("AWS_DEFAULT_REGION")
        .env("AWS_CONFIG_FILE", &profile)
        .env("AWS_PROFILE", "dbctl-test");
    assert_eq!(plan_region(&mut cmd), "ap-southeast-2");

    // With no region anywhere, validation names the field (exit 2) and nothing is journaled.
    let out = env
        .command(&args, None)
        .env_remove("AWS_REGION")
        .env_remove("AWS_DEFAULT_REGION")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("region"), "{}", stderr(&out));
    assert!(!env.journal_path().exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn open_or_unreachable_network_settings_are_refused_before_anything_is_created() {
    let _moto = moto::session().await;
    let narrow = "ssh_cidr = \"203.0.113.0/24\"\n";
    let halves = format!("{narrow}extra_pg_cidrs = [\"0.0.0.0/1\", \"128.0.0.0/1\"]\n");
    let private = format!("{narrow}public = false\n");
    let cases: Vec<(String, Vec<&str>, &str)> = vec![
        // From the config file, not only from the flag.
        ("ssh_cidr = \"0.0.0.0/0\"\n".into(), vec![], "aws.ssh_cidr:"),
        ("ssh_cidr = \"::/0\"\n".into(), vec![], "aws.ssh_cidr:"),
        ("".into(), vec!["--ssh-cidr", "::/0"], "ssh_cidr:"),
        // Two halves are the whole internet as much as 0.0.0.0/0 is.
        (halves, vec![], "aws.extra_pg_cidrs:"),
        // No SSH rule: nothing could reach the private-only instance, deploy would only wait.
        ("ssh_wait_secs = 2\n".into(), vec![], "ssh_cidr:"),
        (private, vec![], "aws.public:"),
        // The account's VPC by an id EC2 would refuse, or subnets with no VPC to be in.
        (
            format!("{narrow}vpc_id = \"my-vpc\"\n"),
            vec![],
            "aws.vpc_id:",
        ),
        (
            format!("{narrow}subnet_ids = [\"subnet-0a1b\"]\n"),
            vec![],
            "aws.subnet_ids:",
        ),
        // A role's ARN where the instance profile's belongs.
        (
            format!("{narrow}instance_profile = \"arn:aws:iam::123456789012:role/db\"\n"),
            vec![],
            "aws.instance_profile:",
        ),
        // Backups to S3 with no instance profile would need an operator key on the node.
        (
            format!(
                "{narrow}[backup]\nrepo = \"s3\"\n[backup.s3]\nendpoint = \"s3.example.test\"\nbucket = \"b\"\n"
            ),
            vec![],
            "aws.instance_profile:",
        ),
    ];
    for (aws, flags, field) in cases {
        let env = Env::aws(&format!("[aws]\n{aws}"));
        let mut args = vec!["create", "db"];
        args.extend(flags);
        let out = env.run(&args, None);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{aws}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(err.contains(field), "{aws}: {err}");
        assert!(!env.journal_path().exists(), "{aws}: nothing journaled");
    }
    let ec2 = Ec2::connect(&AwsSettings::default()).await.unwrap();
    let managed = aws_sdk_ec2::types::Filter::builder()
        .name("tag-key")
        .values("dbctl:managed")
        .build();
    let vpcs = ec2
        .sdk()
        .describe_vpcs()
        .filters(managed.clone())
        .send()
        .await
        .unwrap();
    assert!(vpcs.vpcs().is_empty(), "{vpcs:?}");
    let inst = ec2.sdk().describe_instances().send().await.unwrap();
    assert!(inst.reservations().is_empty(), "{inst:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn user_tags_and_the_ttl_are_on_every_resource_dbctl_creates() {
    let _moto = moto::session().await;
    let env = aws_env();
    let args = [
        "create",
        "db",
        "--tag",
        "team=payments",
        "--ttl",
        "2h",
        "--on-failure",
        "keep",
    ];
    let out = env.run(&args, None);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let run = env.last_run();
    let ec2 = Ec2::connect(&AwsSettings::default()).await.unwrap();
    // resource id -> value of `key`, for every resource EC2 reports with that tag.
    let tagged = |key: &'static str| {
        let ec2 = ec2.clone();
        async move {
            let f = aws_sdk_ec2::types::Filter::builder()
                .name("key")
                .values(key)
                .build();
            let out = ec2.sdk().describe_tags().filters(f).send().await.unwrap();
            out.tags()
                .iter()
                .map(|t| {
                    (
                        t.resource_id().unwrap_or_default().to_string(),
                        t.value().unwrap_or_default().to_string(),
                    )
                })
                .collect::<BTreeMap<String, String>>()
        }
    };
    let of_run = tagged("dbctl:run").await;
    let team = tagged("team").await;
    let expires = tagged("dbctl:expires-at").await;
    let kinds: Vec<&str> = of_run
        .keys()
        .map(|id| id.split('-').next().unwrap())
        .collect();
    for k in ["vpc", "subnet", "igw", "rtb", "sg", "i", "vol"] {
        assert!(kinds.contains(&k), "no {k} tagged with the run: {of_run:?}");
    }
    let ids = |m: &BTreeMap<String, String>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(ids(&team), ids(&of_run), "team tag missing somewhere");
    assert_eq!(ids(&expires), ids(&of_run), "expires-at missing somewhere");
    assert!(team.values().all(|v| v == "payments"), "{team:?}");
    let now = std::time::SystemTime::now();
    for v in expires.values() {
        let at = humantime::parse_rfc3339(v).unwrap_or_else(|e| panic!("{v}: {e}"));
        let left = at.duration_since(now).unwrap().as_secs();
        assert!((7000..=7200).contains(&left), "{v} is not ~2h from now");
    }
    assert_eq!(env.run(&["rollback", &run], None).status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gone_node_fails_at_once_instead_of_waiting_out_ssh_wait() {
    let _moto = moto::session().await;
    let env = aws_env();
    let out = env.run(&["create", "db", "--on-failure", "keep"], None);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let run = env.last_run();
    let (_, st) = env.json(&["status", &run]);
    let iid = support::aws::instance_id(&st, "primary");
    let ec2 = Ec2::connect(&AwsSettings::default()).await.unwrap();
    ec2.sdk()
        .terminate_instances()
        .instance_ids(&iid)
        .send()
        .await
        .unwrap();
    // A long wait from now on: a node-side step that still waited for the host key would take
    // it in full, once per step that touches the node (resume, then every rollback undo).
    let cfg = std::fs::read_to_string(env.path("config.toml")).unwrap();
    std::fs::write(
        env.path("config.toml"),
        cfg.replace("ssh_wait_secs = 2", "ssh_wait_secs = 120"),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let out = env.run(&["resume", &run], None);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("is terminated"), "{}", stderr(&out));
    let out = env.run(&["rollback", &run], None);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
    assert!(by_kind(&run).await.is_empty(), "{:?}", by_kind(&run).await);
}

/// A rollback never detaches the data volume from a live instance (on EC2 that hangs while the
/// node has it mounted, and races the database's last writes): killed right after the
/// attachment's undo, the volume is still attached to the running instance; the rest of the
/// rollback terminates the instance, which releases the volume (DeleteOnTermination deletes
/// it), and nothing tagged with the run is left.
#[tokio::test(flavor = "multi_thread")]
async fn rollback_releases_the_data_volume_by_terminating_its_instance_never_by_detaching() {
    let _moto = moto::session().await;
    let env = aws_env();
    let out = env.run(&["create", "db", "--on-failure", "keep"], None);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let run = env.last_run();
    let out = env.run(
        &["rollback", &run],
        Some("provision.attach.primary@undo-after=crash"),
    );
    assert!(was_killed(&out), "{}", stderr(&out));

    let ec2 = Ec2::connect(&AwsSettings::default()).await.unwrap();
    let tagged = ec2.tagged_resources(&run).await.unwrap();
    let volume = tagged
        .iter()
        .find(|r| r.step.as_deref() == Some("provision.disk.primary"))
        .expect("the data volume is still there");
    let instance = tagged
        .iter()
        .find(|r| r.kind == ResourceKind::Instance)
        .expect("the instance is still there");
    assert_eq!(instance.state.as_deref(), Some("running"), "{tagged:?}");
    let v = ec2
        .sdk()
        .describe_volumes()
        .volume_ids(&volume.id)
        .send()
        .await
        .unwrap();
    let attached: Vec<_> = v.volumes()[0]
        .attachments()
        .iter()
        .map(|a| {
            (
                a.instance_id().unwrap().to_string(),
                a.state().unwrap().as_str().to_string(),
            )
        })
        .collect();
    assert_eq!(
        attached,
        [(instance.id.clone(), "attached".to_string())],
        "the attachment's undo detached the volume from a live instance"
    );

    let out = env.run(&["rollback", &run], None);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(by_kind(&run).await.is_empty(), "{:?}", by_kind(&run).await);
}

/// The gc actions of a report that sweep, as (run, resources).
fn sweeps(report: &serde_json::Value) -> Vec<(String, Vec<String>)> {
    report["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "sweep")
        .map(|a| {
            let res = a["resources"].as_array().unwrap();
            (
                a["run"].as_str().unwrap_or("").to_string(),
                res.iter()
                    .map(|r| r.as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn gc_sweeps_what_a_run_left_once_its_journal_is_gone_and_nothing_of_others() {
    let _moto = moto::session().await;
    let env = aws_env();
    // Another dbctl (its own state directory) with a live run in the same account.
    let other = aws_env();
    let crash = Some("provision.vm.primary@after=crash");
    let out = other.run(&["create", "theirs", "--on-failure", "keep"], crash);
    assert!(was_killed(&out), "{}", stderr(&out));
    let theirs = other.last_run();
    let out = env.run(&["create", "db", "--on-failure", "keep"], crash);
    assert!(was_killed(&out), "{}", stderr(&out));
    let run = env.last_run();
    let before = by_kind(&run).await;
    assert_eq!(before.get("Vpc"), Some(&1), "{before:?}");
    assert_eq!(before.get("Instance"), Some(&1), "{before:?}");

    // While the journal has the run, it owns its resources.
    let (code, report) = env.json(&["gc"]);
    assert_eq!(code, 0, "{report}");
    assert!(sweeps(&report).is_empty(), "{report}");
    assert_eq!(by_kind(&run).await, before);

    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", env.journal_path().display()));
    }
    let (code, dry) = env.json(&["gc", "--dry-run", "--provider", "aws"]);
    assert_eq!(code, 0, "{dry}");
    let found = sweeps(&dry);
    assert_eq!(found.len(), 1, "only this state directory's run: {dry}");
    assert_eq!(found[0].0, run);
    for kind in [
        "Vpc vpc-",
        "Instance i-",
        "SecurityGroup sg-",
        "Subnet subnet-",
    ] {
        assert!(
            found[0].1.iter().any(|r| r.starts_with(kind)),
            "{kind}: {dry}"
        );
    }
    assert_eq!(by_kind(&run).await, before, "the dry run removed something");

    let (code, done) = env.json(&["gc"]);
    assert_eq!(code, 0, "{done}");
    assert_eq!(sweeps(&done).len(), 1, "{done}");
    assert!(by_kind(&run).await.is_empty(), "{:?}", by_kind(&run).await);
    assert_eq!(by_kind(&theirs).await.get("Instance"), Some(&1));
    assert_eq!(
        other.run(&["rollback", &theirs], None).status.code(),
        Some(0)
    );
}

/// `gc` and the names runs published in the network team's Route53 zone: a run of this
/// installation whose journal is gone left its names (A records and the TXT record saying
/// whose they are, as register.dns writes them); another installation left one too, and the
/// team has a name of its own. The dry run lists exactly this installation's name with its
/// run, and gc removes that name and its marker, nothing else.
#[tokio::test(flavor = "multi_thread")]
async fn gc_removes_the_route53_names_a_lost_run_published_and_nobody_elses() {
    use dbctl::provider::aws::Dns;
    use dbctl::provider::aws::route53_owner::Ownership;
    let _moto = moto::session().await;
    let ec2 = Ec2::connect(&AwsSettings::default()).await.unwrap();
    let dns = Dns::connect(&AwsSettings::default()).await.unwrap();
    let (zone, _) = support::aws::team_zone(&ec2, &dns, "dbctl.internal").await;
    let config = "[aws]\nssh_wait_secs = 2\nssh_cidr = \"203.0.113.0/24\"\n\
                  [register]\nroute53_zone = \"dbctl.internal\"\n";
    let env = Env::aws(config);
    let other = Env::aws(config);
    let publish = |state: std::path::PathBuf, run: &'static str, name: &'static str| {
        let dns = &dns;
        let zone = &zone;
        async move {
            let who = Ownership {
                owner: dbctl::provider::leftovers::owner_id(&state),
                run_id: run.into(),
            };
            let records = vec![(name.to_string(), vec!["10.42.0.10".to_string()])];
            dns.claim(zone, &[name.to_string()], 60, &who)
                .await
                .unwrap();
            dns.upsert_a_records(zone, &records, 60).await.unwrap();
        }
    };
    publish(env.path("state"), "run-lost", "db.default.dbctl.internal").await;
    publish(
        other.path("state"),
        "run-theirs",
        "theirs.default.dbctl.internal",
    )
    .await;
    dns.upsert_a_records(
        &zone,
        &[(
            "mail.dbctl.internal".to_string(),
            vec!["10.200.0.5".to_string()],
        )],
        300,
    )
    .await
    .unwrap();
    let all = || async { dns.list_records(&zone, "").await.unwrap() };
    assert_eq!(all().await.len(), 3);

    let (code, dry) = env.json(&["gc", "--dry-run", "--provider", "aws"]);
    assert_eq!(code, 0, "{dry}");
    assert_eq!(
        sweeps(&dry),
        [(
            "run-lost".to_string(),
            vec!["Route53 name db.default.dbctl.internal in dbctl.internal".to_string()]
        )],
        "{dry}"
    );
    assert_eq!(all().await.len(), 3, "the dry run removed something");

    let (code, done) = env.json(&["gc", "--provider", "aws"]);
    assert_eq!(code, 0, "{done}");
    let names: Vec<String> = all().await.into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        ["mail.dbctl.internal", "theirs.default.dbctl.internal"],
        "only this installation's lost name"
    );
    let owner = dbctl::provider::leftovers::owner_id(&env.path("state"));
    assert!(
        dns.owned_names(&zone, &owner).await.unwrap().is_empty(),
        "its marker too"
    );
    let theirs = dbctl::provider::leftovers::owner_id(&other.path("state"));
    assert_eq!(
        dns.owned_names(&zone, &theirs).await.unwrap(),
        [(
            "theirs.default.dbctl.internal".to_string(),
            "run-theirs".to_string()
        )]
    );
}

/// The network team's VPC (`aws.vpc_id`): a public subnet in us-east-1a (its own route table
/// to an internet gateway, no public IPs mapped on launch) and a private one in us-east-1b.
/// Returns (vpc, public subnet, private subnet).
async fn team_vpc(ec2: &Ec2) -> (String, String, String) {
    let sdk = ec2.sdk();
    let vpc = sdk
        .create_vpc()
        .cidr_block("10.60.0.0/16")
        .send()
        .await
        .unwrap();
    let vpc = vpc.vpc().unwrap().vpc_id().unwrap().to_string();
    let subnet = |cidr: &'static str, zone: &'static str| {
        let vpc = vpc.clone();
        async move {
            let s = sdk
                .create_subnet()
                .vpc_id(vpc)
                .cidr_block(cidr)
                .availability_zone(zone)
                .send()
                .await
                .unwrap();
            s.subnet().unwrap().subnet_id().unwrap().to_string()
        }
    };
    let public = subnet("10.60.0.0/24", "us-east-1a").await;
    let private = subnet("10.60.1.0/24", "us-east-1b").await;
    let igw = sdk.create_internet_gateway().send().await.unwrap();
    let igw = igw
        .internet_gateway()
        .unwrap()
        .internet_gateway_id()
        .unwrap()
        .to_string();
    sdk.attach_internet_gateway()
        .internet_gateway_id(&igw)
        .vpc_id(&vpc)
        .send()
        .await
        .unwrap();
    let rt = sdk.create_route_table().vpc_id(&vpc).send().await.unwrap();
    let rt = rt
        .route_table()
        .unwrap()
        .route_table_id()
        .unwrap()
        .to_string();
    sdk.create_route()
        .route_table_id(&rt)
        .destination_cidr_block("0.0.0.0/0")
        .gateway_id(&igw)
        .send()
        .await
        .unwrap();
    sdk.associate_route_table()
        .route_table_id(&rt)
        .subnet_id(&public)
        .send()
        .await
        .unwrap();
    (vpc, public, private)
}

/// How many VPCs, subnets, gateways and route tables `vpc` has: what dbctl must never change.
async fn network_of(ec2: &Ec2, vpc: &str) -> (usize, usize, usize, usize) {
    let sdk = ec2.sdk();
    let by_vpc = || {
        aws_sdk_ec2::types::Filter::builder()
            .name("vpc-id")
            .values(vpc)
            .build()
    };
    let vpcs = sdk.describe_vpcs().vpc_ids(vpc).send().await.unwrap();
    let subnets = sdk
        .describe_subnets()
        .filters(by_vpc())
        .send()
        .await
        .unwrap();
    let igws = sdk
        .describe_internet_gateways()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("attachment.vpc-id")
                .values(vpc)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let tables = sdk
        .describe_route_tables()
        .filters(by_vpc())
        .send()
        .await
        .unwrap();
    (
        vpcs.vpcs().len(),
        subnets.subnets().len(),
        igws.internet_gateways().len(),
        tables.route_tables().len(),
    )
}

/// `aws.vpc_id`: the instance goes into the account's VPC, in its public subnet, with a public
/// address of its own; dbctl makes only the run's security group, key pair, instance and volume
/// there, and the rollback removes exactly those. The VPC, its subnets, gateway and routes are
/// the same before, during and after. Settings that cannot work are refused before anything is
/// created (exit 2, naming the field).
#[tokio::test(flavor = "multi_thread")]
async fn an_existing_vpc_is_used_as_it_is_and_only_the_runs_own_resources_are_removed() {
    let _moto = moto::session().await;
    let ec2 = Ec2::connect(&AwsSettings::default()).await.unwrap();
    let (vpc, public, private) = team_vpc(&ec2).await;
    let before = network_of(&ec2, &vpc).await;
    let aws = |extra: &str| {
        Env::aws(&format!(
            "[aws]\nssh_wait_secs = 2\nssh_cidr = \"203.0.113.0/24\"\n{extra}"
        ))
    };

    let refused = [
        (
            "vpc_id = \"vpc-0000dead\"\n".to_string(),
            "aws.vpc_id: no VPC vpc-0000dead",
        ),
        (
            format!("vpc_id = \"{vpc}\"\nsubnet_ids = [\"{private}\"]\n"),
            "aws.subnet_ids: ",
        ),
        (
            format!("vpc_id = \"{vpc}\"\nsubnet_ids = [\"subnet-0000dead\"]\n"),
            "aws.subnet_ids: subnet-0000dead is not a subnet of",
        ),
    ];
    for (extra, says) in &refused {
        let env = aws(extra);
        let out = env.run(&["create", "db"], None);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{extra}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(err.contains(says), "{extra}: {err}");
        assert!(!env.journal_path().exists(), "{extra}: nothing journaled");
    }

    // No subnet_ids: the VPC's public subnet is the one a public run can use, so the node is
    // placed in its zone.
    let env = aws(&format!("vpc_id = \"{vpc}\"\n"));
    let out = env.run(&["create", "db", "--on-failure", "keep"], None);
    assert_eq!(
        out.status.code(),
        Some(5),
        "fails only at deploy: {}",
        stderr(&out)
    );
    let run = env.last_run();
    let (_, st) = env.json(&["status", &run]);
    let net = outputs(&st, "provision.network");
    assert_eq!(net["vpc_id"], vpc.as_str());
    assert_eq!(net["existing"], true);
    let vm = outputs(&st, "provision.vm.primary");
    assert_eq!(vm["subnet_id"], public.as_str(), "{vm}");
    assert_eq!(vm["zone"], "us-east-1a");
    assert!(
        vm["public_ip"].is_string(),
        "a public address of its own: {vm}"
    );
    let kinds = by_kind(&run).await;
    for k in ["Vpc", "Subnet", "InternetGateway", "RouteTable"] {
        assert_eq!(kinds.get(k), None, "nothing of the network made: {kinds:?}");
    }
    for k in [
        "SecurityGroup",
        "Instance",
        "KeyPair",
        "Volume:provision.disk.primary",
    ] {
        assert_eq!(kinds.get(k), Some(&1), "{k}: {kinds:?}");
    }
    // The group admits PostgreSQL from the VPC's own range.
    let sg = outputs(&st, "provision.firewall");
    let groups = ec2
        .sdk()
        .describe_security_groups()
        .group_ids(sg["group_id"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    let group = &groups.security_groups()[0];
    assert_eq!(group.vpc_id(), Some(vpc.as_str()));
    assert!(
        group
            .ip_permissions()
            .iter()
            .any(|p| p.from_port() == Some(5432)
                && p.ip_ranges()
                    .iter()
                    .any(|r| r.cidr_ip() == Some("10.60.0.0/16"))),
        "{group:?}"
    );
    assert_eq!(network_of(&ec2, &vpc).await, before, "the VPC as it was");

    let out = env.run(&["rollback", &run], None);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(by_kind(&run).await.is_empty(), "{:?}", by_kind(&run).await);
    assert_eq!(
        network_of(&ec2, &vpc).await,
        before,
        "the VPC is still the team's"
    );
    let subnet = ec2
        .sdk()
        .describe_subnets()
        .subnet_ids(&public)
        .send()
        .await
        .unwrap();
    assert_ne!(
        subnet.subnets()[0].map_public_ip_on_launch(),
        Some(true),
        "the subnet's attributes are not dbctl's to change"
    );
}

/// `aws.instance_profile`: RunInstances names the platform team's profile, so the instance is
/// associated with it (its role's credentials reach the node through IMDSv2; the twin test
/// reads them there). On plain moto the run stops at deploy; its rollback leaves nothing.
#[tokio::test(flavor = "multi_thread")]
async fn the_instance_is_launched_with_the_configured_instance_profile() {
    let _moto = moto::session().await;
    let endpoint = format!("http://127.0.0.1:{}", moto::server().port());
    support::aws::instance_profile(&endpoint, "dbctl-node");
    let env = Env::aws(
        "[aws]\nssh_wait_secs = 2\nssh_cidr = \"203.0.113.0/24\"\ninstance_profile = \"dbctl-node\"\n",
    );
    let out = env.run(&["create", "db", "--on-failure", "keep"], None);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let run = env.last_run();
    let (_, st) = env.json(&["status", &run]);
    let vm = support::aws::instance_id(&st, "primary");
    let ec2 = Ec2::connect(&AwsSettings::default()).await.unwrap();
    let assoc = ec2
        .sdk()
        .describe_iam_instance_profile_associations()
        .send()
        .await
        .unwrap();
    let of_vm: Vec<&str> = assoc
        .iam_instance_profile_associations()
        .iter()
        .filter(|a| a.instance_id() == Some(vm.as_str()))
        .filter_map(|a| a.iam_instance_profile().and_then(|p| p.arn()))
        .collect();
    assert_eq!(of_vm.len(), 1, "{assoc:?}");
    assert!(
        of_vm[0].ends_with(":instance-profile/dbctl-node"),
        "{of_vm:?}"
    );
    let out = env.run(&["rollback", &run], None);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let left: Vec<_> = by_kind(&run)
        .await
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
