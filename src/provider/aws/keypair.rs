//! The SSH key pair instances are launched with. dbctl generates the key locally and imports only
//! the public half, so the private key never passes through AWS.

use aws_sdk_ec2::primitives::Blob;
use aws_sdk_ec2::types::{KeyPairInfo, ResourceType};

use super::Ec2;
use super::error::{AwsError, fail};
use super::tags::{RunTags, TAG_RUN, filter, tag_value};
use super::wait::ignore_not_found;

/// What `ensure_key_pair` imported; stored in the journal.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyPairOut {
    pub key_name: String,
    pub key_pair_id: String,
    pub fingerprint: Option<String>,
}

fn key_out(k: &KeyPairInfo) -> KeyPairOut {
    KeyPairOut {
        key_name: k.key_name().unwrap_or_default().to_string(),
        key_pair_id: k.key_pair_id().unwrap_or_default().to_string(),
        fingerprint: k.key_fingerprint().map(str::to_string),
    }
}

impl Ec2 {
    /// Imports `public_key_openssh` as `dbctl-<instance>-<step>-<run>`, tagged on import.
    ///
    /// Guarantees: idempotent by run+step tags; if the name exists (an import whose response was
    /// lost) it is adopted only when tagged with this run, otherwise `Permanent`. An adopted key
    /// is not compared with `public_key_openssh` (EC2 fingerprints differ by key type); a new key
    /// means a new run or step.
    pub async fn ensure_key_pair(
        &self,
        tags: &RunTags,
        step: &str,
        public_key_openssh: &str,
    ) -> Result<KeyPairOut, AwsError> {
        let label = tags.label("key pair", step);
        if let Some(k) = self
            .find_keys(tags.step_filters(step), &label)
            .await?
            .first()
        {
            return Ok(key_out(k));
        }
        let key_name = format!("{}-{}", tags.name_for(step), tags.run_id);
        let imported = self
            .client
            .import_key_pair()
            .key_name(&key_name)
            .public_key_material(Blob::new(public_key_openssh.trim().as_bytes()))
            .tag_specifications(tags.spec(ResourceType::KeyPair, step))
            .send()
            .await;
        match imported {
            Ok(out) => {
                tracing::info!(key = key_name, step, "imported key pair");
                Ok(KeyPairOut {
                    key_name: out.key_name().unwrap_or(&key_name).to_string(),
                    key_pair_id: out.key_pair_id().unwrap_or_default().to_string(),
                    fingerprint: out.key_fingerprint().map(str::to_string),
                })
            }
            Err(e) => {
                let e = fail("ImportKeyPair", &label)(e);
                if e.code() != Some("InvalidKeyPair.Duplicate") {
                    return Err(e);
                }
                let same_name = self
                    .find_keys(vec![filter("key-name", &[&key_name])], &label)
                    .await?;
                same_name
                    .iter()
                    .find(|k| tag_value(k.tags(), TAG_RUN) == Some(tags.run_id.as_str()))
                    .map(key_out)
                    .ok_or(e)
            }
        }
    }

    /// Deletes the run's key pair (by `out`, else by run+step tags). Gone = success.
    pub async fn delete_key_pair(
        &self,
        tags: &RunTags,
        step: &str,
        out: Option<&KeyPairOut>,
    ) -> Result<(), AwsError> {
        let label = tags.label("key pair", step);
        let mut names: Vec<String> = self
            .find_keys(tags.step_filters(step), &label)
            .await?
            .iter()
            .filter_map(|k| k.key_name().map(str::to_string))
            .collect();
        if let Some(o) = out
            && !names.contains(&o.key_name)
        {
            names.push(o.key_name.clone());
        }
        for name in names {
            self.delete_key_by_name(&name).await?;
        }
        Ok(())
    }

    pub(crate) async fn delete_key_by_name(&self, key_name: &str) -> Result<(), AwsError> {
        // DeleteKeyPair succeeds for unknown names on EC2; NotFound is tolerated for moto.
        ignore_not_found(
            self.client
                .delete_key_pair()
                .key_name(key_name)
                .send()
                .await
                .map(|_| ())
                .map_err(fail("DeleteKeyPair", key_name)),
        )?;
        tracing::info!(key = key_name, "deleted key pair");
        Ok(())
    }

    pub(crate) async fn find_keys(
        &self,
        filters: Vec<aws_sdk_ec2::types::Filter>,
        label: &str,
    ) -> Result<Vec<KeyPairInfo>, AwsError> {
        let out = self
            .client
            .describe_key_pairs()
            .set_filters(Some(filters))
            .send()
            .await;
        match out {
            Ok(o) => Ok(o.key_pairs().to_vec()),
            // A key-name filter on a missing key is NotFound on EC2, not an empty list.
            Err(e) => {
                let e = fail("DescribeKeyPairs", label)(e);
                if e.is_not_found() {
                    Ok(Vec::new())
                } else {
                    Err(e)
                }
            }
        }
    }
}
