//! The HTTP server on `--listen`: `/-/healthy` (liveness), `/-/ready` (readiness:
//! true after the first successful write) and `/metrics`, the paths Prometheus
//! itself uses. It only reads shared state.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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
}

impl Shared {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Shared {
            metrics,
            ready: AtomicBool::new(false),
        }
    }

    /// Marks the sidecar ready (after the first successful write). Never unset:
    /// the file stays valid even when later writes fail, and metrics say so.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
        self.metrics.ready.set(1);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
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
    "cloudmap-sd\n/-/healthy  liveness\n/-/ready    readiness (after the first successful write)\n/metrics    metrics\n"
}

async fn healthy() -> &'static str {
    "cloudmap-sd is Healthy.\n"
}

async fn ready(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    if s.is_ready() {
        (StatusCode::OK, "cloudmap-sd is Ready.\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "cloudmap-sd is not ready: no successful write yet.\n",
        )
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
