//! What the register stage publishes outside the journal, as `dbctl gc` finds it: the blocks of
//! the hosts file (one per instance, keyed by its id) and the Prometheus file_sd files (one per
//! instance, `<project>.<name>.json`). A run lost with its journal rows, or a journal lost
//! whole, leaves them naming a database that is gone; nothing in them carries a run id, so they
//! are matched to instances, not runs.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::Settings;
use super::hosts::replace_block;
use crate::journal::gc::InstanceKey;

/// One published entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    /// `# dbctl:begin <instance>` … `# dbctl:end <instance>` in `file`.
    HostsBlock { file: PathBuf, instance: String },
    /// A file_sd file named for the instance's project and name.
    Targets {
        file: PathBuf,
        project: String,
        name: String,
    },
}

impl Published {
    pub fn describe(&self) -> String {
        match self {
            Published::HostsBlock { file, instance } => {
                format!("hosts block {instance} in {}", file.display())
            }
            Published::Targets { file, .. } => format!("prometheus targets {}", file.display()),
        }
    }

    /// What `gc` names it by: the instance id, or `project/name`.
    pub fn instance(&self) -> String {
        match self {
            Published::HostsBlock { instance, .. } => instance.clone(),
            Published::Targets { project, name, .. } => format!("{project}/{name}"),
        }
    }

    /// Whether one of `owners` (instances that may still use it) claims it.
    pub fn is_owned(&self, owners: &HashSet<InstanceKey>) -> bool {
        owners.iter().any(|(id, project, name)| match self {
            Published::HostsBlock { instance, .. } => instance == id,
            Published::Targets {
                project: p,
                name: n,
                ..
            } => p == project && n == name,
        })
    }

    /// Removes it: the block alone (under the hosts file's lock, everything else kept byte
    /// for byte), or the file. Gone already is success.
    pub fn remove(&self) -> std::io::Result<()> {
        match self {
            Published::HostsBlock { file, instance } => {
                crate::atomic_file::edit(file, 0o644, |t| replace_block(t, instance, &[]))
            }
            Published::Targets { file, .. } => match std::fs::remove_file(file) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            },
        }
    }
}

/// Every entry the register stage's files hold now (a missing file or directory holds none).
pub fn scan(settings: &Settings) -> std::io::Result<Vec<Published>> {
    let mut found = hosts_blocks(&settings.hosts_file)?;
    found.extend(targets(&settings.file_sd_dir)?);
    Ok(found)
}

fn hosts_blocks(file: &Path) -> std::io::Result<Vec<Published>> {
    let text = match std::fs::read_to_string(file) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        r => r?,
    };
    Ok(text
        .lines()
        .filter_map(|l| l.strip_prefix("# dbctl:begin "))
        .map(|id| Published::HostsBlock {
            file: file.to_path_buf(),
            instance: id.trim().to_string(),
        })
        .collect())
}

fn targets(dir: &Path) -> std::io::Result<Vec<Published>> {
    let entries = match std::fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        r => r?,
    };
    let mut found = Vec::new();
    for e in entries {
        let file = e?.path();
        let Some(stem) = file
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".json"))
        else {
            continue;
        };
        // Project names have no dot (spec validation), so the first one ends it; a file that
        // is not `<project>.<name>.json` is someone else's and stays.
        if let Some((project, name)) = stem.split_once('.')
            && !project.is_empty()
            && !name.is_empty()
        {
            found.push(Published::Targets {
                file: file.clone(),
                project: project.into(),
                name: name.into(),
            });
        }
    }
    found.sort_by_key(Published::describe);
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dir: &Path) -> Settings {
        let mut s = Settings::new(&crate::config::Config::default(), dir);
        s.hosts_file = dir.join("hosts");
        s
    }

    #[test]
    fn blocks_and_target_files_are_found_and_removed_one_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path());
        assert_eq!(scan(&s).unwrap(), vec![], "nothing published yet");
        let hosts = "127.0.0.1 localhost\n".to_string();
        let hosts = replace_block(&hosts, "inst-a", &["10.0.0.1 a.default.db".into()]);
        let hosts = replace_block(&hosts, "inst-b", &["10.0.0.2 b.default.db".into()]);
        std::fs::write(&s.hosts_file, &hosts).unwrap();
        std::fs::create_dir_all(&s.file_sd_dir).unwrap();
        for f in [
            "default.a.json",
            "default.b.json",
            "notes.txt",
            ".default.c.json.tmp",
        ] {
            std::fs::write(s.file_sd_dir.join(f), "[]").unwrap();
        }
        let found = scan(&s).unwrap();
        let names: Vec<String> = found.iter().map(Published::instance).collect();
        assert_eq!(names, ["inst-a", "inst-b", "default/a", "default/b"]);

        let owners: HashSet<InstanceKey> =
            HashSet::from([("inst-a".into(), "default".into(), "a".into())]);
        let leaked: Vec<&Published> = found.iter().filter(|p| !p.is_owned(&owners)).collect();
        assert_eq!(leaked.len(), 2, "{leaked:?}");
        for p in &leaked {
            p.remove().unwrap();
            p.remove().unwrap();
        }
        let left = std::fs::read_to_string(&s.hosts_file).unwrap();
        assert!(
            left.starts_with("127.0.0.1 localhost\n# dbctl:begin inst-a\n"),
            "{left}"
        );
        assert!(!left.contains("inst-b"), "{left}");
        assert!(s.file_sd_dir.join("default.a.json").exists());
        assert!(!s.file_sd_dir.join("default.b.json").exists());
        assert!(s.file_sd_dir.join("notes.txt").exists(), "not ours");
    }
}
