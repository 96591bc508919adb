//! Discovery cycles against the hand-written Cloud Map.

use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::aws::fakes::FakeCloudMap;
use crate::model::{HealthStatus, Shard, ShardKey};

/// A deadline no unit test reaches.
fn far() -> Instant {
    Instant::now() + Duration::from_secs(3600)
}

fn opts(namespaces: &[&str]) -> DiscoveryOptions {
    DiscoveryOptions {
        namespaces: namespaces.iter().map(|s| s.to_string()).collect(),
        health: HealthStatus::HealthyOrElseAll,
        tags_refresh: Duration::from_secs(300),
        full_refresh: Duration::from_secs(600),
        services_refresh: Duration::from_secs(60),
        concurrency: 4,
        listing_pages: 1,
        shard: None,
        ecs_service_tags: false,
    }
}

fn ips(c: &Cycle) -> Vec<String> {
    let mut v: Vec<String> = c
        .snapshot
        .services
        .iter()
        .flat_map(|s| {
            s.instances
                .iter()
                .map(|i| i.attributes.get("AWS_INSTANCE_IPV4").unwrap().to_string())
        })
        .collect();
    v.sort();
    v
}

fn topology() -> FakeCloudMap {
    let f = FakeCloudMap::default();
    f.add_service("apps", "web", &[("METRICS_PATH", "/metrics")]);
    f.add_service("apps", "plain", &[("team", "x")]);
    f.add_service("other", "api", &[("METRICS_PATH", "/m")]);
    f.register("web", "t1", "10.0.0.1");
    f.register("web", "t2", "10.0.0.2");
    f.register("api", "t3", "10.0.1.1");
    f
}

#[tokio::test]
async fn cold_then_steady_cycle_costs() {
    let mut d = Discovery::new(topology(), opts(&[]));
    let t0 = Instant::now();
    let c = d.cycle(t0, far()).await.unwrap();
    assert!(c.complete);
    assert_eq!(ips(&c), vec!["10.0.0.1", "10.0.0.2", "10.0.1.1"]);
    assert_eq!(c.stats.services, 3);
    assert_eq!(c.stats.tagged, 2);
    let cold = d.client().take_calls();
    assert_eq!(
        cold,
        vec![
            "DiscoverInstances",
            "DiscoverInstances",
            "DiscoverInstancesRevision",
            "DiscoverInstancesRevision",
            "GetService",
            "GetService",
            "GetService",
            "ListNamespaces",
            "ListServices",
            "ListServices",
            "ListTagsForResource",
            "ListTagsForResource",
            "ListTagsForResource",
        ],
        "the first listing reads every page"
    );

    let c2 = d.cycle(t0 + Duration::from_secs(30), far()).await.unwrap();
    assert!(c2.complete);
    assert_eq!(c2.snapshot, c.snapshot);
    assert_eq!(
        d.client().take_calls(),
        vec!["DiscoverInstancesRevision", "DiscoverInstancesRevision"],
        "steady state: one revision call per tagged service"
    );
    // The service listing on its own clock, one page per cycle: its first page
    // at t0+60, the second at t0+90.
    for t in [60, 90] {
        let cn = d.cycle(t0 + Duration::from_secs(t), far()).await.unwrap();
        assert_eq!(cn.snapshot, c.snapshot);
        assert_eq!(
            d.client().take_calls(),
            vec![
                "DiscoverInstancesRevision",
                "DiscoverInstancesRevision",
                "ListServices"
            ],
            "a listing page at t0+{t}"
        );
    }
    for t in (120..300).step_by(30) {
        d.cycle(t0 + Duration::from_secs(t), far()).await.unwrap();
        assert_eq!(
            d.client().take_calls().len(),
            3,
            "one listing call at t0+{t}"
        );
    }
    // On the tags clock the namespace re-read takes the listing call of its
    // cycle; the pages follow.
    d.cycle(t0 + Duration::from_secs(300), far()).await.unwrap();
    let calls = d.client().take_calls();
    assert!(calls.contains(&"ListNamespaces"), "{calls:?}");
    assert!(!calls.contains(&"ListServices"), "{calls:?}");
}

/// A discovery past its cold cycle, and a new tagged service (on the listing's
/// second page) with one task at 10.0.0.9 registered since.
async fn after_cold_cycle_a_service_appears(
    o: DiscoveryOptions,
) -> (Discovery<FakeCloudMap>, Instant) {
    let mut d = Discovery::new(topology(), o);
    let t0 = Instant::now();
    d.cycle(t0, far()).await.unwrap();
    d.client()
        .add_service("apps", "new", &[("METRICS_PATH", "/m")]);
    d.client().register("new", "t9", "10.0.0.9");
    (d, t0)
}

#[tokio::test]
async fn more_listing_pages_per_cycle_finish_a_listing_sooner() {
    let o = DiscoveryOptions {
        listing_pages: 2,
        ..opts(&[])
    };
    let (mut d, t0) = after_cold_cycle_a_service_appears(o).await;
    d.client().take_calls();
    let c = d.cycle(t0 + Duration::from_secs(60), far()).await.unwrap();
    assert!(ips(&c).contains(&"10.0.0.9".to_string()));
    let listed = d.client().take_calls();
    assert_eq!(
        listed.iter().filter(|c| **c == "ListServices").count(),
        2,
        "{listed:?}"
    );
}

#[tokio::test]
async fn a_throttled_listing_page_is_read_again_next_cycle() {
    let (mut d, t0) = after_cold_cycle_a_service_appears(opts(&[])).await;
    d.cycle(t0 + Duration::from_secs(60), far()).await.unwrap();
    d.client()
        .state
        .lock()
        .unwrap()
        .failing
        .insert("ListServices");
    let c = d.cycle(t0 + Duration::from_secs(90), far()).await.unwrap();
    assert!(c.listing_error.is_some());
    assert!(!c.complete);
    assert!(!ips(&c).is_empty(), "known services keep their targets");
    d.client().state.lock().unwrap().failing.clear();
    let c = d.cycle(t0 + Duration::from_secs(120), far()).await.unwrap();
    assert!(c.complete);
    assert!(
        ips(&c).contains(&"10.0.0.9".to_string()),
        "resumed at page two"
    );
}

#[tokio::test]
async fn a_new_service_is_found_at_the_next_listing() {
    let (mut d, t0) = after_cold_cycle_a_service_appears(opts(&[])).await;
    let c = d.cycle(t0 + Duration::from_secs(30), far()).await.unwrap();
    assert!(!ips(&c).contains(&"10.0.0.9".to_string()));
    // Four services, two pages: the listing started at t0+60 ends at t0+90.
    let c = d.cycle(t0 + Duration::from_secs(60), far()).await.unwrap();
    assert!(!ips(&c).contains(&"10.0.0.9".to_string()));
    let c = d.cycle(t0 + Duration::from_secs(90), far()).await.unwrap();
    assert!(ips(&c).contains(&"10.0.0.9".to_string()));
}

#[tokio::test]
async fn a_stalled_call_ends_at_the_deadline_and_keeps_last_known_data() {
    let mut d = Discovery::new(topology(), opts(&[]));
    let t0 = Instant::now();
    let first = d.cycle(t0, far()).await.unwrap();
    d.client()
        .state
        .lock()
        .unwrap()
        .stalling_services
        .insert("web".into());
    d.client().register("api", "t5", "10.0.1.5");
    let started = Instant::now();
    let c = d
        .cycle(started, started + Duration::from_millis(200))
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "cycle took {took:?}");
    assert!(c.deadline_exceeded && !c.complete);
    assert_eq!(c.failures.len(), 1);
    assert_eq!(c.failures[0].service, "web");
    assert!(c.failures[0].kept && c.failures[0].error.is_deadline());
    // web kept as it was; api (not stalled) moved on.
    let mut want = ips(&first);
    want.push("10.0.1.5".into());
    want.sort();
    assert_eq!(ips(&c), want);
}

fn many(services: usize) -> FakeCloudMap {
    let f = FakeCloudMap::default();
    for i in 0..services {
        let name = format!("s{i}");
        f.add_service("apps", &name, &[("METRICS_PATH", "/m")]);
        for j in 0..4 {
            f.register(&name, &format!("{name}-t{j}"), &format!("10.{i}.0.{j}"));
        }
    }
    f
}

#[tokio::test]
async fn service_shards_split_services_and_skip_other_shards_calls() {
    let count = 3;
    let mut seen = BTreeMap::new();
    for index in 0..count {
        let mut o = opts(&[]);
        o.shard = Some((Shard { index, count }, ShardKey::Service));
        let mut d = Discovery::new(many(30), o);
        let c = d.cycle(Instant::now(), far()).await.unwrap();
        let calls = d.client().take_calls();
        let tags = calls
            .iter()
            .filter(|c| **c == "ListTagsForResource")
            .count();
        assert_eq!(
            tags,
            c.snapshot.services.len(),
            "no calls for other shards' services"
        );
        assert_eq!(c.shard_excluded, 30 - c.snapshot.services.len());
        for s in &c.snapshot.services {
            assert_eq!(s.instances.len(), 4, "a service's targets stay together");
            assert!(
                seen.insert(s.service.clone(), index).is_none(),
                "{} twice",
                s.service
            );
        }
    }
    assert_eq!(seen.len(), 30, "every service in exactly one shard");
}

#[tokio::test]
async fn task_shards_split_instances() {
    let count = 2;
    let mut seen = BTreeSet::new();
    for index in 0..count {
        let mut o = opts(&[]);
        o.shard = Some((Shard { index, count }, ShardKey::Task));
        let mut d = Discovery::new(many(10), o);
        let c = d.cycle(Instant::now(), far()).await.unwrap();
        for i in c.snapshot.services.iter().flat_map(|s| s.instances.iter()) {
            assert!(seen.insert(i.id.clone()), "{} twice", i.id);
        }
        assert_eq!(c.shard_excluded + c.stats.instances, 40);
    }
    assert_eq!(seen.len(), 40, "every instance in exactly one shard");
}

#[tokio::test]
async fn a_changed_revision_reads_only_that_service() {
    let mut d = Discovery::new(topology(), opts(&[]));
    let t0 = Instant::now();
    d.cycle(t0, far()).await.unwrap();
    d.client().take_calls();
    d.client().register("web", "t4", "10.0.0.4");
    let c = d.cycle(t0 + Duration::from_secs(30), far()).await.unwrap();
    assert_eq!(
        ips(&c),
        vec!["10.0.0.1", "10.0.0.2", "10.0.0.4", "10.0.1.1"]
    );
    let calls = d.client().take_calls();
    assert_eq!(
        calls.iter().filter(|c| **c == "DiscoverInstances").count(),
        1
    );
}

#[tokio::test]
async fn tags_and_full_reads_happen_on_their_clocks() {
    let mut d = Discovery::new(topology(), opts(&[]));
    let t0 = Instant::now();
    d.cycle(t0, far()).await.unwrap();
    d.client().take_calls();
    let c = d.cycle(t0 + Duration::from_secs(300), far()).await.unwrap();
    assert_eq!(c.stats.tag_reads, 3);
    assert_eq!(c.stats.instance_reads, 0);
    let calls = d.client().take_calls();
    assert!(calls.contains(&"ListNamespaces"));
    let c = d.cycle(t0 + Duration::from_secs(600), far()).await.unwrap();
    assert_eq!(c.stats.instance_reads, 2);
}

#[tokio::test]
async fn namespace_selection() {
    let mut d = Discovery::new(topology(), opts(&["other", "nope"]));
    let c = d.cycle(Instant::now(), far()).await.unwrap();
    assert_eq!(ips(&c), vec!["10.0.1.1"]);
    assert_eq!(c.stats.services, 1);
}

#[tokio::test]
async fn failures_keep_last_known_data_and_report_age() {
    let mut d = Discovery::new(topology(), opts(&[]));
    let t0 = Instant::now();
    let first = d.cycle(t0, far()).await.unwrap();
    d.client()
        .state
        .lock()
        .unwrap()
        .failing_services
        .insert("web".into());
    d.client().register("api", "t5", "10.0.1.5");
    let c = d.cycle(t0 + Duration::from_secs(30), far()).await.unwrap();
    assert!(!c.complete);
    assert_eq!(c.failures.len(), 1);
    assert!(c.failures[0].kept);
    assert_eq!(
        ips(&c),
        vec!["10.0.0.1", "10.0.0.2", "10.0.1.1", "10.0.1.5"]
    );
    let web_age = c.ages.iter().find(|a| a.service == "web").unwrap();
    assert_eq!(web_age.age, Duration::from_secs(30));
    assert!(first.ages.iter().all(|a| a.age.is_zero()));

    // Listing and everything else failing: known services kept.
    d.client()
        .state
        .lock()
        .unwrap()
        .failing
        .extend(["ListServices", "DiscoverInstancesRevision"]);
    let c = d.cycle(t0 + Duration::from_secs(60), far()).await.unwrap();
    assert!(c.listing_error.is_some());
    assert_eq!(
        ips(&c),
        vec!["10.0.0.1", "10.0.0.2", "10.0.1.1", "10.0.1.5"]
    );

    // Recovery: changes flow within one cycle.
    {
        let mut s = d.client().state.lock().unwrap();
        s.failing.clear();
        s.failing_services.clear();
    }
    d.client().register("web", "t6", "10.0.0.6");
    let c = d.cycle(t0 + Duration::from_secs(90), far()).await.unwrap();
    assert!(c.complete);
    assert!(ips(&c).contains(&"10.0.0.6".to_string()));
}

#[tokio::test]
async fn first_listing_failure_is_an_error() {
    let f = topology();
    f.state.lock().unwrap().failing.insert("ListServices");
    let mut d = Discovery::new(f, opts(&[]));
    assert!(d.cycle(Instant::now(), far()).await.is_err());
}

#[tokio::test]
async fn new_service_failing_is_not_kept_and_cycle_incomplete() {
    let f = topology();
    f.state
        .lock()
        .unwrap()
        .failing_services
        .insert("api".into());
    let mut d = Discovery::new(f, opts(&[]));
    let c = d.cycle(Instant::now(), far()).await.unwrap();
    assert!(!c.complete);
    assert!(!c.failures[0].kept);
    assert_eq!(ips(&c), vec!["10.0.0.1", "10.0.0.2"]);
}

#[tokio::test]
async fn removed_services_disappear_after_a_good_listing() {
    let mut d = Discovery::new(topology(), opts(&[]));
    let t0 = Instant::now();
    d.cycle(t0, far()).await.unwrap();
    d.client()
        .state
        .lock()
        .unwrap()
        .services
        .retain(|s| s.0.name != "api");
    d.client().state.lock().unwrap().instances.remove("api");
    // Between listings: the revision call answers ServiceNotFound.
    let c = d.cycle(t0 + Duration::from_secs(30), far()).await.unwrap();
    assert!(c.complete);
    assert_eq!(ips(&c), vec!["10.0.0.1", "10.0.0.2"]);
    let c = d.cycle(t0 + Duration::from_secs(60), far()).await.unwrap();
    assert_eq!(ips(&c), vec!["10.0.0.1", "10.0.0.2"]);
}

// ---------------------------------------------------------------------------------
// ECS service tags

use crate::aws::fakes::FakeEcs;

fn ecs_opts() -> DiscoveryOptions {
    DiscoveryOptions {
        ecs_service_tags: true,
        ..opts(&[])
    }
}

/// `sc`: a Service Connect service (no endpoint tag) of ECS service prod/api;
/// `plain`: untagged, of ECS service prod/worker (no endpoint tags either); `web`:
/// tagged in Cloud Map, its instances of ECS service prod/web.
fn service_connect() -> (FakeCloudMap, FakeEcs) {
    let f = FakeCloudMap::default();
    f.add_service("apps", "sc", &[("AmazonECSManaged", "true")]);
    f.add_service("apps", "plain", &[]);
    f.add_service("apps", "web", &[("METRICS_PATH", "/cm")]);
    f.register_task("sc", "t1", "10.0.0.1", "prod", "api");
    f.register_task("sc", "t2", "10.0.0.2", "prod", "api");
    f.register_task("plain", "t3", "10.0.0.3", "prod", "worker");
    f.register_task("web", "t4", "10.0.0.4", "prod", "web");
    let e = FakeEcs::default();
    e.tag_service(
        "prod",
        "api",
        &[("METRICS_PATH", "/ecs"), ("METRICS_PORT", "9100")],
    );
    e.tag_service("prod", "worker", &[("team", "x")]);
    e.tag_service("prod", "web", &[("METRICS_PATH", "/ecs")]);
    (f, e)
}

fn ecs_calls(e: &FakeEcs) -> Vec<(&'static str, usize)> {
    std::mem::take(&mut *e.calls.lock().unwrap())
}

/// (service, path tag the endpoints come from, instance ids) of a snapshot.
fn described(c: &Cycle) -> Vec<(String, String, Vec<String>)> {
    c.snapshot
        .services
        .iter()
        .map(|s| {
            (
                s.service.clone(),
                s.endpoint_tags()["METRICS_PATH"].clone(),
                s.instances.iter().map(|i| i.id.clone()).collect(),
            )
        })
        .collect()
}

#[tokio::test]
async fn an_untagged_service_takes_its_ecs_services_tags_and_steady_cycles_make_no_ecs_call() {
    let (f, e) = service_connect();
    let mut d = Discovery::with_ecs_services(f, Some(&e), ecs_opts());
    let t0 = Instant::now();
    let c = d.cycle(t0, far()).await.unwrap();
    assert!(c.complete);
    assert_eq!(
        described(&c),
        vec![
            ("sc".into(), "/ecs".into(), vec!["t1".into(), "t2".into()]),
            ("web".into(), "/cm".into(), vec!["t4".into()]),
        ],
        "the Cloud Map tag wins for web; plain's ECS service asks for nothing"
    );
    let sc = &c.snapshot.services[0];
    let ecs = sc.ecs_service.as_ref().unwrap();
    assert_eq!((ecs.cluster.as_str(), ecs.name.as_str()), ("prod", "api"));
    assert_eq!(sc.tags["AmazonECSManaged"], "true", "its own tags stay");
    assert_eq!(c.stats.tagged, 2);
    // One call for both ECS services of the cluster; web is described by its own
    // tags, so its ECS service is not asked for.
    assert_eq!(ecs_calls(&e), vec![("DescribeServices", 2)]);
    let cold = d.client().take_calls();
    let count = |op| cold.iter().filter(|c| **c == op).count();
    assert_eq!(count("DiscoverInstances"), 3, "{cold:?}");
    assert_eq!(count("DiscoverInstancesRevision"), 3, "{cold:?}");

    // Steady: a revision call per scraped service; plain costs nothing, no ECS call.
    let c2 = d.cycle(t0 + Duration::from_secs(30), far()).await.unwrap();
    assert_eq!(c2.snapshot, c.snapshot);
    assert_eq!(
        d.client().take_calls(),
        vec!["DiscoverInstancesRevision", "DiscoverInstancesRevision"]
    );
    assert!(ecs_calls(&e).is_empty());

    // The tags clock: Cloud Map tags, plain's revision, the ECS tags again. The
    // ECS tags are gone: sc drops out.
    e.tag_service("prod", "api", &[]);
    let c3 = d.cycle(t0 + Duration::from_secs(300), far()).await.unwrap();
    assert!(c3.complete);
    assert_eq!(
        described(&c3),
        vec![("web".into(), "/cm".into(), vec!["t4".into()])]
    );
    assert_eq!(ecs_calls(&e), vec![("DescribeServices", 2)]);
    let calls = d.client().take_calls();
    let count = |op| calls.iter().filter(|c| **c == op).count();
    assert_eq!(count("ListTagsForResource"), 3, "{calls:?}");
    assert_eq!(count("DiscoverInstancesRevision"), 3, "{calls:?}");
    assert_eq!(
        count("DiscoverInstances"),
        0,
        "no revision moved: {calls:?}"
    );

    // Between tags refreshes a service no ECS tag asks for costs nothing (the
    // service listing runs on its own clock).
    d.cycle(t0 + Duration::from_secs(330), far()).await.unwrap();
    let mut calls = d.client().take_calls();
    calls.retain(|c| *c != "ListServices");
    assert_eq!(calls, vec!["DiscoverInstancesRevision"]);
    assert!(ecs_calls(&e).is_empty());
}

#[tokio::test]
async fn a_cloud_map_endpoint_tag_of_any_kind_keeps_the_ecs_tags_out() {
    let (f, e) = service_connect();
    // A port tag alone is an endpoint tag: the service is described by its Cloud
    // Map tags, which ask for nothing.
    f.retag("sc", &[("METRICS_PORT", "8080")]);
    let mut d = Discovery::with_ecs_services(f, Some(&e), ecs_opts());
    let c = d.cycle(Instant::now(), far()).await.unwrap();
    assert_eq!(
        described(&c),
        vec![("web".into(), "/cm".into(), vec!["t4".into()])]
    );
    assert_eq!(ecs_calls(&e), vec![("DescribeServices", 1)], "only worker");
}

#[tokio::test]
async fn without_ecs_service_tags_an_untagged_service_costs_no_instance_call() {
    let (f, e) = service_connect();
    let o = DiscoveryOptions {
        ecs_service_tags: false,
        ..opts(&[])
    };
    let mut d = Discovery::with_ecs_services(f, Some(&e), o);
    let c = d.cycle(Instant::now(), far()).await.unwrap();
    assert_eq!(
        described(&c),
        vec![("web".into(), "/cm".into(), vec!["t4".into()])]
    );
    let cold = d.client().take_calls();
    assert_eq!(
        cold.iter().filter(|c| **c == "DiscoverInstances").count(),
        1,
        "{cold:?}"
    );
    assert!(ecs_calls(&e).is_empty());
}

#[tokio::test]
async fn describe_services_failing_keeps_known_tags_and_fails_new_services() {
    let (f, e) = service_connect();
    *e.fail_services.lock().unwrap() = true;
    let mut d = Discovery::with_ecs_services(f, Some(&e), ecs_opts());
    let t0 = Instant::now();
    let c = d.cycle(t0, far()).await.unwrap();
    assert!(!c.complete);
    let failed: Vec<(&str, bool)> = c
        .failures
        .iter()
        .map(|f| (f.service.as_str(), f.kept))
        .collect();
    assert_eq!(failed, vec![("plain", false), ("sc", false)]);
    assert_eq!(
        described(&c),
        vec![("web".into(), "/cm".into(), vec!["t4".into()])]
    );
    // It answers: sc is published; it fails again at the tags refresh: sc keeps
    // its tags, and the failure says so.
    *e.fail_services.lock().unwrap() = false;
    let c = d.cycle(t0 + Duration::from_secs(30), far()).await.unwrap();
    assert!(c.complete);
    assert_eq!(c.snapshot.services.len(), 2);
    *e.fail_services.lock().unwrap() = true;
    let c = d.cycle(t0 + Duration::from_secs(330), far()).await.unwrap();
    assert!(!c.complete);
    assert!(c.failures.iter().all(|f| f.kept), "{:?}", c.failures);
    assert_eq!(c.snapshot.services.len(), 2);
}

#[tokio::test]
async fn ecs_services_are_described_ten_to_a_call_per_cluster() {
    let f = FakeCloudMap::default();
    let e = FakeEcs::default();
    for i in 0..12 {
        let name = format!("sc{i:02}");
        f.add_service("apps", &name, &[]);
        f.register_task(&name, &format!("t{i}"), "10.0.0.1", "prod", &name);
        e.tag_service("prod", &name, &[("METRICS_PATH", "/m")]);
    }
    f.add_service("apps", "edge", &[]);
    f.register_task("edge", "e1", "10.0.1.1", "edge", "edge");
    e.tag_service("edge", "edge", &[("METRICS_PATH", "/m")]);
    let mut d = Discovery::with_ecs_services(f, Some(&e), ecs_opts());
    let c = d.cycle(Instant::now(), far()).await.unwrap();
    assert_eq!(c.snapshot.services.len(), 13);
    let mut calls = ecs_calls(&e);
    calls.sort();
    assert_eq!(
        calls,
        vec![
            ("DescribeServices", 1),
            ("DescribeServices", 2),
            ("DescribeServices", 10)
        ]
    );
}

#[tokio::test]
async fn instances_of_two_ecs_services_each_take_their_own_services_tags() {
    let f = FakeCloudMap::default();
    f.add_service("apps", "shared", &[]);
    f.register_task("shared", "a1", "10.0.0.1", "blue", "api");
    f.register_task("shared", "b1", "10.0.0.2", "green", "api");
    f.register_task("shared", "b2", "10.0.0.3", "green", "api");
    f.register("shared", "by-hand", "10.0.0.4");
    let e = FakeEcs::default();
    e.tag_service("blue", "api", &[("METRICS_PATH", "/blue")]);
    e.tag_service("green", "api", &[("METRICS_PATH", "/green")]);
    let mut d = Discovery::with_ecs_services(f, Some(&e), ecs_opts());
    let c = d.cycle(Instant::now(), far()).await.unwrap();
    assert_eq!(
        described(&c),
        vec![
            ("shared".into(), "/blue".into(), vec!["a1".into()]),
            (
                "shared".into(),
                "/green".into(),
                vec!["b1".into(), "b2".into()]
            ),
        ],
        "an instance no ECS service registered is not described by any"
    );
    // An unchanged cycle gives the same snapshot, the same allocations.
    let c2 = d
        .cycle(Instant::now() + Duration::from_secs(30), far())
        .await
        .unwrap();
    assert_eq!(c2.snapshot, c.snapshot);
    for (a, b) in c.snapshot.services.iter().zip(&c2.snapshot.services) {
        assert!(Arc::ptr_eq(&a.instances, &b.instances));
    }
}
