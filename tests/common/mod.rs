//! Test harness: a real moto server, a counting/fault proxy in front of it, a seeder
//! using the real AWS SDK, the real `cloudmap-sd` binary, and a real Prometheus.
//! A missing tool fails the test with instructions; nothing is skipped.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_servicediscovery as sd;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

pub const REGION: &str = "us-east-1";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tool(env_var: &str, default: PathBuf, what: &str) -> PathBuf {
    let p = std::env::var_os(env_var)
        .map(PathBuf::from)
        .unwrap_or(default);
    if !p.exists() {
        panic!(
            "{what} not found at {} (set {env_var} or run `scripts/stack.sh install`, \
             which installs moto server in .venv and Prometheus from apt)",
            p.display()
        );
    }
    p
}

pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `f` every 50 ms until it returns Some, or panics with `what` after `timeout`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Async twin of [`wait_for`].
pub async fn wait_for_async<T, F: std::future::Future<Output = Option<T>>>(
    timeout: Duration,
    what: &str,
    mut f: impl FnMut() -> F,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A child process killed on drop.
pub struct Proc {
    pub child: Child,
    pub name: &'static str,
    pub log: PathBuf,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(st.success(), "kill -{sig} {}", self.pid());
    }
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    /// Waits for the process to exit, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_logged(mut cmd: Command, name: &'static str, dir: &Path) -> Proc {
    let log = dir.join(format!("{name}.log"));
    let f = std::fs::File::create(&log).unwrap();
    cmd.stdout(f.try_clone().unwrap())
        .stderr(f)
        .stdin(Stdio::null());
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
    Proc { child, name, log }
}

/// A moto server on a free loopback port.
pub struct Moto {
    pub url: String,
    pub port: u16,
    _proc: Proc,
    _dir: tempfile::TempDir,
}

impl Moto {
    pub fn start() -> Moto {
        let bin = tool(
            "CLOUDMAP_SD_MOTO_SERVER",
            repo().join(".venv/bin/moto_server"),
            "moto server",
        );
        let dir = tempfile::tempdir().unwrap();
        for _ in 0..3 {
            let port = free_port();
            let mut cmd = Command::new(&bin);
            cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
            let mut p = spawn_logged(cmd, "moto", dir.path());
            let url = format!("http://127.0.0.1:{port}");
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(30) {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    let m = Moto {
                        url,
                        port,
                        _proc: p,
                        _dir: dir,
                    };
                    m.set_ecs_tasks_stay_running();
                    return m;
                }
                if p.child.try_wait().unwrap().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            eprintln!("moto on port {port} did not start: {}", p.log_text());
        }
        panic!("moto server did not start");
    }

    /// POST over a plain TCP socket (HTTP/1.0; usable from sync and async code).
    pub fn post(&self, path: &str, body: &str) {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            s,
            "POST {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        let status = resp.split(' ').nth(1).unwrap_or("");
        assert!(status.starts_with('2'), "POST {path}: {resp}");
    }

    fn set_ecs_tasks_stay_running(&self) {
        self.post(
            "/moto-api/state-manager/set-transition",
            r#"{"model_name":"ecs::task","transition":{"progression":"manual","times":1000000}}"#,
        );
    }
}

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
    let json = |status: u16, ty: &str| {
        Ok(Response::builder()
            .status(status)
            .header("content-type", "application/x-amz-json-1.1")
            .header("x-amzn-errortype", ty)
            .body(Full::new(Bytes::from(format!(
                r#"{{"__type":"{ty}","message":"injected by the test proxy"}}"#
            ))))
            .unwrap())
    };
    let xml = |status: u16, code: &str| {
        Ok(Response::builder()
            .status(status)
            .header("content-type", "text/xml;charset=UTF-8")
            .body(Full::new(Bytes::from(format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error>\
                 <Code>{code}</Code><Message>injected by the test proxy</Message></Error>\
                 </Errors><RequestID>00000000-0000-0000-0000-000000000000</RequestID></Response>"
            ))))
            .unwrap())
    };
    match fault {
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

/// GET `url`, returning status and body; None when it cannot connect.
pub async fn http_get(url: &str) -> Option<(u16, String)> {
    let c: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let r = tokio::time::timeout(Duration::from_secs(5), c.get(url.parse().ok()?))
        .await
        .ok()?
        .ok()?;
    let status = r.status().as_u16();
    let body = r.into_body().collect().await.ok()?.to_bytes();
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Environment for talking to moto (directly or through a proxy) at `url`.
pub fn aws_env(url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", url.to_string()),
        ("AWS_REGION", REGION.to_string()),
        ("AWS_ACCESS_KEY_ID", "testing".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "testing".to_string()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
    ]
}

/// SDK configuration for moto at `url` with test credentials.
pub async fn sdk_config(url: &str) -> aws_config::SdkConfig {
    let creds = sd::config::Credentials::new("testing", "testing", None, None, "test");
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(REGION))
        .credentials_provider(creds)
        .endpoint_url(url)
        .load()
        .await
}

/// Seeds Cloud Map in moto through the real SDK.
pub struct Seeder {
    pub sd: sd::Client,
}

impl Seeder {
    pub async fn new(url: &str) -> Seeder {
        Seeder {
            sd: cloudmap_sd::aws::sdk::servicediscovery_client(&sdk_config(url).await),
        }
    }

    /// Creates an HTTP namespace and returns its id.
    pub async fn http_namespace(&self, name: &str) -> String {
        self.sd
            .create_http_namespace()
            .name(name)
            .send()
            .await
            .unwrap();
        self.namespace_id(name).await
    }

    /// Creates a private DNS namespace and returns its id.
    pub async fn dns_namespace(&self, name: &str) -> String {
        self.sd
            .create_private_dns_namespace()
            .name(name)
            .vpc("vpc-0123456789abcdef0")
            .send()
            .await
            .unwrap();
        self.namespace_id(name).await
    }

    async fn namespace_id(&self, name: &str) -> String {
        let out = self.sd.list_namespaces().send().await.unwrap();
        out.namespaces()
            .iter()
            .find(|n| n.name() == Some(name))
            .and_then(|n| n.id())
            .unwrap()
            .to_string()
    }

    /// Creates a service with tags; returns its id.
    pub async fn service(&self, ns_id: &str, name: &str, tags: &[(&str, &str)]) -> String {
        let mut req = self.sd.create_service().name(name).namespace_id(ns_id);
        for (k, v) in tags {
            req = req.tags(sd::types::Tag::builder().key(*k).value(*v).build().unwrap());
        }
        req.send()
            .await
            .unwrap()
            .service()
            .unwrap()
            .id()
            .unwrap()
            .to_string()
    }

    /// Registers an ECS-task-like instance.
    pub async fn task(&self, service_id: &str, task_id: &str, ip: &str, port: Option<u16>) {
        let mut attrs = vec![
            ("AWS_INSTANCE_IPV4", ip.to_string()),
            ("AVAILABILITY_ZONE", "us-east-1a".to_string()),
            ("ECS_CLUSTER_NAME", "prod".to_string()),
            ("ECS_SERVICE_NAME", "svc".to_string()),
            ("ECS_TASK_DEFINITION_FAMILY", "family".to_string()),
            ("REGION", REGION.to_string()),
        ];
        if let Some(p) = port {
            attrs.push(("AWS_INSTANCE_PORT", p.to_string()));
        }
        self.instance(service_id, task_id, &attrs).await;
    }

    pub async fn instance(&self, service_id: &str, id: &str, attrs: &[(&str, String)]) {
        let mut req = self
            .sd
            .register_instance()
            .service_id(service_id)
            .instance_id(id);
        for (k, v) in attrs {
            req = req.attributes(*k, v.clone());
        }
        req.send().await.unwrap();
    }

    pub async fn deregister(&self, service_id: &str, id: &str) {
        self.sd
            .deregister_instance()
            .service_id(service_id)
            .instance_id(id)
            .send()
            .await
            .unwrap();
    }
}

/// The `cloudmap-sd` binary.
pub fn sidecar_bin() -> &'static str {
    env!("CARGO_BIN_EXE_cloudmap-sd")
}

/// Runs `cloudmap-sd ARGS` to completion with `env`.
pub fn run_cli(args: &[&str], env: &[(&'static str, String)]) -> Output {
    let mut cmd = Command::new(sidecar_bin());
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// A running `cloudmap-sd run`.
pub struct Sidecar {
    pub proc: Proc,
    pub listen: String,
    pub output: PathBuf,
}

impl Sidecar {
    /// Starts `cloudmap-sd run` writing `dir/targets.json`, with extra args.
    pub fn start(dir: &Path, aws_url: &str, extra: &[&str]) -> Sidecar {
        Sidecar::start_writing(dir, &dir.join("targets.json"), aws_url, extra)
    }

    /// Starts `cloudmap-sd run` writing `output`, its log in `dir`.
    pub fn start_writing(dir: &Path, output: &Path, aws_url: &str, extra: &[&str]) -> Sidecar {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let output = output.to_path_buf();
        let mut cmd = Command::new(sidecar_bin());
        cmd.arg("run")
            .args(["--output", output.to_str().unwrap(), "--listen", &listen])
            .args(extra)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap())
            .env("RUST_LOG", "info");
        for (k, v) in aws_env(aws_url) {
            cmd.env(k, v);
        }
        let proc = spawn_logged(cmd, "cloudmap-sd", dir);
        Sidecar {
            proc,
            listen,
            output,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.listen)
    }

    /// Waits until /-/ready answers 200.
    pub async fn wait_ready(&self, timeout: Duration) {
        let url = self.url("/-/ready");
        let start = Instant::now();
        loop {
            if let Some((200, _)) = http_get(&url).await {
                return;
            }
            if start.elapsed() > timeout {
                panic!(
                    "sidecar not ready after {timeout:?}; log:\n{}",
                    self.proc.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sum of one metric's samples (all label sets).
    pub async fn metric(&self, name: &str) -> f64 {
        let (_, body) = http_get(&self.url("/metrics")).await.expect("metrics");
        sum_metric(&body, name)
    }

    /// The targets in the output file (`targets[0]` of each group).
    pub fn targets(&self) -> Vec<String> {
        read_targets(&self.output)
    }
}

pub fn sum_metric(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| {
            l.starts_with(name) && matches!(l.as_bytes().get(name.len()), Some(b' ') | Some(b'{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Parses a file_sd file; panics if it is not valid.
pub fn parse_file(path: &Path) -> Vec<serde_json::Value> {
    let bytes = std::fs::read(path).unwrap();
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display()))
}

pub fn read_targets(path: &Path) -> Vec<String> {
    let mut v: Vec<String> = parse_file(path)
        .iter()
        .map(|g| g["targets"][0].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

/// The Prometheus binary; panics with instructions when there is none.
pub fn prometheus_bin() -> PathBuf {
    std::env::var_os("CLOUDMAP_SD_PROMETHEUS")
        .map(PathBuf::from)
        .or_else(|| which("prometheus"))
        .unwrap_or_else(|| {
            panic!(
                "prometheus not found on PATH (set CLOUDMAP_SD_PROMETHEUS or run \
                 `scripts/stack.sh install`, which installs it with apt)"
            )
        })
}

/// Starts Prometheus on 127.0.0.1:`port` with `config` (YAML), data in `dir`
/// (a fixed port lets a stopped Prometheus come back at the same address).
pub fn prometheus_on(dir: &Path, port: u16, config: &str, extra: &[&str]) -> Proc {
    std::fs::create_dir_all(dir).unwrap();
    let cfg = dir.join("prometheus.yml");
    std::fs::write(&cfg, config).unwrap();
    let mut cmd = Command::new(prometheus_bin());
    cmd.arg(format!("--config.file={}", cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .args(extra);
    spawn_logged(cmd, "prometheus", dir)
}

/// Starts a real Prometheus with `config` (YAML) in `dir`; returns it and its URL.
pub fn prometheus(dir: &Path, config: &str) -> (Proc, String) {
    let port = free_port();
    let p = prometheus_on(dir, port, config, &[]);
    (p, format!("http://127.0.0.1:{port}"))
}

/// The test venv's Python (with boto3 / botocore).
pub fn python() -> PathBuf {
    tool(
        "CLOUDMAP_SD_PYTHON",
        repo().join(".venv/bin/python"),
        "Python with botocore",
    )
}

/// The botocore-verified AMP stand-in (tests/common/sigv4_server.py): checks each
/// request's SigV4 signature independently of our code and answers `statuses` in turn.
pub struct Sigv4Server {
    pub url: String,
    pub proc: Proc,
    _dir: tempfile::TempDir,
}

impl Sigv4Server {
    pub fn start(access_key: &str, secret: &str, region: &str, statuses: &[u16]) -> Sigv4Server {
        let dir = tempfile::tempdir().unwrap();
        let port_file = dir.path().join("port");
        let statuses: Vec<String> = statuses.iter().map(u16::to_string).collect();
        let mut cmd = Command::new(python());
        cmd.arg(repo().join("tests/common/sigv4_server.py"))
            .arg(&port_file)
            .args([access_key, secret, region, &statuses.join(",")]);
        let mut proc = spawn_logged(cmd, "sigv4-server", dir.path());
        let start = Instant::now();
        let port = loop {
            if let Ok(p) = std::fs::read_to_string(&port_file) {
                break p.trim().to_string();
            }
            if let Some(st) = proc.child.try_wait().unwrap() {
                panic!("sigv4_server.py exited ({st}): {}", proc.log_text());
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "sigv4_server.py did not start: {}",
                proc.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        Sigv4Server {
            url: format!("http://127.0.0.1:{port}"),
            proc,
            _dir: dir,
        }
    }

    /// One line per request: `ok STATUS` or `bad REASON`.
    pub fn lines(&self) -> Vec<String> {
        self.proc.log_text().lines().map(str::to_string).collect()
    }
}

/// The status of `GET url`; None when it cannot connect.
pub async fn get_status(url: &str) -> Option<u16> {
    http_get(url).await.map(|(status, _)| status)
}

pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// Seeds ECS and EC2 in moto through the real SDK.
pub struct EcsSeeder {
    pub ecs: aws_sdk_ecs::Client,
    pub ec2: aws_sdk_ec2::Client,
}

impl EcsSeeder {
    pub async fn new(url: &str) -> EcsSeeder {
        let conf = sdk_config(url).await;
        EcsSeeder {
            ecs: aws_sdk_ecs::Client::new(&conf),
            ec2: aws_sdk_ec2::Client::new(&conf),
        }
    }

    /// Starts an EC2 instance, with a Name tag when given; returns (id, private IP).
    pub async fn host(&self, name: Option<&str>) -> (String, String) {
        let mut req = self
            .ec2
            .run_instances()
            .image_id("ami-12c6146b")
            .instance_type(aws_sdk_ec2::types::InstanceType::M5Large)
            .min_count(1)
            .max_count(1);
        if let Some(n) = name {
            req = req.tag_specifications(
                aws_sdk_ec2::types::TagSpecification::builder()
                    .resource_type(aws_sdk_ec2::types::ResourceType::Instance)
                    .tags(
                        aws_sdk_ec2::types::Tag::builder()
                            .key("Name")
                            .value(n)
                            .build(),
                    )
                    .build(),
            );
        }
        let out = req.send().await.unwrap();
        let i = &out.instances()[0];
        (
            i.instance_id().unwrap().to_string(),
            i.private_ip_address().unwrap().to_string(),
        )
    }

    pub async fn rename(&self, instance_id: &str, name: &str) {
        self.ec2
            .create_tags()
            .resources(instance_id)
            .tags(
                aws_sdk_ec2::types::Tag::builder()
                    .key("Name")
                    .value(name)
                    .build(),
            )
            .send()
            .await
            .unwrap();
    }

    pub async fn cluster(&self, name: &str) {
        self.ecs
            .create_cluster()
            .cluster_name(name)
            .send()
            .await
            .unwrap();
    }

    /// Registers the task definition `web` (revision 1 the first time).
    pub async fn task_definition(&self) {
        self.ecs
            .register_task_definition()
            .family("web")
            .container_definitions(
                aws_sdk_ecs::types::ContainerDefinition::builder()
                    .name("web")
                    .image("web:1")
                    .memory(16)
                    .command("serve")
                    .build(),
            )
            .send()
            .await
            .unwrap();
    }

    /// Registers an EC2 instance as a container instance; returns its ARN.
    pub async fn container_instance(&self, cluster: &str, ec2_id: &str) -> String {
        let doc = format!(
            r#"{{"instanceId":"{ec2_id}","region":"{REGION}","availabilityZone":"us-east-1a"}}"#
        );
        let out = self
            .ecs
            .register_container_instance()
            .cluster(cluster)
            .instance_identity_document(doc)
            .send()
            .await
            .unwrap();
        out.container_instance()
            .unwrap()
            .container_instance_arn()
            .unwrap()
            .to_string()
    }

    /// Runs `count` EC2 tasks in a cluster (its container instances host them);
    /// returns their task ids.
    pub async fn ec2_tasks(&self, cluster: &str, count: usize) -> Vec<String> {
        let mut ids = Vec::new();
        while ids.len() < count {
            let n = (count - ids.len()).min(10) as i32;
            let out = self
                .ecs
                .run_task()
                .cluster(cluster)
                .task_definition("web")
                .launch_type(aws_sdk_ecs::types::LaunchType::Ec2)
                .count(n)
                .send()
                .await
                .unwrap();
            assert!(
                !out.tasks().is_empty(),
                "run_task placed no task: {:?}",
                out.failures()
            );
            ids.extend(out.tasks().iter().map(|t| task_id(t.task_arn().unwrap())));
        }
        ids
    }

    /// Starts a Fargate task; returns its task id.
    pub async fn fargate_task(&self, cluster: &str) -> String {
        let out = self
            .ecs
            .run_task()
            .cluster(cluster)
            .task_definition("web")
            .launch_type(aws_sdk_ecs::types::LaunchType::Fargate)
            .send()
            .await
            .unwrap();
        task_id(out.tasks()[0].task_arn().unwrap())
    }
}

pub fn task_id(arn: &str) -> String {
    arn.rsplit('/').next().unwrap().to_string()
}

impl Seeder {
    /// Registers a task in Cloud Map as ECS does, in cluster `cluster`.
    pub async fn ecs_task(&self, service_id: &str, cluster: &str, task_id: &str, ip: &str) {
        let attrs = [
            ("AWS_INSTANCE_IPV4", ip.to_string()),
            ("AWS_INSTANCE_PORT", "8080".to_string()),
            ("AVAILABILITY_ZONE", "us-east-1a".to_string()),
            ("ECS_CLUSTER_NAME", cluster.to_string()),
            ("ECS_SERVICE_NAME", "web".to_string()),
            ("ECS_TASK_DEFINITION_FAMILY", "web".to_string()),
        ];
        self.instance(service_id, task_id, &attrs).await;
    }
}
