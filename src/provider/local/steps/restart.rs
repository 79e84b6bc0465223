//! `reinit.vm.<node>` (`dbctl reinit`): the node's VM runs again — its QEMU process started
//! over the disks it had, with its recorded ports and host key — or, if it runs, is left as it
//! is. The data disk is hot-plugged again by the next step, as at create.

use async_trait::async_trait;
use serde_json::Value;

use super::vm::VmStep;
use super::vm_of;
use crate::saga::{Step, StepCtx, StepError};

pub struct RestartStep {
    pub vm: VmStep,
}

#[async_trait]
impl Step for RestartStep {
    async fn execute(&self, ctx: &StepCtx) -> Result<Value, StepError> {
        let recorded = vm_of(ctx, &self.vm.node)?;
        let out = self.vm.restart(ctx, recorded).await?;
        Ok(serde_json::to_value(out).expect("json"))
    }

    /// Nothing to undo: the VM belongs to the instance's create run (its destroy removes it).
    async fn rollback(&self, _ctx: &StepCtx) -> Result<(), StepError> {
        Ok(())
    }
}
