//! A real Prometheus on loopback: a server, or an agent (`--enable-feature=agent`
//! in 2.x), with file_sd or http_sd jobs, and what it says about its targets.

use std::path::{Path, PathBuf};
use std::process::Command;

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
