//! The twin AMI: registered in moto at start, so `--image ami-…` names dbctl's own image. moto
//! ignores the request's device mappings (every registered image gets a 15 GiB `/dev/sda1`
//! root); dbctl maps its encrypted root volume onto whatever the image declares.

use super::proxy::Upstream;
use super::xml;

/// The AMI named `name` in moto, registered unless it exists (a twin restarted over the same
/// moto finds its image again).
pub async fn ensure(upstream: &Upstream, name: &str, description: &str) -> Result<String, String> {
    let found = upstream
        .call(&[
            ("Action", "DescribeImages"),
            ("Owner.1", "self"),
            ("Filter.1.Name", "name"),
            ("Filter.1.Value.1", name),
        ])
        .await?;
    if let Some(id) = xml::first_text(&found, "imageId") {
        return Ok(id);
    }
    let registered = upstream
        .call(&[
            ("Action", "RegisterImage"),
            ("Name", name),
            ("Description", description),
            ("Architecture", "x86_64"),
            ("VirtualizationType", "hvm"),
            ("RootDeviceName", "/dev/xvda"),
            ("BlockDeviceMapping.1.DeviceName", "/dev/xvda"),
            ("BlockDeviceMapping.1.Ebs.VolumeSize", "4"),
        ])
        .await?;
    xml::first_text(&registered, "imageId")
        .ok_or_else(|| format!("RegisterImage answered without an image id: {registered}"))
}
