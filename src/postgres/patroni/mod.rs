//! HA clusters run by Patroni with an etcd cluster as its DCS, one member of each per node.
//!
//! dbctl builds the cluster and then steps back: failover is Patroni's job on the nodes (a CLI
//! cannot watch a cluster). The steps, in flow order:
//! `deploy.<node>` ([`DeployMember`]: disk, TLS, helpers) → `setup.etcd.<node>` ([`StartEtcd`])
//! → `setup.patroni.<first>` ([`BootstrapCluster`]: initdb --data-checksums through Patroni)
//! → `setup.<first>` (roles, database; the shared [`super::SetupPrimary`]) →
//! `setup.patroni.<other>` ([`JoinCluster`]: Patroni clones the leader) →
//! `setup.verify-replication` ([`VerifyCluster`]). Day-2 operations (switchover, failover,
//! reinit) are in [`day2`].
//!
//! dbctl reaches Patroni through `dbctl-patroni` on a node (`templates/patroni/`), which calls
//! the node's REST API with the node's certificate and the credentials from Patroni's config:
//! the API is never exposed outside the network and no secret crosses a command line.

mod bootstrap;
pub mod config;
pub mod day2;
mod etcd;
mod member;
pub mod topology;
mod verify;

use std::time::{Duration, Instant};

pub use bootstrap::{BootstrapCluster, JoinCluster};
pub use etcd::StartEtcd;
pub use member::DeployMember;
pub use topology::Topology;
pub use verify::VerifyCluster;

use super::Pg;
use crate::saga::{StepCtx, StepError};
use config::Member;

const HELPER: &str = include_str!("../../../templates/patroni/dbctl-patroni.py");
const ON_ROLE_CHANGE: &str = include_str!("../../../templates/patroni/on-role-change.sh");
const ETCD_START: &str = include_str!("../../../templates/patroni/etcd-start.sh");
const ETCD_STOP: &str = include_str!("../../../templates/patroni/etcd-stop.sh");
const PATRONI_START: &str = include_str!("../../../templates/patroni/patroni-start.sh");
const PATRONI_STOP: &str = include_str!("../../../templates/patroni/patroni-stop.sh");
const MEMBER_UNDEPLOY: &str = include_str!("../../../templates/patroni/member-undeploy.sh");

/// Secret-store names of the cluster's passwords (besides the application roles').
pub const REPLICATOR: &str = crate::postgres::roles::REPLICATOR;
pub const REWIND: &str = crate::postgres::roles::REWIND;
pub const API: &str = "patroni-api";

impl Pg {
    /// Every node with its private address, in placement order.
    pub(crate) fn members(
        &self,
        ctx: &StepCtx,
        nodes: &[String],
    ) -> Result<Vec<Member>, StepError> {
        nodes
            .iter()
            .map(|n| {
                Ok(Member {
                    name: n.clone(),
                    address: self.access.private_address(ctx, n)?,
                })
            })
            .collect()
    }

    pub(crate) fn cluster_password(&self, role: &str) -> Result<String, StepError> {
        self.secrets()
            .password(&self.instance_id, role)
            .map_err(|e| StepError::Permanent(format!("secrets: {e}")))
    }

    /// `dbctl-patroni ARGS` as root on `node` (JSON bodies go through stdin).
    pub(crate) async fn patroni_api(
        &self,
        ctx: &StepCtx,
        node: &str,
        what: &str,
        args: &[&str],
        stdin: Option<&[u8]>,
    ) -> Result<String, StepError> {
        let quoted: Vec<String> = args.iter().map(|a| crate::ssh::shell_quote(a)).collect();
        self.run_script(
            ctx,
            node,
            what,
            &format!("sudo /usr/local/sbin/dbctl-patroni {}", quoted.join(" ")),
            stdin,
            Duration::from_secs(60),
        )
        .await
    }

    /// The cluster as Patroni sees it, asked of the first of `nodes` that answers (a dead node
    /// is skipped at once: its SSH port refuses).
    pub async fn topology(&self, ctx: &StepCtx, nodes: &[String]) -> Result<Topology, StepError> {
        let mut why = Vec::new();
        for node in nodes {
            // A quiet query: this is asked often while waiting.
            let s = match self.access.session(ctx, node).await {
                Ok(s) => s,
                Err(e) => {
                    why.push(format!("{node}: {e}"));
                    continue;
                }
            };
            let out = s
                .exec(
                    "sudo /usr/local/sbin/dbctl-patroni topology",
                    None,
                    Duration::from_secs(60),
                )
                .await;
            match out {
                Ok(o) if o.success() => {
                    return Topology::parse(&o.stdout_str())
                        .map_err(|e| StepError::Transient(format!("{node}: topology: {e}")));
                }
                Ok(o) => why.push(format!("{node}: {}", o.tail(2))),
                Err(e) => why.push(format!("{node}: {e}")),
            }
        }
        Err(StepError::Transient(format!(
            "no node answered for the cluster's state: {}",
            why.join("; ")
        )))
    }

    /// The node that leads now: asked of Patroni for an HA cluster (roles move), `primary` of
    /// a single node (or of an HA instance built before Patroni).
    pub async fn current_leader(
        &self,
        ctx: &StepCtx,
        nodes: &[String],
        primary: &str,
    ) -> Result<String, StepError> {
        if !self.spec.ha || primary == "primary" {
            return Ok(primary.to_string());
        }
        self.wait_topology(ctx, nodes, Duration::from_secs(120), "a leader", |t| {
            t.leader().map(|l| l.name.clone())
        })
        .await
    }

    /// Polls `check` on the topology (with backoff) until it returns `Some`, or fails after
    /// `limit` with the last state seen.
    pub(crate) async fn wait_topology<T>(
        &self,
        ctx: &StepCtx,
        nodes: &[String],
        limit: Duration,
        what: &str,
        mut check: impl FnMut(&Topology) -> Option<T>,
    ) -> Result<T, StepError> {
        let deadline = Instant::now() + limit;
        let mut delay = Duration::from_millis(500);
        let mut last;
        loop {
            match self.topology(ctx, nodes).await {
                Ok(t) => {
                    if let Some(v) = check(&t) {
                        return Ok(v);
                    }
                    last = t.summary();
                }
                Err(e) => last = e.to_string(),
            }
            if Instant::now() >= deadline {
                return Err(StepError::Transient(format!(
                    "{what}: not reached within {} s; last seen: {last}",
                    limit.as_secs()
                )));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 3 / 2).min(Duration::from_secs(5));
        }
    }

    /// `SELECT pg_is_in_recovery()` on the node over its local socket: `Some(false)` for a
    /// server that accepts writes, `None` when PostgreSQL does not answer.
    pub(crate) async fn in_recovery(&self, ctx: &StepCtx, node: &str) -> Option<bool> {
        let s = self.access.session(ctx, node).await.ok()?;
        let o = s
            .exec(
                "sudo -u postgres psql -X -Atq -h /var/run/postgresql -d postgres -c 'SELECT pg_is_in_recovery()'",
                None,
                Duration::from_secs(30),
            )
            .await
            .ok()?;
        match o.stdout_str().trim() {
            "f" if o.success() => Some(false),
            "t" if o.success() => Some(true),
            _ => None,
        }
    }

    /// Runs a root script on `node` if it can be reached; a node that is gone (or never had
    /// a VM recorded) has nothing to undo, and its VM goes in a later rollback step. What the
    /// deploy and HA steps' rollbacks use.
    pub(crate) async fn undo_on_node(
        &self,
        ctx: &StepCtx,
        node: &str,
        what: &str,
        script: &str,
        args: &[&str],
    ) -> Result<(), StepError> {
        if ctx.input(&format!("provision.vm.{node}")).is_none() {
            return Ok(());
        }
        if let Err(e) = self.access.session(ctx, node).await {
            ctx.log(&format!(
                "{node}: not reachable ({e}); nothing to undo on the node"
            ));
            return Ok(());
        }
        self.run_script(
            ctx,
            node,
            what,
            &super::as_root(args),
            Some(script.as_bytes()),
            Duration::from_secs(600),
        )
        .await
        .map(|_| ())
    }
}
