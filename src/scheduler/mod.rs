//! Placement (the seed's Scheduler): which zone each node of an instance goes to.
//!
//! Filter zones by the request's constraint and by capacity, keep primary and replicas in
//! different zones (anti-affinity), and rank what is left by how many live nodes each zone
//! already holds, so instances spread out. Ties break by zone name, so plans are repeatable.

use serde::{Deserialize, Serialize};

use crate::spec::{InstanceSpec, ValidationError};

/// A zone the provider offers, with what the scheduler knows about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneInfo {
    pub name: String,
    /// How many more nodes the zone can take; `None` = not limited as far as dbctl knows.
    pub free_nodes: Option<u32>,
    /// Nodes of live instances already there (from the journal).
    pub live_nodes: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Primary,
    Replica,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodePlacement {
    /// `primary` for a single node; `node-1`, `node-2`, `node-3` for an HA cluster, whose roles
    /// change with every failover (the role here is the one the node starts in: `node-1` is
    /// the first leader). Also the suffix of the node's resource names.
    pub node: String,
    pub role: Role,
    pub zone: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub region: String,
    pub nodes: Vec<NodePlacement>,
}

impl Placement {
    pub fn zone_of(&self, node: &str) -> Option<&str> {
        self.nodes
            .iter()
            .find(|n| n.node == node)
            .map(|n| n.zone.as_str())
    }
}

/// Node names for a spec, the first leader first. An HA cluster's members are numbered, not
/// named for a role: after a failover `node-2` may lead, and a name saying `primary` would lie.
pub fn node_names(spec: &InstanceSpec) -> Vec<String> {
    if spec.replicas == 0 {
        return vec!["primary".to_string()];
    }
    (1..=spec.nodes()).map(|i| format!("node-{i}")).collect()
}

/// The 0-based index of a node (`primary`, `node-1` → 0; `node-3` → 2), for addresses and MACs.
pub fn node_index(node: &str) -> u8 {
    node.strip_prefix("node-")
        .and_then(|n| n.parse::<u8>().ok())
        .map(|n| n.saturating_sub(1))
        .unwrap_or(0)
}

/// Places every node of `spec` in one of `zones`, or says why it cannot (a validation error on
/// `zones`: the request, as given, cannot be satisfied).
pub fn schedule(spec: &InstanceSpec, zones: &[ZoneInfo]) -> Result<Placement, ValidationError> {
    let offered: Vec<&str> = zones.iter().map(|z| z.name.as_str()).collect();
    for (i, z) in spec.zones.iter().enumerate() {
        if !offered.contains(&z.as_str()) {
            return Err(ValidationError::new(
                format!("zones[{i}]"),
                format!(
                    "zone {z:?} is not offered in region {} (available: {})",
                    spec.region,
                    offered.join(", ")
                ),
            ));
        }
    }
    let mut candidates: Vec<&ZoneInfo> = zones
        .iter()
        .filter(|z| spec.zones.is_empty() || spec.zones.contains(&z.name))
        .filter(|z| z.free_nodes != Some(0))
        .collect();
    candidates.sort_by(|a, b| {
        a.live_nodes
            .cmp(&b.live_nodes)
            .then_with(|| a.name.cmp(&b.name))
    });

    let names = node_names(spec);
    let mut nodes = Vec::with_capacity(names.len());
    if spec.nodes() > 1 {
        // Anti-affinity: every node in its own zone.
        if candidates.len() < names.len() {
            let have: Vec<&str> = candidates.iter().map(|z| z.name.as_str()).collect();
            return Err(ValidationError::new(
                "zones",
                format!(
                    "HA needs {} zones with free capacity for anti-affinity, only {} available ({})",
                    names.len(),
                    have.len(),
                    have.join(", ")
                ),
            ));
        }
        for (node, zone) in names.into_iter().zip(candidates) {
            nodes.push((node, zone.name.clone()));
        }
    } else {
        let Some(zone) = candidates.first() else {
            return Err(ValidationError::new("zones", "no zone with free capacity"));
        };
        nodes.push((
            names.into_iter().next().expect("a primary"),
            zone.name.clone(),
        ));
    }
    Ok(Placement {
        region: spec.region.clone(),
        nodes: nodes
            .into_iter()
            .enumerate()
            .map(|(i, (node, zone))| NodePlacement {
                node,
                role: if i == 0 { Role::Primary } else { Role::Replica },
                zone,
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests;
