//! Starting and stopping one VM: a detached QEMU process supervised through its pid file and
//! QMP socket, so VMs outlive the dbctl command that started them (as cloud VMs outlive an API
//! call) and a later dbctl adopts them.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::json;

use super::image::{Boot, Image};
use super::paths::VmPaths;
use super::{process, qmp::Qmp};

/// Everything that decides how a VM is started.
pub struct VmConfig<'a> {
    /// Unique process name (`dbctl-<run>-<node>`); also how we recognise the process later.
    pub name: &'a str,
    pub image: &'a Image,
    pub accel: &'a str,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub index: u8,
    pub private_ip: &'a str,
    /// The netmask of `private_ip` on the VPC segment.
    pub private_netmask: &'a str,
    /// The loopback address the forwarded ports listen on (the local provider: 127.0.0.1; the
    /// EC2 twin: the instance's own public 127.x address).
    pub forward_addr: &'a str,
    /// (guest port, host port on `forward_addr`): the only ports reachable from the host.
    pub forwards: &'a [(u16, u16)],
    /// `guestfwd` rules: the only connections the guest may open outwards.
    pub guest_forwards: &'a [String],
    pub hub_socket: &'a Path,
    /// The EC2 twin's metadata link: a third NIC on a user-mode network of its own whose only
    /// reachable address is the instance metadata service, this `guestfwd` rule (`twin::imds`).
    /// The local provider: none.
    pub metadata: Option<&'a Metadata>,
}

/// A metadata link: its network, the guest's address there, and the service's guestfwd rule.
pub struct Metadata {
    pub net: String,
    pub guest: String,
    pub netmask: String,
    pub guest_forward: String,
}

fn kernel_append(cfg: &VmConfig<'_>) -> String {
    // Only cloud-init's init stage runs (the others cost 15-45 s each under TCG and dbctl needs
    // none of them); addresses come from ip= so no network stage is needed either.
    format!(
        "root=/dev/vda rw console=ttyS0 quiet fsck.mode=skip cryptomgr.notests random.trust_cpu=on \
         mitigations=off no_timer_check systemd.show_status=false network-config=disabled \
         systemd.mask=cloud-init-local.service systemd.mask=cloud-config.service \
         systemd.mask=cloud-final.service ip=10.0.2.15::10.0.2.2:255.255.255.0::ens5:off \
         ip={}:::{}::ens6:off{}",
        cfg.private_ip,
        cfg.private_netmask,
        cfg.metadata
            .map(|m| format!(" ip={}:::{}::ens8:off", m.guest, m.netmask))
            .unwrap_or_default()
    )
}

/// MAC addresses of a VM's NICs: (user-mode management NIC, VPC NIC). The seed's
/// network-config matches the NICs by these.
pub fn macs(index: u8) -> (String, String) {
    (
        format!("52:54:00:00:00:{index:02x}"),
        format!("52:54:00:77:00:{index:02x}"),
    )
}

/// The MAC address of a VM's metadata NIC (the EC2 twin's; ens8).
pub fn metadata_mac(index: u8) -> String {
    format!("52:54:00:a9:fe:{index:02x}")
}

/// The QEMU command line. PCI addresses are pinned so device names are stable (root vda, seed
/// vdb, NICs ens5/ens6); the data disk is hot-plugged later.
pub fn command(cfg: &VmConfig<'_>, p: &VmPaths) -> Command {
    let mut c = Command::new("qemu-system-x86_64");
    let cpu = if cfg.accel == "kvm" { "host" } else { "qemu64" };
    let accel = if cfg.accel == "kvm" {
        "kvm".to_string()
    } else {
        "tcg,thread=multi".to_string()
    };
    let fwd: String = cfg
        .forwards
        .iter()
        .map(|(g, h)| format!(",hostfwd=tcp:{}:{h}-:{g}", cfg.forward_addr))
        .chain(
            cfg.guest_forwards
                .iter()
                // QEMU's option syntax escapes a comma by doubling it.
                .map(|g| format!(",guestfwd={}", g.replace(',', ",,"))),
        )
        .collect();
    c.arg("-name")
        .arg(format!("{},process={}", cfg.name, cfg.name))
        .args(["-machine", "pc", "-accel", &accel, "-cpu", cpu])
        .arg("-smp")
        .arg(cfg.vcpus.to_string())
        .arg("-m")
        .arg(cfg.memory_mib.to_string())
        .args(["-nodefaults", "-no-user-config", "-display", "none"]);
    match cfg.image.manifest.boot {
        Boot::Kernel => {
            c.arg("-kernel")
                .arg(cfg.image.kernel())
                .arg("-initrd")
                .arg(cfg.image.initrd())
                .arg("-append")
                .arg(kernel_append(cfg));
        }
        // The firmware (SeaBIOS) boots the image's own bootloader from the first disk, the
        // root (the seed at the next PCI slot carries no boot sector).
        Boot::Firmware => {}
    }
    let (mgmt_mac, vpc_mac) = macs(cfg.index);
    c.arg("-drive")
        .arg(format!(
            "if=none,id=root,file={},format=qcow2,discard=unmap",
            p.overlay().display()
        ))
        .args(["-device", "virtio-blk-pci,drive=root,addr=0x3"])
        .arg("-drive")
        .arg(format!(
            "if=none,id=seed,file={},format=raw,readonly=on",
            p.seed().display()
        ))
        .args(["-device", "virtio-blk-pci,drive=seed,addr=0x4"])
        // restrict=on: the guest reaches nothing outside but its guestfwd targets; only the
        // forwarded ports come in.
        .arg("-netdev")
        .arg(format!("user,id=mgmt,restrict=on{fwd}"))
        .arg("-device")
        .arg(format!(
            "virtio-net-pci,netdev=mgmt,mac={mgmt_mac},addr=0x5"
        ))
        .arg("-netdev")
        .arg(format!(
            "dgram,id=vpc,local.type=unix,local.path={},remote.type=unix,remote.path={}",
            p.nic().display(),
            cfg.hub_socket.display()
        ))
        .arg("-device")
        .arg(format!("virtio-net-pci,netdev=vpc,mac={vpc_mac},addr=0x6"))
        .args(["-device", "virtio-rng-pci,addr=0x7"]);
    if let Some(m) = cfg.metadata {
        c.arg("-netdev")
            .arg(format!(
                "user,id=metadata,restrict=on,net={},guestfwd={}",
                m.net,
                m.guest_forward.replace(',', ",,")
            ))
            .arg("-device")
            .arg(format!(
                "virtio-net-pci,netdev=metadata,mac={},addr=0x8",
                metadata_mac(cfg.index)
            ));
    }
    c.arg("-serial")
        .arg(format!("file:{}", p.console().display()))
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", p.qmp().display()))
        .arg("-pidfile")
        .arg(p.pid())
        .arg("-daemonize");
    c
}

/// Starts the VM detached. Returns once QEMU has daemonized (its pid file is written).
pub fn start(cfg: &VmConfig<'_>, p: &VmPaths) -> Result<u32, String> {
    for stale in [p.qmp(), p.nic(), p.pid(), p.console()] {
        let _ = std::fs::remove_file(stale);
    }
    let out = command(cfg, p)
        .output()
        .map_err(|e| format!("cannot run qemu-system-x86_64: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "qemu-system-x86_64 failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    process::running(&p.pid(), cfg.name)
        .ok_or_else(|| "qemu started but its pid file names no live process".into())
}

/// Stops the VM if it runs: QMP `quit`, then signals as a fallback.
pub async fn stop(p: &VmPaths, name: &str) {
    let Some(pid) = process::running(&p.pid(), name) else {
        return;
    };
    if let Ok(mut q) = Qmp::connect(&p.qmp()).await {
        let _ = q.execute("quit", json!({})).await;
    }
    if !process::wait_gone(pid, Duration::from_secs(10)).await {
        process::stop(pid).await;
    }
}

/// QEMU's own view of the VM (`running`, `paused`, …), or `None` when the process is gone.
pub async fn status(p: &VmPaths, name: &str) -> Option<String> {
    process::running(&p.pid(), name)?;
    let mut q = Qmp::connect(&p.qmp()).await.ok()?;
    let v = q.execute("query-status", json!({})).await.ok()?;
    v["status"].as_str().map(String::from)
}
