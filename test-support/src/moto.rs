//! A moto server process on a free loopback port.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::http::post_blocking;
use crate::process::{Proc, free_port, spawn_logged, tool, venv};

/// A moto server on a free loopback port.
pub struct Moto {
    pub url: String,
    pub port: u16,
    _proc: Proc,
    _dir: tempfile::TempDir,
}

impl Moto {
    pub fn start() -> Moto {
        let bin = tool(
            "CLOUDMAP_SD_MOTO_SERVER",
            venv().join("bin/moto_server"),
            "moto server",
        );
        let dir = tempfile::tempdir().unwrap();
        for _ in 0..3 {
            let port = free_port();
            let mut cmd = Command::new(&bin);
            cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
            let mut p = spawn_logged(cmd, "moto", dir.path());
            let url = format!("http://127.0.0.1:{port}");
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(30) {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    let m = Moto {
                        url,
                        port,
                        _proc: p,
                        _dir: dir,
                    };
                    m.set_ecs_tasks_stay_running();
                    return m;
                }
                if p.child.try_wait().unwrap().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            eprintln!("moto on port {port} did not start: {}", p.log_text());
        }
        panic!("moto server did not start");
    }

    /// POSTs a JSON `body` to moto's own API (`/moto-api/...`); panics unless 2xx.
    /// Usable from sync and async code.
    pub fn post(&self, path: &str, body: &str) {
        let url = format!("{}{path}", self.url);
        let (status, text) =
            post_blocking(&url, body).unwrap_or_else(|| panic!("POST {url}: no answer"));
        assert!((200..300).contains(&status), "POST {url}: {status} {text}");
    }

    /// Empties every moto backend.
    pub fn reset(&self) {
        self.post("/moto-api/reset", "");
    }

    fn set_ecs_tasks_stay_running(&self) {
        self.post(
            "/moto-api/state-manager/set-transition",
            r#"{"model_name":"ecs::task","transition":{"progression":"manual","times":1000000}}"#,
        );
    }
}
