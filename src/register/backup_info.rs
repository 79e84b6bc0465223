//! Reading `pgbackrest info --output=json`: the backups of a stanza as dbctl reports them.

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backup {
    pub label: String,
    /// `full`, `diff` or `incr`.
    pub kind: String,
    /// Unix seconds.
    pub started: i64,
    pub stopped: i64,
    /// Database size and what the repository holds for it (bytes).
    pub size: u64,
    pub repo_size: u64,
    /// WAL range the backup needs.
    pub wal_start: String,
    pub wal_stop: String,
}

/// The backups in the last JSON document of `output` (pgBackRest prints one array per call).
pub fn parse(output: &str) -> Option<Vec<Backup>> {
    let json = output
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('['))?;
    let v: Value = serde_json::from_str(json).ok()?;
    let mut out = Vec::new();
    for stanza in v.as_array()? {
        for b in stanza["backup"].as_array().into_iter().flatten() {
            out.push(Backup {
                label: b["label"].as_str().unwrap_or_default().to_string(),
                kind: b["type"].as_str().unwrap_or_default().to_string(),
                started: b["timestamp"]["start"].as_i64().unwrap_or_default(),
                stopped: b["timestamp"]["stop"].as_i64().unwrap_or_default(),
                size: b["info"]["size"].as_u64().unwrap_or_default(),
                repo_size: b["info"]["repository"]["size"].as_u64().unwrap_or_default(),
                wal_start: b["archive"]["start"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                wal_stop: b["archive"]["stop"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            });
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pgbackrest_info_json() {
        let out = "first full backup\n[{\"archive\":[],\"backup\":[{\"archive\":{\"start\":\"000000010000000000000003\",\"stop\":\"000000010000000000000003\"},\"info\":{\"delta\":23000000,\"repository\":{\"delta\":3000000,\"size\":3000000},\"size\":23000000},\"label\":\"20261126-170000F\",\"timestamp\":{\"start\":1795712400,\"stop\":1795712410},\"type\":\"full\"}],\"name\":\"inst-1\",\"status\":{\"code\":0,\"message\":\"ok\"}}]\n";
        let b = parse(out).unwrap();
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].label, "20261126-170000F");
        assert_eq!(b[0].kind, "full");
        assert_eq!(b[0].stopped - b[0].started, 10);
        assert_eq!(b[0].repo_size, 3_000_000);
        assert_eq!(b[0].wal_start, "000000010000000000000003");
        assert!(parse("no json here").is_none());
    }
}
