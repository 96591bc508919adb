//! What a failed AWS call is: its operation, a [`ErrorKind`] from a small fixed set
//! (a metric label), and the service's own words.

use std::fmt;

use aws_sdk_servicediscovery::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::http::Response as HttpResponse;

/// Failure classes, a small fixed set usable as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Throttling or request limit exceeded.
    Throttled,
    /// Credentials missing, expired or not allowed (IAM).
    AccessDenied,
    /// The namespace or service does not exist (any more).
    NotFound,
    /// Another 4xx answer.
    Client,
    /// A 5xx answer or an unreadable response.
    Server,
    /// No answer in time.
    Timeout,
    /// Could not connect or the connection broke.
    Network,
    /// Anything else (request construction, credentials provider).
    Other,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Throttled => "throttled",
            ErrorKind::AccessDenied => "access_denied",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Client => "client_error",
            ErrorKind::Server => "server_error",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Network => "network_error",
            ErrorKind::Other => "other",
        }
    }

    /// A fault that passes by itself (throttling, a 5xx, a timeout, a broken
    /// connection): the same request is worth sending again later.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ErrorKind::Throttled | ErrorKind::Server | ErrorKind::Timeout | ErrorKind::Network
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed AWS call: which operation, what kind of failure, and the SDK's words.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{operation} failed ({kind}): {message}")]
pub struct AwsError {
    pub operation: &'static str,
    pub kind: ErrorKind,
    pub message: String,
    /// True when no answer came because the cycle deadline gave up on the call.
    abandoned: bool,
}

/// The message of a call abandoned at the cycle deadline.
const DEADLINE: &str = "abandoned at the cycle deadline (--cycle-timeout)";

impl AwsError {
    pub fn new(operation: &'static str, kind: ErrorKind, message: impl Into<String>) -> Self {
        AwsError {
            operation,
            kind,
            message: message.into(),
            abandoned: false,
        }
    }

    /// A call abandoned because the cycle deadline came.
    pub fn deadline(operation: &'static str) -> Self {
        AwsError {
            abandoned: true,
            ..AwsError::new(operation, ErrorKind::Timeout, DEADLINE)
        }
    }

    /// Whether the cycle deadline gave up on this call (see [`AwsError::deadline`]).
    pub fn is_deadline(&self) -> bool {
        self.abandoned
    }

    /// Whether AWS refused the credentials rather than the action (the message of a
    /// service error starts with its code, see [`AwsError::from_sdk`]).
    pub fn credentials_refused(&self) -> bool {
        let code = self.message.split(':').next().unwrap_or("");
        self.kind == ErrorKind::AccessDenied && CREDENTIAL_CODES.contains(&code)
    }

    /// Classifies an SDK error of any AWS service.
    pub fn from_sdk<E>(operation: &'static str, err: SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        Self::from_sdk_ref(operation, &err)
    }

    /// Classifies an SDK error that someone else owns (one inside a credentials
    /// provider's error, say).
    pub fn from_sdk_ref<E>(operation: &'static str, err: &SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let kind = match err {
            SdkError::TimeoutError(_) => ErrorKind::Timeout,
            SdkError::DispatchFailure(d) if d.is_timeout() => ErrorKind::Timeout,
            SdkError::DispatchFailure(d) if d.is_io() => ErrorKind::Network,
            SdkError::DispatchFailure(_) => ErrorKind::Other,
            SdkError::ResponseError(_) => ErrorKind::Server,
            SdkError::ServiceError(ctx) => classify(ctx.err().code(), ctx.raw().status().as_u16()),
            _ => ErrorKind::Other,
        };
        let message = match err {
            SdkError::ServiceError(ctx) => {
                let e = ctx.err();
                match (e.code(), e.message()) {
                    (Some(c), Some(m)) => format!("{c}: {m}"),
                    (Some(c), None) => c.to_string(),
                    _ => format!(
                        "HTTP {}: {}",
                        ctx.raw().status().as_u16(),
                        DisplayErrorContext(err)
                    ),
                }
            }
            _ => DisplayErrorContext(err).to_string(),
        };
        AwsError::new(operation, kind, message)
    }
}

/// Error codes that refuse the credentials themselves (unknown or expired key, bad
/// signature, skewed clock) rather than the action: no IAM policy change helps.
const CREDENTIAL_CODES: &[&str] = &[
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "ExpiredTokenException",
    "AuthFailure",
];

/// Error kind from an AWS error code and HTTP status.
pub fn classify(code: Option<&str>, status: u16) -> ErrorKind {
    match code.unwrap_or("") {
        "ThrottlingException"
        | "Throttling"
        | "ThrottledException"
        | "RequestLimitExceeded"
        | "TooManyRequestsException"
        | "RequestThrottled"
        | "SlowDown" => ErrorKind::Throttled,
        "AccessDenied" | "AccessDeniedException" | "UnauthorizedOperation" => {
            ErrorKind::AccessDenied
        }
        c if CREDENTIAL_CODES.contains(&c) => ErrorKind::AccessDenied,
        "ServiceNotFound"
        | "NamespaceNotFound"
        | "ResourceNotFoundException"
        | "ClusterNotFoundException" => ErrorKind::NotFound,
        _ => match status {
            429 => ErrorKind::Throttled,
            401 | 403 => ErrorKind::AccessDenied,
            500..=599 => ErrorKind::Server,
            _ => ErrorKind::Client,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        assert_eq!(
            classify(Some("ThrottlingException"), 400),
            ErrorKind::Throttled
        );
        assert_eq!(
            classify(Some("RequestLimitExceeded"), 400),
            ErrorKind::Throttled
        );
        assert_eq!(
            classify(Some("AccessDeniedException"), 400),
            ErrorKind::AccessDenied
        );
        assert_eq!(classify(Some("ServiceNotFound"), 400), ErrorKind::NotFound);
        assert_eq!(classify(None, 503), ErrorKind::Server);
        assert_eq!(classify(Some("InternalFailure"), 500), ErrorKind::Server);
        assert_eq!(classify(None, 429), ErrorKind::Throttled);
        assert_eq!(classify(Some("InvalidInput"), 400), ErrorKind::Client);
    }
}
