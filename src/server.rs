//! The HTTP server on `--listen`: `/-/healthy` (liveness), `/-/ready` (readiness:
//! true after the first successful write, false again while the file cannot be
//! written) and `/metrics`, the paths Prometheus itself uses. It only reads shared
//! state.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// State the discovery loop publishes and the server reads.
pub struct Shared {
    pub metrics: Arc<Metrics>,
    ready: AtomicBool,
    /// The error of the last write, while it is the last word.
    write_error: Mutex<Option<String>>,
}

impl Shared {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Shared {
            metrics,
            ready: AtomicBool::new(false),
            write_error: Mutex::new(None),
        }
    }

    /// Records a successful write: the sidecar is ready, and stays so until a
    /// write fails.
    pub fn set_ready(&self) {
        *self.write_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.ready.store(true, Ordering::Release);
        self.metrics.ready.set(1);
    }

    /// Records a failed write: not ready until a write succeeds again (the
    /// previous file is intact but no longer follows Cloud Map).
    pub fn set_write_error(&self, error: String) {
        *self.write_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
        self.metrics.ready.set(0);
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
        if !self.has_written() {
            return Err("no successful write yet".to_string());
        }
        Ok(())
    }
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
    let exchange = async {
        let mut s = TcpStream::connect(target)
            .await
            .map_err(|e| format!("cannot connect to {target}: {e}"))?;
        s.write_all(format!("GET /-/ready HTTP/1.0\r\nHost: {target}\r\n\r\n").as_bytes())
            .await
            .map_err(|e| format!("cannot send to {target}: {e}"))?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp)
            .await
            .map_err(|e| format!("cannot read from {target}: {e}"))?;
        let text = String::from_utf8_lossy(&resp);
        let status = text.split(' ').nth(1).unwrap_or("");
        let body = text
            .split("\r\n\r\n")
            .nth(1)
            .unwrap_or("")
            .trim()
            .to_string();
        if status == "200" {
            Ok(())
        } else {
            Err(format!("{target} answered {status}: {body}"))
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("no answer from {target} within {timeout:?}")))
}

/// Serves until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/", get(index))
        .route("/-/healthy", get(healthy))
        .route("/-/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(shared);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

async fn index() -> &'static str {
    "cloudmap-sd\n/-/healthy  liveness\n/-/ready    readiness (a write succeeded and the last one did not fail)\n/metrics    metrics\n"
}

async fn healthy() -> &'static str {
    "cloudmap-sd is Healthy.\n"
}

async fn ready(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    match s.readiness() {
        Ok(()) => (StatusCode::OK, "cloudmap-sd is Ready.\n".to_string()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cloudmap-sd is not ready: {why}.\n"),
        ),
    }
}

async fn metrics(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}
