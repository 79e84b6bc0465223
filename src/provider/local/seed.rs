//! The NoCloud seed: an ISO labelled `cidata` with user-data and meta-data, rendered from
//! `cloud-init/user-data.yaml` (the same template every provider uses), and network-config;
//! optionally vendor-data (the platform's own cloud-config, which the EC2 twin supplies).

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
    vendor_data: Option<&str>,
) -> std::io::Result<()> {
    let dir = iso.with_extension("d");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("user-data"), user_data)?;
    std::fs::write(dir.join("network-config"), network_config)?;
    std::fs::write(
        dir.join("meta-data"),
        format!("instance-id: {instance_id}\nlocal-hostname: {hostname}\n"),
    )?;
    let mut files = vec![
        dir.join("user-data"),
        dir.join("meta-data"),
        dir.join("network-config"),
    ];
    if let Some(v) = vendor_data {
        std::fs::write(dir.join("vendor-data"), v)?;
        files.push(dir.join("vendor-data"));
    }
    let out = Command::new("genisoimage")
        .args(["-quiet", "-volid", "cidata", "-joliet", "-rock", "-output"])
        .arg(iso)
        .args(&files)
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
