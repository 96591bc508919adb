//! `once`: one discovery pass, written to the file or printed for `--output -`.
//! Writes nothing unless every call succeeded.

use std::sync::Arc;

use tokio::time::Instant;
use tracing::info;

use super::{Content, Engine, Error, Pass, RunMetrics, SidecarOptions, write};
use crate::aws::{Accounts, CloudMap, Ec2, Ecs};
use crate::file_sd::{self, FileSd};
use crate::targets;

/// One pass (`once`). The options come as `config` builds them for `once`: a task
/// whose host cannot be named is written at once without the host's labels (no
/// later cycle to wait for).
pub async fn once<C: CloudMap, E: Ecs, X: Ec2>(
    accounts: impl Into<Accounts<C, E, X>>,
    options: &SidecarOptions,
    metrics: Arc<RunMetrics>,
) -> Result<(), Error> {
    let output = options.output.as_deref().ok_or(Error::NoFile)?;
    let mut engine = Engine::new(accounts, options, metrics);
    let started = Instant::now();
    let mut pass = engine.pass(started).await.map_err(Error::Discovery)?;
    refuse_incomplete(&pass)?;
    let hosts_path = options.hosts.as_ref().and_then(|h| h.path.as_deref());
    if let (Some(path), Some(json)) = (hosts_path, pass.hosts.take()) {
        write(FileSd::open(path), Content::Bytes(json)).await.1?;
    }
    let outcome = if file_sd::is_stdout(output) {
        print(&pass)?;
        "printed"
    } else {
        let content = Content::targets(&pass, pass.fresh);
        write(FileSd::open(output), content).await.1?.as_str()
    };
    let stats = pass.stats();
    info!(
        services = stats.services,
        tagged = stats.tagged,
        instances = stats.instances,
        targets = pass.summary.targets,
        skipped = pass.summary.skipped.len(),
        file = outcome,
        duration_ms = started.elapsed().as_millis() as u64,
        "discovery pass done"
    );
    for a in &pass.accounts {
        a.log_summary(&pass.summary);
    }
    Ok(())
}

/// A pass with any failed call, in any account, is not published.
fn refuse_incomplete(pass: &Pass) -> Result<(), Error> {
    if pass.complete() && pass.enrich_errors().next().is_none() {
        return Ok(());
    }
    let mut problems = vec![pass.describe_failures()];
    problems.extend(pass.enrich_errors().map(|e| e.to_string()));
    problems.retain(|p| !p.is_empty());
    Err(Error::Incomplete(problems.join("; ")))
}

fn print(pass: &Pass) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    targets::render_to(&pass.snapshot, &pass.targets, &mut out)
        .and_then(|()| std::io::Write::flush(&mut out))
        .map_err(Error::Stdout)
}
