//! The aws provider's test environment against moto, and what EC2 holds of a run.

use std::collections::BTreeMap;

use dbctl::provider::aws::{AwsSettings, Ec2, ResourceKind};

use super::Env;

/// A testbed-free environment whose provider is aws, with a short SSH wait (moto instances
/// never answer).
pub fn env() -> Env {
    Env::aws("[aws]\nssh_wait_secs = 2\nssh_cidr = \"203.0.113.0/24\"\n")
}

/// How many resources tagged with the run EC2 holds, by kind. The instance's root volume
/// carries the run's tags too; the data volume is the one tagged with the disk step.
pub async fn tagged_by_kind(run: &str) -> BTreeMap<String, usize> {
    let ec2 = Ec2::connect(&AwsSettings::default()).await.unwrap();
    let mut m = BTreeMap::new();
    for r in ec2.tagged_resources(run).await.unwrap() {
        let key = match r.kind {
            ResourceKind::Volume => format!("Volume:{}", r.step.unwrap_or_default()),
            k => format!("{k:?}"),
        };
        *m.entry(key).or_default() += 1;
    }
    m
}

/// Points every AWS SDK client this test process builds at `endpoint` with static test
/// credentials, and never at the instance metadata service or the user's AWS files.
///
/// # Safety
/// Call before any thread of the test binary builds an SDK client or reads the environment.
pub unsafe fn point_sdk_at(endpoint: &str) {
    // SAFETY: the caller guarantees no concurrent reader.
    unsafe {
        std::env::set_var("AWS_ENDPOINT_URL", endpoint);
        std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
        std::env::set_var("AWS_REGION", "us-east-1");
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
        std::env::set_var("AWS_CONFIG_FILE", "/dev/null");
        std::env::set_var("AWS_SHARED_CREDENTIALS_FILE", "/dev/null");
        std::env::remove_var("AWS_PROFILE");
    }
}

/// One query-protocol call of `service` (iam, sts) to moto (or the twin in front of it) as
/// access key `key`: moto without authorization takes the caller from the credential scope
/// and checks no signature. The whole response, whatever its status.
pub fn post_query(endpoint: &str, service: &str, key: &str, params: &[(&str, &str)]) -> String {
    use std::io::{Read, Write};
    let version = if service == "sts" {
        "2011-06-15"
    } else {
        "2010-05-08"
    };
    let mut form = format!("Version={version}");
    for (k, v) in params {
        form += &format!("&{k}={}", urlencode(v));
    }
    let addr = endpoint.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).expect("connect moto");
    write!(
        s,
        "POST / HTTP/1.1\r\nHost: {addr}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential={key}/20260101/us-east-1/{service}/aws4_request, \
         SignedHeaders=host, Signature=0\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{form}",
        form.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    resp
}

/// [`post_query`] that must succeed: the response, after its HTTP 200.
pub fn query(endpoint: &str, service: &str, key: &str, params: &[(&str, &str)]) -> String {
    let resp = post_query(endpoint, service, key, params);
    assert!(
        resp.starts_with("HTTP/1.1 200") || resp.starts_with("HTTP/1.0 200"),
        "{service} {params:?}: {resp}"
    );
    resp
}

/// Form encoding of a query parameter's value (RFC 3986 unreserved characters kept).
pub fn urlencode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Role `name` with an instance profile of the same name, in moto's IAM (what the account's
/// platform team would have made for `aws.instance_profile`).
pub fn instance_profile(endpoint: &str, name: &str) {
    const TRUST: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
    let iam = |p: &[(&str, &str)]| query(endpoint, "iam", "testing", p);
    iam(&[
        ("Action", "CreateRole"),
        ("RoleName", name),
        ("AssumeRolePolicyDocument", TRUST),
    ]);
    iam(&[
        ("Action", "CreateInstanceProfile"),
        ("InstanceProfileName", name),
    ]);
    iam(&[
        ("Action", "AddRoleToInstanceProfile"),
        ("InstanceProfileName", name),
        ("RoleName", name),
    ]);
}

/// The network team's private hosted zone `name` on a VPC of the team's (dbctl never creates
/// zones): the zone, as dbctl finds it, and that VPC's id.
pub async fn team_zone(
    ec2: &Ec2,
    dns: &dbctl::provider::aws::Dns,
    name: &str,
) -> (dbctl::provider::aws::route53::ZoneId, String) {
    let vpc = ec2
        .sdk()
        .create_vpc()
        .cidr_block("10.200.0.0/16")
        .send()
        .await
        .unwrap();
    let vpc = vpc.vpc().unwrap().vpc_id().unwrap().to_string();
    dns.sdk()
        .create_hosted_zone()
        .name(name)
        .caller_reference("network-team")
        .hosted_zone_config(
            aws_sdk_route53::types::HostedZoneConfig::builder()
                .private_zone(true)
                .build(),
        )
        .vpc(
            aws_sdk_route53::types::Vpc::builder()
                .vpc_id(&vpc)
                .vpc_region(aws_sdk_route53::types::VpcRegion::UsEast1)
                .build(),
        )
        .send()
        .await
        .unwrap();
    (dns.find_private_zone(name).await.unwrap(), vpc)
}

/// The EC2 instance id of `node`, from a run's `dbctl status` document.
pub fn instance_id(status: &serde_json::Value, node: &str) -> String {
    let step = format!("provision.vm.{node}");
    status["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["name"] == step.as_str()))
        .and_then(|s| s["outputs"]["instance_id"].as_str())
        .unwrap_or_else(|| panic!("no instance of {node} in {status}"))
        .to_string()
}
