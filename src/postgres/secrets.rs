//! Generated database passwords, kept apart from the journal in `<state>/secrets/<instance>.json`
//! (0600 in a 0700 directory). They never go into logs, events, user-data or process arguments.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rand::RngExt;

pub struct SecretStore {
    dir: PathBuf,
}

fn generate() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut rng = rand::rng();
    // 32 characters from 57 symbols: about 186 bits.
    (0..32)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

impl SecretStore {
    pub fn new(state_dir: &Path) -> SecretStore {
        SecretStore {
            dir: state_dir.join("secrets"),
        }
    }

    fn file(&self, instance_id: &str) -> PathBuf {
        self.dir.join(format!("{instance_id}.json"))
    }

    fn read(&self, instance_id: &str) -> std::io::Result<BTreeMap<String, String>> {
        match std::fs::read_to_string(self.file(instance_id)) {
            Ok(t) => serde_json::from_str(&t).map_err(std::io::Error::other),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(e),
        }
    }

    /// The password of `role`, generated and stored on first use (so a re-executed step gets the
    /// same one).
    pub fn password(&self, instance_id: &str, role: &str) -> std::io::Result<String> {
        let mut all = self.read(instance_id)?;
        if let Some(p) = all.get(role) {
            return Ok(p.clone());
        }
        let p = generate();
        all.insert(role.to_string(), p.clone());
        crate::private_file::ensure_dir(&self.dir)?;
        crate::private_file::write(
            &self.file(instance_id),
            serde_json::to_string(&all).expect("json").as_bytes(),
        )?;
        Ok(p)
    }

    /// The stored password, without creating one.
    pub fn existing(&self, instance_id: &str, role: &str) -> Option<String> {
        self.read(instance_id).ok()?.get(role).cloned()
    }

    pub fn forget(&self, instance_id: &str) -> std::io::Result<()> {
        match std::fs::remove_file(self.file(instance_id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn passwords_are_strong_stable_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let s = SecretStore::new(dir.path());
        let a = s.password("inst-1", "app").unwrap();
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(s.password("inst-1", "app").unwrap(), a);
        assert_ne!(s.password("inst-1", "replicator").unwrap(), a);
        let mode = std::fs::metadata(dir.path().join("secrets/inst-1.json"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        s.forget("inst-1").unwrap();
        assert!(s.existing("inst-1", "app").is_none());
    }
}
