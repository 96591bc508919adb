//! The sidecar under faults, through the real binary against moto server: a
//! throttling storm while tasks churn, a stalled endpoint against the cycle
//! deadline, disk faults on a real filesystem, and sharding.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cloudmap_sd_test_support::*;

const T: Duration = Duration::from_secs(30);

/// Reads the file every few milliseconds while the test runs: every read must be a
/// whole, valid file_sd document, and a target in `stable` once seen must be in
/// every later read.
struct Reader {
    stop: Arc<AtomicBool>,
    reads: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

impl Reader {
    fn start(path: PathBuf, stable: BTreeSet<String>) -> Reader {
        let stop = Arc::new(AtomicBool::new(false));
        let reads = Arc::new(AtomicUsize::new(0));
        let (s, r) = (stop.clone(), reads.clone());
        let task = tokio::spawn(async move {
            let mut seen: BTreeSet<String> = BTreeSet::new();
            while !s.load(Ordering::SeqCst) {
                if let Ok(bytes) = std::fs::read(&path) {
                    let groups: Vec<serde_json::Value> =
                        serde_json::from_slice(&bytes).map_err(|e| {
                            format!(
                                "partial or invalid file read ({e}): {:?}",
                                String::from_utf8_lossy(&bytes)
                            )
                        })?;
                    let now: BTreeSet<String> = groups
                        .iter()
                        .filter_map(|g| g["targets"][0].as_str().map(str::to_string))
                        .collect();
                    if let Some(lost) = seen.difference(&now).next() {
                        return Err(format!("published target {lost} was dropped"));
                    }
                    seen.extend(now.intersection(&stable).cloned());
                    r.fetch_add(1, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok(())
        });
        Reader { stop, reads, task }
    }

    async fn finish(self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        if let Err(e) = self.task.await.unwrap() {
            panic!("{e}");
        }
        self.reads.load(Ordering::SeqCst)
    }
}

fn ip(service: usize, task: usize) -> String {
    format!("10.{service}.{}.{}", task / 200, task % 200 + 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_storm_while_tasks_churn() {
    let moto = Moto::start();
    let proxy = Proxy::start(&moto.url).await;
    let s = Seeder::new(&moto.url).await;
    let ns = s.http_namespace("storm").await;
    let services = 6;
    let mut ids = Vec::new();
    let mut truth: BTreeSet<String> = BTreeSet::new();
    let mut stable = BTreeSet::new();
    for i in 0..services {
        let svc = s
            .service(&ns, &format!("svc{i}"), &[("METRICS_PATH", "/m")])
            .await;
        for t in 0..3 {
            s.task(&svc, &format!("s{i}t{t}"), &ip(i, t), Some(80))
                .await;
            let target = format!("{}:80", ip(i, t));
            truth.insert(target.clone());
            if t < 2 {
                stable.insert(target);
            }
        }
        ids.push(svc);
    }
    let dir = tempfile::tempdir().unwrap();
    let sc = Sidecar::start(
        dir.path(),
        &proxy.url,
        &[
            "--interval",
            "1s",
            "--services-refresh",
            "2s",
            "--tags-refresh",
            "3s",
            // moto's InstancesRevision is a sum of per-instance counters: replacing
            // a task leaves it equal, so only full reads see this churn.
            "--full-refresh",
            "1s",
            "--ecs-enrichment",
            "false",
        ],
    );
    sc.wait_ready(T).await;
    assert_eq!(sc.targets().into_iter().collect::<BTreeSet<_>>(), truth);
    let reader = Reader::start(sc.output.clone(), stable.clone());

    // Thirty replacements of one task per service, one every two cycles, with half
    // of all calls throttled.
    proxy.set_fault_rate(Fault::Throttle, 0.5);
    for generation in 3..33 {
        for (i, svc) in ids.iter().enumerate() {
            let old = generation - 1;
            s.deregister(svc, &format!("s{i}t{old}")).await;
            truth.remove(&format!("{}:80", ip(i, old)));
            s.task(
                svc,
                &format!("s{i}t{generation}"),
                &ip(i, generation),
                Some(80),
            )
            .await;
            truth.insert(format!("{}:80", ip(i, generation)));
        }
        sc.wait_cycles(2, T).await;
    }
    let injected: u64 = proxy.injected().values().sum();
    let total = proxy.total();
    proxy.set_fault(Fault::Pass);
    assert!(
        injected * 10 >= total * 4,
        "the storm throttled only {injected} of {total} calls"
    );
    let throttled = sc
        .metric("cloudmap_sd_aws_api_calls_total{operation=\"DiscoverInstancesRevision\",outcome=\"throttled\"}")
        .await;
    let (_, m) = http_get(&sc.url("/metrics")).await.unwrap();
    assert!(
        throttled > 0.0,
        "no call failed as throttled after retries\n{m}\n{:?}",
        proxy.injected()
    );

    // Within one cycle after the storm the file is the truth again: wait for the
    // cycle in flight to end and one more to run.
    let cycles = sc.metric("cloudmap_sd_cycles_total").await;
    wait_for_async(T, "two cycles after the storm", || async {
        (sc.metric("cloudmap_sd_cycles_total").await >= cycles + 2.0).then_some(())
    })
    .await;
    let reads = reader.finish().await;
    assert!(reads > 1000, "only {reads} reads of the file");
    assert_eq!(
        sc.targets().into_iter().collect::<BTreeSet<_>>(),
        truth,
        "file differs from Cloud Map one cycle after the storm; log:\n{}",
        sc.proc.log_text()
    );
    assert!(sc.proc.log_text().contains("throttled"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_endpoint_does_not_stall_the_loop() {
    let moto = Moto::start();
    let proxy = Proxy::start(&moto.url).await;
    let s = Seeder::new(&moto.url).await;
    let ns = s.http_namespace("apps").await;
    let a = s.service(&ns, "a", &[("METRICS_PATH", "/m")]).await;
    let b = s.service(&ns, "b", &[("METRICS_PATH", "/m")]).await;
    s.task(&a, "a1", "10.0.0.1", Some(80)).await;
    s.task(&b, "b1", "10.0.1.1", Some(80)).await;
    let dir = tempfile::tempdir().unwrap();
    // The API timeout alone would hold each stalled call for a minute.
    let sc = Sidecar::start(
        dir.path(),
        &proxy.url,
        &[
            "--interval",
            "1s",
            "--cycle-timeout",
            "2s",
            "--api-timeout",
            "60s",
            "--ecs-enrichment",
            "false",
        ],
    );
    sc.wait_ready(T).await;
    assert_eq!(sc.targets(), vec!["10.0.0.1:80", "10.0.1.1:80"]);

    // Every second revision call never answers: one service stalls each cycle.
    proxy.set_fault_for_rate("DiscoverInstancesRevision", Fault::Stall, 0.5);
    let before = sc.metric("cloudmap_sd_cycles_total").await;
    s.task(&a, "a2", "10.0.0.2", Some(80)).await;
    let started = Instant::now();
    wait_for_async(T, "four cycles during the stall", || async {
        (sc.metric("cloudmap_sd_cycles_total").await >= before + 4.0).then_some(())
    })
    .await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(16),
        "4 cycles took {took:?} with a 2s cycle timeout and a 1s interval"
    );
    assert!(
        sc.metric("cloudmap_sd_cycle_deadline_exceeded_total").await >= 3.0,
        "{}",
        sc.proc.log_text()
    );
    let (_, m) = http_get(&sc.url("/metrics")).await.unwrap();
    let count = sum_metric(&m, "cloudmap_sd_cycle_duration_seconds_count");
    let under = sum_metric(&m, "cloudmap_sd_cycle_duration_seconds_bucket{le=\"2.5\"}");
    assert_eq!(count, under, "a cycle ran past the deadline:\n{m}");
    // Nothing published was lost; the stalled service keeps its targets.
    let now = sc.targets();
    assert!(now.contains(&"10.0.0.1:80".to_string()), "{now:?}");
    assert!(now.contains(&"10.0.1.1:80".to_string()), "{now:?}");
    assert!(sc.proc.log_text().contains("cycle deadline reached"));

    proxy.set_fault_for("DiscoverInstancesRevision", Fault::Pass);
    wait_for(T, "the new task once the endpoint answers", || {
        sc.targets()
            .contains(&"10.0.0.2:80".to_string())
            .then_some(())
    });
}

/// A tmpfs mounted for one test and unmounted when dropped. Needs root (CI runs
/// as root); fails with instructions otherwise.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        let uid = String::from_utf8(Command::new("id").arg("-u").output().unwrap().stdout).unwrap();
        assert_eq!(
            uid.trim(),
            "0",
            "the disk-fault tests mount a small tmpfs to fill it and make it read-only: \
             run them as root (CI does), e.g. `sudo -E cargo test --test faults`"
        );
        std::fs::create_dir_all(dir).unwrap();
        mount(
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ],
            dir,
        );
        Tmpfs {
            dir: dir.to_path_buf(),
        }
    }

    fn remount(&self, mode: &str) {
        mount(&["-o", &format!("remount,{mode}")], &self.dir);
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

fn mount(args: &[&str], dir: &Path) {
    let out = Command::new("mount")
        .args(args)
        .arg(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run mount ({e}): install util-linux"));
    assert!(
        out.status.success(),
        "mount {args:?} {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Status and body of /-/ready; (0, "") while the sidecar does not listen yet.
async fn ready_body(sc: &Sidecar) -> (u16, String) {
    http_get(&sc.url("/-/ready")).await.unwrap_or_default()
}

/// Waits until /-/ready answers 503 naming `needle`, and the write_failing gauge
/// shows `reason`.
async fn wait_not_ready(sc: &Sidecar, needle: &str, reason: &str) {
    wait_for_async(T, &format!("not ready: {needle}"), || async {
        let (status, body) = ready_body(sc).await;
        (status == 503 && body.contains(needle)).then_some(())
    })
    .await;
    let gauge = format!("cloudmap_sd_write_failing{{file=\"targets\",reason=\"{reason}\"}}");
    assert_eq!(sc.metric(&gauge).await, 1.0, "{gauge}");
    assert_eq!(sc.metric("cloudmap_sd_ready").await, 0.0);
}

async fn wait_recovered(sc: &Sidecar, target: &str) {
    wait_for_async(T, "ready again with the new target", || async {
        let (status, _) = ready_body(sc).await;
        (status == 200 && sc.targets().contains(&target.to_string())).then_some(())
    })
    .await;
    assert_eq!(sc.metric("cloudmap_sd_write_failing").await, 0.0);
    assert_eq!(sc.metric("cloudmap_sd_ready").await, 1.0);
}

/// Temporary files in `dir` and in its staging directory.
fn temp_files(dir: &Path) -> Vec<String> {
    [dir.to_path_buf(), dir.join(".cloudmap-sd-staging")]
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flat_map(|d| d.flatten())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_faults_are_reported_and_recovered_from() {
    let moto = Moto::start();
    let s = Seeder::new(&moto.url).await;
    let ns = s.http_namespace("apps").await;
    let svc = s.service(&ns, "web", &[("METRICS_PATH", "/m")]).await;
    s.task(&svc, "t1", "10.0.0.1", Some(80)).await;
    let base = tempfile::tempdir().unwrap();
    let mnt = base.path().join("sd");
    let args = ["--interval", "1s", "--ecs-enrichment", "false"];

    // 1. The output directory does not exist yet: not ready, and why.
    let sc = Sidecar::start_writing(base.path(), &mnt.join("targets.json"), &moto.url, &args);
    wait_not_ready(&sc, "the directory does not exist", "missing_directory").await;
    let fs = Tmpfs::mount(&mnt, "256k");
    wait_recovered(&sc, "10.0.0.1:80").await;

    // 2. Read-only: the previous file stays, readiness says so, and it recovers.
    let before = std::fs::read(&sc.output).unwrap();
    fs.remount("ro");
    s.task(&svc, "t2", "10.0.0.2", Some(80)).await;
    wait_not_ready(&sc, "read-only", "read_only").await;
    assert_eq!(std::fs::read(&sc.output).unwrap(), before);
    fs.remount("rw");
    wait_recovered(&sc, "10.0.0.2:80").await;

    // 3. Full: the write fails, the previous file is whole, no temp file is left.
    let before = std::fs::read(&sc.output).unwrap();
    let filler = mnt.join("filler");
    let out = Command::new("dd")
        .args(["if=/dev/zero", "bs=4k"])
        .arg(format!("of={}", filler.display()))
        .output()
        .unwrap();
    assert!(!out.status.success(), "dd should stop at a full filesystem");
    for i in 3..40 {
        s.task(&svc, &format!("t{i}"), &format!("10.0.0.{i}"), Some(80))
            .await;
    }
    wait_not_ready(&sc, "the filesystem is full", "no_space").await;
    assert_eq!(std::fs::read(&sc.output).unwrap(), before);
    assert_eq!(temp_files(&mnt), Vec::<String>::new());
    std::fs::remove_file(&filler).unwrap();
    wait_recovered(&sc, "10.0.0.39:80").await;
    let log = sc.proc.log_text();
    assert!(log.contains("file written again; ready"), "{log}");
    drop(sc);
    drop(fs);
}

/// A filesystem mounted on the staging directory: a rename from it cannot reach the
/// file, so the writer does not use it (temporary files go beside the file, and the
/// log says why), and the file is still replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_staging_directory_on_another_filesystem_is_not_used() {
    let moto = Moto::start();
    let s = Seeder::new(&moto.url).await;
    let ns = s.http_namespace("apps").await;
    let svc = s.service(&ns, "web", &[("METRICS_PATH", "/m")]).await;
    s.task(&svc, "t1", "10.0.0.1", Some(80)).await;
    let dir = tempfile::tempdir().unwrap();
    let staging = Tmpfs::mount(&dir.path().join(".cloudmap-sd-staging"), "64k");
    let output = dir.path().join("targets.json");
    let out = run_cli(
        &[
            "once",
            "--output",
            output.to_str().unwrap(),
            "--ecs-enrichment",
            "false",
        ],
        &aws_env(&moto.url),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("on another filesystem"), "{stderr}");
    assert_eq!(read_targets(&output), vec!["10.0.0.1:80"]);
    assert_eq!(temp_files(dir.path()), Vec::<String>::new());
    drop(staging);
}

/// `once` with `--shard INDEX/COUNT`, the targets it prints.
fn shard_targets(url: &str, shard: &str, key: &str) -> BTreeSet<String> {
    let out = run_cli(
        &[
            "once",
            "--output",
            "-",
            "--ecs-enrichment",
            "false",
            "--shard",
            shard,
            "--shard-key",
            key,
        ],
        &aws_env(url),
    );
    assert!(
        out.status.success(),
        "once --shard {shard} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let groups: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    groups
        .iter()
        .map(|g| g["targets"][0].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_publish_each_target_exactly_once_and_stably() {
    let moto = Moto::start();
    let s = Seeder::new(&moto.url).await;
    let mut all = BTreeSet::new();
    for n in 0..2 {
        let ns = s.http_namespace(&format!("ns{n}")).await;
        for i in 0..8 {
            let svc = s
                .service(&ns, &format!("svc{i}"), &[("METRICS_PATH", "/m")])
                .await;
            for t in 0..3 {
                let addr = format!("10.{n}.{i}.{}", t + 1);
                s.task(&svc, &format!("n{n}s{i}t{t}"), &addr, Some(80))
                    .await;
                all.insert(format!("{addr}:80"));
            }
        }
    }
    let count = 3;
    for key in ["service", "task"] {
        let mut union = BTreeSet::new();
        let mut sizes = Vec::new();
        for i in 0..count {
            let shard = format!("{i}/{count}");
            let mine = shard_targets(&moto.url, &shard, key);
            // Stable: a restart (another run) gives the same share.
            assert_eq!(mine, shard_targets(&moto.url, &shard, key), "{key} {shard}");
            for t in &mine {
                assert!(union.insert(t.clone()), "{t} in two shards ({key})");
            }
            sizes.push(mine.len());
        }
        assert_eq!(union, all, "shards by {key} together");
        assert!(
            sizes.iter().filter(|n| **n > 0).count() >= 2,
            "by {key} everything landed in one shard: {sizes:?}"
        );
        if key == "service" {
            for n in &sizes {
                assert_eq!(n % 3, 0, "a service's 3 targets stay together: {sizes:?}");
            }
        }
    }
}
