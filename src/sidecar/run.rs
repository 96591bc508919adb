//! The run loop: a discovery pass every interval, published with every writer
//! invariant, readiness and metrics kept, until shutdown. A write in progress is
//! finished, never abandoned. Cycles never overlap: each ends by the cycle timeout,
//! and a late one delays the next tick instead of bunching ticks up. While most
//! calls fail with throttling or server errors, the next cycle waits longer
//! ([`super::backoff`]). With events, the services they touch are refreshed
//! between cycles, one refresh at a time in the same task, so a refresh and a
//! cycle never overlap either, and both publish through the same steps.

use std::sync::Arc;

use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, info_span, warn};

use super::backoff::Backoff;
use super::follow::{Events, Follow};
use super::{Content, Engine, Pass, RunMetrics, SidecarOptions, write};
use crate::aws::{Accounts, AwsError, CloudMap, Ec2, Ecs};
use crate::events::Touch;
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
    run_with_events(
        accounts, options, metrics, readiness, published, None, shutdown,
    )
    .await
}

/// What woke the loop.
enum Wake {
    Stop,
    /// The scheduled tick, not the time it was seen: the refresh clocks then
    /// fall on whole multiples of the interval, free of scheduling jitter.
    Tick(Instant),
    /// Touches from the events queue.
    Touches(Vec<Touch>),
    /// A touched service is due for another look.
    Retry,
}

/// [`run`], and between cycles the services that ECS events touch (`events`),
/// refreshed at once and published (to the file and to `published`) as soon as
/// they change. A refresh never runs during a cycle: touches wait for the
/// cycle's end.
pub async fn run_with_events<C: CloudMap, E: Ecs, X: Ec2>(
    accounts: impl Into<Accounts<C, E, X>>,
    options: &SidecarOptions,
    metrics: Arc<RunMetrics>,
    readiness: Arc<Readiness>,
    published: Arc<Published>,
    events: Option<Events>,
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
        backoff: Backoff::new(options.interval),
        failing: false,
    };
    let mut follow = events.map(Follow::new);
    let mut ticker = tokio::time::interval(options.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    loop {
        match wake(&mut ticker, follow.as_mut(), &shutdown).await {
            Wake::Stop => break,
            Wake::Tick(started) => {
                n += 1;
                let span = info_span!("cycle", n);
                let result = tokio::select! {
                    r = state.engine.pass(started).instrument(span.clone()) => r,
                    _ = shutdown.cancelled() => break,
                };
                let written = state.cycle(started, result).instrument(span).await;
                if let Some(next) = state.slow_down(started) {
                    ticker.reset_at(next);
                }
                if let Some(f) = follow.as_mut() {
                    // A change reached the targets: the file was rewritten, or
                    // without a file /sd/targets took the publish.
                    f.after_cycle(&state.engine, matches!(written, Some("written" | "none")));
                }
            }
            Wake::Touches(batch) => {
                let Some(f) = follow.as_mut() else { continue };
                f.take(batch, &state.engine);
                state.refresh(f).await;
            }
            Wake::Retry => {
                if let Some(f) = follow.as_mut() {
                    state.refresh(f).await;
                }
            }
        }
    }
    info!("shutting down");
}

/// Waits for the next thing to do: a tick, touches (all that arrived, in one
/// batch), a retry falling due, or shutdown.
async fn wake(
    ticker: &mut tokio::time::Interval,
    follow: Option<&mut Follow>,
    shutdown: &CancellationToken,
) -> Wake {
    let Some(f) = follow else {
        return tokio::select! {
            _ = shutdown.cancelled() => Wake::Stop,
            t = ticker.tick() => Wake::Tick(t),
        };
    };
    let retry = f.next_due();
    let touches = &mut f.events.feed.touches;
    tokio::select! {
        biased;
        _ = shutdown.cancelled() => Wake::Stop,
        t = ticker.tick() => Wake::Tick(t),
        Some(mut batch) = touches.recv() => {
            while let Ok(more) = touches.try_recv() {
                batch.extend(more);
            }
            Wake::Touches(batch)
        }
        _ = tokio::time::sleep_until(retry.unwrap_or_else(Instant::now)), if retry.is_some() => Wake::Retry,
    }
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
    /// The pace while AWS is failing.
    backoff: Backoff,
    /// The last pass mostly failed with faults that pass by themselves.
    failing: bool,
}

impl<C: CloudMap, E: Ecs, X: Ec2> Loop<'_, C, E, X> {
    /// Everything after one pass: metrics, the publish rules, the writes, the log.
    /// Returns how the targets file went (None: not published), and notes for
    /// the pace whether the pass mostly failed.
    async fn cycle(
        &mut self,
        started: Instant,
        result: Result<Pass, AwsError>,
    ) -> Option<&'static str> {
        self.metrics
            .cycle_duration
            .observe(started.elapsed().as_secs_f64());
        let mut pass = match result {
            Ok(p) => p,
            Err(e) => {
                self.failing = e.kind.is_transient() && !e.is_deadline();
                self.failed(e);
                return None;
            }
        };
        self.failing = pass.mostly_failing();
        self.pending |= pass.fresh;
        self.record(&pass);
        if !self.may_publish(&pass) {
            return None;
        }
        let file = self.publish(&mut pass).await;
        self.log_summary(&pass, file, started);
        Some(file)
    }

    /// The publish steps of a cycle and of an event refresh alike: the snapshot
    /// (and hosts list) handed to /sd/*, then the hosts file when the pass has
    /// it, then the targets file. Says how the targets file went.
    async fn publish(&mut self, pass: &mut Pass) -> &'static str {
        let hosts = pass.hosts.take();
        // /sd/* follows discovery even while the file cannot be written.
        self.published
            .publish(&pass.snapshot, &pass.targets, hosts.as_deref());
        if let Some(json) = hosts {
            self.write_hosts(json).await;
        }
        self.write_targets(pass).await
    }

    /// When the next cycle starts if the one that started at `started` mostly
    /// failed (AWS throttling or erring): later, doubling while it lasts; None
    /// when the interval holds. Says so once when it starts and when it ends.
    fn slow_down(&mut self, started: Instant) -> Option<Instant> {
        let was = self.backoff.failing();
        let wait = self.backoff.next(std::mem::take(&mut self.failing));
        let now = self.backoff.failing();
        if was == 0 && now > 0 {
            warn!(next_cycle_in = %humantime::format_duration(wait),
                "most AWS calls fail with throttling or server errors; slowing down (each failing cycle doubles the wait, at most 8 intervals); last known targets stay published");
        } else if was > 0 && now == 0 {
            info!(
                failing_cycles = was,
                "AWS calls succeed again; back to every --interval"
            );
        }
        self.metrics
            .backoff_seconds
            .set(wait.saturating_sub(self.options.interval).as_secs_f64());
        (now > 0).then(|| started + wait)
    }

    /// Refreshes the touched services that are due, between cycles, and
    /// publishes the result as a cycle's (never before the first publish, which
    /// waits for a complete cycle).
    async fn refresh(&mut self, follow: &mut Follow) {
        if !self.readiness.has_written() {
            follow.clear();
            return;
        }
        let started = Instant::now();
        let wanted = follow.due(started);
        if wanted.is_empty() {
            return;
        }
        let span = info_span!("event refresh");
        let Some((mut pass, refreshed)) = self
            .engine
            .refresh(&wanted, started)
            .instrument(span.clone())
            .await
        else {
            follow.clear();
            return;
        };
        self.pending |= pass.fresh;
        let file = self.publish(&mut pass).instrument(span.clone()).await;
        follow.after_refresh(&self.engine, &refreshed, &wanted, file != "failed");
        let _enter = span.enter();
        let services: usize = wanted.values().map(Vec::len).sum();
        let changed: usize = refreshed.values().map(|r| r.changed.len()).sum();
        let failed: usize = refreshed.values().map(|r| r.failed.len()).sum();
        info!(
            services,
            changed,
            failed,
            targets = pass.summary.targets,
            file,
            duration_ms = started.elapsed().as_millis() as u64,
            "event refresh done"
        );
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
