//! The run loop: a discovery pass every interval, published with every writer
//! invariant, readiness and metrics kept, until shutdown. A write in progress is
//! finished, never abandoned. Cycles never overlap: each ends by the cycle timeout,
//! and a late one delays the next tick instead of bunching ticks up.

use std::sync::Arc;

use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, info_span, warn};

use super::{Content, Engine, Pass, RunMetrics, SidecarOptions, write};
use crate::aws::{Accounts, AwsError, CloudMap, Ec2, Ecs};
use crate::file_sd::{FileSd, Publish};
use crate::http_sd::Published;
use crate::server::Readiness;

/// Runs a cycle every interval until `shutdown` is cancelled, over the own
/// account's clients or several accounts'. Every publish goes to the file (unless
/// there is none) and to `published`, which `/sd/*` serves.
pub async fn run<C: CloudMap, E: Ecs, X: Ec2>(
    accounts: impl Into<Accounts<C, E, X>>,
    options: &SidecarOptions,
    metrics: Arc<RunMetrics>,
    readiness: Arc<Readiness>,
    published: Arc<Published>,
    shutdown: CancellationToken,
) {
    let hosts_path = options.hosts.as_ref().and_then(|h| h.path.as_deref());
    let mut state = Loop {
        engine: Engine::new(accounts, options, metrics.clone()),
        writer: options.output.as_deref().map(FileSd::open),
        hosts_writer: hosts_path.map(FileSd::open),
        pending: false,
        options,
        metrics,
        readiness,
        published,
    };
    let mut ticker = tokio::time::interval(options.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    loop {
        // The scheduled tick, not the time it was seen: the refresh clocks then
        // fall on whole multiples of the interval, free of scheduling jitter.
        let started = tokio::select! {
            _ = shutdown.cancelled() => break,
            t = ticker.tick() => t,
        };
        n += 1;
        let span = info_span!("cycle", n);
        let result = tokio::select! {
            r = state.engine.pass(started).instrument(span.clone()) => r,
            _ = shutdown.cancelled() => break,
        };
        state.cycle(started, result).instrument(span).await;
    }
    info!("shutting down");
}

/// What the loop keeps between cycles.
struct Loop<'o, C, E, X> {
    engine: Engine<C, E, X>,
    /// Taken while a write runs off the runtime; never there without a file
    /// (`options.output` None).
    writer: Option<FileSd>,
    hosts_writer: Option<FileSd>,
    /// A snapshot rendered anew that has not reached the file yet (its write failed
    /// or was not tried): the next write renders it even when the snapshot did not
    /// change since.
    pending: bool,
    options: &'o SidecarOptions,
    metrics: Arc<RunMetrics>,
    readiness: Arc<Readiness>,
    /// What /sd/* serves.
    published: Arc<Published>,
}

impl<C: CloudMap, E: Ecs, X: Ec2> Loop<'_, C, E, X> {
    /// Everything after one pass: metrics, the publish rules, the writes, the log.
    async fn cycle(&mut self, started: Instant, result: Result<Pass, AwsError>) {
        self.metrics
            .cycle_duration
            .observe(started.elapsed().as_secs_f64());
        let mut pass = match result {
            Ok(p) => p,
            Err(e) => return self.failed(e),
        };
        self.pending |= pass.fresh;
        self.record(&pass);
        if !self.may_publish(&pass) {
            return;
        }
        let hosts = pass.hosts.take();
        // /sd/* follows discovery even while the file cannot be written.
        self.published
            .publish(&pass.snapshot, &pass.targets, hosts.as_deref());
        if let Some(json) = hosts {
            self.write_hosts(json).await;
        }
        let file = self.write_targets(&pass).await;
        self.log_summary(&pass, file, started);
    }

    fn failed(&self, e: AwsError) {
        self.metrics.cycle("failed");
        if e.is_deadline() {
            self.metrics.cycle_deadline_exceeded.inc();
        }
        error!(error = %e, "discovery failed before any service was known; the file is left as it is");
    }

    fn record(&self, pass: &Pass) {
        self.metrics.cycle(if pass.complete() {
            "complete"
        } else {
            "partial"
        });
        if pass.deadline_exceeded() {
            self.metrics.cycle_deadline_exceeded.inc();
            warn!(cycle_timeout = %humantime::format_duration(self.options.cycle_timeout),
                "cycle deadline reached; unfinished services keep their last known targets");
        }
        self.metrics
            .shard_excluded
            .set(pass.shard_excluded() as i64);
        self.metrics.tasks_held.set(pass.snapshot.held.len() as i64);
    }

    /// The first publish waits for a complete cycle (in every account) and for the
    /// facts of new tasks: the first file is never a partial list.
    fn may_publish(&self, pass: &Pass) -> bool {
        if self.readiness.has_written() {
            return true;
        }
        if !pass.complete() {
            warn!(problems = %pass.describe_failures(),
                "first discovery incomplete; not publishing a partial list, trying again next cycle");
            return false;
        }
        if !pass.snapshot.held.is_empty() {
            warn!(
                held = pass.snapshot.held.len(),
                "first publish waits for the ECS/EC2 facts of new tasks (at most --enrichment-hold)"
            );
            return false;
        }
        true
    }

    async fn write_hosts(&mut self, json: Vec<u8>) {
        let Some(writer) = self.hosts_writer.take() else {
            return;
        };
        let (writer, r) = write(writer, Content::Bytes(json)).await;
        self.hosts_writer = Some(writer);
        match r {
            Ok(_) => self.metrics.write_failing("hosts", None),
            Err(e) => {
                self.metrics.write_failing("hosts", Some(e.reason()));
                error!(error = %e, "could not write the EC2 hosts file; the previous file is intact");
            }
        }
    }

    /// Publishes the targets file; says how it went (`written`, `unchanged`,
    /// `failed`, or `none` without a file).
    async fn write_targets(&mut self, pass: &Pass) -> &'static str {
        if self.options.output.is_none() {
            self.published(pass, None);
            return "none";
        }
        let writer = self.writer.take().expect("the writer is put back");
        let (writer, r) = write(writer, Content::targets(pass, self.pending)).await;
        self.writer = Some(writer);
        match r {
            Ok(outcome) => {
                self.published(pass, Some(outcome));
                outcome.as_str()
            }
            Err(e) => {
                self.metrics.write_failing("targets", Some(e.reason()));
                self.readiness.set_write_error(e.to_string());
                error!(error = %e, "could not write the file; the previous file is intact; not ready until a write succeeds");
                "failed"
            }
        }
    }

    /// A successful publish; `outcome`: what the file write did (None: no file).
    fn published(&mut self, pass: &Pass, outcome: Option<Publish>) {
        self.engine.publisher.published(pass, outcome);
        self.pending = false;
        self.metrics.write_failing("targets", None);
        let first = !self.readiness.has_written();
        let recovered = !first && self.readiness.readiness().is_err();
        self.readiness.set_ready();
        match (&self.options.output, first) {
            (None, true) => info!("first complete discovery served at /sd/targets; ready"),
            (None, false) => {}
            (Some(file), true) => info!(file = %file.display(), "first write done; ready"),
            (Some(file), false) if recovered => {
                info!(file = %file.display(), "file written again; ready")
            }
            (Some(_), false) => {}
        }
    }

    fn log_summary(&self, pass: &Pass, file: &'static str, started: Instant) {
        let stats = pass.stats();
        info!(
            services = stats.services,
            tagged = stats.tagged,
            instances = stats.instances,
            targets = pass.summary.targets,
            skipped = pass.summary.skipped.len(),
            instance_reads = stats.instance_reads,
            tag_reads = stats.tag_reads,
            failed = pass.failed(),
            stale = pass.stale(),
            held = pass.snapshot.held.len(),
            enrich_errors = pass.enrich_errors().count(),
            file,
            duration_ms = started.elapsed().as_millis() as u64,
            "cycle done"
        );
        for a in &pass.accounts {
            a.log_summary(&pass.summary);
        }
    }
}
