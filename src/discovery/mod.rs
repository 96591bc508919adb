//! One discovery cycle: Cloud Map through the [`CloudMap`] adapter, plus caches, gives
//! a [`Snapshot`] of the services and instances to scrape.
//!
//! What a cycle costs:
//! - always: one DiscoverInstancesRevision per tagged service;
//! - a listing of the services (ListServices, paginated) starts every
//!   `services_refresh`; after the first cycle its pages, and the namespace re-read,
//!   are spread over cycles, `listing_pages` calls per cycle at most. New services
//!   are found on that clock; a deleted service drops out at once through its
//!   revision call;
//! - DiscoverInstances only for a service whose revision differs from the one last
//!   seen, or whose last full read is older than `full_refresh` (the revision does
//!   not move on health changes, and some endpoints keep it equal across changes);
//! - ListTagsForResource only for a new service or when its tags are older than
//!   `tags_refresh`; ListNamespaces likewise; GetService once per new service (a
//!   service never moves to another namespace).
//! - with ECS service tags on: a service without endpoint tags of its own has its
//!   instances read when its tags are (DiscoverInstancesRevision, and
//!   DiscoverInstances when the revision moved), to learn the ECS services that
//!   registered them; DescribeServices (10 services of a cluster per call) for an
//!   ECS service seen for the first time and when its tags are older than
//!   `tags_refresh`. A service its ECS service's tags ask to scrape is then read
//!   like any tagged service. A steady cycle makes no ECS call.
//!
//! What a failure does: a service whose calls fail keeps its last known tags and
//! instances, and its data ages (exposed per service). A failed service listing
//! keeps the known services. Only a cycle with no earlier successful listing
//! returns an error.
//!
//! Deadline: every call of a cycle ends by the cycle's deadline. A call still
//! running then is abandoned and counts as a failed (timed out) read of its
//! service, which keeps its last known data: one stalled endpoint cannot stall the
//! loop, and cycles never overlap.
//!
//! Sharding by service: a service outside this shard is dropped right after the
//! listing, so it costs no tag or instance call. Sharding by task filters the
//! instances of each service. Either key starts with the account when targets
//! carry one ([`ShardKey::of`]).
//!
//! Accounts: one `Discovery` per account, each with that account's adapter
//! ([`Discovery::in_account`]). A namespace another account shares through AWS RAM
//! is discovered like the account's own (its calls name the owner account), unless
//! the sidecar also discovers in the owner account: then only there.
//!
//! - [`listing`]: namespaces and ListServices pages, spread over cycles;
//! - [`service`]: one service's cache and its reads;
//! - [`ecs_services`]: ECS service tags, by the ECS services instances name.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::aws::{AwsError, CloudMap, EcsServices, NoEcs};
#[cfg(doc)]
use crate::model::ShardTarget;
use crate::model::tags::wants_scraping;
use crate::model::{HealthStatus, Interner, ServiceData, Shard, ShardKey, Snapshot};

mod ecs_services;
mod listing;
mod service;

use ecs_services::{EcsKey, EcsServiceTags};
use listing::{Listed, Listing};
use service::{Outcome, Read, ServiceState};

/// Failed services named one by one in the log per cycle; the rest are counted.
const WARN_SERVICES: usize = 10;

/// What discovery looks at and how often it re-reads what it caches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryOptions {
    /// Namespace names to discover; empty means every namespace.
    pub namespaces: Vec<String>,
    pub health: HealthStatus,
    pub tags_refresh: Duration,
    pub full_refresh: Duration,
    /// How often ListServices runs.
    pub services_refresh: Duration,
    /// Most API calls in flight at once.
    pub concurrency: usize,
    /// Listing calls (ListServices pages, ListNamespaces) per cycle once the first
    /// listing is done.
    pub listing_pages: usize,
    /// Keep only this shard's services or instances.
    pub shard: Option<(Shard, ShardKey)>,
    /// A service without endpoint tags of its own takes them from the ECS service
    /// of its instances (needs an ECS client, see [`Discovery::with_ecs_services`]).
    pub ecs_service_tags: bool,
}

/// A service whose read failed this cycle.
#[derive(Debug)]
pub struct ServiceFailure {
    pub namespace: String,
    pub service: String,
    pub error: AwsError,
    /// True when last known data for it is still published.
    pub kept: bool,
}

/// Per-service freshness of what is published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAge {
    pub namespace: String,
    pub service: String,
    pub age: Duration,
}

/// Counters of one cycle, for the summary log line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CycleStats {
    /// Services in the selected namespaces.
    pub services: usize,
    /// Of those, services with endpoint tags.
    pub tagged: usize,
    /// Services whose instances were read in full this cycle.
    pub instance_reads: usize,
    /// Services whose tags were read this cycle.
    pub tag_reads: usize,
    /// Instances across tagged services.
    pub instances: usize,
}

impl std::ops::AddAssign<&CycleStats> for CycleStats {
    /// Adds another cycle's counters (another account's, say).
    fn add_assign(&mut self, other: &CycleStats) {
        self.services += other.services;
        self.tagged += other.tagged;
        self.instance_reads += other.instance_reads;
        self.tag_reads += other.tag_reads;
        self.instances += other.instances;
    }
}

/// The result of one cycle.
#[derive(Debug)]
pub struct Cycle {
    pub snapshot: Snapshot,
    /// True when the listing and every service read succeeded this cycle: the
    /// snapshot is the whole truth, not partly last-known data.
    pub complete: bool,
    /// The service listing failed; known services were used.
    pub listing_error: Option<AwsError>,
    /// Some calls were cut by the cycle deadline.
    pub deadline_exceeded: bool,
    /// Services or instances left to other shards.
    pub shard_excluded: usize,
    pub failures: Vec<ServiceFailure>,
    pub ages: Vec<ServiceAge>,
    pub stats: CycleStats,
}

impl Cycle {
    /// Every failure of the cycle in one line: the listing's, then each service's.
    pub fn describe_failures(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        if let Some(e) = &self.listing_error {
            parts.push(e.to_string());
        }
        for f in &self.failures {
            let who = if f.namespace.is_empty() {
                f.service.clone()
            } else {
                format!("{}/{}", f.namespace, f.service)
            };
            parts.push(format!("{who}: {}", f.error));
        }
        parts.join("; ")
    }
}

/// The discovery state machine. Call [`Discovery::cycle`] once per interval.
pub struct Discovery<C, S = NoEcs> {
    client: C,
    /// ECS service tags and their client; None when `ecs_service_tags` is off.
    ecs: Option<EcsServiceTags<S>>,
    opts: DiscoveryOptions,
    /// Namespace id -> name, with the time it was read.
    namespaces: Option<(Instant, HashMap<String, String>)>,
    /// Service id -> namespace id, from GetService (immutable).
    service_namespace: HashMap<String, String>,
    /// Selected services by id.
    services: BTreeMap<String, ServiceState>,
    listed_once: bool,
    /// When the last complete listing started.
    listed_at: Option<Instant>,
    /// A listing in progress.
    listing: Option<Listing>,
    /// Listed services of other shards (`--shard-key service`).
    excluded_services: usize,
    missing_warned: BTreeSet<String>,
    /// Attribute names and values shared between instances.
    strings: Interner,
    /// The account, when targets carry it (it leads the shard keys).
    account: Option<Arc<str>>,
    /// Other accounts the sidecar discovers in: namespaces they own and share with
    /// this one are left to them.
    others: BTreeSet<String>,
}

impl<C: CloudMap> Discovery<C> {
    /// Discovery without ECS service tags (`ecs_service_tags` is ignored).
    pub fn new(client: C, opts: DiscoveryOptions) -> Self {
        Discovery::with_ecs_services(client, None, opts)
    }
}

impl<C: CloudMap, S: EcsServices> Discovery<C, S> {
    /// Discovery that reads ECS service tags through `ecs` when
    /// `opts.ecs_service_tags` is on (and `ecs` is given).
    pub fn with_ecs_services(client: C, ecs: Option<S>, mut opts: DiscoveryOptions) -> Self {
        let ecs = ecs
            .filter(|_| opts.ecs_service_tags)
            .map(EcsServiceTags::new);
        opts.ecs_service_tags = ecs.is_some();
        Discovery {
            client,
            ecs,
            opts,
            namespaces: None,
            service_namespace: HashMap::new(),
            services: BTreeMap::new(),
            listed_once: false,
            listed_at: None,
            listing: None,
            excluded_services: 0,
            missing_warned: BTreeSet::new(),
            strings: Interner::default(),
            account: None,
            others: BTreeSet::new(),
        }
    }

    /// Discovery in one account of several: `account` starts this account's shard
    /// keys (see [`ShardTarget`]), and services in namespaces owned by one of
    /// `others` (shared with this account) are left to that account's discovery.
    /// Call before the first cycle.
    pub fn in_account(mut self, account: Arc<str>, others: BTreeSet<String>) -> Self {
        self.account = Some(account);
        self.others = others;
        self
    }

    /// The adapter, for callers that need to look at it (tests count its calls).
    pub fn client(&self) -> &C {
        &self.client
    }

    /// Runs one cycle whose calls all end by `deadline`: the listing step, the reads
    /// of every known service, then the snapshot. `Err` only when nothing is known
    /// yet and the listing failed.
    pub async fn cycle(&mut self, now: Instant, deadline: Instant) -> Result<Cycle, AwsError> {
        let mut failures = Vec::new();
        let listing_error = match self.list(now, deadline, &mut failures).await? {
            Listed::Ok => None,
            Listed::Failed(e) => Some(e),
        };
        let reads = self.read_services(now, deadline).await;
        let mut stats = CycleStats::default();
        self.apply_reads(reads, &mut stats, &mut failures);
        self.read_ecs_service_tags(now, deadline, &mut failures)
            .await;
        warn_more_failures(&failures);
        Ok(self.finish(now, stats, failures, listing_error))
    }

    /// Per-service reads, bounded concurrency, all ending by the deadline. A read
    /// cut short leaves the state as the calls that did finish made it.
    async fn read_services(&mut self, now: Instant, deadline: Instant) -> Vec<(String, Read)> {
        let client = &self.client;
        let opts = &self.opts;
        let account = self.account.as_deref();
        futures::stream::iter(self.services.iter_mut())
            .map(|(id, st)| async move {
                let refresh = st.refresh(client, opts, account, now);
                let read = match tokio::time::timeout_at(deadline, refresh).await {
                    Ok(r) => r,
                    Err(_) => Read {
                        outcome: Outcome::Failed(AwsError::deadline("service read")),
                        tags_read: false,
                        full_read: false,
                    },
                };
                (id.clone(), read)
            })
            .buffer_unordered(self.opts.concurrency.max(1))
            .collect()
            .await
    }

    /// Takes in what the reads found: new instance lists share their strings, gone
    /// services are forgotten, failures are logged and listed.
    fn apply_reads(
        &mut self,
        reads: Vec<(String, Read)>,
        stats: &mut CycleStats,
        failures: &mut Vec<ServiceFailure>,
    ) {
        let mut interned = false;
        for (id, read) in reads {
            stats.tag_reads += usize::from(read.tags_read);
            stats.instance_reads += usize::from(read.full_read);
            match read.outcome {
                Outcome::Fresh => {
                    interned |= self.intern_new_list(&id);
                    if let Some(st) = self.services.get_mut(&id) {
                        st.regroup(&self.opts);
                    }
                }
                Outcome::Gone => {
                    if let Some(st) = self.services.remove(&id) {
                        debug!(namespace = %st.namespace, service = %st.summary.name, "service is gone");
                    }
                    self.service_namespace.remove(&id);
                }
                Outcome::Failed(error) => {
                    if let Some(st) = self.services.get(&id) {
                        failures.push(failed(st, error, st.keeps_data(), failures.len()));
                    }
                }
            }
        }
        if interned {
            self.strings.sweep();
        }
    }

    /// A list read anew (and changed) is held by nothing else yet: its strings join
    /// the pool. True when there was such a list.
    fn intern_new_list(&mut self, id: &str) -> bool {
        let Some(list) = self
            .services
            .get_mut(id)
            .and_then(|st| st.instances.as_mut())
            .and_then(Arc::get_mut)
        else {
            return false;
        };
        for i in list.iter_mut() {
            i.attributes.intern(&mut self.strings);
        }
        true
    }

    /// The tags of the ECS services that the candidates' instances name: read
    /// when new or due, then handed to each candidate's groups. A candidate whose
    /// ECS service's tags could not be read fails like a failed tag read (keeping
    /// the last known tags, if any).
    async fn read_ecs_service_tags(
        &mut self,
        now: Instant,
        deadline: Instant,
        failures: &mut Vec<ServiceFailure>,
    ) {
        let Some(ecs) = self.ecs.as_mut() else {
            return;
        };
        let wanted: BTreeSet<EcsKey> = self
            .services
            .values()
            .flat_map(|st| st.ecs_groups.iter().map(|g| g.key.clone()))
            .collect();
        let errors = ecs
            .refresh(
                &wanted,
                self.opts.tags_refresh,
                now,
                deadline,
                self.opts.concurrency,
            )
            .await;
        for st in self.services.values_mut() {
            let mut error = None;
            for g in &mut st.ecs_groups {
                g.service = ecs.get(&g.key).cloned();
                error = error.or_else(|| errors.get(&g.key.cluster));
            }
            let Some(error) = error else { continue };
            let already = failures
                .iter()
                .any(|f| f.namespace == st.namespace && f.service == st.summary.name);
            if !already {
                let kept = st.ecs_groups.iter().all(|g| g.service.is_some());
                failures.push(failed(st, error.clone(), kept, failures.len()));
            }
        }
    }

    /// The snapshot of the scraped services, their ages and the cycle's counters.
    fn finish(
        &self,
        now: Instant,
        mut stats: CycleStats,
        failures: Vec<ServiceFailure>,
        listing_error: Option<AwsError>,
    ) -> Cycle {
        let mut shard_excluded = self.excluded_services;
        let mut snapshot = Snapshot::default();
        let mut ages = Vec::new();
        for st in self.services.values() {
            stats.services += 1;
            let (Some(tags), Some(instances)) = (&st.tags, &st.instances) else {
                continue;
            };
            if !st.tagged() {
                continue;
            }
            stats.tagged += 1;
            shard_excluded += st.excluded;
            stats.instances += instances.len();
            ages.push(ServiceAge {
                namespace: st.namespace.clone(),
                service: st.summary.name.clone(),
                age: st
                    .confirmed_at
                    .map_or(Duration::ZERO, |t| now.saturating_duration_since(t)),
            });
            let data = |instances: &Arc<Vec<_>>, ecs_service| ServiceData {
                namespace: st.namespace.clone(),
                service: st.summary.name.clone(),
                tags: tags.clone(),
                instances: instances.clone(),
                ecs_service,
            };
            if wants_scraping(tags) {
                snapshot.services.push(data(instances, None));
            } else {
                // Described by its ECS services' tags: each one's own instances.
                let groups = st.ecs_groups.iter().filter(|g| g.wants_scraping());
                snapshot
                    .services
                    .extend(groups.map(|g| data(&g.instances, g.service.clone())));
            }
        }
        snapshot
            .services
            .sort_by(|a, b| (&a.namespace, &a.service).cmp(&(&b.namespace, &b.service)));
        let deadline_exceeded = failures.iter().any(|f| f.error.is_deadline())
            || listing_error.as_ref().is_some_and(AwsError::is_deadline);
        Cycle {
            snapshot,
            complete: listing_error.is_none() && failures.is_empty(),
            listing_error,
            deadline_exceeded,
            shard_excluded,
            failures,
            ages,
            stats,
        }
    }
}

/// The failure of a service's read, logged: by name for the first few of a cycle
/// (`earlier` failures came before it), at debug level after that. `kept`: its
/// last known targets are still published.
fn failed(st: &ServiceState, error: AwsError, kept: bool, earlier: usize) -> ServiceFailure {
    let what = if kept {
        "service read failed; keeping its last known targets"
    } else {
        "service read failed; it has no known targets yet"
    };
    // A storm (throttling, an outage) fails every service: name the first few,
    // name the rest in one line (warn_more_failures).
    if earlier < WARN_SERVICES {
        warn!(namespace = %st.namespace, service = %st.summary.name, error = %error, "{what}");
    } else {
        debug!(namespace = %st.namespace, service = %st.summary.name, error = %error, "{what}");
    }
    ServiceFailure {
        namespace: st.namespace.clone(),
        service: st.summary.name.clone(),
        error,
        kept,
    }
}

/// One warning that names every failed service past the first few.
fn warn_more_failures(failures: &[ServiceFailure]) {
    if failures.len() <= WARN_SERVICES {
        return;
    }
    let services = failures[WARN_SERVICES..]
        .iter()
        .map(|f| format!("{}/{}", f.namespace, f.service))
        .collect::<Vec<_>>()
        .join(", ");
    warn!(
        more = failures.len() - WARN_SERVICES,
        services = %services,
        "more service reads failed (RUST_LOG=debug gives each error); they keep their last known targets"
    );
}

#[cfg(test)]
mod tests;
