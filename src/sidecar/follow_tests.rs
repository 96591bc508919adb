//! Events in the run loop, in process against the hand-written adapters: a task an
//! event announces is published at once, one announced before Cloud Map has it is
//! looked for again until it is there, a stopped one leaves, an event about
//! nothing known costs no call, and an out-of-order event changes nothing.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::aws::Clients;
use crate::aws::fakes::{FakeCloudMap, FakeEcs, FakeQueue};
use crate::discovery::DiscoveryOptions;
use crate::events::{EventsOptions, spawn};
use crate::http_sd::Published;
use crate::model::HealthStatus;
use crate::server::Readiness;
use crate::sidecar::{RunMetrics, SidecarOptions, run_with_events};
use crate::targets::{LabelStyle, MetaLabels, TargetOptions};

fn options(output: &Path) -> SidecarOptions {
    SidecarOptions {
        discovery: DiscoveryOptions {
            namespaces: Vec::new(),
            health: HealthStatus::HealthyOrElseAll,
            tags_refresh: Duration::from_secs(3600),
            full_refresh: Duration::from_secs(3600),
            services_refresh: Duration::from_secs(3600),
            concurrency: 4,
            listing_pages: 1,
            shard: None,
            ecs_service_tags: false,
        },
        enrich: None,
        targets: TargetOptions {
            label_style: LabelStyle::Default,
            default_port: Some(8080),
            meta_labels: MetaLabels::All,
        },
        output: Some(output.to_path_buf()),
        hosts: None,
        // Only the first cycle runs during a test: the rest is the events'.
        interval: Duration::from_secs(3600),
        cycle_timeout: Duration::from_secs(30),
    }
}

fn task_event(id: &str, task: &str, service: &str, last: &str, version: i64) -> String {
    let desired = if last == "RUNNING" {
        "RUNNING"
    } else {
        "STOPPED"
    };
    serde_json::json!({
        "version": "0", "id": id, "detail-type": "ECS Task State Change",
        "source": "aws.ecs", "account": "123456789012", "region": "us-east-1",
        "detail": {
            "clusterArn": "arn:aws:ecs:us-east-1:123456789012:cluster/prod",
            "taskArn": format!("arn:aws:ecs:us-east-1:123456789012:task/prod/{task}"),
            "group": format!("service:{service}"),
            "lastStatus": last, "desiredStatus": desired, "version": version
        }
    })
    .to_string()
}

struct World {
    cloudmap: Arc<FakeCloudMap>,
    queue: Arc<FakeQueue>,
    events: Arc<EventMetrics>,
    output: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

/// Service `web` (ECS service `web` of cluster `prod`) with task `t1`, service
/// `api` with `a1`; the loop running with events (on this task, beside `test`)
/// until `test` is done, which starts once the file shows both.
async fn with_world(test: impl AsyncFnOnce(&World)) {
    let cloudmap = Arc::new(FakeCloudMap::default());
    cloudmap.add_service("apps", "web", &[("METRICS_PATH", "/metrics")]);
    cloudmap.add_service("apps", "api", &[("METRICS_PATH", "/metrics")]);
    cloudmap.register_task("web", "t1", "10.0.0.1", "prod", "web");
    cloudmap.register_task("api", "a1", "10.0.1.1", "prod", "api");
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("targets.json");
    let queue = Arc::new(FakeQueue::default());
    let events = Arc::new(EventMetrics::default());
    let shutdown = CancellationToken::new();
    let mut eo = EventsOptions::new("https://sqs.fake/1/q");
    eo.wait = Duration::from_millis(200);
    eo.settle = Duration::from_secs(5);
    let feed = spawn(queue.clone(), &eo, events.clone(), shutdown.clone());
    let ecs = FakeEcs::default();
    let clients = Clients {
        cloudmap: cloudmap.clone(),
        ecs: &ecs,
        ec2: &ecs,
    };
    let opts = options(&output);
    let follow = Events {
        feed,
        metrics: events.clone(),
        settle: eo.settle,
    };
    let readiness = Arc::new(Readiness::default());
    let run = run_with_events(
        clients,
        &opts,
        Arc::new(RunMetrics::default()),
        readiness,
        Arc::new(Published::new(false)),
        Some(follow),
        shutdown.clone(),
    );
    let w = World {
        cloudmap,
        queue,
        events,
        output,
        _dir: dir,
    };
    let body = async {
        w.wait_for(&["10.0.0.1:8080", "10.0.1.1:8080"]).await;
        test(&w).await;
        shutdown.cancel();
    };
    tokio::join!(run, body);
}

impl World {
    fn targets(&self) -> Vec<String> {
        let Ok(bytes) = std::fs::read(&self.output) else {
            return Vec::new();
        };
        let groups: Vec<serde_json::Value> = serde_json::from_slice(&bytes).unwrap();
        let mut v: Vec<String> = groups
            .iter()
            .map(|g| g["targets"][0].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    }

    async fn wait_for(&self, want: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.targets() != want {
            assert!(
                Instant::now() < deadline,
                "file {:?}, want {want:?}",
                self.targets()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until `n` events have been counted (every outcome).
    async fn wait_events(&self, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.counted("cloudmap_sd_events_received_total") < n as f64 {
            assert!(Instant::now() < deadline, "{}", self.text());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn text(&self) -> String {
        let mut registry = Registry::with_prefix("cloudmap_sd");
        self.events.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text
    }

    fn counted(&self, prefix: &str) -> f64 {
        self.text()
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_an_event_announces_is_published_at_once_by_its_ecs_service() {
    with_world(async |w| {
    w.cloudmap.take_calls();
    w.cloudmap.register_task("web", "t2", "10.0.0.2", "prod", "web");
    let sent = Instant::now();
    w.queue.send(&task_event("e1", "t2", "web", "RUNNING", 3));
    w.wait_for(&["10.0.0.1:8080", "10.0.0.2:8080", "10.0.1.1:8080"]).await;
    // The time to the file is observed right after the write returns.
    let deadline = Instant::now() + Duration::from_secs(10);
    while w.counted("cloudmap_sd_event_to_file_seconds_count") < 1.0 {
        assert!(Instant::now() < deadline, "{}", w.text());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(sent.elapsed() < Duration::from_secs(10), "{:?}", sent.elapsed());
    assert_eq!(
        w.cloudmap.take_calls(),
        ["DiscoverInstances", "DiscoverInstancesRevision"],
        "only the touched service, its revision first"
    );
    let text = w.text();
    assert!(text.contains(r#"cloudmap_sd_events_received_total{kind="task_state_change",outcome="refreshed"} 1"#), "{text}");
    assert!(text.contains(r#"cloudmap_sd_event_refreshes_total{outcome="changed"} 1"#), "{text}");
    assert!(text.contains("cloudmap_sd_event_to_file_seconds_count 1"), "{text}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while w.queue.state.lock().unwrap().deleted.is_empty() {
        assert!(Instant::now() < deadline, "the handled message is not deleted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_before_the_registration_is_looked_for_until_it_is_there() {
    with_world(async |w| {
        w.queue.send(&task_event("e1", "t2", "web", "RUNNING", 3));
        w.wait_events(1).await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(w.targets(), ["10.0.0.1:8080", "10.0.1.1:8080"]);
        w.cloudmap
            .register_task("web", "t2", "10.0.0.2", "prod", "web");
        w.wait_for(&["10.0.0.1:8080", "10.0.0.2:8080", "10.0.1.1:8080"])
            .await;
        assert!(w.counted("cloudmap_sd_event_refreshes_total{outcome=\"unchanged\"}") >= 1.0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_task_leaves_and_an_older_event_does_not_bring_it_back() {
    with_world(async |w| {
        w.cloudmap.deregister("web", "t1");
        w.queue.send(&task_event("e1", "t1", "web", "STOPPED", 7));
        w.wait_for(&["10.0.1.1:8080"]).await;
        w.queue.send(&task_event("e0", "t1", "web", "RUNNING", 5));
        w.wait_events(2).await;
        assert!(
            w.text().contains(r#"outcome="out_of_order"} 1"#),
            "{}",
            w.text()
        );
        assert_eq!(w.targets(), ["10.0.1.1:8080"]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_about_nothing_known_costs_no_call() {
    with_world(async |w| {
        w.cloudmap.take_calls();
        w.queue
            .send(&task_event("e1", "x9", "batch-job", "RUNNING", 1));
        w.queue.send(&task_event("e2", "a1", "api", "RUNNING", 2));
        w.wait_events(2).await;
        let text = w.text();
        assert!(text.contains(r#"outcome="unmatched"} 1"#), "{text}");
        assert!(
            text.contains(r#"outcome="current"} 1"#),
            "the file already shows a1: {text}"
        );
        assert!(w.cloudmap.take_calls().is_empty());
    })
    .await;
}
