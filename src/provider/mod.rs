//! The provider seam: binds each step of the flow to an implementation for one provider.
//!
//! A provider turns the flow's [`Action`]s into real work (cloud API calls, QEMU processes,
//! SSH). The flow and the saga engine are shared; only binding differs. `local` (QEMU VMs) and
//! `aws` (EC2) are the product's providers; `testbed` exists only in builds with the `testbed`
//! feature, for driving the real binary through crash and rollback tests.

pub mod aws;
pub mod leftovers;
pub mod local;
#[cfg(feature = "testbed")]
pub mod testbed;

use std::sync::Arc;

pub use leftovers::Leftover;

use crate::config::Config;
use crate::flow::Action;
use crate::saga::Step;
use crate::scheduler::ZoneInfo;
use crate::spec::{InstanceSpec, ValidationError};

/// Every provider name this build accepts.
#[cfg(not(feature = "testbed"))]
pub const NAMES: &[&str] = &["local", "aws"];
#[cfg(feature = "testbed")]
pub const NAMES: &[&str] = &["local", "aws", "testbed"];

/// What a run's steps are bound against.
pub struct RunInfo<'a> {
    pub run_id: &'a str,
    pub instance_id: &'a str,
    pub spec: &'a InstanceSpec,
    pub placement: &'a crate::scheduler::Placement,
    /// Rolling back removes the instance's backups too.
    pub purge_backups: bool,
}

/// A node as its provider sees it right now (for `dbctl status`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeState {
    pub node: String,
    /// The provider's word for it: `running`, `paused`, `stopped`, ...
    pub state: String,
}

/// One check of an online preflight (credentials, a permission, a capacity fact).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

/// What the provider's API says before a run: zones to schedule in, checks, what it creates.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Preflight {
    /// Zones that can take the nodes; `None` = the configured zones.
    pub zones: Option<Vec<String>>,
    pub checks: Vec<Check>,
    /// The resources a create will make, in words.
    pub creates: Vec<String>,
}

impl Preflight {
    /// The failed checks as one line, or `None` when all passed.
    pub fn failures(&self) -> Option<String> {
        let failed: Vec<String> = self
            .checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| format!("{} ({})", c.name, c.detail))
            .collect();
        (!failed.is_empty()).then(|| failed.join("; "))
    }
}

/// One provider's implementations of the flow's actions.
#[async_trait::async_trait]
pub trait Provider: Send + Sync {
    fn name(&self) -> &'static str;

    /// Zones offered in `region`, with capacity where the provider knows it.
    fn zones(&self, region: &str) -> Vec<ZoneInfo>;

    /// Checks this host/account can take the instance, before anything is journaled.
    fn preflight(&self, _spec: &InstanceSpec) -> Result<(), ValidationError> {
        Ok(())
    }

    /// Whether its nodes bring cloud credentials of their own (aws: an instance profile), so
    /// S3 backups need no operator key and none is put on a node.
    fn node_credentials(&self) -> bool {
        false
    }

    /// Turns inputs that name files on this machine into something the journal can keep (local:
    /// an image file given to `--image` is imported into the image cache and the spec then
    /// names the import). Runs after the preflight checks passed, before admission.
    fn materialize(
        &self,
        spec: InstanceSpec,
        _progress: &dyn Fn(&str),
    ) -> Result<InstanceSpec, crate::error::CliError> {
        Ok(spec)
    }

    /// Asks the provider's API about the request: credentials and zones, and with `permissions`
    /// also whether the create calls would be allowed (DryRun; what `plan` shows).
    async fn preflight_online(&self, _spec: &InstanceSpec, _permissions: bool) -> Preflight {
        Preflight::default()
    }

    /// Live state of a run's nodes, asked of the provider (not the journal).
    async fn node_states(&self, _run_id: &str, _nodes: &[String]) -> Vec<NodeState> {
        Vec::new()
    }

    /// The implementation of one step.
    fn bind(&self, run: &RunInfo<'_>, step: &str, action: &Action) -> Arc<dyn Step>;

    /// Everything this provider holds that dbctl made from this state directory, each with
    /// its run, found without the journal (local: run directories and their processes; aws:
    /// resources tagged with this directory's owner).
    async fn leftovers(&self) -> Result<Vec<Leftover>, String> {
        Ok(Vec::new())
    }

    /// Removes whatever [`Provider::leftovers`] finds of `run_id`, dependents first. Safe to
    /// call again; on `Ok` nothing of the run is left.
    async fn remove_leftovers(&self, _run_id: &str) -> Result<(), String> {
        Ok(())
    }
}

/// Why a provider cannot run here.
pub fn unavailable(provider: &str) -> ValidationError {
    ValidationError::new(
        "provider",
        format!(
            "{provider}: provisioning is not implemented in this build yet (use `dbctl plan` to see what it would do)"
        ),
    )
}

/// Zones a provider offers according to the config, for planning without touching it.
pub fn configured_zones(config: &Config, provider: &str, region: &str) -> Vec<String> {
    match provider {
        "aws" if config.aws.zones.is_empty() => ["a", "b", "c"]
            .iter()
            .map(|s| format!("{region}{s}"))
            .collect(),
        "aws" => config.aws.zones.clone(),
        #[cfg(feature = "testbed")]
        "testbed" => testbed::ZONES.iter().map(|s| s.to_string()).collect(),
        _ => config.local.zones.clone(),
    }
}

/// Where providers keep their files.
pub struct ProviderDirs {
    /// Per-run files, keys: beside the journal.
    pub state: std::path::PathBuf,
    /// Rebuildable things (base images).
    pub cache: std::path::PathBuf,
}

/// The provider that executes runs for `name`, or why there is none in this build.
pub fn connect(
    name: &str,
    config: &Config,
    dirs: &ProviderDirs,
) -> Result<Box<dyn Provider>, ValidationError> {
    let register = std::sync::Arc::new(crate::register::Settings::new(config, &dirs.state));
    match name {
        "local" => Ok(Box::new(local::Local::new(
            &config.local,
            register,
            dirs.state.clone(),
            dirs.cache.clone(),
        ))),
        "aws" => Ok(Box::new(aws::provider::Aws::new(
            &config.aws,
            register,
            dirs.state.clone(),
        ))),
        #[cfg(feature = "testbed")]
        "testbed" => Ok(Box::new(testbed::Testbed::from_env()?)),
        other => Err(unavailable(other)),
    }
}
