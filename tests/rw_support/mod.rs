//! Test helpers for remote_write health: the botocore SigV4 checking server and
//! Prometheus on a chosen port (so a stopped receiver can come back on the same one).
//! A missing tool fails the test with instructions; nothing is skipped.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The test venv's Python (with botocore).
pub fn python() -> PathBuf {
    let p = std::env::var_os("CLOUDMAP_SD_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv/bin/python"));
    if !p.exists() {
        panic!(
            "Python with botocore not found at {} (set CLOUDMAP_SD_PYTHON or run \
             `scripts/stack.sh install`, which creates .venv with boto3/botocore)",
            p.display()
        );
    }
    p
}

/// The Prometheus binary.
pub fn prometheus_bin() -> PathBuf {
    std::env::var_os("CLOUDMAP_SD_PROMETHEUS")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|d| d.join("prometheus"))
                    .find(|p| p.is_file())
            })
        })
        .unwrap_or_else(|| {
            panic!(
                "prometheus not found on PATH (set CLOUDMAP_SD_PROMETHEUS or run \
                 `scripts/stack.sh install`, which installs it with apt)"
            )
        })
}

/// A child process killed (SIGKILL) and reaped on drop.
pub struct Killed {
    pub child: Child,
    pub log: PathBuf,
}

impl Killed {
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(mut cmd: Command, log: PathBuf) -> Killed {
    let f = std::fs::File::create(&log).unwrap();
    cmd.stdout(f.try_clone().unwrap())
        .stderr(f)
        .stdin(Stdio::null());
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    Killed { child, log }
}

/// The botocore-verified AMP stand-in (tests/common/sigv4_server.py).
pub struct Sigv4Server {
    pub url: String,
    pub proc: Killed,
    _dir: tempfile::TempDir,
}

impl Sigv4Server {
    pub fn start(access_key: &str, secret: &str, region: &str, statuses: &[u16]) -> Sigv4Server {
        let dir = tempfile::tempdir().unwrap();
        let port_file = dir.path().join("port");
        let statuses: Vec<String> = statuses.iter().map(u16::to_string).collect();
        let mut cmd = Command::new(python());
        cmd.arg(repo().join("tests/common/sigv4_server.py"))
            .arg(&port_file)
            .args([access_key, secret, region, &statuses.join(",")]);
        let mut proc = spawn(cmd, dir.path().join("server.log"));
        let start = Instant::now();
        let port = loop {
            if let Ok(p) = std::fs::read_to_string(&port_file) {
                break p.trim().to_string();
            }
            if let Some(st) = proc.child.try_wait().unwrap() {
                panic!("sigv4_server.py exited ({st}): {}", proc.log_text());
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "sigv4_server.py did not start: {}",
                proc.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        Sigv4Server {
            url: format!("http://127.0.0.1:{port}"),
            proc,
            _dir: dir,
        }
    }

    /// One line per request: `ok STATUS` or `bad REASON`.
    pub fn lines(&self) -> Vec<String> {
        self.proc.log_text().lines().map(str::to_string).collect()
    }
}

/// Starts Prometheus on 127.0.0.1:`port` with `config`, data in `dir`.
pub fn prometheus_on(dir: &Path, port: u16, config: &str, extra: &[&str]) -> Killed {
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
    spawn(cmd, dir.join("prometheus.log"))
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `f` every 100 ms until it returns Some, or panics with `what` after `timeout`.
pub async fn wait_for_async<T, F: std::future::Future<Output = Option<T>>>(
    timeout: Duration,
    what: &str,
    mut f: impl FnMut() -> F,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The status of `GET url`; None when it cannot connect.
pub async fn get_status(url: &str) -> Option<u16> {
    use http_body_util::Full;
    use hyper::body::Bytes;
    use hyper_util::client::legacy::Client;
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::rt::TokioExecutor;
    let c: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let r = tokio::time::timeout(Duration::from_secs(5), c.get(url.parse().ok()?))
        .await
        .ok()?
        .ok()?;
    Some(r.status().as_u16())
}
