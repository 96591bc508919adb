//! Events in the run loop: each [`Touch`] routed to its account and mapped to the
//! known services it concerns (by instance id, or by the ECS service whose
//! instances were seen there); those that do not yet show what it announced wait
//! here and are read again between cycles, at once and then on a short backoff,
//! until they do or the settle time is over. The loop runs the refreshes
//! ([`super::Engine::refresh`]) and publishes them like a cycle's.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, info};

use super::Engine;
use crate::aws::{CloudMap, Ec2, Ecs};
use crate::discovery::{Refreshed, Wanted};
use crate::events::{EventMetrics, Feed, Target, Touch, outcome};

/// The event side of the run loop.
pub struct Events {
    pub feed: Feed,
    pub metrics: Arc<EventMetrics>,
    /// How long a touched service is looked at again while it does not show the
    /// change.
    pub settle: Duration,
}

/// One touched service that does not show the change yet.
#[derive(Debug, Clone)]
struct Waiting {
    account: usize,
    service: String,
    instance: String,
    present: bool,
    received: Instant,
    attempts: u32,
    next: Instant,
    /// Read in the refresh running now.
    in_flight: bool,
}

/// The next look at a service that did not show what an event announced: 250 ms,
/// doubling, at most 5 s apart.
pub fn retry_after(attempts: u32) -> Duration {
    Duration::from_millis(250)
        .saturating_mul(1 << attempts.min(5))
        .min(Duration::from_secs(5))
}

/// Touched services, waiting.
pub(super) struct Follow {
    pub(super) events: Events,
    waiting: Vec<Waiting>,
}

impl Follow {
    pub(super) fn new(events: Events) -> Self {
        Follow {
            events,
            waiting: Vec::new(),
        }
    }

    /// When the next look is due.
    pub(super) fn next_due(&self) -> Option<Instant> {
        self.waiting.iter().map(|w| w.next).min()
    }

    /// Maps each touch to the services it concerns; those that do not show it
    /// yet wait, due now. Each message is then handled: its receipt goes back to
    /// be deleted.
    pub(super) fn take<C: CloudMap, E: Ecs, X: Ec2>(
        &mut self,
        batch: Vec<Touch>,
        engine: &Engine<C, E, X>,
    ) {
        let now = Instant::now();
        for touch in batch {
            let outcome = self.map(&touch, engine, now);
            self.events.metrics.event(touch.kind, outcome);
            let _ = self.events.feed.done.send(touch.receipt);
        }
        self.events.metrics.pending.set(self.waiting.len() as i64);
    }

    /// One touch: its outcome label.
    fn map<C: CloudMap, E: Ecs, X: Ec2>(
        &mut self,
        touch: &Touch,
        engine: &Engine<C, E, X>,
        now: Instant,
    ) -> &'static str {
        let Some((account, a)) = engine
            .route(touch.account.as_deref())
            .and_then(|i| Some((i, engine.account_at(i)?)))
        else {
            debug!(
                account = touch.account.as_deref().unwrap_or(""),
                "event of an account not discovered"
            );
            return outcome::UNMATCHED;
        };
        let d = a.discovery_ref();
        let instance = touch.instance();
        let services = match &touch.target {
            Target::Task {
                cluster,
                ecs_service,
                ..
            } => d.touched(
                instance,
                ecs_service.as_deref().map(|s| (cluster.as_str(), s)),
            ),
            Target::Instance { service_id, .. } => d
                .scrapes(service_id)
                .then(|| service_id.clone())
                .into_iter()
                .collect(),
        };
        if services.is_empty() {
            return outcome::UNMATCHED;
        }
        let mut refresh = false;
        for service in services {
            if d.shows(&service, instance, touch.present) {
                continue;
            }
            refresh = true;
            self.waiting.retain(|w| {
                !(w.account == account && w.service == service && w.instance == instance)
            });
            self.waiting.push(Waiting {
                account,
                service,
                instance: instance.to_string(),
                present: touch.present,
                received: touch.received,
                attempts: 0,
                next: now,
                in_flight: false,
            });
        }
        if refresh {
            outcome::REFRESHED
        } else {
            outcome::CURRENT
        }
    }

    /// The services due for a look now, by account; every few looks (and the
    /// last) reads the instances whatever the revision says.
    pub(super) fn due(&mut self, now: Instant) -> BTreeMap<usize, Vec<Wanted>> {
        let settle = self.events.settle;
        let mut out: BTreeMap<usize, Vec<Wanted>> = BTreeMap::new();
        for w in self.waiting.iter_mut().filter(|w| w.next <= now) {
            w.in_flight = true;
            let last = now + retry_after(w.attempts) >= w.received + settle;
            let always = last || w.attempts % 4 == 3;
            let wanted = out.entry(w.account).or_default();
            match wanted.iter_mut().find(|x| x.service_id == w.service) {
                Some(x) => x.always |= always,
                None => wanted.push(Wanted {
                    service_id: w.service.clone(),
                    always,
                }),
            }
        }
        out
    }

    /// After a refresh: counts each service read, and lets go of the waits it
    /// settled (their time to the file observed when the file was written);
    /// the others look again later, or give up after the settle time.
    pub(super) fn after_refresh<C: CloudMap, E: Ecs, X: Ec2>(
        &mut self,
        engine: &Engine<C, E, X>,
        refreshed: &BTreeMap<usize, Refreshed>,
        wanted: &BTreeMap<usize, Vec<Wanted>>,
        written: bool,
    ) {
        for (account, services) in wanted {
            let r = refreshed.get(account);
            for w in services {
                let id = &w.service_id;
                let result = match r {
                    Some(r) if r.failed.contains(id) => "failed",
                    Some(r) if r.changed.contains(id) => "changed",
                    _ => "unchanged",
                };
                self.events.metrics.refresh(result);
            }
        }
        self.settle(engine, written, true);
    }

    /// After a cycle: lets go of the waits the cycle settled.
    pub(super) fn after_cycle<C: CloudMap, E: Ecs, X: Ec2>(
        &mut self,
        engine: &Engine<C, E, X>,
        written: bool,
    ) {
        self.settle(engine, written, false);
    }

    /// Drops what the state now shows (observing its time to the file when
    /// `written`); a wait that was read (`looked`) and still does not show it
    /// is looked at again after a backoff, or given up after the settle time.
    fn settle<C: CloudMap, E: Ecs, X: Ec2>(
        &mut self,
        engine: &Engine<C, E, X>,
        written: bool,
        looked: bool,
    ) {
        let now = Instant::now();
        let settle = self.events.settle;
        let metrics = self.events.metrics.clone();
        self.waiting.retain_mut(|w| {
            let shows = engine
                .account_at(w.account)
                .is_none_or(|a| a.discovery_ref().shows(&w.service, &w.instance, w.present));
            if shows {
                if written {
                    metrics
                        .to_file
                        .observe(now.saturating_duration_since(w.received).as_secs_f64());
                }
                return false;
            }
            if !(looked && std::mem::take(&mut w.in_flight)) {
                return true;
            }
            w.attempts += 1;
            if now.saturating_duration_since(w.received) >= settle {
                metrics.refresh("gave_up");
                info!(instance = %w.instance, present = w.present,
                    settle = %humantime::format_duration(settle),
                    "Cloud Map did not show what an event announced within the settle time; the next cycles will");
                return false;
            }
            w.next = now + retry_after(w.attempts);
            true
        });
        metrics.pending.set(self.waiting.len() as i64);
    }

    /// Lets go of every wait (before the first publish the cycle shows it all).
    pub(super) fn clear(&mut self) {
        self.waiting.clear();
        self.events.metrics.pending.set(0);
    }
}

#[cfg(test)]
#[path = "follow_tests.rs"]
mod tests;
