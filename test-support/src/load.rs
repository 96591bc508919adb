//! A bounded HTTP load generator for the http_sd endpoint: a fixed number of GET
//! requests, a fixed number in flight, every body read to its end and dropped. The
//! integration test drives the sidecar binary with it; the benchmark runs it in a
//! child process of its own (`bench --load-client`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};

/// What one load run measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadReport {
    pub requests: usize,
    pub concurrency: usize,
    pub seconds: f64,
    /// Requests per second over the run.
    pub rps: f64,
    /// Latency from sending the request to the last byte of the body, in ms.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Body bytes received.
    pub bytes: u64,
    /// Answers by status code; `error` for requests that got none.
    pub statuses: BTreeMap<String, usize>,
}

impl LoadReport {
    /// One line: requests, rps, p50 / p99 / max and the statuses.
    pub fn line(&self) -> String {
        format!(
            "{} requests, {} in flight: {:.1} req/s, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, {:.1} MB received, statuses {:?}",
            self.requests,
            self.concurrency,
            self.rps,
            self.p50_ms,
            self.p99_ms,
            self.max_ms,
            self.bytes as f64 / 1e6,
            self.statuses
        )
    }
}

/// GETs `urls` (in turn) `requests` times, `concurrency` at a time, each with
/// `headers`; each request ends within `timeout` or counts as `error`.
pub async fn load(
    urls: &[String],
    headers: &[(String, String)],
    requests: usize,
    concurrency: usize,
    timeout: Duration,
) -> LoadReport {
    use futures::StreamExt as _;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let started = Instant::now();
    let one = |i: usize| {
        let client = client.clone();
        let url = urls[i % urls.len()].clone();
        async move {
            let t = Instant::now();
            let mut req = hyper::Request::get(url.as_str());
            for (k, v) in headers {
                req = req.header(k.as_str(), v.as_str());
            }
            let exchange = async {
                let resp = client.request(req.body(Empty::new()).ok()?).await.ok()?;
                let status = resp.status().as_u16();
                let body = resp.into_body().collect().await.ok()?.to_bytes();
                Some((status, body.len() as u64))
            };
            let answer = tokio::time::timeout(timeout, exchange).await.ok().flatten();
            (answer, t.elapsed())
        }
    };
    let results: Vec<(Option<(u16, u64)>, Duration)> = futures::stream::iter(0..requests)
        .map(one)
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let seconds = started.elapsed().as_secs_f64();
    let mut ms: Vec<f64> = results.iter().map(|(_, d)| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| {
        ms.get(((ms.len() as f64 * q).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(0.0)
    };
    let mut statuses = BTreeMap::new();
    let mut bytes = 0;
    for (answer, _) in &results {
        let key = match answer {
            Some((status, n)) => {
                bytes += n;
                status.to_string()
            }
            None => "error".to_string(),
        };
        *statuses.entry(key).or_insert(0) += 1;
    }
    LoadReport {
        requests,
        concurrency,
        seconds,
        rps: requests as f64 / seconds.max(1e-9),
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        max_ms: ms.last().copied().unwrap_or(0.0),
        bytes,
        statuses,
    }
}
