//! The PostgreSQL data volume: encrypted gp3, attached to the instance and deleted with it.

use aws_sdk_ec2::types::{
    EbsInstanceBlockDeviceSpecification, InstanceBlockDeviceMappingSpecification, ResourceType,
    Volume, VolumeAttachmentState, VolumeState, VolumeType,
};

use super::Ec2;
use super::error::{AwsError, fail};
use super::tags::{RunTags, filter};
use super::wait::{Backoff, WAIT_TIMEOUT, ignore_not_found, poll_until, retry_not_found};

/// Size and performance of the data volume.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VolumeRequest {
    pub zone: String,
    pub size_gib: i32,
    /// gp3 IOPS (3000 baseline when `None`).
    pub iops: Option<i32>,
    /// gp3 throughput in MiB/s (125 baseline when `None`).
    pub throughput: Option<i32>,
}

/// What `ensure_volume` created; stored in the journal.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VolumeOut {
    pub volume_id: String,
    pub zone: String,
    pub size_gib: i32,
}

/// Volume states that are "the step's volume" for adoption and deletion.
const LIVE_VOLUME_STATES: &[&str] = &["creating", "available", "in-use"];

impl Ec2 {
    /// Ensures one encrypted gp3 volume for `step` in `req.zone`, and waits until it is usable.
    ///
    /// Guarantees: adopts a live volume tagged with run+step before creating; created with
    /// `Encrypted=true` (the account's default KMS key) and tagged on create; `Permanent` for a
    /// size outside gp3's 1..=16384 GiB before any call. `client_token`: stable per step, as for
    /// [`Ec2::ensure_instance`].
    pub async fn ensure_volume(
        &self,
        tags: &RunTags,
        step: &str,
        req: &VolumeRequest,
        client_token: &str,
    ) -> Result<VolumeOut, AwsError> {
        let label = tags.label("volume", step);
        if !(1..=16384).contains(&req.size_gib) {
            return Err(AwsError::invalid(
                "CreateVolume",
                &label,
                "gp3 size must be 1-16384 GiB",
            ));
        }
        let mut filters = tags.step_filters(step);
        filters.push(filter("status", LIVE_VOLUME_STATES));
        let existing = self.find_volumes(filters, &label).await?;
        if existing.len() > 1 {
            tracing::warn!(
                step,
                count = existing.len(),
                "several volumes tagged for one step"
            );
        }
        // The oldest, so repeated calls always adopt the same one.
        let oldest = existing.iter().min_by_key(|v| {
            let t = v.create_time().map(|t| (t.secs(), t.subsec_nanos()));
            (t, v.volume_id().map(str::to_string))
        });
        let volume_id = match oldest {
            Some(v) => v.volume_id().unwrap_or_default().to_string(),
            None => {
                let out = self
                    .client
                    .create_volume()
                    .availability_zone(&req.zone)
                    .size(req.size_gib)
                    .volume_type(VolumeType::Gp3)
                    .set_iops(req.iops)
                    .set_throughput(req.throughput)
                    .encrypted(true)
                    .client_token(client_token)
                    .tag_specifications(tags.spec(ResourceType::Volume, step))
                    .send()
                    .await
                    .map_err(fail("CreateVolume", &label))?;
                let id = out.volume_id().unwrap_or_default().to_string();
                tracing::info!(volume = id, step, "created volume");
                id
            }
        };
        let v = self
            .wait_volume(&volume_id, |v| {
                matches!(v.state(), Some(VolumeState::Available | VolumeState::InUse))
            })
            .await?;
        Ok(VolumeOut {
            volume_id,
            zone: v.availability_zone().unwrap_or_default().to_string(),
            size_gib: v.size().unwrap_or(req.size_gib),
        })
    }

    /// Attaches `volume_id` to `instance_id` as `device`, waits until attached, then marks it
    /// DeleteOnTermination so a terminated instance never leaves its data volume behind.
    ///
    /// Guarantees: idempotent (already attached there = only the wait and the flag);
    /// `Permanent` if the volume is attached to another instance.
    pub async fn attach_volume(
        &self,
        tags: &RunTags,
        step: &str,
        volume_id: &str,
        instance_id: &str,
        device: &str,
    ) -> Result<(), AwsError> {
        let label = format!(
            "{volume_id} on {instance_id} ({})",
            tags.label("attach", step)
        );
        // Bounded: a volume id that stays unknown is a wrong id, not a slow EC2.
        let v = self
            .wait_volume_with(volume_id, Backoff::CONSISTENCY, |_| true)
            .await
            .map_err(|e| match e {
                e if e.code() == Some(WAIT_TIMEOUT) => AwsError::Permanent {
                    op: "AttachVolume".into(),
                    resource: label.clone(),
                    message: "volume does not exist".into(),
                    code: Some("InvalidVolume.NotFound".into()),
                },
                e => e,
            })?;
        let here = v
            .attachments()
            .iter()
            .find(|a| a.instance_id() == Some(instance_id));
        let elsewhere = v.attachments().iter().find(|a| {
            a.instance_id() != Some(instance_id)
                && a.state() != Some(&VolumeAttachmentState::Detached)
        });
        if let Some(other) = elsewhere {
            return Err(AwsError::invalid(
                "AttachVolume",
                &label,
                format!(
                    "volume is attached to {}",
                    other.instance_id().unwrap_or("?")
                ),
            ));
        }
        if here.is_none() {
            retry_not_found(|| async {
                self.client
                    .attach_volume()
                    .volume_id(volume_id)
                    .instance_id(instance_id)
                    .device(device)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(fail("AttachVolume", &label))
            })
            .await?;
            tracing::info!(
                volume = volume_id,
                instance = instance_id,
                device,
                "attaching volume"
            );
        }
        self.wait_volume(volume_id, |v| {
            v.attachments().iter().any(|a| {
                a.instance_id() == Some(instance_id)
                    && a.state() == Some(&VolumeAttachmentState::Attached)
            })
        })
        .await?;
        let mapping = InstanceBlockDeviceMappingSpecification::builder()
            .device_name(device)
            .ebs(
                EbsInstanceBlockDeviceSpecification::builder()
                    .volume_id(volume_id)
                    .delete_on_termination(true)
                    .build(),
            )
            .build();
        self.client
            .modify_instance_attribute()
            .instance_id(instance_id)
            .block_device_mappings(mapping)
            .send()
            .await
            .map_err(fail("ModifyInstanceAttribute", &label))?;
        Ok(())
    }

    /// Detaches `volume_id` (from `instance_id`, else from any instance) and waits until it
    /// is. Not attached (or gone) = success. For gc's sweep of a leaked volume; a rollback
    /// waits for the instance's termination instead (`wait_released`). The instance id is
    /// always sent: without it some endpoints (moto) fail with HTTP 500.
    async fn detach_and_wait(
        &self,
        volume_id: &str,
        instance_id: Option<&str>,
        label: &str,
    ) -> Result<(), AwsError> {
        let Some(v) = self.describe_volume(volume_id).await? else {
            return Ok(());
        };
        for a in v.attachments() {
            let Some(attached_to) = a.instance_id() else {
                continue;
            };
            if instance_id.is_some_and(|i| i != attached_to)
                || a.state() == Some(&VolumeAttachmentState::Detached)
            {
                continue;
            }
            let r = self
                .client
                .detach_volume()
                .volume_id(volume_id)
                .instance_id(attached_to)
                .send()
                .await
                .map(|_| ())
                .map_err(fail("DetachVolume", label));
            match r {
                Err(e) if e.code() == Some("IncorrectState") => {} // already detaching
                other => ignore_not_found(other)?,
            }
        }
        poll_until("DescribeVolumes", volume_id, Backoff::STATE, || async {
            Ok(match self.describe_volume(volume_id).await? {
                None => Some(()),
                Some(v) => v
                    .attachments()
                    .iter()
                    .all(|a| {
                        instance_id.is_some_and(|i| a.instance_id() != Some(i))
                            || a.state() == Some(&VolumeAttachmentState::Detached)
                    })
                    .then_some(()),
            })
        })
        .await
    }

    /// Deletes the step's volume (by `out`, else by run+step tags) once no instance holds it,
    /// and waits until it is gone. Gone = success.
    pub async fn delete_volume(
        &self,
        tags: &RunTags,
        step: &str,
        out: Option<&VolumeOut>,
    ) -> Result<(), AwsError> {
        let label = tags.label("volume", step);
        let mut filters = tags.step_filters(step);
        filters.push(filter("status", LIVE_VOLUME_STATES));
        let mut ids: Vec<String> = self
            .find_volumes(filters, &label)
            .await?
            .iter()
            .filter_map(|v| v.volume_id().map(str::to_string))
            .collect();
        if let Some(o) = out
            && !ids.contains(&o.volume_id)
        {
            ids.push(o.volume_id.clone());
        }
        for id in ids {
            self.wait_released(&id).await?;
            self.delete_volume_by_id(&id).await?;
        }
        Ok(())
    }

    /// Waits until no instance holds `volume_id` (or it is gone). A rollback never detaches a
    /// data volume from a live instance: on EC2 a detach hangs while the node still has the
    /// filesystem mounted, and it races the database's last writes. The instance's termination
    /// (by the disk step's undo, which ends its own run's instance first:
    /// `steps::release_and_delete_volume`) releases it, or deletes it outright:
    /// DeleteOnTermination is set at attach.
    ///
    /// Guarantees: a holder that does not start terminating within the consistency window is a
    /// `Transient` error naming it (the saga retries the step; a vm undo that failed for good
    /// fails the rollback there, where the reason is); one that is terminating is waited for.
    async fn wait_released(&self, volume_id: &str) -> Result<(), AwsError> {
        use aws_sdk_ec2::types::InstanceStateName as S;
        let holder = |v: &Volume| {
            v.attachments()
                .iter()
                .find(|a| a.state() != Some(&VolumeAttachmentState::Detached))
                .and_then(|a| a.instance_id().map(str::to_string))
        };
        let terminating = poll_until(
            "DescribeInstances",
            volume_id,
            Backoff::CONSISTENCY,
            || async {
                let Some(i) = self
                    .describe_volume(volume_id)
                    .await?
                    .as_ref()
                    .and_then(holder)
                else {
                    return Ok(Some(()));
                };
                Ok(match self.describe_instance(&i).await? {
                    None => Some(()),
                    Some(inst) => matches!(
                        inst.state().and_then(|s| s.name()),
                        Some(S::ShuttingDown | S::Terminated)
                    )
                    .then_some(()),
                })
            },
        )
        .await;
        if let Err(e) = terminating {
            let held_by = self
                .describe_volume(volume_id)
                .await?
                .as_ref()
                .and_then(holder);
            return Err(AwsError::Transient {
                op: "DeleteVolume".into(),
                resource: volume_id.into(),
                message: format!(
                    "still attached to {}, which is not terminating ({e}): it is released when \
                     that instance terminates (the vm step's undo); dbctl does not detach a data \
                     volume from a live instance",
                    held_by.as_deref().unwrap_or("an instance")
                ),
                code: None,
            });
        }
        poll_until("DescribeVolumes", volume_id, Backoff::STATE, || async {
            Ok(match self.describe_volume(volume_id).await? {
                None => Some(()),
                Some(v) => holder(&v).is_none().then_some(()),
            })
        })
        .await
    }

    pub(crate) async fn delete_volume_by_id(&self, volume_id: &str) -> Result<(), AwsError> {
        // EC2 refuses to delete an in-use volume (VolumeInUse); moto agrees, so order matters.
        self.detach_and_wait(volume_id, None, volume_id).await?;
        ignore_not_found(
            self.client
                .delete_volume()
                .volume_id(volume_id)
                .send()
                .await
                .map(|_| ())
                .map_err(fail("DeleteVolume", volume_id)),
        )?;
        poll_until("DescribeVolumes", volume_id, Backoff::STATE, || async {
            Ok(match self.describe_volume(volume_id).await? {
                None => Some(()),
                Some(v) if v.state() == Some(&VolumeState::Deleted) => Some(()),
                Some(_) => None,
            })
        })
        .await?;
        tracing::info!(volume = volume_id, "deleted volume");
        Ok(())
    }

    /// Polls `volume_id` until `ready(volume)`; NotFound right after create is waited out, an
    /// `error` state is `Permanent`.
    async fn wait_volume(
        &self,
        volume_id: &str,
        ready: impl Fn(&Volume) -> bool,
    ) -> Result<Volume, AwsError> {
        self.wait_volume_with(volume_id, Backoff::STATE, ready)
            .await
    }

    async fn wait_volume_with(
        &self,
        volume_id: &str,
        backoff: Backoff,
        ready: impl Fn(&Volume) -> bool,
    ) -> Result<Volume, AwsError> {
        poll_until("DescribeVolumes", volume_id, backoff, || async {
            match self.describe_volume(volume_id).await? {
                None => Ok(None),
                Some(v) if v.state() == Some(&VolumeState::Error) => Err(AwsError::invalid(
                    "CreateVolume",
                    volume_id,
                    "volume is in state error",
                )),
                Some(v) => Ok(ready(&v).then_some(v)),
            }
        })
        .await
    }

    pub(crate) async fn describe_volume(&self, id: &str) -> Result<Option<Volume>, AwsError> {
        let out = self
            .client
            .describe_volumes()
            .volume_ids(id)
            .send()
            .await
            .map_err(fail("DescribeVolumes", id));
        match out {
            Ok(o) => Ok(o.volumes().first().cloned()),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub(crate) async fn find_volumes(
        &self,
        filters: Vec<aws_sdk_ec2::types::Filter>,
        label: &str,
    ) -> Result<Vec<Volume>, AwsError> {
        let out = self
            .client
            .describe_volumes()
            .set_filters(Some(filters))
            .send()
            .await
            .map_err(fail("DescribeVolumes", label))?;
        Ok(out.volumes().to_vec())
    }
}
