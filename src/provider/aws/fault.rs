//! Fault injection for EC2 calls: `DBCTL_AWS_FAULTS=RunInstances=throttle*2,CreateVolume=500*1`.
//! `Op@ZONE=kind*N` fires only for requests naming that availability zone
//! (`RunInstances@us-east-1a=capacity*99`: that zone has no capacity).
//!
//! The fault is injected *inside* the SDK, so everything above it runs for real: the SDK's retry
//! classifier and backoff, its attempt counter, the error parsing, dbctl's classification, and the
//! saga's step retry. Two pieces cooperate:
//!
//! * [`FaultInterceptor`] runs once per attempt (`modify_before_transmit`), knows the operation
//!   name from the config bag, decrements the plan, and marks a doomed request with a header.
//! * [`FaultyHttpClient`] wraps the real HTTP client; a marked request never leaves the process and
//!   gets a synthetic EC2 error response instead (503 `RequestLimitExceeded`, 500
//!   `InternalError`, ...), exactly the bytes EC2 sends, so parsing is exercised too.
//!
//! Counts are per process: the plan for a given spec string is created once and shared by every
//! client connected in this process (so "throttle*2" means the first two attempts, whichever
//! client makes them).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextMut;
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse, Metadata};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::ConfigBag;

/// The environment variable holding the fault plan.
pub const FAULTS_ENV: &str = "DBCTL_AWS_FAULTS";

/// Header marking a request the fault client must fail. Never sent on the wire.
const FAULT_HEADER: &str = "x-dbctl-injected-fault";

/// What an injected failure looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// HTTP 503 with `RequestLimitExceeded` (EC2's throttling code).
    Throttle,
    /// HTTP 500 with `InternalError`.
    Internal,
    /// HTTP 503 with `Unavailable`.
    Unavailable,
    /// The connection times out (no response at all).
    Timeout,
    /// HTTP 500 with `InsufficientInstanceCapacity` (the zone has none of the type now).
    Capacity,
}

impl FaultKind {
    fn parse(s: &str) -> Option<FaultKind> {
        match s {
            "throttle" => Some(FaultKind::Throttle),
            "500" | "internal" => Some(FaultKind::Internal),
            "503" | "unavailable" => Some(FaultKind::Unavailable),
            "timeout" => Some(FaultKind::Timeout),
            "capacity" => Some(FaultKind::Capacity),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            FaultKind::Throttle => "throttle",
            FaultKind::Internal => "500",
            FaultKind::Unavailable => "503",
            FaultKind::Timeout => "timeout",
            FaultKind::Capacity => "capacity",
        }
    }
}

#[derive(Debug)]
struct Fault {
    kind: FaultKind,
    remaining: AtomicU32,
}

/// Operation name → fault and how many more attempts it should hit.
#[derive(Debug, Default)]
pub struct FaultPlan {
    faults: HashMap<String, Fault>,
}

impl FaultPlan {
    /// Parses `Op=kind*N[,Op=kind*N...]`; `*N` defaults to 1.
    pub fn parse(spec: &str) -> Result<FaultPlan, String> {
        let mut faults = HashMap::new();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (op, rest) = item
                .split_once('=')
                .ok_or_else(|| format!("{FAULTS_ENV}: {item:?} is not Operation=kind*count"))?;
            let (kind, count) = rest.split_once('*').unwrap_or((rest, "1"));
            let kind = FaultKind::parse(kind).ok_or_else(|| {
                format!(
                    "{FAULTS_ENV}: unknown fault {kind:?} (throttle, 500, 503, timeout, capacity)"
                )
            })?;
            let count: u32 = count
                .parse()
                .map_err(|_| format!("{FAULTS_ENV}: bad count in {item:?}"))?;
            faults.insert(
                op.to_string(),
                Fault {
                    kind,
                    remaining: AtomicU32::new(count),
                },
            );
        }
        Ok(FaultPlan { faults })
    }

    /// The process-wide plan for `spec` (one per distinct spec string, so counts survive
    /// reconnecting).
    pub fn shared(spec: &str) -> Result<Arc<FaultPlan>, String> {
        static PLANS: OnceLock<Mutex<HashMap<String, Arc<FaultPlan>>>> = OnceLock::new();
        let mut plans = PLANS
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(plan) = plans.get(spec) {
            return Ok(plan.clone());
        }
        let plan = Arc::new(FaultPlan::parse(spec)?);
        plans.insert(spec.to_string(), plan.clone());
        Ok(plan)
    }

    /// Consumes one injection for `op` on a request whose form body is `body`, if any are
    /// left: a zone's rule (`Op@zone`) when the body names that zone, else the operation's.
    fn take(&self, op: &str, body: &[u8]) -> Option<FaultKind> {
        let body = String::from_utf8_lossy(body);
        let zonal = self.faults.iter().find(|(key, _)| {
            key.split_once('@').is_some_and(|(o, zone)| {
                o == op && body.contains(&format!("AvailabilityZone={zone}"))
            })
        });
        let fault = match zonal {
            Some((_, f)) => f,
            None => self.faults.get(op)?,
        };
        fault
            .remaining
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .ok()
            .map(|_| fault.kind)
    }

    pub fn is_empty(&self) -> bool {
        self.faults.is_empty()
    }
}

/// Marks the requests that the plan says must fail (see the module docs).
#[derive(Debug)]
pub struct FaultInterceptor {
    plan: Arc<FaultPlan>,
}

impl FaultInterceptor {
    pub fn new(plan: Arc<FaultPlan>) -> Self {
        FaultInterceptor { plan }
    }
}

impl Intercept for FaultInterceptor {
    fn name(&self) -> &'static str {
        "DbctlFaultInterceptor"
    }

    // Runs once per attempt, after signing: each SDK retry consumes one injection, which is what
    // makes "throttle*N" with N >= the SDK's max attempts surface to dbctl as an error.
    fn modify_before_transmit(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(op) = cfg.load::<Metadata>().map(|m| m.name().to_string()) else {
            return Ok(());
        };
        let body = context
            .request()
            .body()
            .bytes()
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        if let Some(kind) = self.plan.take(&op, &body) {
            tracing::warn!(op, fault = kind.as_str(), "injecting AWS fault");
            context
                .request_mut()
                .headers_mut()
                .insert(FAULT_HEADER, kind.as_str());
        }
        Ok(())
    }
}

/// Wraps the real HTTP client; fails marked requests without sending them.
#[derive(Debug, Clone)]
pub struct FaultyHttpClient {
    inner: SharedHttpClient,
}

impl FaultyHttpClient {
    pub fn wrap(inner: SharedHttpClient) -> SharedHttpClient {
        SharedHttpClient::new(FaultyHttpClient { inner })
    }
}

impl HttpClient for FaultyHttpClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(FaultyConnector {
            inner: self.inner.http_connector(settings, components),
        })
    }
}

#[derive(Debug)]
struct FaultyConnector {
    inner: SharedHttpConnector,
}

impl HttpConnector for FaultyConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let kind = request
            .headers()
            .get(FAULT_HEADER)
            .and_then(FaultKind::parse);
        match kind {
            None => self.inner.call(request),
            Some(FaultKind::Timeout) => HttpConnectorFuture::ready(Err(ConnectorError::timeout(
                "injected timeout (DBCTL_AWS_FAULTS)".into(),
            ))),
            Some(kind) => HttpConnectorFuture::ready(Ok(error_response(kind))),
        }
    }
}

/// The EC2 query-protocol error document for `kind`.
fn error_response(kind: FaultKind) -> HttpResponse {
    let (status, code) = match kind {
        FaultKind::Throttle => (503, "RequestLimitExceeded"),
        FaultKind::Internal => (500, "InternalError"),
        FaultKind::Unavailable | FaultKind::Timeout => (503, "Unavailable"),
        FaultKind::Capacity => (500, "InsufficientInstanceCapacity"),
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code>\
         <Message>Injected by {FAULTS_ENV}</Message></Error></Errors>\
         <RequestID>dbctl-injected-fault</RequestID></Response>"
    );
    let mut resp = HttpResponse::new(
        StatusCode::try_from(status).expect("valid status"),
        SdkBody::from(body),
    );
    resp.headers_mut().insert("content-type", "text/xml");
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_counts_down() {
        let plan = FaultPlan::parse("RunInstances=throttle*2, CreateVolume=500").unwrap();
        assert_eq!(plan.take("RunInstances", b""), Some(FaultKind::Throttle));
        assert_eq!(plan.take("RunInstances", b""), Some(FaultKind::Throttle));
        assert_eq!(plan.take("RunInstances", b""), None);
        assert_eq!(plan.take("CreateVolume", b""), Some(FaultKind::Internal));
        assert_eq!(plan.take("CreateVolume", b""), None);
        assert_eq!(plan.take("DescribeVpcs", b""), None);
    }

    #[test]
    fn a_zones_rule_fires_only_for_requests_naming_that_zone() {
        let plan = FaultPlan::parse("RunInstances@us-east-1a=capacity*5").unwrap();
        let a = b"Action=RunInstances&Placement.AvailabilityZone=us-east-1a&SubnetId=subnet-1";
        let b = b"Action=RunInstances&Placement.AvailabilityZone=us-east-1b&SubnetId=subnet-2";
        assert_eq!(plan.take("RunInstances", b), None);
        assert_eq!(plan.take("RunInstances", a), Some(FaultKind::Capacity));
        assert_eq!(plan.take("CreateVolume", a), None);
    }

    #[test]
    fn rejects_garbage() {
        assert!(FaultPlan::parse("RunInstances").is_err());
        assert!(FaultPlan::parse("RunInstances=explode*1").is_err());
        assert!(FaultPlan::parse("RunInstances=throttle*x").is_err());
        assert!(FaultPlan::parse("").unwrap().is_empty());
    }
}
