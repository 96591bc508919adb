//! The queue of ECS events (`--events-queue-url`) over the AWS SDK for Rust: a long
//! poll for up to 10 messages, a batch delete, and the queue's attributes (for
//! `check`). Every call is counted like any other AWS call.

use std::sync::Arc;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, QueueAttributeName};

use super::calls::counted;
use super::{AwsError, AwsMetrics, ErrorKind, Queue, QueueMessage};

/// Most messages one ReceiveMessage returns, and most entries one
/// DeleteMessageBatch takes.
pub const SQS_BATCH: usize = 10;

/// Longest long poll SQS allows.
pub const LONG_POLL: Duration = Duration::from_secs(20);

/// An SQS queue through the SDK; counts every call in `metrics`.
#[derive(Clone)]
pub struct SdkQueue {
    client: Client,
    url: String,
    metrics: Arc<AwsMetrics>,
}

impl SdkQueue {
    /// The queue at `url`. Its calls get `api_timeout` on top of the long poll
    /// (the SDK configuration's own operation timeout is shorter than a long poll).
    pub fn new(
        sdk: &SdkConfig,
        url: &str,
        api_timeout: Duration,
        metrics: Arc<AwsMetrics>,
    ) -> Self {
        let timeout = LONG_POLL + api_timeout;
        let conf = aws_sdk_sqs::config::Builder::from(sdk)
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3).min(api_timeout))
                    .operation_attempt_timeout(timeout)
                    .operation_timeout(timeout)
                    .build(),
            )
            .build();
        SdkQueue {
            client: Client::from_conf(conf),
            url: url.to_string(),
            metrics,
        }
    }
}

fn seconds(d: Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX)
}

impl Queue for SdkQueue {
    fn url(&self) -> &str {
        &self.url
    }

    async fn receive(
        &self,
        wait: Duration,
        max: usize,
        visibility: Option<Duration>,
    ) -> Result<Vec<QueueMessage>, AwsError> {
        const OP: &str = "ReceiveMessage";
        let request = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.clamp(1, SQS_BATCH) as i32)
            .wait_time_seconds(seconds(wait.min(LONG_POLL)))
            .set_visibility_timeout(visibility.map(seconds))
            .send();
        let out = counted(&self.metrics, OP, request).await?;
        Ok(out
            .messages()
            .iter()
            .filter_map(|m| {
                Some(QueueMessage {
                    id: m.message_id().unwrap_or_default().to_string(),
                    receipt: m.receipt_handle()?.to_string(),
                    body: m.body().unwrap_or_default().to_string(),
                })
            })
            .collect())
    }

    async fn delete(&self, receipts: &[String]) -> Result<usize, AwsError> {
        const OP: &str = "DeleteMessageBatch";
        let mut failed = 0;
        for chunk in receipts.chunks(SQS_BATCH) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(r)
                        .build()
                        .map_err(|e| AwsError::new(OP, ErrorKind::Other, e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let request = self
                .client
                .delete_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send();
            failed += counted(&self.metrics, OP, request).await?.failed().len();
        }
        Ok(failed)
    }

    async fn waiting(&self) -> Result<u64, AwsError> {
        const OP: &str = "GetQueueAttributes";
        let request = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .send();
        let out = counted(&self.metrics, OP, request).await?;
        Ok(out
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::ApproximateNumberOfMessages))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0))
    }
}
