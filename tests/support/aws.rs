//! The aws provider's test environment against moto, and what EC2 holds of a run.

use std::collections::BTreeMap;

use dbctl::provider::aws::{AwsSettings, Ec2, ResourceKind};

use super::Env;

/// A testbed-free environment whose provider is aws, with a short SSH wait (moto instances
/// never answer).
pub fn env() -> Env {
    Env::aws("[aws]\nssh_wait_secs = 2\nssh_cidr = \"203.0.113.0/24\"\n")
}

/// How many resources tagged with the run EC2 holds, by kind. The instance's root volume
/// carries the run's tags too; the data volume is the one tagged with the disk step.
pub async fn tagged_by_kind(run: &str) -> BTreeMap<String, usize> {
    let ec2 = Ec2::connect(&AwsSettings::default()).await.unwrap();
    let mut m = BTreeMap::new();
    for r in ec2.tagged_resources(run).await.unwrap() {
        let key = match r.kind {
            ResourceKind::Volume => format!("Volume:{}", r.step.unwrap_or_default()),
            k => format!("{k:?}"),
        };
        *m.entry(key).or_default() += 1;
    }
    m
}

/// Points every AWS SDK client this test process builds at `endpoint` with static test
/// credentials, and never at the instance metadata service or the user's AWS files.
///
/// # Safety
/// Call before any thread of the test binary builds an SDK client or reads the environment.
pub unsafe fn point_sdk_at(endpoint: &str) {
    // SAFETY: the caller guarantees no concurrent reader.
    unsafe {
        std::env::set_var("AWS_ENDPOINT_URL", endpoint);
        std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
        std::env::set_var("AWS_REGION", "us-east-1");
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
        std::env::set_var("AWS_CONFIG_FILE", "/dev/null");
        std::env::set_var("AWS_SHARED_CREDENTIALS_FILE", "/dev/null");
        std::env::remove_var("AWS_PROFILE");
    }
}
