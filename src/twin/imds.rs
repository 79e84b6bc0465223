//! The instance metadata service as a Nitro instance sees it at 169.254.169.254, IMDSv2 only
//! (`HttpTokens=required`, what new accounts default to): `PUT /latest/api/token` with a TTL
//! header gives a session token, and every `GET` without a valid one is refused with 401, so
//! software that still speaks IMDSv1 fails here as it would on a hardened instance.
//!
//! QEMU runs `ec2-twin imds` (a `guestfwd` rule on the VM's metadata link, see `machine`) for
//! each connection the guest opens to 169.254.169.254:80; this module serves that one
//! connection over stdin/stdout (HTTP/1.1, keep-alive) and exits when the guest closes it.
//! What it serves comes from the instance's facts file, written by the twin at launch (0600:
//! it holds the instance profile's credentials): instance id, type, AMI, zone and region,
//! addresses, and under `iam/` the profile's role and its temporary credentials.
//!
//! Tokens are stateless: `<expiry>.<hmac>` over the instance id and expiry with the twin's key
//! (`<state>/imds.key`, 0600), so the per-connection processes share no state and a token of
//! one instance is worthless on another.

use std::io::{BufRead, Read, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The address the guest reaches the service on, and the link it lives on (`machine`).
pub const ADDR: &str = "169.254.169.254";
/// The metadata link: its own user-mode network, so the service's address is on it (libslirp
/// accepts a guestfwd only inside its network) and nothing else changes for the guest.
pub const NET: &str = "169.254.169.0/24";
/// The guest's own address on that link.
pub const GUEST: &str = "169.254.169.15";

/// Longest token lifetime IMDS grants (6 hours).
const MAX_TTL: u64 = 21_600;
const TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";

/// What the service knows of its instance.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Facts {
    pub instance_id: String,
    pub instance_type: String,
    pub ami_id: String,
    pub region: String,
    pub zone: String,
    pub private_ip: String,
    pub public_ip: Option<String>,
    pub profile: Option<Profile>,
}

/// The instance profile it was launched with, and its role's temporary credentials (STS).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Profile {
    pub arn: String,
    pub id: String,
    pub role: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub token: String,
    /// RFC 3339, as IMDS and STS write it.
    pub expiration: String,
    pub last_updated: String,
}

/// A response: status, content type, body.
#[derive(Debug, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub ttl: Option<u64>,
}

impl Reply {
    fn text(status: u16, body: impl Into<String>) -> Reply {
        Reply {
            status,
            body: body.into(),
            ttl: None,
        }
    }
}

/// One request, as much of it as IMDS looks at.
#[derive(Debug, Default)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Lowercase names.
    pub headers: Vec<(String, String)>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Signs and checks session tokens of one instance.
pub struct Tokens<'a> {
    pub key: &'a [u8],
    pub instance_id: &'a str,
}

impl Tokens<'_> {
    fn mac(&self, expiry: u64) -> String {
        hex::encode(hmac_sha256(
            self.key,
            format!("{}\n{expiry}", self.instance_id).as_bytes(),
        ))
    }

    pub fn issue(&self, now: u64, ttl: u64) -> String {
        let expiry = now + ttl;
        format!("{expiry}.{}", self.mac(expiry))
    }

    pub fn valid(&self, token: &str, now: u64) -> bool {
        let Some((expiry, mac)) = token.trim().split_once('.') else {
            return false;
        };
        let Ok(expiry) = expiry.parse::<u64>() else {
            return false;
        };
        let want = self.mac(expiry);
        // Constant time: the comparison does not stop at the first differing byte.
        let same = want.len() == mac.len()
            && want
                .bytes()
                .zip(mac.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        same && now < expiry
    }
}

/// HMAC-SHA256 (RFC 2104) over sha2, which dbctl already builds; the `hmac` crate in the
/// lock file is of another digest generation than that sha2.
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > block.len() {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// Answers one request.
pub fn answer(facts: &Facts, tokens: &Tokens<'_>, req: &Request, now: u64) -> Reply {
    // IMDS refuses anything that came through a proxy (its SSRF guard).
    if req.header("x-forwarded-for").is_some() {
        return Reply::text(403, "Forbidden");
    }
    let path = req.path.split('?').next().unwrap_or("");
    if path == "/latest/api/token" {
        if req.method != "PUT" {
            return Reply::text(405, "Method Not Allowed");
        }
        return match req
            .header(TTL_HEADER)
            .and_then(|t| t.trim().parse::<u64>().ok())
        {
            Some(ttl @ 1..=MAX_TTL) => Reply {
                status: 200,
                body: tokens.issue(now, ttl),
                ttl: Some(ttl),
            },
            _ => Reply::text(400, "Bad Request"),
        };
    }
    if req.method != "GET" && req.method != "HEAD" {
        return Reply::text(405, "Method Not Allowed");
    }
    // IMDSv2 only: no token, or one that is not this instance's or has expired, is refused.
    if !req
        .header(TOKEN_HEADER)
        .is_some_and(|t| tokens.valid(t, now))
    {
        return Reply::text(401, "Unauthorized");
    }
    match lookup(facts, path) {
        Some(body) => Reply::text(200, body),
        None => Reply::text(404, "Not Found"),
    }
}

/// The document at `path`, as IMDS lays its tree out (directories end in `/`).
fn lookup(f: &Facts, path: &str) -> Option<String> {
    if let Some(doc) = path.strip_prefix("/latest/dynamic/instance-identity/document") {
        return doc.is_empty().then(|| identity_document(f));
    }
    let md = path.strip_prefix("/latest/meta-data")?;
    let lines = |items: &[&str]| items.join("\n");
    let mut top = vec![
        "ami-id",
        "hostname",
        "instance-id",
        "instance-type",
        "local-hostname",
        "local-ipv4",
        "placement/",
    ];
    if f.public_ip.is_some() {
        top.push("public-ipv4");
    }
    if f.profile.is_some() {
        top.insert(1, "iam/");
    }
    let hostname = format!("ip-{}.ec2.internal", f.private_ip.replace('.', "-"));
    Some(match md {
        "" | "/" => lines(&top),
        "/ami-id" => f.ami_id.clone(),
        "/instance-id" => f.instance_id.clone(),
        "/instance-type" => f.instance_type.clone(),
        "/hostname" | "/local-hostname" => hostname,
        "/local-ipv4" => f.private_ip.clone(),
        "/public-ipv4" => f.public_ip.clone()?,
        "/placement" | "/placement/" => lines(&["availability-zone", "region"]),
        "/placement/availability-zone" => f.zone.clone(),
        "/placement/region" => f.region.clone(),
        iam => {
            let p = f.profile.as_ref()?;
            match iam.strip_prefix("/iam")? {
                "" | "/" => lines(&["info", "security-credentials/"]),
                "/info" => serde_json::json!({
                    "Code": "Success",
                    "LastUpdated": p.last_updated,
                    "InstanceProfileArn": p.arn,
                    "InstanceProfileId": p.id,
                })
                .to_string(),
                "/security-credentials" | "/security-credentials/" => p.role.clone(),
                role if role.strip_prefix("/security-credentials/") == Some(p.role.as_str()) => {
                    serde_json::json!({
                        "Code": "Success",
                        "LastUpdated": p.last_updated,
                        "Type": "AWS-HMAC",
                        "AccessKeyId": p.access_key_id,
                        "SecretAccessKey": p.secret_access_key,
                        "Token": p.token,
                        "Expiration": p.expiration,
                    })
                    .to_string()
                }
                _ => return None,
            }
        }
    })
}

fn identity_document(f: &Facts) -> String {
    serde_json::json!({
        "accountId": "123456789012",
        "architecture": "x86_64",
        "availabilityZone": f.zone,
        "imageId": f.ami_id,
        "instanceId": f.instance_id,
        "instanceType": f.instance_type,
        "privateIp": f.private_ip,
        "region": f.region,
        "version": "2017-09-30",
    })
    .to_string()
}

/// Reads one request (request line, headers, and any body, which is skipped); `None` at EOF.
pub fn read_request(input: &mut impl BufRead) -> std::io::Result<Option<Request>> {
    let mut line = String::new();
    // Blank lines between requests are allowed (RFC 9112 2.2).
    loop {
        line.clear();
        if input.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        if !line.trim().is_empty() {
            break;
        }
    }
    let mut parts = line.split_whitespace();
    let mut req = Request {
        method: parts.next().unwrap_or_default().to_string(),
        path: parts.next().unwrap_or_default().to_string(),
        headers: Vec::new(),
    };
    loop {
        line.clear();
        if input.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((n, v)) = line.split_once(':') {
            req.headers
                .push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let body: u64 = req
        .header("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    std::io::copy(&mut input.take(body), &mut std::io::sink())?;
    Ok(Some(req))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        _ => "Method Not Allowed",
    }
}

/// Serves one guest connection: requests until the guest closes it (or asks to).
pub fn serve(facts_path: &Path, key_path: &Path) -> std::io::Result<()> {
    let key = std::fs::read(key_path)?;
    let mut input = std::io::stdin().lock();
    let mut out = std::io::stdout().lock();
    while let Some(req) = read_request(&mut input)? {
        // Read for every request: the twin may have renewed the credentials since.
        let facts: Facts =
            serde_json::from_slice(&std::fs::read(facts_path)?).map_err(std::io::Error::other)?;
        let tokens = Tokens {
            key: &key,
            instance_id: &facts.instance_id,
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let reply = answer(&facts, &tokens, &req, now);
        let close = req
            .header("connection")
            .is_some_and(|c| c.eq_ignore_ascii_case("close"));
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nServer: EC2ws\r\n",
            reply.status,
            reason(reply.status),
            reply.body.len()
        );
        if let Some(ttl) = reply.ttl {
            head += &format!("X-Aws-Ec2-Metadata-Token-Ttl-Seconds: {ttl}\r\n");
        }
        head += if close {
            "Connection: close\r\n\r\n"
        } else {
            "\r\n"
        };
        out.write_all(head.as_bytes())?;
        if req.method != "HEAD" {
            out.write_all(reply.body.as_bytes())?;
        }
        out.flush()?;
        if close {
            break;
        }
    }
    Ok(())
}

/// The twin's token key: made once (32 random bytes, 0600), then reused.
pub fn ensure_key(path: &Path) -> std::io::Result<()> {
    if path.exists() {
        return Ok(());
    }
    let key: [u8; 32] = rand::random();
    crate::atomic_file::write(path, &key, 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(profile: bool) -> Facts {
        Facts {
            instance_id: "i-0abc".into(),
            instance_type: "t3.micro".into(),
            ami_id: "ami-1".into(),
            region: "us-east-1".into(),
            zone: "us-east-1b".into(),
            private_ip: "10.0.1.5".into(),
            public_ip: Some("127.77.0.2".into()),
            profile: profile.then(|| Profile {
                arn: "arn:aws:iam::123456789012:instance-profile/db".into(),
                id: "AIPA1".into(),
                role: "db-backup".into(),
                access_key_id: "ASIA1".into(),
                secret_access_key: "s".into(),
                token: "t".into(),
                expiration: "2026-12-08T12:00:00Z".into(),
                last_updated: "2026-12-08T00:00:00Z".into(),
            }),
        }
    }

    fn req(method: &str, path: &str, headers: &[(&str, &str)]) -> Request {
        Request {
            method: method.into(),
            path: path.into(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        }
    }

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn a_token_is_required_and_only_a_valid_one_of_this_instance_counts() {
        let f = facts(false);
        let t = Tokens {
            key: KEY,
            instance_id: &f.instance_id,
        };
        // IMDSv1 (no token) is refused.
        let v1 = answer(
            &f,
            &t,
            &req("GET", "/latest/meta-data/instance-id", &[]),
            100,
        );
        assert_eq!(v1.status, 401);
        // The token: PUT with a TTL in 1..=21600 only.
        let put = |ttl: &str| {
            answer(
                &f,
                &t,
                &req("PUT", "/latest/api/token", &[(TTL_HEADER, ttl)]),
                100,
            )
        };
        assert_eq!(put("0").status, 400);
        assert_eq!(put("21601").status, 400);
        assert_eq!(
            answer(&f, &t, &req("PUT", "/latest/api/token", &[]), 100).status,
            400
        );
        let issued = put("60");
        assert_eq!((issued.status, issued.ttl), (200, Some(60)));
        let get = |token: &str, now: u64| {
            answer(
                &f,
                &t,
                &req(
                    "GET",
                    "/latest/meta-data/instance-id",
                    &[(TOKEN_HEADER, token)],
                ),
                now,
            )
        };
        assert_eq!(get(&issued.body, 159).body, "i-0abc");
        assert_eq!(get(&issued.body, 160).status, 401, "expired");
        // Another instance's token, or a forged one, is no token.
        let other = Tokens {
            key: KEY,
            instance_id: "i-other",
        };
        assert_eq!(get(&other.issue(100, 60), 120).status, 401);
        let forged = format!("{}.{}", 10_000, issued.body.split_once('.').unwrap().1);
        assert_eq!(get(&forged, 120).status, 401);
        // Through a proxy: refused even with a token.
        let proxied = answer(
            &f,
            &t,
            &req(
                "GET",
                "/latest/meta-data/instance-id",
                &[(TOKEN_HEADER, &issued.body), ("x-forwarded-for", "1.2.3.4")],
            ),
            120,
        );
        assert_eq!(proxied.status, 403);
    }

    #[test]
    fn the_tree_serves_placement_and_the_profiles_credentials() {
        let f = facts(true);
        let t = Tokens {
            key: KEY,
            instance_id: &f.instance_id,
        };
        let token = t.issue(0, 600);
        let get = |path: &str| {
            let r = answer(&f, &t, &req("GET", path, &[(TOKEN_HEADER, &token)]), 1);
            (r.status, r.body)
        };
        assert_eq!(get("/latest/meta-data/placement/region").1, "us-east-1");
        assert_eq!(
            get("/latest/meta-data/placement/availability-zone").1,
            "us-east-1b"
        );
        assert_eq!(get("/latest/meta-data/local-ipv4").1, "10.0.1.5");
        assert_eq!(
            get("/latest/meta-data/iam/security-credentials/").1,
            "db-backup"
        );
        let (status, creds) = get("/latest/meta-data/iam/security-credentials/db-backup");
        assert_eq!(status, 200);
        let creds: serde_json::Value = serde_json::from_str(&creds).unwrap();
        assert_eq!(creds["AccessKeyId"], "ASIA1");
        assert_eq!(creds["Token"], "t");
        assert_eq!(
            get("/latest/meta-data/iam/security-credentials/other").0,
            404
        );
        let doc: serde_json::Value =
            serde_json::from_str(&get("/latest/dynamic/instance-identity/document").1).unwrap();
        assert_eq!(doc["region"], "us-east-1");
        assert_eq!(doc["instanceId"], "i-0abc");
        // Without a profile there is no iam/ at all.
        let bare = facts(false);
        let r = answer(
            &bare,
            &t,
            &req(
                "GET",
                "/latest/meta-data/iam/info",
                &[(TOKEN_HEADER, &token)],
            ),
            1,
        );
        assert_eq!(r.status, 404);
        assert!(!get("/latest/meta-data/").1.is_empty());
    }

    #[test]
    fn hmac_is_rfc_4231s() {
        // RFC 4231, test case 2.
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn requests_are_read_one_after_another_with_their_bodies_skipped() {
        let wire = "PUT /latest/api/token HTTP/1.1\r\nHost: 169.254.169.254\r\nX-aws-ec2-metadata-token-ttl-seconds: 21600\r\nContent-Length: 3\r\n\r\nabcGET /latest/meta-data/ HTTP/1.1\r\nX-aws-ec2-metadata-token: x\r\n\r\n";
        let mut input = std::io::BufReader::new(wire.as_bytes());
        let first = read_request(&mut input).unwrap().unwrap();
        assert_eq!(
            (first.method.as_str(), first.path.as_str()),
            ("PUT", "/latest/api/token")
        );
        assert_eq!(first.header(TTL_HEADER), Some("21600"));
        let second = read_request(&mut input).unwrap().unwrap();
        assert_eq!(second.path, "/latest/meta-data/");
        assert_eq!(second.header(TOKEN_HEADER), Some("x"));
        assert!(read_request(&mut input).unwrap().is_none());
    }
}
