//! The `run` loop and the `once` pass: discovery -> targets -> writer, with metrics,
//! logs and readiness around them.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, info_span, warn};

use crate::aws::{AwsError, CloudMap, Ec2, Ecs};
use crate::config::{Cli, Options};
use crate::discovery::{Cycle, Discovery, DiscoveryOptions};
use crate::enrich::{EnrichOptions, Enriched, Enricher};
use crate::file_sd::{FileSd, Publish, WriteError};
use crate::metrics::{FileReasonLabels, Metrics, OutcomeLabels, ReasonLabels, ServiceLabels};
use crate::server::{self, Shared};
use crate::targets::{self, SkipReason, Skipped, Snapshot, Summary, TargetOptions};

/// Why the sidecar stopped or a `once` pass failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP server failed: {0}")]
    Server(#[source] std::io::Error),
    #[error("discovery failed, nothing written: {0}")]
    Discovery(#[source] AwsError),
    #[error("discovery incomplete, nothing written: {0}")]
    Incomplete(String),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("cannot write to stdout: {0}")]
    Stdout(#[source] std::io::Error),
}

impl DiscoveryOptions {
    /// The discovery part of the command-line options.
    pub fn from_options(o: &Options) -> Self {
        DiscoveryOptions {
            namespaces: o.namespaces.clone(),
            health: o.health_status,
            tags_refresh: o.tags_refresh,
            full_refresh: o.full_refresh,
            services_refresh: o.services_refresh,
            concurrency: usize::from(o.concurrency),
            listing_pages: usize::from(o.listing_pages),
            shard: o.shard.map(|s| (s, o.shard_key)),
        }
    }
}

impl EnrichOptions {
    /// The enrichment part of the command-line options.
    pub fn from_options(o: &Options) -> Self {
        EnrichOptions {
            hold: o.enrichment_hold,
            name_refresh: o.ec2_name_refresh,
            hosts_tag: o
                .ec2_hosts_tag
                .as_ref()
                .map(|t| (t.key.clone(), t.value.clone())),
            want_hosts: o.ec2_hosts_output.is_some(),
            ec2: o.ec2_enrichment,
        }
    }
}

/// The AWS adapters the sidecar uses.
pub struct Clients<C, E, X> {
    pub cloudmap: C,
    pub ecs: E,
    pub ec2: X,
}

/// Discovery plus, when enabled, enrichment: one pass over AWS.
struct Pipeline<C, E, X> {
    discovery: Discovery<C>,
    enricher: Option<Enricher<E, X>>,
}

impl<C: CloudMap, E: Ecs, X: Ec2> Pipeline<C, E, X> {
    fn new(clients: Clients<C, E, X>, options: &Options) -> Self {
        Pipeline {
            discovery: Discovery::new(clients.cloudmap, DiscoveryOptions::from_options(options)),
            enricher: options.ecs_enrichment.then(|| {
                Enricher::new(
                    clients.ecs,
                    clients.ec2,
                    EnrichOptions::from_options(options),
                )
            }),
        }
    }

    /// A discovery cycle with the enrichment folded into its snapshot; every call
    /// ends by `deadline`.
    async fn pass(
        &mut self,
        now: Instant,
        deadline: Instant,
    ) -> Result<(Cycle, Enriched), AwsError> {
        let mut cycle = self.discovery.cycle(now, deadline).await?;
        let mut enriched = match self.enricher.as_mut() {
            Some(e) => e.enrich(&cycle.snapshot, now, deadline).await,
            None => Enriched::default(),
        };
        cycle.snapshot.tasks = std::mem::take(&mut enriched.tasks);
        cycle.snapshot.held = std::mem::take(&mut enriched.held);
        Ok((cycle, enriched))
    }
}

impl TargetOptions {
    /// The labelling part of the command-line options.
    pub fn from_options(o: &Options) -> Self {
        TargetOptions {
            label_style: o.label_style,
            default_port: o.default_port,
        }
    }
}

/// One discovery pass, rendered.
pub struct Pass {
    pub cycle: Cycle,
    pub enriched: Enriched,
    /// What the targets file holds.
    pub summary: Arc<Summary>,
    /// False when the snapshot equals the last pass's: nothing was planned, and
    /// the file needs no write unless someone removed it.
    pub fresh: bool,
    /// How the targets are labelled (to render the file).
    pub targets: TargetOptions,
    /// The hosts file content, when --ec2-hosts-output is set and hosts are known.
    pub hosts: Option<Vec<u8>>,
}

/// The sidecar's discovery state and rendering: AWS calls and caches in, file
/// content out, with no clock or file of its own. [`run`] drives it every interval;
/// the benchmark drives it directly.
pub struct Engine<C, E, X> {
    pipeline: Pipeline<C, E, X>,
    publisher: Publisher,
    /// The last snapshot and its summary (the snapshot shares its data with
    /// discovery's cache, so keeping it costs little).
    last: Option<(Snapshot, Arc<Summary>)>,
    cycle_timeout: Duration,
    hosts_ports: Option<Vec<u16>>,
}

impl<C: CloudMap, E: Ecs, X: Ec2> Engine<C, E, X> {
    pub fn new(clients: Clients<C, E, X>, options: &Options, metrics: Arc<Metrics>) -> Self {
        Engine {
            pipeline: Pipeline::new(clients, options),
            publisher: Publisher::new(TargetOptions::from_options(options), metrics),
            last: None,
            cycle_timeout: options.cycle_timeout(),
            hosts_ports: options
                .ec2_hosts_output
                .as_ref()
                .map(|_| options.ec2_hosts_ports.clone()),
        }
    }

    /// One pass started at `started`, all calls ending by `started` plus the cycle
    /// timeout. `Err` only when nothing is known yet and the service listing failed.
    pub async fn pass(&mut self, started: Instant) -> Result<Pass, AwsError> {
        let deadline = started + self.cycle_timeout;
        let (cycle, enriched) = self.pipeline.pass(started, deadline).await?;
        self.publisher.record_cycle(&cycle);
        let (summary, fresh) = match &self.last {
            Some((snapshot, summary)) if *snapshot == cycle.snapshot => (summary.clone(), false),
            _ => {
                let summary = Arc::new(self.publisher.summarize(&cycle));
                self.last = Some((cycle.snapshot.clone(), summary.clone()));
                (summary, true)
            }
        };
        let hosts = match (&self.hosts_ports, &enriched.hosts) {
            (Some(ports), Some(hosts)) => {
                Some(targets::to_json(&targets::host_groups(hosts, ports)))
            }
            _ => None,
        };
        Ok(Pass {
            cycle,
            enriched,
            summary,
            fresh,
            targets: self.publisher.targets.clone(),
            hosts,
        })
    }

    /// The Cloud Map adapter (the benchmark reads its call counts).
    pub fn cloudmap(&self) -> &C {
        self.pipeline.discovery.client()
    }
}

/// Turns cycles into file content and keeps metrics and warnings about them.
struct Publisher {
    targets: TargetOptions,
    metrics: Arc<Metrics>,
    warned: BTreeSet<Skipped>,
    aged: BTreeSet<ServiceLabels>,
}

impl Publisher {
    fn new(targets: TargetOptions, metrics: Arc<Metrics>) -> Self {
        Publisher {
            targets,
            metrics,
            warned: BTreeSet::new(),
            aged: BTreeSet::new(),
        }
    }

    /// What the file of a cycle holds; warns once about each newly skipped endpoint.
    fn summarize(&mut self, cycle: &Cycle) -> Summary {
        let rendered = targets::summarize(&cycle.snapshot, &self.targets);
        for reason in SkipReason::ALL {
            let n = rendered
                .skipped
                .iter()
                .filter(|s| s.reason == reason)
                .count();
            self.metrics
                .skipped_endpoints
                .get_or_create(&ReasonLabels {
                    reason: reason.as_str(),
                })
                .set(n as i64);
        }
        let now: BTreeSet<Skipped> = rendered.skipped.iter().cloned().collect();
        for s in now.difference(&self.warned) {
            warn!(
                namespace = %s.namespace,
                service = %s.service,
                tag = %s.tag,
                value = s.value.as_deref().unwrap_or(""),
                instance = s.instance.as_deref().unwrap_or(""),
                reason = %s.reason,
                "endpoint skipped: {}",
                explain(s.reason)
            );
        }
        self.warned = now;
        rendered
    }

    /// Per-service failure counters and data-age gauges.
    fn record_cycle(&mut self, cycle: &Cycle) {
        for f in &cycle.failures {
            self.metrics
                .service_failures
                .get_or_create(&ServiceLabels {
                    namespace: f.namespace.clone(),
                    service: f.service.clone(),
                })
                .inc();
        }
        let mut aged = BTreeSet::new();
        for a in &cycle.ages {
            let l = ServiceLabels {
                namespace: a.namespace.clone(),
                service: a.service.clone(),
            };
            self.metrics
                .service_data_age
                .get_or_create(&l)
                .set(a.age.as_secs_f64());
            aged.insert(l);
        }
        for gone in self.aged.difference(&aged) {
            self.metrics.service_data_age.remove(gone);
        }
        self.aged = aged;
    }

    fn published(&self, cycle: &Cycle, rendered: &Summary, outcome: Publish) {
        self.metrics.targets.set(rendered.targets as i64);
        self.metrics.services.set(cycle.stats.tagged as i64);
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        self.metrics.last_success.set(unix);
        self.metrics
            .writes
            .get_or_create(&OutcomeLabels {
                outcome: match outcome {
                    Publish::Written => "written",
                    Publish::Unchanged => "unchanged",
                },
            })
            .inc();
    }
}

fn explain(r: SkipReason) -> &'static str {
    match r {
        SkipReason::InvalidPort => "port is not a number from 1 to 65535",
        SkipReason::InvalidPath => "path must start with / and hold no spaces",
        SkipReason::InvalidScheme => "scheme must be http or https",
        SkipReason::InvalidName => {
            "endpoint name after METRICS_PATH_ / METRICS_PORT_ / METRICS_SCHEME_ is empty"
        }
        SkipReason::MissingPort => {
            "no port tag, no AWS_INSTANCE_PORT attribute and no --default-port"
        }
        SkipReason::MissingPath => "port or scheme tag without the matching path tag",
        SkipReason::MissingAddress => "instance has no AWS_INSTANCE_IPV4 or AWS_INSTANCE_IPV6",
        SkipReason::InvalidAddress => {
            "AWS_INSTANCE_IPV4 / AWS_INSTANCE_IPV6 is not an IP address of that family"
        }
    }
}

fn describe_failures(cycle: &Cycle) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(e) = &cycle.listing_error {
        parts.push(e.to_string());
    }
    for f in &cycle.failures {
        let who = if f.namespace.is_empty() {
            f.service.clone()
        } else {
            format!("{}/{}", f.namespace, f.service)
        };
        parts.push(format!("{who}: {}", f.error));
    }
    parts.join("; ")
}

/// What a file is to hold.
enum Content {
    /// Small content, in memory (the hosts file).
    Bytes(Vec<u8>),
    /// The targets of a snapshot, rendered straight into the file.
    Targets {
        snapshot: Snapshot,
        targets: TargetOptions,
        /// False: the same snapshot as last time, so only a look at the file's
        /// size tells whether it must be written again (someone removed it).
        fresh: bool,
    },
}

impl Content {
    fn of(pass: &Pass) -> Self {
        Content::Targets {
            snapshot: pass.cycle.snapshot.clone(),
            targets: pass.targets.clone(),
            fresh: pass.fresh,
        }
    }
}

/// Writes `content` off the runtime; the writer comes back with the result.
async fn write(mut writer: FileSd, content: Content) -> (FileSd, Result<Publish, WriteError>) {
    tokio::task::spawn_blocking(move || {
        let r = match content {
            Content::Bytes(b) => writer.publish(&b),
            Content::Targets { fresh: false, .. } if writer.still_current() => {
                Ok(Publish::Unchanged)
            }
            Content::Targets {
                snapshot, targets, ..
            } => writer.publish_with(|w| targets::render_to(&snapshot, &targets, w)),
        };
        (writer, r)
    })
    .await
    .expect("the file writer does not panic")
}

/// One discovery pass (`once`): writes the file, or prints it for `--output -`.
/// Writes nothing unless every call succeeded.
pub async fn once<C: CloudMap, E: Ecs, X: Ec2>(
    clients: Clients<C, E, X>,
    options: &Options,
    metrics: Arc<Metrics>,
) -> Result<(), Error> {
    // One pass has no later cycle to wait for: a task whose host cannot be named is
    // written at once without the host's labels (with a warning), not left out.
    let options = &Options {
        enrichment_hold: Duration::ZERO,
        ..options.clone()
    };
    let mut engine = Engine::new(clients, options, metrics);
    let started = Instant::now();
    let pass = engine.pass(started).await.map_err(Error::Discovery)?;
    let (cycle, enriched) = (&pass.cycle, &pass.enriched);
    if !cycle.complete || !enriched.errors.is_empty() {
        let mut problems = vec![describe_failures(cycle)];
        problems.extend(enriched.errors.iter().map(|e| e.to_string()));
        problems.retain(|p| !p.is_empty());
        return Err(Error::Incomplete(problems.join("; ")));
    }
    if let (Some(path), Some(json)) = (&options.ec2_hosts_output, pass.hosts.clone()) {
        write(FileSd::open(path), Content::Bytes(json)).await.1?;
    }
    let outcome = if Cli::is_stdout(&options.output) {
        let mut out = std::io::stdout().lock();
        targets::render_to(&pass.cycle.snapshot, &pass.targets, &mut out)
            .and_then(|()| std::io::Write::flush(&mut out))
            .map_err(Error::Stdout)?;
        "printed"
    } else {
        let (_, r) = write(FileSd::open(&options.output), Content::of(&pass)).await;
        match r? {
            Publish::Written => "written",
            Publish::Unchanged => "unchanged",
        }
    };
    info!(
        services = pass.cycle.stats.services,
        tagged = pass.cycle.stats.tagged,
        instances = pass.cycle.stats.instances,
        targets = pass.summary.targets,
        skipped = pass.summary.skipped.len(),
        file = outcome,
        duration_ms = started.elapsed().as_millis() as u64,
        "discovery pass done"
    );
    Ok(())
}

/// Marks the write-failure gauges of `file`: `reason` set, the others cleared; a
/// failure also counts in the writes counter.
fn write_failing(metrics: &Metrics, file: &'static str, reason: Option<&'static str>) {
    if reason.is_some() {
        metrics
            .writes
            .get_or_create(&OutcomeLabels { outcome: "failed" })
            .inc();
    }
    for r in WriteError::REASONS {
        metrics
            .write_failing
            .get_or_create(&FileReasonLabels { file, reason: r })
            .set(i64::from(reason == Some(r)));
    }
}

/// The sidecar: serves HTTP and runs a discovery cycle every interval until
/// `shutdown` is cancelled. A write in progress is finished, never abandoned.
/// Cycles never overlap: each ends by --cycle-timeout, and a late one delays the
/// next tick instead of bunching ticks up.
pub async fn run<C: CloudMap, E: Ecs, X: Ec2>(
    clients: Clients<C, E, X>,
    options: &Options,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let listener = server::bind(options.listen)
        .await
        .map_err(|source| Error::Listen {
            addr: options.listen,
            source,
        })?;
    let shared = Arc::new(Shared::new(metrics.clone()));
    info!(listen = %options.listen, output = %options.output.display(),
        interval = %humantime::format_duration(options.interval),
        cycle_timeout = %humantime::format_duration(options.cycle_timeout()),
        namespaces = %if options.namespaces.is_empty() { "(all)".to_string() } else { options.namespaces.join(",") },
        shard = %options.shard.map_or("(none)".to_string(), |s| format!("{}/{} by {:?}", s.index, s.count, options.shard_key).to_lowercase()),
        "cloudmap-sd starting");
    let server = tokio::spawn(server::serve(listener, shared.clone(), shutdown.clone()));
    let remote_write = crate::remote_write::spawn(options, metrics.clone(), shutdown.clone());

    let mut engine = Engine::new(clients, options, metrics.clone());
    let mut writer = Some(FileSd::open(&options.output));
    let mut hosts_writer = options.ec2_hosts_output.as_deref().map(FileSd::open);
    let mut ticker = tokio::time::interval(options.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    // A snapshot rendered anew that has not reached the file yet (its write failed
    // or was not tried): the next write renders it even when the snapshot did not
    // change since.
    let mut pending = false;

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
            r = engine.pass(started).instrument(span.clone()) => r,
            _ = shutdown.cancelled() => break,
        };
        let _g = span.enter();
        metrics
            .cycle_duration
            .observe(started.elapsed().as_secs_f64());
        let pass = match result {
            Ok(p) => p,
            Err(e) => {
                metrics
                    .cycles
                    .get_or_create(&OutcomeLabels { outcome: "failed" })
                    .inc();
                if e.is_deadline() {
                    metrics.cycle_deadline_exceeded.inc();
                }
                error!(error = %e, "discovery failed before any service was known; the file is left as it is");
                continue;
            }
        };
        pending |= pass.fresh;
        let mut content = Content::of(&pass);
        if let Content::Targets { fresh, .. } = &mut content {
            *fresh = pending;
        }
        let Pass {
            cycle,
            enriched,
            summary: rendered,
            hosts,
            ..
        } = pass;
        metrics
            .cycles
            .get_or_create(&OutcomeLabels {
                outcome: if cycle.complete {
                    "complete"
                } else {
                    "partial"
                },
            })
            .inc();
        if cycle.deadline_exceeded {
            metrics.cycle_deadline_exceeded.inc();
            warn!(cycle_timeout = %humantime::format_duration(options.cycle_timeout()),
                "cycle deadline reached; unfinished services keep their last known targets");
        }
        metrics.shard_excluded.set(cycle.shard_excluded as i64);
        metrics.tasks_held.set(cycle.snapshot.held.len() as i64);
        if !cycle.complete && !shared.has_written() {
            warn!(problems = %describe_failures(&cycle),
                "first discovery incomplete; not publishing a partial list, trying again next cycle");
            continue;
        }
        if !cycle.snapshot.held.is_empty() && !shared.has_written() {
            warn!(
                held = cycle.snapshot.held.len(),
                "first publish waits for the ECS/EC2 facts of new tasks (at most --enrichment-hold)"
            );
            continue;
        }
        // None: the hosts are not known yet (every pass so far had a failed call).
        if let Some(json) = hosts
            && let Some(hw) = hosts_writer.take()
        {
            let (w, r) = write(hw, Content::Bytes(json)).await;
            match r {
                Ok(_) => write_failing(&metrics, "hosts", None),
                Err(e) => {
                    write_failing(&metrics, "hosts", Some(e.reason()));
                    error!(error = %e, "could not write the EC2 hosts file; the previous file is intact");
                }
            }
            hosts_writer = Some(w);
        }
        let (w, r) = write(writer.take().expect("writer is put back"), content).await;
        writer = Some(w);
        let file = match r {
            Ok(outcome) => {
                engine.publisher.published(&cycle, &rendered, outcome);
                pending = false;
                write_failing(&metrics, "targets", None);
                let first = !shared.has_written();
                let recovered = !first && shared.readiness().is_err();
                shared.set_ready();
                if first {
                    info!(file = %options.output.display(), "first write done; ready");
                } else if recovered {
                    info!(file = %options.output.display(), "file written again; ready");
                }
                match outcome {
                    Publish::Written => "written",
                    Publish::Unchanged => "unchanged",
                }
            }
            Err(e) => {
                write_failing(&metrics, "targets", Some(e.reason()));
                shared.set_write_error(e.to_string());
                error!(error = %e, "could not write the file; the previous file is intact; not ready until a write succeeds");
                "failed"
            }
        };
        let stale = cycle.failures.iter().filter(|f| f.kept).count();
        info!(
            services = cycle.stats.services,
            tagged = cycle.stats.tagged,
            instances = cycle.stats.instances,
            targets = rendered.targets,
            skipped = rendered.skipped.len(),
            instance_reads = cycle.stats.instance_reads,
            tag_reads = cycle.stats.tag_reads,
            failed = cycle.failures.len() + usize::from(cycle.listing_error.is_some()),
            stale,
            held = cycle.snapshot.held.len(),
            enrich_errors = enriched.errors.len(),
            file,
            duration_ms = started.elapsed().as_millis() as u64,
            "cycle done"
        );
    }

    info!("shutting down");
    shutdown.cancel();
    match tokio::time::timeout(Duration::from_secs(5), server).await {
        Ok(Ok(Err(e))) => return Err(Error::Server(e)),
        Ok(_) => {}
        Err(_) => warn!("HTTP server did not stop within 5s"),
    }
    if tokio::time::timeout(Duration::from_secs(2), remote_write)
        .await
        .is_err()
    {
        warn!("remote_write watch did not stop within 2s");
    }
    Ok(())
}
