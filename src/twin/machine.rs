//! One instance's machine: a QEMU VM built the local provider's way (qcow2 overlay of dbctl's
//! image, NoCloud seed, QMP, pid file), but seeded from the RunInstances request: its
//! `UserData` is the user-data, the instance id moto gave is the meta-data `instance-id`.
//!
//! dbctl's image runs every cloud-init module it needs (users, write_files, ssh, keys to
//! console, runcmd/scripts) in the init stage, the only stage its kernel command line leaves
//! unmasked, and reads only NoCloud: the aws user-data is a `#cloud-config` of those modules,
//! so the image processes it as it is, and prints the host key on the serial console where
//! `GetConsoleOutput` finds it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::provider::local::image::Image;
use crate::provider::local::paths::VmPaths;
use crate::provider::local::qemu::{self, VmConfig};
use crate::provider::local::qmp::Qmp;
use crate::provider::local::{host, hub, process, seed};

/// The ports dbctl uses from the host (SSH, PostgreSQL): what a rule over a wide range or all
/// traffic forwards from the public address (`twin::security`).
pub const PUBLIC_PORTS: &[u16] = &[22, 5432];

/// What the twin records of one instance's machine (`<state>/vms/<id>/machine.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    pub instance_id: String,
    /// The twin AMI it was launched from (which image its disk is an overlay of).
    #[serde(default)]
    pub ami: String,
    pub vpc_id: String,
    /// The private address moto assigned; the VM has it on its VPC network.
    pub private_ip: String,
    /// The instance's loopback "public" address, when moto gave it a public one.
    pub public_ip: Option<String>,
    /// Distinguishes the VM's MAC addresses on its VPC segment.
    pub index: u8,
    pub vcpus: u32,
    pub memory_mib: u64,
    /// EBS volumes attached to it (plugged in again when the instance starts).
    #[serde(default)]
    pub volumes: Vec<String>,
    /// Guest TCP ports its public address forwards: those its security groups open to the
    /// host (`twin::security`), kept current while it runs.
    #[serde(default)]
    pub forwarded: Vec<u16>,
}

/// What a VM reaches outside (on EC2: through the internet gateway or a VPC endpoint), each
/// through a relay on its management network, as the local provider's VMs do: `guestfwd`
/// rules running `ec2-twin relay`, and the hosts lines that resolve the names to the relays.
/// A stock cloud image's package mirrors (dbctl's own image installs nothing), and the S3
/// endpoint when the twin serves one.
fn relays(
    image: &Image,
    layout: &Layout,
    vm_dir: &Path,
) -> Result<(Vec<String>, Vec<String>), String> {
    let exe = process::self_exe().map_err(|e| format!("twin executable: {e}"))?;
    let rule = |addr: &str, port: u16, target: &str| {
        crate::provider::local::relay::guestfwd_rule(&exe, addr, port, target, vm_dir)
    };
    let (mut rules, mut hosts) = (Vec::new(), Vec::new());
    if image.is_cloud() {
        let config = crate::config::LocalSection::default();
        for r in crate::provider::local::package_relays(&config) {
            rules.push(rule(&r.addr, r.port, r.entry));
            hosts.push(format!("{} {}", r.addr, r.host));
        }
    }
    if let Some(s3) = &layout.s3 {
        let addr = crate::provider::local::S3_RELAY_ADDR;
        rules.push(rule(addr, s3.port, &format!("127.0.0.1:{}", s3.port)));
        hosts.push(format!("{addr} {}", s3.host));
    }
    Ok((rules, hosts))
}

/// The platform's vendor-data: the EBS naming, and `hosts` lines (the relays: package mirrors,
/// S3) added to /etc/hosts once.
fn vendor_data(hosts: &[String]) -> String {
    let mut v = super::volume::VENDOR_DATA.to_string();
    if !hosts.is_empty() {
        v.push_str("  - |\n    grep -q '# ec2-twin relays' /etc/hosts || cat >> /etc/hosts <<'HOSTS'\n    # ec2-twin relays\n");
        for h in hosts {
            v.push_str(&format!("    {h}\n"));
        }
        v.push_str("    HOSTS\n");
    }
    v
}

/// Where the twin keeps its machines and networks, and what outside them its VMs reach.
#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
    /// The S3 endpoint its VMs reach through a relay (`ec2-twin serve --s3`), if any.
    pub s3: Option<S3Endpoint>,
}

/// An S3 endpoint on this host: the name the VMs use (its TLS certificate's) and the port it
/// serves on 127.0.0.1, the only address the twin ever relays to.
#[derive(Debug, Clone, PartialEq)]
pub struct S3Endpoint {
    pub host: String,
    pub port: u16,
}

impl S3Endpoint {
    /// `NAME:PORT`.
    pub fn parse(s: &str) -> Result<S3Endpoint, String> {
        crate::provider::local::package_host(s)
            .map(|(host, port)| S3Endpoint {
                host: host.to_string(),
                port,
            })
            .ok_or_else(|| format!("--s3 {s:?}: expected NAME:PORT (e.g. s3.dbctl.test:9443)"))
    }
}

impl Layout {
    pub fn vm(&self, instance_id: &str) -> VmPaths {
        VmPaths {
            dir: self.root.join("vms").join(instance_id),
        }
    }
    fn vpc(&self, vpc_id: &str) -> PathBuf {
        self.root.join("vpcs").join(vpc_id)
    }
    pub fn hub_socket(&self, vpc_id: &str) -> PathBuf {
        self.vpc(vpc_id).join("hub.sock")
    }
    pub fn hub_pid(&self, vpc_id: &str) -> PathBuf {
        self.vpc(vpc_id).join("hub.pid")
    }
    /// What an instance's metadata service serves (`twin::imds`; 0600).
    pub fn imds_facts(&self, instance_id: &str) -> PathBuf {
        self.vm(instance_id).dir.join("imds.json")
    }
    /// The key the metadata services sign their session tokens with (0600).
    pub fn imds_key(&self) -> PathBuf {
        self.root.join("imds.key")
    }
    /// The VPC's security groups as its hub enforces them (`twin::security`).
    pub fn policy(&self, vpc_id: &str) -> PathBuf {
        self.vpc(vpc_id).join("policy.json")
    }
    pub fn vpcs(&self) -> Vec<String> {
        dir_names(&self.root.join("vpcs"))
    }
    pub fn vms(&self) -> Vec<String> {
        dir_names(&self.root.join("vms"))
    }
}

fn dir_names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect()
}

/// The process name of an instance's QEMU, how it is recognised by pid file and command line.
pub fn process_name(instance_id: &str) -> String {
    format!("ec2-twin-{instance_id}")
}

/// The netmask the VM's private address gets on the VPC segment. moto picks private addresses
/// anywhere in 10.0.0.0/8 whatever the subnet's range, so every 10.x address is on the link.
fn private_netmask(ip: &str) -> &'static str {
    if ip.starts_with("10.") {
        "255.0.0.0"
    } else {
        "255.255.0.0"
    }
}

/// Last 64 KiB, as EC2 returns at most.
const CONSOLE_LIMIT: usize = 64 * 1024;

impl Machine {
    fn name(&self) -> String {
        process_name(&self.instance_id)
    }

    /// The VM's metadata link: 169.254.169.254:80 runs `ec2-twin imds` for each connection.
    fn metadata_link(&self, layout: &Layout) -> Result<qemu::Metadata, String> {
        let exe = process::self_exe().map_err(|e| format!("twin executable: {e}"))?;
        Ok(qemu::Metadata {
            net: super::imds::NET.to_string(),
            guest: super::imds::GUEST.to_string(),
            netmask: "255.255.255.0".to_string(),
            guest_forward: format!(
                "tcp:{}:80-cmd:'{}' imds --facts '{}' --key '{}'",
                super::imds::ADDR,
                exe.display(),
                layout.imds_facts(&self.instance_id).display(),
                layout.imds_key().display()
            ),
        })
    }

    /// Creates the VM's disks, seed and metadata and boots it.
    pub fn create(
        &self,
        layout: &Layout,
        image: &Image,
        user_data: &str,
        metadata: &super::imds::Facts,
    ) -> Result<u32, String> {
        let vm = layout.vm(&self.instance_id);
        std::fs::create_dir_all(&vm.dir).map_err(|e| format!("{}: {e}", vm.dir.display()))?;
        // 0600: the instance profile's credentials are in it.
        let facts = serde_json::to_vec_pretty(metadata).expect("facts serialize");
        crate::atomic_file::write(&layout.imds_facts(&self.instance_id), &facts, 0o600)
            .map_err(|e| format!("metadata: {e}"))?;
        let record = serde_json::to_string_pretty(self).expect("machine serializes");
        std::fs::write(vm.dir.join("machine.json"), record).map_err(|e| e.to_string())?;
        let (base, overlay) = (image.base(), vm.overlay());
        qemu_img(&[
            "create".as_ref(),
            "-q".as_ref(),
            "-f".as_ref(),
            "qcow2".as_ref(),
            "-F".as_ref(),
            "qcow2".as_ref(),
            "-b".as_ref(),
            base.as_os_str(),
            overlay.as_os_str(),
        ])?;
        let (mgmt_mac, vpc_mac) = qemu::macs(self.index);
        let metadata_mac = qemu::metadata_mac(self.index);
        let network = crate::cloud_init::network_config(
            &mgmt_mac,
            &vpc_mac,
            &self.private_ip,
            Some((&metadata_mac, super::imds::GUEST)),
        )
        .map_err(|e| format!("network-config: {e}"))?;
        let hostname = format!("ip-{}", self.private_ip.replace('.', "-"));
        let vendor_data = vendor_data(&relays(image, layout, &vm.dir)?.1);
        seed::write_iso(
            &vm.seed(),
            user_data,
            &network,
            &self.instance_id,
            &hostname,
            Some(&vendor_data),
        )
        .map_err(|e| format!("seed: {e}"))?;
        self.start(layout, image)
    }

    /// Boots the VM over its existing disks (a stopped instance started again).
    pub fn start(&self, layout: &Layout, image: &Image) -> Result<u32, String> {
        let vm = layout.vm(&self.instance_id);
        if let Some(pid) = process::running(&vm.pid(), &self.name()) {
            return Ok(pid);
        }
        let socket = layout.hub_socket(&self.vpc_id);
        if let Some(dir) = socket.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        hub::ensure(
            &socket,
            &layout.hub_pid(&self.vpc_id),
            Some(&layout.policy(&self.vpc_id)),
        )
        .map_err(|e| format!("VPC network {}: {e}", self.vpc_id))?;
        let forwards: Vec<(u16, u16)> = if self.public_ip.is_some() {
            self.forwarded.iter().map(|p| (*p, *p)).collect()
        } else {
            Vec::new()
        };
        let link = self.metadata_link(layout)?;
        let cfg = VmConfig {
            name: &self.name(),
            image,
            accel: host::accelerator("auto"),
            vcpus: self.vcpus,
            memory_mib: self.memory_mib,
            index: self.index,
            private_ip: &self.private_ip,
            private_netmask: private_netmask(&self.private_ip),
            forward_addr: self.public_ip.as_deref().unwrap_or("127.0.0.1"),
            forwards: &forwards,
            guest_forwards: &relays(image, layout, &vm.dir)?.0,
            hub_socket: &socket,
            metadata: Some(&link),
        };
        let pid = qemu::start(&cfg, &vm)?;
        Ok(pid)
    }

    /// Plugs every attached volume in (after a start: QEMU starts with none).
    pub async fn plug_volumes(&self, layout: &Layout) -> Result<(), String> {
        let qmp = layout.vm(&self.instance_id).qmp();
        for v in &self.volumes {
            super::volume::attach(&qmp, layout, v).await?;
        }
        Ok(())
    }

    /// Makes the running VM's public address forward exactly `want` (QEMU's `hostfwd_add` and
    /// `hostfwd_remove`, through QMP's human monitor); a stopped VM only records it, and
    /// starts with it.
    pub async fn set_forwards(&mut self, layout: &Layout, want: &[u16]) -> Result<(), String> {
        let Some(addr) = self.public_ip.clone() else {
            return Ok(());
        };
        if self.forwarded == want {
            return Ok(());
        }
        let vm = layout.vm(&self.instance_id);
        if process::running(&vm.pid(), &self.name()).is_none() {
            self.forwarded = want.to_vec();
            return Ok(());
        }
        let mut q = Qmp::connect(&vm.qmp()).await.map_err(|e| e.to_string())?;
        let gone: Vec<u16> = self
            .forwarded
            .iter()
            .filter(|p| !want.contains(p))
            .copied()
            .collect();
        let new: Vec<u16> = want
            .iter()
            .filter(|p| !self.forwarded.contains(p))
            .copied()
            .collect();
        // The record follows each command that took, so a failure half-way leaves it true.
        for (port, add) in gone
            .iter()
            .map(|p| (*p, false))
            .chain(new.iter().map(|p| (*p, true)))
        {
            let command = if add {
                format!("hostfwd_add mgmt tcp:{addr}:{port}-:{port}")
            } else {
                format!("hostfwd_remove mgmt tcp:{addr}:{port}")
            };
            let v = q
                .execute("human-monitor-command", json!({ "command-line": command }))
                .await
                .map_err(|e| format!("{command}: {e}"))?;
            // The human monitor answers in text: `hostfwd_add` says nothing when it took and
            // why not when it did not; `hostfwd_remove` always says "host forwarding rule for
            // ... removed" (or "not found", which leaves the same state: nothing forwarded).
            let said = v.as_str().unwrap_or_default().trim();
            let took = if add {
                said.is_empty()
            } else {
                said.ends_with(" removed") || said.ends_with(" not found")
            };
            if !took {
                return Err(format!("{command}: {said}"));
            }
            if add {
                self.forwarded.push(port);
            } else {
                self.forwarded.retain(|p| *p != port);
            }
        }
        self.forwarded.sort_unstable();
        Ok(())
    }

    /// Powers the VM off (QMP quit, then signals); its disks stay.
    pub async fn stop(&self, layout: &Layout) {
        qemu::stop(&layout.vm(&self.instance_id), &self.name()).await;
    }

    /// A hard reset, as EC2's reboot of an instance that does not shut down in time.
    pub async fn reboot(&self, layout: &Layout) -> Result<(), String> {
        let vm = layout.vm(&self.instance_id);
        let mut q = Qmp::connect(&vm.qmp()).await.map_err(|e| e.to_string())?;
        q.execute("system_reset", json!({}))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Stops the VM for good and removes everything of it.
    pub async fn terminate(&self, layout: &Layout) -> Result<(), String> {
        let vm = layout.vm(&self.instance_id);
        self.stop(layout).await;
        if process::running(&vm.pid(), &self.name()).is_some() {
            return Err(format!("{}: VM still running", self.instance_id));
        }
        match std::fs::remove_dir_all(&vm.dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(format!("{}: {e}", vm.dir.display()))
            }
            _ => Ok(()),
        }
    }

    /// The serial console so far (its last 64 KiB), base64-encoded; empty before the VM printed.
    pub fn console_base64(&self, layout: &Layout) -> String {
        let bytes = std::fs::read(layout.vm(&self.instance_id).console()).unwrap_or_default();
        let tail = &bytes[bytes.len().saturating_sub(CONSOLE_LIMIT)..];
        if tail.is_empty() {
            String::new()
        } else {
            aws_smithy_types::base64::encode(tail)
        }
    }

    /// Reads a machine record back (a twin restarted over its state directory).
    pub fn load(layout: &Layout, instance_id: &str) -> Option<Machine> {
        let text = std::fs::read_to_string(layout.vm(instance_id).dir.join("machine.json")).ok()?;
        serde_json::from_str(&text).ok()
    }
}

/// Stops every VM and network hub under `layout` (the twin's shutdown, `ec2-twin stop`).
pub async fn stop_everything(layout: &Layout, remove: bool) {
    for id in layout.vms() {
        qemu::stop(&layout.vm(&id), &process_name(&id)).await;
    }
    for vpc in layout.vpcs() {
        hub::stop(&layout.hub_socket(&vpc), &layout.hub_pid(&vpc)).await;
    }
    if remove {
        for sub in ["vms", "vpcs", "volumes"] {
            let _ = std::fs::remove_dir_all(layout.root.join(sub));
        }
    }
}

/// Runs `qemu-img ARGS`; its stderr is the error.
pub(crate) fn qemu_img(args: &[&std::ffi::OsStr]) -> Result<(), String> {
    let out = std::process::Command::new("qemu-img")
        .args(args)
        .output()
        .map_err(|e| format!("qemu-img: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "qemu-img: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}
