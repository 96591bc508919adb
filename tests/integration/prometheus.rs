//! End to end: moto server -> cloudmap-sd run -> file -> a real Prometheus with
//! file_sd_configs, checked through Prometheus's own /api/v1/targets.

use std::time::Duration;

use cloudmap_sd_test_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_shows_the_targets_with_their_labels() {
    let moto = Moto::start();
    let s = Seeder::new(&moto.url).await;
    let ns = s.http_namespace("apps").await;
    let web = s
        .service(
            &ns,
            "web",
            &[("METRICS_PATH", "/metrics"), ("METRICS_PORT", "9100")],
        )
        .await;
    let api = s
        .service(
            &ns,
            "api",
            &[
                ("METRICS_PATH", "/m"),
                ("ECS_METRICS_PATH", "/stats"),
                ("ECS_METRICS_PORT", "9779"),
            ],
        )
        .await;
    s.task(&web, "0a0a", "127.0.0.11", None).await;
    s.task(&web, "0b0b", "127.0.0.12", None).await;
    s.task(&api, "0c0c", "127.0.0.13", Some(8080)).await;

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
