//! `seed`: seeds a topology (a JSON file: EC2 hosts, ECS clusters and tasks, Cloud
//! Map namespaces and services) into moto server through the test harness's one
//! seeder, and writes what it made as JSON. With `--serve` it then stays up as the
//! demo's world: the harness's proxy in front of moto (the endpoint for the sidecar:
//! it answers DescribeTasks as ECS does where moto does not) and a stand-in metrics
//! endpoint on every address a task or host of the topology listens on. With
//! `--add-task` / `--remove-task` it starts or stops one more task of a service.
//!
//!   seed --endpoint http://127.0.0.1:5000 --topology scripts/demo-topology.json \
//!        --var SIDECAR_PORT=9469 --summary-json seed.json --serve
//!   seed --endpoint http://127.0.0.1:5000 --add-task apps/web@127.0.0.100
//!   seed --endpoint http://127.0.0.1:5000 --remove-task apps/web@127.0.0.100

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use clap::Parser;

use cloudmap_sd_test_support::topology::{Summary, TaskIds, Topology};
use cloudmap_sd_test_support::{Exporters, Proxy, Seeder};

/// Seeds a topology into moto server, serves its stand-in endpoints, or starts and
/// stops one task.
#[derive(Debug, Parser)]
struct Args {
    /// moto server's URL, e.g. http://127.0.0.1:5000.
    #[arg(long)]
    endpoint: String,
    /// The topology to create (JSON: hosts, namespaces, services, tasks).
    #[arg(long)]
    topology: Option<PathBuf>,
    /// `NAME=VALUE`: replaces `${NAME}` in the topology (repeatable).
    #[arg(long = "var", value_parser = parse_var)]
    vars: Vec<(String, String)>,
    /// Also write what was seeded here, as JSON (with --serve: once everything
    /// listens).
    #[arg(long)]
    summary_json: Option<PathBuf>,
    /// After seeding, keep serving (the proxy for the sidecar, and the stand-in
    /// metrics endpoints of the tasks, spare task addresses and hosts) until SIGINT or
    /// SIGTERM.
    #[arg(long, requires = "topology")]
    serve: bool,
    /// `NAMESPACE/SERVICE@IP`: start one more task of that service at IP, as ECS
    /// would (same cluster, family and launch type as its first task), and register
    /// it in Cloud Map. Prints its task id.
    #[arg(long, conflicts_with_all = ["topology", "remove_task"])]
    add_task: Option<String>,
    /// `NAMESPACE/SERVICE@IP`: deregister the task of that service at IP from Cloud
    /// Map and stop it in ECS.
    #[arg(long, conflicts_with = "topology")]
    remove_task: Option<String>,
    /// The random seed of made-up task ids (same seed, same ids).
    #[arg(long, default_value_t = 20240601)]
    seed: u64,
}

fn parse_var(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err("expected NAME=VALUE".into()),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("seed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    // moto's ECS answers need the proxy's fix before the SDK can read them.
    let proxy = Proxy::start(&args.endpoint).await;
    let seeder = Seeder::new(&proxy.url).await;
    if let Some(path) = &args.topology {
        let mut summary = seed(&args, path, &seeder).await?;
        if !args.serve {
            return write_summary(&args, &summary);
        }
        summary.aws_endpoint = Some(proxy.url.clone());
        let endpoints = summary.endpoints().map_err(|e| anyhow!(e))?;
        let exporters = Exporters::start(&endpoints).await.map_err(|e| anyhow!(e))?;
        write_summary(&args, &summary)?;
        println!(
            "serving {} stand-in metrics endpoints on {} addresses; the sidecar's AWS \
             endpoint (moto behind the proxy): {} (Ctrl-C stops)",
            endpoints.len(),
            exporters.addrs.len(),
            proxy.url
        );
        stop_signal().await;
        return Ok(());
    }
    match (&args.add_task, &args.remove_task) {
        (Some(t), _) => add_task(&seeder, t).await,
        (None, Some(t)) => remove_task(&seeder, t).await,
        (None, None) => bail!("give --topology FILE, --add-task or --remove-task"),
    }
}

async fn seed(args: &Args, path: &PathBuf, seeder: &Seeder) -> anyhow::Result<Summary> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let vars: BTreeMap<String, String> = args.vars.iter().cloned().collect();
    let topology = Topology::parse(&text, &vars).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let summary = topology
        .seed(seeder, &args.endpoint, &mut TaskIds::new(args.seed))
        .await;
    print!("{}", summary.describe());
    Ok(summary)
}

fn write_summary(args: &Args, summary: &Summary) -> anyhow::Result<()> {
    let Some(out) = &args.summary_json else {
        return Ok(());
    };
    let tmp = out.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(summary)? + "\n")
        .and_then(|()| std::fs::rename(&tmp, out))
        .with_context(|| format!("cannot write {}", out.display()))
}

/// `NAMESPACE/SERVICE@IP` split in three.
fn task_spec(spec: &str) -> anyhow::Result<(&str, &str, &str)> {
    let parse = || {
        let (svc, ip) = spec.split_once('@')?;
        let (ns, name) = svc.split_once('/')?;
        Some((ns, name, ip))
    };
    parse().ok_or_else(|| anyhow!("{spec}: expected NAMESPACE/SERVICE@IP"))
}

/// The id of service `name` in namespace `namespace`.
async fn service_id(seeder: &Seeder, namespace: &str, name: &str) -> anyhow::Result<String> {
    let sd = &seeder.sd;
    let namespaces = sd
        .list_namespaces()
        .send()
        .await
        .context("ListNamespaces")?;
    let ns_id = namespaces
        .namespaces()
        .iter()
        .find(|n| n.name() == Some(namespace))
        .and_then(|n| n.id())
        .ok_or_else(|| anyhow!("no namespace {namespace}: seed first"))?
        .to_string();
    let services = sd.list_services().send().await.context("ListServices")?;
    for s in services.services() {
        let (Some(id), Some(n)) = (s.id(), s.name()) else {
            continue;
        };
        if n != name {
            continue;
        }
        // moto ignores ListServices filters; GetService says the namespace.
        let got = sd.get_service().id(id).send().await.context("GetService")?;
        if got.service().and_then(|s| s.namespace_id()) == Some(ns_id.as_str()) {
            return Ok(id.to_string());
        }
    }
    bail!("no service {namespace}/{name}: seed first")
}

/// The service's registered instances: (instance id, attributes).
async fn instances(
    seeder: &Seeder,
    service_id: &str,
) -> anyhow::Result<Vec<(String, BTreeMap<String, String>)>> {
    let listed = seeder
        .sd
        .list_instances()
        .service_id(service_id)
        .send()
        .await
        .context("ListInstances")?;
    Ok(listed
        .instances()
        .iter()
        .filter_map(|i| {
            let attrs = i.attributes().cloned().unwrap_or_default();
            Some((i.id()?.to_string(), attrs.into_iter().collect()))
        })
        .collect())
}

/// The launch type ECS gives the task `id` of `cluster`, if it knows the task.
async fn launch_type(
    seeder: &Seeder,
    cluster: &str,
    id: &str,
) -> Option<aws_sdk_ecs::types::LaunchType> {
    let out = seeder
        .ecs
        .describe_tasks()
        .cluster(cluster)
        .tasks(id)
        .send()
        .await
        .ok()?;
    out.tasks().first()?.launch_type().cloned()
}

async fn add_task(seeder: &Seeder, spec: &str) -> anyhow::Result<()> {
    let (namespace, name, ip) = task_spec(spec)?;
    let id = service_id(seeder, namespace, name).await?;
    let (first, mut attrs) = instances(seeder, &id)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("{namespace}/{name} has no task to copy: seed it first"))?;
    attrs.insert("AWS_INSTANCE_IPV4".into(), ip.to_string());
    let cluster = attrs.get("ECS_CLUSTER_NAME").cloned().unwrap_or_default();
    let family = attrs.get("ECS_TASK_DEFINITION_FAMILY").cloned();
    let task = match (launch_type(seeder, &cluster, &first).await, family) {
        (Some(lt), Some(family)) => seeder.run_tasks(&cluster, &family, lt, 1).await.remove(0),
        // Not an ECS task: a made-up id, another one each run.
        _ => {
            TaskIds::new(SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as u64).next_id()
        }
    };
    let attrs: Vec<(&str, String)> = attrs.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    seeder.instance(&id, &task, &attrs).await;
    println!("{task}");
    Ok(())
}

async fn remove_task(seeder: &Seeder, spec: &str) -> anyhow::Result<()> {
    let (namespace, name, ip) = task_spec(spec)?;
    let id = service_id(seeder, namespace, name).await?;
    let (task, attrs) = instances(seeder, &id)
        .await?
        .into_iter()
        .find(|(_, a)| a.get("AWS_INSTANCE_IPV4").map(String::as_str) == Some(ip))
        .ok_or_else(|| anyhow!("{namespace}/{name} has no task at {ip}"))?;
    seeder.deregister(&id, &task).await;
    let cluster = attrs.get("ECS_CLUSTER_NAME").cloned().unwrap_or_default();
    if launch_type(seeder, &cluster, &task).await.is_some() {
        seeder.stop_task(&cluster, &task).await;
    }
    println!("{task}");
    Ok(())
}

/// The first SIGINT or SIGTERM.
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
