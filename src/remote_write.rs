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

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::config::Options;
use crate::metrics::Metrics;
use crate::prom_config::{PromConfig, PromConfigError};

// ---------------------------------------------------------------------------------
// The remote_write wire format (prometheus.WriteRequest, protobuf + raw snappy).
// ---------------------------------------------------------------------------------

/// `prometheus.WriteRequest` of remote_write 1.0 (only the fields the probe needs).
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

/// `prometheus.TimeSeries`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

/// `prometheus.Label`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `prometheus.Sample`: value and timestamp in milliseconds.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// A remote_write body: the protobuf encoding of `req`, compressed with raw
/// (block-format) snappy as the protocol requires.
pub fn encode_write_request(req: &WriteRequest) -> Vec<u8> {
    let proto = prost::Message::encode_to_vec(req);
    snap::raw::Encoder::new()
        .compress_vec(&proto)
        .expect("snappy compresses any in-memory buffer")
}

// ---------------------------------------------------------------------------------
// The AMP probe.
// ---------------------------------------------------------------------------------

/// How the AMP workspace answered the probe. A small fixed set (metric label values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeResult {
    /// 2xx: signed, authorised, workspace found.
    Accepted,
    /// 400: authorised and the workspace exists; only the (empty) body was refused.
    BadRequest,
    /// 401 / 403: credentials invalid, or the role lacks `aps:RemoteWrite`.
    Forbidden,
    /// 404: no such workspace in that Region.
    NotFound,
    /// 429: ingestion rate or active series quota.
    Throttled,
    /// Another 4xx.
    ClientError,
    /// 5xx.
    ServerError,
    /// No answer within the timeout.
    Timeout,
    /// The host name does not resolve.
    Dns,
    /// The TLS handshake failed (certificate, CA bundle, plain HTTP on an https URL).
    Tls,
    /// Connection refused or reset.
    Connect,
    /// No AWS credentials, or the credentials provider failed.
    Credentials,
}

impl ProbeResult {
    pub const ALL: [ProbeResult; 12] = [
        ProbeResult::Accepted,
        ProbeResult::BadRequest,
        ProbeResult::Forbidden,
        ProbeResult::NotFound,
        ProbeResult::Throttled,
        ProbeResult::ClientError,
        ProbeResult::ServerError,
        ProbeResult::Timeout,
        ProbeResult::Dns,
        ProbeResult::Tls,
        ProbeResult::Connect,
        ProbeResult::Credentials,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ProbeResult::Accepted => "accepted",
            ProbeResult::BadRequest => "bad_request",
            ProbeResult::Forbidden => "forbidden",
            ProbeResult::NotFound => "not_found",
            ProbeResult::Throttled => "throttled",
            ProbeResult::ClientError => "client_error",
            ProbeResult::ServerError => "server_error",
            ProbeResult::Timeout => "timeout",
            ProbeResult::Dns => "dns_error",
            ProbeResult::Tls => "tls_error",
            ProbeResult::Connect => "connect_error",
            ProbeResult::Credentials => "credentials_error",
        }
    }

    /// True when the answer shows that remote_write with these credentials reaches
    /// this workspace: 2xx, or 400 (the receiver authenticated the request and found
    /// the workspace before it refused the empty body).
    pub fn is_ok(self) -> bool {
        matches!(self, ProbeResult::Accepted | ProbeResult::BadRequest)
    }

    /// What the result means and what to do, in one sentence.
    pub fn advice(self) -> &'static str {
        match self {
            ProbeResult::Accepted => "remote_write is signed, authorised and the workspace exists",
            ProbeResult::BadRequest => {
                "authorised and the workspace exists; only the empty probe body was refused"
            }
            ProbeResult::Forbidden => {
                "the credentials are not allowed aps:RemoteWrite on this workspace: grant \
                 aps:RemoteWrite to the task role (or check the credentials and clock)"
            }
            ProbeResult::NotFound => {
                "no such workspace: check the workspace id in the URL and that the URL's \
                 Region is the workspace's Region"
            }
            ProbeResult::Throttled => {
                "AMP throttles this workspace (ingestion rate or active series quota): \
                 raise the quota or send less"
            }
            ProbeResult::ClientError => "the request was refused; see the answer's text",
            ProbeResult::ServerError => {
                "AMP answered with a server error; Prometheus retries these, check again later"
            }
            ProbeResult::Timeout => {
                "no answer in time: check security groups, NAT or a VPC endpoint for aps-workspaces"
            }
            ProbeResult::Dns => {
                "the host does not resolve: check the URL, and DNS for a VPC endpoint"
            }
            ProbeResult::Tls => {
                "TLS failed: a missing CA bundle in the image, an intercepting proxy, or http on an https port"
            }
            ProbeResult::Connect => {
                "connection refused or reset: check the URL and the network path"
            }
            ProbeResult::Credentials => {
                "no AWS credentials: check the ECS task role (or AWS_* variables)"
            }
        }
    }
}

impl std::fmt::Display for ProbeResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The class of an HTTP answer to the probe.
pub fn classify_status(status: u16) -> ProbeResult {
    match status {
        200..=299 => ProbeResult::Accepted,
        400 => ProbeResult::BadRequest,
        401 | 403 => ProbeResult::Forbidden,
        404 => ProbeResult::NotFound,
        429 => ProbeResult::Throttled,
        500..=599 => ProbeResult::ServerError,
        _ => ProbeResult::ClientError,
    }
}

/// The class of a transport failure (no HTTP answer), from the error chain.
pub fn classify_transport(err: &(dyn StdError + 'static)) -> ProbeResult {
    let mut text = String::new();
    let mut cur = Some(err);
    while let Some(e) = cur {
        if e.downcast_ref::<rustls::Error>().is_some() {
            return ProbeResult::Tls;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
            {
                return ProbeResult::Tls;
            }
            if io.kind() == std::io::ErrorKind::TimedOut {
                return ProbeResult::Timeout;
            }
        }
        text.push_str(&e.to_string().to_ascii_lowercase());
        text.push('\n');
        cur = e.source();
    }
    if text.contains("dns error")
        || text.contains("failed to lookup address")
        || text.contains("name or service not known")
    {
        ProbeResult::Dns
    } else if text.contains("certificate")
        || text.contains("tls")
        || text.contains("handshake")
        || text.contains("corrupt message")
    {
        ProbeResult::Tls
    } else if text.contains("timed out") {
        ProbeResult::Timeout
    } else {
        ProbeResult::Connect
    }
}

/// One probe: its class, the HTTP status when there was an answer, and a detail
/// (the start of the answer's body, or the transport error).
#[derive(Debug, Clone)]
pub struct ProbeOutcome {
    pub result: ProbeResult,
    pub status: Option<u16>,
    pub detail: String,
    pub duration: Duration,
}

impl std::fmt::Display for ProbeOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.status {
            Some(s) => write!(f, "{} (HTTP {s})", self.result)?,
            None => write!(f, "{}", self.result)?,
        }
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        write!(f, " - {}", self.result.advice())
    }
}

/// Why a probe could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("remote_write URL {url:?} is not an http(s) URL: {reason}")]
    Url { url: String, reason: String },
    #[error("cannot set up TLS (no CA certificates?): {0}")]
    Tls(#[source] std::io::Error),
}

impl ProbeError {
    pub fn kind(&self) -> &'static str {
        match self {
            ProbeError::Url { .. } => "url",
            ProbeError::Tls(_) => "tls",
        }
    }
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

fn https_client() -> Result<HttpsClient, std::io::Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(provider)?
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(https))
}

/// The Region in an AMP URL (`https://aps-workspaces.<region>.amazonaws.com/...`).
pub fn amp_region(url: &str) -> Option<String> {
    let uri: http::Uri = url.parse().ok()?;
    let host = uri.host()?;
    let rest = host.strip_prefix("aps-workspaces.")?;
    let (region, domain) = rest.split_once('.')?;
    (domain.starts_with("amazonaws.com") && !region.is_empty()).then(|| region.to_string())
}

/// A SigV4-signed remote_write probe of one AMP workspace.
pub struct AmpProbe {
    url: http::Uri,
    region: String,
    credentials: Option<SharedCredentialsProvider>,
    timeout: Duration,
    client: HttpsClient,
}

impl AmpProbe {
    /// `region` signs the request (take it from the URL with [`amp_region`] when the
    /// URL is an AMP one). `credentials` None makes every probe a `credentials_error`.
    pub fn new(
        url: &str,
        region: impl Into<String>,
        credentials: Option<SharedCredentialsProvider>,
        timeout: Duration,
    ) -> Result<Self, ProbeError> {
        let bad = |reason: &str| ProbeError::Url {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let uri: http::Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(bad("needs http:// or https:// and a host"));
        }
        Ok(AmpProbe {
            url: uri,
            region: region.into(),
            credentials,
            timeout,
            client: https_client().map_err(ProbeError::Tls)?,
        })
    }

    pub fn url(&self) -> &http::Uri {
        &self.url
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    /// Sends the probe once and classifies the answer. Never fails: every failure is
    /// a [`ProbeResult`].
    pub async fn probe(&self) -> ProbeOutcome {
        let started = Instant::now();
        let (result, status, detail) = match self.exchange().await {
            Ok((status, body)) => (classify_status(status), Some(status), body),
            Err((result, detail)) => (result, None, detail),
        };
        ProbeOutcome {
            result,
            status,
            detail,
            duration: started.elapsed(),
        }
    }

    async fn exchange(&self) -> Result<(u16, String), (ProbeResult, String)> {
        let creds_err = |m: String| (ProbeResult::Credentials, m);
        let provider = self
            .credentials
            .as_ref()
            .ok_or_else(|| creds_err("no credentials provider configured".into()))?;
        let creds = tokio::time::timeout(self.timeout, provider.provide_credentials())
            .await
            .map_err(|_| creds_err("the credentials provider did not answer in time".into()))?
            .map_err(|e| creds_err(format!("cannot load credentials: {e}")))?;
        let identity: Identity = creds.into();
        let body = encode_write_request(&WriteRequest::default());
        let headers = [
            ("content-type", "application/x-protobuf"),
            ("content-encoding", "snappy"),
            ("x-prometheus-remote-write-version", "0.1.0"),
        ];
        let url = self.url.to_string();
        let signing_params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("aps")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| (ProbeResult::Credentials, format!("cannot sign: {e}")))?
            .into();
        let signable = SignableRequest::new(
            "POST",
            &url,
            headers.into_iter(),
            SignableBody::Bytes(&body),
        )
        .map_err(|e| (ProbeResult::ClientError, format!("cannot sign: {e}")))?;
        let (instructions, _) = sign(signable, &signing_params)
            .map_err(|e| (ProbeResult::Credentials, format!("cannot sign: {e}")))?
            .into_parts();
        let mut builder = http::Request::post(self.url.clone()).header(
            "user-agent",
            concat!("cloudmap-sd/", env!("CARGO_PKG_VERSION"), " amp-probe"),
        );
        for (k, v) in headers {
            builder = builder.header(k, v);
        }
        let mut request = builder
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| (ProbeResult::ClientError, e.to_string()))?;
        instructions.apply_to_request_http1x(&mut request);

        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| (classify_transport(&e), chain(&e)))?;
            let status = response.status().as_u16();
            let body = response
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            Ok((status, snippet(&body)))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or_else(|_| {
                Err((
                    ProbeResult::Timeout,
                    format!(
                        "no answer within {}",
                        humantime::format_duration(self.timeout)
                    ),
                ))
            })
    }
}

/// An error and its sources, `: `-joined.
fn chain(e: &(dyn StdError + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        cur = s.source();
    }
    parts.join(": ")
}

/// The first line of a body, at most 200 characters.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    line.chars().take(200).collect()
}

// ---------------------------------------------------------------------------------
// The watch: Prometheus's remote_storage metrics -> per-queue state.
// ---------------------------------------------------------------------------------

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

/// The raw readings of one remote_write queue in one scrape of Prometheus.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueReading {
    pub sent: Option<f64>,
    pub failed: Option<f64>,
    pub retried: Option<f64>,
    pub dropped: Option<f64>,
    pub pending: Option<f64>,
    /// Highest timestamp sent (`queue_highest_sent_timestamp_seconds`).
    pub highest_sent: Option<f64>,
    /// Highest timestamp seen by this queue (3.x `queue_highest_timestamp_seconds`).
    pub highest: Option<f64>,
}

/// One scrape of Prometheus's `/metrics`, reduced to what the watch uses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scrape {
    /// By queue name (`remote_name` label; the `url` label when there is none).
    pub queues: BTreeMap<String, QueueReading>,
    /// 2.x `prometheus_remote_storage_highest_timestamp_in_seconds` (not per queue).
    pub highest: Option<f64>,
}

const P: &str = "prometheus_remote_storage_";

/// Which reading a remote_storage metric feeds; current names and older aliases.
fn field_of(name: &str) -> Option<fn(&mut QueueReading) -> &mut Option<f64>> {
    let short = name.strip_prefix(P)?;
    Some(match short {
        "samples_total" | "succeeded_samples_total" => |q| &mut q.sent,
        "samples_failed_total" | "failed_samples_total" => |q| &mut q.failed,
        "samples_retried_total" | "retried_samples_total" => |q| &mut q.retried,
        "samples_dropped_total" | "dropped_samples_total" => |q| &mut q.dropped,
        "samples_pending" | "pending_samples" => |q| &mut q.pending,
        "queue_highest_sent_timestamp_seconds" => |q| &mut q.highest_sent,
        "queue_highest_timestamp_seconds" => |q| &mut q.highest,
        _ => return None,
    })
}

/// Parses Prometheus's text exposition (format 0.0.4 or OpenMetrics) into per-queue
/// readings. Lines it does not need, and lines it cannot parse, are ignored.
pub fn parse_exposition(text: &str) -> Scrape {
    let mut scrape = Scrape::default();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || !line.starts_with(P) {
            continue;
        }
        let Some((name, labels, value)) = parse_sample_line(line) else {
            continue;
        };
        if name == "prometheus_remote_storage_highest_timestamp_in_seconds" {
            scrape.highest = Some(scrape.highest.unwrap_or(f64::MIN).max(value));
            continue;
        }
        let Some(field) = field_of(name) else {
            continue;
        };
        let queue = labels
            .iter()
            .find(|(k, _)| k == "remote_name")
            .or_else(|| labels.iter().find(|(k, _)| k == "url"))
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let slot = field(scrape.queues.entry(queue).or_default());
        let is_max = name.ends_with("timestamp_seconds");
        *slot = Some(match (*slot, is_max) {
            (Some(old), true) => old.max(value),
            (Some(old), false) => old + value,
            (None, _) => value,
        });
    }
    scrape
}

/// `name{k="v",...} value [timestamp]` -> (name, labels, value).
/// Label names and values of one sample line, in order.
type LabelPairs = Vec<(String, String)>;

fn parse_sample_line(line: &str) -> Option<(&str, LabelPairs, f64)> {
    let name_end = line.find(['{', ' ', '\t']).unwrap_or(line.len());
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if rest.starts_with('{') {
        let mut chars = rest.char_indices().skip(1).peekable();
        let mut end = None;
        loop {
            // Skip separators, find the label name.
            let mut key = String::new();
            for (i, c) in chars.by_ref() {
                match c {
                    '}' => {
                        end = Some(i);
                        break;
                    }
                    '=' => break,
                    ',' | ' ' => {}
                    c => key.push(c),
                }
            }
            if end.is_some() {
                break;
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                return None;
            }
            let mut value = String::new();
            let mut escaped = false;
            let mut closed = false;
            for (_, c) in chars.by_ref() {
                if escaped {
                    value.push(if c == 'n' { '\n' } else { c });
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == '"' {
                    closed = true;
                    break;
                } else {
                    value.push(c);
                }
            }
            if !closed {
                return None;
            }
            labels.push((key, value));
        }
        rest = &rest[end? + 1..];
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some((name, labels, value))
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
    let max_lag = max_lag.as_secs_f64();
    cur.queues
        .iter()
        .map(|(name, q)| {
            let (p, secs) = match prev {
                Some((s, d)) => (s.queues.get(name), d.as_secs_f64()),
                None => (None, 0.0),
            };
            let p = p.cloned().unwrap_or_default();
            let failed_rate = rate(p.failed, q.failed, secs);
            let retried_rate = rate(p.retried, q.retried, secs);
            let dropped_rate = rate(p.dropped, q.dropped, secs);
            let highest = q.highest.or(cur.highest);
            let lag = match (highest, q.highest_sent) {
                (Some(h), Some(s)) if s > 0.0 => Some((h - s).max(0.0)),
                _ => None,
            };
            // (cause code, reason) pairs.
            let mut failing: Vec<(&'static str, String)> = Vec::new();
            let mut degraded: Vec<(&'static str, String)> = Vec::new();
            if let Some(r) = failed_rate.filter(|r| *r > 0.0) {
                failing.push((
                    "samples_failed",
                    format!("{r:.1} samples/s failed (not retried: lost)"),
                ));
            }
            if let Some(l) = lag {
                if l >= max_lag {
                    failing.push(("lag", format!("lag {l:.0}s >= {max_lag:.0}s")));
                } else if l >= max_lag / 2.0 {
                    degraded.push(("lag", format!("lag {l:.0}s >= {:.0}s", max_lag / 2.0)));
                }
            }
            if let Some(r) = retried_rate.filter(|r| *r > 0.0) {
                degraded.push((
                    "samples_retried",
                    format!(
                        "{r:.1} samples/s retried (the receiver is unreachable or answers 5xx/429)"
                    ),
                ));
            }
            let pending = q.pending;
            if lag.is_none() && pending.unwrap_or(0.0) > 0.0 && prev.is_some() {
                degraded.push((
                    "pending_unsent",
                    format!(
                        "{:.0} samples pending and none sent yet",
                        pending.unwrap_or(0.0)
                    ),
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
            QueueHealth {
                queue: name.clone(),
                failed_rate,
                retried_rate,
                dropped_rate,
                pending,
                lag,
                state,
                reason: reasons.join("; "),
                causes,
            }
        })
        .collect()
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

// ---------------------------------------------------------------------------------
// Metrics.
// ---------------------------------------------------------------------------------

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

/// A probe `result` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

type GaugeF = Gauge<f64, AtomicU64>;

/// The remote-write watch and AMP probe metrics (part of [`Metrics`]).
#[derive(Default)]
pub struct RemoteWriteMetrics {
    /// 1 for the current overall state, 0 for the others.
    pub state: Family<StateLabels, Gauge>,
    /// Transitions into each state.
    pub transitions: Family<StateLabels, Counter>,
    /// 1 for each cause of the current state, 0 for the others.
    pub cause: Family<CauseLabels, Gauge>,
    /// Reads of Prometheus's /metrics: `success`, `failed`.
    pub scrapes: Family<crate::metrics::OutcomeLabels, Counter>,
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

    fn set_causes(&self, causes: &[&str]) {
        for c in CAUSES {
            self.cause
                .get_or_create(&CauseLabels { cause: c })
                .set(i64::from(causes.contains(&c)));
        }
    }

    fn set_state(&self, state: State) {
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

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

// ---------------------------------------------------------------------------------
// The loops.
// ---------------------------------------------------------------------------------

/// Settings of the watch.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// Base URL of Prometheus (`http://127.0.0.1:9090`); `/metrics` is appended.
    pub prometheus_url: String,
    pub interval: Duration,
    pub max_lag: Duration,
    /// Deadline of one read of /metrics.
    pub timeout: Duration,
}

/// Turns scrapes into states, keeps the previous scrape for the rates, and logs and
/// exports transitions.
pub struct Watcher {
    config: WatchConfig,
    metrics: Arc<Metrics>,
    prev: Option<(Scrape, Instant)>,
    state: Option<State>,
    /// The causes of the last observation.
    causes: Vec<&'static str>,
    queues: Vec<QueueLabels>,
}

impl Watcher {
    pub fn new(config: WatchConfig, metrics: Arc<Metrics>) -> Self {
        Watcher {
            config,
            metrics,
            prev: None,
            state: None,
            causes: Vec::new(),
            queues: Vec::new(),
        }
    }

    /// The current overall state (None before the first observation).
    pub fn state(&self) -> Option<State> {
        self.state
    }

    /// Takes one read of Prometheus (its text, or why it failed) made at `now`;
    /// returns the overall state and its reason.
    pub fn observe(&mut self, read: Result<String, String>, now: Instant) -> (State, String) {
        let metrics = self.metrics.clone();
        let m = &metrics.remote_write;
        let (state, reason, causes) = match read {
            Err(e) => {
                m.scrapes
                    .get_or_create(&crate::metrics::OutcomeLabels { outcome: "failed" })
                    .inc();
                self.prev = None;
                (State::Unreachable, e, vec!["prometheus_unreachable"])
            }
            Ok(text) => {
                m.scrapes
                    .get_or_create(&crate::metrics::OutcomeLabels { outcome: "success" })
                    .inc();
                let cur = parse_exposition(&text);
                let prev = self.prev.as_ref().map(|(s, t)| (s, now - *t));
                let health = assess(prev, &cur, self.config.max_lag);
                self.export_queues(&health);
                self.prev = Some((cur, now));
                overall(&health)
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
            let from = self.state.map_or("start", State::as_str);
            let url = &self.config.prometheus_url;
            match state {
                State::Ok => info!(from, to = %state, prometheus = %url, "remote_write state: ok"),
                State::NoQueues => {
                    warn!(from, to = %state, prometheus = %url, reason = %reason, "remote_write state: no queues")
                }
                State::Degraded | State::Unreachable => {
                    warn!(from, to = %state, prometheus = %url, reason = %reason, "remote_write state: {state}")
                }
                State::Failing => {
                    error!(from, to = %state, prometheus = %url, reason = %reason, "remote_write state: {state}")
                }
            }
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

    fn export_queues(&mut self, health: &[QueueHealth]) {
        let metrics = self.metrics.clone();
        let m = &metrics.remote_write;
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
pub async fn watch(config: WatchConfig, metrics: Arc<Metrics>, shutdown: CancellationToken) {
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
    metrics: Arc<Metrics>,
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
        metrics.remote_write.record_probe(&outcome);
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

/// The probe to run from the options: `--amp-remote-write-url`, else the AMP URL of
/// `--prometheus-config`. The signing Region: the URL's, else the config's sigv4
/// region, else `default_region` (the SDK's). None: nothing to probe.
pub fn probe_target(
    options: &Options,
    default_region: Option<&str>,
) -> Result<Option<(String, String)>, PromConfigError> {
    let config = match &options.prometheus_config {
        Some(p) => Some(PromConfig::load(p)?),
        None => None,
    };
    let entry = config
        .as_ref()
        .and_then(|c| c.probe_entry(|u| amp_region(u).is_some()));
    let url = match (&options.amp_remote_write_url, entry) {
        (Some(u), _) => u.clone(),
        (None, Some(e)) => e.url.clone(),
        (None, None) => return Ok(None),
    };
    let region = amp_region(&url)
        .or_else(|| entry.and_then(|e| e.sigv4.clone().flatten()))
        .or_else(|| default_region.map(str::to_string))
        .unwrap_or_else(|| "us-east-1".to_string());
    Ok(Some((url, region)))
}

/// Starts the watch and the probe for `run`, as configured; the handle ends when both
/// have stopped after `shutdown`.
pub fn spawn(
    options: &Options,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let options = options.clone();
    tokio::spawn(async move {
        let mut tasks = tokio::task::JoinSet::new();
        if !options.remote_write_watch_interval.is_zero() {
            let config = WatchConfig {
                prometheus_url: options.prometheus_url.clone(),
                interval: options.remote_write_watch_interval,
                max_lag: options.remote_write_max_lag,
                timeout: options
                    .remote_write_watch_interval
                    .min(Duration::from_secs(10)),
            };
            tasks.spawn(watch(config, metrics.clone(), shutdown.clone()));
        }
        if !options.amp_probe_interval.is_zero() {
            let sdk = crate::aws::endpoint::load_sdk_config(options.api_timeout).await;
            let region = sdk.region().map(|r| r.to_string());
            match probe_target(&options, region.as_deref()) {
                Ok(Some((url, region))) => {
                    match AmpProbe::new(
                        &url,
                        region,
                        sdk.credentials_provider(),
                        options.api_timeout,
                    ) {
                        Ok(p) => {
                            info!(url = %url, region = %p.region(),
                                interval = %humantime::format_duration(options.amp_probe_interval),
                                "AMP probe starting");
                            tasks.spawn(probe_loop(
                                p,
                                options.amp_probe_interval,
                                metrics.clone(),
                                shutdown.clone(),
                            ));
                        }
                        Err(e) => error!(error = %e, kind = e.kind(), "AMP probe disabled"),
                    }
                }
                Ok(None) => info!(
                    "AMP probe off: no --amp-remote-write-url and no remote_write URL in --prometheus-config"
                ),
                Err(e) => error!(error = %e, kind = e.kind(), "AMP probe disabled"),
            }
        }
        while tasks.join_next().await.is_some() {}
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const V2_42: &str = r#"# HELP prometheus_remote_storage_highest_timestamp_in_seconds Highest timestamp that has come into the remote storage via the Appender interface, in seconds since epoch.
# TYPE prometheus_remote_storage_highest_timestamp_in_seconds gauge
prometheus_remote_storage_highest_timestamp_in_seconds 1.7e+09
# TYPE prometheus_remote_storage_queue_highest_sent_timestamp_seconds gauge
prometheus_remote_storage_queue_highest_sent_timestamp_seconds{remote_name="amp",url="https://aps-workspaces.eu-west-1.amazonaws.com/workspaces/ws-1/api/v1/remote_write"} 1.699999984e+09
prometheus_remote_storage_samples_failed_total{remote_name="amp",url="https://x"} 0
prometheus_remote_storage_samples_retried_total{remote_name="amp",url="https://x"} 3987
prometheus_remote_storage_samples_dropped_total{remote_name="amp",url="https://x"} 2
prometheus_remote_storage_samples_pending{remote_name="amp",url="https://x"} 3442
prometheus_remote_storage_samples_total{remote_name="amp",url="https://x"} 10000
prometheus_remote_storage_exemplars_total{remote_name="amp",url="https://x"} 0
prometheus_tsdb_head_series 123
"#;

    const V3: &str = r#"prometheus_remote_storage_queue_highest_timestamp_seconds{remote_name="a,b \"q\"",url="http://r"} 1000
prometheus_remote_storage_queue_highest_sent_timestamp_seconds{remote_name="a,b \"q\"",url="http://r"} 995
prometheus_remote_storage_samples_failed_total{remote_name="a,b \"q\"",url="http://r"} 5
prometheus_remote_storage_samples_retried_total{remote_name="a,b \"q\"",url="http://r"} 0
prometheus_remote_storage_samples_pending{remote_name="a,b \"q\"",url="http://r"} 0
"#;

    #[test]
    fn parses_2x_names_with_the_global_highest_timestamp() {
        let s = parse_exposition(V2_42);
        assert_eq!(s.highest, Some(1.7e9));
        let q = &s.queues["amp"];
        assert_eq!(q.retried, Some(3987.0));
        assert_eq!(q.pending, Some(3442.0));
        assert_eq!(q.dropped, Some(2.0));
        assert_eq!(q.sent, Some(10000.0));
        assert_eq!(q.highest, None);
        let h = assess(None, &s, Duration::from_secs(120));
        assert_eq!(h[0].lag, Some(16.0));
        assert_eq!(h[0].retried_rate, None, "no rate on the first scrape");
        assert_eq!(h[0].state, State::Ok);
    }

    #[test]
    fn parses_3x_names_and_escaped_labels() {
        let s = parse_exposition(V3);
        let q = &s.queues["a,b \"q\""];
        assert_eq!(q.highest, Some(1000.0));
        assert_eq!(q.highest_sent, Some(995.0));
        assert_eq!(q.failed, Some(5.0));
        let h = assess(None, &s, Duration::from_secs(120));
        assert_eq!(h[0].lag, Some(5.0));
    }

    #[test]
    fn old_alias_names_count_too() {
        let s = parse_exposition(
            "prometheus_remote_storage_failed_samples_total{remote_name=\"r\"} 7\nprometheus_remote_storage_pending_samples{remote_name=\"r\"} 1\n",
        );
        assert_eq!(s.queues["r"].failed, Some(7.0));
        assert_eq!(s.queues["r"].pending, Some(1.0));
    }

    fn reading(failed: f64, retried: f64, highest: f64, sent: f64) -> Scrape {
        let mut s = Scrape::default();
        s.queues.insert(
            "q".into(),
            QueueReading {
                failed: Some(failed),
                retried: Some(retried),
                highest: Some(highest),
                highest_sent: Some(sent),
                pending: Some(0.0),
                ..Default::default()
            },
        );
        s
    }

    #[test]
    fn states_from_rates_and_lag() {
        let max = Duration::from_secs(60);
        let p = reading(0.0, 0.0, 100.0, 99.0);
        let d = Duration::from_secs(10);
        let ok = assess(Some((&p, d)), &reading(0.0, 0.0, 110.0, 109.0), max);
        assert_eq!((ok[0].state, ok[0].reason.as_str()), (State::Ok, ""));
        let retried = assess(Some((&p, d)), &reading(0.0, 50.0, 110.0, 105.0), max);
        assert_eq!(retried[0].state, State::Degraded);
        assert_eq!(retried[0].retried_rate, Some(5.0));
        assert!(
            retried[0].reason.contains("5.0 samples/s retried"),
            "{}",
            retried[0].reason
        );
        let lagging = assess(Some((&p, d)), &reading(0.0, 0.0, 140.0, 100.0), max);
        assert_eq!(lagging[0].state, State::Degraded);
        let failing = assess(Some((&p, d)), &reading(20.0, 0.0, 110.0, 109.0), max);
        assert_eq!(failing[0].state, State::Failing);
        assert!(failing[0].reason.contains("failed"));
        let late = assess(Some((&p, d)), &reading(0.0, 0.0, 200.0, 100.0), max);
        assert_eq!(late[0].state, State::Failing);
        assert!(late[0].reason.contains("lag 100s"), "{}", late[0].reason);
        // A counter reset (Prometheus restarted) gives no rate, not a negative one.
        let reset = assess(
            Some((&reading(50.0, 50.0, 1.0, 1.0), d)),
            &reading(0.0, 0.0, 2.0, 2.0),
            max,
        );
        assert_eq!(reset[0].failed_rate, None);
        assert_eq!(reset[0].state, State::Ok);
    }

    #[test]
    fn overall_is_the_worst_queue() {
        assert_eq!(overall(&[]).0, State::NoQueues);
        let mut s = reading(0.0, 0.0, 1.0, 1.0);
        s.queues.insert(
            "z".into(),
            reading(0.0, 0.0, 500.0, 1.0).queues["q"].clone(),
        );
        let h = assess(None, &s, Duration::from_secs(60));
        let (state, reason, causes) = overall(&h);
        assert_eq!(state, State::Failing);
        assert!(reason.starts_with("queue z: lag"), "{reason}");
        assert_eq!(causes, ["lag"]);
        assert_eq!(overall(&[]).2, ["no_queues"]);
    }

    #[test]
    fn watcher_reports_unreachable_and_transitions() {
        let metrics = Arc::new(Metrics::new());
        let mut w = Watcher::new(
            WatchConfig {
                prometheus_url: "http://127.0.0.1:1".into(),
                interval: Duration::from_secs(1),
                max_lag: Duration::from_secs(60),
                timeout: Duration::from_secs(1),
            },
            metrics.clone(),
        );
        let t0 = Instant::now();
        assert_eq!(w.observe(Err("refused".into()), t0).0, State::Unreachable);
        let text = metrics.encode();
        assert!(
            text.contains(r#"cloudmap_sd_remote_write_cause{cause="prometheus_unreachable"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"cloudmap_sd_remote_write_cause{cause="lag"} 0"#));
        assert_eq!(w.observe(Ok(V2_42.into()), t0).0, State::Ok);
        let text = metrics.encode();
        assert!(
            text.contains(r#"cloudmap_sd_remote_write_cause{cause="prometheus_unreachable"} 0"#),
            "{text}"
        );
        assert!(
            text.contains(r#"cloudmap_sd_remote_write_state{state="ok"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"cloudmap_sd_remote_write_state{state="unreachable"} 0"#));
        assert!(
            text.contains(r#"cloudmap_sd_remote_write_transitions_total{state="unreachable"} 1"#)
        );
        assert!(
            text.contains(r#"cloudmap_sd_remote_write_lag_seconds{queue="amp"} 16"#),
            "{text}"
        );
    }

    #[test]
    fn status_classes() {
        for (status, r) in [
            (200, ProbeResult::Accepted),
            (204, ProbeResult::Accepted),
            (400, ProbeResult::BadRequest),
            (401, ProbeResult::Forbidden),
            (403, ProbeResult::Forbidden),
            (404, ProbeResult::NotFound),
            (413, ProbeResult::ClientError),
            (429, ProbeResult::Throttled),
            (503, ProbeResult::ServerError),
        ] {
            assert_eq!(classify_status(status), r, "{status}");
        }
        assert!(ProbeResult::Forbidden.advice().contains("aps:RemoteWrite"));
        assert!(ProbeResult::NotFound.advice().contains("Region"));
    }

    #[test]
    fn transport_classes_from_error_text() {
        let e = std::io::Error::other("dns error: failed to lookup address information");
        assert_eq!(classify_transport(&e), ProbeResult::Dns);
        let e = std::io::Error::other(rustls::Error::DecryptError);
        assert_eq!(classify_transport(&e), ProbeResult::Tls);
        let e = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(classify_transport(&e), ProbeResult::Connect);
    }

    #[test]
    fn the_probe_body_is_an_empty_write_request() {
        let body = encode_write_request(&WriteRequest::default());
        let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
        assert!(raw.is_empty());
        let full = WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![Label {
                    name: "__name__".into(),
                    value: "up".into(),
                }],
                samples: vec![Sample {
                    value: 1.0,
                    timestamp: 1_700_000_000_000,
                }],
            }],
        };
        let raw = snap::raw::Decoder::new()
            .decompress_vec(&encode_write_request(&full))
            .unwrap();
        let back: WriteRequest = prost::Message::decode(raw.as_slice()).unwrap();
        assert_eq!(back, full);
    }

    #[test]
    fn amp_urls_give_their_region() {
        assert_eq!(
            amp_region(
                "https://aps-workspaces.eu-west-1.amazonaws.com/workspaces/ws-1/api/v1/remote_write"
            )
            .as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(amp_region("http://127.0.0.1:9090/api/v1/write"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn probe_loop_probes_at_start_then_on_its_clock() {
        // A probe to a port nothing listens on: connect_error each time, quickly.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let probe = AmpProbe::new(
            &format!("http://127.0.0.1:{port}/api/v1/write"),
            "us-east-1",
            None,
            Duration::from_secs(1),
        )
        .unwrap();
        let metrics = Arc::new(Metrics::new());
        let stop = CancellationToken::new();
        let task = tokio::spawn(probe_loop(
            probe,
            Duration::from_secs(300),
            metrics.clone(),
            stop.clone(),
        ));
        let count = |m: &Metrics| {
            m.remote_write
                .probes
                .get_or_create(&ResultLabels {
                    result: ProbeResult::Credentials.as_str(),
                })
                .get()
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(count(&metrics), 1, "one probe at start");
        tokio::time::sleep(Duration::from_secs(298)).await;
        assert_eq!(count(&metrics), 1);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(count(&metrics), 2, "then one per interval");
        stop.cancel();
        task.await.unwrap();
    }
}
