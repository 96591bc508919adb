//! A small HTTP/1.1 client (hyper) for the tests, the benchmark and the seeder.

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Status and body of an answer, within 5 s; None when nothing answered.
async fn send(req: hyper::Request<Full<Bytes>>) -> Option<(u16, String)> {
    let r = tokio::time::timeout(Duration::from_secs(5), client().request(req))
        .await
        .ok()?
        .ok()?;
    let status = r.status().as_u16();
    let body = r.into_body().collect().await.ok()?.to_bytes();
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

/// An answer with its headers and raw body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// GET `url` with `headers`, within 10 s; None when nothing answered.
pub async fn http_get_with(url: &str, headers: &[(&str, &str)]) -> Option<Answer> {
    let mut req = hyper::Request::get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::default()).ok()?;
    let r = tokio::time::timeout(Duration::from_secs(10), client().request(req))
        .await
        .ok()?
        .ok()?;
    let status = r.status().as_u16();
    let headers = r
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let body = r.into_body().collect().await.ok()?.to_bytes().to_vec();
    Some(Answer {
        status,
        headers,
        body,
    })
}

/// GET `url`, returning status and body; None when it cannot connect.
pub async fn http_get(url: &str) -> Option<(u16, String)> {
    let req = hyper::Request::get(url).body(Full::default()).ok()?;
    send(req).await
}

/// POST a JSON `body` to `url`, returning status and body; None when it cannot connect.
pub async fn http_post(url: &str, body: &str) -> Option<(u16, String)> {
    let req = hyper::Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .ok()?;
    send(req).await
}

/// [`http_post`] from sync code, inside or outside a tokio runtime: on a thread of
/// its own with its own runtime.
pub fn post_blocking(url: &str, body: &str) -> Option<(u16, String)> {
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(http_post(url, body))
        })
        .join()
        .expect("the HTTP thread panicked")
    })
}

/// The status of `GET url`; None when it cannot connect.
pub async fn get_status(url: &str) -> Option<u16> {
    http_get(url).await.map(|(status, _)| status)
}
