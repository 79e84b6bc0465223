//! Scheduling a spec against the provider's zones and what the journal says is live.

use std::collections::HashMap;

use crate::config::Config;
use crate::journal::Journal;
use crate::provider::configured_zones;
use crate::scheduler::{Placement, ZoneInfo, schedule};
use crate::spec::{InstanceSpec, ValidationError};

/// Places the spec's nodes in `zones` (the provider's answer) or else the configured zones. Live
/// nodes are counted from the journal (when there is one) so new instances spread away from
/// existing ones.
pub fn place(
    config: &Config,
    journal: Option<&Journal>,
    spec: &InstanceSpec,
    zones: Option<&[String]>,
) -> Result<Placement, ValidationError> {
    let mut live: HashMap<String, u32> = HashMap::new();
    if let Some(j) = journal {
        let placements = j
            .live_placements(&spec.provider, &spec.region)
            .map_err(|e| ValidationError::new("journal", e.to_string()))?;
        for p in placements {
            // A placement we cannot read only weakens spreading; it must not block a create.
            if let Ok(p) = serde_json::from_str::<Placement>(&p) {
                for n in p.nodes {
                    *live.entry(n.zone).or_default() += 1;
                }
            }
        }
    }
    let names = match zones {
        Some(z) => z.to_vec(),
        None => configured_zones(config, &spec.provider, &spec.region),
    };
    let zones: Vec<ZoneInfo> = names
        .into_iter()
        .map(|name| ZoneInfo {
            live_nodes: live.get(&name).copied().unwrap_or(0),
            free_nodes: None,
            name,
        })
        .collect();
    schedule(spec, &zones)
}
