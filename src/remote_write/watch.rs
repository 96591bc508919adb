//! The loops: the watch reads the local Prometheus's own `/metrics` every interval
//! and turns each read into a state ([`Watcher`]); the probe loop probes AMP at
//! start and on its clock. Both log changes and export them.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::assess::{QueueHealth, State, assess, overall_of};
use super::exposition::{Scrape, parse_exposition};
use super::metrics::{OutcomeLabels, QueueLabels, RemoteWriteMetrics, StateLabels};
use super::probe::{AmpProbe, ProbeResult, chain};
use crate::prom_config::PrometheusMode;

/// Settings of the watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchConfig {
    /// Base URL of Prometheus (`http://127.0.0.1:9090`); `/metrics` is appended.
    pub prometheus_url: String,
    pub interval: Duration,
    pub max_lag: Duration,
    /// Deadline of one read of /metrics.
    pub timeout: Duration,
    /// `--prometheus-mode`: the mode Prometheus is expected to run in (a
    /// Prometheus seen in the other mode is warned about once).
    pub mode: PrometheusMode,
}

/// Turns scrapes into states, keeps the previous scrape for the rates, and logs and
/// exports transitions.
pub struct Watcher {
    config: WatchConfig,
    metrics: Arc<RemoteWriteMetrics>,
    prev: Option<(Scrape, Instant)>,
    state: Option<State>,
    /// The causes of the last observation.
    causes: Vec<&'static str>,
    queues: Vec<QueueLabels>,
    /// The mode Prometheus was last seen in.
    seen_mode: Option<PrometheusMode>,
}

impl Watcher {
    pub fn new(config: WatchConfig, metrics: Arc<RemoteWriteMetrics>) -> Self {
        Watcher {
            config,
            metrics,
            prev: None,
            state: None,
            causes: Vec::new(),
            queues: Vec::new(),
            seen_mode: None,
        }
    }

    /// The current overall state (None before the first observation).
    pub fn state(&self) -> Option<State> {
        self.state
    }

    /// Takes one read of Prometheus (its text, or why it failed) made at `now`;
    /// returns the overall state and its reason.
    pub fn observe(&mut self, read: Result<String, String>, now: Instant) -> (State, String) {
        let m = self.metrics.clone();
        let (state, reason, causes) = match read {
            Err(e) => {
                m.scrapes
                    .get_or_create(&OutcomeLabels { outcome: "failed" })
                    .inc();
                self.prev = None;
                (State::Unreachable, e, vec!["prometheus_unreachable"])
            }
            Ok(text) => {
                m.scrapes
                    .get_or_create(&OutcomeLabels { outcome: "success" })
                    .inc();
                let cur = parse_exposition(&text);
                self.note_mode(&cur);
                let prev = self.prev.as_ref().map(|(s, t)| (s, now - *t));
                let health = assess(prev, &cur, self.config.max_lag);
                self.export_queues(&health);
                let judged = overall_of(&cur, &health);
                self.prev = Some((cur, now));
                judged
            }
        };
        m.set_causes(&causes);
        if self.state != Some(state) {
            m.set_state(state);
            m.transitions
                .get_or_create(&StateLabels {
                    state: state.as_str(),
                })
                .inc();
            log_transition(self.state, state, &reason, &self.config.prometheus_url);
            self.state = Some(state);
        } else if self.causes != causes {
            // Same state, other causes: worth a line (not for changing figures).
            info!(state = %state, causes = %causes.join(","), reason = %reason, "remote_write state: {state}, causes changed");
        } else {
            debug!(state = %state, reason = %reason, "remote_write watch");
        }
        self.causes = causes;
        (state, reason)
    }

    /// Exports the mode Prometheus runs in, and warns when it changes to one that
    /// --prometheus-mode does not say (`check` lints for that flag's mode).
    fn note_mode(&mut self, scrape: &Scrape) {
        let mode = if scrape.agent {
            PrometheusMode::Agent
        } else {
            PrometheusMode::Server
        };
        if self.seen_mode == Some(mode) {
            return;
        }
        self.metrics.set_mode(mode);
        if mode != self.config.mode {
            warn!(prometheus = %self.config.prometheus_url, seen = mode.as_str(),
                flag = self.config.mode.as_str(),
                "Prometheus runs in {} mode but --prometheus-mode says {}: set --prometheus-mode {} so that `check` lints its configuration for that mode",
                mode.as_str(), self.config.mode.as_str(), mode.as_str());
        } else {
            info!(prometheus = %self.config.prometheus_url, mode = mode.as_str(), "Prometheus runs in {} mode", mode.as_str());
        }
        self.seen_mode = Some(mode);
    }

    fn export_queues(&mut self, health: &[QueueHealth]) {
        let m = self.metrics.clone();
        let now: Vec<QueueLabels> = health
            .iter()
            .map(|h| QueueLabels {
                queue: h.queue.clone(),
            })
            .collect();
        for gone in self.queues.iter().filter(|q| !now.contains(q)) {
            for f in [
                &m.failed_rate,
                &m.retried_rate,
                &m.dropped_rate,
                &m.pending,
                &m.lag,
            ] {
                f.remove(gone);
            }
        }
        for (h, l) in health.iter().zip(&now) {
            for (f, v) in [
                (&m.failed_rate, h.failed_rate),
                (&m.retried_rate, h.retried_rate),
                (&m.dropped_rate, h.dropped_rate),
                (&m.pending, h.pending),
                (&m.lag, h.lag),
            ] {
                match v {
                    Some(v) => {
                        f.get_or_create(l).set(v);
                    }
                    None => {
                        f.remove(l);
                    }
                }
            }
        }
        self.queues = now;
    }
}

type PlainClient = Client<HttpConnector, Full<Bytes>>;

async fn read_metrics(
    client: &PlainClient,
    url: &str,
    timeout: Duration,
) -> Result<String, String> {
    let uri: http::Uri = format!("{}/metrics", url.trim_end_matches('/'))
        .parse()
        .map_err(|e| format!("bad --prometheus-url {url}: {e}"))?;
    let req = http::Request::get(uri.clone())
        .header("accept", "text/plain;version=0.0.4")
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let exchange = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| format!("cannot read {uri}: {}", chain(&e)))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("cannot read {uri}: {e}"))?
            .to_bytes();
        if !status.is_success() {
            return Err(format!("{uri} answered {status}"));
        }
        Ok(String::from_utf8_lossy(&body).into_owned())
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("{uri}: no answer within {timeout:?}")))
}

/// Reads Prometheus every `interval` until `shutdown`. Prometheus not running (yet) is
/// the state `unreachable`, never an error.
pub async fn watch(
    config: WatchConfig,
    metrics: Arc<RemoteWriteMetrics>,
    shutdown: CancellationToken,
) {
    let client: PlainClient = Client::builder(TokioExecutor::new()).build_http();
    let mut ticker = tokio::time::interval(config.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let url = config.prometheus_url.clone();
    let timeout = config.timeout;
    let mut watcher = Watcher::new(config, metrics);
    info!(prometheus = %url, "remote_write watch starting");
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let read = tokio::select! {
            r = read_metrics(&client, &url, timeout) => r,
            _ = shutdown.cancelled() => return,
        };
        watcher.observe(read, Instant::now());
    }
}

/// Probes AMP at start and every `interval` until `shutdown`; logs each change of result.
pub async fn probe_loop(
    probe: AmpProbe,
    interval: Duration,
    metrics: Arc<RemoteWriteMetrics>,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last: Option<ProbeResult> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let outcome = tokio::select! {
            o = probe.probe() => o,
            _ = shutdown.cancelled() => return,
        };
        metrics.record_probe(&outcome);
        let url = probe.url().to_string();
        if last != Some(outcome.result) {
            if outcome.result.is_ok() {
                info!(url = %url, result = %outcome.result, status = outcome.status.unwrap_or(0), "AMP probe: {outcome}");
            } else {
                error!(url = %url, result = %outcome.result, status = outcome.status.unwrap_or(0), "AMP probe: {outcome}");
            }
        } else {
            debug!(url = %url, result = %outcome.result, "AMP probe: {outcome}");
        }
        last = Some(outcome.result);
    }
}

/// One line for a change of state, at the level the new state deserves.
fn log_transition(from: Option<State>, to: State, reason: &str, url: &str) {
    let from = from.map_or("start", State::as_str);
    match to {
        State::Ok => info!(from, to = %to, prometheus = %url, "remote_write state: ok"),
        State::NoQueues => {
            warn!(from, to = %to, prometheus = %url, reason = %reason, "remote_write state: no queues")
        }
        State::Degraded | State::Unreachable => {
            warn!(from, to = %to, prometheus = %url, reason = %reason, "remote_write state: {to}")
        }
        State::Failing => {
            error!(from, to = %to, prometheus = %url, reason = %reason, "remote_write state: {to}")
        }
    }
}
