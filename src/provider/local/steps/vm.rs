//! `provision.vm.<node>`: boot a VM and wait until dbctl holds a verified SSH session to it.
//!
//! Idempotent: a QEMU process already running for this run and node (found by pid file and
//! command line) is adopted, never duplicated — the journal may not know it was started.
//! The host key is read from the VM's serial console, where cloud-init prints it before sshd
//! starts; SSH then accepts exactly that key.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{io_err, resolve_image};
use crate::cloud_init::{self, NodeIdentity};
use crate::provider::local::image::Image;
use crate::provider::local::image_import;
use crate::provider::local::paths::VmPaths;
use crate::provider::local::qemu::{self, VmConfig};
use crate::provider::local::seed;
use crate::provider::local::{LocalEnv, RunPaths, host, node_index, private_ip, process};
use crate::provider::local::{firewall_ports, package_relays};
use crate::saga::{Step, StepCtx, StepError};
use crate::ssh::{SshTarget, host_key_from_console, parse_public_key};

pub struct VmStep {
    pub env: Arc<LocalEnv>,
    pub paths: RunPaths,
    pub run_id: String,
    pub instance: String,
    pub node: String,
    pub zone: String,
    pub vcpus: u32,
    pub memory_gib: u32,
    pub image: Option<String>,
}

/// What later steps need to reach the VM.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmOut {
    pub node: String,
    pub zone: String,
    pub name: String,
    pub pid: u32,
    pub private_ip: String,
    pub ssh_port: u16,
    pub pg_port: u16,
    /// Every forwarded guest port → host port on 127.0.0.1 (exporters included).
    #[serde(default)]
    pub forwards: Vec<(u16, u16)>,
    /// The verified host key, OpenSSH format.
    pub host_key: String,
    /// (package host name, guest address its relay listens on): set for VMs of imported cloud
    /// images, which install PostgreSQL from their package sources on first boot.
    #[serde(default)]
    pub package_routes: Vec<(String, String)>,
    pub dir: std::path::PathBuf,
}

impl VmOut {
    /// The host port that reaches `guest_port`, if the firewall forwards it.
    pub fn forwarded(&self, guest_port: u16) -> Option<u16> {
        self.forwards
            .iter()
            .find(|(g, _)| *g == guest_port)
            .map(|(_, h)| *h)
    }

    pub fn ssh_target(&self) -> Result<SshTarget, StepError> {
        let host_key = parse_public_key(&self.host_key).ok_or_else(|| {
            StepError::Permanent(format!("{}: unreadable recorded host key", self.node))
        })?;
        Ok(SshTarget {
            host: "127.0.0.1".into(),
            port: self.ssh_port,
            user: "dbctl".into(),
            host_key,
        })
    }
}

/// Host ports of one VM (0 = not allocated yet: a file written by an older dbctl).
#[derive(Serialize, Deserialize)]
struct Ports {
    ssh: u16,
    pg: u16,
    #[serde(default)]
    node_exporter: u16,
    #[serde(default)]
    pg_exporter: u16,
}

impl Ports {
    fn for_guest(&self, guest: u16) -> u16 {
        use crate::register::{NODE_EXPORTER_PORT, POSTGRES_EXPORTER_PORT};
        match guest {
            22 => self.ssh,
            NODE_EXPORTER_PORT => self.node_exporter,
            POSTGRES_EXPORTER_PORT => self.pg_exporter,
            _ => self.pg,
        }
    }
}

impl VmStep {
    fn name(&self) -> String {
        format!("dbctl-{}-{}", self.run_id, self.node)
    }

    fn vm(&self) -> VmPaths {
        self.paths.vm(&self.node)
    }

    /// Host ports stay the same across re-executions (recorded before QEMU starts).
    fn ports(&self) -> Result<Ports, StepError> {
        let file = self.vm().ports();
        if let Ok(Ok(p)) = std::fs::read_to_string(&file).map(|t| serde_json::from_str::<Ports>(&t))
            && p.node_exporter != 0
        {
            return Ok(p);
        }
        let free = host::free_ports(4).map_err(io_err("port"))?;
        let p = Ports {
            ssh: free[0],
            pg: free[1],
            node_exporter: free[2],
            pg_exporter: free[3],
        };
        std::fs::write(&file, serde_json::to_string(&p).expect("json"))
            .map_err(io_err(file.display()))?;
        Ok(p)
    }

    fn launch(&self, ctx: &StepCtx, ports: &Ports, image: &Image) -> Result<u32, StepError> {
        let vm = self.vm();
        if let Some(avail) =
            host::mem_available_mib().filter(|a| *a < self.memory_gib as u64 * 1024 + 256)
        {
            return Err(StepError::Permanent(format!(
                "{}: not enough memory ({avail} MiB available)",
                self.node
            )));
        }
        if !vm.overlay().exists() {
            let tmp = vm.overlay().with_extension("tmp");
            let mut create = std::process::Command::new("qemu-img");
            create
                .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
                .arg(image.base())
                .arg(&tmp);
            // A cloud image's root grows (cloud-init growpart) into the larger overlay.
            if image.is_cloud() {
                let bytes = image
                    .manifest
                    .virtual_bytes
                    .max(image_import::MIN_ROOT_BYTES);
                create.arg(bytes.to_string());
            }
            let out = create.output().map_err(io_err("qemu-img"))?;
            if !out.status.success() {
                return Err(StepError::Permanent(format!(
                    "qemu-img: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
            std::fs::rename(&tmp, vm.overlay()).map_err(io_err("overlay"))?;
        }
        let key = self.env.client_key()?;
        let hostname = format!("{}-{}", self.instance, self.node);
        let ip = private_ip(&self.node);
        // The role the node starts in (an HA cluster's roles change later).
        let role = if node_index(&self.node) == 0 {
            "primary"
        } else {
            "replica"
        };
        let user_data = cloud_init::user_data(&NodeIdentity {
            hostname: &hostname,
            run_id: &self.run_id,
            instance: &self.instance,
            node: &self.node,
            role,
            private_ip: &ip,
            ssh_public_key: &key.public_openssh(),
            // dbctl's own image configures no default user for cloud-init to create.
            keep_default_user: false,
        })
        .map_err(|e| StepError::Permanent(format!("user-data template: {e}")))?;
        // A new instance-id per generation: a recreated VM must be seeded afresh.
        let instance_id = format!("{}-{}-g{}", self.run_id, self.node, ctx.generation);
        let index = node_index(&self.node);
        let (mgmt_mac, vpc_mac) = qemu::macs(index);
        let network = cloud_init::network_config(&mgmt_mac, &vpc_mac, &ip, None)
            .map_err(|e| StepError::Permanent(format!("network-config template: {e}")))?;
        seed::write_iso(
            &vm.seed(),
            &user_data,
            &network,
            &instance_id,
            &hostname,
            None,
        )
        .map_err(io_err("seed"))?;
        self.start_qemu(ports, image)
    }

    /// Starts QEMU over the VM's existing overlay and seed.
    fn start_qemu(&self, ports: &Ports, image: &Image) -> Result<u32, StepError> {
        let vm = self.vm();
        let ip = private_ip(&self.node);
        let index = node_index(&self.node);
        let forwards = self.forwards(ports);
        let guest_forwards = self.guest_forwards(image)?;
        let cfg = VmConfig {
            name: &self.name(),
            image,
            accel: host::accelerator(&self.env.config.accel),
            vcpus: self.vcpus,
            memory_mib: self.memory_gib as u64 * 1024,
            index,
            private_ip: &ip,
            private_netmask: "255.255.255.0",
            forward_addr: "127.0.0.1",
            forwards: &forwards,
            guest_forwards: &guest_forwards,
            hub_socket: &self.paths.hub_socket(),
            metadata: None,
        };
        qemu::start(&cfg, &vm).map_err(|e| {
            // A port taken since it was picked: no QEMU runs on these ports, so the retry may
            // pick new ones (they are kept across re-executions only for a VM that started).
            if e.contains("Could not set up host forwarding rule") {
                let _ = std::fs::remove_file(vm.ports());
            }
            StepError::Transient(e)
        })
    }

    fn forwards(&self, ports: &Ports) -> Vec<(u16, u16)> {
        firewall_ports(&self.paths)
            .into_iter()
            .map(|p| (p, ports.for_guest(p)))
            .collect()
    }

    /// Connections the guest may open to the outside (restrict=on blocks all others): the S3
    /// backup repository and, for an imported cloud image, its package mirrors — each relayed by
    /// `dbctl relay` to the real host.
    fn guest_forwards(&self, image: &Image) -> Result<Vec<String>, StepError> {
        let exe =
            crate::provider::local::process::self_exe().map_err(io_err("dbctl executable"))?;
        // The guest reaches each target's own port on a relay address (the target's name
        // resolves there in the guest), so TLS and Host headers carry the real name.
        let vm_dir = self.vm().dir;
        let rule = |addr: &str, port: u16, target: &str| {
            crate::provider::local::relay::guestfwd_rule(&exe, addr, port, target, &vm_dir)
        };
        let mut rules = Vec::new();
        let s = &self.env.register;
        if s.backup.repo == crate::config::RepoKind::S3 {
            let (_, port) = s.s3_host_port();
            rules.push(rule(
                crate::provider::local::S3_RELAY_ADDR,
                port,
                &s.s3_connect_to(),
            ));
        }
        if image.is_cloud() {
            for r in package_relays(&self.env.config) {
                rules.push(rule(&r.addr, r.port, r.entry));
            }
        }
        Ok(rules)
    }

    /// Package host names and the relay addresses they resolve to in the guest.
    fn package_routes(&self, image: &Image) -> Vec<(String, String)> {
        if !image.is_cloud() {
            return Vec::new();
        }
        package_relays(&self.env.config)
            .into_iter()
            .map(|r| (r.host.to_string(), r.addr))
            .collect()
    }

    /// Boots a VM that was built before and is down (its QEMU process killed or exited): the
    /// same overlay, seed, ports and host key; nothing of the guest is created anew. Returns
    /// the recorded outputs with the new pid, once a session verified by the recorded host key
    /// runs a command. A VM that runs is adopted as it is.
    pub async fn restart(&self, ctx: &StepCtx, recorded: VmOut) -> Result<VmOut, StepError> {
        let vm = self.vm();
        let pid = match process::running(&vm.pid(), &self.name()) {
            Some(pid) => {
                ctx.log(&format!("{}: VM runs (pid {pid})", self.node));
                pid
            }
            None => {
                if !vm.overlay().exists() || !vm.seed().exists() {
                    return Err(StepError::Permanent(format!(
                        "{}: its disks are gone ({}); it cannot be started again",
                        self.node,
                        vm.dir.display()
                    )));
                }
                // The hub (the VPC) must run for the VM's private NIC.
                crate::provider::local::hub::ensure(
                    &self.paths.hub_socket(),
                    &self.paths.hub_pid(),
                    None,
                )
                .map_err(io_err("network hub"))?;
                let ports = self.ports()?;
                let image = resolve_image(&self.env, self.image.as_deref())
                    .map_err(StepError::Permanent)?;
                let pid = self.start_qemu(&ports, &image)?;
                ctx.log(&format!("{}: VM started again (pid {pid})", self.node));
                pid
            }
        };
        let out = VmOut { pid, ..recorded };
        let deadline = Instant::now() + self.env.boot_timeout();
        let mut delay = Duration::from_millis(500);
        loop {
            let r = match self.env.session(&out).await {
                Ok(s) => s
                    .exec("true", None, Duration::from_secs(30))
                    .await
                    .map_err(|e| StepError::Transient(e.to_string())),
                Err(e) => Err(e),
            };
            match r {
                Ok(o) if o.success() => return Ok(out),
                Ok(o) => {
                    return Err(StepError::Transient(format!(
                        "{}: {}",
                        self.node,
                        o.tail(2)
                    )));
                }
                Err(StepError::Transient(e)) if Instant::now() < deadline => {
                    tracing::debug!("{}: ssh not ready: {e}", self.node);
                    tokio::time::sleep(delay).await;
                    delay = (delay * 3 / 2).min(Duration::from_secs(3));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Polls the serial console (with backoff) for the host key block.
    async fn host_key(&self, pid: u32, deadline: Instant) -> Result<String, StepError> {
        let console = self.vm().console();
        let mut delay = Duration::from_millis(250);
        loop {
            let text = std::fs::read(&console)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            if let Some(k) = host_key_from_console(&text) {
                return Ok(k.to_openssh().expect("key encodes"));
            }
            if process::running(&self.vm().pid(), &self.name()).is_none() {
                let tail: Vec<&str> = text.lines().rev().take(5).collect();
                return Err(StepError::Permanent(format!(
                    "{}: VM (pid {pid}) exited during boot: {}",
                    self.node,
                    tail.join(" | ")
                )));
            }
            if Instant::now() >= deadline {
                return Err(StepError::Permanent(format!(
                    "{}: no SSH host key on the serial console after {} s (see {})",
                    self.node,
                    self.env.boot_timeout().as_secs(),
                    console.display()
                )));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 3 / 2).min(Duration::from_secs(2));
        }
    }
}

#[async_trait]
impl Step for VmStep {
    async fn execute(&self, ctx: &StepCtx) -> Result<Value, StepError> {
        let vm = self.vm();
        std::fs::create_dir_all(&vm.dir).map_err(io_err(vm.dir.display()))?;
        let ports = self.ports()?;
        let image =
            resolve_image(&self.env, self.image.as_deref()).map_err(StepError::Permanent)?;
        ctx.resource_intent("vm", &self.node, Some(&self.zone))?;
        let pid = match process::running(&vm.pid(), &self.name()) {
            Some(pid) => {
                ctx.log(&format!("adopting running VM (pid {pid})"));
                pid
            }
            None => self.launch(ctx, &ports, &image)?,
        };
        // The crash tests' "QEMU started, journal not told" point.
        ctx.fault_point("qemu-started")?;
        ctx.resource_created("vm", &self.node, &format!("pid {pid}"))?;

        let deadline = Instant::now() + self.env.boot_timeout();
        let host_key = self.host_key(pid, deadline).await?;
        std::fs::write(
            vm.known_hosts(),
            format!("[127.0.0.1]:{} {host_key}\n", ports.ssh),
        )
        .map_err(io_err("known_hosts"))?;
        let out = VmOut {
            node: self.node.clone(),
            zone: self.zone.clone(),
            name: self.name(),
            pid,
            private_ip: private_ip(&self.node),
            ssh_port: ports.ssh,
            pg_port: ports.pg,
            forwards: self.forwards(&ports),
            host_key,
            package_routes: self.package_routes(&image),
            dir: vm.dir.clone(),
        };
        // sshd may lag the console line by a moment: poll until a verified session runs a command.
        let mut delay = Duration::from_millis(500);
        loop {
            match self.env.session(&out).await {
                Ok(s) => {
                    let r = s
                        .exec("cat /etc/dbctl/node.env", None, Duration::from_secs(30))
                        .await;
                    match r {
                        Ok(o)
                            if o.success()
                                && o.stdout_str()
                                    .contains(&format!("DBCTL_NODE={}", self.node)) =>
                        {
                            break;
                        }
                        Ok(o) => {
                            return Err(StepError::Permanent(format!(
                                "{}: node is not seeded: {}",
                                self.node,
                                o.tail(3)
                            )));
                        }
                        Err(e) => return Err(StepError::Transient(e.to_string())),
                    }
                }
                Err(StepError::Transient(e)) if Instant::now() < deadline => {
                    tracing::debug!("{}: ssh not ready: {e}", self.node);
                    tokio::time::sleep(delay).await;
                    delay = (delay * 3 / 2).min(Duration::from_secs(3));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(serde_json::to_value(out).expect("json"))
    }

    async fn rollback(&self, ctx: &StepCtx) -> Result<(), StepError> {
        let vm = self.vm();
        qemu::stop(&vm, &self.name()).await;
        crate::provider::local::relay::stop_for(&vm.dir).await;
        if process::running(&vm.pid(), &self.name()).is_some() {
            return Err(StepError::Transient(format!(
                "{}: VM still running",
                self.node
            )));
        }
        if vm.dir.exists() {
            std::fs::remove_dir_all(&vm.dir).map_err(io_err(vm.dir.display()))?;
        }
        ctx.resource_deleted("vm", &self.node)
    }
}
