//! Generated database passwords, kept apart from the journal in `<state>/secrets/<instance>.json`
//! (0600 in a 0700 directory). They never go into logs, events, user-data or process arguments.
//! For clients that should not see a password in a URI, the same directory holds libpq password
//! files (`<instance>.<role>.pgpass`, for `PGPASSFILE`).

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

    /// Writes `role`'s libpq password file for `instance_id` (one line per `(host, port)`,
    /// for `database`) and returns its path: 0600, replaced whole, removed by [`Self::forget`].
    pub fn write_passfile(
        &self,
        instance_id: &str,
        role: &str,
        hosts: &[(&str, u16)],
        database: &str,
    ) -> std::io::Result<PathBuf> {
        let password = self.existing(instance_id, role).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no password stored for role {role}"),
            )
        })?;
        let text: String = hosts
            .iter()
            .map(|(host, port)| {
                let port = port.to_string();
                let fields =
                    [*host, port.as_str(), database, role, password.as_str()].map(pgpass_field);
                fields.join(":") + "\n"
            })
            .collect();
        let path = self.dir.join(format!("{instance_id}.{role}.pgpass"));
        crate::private_file::ensure_dir(&self.dir)?;
        crate::private_file::write(&path, text.as_bytes())?;
        Ok(path)
    }

    /// Removes the instance's passwords and password files.
    pub fn forget(&self, instance_id: &str) -> std::io::Result<()> {
        let mut files = vec![self.file(instance_id)];
        let prefix = format!("{instance_id}.");
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            files.extend(entries.flatten().map(|e| e.path()).filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".pgpass"))
            }));
        }
        for f in files {
            match std::fs::remove_file(&f) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }
}

/// A field of a libpq password file: `:` and `\` escaped with a backslash.
fn pgpass_field(s: &str) -> String {
    s.replace('\\', "\\\\").replace(':', "\\:")
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

    #[test]
    fn password_files_are_libpq_lines_private_and_forgotten_with_the_instance() {
        let dir = tempfile::tempdir().unwrap();
        let s = SecretStore::new(dir.path());
        assert!(
            s.write_passfile("inst-1", "app", &[("h", 5432)], "db")
                .is_err(),
            "no password yet"
        );
        let pw = s.password("inst-1", "app").unwrap();
        let path = s
            .write_passfile(
                "inst-1",
                "app",
                &[("10.0.0.2", 5432), ("fe80::1", 6432)],
                "d:b",
            )
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("10.0.0.2:5432:d\\:b:app:{pw}\nfe80\\:\\:1:6432:d\\:b:app:{pw}\n")
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        s.password("inst-10", "app").unwrap();
        let other = s
            .write_passfile("inst-10", "app", &[("h", 1)], "x")
            .unwrap();
        s.forget("inst-1").unwrap();
        assert!(!path.exists());
        assert!(other.exists(), "another instance's file stays");
    }
}
