//! How the PostgreSQL steps reach a local node: SSH to its forwarded port, PostgreSQL at its
//! other forwarded port, clients seen by the node as the user-mode network's host address.

use std::sync::Arc;

use async_trait::async_trait;

use super::vm_of;
use super::{LocalEnv, hub_cidr};
use crate::postgres::NodeAccess;
use crate::saga::{StepCtx, StepError};
use crate::ssh::SshSession;

pub struct LocalAccess {
    pub env: Arc<LocalEnv>,
    pub dns_name: String,
}

/// The address connections forwarded from 127.0.0.1 arrive from, inside the guest.
const HOST_AS_SEEN_BY_GUEST: &str = "10.0.2.2/32";

#[async_trait]
impl NodeAccess for LocalAccess {
    async fn session(&self, ctx: &StepCtx, node: &str) -> Result<Arc<SshSession>, StepError> {
        self.env.session(&vm_of(ctx, node)?).await
    }

    fn pg_endpoint(&self, ctx: &StepCtx, node: &str) -> Result<(String, u16), StepError> {
        Ok(("127.0.0.1".into(), vm_of(ctx, node)?.pg_port))
    }

    fn vpc_cidr(&self) -> String {
        hub_cidr().into()
    }

    fn client_cidrs(&self) -> Vec<String> {
        vec![hub_cidr().into(), HOST_AS_SEEN_BY_GUEST.into()]
    }

    fn cert_names(&self, ctx: &StepCtx, node: &str) -> Result<Vec<String>, StepError> {
        let vm = vm_of(ctx, node)?;
        Ok(vec![
            self.dns_name.clone(),
            "localhost".into(),
            "127.0.0.1".into(),
            vm.private_ip,
        ])
    }

    fn private_address(&self, ctx: &StepCtx, node: &str) -> Result<String, StepError> {
        Ok(vm_of(ctx, node)?.private_ip)
    }

    fn data_device(&self, _ctx: &StepCtx, _node: &str) -> Result<String, StepError> {
        Ok(format!(
            "/dev/disk/by-id/virtio-{}",
            super::steps::DATA_SERIAL
        ))
    }
}
