//! The http_sd endpoints' own metrics: requests by answer, renders, token reloads.

use axum::http::StatusCode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// One endpoint and the status of one answer.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `targets` or `hosts`.
    pub endpoint: &'static str,
    /// `200`, `304`, `400`, `401`, `404`, `500` or `503`.
    pub code: &'static str,
}

/// What was rendered: `whole` (once per publish) or `share` (once per request).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BodyLabels {
    pub body: &'static str,
}

/// `success` or `failed`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

/// Every metric of the http_sd endpoints.
#[derive(Debug, Default)]
pub struct HttpSdMetrics {
    pub requests: Family<RequestLabels, Counter>,
    pub renders: Family<BodyLabels, Counter>,
    pub token_reloads: Family<OutcomeLabels, Counter>,
}

/// The label value of a status; the statuses `/sd/*` answers, else `other`.
fn code(status: StatusCode) -> &'static str {
    match status.as_u16() {
        200 => "200",
        304 => "304",
        400 => "400",
        401 => "401",
        404 => "404",
        500 => "500",
        503 => "503",
        _ => "other",
    }
}

impl HttpSdMetrics {
    /// Registers every family in `registry` (prefixed `cloudmap_sd_` there).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "http_sd_requests",
            "Requests to /sd/targets and /sd/hosts by endpoint and status code",
            self.requests.clone(),
        );
        registry.register(
            "http_sd_renders",
            "Bodies rendered for /sd/targets: whole (once per change of the targets) or share (once per ?shard= request)",
            self.renders.clone(),
        );
        registry.register(
            "http_sd_token_reloads",
            "Reloads of --http-sd-bearer-token-file on SIGHUP by outcome (a failed one keeps the token in use)",
            self.token_reloads.clone(),
        );
    }

    pub fn request(&self, endpoint: &'static str, status: StatusCode) {
        self.requests
            .get_or_create(&RequestLabels {
                endpoint,
                code: code(status),
            })
            .inc();
    }

    pub fn render(&self, body: &'static str) {
        self.renders.get_or_create(&BodyLabels { body }).inc();
    }

    pub fn token_reload(&self, ok: bool) {
        let outcome = if ok { "success" } else { "failed" };
        self.token_reloads
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }
}
