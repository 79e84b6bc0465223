//! The EC2 layer against a real EC2 API implementation (moto_server): tags, idempotency after a
//! lost journal write, deletes without outputs, dependency order, sweep, fault injection and error
//! classification. Every check reads EC2's state back through the SDK, never dbctl's own output.

mod support;

use aws_sdk_ec2::types::{HttpTokensState, VolumeAttachmentState, VolumeType};
use dbctl::provider::aws::fault::FAULTS_ENV;
use dbctl::provider::aws::{
    AwsSettings, Ec2, InstanceOut, InstanceRequest, KeyPairOut, NetworkOut, ResourceKind, RunTags,
    SecurityGroupOut, VolumeOut, VolumeRequest,
};
use support::moto::session;

const PUBKEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIZPUOZKfZTn3MUNC7zDmSoSSTKw+DPfqusg8bKDVGTw dbctl-test";
/// The newest amd64 image in tests/fixtures/debian12-amis.json owned by Debian.
const NEWEST_DEBIAN_AMD64: &str = "ami-0bbbbbbbbbbbbbb02";
const SSH_CIDR: &str = "203.0.113.0/24";
const EXTRA_PG: &str = "198.51.100.0/24";

fn settings() -> AwsSettings {
    AwsSettings {
        ssh_cidr: Some(SSH_CIDR.into()),
        extra_pg_cidrs: vec![EXTRA_PG.into()],
        ..AwsSettings::default()
    }
}

fn run(id: &str) -> RunTags {
    RunTags {
        run_id: id.into(),
        project: "shop".into(),
        instance: "db1".into(),
        generation: 2,
        extra: Default::default(),
    }
}

struct Stack {
    net: NetworkOut,
    sg: SecurityGroupOut,
    key: KeyPairOut,
    vm: InstanceOut,
    vol: VolumeOut,
}

/// Runs every ensure step of one instance, as the saga would. `token` varies the client tokens
/// (a retried saga step after a lost journal write may use a new one).
async fn provision(ec2: &Ec2, tags: &RunTags, token: &str) -> Stack {
    let zones = ec2.available_zones("t3.medium").await.unwrap();
    let zones = &zones[..2];
    let net = ec2.ensure_network(tags, "network", zones).await.unwrap();
    let sg = ec2
        .ensure_security_group(tags, "firewall", &net.vpc_id, &net.vpc_cidr, false)
        .await
        .unwrap();
    let key = ec2.ensure_key_pair(tags, "ssh-key", PUBKEY).await.unwrap();
    let zone = zones[0].clone();
    let req = InstanceRequest {
        zone: zone.clone(),
        subnet_id: net.subnet_in(&zone).unwrap().subnet_id.clone(),
        security_group_id: sg.group_id.clone(),
        key_name: key.key_name.clone(),
        user_data: Some("#cloud-config\n{}\n".into()),
        ami: None,
        instance_type: None,
    };
    let vm = ec2
        .ensure_instance(tags, "vm", &req, &format!("vm-{token}"))
        .await
        .unwrap();
    let vreq = VolumeRequest {
        zone,
        size_gib: 20,
        iops: Some(3000),
        throughput: Some(125),
    };
    let vol = ec2
        .ensure_volume(tags, "data-volume", &vreq, &format!("vol-{token}"))
        .await
        .unwrap();
    ec2.attach_volume(tags, "attach", &vol.volume_id, &vm.instance_id, "/dev/sdf")
        .await
        .unwrap();
    Stack {
        net,
        sg,
        key,
        vm,
        vol,
    }
}

async fn count(ec2: &Ec2, run_id: &str, kind: ResourceKind) -> usize {
    let all = ec2.tagged_resources(run_id).await.unwrap();
    all.iter().filter(|r| r.kind == kind).count()
}

fn tag<'a>(tags: &'a [aws_sdk_ec2::types::Tag], key: &str) -> Option<&'a str> {
    tags.iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
}

#[tokio::test]
async fn provisions_tagged_hardened_resources() {
    let _s = session().await;
    let ec2 = Ec2::connect(&settings()).await.unwrap();
    let tags = run("run-a");
    let st = provision(&ec2, &tags, "1").await;
    let sdk = ec2.sdk();

    let vpc = sdk
        .describe_vpcs()
        .vpc_ids(&st.net.vpc_id)
        .send()
        .await
        .unwrap();
    let vpc = &vpc.vpcs()[0];
    assert_eq!(vpc.cidr_block(), Some("10.42.0.0/16"));
    for (k, v) in [
        ("dbctl:managed", "true"),
        ("dbctl:run", "run-a"),
        ("dbctl:project", "shop"),
        ("dbctl:instance", "db1"),
        ("dbctl:step", "network"),
        ("dbctl:generation", "2"),
        ("Name", "dbctl-db1-network"),
    ] {
        assert_eq!(tag(vpc.tags(), k), Some(v), "VPC tag {k}");
    }
    assert_eq!(st.net.subnets.len(), 2);
    assert_ne!(st.net.subnets[0].zone, st.net.subnets[1].zone);
    assert_ne!(st.net.subnets[0].cidr, st.net.subnets[1].cidr);

    // Public network: the route table sends 0.0.0.0/0 to the run's attached gateway.
    let igw_id = st
        .net
        .internet_gateway_id
        .clone()
        .expect("public network has a gateway");
    let igw = sdk
        .describe_internet_gateways()
        .internet_gateway_ids(&igw_id)
        .send()
        .await
        .unwrap();
    let attached = igw.internet_gateways()[0].attachments();
    assert_eq!(attached[0].vpc_id(), Some(st.net.vpc_id.as_str()));
    let rt_id = st.net.route_table_id.clone().unwrap();
    let rt = sdk
        .describe_route_tables()
        .route_table_ids(&rt_id)
        .send()
        .await
        .unwrap();
    let rt = &rt.route_tables()[0];
    assert!(
        rt.routes()
            .iter()
            .any(|r| r.destination_cidr_block() == Some("0.0.0.0/0")
                && r.gateway_id() == Some(igw_id.as_str()))
    );
    for s in &st.net.subnets {
        assert!(
            rt.associations()
                .iter()
                .any(|a| a.subnet_id() == Some(s.subnet_id.as_str()))
        );
    }

    // Firewall: 22 only from the admin range, 5432 never from the internet.
    let sg = sdk
        .describe_security_groups()
        .group_ids(&st.sg.group_id)
        .send()
        .await
        .unwrap();
    let sg = &sg.security_groups()[0];
    assert_eq!(tag(sg.tags(), "dbctl:step"), Some("firewall"));
    let sources = |port: i32| -> Vec<String> {
        sg.ip_permissions()
            .iter()
            .filter(|p| p.from_port() == Some(port) || p.ip_protocol() == Some("-1"))
            .flat_map(|p| {
                let cidrs = p
                    .ip_ranges()
                    .iter()
                    .filter_map(|r| r.cidr_ip())
                    .map(str::to_string);
                let groups = p
                    .user_id_group_pairs()
                    .iter()
                    .filter_map(|g| g.group_id())
                    .map(str::to_string);
                cidrs.chain(groups).collect::<Vec<_>>()
            })
            .collect()
    };
    assert_eq!(sources(22), vec![SSH_CIDR.to_string()]);
    let pg = sources(5432);
    assert!(!pg.iter().any(|c| c == "0.0.0.0/0"), "{pg:?}");
    for want in ["10.42.0.0/16", EXTRA_PG, st.sg.group_id.as_str()] {
        assert!(
            pg.iter().any(|c| c == want),
            "5432 from {want} missing in {pg:?}"
        );
    }

    // Instance: default Debian 12 AMI, IMDSv2 required with hop limit 1, tagged, our key and SG.
    let d = sdk
        .describe_instances()
        .instance_ids(&st.vm.instance_id)
        .send()
        .await
        .unwrap();
    let i = &d.reservations()[0].instances()[0];
    assert_eq!(i.image_id(), Some(NEWEST_DEBIAN_AMD64));
    let md = i.metadata_options().expect("metadata options");
    assert_eq!(md.http_tokens(), Some(&HttpTokensState::Required));
    assert_eq!(md.http_put_response_hop_limit(), Some(1));
    assert_eq!(i.key_name(), Some(st.key.key_name.as_str()));
    assert!(
        i.security_groups()
            .iter()
            .any(|g| g.group_id() == Some(st.sg.group_id.as_str()))
    );
    assert_eq!(tag(i.tags(), "dbctl:step"), Some("vm"));
    assert_eq!(tag(i.tags(), "Name"), Some("dbctl-db1-vm"));

    // Volume: encrypted gp3, attached at /dev/sdf, deleted with the instance.
    let v = sdk
        .describe_volumes()
        .volume_ids(&st.vol.volume_id)
        .send()
        .await
        .unwrap();
    let v = &v.volumes()[0];
    assert_eq!(v.encrypted(), Some(true));
    assert_eq!(v.volume_type(), Some(&VolumeType::Gp3));
    assert_eq!(v.size(), Some(20));
    assert_eq!(tag(v.tags(), "dbctl:step"), Some("data-volume"));
    let a = &v.attachments()[0];
    assert_eq!(a.instance_id(), Some(st.vm.instance_id.as_str()));
    assert_eq!(a.device(), Some("/dev/sdf"));
    assert_eq!(a.state(), Some(&VolumeAttachmentState::Attached));
    let bdm = i
        .block_device_mappings()
        .iter()
        .find(|m| m.device_name() == Some("/dev/sdf"))
        .expect("data volume in the instance's block device mappings");
    assert_eq!(
        bdm.ebs().and_then(|e| e.delete_on_termination()),
        Some(true)
    );

    // Root volume: encrypted by dbctl's own mapping, not only when the account default says so.
    let roots = sdk
        .describe_volumes()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("attachment.instance-id")
                .values(&st.vm.instance_id)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let root: Vec<_> = roots
        .volumes()
        .iter()
        .filter(|v| v.volume_id() != Some(st.vol.volume_id.as_str()))
        .collect();
    assert_eq!(root.len(), 1, "{roots:?}");
    assert_eq!(root[0].attachments()[0].device(), Some("/dev/xvda"));
    assert_eq!(root[0].encrypted(), Some(true), "{:?}", root[0]);

    let kp = sdk
        .describe_key_pairs()
        .key_names(&st.key.key_name)
        .send()
        .await
        .unwrap();
    assert_eq!(tag(kp.key_pairs()[0].tags(), "dbctl:run"), Some("run-a"));
}

#[tokio::test]
async fn ensure_twice_adopts_instead_of_duplicating() {
    let _s = session().await;
    let ec2 = Ec2::connect(&settings()).await.unwrap();
    let tags = run("run-b");
    let first = provision(&ec2, &tags, "first").await;
    // The journal "lost" every output: the saga runs each step again, with new client tokens
    // (moto ignores ClientToken anyway, so only the tag lookup prevents duplicates).
    let second = provision(&ec2, &tags, "second").await;

    assert_eq!(first.net, second.net);
    assert_eq!(first.sg, second.sg);
    assert_eq!(first.key, second.key);
    assert_eq!(first.vm.instance_id, second.vm.instance_id);
    assert_eq!(first.vol, second.vol);
    for (kind, n) in [
        (ResourceKind::Vpc, 1),
        (ResourceKind::Subnet, 2),
        (ResourceKind::InternetGateway, 1),
        (ResourceKind::RouteTable, 1),
        (ResourceKind::SecurityGroup, 1),
        (ResourceKind::KeyPair, 1),
        (ResourceKind::Instance, 1),
    ] {
        assert_eq!(count(&ec2, "run-b", kind).await, n, "{kind:?}");
    }
    let data_volumes = ec2
        .tagged_resources("run-b")
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.kind == ResourceKind::Volume && r.step.as_deref() == Some("data-volume"))
        .count();
    assert_eq!(data_volumes, 1);
}

#[tokio::test]
async fn adopted_stopped_instance_is_started_and_foreign_attach_refused() {
    let _s = session().await;
    let ec2 = Ec2::connect(&settings()).await.unwrap();
    let tags = run("run-j");
    let st = provision(&ec2, &tags, "1").await;
    ec2.sdk()
        .stop_instances()
        .instance_ids(&st.vm.instance_id)
        .send()
        .await
        .unwrap();

    let again = provision(&ec2, &tags, "2").await;
    assert_eq!(again.vm.instance_id, st.vm.instance_id);
    let d = ec2
        .sdk()
        .describe_instances()
        .instance_ids(&st.vm.instance_id)
        .send()
        .await
        .unwrap();
    let state = d.reservations()[0].instances()[0]
        .state()
        .unwrap()
        .name()
        .unwrap()
        .clone();
    assert_eq!(state.as_str(), "running");

    // A second instance (another step) must not steal the attached data volume.
    let req = InstanceRequest {
        zone: st.vm.zone.clone(),
        subnet_id: st.vm.subnet_id.clone(),
        security_group_id: st.sg.group_id.clone(),
        key_name: st.key.key_name.clone(),
        user_data: None,
        ami: None,
        instance_type: None,
    };
    let other = ec2
        .ensure_instance(&tags, "vm2", &req, "vm2-1")
        .await
        .unwrap();
    assert_ne!(other.instance_id, st.vm.instance_id);
    let err = ec2
        .attach_volume(
            &tags,
            "attach2",
            &st.vol.volume_id,
            &other.instance_id,
            "/dev/sdg",
        )
        .await
        .unwrap_err();
    assert!(!err.is_transient());
    assert!(err.to_string().contains(&st.vm.instance_id), "{err}");
}

#[tokio::test]
async fn adopted_network_grows_from_its_own_cidr() {
    let _s = session().await;
    let ec2 = Ec2::connect(&settings()).await.unwrap();
    let tags = run("run-k");
    let zones = ec2.available_zones("t3.medium").await.unwrap();
    let first = ec2
        .ensure_network(&tags, "network", &zones[..1])
        .await
        .unwrap();

    // The setting changed after the VPC existed, and a zone was added: the VPC is adopted and
    // the new subnet is carved from the VPC's real CIDR, in a free slot.
    let changed = Ec2::connect(&AwsSettings {
        vpc_cidr: "10.77.0.0/16".into(),
        ..settings()
    })
    .await
    .unwrap();
    let second = changed
        .ensure_network(&tags, "network", &zones[..2])
        .await
        .unwrap();
    assert_eq!(second.vpc_id, first.vpc_id);
    assert_eq!(second.vpc_cidr, "10.42.0.0/16");
    assert_eq!(second.subnets[0], first.subnets[0]);
    assert_eq!(second.subnets[1].cidr, "10.42.16.0/20");
    assert_eq!(count(&ec2, "run-k", ResourceKind::Subnet).await, 2);
}

#[tokio::test]
async fn deletes_without_outputs_find_resources_by_tags() {
    let _s = session().await;
    let ec2 = Ec2::connect(&settings()).await.unwrap();
    let tags = run("run-c");
    let st = provision(&ec2, &tags, "1").await;

    // Reverse order, every output lost. The instance goes first: terminating it releases its
    // data volume (dbctl never detaches a volume from a live instance), which is then deleted.
    ec2.delete_instance(&tags, "vm", None).await.unwrap();
    let d = ec2
        .sdk()
        .describe_instances()
        .instance_ids(&st.vm.instance_id)
        .send()
        .await
        .unwrap();
    let state = d.reservations()[0].instances()[0]
        .state()
        .unwrap()
        .name()
        .unwrap()
        .as_str()
        .to_string();
    assert_eq!(state, "terminated");

    ec2.delete_volume(&tags, "data-volume", None).await.unwrap();
    let gone = ec2
        .sdk()
        .describe_volumes()
        .volume_ids(&st.vol.volume_id)
        .send()
        .await;
    assert!(
        gone.is_err() || gone.unwrap().volumes().is_empty(),
        "volume still there"
    );

    ec2.delete_key_pair(&tags, "ssh-key", None).await.unwrap();
    ec2.delete_security_group(&tags, "firewall", None)
        .await
        .unwrap();
    ec2.delete_network(&tags, "network", None).await.unwrap();
    assert_eq!(ec2.tagged_resources("run-c").await.unwrap(), vec![]);

    // Replaying the deletes (journal lost the "done" mark) is a no-op, with or without outputs.
    ec2.delete_instance(&tags, "vm", Some(&st.vm))
        .await
        .unwrap();
    ec2.delete_volume(&tags, "data-volume", Some(&st.vol))
        .await
        .unwrap();
    ec2.delete_key_pair(&tags, "ssh-key", Some(&st.key))
        .await
        .unwrap();
    ec2.delete_security_group(&tags, "firewall", Some(&st.sg))
        .await
        .unwrap();
    ec2.delete_network(&tags, "network", Some(&st.net))
        .await
        .unwrap();
}

#[tokio::test]
async fn deletes_refuse_to_break_dependency_order() {
    let _s = session().await;
    let ec2 = Ec2::connect(&settings()).await.unwrap();
    let tags = run("run-d");
    let st = provision(&ec2, &tags, "1").await;

    // moto would happily delete both while the instance runs; dbctl must not.
    let e = ec2
        .delete_security_group(&tags, "firewall", None)
        .await
        .unwrap_err();
    assert!(!e.is_transient());
    assert_eq!(e.code(), Some("DependencyViolation"), "{e}");
    let e = ec2
        .delete_network(&tags, "network", Some(&st.net))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("DependencyViolation"), "{e}");
    // Refused before touching anything: the network is still whole.
    for (kind, n) in [
        (ResourceKind::SecurityGroup, 1),
        (ResourceKind::Vpc, 1),
        (ResourceKind::Subnet, 2),
        (ResourceKind::InternetGateway, 1),
        (ResourceKind::RouteTable, 1),
    ] {
        assert_eq!(count(&ec2, "run-d", kind).await, n, "{kind:?}");
    }
}

#[tokio::test]
async fn sweep_removes_one_run_and_leaves_others() {
    let _s = session().await;
    let ec2 = Ec2::connect(&settings()).await.unwrap();
    provision(&ec2, &run("run-e"), "1").await;
    let other = RunTags {
        instance: "db2".into(),
        ..run("run-keep")
    };
    provision(&ec2, &other, "2").await;
    let before_other = ec2.tagged_resources("run-keep").await.unwrap();

    assert!(ec2.tagged_resources("run-e").await.unwrap().len() >= 9);
    ec2.sweep_run("run-e").await.unwrap();
    assert_eq!(ec2.tagged_resources("run-e").await.unwrap(), vec![]);
    assert_eq!(
        ec2.tagged_resources("run-keep").await.unwrap(),
        before_other
    );
    // Sweeping again finds nothing and succeeds.
    ec2.sweep_run("run-e").await.unwrap();
}

#[tokio::test]
async fn private_network_has_no_gateway_and_no_ssh() {
    let _s = session().await;
    let ec2 = Ec2::connect(&AwsSettings {
        public: false,
        ..AwsSettings::default()
    })
    .await
    .unwrap();
    let tags = run("run-f");
    let zones = ec2.available_zones("t3.medium").await.unwrap();
    let net = ec2
        .ensure_network(&tags, "network", &zones[..1])
        .await
        .unwrap();
    assert_eq!(net.internet_gateway_id, None);
    assert_eq!(count(&ec2, "run-f", ResourceKind::InternetGateway).await, 0);
    let sg = ec2
        .ensure_security_group(&tags, "firewall", &net.vpc_id, &net.vpc_cidr, false)
        .await
        .unwrap();
    let d = ec2
        .sdk()
        .describe_security_groups()
        .group_ids(&sg.group_id)
        .send()
        .await
        .unwrap();
    let perms = d.security_groups()[0].ip_permissions();
    assert!(perms.iter().all(|p| p.from_port() != Some(22)), "{perms:?}");
}

/// An HA cluster's group opens etcd (2379, 2380) and Patroni's API (8008) to its own members
/// and to nothing else; a single node's group opens none of them. Ensuring it again adds
/// nothing (the rules are found, not duplicated).
#[tokio::test]
async fn a_cluster_group_opens_etcd_and_patroni_to_its_members_only() {
    let _s = session().await;
    let ec2 = Ec2::connect(&settings()).await.unwrap();
    let zones = ec2.available_zones("t3.medium").await.unwrap();
    let ports =
        |g: &aws_sdk_ec2::types::SecurityGroup, port: i32| -> Vec<(Vec<String>, Vec<String>)> {
            g.ip_permissions()
                .iter()
                .filter(|p| p.from_port() == Some(port))
                .map(|p| {
                    (
                        p.ip_ranges()
                            .iter()
                            .filter_map(|r| r.cidr_ip().map(String::from))
                            .collect(),
                        p.user_id_group_pairs()
                            .iter()
                            .filter_map(|u| u.group_id().map(String::from))
                            .collect(),
                    )
                })
                .collect()
        };
    for (run_id, cluster) in [("run-ha-sg", true), ("run-single-sg", false)] {
        let tags = run(run_id);
        let net = ec2
            .ensure_network(&tags, "network", &zones[..3])
            .await
            .unwrap();
        let sg = ec2
            .ensure_security_group(&tags, "firewall", &net.vpc_id, &net.vpc_cidr, cluster)
            .await
            .unwrap();
        ec2.ensure_security_group(&tags, "firewall", &net.vpc_id, &net.vpc_cidr, cluster)
            .await
            .unwrap();
        let d = ec2
            .sdk()
            .describe_security_groups()
            .group_ids(&sg.group_id)
            .send()
            .await
            .unwrap();
        let g = &d.security_groups()[0];
        for port in [2379, 2380, 8008] {
            let rules = ports(g, port);
            if cluster {
                assert_eq!(rules.len(), 1, "{port}: {rules:?}");
                assert!(rules[0].0.is_empty(), "{port} open to a range: {rules:?}");
                assert_eq!(
                    rules[0].1,
                    std::slice::from_ref(&sg.group_id),
                    "{port}: {rules:?}"
                );
            } else {
                assert!(rules.is_empty(), "{port} on a single node: {rules:?}");
            }
        }
    }
}

/// Sets `DBCTL_AWS_FAULTS` only while connecting: the plan is read once at connect.
async fn connect_with_faults(spec: &str) -> Ec2 {
    // SAFETY: tests hold the session lock, so no other test thread touches the environment.
    unsafe { std::env::set_var(FAULTS_ENV, spec) };
    let ec2 = Ec2::connect(&settings()).await;
    unsafe { std::env::remove_var(FAULTS_ENV) };
    ec2.unwrap()
}

#[tokio::test]
async fn injected_throttling_is_transient_and_the_step_retry_succeeds() {
    let _s = session().await;
    // 3 = the SDK's attempts per call: every attempt of the first RunInstances is throttled, so
    // the error reaches dbctl; CreateVolume's single 500 is absorbed by the SDK's own retry.
    let ec2 = connect_with_faults("RunInstances=throttle*3,CreateVolume=500*1").await;
    let tags = run("run-g");
    let zones = ec2.available_zones("t3.medium").await.unwrap();
    let net = ec2
        .ensure_network(&tags, "network", &zones[..1])
        .await
        .unwrap();
    let sg = ec2
        .ensure_security_group(&tags, "firewall", &net.vpc_id, &net.vpc_cidr, false)
        .await
        .unwrap();
    let key = ec2.ensure_key_pair(&tags, "ssh-key", PUBKEY).await.unwrap();
    let req = InstanceRequest {
        zone: zones[0].clone(),
        subnet_id: net.subnets[0].subnet_id.clone(),
        security_group_id: sg.group_id,
        key_name: key.key_name,
        user_data: None,
        ami: None,
        instance_type: None,
    };
    let err = ec2
        .ensure_instance(&tags, "vm", &req, "tok-1")
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert_eq!(err.code(), Some("RequestLimitExceeded"));
    assert_eq!(err.op(), "RunInstances");
    assert!(err.resource().contains("vm"), "{err}");
    assert_eq!(count(&ec2, "run-g", ResourceKind::Instance).await, 0);

    // The saga retries the step: same call, now succeeds, exactly one instance.
    let vm = ec2
        .ensure_instance(&tags, "vm", &req, "tok-1")
        .await
        .unwrap();
    assert!(vm.instance_id.starts_with("i-"));
    assert_eq!(count(&ec2, "run-g", ResourceKind::Instance).await, 1);

    let vreq = VolumeRequest {
        zone: zones[0].clone(),
        size_gib: 8,
        iops: None,
        throughput: None,
    };
    ec2.ensure_volume(&tags, "data-volume", &vreq, "vol-1")
        .await
        .unwrap();
}

#[tokio::test]
async fn injected_timeouts_are_transient() {
    let _s = session().await;
    let ec2 = connect_with_faults("DescribeVpcs=timeout*3").await;
    let err = ec2
        .ensure_network(&run("run-h"), "network", &["us-east-1a".into()])
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert_eq!(err.op(), "DescribeVpcs");
}

#[tokio::test]
async fn permanent_errors_name_the_resource_and_create_nothing() {
    let _s = session().await;
    let tags = run("run-i");
    let ec2 = Ec2::connect(&AwsSettings {
        extra_pg_cidrs: vec!["10.0.0.0/8".into(), "0.0.0.0/0".into()],
        ..settings()
    })
    .await
    .unwrap();
    let zones = ec2.available_zones("t3.medium").await.unwrap();
    let net = ec2
        .ensure_network(&tags, "network", &zones[..1])
        .await
        .unwrap();
    let err = ec2
        .ensure_security_group(&tags, "firewall", &net.vpc_id, &net.vpc_cidr, false)
        .await
        .unwrap_err();
    assert!(!err.is_transient());
    assert!(err.resource().contains("firewall"), "{err}");
    assert!(err.to_string().contains("0.0.0.0/0"), "{err}");
    assert_eq!(count(&ec2, "run-i", ResourceKind::SecurityGroup).await, 0);

    let good = Ec2::connect(&settings()).await.unwrap();
    let sg = good
        .ensure_security_group(&tags, "firewall", &net.vpc_id, &net.vpc_cidr, false)
        .await
        .unwrap();
    let key = good
        .ensure_key_pair(&tags, "ssh-key", PUBKEY)
        .await
        .unwrap();
    let req = InstanceRequest {
        zone: zones[0].clone(),
        subnet_id: net.subnets[0].subnet_id.clone(),
        security_group_id: sg.group_id,
        key_name: key.key_name,
        user_data: None,
        ami: Some("ami-not-hex".into()),
        instance_type: None,
    };
    let err = good
        .ensure_instance(&tags, "vm", &req, "tok")
        .await
        .unwrap_err();
    assert!(!err.is_transient());
    assert_eq!(err.code(), Some("InvalidAMIID.Malformed"));
    assert!(err.to_string().contains("ami-not-hex"), "{err}");
    assert_eq!(count(&good, "run-i", ResourceKind::Instance).await, 0);

    let err = good.available_zones("t9.nope").await.unwrap_err();
    assert!(
        !err.is_transient() && err.to_string().contains("t9.nope"),
        "{err}"
    );
}

#[tokio::test]
async fn closed_endpoint_is_transient() {
    let _s = session().await;
    // A port nothing listens on: connection refused is a dispatch failure, retryable.
    let ec2 = Ec2::connect(&settings()).await.unwrap();
    let conf = ec2
        .sdk()
        .config()
        .to_builder()
        .endpoint_url("http://127.0.0.1:9")
        .build();
    let dead = aws_sdk_ec2::Client::from_conf(conf);
    let err = dead.describe_vpcs().send().await.unwrap_err();
    let err = dbctl::provider::aws::error::classify("DescribeVpcs", "vpcs", err);
    assert!(err.is_transient(), "{err}");
    assert_eq!(err.code(), None);
}

#[tokio::test]
async fn missing_credentials_are_permanent() {
    let _s = session().await;
    // SAFETY: the session lock is held; restored before any other test can run.
    unsafe {
        std::env::remove_var("AWS_ACCESS_KEY_ID");
        std::env::remove_var("AWS_SECRET_ACCESS_KEY");
    }
    let r = match Ec2::connect(&settings()).await {
        Ok(ec2) => ec2.available_zones("t3.medium").await,
        Err(e) => Err(e),
    };
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
    }
    // Retrying cannot make credentials appear: the saga must stop and say so.
    let err = r.unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert!(err.to_string().contains("no credentials"), "{err}");
}
