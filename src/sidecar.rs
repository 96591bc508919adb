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
use crate::metrics::{Metrics, OutcomeLabels, ReasonLabels, ServiceLabels};
use crate::server::{self, Shared};
use crate::targets::{self, Built, SkipReason, Skipped, TargetOptions};

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
            concurrency: usize::from(o.concurrency),
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

    /// A discovery cycle with the enrichment folded into its snapshot.
    async fn pass(&mut self, now: Instant) -> Result<(Cycle, Enriched), AwsError> {
        let mut cycle = self.discovery.cycle(now).await?;
        let mut enriched = match self.enricher.as_mut() {
            Some(e) => e.enrich(&cycle.snapshot, now).await,
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

    /// Builds the file content of a cycle; warns once about each newly skipped endpoint.
    fn render(&mut self, cycle: &Cycle) -> (Vec<u8>, Built) {
        let built = targets::build(&cycle.snapshot, &self.targets);
        for reason in SkipReason::ALL {
            let n = built.skipped.iter().filter(|s| s.reason == reason).count();
            self.metrics
                .skipped_endpoints
                .get_or_create(&ReasonLabels {
                    reason: reason.as_str(),
                })
                .set(n as i64);
        }
        let now: BTreeSet<Skipped> = built.skipped.iter().cloned().collect();
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
        (targets::to_json(&built.groups), built)
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

    fn published(&self, cycle: &Cycle, built: &Built, outcome: Publish) {
        self.metrics.targets.set(built.groups.len() as i64);
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
        SkipReason::InvalidName => "endpoint name after METRICS_PATH_ / METRICS_PORT_ is empty",
        SkipReason::MissingPort => {
            "no port tag, no AWS_INSTANCE_PORT attribute and no --default-port"
        }
        SkipReason::MissingPath => "port or scheme tag without the matching path tag",
        SkipReason::MissingAddress => "instance has no AWS_INSTANCE_IPV4 or AWS_INSTANCE_IPV6",
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

/// Writes `content` off the runtime; the writer comes back with the result.
async fn write(mut writer: FileSd, content: Vec<u8>) -> (FileSd, Result<Publish, WriteError>) {
    tokio::task::spawn_blocking(move || {
        let r = writer.publish(&content);
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
    let mut pipeline = Pipeline::new(clients, options);
    let mut publisher = Publisher::new(TargetOptions::from_options(options), metrics);
    let started = Instant::now();
    let (cycle, enriched) = pipeline.pass(started).await.map_err(Error::Discovery)?;
    if !cycle.complete || !enriched.errors.is_empty() {
        let mut problems = vec![describe_failures(&cycle)];
        problems.extend(enriched.errors.iter().map(|e| e.to_string()));
        problems.retain(|p| !p.is_empty());
        return Err(Error::Incomplete(problems.join("; ")));
    }
    let (content, built) = publisher.render(&cycle);
    if let (Some(path), Some(hosts)) = (&options.ec2_hosts_output, &enriched.hosts) {
        let json = targets::to_json(&targets::host_groups(hosts, &options.ec2_hosts_ports));
        write(FileSd::open(path), json).await.1?;
    }
    let outcome = if Cli::is_stdout(&options.output) {
        crate::file_sd::write_stdout(&content).map_err(Error::Stdout)?;
        "printed"
    } else {
        let (_, r) = write(FileSd::open(&options.output), content).await;
        match r? {
            Publish::Written => "written",
            Publish::Unchanged => "unchanged",
        }
    };
    info!(
        services = cycle.stats.services,
        tagged = cycle.stats.tagged,
        instances = cycle.stats.instances,
        targets = built.groups.len(),
        skipped = built.skipped.len(),
        file = outcome,
        duration_ms = started.elapsed().as_millis() as u64,
        "discovery pass done"
    );
    Ok(())
}

/// The sidecar: serves HTTP and runs a discovery cycle every interval until
/// `shutdown` is cancelled. A write in progress is finished, never abandoned.
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
        namespaces = %if options.namespaces.is_empty() { "(all)".to_string() } else { options.namespaces.join(",") },
        "cloudmap-sd starting");
    let server = tokio::spawn(server::serve(listener, shared.clone(), shutdown.clone()));
    let remote_write = crate::remote_write::spawn(options, metrics.clone(), shutdown.clone());

    let mut pipeline = Pipeline::new(clients, options);
    let mut publisher = Publisher::new(TargetOptions::from_options(options), metrics.clone());
    let mut writer = Some(FileSd::open(&options.output));
    let mut hosts_writer = options.ec2_hosts_output.as_deref().map(FileSd::open);
    let mut ticker = tokio::time::interval(options.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut n: u64 = 0;

    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = ticker.tick() => {}
        }
        n += 1;
        let span = info_span!("cycle", n);
        let started = Instant::now();
        let result = tokio::select! {
            r = pipeline.pass(started).instrument(span.clone()) => r,
            _ = shutdown.cancelled() => break,
        };
        let _g = span.enter();
        metrics
            .cycle_duration
            .observe(started.elapsed().as_secs_f64());
        let (cycle, enriched) = match result {
            Ok(c) => c,
            Err(e) => {
                metrics
                    .cycles
                    .get_or_create(&OutcomeLabels { outcome: "failed" })
                    .inc();
                error!(error = %e, "discovery failed before any service was known; the file is left as it is");
                continue;
            }
        };
        publisher.record_cycle(&cycle);
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
        metrics.tasks_held.set(cycle.snapshot.held.len() as i64);
        if !cycle.complete && !shared.is_ready() {
            warn!(problems = %describe_failures(&cycle),
                "first discovery incomplete; not publishing a partial list, trying again next cycle");
            continue;
        }
        if !cycle.snapshot.held.is_empty() && !shared.is_ready() {
            warn!(
                held = cycle.snapshot.held.len(),
                "first publish waits for the ECS/EC2 facts of new tasks (at most --enrichment-hold)"
            );
            continue;
        }
        if let (Some(hw), Some(hosts)) = (hosts_writer.take(), &enriched.hosts) {
            let json = targets::to_json(&targets::host_groups(hosts, &options.ec2_hosts_ports));
            let (w, r) = write(hw, json).await;
            if let Err(e) = r {
                metrics
                    .writes
                    .get_or_create(&OutcomeLabels { outcome: "failed" })
                    .inc();
                error!(error = %e, "could not write the EC2 hosts file; the previous file is intact");
            }
            hosts_writer = Some(w);
        }
        let (content, built) = publisher.render(&cycle);
        let (w, r) = write(writer.take().expect("writer is put back"), content).await;
        writer = Some(w);
        let file = match r {
            Ok(outcome) => {
                publisher.published(&cycle, &built, outcome);
                if !shared.is_ready() {
                    shared.set_ready();
                    info!(file = %options.output.display(), "first write done; ready");
                }
                match outcome {
                    Publish::Written => "written",
                    Publish::Unchanged => "unchanged",
                }
            }
            Err(e) => {
                metrics
                    .writes
                    .get_or_create(&OutcomeLabels { outcome: "failed" })
                    .inc();
                error!(error = %e, "could not write the file; the previous file is intact");
                "failed"
            }
        };
        let stale = cycle.failures.iter().filter(|f| f.kept).count();
        info!(
            services = cycle.stats.services,
            tagged = cycle.stats.tagged,
            instances = cycle.stats.instances,
            targets = built.groups.len(),
            skipped = built.skipped.len(),
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
