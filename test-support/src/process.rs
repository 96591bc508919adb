//! Child processes killed on drop, their logs, and finding the tools they run.

use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The repository root (this crate's parent directory).
pub fn repo() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent()
        .expect("test-support sits in the repository")
        .to_path_buf()
}

/// The Python venv the scripts install moto server and the test tools into
/// (`scripts/lib/paths.sh` says where): `CLOUDMAP_SD_VENV`, else `venv` in
/// `CLOUDMAP_SD_CACHE`, else `~/.cache/cloudmap-sd/venv` (`XDG_CACHE_HOME` honoured).
pub fn venv() -> PathBuf {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(v) = var("CLOUDMAP_SD_VENV") {
        return v;
    }
    let cache = var("CLOUDMAP_SD_CACHE").unwrap_or_else(|| {
        var("XDG_CACHE_HOME")
            .or_else(|| var("HOME").map(|h| h.join(".cache")))
            .unwrap_or_else(|| PathBuf::from(".cache"))
            .join("cloudmap-sd")
    });
    cache.join("venv")
}

pub fn tool(env_var: &str, default: PathBuf, what: &str) -> PathBuf {
    let p = std::env::var_os(env_var)
        .map(PathBuf::from)
        .unwrap_or(default);
    if !p.exists() {
        panic!(
            "{what} not found at {} (set {env_var} or run `scripts/stack.sh install`, \
             which installs moto server in its venv and Prometheus from apt)",
            p.display()
        );
    }
    p
}

pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed on drop.
pub struct Proc {
    pub child: Child,
    pub name: &'static str,
    pub log: PathBuf,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(st.success(), "kill -{sig} {}", self.pid());
    }
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    /// Waits for the process to exit, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn spawn_logged(mut cmd: Command, name: &'static str, dir: &Path) -> Proc {
    let log = dir.join(format!("{name}.log"));
    let f = std::fs::File::create(&log).unwrap();
    cmd.stdout(f.try_clone().unwrap())
        .stderr(f)
        .stdin(Stdio::null());
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
    Proc { child, name, log }
}

pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}
