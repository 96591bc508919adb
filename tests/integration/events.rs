//! The ECS event stream, through the real binary against moto server's SQS and
//! EventBridge: the events ECS would send (moto's ECS emits none) are put on the
//! default bus, a rule delivers them to the queue at once, and the sidecar, with a
//! five-minute interval, must follow them: a task in or out of the file within
//! seconds, an event before the registration still ending with the task in the
//! file, duplicates and out-of-order events changing nothing, malformed messages
//! deleted and counted, and a failing queue (through the fault proxy) costing
//! nothing but the speed.
//!
//! The bounds are generous because the machine is shared; `scripts/bench.sh`
//! measures the latency itself (docs/benchmark.md). The interval is five minutes,
//! so a change seen before the second cycle can only have come from an event.

use std::time::{Duration, Instant};

use cloudmap_sd_test_support::*;

const T: Duration = Duration::from_secs(30);

struct Stream {
    _moto: Moto,
    proxy: Proxy,
    seeder: Seeder,
    queue: EventQueue,
    service: String,
    sidecar: Sidecar,
    _dir: tempfile::TempDir,
}

fn running<'a>(task: &'a str, version: i64) -> TaskState<'a> {
    TaskState {
        cluster: "prod",
        task_id: task,
        service: Some("svc"),
        last: "RUNNING",
        desired: "RUNNING",
        version,
    }
}

fn stopped<'a>(task: &'a str, version: i64) -> TaskState<'a> {
    TaskState {
        last: "STOPPED",
        desired: "STOPPED",
        ..running(task, version)
    }
}

/// Service `web` with task `t1` (ECS service `svc` of cluster `prod`, as the
/// seeder registers tasks), a queue fed by a rule, and the sidecar following it
/// with `--interval 5m`, ready.
async fn stream(extra: &[&str]) -> Stream {
    let moto = Moto::start();
    let proxy = Proxy::start(&moto.url).await;
    let seeder = Seeder::new(&moto.url).await;
    let ns = seeder.http_namespace("apps").await;
    let service = seeder.service(&ns, "web", &[("METRICS_PATH", "/m")]).await;
    seeder.task(&service, "t1", "10.0.0.1", Some(80)).await;
    let queue = EventQueue::create(&moto.url, "cloudmap-sd-events").await;
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec![
        "--interval",
        "5m",
        "--ecs-enrichment",
        "false",
        "--events-queue-url",
        &queue.url,
    ];
    args.extend_from_slice(extra);
    let sidecar = Sidecar::start(dir.path(), &proxy.url, &args);
    sidecar.wait_ready(T).await;
    assert_eq!(sidecar.targets(), ["10.0.0.1:80"]);
    Stream {
        _moto: moto,
        proxy,
        seeder,
        queue,
        service,
        sidecar,
        _dir: dir,
    }
}

impl Stream {
    /// Waits until the file holds exactly `want`; the time it took.
    async fn file_holds(&self, want: &[&str]) -> Duration {
        let start = Instant::now();
        let what = format!("the file to hold {want:?}");
        wait_for_async(T, &what, || async {
            (self.sidecar.targets() == want).then_some(())
        })
        .await;
        start.elapsed()
    }

    /// Waits until the sidecar has counted `n` events of `outcome`.
    async fn events(&self, outcome: &str, n: f64) {
        let name = format!(
            "cloudmap_sd_events_received_total{{kind=\"task_state_change\",outcome=\"{outcome}\"}}"
        );
        let what = format!("{n} events {outcome}");
        wait_for_async(T, &what, || async {
            (self.sidecar.metric(&name).await >= n).then_some(())
        })
        .await;
    }

    /// Only the first cycle ran: what changed, events changed.
    async fn one_cycle(&self) {
        assert_eq!(
            self.sidecar.cycles().await,
            1.0,
            "a second cycle ran; log:\n{}",
            self.sidecar.proc.log_text()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_put_tasks_in_and_out_of_the_file_within_seconds() {
    let s = stream(&[]).await;

    // Registered, then announced: in the file at once.
    s.seeder.task(&s.service, "t2", "10.0.0.2", Some(80)).await;
    s.queue.task_state(&running("t2", 3)).await;
    let took = s.file_holds(&["10.0.0.1:80", "10.0.0.2:80"]).await;
    eprintln!("RUNNING event to file: {took:?}");

    // Deregistered, then announced STOPPED: out of the file at once.
    s.seeder.deregister(&s.service, "t1").await;
    s.queue.task_state(&stopped("t1", 7)).await;
    let took = s.file_holds(&["10.0.0.2:80"]).await;
    eprintln!("STOPPED event to file: {took:?}");

    // Announced before ECS registers it: looked for again until it is there.
    s.queue.task_state(&running("t3", 2)).await;
    s.events("refreshed", 3.0).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.seeder.task(&s.service, "t3", "10.0.0.3", Some(80)).await;
    s.file_holds(&["10.0.0.2:80", "10.0.0.3:80"]).await;

    s.one_cycle().await;
    let m = s
        .sidecar
        .metric("cloudmap_sd_event_to_file_seconds_count")
        .await;
    assert!(m >= 3.0, "event-to-file latency observed {m} times");
    assert!(s.sidecar.metric("cloudmap_sd_event_refreshes_total").await >= 3.0);
    wait_for_async(T, "every handled message deleted", || async {
        (s.queue.messages().await == 0).then_some(())
    })
    .await;
    let calls = s.proxy.counts();
    assert!(
        calls.get("ReceiveMessage").copied().unwrap_or(0) >= 1,
        "{calls:?}"
    );
    assert!(
        calls.get("DeleteMessageBatch").copied().unwrap_or(0) >= 1,
        "{calls:?}"
    );
    assert!(
        s.sidecar
            .metric(
                "cloudmap_sd_aws_api_calls_total{operation=\"ReceiveMessage\",outcome=\"success\"}"
            )
            .await
            >= 1.0,
        "queue calls are counted like every AWS call"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_out_of_order_and_malformed_messages_change_nothing() {
    let s = stream(&[]).await;
    s.seeder.task(&s.service, "t2", "10.0.0.2", Some(80)).await;
    s.queue.task_state(&running("t2", 3)).await;
    s.file_holds(&["10.0.0.1:80", "10.0.0.2:80"]).await;
    s.seeder.deregister(&s.service, "t2").await;
    s.queue.task_state(&stopped("t2", 6)).await;
    s.file_holds(&["10.0.0.1:80"]).await;

    // The STOPPED event again (a second delivery), and a RUNNING one older than
    // the stop: neither changes anything.
    s.queue.task_state(&stopped("t2", 6)).await;
    s.queue.task_state(&running("t2", 5)).await;
    s.events("duplicate", 1.0).await;
    s.events("out_of_order", 1.0).await;

    // Messages no rule would write: deleted and counted, never a crash.
    s.queue.send_raw("this is not JSON").await;
    s.queue
        .send_raw(r#"{"detail-type":"ECS Task State Change","detail":{"taskArn":"x"}}"#)
        .await;
    let malformed = "cloudmap_sd_events_received_total{kind=\"malformed\",outcome=\"malformed\"}";
    wait_for_async(T, "2 malformed messages counted", || async {
        (s.sidecar.metric(malformed).await >= 2.0).then_some(())
    })
    .await;
    wait_for_async(T, "every message deleted", || async {
        (s.queue.messages().await == 0).then_some(())
    })
    .await;
    assert_eq!(s.sidecar.targets(), ["10.0.0.1:80"]);
    let log = s.sidecar.proc.log_text();
    assert_eq!(
        log.matches("unreadable message in the events queue")
            .count(),
        2,
        "{log}"
    );
    assert!(s.sidecar.proc.child.id() > 0);
    s.one_cycle().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_queue_keeps_polling_alive_and_loses_nothing() {
    let s = stream(&[]).await;
    let (_, ready) = http_get(&s.sidecar.url("/-/ready")).await.unwrap();
    assert!(!ready.is_empty());

    // The queue answers 500 to every receive: said in metrics and the log, once.
    s.proxy.set_fault_for("ReceiveMessage", Fault::ServerError);
    wait_for_async(T, "the queue reported failing", || async {
        (s.sidecar.metric("cloudmap_sd_events_queue_failing").await == 1.0).then_some(())
    })
    .await;
    // An event sent meanwhile waits in the queue.
    s.seeder.task(&s.service, "t2", "10.0.0.2", Some(80)).await;
    s.queue.task_state(&running("t2", 3)).await;
    assert_eq!(
        get_status(&s.sidecar.url("/-/ready")).await,
        Some(200),
        "readiness does not depend on the queue"
    );
    assert_eq!(s.sidecar.targets(), ["10.0.0.1:80"]);

    // Back: the waiting event is read and the task published, without a cycle.
    s.proxy.set_fault_for("ReceiveMessage", Fault::Pass);
    s.file_holds(&["10.0.0.1:80", "10.0.0.2:80"]).await;
    assert_eq!(
        s.sidecar.metric("cloudmap_sd_events_queue_failing").await,
        0.0
    );
    assert!(
        s.sidecar
            .metric("cloudmap_sd_events_queue_errors_total{operation=\"ReceiveMessage\",kind=\"server_error\"}")
            .await
            >= 1.0
    );
    let log = s.sidecar.proc.log_text();
    assert_eq!(
        log.matches("cannot read the events queue").count(),
        1,
        "{log}"
    );
    assert!(log.contains("the events queue can be read again"), "{log}");
    s.one_cycle().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_goes_on_while_the_queue_is_denied() {
    let moto = Moto::start();
    let proxy = Proxy::start(&moto.url).await;
    let seeder = Seeder::new(&moto.url).await;
    let ns = seeder.http_namespace("apps").await;
    let svc = seeder.service(&ns, "web", &[("METRICS_PATH", "/m")]).await;
    seeder.task(&svc, "t1", "10.0.0.1", Some(80)).await;
    let queue = EventQueue::create(&moto.url, "denied").await;
    proxy.set_fault_for("ReceiveMessage", Fault::Deny);
    let dir = tempfile::tempdir().unwrap();
    let sc = Sidecar::start(
        dir.path(),
        &proxy.url,
        &[
            "--interval",
            "1s",
            "--ecs-enrichment",
            "false",
            "--events-queue-url",
            &queue.url,
        ],
    );
    sc.wait_ready(T).await;
    seeder.task(&svc, "t2", "10.0.0.2", Some(80)).await;
    wait_for_async(T, "the cycle to publish t2", || async {
        (sc.targets() == ["10.0.0.1:80", "10.0.0.2:80"]).then_some(())
    })
    .await;
    let denied = "cloudmap_sd_events_queue_errors_total{operation=\"ReceiveMessage\",kind=\"access_denied\"}";
    assert!(sc.metric(denied).await >= 1.0);
    assert!(sc.proc.log_text().contains("cannot read the events queue"));
}
