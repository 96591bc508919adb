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
//!   own request and freed once sent, [`RENDERS`] of them alive at a time. Every
//!   render runs on one thread, into chunks ([`body`]).
//! - `ETag` is the md5 of the body; a matching `If-None-Match` gets 304.
//! - Before the first complete discovery: 503 with the reason in one line. Bad query
//!   parameters: 400 with the reason.
//! - With a [`BearerToken`] (`--http-sd-bearer-token-file`), `/sd/*` answers 401
//!   unless the request carries `Authorization: Bearer <token>`.
//!
//! - [`auth`]: the token; [`query`]: the parameters; [`body`]: rendered bodies and the
//!   render thread; `published`: what the loop published; [`metrics`]: this part's
//!   metrics.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::Semaphore;

use crate::model::{Shard, ShardKey};
use crate::targets;

pub mod auth;
pub mod body;
pub mod metrics;
mod published;
pub mod query;

pub use auth::{BearerToken, TokenError};
pub use body::{Body, etag_of};
pub use metrics::HttpSdMetrics;
pub use published::{Publication, Published};

/// What `run` serves at `/sd/*`, from the flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSdOptions {
    /// `--http-sd-bearer-token-file`: `/sd/*` needs this token; None: open.
    pub bearer_token_file: Option<PathBuf>,
    /// The EC2 hosts list is on (`/sd/hosts`).
    pub hosts: bool,
}

/// Share bodies alive at once: a request for a share waits for one of these slots
/// (at most [`RENDER_WAIT`]), and holds it until its body is sent. It bounds the
/// memory shares take whatever the number of requests.
pub const RENDERS: usize = 2;

/// Longest a request waits for a render slot before it is answered 503.
const RENDER_WAIT: Duration = Duration::from_secs(30);

/// Why a body could not be made (each is a 5xx answer).
#[derive(Debug, thiserror::Error)]
enum RenderError {
    #[error("rendering the targets failed: {0}")]
    Render(#[from] std::io::Error),
    #[error("busy: {RENDERS} shares are being rendered or sent; try again")]
    Busy,
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
/// thread and slots, and the metrics.
pub struct HttpSd {
    published: Arc<Published>,
    token: Option<Arc<BearerToken>>,
    metrics: Arc<HttpSdMetrics>,
    renderer: body::Renderer,
    slots: Arc<Semaphore>,
}

impl HttpSd {
    /// Starts the render thread (an error only when no thread can be started).
    pub fn new(
        published: Arc<Published>,
        token: Option<Arc<BearerToken>>,
        metrics: Arc<HttpSdMetrics>,
    ) -> std::io::Result<Self> {
        Ok(HttpSd {
            published,
            token,
            metrics,
            renderer: body::Renderer::start()?,
            slots: Arc::new(Semaphore::new(RENDERS)),
        })
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
                let p = p.clone();
                self.renderer
                    .render(move |out| targets::render_to(&p.snapshot, &p.targets, out))
            })
            .await?;
        Ok(body.clone())
    }

    /// One share of `p`, rendered for this request; its body holds a slot.
    async fn share(
        &self,
        p: &Arc<Publication>,
        shard: Shard,
        key: ShardKey,
    ) -> Result<Body, RenderError> {
        let slot = tokio::time::timeout(RENDER_WAIT, self.slots.clone().acquire_owned())
            .await
            .map_err(|_| RenderError::Busy)?
            .map_err(|_| RenderError::Busy)?;
        self.metrics.render("share");
        let p = p.clone();
        let body = self
            .renderer
            .render(move |out| targets::render_to(&p.snapshot.share(shard, key), &p.targets, out))
            .await?;
        Ok(body.holding(slot))
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
        body.into_http(),
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
