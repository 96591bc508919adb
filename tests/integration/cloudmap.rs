//! Discovery against a real moto server over HTTP with the real AWS SDK, through the
//! real `cloudmap-sd` binary.

use std::collections::BTreeMap;
use std::time::Duration;

use cloudmap_sd_test_support::*;

const T: Duration = Duration::from_secs(30);

fn targets_of(json: &[u8]) -> Vec<serde_json::Value> {
    serde_json::from_slice(json).unwrap_or_else(|e| {
        panic!(
            "output is not JSON ({e}): {}",
            String::from_utf8_lossy(json)
        )
    })
}

/// moto with namespace `apps`, service `web` (METRICS_PATH=/m) and one task at
/// 10.0.0.1:80.
async fn one_task() -> Moto {
    let moto = Moto::start();
    let s = Seeder::new(&moto.url).await;
    let ns = s.http_namespace("apps").await;
    let svc = s.service(&ns, "web", &[("METRICS_PATH", "/m")]).await;
    s.task(&svc, "t1", "10.0.0.1", Some(80)).await;
    moto
}

fn once_stdout(url: &str, extra: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec!["once", "--output", "-"];
    args.extend_from_slice(extra);
    let out = run_cli(&args, &aws_env(url));
    assert!(
        out.status.success(),
        "once failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    targets_of(&out.stdout)
}

/// DiscoverInstances has no pagination: AWS answers at most 100 instances unless the
/// request asks for more with `MaxResults` (up to 1000). moto answers every instance
/// when `MaxResults` is absent, so on its own it cannot tell whether the sidecar asks.
/// The proxy restores AWS's default and records what the sidecar sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_than_100_instances_in_one_service() {
    let moto = Moto::start();
    let s = Seeder::new(&moto.url).await;
    let ns = s.http_namespace("big").await;
    let svc = s
        .service(
            &ns,
            "wide",
            &[("METRICS_PATH", "/metrics"), ("METRICS_PORT", "9100")],
        )
        .await;
    for i in 0..150u32 {
        let ip = format!("10.1.{}.{}", i / 200, i % 200 + 1);
        s.task(&svc, &format!("{i:032x}"), &ip, None).await;
    }
    let proxy = Proxy::start(&moto.url).await;
    proxy.record_requests("DiscoverInstances");

    // Why the emulation: without MaxResults moto answers all 150, AWS 100.
    // The product's client: DiscoverInstances needs its `data-` host prefix fix.
    let via_proxy = cloudmap_sd::aws::sdk::servicediscovery_client(&sdk_config(&proxy.url).await);
    let discover = || async {
        via_proxy
            .discover_instances()
            .namespace_name("big")
            .service_name("wide")
            .send()
            .await
            .unwrap()
            .instances()
            .len()
    };
    assert_eq!(discover().await, 150, "moto alone answers every instance");
    proxy.emulate_aws_discover_default(true);
    assert_eq!(
        discover().await,
        AWS_DISCOVER_INSTANCES_DEFAULT_MAX as usize,
        "with the proxy's emulation, AWS's default page"
    );
    let probes = proxy.requests("DiscoverInstances").len();

    let groups = once_stdout(&proxy.url, &[]);
    let asked = &proxy.requests("DiscoverInstances")[probes..];
    assert_eq!(
        asked.len(),
        1,
        "one DiscoverInstances for the service: {asked:?}"
    );
    assert_eq!(asked[0]["ServiceName"], "wide");
    assert_eq!(
        asked[0]["MaxResults"], 1000,
        "the sidecar asks for the API's maximum: {}",
        asked[0]
    );
    assert_eq!(
        groups.len(),
        150,
        "every instance beyond AWS's default of 100"
    );
    assert!(
        groups
            .iter()
            .all(|g| g["labels"]["__metrics_path__"] == "/metrics")
    );
    assert!(
        groups
            .iter()
            .all(|g| g["targets"][0].as_str().unwrap().ends_with(":9100"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_namespaces_selection_and_labels() {
    let moto = Moto::start();
    let s = Seeder::new(&moto.url).await;
    let http = s.http_namespace("apps").await;
    let dns = s.dns_namespace("internal.local").await;
    let web = s
        .service(&http, "web", &[("METRICS_PATH", "/metrics")])
        .await;
    let api = s
        .service(
            &dns,
            "api",
            &[
                ("METRICS_PATH", "/m"),
                ("METRICS_PORT", "9000"),
                ("METRICS_PATH_admin", "/admin"),
                ("METRICS_PORT_admin", "9001"),
            ],
        )
        .await;
    s.task(&web, "aaaa", "10.0.0.1", Some(8080)).await;
    s.task(&api, "bbbb", "10.0.1.1", None).await;

    let all = once_stdout(&moto.url, &[]);
    let got: Vec<(String, String, String)> = all
        .iter()
        .map(|g| {
            (
                g["targets"][0].as_str().unwrap().to_string(),
                g["labels"]["cloudmap_namespace"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                g["labels"]["metrics_endpoint"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("10.0.0.1:8080".into(), "apps".into(), "".into()),
            ("10.0.1.1:9000".into(), "internal.local".into(), "".into()),
            (
                "10.0.1.1:9001".into(),
                "internal.local".into(),
                "admin".into()
            ),
        ]
    );
    let web_labels = &all[0]["labels"];
    for (k, v) in [
        ("cloudmap_service", "web"),
        ("ecs_cluster", "prod"),
        ("ecs_service", "svc"),
        ("ecs_task_family", "family"),
        ("ecs_task_id", "aaaa"),
        ("availability_zone", "us-east-1a"),
    ] {
        assert_eq!(web_labels[k], v, "label {k}");
    }
    assert!(web_labels.get("cluster").is_none());

    let only = once_stdout(&moto.url, &["--namespace", "internal.local"]);
    assert_eq!(only.len(), 2);
    assert!(
        only.iter()
            .all(|g| g["labels"]["cloudmap_namespace"] == "internal.local")
    );

    let reloader = once_stdout(
        &moto.url,
        &["--namespace", "apps", "--label-style", "reloader"],
    );
    let l = reloader[0]["labels"].as_object().unwrap();
    let keys: Vec<&str> = l.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        vec![
            "__metrics_path__",
            "cluster",
            "instance",
            "namespace",
            "service",
            "taskdefinition",
            "taskid"
        ]
    );
    assert_eq!(l["instance"], "10.0.0.1");

    // --meta-labels: which __meta_* families the binary writes; the rest is the same.
    let meta_of = |choice: &str| {
        let groups = once_stdout(&moto.url, &["--namespace", "apps", "--meta-labels", choice]);
        let l = groups[0]["labels"].as_object().unwrap().clone();
        let (meta, plain): (Vec<_>, Vec<_>) =
            l.into_iter().partition(|(k, _)| k.starts_with("__meta_"));
        let families: Vec<&str> = [
            "__meta_cloudmap_instance_attribute_",
            "__meta_cloudmap_service_tag_",
        ]
        .into_iter()
        .filter(|f| meta.iter().any(|(k, _)| k.starts_with(f)))
        .collect();
        assert_eq!(!meta.is_empty(), !families.is_empty(), "{meta:?}");
        (families, plain)
    };
    let (all, plain_all) = meta_of("all");
    let (tags, plain_tags) = meta_of("tags");
    let (none, plain_none) = meta_of("none");
    assert_eq!(
        all,
        [
            "__meta_cloudmap_instance_attribute_",
            "__meta_cloudmap_service_tag_"
        ]
    );
    assert_eq!(tags, ["__meta_cloudmap_service_tag_"]);
    assert!(none.is_empty());
    assert_eq!(plain_all, plain_tags);
    assert_eq!(plain_all, plain_none);
    assert!(plain_all.iter().all(|(k, _)| k != "__address__"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untagged_ignored_and_malformed_skipped_with_a_warning() {
    let moto = Moto::start();
    let s = Seeder::new(&moto.url).await;
    let ns = s.http_namespace("apps").await;
    let plain = s.service(&ns, "plain", &[("team", "payments")]).await;
    let bad = s
        .service(
            &ns,
            "broken",
            &[("METRICS_PATH", "/metrics"), ("METRICS_PORT", "http")],
        )
        .await;
    let good = s
        .service(&ns, "good", &[("METRICS_PATH", "/metrics")])
        .await;
    s.task(&plain, "p1", "10.0.0.1", Some(80)).await;
    s.task(&bad, "b1", "10.0.0.2", Some(80)).await;
    s.task(&good, "g1", "10.0.0.3", Some(8080)).await;
    s.task(&good, "g2", "not-an-address", Some(8080)).await;

    let out = run_cli(&["once", "--output", "-"], &aws_env(&moto.url));
    assert!(out.status.success());
    let groups = targets_of(&out.stdout);
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0]["targets"][0], "10.0.0.3:8080");
    let log = String::from_utf8_lossy(&out.stderr);
    let warning = |service: &str| {
        log.lines()
            .find(|l| l.contains("endpoint skipped") && l.contains(service))
            .unwrap_or_else(|| panic!("no skip warning for {service} in: {log}"))
    };
    let tag = warning("service=broken");
    for needle in ["tag=METRICS_PORT", "value=\"http\"", "invalid_port"] {
        assert!(tag.contains(needle), "{needle} missing in: {tag}");
    }
    // A tag's fault has no instance: the field is left out, not empty.
    assert!(!tag.contains("instance="), "{tag}");
    let address = warning("service=good");
    assert!(address.contains("instance=\"g2\""), "{address}");

    // cloudmap_sd_services counts the services in the file: "broken" is tagged but
    // has no target.
    let dir = tempfile::tempdir().unwrap();
    let sc = Sidecar::start(dir.path(), &moto.url, &["--interval", "1s"]);
    sc.wait_ready(Duration::from_secs(60)).await;
    assert_eq!(sc.metric("cloudmap_sd_targets").await, 1.0);
    assert_eq!(sc.metric("cloudmap_sd_services").await, 1.0);
}

/// What docs/labels.md says about `__meta_*` labels and the `invalid_name` skip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meta_labels_empty_values_and_colliding_names() {
    let moto = Moto::start();
    let s = Seeder::new(&moto.url).await;
    let ns = s.http_namespace("apps").await;
    let svc = s
        .service(
            &ns,
            "web",
            &[
                ("METRICS_PATH", "/m"),
                // A named endpoint without a name: skipped, the primary one stays.
                ("METRICS_SCHEME_", "https"),
                ("note", ""),
                ("team.name", "dot"),
                ("team_name", "underscore"),
            ],
        )
        .await;
    s.instance(
        &svc,
        "i1",
        &[
            ("AWS_INSTANCE_IPV4", "10.0.0.1".to_string()),
            ("AWS_INSTANCE_PORT", "80".to_string()),
            ("AVAILABILITY_ZONE", String::new()),
            ("EMPTY", String::new()),
            ("rack_id", "underscore".to_string()),
            ("rack~id", "tilde".to_string()),
        ],
    )
    .await;

    let out = run_cli(&["once", "--output", "-"], &aws_env(&moto.url));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    let groups = targets_of(&out.stdout);
    assert_eq!(groups.len(), 1, "{groups:?}");
    let l = groups[0]["labels"].as_object().unwrap();
    // Empty values: written for the __meta_* labels, left out for the named ones.
    assert_eq!(l["__meta_cloudmap_service_tag_note"], "");
    assert_eq!(l["__meta_cloudmap_instance_attribute_EMPTY"], "");
    assert_eq!(
        l["__meta_cloudmap_instance_attribute_AVAILABILITY_ZONE"],
        ""
    );
    assert!(l.get("availability_zone").is_none(), "{l:?}");
    // Keys that sanitise to one name: the key that sorts last (bytewise) wins.
    assert_eq!(l["__meta_cloudmap_service_tag_team_name"], "underscore");
    assert_eq!(l["__meta_cloudmap_instance_attribute_rack_id"], "tilde");
    assert_eq!(l["__meta_cloudmap_service_tag_METRICS_SCHEME_"], "https");
    assert!(l.get("__scheme__").is_none(), "{l:?}");

    let warning = log
        .lines()
        .find(|l| l.contains("endpoint skipped"))
        .unwrap_or_else(|| panic!("no skip warning in: {log}"));
    for needle in ["service=web", "tag=METRICS_SCHEME_", "invalid_name"] {
        assert!(warning.contains(needle), "{needle} missing in: {warning}");
    }
}

/// The cold cycle's cost as docs/configuration.md counts it, with a namespace
/// selection: the listing and GetService cover every service in the Region, the
/// tag reads only the selected namespaces' services, the instance reads their
/// tagged ones and (with ECS service tags, the default) the untagged ones once, to
/// learn the ECS services of their instances.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_cycle_cost_with_a_namespace_selection() {
    let moto = Moto::start();
    let s = Seeder::new(&moto.url).await;
    let apps = s.http_namespace("apps").await;
    let jobs = s.http_namespace("jobs").await;
    let tagged = [("METRICS_PATH", "/metrics")];
    let web = s.service(&apps, "web", &tagged).await;
    let worker = s.service(&apps, "worker", &tagged).await;
    s.service(&apps, "plain", &[]).await;
    let batch = s.service(&jobs, "batch", &tagged).await;
    s.service(&jobs, "other", &[]).await;
    s.task(&web, "w1", "10.0.0.1", Some(80)).await;
    s.task(&worker, "k1", "10.0.0.2", Some(80)).await;
    s.task(&batch, "b1", "10.0.1.1", Some(80)).await;
    let proxy = Proxy::start(&moto.url).await;

    let groups = once_stdout(
        &proxy.url,
        &["--namespace", "apps", "--ecs-enrichment", "false"],
    );
    assert_eq!(groups.len(), 2);
    // S = 5 services in the Region, N = 3 in `apps`, T = 2 of them tagged, U = 1
    // without endpoint tags (`plain`: it has no instance, so no ECS service to
    // describe).
    let want: BTreeMap<String, u64> = [
        ("ListNamespaces", 1),
        ("ListServices", 1),
        ("GetService", 5),
        ("ListTagsForResource", 3),
        ("DiscoverInstancesRevision", 3),
        ("DiscoverInstances", 3),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(proxy.counts(), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_writes_nothing_when_aws_fails() {
    let moto = one_task().await;
    let proxy = Proxy::start(&moto.url).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.json");
    std::fs::write(&path, b"[{\"targets\":[\"old:1\"],\"labels\":{}}]").unwrap();

    proxy.set_fault(Fault::ServerError);
    let out = run_cli(
        &[
            "once",
            "--output",
            path.to_str().unwrap(),
            "--api-timeout",
            "3s",
        ],
        &aws_env(&proxy.url),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nothing written"), "{err}");
    assert_eq!(read_targets(&path), vec!["old:1"], "file untouched");

    // AWS back: the same command writes the file.
    proxy.set_fault(Fault::Pass);
    let out = run_cli(
        &["once", "--output", path.to_str().unwrap()],
        &aws_env(&proxy.url),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(read_targets(&path), vec!["10.0.0.1:80"]);
    let names = names_in(dir.path());
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
}

#[test]
fn bad_configuration_exits_64_before_any_aws_call() {
    let cases: [(&[&str], &str); 4] = [
        (&["--interval", "soon"], "--interval"),
        (&["run", "--output", "-"], "only with `once`"),
        (&["--health-status", "MAYBE"], "--health-status"),
        (&["--listen", "localhost"], "--listen"),
    ];
    // An endpoint nobody listens on: any AWS call would hang or fail differently.
    let env = aws_env("http://127.0.0.1:9");
    for (args, needle) in cases {
        let out = run_cli(args, &env);
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let no_region: Vec<_> = env
        .into_iter()
        .filter(|(k, _)| *k != "AWS_REGION")
        .collect();
    let out = run_cli(&["once"], &no_region);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("AWS_REGION"));
    let help = run_cli(&["--help"], &[]);
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--namespace",
        "CLOUDMAP_SD_INTERVAL",
        "--label-style",
        "once",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
}

/// Cold and steady cycle costs, counted at the HTTP level by the proxy, for a
/// 20-service topology.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_cycle_makes_only_revision_calls() {
    let moto = Moto::start();
    let s = Seeder::new(&moto.url).await;
    let ns1 = s.http_namespace("apps").await;
    let ns2 = s.http_namespace("jobs").await;
    for i in 0..20 {
        let ns = if i % 2 == 0 { &ns1 } else { &ns2 };
        let svc = s
            .service(ns, &format!("svc{i:02}"), &[("METRICS_PATH", "/metrics")])
            .await;
        for t in 0..3 {
            s.task(
                &svc,
                &format!("{i:02}{t:030}"),
                &format!("10.0.{i}.{}", t + 1),
                Some(8080),
            )
            .await;
        }
    }
    s.service(&ns1, "untagged", &[]).await;
    let proxy = Proxy::start(&moto.url).await;
    let dir = tempfile::tempdir().unwrap();
    // A long interval, so the cold cycle's counts are read before the next starts.
    let sc = Sidecar::start(
        dir.path(),
        &proxy.url,
        &["--interval", "5s", "--services-refresh", "10s"],
    );
    sc.wait_ready(T).await;
    let cold = proxy.counts();
    assert_eq!(cold.get("ListServices"), Some(&1), "one cycle so far");
    wait_for_async(T, "second cycle", || async {
        (sc.metric("cloudmap_sd_cycles_total").await >= 2.0).then_some(())
    })
    .await;
    let after = proxy.counts();
    let steady = diff(&cold, &after);
    eprintln!(
        "cold cycle calls: {cold:?} (total {})",
        cold.values().sum::<u64>()
    );
    eprintln!(
        "steady cycle calls: {steady:?} (total {})",
        steady.values().sum::<u64>()
    );
    let want: BTreeMap<String, u64> = [("DiscoverInstancesRevision".to_string(), 20)].into();
    assert_eq!(steady, want, "between service listings: revisions only");
    // The third cycle is 10s after the first: the service listing is due again.
    wait_for_async(T, "third cycle", || async {
        (sc.metric("cloudmap_sd_cycles_total").await >= 3.0).then_some(())
    })
    .await;
    let listed = diff(&after, &proxy.counts());
    let want: BTreeMap<String, u64> = [
        ("DiscoverInstancesRevision".to_string(), 20),
        ("ListServices".to_string(), 1),
    ]
    .into();
    assert_eq!(listed, want, "with the listing: one page for 41 services");
    // The untagged service's instances are read once, to learn their ECS
    // services (ECS service tags): it has none.
    assert_eq!(cold.get("DiscoverInstances"), Some(&21));
    assert!(!cold.contains_key("DescribeServices"));
    // The instances name a cluster moto does not have: one DescribeTasks, then cached.
    assert_eq!(cold.get("DescribeTasks"), Some(&1));
    assert_eq!(cold.get("ListTagsForResource"), Some(&21));
    assert_eq!(sc.targets().len(), 60);
    let m = sc.metric("cloudmap_sd_aws_api_calls_total").await;
    assert_eq!(
        m as u64,
        proxy.total(),
        "own API call metric matches the wire"
    );
}

/// Wall time of the latest cycle that wrote the file with `targets` targets, from
/// the sidecar's log line `cycle done ... targets=N ... file="written" duration_ms=D`.
async fn written_cycle_time(sc: &Sidecar, targets: usize) -> Duration {
    let count = format!(" targets={targets} ");
    wait_for_async(
        T,
        "the log line of the cycle that wrote the file",
        || async {
            sc.proc
                .log_text()
                .lines()
                .rev()
                .filter(|l| {
                    l.contains("cycle done") && l.contains(&count) && l.contains("file=\"written\"")
                })
                .find_map(|l| {
                    let ms = l.split("duration_ms=").nth(1)?.split_whitespace().next()?;
                    ms.parse::<u64>().ok()
                })
                .map(Duration::from_millis)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_known_good_survives_aws_failures_and_recovers() {
    const INTERVAL: Duration = Duration::from_secs(1);
    // Time beyond "the next tick, then one cycle's work" that the check allows
    // for: the 10 ms poll of the file, new TCP connections to the restarted proxy
    // (the stop closed the pooled ones), and the difference in load between the
    // measured cycle and the recovery cycle on a 2-core machine running the other
    // tests of this binary at the same time. (The measured cycle time runs from
    // the cycle's tick to the end of its file write, so the write is in it.)
    const SLACK: Duration = Duration::from_millis(500);
    let moto = Moto::start();
    let s = Seeder::new(&moto.url).await;
    let ns = s.http_namespace("apps").await;
    let a = s.service(&ns, "a", &[("METRICS_PATH", "/metrics")]).await;
    let b = s.service(&ns, "b", &[("METRICS_PATH", "/metrics")]).await;
    s.task(&a, "a1", "10.0.0.1", Some(80)).await;
    s.task(&b, "b1", "10.0.0.2", Some(80)).await;
    let proxy = Proxy::start(&moto.url).await;
    let dir = tempfile::tempdir().unwrap();
    let sc = Sidecar::start(
        dir.path(),
        &proxy.url,
        &["--interval", "1s", "--api-timeout", "2s"],
    );
    sc.wait_ready(T).await;
    let known = vec!["10.0.0.1:80", "10.0.0.2:80"];
    assert_eq!(sc.targets(), known);
    // One cycle's wall time with AWS answering, for a cycle with the work of the
    // recovery below: a new task in one service (its revision moved, so its
    // instances are read in full, and the new task is described in ECS). Not the
    // cold cycle: moto answers its first ECS call slowly.
    s.task(&a, "warm", "10.0.0.5", Some(80)).await;
    wait_for_async(T, "the new task in the file", || async {
        (sc.targets().len() == 3).then_some(())
    })
    .await;
    let cycle_time = written_cycle_time(&sc, 3).await;
    s.deregister(&a, "warm").await;
    wait_for_async(T, "the task gone from the file", || async {
        (sc.targets() == known).then_some(())
    })
    .await;

    for (i, fault) in [
        Fault::ServerError,
        Fault::Unavailable,
        Fault::Throttle,
        Fault::Drop,
    ]
    .into_iter()
    .enumerate()
    {
        let before = sc.metric("cloudmap_sd_cycles_total").await;
        proxy.set_fault(fault);
        // Registered while AWS fails: must not show up, nothing may vanish.
        s.task(&a, &format!("x{i}"), "10.0.0.9", Some(80)).await;
        wait_for_async(T, "two failing cycles", || async {
            (sc.metric("cloudmap_sd_cycles_total").await >= before + 2.0).then_some(())
        })
        .await;
        assert_eq!(sc.targets(), known, "{fault:?}");
        assert!(sc.metric("cloudmap_sd_service_failures_total").await > 0.0);
        s.deregister(&a, &format!("x{i}")).await;
    }
    let (_, m) = http_get(&sc.url("/metrics")).await.unwrap();
    let age = sum_metric(&m, "cloudmap_sd_service_data_age_seconds");
    assert!(age >= 2.0, "data age grows while failing: {age}");

    // The endpoint stopped: nothing listens on its port any more.
    proxy.stop().await;
    proxy.set_fault(Fault::Pass);
    let refused = std::net::TcpStream::connect(proxy.addr())
        .expect_err("the stopped proxy still accepts connections");
    assert_eq!(
        refused.kind(),
        std::io::ErrorKind::ConnectionRefused,
        "{refused}"
    );
    let on_the_wire = proxy.total();
    let failures = sc.metric("cloudmap_sd_service_failures_total").await;
    let before = sc.metric("cloudmap_sd_cycles_total").await;
    s.task(&a, "x-down", "10.0.0.9", Some(80)).await;
    wait_for_async(T, "two cycles with the endpoint down", || async {
        (sc.metric("cloudmap_sd_cycles_total").await >= before + 2.0).then_some(())
    })
    .await;
    assert_eq!(sc.targets(), known, "endpoint down: every target kept");
    assert!(
        sc.metric("cloudmap_sd_service_failures_total").await > failures,
        "the refused calls count as failed reads"
    );
    assert_eq!(proxy.total(), on_the_wire, "no request got through");
    let (_, m) = http_get(&sc.url("/metrics")).await.unwrap();
    let age_down = sum_metric(&m, "cloudmap_sd_service_data_age_seconds");
    assert!(age_down > age, "data age still grows: {age} -> {age_down}");
    s.deregister(&a, "x-down").await;

    // A change made while the endpoint is down is waiting in Cloud Map when it
    // comes back on the same port; it must reach the file with the first cycle
    // that starts after that: within one interval (a cycle in flight ends by its
    // deadline, --cycle-timeout = --interval, and the next one starts on the
    // following tick), plus that cycle's own work, plus SLACK.
    s.task(&b, "b2", "10.0.0.3", Some(80)).await;
    assert_eq!(sc.targets(), known);
    proxy.restart().await;
    let back = std::time::Instant::now();
    let want = vec!["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"];
    let bound = INTERVAL + cycle_time + SLACK;
    loop {
        if sc.targets() == want {
            break;
        }
        assert!(
            back.elapsed() <= bound + Duration::from_secs(10),
            "no recovery at all; log:\n{}",
            sc.proc.log_text()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = back.elapsed();
    eprintln!(
        "recovery: the change reached the file {took:?} after the endpoint came back \
         (bound {bound:?} = interval {INTERVAL:?} + cycle {cycle_time:?} + slack {SLACK:?})"
    );
    assert!(
        took <= bound,
        "the change took {took:?} after recovery, more than one cycle ({bound:?})"
    );
    assert!(proxy.total() > on_the_wire, "the sidecar reconnected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_never_see_a_partial_file_under_churn() {
    let moto = Moto::start();
    let s = Seeder::new(&moto.url).await;
    let ns = s.http_namespace("apps").await;
    let svc = s
        .service(&ns, "churn", &[("METRICS_PATH", "/metrics")])
        .await;
    for i in 0..200u32 {
        s.task(
            &svc,
            &format!("base{i}"),
            &format!("10.2.{}.{}", i / 100, i % 100 + 1),
            Some(80),
        )
        .await;
    }
    let dir = tempfile::tempdir().unwrap();
    let sc = Sidecar::start(dir.path(), &moto.url, &["--interval", "1s"]);
    sc.wait_ready(T).await;

    let path = sc.output.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let reader = std::thread::spawn(move || {
        let (mut reads, mut versions) = (0u64, std::collections::BTreeSet::new());
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            let bytes = std::fs::read(&path).expect("file always exists");
            assert!(!bytes.is_empty(), "empty file seen");
            let v: Vec<serde_json::Value> = serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("partial or invalid file seen: {e}"));
            assert!(v.len() >= 200, "a shrunk file: {} groups", v.len());
            versions.insert(v.len());
            reads += 1;
        }
        (reads, versions)
    });
    for round in 0..8u32 {
        let id = format!("churn{round}");
        let target = format!("10.3.0.{}:80", round + 1);
        s.task(&svc, &id, &format!("10.3.0.{}", round + 1), Some(80))
            .await;
        wait_for_async(T, "the new task in the file", || async {
            sc.targets().contains(&target).then_some(())
        })
        .await;
        if round % 2 == 0 {
            s.deregister(&svc, &id).await;
            wait_for_async(T, "the task gone from the file", || async {
                (!sc.targets().contains(&target)).then_some(())
            })
            .await;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (reads, versions) = reader.join().expect("reader saw only whole files");
    eprintln!("reads: {reads}, distinct sizes: {versions:?}");
    assert!(reads > 200, "the reader kept reading: {reads}");
    assert!(
        versions.len() >= 3,
        "the file changed under the reader: {versions:?}"
    );
}

/// The names in `dir` and in its staging directory (where temporary files go).
fn names_in(dir: &std::path::Path) -> Vec<String> {
    [dir.to_path_buf(), dir.join(".cloudmap-sd-staging")]
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flat_map(|d| d.flatten())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_promptly_and_leaves_no_temp_file() {
    let moto = one_task().await;
    let dir = tempfile::tempdir().unwrap();
    let mut sc = Sidecar::start(dir.path(), &moto.url, &["--interval", "1s"]);
    sc.wait_ready(T).await;
    let (status, body) = http_get(&sc.url("/-/healthy")).await.unwrap();
    assert_eq!(status, 200, "{body}");
    let hc = run_cli(&["healthcheck", "--listen", &sc.listen], &[]);
    assert!(
        hc.status.success(),
        "{}",
        String::from_utf8_lossy(&hc.stderr)
    );
    let started = std::time::Instant::now();
    sc.proc.signal("TERM");
    let st = sc
        .proc
        .wait_exit(Duration::from_secs(5))
        .expect("exits within 5s of SIGTERM");
    assert!(st.success(), "exit status {st:?}");
    eprintln!("stopped {:?} after SIGTERM", started.elapsed());
    let names = names_in(dir.path());
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    assert_eq!(read_targets(&sc.output), vec!["10.0.0.1:80"]);
    assert!(sc.proc.log_text().contains("SIGTERM"));
    let hc = run_cli(&["healthcheck", "--listen", &sc.listen], &[]);
    assert_eq!(hc.status.code(), Some(1), "not running: not healthy");
    assert!(String::from_utf8_lossy(&hc.stderr).contains("cannot connect"));
}

/// Ctrl-C in a terminal (SIGINT) stops `run` the same way, mid-cycle included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_stops_promptly_too() {
    let moto = one_task().await;
    let proxy = Proxy::start(&moto.url).await;
    let dir = tempfile::tempdir().unwrap();
    let mut sc = Sidecar::start(dir.path(), &proxy.url, &["--interval", "1s"]);
    sc.wait_ready(T).await;
    // Calls hang from now on: the signal arrives while a cycle waits on AWS.
    proxy.set_fault(Fault::Stall);
    wait_for_async(T, "a call held by the stalled endpoint", || async {
        (proxy.injected().values().sum::<u64>() > 0).then_some(())
    })
    .await;
    let started = std::time::Instant::now();
    sc.proc.signal("INT");
    let st = sc
        .proc
        .wait_exit(Duration::from_secs(5))
        .expect("exits within 5s of SIGINT");
    assert!(st.success(), "exit status {st:?}");
    eprintln!("stopped {:?} after SIGINT", started.elapsed());
    assert!(sc.proc.log_text().contains("SIGINT"));
    let names = names_in(dir.path());
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    assert_eq!(read_targets(&sc.output), vec!["10.0.0.1:80"]);
    proxy.set_fault(Fault::Pass);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_until_a_complete_first_discovery() {
    let moto = one_task().await;
    let proxy = Proxy::start(&moto.url).await;
    proxy.set_fault(Fault::ServerError);
    let dir = tempfile::tempdir().unwrap();
    let sc = Sidecar::start(
        dir.path(),
        &proxy.url,
        &["--interval", "1s", "--api-timeout", "2s"],
    );
    wait_for_async(T, "two failed cycles", || async {
        let (_, m) = http_get(&sc.url("/metrics")).await?;
        (sum_metric(&m, "cloudmap_sd_cycles_total") >= 2.0).then_some(())
    })
    .await;
    let (status, _) = http_get(&sc.url("/-/ready")).await.unwrap();
    assert_eq!(status, 503);
    let hc = run_cli(&["healthcheck", "--listen", &sc.listen], &[]);
    assert_eq!(hc.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&hc.stderr).contains("503"));
    assert!(
        !sc.output.exists(),
        "nothing published before a complete discovery"
    );

    proxy.set_fault(Fault::Pass);
    sc.wait_ready(T).await;
    let hc = run_cli(&["healthcheck", "--listen", &sc.listen], &[]);
    assert!(hc.status.success());
    assert_eq!(sc.targets(), vec!["10.0.0.1:80"]);
}
