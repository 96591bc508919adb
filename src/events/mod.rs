//! The ECS event stream: ECS sends "ECS Task State Change" events to EventBridge,
//! a rule delivers them to an SQS queue (`--events-queue-url`), and the sidecar
//! reads them to learn *which* Cloud Map services to read again now, instead of
//! waiting for the next cycle. Events sit beside discovery and only tell it what
//! to refresh: the file still holds only what Cloud Map says, and the cycle stays
//! the safety net for anything an event misses.
//!
//! - [`message`]: one message read (pure): the envelope, the task, what Cloud
//!   Map should show once ECS has acted;
//! - [`order`]: duplicates and out-of-order events (pure);
//! - [`consumer`]: the long poll of the queue and the deletes, with a backoff
//!   when the queue fails; hands [`Touch`]es to the run loop;
//! - [`metrics`]: the events' own metrics.
//!
//! The run loop (`sidecar::run`) maps each touch to the services it concerns
//! (by task id, or by the ECS service and cluster the instances name) and
//! refreshes them between cycles.

use std::time::Duration;

use tokio::time::Instant;

pub mod consumer;
pub mod message;
pub mod metrics;
pub mod order;

pub use consumer::{Feed, spawn};
pub use message::{Expect, NotAnEvent, parse};
pub use metrics::EventMetrics;
pub use order::{Order, Seen};

#[cfg(test)]
mod tests;

/// How the sidecar follows the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsOptions {
    /// The SQS queue's URL.
    pub queue_url: String,
    /// How long one ReceiveMessage waits for a message (the long poll).
    pub wait: Duration,
    /// How long a service is looked at again, on a short backoff, while Cloud Map
    /// does not yet show what an event announced (a task RUNNING but not yet
    /// registered, or STOPPED but still there).
    pub settle: Duration,
    /// How long an event id and a task's version are remembered.
    pub remember: Duration,
}

impl EventsOptions {
    /// The defaults for `queue_url`: a 20 s long poll, a minute to settle, two
    /// hours of memory (longer than the queue keeps a message).
    pub fn new(queue_url: impl Into<String>) -> Self {
        EventsOptions {
            queue_url: queue_url.into(),
            wait: Duration::from_secs(20),
            settle: Duration::from_secs(60),
            remember: Duration::from_secs(2 * 60 * 60),
        }
    }
}

/// What an event tells the run loop: which instance to look for, where, and
/// whether it should be there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Touch {
    /// The account the event comes from (None: the envelope named none).
    pub account: Option<String>,
    pub target: Target,
    /// True: the instance should be registered; false: deregistered.
    pub present: bool,
    /// When the message was received.
    pub received: Instant,
    /// The `kind` label of the event.
    pub kind: &'static str,
    /// The message's receipt handle: handed back through [`Feed::done`] once the
    /// loop has handled the touch, and the message is then deleted.
    pub receipt: String,
}

/// Where the instance of a touch is found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An ECS task: in the services that hold its id, or that instances of its
    /// ECS service were registered in.
    Task {
        task_id: String,
        cluster: String,
        ecs_service: Option<String>,
    },
    /// A Cloud Map instance of a known service (a CloudTrail record).
    Instance {
        service_id: String,
        instance_id: String,
    },
}

impl Touch {
    /// The Cloud Map instance id (the task id for a task).
    pub fn instance(&self) -> &str {
        match &self.target {
            Target::Task { task_id, .. } => task_id,
            Target::Instance { instance_id, .. } => instance_id,
        }
    }
}

/// The `outcome` labels of an event, each its own fate.
pub mod outcome {
    /// Services were read again for it.
    pub const REFRESHED: &str = "refreshed";
    /// Cloud Map, as last read, already showed what it announced: no call.
    pub const CURRENT: &str = "current";
    /// No service known to discovery (in its account) holds its task or ECS
    /// service: the cycle will find it if it matters.
    pub const UNMATCHED: &str = "unmatched";
    /// A task still starting, or an event of another kind: nothing to do.
    pub const IGNORED: &str = "ignored";
    pub const DUPLICATE: &str = "duplicate";
    pub const OUT_OF_ORDER: &str = "out_of_order";
    /// Could not be read: deleted, counted and logged.
    pub const MALFORMED: &str = "malformed";
    /// Every value, for documentation and tests.
    pub const ALL: [&str; 7] = [
        REFRESHED,
        CURRENT,
        UNMATCHED,
        IGNORED,
        DUPLICATE,
        OUT_OF_ORDER,
        MALFORMED,
    ];
}
