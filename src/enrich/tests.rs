//! Enrichment passes against the hand-written ECS and EC2.

use std::sync::Mutex;

use super::*;
use crate::aws::fakes::FakeEcs;
use crate::model::{ServiceData, attr};

/// A deadline no unit test reaches.
fn far() -> Instant {
    Instant::now() + Duration::from_secs(3600)
}

fn facts(id: &str, lt: &str, ci: Option<&str>) -> (String, EcsTask) {
    let task = EcsTask {
        launch_type: Some(lt.into()),
        revision: Some("3".into()),
        container_instance_arn: ci.map(Into::into),
        bindings: Default::default(),
    };
    (id.to_string(), task)
}

/// A task of cluster `prod`.
fn prod(task: (String, EcsTask)) -> (String, String, EcsTask) {
    ("prod".to_string(), task.0, task.1)
}

fn fake() -> FakeEcs {
    FakeEcs {
        tasks: vec![
            prod(facts("t1", "EC2", Some("ci-a"))),
            prod(facts("t2", "FARGATE", None)),
        ],
        cis: vec![("ci-a".into(), "i-a".into())],
        hosts: Mutex::new(vec![Host {
            instance_id: "i-a".into(),
            name: Some("host-a".into()),
            instance_type: Some("m5.large".into()),
            availability_zone: Some("us-east-1a".into()),
            private_ip: Some("10.0.0.10".into()),
            cluster: None,
        }]),
        ..FakeEcs::default()
    }
}

fn snapshot(ids: &[&str]) -> Snapshot {
    Snapshot {
        services: vec![ServiceData {
            namespace: "ns".into(),
            service: "web".into(),
            tags: Arc::default(),
            instances: Arc::new(
                ids.iter()
                    .map(|id| Instance {
                        id: id.to_string(),
                        attributes: [(attr::ECS_CLUSTER.to_string(), "prod".to_string())].into(),
                    })
                    .collect(),
            ),
            ecs_service: None,
        }],
        ..Snapshot::default()
    }
}

fn opts() -> EnrichOptions {
    EnrichOptions {
        hold: Duration::from_secs(60),
        name_refresh: Duration::from_secs(300),
        hosts_tag: None,
        want_hosts: true,
        ec2: true,
    }
}

#[tokio::test]
async fn ec2_and_fargate_tasks_then_a_free_steady_state() {
    let f = fake();
    let mut e = Enricher::new(&f, &f, opts());
    let t0 = Instant::now();
    let r = e.enrich(&snapshot(&["t1", "t2"]), t0, far()).await;
    assert!(r.errors.is_empty() && r.held.is_empty());
    let t1 = &r.tasks["t1"];
    assert_eq!(t1.ec2_name.as_deref(), Some("host-a"));
    assert_eq!(t1.ec2_instance_id.as_deref(), Some("i-a"));
    assert_eq!(t1.ec2_instance_type.as_deref(), Some("m5.large"));
    assert_eq!(t1.launch_type.as_deref(), Some("EC2"));
    let t2 = &r.tasks["t2"];
    assert_eq!(t2.launch_type.as_deref(), Some("FARGATE"));
    assert!(t2.ec2_instance_id.is_none() && t2.ec2_name.is_none());
    let hosts = r.hosts.unwrap();
    assert_eq!(hosts.len(), 1);
    assert_eq!(hosts[0].cluster.as_deref(), Some("prod"));
    assert_eq!(
        *f.calls.lock().unwrap(),
        [
            ("DescribeTasks", 2),
            ("ListContainerInstances", 0),
            ("DescribeContainerInstances", 1),
            ("DescribeInstances", 1)
        ]
    );

    f.calls.lock().unwrap().clear();
    let again = e
        .enrich(
            &snapshot(&["t1", "t2"]),
            t0 + Duration::from_secs(30),
            far(),
        )
        .await;
    assert_eq!(again.tasks, r.tasks);
    assert!(
        f.calls.lock().unwrap().is_empty(),
        "steady state makes no call"
    );

    // Rename: picked up on the Name clock only.
    f.hosts.lock().unwrap()[0].name = Some("renamed".into());
    let r = e
        .enrich(
            &snapshot(&["t1", "t2"]),
            t0 + Duration::from_secs(60),
            far(),
        )
        .await;
    assert_eq!(r.tasks["t1"].ec2_name.as_deref(), Some("host-a"));
    let r = e
        .enrich(
            &snapshot(&["t1", "t2"]),
            t0 + Duration::from_secs(300),
            far(),
        )
        .await;
    assert_eq!(r.tasks["t1"].ec2_name.as_deref(), Some("renamed"));
    assert_eq!(
        *f.calls.lock().unwrap(),
        [("ListContainerInstances", 0), ("DescribeInstances", 1)],
        "the hosts file's cluster listing and the Name refresh"
    );
}

#[tokio::test]
async fn a_failing_ecs_holds_new_tasks_for_a_bounded_time_only() {
    let f = fake();
    let mut e = Enricher::new(&f, &f, opts());
    let t0 = Instant::now();
    e.enrich(&snapshot(&["t2"]), t0, far()).await;
    *f.fail_ecs.lock().unwrap() = true;
    let r = e
        .enrich(
            &snapshot(&["t1", "t2"]),
            t0 + Duration::from_secs(30),
            far(),
        )
        .await;
    assert_eq!(r.held, BTreeSet::from(["t1".to_string()]));
    assert_eq!(r.errors.len(), 1);
    assert_eq!(
        r.tasks["t2"].launch_type.as_deref(),
        Some("FARGATE"),
        "known task kept"
    );
    let r = e
        .enrich(
            &snapshot(&["t1", "t2"]),
            t0 + Duration::from_secs(95),
            far(),
        )
        .await;
    assert!(r.held.is_empty(), "released after the hold time");
    assert_eq!(r.tasks["t1"], TaskFacts::default());
    assert_eq!(
        r.tasks["t1"].bindings, None,
        "its port bindings are unknown"
    );
    assert_eq!(
        r.tasks["t2"].bindings.as_deref(),
        Some(&[][..]),
        "a described task without bindings binds none"
    );
}

#[tokio::test]
async fn port_bindings_come_with_the_task_facts_once() {
    use crate::model::PortBinding;
    let mut f = fake();
    let binding = |c: &str, cp, hp| PortBinding {
        container: c.into(),
        container_port: cp,
        host_port: hp,
    };
    f.tasks[0].2.bindings = vec![
        binding("app", 8080, 32768),
        binding("exporter", 9100, 49153),
    ]
    .into();
    let mut e = Enricher::new(&f, &f, opts());
    let t0 = Instant::now();
    let r = e.enrich(&snapshot(&["t1"]), t0, far()).await;
    let b = r.tasks["t1"].bindings.as_deref().unwrap();
    assert_eq!(
        b,
        &[
            binding("app", 8080, 32768),
            binding("exporter", 9100, 49153)
        ]
    );
    take_calls(&f);
    let again = e
        .enrich(&snapshot(&["t1"]), t0 + Duration::from_secs(30), far())
        .await;
    assert_eq!(again.tasks["t1"], r.tasks["t1"]);
    assert!(take_calls(&f).is_empty(), "read once per task");
}

#[tokio::test]
async fn new_tasks_go_in_batches_of_100_and_a_failed_batch_holds_only_its_tasks() {
    let mut f = FakeEcs::default();
    let ids: Vec<String> = (0..250).map(|i| format!("t{i}")).collect();
    f.tasks = ids
        .iter()
        .map(|i| prod(facts(i, "FARGATE", None)))
        .collect();
    let no_hosts = EnrichOptions {
        want_hosts: false,
        ..opts()
    };
    let mut e = Enricher::new(&f, &f, no_hosts.clone());
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let r = e.enrich(&snapshot(&refs), Instant::now(), far()).await;
    assert_eq!(r.tasks.len(), 250);
    // ceil(250/100) calls (counted on the wire against moto too).
    assert_eq!(
        *f.calls.lock().unwrap(),
        [
            ("DescribeTasks", 100),
            ("DescribeTasks", 100),
            ("DescribeTasks", 50)
        ]
    );

    // The batch holding t1 fails: only its tasks are held.
    let mut e = Enricher::new(&f, &f, no_hosts.clone());
    *f.fail_tasks_with.lock().unwrap() = Some("t1".into());
    let r = e.enrich(&snapshot(&refs), Instant::now(), far()).await;
    assert_eq!(r.errors.len(), 1);
    assert!(r.held.contains("t1"));
    assert_eq!((r.held.len(), r.tasks.len()), (100, 150));
}

fn host(id: &str, name: &str) -> Host {
    Host {
        instance_id: id.into(),
        name: Some(name.into()),
        instance_type: Some("m5.large".into()),
        availability_zone: Some("us-east-1a".into()),
        private_ip: Some("10.0.0.10".into()),
        cluster: None,
    }
}

fn ids(hosts: &Option<Vec<Host>>) -> Vec<&str> {
    hosts
        .as_ref()
        .expect("a hosts list")
        .iter()
        .map(|h| h.instance_id.as_str())
        .collect()
}

fn take_calls(f: &FakeEcs) -> Vec<(&'static str, usize)> {
    std::mem::take(&mut *f.calls.lock().unwrap())
}

/// A cluster with two hosts, one running the discovered task.
fn two_hosts() -> FakeEcs {
    let f = fake();
    FakeEcs {
        cis: vec![
            ("ci-a".into(), "i-a".into()),
            ("ci-b".into(), "i-b".into()),
            ("ci-c".into(), "i-c".into()),
        ],
        listed: Mutex::new(vec![
            ("prod".into(), "ci-a".into()),
            ("prod".into(), "ci-b".into()),
        ]),
        hosts: Mutex::new(vec![
            host("i-a", "host-a"),
            host("i-b", "daemon-only"),
            host("i-c", "new"),
        ]),
        ..f
    }
}

#[tokio::test]
async fn hosts_file_lists_every_container_instance_of_the_clusters_seen() {
    let f = two_hosts();
    let mut e = Enricher::new(&f, &f, opts());
    let t0 = Instant::now();
    let r = e.enrich(&snapshot(&["t1"]), t0, far()).await;
    assert_eq!(ids(&r.hosts), ["i-a", "i-b"]);
    let daemon = &r.hosts.as_ref().unwrap()[1];
    assert_eq!(daemon.cluster.as_deref(), Some("prod"));
    assert_eq!(daemon.name.as_deref(), Some("daemon-only"));
    assert_eq!(
        take_calls(&f),
        [
            ("DescribeTasks", 1),
            ("ListContainerInstances", 0),
            ("DescribeContainerInstances", 2),
            ("DescribeInstances", 2)
        ]
    );
    e.enrich(&snapshot(&["t1"]), t0 + Duration::from_secs(30), far())
        .await;
    assert!(take_calls(&f).is_empty(), "steady state makes no call");

    // A host joins the cluster: found on the Name clock.
    f.listed
        .lock()
        .unwrap()
        .push(("prod".into(), "ci-c".into()));
    e.enrich(&snapshot(&["t1"]), t0 + Duration::from_secs(299), far())
        .await;
    assert!(take_calls(&f).is_empty());
    let r = e
        .enrich(&snapshot(&["t1"]), t0 + Duration::from_secs(300), far())
        .await;
    assert_eq!(ids(&r.hosts), ["i-a", "i-b", "i-c"]);
    assert_eq!(
        take_calls(&f),
        [
            ("ListContainerInstances", 0),
            ("DescribeContainerInstances", 1),
            ("DescribeInstances", 3)
        ]
    );
}

#[tokio::test]
async fn a_failed_call_drops_no_host_and_an_early_one_writes_none() {
    // EC2 failing from the start: no hosts list at all, not an empty one.
    let f = two_hosts();
    *f.fail_ec2.lock().unwrap() = true;
    let mut e = Enricher::new(&f, &f, opts());
    let t0 = Instant::now();
    let r = e.enrich(&snapshot(&["t1"]), t0, far()).await;
    assert!(r.hosts.is_none() && r.errors.len() == 1);
    let r = e
        .enrich(&snapshot(&["t1"]), t0 + Duration::from_secs(90), far())
        .await;
    assert!(r.hosts.is_none(), "still none after the task's release");
    assert!(r.held.is_empty() && r.tasks.contains_key("t1"));
    *f.fail_ec2.lock().unwrap() = false;
    let r = e
        .enrich(&snapshot(&["t1"]), t0 + Duration::from_secs(91), far())
        .await;
    assert_eq!(ids(&r.hosts), ["i-a", "i-b"]);

    // A host leaves the cluster while EC2 fails: kept until a clean pass.
    let f = two_hosts();
    let mut e = Enricher::new(&f, &f, opts());
    let r = e.enrich(&snapshot(&["t1"]), t0, far()).await;
    assert_eq!(ids(&r.hosts), ["i-a", "i-b"]);
    f.listed.lock().unwrap().pop();
    *f.fail_ec2.lock().unwrap() = true;
    let r = e
        .enrich(&snapshot(&["t1"]), t0 + Duration::from_secs(300), far())
        .await;
    assert_eq!(r.errors.len(), 1);
    assert_eq!(ids(&r.hosts), ["i-a", "i-b"], "kept while a call fails");
    *f.fail_ec2.lock().unwrap() = false;
    let r = e
        .enrich(&snapshot(&["t1"]), t0 + Duration::from_secs(301), far())
        .await;
    assert_eq!(ids(&r.hosts), ["i-a"], "gone after a clean pass");
}

#[tokio::test]
async fn a_host_ec2_does_not_return_is_asked_again_on_the_name_clock_only() {
    let mut f = fake();
    f.cis = vec![("ci-a".into(), "i-gone".into())];
    let mut e = Enricher::new(&f, &f, opts());
    let t0 = Instant::now();
    let r = e.enrich(&snapshot(&["t1"]), t0, far()).await;
    assert!(r.errors.is_empty());
    assert_eq!(r.held, BTreeSet::from(["t1".to_string()]));
    take_calls(&f);
    for s in [10, 30, 59] {
        let r = e
            .enrich(&snapshot(&["t1"]), t0 + Duration::from_secs(s), far())
            .await;
        assert!(r.held.contains("t1"));
    }
    assert!(take_calls(&f).is_empty(), "not asked again every cycle");
    let r = e
        .enrich(&snapshot(&["t1"]), t0 + Duration::from_secs(61), far())
        .await;
    let t1 = &r.tasks["t1"];
    assert_eq!(t1.ec2_instance_id.as_deref(), Some("i-gone"));
    assert!(t1.ec2_name.is_none());
    e.enrich(&snapshot(&["t1"]), t0 + Duration::from_secs(120), far())
        .await;
    assert!(take_calls(&f).is_empty());
    e.enrich(&snapshot(&["t1"]), t0 + Duration::from_secs(300), far())
        .await;
    assert_eq!(
        take_calls(&f),
        [("ListContainerInstances", 0), ("DescribeInstances", 1)]
    );
}

#[tokio::test]
async fn with_no_hold_a_task_whose_host_is_unknown_is_published_at_once() {
    // What `once` does: there is no later cycle to wait for.
    let mut f = fake();
    f.cis = vec![("ci-a".into(), "i-gone".into())];
    let mut e = Enricher::new(
        &f,
        &f,
        EnrichOptions {
            hold: Duration::ZERO,
            ..opts()
        },
    );
    let r = e.enrich(&snapshot(&["t1"]), Instant::now(), far()).await;
    assert!(r.held.is_empty() && r.errors.is_empty());
    assert_eq!(r.tasks["t1"].ec2_instance_id.as_deref(), Some("i-gone"));
    assert_eq!(r.tasks["t1"].launch_type.as_deref(), Some("EC2"));
}

#[tokio::test]
async fn without_ec2_a_task_gets_its_ecs_facts_only() {
    let f = fake();
    let mut e = Enricher::new(
        &f,
        &f,
        EnrichOptions {
            ec2: false,
            want_hosts: false,
            ..opts()
        },
    );
    let r = e
        .enrich(&snapshot(&["t1", "t2"]), Instant::now(), far())
        .await;
    assert!(r.held.is_empty() && r.errors.is_empty());
    assert_eq!(r.tasks["t1"].launch_type.as_deref(), Some("EC2"));
    assert_eq!(r.tasks["t1"].revision.as_deref(), Some("3"));
    assert!(r.tasks["t1"].ec2_instance_id.is_none() && r.tasks["t1"].ec2_name.is_none());
    assert_eq!(take_calls(&f), [("DescribeTasks", 2)]);
}
