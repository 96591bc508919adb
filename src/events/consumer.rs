//! The queue's consumer: a long poll for up to 10 messages at a time, each read
//! ([`super::message`]) and placed among those seen ([`super::order`]); what is
//! worth acting on goes to the run loop as a [`Touch`], the rest is deleted at
//! once. The loop hands back the receipt of each touch it handled, and a second
//! task deletes those messages in batches. A queue that cannot be read is
//! reported (metrics, one log line per kind of failure) and read again on a
//! backoff; nothing else depends on it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::message::{Change, Expect, NotAnEvent, parse};
use super::order::{Order, Seen};
use super::{EventMetrics, EventsOptions, Target, Touch, outcome};
use crate::aws::sqs::SQS_BATCH;
use crate::aws::{AwsError, ErrorKind, Queue, QueueMessage};

/// Batches of touches that wait for the run loop (it takes them between cycles).
const QUEUED_BATCHES: usize = 64;

/// Longest wait before reading a failing queue again.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// What the run loop gets from the consumer.
pub struct Feed {
    /// Touches, a received batch at a time.
    pub touches: mpsc::Receiver<Vec<Touch>>,
    /// Receipts of handled touches: their messages are deleted.
    pub done: mpsc::UnboundedSender<String>,
    /// The consumer's two tasks; they end with `shutdown`.
    pub tasks: Vec<JoinHandle<()>>,
}

/// Starts reading `queue` until `shutdown`.
pub fn spawn<Q: Queue>(
    queue: Q,
    options: &EventsOptions,
    metrics: Arc<EventMetrics>,
    shutdown: CancellationToken,
) -> Feed {
    let queue = Arc::new(queue);
    let (touch_tx, touches) = mpsc::channel(QUEUED_BATCHES);
    let (done, done_rx) = mpsc::unbounded_channel();
    let sorter = Sorter::new(options.remember, metrics.clone());
    let receiver = tokio::spawn(receive_loop(
        queue.clone(),
        options.wait,
        sorter,
        touch_tx,
        done.clone(),
        shutdown.clone(),
    ));
    let deleter = tokio::spawn(delete_loop(queue, done_rx, metrics, shutdown));
    Feed {
        touches,
        done,
        tasks: vec![receiver, deleter],
    }
}

/// The next wait after a failed call: 1 s, doubling, at most a minute.
fn next_backoff(last: Duration) -> Duration {
    (last * 2).clamp(Duration::from_secs(1), MAX_BACKOFF)
}

async fn receive_loop<Q: Queue>(
    queue: Arc<Q>,
    wait: Duration,
    mut sorter: Sorter,
    touches: mpsc::Sender<Vec<Touch>>,
    done: mpsc::UnboundedSender<String>,
    shutdown: CancellationToken,
) {
    let metrics = sorter.metrics.clone();
    let mut failing: Option<ErrorKind> = None;
    let mut backoff = Duration::ZERO;
    info!(queue = queue.url(), "following ECS events");
    loop {
        let r = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = queue.receive(wait, SQS_BATCH, None) => r,
        };
        let messages = match r {
            Ok(m) => m,
            Err(e) => {
                backoff = next_backoff(backoff);
                failed(queue.url(), &e, &mut failing, backoff, &metrics);
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => continue,
                }
            }
        };
        if failing.take().is_some() {
            metrics.queue_failing.set(0);
            info!(queue = queue.url(), "the events queue can be read again");
        }
        backoff = Duration::ZERO;
        let (batch, drop) = sorter.sort(messages, Instant::now());
        for receipt in drop {
            let _ = done.send(receipt);
        }
        if batch.is_empty() {
            continue;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            sent = touches.send(batch) => if sent.is_err() { return },
        }
    }
}

/// Reports a failed queue call: counted every time, logged when the kind of
/// failure changes.
fn failed(
    queue: &str,
    e: &AwsError,
    failing: &mut Option<ErrorKind>,
    backoff: Duration,
    metrics: &EventMetrics,
) {
    metrics.queue_error(e);
    metrics.queue_failing.set(1);
    if *failing != Some(e.kind) {
        warn!(queue, error = %e, retry_in = %humantime::format_duration(backoff),
            "cannot read the events queue; discovery goes on every --interval without events");
    }
    *failing = Some(e.kind);
}

async fn delete_loop<Q: Queue>(
    queue: Arc<Q>,
    mut done: mpsc::UnboundedReceiver<String>,
    metrics: Arc<EventMetrics>,
    shutdown: CancellationToken,
) {
    let mut failing = false;
    loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = done.recv() => match r { Some(r) => r, None => return },
        };
        let mut batch = vec![first];
        while batch.len() < SQS_BATCH {
            match done.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        match queue.delete(&batch).await {
            Ok(refused) => {
                if refused > 0 {
                    debug!(
                        refused,
                        "messages could not be deleted; they come again and are duplicates then"
                    );
                }
                if std::mem::take(&mut failing) {
                    info!(
                        queue = queue.url(),
                        "messages of the events queue are deleted again"
                    );
                }
            }
            Err(e) => {
                metrics.queue_error(&e);
                if !std::mem::replace(&mut failing, true) {
                    warn!(queue = queue.url(), error = %e,
                        "cannot delete handled messages; they come again and are counted as duplicates");
                }
            }
        }
    }
}

/// Reads messages and sorts them: touches for the loop, receipts to delete now.
pub struct Sorter {
    seen: Seen,
    metrics: Arc<EventMetrics>,
}

impl Sorter {
    pub fn new(remember: Duration, metrics: Arc<EventMetrics>) -> Self {
        Sorter {
            seen: Seen::new(remember),
            metrics,
        }
    }

    /// The touches in `messages` (received `now`), and the receipts of the
    /// messages that need nothing more than a delete; every message is counted.
    pub fn sort(&mut self, messages: Vec<QueueMessage>, now: Instant) -> (Vec<Touch>, Vec<String>) {
        let mut touches = Vec::new();
        let mut drop = Vec::new();
        for m in messages {
            match self.touch(&m, now) {
                Some(t) => touches.push(t),
                None => drop.push(m.receipt),
            }
        }
        (touches, drop)
    }

    /// The touch of one message, or None (counted with its outcome).
    fn touch(&mut self, m: &QueueMessage, now: Instant) -> Option<Touch> {
        let event = match parse(&m.body) {
            Ok(e) => e,
            Err(e) => {
                let (kind, outcome) = match &e {
                    NotAnEvent::Malformed(_) => (e.kind(), outcome::MALFORMED),
                    NotAnEvent::Other(_) => (e.kind(), outcome::IGNORED),
                };
                self.metrics.event(kind, outcome);
                match e {
                    NotAnEvent::Malformed(why) => warn!(message = %m.id, error = %why,
                        "unreadable message in the events queue; deleted"),
                    NotAnEvent::Other(what) => {
                        debug!(message = %m.id, event = %what, "event ignored")
                    }
                }
                return None;
            }
        };
        let kind = event.kind();
        let order = self.seen.note(&event, now);
        if order != Order::New {
            self.metrics.event(kind, order.outcome());
            return None;
        }
        let present = match event.expect() {
            Expect::Present => true,
            Expect::Absent => false,
            Expect::Nothing => {
                self.metrics.event(kind, outcome::IGNORED);
                return None;
            }
        };
        let target = match event.change {
            Change::Task(t) => Target::Task {
                task_id: t.task_id,
                cluster: t.cluster,
                ecs_service: t.ecs_service,
            },
            Change::Instance {
                service_id,
                instance_id,
                ..
            } => Target::Instance {
                service_id,
                instance_id,
            },
        };
        Some(Touch {
            account: event.account,
            target,
            present,
            received: now,
            kind,
            receipt: m.receipt.clone(),
        })
    }

    /// Event ids and task versions remembered.
    pub fn remembered(&self) -> usize {
        self.seen.len()
    }
}
