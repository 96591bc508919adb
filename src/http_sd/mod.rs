//! http_sd: `GET /sd/targets` (and `GET /sd/hosts` when the EC2 hosts list is on)
//! on `--listen`, the targets of the file for any collector that speaks Prometheus's
//! `http_sd_configs` (Prometheus in server or agent mode, the OpenTelemetry
//! collector's prometheus receiver, Grafana Alloy's `discovery.http`).
//!
//! - The run loop hands every publish to [`Published`]: the snapshot (its data shared
//!   with discovery's caches) and the label options of the file. Nothing is rendered
//!   then, and a publish equal to the current one keeps it.
//! - A request renders with the file's one renderer, [`targets::render_to`], so the
//!   bytes are the file's bytes. The whole list is rendered once per publish, on the
//!   first request, and every later request shares that body; a share
//!   (`?shard=I/N&shard_key=service|task`, the rule of `--shard`) is rendered for its
//!   own request, [`RENDERS`] at a time, and freed once sent.
//! - `ETag` is the md5 of the body; a matching `If-None-Match` gets 304.
//! - Before the first complete discovery: 503 with the reason in one line. Bad query
//!   parameters: 400 with the reason.
//! - With a [`BearerToken`] (`--http-sd-bearer-token-file`), `/sd/*` answers 401
//!   unless the request carries `Authorization: Bearer <token>`.
//!
//! - [`auth`]: the token; [`query`]: the parameters; [`metrics`]: this part's metrics.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper::body::Bytes;
use tokio::sync::{OnceCell, OwnedSemaphorePermit, Semaphore};

use crate::model::{Shard, ShardKey, Snapshot};
use crate::targets::{self, TargetOptions};

pub mod auth;
pub mod metrics;
pub mod query;

pub use auth::{BearerToken, TokenError};
pub use metrics::HttpSdMetrics;

/// What `run` serves at `/sd/*`, from the flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSdOptions {
    /// `--http-sd-bearer-token-file`: `/sd/*` needs this token; None: open.
    pub bearer_token_file: Option<PathBuf>,
    /// The EC2 hosts list is on (`/sd/hosts`).
    pub hosts: bool,
}

/// Shares rendered at once; a request for a share waits for one of them (at most
/// [`RENDER_WAIT`]). It bounds the memory shares take whatever the number of
/// requests: each holds its body until it is sent.
pub const RENDERS: usize = 2;

/// Longest a request waits for a render slot before it is answered 503.
const RENDER_WAIT: Duration = Duration::from_secs(30);

/// A rendered body and its entity tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Body {
    pub bytes: Bytes,
    /// `"<md5 hex>"`, quoted as the header carries it.
    pub etag: String,
}

impl Body {
    fn of(bytes: Bytes) -> Self {
        use md5::{Digest, Md5};
        let digest = Md5::digest(&bytes);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        Body {
            bytes,
            etag: format!("\"{hex}\""),
        }
    }
}

/// One publish of the run loop: what `/sd/*` serves until the next one.
pub struct Publication {
    snapshot: Snapshot,
    targets: TargetOptions,
    /// The EC2 hosts list, when it is on and known.
    hosts: Option<Body>,
    /// The whole targets list, rendered on the first request.
    whole: OnceCell<Body>,
}

/// What the run loop last published, read by the http_sd handlers. The loop sets it
/// after every publish; until the first, `/sd/*` answers 503.
pub struct Published {
    /// Whether the EC2 hosts list is on (`/sd/hosts` answers 404 when it is not).
    hosts_on: bool,
    current: RwLock<Option<Arc<Publication>>>,
    /// Size of the last whole body: the next render reserves about that much.
    last_len: AtomicUsize,
}

impl Published {
    /// Nothing published yet; `hosts_on`: the EC2 hosts list is made.
    pub fn new(hosts_on: bool) -> Self {
        Published {
            hosts_on,
            current: RwLock::new(None),
            last_len: AtomicUsize::new(0),
        }
    }

    /// Records a publish: the snapshot and the options of the file, and the hosts
    /// list when this cycle made one (None keeps the last known list). A publish
    /// equal to the current one changes nothing, so its rendered body is kept.
    pub fn publish(&self, snapshot: &Snapshot, targets: &TargetOptions, hosts: Option<&[u8]>) {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        let last = current.as_ref();
        let hosts = match (hosts, last.and_then(|p| p.hosts.as_ref())) {
            (Some(new), Some(old)) if *new == *old.bytes => Some(old.clone()),
            (Some(new), _) => Some(Body::of(Bytes::copy_from_slice(new))),
            (None, old) => old.cloned(),
        };
        let same_targets = last.is_some_and(|p| p.snapshot == *snapshot && p.targets == *targets);
        if same_targets && last.is_some_and(|p| p.hosts == hosts) {
            return;
        }
        let whole = match last {
            Some(p) if same_targets => OnceCell::new_with(p.whole.get().cloned()),
            _ => OnceCell::new(),
        };
        *current = Some(Arc::new(Publication {
            snapshot: snapshot.clone(),
            targets: targets.clone(),
            hosts,
            whole,
        }));
    }

    /// The current publication; None before the first.
    pub fn current(&self) -> Option<Arc<Publication>> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Why a body could not be made (each is a 5xx answer).
#[derive(Debug, thiserror::Error)]
enum RenderError {
    #[error("rendering the targets failed: {0}")]
    Render(#[from] std::io::Error),
    #[error("busy: {RENDERS} shares are being rendered or sent; try again")]
    Busy,
}

/// Renders off the runtime what `fill` writes, with about `reserve` bytes
/// reserved; the permit, if any, is held until the body is dropped.
async fn render(
    fill: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()> + Send + 'static,
    reserve: usize,
    permit: Option<OwnedSemaphorePermit>,
) -> Result<Body, RenderError> {
    let rendered = tokio::task::spawn_blocking(move || {
        let mut v = Vec::with_capacity(reserve);
        fill(&mut v)?;
        v.shrink_to_fit();
        Ok::<_, std::io::Error>(v)
    })
    .await
    .map_err(|e| std::io::Error::other(e.to_string()))??;
    let bytes = match permit {
        Some(slot) => Bytes::from_owner(Held {
            body: rendered,
            _slot: slot,
        }),
        None => Bytes::from(rendered),
    };
    Ok(Body::of(bytes))
}

/// A body that holds a render slot until the last reference to it is gone.
struct Held {
    body: Vec<u8>,
    _slot: OwnedSemaphorePermit,
}

impl AsRef<[u8]> for Held {
    fn as_ref(&self) -> &[u8] {
        &self.body
    }
}

/// The two endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Targets,
    Hosts,
}

impl Endpoint {
    fn as_str(self) -> &'static str {
        match self {
            Endpoint::Targets => "targets",
            Endpoint::Hosts => "hosts",
        }
    }
}

/// The http_sd service: what the loop published, the optional token, the render
/// slots and the metrics.
pub struct HttpSd {
    published: Arc<Published>,
    token: Option<Arc<BearerToken>>,
    metrics: Arc<HttpSdMetrics>,
    renders: Arc<Semaphore>,
}

impl HttpSd {
    pub fn new(
        published: Arc<Published>,
        token: Option<Arc<BearerToken>>,
        metrics: Arc<HttpSdMetrics>,
    ) -> Self {
        HttpSd {
            published,
            token,
            metrics,
            renders: Arc::new(Semaphore::new(RENDERS)),
        }
    }

    /// The routes `/sd/targets` and `/sd/hosts`.
    pub fn routes(self) -> Router {
        Router::new()
            .route("/sd/targets", get(targets_handler))
            .route("/sd/hosts", get(hosts_handler))
            .with_state(Arc::new(self))
    }

    async fn answer(
        &self,
        endpoint: Endpoint,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Response {
        let response = self.respond(endpoint, query, headers).await;
        self.metrics.request(endpoint.as_str(), response.status());
        response
    }

    async fn respond(
        &self,
        endpoint: Endpoint,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Response {
        if let Some(token) = &self.token
            && !token.allows(headers)
        {
            return unauthorized();
        }
        let shard = match query::parse(query) {
            Ok(s) => s,
            Err(why) => return plain(StatusCode::BAD_REQUEST, &why),
        };
        if endpoint == Endpoint::Hosts && !self.published.hosts_on {
            return plain(
                StatusCode::NOT_FOUND,
                "the EC2 hosts list is off (--ec2-hosts-output)",
            );
        }
        let Some(publication) = self.published.current() else {
            return plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "no complete discovery yet: the targets are served once the first one is done",
            );
        };
        let body = match (endpoint, shard) {
            (Endpoint::Targets, None) => self.whole(&publication).await,
            (Endpoint::Targets, Some((shard, key))) => self.share(&publication, shard, key).await,
            (Endpoint::Hosts, Some(_)) => {
                return plain(
                    StatusCode::BAD_REQUEST,
                    "the EC2 hosts list is not sharded: drop shard and shard_key",
                );
            }
            (Endpoint::Hosts, None) => match &publication.hosts {
                Some(b) => Ok(b.clone()),
                None => {
                    return plain(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the EC2 hosts are not known yet: try again after the next cycle",
                    );
                }
            },
        };
        match body {
            Ok(b) => json(b, headers),
            Err(e @ RenderError::Busy) => plain(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
            Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        }
    }

    /// The whole list of `p`, rendered on the first request and shared after.
    async fn whole(&self, p: &Arc<Publication>) -> Result<Body, RenderError> {
        let body = p
            .whole
            .get_or_try_init(|| {
                self.metrics.render("whole");
                let reserve = self.published.last_len.load(Ordering::Relaxed);
                let p = p.clone();
                render(
                    move |out| targets::render_to(&p.snapshot, &p.targets, out),
                    reserve + reserve / 8,
                    None,
                )
            })
            .await?;
        self.published
            .last_len
            .store(body.bytes.len(), Ordering::Relaxed);
        Ok(body.clone())
    }

    /// One share of `p`, rendered for this request in a render slot.
    async fn share(
        &self,
        p: &Arc<Publication>,
        shard: Shard,
        key: ShardKey,
    ) -> Result<Body, RenderError> {
        let permit = tokio::time::timeout(RENDER_WAIT, self.renders.clone().acquire_owned())
            .await
            .map_err(|_| RenderError::Busy)?
            .map_err(|_| RenderError::Busy)?;
        self.metrics.render("share");
        let reserve = self.published.last_len.load(Ordering::Relaxed) / shard.count as usize;
        let p = p.clone();
        render(
            move |out| targets::render_to(&p.snapshot.share(shard, key), &p.targets, out),
            reserve + reserve / 8,
            Some(permit),
        )
        .await
    }
}

async fn targets_handler(
    State(sd): State<Arc<HttpSd>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    sd.answer(Endpoint::Targets, query.as_deref(), &headers)
        .await
}

async fn hosts_handler(
    State(sd): State<Arc<HttpSd>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    sd.answer(Endpoint::Hosts, query.as_deref(), &headers).await
}

/// 200 with the body, or 304 when `If-None-Match` names its tag.
fn json(body: Body, headers: &HeaderMap) -> Response {
    let etag = HeaderValue::from_str(&body.etag).expect("an md5 in hex is a valid header");
    if none_match(headers, &body.etag) {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::ETAG, etag),
        ],
        body.bytes,
    )
        .into_response()
}

/// Whether an `If-None-Match` header names `etag` (weak comparison, as RFC 9110
/// asks for this header) or is `*`.
fn none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|t| t == "*" || t.trim_start_matches("W/") == etag)
}

/// A one-line plain-text answer.
fn plain(status: StatusCode, why: &str) -> Response {
    (status, format!("{why}\n")).into_response()
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer realm=\"cloudmap-sd\"")],
        "a bearer token is required: send Authorization: Bearer <the token of --http-sd-bearer-token-file>\n",
    )
        .into_response()
}

#[cfg(test)]
mod tests;
