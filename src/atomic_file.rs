//! Files other programs read while dbctl rewrites them (hosts files, Prometheus targets):
//! written to a temporary name, synced and renamed, so a reader sees the old file or the new
//! one, never half of either; edited under an exclusive lock so concurrent dbctl commands that
//! share a file (many instances, one hosts file) do not lose each other's changes.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Atomically replaces `path` with `content`, created with `mode`.
pub fn write(path: &Path, content: &[u8], mode: u32) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(content)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Rewrites `path` through `edit` (which gets the current text, empty if the file is missing)
/// while holding an exclusive lock on `<path>.lock`.
pub fn edit(path: &Path, mode: u32, edit: impl FnOnce(&str) -> String) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path.with_extension("lock"))?;
    lock.lock()?;
    let current = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    let next = edit(&current);
    if next != current {
        write(path, next.as_bytes(), mode)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_edits_are_not_lost() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts");
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let path = path.clone();
                std::thread::spawn(move || {
                    for j in 0..20 {
                        edit(&path, 0o644, |t| format!("{t}{i}-{j}\n")).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 160);
    }
}
