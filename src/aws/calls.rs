//! Call accounting: every AWS API call is counted by operation and outcome
//! (`success`, an error kind, or `abandoned` when the cycle deadline dropped it),
//! and by account when the sidecar discovers in other accounts, in the adapters'
//! own metrics; and the cycle deadline itself ([`by_deadline`]).

use std::future::Future;
use std::sync::Arc;

use aws_sdk_servicediscovery::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::http::Response as HttpResponse;
use prometheus_client::encoding::{EncodeLabel, EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::AwsError;

/// `operation` and `outcome` of one AWS API call, and its `account` when calls
/// are counted per account (no `account` label otherwise).
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct ApiCallLabels {
    pub operation: &'static str,
    pub outcome: &'static str,
    pub account: Option<Arc<str>>,
}

impl EncodeLabelSet for ApiCallLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        ("operation", self.operation).encode(encoder.encode_label())?;
        ("outcome", self.outcome).encode(encoder.encode_label())?;
        if let Some(account) = &self.account {
            ("account", &**account).encode(encoder.encode_label())?;
        }
        Ok(())
    }
}

/// The adapters' metrics: `cloudmap_sd_aws_api_calls_total`. One per account the
/// sidecar discovers in ([`AwsMetrics::for_account`]), all counting into one family.
#[derive(Debug, Default)]
pub struct AwsMetrics {
    /// AWS API calls by operation and outcome (`success`, an error kind, `abandoned`).
    pub api_calls: Family<ApiCallLabels, Counter>,
    /// The `account` label of the calls counted here; None: no label.
    account: Option<Arc<str>>,
}

impl AwsMetrics {
    /// Registers every family in `registry` (prefixed `cloudmap_sd_` there).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "aws_api_calls",
            "AWS API calls by operation and outcome",
            self.api_calls.clone(),
        );
    }

    /// Counts one AWS API call.
    pub fn api_call(&self, operation: &'static str, outcome: &'static str) {
        let labels = ApiCallLabels {
            operation,
            outcome,
            account: self.account.clone(),
        };
        self.api_calls.get_or_create(&labels).inc();
    }

    /// The same family, counting calls with `account` as their `account` label.
    pub fn for_account(&self, account: Arc<str>) -> AwsMetrics {
        AwsMetrics {
            api_calls: self.api_calls.clone(),
            account: Some(account),
        }
    }
}

/// One API call in flight: counted with its outcome by [`InFlight::end`], or as
/// `abandoned` if it is dropped first (the cycle deadline gave up on it, though the
/// request may have reached AWS).
pub(crate) struct InFlight<'a> {
    metrics: &'a AwsMetrics,
    op: &'static str,
    armed: bool,
}

impl<'a> InFlight<'a> {
    pub(crate) fn start(metrics: &'a AwsMetrics, op: &'static str) -> Self {
        InFlight {
            metrics,
            op,
            armed: true,
        }
    }

    /// Counts the call with the outcome of `r`, and passes `r` through.
    pub(crate) fn end<T>(mut self, r: Result<T, AwsError>) -> Result<T, AwsError> {
        self.armed = false;
        let outcome = match &r {
            Ok(_) => "success",
            Err(e) => e.kind.as_str(),
        };
        self.metrics.api_call(self.op, outcome);
        r
    }

    /// No request was made after all (a paginator that had no page left).
    pub(crate) fn cancel(mut self) {
        self.armed = false;
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.metrics.api_call(self.op, "abandoned");
        }
    }
}

/// One SDK request (`send`: its `send()`), counted, its error classified.
pub(crate) async fn counted<T, E>(
    metrics: &AwsMetrics,
    op: &'static str,
    send: impl Future<Output = Result<T, SdkError<E, HttpResponse>>>,
) -> Result<T, AwsError>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let call = InFlight::start(metrics, op);
    let r = send.await.map_err(|e| AwsError::from_sdk(op, e));
    call.end(r)
}

/// The next page of a paginator (`next`: its `next()`), counted as one call; None
/// when there is no page left (no request made).
pub(crate) async fn next_page<T, E>(
    metrics: &AwsMetrics,
    op: &'static str,
    next: impl Future<Output = Option<Result<T, SdkError<E, HttpResponse>>>>,
) -> Option<Result<T, AwsError>>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let call = InFlight::start(metrics, op);
    let Some(page) = next.await else {
        call.cancel();
        return None;
    };
    Some(call.end(page.map_err(|e| AwsError::from_sdk(op, e))))
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_call_dropped_at_the_deadline_is_counted_as_abandoned() {
        let metrics = AwsMetrics::default();
        let slow = async {
            let call = InFlight::start(&metrics, "DiscoverInstances");
            tokio::time::sleep(Duration::from_secs(60)).await;
            call.end(Ok(()))
        };
        let deadline = tokio::time::Instant::now() + Duration::from_millis(10);
        let r = by_deadline(deadline, "DiscoverInstances", slow).await;
        assert!(r.unwrap_err().is_deadline());
        let quick = async { InFlight::start(&metrics, "ListServices").end(Ok(())) };
        by_deadline(deadline, "ListServices", quick).await.unwrap();
        InFlight::start(&metrics, "ListNamespaces").cancel();
        let mut registry = Registry::with_prefix("cloudmap_sd");
        metrics.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
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
    fn calls_of_an_account_carry_its_id_and_others_none() {
        let metrics = AwsMetrics::default();
        let other = metrics.for_account("111111111111".into());
        metrics.api_call("ListServices", "success");
        other.api_call("ListServices", "success");
        other.api_call("AssumeRole", "access_denied");
        let mut registry = Registry::with_prefix("cloudmap_sd");
        metrics.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            r#"cloudmap_sd_aws_api_calls_total{operation="ListServices",outcome="success"} 1"#,
            r#"cloudmap_sd_aws_api_calls_total{operation="ListServices",outcome="success",account="111111111111"} 1"#,
            r#"cloudmap_sd_aws_api_calls_total{operation="AssumeRole",outcome="access_denied",account="111111111111"} 1"#,
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
    }
}
