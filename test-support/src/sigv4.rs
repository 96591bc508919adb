//! The botocore-verified AMP stand-in (`sigv4_server.py` in this crate).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::process::{Proc, spawn_logged, tool, venv};

/// The test venv's Python (with boto3 / botocore).
pub fn python() -> PathBuf {
    tool(
        "CLOUDMAP_SD_PYTHON",
        venv().join("bin/python"),
        "Python with botocore",
    )
}

/// The botocore-verified AMP stand-in (`sigv4_server.py` in this crate): checks each
/// request's SigV4 signature independently of our code and answers `statuses` in turn.
pub struct Sigv4Server {
    pub url: String,
    pub proc: Proc,
    _dir: tempfile::TempDir,
}

impl Sigv4Server {
    pub fn start(access_key: &str, secret: &str, region: &str, statuses: &[u16]) -> Sigv4Server {
        let dir = tempfile::tempdir().unwrap();
        let port_file = dir.path().join("port");
        let statuses: Vec<String> = statuses.iter().map(u16::to_string).collect();
        let mut cmd = Command::new(python());
        cmd.arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sigv4_server.py"))
            .arg(&port_file)
            .args([access_key, secret, region, &statuses.join(",")]);
        let mut proc = spawn_logged(cmd, "sigv4-server", dir.path());
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
