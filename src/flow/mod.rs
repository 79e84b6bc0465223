//! The provisioning flow, written once for every provider: which steps an instance needs and
//! what each depends on (the seed's provision → deploy → setup → register).
//!
//! Dependencies are kept as narrow as the work allows so independent steps run at once: each
//! node's data disk is created while the network and VMs come up, replicas are provisioned
//! beside the primary and only their cloning waits for the primary's setup.

use serde::{Deserialize, Serialize};

use crate::scheduler::{Placement, Role};
use crate::spec::InstanceSpec;

/// The seed's stages, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Provision,
    Deploy,
    Setup,
    Register,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Provision => "provision",
            Stage::Deploy => "deploy",
            Stage::Setup => "setup",
            Stage::Register => "register",
        }
    }
}

/// What a step does; providers bind each action to an implementation. Stored in the journal
/// as JSON, so variants and fields may be added but never renamed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Private network (VPC) with one subnet per zone used.
    Network,
    /// Security group: SSH from the operator, PostgreSQL from the VPC, replication between nodes.
    Firewall,
    /// dbctl's SSH public key made known to the provider.
    KeyPair,
    Vm {
        node: String,
        zone: String,
    },
    Disk {
        node: String,
        zone: String,
        size_gib: u32,
    },
    AttachDisk {
        node: String,
    },
    /// PostgreSQL, pgBackRest and the exporters on the node (installed from the image's package
    /// sources unless the image carries them).
    InstallPackages {
        node: String,
    },
    /// Mount the data disk, initdb --data-checksums, tuned config, start.
    DeployPrimary {
        node: String,
    },
    /// Like `DeployPrimary`, but the data directory is restored from another instance's
    /// pgBackRest backups (the spec's `restore`) instead of initdb.
    RestorePrimary {
        node: String,
    },
    /// Legacy (HA before Patroni): mount the data disk and install config on a replica. Kept
    /// so instances created by an older dbctl can still be resumed and destroyed.
    DeployReplica {
        node: String,
    },
    /// Roles, database, extensions, replication role and slots.
    SetupPrimary {
        node: String,
    },
    /// Legacy (HA before Patroni): pg_basebackup from the primary, start as hot standby.
    CloneReplica {
        node: String,
    },
    /// Legacy (HA before Patroni): every replica streaming, a row read back.
    VerifyReplication,
    /// HA: mount the data disk; TLS for PostgreSQL, etcd and Patroni's REST API. No initdb:
    /// Patroni creates the cluster (on the first leader) or clones it (on the others).
    DeployMember {
        node: String,
    },
    /// HA: this node's etcd member (peer and client TLS, every node in the initial cluster).
    StartEtcd {
        node: String,
    },
    /// HA: Patroni on the first leader bootstraps the cluster (initdb --data-checksums, or
    /// adopts a restored data directory) and leads it.
    BootstrapCluster {
        node: String,
    },
    /// HA: Patroni on another node clones the leader and streams from it.
    JoinCluster {
        node: String,
    },
    /// HA: Patroni reports one leader and every other member streaming (one of them the
    /// synchronous standby in sync mode); a row written on the leader is read on each member.
    VerifyCluster,
    RegisterEndpoints,
    RegisterDns,
    RegisterMonitoring,
    RegisterBackups,
    /// Not a flow step: the live topology of an HA cluster, from Patroni (`dbctl status`).
    ClusterStatus,
    /// Day-2 (`dbctl switchover`): leadership moves from `from` to `to`, both resolved when the
    /// run was requested.
    Switchover {
        from: String,
        to: String,
    },
    /// Day-2 (`dbctl failover`): `to` is promoted while no leader is healthy.
    Failover {
        to: String,
    },
    /// Day-2 (`dbctl reinit`): the node's machine runs (started again from its disks if it was
    /// down).
    StartNode {
        node: String,
    },
    /// Day-2 (`dbctl reinit`): the member streams from the leader again; its data is rebuilt
    /// from the leader only when it cannot rejoin by itself, or with `force`.
    Rejoin {
        node: String,
        force: bool,
    },
    /// Not a flow step: `dbctl backup list` (pgBackRest info of the instance's stanza).
    BackupInfo,
    /// Not a flow step: `dbctl backup now` (`full`, `diff` or `incr`).
    BackupNow {
        kind: String,
    },
}

/// One step of a planned run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedStep {
    pub name: String,
    pub stage: Stage,
    pub deps: Vec<String>,
    pub action: Action,
}

struct Builder(Vec<PlannedStep>);

impl Builder {
    fn add(&mut self, name: String, stage: Stage, deps: &[&str], action: Action) -> String {
        self.0.push(PlannedStep {
            name: name.clone(),
            stage,
            deps: deps.iter().map(|d| d.to_string()).collect(),
            action,
        });
        name
    }
}

/// What a throwaway instance (`--throwaway`) leaves out of the register stage, for `status`.
pub const THROWAWAY_LEAVES_OUT: &[&str] = &[
    "backups (no WAL archiving, no first full backup, no schedule)",
    "exporters (no Prometheus targets)",
];

/// The steps that create `spec` at `placement`, in a stable order (a valid topological order).
pub fn plan(spec: &InstanceSpec, placement: &Placement) -> Vec<PlannedStep> {
    use Stage::*;
    let mut b = Builder(Vec::new());
    let network = b.add("provision.network".into(), Provision, &[], Action::Network);
    let firewall = b.add(
        "provision.firewall".into(),
        Provision,
        &[&network],
        Action::Firewall,
    );
    let keypair = b.add("provision.keypair".into(), Provision, &[], Action::KeyPair);

    let mut deployed = Vec::new();
    for n in &placement.nodes {
        let (node, zone) = (n.node.clone(), n.zone.clone());
        let vm = b.add(
            format!("provision.vm.{node}"),
            Provision,
            &[&firewall, &keypair],
            Action::Vm {
                node: node.clone(),
                zone: zone.clone(),
            },
        );
        // On aws a volume attaches only in its instance's zone, and the vm step may move the
        // node to another zone when the planned one has no capacity: the disk is made after
        // the instance, where it runs (a second or two of CreateVolume on the path). The
        // local provider has no zones: its disk is made beside the VM.
        let disk_deps: &[&str] = if spec.provider == "aws" { &[&vm] } else { &[] };
        let disk = b.add(
            format!("provision.disk.{node}"),
            Provision,
            disk_deps,
            Action::Disk {
                node: node.clone(),
                zone,
                size_gib: spec.disk_gib,
            },
        );
        let attach = b.add(
            format!("provision.attach.{node}"),
            Provision,
            &[&vm, &disk],
            Action::AttachDisk { node: node.clone() },
        );
        let packages = b.add(
            format!("deploy.packages.{node}"),
            Deploy,
            &[&vm],
            Action::InstallPackages { node: node.clone() },
        );
        let action = match n.role {
            Role::Primary if spec.restore.is_some() => {
                Action::RestorePrimary { node: node.clone() }
            }
            Role::Primary if !spec.ha => Action::DeployPrimary { node: node.clone() },
            _ => Action::DeployMember { node: node.clone() },
        };
        deployed.push((
            n.role,
            node.clone(),
            b.add(
                format!("deploy.{node}"),
                Deploy,
                &[&attach, &packages],
                action,
            ),
        ));
    }
    let (_, primary, deploy_primary) = deployed
        .iter()
        .find(|(role, _, _)| *role == Role::Primary)
        .cloned()
        .expect("placement has a primary");
    let ready = if spec.ha {
        plan_cluster(&mut b, &deployed, &primary)
    } else {
        vec![b.add(
            format!("setup.{primary}"),
            Setup,
            &[&deploy_primary],
            Action::SetupPrimary {
                node: primary.clone(),
            },
        )]
    };
    let ready: Vec<&str> = ready.iter().map(String::as_str).collect();
    // Endpoints first (DNS and monitoring read them); backups need only a ready cluster, so the
    // first full backup runs beside DNS and exporters.
    let endpoints = b.add(
        "register.endpoints".into(),
        Register,
        &ready,
        Action::RegisterEndpoints,
    );
    b.add(
        "register.dns".into(),
        Register,
        &[&endpoints],
        Action::RegisterDns,
    );
    // A throwaway instance (`--throwaway`) is a test database: no backups, no exporters.
    if !spec.throwaway {
        b.add(
            "register.monitoring".into(),
            Register,
            &[&endpoints],
            Action::RegisterMonitoring,
        );
        b.add(
            "register.backups".into(),
            Register,
            &ready,
            Action::RegisterBackups,
        );
    }
    b.0
}

/// The setup stage of an HA cluster: an etcd member on every node (each needs every node's
/// address, so after all VMs), Patroni bootstrapping on the first leader, the application's
/// roles and database there, then Patroni on the other nodes cloning it, and a check of the
/// whole cluster. Returns the step the register stage waits for.
fn plan_cluster(b: &mut Builder, deployed: &[(Role, String, String)], leader: &str) -> Vec<String> {
    use Stage::Setup;
    let vms: Vec<String> = deployed
        .iter()
        .map(|(_, node, _)| format!("provision.vm.{node}"))
        .collect();
    let etcd: Vec<String> = deployed
        .iter()
        .map(|(_, node, deploy)| {
            let mut deps: Vec<&str> = vms.iter().map(String::as_str).collect();
            deps.push(deploy);
            b.add(
                format!("setup.etcd.{node}"),
                Setup,
                &deps,
                Action::StartEtcd { node: node.clone() },
            )
        })
        .collect();
    let etcd_refs: Vec<&str> = etcd.iter().map(String::as_str).collect();
    let bootstrap = b.add(
        format!("setup.patroni.{leader}"),
        Setup,
        &etcd_refs,
        Action::BootstrapCluster {
            node: leader.to_string(),
        },
    );
    // The replication and rewind roles are (re)set here too, so the members join only after.
    let setup = b.add(
        format!("setup.{leader}"),
        Setup,
        &[&bootstrap],
        Action::SetupPrimary {
            node: leader.to_string(),
        },
    );
    let mut verify_deps = vec![setup.clone()];
    for (_, node, _) in deployed.iter().filter(|(_, n, _)| n != leader) {
        verify_deps.push(b.add(
            format!("setup.patroni.{node}"),
            Setup,
            &[&setup],
            Action::JoinCluster { node: node.clone() },
        ));
    }
    let refs: Vec<&str> = verify_deps.iter().map(String::as_str).collect();
    vec![b.add(
        "setup.verify-replication".into(),
        Setup,
        &refs,
        Action::VerifyCluster,
    )]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::{NodePlacement, Placement};

    fn spec(ha: bool) -> InstanceSpec {
        crate::spec::test_spec(&format!("name = \"db\"\nha = {ha}"))
    }

    fn placement(spec: &InstanceSpec) -> Placement {
        let nodes = crate::scheduler::node_names(spec)
            .into_iter()
            .enumerate()
            .map(|(i, node)| NodePlacement {
                role: if i == 0 { Role::Primary } else { Role::Replica },
                zone: format!("z{i}"),
                node,
            })
            .collect();
        Placement {
            region: "r".into(),
            nodes,
        }
    }

    #[test]
    fn plans_are_valid_dags_in_topological_order() {
        for ha in [false, true] {
            let s = spec(ha);
            let steps = plan(&s, &placement(&s));
            let order = crate::saga::validate_dag(
                steps.iter().map(|p| (p.name.as_str(), p.deps.as_slice())),
            )
            .unwrap();
            for (i, st) in steps.iter().enumerate() {
                for d in &st.deps {
                    let di = steps.iter().position(|x| &x.name == d).unwrap();
                    assert!(di < i, "{} listed before its dependency {d}", st.name);
                }
            }
            assert_eq!(order.len(), steps.len());
        }
    }

    #[test]
    fn a_throwaway_instance_has_no_backups_or_exporters_and_only_that_differs() {
        for ha in [false, true] {
            let full = spec(ha);
            let throwaway = InstanceSpec {
                throwaway: true,
                ..full.clone()
            };
            let names = |s: &InstanceSpec| -> Vec<String> {
                plan(s, &placement(s)).into_iter().map(|p| p.name).collect()
            };
            let mut expected = names(&full);
            expected.retain(|n| n != "register.backups" && n != "register.monitoring");
            assert_eq!(names(&throwaway), expected, "ha={ha}");
            assert!(names(&full).contains(&"register.backups".to_string()));
        }
        // Off by default, and absent from the canonical JSON then: existing idempotency keys
        // do not change.
        let s = spec(false);
        assert!(!s.throwaway);
        assert!(!s.canonical_json().contains("throwaway"));
        let t = crate::spec::test_spec("name = \"db\"\nthrowaway = true\nttl = \"1h\"");
        assert!(t.throwaway);
        assert_ne!(t.hash(), s.hash());
    }

    #[test]
    fn ha_members_are_built_beside_the_leader() {
        let s = spec(true);
        let steps = plan(&s, &placement(&s));
        let deps = |n: &str| steps.iter().find(|s| s.name == n).unwrap().deps.clone();
        // Every node's VM, disk and deploy run at once; only joining waits for the leader.
        assert_eq!(deps("provision.vm.node-2"), deps("provision.vm.node-1"));
        assert!(deps("provision.disk.node-3").is_empty());
        // On aws the disk follows its instance into the zone it got (another one when the
        // planned zone had no capacity): made after it.
        let mut a = spec(true);
        a.provider = "aws".to_string();
        let aws = plan(&a, &placement(&a));
        let disk = aws
            .iter()
            .find(|s| s.name == "provision.disk.node-3")
            .unwrap();
        assert_eq!(disk.deps, ["provision.vm.node-3"]);
        assert_eq!(
            deps("deploy.node-3"),
            ["provision.attach.node-3", "deploy.packages.node-3"]
        );
        // etcd needs every member's address: all VMs first.
        let etcd = deps("setup.etcd.node-2");
        for n in ["node-1", "node-2", "node-3"] {
            assert!(etcd.contains(&format!("provision.vm.{n}")), "{etcd:?}");
        }
        assert_eq!(
            deps("setup.patroni.node-1"),
            [
                "setup.etcd.node-1",
                "setup.etcd.node-2",
                "setup.etcd.node-3"
            ]
        );
        assert_eq!(deps("setup.node-1"), ["setup.patroni.node-1"]);
        assert_eq!(deps("setup.patroni.node-3"), ["setup.node-1"]);
        assert!(
            !deps("setup.patroni.node-3")
                .iter()
                .any(|d| d.contains("node-2"))
        );
        assert_eq!(deps("setup.verify-replication").len(), 3);
        // No step of the single-node path or of the old streaming-replica design.
        assert!(steps.iter().all(|s| !matches!(
            s.action,
            Action::DeployPrimary { .. }
                | Action::CloneReplica { .. }
                | Action::DeployReplica { .. }
        )));
    }
}
