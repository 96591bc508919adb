//! The sidecar's own metrics, served on `/metrics`. Every name starts with
//! `cloudmap_sd_`; label values come from small fixed sets, except the per-service
//! families, which are bounded by the number of Cloud Map services discovered.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// `operation` and `outcome` of one AWS API call.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiCallLabels {
    pub operation: &'static str,
    pub outcome: &'static str,
}

/// A single `outcome` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

/// One Cloud Map service.
#[derive(Debug, Clone, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct ServiceLabels {
    pub namespace: String,
    pub service: String,
}

/// Why an endpoint was skipped.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FileReasonLabels {
    /// `targets` (--output) or `hosts` (--ec2-hosts-output).
    pub file: &'static str,
    pub reason: &'static str,
}

/// Every metric the sidecar exports, registered once.
pub struct Metrics {
    registry: Registry,
    /// Wall time of a discovery cycle.
    pub cycle_duration: Histogram,
    /// Cycles by outcome: `complete`, `partial` (some service kept old data), `failed`.
    pub cycles: Family<OutcomeLabels, Counter>,
    /// AWS API calls by operation and outcome (`success`, or an error kind).
    pub api_calls: Family<ApiCallLabels, Counter>,
    /// Targets in the last published file.
    pub targets: Gauge,
    /// Cloud Map services contributing targets.
    pub services: Gauge,
    /// Unix time of the last successful publish (write, or content already current).
    pub last_success: Gauge<f64, AtomicU64>,
    /// File publishes by outcome: `written`, `unchanged`, `failed`.
    pub writes: Family<OutcomeLabels, Counter>,
    /// Failed reads of one service's tags or instances.
    pub service_failures: Family<ServiceLabels, Counter>,
    /// Age of the data published for each service: 0 right after a successful read,
    /// growing while its calls fail and its last known targets are kept.
    pub service_data_age: Family<ServiceLabels, Gauge<f64, AtomicU64>>,
    /// Endpoints left out of the file in the last cycle, by reason.
    pub skipped_endpoints: Family<ReasonLabels, Gauge>,
    /// 1 once the first successful write happened.
    pub ready: Gauge,
    /// Remote-write watch and AMP probe (`remote_write_*`, `amp_probe_*`).
    pub remote_write: crate::remote_write::RemoteWriteMetrics,
    /// New tasks held out of the file while their ECS/EC2 facts are unknown.
    pub tasks_held: Gauge,
    /// 1 while the last write of a file failed, by file and reason.
    pub write_failing: Family<FileReasonLabels, Gauge>,
    /// Cycles cut short by --cycle-timeout.
    pub cycle_deadline_exceeded: Counter,
    /// Services (--shard-key service) or instances (--shard-key task) left to other
    /// shards in the last cycle.
    pub shard_excluded: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("cloudmap_sd");
        let cycle_duration =
            Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]);
        let m = Metrics {
            cycle_duration,
            cycles: Family::default(),
            api_calls: Family::default(),
            targets: Gauge::default(),
            services: Gauge::default(),
            last_success: Gauge::default(),
            writes: Family::default(),
            service_failures: Family::default(),
            service_data_age: Family::default(),
            skipped_endpoints: Family::default(),
            ready: Gauge::default(),
            remote_write: Default::default(),
            tasks_held: Gauge::default(),
            write_failing: Family::default(),
            cycle_deadline_exceeded: Counter::default(),
            shard_excluded: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "cycle_duration_seconds",
            "Wall time of one discovery cycle",
            m.cycle_duration.clone(),
        );
        registry.register(
            "cycles",
            "Discovery cycles by outcome (complete, partial, failed)",
            m.cycles.clone(),
        );
        registry.register(
            "aws_api_calls",
            "AWS API calls by operation and outcome",
            m.api_calls.clone(),
        );
        registry.register(
            "targets",
            "Targets in the published file",
            m.targets.clone(),
        );
        registry.register(
            "services",
            "Cloud Map services contributing targets",
            m.services.clone(),
        );
        registry.register(
            "last_success_timestamp_seconds",
            "Unix time of the last successful publish of the file",
            m.last_success.clone(),
        );
        registry.register(
            "file_writes",
            "Publishes of the file by outcome (written, unchanged, failed)",
            m.writes.clone(),
        );
        registry.register(
            "service_failures",
            "Failed reads of a Cloud Map service (its last known targets are kept)",
            m.service_failures.clone(),
        );
        registry.register(
            "service_data_age_seconds",
            "Age of the data published for a Cloud Map service",
            m.service_data_age.clone(),
        );
        registry.register(
            "skipped_endpoints",
            "Endpoints left out of the file in the last cycle, by reason",
            m.skipped_endpoints.clone(),
        );
        registry.register(
            "ready",
            "1 once the first successful write happened",
            m.ready.clone(),
        );
        registry.register(
            "tasks_held",
            "New tasks held out of the file while their ECS/EC2 facts are unknown",
            m.tasks_held.clone(),
        );
        registry.register(
            "write_failing",
            "1 while the last write of a file failed (file: targets or hosts; reason: no_space, read_only, missing_directory, permission_denied, other)",
            m.write_failing.clone(),
        );
        registry.register(
            "cycle_deadline_exceeded",
            "Discovery cycles cut short by --cycle-timeout; unfinished services kept their last known targets",
            m.cycle_deadline_exceeded.clone(),
        );
        registry.register(
            "shard_excluded",
            "Services (--shard-key service) or instances (--shard-key task) left to other shards in the last cycle",
            m.shard_excluded.clone(),
        );
        m.remote_write.register(&mut registry);
        for file in ["targets", "hosts"] {
            for reason in crate::file_sd::WriteError::REASONS {
                m.write_failing
                    .get_or_create(&FileReasonLabels { file, reason })
                    .set(0);
            }
        }
        for reason in crate::targets::SkipReason::ALL {
            m.skipped_endpoints
                .get_or_create(&ReasonLabels {
                    reason: reason.as_str(),
                })
                .set(0);
        }
        Metrics { registry, ..m }
    }

    /// Counts one AWS API call.
    pub fn api_call(&self, operation: &'static str, outcome: &'static str) {
        self.api_calls
            .get_or_create(&ApiCallLabels { operation, outcome })
            .inc();
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_and_zeroed_reasons() {
        let m = Metrics::new();
        m.api_call("DiscoverInstances", "success");
        m.targets.set(3);
        let text = m.encode();
        assert!(
            text.contains(
                r#"cloudmap_sd_aws_api_calls_total{operation="DiscoverInstances",outcome="success"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains("cloudmap_sd_targets 3"));
        assert!(text.contains(r#"cloudmap_sd_skipped_endpoints{reason="invalid_port"} 0"#));
        assert!(text.ends_with("# EOF\n"));
    }
}
