//! PostgreSQL on a node, over SSH: the seed's Deployer (disk, initdb, tuned config, TLS, service)
//! and Setup (roles, database, extensions, readiness). Written once; a provider supplies node
//! access through [`NodeAccess`].

pub mod client;
pub mod config;
mod deploy;
mod packages;
pub mod patroni;
mod replica;
mod restore;
pub mod roles;
pub mod secrets;
mod setup;
pub mod tls;
pub mod tuning;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use deploy::DeployPrimary;
pub(crate) use deploy::as_root;
pub use packages::InstallPackages;
pub use replica::{CloneReplica, DeployReplica, VerifyReplication, slot_name};
pub use restore::RestorePrimary;
pub use setup::{Endpoint, SetupPrimary};

use crate::saga::{StepCtx, StepError};
use crate::spec::InstanceSpec;
use crate::ssh::SshSession;

/// How the PostgreSQL steps reach a node; implemented by each provider.
#[async_trait]
pub trait NodeAccess: Send + Sync {
    /// A verified SSH session to `node` (reused across steps).
    async fn session(&self, ctx: &StepCtx, node: &str) -> Result<Arc<SshSession>, StepError>;
    /// Where the host reaches the node's PostgreSQL.
    fn pg_endpoint(&self, ctx: &StepCtx, node: &str) -> Result<(String, u16), StepError>;
    /// Whether the host reaches the node's PostgreSQL only through the node's SSH session: the
    /// security group opens 5432 to the VPC, not to the operator (EC2), so the readiness check
    /// connects to the node's private address through an SSH forward.
    fn pg_through_ssh(&self) -> bool {
        false
    }
    /// The instance's private network (replication, app servers inside it).
    fn vpc_cidr(&self) -> String;
    /// Addresses clients may connect from, as the node sees them (the VPC, the operator).
    fn client_cidrs(&self) -> Vec<String>;
    /// Names and addresses the server certificate must carry.
    fn cert_names(&self, ctx: &StepCtx, node: &str) -> Result<Vec<String>, StepError>;
    /// The node's address on the instance's private network (replication goes there).
    fn private_address(&self, ctx: &StepCtx, node: &str) -> Result<String, StepError>;
    /// The stable device path of the node's data disk.
    fn data_device(&self, ctx: &StepCtx, node: &str) -> Result<String, StepError>;
    /// Where Prometheus reaches the exporter listening on `guest_port` of `node`.
    fn metrics_target(
        &self,
        ctx: &StepCtx,
        node: &str,
        guest_port: u16,
    ) -> Result<(String, u16), StepError>;
    /// The address the S3 endpoint's name must resolve to on the node when the node cannot
    /// reach the endpoint directly (the local provider's relay); `None` = reach it directly.
    fn s3_route(&self) -> Option<String> {
        None
    }
    /// Whether the node has cloud credentials of its own (an instance profile, read from the
    /// instance metadata service): then pgBackRest takes those, and no operator key is put on
    /// the node.
    fn instance_credentials(&self) -> bool {
        false
    }
    /// (name, address) pairs the node must resolve its package mirrors to when it reaches them
    /// only through relays (local VMs of imported cloud images); empty = reach them directly.
    fn package_routes(
        &self,
        _ctx: &StepCtx,
        _node: &str,
    ) -> Result<Vec<(String, String)>, StepError> {
        Ok(Vec::new())
    }
    /// Publishes A records (name → private addresses) in the provider's own DNS, if it has
    /// one configured (aws: a Route53 private hosted zone); returns what it published.
    async fn publish_dns(
        &self,
        _ctx: &StepCtx,
        _records: &[(String, Vec<String>)],
    ) -> Result<Option<serde_json::Value>, StepError> {
        Ok(None)
    }
    /// Removes the records of `names` that [`NodeAccess::publish_dns`] may have published
    /// (works from the config and the run's outputs alone, so a lost journal write after
    /// publishing leaks nothing).
    async fn unpublish_dns(&self, _ctx: &StepCtx, _names: &[String]) -> Result<(), StepError> {
        Ok(())
    }
}

/// The implementation of a deploy/setup/register action, the same on every provider (only
/// `pg.access` differs); `None` for provisioning actions, which providers bind themselves.
pub fn bind(
    action: &crate::flow::Action,
    pg: Arc<Pg>,
    placement: &crate::scheduler::Placement,
) -> Option<Arc<dyn crate::saga::Step>> {
    use crate::flow::Action as A;
    let primary = || {
        placement
            .nodes
            .iter()
            .find(|n| n.role == crate::scheduler::Role::Primary)
            .map(|n| n.node.clone())
            .unwrap_or_else(|| "primary".into())
    };
    let nodes = || {
        placement
            .nodes
            .iter()
            .map(|n| (n.node.clone(), n.role))
            .collect::<Vec<_>>()
    };
    let names = || {
        placement
            .nodes
            .iter()
            .map(|n| n.node.clone())
            .collect::<Vec<_>>()
    };
    Some(match action {
        A::InstallPackages { node } => Arc::new(InstallPackages {
            pg,
            node: node.clone(),
        }),
        A::DeployPrimary { node } => Arc::new(DeployPrimary {
            pg,
            node: node.clone(),
        }),
        A::RestorePrimary { node } => Arc::new(RestorePrimary {
            pg,
            node: node.clone(),
        }),
        A::SetupPrimary { node } => Arc::new(SetupPrimary {
            pg,
            node: node.clone(),
        }),
        A::DeployReplica { node } => Arc::new(DeployReplica {
            pg,
            node: node.clone(),
        }),
        A::CloneReplica { node } => Arc::new(CloneReplica {
            pg,
            node: node.clone(),
            primary: primary(),
        }),
        A::VerifyReplication => Arc::new(VerifyReplication {
            pg,
            primary: primary(),
            replicas: placement
                .nodes
                .iter()
                .filter(|n| n.role == crate::scheduler::Role::Replica)
                .map(|n| n.node.clone())
                .collect(),
        }),
        A::DeployMember { node } => Arc::new(patroni::DeployMember {
            pg,
            node: node.clone(),
        }),
        A::StartEtcd { node } => Arc::new(patroni::StartEtcd {
            pg,
            node: node.clone(),
            nodes: names(),
        }),
        A::BootstrapCluster { node } => Arc::new(patroni::BootstrapCluster {
            pg,
            node: node.clone(),
            nodes: names(),
        }),
        A::JoinCluster { node } => Arc::new(patroni::JoinCluster {
            pg,
            node: node.clone(),
            nodes: names(),
        }),
        A::VerifyCluster => Arc::new(patroni::VerifyCluster { pg, nodes: names() }),
        A::ClusterStatus => Arc::new(patroni::day2::ClusterStatus { pg, nodes: names() }),
        A::Switchover { from, to } => Arc::new(patroni::day2::Switchover {
            pg,
            nodes: names(),
            from: from.clone(),
            to: to.clone(),
        }),
        A::Failover { to } => Arc::new(patroni::day2::Failover {
            pg,
            nodes: names(),
            to: to.clone(),
        }),
        A::Rejoin { node, force } => Arc::new(patroni::day2::Rejoin {
            pg,
            nodes: names(),
            node: node.clone(),
            force: *force,
        }),
        A::RegisterEndpoints => {
            Arc::new(crate::register::RegisterEndpoints::for_placement(placement))
        }
        A::RegisterDns => Arc::new(crate::register::RegisterDns { pg, nodes: nodes() }),
        A::RegisterMonitoring => Arc::new(crate::register::RegisterMonitoring {
            pg,
            primary: primary(),
            nodes: nodes(),
        }),
        A::RegisterBackups => Arc::new(crate::register::RegisterBackups {
            pg,
            primary: primary(),
            nodes: names(),
        }),
        A::BackupInfo => Arc::new(crate::register::BackupTask {
            pg,
            primary: primary(),
            nodes: names(),
            kind: None,
        }),
        A::BackupNow { kind } => Arc::new(crate::register::BackupTask {
            pg,
            primary: primary(),
            nodes: names(),
            kind: Some(kind.clone()),
        }),
        _ => return None,
    })
}

/// What every PostgreSQL step of one run shares.
pub struct Pg {
    pub access: Arc<dyn NodeAccess>,
    pub spec: InstanceSpec,
    pub instance_id: String,
    pub state_dir: PathBuf,
    /// Names, Prometheus targets, backup repository.
    pub register: Arc<crate::register::Settings>,
    /// Rolling back deletes the backups too (a failed create, `destroy --purge-backups`).
    pub purge_backups: bool,
}

impl Pg {
    pub fn secrets(&self) -> secrets::SecretStore {
        secrets::SecretStore::new(&self.state_dir)
    }

    pub fn ca(&self) -> Result<tls::LocalCa, StepError> {
        tls::LocalCa::load_or_create(&self.state_dir.join("ca"))
            .map_err(|e| StepError::Permanent(e.to_string()))
    }

    /// Runs a root script on the node, logging its name (never its input) to the run's events.
    pub(crate) async fn run_script(
        &self,
        ctx: &StepCtx,
        node: &str,
        what: &str,
        script: &str,
        stdin: Option<&[u8]>,
        limit: Duration,
    ) -> Result<String, StepError> {
        let s = self.access.session(ctx, node).await?;
        ctx.log(&format!("{node}: {what}"));
        // One attempt of this step at a time on the node (/run/lock is a tmpfs: a reboot
        // clears it, along with the processes it guarded).
        let lock = format!("/run/lock/dbctl-{}-{}.lock", ctx.run_id, ctx.step);
        let out = s
            .exec_locked(script, stdin, limit, Some(&lock))
            .await
            .map_err(|e| StepError::Transient(e.to_string()))?;
        if out.status == Some(crate::ssh::STEP_LOCK_BUSY) {
            return Err(StepError::Transient(format!(
                "{node}: {what}: an earlier attempt of {} is still running there",
                ctx.step
            )));
        }
        if !out.success() {
            return Err(StepError::Transient(format!(
                "{node}: {what} failed (exit {:?}): {}",
                out.status,
                out.tail(4)
            )));
        }
        Ok(out.stdout_str())
    }

    /// Writes `content` to `path` on the node with owner and mode, via stdin (so secrets never
    /// appear in a command line).
    pub(crate) async fn upload(
        &self,
        ctx: &StepCtx,
        node: &str,
        path: &str,
        content: &[u8],
        owner: &str,
        mode: &str,
    ) -> Result<(), StepError> {
        let q = crate::ssh::shell_quote;
        let script = format!(
            "sudo install -D -m {mode} -o {owner} -g {owner} /dev/stdin {}",
            q(path)
        );
        self.run_script(
            ctx,
            node,
            &format!("upload {path}"),
            &script,
            Some(content),
            Duration::from_secs(60),
        )
        .await
        .map(|_| ())
    }
}
