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
