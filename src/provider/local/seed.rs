//! The NoCloud seed: an ISO labelled `cidata` with user-data and meta-data, rendered from
//! `cloud-init/user-data.yaml` (the same template every provider uses), and network-config.

use std::path::Path;
use std::process::Command;

/// Writes `iso` (via genisoimage) holding user-data, meta-data and network-config. `instance_id` must change
/// whenever the node is recreated, or cloud-init would treat the new disk as already seeded.
pub fn write_iso(
    iso: &Path,
    user_data: &str,
    network_config: &str,
    instance_id: &str,
    hostname: &str,
) -> std::io::Result<()> {
    let dir = iso.with_extension("d");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("user-data"), user_data)?;
    std::fs::write(dir.join("network-config"), network_config)?;
    std::fs::write(
        dir.join("meta-data"),
        format!("instance-id: {instance_id}\nlocal-hostname: {hostname}\n"),
    )?;
    let out = Command::new("genisoimage")
        .args(["-quiet", "-volid", "cidata", "-joliet", "-rock", "-output"])
        .arg(iso)
        .arg(dir.join("user-data"))
        .arg(dir.join("meta-data"))
        .arg(dir.join("network-config"))
        .output()?;
    std::fs::remove_dir_all(&dir)?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "genisoimage: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}
