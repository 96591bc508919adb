//! Remote-write health: is what Prometheus scrapes reaching Amazon Managed Service for
//! Prometheus (AMP)?
//!
//! Two independent signals, both exported as `cloudmap_sd_remote_write_*` and
//! `cloudmap_sd_amp_probe_*` metrics and logged when they change:
//!
//! - **The watch** reads the local Prometheus's own `/metrics` every
//!   `--remote-write-watch-interval` and derives, per remote_write queue, the failed,
//!   retried and dropped sample rates, the pending samples and the lag (highest
//!   timestamp seen minus highest timestamp sent). From those it sets a [`State`].
//!   The parsing and the judgement ([`parse_exposition`], [`assess`]) are pure.
//! - **The probe** sends a SigV4-signed (service `aps`) remote_write request that holds
//!   no time series to the AMP workspace, and classifies the answer ([`ProbeResult`]).
//!   The receiver authenticates the request and looks the workspace up before it reads
//!   the body, so an empty `WriteRequest` tests credentials, the `aps:RemoteWrite`
//!   permission, the workspace id and the Region without writing a single sample.

//!
//! - [`wire`]: the remote_write message; [`probe`]: the AMP probe and what to probe;
//! - [`exposition`] and [`assess`]: the pure reading and judgement of Prometheus's
//!   metrics; [`watch`]: the loops; [`metrics`]: this part's own metrics.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aws_credential_types::provider::SharedCredentialsProvider;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::prom_config::PromConfig;

pub mod assess;
pub mod exposition;
pub mod metrics;
pub mod probe;
pub mod watch;
pub mod wire;

pub use assess::State;
pub use metrics::RemoteWriteMetrics;
pub use probe::{AmpProbe, ProbeResult, amp_region, probe_target};
pub use watch::{WatchConfig, watch};

/// What `run` watches and probes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteWriteOptions {
    /// The watch; None: off.
    pub watch: Option<WatchConfig>,
    /// The probe; None: off.
    pub probe: Option<ProbeOptions>,
}

/// The AMP probe of `run`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeOptions {
    pub interval: Duration,
    /// `--amp-remote-write-url`.
    pub url: Option<String>,
    /// `--prometheus-config`, whose remote_write URL is probed when no URL is given.
    pub prometheus_config: Option<PathBuf>,
    /// Deadline of one probe.
    pub timeout: Duration,
}

/// The AWS settings the probe signs with: the SDK's Region and credentials.
#[derive(Debug, Clone, Default)]
pub struct Signing {
    pub region: Option<String>,
    pub credentials: Option<SharedCredentialsProvider>,
}

impl Signing {
    pub fn of(sdk: &aws_config::SdkConfig) -> Self {
        Signing {
            region: sdk.region().map(|r| r.to_string()),
            credentials: sdk.credentials_provider(),
        }
    }
}

/// Starts the watch and the probe, as configured; the handle ends when both have
/// stopped after `shutdown`.
pub fn spawn(
    options: RemoteWriteOptions,
    signing: Signing,
    metrics: Arc<RemoteWriteMetrics>,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(config) = options.watch {
        tasks.spawn(watch(config, metrics.clone(), shutdown.clone()));
    }
    if let Some(p) = options.probe
        && let Some(probe) = amp_probe(&p, signing)
    {
        tasks.spawn(watch::probe_loop(probe, p.interval, metrics, shutdown));
    }
    tokio::spawn(async move { while tasks.join_next().await.is_some() {} })
}

/// The probe `options` ask for, or None (said in the log) when there is nothing to
/// probe or it cannot be set up.
fn amp_probe(options: &ProbeOptions, signing: Signing) -> Option<AmpProbe> {
    let config = match &options.prometheus_config {
        Some(path) => match PromConfig::load(path) {
            Ok(c) => Some(c),
            Err(e) => {
                error!(error = %e, kind = e.kind(), "AMP probe disabled");
                return None;
            }
        },
        None => None,
    };
    let Some((url, region)) = probe_target(
        options.url.as_deref(),
        config.as_ref(),
        signing.region.as_deref(),
    ) else {
        info!(
            "AMP probe off: no --amp-remote-write-url and no remote_write URL in --prometheus-config"
        );
        return None;
    };
    match AmpProbe::new(&url, region, signing.credentials, options.timeout) {
        Ok(p) => {
            info!(url = %url, region = %p.region(),
                interval = %humantime::format_duration(options.interval),
                "AMP probe starting");
            Some(p)
        }
        Err(e) => {
            error!(error = %e, kind = e.kind(), "AMP probe disabled");
            None
        }
    }
}

#[cfg(test)]
mod tests;
