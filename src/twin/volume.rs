//! EBS volumes as on Nitro: a volume is a sparse qcow2 file (`<state>/volumes/<vol-id>.qcow2`),
//! attached by hot-plugging it into the instance's VM as an NVMe controller whose serial is the
//! volume id without its dash (`vol0123…`, as EBS shows it), and unplugged on detach.
//!
//! The guest names the disk as EC2's do (`/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol…`)
//! through a udev rule the twin's vendor-data installs: QEMU's NVMe model string is its own
//! ("QEMU NVMe Ctrl"), EBS's is "Amazon Elastic Block Store".

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;

use super::machine::Layout;
use crate::provider::local::qmp::Qmp;

/// The seed's vendor-data: platform setup beside the user's user-data (cloud-init merges them;
/// a `bootcmd` of the user's own would replace this one, which dbctl's user-data has none of).
pub const VENDOR_DATA: &str = r#"#cloud-config
# The EC2 twin's platform: EBS volumes are NVMe disks named by their volume id, as on Nitro.
bootcmd:
  - |
    cat > /etc/udev/rules.d/61-ec2-twin-ebs.rules <<'RULE'
    KERNEL=="nvme*[0-9]n*[0-9]", ENV{DEVTYPE}=="disk", ATTRS{model}=="QEMU NVMe Ctrl*", ATTRS{serial}=="vol*", SYMLINK+="disk/by-id/nvme-Amazon_Elastic_Block_Store_$attr{serial}"
    RULE
    udevadm control --reload || true
    # Volumes plugged in before this rule existed (attached while the VM booted) get it too.
    udevadm trigger --action=add --subsystem-match=block || true
"#;

/// The serial EBS shows: the volume id without its dash (20 characters, NVMe's serial length).
pub fn serial(volume_id: &str) -> String {
    volume_id.replace('-', "")
}

pub fn file(layout: &Layout, volume_id: &str) -> PathBuf {
    layout
        .root
        .join("volumes")
        .join(format!("{volume_id}.qcow2"))
}

/// Creates the volume's file (sparse; nothing is written until the guest writes).
pub fn create(layout: &Layout, volume_id: &str, size_gib: u64) -> Result<(), String> {
    let path = file(layout, volume_id);
    if path.exists() {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let size = format!("{size_gib}G");
    super::machine::qemu_img(&[
        "create".as_ref(),
        "-q".as_ref(),
        "-f".as_ref(),
        "qcow2".as_ref(),
        path.as_os_str(),
        size.as_ref(),
    ])
}

/// Removes the volume's file (DeleteVolume, or moto deleted it with its instance).
pub fn delete(layout: &Layout, volume_id: &str) {
    let _ = std::fs::remove_file(file(layout, volume_id));
}

fn node_name(volume_id: &str) -> String {
    format!("ebs-{}", serial(volume_id))
}

fn device_id(volume_id: &str) -> String {
    format!("nvme-{}", serial(volume_id))
}

/// Hot-plugs the volume into the VM behind `qmp_socket`. Already attached = success.
pub async fn attach(
    qmp_socket: &std::path::Path,
    layout: &Layout,
    volume_id: &str,
) -> Result<(), String> {
    let path = file(layout, volume_id);
    if !path.exists() {
        return Err(format!("{volume_id}: no volume file {}", path.display()));
    }
    let mut q = Qmp::connect(qmp_socket).await.map_err(|e| e.to_string())?;
    let blockdev = q
        .execute(
            "blockdev-add",
            json!({
                "driver": "qcow2",
                "node-name": node_name(volume_id),
                "file": { "driver": "file", "filename": path },
            }),
        )
        .await;
    if let Err(e) = blockdev
        && !e.to_string().contains("Duplicate")
    {
        return Err(e.to_string());
    }
    let device = q
        .execute(
            "device_add",
            json!({
                "driver": "nvme",
                "id": device_id(volume_id),
                "serial": serial(volume_id),
                "drive": node_name(volume_id),
            }),
        )
        .await;
    match device {
        Err(e) if !e.to_string().contains("Duplicate") => Err(e.to_string()),
        _ => Ok(()),
    }
}

/// Unplugs the volume from the VM behind `qmp_socket` and waits until the guest let it go.
pub async fn detach(qmp_socket: &std::path::Path, volume_id: &str) -> Result<(), String> {
    let mut q = Qmp::connect(qmp_socket).await.map_err(|e| e.to_string())?;
    let id = device_id(volume_id);
    match q.execute("device_del", json!({ "id": id })).await {
        Ok(_) => q
            .wait_event("DEVICE_DELETED", &id, Duration::from_secs(30))
            .await
            .map_err(|e| e.to_string())?,
        Err(e) if e.to_string().contains("not found") => {}
        Err(e) => return Err(e.to_string()),
    }
    let _ = q
        .execute("blockdev-del", json!({ "node-name": node_name(volume_id) }))
        .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_serial_is_the_volume_id_without_its_dash_as_ebs_shows_it() {
        assert_eq!(
            super::serial("vol-0123456789abcdef0"),
            "vol0123456789abcdef0"
        );
        assert_eq!(super::serial("vol-0123456789abcdef0").len(), 20);
    }
}
