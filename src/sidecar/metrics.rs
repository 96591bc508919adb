//! The run loop's own metrics: cycles, what was published, the writes, each
//! service's failures and data age, readiness; with other accounts, each account's
//! cycles and targets.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{EncodeLabel, EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::file_sd::WriteReason;
use crate::targets::SkipReason;

/// A single `outcome` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

/// One Cloud Map service, and its account when accounts are named (no `account`
/// label otherwise).
#[derive(Debug, Clone, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServiceLabels {
    pub namespace: String,
    pub service: String,
    pub account: Option<Arc<str>>,
}

impl EncodeLabelSet for ServiceLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        ("namespace", self.namespace.as_str()).encode(encoder.encode_label())?;
        ("service", self.service.as_str()).encode(encoder.encode_label())?;
        if let Some(account) = &self.account {
            ("account", &**account).encode(encoder.encode_label())?;
        }
        Ok(())
    }
}

/// One AWS account the sidecar discovers in.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct AccountLabels {
    pub account: Arc<str>,
}

impl EncodeLabelSet for AccountLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        ("account", &*self.account).encode(encoder.encode_label())
    }
}

/// One account's cycle outcome.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct AccountOutcomeLabels {
    pub account: Arc<str>,
    pub outcome: &'static str,
}

impl EncodeLabelSet for AccountOutcomeLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        ("account", &*self.account).encode(encoder.encode_label())?;
        ("outcome", self.outcome).encode(encoder.encode_label())
    }
}

/// Why an endpoint was skipped.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

/// A file and why its last write failed.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FileReasonLabels {
    /// `targets` (--output) or `hosts` (--ec2-hosts-output).
    pub file: &'static str,
    pub reason: &'static str,
}

/// The files the loop writes, as the `file` label names them.
pub const FILES: [&str; 2] = ["targets", "hosts"];

/// Every metric of the run loop.
#[derive(Debug)]
pub struct RunMetrics {
    /// Wall time of a discovery cycle.
    pub cycle_duration: Histogram,
    /// Cycles by outcome: `complete`, `partial` (some service kept old data), `failed`.
    pub cycles: Family<OutcomeLabels, Counter>,
    /// Targets last published (the file, and /sd/targets; with accounts, all of them).
    pub targets: Gauge,
    /// Cloud Map services (of every account) with at least one target published.
    pub services: Gauge,
    /// Unix time of the last successful publish (write, or content already current).
    pub last_success: Gauge<f64, AtomicU64>,
    /// Publishes of the targets file by outcome: `written`, `unchanged`, `failed`;
    /// none without a file (`--output none`).
    pub writes: Family<OutcomeLabels, Counter>,
    /// Failed reads of one service's tags or instances.
    pub service_failures: Family<ServiceLabels, Counter>,
    /// Age of the data published for each service: 0 right after a successful read,
    /// growing while its calls fail and its last known targets are kept.
    pub service_data_age: Family<ServiceLabels, Gauge<f64, AtomicU64>>,
    /// Endpoints left out of the file in the last cycle, by reason.
    pub skipped_endpoints: Family<ReasonLabels, Gauge>,
    /// 1 once the first successful write happened (and while the last one did).
    pub ready: Gauge,
    /// New tasks held out of the file while their ECS/EC2 facts are unknown.
    pub tasks_held: Gauge,
    /// 1 while the last write of a file failed, by file and reason.
    pub write_failing: Family<FileReasonLabels, Gauge>,
    /// Cycles cut short by --cycle-timeout.
    pub cycle_deadline_exceeded: Counter,
    /// Services (--shard-key service) or instances (--shard-key task) left to other
    /// shards in the last cycle.
    pub shard_excluded: Gauge,
    /// Seconds the next cycle waits beyond --interval because most calls of the
    /// last ones failed with throttling or server errors (0 at the normal pace).
    pub backoff_seconds: Gauge<f64, AtomicU64>,
    /// With other accounts: each account's cycles by outcome.
    pub account_cycles: Family<AccountOutcomeLabels, Counter>,
    /// With other accounts: each account's targets in the published file.
    pub account_targets: Family<AccountLabels, Gauge>,
}

impl Default for RunMetrics {
    fn default() -> Self {
        let m = RunMetrics {
            cycle_duration: Histogram::new([
                0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ]),
            cycles: Family::default(),
            targets: Gauge::default(),
            services: Gauge::default(),
            last_success: Gauge::default(),
            writes: Family::default(),
            service_failures: Family::default(),
            service_data_age: Family::default(),
            skipped_endpoints: Family::default(),
            ready: Gauge::default(),
            tasks_held: Gauge::default(),
            write_failing: Family::default(),
            cycle_deadline_exceeded: Counter::default(),
            shard_excluded: Gauge::default(),
            backoff_seconds: Gauge::default(),
            account_cycles: Family::default(),
            account_targets: Family::default(),
        };
        // Label sets that must show zeros too.
        for file in FILES {
            for reason in WriteReason::ALL {
                m.write_failing
                    .get_or_create(&FileReasonLabels {
                        file,
                        reason: reason.as_str(),
                    })
                    .set(0);
            }
        }
        for reason in SkipReason::ALL {
            m.skipped_endpoints
                .get_or_create(&ReasonLabels {
                    reason: reason.as_str(),
                })
                .set(0);
        }
        m
    }
}

impl RunMetrics {
    /// Registers every family in `registry` (prefixed `cloudmap_sd_` there).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "cycle_duration_seconds",
            "Wall time of one discovery cycle",
            self.cycle_duration.clone(),
        );
        registry.register(
            "cycles",
            "Discovery cycles by outcome (complete, partial, failed)",
            self.cycles.clone(),
        );
        registry.register(
            "targets",
            "Targets published (the file, and /sd/targets)",
            self.targets.clone(),
        );
        registry.register(
            "services",
            "Cloud Map services with at least one target published",
            self.services.clone(),
        );
        registry.register(
            "last_success_timestamp_seconds",
            "Unix time of the last successful publish of the file",
            self.last_success.clone(),
        );
        registry.register(
            "file_writes",
            "Publishes of the targets file by outcome (written, unchanged, failed); none without a file",
            self.writes.clone(),
        );
        registry.register(
            "service_failures",
            "Failed reads of a Cloud Map service (its last known targets are kept)",
            self.service_failures.clone(),
        );
        registry.register(
            "service_data_age_seconds",
            "Age of the data published for a Cloud Map service",
            self.service_data_age.clone(),
        );
        registry.register(
            "skipped_endpoints",
            "Endpoints left out of the file in the last cycle, by reason",
            self.skipped_endpoints.clone(),
        );
        registry.register(
            "ready",
            "1 once the first successful write happened",
            self.ready.clone(),
        );
        registry.register(
            "tasks_held",
            "New tasks held out of the file while their ECS/EC2 facts are unknown",
            self.tasks_held.clone(),
        );
        registry.register(
            "write_failing",
            "1 while the last write of a file failed (file: targets or hosts; reason: no_space, read_only, missing_directory, permission_denied, other)",
            self.write_failing.clone(),
        );
        registry.register(
            "cycle_deadline_exceeded",
            "Discovery cycles cut short by --cycle-timeout; unfinished services kept their last known targets",
            self.cycle_deadline_exceeded.clone(),
        );
        registry.register(
            "shard_excluded",
            "Services (--shard-key service) or instances (--shard-key task) left to other shards in the last cycle",
            self.shard_excluded.clone(),
        );
        registry.register(
            "backoff_seconds",
            "Seconds the next cycle waits beyond --interval while most AWS calls fail with throttling or server errors",
            self.backoff_seconds.clone(),
        );
    }

    /// Registers the per-account families, which exist only when the sidecar
    /// discovers in other accounts.
    pub fn register_accounts(&self, registry: &mut Registry) {
        registry.register(
            "account_cycles",
            "Discovery cycles of each AWS account by outcome (complete, partial, failed)",
            self.account_cycles.clone(),
        );
        registry.register(
            "account_targets",
            "Targets of each AWS account in the published file",
            self.account_targets.clone(),
        );
    }

    /// Counts one cycle with `outcome` (`complete`, `partial`, `failed`).
    pub fn cycle(&self, outcome: &'static str) {
        self.cycles.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// Marks the write-failure gauges of `file`: `reason` set, the others cleared; a
    /// failure of the targets file also counts in the writes counter (it counts the
    /// targets file's publishes, whose successes are counted where they happen).
    pub fn write_failing(&self, file: &'static str, reason: Option<WriteReason>) {
        if reason.is_some() && file == "targets" {
            self.writes
                .get_or_create(&OutcomeLabels { outcome: "failed" })
                .inc();
        }
        for r in WriteReason::ALL {
            self.write_failing
                .get_or_create(&FileReasonLabels {
                    file,
                    reason: r.as_str(),
                })
                .set(i64::from(reason == Some(r)));
        }
    }
}
