//! The VM that runs PostgreSQL: launched with IMDSv2 enforced and tagged on launch.

use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, HttpTokensState, Instance, InstanceMetadataEndpointState,
    InstanceMetadataOptionsRequest, InstanceNetworkInterfaceSpecification, InstanceStateName,
    InstanceType, Placement, ResourceType, VolumeType,
};

use super::Ec2;
use super::error::{AwsError, fail};
use super::tags::{RunTags, TAG_RUN, TAG_STEP, filter, tag_filter, tag_value};
use super::wait::{Backoff, poll_until};

/// Everything `ensure_instance` needs that earlier steps produced.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InstanceRequest {
    pub zone: String,
    pub subnet_id: String,
    pub security_group_id: String,
    pub key_name: String,
    /// cloud-init user data, plain text (base64-encoded here).
    pub user_data: Option<String>,
    /// Overrides `settings.ami` (and the Debian 12 lookup).
    pub ami: Option<String>,
    /// Overrides `settings.instance_type`.
    pub instance_type: Option<String>,
}

/// What `ensure_instance` launched; stored in the journal.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InstanceOut {
    pub instance_id: String,
    pub zone: String,
    pub subnet_id: String,
    pub ami: String,
    pub instance_type: String,
    pub private_ip: Option<String>,
    pub public_ip: Option<String>,
}

fn instance_out(i: &Instance) -> InstanceOut {
    InstanceOut {
        instance_id: i.instance_id().unwrap_or_default().to_string(),
        zone: i
            .placement()
            .and_then(|p| p.availability_zone())
            .unwrap_or_default()
            .to_string(),
        subnet_id: i.subnet_id().unwrap_or_default().to_string(),
        ami: i.image_id().unwrap_or_default().to_string(),
        instance_type: i
            .instance_type()
            .map(|t| t.as_str().to_string())
            .unwrap_or_default(),
        private_ip: i.private_ip_address().map(str::to_string),
        public_ip: i.public_ip_address().map(str::to_string),
    }
}

/// The AMI's root device: its name, and the size its image maps there (GiB), if it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RootDevice {
    pub name: String,
    pub size_gib: Option<i32>,
}

/// The root volume as dbctl launches it: encrypted (the account's default EBS key) whatever the
/// account's encrypt-by-default setting says, gp3, and gone with the instance. Mapped onto the
/// AMI's own root device name, which is what makes EC2 apply it to the root volume; the image's
/// own size is repeated because some endpoints (moto) require a size in every EBS mapping.
pub(crate) fn root_volume(root: &RootDevice) -> BlockDeviceMapping {
    BlockDeviceMapping::builder()
        .device_name(&root.name)
        .ebs(
            EbsBlockDevice::builder()
                .encrypted(true)
                .volume_type(VolumeType::Gp3)
                .delete_on_termination(true)
                .set_volume_size(root.size_gib)
                .build(),
        )
        .build()
}

fn state_of(i: &Instance) -> Option<&InstanceStateName> {
    i.state().and_then(|s| s.name())
}

/// Instance states that still hold a network interface in the VPC (everything but terminated).
pub(crate) const LIVE_INSTANCE_STATES: &[&str] =
    &["pending", "running", "shutting-down", "stopping", "stopped"];

/// Instances that count as "the step's instance" when adopting: not terminated and not on the
/// way there (a shutting-down instance cannot be brought back).
const ADOPTABLE_STATES: &[&str] = &["pending", "running", "stopping", "stopped"];

impl Ec2 {
    /// Ensures one running instance for `step`.
    ///
    /// Guarantees: adopts a live instance tagged with run+step before launching (the tag lookup
    /// is what protects endpoints that ignore `client_token`, such as moto); launches with IMDSv2 required (HttpTokens
    /// `required`, hop limit 1, so containers on the host cannot reach instance credentials),
    /// the security group, key, user data, and the run's tags on the instance and its root
    /// volume; returns once the instance is `running` (polling with backoff). An instance that
    /// dies while starting is `Permanent` with EC2's state reason.
    ///
    /// `client_token` must be the same on every attempt of the step (derive it from run, step
    /// and generation; never random): it covers the one window the tag lookup cannot, where EC2's
    /// DescribeInstances does not yet show an instance whose RunInstances response was lost.
    pub async fn ensure_instance(
        &self,
        tags: &RunTags,
        step: &str,
        req: &InstanceRequest,
        client_token: &str,
    ) -> Result<InstanceOut, AwsError> {
        let label = tags.label("instance", step);
        if client_token.is_empty() || client_token.len() > 64 || !client_token.is_ascii() {
            return Err(AwsError::invalid(
                "RunInstances",
                &label,
                "client token must be 1-64 ASCII chars",
            ));
        }
        let mut filters = tags.step_filters(step);
        filters.push(filter("instance-state-name", ADOPTABLE_STATES));
        let existing = self.find_instances(filters, &label).await?;
        if existing.len() > 1 {
            // Only possible if a create raced a lookup (describe lag); sweep_run removes extras.
            tracing::warn!(
                step,
                count = existing.len(),
                "several instances tagged for one step"
            );
        }
        // The oldest, so repeated calls always adopt the same one.
        let oldest = existing.iter().min_by_key(|i| {
            let t = i.launch_time().map(|t| (t.secs(), t.subsec_nanos()));
            (t, i.instance_id().map(str::to_string))
        });
        let instance_id = match oldest {
            Some(i) => {
                let id = i.instance_id().unwrap_or_default().to_string();
                if state_of(i) == Some(&InstanceStateName::Stopped) {
                    // Someone stopped it; the step's promise is a running instance.
                    self.client
                        .start_instances()
                        .instance_ids(&id)
                        .send()
                        .await
                        .map_err(fail("StartInstances", &id))?;
                }
                id
            }
            None => self.launch(tags, step, req, client_token, &label).await?,
        };
        self.wait_running(&instance_id)
            .await
            .map(|i| instance_out(&i))
    }

    async fn launch(
        &self,
        tags: &RunTags,
        step: &str,
        req: &InstanceRequest,
        client_token: &str,
        label: &str,
    ) -> Result<String, AwsError> {
        let instance_type = req
            .instance_type
            .clone()
            .unwrap_or_else(|| self.settings.instance_type.clone());
        let ami = self.resolve_ami(req.ami.as_deref(), &instance_type).await?;
        let root_device = self.root_device(&ami).await?;
        let metadata = InstanceMetadataOptionsRequest::builder()
            .http_endpoint(InstanceMetadataEndpointState::Enabled)
            .http_tokens(HttpTokensState::Required)
            .http_put_response_hop_limit(1)
            .build();
        let mut call = self
            .client
            .run_instances()
            .image_id(&ami)
            .instance_type(InstanceType::from(instance_type.as_str()))
            .min_count(1)
            .max_count(1)
            .key_name(&req.key_name)
            // The subnet's zone, said explicitly: what a capacity error is about is then in
            // the request itself (and fault injection can target one zone).
            .placement(Placement::builder().availability_zone(&req.zone).build())
            .metadata_options(metadata)
            .block_device_mappings(root_volume(&root_device))
            .client_token(client_token)
            .tag_specifications(tags.spec(ResourceType::Instance, step))
            .tag_specifications(tags.spec(ResourceType::Volume, step));
        call = if self.settings.vpc_id.is_some() && self.settings.public {
            // The account's subnet need not map public IPs on launch, and dbctl changes
            // nothing of it (`existing_vpc`): the instance asks for its own.
            call.network_interfaces(
                InstanceNetworkInterfaceSpecification::builder()
                    .device_index(0)
                    .subnet_id(&req.subnet_id)
                    .groups(&req.security_group_id)
                    .associate_public_ip_address(true)
                    .delete_on_termination(true)
                    .build(),
            )
        } else {
            call.subnet_id(&req.subnet_id)
                .security_group_ids(&req.security_group_id)
        };
        if let Some(data) = &req.user_data {
            call = call.user_data(aws_smithy_types::base64::encode(data.as_bytes()));
        }
        if let Some(profile) = &self.settings.instance_profile {
            call = call.iam_instance_profile(super::instance_profile::specification(profile));
        }
        let out = call.send().await.map_err(fail("RunInstances", label))?;
        let id = out
            .instances()
            .first()
            .and_then(|i| i.instance_id())
            .ok_or_else(|| AwsError::not_yet("RunInstances", label, "response had no instance"))?;
        tracing::info!(instance = id, step, ami, "launched instance");
        Ok(id.to_string())
    }

    /// The AMI's root device (`/dev/xvda` on Debian's images), where the root volume's mapping
    /// must go; `Permanent` when the image does not exist.
    async fn root_device(&self, ami: &str) -> Result<RootDevice, AwsError> {
        let out = self
            .client
            .describe_images()
            .image_ids(ami)
            .send()
            .await
            .map_err(fail("DescribeImages", ami))?;
        let image = out
            .images()
            .first()
            .ok_or_else(|| AwsError::invalid("DescribeImages", ami, "no such image"))?;
        let name = image.root_device_name().unwrap_or("/dev/xvda").to_string();
        let size_gib = image
            .block_device_mappings()
            .iter()
            .find(|m| m.device_name() == Some(name.as_str()))
            .and_then(|m| m.ebs())
            .and_then(|e| e.volume_size());
        Ok(RootDevice { name, size_gib })
    }

    /// Polls until `instance_id` is running; NotFound right after launch is waited out.
    async fn wait_running(&self, instance_id: &str) -> Result<Instance, AwsError> {
        poll_until("DescribeInstances", instance_id, Backoff::STATE, || async {
            let Some(i) = self.describe_instance(instance_id).await? else {
                return Ok(None); // not visible yet (eventual consistency)
            };
            match state_of(&i) {
                Some(InstanceStateName::Running) => Ok(Some(i)),
                Some(InstanceStateName::ShuttingDown | InstanceStateName::Terminated) => {
                    let reason = i
                        .state_reason()
                        .and_then(|r| r.message())
                        .unwrap_or("unknown");
                    Err(AwsError::invalid(
                        "RunInstances",
                        instance_id,
                        format!("instance stopped while starting: {reason}"),
                    ))
                }
                _ => Ok(None),
            }
        })
        .await
    }

    /// Terminates the step's instance (by `out`, else by run+step tags) and waits until it is
    /// `terminated`.
    ///
    /// Guarantees: on `Ok`, no instance of the step holds an interface, an address or a security
    /// group any more, so the network and firewall steps can be undone. Gone = success.
    pub async fn delete_instance(
        &self,
        tags: &RunTags,
        step: &str,
        out: Option<&InstanceOut>,
    ) -> Result<(), AwsError> {
        let label = tags.label("instance", step);
        let mut filters = tags.step_filters(step);
        filters.push(filter("instance-state-name", LIVE_INSTANCE_STATES));
        let mut ids: Vec<String> = self
            .find_instances(filters, &label)
            .await?
            .iter()
            .filter_map(|i| i.instance_id().map(str::to_string))
            .collect();
        if let Some(o) = out
            && !ids.contains(&o.instance_id)
        {
            ids.push(o.instance_id.clone());
        }
        self.terminate_and_wait(&ids).await
    }

    /// The zones where this run's live instances other than `step`'s are: a node moved for
    /// capacity (`capacity`) keeps out of them, wherever its siblings ended up.
    pub(crate) async fn sibling_zones(
        &self,
        tags: &RunTags,
        step: &str,
    ) -> Result<Vec<String>, AwsError> {
        let filters = vec![
            tag_filter(TAG_RUN, &tags.run_id),
            filter("instance-state-name", LIVE_INSTANCE_STATES),
        ];
        let label = format!("instances of run {}", tags.run_id);
        Ok(self
            .find_instances(filters, &label)
            .await?
            .iter()
            .filter(|i| tag_value(i.tags(), TAG_STEP) != Some(step))
            .filter_map(|i| i.placement().and_then(|p| p.availability_zone()))
            .map(str::to_string)
            .collect())
    }

    /// Terminates `ids` one by one (a missing id would fail a batch call) and waits for all.
    pub(crate) async fn terminate_and_wait(&self, ids: &[String]) -> Result<(), AwsError> {
        for id in ids {
            let r = self
                .client
                .terminate_instances()
                .instance_ids(id)
                .send()
                .await
                .map_err(fail("TerminateInstances", id));
            match r {
                Ok(_) => tracing::info!(instance = id, "terminating instance"),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        for id in ids {
            poll_until("DescribeInstances", id, Backoff::STATE, || async {
                Ok(match self.describe_instance(id).await? {
                    None => Some(()),
                    Some(i) if state_of(&i) == Some(&InstanceStateName::Terminated) => Some(()),
                    Some(_) => None,
                })
            })
            .await?;
        }
        Ok(())
    }

    /// Waits until no instance matching `scope` holds resources: `Permanent`
    /// `DependencyViolation` if one is live (not merely shutting down).
    pub(crate) async fn wait_no_instances(
        &self,
        scope: aws_sdk_ec2::types::Filter,
        op: &str,
        resource: &str,
    ) -> Result<(), AwsError> {
        poll_until(op, resource, Backoff::STATE, || async {
            let out = self
                .client
                .describe_instances()
                .filters(scope.clone())
                .filters(filter("instance-state-name", LIVE_INSTANCE_STATES))
                .send()
                .await
                .map_err(fail("DescribeInstances", resource))?;
            let live: Vec<(String, String)> = out
                .reservations()
                .iter()
                .flat_map(|r| r.instances())
                .map(|i| {
                    let state = i.state().and_then(|s| s.name()).map(|n| n.as_str());
                    let id = i.instance_id().unwrap_or_default();
                    (id.to_string(), state.unwrap_or_default().to_string())
                })
                .collect();
            if live.is_empty() {
                return Ok(Some(()));
            }
            if let Some((id, state)) = live.iter().find(|(_, s)| s != "shutting-down") {
                return Err(AwsError::Permanent {
                    op: op.to_string(),
                    resource: resource.to_string(),
                    message: format!("instance {id} is still {state}; delete it first"),
                    code: Some("DependencyViolation".into()),
                });
            }
            Ok(None)
        })
        .await
    }

    /// `Some(state)` when the instance can no longer be reached: `terminated`, `shutting-down`,
    /// `stopping`, `stopped`, or `absent` (EC2 does not know it); `None` while it may run.
    pub async fn instance_gone(&self, id: &str) -> Result<Option<String>, AwsError> {
        use InstanceStateName as S;
        Ok(match self.describe_instance(id).await? {
            None => Some("absent".to_string()),
            Some(i) => match state_of(&i) {
                Some(s @ (S::Terminated | S::ShuttingDown | S::Stopping | S::Stopped)) => {
                    Some(s.as_str().to_string())
                }
                _ => None,
            },
        })
    }

    /// One instance by id; `None` when EC2 does not know it (yet, or any more).
    pub(crate) async fn describe_instance(&self, id: &str) -> Result<Option<Instance>, AwsError> {
        let out = self
            .client
            .describe_instances()
            .instance_ids(id)
            .send()
            .await
            .map_err(fail("DescribeInstances", id));
        match out {
            Ok(o) => Ok(o
                .reservations()
                .iter()
                .flat_map(|r| r.instances())
                .next()
                .cloned()),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub(crate) async fn find_instances(
        &self,
        filters: Vec<aws_sdk_ec2::types::Filter>,
        label: &str,
    ) -> Result<Vec<Instance>, AwsError> {
        let out = self
            .client
            .describe_instances()
            .set_filters(Some(filters))
            .send()
            .await
            .map_err(fail("DescribeInstances", label))?;
        Ok(out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .cloned()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_volume_is_encrypted_gp3_on_the_amis_root_device() {
        let m = root_volume(&RootDevice {
            name: "/dev/xvda".into(),
            size_gib: Some(8),
        });
        assert_eq!(m.device_name(), Some("/dev/xvda"));
        let ebs = m.ebs().expect("an EBS mapping");
        assert_eq!(ebs.volume_size(), Some(8));
        assert_eq!(ebs.encrypted(), Some(true));
        assert_eq!(ebs.volume_type(), Some(&VolumeType::Gp3));
        assert_eq!(ebs.delete_on_termination(), Some(true));
    }
}
