//! The watch's reading and judgement, the probe's classes and wire message, and the
//! loops' clocks, from recorded text and a paused clock.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::assess::{State, assess, overall, overall_of};
use super::exposition::{QueueReading, Scrape, parse_exposition};
use super::metrics::{RemoteWriteMetrics, ResultLabels};
use super::probe::{AmpProbe, ProbeResult, amp_region, classify_status, classify_transport};
use super::watch::{WatchConfig, Watcher, probe_loop};
use super::wire::{Label, Sample, TimeSeries, WriteRequest, encode_write_request};
use crate::prom_config::PrometheusMode;

/// The exposition of these metrics alone, as `/metrics` shows them.
fn encode(m: &RemoteWriteMetrics) -> String {
    let mut registry = prometheus_client::registry::Registry::with_prefix("cloudmap_sd");
    m.register(&mut registry);
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
    out
}

const V2_42: &str = r#"# HELP prometheus_remote_storage_highest_timestamp_in_seconds Highest timestamp that has come into the remote storage via the Appender interface, in seconds since epoch.
# TYPE prometheus_remote_storage_highest_timestamp_in_seconds gauge
prometheus_remote_storage_highest_timestamp_in_seconds 1.7e+09
# TYPE prometheus_remote_storage_queue_highest_sent_timestamp_seconds gauge
prometheus_remote_storage_queue_highest_sent_timestamp_seconds{remote_name="amp",url="https://aps-workspaces.eu-west-1.amazonaws.com/workspaces/ws-1/api/v1/remote_write"} 1.699999984e+09
prometheus_remote_storage_samples_failed_total{remote_name="amp",url="https://x"} 0
prometheus_remote_storage_samples_retried_total{remote_name="amp",url="https://x"} 3987
prometheus_remote_storage_samples_dropped_total{remote_name="amp",url="https://x"} 2
prometheus_remote_storage_samples_pending{remote_name="amp",url="https://x"} 3442
prometheus_remote_storage_samples_total{remote_name="amp",url="https://x"} 10000
prometheus_remote_storage_exemplars_total{remote_name="amp",url="https://x"} 0
prometheus_tsdb_head_series 123
"#;

const V3: &str = r#"prometheus_remote_storage_queue_highest_timestamp_seconds{remote_name="a,b \"q\"",url="http://r"} 1000
prometheus_remote_storage_queue_highest_sent_timestamp_seconds{remote_name="a,b \"q\"",url="http://r"} 995
prometheus_remote_storage_samples_failed_total{remote_name="a,b \"q\"",url="http://r"} 5
prometheus_remote_storage_samples_retried_total{remote_name="a,b \"q\"",url="http://r"} 0
prometheus_remote_storage_samples_pending{remote_name="a,b \"q\"",url="http://r"} 0
"#;

#[test]
fn parses_2x_names_with_the_global_highest_timestamp() {
    let s = parse_exposition(V2_42);
    assert_eq!(s.highest, Some(1.7e9));
    let q = &s.queues["amp"];
    assert_eq!(q.retried, Some(3987.0));
    assert_eq!(q.pending, Some(3442.0));
    assert_eq!(q.dropped, Some(2.0));
    assert_eq!(q.sent, Some(10000.0));
    assert_eq!(q.highest, None);
    let h = assess(None, &s, Duration::from_secs(120));
    assert_eq!(h[0].lag, Some(16.0));
    assert_eq!(h[0].retried_rate, None, "no rate on the first scrape");
    assert_eq!(h[0].state, State::Ok);
}

#[test]
fn parses_3x_names_and_escaped_labels() {
    let s = parse_exposition(V3);
    let q = &s.queues["a,b \"q\""];
    assert_eq!(q.highest, Some(1000.0));
    assert_eq!(q.highest_sent, Some(995.0));
    assert_eq!(q.failed, Some(5.0));
    let h = assess(None, &s, Duration::from_secs(120));
    assert_eq!(h[0].lag, Some(5.0));
}

#[test]
fn old_alias_names_count_too() {
    let s = parse_exposition(
        "prometheus_remote_storage_failed_samples_total{remote_name=\"r\"} 7\nprometheus_remote_storage_pending_samples{remote_name=\"r\"} 1\n",
    );
    assert_eq!(s.queues["r"].failed, Some(7.0));
    assert_eq!(s.queues["r"].pending, Some(1.0));
}

fn reading(failed: f64, retried: f64, highest: f64, sent: f64) -> Scrape {
    let mut s = Scrape::default();
    s.queues.insert(
        "q".into(),
        QueueReading {
            failed: Some(failed),
            retried: Some(retried),
            highest: Some(highest),
            highest_sent: Some(sent),
            pending: Some(0.0),
            ..Default::default()
        },
    );
    s
}

#[test]
fn states_from_rates_and_lag() {
    let max = Duration::from_secs(60);
    let p = reading(0.0, 0.0, 100.0, 99.0);
    let d = Duration::from_secs(10);
    let ok = assess(Some((&p, d)), &reading(0.0, 0.0, 110.0, 109.0), max);
    assert_eq!((ok[0].state, ok[0].reason.as_str()), (State::Ok, ""));
    let retried = assess(Some((&p, d)), &reading(0.0, 50.0, 110.0, 105.0), max);
    assert_eq!(retried[0].state, State::Degraded);
    assert_eq!(retried[0].retried_rate, Some(5.0));
    assert!(
        retried[0].reason.contains("5.0 samples/s retried"),
        "{}",
        retried[0].reason
    );
    let lagging = assess(Some((&p, d)), &reading(0.0, 0.0, 140.0, 100.0), max);
    assert_eq!(lagging[0].state, State::Degraded);
    let failing = assess(Some((&p, d)), &reading(20.0, 0.0, 110.0, 109.0), max);
    assert_eq!(failing[0].state, State::Failing);
    assert!(failing[0].reason.contains("failed"));
    let late = assess(Some((&p, d)), &reading(0.0, 0.0, 200.0, 100.0), max);
    assert_eq!(late[0].state, State::Failing);
    assert!(late[0].reason.contains("lag 100s"), "{}", late[0].reason);
    // A counter reset (Prometheus restarted) gives no rate, not a negative one.
    let reset = assess(
        Some((&reading(50.0, 50.0, 1.0, 1.0), d)),
        &reading(0.0, 0.0, 2.0, 2.0),
        max,
    );
    assert_eq!(reset[0].failed_rate, None);
    assert_eq!(reset[0].state, State::Ok);
}

#[test]
fn overall_is_the_worst_queue() {
    assert_eq!(overall(&[]).0, State::NoQueues);
    let mut s = reading(0.0, 0.0, 1.0, 1.0);
    s.queues.insert(
        "z".into(),
        reading(0.0, 0.0, 500.0, 1.0).queues["q"].clone(),
    );
    let h = assess(None, &s, Duration::from_secs(60));
    let (state, reason, causes) = overall(&h);
    assert_eq!(state, State::Failing);
    assert!(reason.starts_with("queue z: lag"), "{reason}");
    assert_eq!(causes, ["lag"]);
    assert_eq!(overall(&[]).2, ["no_queues"]);
}

/// What Prometheus 2.42 in agent mode (`--enable-feature=agent`) exposes beside the
/// remote_storage metrics, which are those of a server (recorded here).
const AGENT_2_42: &str = r#"prometheus_agent_active_series 240
prometheus_agent_samples_appended_total{type="float"} 1642
prometheus_remote_storage_highest_timestamp_in_seconds 1.796497381e+09
prometheus_remote_storage_queue_highest_sent_timestamp_seconds{remote_name="amp",url="http://127.0.0.1:19390/api/v1/write"} 1.796497365e+09
prometheus_remote_storage_samples_failed_total{remote_name="amp",url="http://127.0.0.1:19390/api/v1/write"} 0
prometheus_remote_storage_samples_pending{remote_name="amp",url="http://127.0.0.1:19390/api/v1/write"} 3499
prometheus_remote_storage_samples_retried_total{remote_name="amp",url="http://127.0.0.1:19390/api/v1/write"} 4500
prometheus_remote_storage_samples_total{remote_name="amp",url="http://127.0.0.1:19390/api/v1/write"} 6500
"#;

#[test]
fn agent_mode_reads_as_a_server_and_without_queues_is_failing() {
    let s = parse_exposition(AGENT_2_42);
    assert!(s.agent);
    assert!(!parse_exposition(V2_42).agent);
    let h = assess(None, &s, Duration::from_secs(60));
    assert_eq!((h[0].lag, h[0].pending), (Some(16.0), Some(3499.0)));
    assert_eq!(overall_of(&s, &h), overall(&h));
    let no_queue = parse_exposition("prometheus_agent_active_series 3\n");
    let (state, reason, causes) = overall_of(&no_queue, &[]);
    assert_eq!(state, State::Failing);
    assert!(reason.contains("agent mode"), "{reason}");
    assert_eq!(causes, ["no_queues"]);
    let server = parse_exposition("prometheus_tsdb_head_series 3\n");
    assert_eq!(overall_of(&server, &[]).0, State::NoQueues);
}

#[test]
fn watcher_exports_the_mode_prometheus_runs_in() {
    let metrics = Arc::new(RemoteWriteMetrics::default());
    let mut w = Watcher::new(
        WatchConfig {
            prometheus_url: "http://127.0.0.1:1".into(),
            interval: Duration::from_secs(1),
            max_lag: Duration::from_secs(60),
            timeout: Duration::from_secs(1),
            mode: PrometheusMode::Agent,
        },
        metrics.clone(),
    );
    let t0 = Instant::now();
    w.observe(Ok(AGENT_2_42.into()), t0);
    let text = encode(&metrics);
    assert!(
        text.contains(r#"cloudmap_sd_remote_write_prometheus_mode{mode="agent"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"cloudmap_sd_remote_write_prometheus_mode{mode="server"} 0"#),
        "{text}"
    );
    w.observe(Ok(V2_42.into()), t0 + Duration::from_secs(1));
    let text = encode(&metrics);
    assert!(
        text.contains(r#"cloudmap_sd_remote_write_prometheus_mode{mode="server"} 1"#),
        "{text}"
    );
}

#[test]
fn watcher_reports_unreachable_and_transitions() {
    let metrics = Arc::new(RemoteWriteMetrics::default());
    let mut w = Watcher::new(
        WatchConfig {
            prometheus_url: "http://127.0.0.1:1".into(),
            interval: Duration::from_secs(1),
            max_lag: Duration::from_secs(60),
            timeout: Duration::from_secs(1),
            mode: PrometheusMode::Server,
        },
        metrics.clone(),
    );
    let t0 = Instant::now();
    assert_eq!(w.observe(Err("refused".into()), t0).0, State::Unreachable);
    let text = encode(&metrics);
    assert!(
        text.contains(r#"cloudmap_sd_remote_write_cause{cause="prometheus_unreachable"} 1"#),
        "{text}"
    );
    assert!(text.contains(r#"cloudmap_sd_remote_write_cause{cause="lag"} 0"#));
    assert_eq!(w.observe(Ok(V2_42.into()), t0).0, State::Ok);
    let text = encode(&metrics);
    assert!(
        text.contains(r#"cloudmap_sd_remote_write_cause{cause="prometheus_unreachable"} 0"#),
        "{text}"
    );
    assert!(
        text.contains(r#"cloudmap_sd_remote_write_state{state="ok"} 1"#),
        "{text}"
    );
    assert!(text.contains(r#"cloudmap_sd_remote_write_state{state="unreachable"} 0"#));
    assert!(text.contains(r#"cloudmap_sd_remote_write_transitions_total{state="unreachable"} 1"#));
    assert!(
        text.contains(r#"cloudmap_sd_remote_write_lag_seconds{queue="amp"} 16"#),
        "{text}"
    );
}

#[test]
fn status_classes() {
    for (status, r) in [
        (200, ProbeResult::Accepted),
        (204, ProbeResult::Accepted),
        (400, ProbeResult::BadRequest),
        (401, ProbeResult::Forbidden),
        (403, ProbeResult::Forbidden),
        (404, ProbeResult::NotFound),
        (413, ProbeResult::ClientError),
        (429, ProbeResult::Throttled),
        (503, ProbeResult::ServerError),
    ] {
        assert_eq!(classify_status(status), r, "{status}");
    }
    assert!(ProbeResult::Forbidden.advice().contains("aps:RemoteWrite"));
    assert!(ProbeResult::NotFound.advice().contains("Region"));
}

#[test]
fn transport_classes_from_error_text() {
    let e = std::io::Error::other("dns error: failed to lookup address information");
    assert_eq!(classify_transport(&e), ProbeResult::Dns);
    let e = std::io::Error::other(rustls::Error::DecryptError);
    assert_eq!(classify_transport(&e), ProbeResult::Tls);
    let e = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
    assert_eq!(classify_transport(&e), ProbeResult::Connect);
}

#[test]
fn the_probe_body_is_an_empty_write_request() {
    let body = encode_write_request(&WriteRequest::default());
    let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
    assert!(raw.is_empty());
    let full = WriteRequest {
        timeseries: vec![TimeSeries {
            labels: vec![Label {
                name: "__name__".into(),
                value: "up".into(),
            }],
            samples: vec![Sample {
                value: 1.0,
                timestamp: 1_700_000_000_000,
            }],
        }],
    };
    let raw = snap::raw::Decoder::new()
        .decompress_vec(&encode_write_request(&full))
        .unwrap();
    let back: WriteRequest = prost::Message::decode(raw.as_slice()).unwrap();
    assert_eq!(back, full);
}

#[test]
fn amp_urls_give_their_region() {
    assert_eq!(
        amp_region(
            "https://aps-workspaces.eu-west-1.amazonaws.com/workspaces/ws-1/api/v1/remote_write"
        )
        .as_deref(),
        Some("eu-west-1")
    );
    assert_eq!(amp_region("http://127.0.0.1:9090/api/v1/write"), None);
}

#[tokio::test(start_paused = true)]
async fn probe_loop_probes_at_start_then_on_its_clock() {
    // A probe to a port nothing listens on: connect_error each time, quickly.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let probe = AmpProbe::new(
        &format!("http://127.0.0.1:{port}/api/v1/write"),
        "us-east-1",
        None,
        Duration::from_secs(1),
    )
    .unwrap();
    let metrics = Arc::new(RemoteWriteMetrics::default());
    let stop = CancellationToken::new();
    let task = tokio::spawn(probe_loop(
        probe,
        Duration::from_secs(300),
        metrics.clone(),
        stop.clone(),
    ));
    let count = |m: &RemoteWriteMetrics| {
        m.probes
            .get_or_create(&ResultLabels {
                result: ProbeResult::Credentials.as_str(),
            })
            .get()
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(count(&metrics), 1, "one probe at start");
    tokio::time::sleep(Duration::from_secs(298)).await;
    assert_eq!(count(&metrics), 1);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(count(&metrics), 2, "then one per interval");
    stop.cancel();
    task.await.unwrap();
}
