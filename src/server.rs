//! The HTTP server on `--listen`: `/-/healthy` (liveness), `/-/ready` (readiness:
//! true after the first successful write, false again while the file cannot be
//! written; without a file, true after the first complete discovery) and
//! `/metrics`, the paths Prometheus itself uses, plus the http_sd routes
//! (`/sd/targets`, `/sd/hosts`, [`HttpSd`]). It only reads what the run loop
//! publishes ([`Readiness`], [`crate::http_sd::Published`]) and the metrics it is
//! handed. `/-/healthy`, `/-/ready` and `/metrics` never ask for the http_sd token.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::http_sd::HttpSd;

/// Readiness: the run loop sets it after each write, the server reads it.
#[derive(Debug, Default)]
pub struct Readiness {
    ready: AtomicBool,
    /// The error of the last write, while it is the last word.
    write_error: Mutex<Option<String>>,
    /// `cloudmap_sd_ready`, kept equal to what `/-/ready` says.
    gauge: Gauge,
    /// Without a file: ready means the first complete discovery was published.
    no_file: bool,
}

impl Readiness {
    /// Readiness that keeps `gauge` at 1 while ready, 0 otherwise.
    pub fn new(gauge: Gauge) -> Self {
        Readiness {
            gauge,
            ..Readiness::default()
        }
    }

    /// Readiness of a sidecar that writes no file (`--output none`): ready once the
    /// first complete discovery is published, and no write can fail.
    pub fn without_file(gauge: Gauge) -> Self {
        Readiness {
            gauge,
            no_file: true,
            ..Readiness::default()
        }
    }

    /// Records a successful write (without a file: a publish): the sidecar is
    /// ready, and stays so until a write fails.
    pub fn set_ready(&self) {
        *self.write_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.ready.store(true, Ordering::Release);
        self.gauge.set(1);
    }

    /// Records a failed write: not ready until a write succeeds again (the
    /// previous file is intact but no longer follows Cloud Map).
    pub fn set_write_error(&self, error: String) {
        *self.write_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
        self.gauge.set(0);
    }

    /// True once a write succeeded, whatever happened after (the first publish
    /// rules use this).
    pub fn has_written(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Ready: a write succeeded and the last write did not fail; else why not.
    pub fn readiness(&self) -> Result<(), String> {
        if let Some(e) = &*self.write_error.lock().unwrap_or_else(|e| e.into_inner()) {
            return Err(format!("the last write failed: {e}"));
        }
        if !self.has_written() && self.no_file {
            return Err("no complete discovery yet".to_string());
        }
        if !self.has_written() {
            return Err("no successful write yet".to_string());
        }
        Ok(())
    }
}

/// The text `/metrics` serves, made on each request.
pub type Exposition = Arc<dyn Fn() -> String + Send + Sync>;

/// What the handlers read.
#[derive(Clone)]
struct Shared {
    readiness: Arc<Readiness>,
    exposition: Exposition,
}

/// Binds `addr` (so a bad address fails before discovery starts).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Asks the sidecar on `addr` whether it is ready (`GET /-/ready` answers 200).
/// An unspecified address (`0.0.0.0`, `[::]`) is probed on loopback.
pub async fn probe_ready(addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    let mut target = addr;
    if target.ip().is_unspecified() {
        target.set_ip(match target {
            SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
        });
    }
    let url = format!("http://{target}/-/ready");
    let exchange = async {
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let uri: hyper::Uri = url.parse().map_err(|e| format!("bad address {url}: {e}"))?;
        let resp = client
            .get(uri)
            .await
            .map_err(|e| format!("cannot connect to {target}: {e}"))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("cannot read from {target}: {e}"))?
            .to_bytes();
        if status == hyper::StatusCode::OK {
            Ok(())
        } else {
            let body = String::from_utf8_lossy(&body);
            Err(format!(
                "{target} answered {}: {}",
                status.as_u16(),
                body.trim()
            ))
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("no answer from {target} within {timeout:?}")))
}

/// Serves until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    readiness: Arc<Readiness>,
    exposition: Exposition,
    http_sd: HttpSd,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let shared = Shared {
        readiness,
        exposition,
    };
    let app = Router::new()
        .route("/", get(index))
        .route("/-/healthy", get(healthy))
        .route("/-/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(shared)
        .merge(http_sd.routes());
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

async fn index() -> &'static str {
    "cloudmap-sd\n/-/healthy  liveness\n/-/ready    readiness (a write succeeded and the last one did not fail)\n/metrics    metrics\n/sd/targets the targets for http_sd_configs (?shard=INDEX/COUNT&shard_key=service|task)\n/sd/hosts   the EC2 hosts, when that list is on\n"
}

async fn healthy() -> &'static str {
    "cloudmap-sd is Healthy.\n"
}

async fn ready(State(s): State<Shared>) -> impl IntoResponse {
    match s.readiness.readiness() {
        Ok(()) => (StatusCode::OK, "cloudmap-sd is Ready.\n".to_string()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cloudmap-sd is not ready: {why}.\n"),
        ),
    }
}

async fn metrics(State(s): State<Shared>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        (s.exposition)(),
    )
}
