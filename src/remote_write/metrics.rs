//! The remote-write watch's and the AMP probe's own metrics
//! (`cloudmap_sd_remote_write_*`, `cloudmap_sd_amp_probe*`).

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::assess::{CAUSES, State};
use super::probe::{ProbeOutcome, ProbeResult};
use crate::model::clock::unix_now;
use crate::prom_config::PrometheusMode;

/// A read's `outcome`: `success` or `failed`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

/// A `state` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: &'static str,
}

/// A remote_write `queue` label (Prometheus's `remote_name`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct QueueLabels {
    pub queue: String,
}

/// A remote-write `cause` label (one of [`CAUSES`]).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CauseLabels {
    pub cause: &'static str,
}

/// A Prometheus `mode` label: `server` or `agent`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModeLabels {
    pub mode: &'static str,
}

/// A probe `result` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

type GaugeF = Gauge<f64, AtomicU64>;

/// The remote-write watch and AMP probe metrics.
#[derive(Debug, Default)]
pub struct RemoteWriteMetrics {
    /// 1 for the current overall state, 0 for the others.
    pub state: Family<StateLabels, Gauge>,
    /// Transitions into each state.
    pub transitions: Family<StateLabels, Counter>,
    /// 1 for each cause of the current state, 0 for the others.
    pub cause: Family<CauseLabels, Gauge>,
    /// Reads of Prometheus's /metrics: `success`, `failed`.
    pub scrapes: Family<OutcomeLabels, Counter>,
    /// 1 for the mode the watched Prometheus was last seen in.
    pub prometheus_mode: Family<ModeLabels, Gauge>,
    pub failed_rate: Family<QueueLabels, GaugeF>,
    pub retried_rate: Family<QueueLabels, GaugeF>,
    pub dropped_rate: Family<QueueLabels, GaugeF>,
    pub pending: Family<QueueLabels, GaugeF>,
    pub lag: Family<QueueLabels, GaugeF>,
    /// 1 for the last probe's result, 0 for the others.
    pub probe_result: Family<ResultLabels, Gauge>,
    pub probes: Family<ResultLabels, Counter>,
    pub probe_duration: GaugeF,
    pub probe_status: Gauge,
    pub probe_timestamp: GaugeF,
}

impl RemoteWriteMetrics {
    /// Registers every family in `registry` (prefixed `cloudmap_sd_` there).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "remote_write_state",
            "Remote-write health: 1 for the current state (ok, no_queues, degraded, failing, unreachable)",
            self.state.clone(),
        );
        registry.register(
            "remote_write_transitions",
            "Transitions of the remote-write state, by the state entered",
            self.transitions.clone(),
        );
        registry.register(
            "remote_write_cause",
            "Remote-write health: 1 for each cause of the current state (samples_failed, lag, \
             samples_retried, pending_unsent, prometheus_unreachable, no_queues), 0 for the others",
            self.cause.clone(),
        );
        registry.register(
            "remote_write_watch_scrapes",
            "Reads of Prometheus's own metrics by the remote-write watch (success, failed)",
            self.scrapes.clone(),
        );
        registry.register(
            "remote_write_prometheus_mode",
            "1 for the mode the watched Prometheus runs in (server, agent: it exposes prometheus_agent_*), 0 for the other",
            self.prometheus_mode.clone(),
        );
        registry.register(
            "remote_write_failed_samples_per_second",
            "Samples per second Prometheus failed to send and gave up on, per queue",
            self.failed_rate.clone(),
        );
        registry.register(
            "remote_write_retried_samples_per_second",
            "Samples per second Prometheus retried, per queue",
            self.retried_rate.clone(),
        );
        registry.register(
            "remote_write_dropped_samples_per_second",
            "Samples per second dropped before sending (relabelling, too old), per queue",
            self.dropped_rate.clone(),
        );
        registry.register(
            "remote_write_pending_samples",
            "Samples waiting in a queue's shards",
            self.pending.clone(),
        );
        registry.register(
            "remote_write_lag_seconds",
            "Highest timestamp seen minus highest timestamp sent, per queue",
            self.lag.clone(),
        );
        registry.register(
            "amp_probe_result",
            "1 for the result of the last AMP remote_write probe, 0 for the others",
            self.probe_result.clone(),
        );
        registry.register(
            "amp_probes",
            "AMP remote_write probes by result",
            self.probes.clone(),
        );
        registry.register(
            "amp_probe_duration_seconds",
            "Duration of the last AMP probe",
            self.probe_duration.clone(),
        );
        registry.register(
            "amp_probe_http_status",
            "HTTP status of the last AMP probe (0: no answer)",
            self.probe_status.clone(),
        );
        registry.register(
            "amp_probe_timestamp_seconds",
            "Unix time of the last AMP probe",
            self.probe_timestamp.clone(),
        );
    }

    pub(super) fn set_causes(&self, causes: &[&str]) {
        for c in CAUSES {
            self.cause
                .get_or_create(&CauseLabels { cause: c })
                .set(i64::from(causes.contains(&c)));
        }
    }

    pub(super) fn set_mode(&self, mode: PrometheusMode) {
        for m in [PrometheusMode::Server, PrometheusMode::Agent] {
            self.prometheus_mode
                .get_or_create(&ModeLabels { mode: m.as_str() })
                .set(i64::from(m == mode));
        }
    }

    pub(super) fn set_state(&self, state: State) {
        for s in State::ALL {
            self.state
                .get_or_create(&StateLabels { state: s.as_str() })
                .set(i64::from(s == state));
        }
    }

    /// Records one probe.
    pub fn record_probe(&self, o: &ProbeOutcome) {
        for r in ProbeResult::ALL {
            self.probe_result
                .get_or_create(&ResultLabels { result: r.as_str() })
                .set(i64::from(r == o.result));
        }
        self.probes
            .get_or_create(&ResultLabels {
                result: o.result.as_str(),
            })
            .inc();
        self.probe_duration.set(o.duration.as_secs_f64());
        self.probe_status.set(i64::from(o.status.unwrap_or(0)));
        self.probe_timestamp.set(unix_now());
    }
}
