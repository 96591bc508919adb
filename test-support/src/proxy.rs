//! A counting, fault-injecting HTTP proxy in front of moto.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// What the proxy does with a request it picks for a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward to moto.
    Pass,
    /// Answer 500 InternalFailure.
    ServerError,
    /// Answer 503 ServiceUnavailable.
    Unavailable,
    /// Throttle as the service does: 400 `ThrottlingException` for the JSON
    /// services, 503 `RequestLimitExceeded` in EC2's XML.
    Throttle,
    /// Forward to moto after this delay.
    Slow(Duration),
    /// Close the connection without an answer.
    Drop,
    /// Never answer; the connection stays open.
    Stall,
    /// Refuse the credentials as AWS does for an access key it does not know (moto
    /// accepts any key): 400 `UnrecognizedClientException` for the JSON services,
    /// 401 `AuthFailure` in EC2's XML.
    RefuseCredentials,
    /// Refuse expired temporary credentials as AWS does: 400
    /// `ExpiredTokenException` for the JSON services, `ExpiredToken` in EC2's XML.
    ExpiredCredentials,
}

/// A fault and the share of requests it hits (1.0: every request), picked
/// pseudo-randomly from a fixed seed so a run can be replayed.
#[derive(Debug, Clone, Copy)]
struct Rule {
    fault: Fault,
    rate: f64,
    state: u64,
}

impl Rule {
    fn new(fault: Fault, rate: f64) -> Option<Rule> {
        (fault != Fault::Pass && rate > 0.0).then_some(Rule {
            fault,
            rate: rate.min(1.0),
            state: 0x9E37_79B9_7F4A_7C15,
        })
    }

    /// The fault for the next request, or Pass (xorshift64).
    fn next(&mut self) -> Fault {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        let draw = (self.state >> 11) as f64 / (1u64 << 53) as f64;
        if draw < self.rate {
            self.fault
        } else {
            Fault::Pass
        }
    }
}

#[derive(Debug, Default)]
struct Faults {
    all: Option<Rule>,
    per_op: BTreeMap<String, Rule>,
    /// Requests answered with a fault, by operation.
    injected: BTreeMap<String, u64>,
}

impl Faults {
    fn pick(&mut self, op: &str) -> Fault {
        let f = match self.per_op.get_mut(op) {
            Some(r) => r.next(),
            None => self.all.as_mut().map_or(Fault::Pass, Rule::next),
        };
        if f != Fault::Pass {
            *self.injected.entry(op.to_string()).or_default() += 1;
        }
        f
    }
}

/// An HTTP proxy in front of moto that counts requests by AWS operation and can
/// inject faults. It can also record the request bodies of chosen operations,
/// emulate an AWS default that moto lacks, and be stopped (its port then refuses
/// connections) and started again on the same port.
pub struct Proxy {
    pub url: String,
    addr: SocketAddr,
    state: ProxyState,
    /// The accept loop; None while the proxy is stopped.
    listener: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Connections being served, closed by [`Proxy::stop`].
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

/// What the accept loop and every connection share with the test.
#[derive(Clone)]
struct ProxyState {
    counts: Arc<Mutex<BTreeMap<String, u64>>>,
    faults: Arc<Mutex<Faults>>,
    /// Request bodies of the operations chosen with [`Proxy::record_requests`].
    recorded: Arc<Mutex<BTreeMap<String, Vec<serde_json::Value>>>>,
    /// See [`Proxy::emulate_aws_discover_default`].
    aws_discover_default: Arc<std::sync::atomic::AtomicBool>,
    client: Client<HttpConnector, Full<Bytes>>,
    upstream: hyper::Uri,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(t) = self.listener.lock().unwrap().take() {
            t.abort();
        }
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

/// The AWS operation of a request: the X-Amz-Target suffix (JSON protocols) or the
/// `Action` form field (query protocols such as EC2).
pub fn operation_of(headers: &hyper::HeaderMap, body: &[u8]) -> String {
    if let Some(t) = headers.get("x-amz-target").and_then(|v| v.to_str().ok()) {
        return t.rsplit('.').next().unwrap_or(t).to_string();
    }
    let body = String::from_utf8_lossy(body);
    body.split('&')
        .find_map(|kv| kv.strip_prefix("Action="))
        .unwrap_or("unknown")
        .to_string()
}

/// Cloud Map's DiscoverInstances answers at most this many instances when the
/// request has no `MaxResults` (moto answers all of them).
pub const AWS_DISCOVER_INSTANCES_DEFAULT_MAX: u64 = 100;

/// Serves `listener` until aborted; each connection's task is noted in `conns`.
fn accept_loop(
    listener: tokio::net::TcpListener,
    state: ProxyState,
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let state = state.clone();
            let conn = tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let state = state.clone();
                    async move { forward(req, &state).await }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
            let mut open = conns.lock().unwrap();
            open.retain(|c| !c.is_finished());
            open.push(conn.abort_handle());
        }
    })
}

impl Proxy {
    pub async fn start(upstream: &str) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let state = ProxyState {
            counts: Arc::new(Mutex::new(BTreeMap::new())),
            faults: Arc::new(Mutex::new(Faults::default())),
            recorded: Arc::new(Mutex::new(BTreeMap::new())),
            aws_discover_default: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            client: Client::builder(TokioExecutor::new()).build_http(),
            upstream: upstream.parse().unwrap(),
        };
        let conns = Arc::new(Mutex::new(Vec::new()));
        let task = accept_loop(listener, state.clone(), conns.clone());
        Proxy {
            url: format!("http://{addr}"),
            addr,
            state,
            listener: Mutex::new(Some(task)),
            conns,
        }
    }

    /// The proxy's address (the same after [`Proxy::restart`]).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops listening and closes every open connection: until [`Proxy::restart`],
    /// a client gets "connection refused", as from an endpoint that is down.
    pub async fn stop(&self) {
        let task = self.listener.lock().unwrap().take();
        if let Some(t) = task {
            t.abort();
            // The listening socket is closed once the aborted task is gone.
            let _ = t.await;
        }
        let open: Vec<_> = self.conns.lock().unwrap().drain(..).collect();
        for c in &open {
            c.abort();
        }
        // An aborted connection task drops its socket when it is next polled.
        for _ in 0..200 {
            if open.iter().all(tokio::task::AbortHandle::is_finished) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Listens again on the same address after [`Proxy::stop`] (no-op when running).
    pub async fn restart(&self) {
        if self.listener.lock().unwrap().is_some() {
            return;
        }
        let start = Instant::now();
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if start.elapsed() < Duration::from_secs(10) => {
                    eprintln!("proxy: rebinding {} failed ({e}); retrying", self.addr);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("proxy: cannot listen on {} again: {e}", self.addr),
            }
        };
        let task = accept_loop(listener, self.state.clone(), self.conns.clone());
        *self.listener.lock().unwrap() = Some(task);
    }

    /// A fault for every request of every operation (`Fault::Pass` clears it).
    pub fn set_fault(&self, f: Fault) {
        self.set_fault_rate(f, 1.0);
    }

    /// A fault for a share `rate` (0.0 to 1.0) of all requests.
    pub fn set_fault_rate(&self, f: Fault, rate: f64) {
        self.state.faults.lock().unwrap().all = Rule::new(f, rate);
    }

    /// A fault for one operation only (`Fault::Pass` clears it); it takes the
    /// place of the fault for all requests for that operation.
    pub fn set_fault_for(&self, operation: &str, f: Fault) {
        self.set_fault_for_rate(operation, f, 1.0);
    }

    /// A fault for a share `rate` of one operation's requests.
    pub fn set_fault_for_rate(&self, operation: &str, f: Fault, rate: f64) {
        let mut m = self.state.faults.lock().unwrap();
        match Rule::new(f, rate) {
            Some(r) => m.per_op.insert(operation.to_string(), r),
            None => m.per_op.remove(operation),
        };
    }

    /// Requests answered with a fault so far, by operation.
    pub fn injected(&self) -> BTreeMap<String, u64> {
        self.state.faults.lock().unwrap().injected.clone()
    }

    /// Requests seen so far, by operation.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.state.counts.lock().unwrap().clone()
    }

    pub fn total(&self) -> u64 {
        self.counts().values().sum()
    }

    /// From now on, keeps the body of every `operation` request as the client sent
    /// it (JSON; a body that is not JSON is kept as a string).
    pub fn record_requests(&self, operation: &str) {
        self.state
            .recorded
            .lock()
            .unwrap()
            .entry(operation.to_string())
            .or_default();
    }

    /// The bodies of the `operation` requests seen since `record_requests`.
    pub fn requests(&self, operation: &str) -> Vec<serde_json::Value> {
        self.state
            .recorded
            .lock()
            .unwrap()
            .get(operation)
            .cloned()
            .unwrap_or_default()
    }

    /// With `on`, a DiscoverInstances request without `MaxResults` is forwarded with
    /// `MaxResults` = 100, so moto answers as AWS does: at most 100 instances
    /// unless the caller asks for more (the API has no pagination).
    pub fn emulate_aws_discover_default(&self, on: bool) {
        self.state
            .aws_discover_default
            .store(on, std::sync::atomic::Ordering::SeqCst);
    }
}

/// `after - before`, per operation, without zero rows.
pub fn diff(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

/// Adds AWS's default `MaxResults` to a DiscoverInstances body that has none.
fn with_aws_discover_default(body: Bytes) -> Option<Bytes> {
    let mut v: serde_json::Value = serde_json::from_slice(&body).ok()?;
    let o = v.as_object_mut()?;
    if o.contains_key("MaxResults") {
        return None;
    }
    o.insert(
        "MaxResults".to_string(),
        AWS_DISCOVER_INSTANCES_DEFAULT_MAX.into(),
    );
    Some(Bytes::from(serde_json::to_vec(&v).unwrap()))
}

async fn forward(
    req: Request<Incoming>,
    state: &ProxyState,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let (mut parts, body) = req.into_parts();
    let mut body = body
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    let op = operation_of(&parts.headers, &body);
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if let Some(seen) = state.recorded.lock().unwrap().get_mut(&op) {
        seen.push(serde_json::from_slice(&body).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&body).into_owned())
        }));
    }
    let fault = state.faults.lock().unwrap().pick(&op);
    let ec2 = target.is_empty();
    *state.counts.lock().unwrap().entry(op.clone()).or_default() += 1;
    let answer = |status: u16, code: &str, message: &str| {
        Ok(if ec2 {
            error_xml(status, code, message)
        } else {
            error_json(status, code, message)
        })
    };
    let json = |status: u16, ty: &str| Ok(error_json(status, ty, INJECTED));
    let xml = |status: u16, code: &str| Ok(error_xml(status, code, INJECTED));
    match fault {
        Fault::RefuseCredentials if ec2 => {
            return answer(
                401,
                "AuthFailure",
                "AWS was not able to validate the provided access credentials",
            );
        }
        Fault::RefuseCredentials => {
            return answer(
                400,
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            );
        }
        Fault::ExpiredCredentials if ec2 => {
            return answer(
                400,
                "ExpiredToken",
                "The security token included in the request is expired",
            );
        }
        Fault::ExpiredCredentials => {
            return answer(
                400,
                "ExpiredTokenException",
                "The security token included in the request is expired",
            );
        }
        Fault::ServerError if ec2 => return xml(500, "InternalError"),
        Fault::ServerError => return json(500, "InternalFailure"),
        Fault::Unavailable if ec2 => return xml(503, "Unavailable"),
        Fault::Unavailable => return json(503, "ServiceUnavailable"),
        Fault::Throttle if ec2 => return xml(503, "RequestLimitExceeded"),
        Fault::Throttle => return json(400, "ThrottlingException"),
        Fault::Drop => return Err(std::io::Error::other("dropped by the test proxy")),
        Fault::Stall => std::future::pending::<()>().await,
        Fault::Slow(d) => tokio::time::sleep(d).await,
        Fault::Pass => {}
    }
    if op == "DiscoverInstances"
        && state
            .aws_discover_default
            .load(std::sync::atomic::Ordering::SeqCst)
        && let Some(b) = with_aws_discover_default(body.clone())
    {
        // moto does not check signatures, so the changed body needs no new one.
        parts.headers.insert(
            hyper::header::CONTENT_LENGTH,
            hyper::header::HeaderValue::from(b.len()),
        );
        body = b;
    }
    let upstream = &state.upstream;
    let pq = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let uri: hyper::Uri = format!(
        "{}://{}{}",
        upstream.scheme_str().unwrap(),
        upstream.authority().unwrap(),
        pq
    )
    .parse()
    .unwrap();
    let mut out = Request::builder().method(parts.method).uri(uri);
    for (k, v) in &parts.headers {
        out = out.header(k, v);
    }
    let resp = state
        .client
        .request(out.body(Full::new(body)).unwrap())
        .await
        .map_err(std::io::Error::other)?;
    let (mut rp, rb) = resp.into_parts();
    let mut rb = rb
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    if target.contains("AmazonEC2ContainerService") {
        rb = fix_moto_ecs(rb);
        rp.headers.remove("content-length");
    }
    Ok(Response::from_parts(rp, Full::new(rb)))
}

/// The message of an error the proxy makes up.
const INJECTED: &str = "injected by the test proxy";

/// An error answer of the JSON protocols (Cloud Map, ECS).
fn error_json(status: u16, ty: &str, message: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amzn-errortype", ty)
        .body(Full::new(Bytes::from(
            serde_json::json!({"__type": ty, "message": message}).to_string(),
        )))
        .unwrap()
}

/// An error answer of EC2's XML protocol.
fn error_xml(status: u16, code: &str, message: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "text/xml;charset=UTF-8")
        .body(Full::new(Bytes::from(format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error>\
             <Code>{code}</Code><Message>{message}</Message></Error>\
             </Errors><RequestID>00000000-0000-0000-0000-000000000000</RequestID></Response>"
        ))))
        .unwrap()
}

/// moto writes a task's container `cpu` / `memory` as JSON numbers where the ECS
/// API has strings; the Rust SDK rejects that. Rewrite them as AWS sends them.
fn fix_moto_ecs(body: Bytes) -> Bytes {
    fn walk(v: &mut serde_json::Value, in_containers: bool) {
        match v {
            serde_json::Value::Array(a) => a.iter_mut().for_each(|x| walk(x, in_containers)),
            serde_json::Value::Object(o) => {
                for (k, x) in o.iter_mut() {
                    if in_containers
                        && matches!(k.as_str(), "cpu" | "memory" | "memoryReservation")
                        && x.is_number()
                    {
                        *x = serde_json::Value::String(x.to_string());
                    } else {
                        walk(x, k == "containers");
                    }
                }
            }
            _ => {}
        }
    }
    match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(mut v) => {
            walk(&mut v, false);
            Bytes::from(serde_json::to_vec(&v).unwrap())
        }
        Err(_) => body,
    }
}
