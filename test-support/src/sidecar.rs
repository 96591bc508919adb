//! The `cloudmap-sd` binary: one-shot runs and a running `cloudmap-sd run`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::http::http_get;
use crate::process::{Proc, free_port, spawn_logged};
use crate::seeder::aws_env;
use crate::wait::wait_for_async;

/// The `cloudmap-sd` binary: `$CLOUDMAP_SD_BIN`, else the one cargo built beside the
/// running test (an integration test runs from `target/PROFILE/deps/`, and cargo builds
/// the package's binaries into `target/PROFILE/` before its integration tests).
pub fn sidecar_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("CLOUDMAP_SD_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("the test's own path");
    let mut dir = exe.parent().expect("the test's directory");
    if dir.ends_with("deps") {
        dir = dir.parent().expect("the profile directory");
    }
    let bin = dir.join("cloudmap-sd");
    assert!(
        bin.exists(),
        "no cloudmap-sd binary at {} (run the tests with `cargo test`, which builds it, \
         or set CLOUDMAP_SD_BIN)",
        bin.display()
    );
    bin
}

/// Runs `cloudmap-sd ARGS` to completion with `env`.
pub fn run_cli(args: &[&str], env: &[(&'static str, String)]) -> Output {
    let mut cmd = Command::new(sidecar_bin());
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// A running `cloudmap-sd run`.
pub struct Sidecar {
    pub proc: Proc,
    pub listen: String,
    pub output: PathBuf,
}

impl Sidecar {
    /// Starts `cloudmap-sd run` writing `dir/targets.json`, with extra args.
    pub fn start(dir: &Path, aws_url: &str, extra: &[&str]) -> Sidecar {
        Sidecar::start_writing(dir, &dir.join("targets.json"), aws_url, extra)
    }

    /// Starts `cloudmap-sd run --output none`: no file, the targets served at
    /// /sd/targets only; its log in `dir`.
    pub fn start_serving(dir: &Path, aws_url: &str, extra: &[&str]) -> Sidecar {
        Sidecar::start_writing(dir, Path::new("none"), aws_url, extra)
    }

    /// Starts `cloudmap-sd run` writing `output`, its log in `dir`.
    pub fn start_writing(dir: &Path, output: &Path, aws_url: &str, extra: &[&str]) -> Sidecar {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let output = output.to_path_buf();
        let mut cmd = Command::new(sidecar_bin());
        cmd.arg("run")
            .args(["--output", output.to_str().unwrap(), "--listen", &listen])
            .args(extra)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap())
            .env("RUST_LOG", "info");
        for (k, v) in aws_env(aws_url) {
            cmd.env(k, v);
        }
        let proc = spawn_logged(cmd, "cloudmap-sd", dir);
        Sidecar {
            proc,
            listen,
            output,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.listen)
    }

    /// Waits until /-/ready answers 200.
    pub async fn wait_ready(&self, timeout: Duration) {
        let url = self.url("/-/ready");
        let start = Instant::now();
        loop {
            if let Some((200, _)) = http_get(&url).await {
                return;
            }
            if start.elapsed() > timeout {
                panic!(
                    "sidecar not ready after {timeout:?}; log:\n{}",
                    self.proc.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The sidecar's resident memory (VmRSS of /proc/PID/status), in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.proc.pid()))
            .expect("the sidecar runs");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("a VmRSS line")
    }

    /// Sum of one metric's samples (all label sets).
    pub async fn metric(&self, name: &str) -> f64 {
        let (_, body) = http_get(&self.url("/metrics")).await.expect("metrics");
        sum_metric(&body, name)
    }

    /// Discovery cycles counted so far, every outcome.
    pub async fn cycles(&self) -> f64 {
        self.metric("cloudmap_sd_cycles_total").await
    }

    /// Waits, up to `timeout`, until `n` more cycles than now have been counted. The
    /// counter moves before a cycle writes its file: `n - 1` of them have written.
    pub async fn wait_cycles(&self, n: u32, timeout: Duration) {
        let from = self.cycles().await;
        let what = format!("{n} more cycles after cycle {from}");
        wait_for_async(timeout, &what, || async {
            (self.cycles().await >= from + f64::from(n)).then_some(())
        })
        .await;
    }

    /// The targets in the output file (`targets[0]` of each group).
    pub fn targets(&self) -> Vec<String> {
        read_targets(&self.output)
    }
}

pub fn sum_metric(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| {
            l.starts_with(name) && matches!(l.as_bytes().get(name.len()), Some(b' ') | Some(b'{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Parses a file_sd file; panics if it is not valid.
pub fn parse_file(path: &Path) -> Vec<serde_json::Value> {
    let bytes = std::fs::read(path).unwrap();
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display()))
}

/// Every label of the target group whose target is `addr`; panics when none is.
pub fn labels_of(groups: &[serde_json::Value], addr: &str) -> BTreeMap<String, String> {
    let g = groups
        .iter()
        .find(|g| g["targets"][0] == addr)
        .unwrap_or_else(|| panic!("no target {addr} in {groups:?}"));
    g["labels"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect()
}

pub fn read_targets(path: &Path) -> Vec<String> {
    let mut v: Vec<String> = parse_file(path)
        .iter()
        .map(|g| g["targets"][0].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}
