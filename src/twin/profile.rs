//! An instance profile's credentials, as EC2 hands them to an instance: the twin reads the
//! profile named in RunInstances (`IamInstanceProfile.Name` or `.Arn`) from moto's IAM and
//! assumes its role through moto's STS, so the instance gets temporary credentials that moto
//! knows (and, with authorization on, judges by the role's policies), served by `imds`.

use super::imds::Profile;
use super::proxy::Upstream;
use super::xml::first_text;

/// How long the credentials last: the instance has no refresh yet, so a whole working day.
const DURATION_SECS: &str = "43200";

/// `profile` (a name, or an `arn:…:instance-profile/[path/]name`) → its role's credentials,
/// for a session named after the instance.
pub async fn credentials(
    moto: &Upstream,
    profile: &str,
    instance_id: &str,
) -> Result<Profile, String> {
    let name = profile.rsplit('/').next().unwrap_or(profile);
    let xml = moto
        .call_service(
            "iam",
            "2010-05-08",
            &[
                ("Action", "GetInstanceProfile"),
                ("InstanceProfileName", name),
            ],
        )
        .await
        .map_err(|e| format!("instance profile {name}: {e}"))?;
    // The role is inside <Roles>; the profile's own Arn follows it, outside.
    let roles = xml
        .find("<Roles>")
        .map(|at| &xml[at..])
        .ok_or_else(|| format!("instance profile {name}: no role in {xml}"))?;
    let role = first_text(roles, "RoleName")
        .ok_or_else(|| format!("instance profile {name} has no role"))?;
    let role_arn =
        first_text(roles, "Arn").ok_or_else(|| format!("role {role}: no Arn in {xml}"))?;
    let after_roles = &roles[roles.find("</Roles>").unwrap_or(0)..];
    let arn = first_text(after_roles, "Arn").unwrap_or_else(|| profile.to_string());
    let id = first_text(&xml, "InstanceProfileId").unwrap_or_default();
    let sts = moto
        .call_service(
            "sts",
            "2011-06-15",
            &[
                ("Action", "AssumeRole"),
                ("RoleArn", &role_arn),
                ("RoleSessionName", instance_id),
                ("DurationSeconds", DURATION_SECS),
            ],
        )
        .await
        .map_err(|e| format!("assuming {role_arn}: {e}"))?;
    let field = |tag: &str| {
        first_text(&sts, tag).ok_or_else(|| format!("assuming {role_arn}: no {tag} in {sts}"))
    };
    Ok(Profile {
        arn,
        id,
        role,
        access_key_id: field("AccessKeyId")?,
        secret_access_key: field("SecretAccessKey")?,
        token: field("SessionToken")?,
        expiration: field("Expiration")?,
        last_updated: now_rfc3339(),
    })
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}
