//! The judgement: per-queue readings of two scrapes become rates, a lag and a
//! [`State`] with its causes. Pure.

use std::time::Duration;

use super::exposition::Scrape;

/// Remote-write health of a queue, or of all of them (the worst queue).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum State {
    /// Samples flow; no retries, no failures, lag under half of the maximum.
    Ok,
    /// No queue: this Prometheus has no remote_write section.
    NoQueues,
    /// Sending is retried or lagging: no data lost yet.
    Degraded,
    /// Samples are lost (failed) or the lag reached `--remote-write-max-lag`.
    Failing,
    /// Prometheus's /metrics could not be read: nothing is known.
    Unreachable,
}

impl State {
    pub const ALL: [State; 5] = [
        State::Ok,
        State::NoQueues,
        State::Degraded,
        State::Failing,
        State::Unreachable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Ok => "ok",
            State::NoQueues => "no_queues",
            State::Degraded => "degraded",
            State::Failing => "failing",
            State::Unreachable => "unreachable",
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The judgement of one queue over one watch period.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueHealth {
    pub queue: String,
    /// Samples per second over the last period; None on the first scrape or after a
    /// counter reset.
    pub failed_rate: Option<f64>,
    pub retried_rate: Option<f64>,
    pub dropped_rate: Option<f64>,
    pub pending: Option<f64>,
    /// Highest timestamp seen minus highest sent; None before anything was sent.
    pub lag: Option<f64>,
    pub state: State,
    /// Why the state is not `ok`; empty when it is.
    pub reason: String,
    /// The same, as codes from [`CAUSES`] (a metric label).
    pub causes: Vec<&'static str>,
}

/// Every cause of a state other than ok, as the `cause` label of
/// `cloudmap_sd_remote_write_cause`.
pub const CAUSES: [&str; 6] = [
    "samples_failed",
    "lag",
    "samples_retried",
    "pending_unsent",
    "prometheus_unreachable",
    "no_queues",
];

fn rate(prev: Option<f64>, cur: Option<f64>, secs: f64) -> Option<f64> {
    let (p, c) = (prev?, cur?);
    (c >= p && secs > 0.0).then(|| (c - p) / secs)
}

/// Judges every queue of `cur`, with rates against `prev` taken `elapsed` earlier.
///
/// - failing: samples failed (Prometheus gave up on them) or lag >= `max_lag`;
/// - degraded: samples retried, lag >= `max_lag / 2`, or samples pending and nothing
///   ever sent;
/// - ok otherwise. Dropped samples are reported but do not change the state:
///   `write_relabel_configs` drops count there too.
pub fn assess(
    prev: Option<(&Scrape, Duration)>,
    cur: &Scrape,
    max_lag: Duration,
) -> Vec<QueueHealth> {
    cur.queues
        .iter()
        .map(|(name, q)| {
            let (p, secs) = match prev {
                Some((s, d)) => (s.queues.get(name), d.as_secs_f64()),
                None => (None, 0.0),
            };
            let p = p.cloned().unwrap_or_default();
            let highest = q.highest.or(cur.highest);
            let mut h = QueueHealth {
                queue: name.clone(),
                failed_rate: rate(p.failed, q.failed, secs),
                retried_rate: rate(p.retried, q.retried, secs),
                dropped_rate: rate(p.dropped, q.dropped, secs),
                pending: q.pending,
                lag: match (highest, q.highest_sent) {
                    (Some(h), Some(s)) if s > 0.0 => Some((h - s).max(0.0)),
                    _ => None,
                },
                state: State::Ok,
                reason: String::new(),
                causes: Vec::new(),
            };
            judge(&mut h, max_lag.as_secs_f64(), prev.is_some());
            h
        })
        .collect()
}

/// (cause code, reason) pairs.
type Reasons = Vec<(&'static str, String)>;

/// Sets the state of a queue from its figures, with the reasons and cause codes.
/// `later`: not the first scrape.
fn judge(h: &mut QueueHealth, max_lag: f64, later: bool) {
    let mut failing: Reasons = Vec::new();
    let mut degraded: Reasons = Vec::new();
    if let Some(r) = h.failed_rate.filter(|r| *r > 0.0) {
        failing.push((
            "samples_failed",
            format!("{r:.1} samples/s failed (not retried: lost)"),
        ));
    }
    if let Some(l) = h.lag {
        if l >= max_lag {
            failing.push(("lag", format!("lag {l:.0}s >= {max_lag:.0}s")));
        } else if l >= max_lag / 2.0 {
            degraded.push(("lag", format!("lag {l:.0}s >= {:.0}s", max_lag / 2.0)));
        }
    }
    if let Some(r) = h.retried_rate.filter(|r| *r > 0.0) {
        degraded.push((
            "samples_retried",
            format!("{r:.1} samples/s retried (the receiver is unreachable or answers 5xx/429)"),
        ));
    }
    let pending = h.pending.unwrap_or(0.0);
    if h.lag.is_none() && pending > 0.0 && later {
        degraded.push((
            "pending_unsent",
            format!("{pending:.0} samples pending and none sent yet"),
        ));
    }
    let (state, reasons) = if !failing.is_empty() {
        failing.extend(degraded);
        (State::Failing, failing)
    } else if !degraded.is_empty() {
        (State::Degraded, degraded)
    } else {
        (State::Ok, Vec::new())
    };
    let (causes, reasons): (Vec<&'static str>, Vec<String>) = reasons.into_iter().unzip();
    h.state = state;
    h.reason = reasons.join("; ");
    h.causes = causes;
}

/// The overall state of one scrape: [`overall`], except that an agent with no queue
/// is failing, not `no_queues`: agent mode keeps no samples, so without
/// remote_write everything it scrapes is lost.
pub fn overall_of(scrape: &Scrape, queues: &[QueueHealth]) -> (State, String, Vec<&'static str>) {
    let judged = overall(queues);
    if judged.0 == State::NoQueues && scrape.agent {
        return (
            State::Failing,
            "Prometheus runs in agent mode with no remote_write queue: it keeps no samples, so everything it scrapes is lost".to_string(),
            vec!["no_queues"],
        );
    }
    judged
}

/// The overall state: the worst queue, with the reasons (and cause codes) of the
/// queues in that state.
pub fn overall(queues: &[QueueHealth]) -> (State, String, Vec<&'static str>) {
    let Some(worst) = queues.iter().map(|q| q.state).max() else {
        return (
            State::NoQueues,
            "Prometheus has no remote_write queue".to_string(),
            vec!["no_queues"],
        );
    };
    let in_worst = || queues.iter().filter(|q| q.state == worst);
    let reason = in_worst()
        .filter(|q| !q.reason.is_empty())
        .map(|q| format!("queue {}: {}", q.queue, q.reason))
        .collect::<Vec<_>>()
        .join("; ");
    let mut causes: Vec<&'static str> = in_worst().flat_map(|q| q.causes.iter().copied()).collect();
    causes.sort_unstable();
    causes.dedup();
    (worst, reason, causes)
}
