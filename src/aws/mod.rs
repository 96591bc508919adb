//! AWS behind narrow, domain-shaped traits. The real adapters own pagination, batch
//! limits, error classification and call counting; discovery sees only plain structs.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;

use aws_sdk_servicediscovery::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::http::Response as HttpResponse;

use crate::config::HealthStatus;
use crate::targets::Instance;

pub mod cloudmap;
pub mod ec2;
pub mod ecs;
pub mod endpoint;

/// Largest batch DescribeTasks, DescribeContainerInstances (and our
/// DescribeInstances-by-id calls) take.
pub const BATCH: usize = 100;

/// A Cloud Map namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    pub id: String,
    pub name: String,
}

/// A Cloud Map service as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSummary {
    pub id: String,
    pub arn: String,
    pub name: String,
}

/// One ListServices page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServicePage {
    pub services: Vec<ServiceSummary>,
    /// The token of the next page; None on the last.
    pub next: Option<String>,
}

/// What discovery needs from AWS Cloud Map.
pub trait CloudMap: Send + Sync {
    /// Every namespace in the Region, all pages.
    fn namespaces(&self) -> impl Future<Output = Result<Vec<Namespace>, AwsError>> + Send;
    /// One page of the services in the Region: the first for `None`, else the one
    /// the token of the page before names.
    fn services_page(
        &self,
        token: Option<String>,
    ) -> impl Future<Output = Result<ServicePage, AwsError>> + Send;
    /// The namespace id of a service (it never changes, so callers cache it).
    fn service_namespace(
        &self,
        service_id: &str,
    ) -> impl Future<Output = Result<String, AwsError>> + Send;
    /// A service's tags.
    fn tags(
        &self,
        service_arn: &str,
    ) -> impl Future<Output = Result<BTreeMap<String, String>, AwsError>> + Send;
    /// The instances revision of a service: changes on register and deregister.
    fn instances_revision(
        &self,
        namespace: &str,
        service: &str,
    ) -> impl Future<Output = Result<i64, AwsError>> + Send;
    /// A service's instances, up to the Cloud Map quota of 1000 per service.
    fn instances(
        &self,
        namespace: &str,
        service: &str,
        health: HealthStatus,
    ) -> impl Future<Output = Result<Vec<Instance>, AwsError>> + Send;
}

/// ECS facts about one task that never change during its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskFacts {
    /// The task id (last part of the task ARN), which is the Cloud Map instance id.
    pub task_id: String,
    /// `EC2`, `FARGATE` or `EXTERNAL`.
    pub launch_type: Option<String>,
    /// Revision of the task definition.
    pub revision: Option<String>,
    pub container_instance_arn: Option<String>,
}

/// An EC2 instance as far as labels need it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Host {
    pub instance_id: String,
    /// The `Name` tag.
    pub name: Option<String>,
    pub instance_type: Option<String>,
    pub availability_zone: Option<String>,
    pub private_ip: Option<String>,
}

/// What enrichment needs from Amazon ECS.
pub trait Ecs: Send + Sync {
    /// Facts about tasks of one cluster; tasks ECS does not know are left out.
    /// Any number of ids: the adapter batches.
    fn tasks(
        &self,
        cluster: &str,
        task_ids: &[String],
    ) -> impl Future<Output = Result<Vec<TaskFacts>, AwsError>> + Send;
    /// EC2 instance id of each container instance ARN of one cluster.
    fn container_instances(
        &self,
        cluster: &str,
        arns: &[String],
    ) -> impl Future<Output = Result<Vec<(String, String)>, AwsError>> + Send;
    /// The ARNs of the container instances registered in one cluster (every state
    /// but INACTIVE), all pages. A cluster that does not exist has none.
    fn list_container_instances(
        &self,
        cluster: &str,
    ) -> impl Future<Output = Result<Vec<String>, AwsError>> + Send;
}

/// What enrichment needs from Amazon EC2.
pub trait Ec2: Send + Sync {
    /// The instances with these ids that exist. Any number of ids: the adapter batches.
    fn hosts(&self, ids: &[String]) -> impl Future<Output = Result<Vec<Host>, AwsError>> + Send;
    /// Running instances with tag `key` = `value`, all pages.
    fn hosts_tagged(
        &self,
        key: &str,
        value: &str,
    ) -> impl Future<Output = Result<Vec<Host>, AwsError>> + Send;
}

/// One API call in flight: counted with its outcome by [`Call::end`], or as
/// `abandoned` if it is dropped first (the cycle deadline gave up on it, though the
/// request may have reached AWS).
pub(crate) struct Call<'a> {
    metrics: &'a crate::metrics::Metrics,
    op: &'static str,
    armed: bool,
}

impl<'a> Call<'a> {
    pub(crate) fn start(metrics: &'a crate::metrics::Metrics, op: &'static str) -> Self {
        Call {
            metrics,
            op,
            armed: true,
        }
    }

    /// Counts the call with the outcome of `r`, and passes `r` through.
    pub(crate) fn end<T>(mut self, r: Result<T, AwsError>) -> Result<T, AwsError> {
        self.armed = false;
        record(self.metrics, self.op, r)
    }

    /// No request was made after all (a paginator that had no page left).
    pub(crate) fn cancel(mut self) {
        self.armed = false;
    }
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.metrics.api_call(self.op, "abandoned");
        }
    }
}

/// The next page of a paginator (`next`: its `next()`), counted as one call; None
/// when there is no page left (no request made).
pub(crate) async fn next_page<T, E>(
    metrics: &crate::metrics::Metrics,
    op: &'static str,
    next: impl Future<Output = Option<Result<T, SdkError<E, HttpResponse>>>>,
) -> Option<Result<T, AwsError>>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let call = Call::start(metrics, op);
    let Some(page) = next.await else {
        call.cancel();
        return None;
    };
    Some(call.end(page.map_err(|e| AwsError::from_sdk(op, e))))
}

/// Counts one call in `metrics` and passes the result through.
pub(crate) fn record<T>(
    metrics: &crate::metrics::Metrics,
    op: &'static str,
    r: Result<T, AwsError>,
) -> Result<T, AwsError> {
    metrics.api_call(
        op,
        match &r {
            Ok(_) => "success",
            Err(e) => e.kind.as_str(),
        },
    );
    r
}

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
#[derive(Debug, thiserror::Error)]
#[error("{operation} failed ({kind}): {message}")]
pub struct AwsError {
    pub operation: &'static str,
    pub kind: ErrorKind,
    pub message: String,
}

impl AwsError {
    pub fn new(operation: &'static str, kind: ErrorKind, message: impl Into<String>) -> Self {
        AwsError {
            operation,
            kind,
            message: message.into(),
        }
    }

    /// Classifies an SDK error of any AWS service.
    /// Whether AWS refused the credentials rather than the action (the message of a
    /// service error starts with its code, see [`AwsError::from_sdk`]).
    pub fn credentials_refused(&self) -> bool {
        let code = self.message.split(':').next().unwrap_or("");
        self.kind == ErrorKind::AccessDenied && CREDENTIAL_CODES.contains(&code)
    }

    pub fn from_sdk<E>(operation: &'static str, err: SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let kind = match &err {
            SdkError::TimeoutError(_) => ErrorKind::Timeout,
            SdkError::DispatchFailure(d) if d.is_timeout() => ErrorKind::Timeout,
            SdkError::DispatchFailure(d) if d.is_io() => ErrorKind::Network,
            SdkError::DispatchFailure(_) => ErrorKind::Other,
            SdkError::ResponseError(_) => ErrorKind::Server,
            SdkError::ServiceError(ctx) => classify(ctx.err().code(), ctx.raw().status().as_u16()),
            _ => ErrorKind::Other,
        };
        let message = match &err {
            SdkError::ServiceError(ctx) => {
                let e = ctx.err();
                match (e.code(), e.message()) {
                    (Some(c), Some(m)) => format!("{c}: {m}"),
                    (Some(c), None) => c.to_string(),
                    _ => format!(
                        "HTTP {}: {}",
                        ctx.raw().status().as_u16(),
                        DisplayErrorContext(&err)
                    ),
                }
            }
            _ => DisplayErrorContext(&err).to_string(),
        };
        AwsError::new(operation, kind, message)
    }
}

/// The message of a call abandoned at the cycle deadline.
const DEADLINE: &str = "abandoned at the cycle deadline (--cycle-timeout)";

impl AwsError {
    /// A call abandoned because the cycle deadline came.
    pub fn deadline(operation: &'static str) -> Self {
        AwsError::new(operation, ErrorKind::Timeout, DEADLINE)
    }

    pub fn is_deadline(&self) -> bool {
        self.kind == ErrorKind::Timeout && self.message == DEADLINE
    }
}

/// Runs `call`, giving up at `deadline` with [`AwsError::deadline`].
pub async fn by_deadline<T>(
    deadline: tokio::time::Instant,
    operation: &'static str,
    call: impl Future<Output = Result<T, AwsError>>,
) -> Result<T, AwsError> {
    tokio::time::timeout_at(deadline, call)
        .await
        .unwrap_or_else(|_| Err(AwsError::deadline(operation)))
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

    #[tokio::test]
    async fn a_call_dropped_at_the_deadline_is_counted_as_abandoned() {
        let metrics = crate::metrics::Metrics::new();
        let slow = async {
            let call = Call::start(&metrics, "DiscoverInstances");
            tokio::time::sleep(std::time::Duration::from_secs(60)).await;
            call.end(Ok(()))
        };
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(10);
        let r = by_deadline(deadline, "DiscoverInstances", slow).await;
        assert!(r.unwrap_err().is_deadline());
        let quick = async { Call::start(&metrics, "ListServices").end(Ok(())) };
        by_deadline(deadline, "ListServices", quick).await.unwrap();
        Call::start(&metrics, "ListNamespaces").cancel();
        let text = metrics.encode();
        assert!(
            text.contains(
                r#"cloudmap_sd_aws_api_calls_total{operation="DiscoverInstances",outcome="abandoned"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(
            r#"cloudmap_sd_aws_api_calls_total{operation="ListServices",outcome="success"} 1"#
        ));
        assert!(!text.contains("ListNamespaces"), "{text}");
    }

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
