//! AWS EC2: the cloud resources one dbctl run needs, created idempotently and removable by tag.
//!
//! Files, one concept each: [`client`] builds the SDK clients (credentials, region, endpoint,
//! retry split), [`error`] classifies failures as transient or permanent, [`tags`] names and
//! finds what dbctl created, [`network`] and [`routing`] the VPC/subnets/internet access,
//! [`security_group`] the firewall (`ingress` refuses open or unreachable settings before a run
//! starts), [`keypair`], [`ami`], [`instance`], [`volume`], and
//! [`sweep`] finds and removes everything of a run. [`route53`] publishes an instance's names in
//! the account's private hosted zone. [`fault`] injects SDK-level failures into EC2 calls for
//! tests (`DBCTL_AWS_FAULTS`); `iam_policy` (tests only) checks that
//! `examples/aws-iam-policy.json` allows every call made here.
//!
//! The contract every saga step relies on:
//! * `ensure_*` first looks up the resource by its run+step tags and adopts it, then creates
//!   (tagged on create). Calling it again after a lost journal write returns the same resource.
//! * `delete_*` accepts `None` for the output (the journal may have lost it) and then finds the
//!   resource by tags; "already gone" is success. Deletes check and wait for dependencies
//!   themselves, because EC2 reports them late (and moto not at all).

mod access;
pub mod ami;
mod capacity;
pub mod client;
pub mod config;
pub mod error;
mod existing_vpc;
pub mod instance_profile;
// Fault injection for tests; compiled in everywhere (its unit tests run in every build) but
// armed only with the `faults` feature (client.rs).
#[cfg_attr(not(feature = "faults"), allow(dead_code))]
pub mod fault;
#[cfg(test)]
mod iam_policy;
mod ingress;
pub mod instance;
pub mod keypair;
pub mod login;
pub mod network;
mod preflight;
pub mod provider;
pub mod route53;
pub mod route53_owner;
pub mod routing;
pub mod security_group;
mod steps;
pub mod sweep;
pub mod tags;
pub mod tunnel;
pub mod volume;
mod wait;

use std::sync::Arc;

pub use config::{AwsSettings, Cidr};
pub use error::AwsError;
pub use instance::{InstanceOut, InstanceRequest};
pub use keypair::KeyPairOut;
pub use network::{NetworkOut, SubnetOut};
pub use route53::{Association, Disassociation, Dns, ZoneId};
pub use security_group::SecurityGroupOut;
pub use sweep::{ResourceKind, TaggedResource};
pub use tags::RunTags;
pub use volume::{VolumeOut, VolumeRequest};

/// A connected EC2 client plus the project's AWS settings. Cheap to clone (shared handles).
#[derive(Debug, Clone)]
pub struct Ec2 {
    pub(crate) client: aws_sdk_ec2::Client,
    pub(crate) settings: Arc<AwsSettings>,
    pub(crate) region: String,
}

impl Ec2 {
    /// Connects using the standard AWS chain and `settings` (see [`client`]). Makes no request.
    pub async fn connect(settings: &AwsSettings) -> Result<Ec2, AwsError> {
        client::connect(settings).await
    }

    /// The region every call goes to.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The settings this client was connected with.
    pub fn settings(&self) -> &AwsSettings {
        &self.settings
    }

    /// The raw SDK client, for callers that need an operation this module does not wrap.
    pub fn sdk(&self) -> &aws_sdk_ec2::Client {
        &self.client
    }

    /// Availability zones of the region that offer `instance_type`, sorted by name.
    ///
    /// Guarantees: only zones where `DescribeInstanceTypeOfferings` (location type
    /// `availability-zone`) lists the type; `Permanent` when there are none, because no retry
    /// will make the type appear.
    pub async fn available_zones(&self, instance_type: &str) -> Result<Vec<String>, AwsError> {
        use aws_sdk_ec2::types::LocationType;
        let resource = format!("instance type {instance_type} in {}", self.region);
        let out = self
            .client
            .describe_instance_type_offerings()
            .location_type(LocationType::AvailabilityZone)
            .filters(tags::filter("instance-type", &[instance_type]))
            .send()
            .await
            .map_err(error::fail("DescribeInstanceTypeOfferings", &resource))?;
        let mut zones: Vec<String> = out
            .instance_type_offerings()
            .iter()
            .filter_map(|o| o.location().map(str::to_string))
            .collect();
        zones.sort();
        zones.dedup();
        if zones.is_empty() {
            return Err(AwsError::invalid(
                "DescribeInstanceTypeOfferings",
                resource,
                "no availability zone offers this instance type",
            ));
        }
        Ok(zones)
    }
}
