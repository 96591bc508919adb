//! Benchmark of cloudmap-sd at 100 and 1000 Cloud Map services: API calls per cycle,
//! cycle wall and CPU time, peak RSS, output size, time from a task's registration to
//! its target in the file, what reading the file costs a real Prometheus (its
//! file_sd scans and scan seconds per change, its memory, bytes per target, for each
//! `--meta-labels` and for temporary files beside the file), and the http_sd endpoint
//! under load from a second process (requests per second, latency, memory).
//!
//!   cargo run --release --example bench -- [--against fake|moto] [--services 100,1000]
//!       [--tasks 10] [--namespaces 10] [--hosts 20] [--ttt-runs 5] [--ttt-interval 5s]
//!       [--parts cycles,ttt,prometheus,http-sd] [--prometheus-changes 5]
//!       [--sd-requests 2000] [--sd-concurrency 8]
//!
//! `--against fake`: an in-process fake of Cloud Map, ECS and EC2 that answers at once,
//! generates its answers on demand (a few bytes of state per task) and counts calls
//! the way the SDK adapters would (one per page or batch of 100).
//! `--against moto`: moto server ($CLOUDMAP_SD_MOTO_SERVER) seeded through the SDK,
//! read through the real SDK adapters; calls are read from the sidecar's own metrics.
//!
//! Everything runs on a current-thread tokio runtime, so the process CPU time around a
//! pass is the pass's. `scripts/bench.sh` sets up the environment and runs this.
// getrusage, malloc_trim and the environment of the in-process runs need unsafe.
#![allow(unsafe_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::{Parser, ValueEnum};
use futures::StreamExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use cloudmap_sd::aws::cloudmap::SdkCloudMap;
use cloudmap_sd::aws::ec2::SdkEc2;
use cloudmap_sd::aws::ecs::SdkEcs;
use cloudmap_sd::aws::sdk::{self as aws_sdk, load_sdk_config};
use cloudmap_sd::aws::{
    AwsError, Clients, CloudMap, Ec2, Ecs, EcsServices, EcsTask, ErrorKind, Namespace,
    SERVICES_BATCH, ServicePage, ServiceSummary, ServiceTags,
};
use cloudmap_sd::config::{Cli, Config};
use cloudmap_sd::http_sd::{HttpSd, Published};
use cloudmap_sd::metrics::Metrics;
use cloudmap_sd::model::{HealthStatus, Host, Instance, attr};
use cloudmap_sd::server::{self, Readiness};
use cloudmap_sd::sidecar::{self, Engine};
use cloudmap_sd::targets;
use cloudmap_sd_test_support::{
    FileSdStats, LoadReport, Moto, Seeder, file_sd_config, free_port, http_get, load,
    prometheus_bin, prometheus_on,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Against {
    Fake,
    Moto,
}

/// The parts of the benchmark, each run for every topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Part {
    /// (a)-(c): API calls, cycle time, memory and output size.
    Cycles,
    /// (d): time from a registration to the target in the file.
    Ttt,
    /// (e): what reading the file costs a real Prometheus.
    Prometheus,
    /// (f): the http_sd endpoint under load from a second process.
    HttpSd,
}

/// cloudmap-sd benchmark: API calls, CPU, memory and time to target.
#[derive(Debug, Parser)]
struct Args {
    /// The in-process fake (instant answers), or moto server through the SDK adapters.
    #[arg(long, value_enum, default_value_t = Against::Fake)]
    against: Against,
    /// Cloud Map service counts; one topology each.
    #[arg(long, value_delimiter = ',', default_value = "100,1000")]
    services: Vec<usize>,
    /// Tasks (Cloud Map instances) per service.
    #[arg(long, default_value_t = 10)]
    tasks: usize,
    /// Namespaces the services are spread over (one ECS cluster each).
    #[arg(long, default_value_t = 10)]
    namespaces: usize,
    /// EC2 hosts the tasks run on.
    #[arg(long, default_value_t = 20)]
    hosts: usize,
    /// Registrations timed by the time-to-target test.
    #[arg(long, default_value_t = 5)]
    ttt_runs: usize,
    /// --interval of the sidecar loop in the time-to-target test. Default: 5s against
    /// the fake; against moto, 5s or 3x the measured steady cycle, whichever is longer.
    #[arg(long, value_parser = humantime::parse_duration)]
    ttt_interval: Option<Duration>,
    /// Calls in flight while seeding moto.
    #[arg(long, default_value_t = 16)]
    seed_concurrency: usize,
    /// Seed of the random registration offsets (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Which parts to run.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "cycles,ttt,prometheus,http-sd"
    )]
    parts: Vec<Part>,
    /// Cloud Map changes (one new task each) timed with a real Prometheus reading the
    /// file, in part `prometheus`.
    #[arg(long, default_value_t = 5)]
    prometheus_changes: usize,
    /// Requests of each whole-list round of the http_sd load (part `http-sd`; at
    /// least 4: the shard round sends a quarter as many to each of 4 shards).
    #[arg(long, default_value_t = 2000)]
    sd_requests: usize,
    /// Requests in flight during the http_sd load.
    #[arg(long, default_value_t = 8)]
    sd_concurrency: usize,
    /// Internal: be the load client of the http_sd load (a second process), GET these
    /// URLs and print the report as JSON.
    #[arg(long, hide = true)]
    load_client: Vec<String>,
}

// ---------------------------------------------------------------------------------
// Topology and naming, shared by the fake and the moto seeder.

#[derive(Debug, Clone, Copy)]
struct Topo {
    services: usize,
    tasks: usize,
    namespaces: usize,
    hosts: usize,
}

/// Page size of ListNamespaces / ListServices and batch size of DescribeTasks,
/// DescribeContainerInstances and DescribeInstances in the SDK adapters.
const PAGE: usize = 100;

const TAGS: [(&str, &str); 2] = [("METRICS_PATH", "/metrics"), ("METRICS_PORT", "8080")];

impl Topo {
    fn targets(&self) -> usize {
        self.services * self.tasks
    }

    fn namespace_of(&self, svc: usize) -> usize {
        svc % self.namespaces
    }

    /// The host of a task: the hosts of cluster `c` are c, c + N, c + 2N, ... (N
    /// clusters); a cluster with none borrows host c mod hosts.
    fn host_of(&self, cluster: usize, serial: u64) -> usize {
        let n = self.namespaces;
        let count = self.hosts.saturating_sub(cluster).div_ceil(n);
        if count == 0 {
            cluster % self.hosts
        } else {
            cluster + n * (serial as usize % count)
        }
    }

    /// The old reloader's calls per cycle: 2 + namespaces + 2 x services.
    fn reloader(&self) -> u64 {
        (2 + self.namespaces + 2 * self.services) as u64
    }
}

fn ns_name(k: usize) -> String {
    format!("bench-{k:02}.local")
}
fn ns_id(k: usize) -> String {
    format!("ns-{k:016}")
}
fn svc_name(i: usize) -> String {
    format!("app-{i:05}")
}
fn svc_id(i: usize) -> String {
    format!("srv-{i:016}")
}
fn cluster_name(k: usize) -> String {
    format!("cluster-{k:02}")
}
/// A task id as ECS makes them: 32 hex digits.
fn task_id(serial: u64) -> String {
    format!("{serial:032x}")
}
fn index(s: &str, prefix: &str) -> Option<usize> {
    s.strip_prefix(prefix)?.parse().ok()
}

/// The Cloud Map attributes ECS registers for a task.
fn attributes(topo: &Topo, svc: usize, serial: u64) -> Vec<(&'static str, String)> {
    let v = serial + 1;
    vec![
        (
            attr::IPV4,
            format!("10.{}.{}.{}", (v >> 16) & 255, (v >> 8) & 255, v & 255),
        ),
        (attr::PORT, "8080".into()),
        (
            attr::AZ,
            format!("us-east-1{}", ["a", "b", "c"][serial as usize % 3]),
        ),
        (attr::ECS_CLUSTER, cluster_name(topo.namespace_of(svc))),
        (attr::ECS_SERVICE, svc_name(svc)),
        (attr::ECS_TASK_FAMILY, svc_name(svc)),
    ]
}

// ---------------------------------------------------------------------------------
// The fake: per service only a revision and the serials of its tasks.

#[derive(Clone)]
struct Fake {
    topo: Topo,
    state: Arc<Mutex<FakeState>>,
    /// Nanoseconds spent inside the fake's methods.
    busy: Arc<AtomicU64>,
}

/// Adds the time until it is dropped to the fake's busy time.
struct Busy<'a>(&'a AtomicU64, std::time::Instant);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0
            .fetch_add(self.1.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }
}

struct FakeState {
    services: Vec<FakeService>,
    calls: BTreeMap<&'static str, u64>,
    next_serial: u64,
}

struct FakeService {
    revision: i64,
    tasks: Vec<u64>,
}

fn not_found(op: &'static str, what: &str) -> AwsError {
    AwsError::new(op, ErrorKind::NotFound, format!("no such {what}"))
}

impl Fake {
    fn new(topo: Topo) -> Fake {
        let k = topo.tasks as u64;
        let services = (0..topo.services as u64)
            .map(|i| FakeService {
                revision: k as i64,
                tasks: (i * k..(i + 1) * k).collect(),
            })
            .collect();
        Fake {
            topo,
            state: Arc::new(Mutex::new(FakeState {
                services,
                calls: BTreeMap::new(),
                next_serial: topo.targets() as u64,
            })),
            busy: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Starts timing one call: a method's work ends when the guard drops.
    fn timed(&self) -> Busy<'_> {
        Busy(&self.busy, std::time::Instant::now())
    }

    /// Counts the calls the SDK adapter makes for `items` (pages or batches of 100).
    fn count(&self, op: &'static str, items: usize) {
        let mut s = self.state.lock().unwrap();
        *s.calls.entry(op).or_default() += items.div_ceil(PAGE).max(1) as u64;
    }

    fn service(&self, op: &'static str, name: &str) -> Result<usize, AwsError> {
        index(name, "app-")
            .filter(|i| *i < self.topo.services)
            .ok_or_else(|| not_found(op, "service"))
    }

    fn ci_arn(cluster: usize, host: usize) -> String {
        format!(
            "arn:aws:ecs:us-east-1:123456789012:container-instance/{}/{host:032x}",
            cluster_name(cluster)
        )
    }
}

impl CloudMap for Fake {
    async fn namespaces(&self) -> Result<Vec<Namespace>, AwsError> {
        let _t = self.timed();
        self.count("ListNamespaces", self.topo.namespaces);
        Ok((0..self.topo.namespaces)
            .map(|k| Namespace {
                id: ns_id(k),
                name: ns_name(k),
            })
            .collect())
    }

    async fn services_page(&self, token: Option<String>) -> Result<ServicePage, AwsError> {
        let _t = self.timed();
        self.count("ListServices", 1);
        let from: usize = match token {
            Some(t) => t
                .parse()
                .map_err(|_| not_found("ListServices", "page token"))?,
            None => 0,
        };
        let to = (from + PAGE).min(self.topo.services);
        let services = (from..to)
            .map(|i| ServiceSummary {
                id: svc_id(i),
                arn: format!(
                    "arn:aws:servicediscovery:us-east-1:123456789012:service/{}",
                    svc_id(i)
                ),
                name: svc_name(i),
                owner: None,
            })
            .collect();
        Ok(ServicePage {
            services,
            next: (to < self.topo.services).then(|| to.to_string()),
        })
    }

    async fn service_namespace(&self, service_id: &str) -> Result<String, AwsError> {
        let _t = self.timed();
        self.count("GetService", 1);
        let i = index(service_id, "srv-").ok_or_else(|| not_found("GetService", "service"))?;
        Ok(ns_id(self.topo.namespace_of(i)))
    }

    async fn tags(&self, _arn: &str) -> Result<BTreeMap<String, String>, AwsError> {
        let _t = self.timed();
        self.count("ListTagsForResource", 1);
        Ok(TAGS
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect())
    }

    async fn instances_revision(
        &self,
        _ns: &str,
        service: &str,
        _owner: Option<&str>,
    ) -> Result<i64, AwsError> {
        let _t = self.timed();
        const OP: &str = "DiscoverInstancesRevision";
        self.count(OP, 1);
        let i = self.service(OP, service)?;
        Ok(self.state.lock().unwrap().services[i].revision)
    }

    async fn instances(
        &self,
        _ns: &str,
        service: &str,
        _owner: Option<&str>,
        _health: HealthStatus,
    ) -> Result<Vec<Instance>, AwsError> {
        let _t = self.timed();
        const OP: &str = "DiscoverInstances";
        self.count(OP, 1);
        let i = self.service(OP, service)?;
        let serials = self.state.lock().unwrap().services[i].tasks.clone();
        Ok(serials
            .into_iter()
            .map(|s| Instance {
                id: task_id(s),
                attributes: attributes(&self.topo, i, s)
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
            })
            .collect())
    }
}

impl EcsServices for Fake {
    /// The bench's services are tagged in Cloud Map: no ECS service has tags.
    async fn service_tags(
        &self,
        _cluster: &str,
        services: &[String],
    ) -> Result<ServiceTags, AwsError> {
        let _t = self.timed();
        let mut s = self.state.lock().unwrap();
        *s.calls.entry("DescribeServices").or_default() +=
            services.len().div_ceil(SERVICES_BATCH).max(1) as u64;
        Ok(Vec::new())
    }
}

impl Ecs for Fake {
    async fn tasks(
        &self,
        cluster: &str,
        task_ids: &[String],
    ) -> Result<Vec<(String, EcsTask)>, AwsError> {
        let _t = self.timed();
        self.count("DescribeTasks", task_ids.len());
        let c = index(cluster, "cluster-").ok_or_else(|| not_found("DescribeTasks", "cluster"))?;
        Ok(task_ids
            .iter()
            .filter_map(|id| {
                let serial = u64::from_str_radix(id, 16).ok()?;
                let task = EcsTask {
                    launch_type: Some("EC2".into()),
                    revision: Some("3".into()),
                    container_instance_arn: Some(
                        Fake::ci_arn(c, self.topo.host_of(c, serial)).into(),
                    ),
                    bindings: Default::default(),
                };
                Some((id.clone(), task))
            })
            .collect())
    }

    async fn container_instances(
        &self,
        _cluster: &str,
        arns: &[String],
    ) -> Result<Vec<(String, String)>, AwsError> {
        let _t = self.timed();
        self.count("DescribeContainerInstances", arns.len());
        Ok(arns
            .iter()
            .filter_map(|arn| {
                let h = usize::from_str_radix(arn.rsplit('/').next()?, 16).ok()?;
                Some((arn.clone(), format!("i-{h:017x}")))
            })
            .collect())
    }

    async fn list_container_instances(&self, cluster: &str) -> Result<Vec<String>, AwsError> {
        let _t = self.timed();
        self.count("ListContainerInstances", 1);
        let Some(c) = index(cluster, "cluster-") else {
            return Ok(Vec::new());
        };
        // The hosts host_of spreads this cluster's tasks over.
        let n = self.topo.namespaces;
        let hosts: Vec<usize> = if self.topo.hosts <= c {
            vec![c % self.topo.hosts]
        } else {
            (c..self.topo.hosts).step_by(n).collect()
        };
        Ok(hosts.into_iter().map(|h| Fake::ci_arn(c, h)).collect())
    }
}

fn fake_host(h: usize) -> Host {
    Host {
        instance_id: format!("i-{h:017x}"),
        name: Some(format!("ecs-host-{h:02}")),
        instance_type: Some("m5.large".into()),
        availability_zone: Some(format!("us-east-1{}", ["a", "b", "c"][h % 3])),
        private_ip: Some(format!("10.200.0.{}", h % 250)),
        cluster: None,
    }
}

impl Ec2 for Fake {
    async fn hosts(&self, ids: &[String]) -> Result<Vec<Host>, AwsError> {
        let _t = self.timed();
        self.count("DescribeInstances", ids.len());
        Ok(ids
            .iter()
            .filter_map(|id| usize::from_str_radix(id.strip_prefix("i-")?, 16).ok())
            .filter(|h| *h < self.topo.hosts)
            .map(fake_host)
            .collect())
    }

    async fn hosts_tagged(&self, _key: &str, _value: &str) -> Result<Vec<Host>, AwsError> {
        let _t = self.timed();
        self.count("DescribeInstances", self.topo.hosts);
        Ok((0..self.topo.hosts).map(fake_host).collect())
    }
}

// ---------------------------------------------------------------------------------
// What the measurements need from a backend: clients, call counts, changes.

trait World {
    type C: CloudMap;
    type E: Ecs;
    type X: Ec2;
    fn describe(&self) -> String;
    async fn clients(&self, metrics: &Arc<Metrics>) -> Clients<Self::C, Self::E, Self::X>;
    /// Calls so far by operation (failures as `Op (kind)`).
    fn calls(&self, metrics: &Metrics) -> BTreeMap<String, u64>;
    /// Time spent answering so far, when the backend runs in this process.
    fn busy(&self) -> Option<Duration>;
    /// Replaces task number `slot` of service `svc` by a new task (deregister +
    /// register).
    async fn replace(&self, svc: usize, slot: usize) -> anyhow::Result<()>;
    /// Registers a new task in service `svc`; returns its id.
    async fn add(&self, svc: usize) -> anyhow::Result<String>;
}

impl World for Fake {
    type C = Fake;
    type E = Fake;
    type X = Fake;

    fn describe(&self) -> String {
        "in-process fake, instant answers; calls counted by the fake as the SDK adapters \
         would make them (one per page / batch of 100)"
            .into()
    }

    async fn clients(&self, _metrics: &Arc<Metrics>) -> Clients<Fake, Fake, Fake> {
        Clients {
            cloudmap: self.clone(),
            ecs: self.clone(),
            ec2: self.clone(),
        }
    }

    fn calls(&self, _metrics: &Metrics) -> BTreeMap<String, u64> {
        let s = self.state.lock().unwrap();
        s.calls.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    fn busy(&self) -> Option<Duration> {
        Some(Duration::from_nanos(self.busy.load(Ordering::Relaxed)))
    }

    async fn replace(&self, svc: usize, slot: usize) -> anyhow::Result<()> {
        let mut s = self.state.lock().unwrap();
        let serial = s.next_serial;
        s.next_serial += 1;
        let service = &mut s.services[svc];
        service.tasks[slot] = serial;
        service.revision += 2;
        Ok(())
    }

    async fn add(&self, svc: usize) -> anyhow::Result<String> {
        let mut s = self.state.lock().unwrap();
        let serial = s.next_serial;
        s.next_serial += 1;
        let service = &mut s.services[svc];
        service.tasks.push(serial);
        service.revision += 1;
        Ok(task_id(serial))
    }
}

// ---------------------------------------------------------------------------------
// moto server: the process, the seeding, and the SDK adapters on top.

// moto server itself and its seeding are the test harness's (cloudmap-sd-test-support).

struct MotoWorld {
    topo: Topo,
    sdk: aws_config::SdkConfig,
    seeder: Seeder,
    service_ids: Vec<String>,
    /// Task serials per service, and the next serial.
    tasks: Mutex<(Vec<Vec<u64>>, u64)>,
}

impl MotoWorld {
    /// Empties moto and seeds the topology: namespaces, tagged services, one
    /// instance per task, `concurrency` calls in flight.
    async fn seed(
        moto: &Moto,
        topo: Topo,
        api_timeout: Duration,
        concurrency: usize,
    ) -> anyhow::Result<MotoWorld> {
        moto.reset();
        let sdk = load_sdk_config(api_timeout).await;
        let seeder = Seeder::new(&moto.url).await;
        let started = std::time::Instant::now();
        let mut ns_ids = Vec::new();
        for k in 0..topo.namespaces {
            ns_ids.push(seeder.http_namespace(&ns_name(k)).await);
        }

        let mut service_ids = vec![String::new(); topo.services];
        {
            let (seeder, ns_ids) = (&seeder, &ns_ids);
            let mut created = pin!(
                futures::stream::iter(0..topo.services)
                    .map(|i| async move {
                        let ns = &ns_ids[topo.namespace_of(i)];
                        let id = seeder.service(ns, &svc_name(i), &TAGS).await;
                        anyhow::Ok((i, id))
                    })
                    .buffer_unordered(concurrency.max(1))
            );
            let mut done = 0;
            while let Some(r) = created.next().await {
                let (i, id) = r.context("CreateService")?;
                service_ids[i] = id;
                done += 1;
                if done % 250 == 0 || done == topo.services {
                    eprintln!("bench: moto: {done}/{} services", topo.services);
                }
            }
        }
        let world = MotoWorld {
            topo,
            seeder,
            sdk,
            service_ids,
            tasks: Mutex::new((vec![], topo.targets() as u64)),
        };
        {
            let w = &world;
            let k = topo.tasks as u64;
            let mut registered = pin!(
                futures::stream::iter(0..topo.targets() as u64)
                    .map(|s| w.register((s / k) as usize, s))
                    .buffer_unordered(concurrency.max(1))
            );
            let mut done = 0;
            while let Some(r) = registered.next().await {
                r?;
                done += 1;
                if done % 1000 == 0 || done == topo.targets() {
                    eprintln!(
                        "bench: moto: {done}/{} instances ({:.0} s)",
                        topo.targets(),
                        started.elapsed().as_secs_f64()
                    );
                }
            }
        }
        *world.tasks.lock().unwrap() = (
            (0..topo.services as u64)
                .map(|i| (i * topo.tasks as u64..(i + 1) * topo.tasks as u64).collect())
                .collect(),
            topo.targets() as u64,
        );
        Ok(world)
    }

    async fn register(&self, svc: usize, serial: u64) -> anyhow::Result<()> {
        let attrs = attributes(&self.topo, svc, serial);
        let id = task_id(serial);
        self.seeder
            .instance(&self.service_ids[svc], &id, &attrs)
            .await;
        Ok(())
    }

    async fn deregister(&self, svc: usize, serial: u64) -> anyhow::Result<()> {
        let id = task_id(serial);
        self.seeder.deregister(&self.service_ids[svc], &id).await;
        Ok(())
    }

    fn next_serial(&self) -> u64 {
        let mut t = self.tasks.lock().unwrap();
        t.1 += 1;
        t.1 - 1
    }
}

/// Calls counted by the SDK adapters in `cloudmap_sd_aws_api_calls_total`.
fn calls_from_metrics(m: &Metrics) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in m.encode().lines() {
        let Some(rest) = line.strip_prefix("cloudmap_sd_aws_api_calls_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let label = |name: &str| {
            labels.split(',').find_map(|kv| {
                kv.strip_prefix(name)?
                    .strip_prefix("=\"")?
                    .strip_suffix('"')
            })
        };
        let (Some(op), Some(outcome)) = (label("operation"), label("outcome")) else {
            continue;
        };
        let key = if outcome == "success" {
            op.to_string()
        } else {
            format!("{op} ({outcome})")
        };
        *out.entry(key).or_default() += value.trim().parse::<f64>().unwrap_or(0.0) as u64;
    }
    out
}

impl World for MotoWorld {
    type C = SdkCloudMap;
    type E = SdkEcs;
    type X = SdkEc2;

    fn describe(&self) -> String {
        "moto server through the real SDK adapters; calls read from \
         cloudmap_sd_aws_api_calls_total (one per page / batch; SDK retries not visible)"
            .into()
    }

    async fn clients(&self, metrics: &Arc<Metrics>) -> Clients<SdkCloudMap, SdkEcs, SdkEc2> {
        aws_sdk::clients(&self.sdk, metrics.aws.clone())
    }

    fn calls(&self, metrics: &Metrics) -> BTreeMap<String, u64> {
        calls_from_metrics(metrics)
    }

    fn busy(&self) -> Option<Duration> {
        None
    }

    /// moto's instances revision is the sum of per-instance registration counters of
    /// the instances present, so deregister + register of another id leaves it equal.
    /// The new id is registered, deregistered and registered again (counter 3) so the
    /// revision moves, as AWS's does on any change.
    async fn replace(&self, svc: usize, slot: usize) -> anyhow::Result<()> {
        let new = self.next_serial();
        let old = self.tasks.lock().unwrap().0[svc][slot];
        self.register(svc, new).await?;
        self.deregister(svc, new).await?;
        self.register(svc, new).await?;
        self.deregister(svc, old).await?;
        self.tasks.lock().unwrap().0[svc][slot] = new;
        Ok(())
    }

    async fn add(&self, svc: usize) -> anyhow::Result<String> {
        let new = self.next_serial();
        self.register(svc, new).await?;
        self.tasks.lock().unwrap().0[svc].push(new);
        Ok(task_id(new))
    }
}

// ---------------------------------------------------------------------------------
// Process measurements.

fn cpu_time() -> Duration {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given; RUSAGE_SELF is always valid.
    let ru = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr());
        ru.assume_init()
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// A `VmXXX:` line of /proc/self/status, in KiB. Peak RSS comes from VmHWM, not
/// ru_maxrss: Linux carries ru_maxrss over exec, so it starts at the RSS of the
/// process that forked this one (`cargo run`).
fn vm_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Gives freed heap back to the OS, so an earlier topology's leftovers do not count
/// in the next one's RSS.
fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory of the allocator.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Resets VmHWM (the peak RSS) to the current RSS; false when the kernel refuses.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x % n.max(1)
    }
}

/// A writer that only counts.
struct Counter(usize);

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn print_table(head: &[String], rows: &[Vec<String>]) {
    let mut w: Vec<usize> = head.iter().map(String::len).collect();
    for r in rows {
        for (c, v) in r.iter().enumerate() {
            w[c] = w[c].max(v.len());
        }
    }
    let line = |cells: &[String]| {
        let mut s = String::from(" ");
        for (c, v) in cells.iter().enumerate() {
            if c == 0 {
                s += &format!(" {v:<w$}", w = w[0]);
            } else {
                s += &format!("  {v:>w$}", w = w[c]);
            }
        }
        println!("{}", s.trim_end());
    };
    line(head);
    for r in rows {
        line(r);
    }
}

// ---------------------------------------------------------------------------------
// (a)-(c): passes driven directly, with a virtual clock.

fn options(extra: &[String]) -> anyhow::Result<Config> {
    let mut args: Vec<String> = [
        "cloudmap-sd",
        "--listen",
        "127.0.0.1:0",
        "--remote-write-watch-interval",
        "0s",
        "--amp-probe-interval",
        "0s",
    ]
    .map(String::from)
    .to_vec();
    args.extend(extra.iter().cloned());
    let cli = Cli::try_parse_from(&args).map_err(|e| anyhow!("{args:?}: {e}"))?;
    Ok(cli.validate()?)
}

struct Sample {
    name: &'static str,
    at: Duration,
    calls: BTreeMap<String, u64>,
    wall: Duration,
    cpu: Duration,
    /// Time inside the in-process backend (the fake).
    backend: Option<Duration>,
    targets: usize,
    /// Bytes of the file, when the pass rendered it.
    bytes: Option<usize>,
    problems: Vec<String>,
}

fn diff(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

/// What every sampled pass of one topology shares.
struct Sampler<'a, W: World> {
    w: &'a W,
    metrics: &'a Metrics,
    t0: Instant,
    expected: usize,
    cycle_timeout: Duration,
}

impl<W: World> Sampler<'_, W> {
    /// One pass at virtual time `t0 + at`: calls, wall and CPU time (the pass and
    /// dropping its result).
    async fn sample(
        &self,
        engine: &mut Engine<W::C, W::E, W::X>,
        name: &'static str,
        at: Duration,
    ) -> Sample {
        let mut problems = Vec::new();
        if self.t0 + at + self.cycle_timeout <= Instant::now() {
            problems.push("the cycle deadline (virtual start + --cycle-timeout) had passed".into());
        }
        let before = self.w.calls(self.metrics);
        let busy0 = self.w.busy();
        let (cpu0, wall0) = (cpu_time(), std::time::Instant::now());
        let (targets, bytes) = match engine.pass(self.t0 + at).await {
            Ok(p) => {
                if !p.complete() {
                    problems.push(format!(
                        "incomplete cycle: {} failed reads (first: {})",
                        p.failed(),
                        p.describe_failures().split("; ").next().unwrap_or_default()
                    ));
                }
                if p.deadline_exceeded() {
                    problems.push("cycle deadline exceeded".into());
                }
                if let Some(e) = p.enrich_errors().next() {
                    problems.push(format!(
                        "{} enrichment errors (first: {e})",
                        p.enrich_errors().count()
                    ));
                }
                if !p.snapshot.held.is_empty() {
                    problems.push(format!("{} tasks held", p.snapshot.held.len()));
                }
                if !p.summary.skipped.is_empty() {
                    problems.push(format!("{} endpoints skipped", p.summary.skipped.len()));
                }
                // The file is rendered (into a byte counter here) only when the
                // snapshot changed, as the sidecar writes it.
                let bytes = if p.fresh {
                    let mut n = Counter(0);
                    targets::render_to(&p.snapshot, &p.targets, &mut n)
                        .expect("a counter takes every byte");
                    Some(n.0)
                } else {
                    None
                };
                (p.summary.targets, bytes)
            }
            Err(e) => {
                problems.push(format!("pass failed: {e}"));
                (0, None)
            }
        };
        let (wall, cpu) = (wall0.elapsed(), cpu_time() - cpu0);
        if targets != self.expected {
            problems.push(format!("{targets} targets, expected {}", self.expected));
        }
        Sample {
            name,
            at,
            calls: diff(&before, &self.w.calls(self.metrics)),
            wall,
            cpu,
            backend: self.w.busy().zip(busy0).map(|(a, b)| a - b),
            targets,
            bytes,
            problems,
        }
    }
}

/// Consecutive steady cycles sampled (one --interval apart) after the cold one.
const STEADY_CYCLES: u32 = 8;

struct Cycles {
    cold: Sample,
    steady: Vec<Sample>,
    listed: Vec<Sample>,
    churn: Sample,
    refresh: Sample,
    churned: usize,
    churned_services: usize,
    peak_rss_kib: Option<u64>,
    base_rss_kib: Option<u64>,
    /// CPU of targets::summarize and targets::render_to, on a steady snapshot (what
    /// a cycle with a change costs on top of a steady one).
    render: Option<[Duration; 2]>,
}

/// Cold, STEADY_CYCLES steady cycles (split into those without and with a listing
/// call), churn, then the
/// tags / full-read refresh cycle.
async fn cycles<W: World>(w: &W, topo: &Topo, config: &Config) -> anyhow::Result<Cycles> {
    let opts = &config.sidecar;
    let interval = opts.interval;
    trim_heap();
    let base_rss_kib = vm_kib("VmRSS");
    let reset = reset_peak_rss();
    let metrics = Arc::new(Metrics::new());
    let mut engine = Engine::new(w.clients(&metrics).await, opts, metrics.run.clone());
    let n = topo.targets();
    let sampler = Sampler {
        w,
        metrics: &metrics,
        t0: Instant::now(),
        expected: n,
        cycle_timeout: opts.cycle_timeout,
    };
    let cold = sampler.sample(&mut engine, "cold", Duration::ZERO).await;
    let mut all = Vec::new();
    for k in 1..=STEADY_CYCLES {
        all.push(sampler.sample(&mut engine, "steady", interval * k).await);
    }
    let lists =
        |s: &Sample| s.calls.contains_key("ListServices") || s.calls.contains_key("ListNamespaces");
    let (mut listed, steady): (Vec<Sample>, Vec<Sample>) = all.into_iter().partition(lists);
    for s in &mut listed {
        s.name = "steady+list";
    }
    // 1% of all tasks, one task in each of that many services, spread evenly.
    let churned = n.div_ceil(100);
    let per = churned.div_ceil(topo.services);
    let services: Vec<usize> = (0..churned.min(topo.services))
        .map(|j| j * topo.services / churned.min(topo.services))
        .collect();
    for round in 0..per {
        for s in &services {
            w.replace(*s, round % topo.tasks).await?;
        }
    }
    let at = interval * (STEADY_CYCLES + 1);
    let churn = sampler.sample(&mut engine, "churn", at).await;
    let d = &opts.discovery;
    let refresh_at = d.tags_refresh.max(d.full_refresh).max(at + interval);
    let refresh = sampler.sample(&mut engine, "refresh", refresh_at).await;
    let peak_rss_kib = if reset { vm_kib("VmHWM") } else { None };
    // Rendering alone, re-run on the snapshot of one more steady pass (after the
    // peak above was read).
    let render = match engine.pass(sampler.t0 + refresh_at + interval).await {
        Ok(p) => {
            let topts = opts.targets.clone();
            let c0 = cpu_time();
            let summary = targets::summarize(&p.snapshot, &topts);
            let c1 = cpu_time();
            targets::render_to(&p.snapshot, &topts, &mut Counter(0))
                .expect("a counter takes every byte");
            drop(summary);
            Some([c1 - c0, cpu_time() - c1])
        }
        Err(_) => None,
    };
    Ok(Cycles {
        cold,
        steady,
        listed,
        churn,
        refresh,
        churned: per * services.len(),
        churned_services: services.len(),
        peak_rss_kib,
        base_rss_kib,
        render,
    })
}

const OPS: [&str; 9] = [
    "ListNamespaces",
    "ListServices",
    "GetService",
    "ListTagsForResource",
    "DiscoverInstancesRevision",
    "DiscoverInstances",
    "DescribeTasks",
    "DescribeContainerInstances",
    "DescribeInstances",
];

fn total(calls: &BTreeMap<String, u64>) -> u64 {
    calls.values().sum()
}

fn report_cycles(c: &Cycles, topo: &Topo, config: &Config, against: Against) {
    let opts = &config.sidecar;
    let d = &opts.discovery;
    let secs = |d: Duration| format!("{}s", d.as_secs());
    println!(
        "sidecar options: --interval {} --services-refresh {} --tags-refresh {} --full-refresh {} \
         --concurrency {} --ecs-enrichment {}",
        secs(opts.interval),
        secs(d.services_refresh),
        secs(d.tags_refresh),
        secs(d.full_refresh),
        d.concurrency,
        opts.enrich.is_some()
    );
    println!(
        "churn: 1% of all tasks = {} tasks replaced, one in each of {} services \
         (deregister a task, register a new task id){}",
        c.churned,
        c.churned_services,
        if against == Against::Moto {
            "; moto: the new id is registered, deregistered and registered again so the \
             revision moves (moto sums per-instance counters)"
        } else {
            ""
        }
    );
    println!();

    let cols: Vec<Option<&Sample>> = vec![
        Some(&c.cold),
        c.steady.first(),
        c.listed.first(),
        Some(&c.churn),
        Some(&c.refresh),
    ];
    let head = |first: &str| {
        let mut h = vec![first.to_string()];
        h.extend(
            ["cold", "steady", "steady+list", "churn 1%", "refresh"]
                .iter()
                .map(|s| s.to_string()),
        );
        h
    };
    let mut ops: Vec<String> = OPS.iter().map(|s| s.to_string()).collect();
    for s in cols.iter().flatten() {
        for k in s.calls.keys() {
            if !ops.contains(k) {
                ops.push(k.clone());
            }
        }
    }
    let mut rows = vec![{
        let mut r = vec!["  at (virtual)".to_string()];
        r.extend(
            cols.iter()
                .map(|s| s.map_or("-".into(), |s| format!("t+{}s", s.at.as_secs()))),
        );
        r
    }];
    for op in &ops {
        let mut r = vec![op.clone()];
        r.extend(cols.iter().map(|s| {
            s.map_or("-".into(), |s| {
                s.calls.get(op).copied().unwrap_or(0).to_string()
            })
        }));
        rows.push(r);
    }
    let mut r = vec!["total".to_string()];
    r.extend(
        cols.iter()
            .map(|s| s.map_or("-".into(), |s| total(&s.calls).to_string())),
    );
    rows.push(r);
    println!("(a) API calls per cycle");
    print_table(&head("operation"), &rows);
    println!(
        "  steady / steady+list: {STEADY_CYCLES} consecutive cycles with nothing changed, split by \
         whether the cycle made a listing call (a ListServices page or ListNamespaces; {} \
         steady, {} steady+list; '-' = none of that kind); refresh: tags, namespaces and \
         full instance reads due",
        c.steady.len(),
        c.listed.len()
    );
    let same = |v: &[Sample]| v.iter().all(|s| s.calls == v[0].calls);
    if !same(&c.steady) || !same(&c.listed) {
        println!("  NOTE: the steady cycles of one kind did not all make the same calls");
    }

    let reloader = topo.reloader();
    let half = reloader / 2;
    let totals: Vec<u64> = c
        .steady
        .iter()
        .chain(&c.listed)
        .map(|s| total(&s.calls))
        .collect();
    let most = totals.iter().copied().max().unwrap_or_default();
    let mean = totals.iter().sum::<u64>() as f64 / totals.len().max(1) as f64;
    let yn = |b: bool| if b { "yes" } else { "NO" };
    println!(
        "  old reloader: 2 + {} namespaces + 2 x {} services = {reloader} calls per cycle; half = {half}",
        topo.namespaces, topo.services
    );
    println!(
        "  steady <= half: most calls in a steady cycle {most}: {}; mean over the {} steady \
         cycles {mean:.1}: {}",
        yn(most <= half),
        totals.len(),
        yn(mean <= half as f64)
    );
    let heavy = |calls: &BTreeMap<String, u64>| -> Vec<String> {
        calls
            .keys()
            .filter(|k| {
                let op = k.split(' ').next().unwrap_or(k);
                matches!(
                    op,
                    "DiscoverInstances"
                        | "ListTagsForResource"
                        | "DescribeTasks"
                        | "DescribeContainerInstances"
                        | "DescribeInstances"
                )
            })
            .cloned()
            .collect()
    };
    let mut found: Vec<String> = c
        .steady
        .iter()
        .chain(&c.listed)
        .flat_map(|s| heavy(&s.calls))
        .collect();
    found.sort();
    found.dedup();
    println!(
        "  steady cycles with DiscoverInstances, ListTagsForResource, ECS or EC2 calls: {}",
        if found.is_empty() {
            "none".to_string()
        } else {
            found.join(", ")
        }
    );
    println!();

    println!(
        "(b) cycle time (wall and process CPU user+sys around Engine::pass, rendering the file \
         into a byte counter when the snapshot changed, and dropping the result; \
         current-thread runtime{})",
        if against == Against::Moto {
            "; client side only, moto runs in another process"
        } else {
            "; includes the fake generating its answers"
        }
    );
    let med =
        |v: &[Sample], f: fn(&Sample) -> Duration| median(&v.iter().map(f).collect::<Vec<_>>());
    let wall = |s: &Sample| s.wall;
    let cpu = |s: &Sample| s.cpu;
    let med_or_dash = |v: &[Sample], f: fn(&Sample) -> Duration| {
        if v.is_empty() {
            "-".to_string()
        } else {
            ms(med(v, f))
        }
    };
    let row = |name: &str, f: fn(&Sample) -> Duration| {
        vec![
            name.to_string(),
            ms(f(&c.cold)),
            med_or_dash(&c.steady, f),
            med_or_dash(&c.listed, f),
            ms(f(&c.churn)),
            ms(f(&c.refresh)),
        ]
    };
    let mut rows = vec![row("wall", wall), row("CPU", cpu)];
    if c.cold.backend.is_some() {
        let busy = |s: &Sample| s.backend.unwrap_or_default();
        rows.push(row("in the fake", busy));
    }
    print_table(&head("ms"), &rows);
    let list = |v: &[Sample]| v.iter().map(|s| ms(s.cpu)).collect::<Vec<_>>().join(" ");
    println!(
        "  steady columns: median of their cycles; CPU ms of each: steady [{}], steady+list [{}]",
        list(&c.steady),
        list(&c.listed)
    );
    if let Some([summary, render]) = c.render {
        println!(
            "  rendering alone (done only when the snapshot changed), CPU ms: targets::summarize {}, \
             targets::render_to {}",
            ms(summary),
            ms(render),
        );
    }
    println!();

    let worst = c
        .steady
        .iter()
        .chain(&c.listed)
        .map(|s| s.cpu)
        .max()
        .unwrap_or_default();
    let at_10k = against == Against::Fake && topo.targets() == 10_000;
    println!("(c) memory and output");
    let bytes = c.refresh.bytes.or(c.cold.bytes).unwrap_or_default();
    println!(
        "  targets: {} (expected {}); output: {} bytes ({} MiB)",
        c.refresh.targets,
        topo.targets(),
        bytes,
        mib(bytes as u64 / 1024)
    );
    println!(
        "  steady cycle CPU ms: {} (median, no listing call); {} (median, with a listing call); worst steady {}{}",
        med_or_dash(&c.steady, cpu),
        med_or_dash(&c.listed, cpu),
        ms(worst),
        if at_10k {
            format!(
                " -- goal < 50 ms at 10,000 targets against the fake: {}",
                if worst < Duration::from_millis(50) {
                    "met"
                } else {
                    "NOT met"
                }
            )
        } else {
            String::new()
        }
    );
    match c.peak_rss_kib {
        Some(peak) => println!(
            "  peak RSS MiB: {} (VmHWM over the passes above, reset before this topology's \
             engine was built, after malloc_trim; RSS then {} MiB){}",
            mib(peak),
            c.base_rss_kib.map(mib).unwrap_or_default(),
            if at_10k {
                format!(
                    " -- goal < 30 MiB: {}",
                    if peak < 30 * 1024 { "met" } else { "NOT met" }
                )
            } else {
                String::new()
            }
        ),
        None => println!("  peak RSS MiB: n/a (could not reset VmHWM)"),
    }
    let mut problems: Vec<String> = std::iter::once(&c.cold)
        .chain(&c.steady)
        .chain(&c.listed)
        .chain([&c.churn, &c.refresh])
        .flat_map(|s| {
            s.problems
                .iter()
                .map(move |p| format!("{} t+{}s: {p}", s.name, s.at.as_secs()))
        })
        .collect();
    problems.dedup();
    for p in &problems {
        println!("  PROBLEM: {p}");
    }
    println!();
}

// ---------------------------------------------------------------------------------
// (d) time to target: the sidecar loop in-process, a new task, the file polled.

/// What the in-process loop shares with a measurement: its metrics, its readiness
/// (without a file when `--output none`) and what it publishes for `/sd/*`.
struct InProcess {
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    published: Arc<Published>,
}

impl InProcess {
    fn new(opts: &Config) -> Self {
        let metrics = Arc::new(Metrics::new());
        let gauge = metrics.run.ready.clone();
        let readiness = match opts.sidecar.output {
            Some(_) => Readiness::new(gauge),
            None => Readiness::without_file(gauge),
        };
        InProcess {
            metrics,
            readiness: Arc::new(readiness),
            published: Arc::new(Published::new(opts.http_sd.hosts)),
        }
    }
}

/// Runs `sidecar::run` in-process with `opts` while `measure` runs, then stops it (a
/// write in progress finishes). Err when the loop stopped first.
async fn with_loop<W: World, T>(
    w: &W,
    opts: &Config,
    measure: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    with_loop_in(w, opts, &InProcess::new(opts), measure).await
}

/// [`with_loop`] with the loop's metrics, readiness and publication given, for a
/// measurement that serves them too.
async fn with_loop_in<W: World, T>(
    w: &W,
    opts: &Config,
    parts: &InProcess,
    measure: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let clients = w.clients(&parts.metrics).await;
    let shutdown = CancellationToken::new();
    let mut run = pin!(sidecar::run(
        clients,
        &opts.sidecar,
        parts.metrics.run.clone(),
        parts.readiness.clone(),
        parts.published.clone(),
        shutdown.clone()
    ));
    let measured = tokio::select! {
        () = &mut run => bail!("the sidecar stopped early"),
        r = measure => r,
    };
    shutdown.cancel();
    (&mut run).await;
    measured
}

/// Polls `path` every 20 ms until it contains `needle`; the time since `since`.
async fn wait_for_text(
    path: &Path,
    needle: &str,
    since: std::time::Instant,
    timeout: Duration,
) -> Option<Duration> {
    let mut last = None;
    loop {
        if let Ok(md) = std::fs::metadata(path) {
            let key = (md.ino(), md.len(), md.mtime(), md.mtime_nsec());
            if last != Some(key) {
                last = Some(key);
                if std::fs::read_to_string(path).is_ok_and(|t| t.contains(needle)) {
                    return Some(since.elapsed());
                }
            }
        }
        if since.elapsed() > timeout {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Ttt {
    interval: Duration,
    /// (offset into the interval, latency; None: not seen in time)
    runs: Vec<(Duration, Option<Duration>)>,
    peak_rss_kib: Option<u64>,
}

async fn time_to_target<W: World>(
    w: &W,
    topo: &Topo,
    interval: Duration,
    enrichment: bool,
    runs: usize,
    rng: &mut Rng,
) -> anyhow::Result<Ttt> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("targets.json");
    let opts = options(&[
        "--interval".into(),
        humantime::format_duration(interval).to_string(),
        "--output".into(),
        out.display().to_string(),
        "--ecs-enrichment".into(),
        enrichment.to_string(),
    ])?;
    trim_heap();
    let reset = reset_peak_rss();
    let started = std::time::Instant::now();
    let measure = async {
        // The first write comes after a complete cycle: it holds every target.
        if wait_for_text(&out, "\"targets\"", started, Duration::from_secs(300))
            .await
            .is_none()
        {
            bail!("the sidecar wrote no complete file within 300s");
        }
        let mut results = Vec::new();
        for _ in 0..runs {
            let pause = rng.below(interval.as_millis() as u64);
            tokio::time::sleep(Duration::from_millis(pause)).await;
            let svc = rng.below(topo.services as u64) as usize;
            let id = w.add(svc).await?;
            let at = std::time::Instant::now();
            let offset =
                Duration::from_nanos(((at - started).as_nanos() % interval.as_nanos()) as u64);
            let seen = wait_for_text(
                &out,
                &format!("\"{id}\""),
                at,
                interval * 3 + Duration::from_secs(10),
            )
            .await;
            eprintln!(
                "bench: time to target: run {} of {runs}: {}",
                results.len() + 1,
                seen.map_or("not seen".into(), |d| format!("{} ms", ms(d)))
            );
            results.push((offset, seen));
        }
        anyhow::Ok(results)
    };
    let results = with_loop(w, &opts, measure).await?;
    Ok(Ttt {
        interval,
        runs: results,
        peak_rss_kib: if reset { vm_kib("VmHWM") } else { None },
    })
}

fn report_ttt(t: &Ttt) {
    let bound = t.interval + Duration::from_secs(1);
    println!(
        "(d) time to target: sidecar::run in-process, --interval {}, file polled every 20 ms; \
         timed from the end of the registration call; offset = time since the loop started \
         modulo the interval (the tick phase; it shifts when a cycle overruns the interval)",
        humantime::format_duration(t.interval)
    );
    let rows: Vec<Vec<String>> = t
        .runs
        .iter()
        .enumerate()
        .map(|(i, (off, lat))| {
            vec![
                (i + 1).to_string(),
                ms(*off),
                lat.map_or("not seen".into(), ms),
                lat.map_or("NO", |l| if l <= bound { "yes" } else { "NO" })
                    .to_string(),
            ]
        })
        .collect();
    print_table(
        &["run", "offset in interval ms", "latency ms", "<= bound"].map(String::from),
        &rows,
    );
    let mut seen: Vec<Duration> = t.runs.iter().filter_map(|r| r.1).collect();
    seen.sort();
    if let (Some(min), Some(max)) = (seen.first(), seen.last()) {
        println!(
            "  min / median / max: {} / {} / {} ms; bound interval + 1s = {} ms; all within: {}",
            ms(*min),
            ms(median(&seen)),
            ms(*max),
            ms(bound),
            if seen.len() == t.runs.len() && *max <= bound {
                "yes"
            } else {
                "NO"
            }
        );
    }
    if let Some(p) = t.peak_rss_kib {
        println!(
            "  peak RSS during the loop (VmHWM; file writes included, and so is this bench's \
             polling, which reads the whole file into memory; the HTTP server is not, main runs it): {} MiB",
            mib(p)
        );
    }
    println!();
}

// ---------------------------------------------------------------------------------
// (e) what reading the file costs Prometheus: the sidecar loop in-process, writing
// into a directory that a real Prometheus watches through file_sd.

/// One way of writing the file, measured with Prometheus reading it.
struct Variant {
    name: &'static str,
    /// Extra flags of the sidecar.
    flags: &'static [&'static str],
    /// A file is put where the staging directory goes, so the writer falls back to
    /// temporary files beside the file (how every write went before the staging
    /// directory).
    beside: bool,
}

/// The variants measured: the fallback (as before), then each `--meta-labels`.
fn label_variants() -> Vec<Variant> {
    vec![
        Variant {
            name: "all, temp beside the file (fallback, as before)",
            flags: &["--meta-labels", "all"],
            beside: true,
        },
        Variant {
            name: "all (default)",
            flags: &["--meta-labels", "all"],
            beside: false,
        },
        Variant {
            name: "tags",
            flags: &["--meta-labels", "tags"],
            beside: false,
        },
        Variant {
            name: "none",
            flags: &["--meta-labels", "none"],
            beside: false,
        },
    ]
}

/// Changes settle when Prometheus's scan count has not moved for this long (and for
/// four times its mean scan).
const QUIET: Duration = Duration::from_secs(3);

/// What one label choice costs a real Prometheus.
struct PromCost {
    variant: &'static str,
    targets: usize,
    bytes: u64,
    /// Prometheus watching the still empty directory, then with our file loaded
    /// (settled: every scan the first writes caused is over).
    idle: FileSdStats,
    loaded: FileSdStats,
    /// After the last change.
    end: FileSdStats,
    /// Per change: file_sd scans and the seconds they took.
    changes: Vec<(f64, f64)>,
}

/// Starts Prometheus on an empty directory, then the sidecar loop writing into it;
/// once the file is loaded, makes `changes` changes (a new task each) and counts
/// Prometheus's scans for each.
async fn prometheus_cost<W: World>(
    w: &W,
    topo: &Topo,
    v: &Variant,
    enrichment: bool,
    changes: usize,
) -> anyhow::Result<PromCost> {
    let variant = v.name;
    let dir = tempfile::tempdir()?;
    let sd = dir.path().join("sd");
    std::fs::create_dir(&sd)?;
    if v.beside {
        std::fs::write(sd.join(cloudmap_sd::file_sd::STAGING_DIR), b"in the way")?;
    }
    let out = sd.join("targets.json");
    let port = free_port();
    let config = file_sd_config("cloudmap", &sd.join("*.json"), "1h");
    let _prometheus = prometheus_on(&dir.path().join("prometheus"), port, &config, &[]);
    let url = format!("http://127.0.0.1:{port}");
    let long = Duration::from_secs(300);
    let idle = FileSdStats::settled(&url, 0, QUIET, long).await;
    let idle = after_gc(&url).await.unwrap_or(idle);

    let mut args = vec![
        "--interval".into(),
        "1s".into(),
        "--output".into(),
        out.display().to_string(),
        "--ecs-enrichment".into(),
        enrichment.to_string(),
    ];
    args.extend(v.flags.iter().map(|f| f.to_string()));
    let opts = options(&args)?;
    let measure = async {
        let started = std::time::Instant::now();
        if wait_for_text(&out, "\"targets\"", started, long)
            .await
            .is_none()
        {
            bail!("the sidecar wrote no file within {long:?}");
        }
        let text = std::fs::read_to_string(&out)?;
        // Earlier parts may have added tasks: the file says how many there are.
        let mut targets = text.matches("\"targets\"").count();
        let bytes = text.len() as u64;
        drop(text);
        let settled = FileSdStats::settled(&url, targets, QUIET, long).await;
        let loaded = after_gc(&url).await.unwrap_or(settled);
        let mut last = settled;
        let mut done = Vec::new();
        for k in 0..changes {
            let id = w.add(k * 7919 % topo.services).await?;
            let at = std::time::Instant::now();
            if wait_for_text(&out, &format!("\"{id}\""), at, Duration::from_secs(60))
                .await
                .is_none()
            {
                bail!("task {id} not in the file within 60 s");
            }
            targets += 1;
            let now = FileSdStats::settled(&url, targets, QUIET, long).await;
            done.push((now.scans - last.scans, now.scan_seconds - last.scan_seconds));
            eprintln!(
                "bench: prometheus ({variant}): change {} of {changes}: {} scans, {:.2} s",
                k + 1,
                now.scans - last.scans,
                now.scan_seconds - last.scan_seconds
            );
            last = now;
        }
        anyhow::Ok((targets, bytes, loaded, last, done))
    };
    let (targets, bytes, loaded, end, changes) = with_loop(w, &opts, measure).await?;
    Ok(PromCost {
        variant,
        targets,
        bytes,
        idle,
        loaded,
        end,
        changes,
    })
}

/// Prometheus's figures just after a garbage collection (its pprof heap handler with
/// `gc=1` runs one), so the heap in use is the live heap: what it keeps, not the
/// garbage of its last parse.
async fn after_gc(url: &str) -> Option<FileSdStats> {
    let (status, _) = http_get(&format!("{url}/debug/pprof/heap?gc=1")).await?;
    if status != 200 {
        eprintln!("bench: {url}/debug/pprof/heap answered {status}: memory read without a GC");
        return None;
    }
    FileSdStats::read(url).await
}

fn prometheus_version() -> String {
    std::process::Command::new(prometheus_bin())
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_else(|| "unknown version".into())
}

fn report_prometheus(costs: &[PromCost], changes: usize) {
    println!(
        "(e) what reading the file costs Prometheus ({}): file_sd on `DIR/*.json`, \
         refresh_interval 1h; sidecar::run in-process, --interval 1s; {changes} changes, one \
         new task each; a change is over when Prometheus discovered it and its scan count \
         stood still for {} s (and 4x its mean scan); memory read after a forced GC \
         (/debug/pprof/heap?gc=1), once the file was loaded",
        prometheus_version(),
        QUIET.as_secs()
    );
    let mib = |b: f64| format!("{:.1}", b / 1024.0 / 1024.0);
    let rows: Vec<Vec<String>> = costs
        .iter()
        .map(|c| {
            let n = c.changes.len().max(1) as f64;
            let scans: f64 = c.changes.iter().map(|x| x.0).sum();
            let secs: f64 = c.changes.iter().map(|x| x.1).sum();
            let each: Vec<String> = c.changes.iter().map(|x| x.0.to_string()).collect();
            vec![
                c.variant.to_string(),
                c.targets.to_string(),
                format!("{}", c.bytes / c.targets.max(1) as u64),
                format!("{:.1}", scans / n),
                format!("[{}]", each.join(" ")),
                format!("{:.3}", secs / n),
                format!("{} -> {}", mib(c.idle.rss_bytes), mib(c.loaded.rss_bytes)),
                format!(
                    "{} -> {}",
                    mib(c.idle.heap_inuse_bytes),
                    mib(c.loaded.heap_inuse_bytes)
                ),
                c.end.read_errors.to_string(),
            ]
        })
        .collect();
    print_table(
        &[
            "labels",
            "targets",
            "bytes/target",
            "scans/change",
            "each",
            "scan s/change",
            "RSS MiB empty -> loaded",
            "live heap MiB empty -> loaded",
            "read errors",
        ]
        .map(String::from),
        &rows,
    );
    println!();
}

// ---------------------------------------------------------------------------------
// (f) http_sd under load: sidecar::run in-process without a file (--output none), the
// HTTP server on a multi-threaded runtime of its own as in `main`, and the requests
// from a second process (this benchmark run with --load-client).

/// One round of requests and the RSS after it.
struct Round {
    name: String,
    report: LoadReport,
    rss_kib: Option<u64>,
}

struct SdLoad {
    /// RSS once the first discovery was published, before any request.
    published_rss_kib: Option<u64>,
    rounds: Vec<Round>,
    peak_rss_kib: Option<u64>,
    whole_bytes: u64,
}

/// Runs the load client in a child process; its JSON report.
fn load_in_child(
    urls: &[String],
    requests: usize,
    concurrency: usize,
) -> anyhow::Result<LoadReport> {
    let exe = std::env::current_exe()?;
    let mut cmd = std::process::Command::new(exe);
    for u in urls {
        cmd.arg("--load-client").arg(u);
    }
    cmd.args(["--sd-requests", &requests.to_string()])
        .args(["--sd-concurrency", &concurrency.to_string()]);
    let out = cmd.output().context("cannot start the load client")?;
    if !out.status.success() {
        bail!(
            "the load client failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// The load client (`--load-client URL...`): the report on stdout, as JSON.
fn load_client(args: &Args) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let report = rt.block_on(load(
        &args.load_client,
        &[],
        args.sd_requests,
        args.sd_concurrency,
        Duration::from_secs(60),
    ));
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

async fn http_sd_load<W: World>(w: &W, enrichment: bool, args: &Args) -> anyhow::Result<SdLoad> {
    let opts = options(&[
        "--interval".into(),
        "5s".into(),
        "--output".into(),
        "none".into(),
        "--ecs-enrichment".into(),
        enrichment.to_string(),
    ])?;
    trim_heap();
    let reset = reset_peak_rss();
    let parts = InProcess::new(&opts);
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let base = format!("http://{}", listener.local_addr()?);
    let stop_server = CancellationToken::new();
    let server = {
        let (readiness, shutdown) = (parts.readiness.clone(), stop_server.clone());
        let sd = HttpSd::new(parts.published.clone(), None, parts.metrics.http_sd.clone())?;
        let m = parts.metrics.clone();
        std::thread::spawn(move || -> anyhow::Result<()> {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                let exposition: server::Exposition = Arc::new(move || m.encode());
                server::serve(listener, readiness, exposition, sd, shutdown).await
            })?;
            Ok(())
        })
    };
    let readiness = parts.readiness.clone();
    let measure = async {
        let started = std::time::Instant::now();
        while readiness.readiness().is_err() {
            if started.elapsed() > Duration::from_secs(300) {
                bail!("no complete discovery within 300s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let published_rss_kib = vm_kib("VmRSS");
        let whole = vec![format!("{base}/sd/targets")];
        let shards: Vec<String> = (0..4)
            .map(|i| format!("{base}/sd/targets?shard={i}/4"))
            .collect();
        let (n, c) = (args.sd_requests, args.sd_concurrency);
        let plan = [
            (
                "whole list, first request (renders it)".to_string(),
                &whole,
                1,
                1,
            ),
            (format!("whole list x{n}"), &whole, n, c),
            (format!("shards 0-3 of 4 x{}", n / 4), &shards, n / 4, c),
            (format!("whole list x{n}, again"), &whole, n, c),
        ];
        let mut rounds = Vec::new();
        for (name, urls, requests, concurrency) in plan {
            let urls = urls.clone();
            eprintln!("bench: http_sd load: {name}");
            let report =
                tokio::task::spawn_blocking(move || load_in_child(&urls, requests, concurrency))
                    .await??;
            rounds.push(Round {
                name,
                report,
                rss_kib: vm_kib("VmRSS"),
            });
        }
        let whole_bytes = rounds[0].report.bytes;
        anyhow::Ok(SdLoad {
            published_rss_kib,
            rounds,
            peak_rss_kib: None,
            whole_bytes,
        })
    };
    let result = with_loop_in(w, &opts, &parts, measure).await;
    stop_server.cancel();
    server
        .join()
        .map_err(|_| anyhow!("the server thread panicked"))??;
    let mut result = result?;
    result.peak_rss_kib = if reset { vm_kib("VmHWM") } else { None };
    Ok(result)
}

fn report_sd_load(l: &SdLoad, args: &Args) {
    println!(
        "(f) http_sd under load: sidecar::run in-process with --output none, the HTTP server \
         on its own 2-worker runtime, GET /sd/targets from a second process on loopback \
         ({} in flight); the whole list is {:.1} MB",
        args.sd_concurrency,
        l.whole_bytes as f64 / 1e6
    );
    let rows: Vec<Vec<String>> = l
        .rounds
        .iter()
        .map(|r| {
            let bad: usize = r
                .report
                .statuses
                .iter()
                .filter(|(k, _)| k.as_str() != "200")
                .map(|(_, v)| v)
                .sum();
            vec![
                r.name.clone(),
                format!("{:.1}", r.report.rps),
                format!("{:.1}", r.report.p50_ms),
                format!("{:.1}", r.report.p99_ms),
                format!("{:.1}", r.report.max_ms),
                bad.to_string(),
                r.rss_kib.map(mib).unwrap_or_default(),
            ]
        })
        .collect();
    print_table(
        &[
            "round",
            "req/s",
            "p50 ms",
            "p99 ms",
            "max ms",
            "not 200",
            "RSS after MiB",
        ]
        .map(String::from),
        &rows,
    );
    if let Some(r) = l.published_rss_kib {
        println!(
            "  RSS once the first discovery was published, before any request: {} MiB",
            mib(r)
        );
    }
    if let Some(p) = l.peak_rss_kib {
        println!(
            "  peak RSS over the loop and every round (VmHWM; the load client is another process): {} MiB",
            mib(p)
        );
    }
    if let (Some(a), Some(b)) = (
        l.rounds.get(1).and_then(|r| r.rss_kib),
        l.rounds.get(3).and_then(|r| r.rss_kib),
    ) {
        println!(
            "  RSS after the first and the second {}-request round of the whole list: {} and {} MiB",
            args.sd_requests,
            mib(a),
            mib(b)
        );
    }
    println!();
}

// ---------------------------------------------------------------------------------

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")?
                    .split_once(':')
                    .map(|x| x.1.trim().to_string())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cpu}, {cores} cores")
}

/// The parts asked for, on one topology.
async fn run_parts<W: World>(
    w: &W,
    topo: &Topo,
    args: &Args,
    opts: &Config,
    rng: &mut Rng,
) -> anyhow::Result<()> {
    let enrichment = args.against == Against::Fake;
    let mut steady = None;
    if args.parts.contains(&Part::Cycles) {
        let c = cycles(w, topo, opts).await?;
        report_cycles(&c, topo, opts, args.against);
        steady = Some(median(
            &c.steady
                .iter()
                .chain(&c.listed)
                .map(|s| s.wall)
                .collect::<Vec<_>>(),
        ));
    }
    if args.parts.contains(&Part::Ttt) {
        // Against moto: 5s or 3x the measured steady cycle, whichever is longer.
        let chosen = match (args.against, steady) {
            (Against::Moto, Some(st)) => {
                Duration::from_secs((st.as_secs_f64() * 3.0).ceil() as u64)
                    .max(Duration::from_secs(5))
            }
            _ => Duration::from_secs(5),
        };
        let interval = args.ttt_interval.unwrap_or(chosen);
        let t = time_to_target(w, topo, interval, enrichment, args.ttt_runs, rng).await?;
        report_ttt(&t);
        if let (None, Against::Moto, Some(st)) = (args.ttt_interval, args.against, steady) {
            println!(
                "  (interval chosen as 5s or 3x the median steady cycle of {} ms, whichever is longer)",
                ms(st)
            );
            println!();
        }
    }
    if args.parts.contains(&Part::Prometheus) {
        let mut costs = Vec::new();
        for variant in &label_variants() {
            costs.push(
                prometheus_cost(w, topo, variant, enrichment, args.prometheus_changes).await?,
            );
        }
        report_prometheus(&costs, args.prometheus_changes);
    }
    if args.parts.contains(&Part::HttpSd) {
        let l = http_sd_load(w, enrichment, args).await?;
        report_sd_load(&l, args);
    }
    Ok(())
}

async fn bench(args: &Args, moto: Option<&Moto>) -> anyhow::Result<()> {
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let mut rng = Rng(seed | 1);
    let dir = tempfile::tempdir()?;
    let enrichment = args.against == Against::Fake;
    let opts = options(&[
        "--output".into(),
        dir.path().join("targets.json").display().to_string(),
        "--ecs-enrichment".into(),
        enrichment.to_string(),
    ])?;
    println!("# cloudmap-sd benchmark ({})", machine());
    println!(
        "# build: {}; runtime: tokio current_thread; random seed {seed}",
        if cfg!(debug_assertions) {
            "DEBUG (numbers not representative; use --release)"
        } else {
            "release"
        }
    );
    println!();
    for &services in &args.services {
        let topo = Topo {
            services,
            tasks: args.tasks,
            namespaces: args.namespaces.max(1),
            hosts: args.hosts.max(1),
        };
        let title = format!(
            "== {}: {} services x {} tasks = {} targets ({} namespaces, {} ECS clusters, {} EC2 hosts) ==",
            match args.against {
                Against::Fake => "fake",
                Against::Moto => "moto",
            },
            topo.services,
            topo.tasks,
            topo.targets(),
            topo.namespaces,
            topo.namespaces,
            topo.hosts
        );
        match (args.against, moto) {
            (Against::Fake, _) => {
                let fake = Fake::new(topo);
                println!("{title}");
                println!("backend: {}", fake.describe());
                run_parts(&fake, &topo, args, &opts, &mut rng).await?;
            }
            (Against::Moto, Some(moto)) => {
                eprintln!(
                    "bench: seeding moto with {} services, {} instances",
                    topo.services,
                    topo.targets()
                );
                let seeded = std::time::Instant::now();
                let world =
                    MotoWorld::seed(moto, topo, opts.api_timeout, args.seed_concurrency).await?;
                let seeding = seeded.elapsed();
                println!("{title}");
                println!("backend: {} at {}", world.describe(), moto.url);
                println!(
                    "seeding: {:.1} s with {} calls in flight; ECS enrichment OFF \
                     (--ecs-enrichment false): no ECS/EC2 data is seeded in moto, so the \
                     ECS/EC2 rows are 0 here (the fake run covers them)",
                    seeding.as_secs_f64(),
                    args.seed_concurrency
                );
                run_parts(&world, &topo, args, &opts, &mut rng).await?;
            }
            (Against::Moto, None) => bail!("moto was not started"),
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !args.load_client.is_empty() {
        return load_client(&args);
    }
    if args.services.is_empty() || args.tasks == 0 || args.ttt_runs == 0 {
        bail!("--services, --tasks and --ttt-runs must be positive");
    }
    if args.parts.contains(&Part::HttpSd) && (args.sd_requests < 4 || args.sd_concurrency == 0) {
        bail!("--sd-requests must be at least 4 and --sd-concurrency positive");
    }
    // moto and its environment come first, while this process has a single thread.
    let moto = match args.against {
        Against::Moto => {
            let m = Moto::start();
            eprintln!("bench: moto server at {}", m.url);
            for (k, v) in [
                ("AWS_ENDPOINT_URL", m.url.as_str()),
                ("AWS_REGION", "us-east-1"),
                ("AWS_ACCESS_KEY_ID", "testing"),
                ("AWS_SECRET_ACCESS_KEY", "testing"),
                ("AWS_EC2_METADATA_DISABLED", "true"),
            ] {
                // SAFETY: no other thread exists yet (no runtime, no logger).
                unsafe { std::env::set_var(k, v) };
            }
            for k in ["AWS_PROFILE", "AWS_SESSION_TOKEN"] {
                // SAFETY: as above.
                unsafe { std::env::remove_var(k) };
            }
            Some(m)
        }
        Against::Fake => None,
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(bench(&args, moto.as_ref()))
}
