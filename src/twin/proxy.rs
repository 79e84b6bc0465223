//! The twin's front: an HTTP/1.1 proxy on a loopback port that forwards every request to moto
//! unchanged (headers, Host and signature included) and returns moto's response, after
//! [`super::actions`] acted on it. Nothing but moto is ever connected to.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{ACCEPT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use super::fleet::Fleet;
use super::query::Query;

/// The one region the twin serves (its AMI is registered there; moto keeps regions apart).
pub const REGION: &str = "us-east-1";

/// The twin's own calls' Authorization header: moto routes a request by the service named in
/// its credential scope and checks no signature (unless run with authorization on, which the
/// twin does not do yet).
fn authorization(service: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/{service}/aws4_request, \
         SignedHeaders=host, Signature=0"
    )
}

/// moto's endpoint and a pooled client for it.
#[derive(Clone)]
pub struct Upstream {
    base: String,
    pub client: Client<HttpConnector, Full<Bytes>>,
}

impl Upstream {
    /// `base` is `http://127.0.0.1:PORT`; anything off loopback is refused.
    pub fn new(base: &str) -> Result<Upstream, String> {
        let uri: hyper::Uri = base.parse().map_err(|e| format!("{base}: {e}"))?;
        let host = uri.host().unwrap_or_default();
        let loopback = host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
        if uri.scheme_str() != Some("http") || !loopback {
            return Err(format!(
                "{base}: moto must be http:// on a loopback address"
            ));
        }
        Ok(Upstream {
            base: base.trim_end_matches('/').to_string(),
            client: Client::builder(TokioExecutor::new()).build_http(),
        })
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("{}{path_and_query}", self.base)
    }

    /// One EC2 query call straight to moto; the response body on HTTP 200.
    pub async fn call(&self, params: &[(&str, &str)]) -> Result<String, String> {
        self.call_service("ec2", "2016-11-15", params).await
    }

    /// One query-protocol call of `service` (ec2, iam, sts) at API `version` to moto, which
    /// routes it by the service in the credential scope.
    pub async fn call_service(
        &self,
        service: &str,
        version: &str,
        params: &[(&str, &str)],
    ) -> Result<String, String> {
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("Version", version)
            .extend_pairs(params)
            .finish();
        let req = Request::post(self.url("/"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("authorization", authorization(service))
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let resp = self
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
}

struct Ctx {
    upstream: Upstream,
    fleet: Arc<Fleet>,
}

/// Serves until the listener fails; each connection on its own task.
pub async fn serve(
    listener: TcpListener,
    upstream: Upstream,
    fleet: Arc<Fleet>,
) -> std::io::Result<()> {
    let ctx = Arc::new(Ctx { upstream, fleet });
    loop {
        let (stream, peer): (_, SocketAddr) = listener.accept().await?;
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let ctx = ctx.clone();
                async move { Ok::<_, Infallible>(handle(&ctx, req).await) }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, "connection: {e}");
            }
        });
    }
}

fn plain(status: StatusCode, text: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(text)));
    *r.status_mut() = status;
    r
}

async fn handle(ctx: &Ctx, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (mut parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return plain(StatusCode::BAD_REQUEST, format!("twin: request body: {e}")),
    };
    let form = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let query = if form {
        Query::parse(&body)
    } else {
        Query::default()
    };
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    parts.uri = match ctx.upstream.url(path).parse() {
        Ok(u) => u,
        Err(e) => return plain(StatusCode::BAD_REQUEST, format!("twin: {path}: {e}")),
    };
    // Responses are rewritten as text: ask moto for no compression.
    parts.headers.remove(ACCEPT_ENCODING);
    let resp = match ctx
        .upstream
        .client
        .request(Request::from_parts(parts, Full::new(body)))
        .await
    {
        Ok(r) => r,
        Err(e) => return plain(StatusCode::BAD_GATEWAY, format!("twin: moto: {e}")),
    };
    let (mut parts, body) = resp.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return plain(StatusCode::BAD_GATEWAY, format!("twin: moto: {e}")),
    };
    let body = match (query.action(), String::from_utf8(body.to_vec())) {
        (Some(action), Ok(text)) => {
            tracing::debug!(action, status = %parts.status, "ec2");
            Bytes::from(super::actions::after(&ctx.fleet, &query, parts.status, text).await)
        }
        _ => body,
    };
    parts.headers.remove(CONTENT_LENGTH);
    parts.headers.remove(TRANSFER_ENCODING);
    Response::from_parts(parts, Full::new(body))
}
