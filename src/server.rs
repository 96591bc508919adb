//! The HTTP server on `--listen`: `/-/healthy` (liveness), `/-/ready` (readiness:
//! true after the first successful write) and `/metrics`, the paths Prometheus
//! itself uses. It only reads shared state.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
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
