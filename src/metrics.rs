//! The sidecar's metrics, served on `/metrics`: each part owns its own
//! ([`AwsMetrics`], [`RunMetrics`], [`RemoteWriteMetrics`], [`HttpSdMetrics`]); this module only puts
//! them in one registry. Every name starts with `cloudmap_sd_`; label values come
//! from small fixed sets, except the per-service families, which are bounded by the
//! number of Cloud Map services discovered.

use std::sync::Arc;

use prometheus_client::registry::Registry;

use crate::aws::AwsMetrics;
use crate::http_sd::HttpSdMetrics;
use crate::remote_write::RemoteWriteMetrics;
use crate::sidecar::RunMetrics;

/// Every part's metrics, registered once.
pub struct Metrics {
    pub aws: Arc<AwsMetrics>,
    pub run: Arc<RunMetrics>,
    pub remote_write: Arc<RemoteWriteMetrics>,
    pub http_sd: Arc<HttpSdMetrics>,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// The metrics of a sidecar that discovers in its own account only.
    pub fn new() -> Self {
        Self::with_accounts(false)
    }

    /// With `accounts` (some --role-arn), the per-account families too.
    pub fn with_accounts(accounts: bool) -> Self {
        let mut registry = Registry::with_prefix("cloudmap_sd");
        let aws = Arc::new(AwsMetrics::default());
        let run = Arc::new(RunMetrics::default());
        let remote_write = Arc::new(RemoteWriteMetrics::default());
        run.register(&mut registry);
        if accounts {
            run.register_accounts(&mut registry);
        }
        aws.register(&mut registry);
        remote_write.register(&mut registry);
        let http_sd = Arc::new(HttpSdMetrics::default());
        http_sd.register(&mut registry);
        Metrics {
            aws,
            run,
            remote_write,
            http_sd,
            registry,
        }
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
        m.aws.api_call("DiscoverInstances", "success");
        m.run.targets.set(3);
        let text = m.encode();
        assert!(
            text.contains(
                r#"cloudmap_sd_aws_api_calls_total{operation="DiscoverInstances",outcome="success"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains("cloudmap_sd_targets 3"));
        assert!(text.contains(r#"cloudmap_sd_skipped_endpoints{reason="invalid_port"} 0"#));
        assert!(text.contains(r#"cloudmap_sd_write_failing{file="hosts",reason="no_space"} 0"#));
        assert!(text.contains("cloudmap_sd_amp_probe_duration_seconds"));
        assert!(text.ends_with("# EOF\n"));
    }
}
