//! dbctl's own SSH key pair and host keys learnt from consoles.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use russh::keys::ssh_key::LineEnding;
use russh::keys::{Algorithm, PrivateKey, PublicKey};

/// dbctl's client key: generated once (ed25519), private half 0600 in a 0700 directory.
#[derive(Clone)]
pub struct ClientKey {
    pub private: Arc<PrivateKey>,
    pub path: PathBuf,
}

impl ClientKey {
    /// Loads `dir/id_ed25519`, generating it first if it does not exist.
    pub fn load_or_create(dir: &Path) -> std::io::Result<ClientKey> {
        let path = dir.join("id_ed25519");
        if !path.exists() {
            crate::private_file::ensure_dir(dir)?;
            let key = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519)
                .map_err(std::io::Error::other)?;
            let pem = key
                .to_openssh(LineEnding::LF)
                .map_err(std::io::Error::other)?;
            crate::private_file::write(&path, pem.as_bytes())?;
            let public = key
                .public_key()
                .to_openssh()
                .map_err(std::io::Error::other)?;
            std::fs::write(dir.join("id_ed25519.pub"), format!("{public} dbctl\n"))?;
        }
        let private = russh::keys::load_secret_key(&path, None).map_err(std::io::Error::other)?;
        Ok(ClientKey {
            private: Arc::new(private),
            path,
        })
    }

    /// The public key in OpenSSH format (`ssh-ed25519 AAAA…`), for authorized_keys.
    pub fn public_openssh(&self) -> String {
        self.private
            .public_key()
            .to_openssh()
            .expect("ed25519 public key encodes")
    }
}

/// Parses `ssh-ed25519 AAAA… [comment]`.
pub fn parse_public_key(line: &str) -> Option<PublicKey> {
    let mut parts = line.split_whitespace();
    let (alg, data) = (parts.next()?, parts.next()?);
    PublicKey::from_openssh(&format!("{alg} {data}")).ok()
}

/// The ed25519 host key from cloud-init's `keys-to-console` block in a serial console log:
/// ```text
/// -----BEGIN SSH HOST KEY KEYS-----
/// ssh-ed25519 AAAA… root@host
/// -----END SSH HOST KEY KEYS-----
/// ```
pub fn host_key_from_console(console: &str) -> Option<PublicKey> {
    let start = console.find("-----BEGIN SSH HOST KEY KEYS-----")?;
    let rest = &console[start..];
    let end = rest.find("-----END SSH HOST KEY KEYS-----")?;
    rest[..end]
        .lines()
        .filter_map(|l| l.find("ssh-ed25519 ").map(|i| &l[i..]))
        .find_map(|l| parse_public_key(l.trim_end_matches('\r')))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn client_key_is_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let a = ClientKey::load_or_create(&dir.path().join("ssh")).unwrap();
        let b = ClientKey::load_or_create(&dir.path().join("ssh")).unwrap();
        assert_eq!(a.public_openssh(), b.public_openssh());
        assert!(a.public_openssh().starts_with("ssh-ed25519 "));
        let mode = std::fs::metadata(&a.path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn host_key_is_read_from_the_console_block_only() {
        let key = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).unwrap();
        let public = key.public_key().to_openssh().unwrap();
        let console = format!(
            "noise ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBogus\r\n[  OK  ] x\r\n-----BEGIN SSH HOST KEY KEYS-----\r\n{public} root@vm\r\n-----END SSH HOST KEY KEYS-----\r\n"
        );
        assert_eq!(
            host_key_from_console(&console).unwrap().key_data(),
            key.public_key().key_data()
        );
        assert!(host_key_from_console("-----BEGIN SSH HOST KEY KEYS-----\nnothing").is_none());
    }
}
