//! The engine: one pass over AWS (discovery, then enrichment folded into the
//! snapshot), what the file of that pass holds, and the metrics and warnings about
//! it. No clock and no file of its own: the run loop and `once` drive it, and so
//! does the benchmark.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::warn;

use super::SidecarOptions;
use super::metrics::{ReasonLabels, RunMetrics, ServiceLabels};
use crate::aws::{AwsError, Clients, CloudMap, Ec2, Ecs};
use crate::discovery::{Cycle, Discovery};
use crate::enrich::{Enriched, Enricher};
use crate::file_sd::Publish;
use crate::model::Snapshot;
use crate::model::clock::unix_now;
use crate::targets::{self, SkipReason, Skipped, Summary, TargetOptions};

/// Discovery plus, when enabled, enrichment: one pass over AWS.
struct Pipeline<C, E, X> {
    discovery: Discovery<C>,
    enricher: Option<Enricher<E, X>>,
}

impl<C: CloudMap, E: Ecs, X: Ec2> Pipeline<C, E, X> {
    fn new(clients: Clients<C, E, X>, options: &SidecarOptions) -> Self {
        Pipeline {
            discovery: Discovery::new(clients.cloudmap, options.discovery.clone()),
            enricher: options
                .enrich
                .clone()
                .map(|o| Enricher::new(clients.ecs, clients.ec2, o)),
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

/// One discovery pass, summarised.
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
/// content out.
pub struct Engine<C, E, X> {
    pipeline: Pipeline<C, E, X>,
    pub(super) publisher: Publisher,
    /// The last snapshot and its summary (the snapshot shares its data with
    /// discovery's cache, so keeping it costs little).
    last: Option<(Snapshot, Arc<Summary>)>,
    cycle_timeout: Duration,
    hosts_ports: Option<Vec<u16>>,
}

impl<C: CloudMap, E: Ecs, X: Ec2> Engine<C, E, X> {
    pub fn new(
        clients: Clients<C, E, X>,
        options: &SidecarOptions,
        metrics: Arc<RunMetrics>,
    ) -> Self {
        Engine {
            pipeline: Pipeline::new(clients, options),
            publisher: Publisher::new(options.targets.clone(), metrics),
            last: None,
            cycle_timeout: options.cycle_timeout,
            hosts_ports: options.hosts.as_ref().map(|h| h.ports.clone()),
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
pub(super) struct Publisher {
    targets: TargetOptions,
    metrics: Arc<RunMetrics>,
    warned: BTreeSet<Skipped>,
    aged: BTreeSet<ServiceLabels>,
}

impl Publisher {
    fn new(targets: TargetOptions, metrics: Arc<RunMetrics>) -> Self {
        Publisher {
            targets,
            metrics,
            warned: BTreeSet::new(),
            aged: BTreeSet::new(),
        }
    }

    /// What the file of a cycle holds; warns once about each newly skipped endpoint.
    fn summarize(&mut self, cycle: &Cycle) -> Summary {
        let summary = targets::summarize(&cycle.snapshot, &self.targets);
        for reason in SkipReason::ALL {
            let n = summary
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
        let now: BTreeSet<Skipped> = summary.skipped.iter().cloned().collect();
        for s in now.difference(&self.warned) {
            warn!(
                namespace = %s.namespace,
                service = %s.service,
                tag = %s.tag,
                // Left out when there is none (an Option field records nothing).
                value = s.value.as_deref(),
                instance = s.instance.as_deref(),
                reason = %s.reason,
                "endpoint skipped: {}",
                s.reason.explain()
            );
        }
        self.warned = now;
        summary
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

    /// A successful publish of the targets file.
    pub(super) fn published(&self, summary: &Summary, outcome: Publish) {
        self.metrics.targets.set(summary.targets as i64);
        self.metrics.services.set(summary.services as i64);
        self.metrics.last_success.set(unix_now());
        self.metrics
            .writes
            .get_or_create(&super::metrics::OutcomeLabels {
                outcome: outcome.as_str(),
            })
            .inc();
    }
}
