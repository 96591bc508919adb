//! The run loop: a discovery pass every interval, published with every writer
//! invariant, readiness and metrics kept, until shutdown. A write in progress is
//! finished, never abandoned. Cycles never overlap: each ends by the cycle timeout,
//! and a late one delays the next tick instead of bunching ticks up.

use std::sync::Arc;

use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, info_span, warn};

use super::{Content, Engine, Pass, RunMetrics, SidecarOptions, write};
use crate::aws::{AwsError, Clients, CloudMap, Ec2, Ecs};
use crate::file_sd::{FileSd, Publish};
use crate::server::Readiness;

/// Runs a cycle every interval until `shutdown` is cancelled.
pub async fn run<C: CloudMap, E: Ecs, X: Ec2>(
    clients: Clients<C, E, X>,
    options: &SidecarOptions,
    metrics: Arc<RunMetrics>,
    readiness: Arc<Readiness>,
    shutdown: CancellationToken,
) {
    let mut state = Loop {
        engine: Engine::new(clients, options, metrics.clone()),
        writer: Some(FileSd::open(&options.output)),
        hosts_writer: options.hosts.as_ref().map(|h| FileSd::open(&h.path)),
        pending: false,
        options,
        metrics,
        readiness,
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
    /// Taken while a write runs off the runtime.
    writer: Option<FileSd>,
    hosts_writer: Option<FileSd>,
    /// A snapshot rendered anew that has not reached the file yet (its write failed
    /// or was not tried): the next write renders it even when the snapshot did not
    /// change since.
    pending: bool,
    options: &'o SidecarOptions,
    metrics: Arc<RunMetrics>,
    readiness: Arc<Readiness>,
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
        if let Some(json) = pass.hosts.take() {
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
        let cycle = &pass.cycle;
        self.metrics.cycle(if cycle.complete {
            "complete"
        } else {
            "partial"
        });
        if cycle.deadline_exceeded {
            self.metrics.cycle_deadline_exceeded.inc();
            warn!(cycle_timeout = %humantime::format_duration(self.options.cycle_timeout),
                "cycle deadline reached; unfinished services keep their last known targets");
        }
        self.metrics.shard_excluded.set(cycle.shard_excluded as i64);
        self.metrics
            .tasks_held
            .set(cycle.snapshot.held.len() as i64);
    }

    /// The first publish waits for a complete cycle and for the facts of new tasks:
    /// the first file is never a partial list.
    fn may_publish(&self, pass: &Pass) -> bool {
        if self.readiness.has_written() {
            return true;
        }
        let cycle = &pass.cycle;
        if !cycle.complete {
            warn!(problems = %cycle.describe_failures(),
                "first discovery incomplete; not publishing a partial list, trying again next cycle");
            return false;
        }
        if !cycle.snapshot.held.is_empty() {
            warn!(
                held = cycle.snapshot.held.len(),
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
    /// `failed`).
    async fn write_targets(&mut self, pass: &Pass) -> &'static str {
        let writer = self.writer.take().expect("the writer is put back");
        let (writer, r) = write(writer, Content::targets(pass, self.pending)).await;
        self.writer = Some(writer);
        match r {
            Ok(outcome) => {
                self.published(pass, outcome);
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

    fn published(&mut self, pass: &Pass, outcome: Publish) {
        self.engine.publisher.published(&pass.summary, outcome);
        self.pending = false;
        self.metrics.write_failing("targets", None);
        let first = !self.readiness.has_written();
        let recovered = !first && self.readiness.readiness().is_err();
        self.readiness.set_ready();
        let file = self.options.output.display();
        if first {
            info!(file = %file, "first write done; ready");
        } else if recovered {
            info!(file = %file, "file written again; ready");
        }
    }

    fn log_summary(&self, pass: &Pass, file: &'static str, started: Instant) {
        let cycle = &pass.cycle;
        let stale = cycle.failures.iter().filter(|f| f.kept).count();
        info!(
            services = cycle.stats.services,
            tagged = cycle.stats.tagged,
            instances = cycle.stats.instances,
            targets = pass.summary.targets,
            skipped = pass.summary.skipped.len(),
            instance_reads = cycle.stats.instance_reads,
            tag_reads = cycle.stats.tag_reads,
            failed = cycle.failures.len() + usize::from(cycle.listing_error.is_some()),
            stale,
            held = cycle.snapshot.held.len(),
            enrich_errors = pass.enriched.errors.len(),
            file,
            duration_ms = started.elapsed().as_millis() as u64,
            "cycle done"
        );
    }
}
