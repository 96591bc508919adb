//! End to end: moto server -> cloudmap-sd run -> file -> a real Prometheus with
//! file_sd_configs, checked through Prometheus's own /api/v1/targets.

use std::time::Duration;

use cloudmap_sd_test_support::*;

use crate::topologies::four_targets;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_shows_the_targets_with_their_labels() {
    let moto = Moto::start();
    let (s, web) = four_targets(&moto).await;

    let dir = tempfile::tempdir().unwrap();
    let sd_dir = dir.path().join("sd");
    std::fs::create_dir(&sd_dir).unwrap();
    let sc = Sidecar::start(&sd_dir, &moto.url, &["--interval", "1s"]);
    sc.wait_ready(Duration::from_secs(30)).await;

    let config = format!(
        "global:\n  scrape_interval: 1m\nscrape_configs:\n  - job_name: ecs\n    file_sd_configs:\n      - files: ['{}/*.json']\n        refresh_interval: 5s\n",
        sd_dir.display()
    );
    let (_prometheus, url) = prometheus(dir.path(), &config);
    let api_url = format!("{url}/api/v1/targets");
    let active = wait_for_async(
        Duration::from_secs(40),
        "Prometheus to list 4 targets",
        || {
            let api_url = api_url.clone();
            async move {
                let (status, body) = http_get(&api_url).await?;
                if status != 200 {
                    return None;
                }
                let v: serde_json::Value = serde_json::from_str(&body).ok()?;
                let active = v["data"]["activeTargets"].as_array()?.clone();
                (active.len() == 4).then_some(active)
            }
        },
    )
    .await;

    let mut seen: Vec<(String, String, String, String)> = active
        .iter()
        .map(|t| {
            let d = &t["discoveredLabels"];
            let l = &t["labels"];
            (
                d["__address__"].as_str().unwrap().to_string(),
                d["__metrics_path__"].as_str().unwrap().to_string(),
                l["cloudmap_service"].as_str().unwrap().to_string(),
                l["metrics_endpoint"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            (
                "127.0.0.11:9100".into(),
                "/metrics".into(),
                "web".into(),
                "".into()
            ),
            (
                "127.0.0.12:9100".into(),
                "/metrics".into(),
                "web".into(),
                "".into()
            ),
            (
                "127.0.0.13:8080".into(),
                "/m".into(),
                "api".into(),
                "".into()
            ),
            (
                "127.0.0.13:9779".into(),
                "/stats".into(),
                "api".into(),
                "ecs".into()
            ),
        ]
    );
    for t in &active {
        let l = &t["labels"];
        assert_eq!(l["job"], "ecs");
        assert_eq!(l["ecs_cluster"], "prod");
        assert_eq!(l["cloudmap_namespace"], "apps");
        assert!(l["ecs_task_id"].as_str().is_some());
        assert!(l.get("cluster").is_none(), "no bare cluster label");
        assert!(
            l.as_object()
                .unwrap()
                .keys()
                .all(|k| !k.starts_with("__meta_")),
            "meta labels are dropped after relabelling"
        );
    }

    // A new task flows through to Prometheus.
    s.task(&web, "0d0d", "127.0.0.14", None).await;
    wait_for_async(
        Duration::from_secs(20),
        "Prometheus to pick up the new task",
        || {
            let api_url = api_url.clone();
            async move {
                let (_, body) = http_get(&api_url).await?;
                body.contains("127.0.0.14:9100").then_some(())
            }
        },
    )
    .await;
    // Prometheus never failed to read our file.
    let (_, metrics) = http_get(&format!("{url}/metrics")).await.unwrap();
    assert_eq!(
        sum_metric(&metrics, "prometheus_sd_file_read_errors_total"),
        0.0
    );
}

/// Prometheus's scans have ended when its scan count stood still this long (and four
/// times its mean scan); see `FileSdStats::settled`.
const QUIET: Duration = Duration::from_secs(3);

/// The file at 3,000 targets, a real Prometheus reading it through a `*.json` glob
/// on its directory: one Cloud Map change costs Prometheus at most 2 file_sd scans
/// (its own `prometheus_sd_file_scan_duration_seconds_count`), because the temporary
/// file is written where its watch sees nothing but the rename. It never fails to
/// read the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_change_costs_prometheus_at_most_two_scans_at_3000_targets() {
    const TARGETS: usize = 3_000;
    let moto = Moto::start();
    let s = Seeder::new(&moto.url).await;
    let ns = s.http_namespace("apps").await;
    let services = s.services_with_tasks(&ns, 30, TARGETS / 30).await;

    let dir = tempfile::tempdir().unwrap();
    let sd = dir.path().join("sd");
    std::fs::create_dir(&sd).unwrap();
    // The sidecar's log goes outside the watched directory: each line written there
    // would be an event, and a scan, of its own.
    let sc = Sidecar::start_writing(
        dir.path(),
        &sd.join("targets.json"),
        &moto.url,
        &["--interval", "1s", "--ecs-enrichment", "false"],
    );
    sc.wait_ready(Duration::from_secs(120)).await;
    assert_eq!(sc.targets().len(), TARGETS);
    let config = file_sd_config("ecs", &sd.join("*.json"), "1h");
    let (_prometheus, url) = prometheus(&dir.path().join("prometheus"), &config);
    let long = Duration::from_secs(180);
    let mut last = FileSdStats::settled(&url, TARGETS, QUIET, long).await;
    eprintln!("loaded: {last:?}");

    let written = "cloudmap_sd_file_writes_total{outcome=\"written\"}";
    for (round, service) in services.iter().take(3).enumerate() {
        let writes = sc.metric(written).await;
        let ip = format!("10.200.0.{}", round + 1);
        s.task(service, &format!("new{round}"), &ip, None).await;
        wait_for_async(Duration::from_secs(30), "the change written", || async {
            (sc.metric(written).await > writes).then_some(())
        })
        .await;
        assert!(sc.targets().contains(&format!("{ip}:9100")));
        let now = FileSdStats::settled(&url, TARGETS + round + 1, QUIET, long).await;
        let scans = now.scans - last.scans;
        eprintln!(
            "change {}: {scans} scans, {:.3} s of scanning",
            round + 1,
            now.scan_seconds - last.scan_seconds
        );
        assert!(scans >= 1.0, "Prometheus read the change: {now:?}");
        assert!(
            scans <= 2.0,
            "one change cost Prometheus {scans} file_sd scans (at most 2)"
        );
        last = now;
    }
    assert_eq!(last.read_errors, 0.0, "Prometheus failed to read our file");
    let staging = sd.join(".cloudmap-sd-staging");
    assert!(
        staging.is_dir(),
        "temporary files were written beside the file"
    );
    let log = sc.proc.log_text();
    assert!(!log.contains("staging directory cannot be used"), "{log}");
}

/// The file no longer repeats `__address__` in each group's labels: Prometheus sets
/// it from `targets`. Two jobs read the same groups, one file with `__address__` in
/// the labels and one without: Prometheus makes the same targets of both (address,
/// `instance`, every other label, before and after relabelling).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_needs_no_address_label_beside_targets() {
    let group = |addr: &str, with: bool| {
        let mut labels = serde_json::json!({
            "__metrics_path__": "/m",
            "__scheme__": "https",
            "cloudmap_service": "web",
            "__meta_cloudmap_service_tag_team": "blue",
        });
        if with {
            labels["__address__"] = addr.into();
        }
        serde_json::json!({"targets": [addr], "labels": labels})
    };
    let dir = tempfile::tempdir().unwrap();
    let mut config = String::from("global:\n  scrape_interval: 1h\nscrape_configs:\n");
    for (job, with) in [("with", true), ("without", false)] {
        let sd = dir.path().join(job);
        std::fs::create_dir(&sd).unwrap();
        let groups: Vec<_> = ["10.0.0.1:9100", "[2001:db8::1]:8080"]
            .iter()
            .map(|a| group(a, with))
            .collect();
        std::fs::write(sd.join("t.json"), serde_json::to_vec(&groups).unwrap()).unwrap();
        config += &format!(
            "  - job_name: {job}\n    file_sd_configs:\n      - files: ['{}/*.json']\n",
            sd.display()
        );
    }
    let (_prometheus, url) = prometheus(&dir.path().join("prometheus"), &config);
    let api = format!("{url}/api/v1/targets");
    let active = wait_for_async(Duration::from_secs(40), "4 targets", || {
        let api = api.clone();
        async move {
            let (_, body) = http_get(&api).await?;
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            let a = v["data"]["activeTargets"].as_array()?.clone();
            (a.len() == 4).then_some(a)
        }
    })
    .await;
    // Per job: (discovered labels, labels) of each target, without what names the job
    // or the file.
    let of = |job: &str| {
        let mut v: Vec<(serde_json::Value, serde_json::Value)> = active
            .iter()
            .filter(|t| t["labels"]["job"] == job)
            .map(|t| {
                let mut d = t["discoveredLabels"].clone();
                let mut l = t["labels"].clone();
                for m in [&mut d, &mut l] {
                    let m = m.as_object_mut().unwrap();
                    m.remove("job");
                    m.remove("__meta_filepath");
                }
                (d, l)
            })
            .collect();
        v.sort_by_key(|x| x.0.to_string());
        v
    };
    let (with, without) = (of("with"), of("without"));
    eprintln!("without __address__ in labels: {without:?}");
    assert_eq!(with, without);
    let instances: Vec<&str> = without
        .iter()
        .map(|(_, l)| l["instance"].as_str().unwrap())
        .collect();
    assert_eq!(instances, vec!["10.0.0.1:9100", "[2001:db8::1]:8080"]);
    for (d, l) in &without {
        assert_eq!(d["__address__"], l["instance"], "{d} {l}");
    }
}
