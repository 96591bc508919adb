//! ECS service tags against moto server: a Cloud Map service with no tags of its
//! own (as ECS Service Connect creates them) is scraped by its ECS service's
//! `METRICS_*` tags, by a real Prometheus; removing those tags drops it at the next
//! tags refresh; a Cloud Map endpoint tag wins; and the cost of each cycle, counted
//! on the wire (the proxy refuses a DescribeServices of more than 10 services, as
//! AWS does).

use std::collections::BTreeMap;
use std::time::Duration;

use cloudmap_sd_test_support::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(60);

/// moto, the proxy in front of it, and a seeder going through the proxy.
async fn stack() -> (Moto, Proxy, Seeder) {
    let moto = Moto::start();
    let proxy = Proxy::start(&moto.url).await;
    let s = Seeder::new(&proxy.url).await;
    s.cluster("prod").await;
    s.task_definition().await;
    (moto, proxy, s)
}

/// Prometheus's active targets: (address, health).
async fn active_targets(url: &str) -> Option<Vec<(String, String)>> {
    let (status, body) = http_get(&format!("{url}/api/v1/targets")).await?;
    if status != 200 {
        return None;
    }
    let v: Value = serde_json::from_str(&body).ok()?;
    let mut out: Vec<(String, String)> = v["data"]["activeTargets"]
        .as_array()?
        .iter()
        .map(|t| {
            (
                t["discoveredLabels"]["__address__"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                t["health"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    out.sort();
    Some(out)
}

/// The Service Connect set-up: the Cloud Map service `api` carries only the tag
/// ECS gives it, its instance names ECS service prod/api, and that ECS service is
/// tagged to be scraped on the port of a real Prometheus (which then scrapes
/// itself through it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_connect_service_is_scraped_by_its_ecs_service_tags_until_they_go() {
    let (_moto, proxy, s) = stack().await;
    let prometheus_port = free_port();
    let port = prometheus_port.to_string();
    let api_arn = s
        .ecs_service(
            "prod",
            "api",
            "web",
            &[("METRICS_PATH", "/metrics"), ("METRICS_PORT", &port)],
        )
        .await;
    let ns = s.http_namespace("apps").await;
    let api = s.service(&ns, "api", &[("AmazonECSManaged", "true")]).await;
    s.ecs_service_task(&api, ("prod", "api"), "0a0a", "127.0.0.1", Some(8080))
        .await;

    let dir = tempfile::tempdir().unwrap();
    let sd = dir.path().join("sd");
    std::fs::create_dir(&sd).unwrap();
    let sc = Sidecar::start(
        &sd,
        &proxy.url,
        &["--interval", "1s", "--tags-refresh", "3s"],
    );
    sc.wait_ready(T).await;
    let addr = format!("127.0.0.1:{port}");
    let groups = parse_file(&sc.output);
    let l = labels_of(&groups, &addr);
    assert_eq!(l["__metrics_path__"], "/metrics");
    assert_eq!(l["cloudmap_service"], "api");
    assert_eq!(l["ecs_service"], "api");
    assert_eq!(l["__meta_ecs_service_tag_METRICS_PORT"], port);
    assert_eq!(l["__meta_cloudmap_service_tag_AmazonECSManaged"], "true");

    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: ecs\n    file_sd_configs:\n      - files: ['{}/*.json']\n        refresh_interval: 5s\n",
        sd.display()
    );
    let _prometheus = prometheus_on(
        &dir.path().join("prometheus"),
        prometheus_port,
        &config,
        &[],
    );
    let url = format!("http://127.0.0.1:{prometheus_port}");
    wait_for_async(T, "Prometheus to scrape the target with health up", || {
        let url = url.clone();
        let want = vec![(addr.clone(), "up".to_string())];
        async move { (active_targets(&url).await? == want).then_some(()) }
    })
    .await;

    // The ECS tags go: the target goes at the next tags refresh, by that read.
    let asked = proxy.counts().get("DescribeServices").copied().unwrap_or(0);
    s.untag_ecs_service(&api_arn, &["METRICS_PATH", "METRICS_PORT"])
        .await;
    wait_for_async(T, "the target to be dropped", || async {
        sc.targets().is_empty().then_some(())
    })
    .await;
    let now = proxy.counts().get("DescribeServices").copied().unwrap_or(0);
    assert!(now > asked, "dropped by a DescribeServices read");
    wait_for_async(T, "Prometheus to drop the target", || {
        let url = url.clone();
        async move { active_targets(&url).await?.is_empty().then_some(()) }
    })
    .await;
}

/// Each cycle's calls, counted on the wire between two moves of the cycle counter
/// (`--interval` leaves the time between a cycle's end and the next one's start).
async fn per_cycle(sc: &Sidecar, proxy: &Proxy, cycles: usize) -> Vec<BTreeMap<String, u64>> {
    let mut out = Vec::new();
    for _ in 0..cycles {
        let before = proxy.counts();
        sc.wait_cycles(1, T).await;
        out.push(diff(&before, &proxy.counts()));
    }
    out
}

/// 12 Service Connect services, each of its own ECS service (10 tagged to be
/// scraped, 2 not), a Cloud Map-tagged service whose ECS service is tagged too,
/// and an untagged service no ECS task registered in: the cost of a cold cycle, a
/// steady cycle and a tags refresh, on the wire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cost_of_ecs_service_tags_on_the_wire_and_a_cloud_map_tag_wins() {
    let (_moto, proxy, s) = stack().await;
    let ns = s.http_namespace("apps").await;
    for i in 0..12 {
        let name = format!("sc{i:02}");
        let tags: &[(&str, &str)] = if i < 10 {
            &[("METRICS_PATH", "/metrics"), ("METRICS_PORT", "9100")]
        } else {
            &[("team", "x")]
        };
        s.ecs_service("prod", &name, "web", tags).await;
        let id = s.service(&ns, &name, &[("AmazonECSManaged", "true")]).await;
        let ip = format!("10.2.0.{}", i + 1);
        s.ecs_service_task(&id, ("prod", &name), &format!("{i:04x}"), &ip, Some(8080))
            .await;
    }
    s.ecs_service("prod", "both", "web", &[("METRICS_PATH", "/ecs")])
        .await;
    let both = s
        .service(&ns, "both", &[("METRICS_PATH", "/cloudmap")])
        .await;
    s.ecs_service_task(&both, ("prod", "both"), "b0b0", "10.2.1.1", Some(8080))
        .await;
    s.service(&ns, "empty", &[]).await;

    let dir = tempfile::tempdir().unwrap();
    let before = proxy.counts();
    let sc = Sidecar::start(
        dir.path(),
        &proxy.url,
        &["--interval", "2s", "--tags-refresh", "8s"],
    );
    sc.wait_ready(T).await;
    let cold = diff(&before, &proxy.counts());
    let groups = parse_file(&sc.output);
    assert_eq!(groups.len(), 11, "10 by ECS tags, both by its own");
    let l = labels_of(&groups, "10.2.1.1:8080");
    assert_eq!(l["__metrics_path__"], "/cloudmap", "the Cloud Map tag wins");
    assert!(!l.keys().any(|k| k.starts_with("__meta_ecs_service_tag_")));
    assert_eq!(
        labels_of(&groups, "10.2.0.1:9100")["__metrics_path__"],
        "/metrics"
    );

    // Cycles until one past a tags refresh (each service's tags are 8s old by then).
    let mut cycles = per_cycle(&sc, &proxy, 3).await;
    while !cycles.last().unwrap().contains_key("ListTagsForResource") {
        cycles.extend(per_cycle(&sc, &proxy, 1).await);
        assert!(cycles.len() < 20, "no tags refresh: {cycles:#?}");
    }
    let refresh = cycles.pop().unwrap();
    eprintln!("cold cycle: {cold:?} total {}", cold.values().sum::<u64>());
    for c in &cycles {
        eprintln!("steady cycle: {c:?}");
    }
    eprintln!("tags refresh cycle: {refresh:?}");
    let map = |pairs: &[(&str, u64)]| -> BTreeMap<String, u64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    };
    // 14 Cloud Map services: each is listed, located and tagged, and has its
    // instances read (the 13 without an endpoint tag of their own to learn their
    // ECS services); 12 ECS services in 2 calls (10 + 2); one DescribeTasks for
    // the 13 task ids.
    assert_eq!(
        cold,
        map(&[
            ("ListNamespaces", 1),
            ("ListServices", 1),
            ("GetService", 14),
            ("ListTagsForResource", 14),
            ("DiscoverInstancesRevision", 14),
            ("DiscoverInstances", 14),
            ("DescribeServices", 2),
            ("DescribeTasks", 1),
        ])
    );
    for c in &cycles {
        assert_eq!(*c, map(&[("DiscoverInstancesRevision", 11)]), "steady");
    }
    assert_eq!(
        refresh,
        map(&[
            ("ListTagsForResource", 14),
            ("DiscoverInstancesRevision", 14),
            ("DescribeServices", 2),
        ])
    );
}
