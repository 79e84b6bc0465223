//! `provision.keypair`: dbctl's SSH key, generated once and shared by all runs (so rollback
//! leaves it: other instances still need it).

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Value, json};

use crate::provider::local::LocalEnv;
use crate::saga::{Step, StepCtx, StepError};

pub struct KeyPairStep {
    pub env: Arc<LocalEnv>,
}

#[async_trait]
impl Step for KeyPairStep {
    async fn execute(&self, _ctx: &StepCtx) -> Result<Value, StepError> {
        let key = self.env.client_key()?;
        Ok(json!({ "public_key": key.public_openssh(), "path": key.path }))
    }

    async fn rollback(&self, _ctx: &StepCtx) -> Result<(), StepError> {
        Ok(())
    }
}
