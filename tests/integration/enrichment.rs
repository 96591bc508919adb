//! ECS and EC2 enrichment against moto server: task facts, host Name tags, the EC2
//! hosts file, call counts on the wire, renames, ECS failures, and Prometheus
//! reading the hosts file.

use std::collections::BTreeMap;
use std::time::Duration;

use cloudmap_sd_test_support::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(60);

/// Labels of the group whose target is `addr`, without the `__meta_*` ones.
fn labels_of(groups: &[Value], addr: &str) -> BTreeMap<String, String> {
    let mut l = cloudmap_sd_test_support::labels_of(groups, addr);
    l.retain(|k, _| !k.starts_with("__meta_"));
    l
}

/// moto, the proxy in front of it, and the seeder. The seeder goes through the
/// proxy, whose type fix moto's ECS answers need for the Rust SDK.
struct Stack {
    _moto: Moto,
    proxy: Proxy,
    s: Seeder,
}

async fn stack() -> Stack {
    let moto = Moto::start();
    let proxy = Proxy::start(&moto.url).await;
    let s = Seeder::new(&proxy.url).await;
    Stack {
        _moto: moto,
        proxy,
        s,
    }
}

struct Topology {
    named: (String, String),
    unnamed: (String, String),
    on_named: String,
    on_unnamed: String,
    fargate: String,
    web: String,
}

async fn topology(s: &Seeder) -> Topology {
    let named = s.host(Some("alpha")).await;
    let unnamed = s.host(None).await;
    // One host per cluster, so ECS's placement is known.
    s.task_definition().await;
    s.cluster("prod").await;
    s.cluster("edge").await;
    s.container_instance("prod", &named.0).await;
    s.container_instance("edge", &unnamed.0).await;
    let on_named = s.ec2_tasks("prod", 1).await.remove(0);
    let on_unnamed = s.ec2_tasks("edge", 1).await.remove(0);
    let fargate = s.fargate_task("prod").await;
    let ns = s.http_namespace("apps").await;
    let web = s.service(&ns, "web", &[("METRICS_PATH", "/metrics")]).await;
    s.ecs_task(&web, "prod", &on_named, "10.0.0.1").await;
    s.ecs_task(&web, "edge", &on_unnamed, "10.0.0.2").await;
    s.ecs_task(&web, "prod", &fargate, "10.0.0.3").await;
    Topology {
        named,
        unnamed,
        on_named,
        on_unnamed,
        fargate,
        web,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ec2_fargate_and_unnamed_hosts_get_the_right_labels() {
    let Stack { _moto, proxy, s } = stack().await;
    let t = topology(&s).await;
    let dir = tempfile::tempdir().unwrap();
    let hosts_path = dir.path().join("hosts.json");
    let out = run_cli(
        &[
            "once",
            "--output",
            "-",
            "--ec2-hosts-output",
            hosts_path.to_str().unwrap(),
            "--ec2-hosts-port",
            "9100",
            "--ec2-hosts-port",
            "8080",
        ],
        &aws_env(&proxy.url),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let groups: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();

    let a = labels_of(&groups, "10.0.0.1:8080");
    assert_eq!(a["ecs_task_id"], t.on_named);
    assert_eq!(a["ecs_launch_type"], "EC2");
    assert_eq!(a["ecs_task_revision"], "1");
    assert_eq!(a["ec2_instance_id"], t.named.0);
    assert_eq!(a["ec2_name"], "alpha");
    assert_eq!(a["ec2_instance_type"], "m5.large");

    let b = labels_of(&groups, "10.0.0.2:8080");
    assert_eq!(b["ecs_task_id"], t.on_unnamed);
    assert_eq!(b["ec2_instance_id"], t.unnamed.0);
    assert!(
        !b.contains_key("ec2_name"),
        "host without a Name tag: {b:?}"
    );

    let f = labels_of(&groups, "10.0.0.3:8080");
    assert_eq!(f["ecs_task_id"], t.fargate);
    assert_eq!(f["ecs_launch_type"], "FARGATE");
    for k in ["ec2_instance_id", "ec2_name", "ec2_instance_type"] {
        assert!(!f.contains_key(k), "Fargate task has {k}: {f:?}");
    }

    let hosts = parse_file(&hosts_path);
    let got: Vec<(String, String)> = hosts
        .iter()
        .map(|g| {
            (
                g["targets"][0].as_str().unwrap().to_string(),
                g["labels"]["instance"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut want = vec![
        (format!("{}:8080", t.named.1), "alpha".to_string()),
        (format!("{}:9100", t.named.1), "alpha".to_string()),
        (format!("{}:8080", t.unnamed.1), t.unnamed.0.clone()),
        (format!("{}:9100", t.unnamed.1), t.unnamed.0.clone()),
    ];
    want.sort();
    let mut got_sorted = got.clone();
    got_sorted.sort();
    assert_eq!(got_sorted, want);
    let h = labels_of(&hosts, &format!("{}:9100", t.named.1));
    assert_eq!(h["ec2_instance_id"], t.named.0);
    assert_eq!(h["ec2_name"], "alpha");
    assert_eq!(h["ecs_cluster"], "prod");
    let u = labels_of(&hosts, &format!("{}:9100", t.unnamed.1));
    assert_eq!(u["ecs_cluster"], "edge");
    assert_eq!(h["ec2_instance_type"], "m5.large");
    assert!(h.contains_key("availability_zone"));

    // Hosts picked by EC2 tag instead of by the tasks seen.
    let out = run_cli(
        &[
            "once",
            "--output",
            dir.path().join("t.json").to_str().unwrap(),
            "--ec2-hosts-output",
            hosts_path.to_str().unwrap(),
            "--ec2-hosts-tag",
            "Name=alpha",
        ],
        &aws_env(&proxy.url),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tagged = parse_file(&hosts_path);
    assert_eq!(tagged.len(), 1, "{tagged:?}");
    assert_eq!(tagged[0]["targets"][0], format!("{}:9100", t.named.1));
    assert_eq!(tagged[0]["labels"]["instance"], "alpha");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_cold_cycle_and_a_steady_cycle_without_ecs_or_ec2_calls() {
    let Stack { _moto, proxy, s } = stack().await;
    let (host, _) = s.host(Some("big")).await;
    s.task_definition().await;
    s.cluster("prod").await;
    s.container_instance("prod", &host).await;
    let started = std::time::Instant::now();
    let tasks = s.ec2_tasks("prod", 250).await;
    assert_eq!(tasks.len(), 250);
    eprintln!("250 tasks started in {:?}", started.elapsed());
    let ns = s.http_namespace("apps").await;
    let web = s.service(&ns, "web", &[("METRICS_PATH", "/metrics")]).await;
    for (i, id) in tasks.iter().enumerate() {
        s.ecs_task(
            &web,
            "prod",
            id,
            &format!("10.4.{}.{}", i / 200, i % 200 + 1),
        )
        .await;
    }
    let dir = tempfile::tempdir().unwrap();
    let before_sidecar = proxy.counts();
    let sc = Sidecar::start(dir.path(), &proxy.url, &["--interval", "2s"]);
    sc.wait_ready(T).await;
    let cold = diff(&before_sidecar, &proxy.counts());
    eprintln!("cold: {cold:?}");
    assert_eq!(cold.get("DescribeTasks"), Some(&3), "ceil(250/100)");
    assert_eq!(cold.get("DescribeContainerInstances"), Some(&1));
    assert_eq!(cold.get("DescribeInstances"), Some(&1));
    assert_eq!(sc.targets().len(), 250);
    wait_for_async(T, "second cycle", || async {
        (sc.metric("cloudmap_sd_cycles_total").await >= 2.0).then_some(())
    })
    .await;
    let steady = diff(&before_sidecar, &proxy.counts());
    let steady = diff(&cold, &steady);
    eprintln!("steady: {steady:?}");
    for op in [
        "DescribeTasks",
        "DescribeContainerInstances",
        "DescribeInstances",
    ] {
        assert!(
            !steady.contains_key(op),
            "{op} in a steady cycle: {steady:?}"
        );
    }
    assert_eq!(steady.get("DiscoverInstancesRevision"), Some(&1));
    let groups = parse_file(&sc.output);
    assert!(groups.iter().all(|g| g["labels"]["ec2_name"] == "big"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_host_changes_only_ec2_name() {
    let Stack { _moto, proxy, s } = stack().await;
    let t = topology(&s).await;
    let dir = tempfile::tempdir().unwrap();
    let sc = Sidecar::start(
        dir.path(),
        &proxy.url,
        &["--interval", "1s", "--ec2-name-refresh", "2s"],
    );
    sc.wait_ready(T).await;
    let before = parse_file(&sc.output);
    assert_eq!(labels_of(&before, "10.0.0.1:8080")["ec2_name"], "alpha");
    s.rename(&t.named.0, "alpha-renamed").await;
    let renamed = std::time::Instant::now();
    wait_for_async(Duration::from_secs(15), "the new name", || async {
        let g = parse_file(&sc.output);
        (labels_of(&g, "10.0.0.1:8080")["ec2_name"] == "alpha-renamed").then_some(())
    })
    .await;
    // Within the refresh period: the host is read again at most --ec2-name-refresh
    // after its last read, on the next cycle tick (--interval), plus that cycle's
    // own time and this loop's polling (1 s of slack).
    let took = renamed.elapsed();
    eprintln!("rename visible after {took:?}");
    assert!(
        took <= Duration::from_secs(2 + 1 + 1),
        "rename took {took:?}, more than --ec2-name-refresh 2s + --interval 1s + 1s"
    );
    let after = parse_file(&sc.output);
    let mut a = labels_of(&before, "10.0.0.1:8080");
    let mut b = labels_of(&after, "10.0.0.1:8080");
    a.remove("ec2_name");
    b.remove("ec2_name");
    assert_eq!(a, b, "nothing else moved");
    for addr in ["10.0.0.2:8080", "10.0.0.3:8080"] {
        assert_eq!(labels_of(&before, addr), labels_of(&after, addr));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecs_errors_keep_published_labels_and_hold_new_tasks() {
    let Stack { _moto, proxy, s } = stack().await;
    let t = topology(&s).await;
    let dir = tempfile::tempdir().unwrap();
    let sc = Sidecar::start(
        dir.path(),
        &proxy.url,
        &[
            "--interval",
            "1s",
            "--enrichment-hold",
            "4s",
            "--ec2-name-refresh",
            "1s",
        ],
    );
    sc.wait_ready(T).await;
    let before = parse_file(&sc.output);

    proxy.set_fault_for("DescribeTasks", Fault::ServerError);
    proxy.set_fault_for("DescribeInstances", Fault::Throttle);
    let new_task = s.ec2_tasks("prod", 1).await.remove(0);
    s.ecs_task(&t.web, "prod", &new_task, "10.0.0.4").await;
    wait_for_async(T, "the new task to be seen and held", || async {
        (sc.metric("cloudmap_sd_tasks_held").await >= 1.0).then_some(())
    })
    .await;
    let during = parse_file(&sc.output);
    assert_eq!(during, before, "published targets and labels untouched");

    // After the hold time the task is published without the facts it lacks.
    wait_for_async(
        Duration::from_secs(15),
        "release after the hold",
        || async {
            let g = parse_file(&sc.output);
            g.iter()
                .any(|g| g["targets"][0] == "10.0.0.4:8080")
                .then_some(())
        },
    )
    .await;
    let released = labels_of(&parse_file(&sc.output), "10.0.0.4:8080");
    assert!(!released.contains_key("ec2_name"), "{released:?}");
    for addr in ["10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"] {
        assert_eq!(
            labels_of(&parse_file(&sc.output), addr),
            labels_of(&before, addr)
        );
    }
    assert!(sc.proc.log_text().contains("publishing it without them"));
    proxy.set_fault_for("DescribeTasks", Fault::Pass);
    proxy.set_fault_for("DescribeInstances", Fault::Pass);
}

/// Prometheus reads the hosts file (in a directory of its own) with `instance` set
/// to the host's name; a host renamed costs it at most 2 file_sd scans (its own
/// `prometheus_sd_file_scan_duration_seconds_count`), as the targets file does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_reads_the_hosts_file_with_instance_set_to_the_name() {
    let Stack { _moto, proxy, s } = stack().await;
    let t = topology(&s).await;
    let dir = tempfile::tempdir().unwrap();
    let sd = dir.path().join("sd");
    let hosts_dir = dir.path().join("hosts");
    std::fs::create_dir(&sd).unwrap();
    std::fs::create_dir(&hosts_dir).unwrap();
    let hosts = hosts_dir.join("hosts.json");
    let sc = Sidecar::start(
        &sd,
        &proxy.url,
        &[
            "--interval",
            "1s",
            "--ec2-name-refresh",
            "2s",
            "--ec2-hosts-output",
            hosts.to_str().unwrap(),
        ],
    );
    sc.wait_ready(T).await;
    // The same list over http_sd.
    crate::http_sd::assert_sd_hosts_equals_the_file(&sc, &hosts).await;
    let config = file_sd_config("hosts", &hosts_dir.join("*.json"), "1h");
    let (_prometheus, url) = prometheus(&dir.path().join("prometheus"), &config);
    let api = format!("{url}/api/v1/targets");
    let targets = |want: &'static str| {
        let api = api.clone();
        async move {
            let (_, body) = http_get(&api).await?;
            let v: Value = serde_json::from_str(&body).ok()?;
            let a = v["data"]["activeTargets"].as_array()?.clone();
            (a.len() == 2 && body.contains(want)).then_some(a)
        }
    };
    let active = wait_for_async(Duration::from_secs(40), "2 host targets", || {
        targets("alpha")
    })
    .await;
    let mut instances: Vec<String> = active
        .iter()
        .map(|t| t["labels"]["instance"].as_str().unwrap().to_string())
        .collect();
    instances.sort();
    let mut want = vec!["alpha".to_string(), t.unnamed.0.clone()];
    assert!(!t.on_unnamed.is_empty());
    want.sort();
    assert_eq!(instances, want);
    let alpha = active
        .iter()
        .find(|a| a["labels"]["instance"] == "alpha")
        .unwrap();
    assert_eq!(
        alpha["discoveredLabels"]["__address__"],
        format!("{}:9100", t.named.1)
    );

    let quiet = Duration::from_secs(3);
    let before = FileSdStats::settled(&url, 2, quiet, T).await;
    s.rename(&t.named.0, "alpha-renamed").await;
    wait_for_async(T, "Prometheus to see the renamed host", || {
        targets("alpha-renamed")
    })
    .await;
    let after = FileSdStats::settled(&url, 2, quiet, T).await;
    let scans = after.scans - before.scans;
    eprintln!("a renamed host: {scans} file_sd scans");
    assert!(
        (1.0..=2.0).contains(&scans),
        "a hosts file change cost Prometheus {scans} file_sd scans (at most 2)"
    );
    assert_eq!(after.read_errors, 0.0);
    assert!(hosts_dir.join(".cloudmap-sd-staging").is_dir());
}

/// Host (address, instance label, ecs_cluster label) of each target in a hosts file.
fn host_rows(path: &std::path::Path) -> Vec<(String, String, String)> {
    let mut v: Vec<(String, String, String)> = parse_file(path)
        .iter()
        .map(|g| {
            let l = &g["labels"];
            (
                g["targets"][0].as_str().unwrap().to_string(),
                l["instance"].as_str().unwrap().to_string(),
                l["ecs_cluster"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

/// The hosts file lists every container instance of the clusters seen, including a
/// host that runs no discovered task (a node exporter daemon's). EC2 failing from
/// the start writes no hosts file (not an empty one); EC2 and ECS failing later
/// drop no host from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_file_has_every_host_of_the_clusters_and_never_shrinks_on_errors() {
    let Stack { _moto, proxy, s } = stack().await;
    let t = topology(&s).await;
    // Registered after the tasks were placed: it runs none of them.
    let (daemon_only, daemon_ip) = s.host(Some("daemon-only")).await;
    s.container_instance("prod", &daemon_only).await;
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts.json");

    proxy.set_fault_for("DescribeInstances", Fault::Throttle);
    let sc = Sidecar::start(
        dir.path(),
        &proxy.url,
        &[
            "--interval",
            "1s",
            "--enrichment-hold",
            "2s",
            "--ec2-name-refresh",
            "2s",
            "--ec2-hosts-output",
            hosts.to_str().unwrap(),
        ],
    );
    // The tasks are published after the hold, without their host's labels; the
    // hosts file waits for hosts it can name.
    sc.wait_ready(T).await;
    wait_for_async(T, "the 3 tasks, published after the hold", || async {
        (sc.targets().len() == 3).then_some(())
    })
    .await;
    // Two more whole cycles, each asking EC2 again: still no hosts file.
    sc.wait_cycles(3, T).await;
    assert_eq!(sc.targets().len(), 3);
    assert!(
        !hosts.exists(),
        "hosts file written while EC2 failed: {:?}",
        std::fs::read_to_string(&hosts)
    );

    proxy.set_fault_for("DescribeInstances", Fault::Pass);
    let want = vec![
        (
            format!("{}:9100", t.named.1),
            "alpha".to_string(),
            "prod".to_string(),
        ),
        (
            format!("{daemon_ip}:9100"),
            "daemon-only".to_string(),
            "prod".to_string(),
        ),
        (
            format!("{}:9100", t.unnamed.1),
            t.unnamed.0.clone(),
            "edge".to_string(),
        ),
    ];
    let mut want = want;
    want.sort();
    wait_for_async(Duration::from_secs(20), "the three hosts", || async {
        (hosts.exists() && host_rows(&hosts) == want).then_some(())
    })
    .await;
    let listed = proxy.counts().get("ListContainerInstances").copied();
    assert!(
        listed.is_some_and(|n| n >= 2),
        "one listing per cluster: {listed:?}"
    );

    // Everything that names hosts fails for several Name refreshes: the hosts
    // file stays as it was, byte for byte.
    let before = std::fs::read(&hosts).unwrap();
    for op in [
        "ListContainerInstances",
        "DescribeInstances",
        "DescribeContainerInstances",
    ] {
        proxy.set_fault_for(op, Fault::ServerError);
    }
    let asked = proxy.counts();
    // Six cycles of --interval 1s span at least two --ec2-name-refresh 2s periods.
    sc.wait_cycles(6, T).await;
    let during = diff(&asked, &proxy.counts());
    // (Retries of the failing listings may use up the cycle deadline before the
    // DescribeInstances refresh is sent.)
    assert!(
        during.contains_key("ListContainerInstances"),
        "the hosts were asked for again, and failed: {during:?}"
    );
    assert_eq!(
        std::fs::read(&hosts).unwrap(),
        before,
        "hosts file untouched"
    );
    assert_eq!(sc.targets().len(), 3);
    for op in [
        "ListContainerInstances",
        "DescribeInstances",
        "DescribeContainerInstances",
    ] {
        proxy.set_fault_for(op, Fault::Pass);
    }
}

/// The cost of a cold and a steady cycle for 20 services x 10 tasks on 5 EC2 hosts,
/// counted on the wire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cost_of_20_services_by_10_tasks_on_5_hosts() {
    let Stack { _moto, proxy, s } = stack().await;
    s.task_definition().await;
    s.cluster("prod").await;
    for i in 0..5 {
        let (host, _) = s.host(Some(&format!("host-{i}"))).await;
        s.container_instance("prod", &host).await;
    }
    let tasks = s.ec2_tasks("prod", 200).await;
    let ns = s.http_namespace("apps").await;
    for svc in 0..20 {
        let id = s
            .service(
                &ns,
                &format!("svc{svc:02}"),
                &[("METRICS_PATH", "/metrics")],
            )
            .await;
        for t in 0..10 {
            let task = &tasks[svc * 10 + t];
            s.ecs_task(&id, "prod", task, &format!("10.5.{svc}.{}", t + 1))
                .await;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let before = proxy.counts();
    let sc = Sidecar::start(dir.path(), &proxy.url, &["--interval", "5s"]);
    sc.wait_ready(T).await;
    let cold = diff(&before, &proxy.counts());
    wait_for_async(T, "second cycle", || async {
        (sc.metric("cloudmap_sd_cycles_total").await >= 2.0).then_some(())
    })
    .await;
    let steady = diff(&cold, &diff(&before, &proxy.counts()));
    eprintln!("cold cycle: {cold:?} total {}", cold.values().sum::<u64>());
    eprintln!(
        "steady cycle: {steady:?} total {}",
        steady.values().sum::<u64>()
    );
    let want_cold: BTreeMap<String, u64> = [
        ("ListNamespaces", 1),
        ("ListServices", 1),
        ("GetService", 20),
        ("ListTagsForResource", 20),
        ("DiscoverInstancesRevision", 20),
        ("DiscoverInstances", 20),
        ("DescribeTasks", 2),
        ("DescribeContainerInstances", 1),
        ("DescribeInstances", 1),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(cold, want_cold);
    // 5s after the first cycle: the service listing (every minute) is not due.
    let want_steady: BTreeMap<String, u64> = [("DiscoverInstancesRevision".to_string(), 20)].into();
    assert_eq!(steady, want_steady);
    let groups = parse_file(&sc.output);
    assert_eq!(groups.len(), 200);
    let names: std::collections::BTreeSet<&str> = groups
        .iter()
        .map(|g| g["labels"]["ec2_name"].as_str().unwrap())
        .collect();
    assert!(names.iter().all(|n| n.starts_with("host-")), "{names:?}");
    // Every call on the wire is in the sidecar's own counter (ECS and EC2 too),
    // read between two equal wire counts (no call in flight).
    let wire = || diff(&before, &proxy.counts()).values().sum::<u64>();
    let (counted, on_wire) = loop {
        let w = wire();
        let counted = sc.metric("cloudmap_sd_aws_api_calls_total").await as u64;
        if wire() == w {
            break (counted, w);
        }
    };
    assert_eq!(counted, on_wire);
}
