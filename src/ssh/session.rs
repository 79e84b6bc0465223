//! One SSH connection to a node, with channels opened on it per command.
//!
//! A new connection costs ~3 s under software emulation, so callers keep one per node. Remote
//! commands run under `timeout -s KILL`: closing a channel does not stop the remote process
//! (measured, shared/crates.md), so the time limit is enforced on the node itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use russh::client::{self, Handle};
use russh::keys::{PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh::{ChannelMsg, Disconnect};

use super::{ClientKey, ExecOutput};

#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// Nothing answered, or the connection dropped: retrying may help (a booting node).
    #[error("ssh {target}: cannot connect: {message}")]
    Unreachable { target: String, message: String },
    /// The node presented a host key other than the one learnt out of band. Never retried.
    #[error(
        "ssh {target}: host key mismatch: the server's key is not the one dbctl recorded; refusing to connect"
    )]
    HostKeyMismatch { target: String },
    #[error("ssh {target}: the server rejected dbctl's key for user {user}")]
    AuthRejected { target: String, user: String },
    #[error("ssh {target}: command timed out after {secs} s")]
    Timeout { target: String, secs: u64 },
    #[error("ssh {target}: {message}")]
    Protocol { target: String, message: String },
}

impl SshError {
    /// Whether retrying later can succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            SshError::Unreachable { .. } | SshError::Timeout { .. } | SshError::Protocol { .. }
        )
    }
}

/// Where and as whom to connect, and the host key to expect.
#[derive(Clone)]
pub struct SshTarget {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub host_key: PublicKey,
}

impl SshTarget {
    fn name(&self) -> String {
        format!("{}@{}:{}", self.user, self.host, self.port)
    }
}

struct Verifier {
    expected: PublicKey,
    mismatch: Arc<AtomicBool>,
}

impl client::Handler for Verifier {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let ok = matches!(key, PublicKeyOrCertificate::PublicKey { key, .. } if key.key_data() == self.expected.key_data());
        if !ok {
            self.mismatch.store(true, Ordering::SeqCst);
        }
        Ok(ok)
    }
}

pub struct SshSession {
    handle: Handle<Verifier>,
    target: SshTarget,
}

impl SshSession {
    /// Connects, verifies the host key and authenticates with dbctl's key.
    pub async fn connect(
        target: &SshTarget,
        key: &ClientKey,
        timeout: Duration,
    ) -> Result<SshSession, SshError> {
        let name = target.name();
        let config = Arc::new(client::Config {
            inactivity_timeout: Some(Duration::from_secs(600)),
            keepalive_interval: Some(Duration::from_secs(15)),
            nodelay: true,
            ..Default::default()
        });
        let mismatch = Arc::new(AtomicBool::new(false));
        let verifier = Verifier {
            expected: target.host_key.clone(),
            mismatch: mismatch.clone(),
        };
        let connecting = client::connect(config, (target.host.as_str(), target.port), verifier);
        let mut handle = match tokio::time::timeout(timeout, connecting).await {
            Err(_) => {
                return Err(SshError::Unreachable {
                    target: name,
                    message: format!("no answer within {} s", timeout.as_secs()),
                });
            }
            Ok(Err(_)) if mismatch.load(Ordering::SeqCst) => {
                return Err(SshError::HostKeyMismatch { target: name });
            }
            Ok(Err(e)) => {
                return Err(SshError::Unreachable {
                    target: name,
                    message: e.to_string(),
                });
            }
            Ok(Ok(h)) => h,
        };
        let auth = PrivateKeyWithHashAlg::new(key.private.clone(), None);
        let result =
            tokio::time::timeout(timeout, handle.authenticate_publickey(&target.user, auth))
                .await
                .map_err(|_| SshError::Unreachable {
                    target: name.clone(),
                    message: "authentication timed out".into(),
                })?
                .map_err(|e| SshError::Unreachable {
                    target: name.clone(),
                    message: e.to_string(),
                })?;
        if !result.success() {
            return Err(SshError::AuthRejected {
                target: name,
                user: target.user.clone(),
            });
        }
        Ok(SshSession {
            handle,
            target: target.clone(),
        })
    }

    pub fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }

    /// Runs `script` with bash on the node, killed there after `limit`. `stdin` is fed to it.
    pub async fn exec(
        &self,
        script: &str,
        stdin: Option<&[u8]>,
        limit: Duration,
    ) -> Result<ExecOutput, SshError> {
        self.exec_locked(script, stdin, limit, None).await
    }

    /// Like [`SshSession::exec`], holding the node-side lock file `lock` while the script runs
    /// (see [`super::exec::remote_command`]): one attempt of a step at a time on a node.
    pub async fn exec_locked(
        &self,
        script: &str,
        stdin: Option<&[u8]>,
        limit: Duration,
        lock: Option<&str>,
    ) -> Result<ExecOutput, SshError> {
        let name = self.target.name();
        let proto = |e: russh::Error| SshError::Protocol {
            target: name.clone(),
            message: e.to_string(),
        };
        let secs = limit.as_secs().max(1);
        let command = super::exec::remote_command(script, secs, lock);
        let run = async {
            let mut ch = self.handle.channel_open_session().await.map_err(proto)?;
            ch.exec(true, command).await.map_err(proto)?;
            if let Some(input) = stdin {
                ch.data_bytes(input.to_vec()).await.map_err(proto)?;
            }
            // Without EOF, a remote `cat > file` never ends.
            ch.eof().await.map_err(proto)?;
            let mut out = ExecOutput::default();
            // The exit status may come before or after EOF: read until the channel closes.
            while let Some(msg) = ch.wait().await {
                match msg {
                    ChannelMsg::Data { data } => out.stdout.extend_from_slice(&data),
                    ChannelMsg::ExtendedData { data, ext: 1 } => {
                        out.stderr.extend_from_slice(&data)
                    }
                    ChannelMsg::ExitStatus { exit_status } => out.status = Some(exit_status),
                    ChannelMsg::ExitSignal { signal_name, .. } => {
                        out.signal = Some(format!("{signal_name:?}"))
                    }
                    _ => {}
                }
            }
            Ok(out)
        };
        // A local backstop a little after the remote limit, for a node that stops answering.
        match tokio::time::timeout(limit + Duration::from_secs(10), run).await {
            Ok(Ok(out)) if out.status == Some(137) || out.signal.is_some() => {
                Err(SshError::Timeout {
                    target: self.target.name(),
                    secs,
                })
            }
            Ok(res) => res,
            Err(_) => Err(SshError::Timeout {
                target: self.target.name(),
                secs,
            }),
        }
    }

    /// A TCP connection made by the node's sshd to `host:port` (what `ssh -L` opens): it reaches
    /// whatever the node reaches, so nothing has to be opened to this host but SSH.
    pub async fn open_tcp(
        &self,
        host: &str,
        port: u16,
    ) -> Result<russh::ChannelStream<client::Msg>, SshError> {
        let channel = self
            .handle
            .channel_open_direct_tcpip(host, u32::from(port), "127.0.0.1", 0)
            .await
            .map_err(|e| SshError::Protocol {
                target: self.target.name(),
                message: format!("forward to {host}:{port}: {e}"),
            })?;
        Ok(channel.into_stream())
    }

    pub async fn close(self) {
        let _ = self
            .handle
            .disconnect(Disconnect::ByApplication, "", "en")
            .await;
    }
}
