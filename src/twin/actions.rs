//! What the twin does beside moto, action by action: moto answers every request first (it
//! keeps the state, ids, tags and errors), and only a successful answer is acted on.

use hyper::StatusCode;

use super::fleet::{Fleet, Lifecycle};
use super::query::Query;
use super::xml;

/// Calls after which the security groups are enforced anew (RunInstances does it itself,
/// before its VMs boot).
fn changes_who_reaches_whom(action: &str) -> bool {
    matches!(
        action,
        "AuthorizeSecurityGroupIngress"
            | "RevokeSecurityGroupIngress"
            | "ModifySecurityGroupRules"
            | "UpdateSecurityGroupRuleDescriptionsIngress"
            | "DeleteSecurityGroup"
            | "ModifyInstanceAttribute"
            | "ModifyNetworkInterfaceAttribute"
            | "StartInstances"
            | "TerminateInstances"
    )
}

/// moto's successful response body to `query`, after the twin acted on it: VMs booted, stopped
/// or killed, the console read, moto's public addresses replaced by loopback ones.
pub async fn after(fleet: &Fleet, query: &Query, status: StatusCode, body: String) -> String {
    let action = query.action().unwrap_or_default();
    let mut body = body;
    if status.is_success() {
        match action {
            "RunInstances" => {
                let user_data = query
                    .get("UserData")
                    .and_then(|b| aws_smithy_types::base64::decode(b).ok())
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                // The instance profile, as the request names it (moto's response may not).
                let profile = query
                    .get("IamInstanceProfile.Name")
                    .or_else(|| query.get("IamInstanceProfile.Arn"));
                fleet
                    .launched(&user_data, profile, &xml::instances(&body))
                    .await;
            }
            "DescribeInstances" => fleet.learn(&xml::instances(&body)).await,
            "GetConsoleOutput" => {
                // moto's own output is a fixed text: an instance with a VM shows its serial console.
                let id = query.get("InstanceId").unwrap_or_default();
                if let Some(console) = fleet.console(id).await
                    && let Some(b) = xml::replace_text(&body, "output", &console)
                {
                    body = b;
                }
            }
            "CreateVolume" => {
                if let (Some(id), Some(size)) = (
                    xml::first_text(&body, "volumeId"),
                    xml::first_text(&body, "size").and_then(|s| s.parse().ok()),
                ) {
                    fleet.volume_created(&id, size);
                }
            }
            "AttachVolume" => {
                if let (Some(v), Some(i)) = (query.get("VolumeId"), query.get("InstanceId")) {
                    fleet.volume_attached(v, i).await;
                }
            }
            "DetachVolume" => {
                if let Some(v) = query.get("VolumeId") {
                    fleet.volume_detached(v).await;
                }
            }
            "DeleteVolume" => {
                if let Some(v) = query.get("VolumeId") {
                    fleet.volume_deleted(v);
                }
            }
            other => {
                if let Some(what) = Lifecycle::of_action(other) {
                    fleet.lifecycle(what, &query.list("InstanceId")).await;
                }
                if changes_who_reaches_whom(other) {
                    fleet.enforce().await;
                }
            }
        }
    }
    fleet.rewrite(&body).await
}
