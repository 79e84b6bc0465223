//! `InsufficientInstanceCapacity`: EC2 has no capacity for the instance type in the zone the
//! node was planned in, right now. It clears up on its own, but that can take hours, and
//! another zone usually has the type. So the vm step moves the node to another zone that
//! offers the type, that the spec allows (`zones`), and that holds none of the run's other
//! nodes (anti-affinity stays), with a subnet of the run's network there; the data disk
//! follows, since on aws its step runs after the vm's and reads the zone the vm got
//! (`flow::plan`). Only when no such zone has capacity does the step fail (transient: the
//! saga's retry tries the planned zone again later).

use super::error::AwsError;

/// EC2's error code.
pub const CODE: &str = "InsufficientInstanceCapacity";

pub fn is_capacity(e: &AwsError) -> bool {
    e.code() == Some(CODE)
}

/// The zones to try after the planned one, in order: offered for the type, allowed by the
/// spec (empty: any), holding none of the run's nodes (`placed`, the planned zones of all of
/// them). Rotated by the node's index, so two nodes moving at once start from different
/// zones.
pub fn fallback_zones(
    offered: &[String],
    allowed: &[String],
    placed: &[String],
    node_index: usize,
) -> Vec<String> {
    let mut zones: Vec<String> = offered
        .iter()
        .filter(|z| allowed.is_empty() || allowed.contains(z))
        .filter(|z| !placed.contains(z))
        .cloned()
        .collect();
    zones.sort();
    zones.dedup();
    if !zones.is_empty() {
        let n = node_index % zones.len();
        zones.rotate_left(n);
    }
    zones
}

/// The RunInstances client token for a launch in `zone`: EC2 refuses a token used before
/// with other parameters (another subnet), so each zone gets its own, derived from the
/// step's (at most 64 ASCII characters).
pub fn token_in(token: &str, zone: &str) -> String {
    let suffix = format!("-{zone}");
    let keep = 64usize.saturating_sub(suffix.len()).min(token.len());
    format!("{}{suffix}", &token[..keep])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zones(z: &[&str]) -> Vec<String> {
        z.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn fallback_keeps_anti_affinity_and_the_allowed_zones() {
        let offered = zones(&["us-east-1a", "us-east-1b", "us-east-1c", "us-east-1d"]);
        let placed = zones(&["us-east-1a", "us-east-1b", "us-east-1c"]);
        assert_eq!(
            fallback_zones(&offered, &[], &placed, 1),
            ["us-east-1d"],
            "only the zone without a node"
        );
        let single = zones(&["us-east-1a"]);
        assert_eq!(
            fallback_zones(&offered, &zones(&["us-east-1a", "us-east-1c"]), &single, 0),
            ["us-east-1c"],
            "never a zone the spec does not allow"
        );
        assert!(fallback_zones(&offered, &[], &offered, 0).is_empty());
        // Two nodes moving at once start from different zones.
        let two = fallback_zones(&offered, &[], &single, 1);
        let three = fallback_zones(&offered, &[], &single, 2);
        assert_ne!(two[0], three[0]);
        assert_eq!(two.len(), 3);
    }

    #[test]
    fn each_zone_gets_its_own_token_within_ec2s_limit() {
        let long = "t".repeat(64);
        let a = token_in(&long, "us-east-1a");
        let b = token_in(&long, "us-east-1b");
        assert!(a.len() <= 64 && b.len() <= 64);
        assert_ne!(a, b);
        assert_eq!(
            token_in("run-1-step", "eu-west-1c"),
            "run-1-step-eu-west-1c"
        );
    }
}
