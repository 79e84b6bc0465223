//! The `local` provider: real VMs under QEMU on this machine, dbctl's embedded default.
//!
//! Mapping of the cloud's pieces: a VPC is a private L2 segment served by a per-run hub process
//! (`hub`); a security group is the set of guest ports forwarded to 127.0.0.1 (nothing else is
//! reachable: user-mode networking with `restrict=on`); a VM is a detached QEMU process over a
//! qcow2 overlay of the base image (`image`) with a NoCloud seed (`seed`); a volume is a qcow2
//! file hot-plugged through QMP. Zones are labels the scheduler spreads nodes over.

mod access;
pub mod firewall;
pub mod host;
pub mod hub;
pub mod image;
pub mod image_import;
mod leftovers;
pub mod paths;
pub mod process;
pub mod qemu;
pub mod qmp;
pub mod relay;
pub mod seed;
mod steps;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

use super::{Provider, RunInfo};
use crate::config::LocalSection;
use crate::flow::Action;
use crate::saga::{Step, StepError};
use crate::scheduler::ZoneInfo;
use crate::spec::{InstanceSpec, ValidationError};
use crate::ssh::{ClientKey, SshSession, SshTarget};

pub use paths::RunPaths;
pub use steps::VmOut;
pub(crate) use steps::vm_of;

/// What every local step shares: directories, settings, dbctl's SSH key, open SSH sessions.
pub struct LocalEnv {
    pub state_dir: PathBuf,
    pub cache_dir: PathBuf,
    pub config: LocalSection,
    pub register: Arc<crate::register::Settings>,
    sessions: Mutex<HashMap<u16, Arc<SshSession>>>,
}

impl LocalEnv {
    pub fn client_key(&self) -> Result<ClientKey, StepError> {
        ClientKey::load_or_create(&self.state_dir.join("ssh"))
            .map_err(|e| StepError::Permanent(format!("dbctl SSH key: {e}")))
    }

    pub fn boot_timeout(&self) -> Duration {
        Duration::from_secs(self.config.boot_timeout_secs)
    }

    /// One SSH connection per VM, reused by every step in this process (a new connection costs
    /// seconds under software emulation).
    pub async fn session(&self, vm: &VmOut) -> Result<Arc<SshSession>, StepError> {
        let mut sessions = self.sessions.lock().await;
        if let Some(s) = sessions.get(&vm.ssh_port).filter(|s| !s.is_closed()) {
            return Ok(s.clone());
        }
        let target = vm.ssh_target()?;
        let s = Arc::new(connect(&target, &self.client_key()?).await?);
        sessions.insert(vm.ssh_port, s.clone());
        Ok(s)
    }
}

async fn connect(target: &SshTarget, key: &ClientKey) -> Result<SshSession, StepError> {
    SshSession::connect(target, key, Duration::from_secs(30))
        .await
        .map_err(|e| {
            if e.is_transient() {
                StepError::Transient(e.to_string())
            } else {
                StepError::Permanent(e.to_string())
            }
        })
}

pub struct Local {
    env: Arc<LocalEnv>,
}

impl Local {
    pub fn new(
        config: &LocalSection,
        register: Arc<crate::register::Settings>,
        state_dir: PathBuf,
        cache_dir: PathBuf,
    ) -> Local {
        Local {
            env: Arc::new(LocalEnv {
                state_dir,
                cache_dir,
                config: config.clone(),
                register,
                sessions: Mutex::new(HashMap::new()),
            }),
        }
    }
}

/// Where a guest connects for the S3 backup repository: an address on the user-mode network
/// that QEMU relays (guestfwd) to the configured endpoint through `dbctl relay`; the
/// endpoint's name resolves to it in the guest.
pub const S3_RELAY_ADDR: &str = "10.0.2.100";

/// `HOST:PORT` of a `[local] package_hosts` entry.
pub(crate) fn package_host(entry: &str) -> Option<(&str, u16)> {
    let (host, port) = entry.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p > 0)?;
    let valid = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    valid.then_some((host, port))
}

/// One `[local] package_hosts` entry as a guest of an imported cloud image reaches it: like
/// the S3 relay, an address QEMU relays (guestfwd) to `entry`, where `host` resolves in the
/// guest.
pub(crate) struct PackageRelay<'a> {
    pub entry: &'a str,
    pub host: &'a str,
    pub port: u16,
    pub addr: String,
}

/// The relays of every valid `package_hosts` entry (preflight refuses invalid ones), each on
/// its own address from 10.0.2.101 on.
pub(crate) fn package_relays(config: &LocalSection) -> Vec<PackageRelay<'_>> {
    config
        .package_hosts
        .iter()
        .enumerate()
        .filter_map(|(i, entry)| {
            package_host(entry).map(|(host, port)| PackageRelay {
                entry,
                host,
                port,
                addr: format!("10.0.2.{}", 101 + i),
            })
        })
        .collect()
}

/// The private segment every local VPC uses (each VPC is its own hub, so they never meet).
pub(crate) fn hub_cidr() -> &'static str {
    steps::SUBNET
}

/// Guest ports the firewall step declared (the defaults when it has not run).
pub(crate) fn firewall_ports(paths: &RunPaths) -> Vec<u16> {
    let declared = std::fs::read_to_string(paths.firewall())
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| {
            v["ingress"].as_array().map(|a| {
                a.iter()
                    .filter_map(|r| r["port"].as_u64())
                    .map(|p| p as u16)
                    .collect::<Vec<_>>()
            })
        });
    declared.unwrap_or_else(|| steps::INGRESS_PORTS.to_vec())
}

pub(crate) fn node_index(node: &str) -> u8 {
    crate::scheduler::node_index(node)
}

/// The node's address on the VPC's private segment.
pub fn private_ip(node: &str) -> String {
    format!("10.77.0.{}", 10 + node_index(node) as u32)
}

#[async_trait::async_trait]
impl Provider for Local {
    fn name(&self) -> &'static str {
        "local"
    }

    fn zones(&self, _region: &str) -> Vec<ZoneInfo> {
        self.env
            .config
            .zones
            .iter()
            .map(|z| ZoneInfo {
                name: z.clone(),
                free_nodes: None,
                live_nodes: 0,
            })
            .collect()
    }

    fn preflight(&self, spec: &InstanceSpec) -> Result<(), ValidationError> {
        for (tool, pkg) in [
            ("qemu-system-x86_64", "qemu-system-x86"),
            ("qemu-img", "qemu-utils"),
            ("genisoimage", "genisoimage"),
        ] {
            let found = std::env::var_os("PATH")
                .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()));
            if !found {
                return Err(ValidationError::new(
                    "provider",
                    format!("local: {tool} is not installed (apt-get install {pkg})"),
                ));
            }
        }
        match spec.image.as_deref() {
            // Imported on create; its PostgreSQL comes from its own package sources.
            Some(path) if image_import::is_path(path) => {
                image_import::inspect(std::path::Path::new(path))
                    .map_err(|e| ValidationError::new("image", e))?;
            }
            name => {
                let image = steps::resolve_image(&self.env, name)
                    .map_err(|e| ValidationError::new("image", e))?;
                if !image.is_cloud() && !image.manifest.postgres_majors.contains(&spec.version) {
                    return Err(ValidationError::new(
                        "version",
                        format!(
                            "local: image {} carries PostgreSQL {:?}, not {}",
                            image.manifest.name, image.manifest.postgres_majors, spec.version
                        ),
                    ));
                }
            }
        }
        for h in &self.env.config.package_hosts {
            if package_host(h).is_none() {
                return Err(ValidationError::new(
                    "local.package_hosts",
                    format!("{h:?} is not HOST:PORT"),
                ));
            }
        }
        let nodes = spec.nodes() as u64;
        let need_mem = nodes * spec.resources.memory_gib as u64 * 1024 + 512;
        if let Some(avail) = host::mem_available_mib().filter(|a| *a < need_mem) {
            return Err(ValidationError::new(
                "resources",
                format!(
                    "local: {nodes} VM(s) need {need_mem} MiB of memory with headroom, this host has {avail} MiB available"
                ),
            ));
        }
        // Overlays and data disks are sparse; 2 GiB per node covers the OS and a test database.
        let need_disk = nodes * 2048;
        if let Some(free) = host::disk_free_mib(&self.env.state_dir).filter(|f| *f < need_disk) {
            return Err(ValidationError::new(
                "resources",
                format!(
                    "local: {nodes} VM(s) need {need_disk} MiB free under {}, only {free} MiB free",
                    self.env.state_dir.display()
                ),
            ));
        }
        Ok(())
    }

    fn materialize(
        &self,
        mut spec: InstanceSpec,
        progress: &dyn Fn(&str),
    ) -> Result<InstanceSpec, crate::error::CliError> {
        if let Some(path) = spec.image.as_deref().filter(|p| image_import::is_path(p)) {
            let img =
                image_import::import(&self.env.cache_dir, std::path::Path::new(path), progress)?;
            spec.image = Some(img.manifest.name);
        }
        Ok(spec)
    }

    fn bind(&self, run: &RunInfo<'_>, step: &str, action: &Action) -> Arc<dyn Step> {
        steps::bind(&self.env, run, step, action)
    }

    async fn leftovers(&self) -> Result<Vec<super::Leftover>, String> {
        Ok(leftovers::scan(&self.env.state_dir))
    }

    async fn remove_leftovers(&self, run_id: &str) -> Result<(), String> {
        leftovers::remove(&self.env.state_dir, run_id).await
    }

    async fn node_states(&self, run_id: &str, nodes: &[String]) -> Vec<super::NodeState> {
        let paths = RunPaths::new(&self.env.state_dir, run_id);
        let mut out = Vec::new();
        for node in nodes {
            let name = format!("dbctl-{run_id}-{node}");
            let state = qemu::status(&paths.vm(node), &name)
                .await
                .unwrap_or_else(|| "stopped".into());
            out.push(super::NodeState {
                node: node.clone(),
                state,
            });
        }
        out
    }
}
