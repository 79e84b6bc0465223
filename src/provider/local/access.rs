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
    /// The instance's DNS names (primary and read-only): the certificate carries them all.
    pub dns_names: Vec<String>,
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
        let mut names = self.dns_names.clone();
        names.extend(["localhost".into(), "127.0.0.1".into(), vm.private_ip]);
        Ok(names)
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

    fn metrics_target(
        &self,
        ctx: &StepCtx,
        node: &str,
        guest_port: u16,
    ) -> Result<(String, u16), StepError> {
        let vm = vm_of(ctx, node)?;
        vm.forwarded(guest_port)
            .map(|p| ("127.0.0.1".to_string(), p))
            .ok_or_else(|| {
                StepError::Permanent(format!(
                    "{node}: guest port {guest_port} is not forwarded (VM created by an older dbctl?)"
                ))
            })
    }

    fn package_routes(
        &self,
        ctx: &StepCtx,
        node: &str,
    ) -> Result<Vec<(String, String)>, StepError> {
        Ok(vm_of(ctx, node)?.package_routes)
    }

    fn s3_route(&self) -> Option<String> {
        (self.env.register.backup.repo == crate::config::RepoKind::S3)
            .then(|| super::S3_RELAY_ADDR.to_string())
    }
}
