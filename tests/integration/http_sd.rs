//! http_sd end to end: moto server -> `cloudmap-sd run` -> GET /sd/targets -> real
//! Prometheus servers with `http_sd_configs`: the bytes of the file, the labels
//! Prometheus shows, the bearer token (and the 401 Prometheus counts without it),
//! two Prometheus shards that split the file exactly, and the endpoint under load
//! from this process without the sidecar's memory growing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use cloudmap_sd_test_support::*;
use serde_json::Value;

use crate::topologies::four_targets;

const T: Duration = Duration::from_secs(60);

/// The file's target groups by (address, metrics path): their labels.
fn groups_by_target(json: &[u8]) -> BTreeMap<(String, String), BTreeMap<String, String>> {
    let groups: Vec<Value> = serde_json::from_slice(json).expect("file_sd JSON");
    groups
        .iter()
        .map(|g| {
            let labels: BTreeMap<String, String> = g["labels"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect();
            let key = (
                g["targets"][0].as_str().unwrap().to_string(),
                labels["__metrics_path__"].clone(),
            );
            (key, labels)
        })
        .collect()
}

/// (address, metrics path) of Prometheus's active targets.
fn targets_of(active: &[Value]) -> BTreeSet<(String, String)> {
    active
        .iter()
        .map(|t| {
            let d = &t["discoveredLabels"];
            (
                d["__address__"].as_str().unwrap().to_string(),
                d["__metrics_path__"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Waits until Prometheus at `url` lists exactly `n` active targets in `job`.
async fn wait_targets(url: &str, job: &str, n: usize) -> Vec<Value> {
    wait_for_async(
        T,
        &format!("Prometheus to list {n} targets in job {job}"),
        || async {
            let a = active_targets(url, Some(job)).await?;
            (a.len() == n).then_some(a)
        },
    )
    .await
}

fn prometheus_config(jobs: &[String]) -> String {
    format!(
        "global:\n  scrape_interval: 1m\nscrape_configs:\n{}",
        jobs.concat()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_reads_sd_targets_with_the_labels_of_the_file() {
    let moto = Moto::start();
    let (s, web) = four_targets(&moto).await;
    let dir = tempfile::tempdir().unwrap();
    let sc = Sidecar::start(dir.path(), &moto.url, &["--interval", "1s"]);
    sc.wait_ready(T).await;

    // The bytes of the file, with a tag; 304 for that tag; 400 for a bad share.
    let sd = sc.url("/sd/targets");
    let answer = wait_for_async(T, "/sd/targets to hold the file's bytes", || async {
        let a = http_get_with(&sd, &[]).await?;
        let file = std::fs::read(&sc.output).ok()?;
        (a.status == 200 && a.body == file).then_some(a)
    })
    .await;
    assert_eq!(answer.header("content-type"), Some("application/json"));
    let etag = answer.header("etag").expect("an ETag").to_string();
    let again = http_get_with(&sd, &[("if-none-match", &etag)])
        .await
        .unwrap();
    assert_eq!((again.status, again.body.len()), (304, 0));
    let bad = http_get_with(&format!("{sd}?shard=2/2"), &[])
        .await
        .unwrap();
    assert_eq!(bad.status, 400);
    assert!(bad.text().contains("INDEX/COUNT"), "{}", bad.text());

    let config = prometheus_config(&[http_sd_job("ecs", &sd, "2s", None)]);
    let (_prometheus, url) = prometheus(dir.path(), &config);
    let active = wait_targets(&url, "ecs", 4).await;
    let file = groups_by_target(&answer.body);
    assert_eq!(targets_of(&active), file.keys().cloned().collect());
    for t in &active {
        let d = &t["discoveredLabels"];
        let key = (
            d["__address__"].as_str().unwrap().to_string(),
            d["__metrics_path__"].as_str().unwrap().to_string(),
        );
        for (k, v) in &file[&key] {
            assert_eq!(d[k], v.as_str(), "{k} of {key:?}: {d}");
        }
        let l = &t["labels"];
        assert_eq!(l["cloudmap_namespace"], "apps");
        assert_eq!(l["ecs_cluster"], "prod");
        assert!(l.get("cluster").is_none(), "no bare cluster label");
    }

    // A new task reaches Prometheus through the endpoint.
    s.task(&web, "0d0d", "127.0.0.14", None).await;
    wait_targets(&url, "ecs", 5).await;
    let (_, metrics) = http_get(&format!("{url}/metrics")).await.unwrap();
    assert_eq!(
        sum_metric(&metrics, "prometheus_sd_http_failures_total"),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_the_first_discovery_sd_answers_503_and_ready_says_why() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens there: every discovery fails.
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let sc = Sidecar::start_serving(
        dir.path(),
        &nowhere,
        &["--interval", "1s", "--api-timeout", "1s"],
    );
    wait_for_async(T, "a failed cycle", || async {
        let (_, m) = http_get(&sc.url("/metrics")).await?;
        (sum_metric(&m, "cloudmap_sd_cycles_total") >= 1.0).then_some(())
    })
    .await;
    let sd = http_get_with(&sc.url("/sd/targets"), &[]).await.unwrap();
    assert_eq!(sd.status, 503);
    assert_eq!(sd.text().lines().count(), 1, "{}", sd.text());
    assert!(
        sd.text().contains("no complete discovery yet"),
        "{}",
        sd.text()
    );
    let ready = http_get(&sc.url("/-/ready")).await.unwrap();
    assert_eq!(ready.0, 503);
    assert!(ready.1.contains("no complete discovery yet"), "{}", ready.1);
    assert_eq!(get_status(&sc.url("/-/healthy")).await, Some(200));
    assert_eq!(
        get_status(&sc.url("/sd/hosts")).await,
        Some(404),
        "hosts list off"
    );
}

/// The sidecar's count of `/sd/targets` answers with `code`.
async fn answers(sc: &Sidecar, code: &str) -> f64 {
    sc.metric(&format!(
        "cloudmap_sd_http_sd_requests_total{{endpoint=\"targets\",code=\"{code}\"}}"
    ))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bearer_token_is_required_on_sd_only_and_reloaded_on_sighup() {
    let moto = Moto::start();
    four_targets(&moto).await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "first-token\n").unwrap();
    let sc = Sidecar::start_serving(
        dir.path(),
        &moto.url,
        &[
            "--interval",
            "1s",
            "--http-sd-bearer-token-file",
            token.to_str().unwrap(),
        ],
    );
    // Readiness, liveness and metrics need no token.
    sc.wait_ready(T).await;
    assert_eq!(get_status(&sc.url("/-/healthy")).await, Some(200));
    assert_eq!(get_status(&sc.url("/metrics")).await, Some(200));
    let sd = sc.url("/sd/targets");
    let refused = http_get_with(&sd, &[]).await.unwrap();
    assert_eq!(refused.status, 401);
    assert_eq!(
        refused.header("www-authenticate"),
        Some("Bearer realm=\"cloudmap-sd\"")
    );
    let get = |t: &'static str| {
        let sd = sd.clone();
        async move {
            http_get_with(&sd, &[("authorization", &format!("Bearer {t}"))])
                .await
                .unwrap()
                .status
        }
    };
    assert_eq!(get("wrong-token").await, 401);
    assert_eq!(get("first-token").await, 200);

    // One Prometheus, a job with the token file and a job without.
    let config = prometheus_config(&[
        http_sd_job("with-token", &sd, "1s", Some(&token)),
        http_sd_job("no-token", &sd, "1s", None),
    ]);
    let pdir = dir.path().join("prometheus");
    let (prom, url) = prometheus(&pdir, &config);
    wait_targets(&url, "with-token", 4).await;
    let failures = wait_for_async(T, "Prometheus to count http_sd failures", || async {
        let (_, m) = http_get(&format!("{url}/metrics")).await?;
        let n = sum_metric(&m, "prometheus_sd_http_failures_total");
        (n >= 1.0).then_some(n)
    })
    .await;
    assert!(failures >= 1.0);
    let log = wait_for_async(T, "Prometheus to log the 401", || async {
        let log = prom.log_text();
        log.contains("401").then_some(log)
    })
    .await;
    assert!(
        log.lines()
            .any(|l| l.contains("401") && l.contains("discovery")),
        "{log}"
    );
    assert_eq!(
        active_targets(&url, Some("no-token")).await.unwrap().len(),
        0
    );
    assert!(answers(&sc, "401").await >= 1.0);

    // A new token on SIGHUP: the old one is refused, the new one taken, and
    // Prometheus, which reads its credentials_file on each refresh, goes on.
    std::fs::write(&token, "second-token\n").unwrap();
    sc.proc.signal("HUP");
    wait_for_async(T, "the token reload", || async {
        let n = sc
            .metric("cloudmap_sd_http_sd_token_reloads_total{outcome=\"success\"}")
            .await;
        (n == 1.0).then_some(())
    })
    .await;
    assert_eq!(get("first-token").await, 401);
    assert_eq!(get("second-token").await, 200);
    let ok_before = answers(&sc, "200").await;
    wait_for_async(T, "Prometheus to read with the new token", || async {
        (answers(&sc, "200").await >= ok_before + 2.0).then_some(())
    })
    .await;
    assert_eq!(
        active_targets(&url, Some("with-token"))
            .await
            .unwrap()
            .len(),
        4
    );

    // A file that cannot be used keeps the token in use.
    std::fs::write(&token, "\n").unwrap();
    sc.proc.signal("HUP");
    wait_for_async(T, "the failed reload", || async {
        let n = sc
            .metric("cloudmap_sd_http_sd_token_reloads_total{outcome=\"failed\"}")
            .await;
        (n == 1.0).then_some(())
    })
    .await;
    assert_eq!(get("second-token").await, 200);
    assert!(sc.proc.log_text().contains("is empty"));
}

/// (address, metrics path) of each target `once --shard` prints.
fn once_share(moto: &Moto, args: &[&str]) -> BTreeSet<(String, String)> {
    let mut all = vec!["once", "--output", "-"];
    all.extend_from_slice(args);
    let out = run_cli(&all, &aws_env(&moto.url));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    groups_by_target(&out.stdout).into_keys().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_prometheus_shards_hold_every_target_once_and_their_union_is_the_file() {
    let moto = Moto::start();
    let s = Seeder::new(&moto.url).await;
    let ns = s.http_namespace("apps").await;
    for i in 0..8u8 {
        let svc = s
            .service(
                &ns,
                &format!("svc-{i}"),
                &[("METRICS_PATH", "/metrics"), ("METRICS_PORT", "9100")],
            )
            .await;
        for t in 0..3u8 {
            let ip = format!("127.0.{}.{}", i + 1, t + 1);
            s.task(&svc, &format!("task-{i}-{t}"), &ip, None).await;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let sc = Sidecar::start(dir.path(), &moto.url, &["--interval", "1s"]);
    sc.wait_ready(T).await;
    let file: BTreeSet<(String, String)> = groups_by_target(&std::fs::read(&sc.output).unwrap())
        .into_keys()
        .collect();
    assert_eq!(file.len(), 24);

    let sd = sc.url("/sd/targets");
    let shards: Vec<(Proc, String)> = (0..2)
        .map(|i| {
            let config = prometheus_config(&[
                http_sd_job("by-service", &format!("{sd}?shard={i}/2"), "2s", None),
                http_sd_job(
                    "by-task",
                    &format!("{sd}?shard={i}/2&shard_key=task"),
                    "2s",
                    None,
                ),
            ]);
            prometheus(&dir.path().join(format!("prometheus-{i}")), &config)
        })
        .collect();
    for (job, key) in [("by-service", "service"), ("by-task", "task")] {
        let held = wait_for_async(
            T,
            &format!("the shards of {job} to hold 24 targets"),
            || async {
                let mut held = Vec::new();
                for (_, url) in &shards {
                    held.push(targets_of(&active_targets(url, Some(job)).await?));
                }
                (held.iter().map(BTreeSet::len).sum::<usize>() == 24).then_some(held)
            },
        )
        .await;
        assert!(
            held[0].is_disjoint(&held[1]),
            "{job}: a target in both shards"
        );
        let union: BTreeSet<_> = held[0].union(&held[1]).cloned().collect();
        assert_eq!(union, file, "{job}: the union is the file");
        assert!(
            !held[0].is_empty() && !held[1].is_empty(),
            "{job}: {held:?}"
        );
        // The share a sidecar started with --shard publishes.
        for (i, share) in held.iter().enumerate() {
            let flag = format!("{i}/2");
            let once = once_share(&moto, &["--shard", &flag, "--shard-key", key]);
            assert_eq!(share, &once, "{job} shard {flag} equals --shard {flag}");
        }
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_does_not_grow_with_the_number_of_requests() {
    let moto = Moto::start();
    let s = Seeder::new(&moto.url).await;
    let ns = s.http_namespace("load").await;
    s.services_with_tasks(&ns, 20, 50).await;
    let dir = tempfile::tempdir().unwrap();
    let sc = Sidecar::start_serving(dir.path(), &moto.url, &["--interval", "5s"]);
    sc.wait_ready(Duration::from_secs(120)).await;
    let whole = vec![sc.url("/sd/targets")];
    let shards: Vec<String> = (0..4)
        .map(|i| sc.url(&format!("/sd/targets?shard={i}/4&shard_key=task")))
        .collect();
    let first = http_get_with(&whole[0], &[]).await.unwrap();
    assert_eq!(groups_by_target(&first.body).len(), 1000);

    let timeout = Duration::from_secs(60);
    let mut rss = Vec::new();
    for (round, requests) in [("warm-up", 100), ("round 1", 600), ("round 2", 600)] {
        let w = load(&whole, &[], requests, 4, timeout).await;
        let s = load(&shards, &[], requests / 6, 4, timeout).await;
        for r in [&w, &s] {
            eprintln!("{round}: {}", r.line());
            assert_eq!(r.statuses.get("200"), Some(&r.requests), "{}", r.line());
        }
        rss.push(sc.rss_kib());
        eprintln!("{round}: sidecar RSS {:.1} MiB", mib(*rss.last().unwrap()));
    }
    // The whole list was rendered once and shared by every request.
    let whole_renders = sc
        .metric("cloudmap_sd_http_sd_renders_total{body=\"whole\"}")
        .await;
    assert_eq!(whole_renders, 1.0);
    // 1,300 more requests after the warm-up: the resident memory stays within a few
    // MiB (one whole body is 1.2 MB here; allocator noise is below that).
    let (warm, one, two) = (rss[0], rss[1], rss[2]);
    assert!(
        one <= warm + 4096 && two <= one + 2048,
        "RSS grew with requests: {:.1} -> {:.1} -> {:.1} MiB",
        mib(warm),
        mib(one),
        mib(two)
    );
}

/// The file of the EC2 hosts list at `path`, as /sd/hosts serves it.
pub async fn assert_sd_hosts_equals_the_file(sc: &Sidecar, path: &Path) {
    let sd = sc.url("/sd/hosts");
    wait_for_async(T, "/sd/hosts to hold the hosts file's bytes", || async {
        let a = http_get_with(&sd, &[]).await?;
        let file = std::fs::read(path).ok()?;
        (a.status == 200 && a.body == file).then_some(())
    })
    .await;
}
