//! One error type for every AWS call (EC2, Route53), split by what the saga should do next.
//!
//! The saga engine retries a step whose error is [`AwsError::Transient`] and rolls the run back on
//! [`AwsError::Permanent`]. The split is decided here, once, from the SDK's structured error
//! (`ProvideErrorMetadata::code()`, HTTP status, dispatch/timeout kind), never from strings at the
//! call sites.

use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;

/// Error codes EC2 (and AWS generally) uses for throttling. Kept in step with the SDK's own
/// `THROTTLING_ERRORS` list so dbctl never treats as permanent what the SDK would have retried.
const THROTTLING_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "RequestThrottled",
    "SlowDown",
    "EC2ThrottledException",
];

/// Server-side codes that mean "try again later", whatever the HTTP status says.
const SERVER_CODES: &[&str] = &[
    "InternalError",
    "InternalFailure",
    "ServiceUnavailable",
    "Unavailable",
    "RequestTimeout",
    "RequestTimeoutException",
    // Capacity errors clear up on their own (or after another zone is tried by the caller).
    "InsufficientInstanceCapacity",
    "InsufficientVolumeCapacity",
    // Route53 (HTTP 400): an earlier change to the same hosted zone is still being applied.
    "PriorRequestNotComplete",
];

/// A failed AWS operation, classified for the saga's retry decision.
///
/// Both variants name the API operation (`op`, e.g. `RunInstances`) and the resource it was about
/// (`resource`, e.g. `instance for step instance/primary` or `vol-0abc`), so an operator reading
/// the journal knows what to look at without a stack trace.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum AwsError {
    /// Retrying the same step later can succeed (throttling, 5xx, network, timeouts).
    #[error("transient AWS error in {op} on {resource}: {message}")]
    Transient {
        op: String,
        resource: String,
        message: String,
        /// The service error code when one was sent (e.g. `RequestLimitExceeded`).
        code: Option<String>,
    },
    /// Retrying cannot help: bad input, missing permission, quota, failed dependency order.
    #[error("AWS error in {op} on {resource}: {message}")]
    Permanent {
        op: String,
        resource: String,
        message: String,
        /// The service error code when one was sent (e.g. `InvalidAMIID.Malformed`).
        code: Option<String>,
    },
}

impl AwsError {
    /// True when the saga should retry the step rather than roll back.
    pub fn is_transient(&self) -> bool {
        matches!(self, AwsError::Transient { .. })
    }

    /// The service error code (EC2, Route53...), when the failure came from the service.
    pub fn code(&self) -> Option<&str> {
        match self {
            AwsError::Transient { code, .. } | AwsError::Permanent { code, .. } => code.as_deref(),
        }
    }

    /// The operation that failed.
    pub fn op(&self) -> &str {
        match self {
            AwsError::Transient { op, .. } | AwsError::Permanent { op, .. } => op,
        }
    }

    /// The resource the failed operation was about.
    pub fn resource(&self) -> &str {
        match self {
            AwsError::Transient { resource, .. } | AwsError::Permanent { resource, .. } => resource,
        }
    }

    /// True for EC2's `*.NotFound` family (`InvalidVpcID.NotFound`, `InvalidKeyPair.NotFound`...).
    pub fn is_not_found(&self) -> bool {
        self.code().is_some_and(is_not_found_code)
    }

    /// A permanent error raised by dbctl itself (validation, dependency order), not by AWS.
    pub(crate) fn invalid(
        op: &str,
        resource: impl Into<String>,
        message: impl Into<String>,
    ) -> AwsError {
        AwsError::Permanent {
            op: op.to_string(),
            resource: resource.into(),
            message: message.into(),
            code: None,
        }
    }

    /// A transient error raised by dbctl itself (e.g. a wait that ran out of time).
    pub(crate) fn not_yet(
        op: &str,
        resource: impl Into<String>,
        message: impl Into<String>,
    ) -> AwsError {
        AwsError::Transient {
            op: op.to_string(),
            resource: resource.into(),
            message: message.into(),
            code: None,
        }
    }
}

/// True for the `*.NotFound` codes EC2 returns for a missing (or not yet visible) resource.
pub(crate) fn is_not_found_code(code: &str) -> bool {
    code.ends_with(".NotFound") || code == "InvalidGroup.NotFound" || code == "NotFound"
}

/// Is this SDK error one that a later attempt can fix?
fn is_transient<E>(err: &SdkError<E, HttpResponse>) -> bool
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match err {
        // Could not build the request: our input is wrong, retrying cannot fix it.
        SdkError::ConstructionFailure(_) => false,
        SdkError::TimeoutError(_) => true,
        // Credentials are resolved in the dispatch phase: a missing profile or an expired SSO
        // session would otherwise look like a network error and be retried forever.
        SdkError::DispatchFailure(_) if credentials_error(err).is_some() => {
            matches!(
                credentials_error(err),
                Some(CredentialsError::ProviderTimedOut(_))
            )
        }
        // Connection refused/reset, DNS, TLS... except "user" errors such as a malformed endpoint.
        SdkError::DispatchFailure(e) => !e.is_user(),
        // A response arrived but could not be parsed: typically a truncated body or a proxy page.
        SdkError::ResponseError(_) => true,
        SdkError::ServiceError(e) => {
            let status = e.raw().status().as_u16();
            let code = err.code().unwrap_or_default();
            THROTTLING_CODES.contains(&code) || SERVER_CODES.contains(&code) || status >= 500
        }
        // `SdkError` is non-exhaustive: anything new is treated as retryable rather than
        // rolling back a whole run on an error kind we have never seen.
        _ => true,
    }
}

/// The credential provider's error, if that is what made the request fail.
fn credentials_error<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a CredentialsError> {
    let mut source: Option<&'a (dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(c) = e.downcast_ref::<CredentialsError>() {
            return Some(c);
        }
        source = e.source();
    }
    None
}

/// Turns an SDK error into an [`AwsError`] naming `op` and `resource`.
///
/// Guarantees: throttling codes, 5xx, `InternalError`/`ServiceUnavailable`, Route53's
/// `PriorRequestNotComplete`, timeouts and connection failures are `Transient`; everything else is
/// `Permanent`. The service code, when there is one, is kept in `code` and repeated in the message.
pub fn classify<E>(op: &str, resource: &str, err: SdkError<E, HttpResponse>) -> AwsError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let code = err.code().map(str::to_string);
    let message = match (&code, err.message()) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c.clone(),
        // No service code: the useful text is in the source chain (e.g. "connection refused").
        _ => describe_chain(&err),
    };
    let (op, resource) = (op.to_string(), resource.to_string());
    if is_transient(&err) {
        AwsError::Transient {
            op,
            resource,
            message,
            code,
        }
    } else {
        AwsError::Permanent {
            op,
            resource,
            message,
            code,
        }
    }
}

/// The error and its sources joined with ": " (the SDK's `Display` alone says only "dispatch
/// failure" and hides the cause).
fn describe_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Shorthand used by every call site: `.map_err(fail("RunInstances", &what))`.
pub(crate) fn fail<E>(
    op: &'static str,
    resource: &str,
) -> impl FnOnce(SdkError<E, HttpResponse>) -> AwsError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let resource = resource.to_string();
    move |err| classify(op, &resource, err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_codes() {
        assert!(is_not_found_code("InvalidVpcID.NotFound"));
        assert!(is_not_found_code("InvalidKeyPair.NotFound"));
        assert!(!is_not_found_code("DependencyViolation"));
    }

    #[test]
    fn display_names_op_and_resource() {
        let e = AwsError::invalid("AuthorizeSecurityGroupIngress", "sg for step sg", "no /0");
        let text = e.to_string();
        assert!(text.contains("AuthorizeSecurityGroupIngress") && text.contains("sg for step sg"));
        assert!(!e.is_transient());
        assert!(AwsError::not_yet("RunInstances", "i-1", "still pending").is_transient());
    }
}
