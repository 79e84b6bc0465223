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
    /// Mount the data disk and install config on a replica (no initdb: it is cloned).
    DeployReplica {
        node: String,
    },
    /// Roles, database, extensions, replication role and slots.
    SetupPrimary {
        node: String,
    },
    /// pg_basebackup from the primary, start as hot standby.
    CloneReplica {
        node: String,
    },
    /// Every replica streaming with bounded lag; a row written on the primary is read back.
    VerifyReplication,
    RegisterEndpoints,
    RegisterDns,
    RegisterMonitoring,
    RegisterBackups,
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
        let disk = b.add(
            format!("provision.disk.{node}"),
            Provision,
            &[],
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
            Role::Primary => Action::DeployPrimary { node: node.clone() },
            Role::Replica => Action::DeployReplica { node: node.clone() },
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
    let setup = b.add(
        format!("setup.{primary}"),
        Setup,
        &[&deploy_primary],
        Action::SetupPrimary {
            node: primary.clone(),
        },
    );
    let mut ready = vec![setup.clone()];
    let clones: Vec<String> = deployed
        .iter()
        .filter(|(role, _, _)| *role == Role::Replica)
        .map(|(_, node, deploy)| {
            b.add(
                format!("setup.clone.{node}"),
                Setup,
                &[&setup, deploy],
                Action::CloneReplica { node: node.clone() },
            )
        })
        .collect();
    if !clones.is_empty() {
        let refs: Vec<&str> = clones.iter().map(String::as_str).collect();
        ready = vec![b.add(
            "setup.verify-replication".into(),
            Setup,
            &refs,
            Action::VerifyReplication,
        )];
    }
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
    b.0
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
    fn ha_replicas_are_built_beside_the_primary() {
        let s = spec(true);
        let steps = plan(&s, &placement(&s));
        let deps = |n: &str| steps.iter().find(|s| s.name == n).unwrap().deps.clone();
        // Replica VMs do not wait for anything of the primary; only cloning does.
        assert_eq!(deps("provision.vm.replica-1"), deps("provision.vm.primary"));
        assert!(deps("provision.disk.replica-2").is_empty());
        assert!(deps("setup.clone.replica-2").contains(&"setup.primary".to_string()));
        assert!(
            !deps("setup.clone.replica-2")
                .iter()
                .any(|d| d.contains("replica-1"))
        );
        assert_eq!(deps("setup.verify-replication").len(), 2);
    }
}
