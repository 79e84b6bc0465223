//! The twin AMI: registered in moto at start, so `--image ami-…` names dbctl's own image. moto
//! ignores the request's device mappings (every registered image gets a 15 GiB `/dev/sda1`
//! root); dbctl maps its encrypted root volume onto whatever the image declares.

use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::body::Bytes;

use super::proxy::Upstream;
use super::xml;

/// moto routes a request by the service named in its credential scope; it checks no signature
/// (unless run with authorization on, which the twin does not do yet).
const AUTHORIZATION: &str = "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature=0";

/// One EC2 query call straight to moto; the response body on HTTP 200.
pub async fn call(upstream: &Upstream, params: &[(&str, &str)]) -> Result<String, String> {
    let body = form_urlencoded::Serializer::new(String::new())
        .append_pair("Version", "2016-11-15")
        .extend_pairs(params)
        .finish();
    let req = Request::post(upstream.url("/"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("authorization", AUTHORIZATION)
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let resp = upstream
        .client
        .request(req)
        .await
        .map_err(|e| format!("moto: {e}"))?;
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("moto: {e}"))?
        .to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    if !status.is_success() {
        return Err(format!("moto: HTTP {status}: {text}"));
    }
    Ok(text)
}

/// The AMI named `name` in moto, registered unless it exists (a twin restarted over the same
/// moto finds its image again).
pub async fn ensure(upstream: &Upstream, name: &str) -> Result<String, String> {
    let found = call(
        upstream,
        &[
            ("Action", "DescribeImages"),
            ("Owner.1", "self"),
            ("Filter.1.Name", "name"),
            ("Filter.1.Value.1", name),
        ],
    )
    .await?;
    if let Some(id) = xml::first_text(&found, "imageId") {
        return Ok(id);
    }
    let registered = call(
        upstream,
        &[
            ("Action", "RegisterImage"),
            ("Name", name),
            ("Description", "dbctl's own image, booted by the EC2 twin"),
            ("Architecture", "x86_64"),
            ("VirtualizationType", "hvm"),
            ("RootDeviceName", "/dev/xvda"),
            ("BlockDeviceMapping.1.DeviceName", "/dev/xvda"),
            ("BlockDeviceMapping.1.Ebs.VolumeSize", "4"),
        ],
    )
    .await?;
    xml::first_text(&registered, "imageId")
        .ok_or_else(|| format!("RegisterImage answered without an image id: {registered}"))
}
