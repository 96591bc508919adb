//! Stand-ins for the processes a topology runs: every address a task or a host
//! would listen on answers Prometheus's text format on its metrics paths, so a real
//! Prometheus scrapes them. One process, one listener per address.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// One metrics endpoint: where, which path, and the labels its one info metric
/// carries (what it stands in for).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub path: String,
    pub labels: BTreeMap<String, String>,
}

/// What one listener answers: its paths, and the requests it answered so far.
struct Served {
    pages: BTreeMap<String, String>,
    requests: AtomicU64,
}

/// The listeners; they stop when this is dropped.
pub struct Exporters {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The addresses listened on, sorted.
    pub addrs: Vec<SocketAddr>,
}

impl Drop for Exporters {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Exporters {
    /// Listens on every endpoint's address. An address that cannot be bound is an
    /// error that names it (nothing is left listening then).
    pub async fn start(endpoints: &[Endpoint]) -> Result<Exporters, String> {
        let mut by_addr: BTreeMap<SocketAddr, BTreeMap<String, String>> = BTreeMap::new();
        for e in endpoints {
            by_addr
                .entry(e.addr)
                .or_default()
                .insert(e.path.clone(), info_lines(&e.labels));
        }
        let mut listeners = Vec::new();
        for (addr, pages) in by_addr {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
            listeners.push((addr, l, pages));
        }
        let addrs = listeners.iter().map(|(a, _, _)| *a).collect();
        let tasks = listeners
            .into_iter()
            .map(|(_, l, pages)| {
                let served = Arc::new(Served {
                    pages,
                    requests: AtomicU64::new(0),
                });
                tokio::spawn(serve(l, served))
            })
            .collect();
        Ok(Exporters { tasks, addrs })
    }
}

/// The info metric of an endpoint, in Prometheus's text format.
fn info_lines(labels: &BTreeMap<String, String>) -> String {
    let labels: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!(
        "# HELP demo_info What this address stands in for.\n# TYPE demo_info gauge\n\
         demo_info{{{}}} 1\n",
        labels.join(",")
    )
}

async fn serve(listener: tokio::net::TcpListener, served: Arc<Served>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let served = served.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let served = served.clone();
                async move { Ok::<_, Infallible>(answer(&req, &served)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// 200 with the page of a metrics path (and a request counter), 404 elsewhere.
fn answer(req: &Request<Incoming>, served: &Served) -> Response<Full<Bytes>> {
    let Some(page) = served.pages.get(req.uri().path()) else {
        return Response::builder()
            .status(404)
            .body(Full::new(Bytes::from_static(b"not a metrics path here\n")))
            .unwrap();
    };
    let n = served.requests.fetch_add(1, Ordering::Relaxed) + 1;
    let body = format!(
        "{page}# HELP demo_requests_total Requests this address answered, this one included.\n\
         # TYPE demo_requests_total counter\ndemo_requests_total {n}\n"
    );
    Response::builder()
        .header("content-type", "text/plain; version=0.0.4")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::http_get;

    #[tokio::test]
    async fn answers_its_paths_and_counts() {
        let port = crate::free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let labels = BTreeMap::from([("service".to_string(), "web \"a\"".to_string())]);
        let e = Endpoint {
            addr,
            path: "/metrics".into(),
            labels,
        };
        let x = Exporters::start(std::slice::from_ref(&e)).await.unwrap();
        let url = format!("http://{addr}");
        let (status, body) = http_get(&format!("{url}/metrics")).await.unwrap();
        assert_eq!(status, 200);
        assert!(
            body.contains("demo_info{service=\"web \\\"a\\\"\"} 1"),
            "{body}"
        );
        assert!(body.contains("demo_requests_total 1"), "{body}");
        let (_, body) = http_get(&format!("{url}/metrics")).await.unwrap();
        assert!(body.contains("demo_requests_total 2"), "{body}");
        assert_eq!(http_get(&format!("{url}/other")).await.unwrap().0, 404);
        // A second listener on the same address is refused, with the address named.
        let err = Exporters::start(&[e]).await.err().unwrap();
        assert!(err.contains(&addr.to_string()), "{err}");
        drop(x);
    }
}
