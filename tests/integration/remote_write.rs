//! Remote-write health against real servers: the SigV4 probe against a server that
//! checks signatures with botocore, and the watch on a real Prometheus (a server,
//! and an agent that reads its targets over http_sd) that remote_writes to a second
//! real Prometheus (the AMP stand-in) which stops and comes back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use cloudmap_sd::metrics::Metrics;
use cloudmap_sd::prom_config::PrometheusMode;
use cloudmap_sd::remote_write::{AmpProbe, ProbeResult, WatchConfig, watch};
use tokio_util::sync::CancellationToken;

use cloudmap_sd_test_support::{
    Mode, Moto, Seeder, Sidecar, Sigv4Server, active_targets, free_port, get_status, http_get,
    prometheus_in, prometheus_on, sum_metric, wait_for_async,
};

const KEY: &str = "AKIDCLOUDMAPSDTEST";
const SECRET: &str = "probe-secret";

fn creds(key: &str, secret: &str) -> Option<SharedCredentialsProvider> {
    Some(SharedCredentialsProvider::new(Credentials::new(
        key, secret, None, None, "test",
    )))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigv4_probe_is_verified_by_botocore_and_each_answer_is_classified() {
    let answers = [
        (200, ProbeResult::Accepted),
        (400, ProbeResult::BadRequest),
        (403, ProbeResult::Forbidden),
        (404, ProbeResult::NotFound),
        (429, ProbeResult::Throttled),
        (503, ProbeResult::ServerError),
    ];
    let statuses: Vec<u16> = answers.iter().map(|(s, _)| *s).collect();
    let server = Sigv4Server::start(KEY, SECRET, "eu-west-1", &statuses);
    let url = format!("{}/workspaces/ws-test/api/v1/remote_write", server.url);
    let probe = AmpProbe::new(
        &url,
        "eu-west-1",
        creds(KEY, SECRET),
        Duration::from_secs(10),
    )
    .unwrap();
    for (status, want) in answers {
        let o = probe.probe().await;
        assert_eq!((o.result, o.status), (want, Some(status)), "{o}");
    }
    let expected: Vec<String> = statuses.iter().map(|s| format!("ok {s}")).collect();
    assert_eq!(
        server.lines(),
        expected,
        "every signature verified by botocore"
    );

    // Negative controls: the server really checks. A wrong secret and a wrong
    // signing Region are refused (403), and the probe says forbidden.
    let wrong_secret = AmpProbe::new(
        &url,
        "eu-west-1",
        creds(KEY, "not-the-secret"),
        Duration::from_secs(10),
    )
    .unwrap();
    let o = wrong_secret.probe().await;
    assert_eq!(o.result, ProbeResult::Forbidden, "{o}");
    assert!(o.detail.contains("signature mismatch"), "{o}");
    assert!(o.to_string().contains("aps:RemoteWrite"), "{o}");
    let wrong_region = AmpProbe::new(
        &url,
        "us-east-1",
        creds(KEY, SECRET),
        Duration::from_secs(10),
    )
    .unwrap();
    let o = wrong_region.probe().await;
    assert_eq!(o.result, ProbeResult::Forbidden, "{o}");
    let lines = server.lines();
    assert_eq!(lines[6], "bad signature mismatch");
    assert!(
        lines[7].starts_with("bad wrong credential scope"),
        "{lines:?}"
    );

    // TLS spoken to a plain HTTP server: the handshake fails.
    let tls_url = url.replace("http://", "https://");
    let o = AmpProbe::new(
        &tls_url,
        "eu-west-1",
        creds(KEY, SECRET),
        Duration::from_secs(10),
    )
    .unwrap()
    .probe()
    .await;
    assert_eq!(o.result, ProbeResult::Tls, "{o}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_failures_are_classified() {
    let timeout = Duration::from_secs(2);
    // Connection refused: a port nothing listens on.
    let url = format!("http://127.0.0.1:{}/api/v1/write", free_port());
    let o = AmpProbe::new(&url, "us-east-1", creds(KEY, SECRET), timeout)
        .unwrap()
        .probe()
        .await;
    assert_eq!(o.result, ProbeResult::Connect, "{o}");

    // A server that accepts and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = silent.accept().await {
            conns.push(c);
        }
    });
    let started = Instant::now();
    let o = AmpProbe::new(
        &format!("http://{addr}/api/v1/write"),
        "us-east-1",
        creds(KEY, SECRET),
        timeout,
    )
    .unwrap()
    .probe()
    .await;
    assert_eq!(o.result, ProbeResult::Timeout, "{o}");
    assert!(started.elapsed() < Duration::from_secs(5));
    hold.abort();

    // A name that never resolves (.invalid is reserved).
    let o = AmpProbe::new(
        "https://aps-workspaces.cloudmap-sd-test.invalid/workspaces/ws-1/api/v1/remote_write",
        "us-east-1",
        creds(KEY, SECRET),
        Duration::from_secs(10),
    )
    .unwrap()
    .probe()
    .await;
    assert_eq!(o.result, ProbeResult::Dns, "{o}");

    // No credentials at all.
    let o = AmpProbe::new(&url, "us-east-1", None, timeout)
        .unwrap()
        .probe()
        .await;
    assert_eq!(o.result, ProbeResult::Credentials, "{o}");
}

/// `run` with only --prometheus-config: it probes the remote_write URL of that file,
/// signed for the config's sigv4 Region with the credentials of the AWS chain (the
/// test server checks them with botocore), again on --amp-probe-interval, and
/// reports a Prometheus it cannot read as unreachable, with that cause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_probes_the_url_of_the_prometheus_config_and_exports_the_causes() {
    let moto = Moto::start();
    // The sidecar's AWS chain holds the test credentials of cloudmap_sd_test_support::aws_env.
    let server = Sigv4Server::start("testing", "testing", "eu-west-1", &[200, 403]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  external_labels: {{cluster: c, __replica__: r}}\nremote_write:\n  \
             - url: {}/workspaces/ws-test/api/v1/remote_write\n    sigv4:\n      region: eu-west-1\n",
            server.url
        ),
    )
    .unwrap();
    let nothing = format!("http://127.0.0.1:{}", free_port());
    let sc = Sidecar::start(
        dir.path(),
        &moto.url,
        &[
            "--interval",
            "1s",
            "--prometheus-config",
            config.to_str().unwrap(),
            "--amp-probe-interval",
            "1s",
            "--prometheus-url",
            &nothing,
            "--remote-write-watch-interval",
            "1s",
        ],
    );
    sc.wait_ready(Duration::from_secs(60)).await;
    let text = wait_for_async(
        Duration::from_secs(20),
        "an accepted, then a forbidden probe",
        || {
            let url = sc.url("/metrics");
            async move {
                let (_, text) = cloudmap_sd_test_support::http_get(&url).await?;
                (sum_metric(&text, "cloudmap_sd_amp_probes_total{result=\"accepted\"}") >= 1.0
                    && text.contains("cloudmap_sd_amp_probe_result{result=\"forbidden\"} 1"))
                .then_some(text)
            }
        },
    )
    .await;
    let lines = server.lines();
    assert_eq!(
        lines[..2],
        ["ok 200", "ok 403"],
        "signatures verified: {lines:?}"
    );
    assert!(
        text.contains("cloudmap_sd_remote_write_state{state=\"unreachable\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("cloudmap_sd_remote_write_cause{cause=\"prometheus_unreachable\"} 1"),
        "{text}"
    );
    let log = sc.proc.log_text();
    assert!(
        log.contains("aps:RemoteWrite"),
        "the 403 is explained: {log}"
    );
}

/// The overall state from the sidecar's own metrics text.
fn state(metrics: &Metrics) -> String {
    metrics
        .encode()
        .lines()
        .find_map(|l| {
            l.strip_prefix("cloudmap_sd_remote_write_state{state=\"")?
                .strip_suffix("\"} 1")
                .map(str::to_string)
        })
        .unwrap_or_default()
}

async fn wait_state(
    metrics: &Arc<Metrics>,
    timeout: Duration,
    want: &[&str],
    what: &str,
) -> Duration {
    let started = Instant::now();
    wait_for_async(timeout, what, || {
        let m = metrics.clone();
        let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        async move { want.contains(&state(&m)).then_some(()) }
    })
    .await;
    started.elapsed()
}

async fn wait_ready(url: &str, what: &str) {
    let ready = format!("{url}/-/ready");
    wait_for_async(Duration::from_secs(30), what, || {
        let ready = ready.clone();
        async move { (get_status(&ready).await == Some(200)).then_some(()) }
    })
    .await;
}

/// A Prometheus that only receives remote writes (the AMP stand-in), on `port`, its
/// data in `dir`.
fn start_receiver(dir: &std::path::Path, port: u16) -> cloudmap_sd_test_support::Proc {
    prometheus_on(
        dir,
        port,
        "global:\n  scrape_interval: 1m\n",
        &["--web.enable-remote-write-receiver"],
    )
}

/// Whether the sidecar's metrics `text` set one of `causes`.
fn has_cause(text: &str, causes: &[&str]) -> bool {
    causes.iter().any(|c| {
        text.contains(&format!(
            "cloudmap_sd_remote_write_cause{{cause=\"{c}\"}} 1"
        ))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_follows_a_receiver_that_stops_and_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let (recv_port, send_port) = (free_port(), free_port());
    let recv_url = format!("http://127.0.0.1:{recv_port}");
    let send_url = format!("http://127.0.0.1:{send_port}");
    let receiver = start_receiver(&dir.path().join("recv1"), recv_port);
    wait_ready(&recv_url, "the receiving Prometheus").await;

    let sender_config = format!(
        "global:\n  scrape_interval: 1s\n  external_labels: {{cluster: test, __replica__: r1}}\n\
         scrape_configs:\n  - job_name: self\n    static_configs:\n      - targets: ['127.0.0.1:{send_port}']\n\
         remote_write:\n  - url: {recv_url}/api/v1/write\n    name: amp\n    queue_config:\n      \
         batch_send_deadline: 1s\n      min_backoff: 100ms\n      max_backoff: 1s\n"
    );
    let sender = prometheus_on(&dir.path().join("send"), send_port, &sender_config, &[]);
    wait_ready(&send_url, "the sending Prometheus").await;

    let period = Duration::from_secs(2);
    let metrics = Arc::new(Metrics::new());
    let stop = CancellationToken::new();
    let task = tokio::spawn(watch(
        WatchConfig {
            prometheus_url: send_url.clone(),
            interval: period,
            max_lag: Duration::from_secs(60),
            timeout: period,
            mode: PrometheusMode::Server,
        },
        metrics.remote_write.clone(),
        stop.clone(),
    ));

    // Ok, and samples actually sent (a lag is known): Prometheus replays its WAL for
    // a few seconds before the first send.
    wait_for_async(
        Duration::from_secs(60),
        "state ok with samples sent",
        || {
            let m = metrics.clone();
            async move {
                (state(&m) == "ok"
                    && m.encode()
                        .contains("cloudmap_sd_remote_write_lag_seconds{queue=\"amp\"}"))
                .then_some(())
            }
        },
    )
    .await;
    // Start-up may already have passed through degraded (samples pending while
    // nothing was sent yet), so count the transitions from here.
    let oks = || {
        sum_metric(
            &metrics.encode(),
            "cloudmap_sd_remote_write_transitions_total{state=\"ok\"}",
        )
    };
    let oks_before = oks();
    let scrapes = || {
        sum_metric(
            &metrics.encode(),
            "cloudmap_sd_remote_write_watch_scrapes_total{outcome=\"success\"}",
        )
    };

    drop(receiver);
    let scrapes_at_stop = scrapes();
    let took = wait_state(
        &metrics,
        Duration::from_secs(30),
        &["degraded", "failing"],
        "state degraded or failing after the receiver stopped",
    )
    .await;
    let text = metrics.encode();
    // Two watch periods: at most two reads of Prometheus after the stop. The clock
    // bound adds the time this loop takes to notice.
    let reads = scrapes() - scrapes_at_stop;
    assert!(reads <= 2.0, "state changed after {reads} reads\n{text}");
    assert!(
        took <= 2 * period + Duration::from_millis(1500),
        "state changed after {took:?}, more than two watch periods ({period:?} each)\n{text}"
    );
    assert!(
        text.contains("cloudmap_sd_remote_write_retried_samples_per_second{queue=\"amp\"}"),
        "{text}"
    );
    assert!(
        has_cause(&text, &["samples_retried", "samples_failed"]),
        "the cause is exported: {text}"
    );

    let _receiver = start_receiver(&dir.path().join("recv2"), recv_port);
    wait_state(
        &metrics,
        Duration::from_secs(90),
        &["ok"],
        "state ok again after the receiver came back",
    )
    .await;
    assert_eq!(
        oks(),
        oks_before + 1.0,
        "one way back to ok, no flapping\n{}",
        metrics.encode()
    );

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    drop(sender);
}

/// The sidecar's overall remote-write state, from its /metrics.
async fn sidecar_state(sc: &Sidecar) -> Option<String> {
    let (_, text) = http_get(&sc.url("/metrics")).await?;
    text.lines().find_map(|l| {
        l.strip_prefix("cloudmap_sd_remote_write_state{state=\"")?
            .strip_suffix("\"} 1")
            .map(str::to_string)
    })
}

async fn wait_sidecar_state(sc: &Sidecar, timeout: Duration, want: &str) {
    wait_for_async(
        timeout,
        &format!("the sidecar's watch to say {want}"),
        || async { (sidecar_state(sc).await.as_deref() == Some(want)).then_some(()) },
    )
    .await;
}

/// Prometheus 2.42 in agent mode (`--enable-feature=agent`) finds its target (itself)
/// at the sidecar's /sd/targets and remote-writes to a receiver; the sidecar, run
/// with `--prometheus-mode agent` and no file, watches the agent: ok, failing once
/// the receiver stops, ok again once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_reading_http_sd_is_watched_through_a_receiver_outage() {
    let dir = tempfile::tempdir().unwrap();
    let (recv_port, agent_port) = (free_port(), free_port());
    let recv_url = format!("http://127.0.0.1:{recv_port}");
    let agent_url = format!("http://127.0.0.1:{agent_port}");
    let moto = Moto::start();
    let s = Seeder::new(&moto.url).await;
    let ns = s.http_namespace("apps").await;
    let port = agent_port.to_string();
    let svc = s
        .service(
            &ns,
            "agent",
            &[("METRICS_PATH", "/metrics"), ("METRICS_PORT", &port)],
        )
        .await;
    s.task(&svc, "a1a1", "127.0.0.1", None).await;

    let receiver = start_receiver(&dir.path().join("recv1"), recv_port);
    wait_ready(&recv_url, "the receiving Prometheus").await;

    let sc = Sidecar::start_serving(
        dir.path(),
        &moto.url,
        &[
            "--interval",
            "1s",
            "--prometheus-mode",
            "agent",
            "--prometheus-url",
            &agent_url,
            "--remote-write-watch-interval",
            "1s",
            "--remote-write-max-lag",
            "10s",
        ],
    );
    sc.wait_ready(Duration::from_secs(60)).await;
    let agent_config = format!(
        "global:\n  scrape_interval: 1s\n  external_labels: {{cluster: test, __replica__: a1}}\n\
         scrape_configs:\n  - job_name: ecs\n    http_sd_configs:\n      - url: '{}'\n        refresh_interval: 1s\n\
         remote_write:\n  - url: {recv_url}/api/v1/write\n    name: amp\n    queue_config:\n      \
         batch_send_deadline: 1s\n      min_backoff: 100ms\n      max_backoff: 1s\n",
        sc.url("/sd/targets")
    );
    let agent = prometheus_in(
        Mode::Agent,
        &dir.path().join("agent"),
        agent_port,
        &agent_config,
        &[],
    );
    wait_ready(&agent_url, "the agent").await;
    wait_for_async(
        Duration::from_secs(60),
        "the agent to scrape its http_sd target",
        || async {
            let a = active_targets(&agent_url, Some("ecs")).await?;
            (a.len() == 1 && a[0]["health"] == "up").then_some(())
        },
    )
    .await;
    let text = wait_for_async(
        Duration::from_secs(60),
        "state ok with samples sent",
        || async {
            let (_, text) = http_get(&sc.url("/metrics")).await?;
            (text.contains("cloudmap_sd_remote_write_state{state=\"ok\"} 1")
                && text.contains("cloudmap_sd_remote_write_lag_seconds{queue=\"amp\"}"))
            .then_some(text)
        },
    )
    .await;
    assert!(
        text.contains("cloudmap_sd_remote_write_prometheus_mode{mode=\"agent\"} 1"),
        "{text}"
    );
    // The receiver holds what the agent scraped through http_sd.
    let query = format!(
        "{recv_url}/api/v1/query?query=up%7Bjob%3D%22ecs%22%2Ccloudmap_service%3D%22agent%22%7D"
    );
    wait_for_async(
        Duration::from_secs(60),
        "the agent's samples at the receiver",
        || {
            let query = query.clone();
            async move {
                let (_, body) = http_get(&query).await?;
                let v: serde_json::Value = serde_json::from_str(&body).ok()?;
                (v["data"]["result"].as_array()?.len() == 1).then_some(())
            }
        },
    )
    .await;

    drop(receiver);
    wait_sidecar_state(&sc, Duration::from_secs(60), "failing").await;
    let (_, text) = http_get(&sc.url("/metrics")).await.unwrap();
    assert!(has_cause(&text, &["lag", "samples_failed"]), "{text}");

    let _receiver = start_receiver(&dir.path().join("recv2"), recv_port);
    wait_sidecar_state(&sc, Duration::from_secs(120), "ok").await;
    assert!(
        !sc.proc.log_text().contains("--prometheus-mode says"),
        "no mode warning: {}",
        sc.proc.log_text()
    );
    drop(agent);
}
