//! The aws provider end to end on the EC2 twin (issue 13 §1): moto_server with `ec2-twin` in
//! front of it, both real processes, and the real dbctl binary on `--provider aws`. One VM at
//! most (the three-VM HA case is `aws_twin_ha`). Needs moto_server on PATH and dbctl's image
//! (`scripts/test` builds it: `dbctl image build`).
//!
//! With the default config (5432 open to the VPC only, as on EC2) the create is RUNNING: its
//! readiness check goes through the node's SSH session; the public address refuses the host
//! on 5432 (the twin enforces the security group); `dbctl connect --tunnel` and `--psql` reach
//! PostgreSQL over verified TLS through SSH. `dbctl destroy` leaves no twin VM and nothing
//! tagged with the run in moto.

mod support;
#[path = "support/twin.rs"]
mod twin;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Instant;

use support::aws::{instance_profile, query};
use support::s3::S3;
use support::{Env, stderr, stdout};
use twin::{
    CONFIG, IMDS_PROBE, PROBE, Twin, create, create_faulted, create_from, destroy_leaves_nothing,
    group_id, psql, step_state, tunnel, twin_qemus, with_twin, with_twin_s3, with_twin_serving,
};

/// One twin, one VM, the default config (5432 open to the VPC only, as on EC2) with the
/// platform team's instance profile and backups to S3 (moto's, reached through the twin):
///
/// 1. create → RUNNING: setup's readiness check connects to the node's private address through
///    its SSH session (issue 13 §3), so nothing but SSH is opened to the operator;
/// 2. the public address on 5432 refuses the host (the group opens 5432 to the VPC only, and
///    the twin enforces it), so the URI `dbctl connect` prints is for the VPC; the SSH rule
///    revoked closes port 22, authorized again opens it; `dbctl ssh` logs in verified; on the
///    node, IMDSv2 (v1 refused) serves the instance's facts and its role's credentials, which
///    moto knows as that role's session, and pgBackRest backs up to S3 with them alone;
/// 3. `dbctl connect --tunnel` holds a forward through SSH and prints a URI for it: psql over
///    verified TLS (the certificate checked against the node's private address); SIGTERM
///    closes it; `dbctl connect --psql` goes through a tunnel of its own;
/// 4. register.dns put the instance's name in the network team's private zone (Route53,
///    through the twin to moto) with the private address;
/// 5. destroy → no twin VM, nothing tagged with the run, no name left in the zone.
async fn single_node(twin: &Twin, s3: &S3) {
    // The network team's private zone (dbctl never creates zones), on a VPC of its own.
    let ec2 = dbctl::provider::aws::Ec2::connect(&Default::default())
        .await
        .unwrap();
    let dns = dbctl::provider::aws::Dns::connect(&Default::default())
        .await
        .unwrap();
    let (zone, _) = support::aws::team_zone(&ec2, &dns, "dbctl.internal").await;
    // The platform team's instance profile the nodes are launched with (aws.instance_profile).
    instance_profile(&twin.endpoint, "dbctl-node");
    let env = Env::aws(&format!(
        "{CONFIG}instance_profile = \"dbctl-node\"\n[register]\nroute53_zone = \"dbctl.internal\"\n{}",
        s3.config(BUCKET)
    ));
    let started = Instant::now();
    let (out, run, status) = create(&env, twin, "tw", &[]);
    assert!(
        out.status.success(),
        "create on the twin failed after {:?}:\n{}\n--- status\n{status:#}\n--- twin\n{}",
        started.elapsed(),
        stderr(&out),
        twin.log()
    );
    eprintln!("aws create on the twin: RUNNING in {:?}", started.elapsed());
    let logs = env.run(&["logs", &run], None);
    assert!(
        stdout(&logs).contains("5432 through SSH/") && stdout(&logs).contains("over verified TLS"),
        "readiness went through SSH: {}",
        stdout(&logs)
    );
    assert_eq!(step_state(&status, "setup.primary"), "done", "{status:#}");
    assert_eq!(twin.vms().len(), 1, "{:?}", twin.vms());
    let vm = status["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "provision.vm.primary")
        .unwrap()["outputs"]
        .clone();
    let public = vm["public_ip"].as_str().unwrap_or_default();
    let private = vm["private_ip"].as_str().unwrap_or_default();
    // The twin's own loopback block (127.77-126.x.y), never 127.0.0.1 nor moto's invention.
    let octet: u8 = public
        .strip_prefix("127.")
        .and_then(|r| r.split('.').next())
        .and_then(|o| o.parse().ok())
        .unwrap_or(0);
    assert!((77..=126).contains(&octet), "public address {vm}");
    // register.dns: the name in the private zone, with the private address.
    let names = dns.list_records(&zone, "dbctl.internal").await.unwrap();
    assert_eq!(
        names,
        [(
            "tw.default.dbctl.internal".to_string(),
            vec![private.to_string()]
        )],
        "Route53 after the create"
    );
    // Beside it, whose it is (what `gc` finds it by if the journal is lost).
    let owner = dbctl::provider::leftovers::owner_id(&env.path("state"));
    assert_eq!(
        dns.owned_names(&zone, &owner).await.unwrap(),
        [("tw.default.dbctl.internal".to_string(), run.clone())],
        "the name's ownership record"
    );

    // 2. Directly: the public address, closed on 5432 (the group opens it to the VPC only,
    // so the twin forwards nothing there, as EC2 drops it).
    let (code, direct) = env.json(&["connect", "tw", "--passfile"]);
    assert_eq!(code, 0, "{direct}");
    let uri = direct["uri"].as_str().unwrap();
    assert!(
        uri.contains("sslmode=verify-full") && uri.contains(public),
        "{uri}"
    );
    let refused = psql(uri, direct["passfile"].as_str().unwrap());
    assert!(!refused.status.success(), "5432 is open to the host");
    assert!(
        stderr(&refused).contains("Connection refused"),
        "{}",
        stderr(&refused)
    );

    // The group is enforced: with its SSH rule revoked the public address refuses port 22;
    // authorized again, sshd answers there.
    let group = group_id(&status);
    let ec2 = dbctl::provider::aws::Ec2::connect(&Default::default())
        .await
        .unwrap();
    let ssh_rule = aws_sdk_ec2::types::IpPermission::builder()
        .ip_protocol("tcp")
        .from_port(22)
        .to_port(22)
        .ip_ranges(
            aws_sdk_ec2::types::IpRange::builder()
                .cidr_ip("127.0.0.1/32")
                .build(),
        )
        .build();
    ec2.sdk()
        .revoke_security_group_ingress()
        .group_id(&group)
        .ip_permissions(ssh_rule.clone())
        .send()
        .await
        .unwrap();
    let ssh = (public.to_string(), 22);
    assert!(
        std::net::TcpStream::connect(ssh.clone()).is_err(),
        "port 22 still open after its rule was revoked"
    );
    ec2.sdk()
        .authorize_security_group_ingress()
        .group_id(&group)
        .ip_permissions(ssh_rule)
        .send()
        .await
        .unwrap();
    let mut banner = String::new();
    let again = std::net::TcpStream::connect(ssh)
        .unwrap_or_else(|e| panic!("port 22 open again: {e}\n--- twin\n{}", twin.log()));
    BufReader::new(again).read_line(&mut banner).unwrap();
    assert!(banner.starts_with("SSH-2.0-"), "{banner:?}");

    // `dbctl ssh` logs in with the host key read from the console (a known_hosts of its own,
    // StrictHostKeyChecking=yes), as dbctl's user, on this very instance.
    let who = env.run(
        &[
            "ssh",
            "tw",
            "--",
            "id -un; cat /var/lib/cloud/data/instance-id",
        ],
        None,
    );
    assert!(who.status.success(), "dbctl ssh: {}", stderr(&who));
    assert_eq!(
        stdout(&who).lines().collect::<Vec<_>>(),
        ["dbctl", vm["instance_id"].as_str().unwrap()],
        "{}",
        stderr(&who)
    );

    // The instance metadata service, from the node: IMDSv2 only, this instance's facts, and
    // the instance profile's role credentials, which moto knows as that role's session.
    let probe = aws_smithy_types::base64::encode(IMDS_PROBE);
    let seen = env.run(
        &[
            "ssh",
            "tw",
            "--",
            &format!("echo {probe} | base64 -d | python3"),
        ],
        None,
    );
    assert!(seen.status.success(), "IMDS probe: {}", stderr(&seen));
    let imds: serde_json::Value = serde_json::from_str(stdout(&seen).trim())
        .unwrap_or_else(|e| panic!("{e}: {}\n--- twin\n{}", stdout(&seen), twin.log()));
    assert_eq!(imds["v1"], 401, "IMDSv1 refused: {imds}");
    assert_eq!(imds["instance_id"], vm["instance_id"], "{imds}");
    assert_eq!(imds["region"], "us-east-1", "{imds}");
    assert_eq!(imds["zone"], vm["zone"], "{imds}");
    assert_eq!(imds["role"], "dbctl-node", "{imds}");
    let key = imds["credentials"]["AccessKeyId"]
        .as_str()
        .unwrap_or_default();
    let caller = query(
        &twin.endpoint,
        "sts",
        key,
        &[("Action", "GetCallerIdentity")],
    );
    let session = format!(
        "assumed-role/dbctl-node/{}",
        vm["instance_id"].as_str().unwrap()
    );
    assert!(caller.contains(&session), "{key}: {caller}");

    // pgBackRest on the node: to S3 with those credentials (key-type auto), no key of the
    // operator's in its config; the first full backup and the archived WAL are in the bucket.
    let conf = env.run(
        &[
            "ssh",
            "tw",
            "--",
            "sudo grep -E '^repo1-s3-key' /etc/pgbackrest/pgbackrest.conf",
        ],
        None,
    );
    assert_eq!(
        stdout(&conf).trim(),
        "repo1-s3-key-type=auto",
        "{}",
        stderr(&conf)
    );
    let stanza = status["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "register.backups")
        .unwrap()["outputs"]["stanza"]
        .as_str()
        .unwrap()
        .to_string();
    for kind in ["backup", "archive"] {
        let keys = s3.keys(BUCKET, &format!("dbctl/{kind}/{stanza}/"));
        assert!(!keys.is_empty(), "nothing under dbctl/{kind}/{stanza}/");
    }

    // 3. Through the tunnel.
    let (doc, mut holder) = tunnel(&env, "tw", &[]);
    let uri = doc["uri"].as_str().unwrap();
    assert!(
        uri.contains(&format!("@{private}:")) && uri.contains("hostaddr=127.0.0.1"),
        "{doc}"
    );
    let through = psql(uri, doc["passfile"].as_str().unwrap());
    assert_eq!(stdout(&through).trim(), "t", "{}", stderr(&through));
    // SAFETY: kill(2) of our own child.
    unsafe {
        libc::kill(holder.id() as libc::pid_t, libc::SIGTERM);
    }
    assert!(holder.wait().unwrap().success(), "the tunnel ends cleanly");
    let after = psql(uri, doc["passfile"].as_str().unwrap());
    assert!(!after.status.success(), "the tunnel's port closed with it");
    let mut session = env
        .command(&["connect", "tw", "--psql"], None)
        .env("PSQLRC", "/dev/null")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    // psql reads the session from stdin: quiet, tuples only, unaligned.
    let script =
        format!("\\set QUIET on\n\\pset tuples_only on\n\\pset format unaligned\n{PROBE};\n");
    session
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let session = session.wait_with_output().unwrap();
    assert!(session.status.success(), "{}", stderr(&session));
    assert_eq!(stdout(&session).trim(), "t", "{}", stderr(&session));

    destroy_leaves_nothing(&env, twin, "tw", &run).await;
    let names = dns.list_records(&zone, "dbctl.internal").await.unwrap();
    assert!(names.is_empty(), "names left after destroy: {names:?}");
    assert!(
        dns.owned_names(&zone, &owner).await.unwrap().is_empty(),
        "ownership records left after destroy"
    );
}

/// The twin's security groups without VMs: what moto holds becomes the VPC network's policy
/// (`<state>/vpcs/<vpc>/policy.json`, what its hub filters by), a rule naming a group admits
/// that group's members by address, and a revoked rule or a terminated member is gone from it
/// by the time the call returns.
async fn groups_become_the_networks_policy(twin: &Twin) {
    use aws_sdk_ec2::types::{IpPermission, IpRange, UserIdGroupPair};
    use dbctl::provider::local::firewall::Policy;
    let ec2 = dbctl::provider::aws::Ec2::connect(&Default::default())
        .await
        .unwrap();
    let c = ec2.sdk();
    let vpc = c
        .create_vpc()
        .cidr_block("10.50.0.0/16")
        .send()
        .await
        .unwrap();
    let vpc = vpc.vpc().unwrap().vpc_id().unwrap().to_string();
    let subnet = c
        .create_subnet()
        .vpc_id(&vpc)
        .cidr_block("10.50.1.0/24")
        .send()
        .await
        .unwrap();
    let subnet = subnet.subnet().unwrap().subnet_id().unwrap().to_string();
    let group = |name: &'static str| {
        let vpc = vpc.clone();
        async move {
            c.create_security_group()
                .group_name(name)
                .description(name)
                .vpc_id(vpc)
                .send()
                .await
                .unwrap()
                .group_id()
                .unwrap()
                .to_string()
        }
    };
    let (db, app) = (group("db").await, group("app").await);
    let from_app = IpPermission::builder()
        .ip_protocol("tcp")
        .from_port(5432)
        .to_port(5432)
        .user_id_group_pairs(UserIdGroupPair::builder().group_id(&app).build())
        .build();
    let ssh = IpPermission::builder()
        .ip_protocol("tcp")
        .from_port(22)
        .to_port(22)
        .ip_ranges(IpRange::builder().cidr_ip("127.0.0.1/32").build())
        .build();
    c.authorize_security_group_ingress()
        .group_id(&db)
        .ip_permissions(from_app.clone())
        .ip_permissions(ssh)
        .send()
        .await
        .unwrap();
    // An image that is not the twin's: API-only instances, no VM boots.
    let image = c
        .register_image()
        .name("not-the-twin")
        .root_device_name("/dev/xvda")
        .send()
        .await
        .unwrap();
    let image = image.image_id().unwrap().to_string();
    let launch = |group: String| {
        let (image, subnet) = (image.clone(), subnet.clone());
        async move {
            let r = c
                .run_instances()
                .image_id(image)
                .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
                .min_count(1)
                .max_count(1)
                .subnet_id(subnet)
                .security_group_ids(group)
                .send()
                .await
                .unwrap();
            let i = &r.instances()[0];
            (
                i.instance_id().unwrap().to_string(),
                i.private_ip_address().unwrap().parse().unwrap(),
            )
        }
    };
    let (_, db_ip) = launch(db.clone()).await;
    let (app_id, app_ip) = launch(app.clone()).await;
    assert!(twin.vms().is_empty(), "{:?}", twin.vms());
    let policy = || -> Policy {
        let path = twin.state.path().join(format!("vpcs/{vpc}/policy.json"));
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
    };
    let p = policy();
    let rules = &p.instances[&db_ip];
    let sources = |port: u16| -> Vec<String> {
        rules
            .iter()
            .filter(|r| r.from_port == port)
            .flat_map(|r| r.sources.clone())
            .collect()
    };
    assert_eq!(sources(5432), [format!("{app_ip}/32")], "{p:?}");
    assert_eq!(sources(22), ["127.0.0.1/32"], "{p:?}");
    assert!(p.instances[&app_ip].is_empty(), "app opens nothing: {p:?}");

    c.terminate_instances()
        .instance_ids(&app_id)
        .send()
        .await
        .unwrap();
    let p = policy();
    assert!(!p.instances.contains_key(&app_ip), "{p:?}");
    let rules = &p.instances[&db_ip];
    assert!(
        rules
            .iter()
            .all(|r| r.from_port != 5432 || r.sources.is_empty()),
        "a terminated member is admitted no more: {p:?}"
    );
    c.revoke_security_group_ingress()
        .group_id(&db)
        .ip_permissions(from_app)
        .send()
        .await
        .unwrap();
    let p = policy();
    assert!(
        p.instances[&db_ip].iter().all(|r| r.from_port == 22),
        "the revoked rule is gone: {p:?}"
    );
}

/// Crashes on the twin: dbctl SIGKILLed right after RunInstances (the VM boots, the instance
/// id never reaches the journal), then on resume right after AttachVolume (the disk is
/// hot-plugged, the attachment not journaled); the next resume adopts both by their tags and
/// client tokens → RUNNING with exactly one instance, one data volume, one VM, and one EBS
/// disk in the guest. Destroy leaves nothing.
async fn crashes_after_run_instances_and_attach_volume(twin: &Twin) {
    let env = Env::aws(CONFIG);
    let (out, run, _) = create_faulted(
        &env,
        twin,
        "tc",
        &[],
        Some("provision.vm.primary@after=crash"),
    );
    assert!(!out.status.success(), "the crash fault did not fire");
    assert!(run.starts_with("run-"), "the run is journaled: {run:?}");
    assert_eq!(
        twin.vms().len(),
        1,
        "RunInstances booted its VM: {:?}",
        twin.vms()
    );
    let kinds = support::aws::tagged_by_kind(&run).await;
    assert_eq!(kinds.get("Instance"), Some(&1), "{kinds:?}");

    let out = env.run(
        &["resume", &run],
        Some("provision.attach.primary@after=crash"),
    );
    assert!(!out.status.success(), "the attach crash did not fire");
    let (_, status) = env.json(&["status", &run]);
    assert_eq!(
        step_state(&status, "provision.vm.primary"),
        "done",
        "{status:#}"
    );

    let out = env.run(&["resume", &run], None);
    assert!(
        out.status.success(),
        "resume after two crashes: {}\n--- twin\n{}",
        stderr(&out),
        twin.log()
    );
    let (_, status) = env.json(&["status", &run]);
    assert_eq!(status["instance"]["state"], "running", "{status:#}");
    let kinds = support::aws::tagged_by_kind(&run).await;
    assert_eq!(kinds.get("Instance"), Some(&1), "one instance: {kinds:?}");
    assert_eq!(
        kinds.get("Volume:provision.disk.primary"),
        Some(&1),
        "one data volume: {kinds:?}"
    );
    assert_eq!(twin.vms().len(), 1, "{:?}", twin.vms());
    assert_eq!(
        twin_qemus(twin.state.path()),
        1,
        "one QEMU for the instance"
    );
    // The guest sees the data volume once, under the id EBS gives it.
    let disk = status["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "provision.disk.primary")
        .and_then(|s| s["outputs"]["volume_id"].as_str())
        .expect("the data volume's id")
        .replace('-', "");
    let ls = env.run(&["ssh", "tc", "--", "ls /dev/disk/by-id/"], None);
    assert!(ls.status.success(), "{}", stderr(&ls));
    let text = stdout(&ls);
    let ebs = format!("nvme-Amazon_Elastic_Block_Store_{disk}");
    assert_eq!(
        text.lines().filter(|l| *l == ebs).count(),
        1,
        "{ebs} once in the guest: {text}"
    );
    destroy_leaves_nothing(&env, twin, "tc", &run).await;
}

/// The genericcloud stand-in as the twin's second AMI (issue 13 §2): a stock cloud image
/// with its own default user and no PostgreSQL, booted through its firmware and GRUB; deploy
/// installs PostgreSQL from Debian's sources on first boot (which the VM reaches only through
/// the twin's package relays, as EC2 reaches them through the internet gateway) → RUNNING,
/// psql over verified TLS through the tunnel; the image's own login (`debian`) is kept beside
/// dbctl's; destroy leaves nothing.
async fn genericcloud_ami(twin: &Twin) {
    let ami = twin
        .ami_cloud
        .clone()
        .expect("the twin serves the cloud AMI");
    let env = Env::aws(CONFIG);
    let started = Instant::now();
    let (out, run, status) = create_from(&env, &ami, "tg", &[], None);
    assert!(
        out.status.success(),
        "create of the cloud AMI failed after {:?}:\n{}\n--- status\n{status:#}\n--- twin\n{}",
        started.elapsed(),
        stderr(&out),
        twin.log()
    );
    eprintln!(
        "aws create of the genericcloud AMI on the twin: RUNNING in {:?}",
        started.elapsed()
    );
    let packages = status["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "deploy.packages.primary")
        .map(|s| s["outputs"].clone())
        .unwrap_or_default();
    assert_eq!(
        packages["installed"], true,
        "PostgreSQL came from the sources: {packages}"
    );
    let users = env.run(
        &[
            "ssh",
            "tg",
            "--",
            "getent passwd debian dbctl | cut -d: -f1",
        ],
        None,
    );
    assert_eq!(
        stdout(&users).lines().collect::<Vec<_>>(),
        ["debian", "dbctl"],
        "{}",
        stderr(&users)
    );
    let (doc, mut holder) = tunnel(&env, "tg", &[]);
    let ssl = psql(
        doc["uri"].as_str().unwrap(),
        doc["passfile"].as_str().unwrap(),
    );
    assert_eq!(stdout(&ssl).trim(), "t", "{}", stderr(&ssl));
    // SAFETY: kill(2) of our own child.
    unsafe {
        libc::kill(holder.id() as libc::pid_t, libc::SIGTERM);
    }
    assert!(holder.wait().unwrap().success());
    destroy_leaves_nothing(&env, twin, "tg", &run).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn security_groups_on_the_twin_become_its_networks_policy() {
    with_twin(groups_become_the_networks_policy).await;
}

const BUCKET: &str = "dbctl-twin-backups";

#[tokio::test(flavor = "multi_thread")]
async fn aws_single_node_on_the_twin_is_running_reached_through_ssh_and_destroyed_to_nothing() {
    // Backups go to S3 (moto's, behind TLS), reached from the VM through the twin's relay,
    // with the instance profile's credentials only.
    let s3 = S3::start(BUCKET);
    let endpoint = format!("{}:{}", support::s3::HOST, s3.port);
    with_twin_s3(&endpoint, async |twin: &Twin| single_node(twin, &s3).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn aws_crashes_after_run_instances_and_attach_volume_resume_to_one_of_each() {
    with_twin(crashes_after_run_instances_and_attach_volume).await;
}

/// On demand (RUNNING in 377 s, the test 447 s here: a firmware boot and a first install of
/// PostgreSQL under TCG); needs the test cloud image (`tests/fixtures/cloud-image/make` prints its path):
/// `DBCTL_TEST_CLOUD_IMAGE=$(tests/fixtures/cloud-image/make) cargo test --features testbed,twin --test aws_twin genericcloud -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread")]
#[ignore = "on demand (~8 min): needs DBCTL_TEST_CLOUD_IMAGE"]
async fn aws_genericcloud_ami_on_the_twin_installs_postgresql_on_first_boot_and_is_running() {
    let image = std::env::var_os("DBCTL_TEST_CLOUD_IMAGE")
        .map(std::path::PathBuf::from)
        .expect("DBCTL_TEST_CLOUD_IMAGE: the test cloud image (tests/fixtures/cloud-image/make)");
    with_twin_serving(Some(&image), genericcloud_ami).await;
}
