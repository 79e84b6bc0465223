//! Files that hold secrets (keys, passwords): 0600 from the first byte, in 0700 directories,
//! written to a temporary name and renamed, so a crash never leaves a half-written or readable
//! secret behind.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Creates `dir` (and parents) if needed and makes it 0700.
pub fn ensure_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Atomically replaces `path` with `content`, mode 0600.
pub fn write(path: &Path, content: &[u8]) -> std::io::Result<()> {
    crate::atomic_file::write(path, content, 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_private_and_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("s");
        ensure_dir(&d).unwrap();
        write(&d.join("k"), b"one").unwrap();
        write(&d.join("k"), b"two").unwrap();
        assert_eq!(std::fs::read(d.join("k")).unwrap(), b"two");
        assert_eq!(
            std::fs::metadata(d.join("k")).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            std::fs::metadata(&d).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(
            std::fs::read_dir(&d).unwrap().count(),
            1,
            "no temporary left"
        );
    }
}
