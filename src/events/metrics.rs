//! The event stream's metrics: events by kind and outcome, the time from an
//! event's arrival to the file showing it, the refreshes events caused, and the
//! queue's errors.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::aws::AwsError;

/// An event's kind and what became of it.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub kind: &'static str,
    pub outcome: &'static str,
}

/// One refresh of a service an event caused, by how it went.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefreshLabels {
    pub outcome: &'static str,
}

/// A failed queue call: the operation and the error kind.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueErrorLabels {
    pub operation: &'static str,
    pub kind: &'static str,
}

/// Every metric of the event stream (registered only with --events-queue-url).
#[derive(Debug)]
pub struct EventMetrics {
    /// Events read from the queue, by kind and outcome.
    pub received: Family<EventLabels, Counter>,
    /// Seconds from receiving an event to the file showing what it announced.
    pub to_file: Histogram,
    /// Service refreshes caused by events: `changed`, `unchanged`, `failed`,
    /// `gave_up` (Cloud Map did not show the change within the settle time).
    pub refreshes: Family<RefreshLabels, Counter>,
    /// Failed queue calls (ReceiveMessage, DeleteMessageBatch), by kind.
    pub queue_errors: Family<QueueErrorLabels, Counter>,
    /// 1 while the queue cannot be read (polling goes on meanwhile).
    pub queue_failing: Gauge,
    /// Touched services waiting to be looked at again.
    pub pending: Gauge,
}

impl Default for EventMetrics {
    fn default() -> Self {
        EventMetrics {
            received: Family::default(),
            to_file: Histogram::new([0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0]),
            refreshes: Family::default(),
            queue_errors: Family::default(),
            queue_failing: Gauge::default(),
            pending: Gauge::default(),
        }
    }
}

impl EventMetrics {
    /// Registers every family in `registry` (prefixed `cloudmap_sd_` there).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "events_received",
            "ECS events read from the queue, by kind (task_state_change, cloudmap_api_call, other, malformed) and outcome",
            self.received.clone(),
        );
        registry.register(
            "event_to_file_seconds",
            "Time from receiving an event to the file showing what it announced",
            self.to_file.clone(),
        );
        registry.register(
            "event_refreshes",
            "Cloud Map service refreshes caused by events, by outcome (changed, unchanged, failed, gave_up)",
            self.refreshes.clone(),
        );
        registry.register(
            "events_queue_errors",
            "Failed calls to the events queue, by operation and error kind",
            self.queue_errors.clone(),
        );
        registry.register(
            "events_queue_failing",
            "1 while the events queue cannot be read (polling goes on)",
            self.queue_failing.clone(),
        );
        registry.register(
            "events_pending",
            "Services an event touched that are looked at again until Cloud Map shows the change",
            self.pending.clone(),
        );
    }

    /// Counts one event.
    pub fn event(&self, kind: &'static str, outcome: &'static str) {
        self.received
            .get_or_create(&EventLabels { kind, outcome })
            .inc();
    }

    /// Counts one refresh of a service.
    pub fn refresh(&self, outcome: &'static str) {
        self.refreshes
            .get_or_create(&RefreshLabels { outcome })
            .inc();
    }

    /// Counts one failed queue call.
    pub fn queue_error(&self, e: &AwsError) {
        let labels = QueueErrorLabels {
            operation: e.operation,
            kind: e.kind.as_str(),
        };
        self.queue_errors.get_or_create(&labels).inc();
    }
}
