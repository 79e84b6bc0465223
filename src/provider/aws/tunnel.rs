//! Local ports forwarded through a node's verified SSH session to its PostgreSQL: how the
//! operator's machine reaches an EC2 instance whose security group opens 5432 to the VPC only
//! (`dbctl connect --tunnel`, and `--psql`, which goes through one). Like `ssh -L`, but over
//! the session dbctl opens itself, with the host key from the console output, so there is no
//! known_hosts to keep and nothing to open but SSH. TLS stays end to end: the client verifies
//! the server's certificate by the node's private address, which the certificate carries.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::InstanceOut;
use super::access::connect_node;
use super::steps::AwsEnv;
use crate::config::AwsSection;
use crate::spec::InstanceSpec;
use crate::ssh::SshSession;

/// One forwarded port: `127.0.0.1:<local port>` → the node's `<private address>:5432`.
pub struct Forward {
    pub local: SocketAddr,
    /// The address PostgreSQL is reached at from the node, and the name TLS verifies.
    pub server_name: String,
    accept: JoinHandle<()>,
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// A forward to each of `nodes` (name, instance) of the instance built from `spec`, in order.
pub async fn open(
    config: &AwsSection,
    spec: &InstanceSpec,
    state_dir: PathBuf,
    nodes: &[(String, InstanceOut)],
) -> Result<Vec<Forward>, String> {
    let env = AwsEnv::new(config, spec, state_dir);
    let opening = nodes.iter().map(|(node, vm)| forward(&env, vm, node));
    futures::future::try_join_all(opening).await
}

/// Opens an SSH session to `vm` and a local port that forwards every connection to the node's
/// PostgreSQL on its private address.
async fn forward(env: &AwsEnv, vm: &InstanceOut, node: &str) -> Result<Forward, String> {
    let private = vm
        .private_ip
        .clone()
        .ok_or_else(|| format!("{node}: instance {} has no private IP", vm.instance_id))?;
    let session = Arc::new(
        connect_node(env, vm, node)
            .await
            .map_err(|e| e.to_string())?,
    );
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(|e| format!("local port for the tunnel: {e}"))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("local port for the tunnel: {e}"))?;
    let target = private.clone();
    let accept = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(splice(session.clone(), tcp, target.clone()));
        }
    });
    Ok(Forward {
        local,
        server_name: private,
        accept,
    })
}

/// Carries one client connection through a direct-tcpip channel until either side closes.
async fn splice(session: Arc<SshSession>, mut tcp: tokio::net::TcpStream, private: String) {
    match session.open_tcp(&private, 5432).await {
        Ok(mut channel) => {
            let _ = tokio::io::copy_bidirectional(&mut tcp, &mut channel).await;
        }
        Err(e) => eprintln!("dbctl: tunnel: {e}"),
    }
}
