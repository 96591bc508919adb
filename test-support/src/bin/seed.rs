//! `seed`: seeds a Cloud Map topology (a JSON file) into moto server through the
//! test harness's one seeder, writes what it made as JSON, and with `--churn` keeps
//! registering and deregistering one task of a service until SIGINT or SIGTERM.
//!
//!   seed --endpoint http://127.0.0.1:5000 --topology scripts/demo-topology.json \
//!        --var SIDECAR_PORT=9469 --summary-json seed.json
//!   seed --endpoint http://127.0.0.1:5000 --churn apps/web --churn-every 10s

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::Parser;

use cloudmap_sd_test_support::Seeder;
use cloudmap_sd_test_support::topology::{TaskIds, Topology};

/// Seeds a Cloud Map topology into moto server (or churns one service's tasks).
#[derive(Debug, Parser)]
struct Args {
    /// The Cloud Map endpoint, e.g. http://127.0.0.1:5000 (moto server).
    #[arg(long)]
    endpoint: String,
    /// The topology to create (JSON: namespaces, services, tasks).
    #[arg(long)]
    topology: Option<PathBuf>,
    /// `NAME=VALUE`: replaces `${NAME}` in the topology (repeatable).
    #[arg(long = "var", value_parser = parse_var)]
    vars: Vec<(String, String)>,
    /// Also write what was seeded here, as JSON.
    #[arg(long)]
    summary_json: Option<PathBuf>,
    /// `NAMESPACE/SERVICE`: then register one more task of it, deregister it again,
    /// and so on, until SIGINT or SIGTERM (the task is deregistered on the way out).
    #[arg(long)]
    churn: Option<String>,
    /// Time between two churn steps.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    churn_every: Duration,
    /// The random seed of the task ids (same seed, same ids).
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
    if args.topology.is_none() && args.churn.is_none() {
        bail!("give --topology FILE, --churn NAMESPACE/SERVICE, or both");
    }
    let seeder = Seeder::new(&args.endpoint).await;
    let mut ids = TaskIds::new(args.seed);
    if let Some(path) = &args.topology {
        seed(&args, path, &seeder, &mut ids).await?;
    }
    if let Some(target) = &args.churn {
        // Another id stream than the seeding's: a churn process started after the
        // seeding must not reuse a seeded task's id (moto duplicates it).
        let mut churn_ids = TaskIds::new(!args.seed);
        churn(&seeder, target, args.churn_every, &mut churn_ids).await?;
    }
    Ok(())
}

async fn seed(
    args: &Args,
    path: &PathBuf,
    seeder: &Seeder,
    ids: &mut TaskIds,
) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let vars: BTreeMap<String, String> = args.vars.iter().cloned().collect();
    let topology = Topology::parse(&text, &vars).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let summary = topology.seed(seeder, &args.endpoint, ids).await;
    print!("{}", summary.describe());
    if let Some(out) = &args.summary_json {
        let tmp = out.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_string_pretty(&summary)? + "\n")
            .and_then(|()| std::fs::rename(&tmp, out))
            .with_context(|| format!("cannot write {}", out.display()))?;
    }
    Ok(())
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

async fn churn(
    seeder: &Seeder,
    target: &str,
    every: Duration,
    ids: &mut TaskIds,
) -> anyhow::Result<()> {
    let (namespace, name) = target
        .split_once('/')
        .ok_or_else(|| anyhow!("--churn {target}: expected NAMESPACE/SERVICE"))?;
    let id = service_id(seeder, namespace, name).await?;
    let template = registered_attributes(seeder, &id, target).await?;
    println!(
        "churn: every {every:?}, register then deregister one extra {target} task (Ctrl-C stops)"
    );
    let mut extra: Option<String> = None;
    let mut n = 0usize;
    let stop = stop_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            () = tokio::time::sleep(every) => {}
        }
        match extra.take() {
            None => {
                let ip = format!("127.0.0.{}", 100 + n % 100);
                let task = ids.next_id();
                seeder
                    .instance(&id, &task, &with_address(&template, &ip))
                    .await;
                println!("churn: registered {target} task {task} at {ip}");
                extra = Some(task);
                n += 1;
            }
            Some(task) => {
                seeder.deregister(&id, &task).await;
                println!("churn: deregistered {target} task {task}");
            }
        }
    }
    if let Some(task) = extra {
        seeder.deregister(&id, &task).await;
        println!("churn: stopped; deregistered {target} task {task}");
    }
    Ok(())
}

/// The attributes of a task already registered in service `id`: a new task of the
/// same service is registered as ECS would, in the same cluster and family.
async fn registered_attributes(
    seeder: &Seeder,
    id: &str,
    target: &str,
) -> anyhow::Result<Vec<(String, String)>> {
    let listed = seeder
        .sd
        .list_instances()
        .service_id(id)
        .send()
        .await
        .context("ListInstances")?;
    let first = listed
        .instances()
        .first()
        .and_then(|i| i.attributes())
        .ok_or_else(|| anyhow!("{target} has no task to copy: seed it first"))?;
    Ok(first.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

/// `template` with the task's own address.
fn with_address<'a>(template: &'a [(String, String)], ip: &str) -> Vec<(&'a str, String)> {
    let mut attrs: Vec<(&str, String)> = template
        .iter()
        .filter(|(k, _)| k != "AWS_INSTANCE_IPV4")
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    attrs.push(("AWS_INSTANCE_IPV4", ip.to_string()));
    attrs
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
