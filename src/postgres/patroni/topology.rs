//! The live state of an HA cluster, as Patroni reports it: who leads, each member's state and
//! timeline, and (from the leader) which members stream and which one is synchronous.

use serde::{Deserialize, Serialize};

/// One member of `GET /cluster`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberState {
    pub name: String,
    /// `leader`, `sync_standby` or `replica`.
    pub role: String,
    /// Patroni's word: `running`, `starting`, `stopped`, `creating replica`, `start failed`, …
    pub state: String,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub timeline: Option<u64>,
    /// Bytes behind the leader (`unknown` while Patroni cannot tell).
    #[serde(default)]
    pub lag: Option<serde_json::Value>,
}

/// One row of the leader's `pg_stat_replication`, as Patroni reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stream {
    /// The standby's member name (Patroni sets it as application_name).
    pub application_name: String,
    /// `streaming`, `catchup`, …
    pub state: String,
    /// `sync`, `async`, `potential`, `quorum`.
    pub sync_state: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Topology {
    pub members: Vec<MemberState>,
    /// The leader's replication connections (empty without a leader).
    pub replication: Vec<Stream>,
}

#[derive(Deserialize)]
struct Raw {
    cluster: RawCluster,
    #[serde(default)]
    replication: Vec<Stream>,
}

#[derive(Deserialize)]
struct RawCluster {
    #[serde(default)]
    members: Vec<MemberState>,
}

impl Topology {
    /// Parses `dbctl-patroni topology` output.
    pub fn parse(text: &str) -> Result<Topology, serde_json::Error> {
        let raw: Raw = serde_json::from_str(text.trim())?;
        Ok(Topology {
            members: raw.cluster.members,
            replication: raw.replication,
        })
    }

    /// The member holding the leader lock whose PostgreSQL runs.
    pub fn leader(&self) -> Option<&MemberState> {
        self.members
            .iter()
            .find(|m| m.role == "leader" && m.state == "running")
    }

    pub fn member(&self, name: &str) -> Option<&MemberState> {
        self.members.iter().find(|m| m.name == name)
    }

    /// The leader's replication connection from `name`, if it streams.
    pub fn streaming(&self, name: &str) -> Option<&Stream> {
        self.replication
            .iter()
            .find(|s| s.application_name == name && s.state == "streaming")
    }

    /// The synchronous standby, if one streams as such.
    pub fn sync_standby(&self) -> Option<&Stream> {
        self.replication
            .iter()
            .find(|s| s.sync_state == "sync" && s.state == "streaming")
    }

    /// Every member but the leader streams from it.
    pub fn all_streaming(&self) -> bool {
        let Some(leader) = self.leader() else {
            return false;
        };
        self.members
            .iter()
            .filter(|m| m.name != leader.name)
            .all(|m| self.streaming(&m.name).is_some())
    }

    /// One line for messages: `node-1 leader running tl 1, node-2 sync_standby running (streaming sync), …`.
    pub fn summary(&self) -> String {
        if self.members.is_empty() {
            return "no members registered".into();
        }
        self.members
            .iter()
            .map(|m| {
                let tl = m.timeline.map(|t| format!(" tl {t}")).unwrap_or_default();
                let stream = self
                    .replication
                    .iter()
                    .find(|s| s.application_name == m.name)
                    .map(|s| format!(" ({} {})", s.state, s.sync_state))
                    .unwrap_or_default();
                format!("{} {} {}{tl}{stream}", m.name, m.role, m.state)
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // As Patroni 3.0.2 answers (GET /cluster; the leader's GET /patroni replication).
    const HEALTHY: &str = r#"{"cluster": {"members": [
        {"name": "node-1", "role": "leader", "state": "running", "api_url": "https://10.77.0.10:8008/patroni", "host": "10.77.0.10", "port": 5432, "timeline": 1},
        {"name": "node-2", "role": "sync_standby", "state": "running", "host": "10.77.0.11", "port": 5432, "timeline": 1, "lag": 0},
        {"name": "node-3", "role": "replica", "state": "running", "host": "10.77.0.12", "port": 5432, "timeline": 1, "lag": 0}]},
      "replication": [
        {"usename": "replicator", "application_name": "node-2", "client_addr": "10.77.0.11", "state": "streaming", "sync_state": "sync", "sync_priority": 1},
        {"usename": "replicator", "application_name": "node-3", "client_addr": "10.77.0.12", "state": "streaming", "sync_state": "async", "sync_priority": 0}]}"#;

    #[test]
    fn a_healthy_cluster() {
        let t = Topology::parse(HEALTHY).unwrap();
        assert_eq!(t.leader().unwrap().name, "node-1");
        assert!(t.all_streaming());
        assert_eq!(t.sync_standby().unwrap().application_name, "node-2");
        assert!(
            t.summary()
                .contains("node-2 sync_standby running tl 1 (streaming sync)")
        );
    }

    #[test]
    fn a_cluster_without_a_leader_or_with_a_member_not_streaming() {
        let t = Topology::parse(
            r#"{"cluster": {"members": [
            {"name": "node-2", "role": "replica", "state": "running", "lag": "unknown"},
            {"name": "node-3", "role": "replica", "state": "running"}]}, "replication": []}"#,
        )
        .unwrap();
        assert!(t.leader().is_none() && !t.all_streaming());
        let mut t = Topology::parse(HEALTHY).unwrap();
        t.replication.pop();
        assert!(!t.all_streaming());
        // A leader whose PostgreSQL is not running is no leader to write to.
        let t = Topology::parse(&HEALTHY.replacen(
            "\"leader\", \"state\": \"running\"",
            "\"leader\", \"state\": \"starting\"",
            1,
        ))
        .unwrap();
        assert!(t.leader().is_none());
    }
}
