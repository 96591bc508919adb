//! At-least-once and out-of-order delivery: an event seen before (by its
//! EventBridge id) is a duplicate, and a task event older than one already seen
//! for that task (by ECS's `detail.version`) is out of order. Either changes
//! nothing. Pure: no clock of its own, bounded memory.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use super::message::{Change, Event};

/// Where an event stands among those seen before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Newer than anything seen of its task: act on it.
    New,
    /// The same event again (same id, or the same version of its task).
    Duplicate,
    /// Older than an event already seen of its task.
    OutOfOrder,
}

impl Order {
    /// The `outcome` label of an event not acted on.
    pub fn outcome(self) -> &'static str {
        match self {
            Order::New => "new",
            Order::Duplicate => "duplicate",
            Order::OutOfOrder => "out_of_order",
        }
    }
}

/// The events and task versions seen lately.
#[derive(Debug)]
pub struct Seen {
    /// How long an entry is remembered: longer than a message can stay in the
    /// queue.
    keep: Duration,
    ids: HashMap<String, Instant>,
    /// Task id -> the highest version seen, and when.
    versions: HashMap<String, (i64, Instant)>,
    /// When entries were last swept.
    swept: Option<Instant>,
}

impl Seen {
    /// Remembers events for `keep`.
    pub fn new(keep: Duration) -> Self {
        Seen {
            keep,
            ids: HashMap::new(),
            versions: HashMap::new(),
            swept: None,
        }
    }

    /// Places `event`, received `now`, among those seen, and remembers it.
    pub fn note(&mut self, event: &Event, now: Instant) -> Order {
        self.sweep(now);
        if !event.id.is_empty() && self.ids.insert(event.id.clone(), now).is_some() {
            return Order::Duplicate;
        }
        let Change::Task(t) = &event.change else {
            return Order::New;
        };
        match self.versions.get(&t.task_id) {
            Some((v, _)) if *v == t.version => Order::Duplicate,
            Some((v, _)) if *v > t.version => Order::OutOfOrder,
            _ => {
                self.versions.insert(t.task_id.clone(), (t.version, now));
                Order::New
            }
        }
    }

    /// Entries remembered (ids and tasks).
    pub fn len(&self) -> usize {
        self.ids.len() + self.versions.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets what is older than `keep`, at most once a minute.
    fn sweep(&mut self, now: Instant) {
        if self
            .swept
            .is_some_and(|s| now.saturating_duration_since(s) < Duration::from_secs(60))
        {
            return;
        }
        self.swept = Some(now);
        let keep = self.keep;
        let fresh = |at: &Instant| now.saturating_duration_since(*at) < keep;
        self.ids.retain(|_, at| fresh(at));
        self.versions.retain(|_, (_, at)| fresh(at));
    }
}
