//! A real Prometheus on loopback: a server, or an agent (`--enable-feature=agent`
//! in 2.x), with file_sd or http_sd jobs, and what it says about its targets.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::http::http_get;
use crate::process::{Proc, free_port, spawn_logged, which};

/// The Prometheus binary; panics with instructions when there is none.
pub fn prometheus_bin() -> PathBuf {
    std::env::var_os("CLOUDMAP_SD_PROMETHEUS")
        .map(PathBuf::from)
        .or_else(|| which("prometheus"))
        .unwrap_or_else(|| {
            panic!(
                "prometheus not found on PATH (set CLOUDMAP_SD_PROMETHEUS or run \
                 `scripts/stack.sh install`, which installs it with apt)"
            )
        })
}

/// How a test Prometheus runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A local TSDB in `dir/tsdb`.
    Server,
    /// Agent mode: 2.x's `--enable-feature=agent`, its WAL in `dir/agent` (2.x
    /// refuses `--storage.tsdb.path` then; 3.x spells the flag `--agent`).
    Agent,
}

/// Starts Prometheus in `mode` on 127.0.0.1:`port` with `config` (YAML), data in
/// `dir` (a fixed port lets a stopped Prometheus come back at the same address).
pub fn prometheus_in(mode: Mode, dir: &Path, port: u16, config: &str, extra: &[&str]) -> Proc {
    std::fs::create_dir_all(dir).unwrap();
    let cfg = dir.join("prometheus.yml");
    std::fs::write(&cfg, config).unwrap();
    let mut cmd = Command::new(prometheus_bin());
    cmd.arg(format!("--config.file={}", cfg.display()));
    match mode {
        Mode::Server => cmd.arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        )),
        Mode::Agent => cmd.arg("--enable-feature=agent").arg(format!(
            "--storage.agent.path={}",
            dir.join("agent").display()
        )),
    };
    cmd.arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .args(extra);
    spawn_logged(cmd, "prometheus", dir)
}

/// Starts a Prometheus server on 127.0.0.1:`port` with `config` (YAML), data in `dir`.
pub fn prometheus_on(dir: &Path, port: u16, config: &str, extra: &[&str]) -> Proc {
    prometheus_in(Mode::Server, dir, port, config, extra)
}

/// Starts a real Prometheus with `config` (YAML) in `dir`; returns it and its URL.
pub fn prometheus(dir: &Path, config: &str) -> (Proc, String) {
    let port = free_port();
    let p = prometheus_on(dir, port, config, &[]);
    (p, format!("http://127.0.0.1:{port}"))
}

/// One `scrape_configs` entry (YAML, indented for the list under `scrape_configs:`)
/// that reads its targets from `url` with `http_sd_configs` every `refresh`,
/// sending the token of `token_file` as `authorization: {type: Bearer}` when given.
pub fn http_sd_job(job: &str, url: &str, refresh: &str, token_file: Option<&Path>) -> String {
    let auth = token_file.map_or(String::new(), |f| {
        format!(
            "        authorization:\n          type: Bearer\n          credentials_file: {}\n",
            f.display()
        )
    });
    format!(
        "  - job_name: {job}\n    scrape_interval: 1m\n    http_sd_configs:\n      - url: '{url}'\n        refresh_interval: {refresh}\n{auth}"
    )
}

/// The active targets Prometheus at `url` lists (`/api/v1/targets`), for `job`
/// only when given; None when it does not answer.
pub async fn active_targets(url: &str, job: Option<&str>) -> Option<Vec<serde_json::Value>> {
    let (status, body) = http_get(&format!("{url}/api/v1/targets?state=active")).await?;
    if status != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    let all = v["data"]["activeTargets"].as_array()?.clone();
    Some(
        all.into_iter()
            .filter(|t| job.is_none_or(|j| t["labels"]["job"] == j))
            .collect(),
    )
}

/// A Prometheus configuration with one job reading `files` (a file_sd glob) and
/// nothing else. `refresh` is file_sd's periodic re-read (its own timer, besides
/// the directory watch); the scrape interval is an hour, so Prometheus hardly scrapes
/// the (unreachable) targets while a test or the benchmark looks at discovery.
pub fn file_sd_config(job: &str, files: &Path, refresh: &str) -> String {
    format!(
        "global:\n  scrape_interval: 1h\nscrape_configs:\n  - job_name: {job}\n    \
         file_sd_configs:\n      - files: ['{}']\n        refresh_interval: {refresh}\n",
        files.display()
    )
}

/// What a Prometheus says of its own file_sd and of itself (its `/metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FileSdStats {
    /// `prometheus_sd_file_scan_duration_seconds_count`: file_sd scans so far (each
    /// one reads and parses every file its globs match).
    pub scans: f64,
    /// `prometheus_sd_file_scan_duration_seconds_sum`: seconds spent scanning.
    pub scan_seconds: f64,
    /// `prometheus_sd_file_read_errors_total`: files it could not read or parse.
    pub read_errors: f64,
    /// `prometheus_sd_discovered_targets`, every scrape config.
    pub discovered: f64,
    /// `process_resident_memory_bytes`.
    pub rss_bytes: f64,
    /// `go_memstats_heap_inuse_bytes`.
    pub heap_inuse_bytes: f64,
}

impl FileSdStats {
    /// Reads them from the Prometheus at `url`; None when it does not answer.
    pub async fn read(url: &str) -> Option<FileSdStats> {
        let (status, body) = http_get(&format!("{url}/metrics")).await?;
        if status != 200 {
            return None;
        }
        let m = |name| crate::sidecar::sum_metric(&body, name);
        Some(FileSdStats {
            scans: m("prometheus_sd_file_scan_duration_seconds_count"),
            scan_seconds: m("prometheus_sd_file_scan_duration_seconds_sum"),
            read_errors: m("prometheus_sd_file_read_errors_total"),
            discovered: m("prometheus_sd_discovered_targets"),
            rss_bytes: m("process_resident_memory_bytes"),
            heap_inuse_bytes: m("go_memstats_heap_inuse_bytes"),
        })
    }

    /// Waits, up to `timeout`, until Prometheus has discovered `targets` targets and
    /// its scans have stopped: the scan count unchanged for `quiet`, and for at
    /// least four times the longest a scan has taken on average so far (a scan in
    /// progress is not yet counted). Panics naming what it waited for.
    ///
    /// "At most N scans" needs the scans to be over, and Prometheus has no signal for
    /// an empty event queue; the window is what ends the count. Stopping early can
    /// only count fewer scans, never more.
    pub async fn settled(url: &str, targets: usize, quiet: Duration, timeout: Duration) -> Self {
        let start = Instant::now();
        let mut last: Option<(FileSdStats, Instant)> = None;
        loop {
            if let Some(now) = FileSdStats::read(url).await {
                let mean = if now.scans > 0.0 {
                    Duration::from_secs_f64(now.scan_seconds / now.scans)
                } else {
                    Duration::ZERO
                };
                let window = quiet.max(mean * 4);
                match last {
                    Some((prev, since)) if prev.scans == now.scans => {
                        if now.discovered as usize == targets && since.elapsed() >= window {
                            return now;
                        }
                        last = Some((now, since));
                    }
                    _ => last = Some((now, Instant::now())),
                }
            }
            if start.elapsed() > timeout {
                panic!(
                    "timed out after {timeout:?} waiting for Prometheus at {url} to discover \
                     {targets} targets and stop scanning (last seen: {:?})",
                    last.map(|l| l.0)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
