//! A counting, fault-injecting HTTP proxy in front of moto, which also answers as
//! AWS where moto's ECS answers differ ([`ecs`]).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

pub mod ecs;

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
    /// Refuse as IAM does: 400 `AccessDeniedException` for the JSON services,
    /// 403 `AccessDenied` in STS's XML, 403 `UnauthorizedOperation` in EC2's.
    Deny,
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
    /// Faults for every request signed with one account's credentials.
    per_account: BTreeMap<String, Rule>,
    /// Requests answered with a fault, by operation.
    injected: BTreeMap<String, u64>,
}

impl Faults {
    fn pick(&mut self, op: &str, account: &str) -> Fault {
        let f = match (self.per_op.get_mut(op), self.per_account.get_mut(account)) {
            (Some(r), _) => r.next(),
            (None, Some(r)) => r.next(),
            (None, None) => self.all.as_mut().map_or(Fault::Pass, Rule::next),
        };
        if f != Fault::Pass {
            *self.injected.entry(op.to_string()).or_default() += 1;
        }
        f
    }
}

/// An HTTP proxy in front of moto that counts requests by AWS operation (and by
/// the account whose credentials signed them) and can inject faults, for all
/// requests, one operation or one account. It can also record the request bodies
/// of chosen operations, emulate an AWS default that moto lacks, shorten the
/// sessions AssumeRole hands out, and be stopped (its port then refuses
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
    /// Requests by (account, operation).
    account_counts: Arc<Mutex<BTreeMap<(String, String), u64>>>,
    /// The account of each access key AssumeRole handed out.
    key_accounts: Arc<Mutex<HashMap<String, String>>>,
    /// See [`Proxy::shorten_assumed_sessions`].
    session_length: Arc<Mutex<Option<Duration>>>,
    faults: Arc<Mutex<Faults>>,
    /// Request bodies of the operations chosen with [`Proxy::record_requests`].
    recorded: Arc<Mutex<BTreeMap<String, Vec<serde_json::Value>>>>,
    /// See [`Proxy::emulate_aws_discover_default`].
    aws_discover_default: Arc<std::sync::atomic::AtomicBool>,
    /// What the ECS rewrites remember (task definitions, dynamic host ports).
    ecs: Arc<Mutex<ecs::Emulation>>,
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
            account_counts: Arc::new(Mutex::new(BTreeMap::new())),
            key_accounts: Arc::new(Mutex::new(HashMap::new())),
            session_length: Arc::new(Mutex::new(None)),
            faults: Arc::new(Mutex::new(Faults::default())),
            recorded: Arc::new(Mutex::new(BTreeMap::new())),
            aws_discover_default: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            ecs: Arc::new(Mutex::new(ecs::Emulation::default())),
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

    /// A fault for a share `rate` of the requests signed with the credentials of
    /// `account` (moto's default account for credentials that are not AssumeRole's).
    /// A fault for the operation takes its place.
    pub fn set_fault_for_account(&self, account: &str, f: Fault, rate: f64) {
        let mut m = self.state.faults.lock().unwrap();
        match Rule::new(f, rate) {
            Some(r) => m.per_account.insert(account.to_string(), r),
            None => m.per_account.remove(account),
        };
    }

    /// Requests seen so far from `account`'s credentials, by operation.
    pub fn counts_for(&self, account: &str) -> BTreeMap<String, u64> {
        self.state
            .account_counts
            .lock()
            .unwrap()
            .iter()
            .filter(|((a, _), _)| a == account)
            .map(|((_, op), n)| (op.clone(), *n))
            .collect()
    }

    /// From now on, the credentials AssumeRole answers with expire `length` after
    /// the answer (None: as moto says, an hour). AWS's shortest session is 15
    /// minutes; a test cannot wait that long to see the SDK renew them.
    pub fn shorten_assumed_sessions(&self, length: Option<Duration>) {
        *self.state.session_length.lock().unwrap() = length;
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

/// moto's default account: the one of any credentials AssumeRole did not hand out.
pub const MOTO_ACCOUNT: &str = "123456789012";

/// The access key that signed a request (`Credential=KEY/...` in SigV4's header).
fn access_key(headers: &hyper::HeaderMap) -> Option<&str> {
    let auth = headers.get("authorization")?.to_str().ok()?;
    let cred = auth.split("Credential=").nth(1)?;
    cred.split('/').next()
}

/// The value of form field `name` in a query-protocol body, URL-decoded.
fn form_field(body: &[u8], name: &str) -> Option<String> {
    let body = String::from_utf8_lossy(body);
    let raw = body
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))?;
    let mut out = Vec::new();
    let mut bytes = raw.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'%' => {
                let hex: String = bytes.by_ref().take(2).map(char::from).collect();
                out.push(u8::from_str_radix(&hex, 16).ok()?);
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
    }
    String::from_utf8(out).ok()
}

/// The text of the first `<tag>` element of an XML answer.
fn xml_element<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let start = xml.find(&format!("<{tag}>"))? + tag.len() + 2;
    let end = xml[start..].find(&format!("</{tag}>"))? + start;
    Some(&xml[start..end])
}

/// Learns the account of the key an AssumeRole answer hands out, and shortens the
/// session when asked to.
fn assumed_role(state: &ProxyState, request: &[u8], answer: Bytes) -> Bytes {
    let xml = String::from_utf8_lossy(&answer).into_owned();
    let account =
        form_field(request, "RoleArn").and_then(|arn| arn.split(':').nth(4).map(str::to_string));
    if let (Some(account), Some(key)) = (account, xml_element(&xml, "AccessKeyId")) {
        state
            .key_accounts
            .lock()
            .unwrap()
            .insert(key.to_string(), account);
    }
    let Some(length) = *state.session_length.lock().unwrap() else {
        return answer;
    };
    let Some(old) = xml_element(&xml, "Expiration") else {
        return answer;
    };
    let new = humantime::format_rfc3339_seconds(std::time::SystemTime::now() + length);
    Bytes::from(xml.replacen(old, &new.to_string(), 1))
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
    let account = access_key(&parts.headers)
        .and_then(|k| state.key_accounts.lock().unwrap().get(k).cloned())
        .unwrap_or_else(|| MOTO_ACCOUNT.to_string());
    let fault = state.faults.lock().unwrap().pick(&op, &account);
    let sts = form_field(&body, "Version").as_deref() == Some("2011-06-15");
    let ec2 = target.is_empty() && !sts;
    *state.counts.lock().unwrap().entry(op.clone()).or_default() += 1;
    *state
        .account_counts
        .lock()
        .unwrap()
        .entry((account, op.clone()))
        .or_default() += 1;
    // An error answer in the request's protocol: STS (and IAM) speak the query
    // protocol's own document, EC2 its XML, Cloud Map and ECS JSON.
    let answer = |status: u16, code: &str, message: &str| {
        Ok(if sts {
            error_query(status, code, message)
        } else if ec2 {
            error_xml(status, code, message)
        } else {
            error_json(status, code, message)
        })
    };
    let json = |status: u16, ty: &str| Ok(error_json(status, ty, INJECTED));
    let xml = |status: u16, code: &str| Ok(error_xml(status, code, INJECTED));
    let query_error = |status: u16, code: &str| Ok(error_query(status, code, INJECTED));
    // AWS refuses a DescribeServices call with more than 10 services; moto takes it.
    if op == "DescribeServices" && ecs::over_describe_services_limit(&body) {
        return json(400, "InvalidParameterException");
    }
    match fault {
        Fault::RefuseCredentials if sts => {
            return answer(
                403,
                "InvalidClientTokenId",
                "The security token included in the request is invalid.",
            );
        }
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
        Fault::ExpiredCredentials if sts || ec2 => {
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
        Fault::Deny if sts => return query_error(403, "AccessDenied"),
        Fault::Deny if ec2 => return xml(403, "UnauthorizedOperation"),
        Fault::Deny => return json(400, "AccessDeniedException"),
        Fault::ServerError if sts => return query_error(500, "InternalFailure"),
        Fault::ServerError if ec2 => return xml(500, "InternalError"),
        Fault::ServerError => return json(500, "InternalFailure"),
        Fault::Unavailable if sts => return query_error(503, "ServiceUnavailable"),
        Fault::Unavailable if ec2 => return xml(503, "Unavailable"),
        Fault::Unavailable => return json(503, "ServiceUnavailable"),
        Fault::Throttle if sts => return query_error(400, "Throttling"),
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
    let sent = body.clone();
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
        if op == "DescribeTasks" && rp.status.is_success() {
            rb = with_containers_and_bindings(rb, &parts.headers, state).await;
        }
        rb = ecs::fix_number_fields(rb);
        rp.headers.remove("content-length");
    }
    if op == "AssumeRole" && rp.status.is_success() {
        rb = assumed_role(state, &sent, rb);
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

/// An error answer of the query protocol (STS, IAM).
fn error_query(status: u16, code: &str, message: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "text/xml")
        .body(Full::new(Bytes::from(format!(
            "<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code>\
             <Message>{message}</Message></Error>\
             <RequestId>00000000-0000-0000-0000-000000000000</RequestId></ErrorResponse>"
        ))))
        .unwrap()
}

/// A DescribeTasks answer with every container and its port bindings, as ECS
/// reports them ([`ecs::Emulation`]); the task definitions it needs are read from
/// moto (DescribeTaskDefinition, signed as the request was) once each.
async fn with_containers_and_bindings(
    answer: Bytes,
    headers: &hyper::HeaderMap,
    state: &ProxyState,
) -> Bytes {
    let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&answer) else {
        return answer;
    };
    let unknown = ecs::unknown_task_definitions(&v, &state.ecs.lock().unwrap());
    for arn in unknown {
        let request = serde_json::json!({ "taskDefinition": arn });
        if let Some(def) = call_moto(state, headers, "DescribeTaskDefinition", &request).await {
            state.ecs.lock().unwrap().learn_task_definition(arn, &def);
        }
    }
    state
        .ecs
        .lock()
        .unwrap()
        .add_containers_and_bindings(&mut v);
    Bytes::from(serde_json::to_vec(&v).unwrap())
}

/// One ECS call of the proxy's own to moto, with the headers (credentials, Region)
/// of the request it serves; its JSON answer, if it succeeded.
async fn call_moto(
    state: &ProxyState,
    headers: &hyper::HeaderMap,
    operation: &str,
    request: &serde_json::Value,
) -> Option<serde_json::Value> {
    let body = Bytes::from(serde_json::to_vec(request).unwrap());
    let upstream = &state.upstream;
    let uri = format!(
        "{}://{}/",
        upstream.scheme_str().unwrap(),
        upstream.authority().unwrap()
    );
    let mut out = Request::builder().method("POST").uri(uri);
    for (k, v) in headers {
        if k != "x-amz-target" && k != hyper::header::CONTENT_LENGTH {
            out = out.header(k, v);
        }
    }
    let out = out
        .header(
            "x-amz-target",
            format!("AmazonEC2ContainerServiceV20141113.{operation}"),
        )
        .header(hyper::header::CONTENT_LENGTH, body.len())
        .body(Full::new(body))
        .unwrap();
    let resp = state.client.request(out).await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    let bytes = resp.into_body().collect().await.ok()?.to_bytes();
    serde_json::from_slice(&bytes).ok()
}
