//! What dbctl made on a provider, found without the journal: the net `dbctl gc` sweeps leaks
//! with. Every provider can list what it holds for one state directory, each thing with the run
//! that made it, and remove everything of one run; `gc` decides which runs are leaks by asking
//! the journal afterwards (see `journal::gc`).

use std::path::Path;

use sha2::{Digest, Sha256};

/// Something a run made, found on the provider.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Leftover {
    pub run_id: String,
    /// What it is, in words: `directory /…/local/run-…`, `process 4242 qemu-system-x86_64
    /// (dbctl-run-…-node-1)`, `Vpc vpc-…`.
    pub what: String,
}

/// Names a dbctl state directory (the journal's directory) on this host, stably: what the aws
/// provider tags every resource with (`dbctl:owner`), so that a `gc` sweeps only what this
/// installation made — also after its journal file was deleted, since the directory's name
/// stays the same.
pub fn owner_id(state_dir: &Path) -> String {
    let dir = std::path::absolute(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
    let mut h = Sha256::new();
    h.update(crate::journal::lease::this_host().as_bytes());
    h.update([0]);
    h.update(dir.as_os_str().as_encoded_bytes());
    hex::encode(&h.finalize()[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_is_stable_per_directory() {
        let dir = tempfile::tempdir().unwrap();
        let a = owner_id(dir.path());
        assert_eq!(a.len(), 16);
        assert_eq!(a, owner_id(dir.path()));
        assert_ne!(a, owner_id(&dir.path().join("other")));
    }
}
