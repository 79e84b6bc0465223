//! Day-2 operations on an HA cluster, each a step of its own journaled run: a planned
//! switchover, a failover when no leader is healthy, and bringing one member back. Patroni does
//! the work; these steps ask it through a node's `dbctl-patroni` and wait (with backoff) until
//! the cluster shows the result. All are idempotent: a step re-run after a crash first looks at
//! the cluster and does only what is still missing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{Value, json};

use super::Topology;
use crate::postgres::Pg;
use crate::saga::{Step, StepCtx, StepError};

/// `ClusterStatus`: the live topology, for `dbctl status` (not a journaled step).
pub struct ClusterStatus {
    pub pg: Arc<Pg>,
    pub nodes: Vec<String>,
}

#[async_trait]
impl Step for ClusterStatus {
    async fn execute(&self, ctx: &StepCtx) -> Result<Value, StepError> {
        let t = self.pg.topology(ctx, &self.nodes).await?;
        Ok(serde_json::to_value(t).expect("json"))
    }

    async fn rollback(&self, _ctx: &StepCtx) -> Result<(), StepError> {
        Ok(())
    }
}

impl Pg {
    /// Waits until `node` holds the leader lock and its server takes writes.
    async fn wait_leading(
        &self,
        ctx: &StepCtx,
        nodes: &[String],
        node: &str,
        limit: Duration,
    ) -> Result<Topology, StepError> {
        let deadline = Instant::now() + limit;
        let t = self
            .wait_topology(ctx, nodes, limit, &format!("{node} leading"), |t| {
                (t.leader().map(|l| l.name.as_str()) == Some(node)).then(|| t.clone())
            })
            .await?;
        let mut delay = Duration::from_millis(200);
        loop {
            if self.in_recovery(ctx, node).await == Some(false) {
                return Ok(t);
            }
            if Instant::now() >= deadline {
                return Err(StepError::Transient(format!(
                    "{node} leads but does not accept writes yet"
                )));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 3 / 2).min(Duration::from_secs(3));
        }
    }

    /// Sends an HTTP POST to a member's Patroni API through `via` (a node that answers).
    async fn post_api(
        &self,
        ctx: &StepCtx,
        via: &str,
        path: &str,
        body: &Value,
        member: Option<&str>,
    ) -> Result<String, StepError> {
        let mut args = vec!["post", path, "-"];
        if let Some(m) = member {
            args.push(m);
        }
        let body = body.to_string();
        match self
            .patroni_api(
                ctx,
                via,
                &format!("POST {path}"),
                &args,
                Some(body.as_bytes()),
            )
            .await
        {
            // Patroni refused the request as impossible (not a candidate, not the leader):
            // asking again will not change that.
            Err(StepError::Transient(m)) if m.contains("HTTP 4") => Err(StepError::Permanent(m)),
            other => other,
        }
    }

    /// Like [`Pg::post_api`] for requests whose outcome the caller then waits for in the
    /// cluster: Patroni answers 503 "status unknown" when the change takes longer than its own
    /// poll (it often does under emulation), so only a refusal is an error here.
    async fn request_change(
        &self,
        ctx: &StepCtx,
        via: &str,
        path: &str,
        body: &Value,
        member: Option<&str>,
    ) -> Result<(), StepError> {
        match self.post_api(ctx, via, path, body, member).await {
            Ok(answer) => ctx.log(&format!("patroni: {}", answer.trim())),
            Err(StepError::Permanent(m)) => return Err(StepError::Permanent(m)),
            Err(e) => ctx.log(&format!("{e}; waiting to see whether it took effect")),
        }
        Ok(())
    }
}

/// `dbctl switchover`: the leader `from` hands over to `to` (both resolved when the run was
/// requested, so a re-run knows what it was asked).
pub struct Switchover {
    pub pg: Arc<Pg>,
    pub nodes: Vec<String>,
    pub from: String,
    pub to: String,
}

#[async_trait]
impl Step for Switchover {
    async fn execute(&self, ctx: &StepCtx) -> Result<Value, StepError> {
        let (pg, to) = (&self.pg, self.to.as_str());
        let started = Instant::now();
        let t = pg.topology(ctx, &self.nodes).await?;
        match t.leader().map(|l| l.name.as_str()) {
            Some(l) if l == to => ctx.log(&format!("{to} already leads")),
            Some(l) if l == self.from => {
                ctx.log(&format!("switchover {} → {to}", self.from));
                let body = json!({ "leader": self.from, "candidate": to });
                pg.request_change(ctx, to, "/switchover", &body, Some(&self.from))
                    .await?;
            }
            Some(other) => {
                return Err(StepError::Permanent(format!(
                    "{other} leads now, not {}: the cluster changed since the request (see dbctl status)",
                    self.from
                )));
            }
            // Mid-switchover (a re-run after a crash): wait for the outcome.
            None => ctx.log("no leader right now; waiting for one"),
        }
        let t = pg
            .wait_leading(ctx, &self.nodes, to, Duration::from_secs(300))
            .await?;
        ctx.log(&format!("{to} leads and accepts writes: {}", t.summary()));
        Ok(
            json!({ "from": self.from, "to": to, "took_ms": started.elapsed().as_millis() as u64, "members": t.members }),
        )
    }

    async fn rollback(&self, _ctx: &StepCtx) -> Result<(), StepError> {
        Ok(()) // A switchover is undone by another switchover, never implicitly.
    }
}

/// `dbctl failover --to NODE`: when no leader is healthy, promote `to`.
pub struct Failover {
    pub pg: Arc<Pg>,
    pub nodes: Vec<String>,
    pub to: String,
}

#[async_trait]
impl Step for Failover {
    async fn execute(&self, ctx: &StepCtx) -> Result<Value, StepError> {
        let (pg, to) = (&self.pg, self.to.as_str());
        let started = Instant::now();
        let t = pg.topology(ctx, &self.nodes).await?;
        match t.leader().map(|l| l.name.clone()) {
            Some(l) if l == to => ctx.log(&format!("{to} already leads")),
            Some(l) => {
                return Err(StepError::Permanent(format!(
                    "{l} is a healthy leader: use dbctl switchover to move leadership"
                )));
            }
            None => {
                ctx.log(&format!("failover to {to}"));
                pg.request_change(ctx, to, "/failover", &json!({ "candidate": to }), None)
                    .await?;
            }
        }
        let t = pg
            .wait_leading(ctx, &self.nodes, to, Duration::from_secs(300))
            .await?;
        ctx.log(&format!("{to} leads and accepts writes: {}", t.summary()));
        Ok(
            json!({ "to": to, "took_ms": started.elapsed().as_millis() as u64, "members": t.members }),
        )
    }

    async fn rollback(&self, _ctx: &StepCtx) -> Result<(), StepError> {
        Ok(())
    }
}

/// `reinit.rejoin.<node>`: the member's services run again and it streams from the leader.
/// Patroni rewinds a former leader by itself (pg_rewind; checksums are on); only a member that
/// cannot rejoin — or `force` — gets its data rebuilt from the leader (Patroni's reinitialize).
pub struct Rejoin {
    pub pg: Arc<Pg>,
    pub nodes: Vec<String>,
    pub node: String,
    pub force: bool,
}

const START_SERVICES: &str = "set -e\n\
mountpoint -q /pgdata || mount /pgdata\n\
systemctl start etcd\n\
systemctl start patroni\n";

/// How long a member may take to rejoin on its own before its data is rebuilt.
const REJOIN_LIMIT: Duration = Duration::from_secs(600);

impl Rejoin {
    async fn reinitialize(&self, ctx: &StepCtx) -> Result<(), StepError> {
        ctx.log(&format!(
            "{}: rebuilding its data from the leader",
            self.node
        ));
        self.pg
            .post_api(
                ctx,
                &self.node,
                "/reinitialize",
                &json!({ "force": true }),
                None,
            )
            .await
            .map(|_| ())
    }

    /// Waits until the member runs and streams. While it does not, the leader is asked for a
    /// CHECKPOINT now and then: a member rewound by pg_rewind becomes consistent only once it
    /// replays past the leader's WAL position at rewind time, and an idle leader writes no WAL
    /// that would carry it there (it would sit in "starting" until the next write).
    async fn streaming(&self, ctx: &StepCtx, limit: Duration) -> Result<Topology, StepError> {
        let node = self.node.as_str();
        let deadline = Instant::now() + limit;
        let mut delay = Duration::from_millis(500);
        let mut next_nudge = Instant::now() + Duration::from_secs(20);
        loop {
            let last = match self.pg.topology(ctx, &self.nodes).await {
                Ok(t) => {
                    let running = t.member(node).is_some_and(|m| m.state == "running");
                    if running && t.streaming(node).is_some() {
                        return Ok(t);
                    }
                    if Instant::now() >= next_nudge
                        && let Some(l) = t.leader()
                    {
                        let s = self.pg.access.session(ctx, &l.name).await?;
                        let _ = s
                            .exec(
                                "sudo -u postgres psql -X -q -h /var/run/postgresql -d postgres -c CHECKPOINT",
                                None,
                                Duration::from_secs(120),
                            )
                            .await;
                        next_nudge = Instant::now() + Duration::from_secs(30);
                    }
                    t.summary()
                }
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(StepError::Transient(format!(
                    "{node} streaming: not reached within {} s; last seen: {last}",
                    limit.as_secs()
                )));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 3 / 2).min(Duration::from_secs(5));
        }
    }
}

#[async_trait]
impl Step for Rejoin {
    async fn execute(&self, ctx: &StepCtx) -> Result<Value, StepError> {
        let (pg, node) = (&self.pg, self.node.as_str());
        let t = pg.topology(ctx, &self.nodes).await?;
        if t.leader().map(|l| l.name.as_str()) == Some(node) {
            return Err(StepError::Permanent(format!(
                "{node} is the leader: switch over first, then reinit it"
            )));
        }
        pg.run_script(
            ctx,
            node,
            "start etcd and patroni",
            "sudo bash -s",
            Some(START_SERVICES.as_bytes()),
            Duration::from_secs(300),
        )
        .await?;
        // A forced rebuild is journaled as done only once it happened: a re-run after a crash
        // finds the member streaming with the outputs missing, and rebuilds again (harmless).
        let mut rebuilt = false;
        if self.force {
            self.reinitialize(ctx).await?;
            rebuilt = true;
        }
        let t = match self.streaming(ctx, REJOIN_LIMIT).await {
            Ok(t) => t,
            Err(e) if !rebuilt => {
                ctx.log(&format!("{node} did not rejoin on its own ({e})"));
                self.reinitialize(ctx).await?;
                rebuilt = true;
                self.streaming(ctx, Duration::from_secs(3600)).await?
            }
            Err(e) => return Err(e),
        };
        let m = t.member(node).cloned();
        ctx.log(&format!(
            "{node} streams again{}: {}",
            if rebuilt { " (rebuilt)" } else { "" },
            t.summary()
        ));
        Ok(json!({ "node": node, "rebuilt": rebuilt, "member": m, "members": t.members }))
    }

    async fn rollback(&self, _ctx: &StepCtx) -> Result<(), StepError> {
        Ok(())
    }
}
