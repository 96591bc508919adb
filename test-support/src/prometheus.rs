//! A real Prometheus on loopback.

use std::path::{Path, PathBuf};
use std::process::Command;

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

/// Starts Prometheus on 127.0.0.1:`port` with `config` (YAML), data in `dir`
/// (a fixed port lets a stopped Prometheus come back at the same address).
pub fn prometheus_on(dir: &Path, port: u16, config: &str, extra: &[&str]) -> Proc {
    std::fs::create_dir_all(dir).unwrap();
    let cfg = dir.join("prometheus.yml");
    std::fs::write(&cfg, config).unwrap();
    let mut cmd = Command::new(prometheus_bin());
    cmd.arg(format!("--config.file={}", cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .args(extra);
    spawn_logged(cmd, "prometheus", dir)
}

/// Starts a real Prometheus with `config` (YAML) in `dir`; returns it and its URL.
pub fn prometheus(dir: &Path, config: &str) -> (Proc, String) {
    let port = free_port();
    let p = prometheus_on(dir, port, config, &[]);
    (p, format!("http://127.0.0.1:{port}"))
}
