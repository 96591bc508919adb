//! What a failed AWS call is: its operation, a [`ErrorKind`] from a small fixed set
//! (a metric label), the service's own words, and, when the user can fix it by
//! setting something, a [`Cause`] that says what (one line, no SDK dump; the SDK's
//! whole error text is logged at debug level).

use std::error::Error as StdError;
use std::fmt;

use aws_config::imds::client::error::ImdsError;
use aws_credential_types::provider::error::CredentialsError;
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

/// A failure the user fixes by setting something: what is wrong and what to set.
/// Found from the SDK error's types (the credentials error, the connection error,
/// the service's error code), never from its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cause {
    /// No Region in the environment, the profile or the instance metadata.
    NoRegion,
    /// No credentials anywhere in the chain (environment, profile, web identity,
    /// the ECS task role, the EC2 instance metadata).
    NoCredentials,
    /// A source of credentials is configured but failed to give any (a profile,
    /// SSO, the ECS credentials endpoint).
    CredentialsUnavailable,
    /// AWS does not accept the access key or its signature.
    CredentialsRefused,
    /// AWS says the (temporary) credentials have expired.
    CredentialsExpired,
    /// No connection to the endpoint: refused, no such host, no route.
    Unreachable,
}

impl Cause {
    /// The one line: what is wrong (with `context` in parentheses, when there is
    /// some) and what to set.
    pub fn line(self, context: &str) -> String {
        match context {
            "" => format!("{}: {}", self.what(), self.remedy()),
            c => format!("{} ({c}): {}", self.what(), self.remedy()),
        }
    }

    /// What is wrong, in a few words.
    fn what(self) -> &'static str {
        match self {
            Cause::NoRegion => "no AWS Region configured",
            Cause::NoCredentials => "no AWS credentials found",
            Cause::CredentialsUnavailable => "cannot load AWS credentials",
            Cause::CredentialsRefused => "AWS refused the credentials",
            Cause::CredentialsExpired => "the AWS credentials have expired",
            Cause::Unreachable => "cannot connect to the AWS endpoint",
        }
    }

    /// What to set.
    fn remedy(self) -> &'static str {
        match self {
            Cause::NoRegion => "set AWS_REGION (ECS sets it for tasks)",
            Cause::NoCredentials => {
                "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE (in ECS: a task role)"
            }
            Cause::CredentialsUnavailable => "check AWS_PROFILE and its config, or the task role",
            Cause::CredentialsRefused => {
                "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
            }
            Cause::CredentialsExpired => {
                "set fresh ones (with AWS_SESSION_TOKEN) or renew AWS_PROFILE's login"
            }
            Cause::Unreachable => "check AWS_ENDPOINT_URL, AWS_REGION and the network",
        }
    }

    /// The cause of a failed credentials lookup, and a few words of detail (empty
    /// when the cause says it all). An instance-metadata failure is "no credentials"
    /// too: IMDS is the chain's last resort, so nothing else was configured.
    pub fn of_credentials(e: &CredentialsError) -> (Cause, String) {
        match e {
            CredentialsError::CredentialsNotLoaded(_) => (Cause::NoCredentials, String::new()),
            CredentialsError::ProviderError(_) if find::<ImdsError>(e).is_some() => {
                (Cause::NoCredentials, String::new())
            }
            _ => (Cause::CredentialsUnavailable, short(&chain(e))),
        }
    }

    /// The cause an AWS error code names, if any.
    fn of_code(code: &str) -> Option<Cause> {
        if EXPIRED_CODES.contains(&code) {
            Some(Cause::CredentialsExpired)
        } else if CREDENTIAL_CODES.contains(&code) {
            Some(Cause::CredentialsRefused)
        } else {
            None
        }
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.line(""))
    }
}

/// A failed AWS call: which operation, what kind of failure, and the SDK's words.
/// With a [`Cause`], it shows as one line that says what to set.
#[derive(Debug, Clone, thiserror::Error)]
pub struct AwsError {
    pub operation: &'static str,
    pub kind: ErrorKind,
    pub message: String,
    /// What the user can set to fix it, when the error says.
    pub cause: Option<Cause>,
    /// True when no answer came because the cycle deadline gave up on the call.
    abandoned: bool,
}

impl fmt::Display for AwsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (op, kind, msg) = (self.operation, self.kind, &self.message);
        match self.cause {
            Some(c) if msg.is_empty() => f.write_str(&c.line(op)),
            Some(c) => f.write_str(&c.line(&format!("{op}: {msg}"))),
            None => write!(f, "{op} failed ({kind}): {msg}"),
        }
    }
}

/// The message of a call abandoned at the cycle deadline.
const DEADLINE: &str = "abandoned at the cycle deadline (--cycle-timeout)";

impl AwsError {
    pub fn new(operation: &'static str, kind: ErrorKind, message: impl Into<String>) -> Self {
        AwsError {
            operation,
            kind,
            message: message.into(),
            cause: None,
            abandoned: false,
        }
    }

    /// A service's error answer: its code and message, classified.
    pub fn service(operation: &'static str, code: &str, message: &str, status: u16) -> Self {
        let (kind, cause) = (classify(Some(code), status), Cause::of_code(code));
        let message = match (cause, message) {
            // The line of a cause says what to do; the code is enough detail.
            (Some(_), _) | (None, "") => code.to_string(),
            (None, m) => format!("{code}: {m}"),
        };
        AwsError {
            cause,
            ..AwsError::new(operation, kind, message)
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

    /// Classifies an SDK error of any AWS service. The SDK's whole text (with its
    /// debug detail) goes to the debug log, not into the error.
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
        tracing::debug!(operation, error = %DisplayErrorContext(err), "AWS call failed");
        if let SdkError::ServiceError(ctx) = err {
            let (e, status) = (ctx.err(), ctx.raw().status().as_u16());
            if let Some(code) = e.code() {
                return AwsError::service(operation, code, e.message().unwrap_or(""), status);
            }
            let kind = classify(None, status);
            return AwsError::new(operation, kind, format!("HTTP {status}: {}", chain(err)));
        }
        if let Some(role) = find::<AwsError>(err) {
            return AwsError::through_role(operation, role);
        }
        if let Some(creds) = find::<CredentialsError>(err) {
            let (cause, detail) = Cause::of_credentials(creds);
            let kind = match cause {
                Cause::NoCredentials => ErrorKind::AccessDenied,
                _ => ErrorKind::Other,
            };
            return AwsError {
                cause: Some(cause),
                ..AwsError::new(operation, kind, detail)
            };
        }
        let kind = match err {
            SdkError::TimeoutError(_) => ErrorKind::Timeout,
            SdkError::DispatchFailure(d) if d.is_timeout() => ErrorKind::Timeout,
            SdkError::DispatchFailure(d) if d.is_io() => ErrorKind::Network,
            SdkError::ResponseError(_) => ErrorKind::Server,
            _ => ErrorKind::Other,
        };
        match connect_failure(err) {
            Some(why) => AwsError {
                cause: Some(Cause::Unreachable),
                ..AwsError::new(operation, kind, why)
            },
            None => AwsError::new(operation, kind, chain(err)),
        }
    }

    /// A call of another account that failed because its role could not be
    /// assumed (`role`: that AssumeRole's failure, which the account's credentials
    /// provider hands on, see `accounts::RoleSession`): what to fix is the
    /// AssumeRole's, so a credentials problem keeps its cause and its one line.
    fn through_role(operation: &'static str, role: &AwsError) -> Self {
        let message = match role.cause {
            Some(_) => role.message.clone(),
            None => role.to_string(),
        };
        AwsError {
            cause: role.cause,
            ..AwsError::new(operation, ErrorKind::Other, message)
        }
    }
}

/// The first error of type `T` in `err`'s source chain (`err` included).
fn find<'a, T: StdError + 'static>(err: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(t) = e.downcast_ref::<T>() {
            return Some(t);
        }
        next = e.source();
    }
    None
}

/// Every message of `err`'s source chain, joined by ": " (without the debug dump
/// that `DisplayErrorContext` adds).
fn chain(err: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        if !text.is_empty() && !parts.last().is_some_and(|p| p.ends_with(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

/// At most a short line of `text`.
fn short(text: &str) -> String {
    const MAX: usize = 80;
    match text.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_string(),
    }
}

/// Why no connection could be made to the endpoint, when that is what failed (not a
/// connection that broke later): the OS's reason ("connection refused"), or the
/// resolver's words for a name that does not resolve.
fn connect_failure(err: &(dyn StdError + 'static)) -> Option<String> {
    let client = find::<hyper_util::client::legacy::Error>(err)?;
    if !client.is_connect() {
        return None;
    }
    let io = find::<std::io::Error>(err)?;
    Some(match io.raw_os_error() {
        Some(_) => io.kind().to_string(),
        None => short(&io.to_string()),
    })
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

/// Of those, the ones that say the (temporary) credentials have expired.
const EXPIRED_CODES: &[&str] = &["ExpiredToken", "ExpiredTokenException"];

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
        | "ClusterNotFoundException"
        | "QueueDoesNotExist"
        | "AWS.SimpleQueueService.NonExistentQueue" => ErrorKind::NotFound,
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

    #[test]
    fn a_refused_or_expired_key_is_one_line_that_says_what_to_set() {
        let e = AwsError::service(
            "ListNamespaces",
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
            400,
        );
        assert_eq!(
            (e.kind, e.cause),
            (ErrorKind::AccessDenied, Some(Cause::CredentialsRefused))
        );
        assert_eq!(
            e.to_string(),
            "AWS refused the credentials (ListNamespaces: UnrecognizedClientException): \
             check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
        );
        let e = AwsError::service("DescribeTasks", "ExpiredTokenException", "expired", 400);
        assert_eq!(e.cause, Some(Cause::CredentialsExpired));
        // An IAM denial is about the action, not the key: no cause, the AWS words kept.
        let e = AwsError::service("GetService", "AccessDeniedException", "not authorized", 400);
        assert_eq!((e.kind, e.cause), (ErrorKind::AccessDenied, None));
        assert_eq!(
            e.to_string(),
            "GetService failed (access_denied): AccessDeniedException: not authorized"
        );
    }

    #[test]
    fn missing_credentials_are_found_by_type_in_the_sdk_error() {
        use aws_smithy_runtime_api::client::result::ConnectorError;
        let dispatch =
            |e: CredentialsError| -> SdkError<
                aws_sdk_servicediscovery::operation::list_namespaces::ListNamespacesError,
                HttpResponse,
            > { SdkError::dispatch_failure(ConnectorError::other(Box::new(e), None)) };
        let e = AwsError::from_sdk(
            "ListNamespaces",
            dispatch(CredentialsError::not_loaded(
                "no providers in chain provided credentials",
            )),
        );
        assert_eq!(
            (e.kind, e.cause),
            (ErrorKind::AccessDenied, Some(Cause::NoCredentials))
        );
        assert_eq!(
            e.to_string(),
            "no AWS credentials found (ListNamespaces): set AWS_ACCESS_KEY_ID and \
             AWS_SECRET_ACCESS_KEY, or AWS_PROFILE (in ECS: a task role)"
        );
        let e = AwsError::from_sdk(
            "ListNamespaces",
            dispatch(CredentialsError::provider_error(
                "the SSO session has expired",
            )),
        );
        assert_eq!(
            (e.kind, e.cause),
            (ErrorKind::Other, Some(Cause::CredentialsUnavailable))
        );
        assert!(e.to_string().contains("the SSO session has expired"), "{e}");
        assert!(
            !e.to_string().contains("ProviderError {"),
            "no debug dump: {e}"
        );
    }

    #[test]
    fn a_call_through_a_role_that_failed_carries_the_role_failure() {
        use aws_smithy_runtime_api::client::result::ConnectorError;
        let through = |role: AwsError| {
            let e: SdkError<
                aws_sdk_servicediscovery::operation::list_namespaces::ListNamespacesError,
                HttpResponse,
            > = SdkError::dispatch_failure(ConnectorError::other(
                Box::new(CredentialsError::provider_error(role)),
                None,
            ));
            AwsError::from_sdk("ListNamespaces", e)
        };
        // The sidecar's own key refused by STS: the credentials' line, for this call.
        let mut refused = AwsError::service("AssumeRole", "InvalidClientTokenId", "bad", 403);
        refused.message = "role arn:aws:iam::111111111111:role/r: InvalidClientTokenId".into();
        let e = through(refused);
        assert_eq!(
            (e.kind, e.cause),
            (ErrorKind::Other, Some(Cause::CredentialsRefused))
        );
        assert_eq!(
            e.to_string(),
            "AWS refused the credentials (ListNamespaces: role \
             arn:aws:iam::111111111111:role/r: InvalidClientTokenId): check AWS_ACCESS_KEY_ID \
             and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
        );
        // A role STS refuses: no cause (no setting fixes it), the AssumeRole's words.
        let denied = AwsError::service("AssumeRole", "AccessDenied", "not authorized", 403);
        let e = through(denied);
        assert_eq!((e.kind, e.cause), (ErrorKind::Other, None));
        assert_eq!(
            e.to_string(),
            "ListNamespaces failed (other): AssumeRole failed (access_denied): \
             AccessDenied: not authorized"
        );
    }
}
