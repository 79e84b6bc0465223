//! A small QMP (QEMU Machine Protocol) client over the VM's unix socket.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("qmp {0}: {1}")]
    Io(String, std::io::Error),
    #[error("qmp: {class}: {desc}")]
    Command { class: String, desc: String },
    #[error("qmp: {0}")]
    Protocol(String),
    #[error("qmp: no {0} event within {1} s")]
    EventTimeout(String, u64),
}

pub struct Qmp {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    events: Vec<Value>,
}

impl Qmp {
    /// Connects and negotiates capabilities.
    pub async fn connect(socket: &Path) -> Result<Qmp, QmpError> {
        let stream = UnixStream::connect(socket)
            .await
            .map_err(|e| QmpError::Io(socket.display().to_string(), e))?;
        let (r, w) = stream.into_split();
        let mut qmp = Qmp {
            reader: BufReader::new(r),
            writer: w,
            events: Vec::new(),
        };
        let greeting = qmp.read().await?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Protocol(format!(
                "unexpected greeting {greeting}"
            )));
        }
        qmp.execute("qmp_capabilities", json!({})).await?;
        Ok(qmp)
    }

    async fn read(&mut self) -> Result<Value, QmpError> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .await
            .map_err(|e| QmpError::Io("read".into(), e))?;
        if n == 0 {
            return Err(QmpError::Protocol("connection closed".into()));
        }
        serde_json::from_str(&line)
            .map_err(|e| QmpError::Protocol(format!("bad reply {line:?}: {e}")))
    }

    /// Runs one command and returns its `return` value; events arriving meanwhile are kept.
    pub async fn execute(&mut self, command: &str, arguments: Value) -> Result<Value, QmpError> {
        let msg = json!({ "execute": command, "arguments": arguments }).to_string() + "\n";
        self.writer
            .write_all(msg.as_bytes())
            .await
            .map_err(|e| QmpError::Io("write".into(), e))?;
        loop {
            let v = self.read().await?;
            if v.get("event").is_some() {
                self.events.push(v);
                continue;
            }
            if let Some(err) = v.get("error") {
                return Err(QmpError::Command {
                    class: err["class"].as_str().unwrap_or("").into(),
                    desc: err["desc"].as_str().unwrap_or("").into(),
                });
            }
            return Ok(v.get("return").cloned().unwrap_or(Value::Null));
        }
    }

    /// Waits for `event` whose `data.device` is `device` (QEMU sends an earlier one for the
    /// device's virtio backend first; that one must not count).
    pub async fn wait_event(
        &mut self,
        event: &str,
        device: &str,
        limit: Duration,
    ) -> Result<(), QmpError> {
        let matches = |v: &Value| v["event"] == event && v["data"]["device"] == device;
        if self.events.iter().any(matches) {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let v = tokio::time::timeout_at(deadline, self.read())
                .await
                .map_err(|_| QmpError::EventTimeout(event.into(), limit.as_secs()))??;
            if matches(&v) {
                return Ok(());
            }
        }
    }
}
