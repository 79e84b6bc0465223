//! `aws.instance_profile`: the IAM instance profile the nodes are launched with. Its role's
//! temporary credentials reach a node through the instance metadata service (IMDSv2, which
//! dbctl requires at launch with a hop limit of 1, so containers on the node cannot read them),
//! so what a node does in AWS, S3 backups above all, needs no operator key on it. dbctl
//! creates no IAM role or profile: the account's platform team owns those, and dbctl's own
//! policy holds only `iam:PassRole` for `dbctl-*` roles (examples/aws-iam-policy.json).

use aws_sdk_ec2::types::IamInstanceProfileSpecification;

use crate::config::AwsSection;
use crate::spec::ValidationError;

/// RunInstances' profile: by ARN when given one, else by name.
pub fn specification(profile: &str) -> IamInstanceProfileSpecification {
    let b = IamInstanceProfileSpecification::builder();
    if profile.starts_with("arn:") {
        b.arn(profile).build()
    } else {
        b.name(profile).build()
    }
}

/// A name IAM would accept (1-128 of letters, digits and `+=,.@_-`) or an instance-profile
/// ARN: refused here (exit 2, before anything is made), not by RunInstances half-way through.
/// Backups to S3 need one: the nodes' own credentials are the only ones dbctl lets reach them.
pub(crate) fn check(config: &AwsSection, s3_backups: bool) -> Result<(), ValidationError> {
    let Some(p) = &config.instance_profile else {
        if s3_backups {
            return Err(ValidationError::new(
                "aws.instance_profile",
                "backups to S3 (backup.repo = \"s3\") on aws use the nodes' instance profile: \
                 set aws.instance_profile to one whose role may write the bucket (dbctl puts no \
                 operator key on a node)",
            ));
        }
        return Ok(());
    };
    let name_ok = |n: &str| {
        (1..=128).contains(&n.len())
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c))
    };
    let ok = match p.strip_prefix("arn:") {
        // arn:PARTITION:iam::ACCOUNT:instance-profile/[PATH/]NAME
        Some(rest) => {
            let parts: Vec<&str> = rest.splitn(5, ':').collect();
            parts.len() == 5
                && parts[1] == "iam"
                && parts[4]
                    .strip_prefix("instance-profile/")
                    .and_then(|path| path.rsplit('/').next())
                    .is_some_and(name_ok)
        }
        None => name_ok(p),
    };
    if ok {
        Ok(())
    } else {
        Err(ValidationError::new(
            "aws.instance_profile",
            format!(
                "{p:?} is neither an instance profile name nor its ARN \
                 (arn:aws:iam::ACCOUNT:instance-profile/NAME)"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(p: &str) -> Result<(), ValidationError> {
        check(
            &AwsSection {
                instance_profile: Some(p.into()),
                ..AwsSection::default()
            },
            true,
        )
    }

    #[test]
    fn names_and_arns_pass_and_anything_else_names_the_field() {
        assert!(check(&AwsSection::default(), false).is_ok());
        // S3 backups without a profile would need an operator key on the node: refused.
        assert_eq!(
            check(&AwsSection::default(), true).unwrap_err().field,
            "aws.instance_profile"
        );
        assert!(with("dbctl-backup").is_ok());
        assert!(with("arn:aws:iam::123456789012:instance-profile/teams/dbctl-backup").is_ok());
        for bad in [
            "",
            "has space",
            "arn:aws:iam::123456789012:role/dbctl-backup",
            "arn:aws:s3:::bucket",
        ] {
            assert_eq!(
                with(bad).unwrap_err().field,
                "aws.instance_profile",
                "{bad:?}"
            );
        }
        let by_arn = specification("arn:aws:iam::1:instance-profile/x");
        assert_eq!(by_arn.arn(), Some("arn:aws:iam::1:instance-profile/x"));
        assert_eq!(specification("x").name(), Some("x"));
    }
}
