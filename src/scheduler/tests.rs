use super::*;

fn spec(extra: &str) -> InstanceSpec {
    crate::spec::test_spec(&format!("name = \"db\"\n{extra}"))
}

fn zone(name: &str, free: Option<u32>, live: u32) -> ZoneInfo {
    ZoneInfo {
        name: name.into(),
        free_nodes: free,
        live_nodes: live,
    }
}

#[test]
fn ha_nodes_land_in_distinct_zones() {
    let zones = [
        zone("a", None, 0),
        zone("b", None, 0),
        zone("c", None, 0),
        zone("d", None, 0),
    ];
    let p = schedule(&spec("ha = true"), &zones).unwrap();
    let mut picked: Vec<&str> = p.nodes.iter().map(|n| n.zone.as_str()).collect();
    assert_eq!(p.nodes[0].role, Role::Primary);
    assert_eq!(
        p.nodes.iter().map(|n| n.node.as_str()).collect::<Vec<_>>(),
        ["node-1", "node-2", "node-3"]
    );
    picked.sort();
    picked.dedup();
    assert_eq!(picked.len(), 3);
}

#[test]
fn capacity_filter_skips_full_zones() {
    let zones = [
        zone("a", Some(0), 0),
        zone("b", Some(1), 5),
        zone("c", None, 9),
    ];
    let p = schedule(&spec(""), &zones).unwrap();
    assert_eq!(p.nodes[0].zone, "b");
    let e = schedule(&spec("ha = true"), &zones).unwrap_err();
    assert_eq!(e.field, "zones");
    assert!(
        e.message.contains("needs 3 zones") && e.message.contains("only 2"),
        "{e}"
    );
}

#[test]
fn spreads_by_live_nodes_and_breaks_ties_by_name() {
    let zones = [zone("c", None, 1), zone("b", None, 0), zone("a", None, 0)];
    assert_eq!(schedule(&spec(""), &zones).unwrap().nodes[0].zone, "a");
    let zones = [zone("a", None, 3), zone("b", None, 2), zone("c", None, 2)];
    assert_eq!(schedule(&spec(""), &zones).unwrap().nodes[0].zone, "b");
}

#[test]
fn not_enough_zones_for_ha() {
    let zones = [zone("a", None, 0), zone("b", None, 0)];
    let e = schedule(&spec("ha = true"), &zones).unwrap_err();
    assert_eq!(e.field, "zones");
}

#[test]
fn zone_constraint_is_respected_and_checked() {
    let zones = [zone("a", None, 0), zone("b", None, 0), zone("c", None, 0)];
    let p = schedule(&spec("zones = [\"c\"]"), &zones).unwrap();
    assert_eq!(p.nodes[0].zone, "c");
    let e = schedule(&spec("zones = [\"a\", \"x\"]"), &zones).unwrap_err();
    assert_eq!(e.field, "zones[1]");
    let e = schedule(&spec("ha = true\nzones = [\"a\", \"b\"]"), &zones).unwrap_err();
    assert_eq!(e.field, "zones");
}
