//! Choosing the machine image: an explicit AMI id, or the newest official Debian 12 image for the
//! instance type's CPU architecture.

use aws_sdk_ec2::types::{ArchitectureType, Image, InstanceType};

use super::Ec2;
use super::error::{AwsError, fail};
use super::tags::filter;

/// The AWS account Debian publishes its official cloud images from.
pub const DEBIAN_OWNER: &str = "136693071363";

/// True for `ami-` followed by 8 or 17 lowercase hex digits (the two formats EC2 issues).
pub fn is_valid_ami_id(id: &str) -> bool {
    id.strip_prefix("ami-").is_some_and(|hex| {
        (hex.len() == 8 || hex.len() == 17)
            && hex
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    })
}

/// The most recently created image; on equal dates the greatest name (Debian's names end in the
/// build date and serial, so that is the newest build too).
fn newest_image(images: &[Image]) -> Option<&Image> {
    // ISO 8601 timestamps in one format sort correctly as strings.
    images
        .iter()
        .filter(|i| i.image_id().is_some())
        .max_by_key(|i| (i.creation_date(), i.name()))
}

impl Ec2 {
    /// The AMI to launch `instance_type` with: `explicit` (or `settings.ami`) when given, else the
    /// newest available `debian-12-<arch>-*` image owned by Debian.
    ///
    /// Guarantees: a malformed explicit id is `Permanent` before any call (EC2 would reject it
    /// too, but some endpoints do not); `Permanent` when no Debian image exists in the region.
    pub async fn resolve_ami(
        &self,
        explicit: Option<&str>,
        instance_type: &str,
    ) -> Result<String, AwsError> {
        if let Some(id) = explicit.or(self.settings.ami.as_deref()) {
            if !is_valid_ami_id(id) {
                return Err(AwsError::Permanent {
                    op: "RunInstances".into(),
                    resource: format!("AMI {id:?}"),
                    message: "not an AMI id (expected ami- and 8 or 17 hex digits)".into(),
                    code: Some("InvalidAMIID.Malformed".into()),
                });
            }
            return Ok(id.to_string());
        }
        let arch = self.architecture_of(instance_type).await?;
        let debian_arch = if arch == "arm64" { "arm64" } else { "amd64" };
        let pattern = format!("debian-12-{debian_arch}-*");
        let resource = format!("Debian 12 image {pattern} in {}", self.region);
        let out = self
            .client
            .describe_images()
            .owners(DEBIAN_OWNER)
            .filters(filter("name", &[&pattern]))
            .filters(filter("architecture", &[&arch]))
            .filters(filter("state", &["available"]))
            .send()
            .await
            .map_err(fail("DescribeImages", &resource))?;
        match newest_image(out.images()) {
            Some(img) => Ok(img.image_id().unwrap_or_default().to_string()),
            None => Err(AwsError::invalid(
                "DescribeImages",
                resource,
                "no official Debian 12 image found; set aws.ami explicitly",
            )),
        }
    }

    /// `x86_64` or `arm64`, from `DescribeInstanceTypes`; `Permanent` for an unknown type.
    async fn architecture_of(&self, instance_type: &str) -> Result<String, AwsError> {
        let resource = format!("instance type {instance_type}");
        let out = self
            .client
            .describe_instance_types()
            .instance_types(InstanceType::from(instance_type))
            .send()
            .await
            .map_err(fail("DescribeInstanceTypes", &resource))?;
        let Some(info) = out.instance_types().first() else {
            return Err(AwsError::invalid(
                "DescribeInstanceTypes",
                resource,
                "unknown instance type",
            ));
        };
        let archs = info
            .processor_info()
            .map(|p| p.supported_architectures())
            .unwrap_or_default();
        Ok(if archs.contains(&ArchitectureType::Arm64) && !archs.contains(&ArchitectureType::X8664)
        {
            "arm64"
        } else {
            "x86_64"
        }
        .to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ami_id_format() {
        assert!(is_valid_ami_id("ami-12345678"));
        assert!(is_valid_ami_id("ami-0123456789abcdef0"));
        assert!(!is_valid_ami_id("ami-xyz"));
        assert!(!is_valid_ami_id("debian-12"));
        assert!(!is_valid_ami_id("ami-0123456789ABCDEF0"));
    }

    #[test]
    fn picks_newest_by_date_then_name() {
        let img = |id: &str, name: &str, date: &str| {
            Image::builder()
                .image_id(id)
                .name(name)
                .creation_date(date)
                .build()
        };
        let images = [
            img(
                "ami-1",
                "debian-12-amd64-20240101-1612",
                "2024-01-01T10:00:00.000Z",
            ),
            img(
                "ami-3",
                "debian-12-amd64-20241001-1888",
                "2024-10-01T10:00:00.000Z",
            ),
            img(
                "ami-2",
                "debian-12-amd64-20240601-1700",
                "2024-06-01T10:00:00.000Z",
            ),
        ];
        assert_eq!(newest_image(&images).unwrap().image_id(), Some("ami-3"));
        let same_day = [
            img(
                "ami-b",
                "debian-12-amd64-20241001-1889",
                "2024-10-01T10:00:00.000Z",
            ),
            img(
                "ami-a",
                "debian-12-amd64-20241001-1888",
                "2024-10-01T10:00:00.000Z",
            ),
        ];
        assert_eq!(newest_image(&same_day).unwrap().image_id(), Some("ami-b"));
        assert!(newest_image(&[]).is_none());
    }
}
