//! The AMP probe: a SigV4-signed (service `aps`) remote_write request that holds no
//! time series, sent to the workspace, and its answer classified
//! ([`ProbeResult`]). The receiver authenticates the request and looks the
//! workspace up before it reads the body, so an empty `WriteRequest` tests
//! credentials, the `aps:RemoteWrite` permission, the workspace id and the Region
//! without writing a single sample. [`probe_target`] is the one rule for what to
//! probe, shared by `run` and `check`.

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;

use super::wire::{WriteRequest, encode_write_request};
use crate::prom_config::PromConfig;

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

    /// Signs and sends the probe: the status and the start of the body, or the
    /// class of the failure and its words.
    async fn exchange(&self) -> Result<(u16, String), Failure> {
        let identity = self.identity().await?;
        let request = self.signed_request(&identity)?;
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
                let within = humantime::format_duration(self.timeout);
                Err((ProbeResult::Timeout, format!("no answer within {within}")))
            })
    }

    /// The credentials to sign with, within the timeout.
    async fn identity(&self) -> Result<Identity, Failure> {
        let creds_err = |m: String| (ProbeResult::Credentials, m);
        let provider = self
            .credentials
            .as_ref()
            .ok_or_else(|| creds_err("no credentials provider configured".into()))?;
        let creds = tokio::time::timeout(self.timeout, provider.provide_credentials())
            .await
            .map_err(|_| creds_err("the credentials provider did not answer in time".into()))?
            .map_err(|e| creds_err(format!("cannot load credentials: {e}")))?;
        Ok(creds.into())
    }

    /// The empty remote_write request, SigV4-signed for service `aps`.
    fn signed_request(&self, identity: &Identity) -> Result<http::Request<Full<Bytes>>, Failure> {
        let body = encode_write_request(&WriteRequest::default());
        let headers = [
            ("content-type", "application/x-protobuf"),
            ("content-encoding", "snappy"),
            ("x-prometheus-remote-write-version", "0.1.0"),
        ];
        let url = self.url.to_string();
        let cannot_sign = |kind: ProbeResult| move |e: String| (kind, format!("cannot sign: {e}"));
        let signing_params = v4::SigningParams::builder()
            .identity(identity)
            .region(&self.region)
            .name("aps")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| cannot_sign(ProbeResult::Credentials)(e.to_string()))?
            .into();
        let body_ref = SignableBody::Bytes(&body);
        let signable = SignableRequest::new("POST", &url, headers.into_iter(), body_ref)
            .map_err(|e| cannot_sign(ProbeResult::ClientError)(e.to_string()))?;
        let (instructions, _) = sign(signable, &signing_params)
            .map_err(|e| cannot_sign(ProbeResult::Credentials)(e.to_string()))?
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
        Ok(request)
    }
}

/// A probe that got no HTTP answer: its class and what went wrong.
type Failure = (ProbeResult, String);

/// An error and its sources, `: `-joined.
pub(super) fn chain(e: &(dyn StdError + 'static)) -> String {
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

/// What to probe and with which signing Region: `explicit` (`--amp-remote-write-url`),
/// else the AMP remote_write URL of `config` (else its first). The Region: the
/// URL's, else the config entry's sigv4 region, else `default_region` (the SDK's),
/// else us-east-1. None: nothing to probe.
pub fn probe_target(
    explicit: Option<&str>,
    config: Option<&PromConfig>,
    default_region: Option<&str>,
) -> Option<(String, String)> {
    let entry = config.and_then(|c| c.probe_entry(|u| amp_region(u).is_some()));
    let url = match (explicit, entry) {
        (Some(u), _) => u.to_string(),
        (None, Some(e)) => e.url.clone(),
        (None, None) => return None,
    };
    let region = amp_region(&url)
        .or_else(|| entry.and_then(|e| e.sigv4.clone().flatten()))
        .or_else(|| default_region.map(str::to_string))
        .unwrap_or_else(|| "us-east-1".to_string());
    Some((url, region))
}
