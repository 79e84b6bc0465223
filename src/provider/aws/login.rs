//! What `dbctl ssh` hands the system's OpenSSH client for an EC2 node: the address, dbctl's
//! user and key, and a known_hosts file holding the host key read from the node's console
//! output, so the login is verified (StrictHostKeyChecking=yes) the way dbctl's own sessions
//! are, with nothing trusted on first use.

use std::path::PathBuf;

use super::InstanceOut;
use super::access::verified_host_key;
use super::steps::AwsEnv;
use crate::config::AwsSection;
use crate::spec::InstanceSpec;

pub struct Login {
    pub host: String,
    pub user: String,
    /// dbctl's private key (0600, in the state directory).
    pub key: PathBuf,
    /// One line: the node's address and its host key (public; written 0644).
    pub known_hosts: PathBuf,
}

/// Reads `vm`'s host key (refused at once when the instance is gone) and writes its
/// known_hosts file.
pub async fn prepare(
    config: &AwsSection,
    spec: &InstanceSpec,
    state_dir: PathBuf,
    vm: &InstanceOut,
    node: &str,
) -> Result<Login, String> {
    let env = AwsEnv::new(config, spec, state_dir.clone());
    let host_key = verified_host_key(&env, vm, node)
        .await
        .map_err(|e| e.to_string())?;
    let host = vm
        .public_ip
        .clone()
        .or(vm.private_ip.clone())
        .ok_or_else(|| format!("{node}: instance {} has no IP address", vm.instance_id))?;
    let line = host_key
        .to_openssh()
        .map_err(|e| format!("{node}: host key: {e}"))?;
    let dir = state_dir.join("ssh");
    let key = crate::ssh::ClientKey::load_or_create(&dir)
        .map(|_| dir.join("id_ed25519"))
        .map_err(|e| format!("dbctl SSH key: {e}"))?;
    let known_hosts = dir.join(format!("known_hosts.{}", vm.instance_id));
    crate::atomic_file::write(&known_hosts, format!("{host} {line}\n").as_bytes(), 0o644)
        .map_err(|e| format!("{}: {e}", known_hosts.display()))?;
    Ok(Login {
        host,
        user: "dbctl".into(),
        key,
        known_hosts,
    })
}
