//! `provision.attach.<node>`: hot-plug the data volume into the running VM through QMP
//! (blockdev-add + device_add), then check the guest sees it, by its serial (device letters
//! are not stable). Rollback unplugs it: device_del, wait for DEVICE_DELETED, blockdev-del.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::vm_of;
use crate::provider::local::qmp::{Qmp, QmpError};
use crate::provider::local::{LocalEnv, RunPaths, process};
use crate::saga::{Step, StepCtx, StepError};

pub struct AttachStep {
    pub env: Arc<LocalEnv>,
    pub paths: RunPaths,
    pub node: String,
}

const NODE_NAME: &str = "dbctl-data";
const DEVICE_ID: &str = "dbctl-data-dev";
/// Visible in the guest as /dev/disk/by-id/virtio-dbctl-data.
pub const SERIAL: &str = "dbctl-data";

fn qmp_err(e: QmpError) -> StepError {
    StepError::Transient(e.to_string())
}

/// Treats "already there" answers as success, so a re-executed attach is a no-op.
fn tolerate_duplicate(r: Result<Value, QmpError>) -> Result<(), StepError> {
    match r {
        Ok(_) => Ok(()),
        Err(QmpError::Command { desc, .. })
            if desc.contains("Duplicate") || desc.contains("already") =>
        {
            Ok(())
        }
        Err(e) => Err(qmp_err(e)),
    }
}

#[async_trait]
impl Step for AttachStep {
    async fn execute(&self, ctx: &StepCtx) -> Result<Value, StepError> {
        let vm = vm_of(ctx, &self.node)?;
        let disk = self.paths.disk(&self.node);
        let mut q = Qmp::connect(&self.paths.vm(&self.node).qmp())
            .await
            .map_err(qmp_err)?;
        tolerate_duplicate(
            q.execute(
                "blockdev-add",
                json!({ "driver": "qcow2", "node-name": NODE_NAME, "file": { "driver": "file", "filename": disk } }),
            )
            .await,
        )?;
        tolerate_duplicate(
            q.execute(
                "device_add",
                json!({ "driver": "virtio-blk-pci", "id": DEVICE_ID, "drive": NODE_NAME, "serial": SERIAL, "addr": "0x9" }),
            )
            .await,
        )?;
        let session = self.env.session(&vm).await?;
        let probe = format!(
            "for i in $(seq 1 150); do [ -b /dev/disk/by-id/virtio-{SERIAL} ] && break; sleep 0.2; done; \
             lsblk -bdno SIZE /dev/disk/by-id/virtio-{SERIAL}"
        );
        let out = session
            .exec(&probe, None, Duration::from_secs(60))
            .await
            .map_err(|e| StepError::Transient(e.to_string()))?;
        let size: u64 = out.stdout_str().trim().parse().map_err(|_| {
            StepError::Transient(format!(
                "{}: hot-plugged disk not visible in the guest: {}",
                self.node,
                out.tail(2)
            ))
        })?;
        Ok(json!({ "device": format!("/dev/disk/by-id/virtio-{SERIAL}"), "size_bytes": size }))
    }

    async fn rollback(&self, _ctx: &StepCtx) -> Result<(), StepError> {
        let vm = self.paths.vm(&self.node);
        let name = format!(
            "dbctl-{}-{}",
            self.paths
                .root
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or(""),
            self.node
        );
        if process::running(&vm.pid(), &name).is_none() {
            return Ok(()); // No VM, nothing plugged.
        }
        let mut q = Qmp::connect(&vm.qmp()).await.map_err(qmp_err)?;
        match q.execute("device_del", json!({ "id": DEVICE_ID })).await {
            Ok(_) => q
                .wait_event("DEVICE_DELETED", DEVICE_ID, Duration::from_secs(60))
                .await
                .map_err(qmp_err)?,
            Err(QmpError::Command { desc, .. }) if desc.contains("not found") => {}
            Err(e) => return Err(qmp_err(e)),
        }
        match q
            .execute("blockdev-del", json!({ "node-name": NODE_NAME }))
            .await
        {
            Ok(_) => Ok(()),
            Err(QmpError::Command { desc, .. })
                if desc.contains("not found") || desc.contains("Failed to find") =>
            {
                Ok(())
            }
            Err(e) => Err(qmp_err(e)),
        }
    }
}
