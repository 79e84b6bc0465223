//! Building the SDK clients (EC2 here, Route53 in [`super::route53`]) from one shared loader.
//!
//! Everything standard is left to `aws-config` so dbctl behaves like the AWS CLI: credentials
//! from env / profile / SSO / web identity / IMDS, region from `AWS_REGION`, `AWS_DEFAULT_REGION` or
//! the profile ([`default_region`] for validation, before any client exists), and the
//! endpoint from the service variable (`AWS_ENDPOINT_URL_EC2`, `AWS_ENDPOINT_URL_ROUTE_53`) or
//! `AWS_ENDPOINT_URL` (how the tests point at moto).
//!
//! Retry split, decided deliberately: the SDK retries each *call* a few times (standard mode, 3
//! attempts, exponential backoff with jitter), which absorbs short throttling bursts within one
//! step. When those attempts are used up the error reaches dbctl classified as `Transient`, and
//! the saga retries the whole *step* later. Step retries are safe because every `ensure_*` first
//! adopts what an earlier attempt created. A larger SDK budget would only hide long outages
//! inside one step, where the journal cannot see or report them.

use std::sync::Arc;

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use aws_smithy_runtime_api::client::http::SharedHttpClient;

use super::Ec2;
use super::config::AwsSettings;
use super::error::AwsError;
#[cfg(feature = "faults")]
use super::fault::{FAULTS_ENV, FaultInterceptor, FaultPlan, FaultyHttpClient};

/// Attempts per API call made by the SDK itself (1 initial + 2 retries).
pub const SDK_MAX_ATTEMPTS: u32 = 3;

/// What every service client is built from: the standard chain's configuration, the region it
/// resolved, and the HTTPS client in it (kept apart so EC2 can wrap it for fault injection).
pub(crate) struct Loaded {
    pub(crate) sdk: SdkConfig,
    pub(crate) region: String,
    pub(crate) http: SharedHttpClient,
}

/// The HTTPS client every SDK client of dbctl's uses: rustls with ring, chosen explicitly: the
/// SDK's `default-https-client` feature is the same client but with aws-lc-rs as crypto, a much
/// larger C build (CMake) for no gain here.
pub fn https_client() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

/// Loads the standard AWS configuration chain plus `settings`; `what` names the client in errors.
///
/// Guarantees: no network call is made (credentials are resolved lazily on the first request);
/// fails `Permanent` when no region can be found.
pub(crate) async fn load(settings: &AwsSettings, what: &str) -> Result<Loaded, AwsError> {
    let http = https_client();

    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http.clone())
        .retry_config(RetryConfig::standard().with_max_attempts(SDK_MAX_ATTEMPTS));
    if let Some(region) = &settings.region {
        loader = loader.region(Region::new(region.clone()));
    }
    let sdk = loader.load().await;
    let Some(region) = sdk.region().map(|r| r.to_string()) else {
        return Err(AwsError::invalid(
            "connect",
            what,
            "no AWS region: set aws.region in the project, AWS_REGION, AWS_DEFAULT_REGION, or a profile region",
        ));
    };
    Ok(Loaded { sdk, region, http })
}

/// Arms `DBCTL_AWS_FAULTS` on the EC2 client: only in test builds (feature `faults`).
#[cfg(feature = "faults")]
fn with_faults(
    builder: aws_sdk_ec2::config::Builder,
    http: SharedHttpClient,
) -> Result<aws_sdk_ec2::config::Builder, AwsError> {
    match std::env::var(FAULTS_ENV) {
        Ok(spec) if !spec.trim().is_empty() => {
            let plan = FaultPlan::shared(&spec)
                .map_err(|m| AwsError::invalid("connect", "EC2 client", m))?;
            tracing::warn!(spec, "AWS fault injection is active");
            Ok(builder
                .http_client(FaultyHttpClient::wrap(http))
                .interceptor(FaultInterceptor::new(plan)))
        }
        _ => Ok(builder),
    }
}

/// A build without fault injection ignores `DBCTL_AWS_FAULTS`.
#[cfg(not(feature = "faults"))]
fn with_faults(
    builder: aws_sdk_ec2::config::Builder,
    _http: SharedHttpClient,
) -> Result<aws_sdk_ec2::config::Builder, AwsError> {
    Ok(builder)
}

/// The region aws-config's default chain resolves when dbctl's config names none:
/// `AWS_REGION`, `AWS_DEFAULT_REGION`, the profile's `region` (`AWS_PROFILE`, `AWS_CONFIG_FILE`),
/// then IMDS (unless `AWS_EC2_METADATA_DISABLED`). `None` when none of them has one.
///
/// Blocking, because spec validation is synchronous: the chain runs on a helper thread with its
/// own runtime (a runtime cannot be blocked on from inside another one's task).
pub fn default_region() -> Option<String> {
    std::thread::spawn(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        rt.block_on(async {
            load(&AwsSettings::default(), "region lookup")
                .await
                .ok()
                .map(|l| l.region)
        })
    })
    .join()
    .ok()
    .flatten()
}

/// Builds an [`Ec2`] from the standard AWS configuration chain plus `settings`.
///
/// Guarantees: no network call is made (credentials are resolved lazily on the first request);
/// fails `Permanent` when no region can be found or `DBCTL_AWS_FAULTS` is malformed.
pub(crate) async fn connect(settings: &AwsSettings) -> Result<Ec2, AwsError> {
    let Loaded { sdk, region, http } = load(settings, "EC2 client").await?;

    let builder = with_faults(aws_sdk_ec2::config::Builder::from(&sdk), http)?;

    Ok(Ec2 {
        client: aws_sdk_ec2::Client::from_conf(builder.build()),
        settings: Arc::new(settings.clone()),
        region,
    })
}
