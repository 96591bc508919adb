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
//! instances of each service.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::aws::{AwsError, CloudMap, ErrorKind, Namespace, ServiceSummary, by_deadline};
use crate::config::{HealthStatus, Shard, ShardKey};
use crate::targets::{Instance, Interner, ServiceData, Snapshot, wants_scraping};

/// Failed services named one by one in the log per cycle; the rest are counted.
const WARN_SERVICES: usize = 10;

/// What discovery looks at and how often it re-reads what it caches.
#[derive(Debug, Clone)]
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
}

/// Cached knowledge about one service.
#[derive(Debug, Clone)]
struct ServiceState {
    summary: ServiceSummary,
    namespace: String,
    /// Shared with the snapshots: replaced only when a read finds them changed,
    /// so an unchanged service is the same allocation cycle after cycle.
    tags: Option<Arc<BTreeMap<String, String>>>,
    tags_read_at: Option<Instant>,
    revision: Option<i64>,
    /// This shard's instances (`--shard-key task` filters them as they are read).
    instances: Option<Arc<Vec<Instance>>>,
    /// Instances of this service left to other shards.
    excluded: usize,
    instances_read_at: Option<Instant>,
    /// Last time every call for this service succeeded.
    confirmed_at: Option<Instant>,
}

impl ServiceState {
    fn new(summary: ServiceSummary, namespace: String) -> Self {
        ServiceState {
            summary,
            namespace,
            tags: None,
            tags_read_at: None,
            revision: None,
            instances: None,
            excluded: 0,
            instances_read_at: None,
            confirmed_at: None,
        }
    }

    fn due(at: Option<Instant>, every: Duration, now: Instant) -> bool {
        at.is_none_or(|t| now.saturating_duration_since(t) >= every)
    }
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

/// The discovery state machine. Call [`Discovery::cycle`] once per interval.
pub struct Discovery<C> {
    client: C,
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
}

/// A service listing spread over cycles.
struct Listing {
    started: Instant,
    /// The page to read next: None before the first.
    next: Option<String>,
    /// Pages read so far.
    pages: usize,
    seen: Vec<ServiceSummary>,
}

enum Outcome {
    Fresh,
    Failed(AwsError),
    Gone,
}

impl<C: CloudMap> Discovery<C> {
    pub fn new(client: C, opts: DiscoveryOptions) -> Self {
        Discovery {
            client,
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
        }
    }

    /// The adapter, for callers that need to look at it (tests count its calls).
    pub fn client(&self) -> &C {
        &self.client
    }

    async fn refresh_namespaces(
        &mut self,
        now: Instant,
        deadline: Instant,
    ) -> Result<(), AwsError> {
        let list: Vec<Namespace> =
            by_deadline(deadline, "ListNamespaces", self.client.namespaces()).await?;
        let map = list.into_iter().map(|n| (n.id, n.name)).collect();
        self.namespaces = Some((now, map));
        Ok(())
    }

    fn selected(&self, namespace: &str) -> bool {
        self.opts.namespaces.is_empty() || self.opts.namespaces.iter().any(|n| n == namespace)
    }

    /// Runs one cycle whose calls all end by `deadline`. `Err` only when nothing
    /// is known yet and the listing failed.
    pub async fn cycle(&mut self, now: Instant, deadline: Instant) -> Result<Cycle, AwsError> {
        let mut failures = Vec::new();
        let mut stats = CycleStats::default();
        let mut listing_error = None;
        let starting = self.listing.is_none()
            && ServiceState::due(self.listed_at, self.opts.services_refresh, now);
        if starting {
            self.listing = Some(Listing {
                started: now,
                next: None,
                pages: 0,
                seen: Vec::new(),
            });
        }
        if self.listing.is_some() {
            // The first listing is read whole; later ones by `listing_pages` calls
            // per cycle, so a steady cycle stays near one call per service.
            let mut budget = if self.listed_once {
                self.opts.listing_pages.max(1)
            } else {
                usize::MAX
            };
            // Namespaces: cached, re-read on the tags clock when a listing starts.
            let ns_due = self
                .namespaces
                .as_ref()
                .is_none_or(|(at, _)| now.saturating_duration_since(*at) >= self.opts.tags_refresh);
            let mut ns_fresh = false;
            if starting && ns_due {
                budget -= 1;
                match self.refresh_namespaces(now, deadline).await {
                    Ok(()) => ns_fresh = true,
                    Err(e) if self.namespaces.is_some() => {
                        warn!(error = %e, "could not re-read namespaces; using the cached list");
                    }
                    Err(e) => {
                        self.listing = None;
                        return Err(e);
                    }
                }
            }
            while budget > 0 {
                budget -= 1;
                let listing = self.listing.as_mut().expect("a listing is in progress");
                let page = self.client.services_page(listing.next.clone());
                match by_deadline(deadline, "ListServices", page).await {
                    Ok(page) => {
                        listing.seen.extend(page.services);
                        listing.pages += 1;
                        if page.next.is_some() {
                            listing.next = page.next;
                            continue;
                        }
                        let done = self.listing.take().expect("a listing is in progress");
                        debug!(
                            pages = done.pages,
                            services = done.seen.len(),
                            "services listed"
                        );
                        self.listed_once = true;
                        self.listed_at = Some(done.started);
                        self.apply_listing(done.seen, now, deadline, &mut ns_fresh, &mut failures)
                            .await;
                        self.warn_missing_namespaces();
                        break;
                    }
                    Err(e) if self.listed_once => {
                        // A passing fault resumes at the same page next cycle; any
                        // other (an expired token, say) starts the listing again.
                        if !e.kind.is_transient() {
                            self.listing = None;
                        }
                        warn!(error = %e, "could not list services; keeping the known services");
                        listing_error = Some(e);
                        break;
                    }
                    Err(e) => {
                        self.listing = None;
                        return Err(e);
                    }
                }
            }
        }

        // Per-service reads, bounded concurrency, all ending by the deadline. A read
        // cut short leaves the state as the calls that did finish made it.
        let client = &self.client;
        let opts = &self.opts;
        let results: Vec<(String, Outcome, bool, bool)> =
            futures::stream::iter(self.services.iter_mut())
                .map(|(id, st)| async move {
                    let read = refresh_service(client, opts, st, now);
                    let (outcome, tags_read, full_read) =
                        match tokio::time::timeout_at(deadline, read).await {
                            Ok(r) => r,
                            Err(_) => (
                                Outcome::Failed(AwsError::deadline("service read")),
                                false,
                                false,
                            ),
                        };
                    (id.clone(), outcome, tags_read, full_read)
                })
                .buffer_unordered(self.opts.concurrency.max(1))
                .collect()
                .await;

        let mut interned = false;
        for (id, outcome, tags_read, full_read) in results {
            stats.tag_reads += usize::from(tags_read);
            stats.instance_reads += usize::from(full_read);
            match outcome {
                Outcome::Fresh => {
                    // A list read anew (and changed) is held by nothing else yet.
                    if let Some(list) = self
                        .services
                        .get_mut(&id)
                        .and_then(|st| st.instances.as_mut())
                        .and_then(Arc::get_mut)
                    {
                        for i in list.iter_mut() {
                            i.attributes.intern(&mut self.strings);
                        }
                        interned = true;
                    }
                }
                Outcome::Gone => {
                    if let Some(st) = self.services.remove(&id) {
                        debug!(namespace = %st.namespace, service = %st.summary.name, "service is gone");
                    }
                    self.service_namespace.remove(&id);
                }
                Outcome::Failed(error) => {
                    let Some(st) = self.services.get(&id) else {
                        continue;
                    };
                    let kept = st.tags.is_some()
                        && (st.instances.is_some()
                            || !st.tags.as_deref().is_some_and(wants_scraping));
                    let what = if kept {
                        "service read failed; keeping its last known targets"
                    } else {
                        "service read failed; it has no known targets yet"
                    };
                    // A storm (throttling, an outage) fails every service: name the
                    // first few, count the rest in one line below.
                    if failures.len() < WARN_SERVICES {
                        warn!(namespace = %st.namespace, service = %st.summary.name, error = %error, "{what}");
                    } else {
                        debug!(namespace = %st.namespace, service = %st.summary.name, error = %error, "{what}");
                    }
                    failures.push(ServiceFailure {
                        namespace: st.namespace.clone(),
                        service: st.summary.name.clone(),
                        error,
                        kept,
                    });
                }
            }
        }

        if interned {
            self.strings.sweep();
        }

        if failures.len() > WARN_SERVICES {
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

        let mut shard_excluded = self.excluded_services;
        let mut snapshot = Snapshot::default();
        let mut ages = Vec::new();
        for st in self.services.values() {
            stats.services += 1;
            let (Some(tags), Some(instances)) = (&st.tags, &st.instances) else {
                continue;
            };
            if !wants_scraping(tags) {
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
            snapshot.services.push(ServiceData {
                namespace: st.namespace.clone(),
                service: st.summary.name.clone(),
                tags: tags.clone(),
                instances: instances.clone(),
            });
        }
        snapshot
            .services
            .sort_by(|a, b| (&a.namespace, &a.service).cmp(&(&b.namespace, &b.service)));
        let deadline_exceeded = failures.iter().any(|f| f.error.is_deadline())
            || listing_error.as_ref().is_some_and(AwsError::is_deadline);
        Ok(Cycle {
            snapshot,
            complete: listing_error.is_none() && failures.is_empty(),
            listing_error,
            deadline_exceeded,
            shard_excluded,
            failures,
            ages,
            stats,
        })
    }

    /// Applies a successful service listing: resolves new services' namespaces,
    /// keeps the selected ones, forgets removed ones.
    async fn apply_listing(
        &mut self,
        listed: Vec<ServiceSummary>,
        now: Instant,
        deadline: Instant,
        ns_fresh: &mut bool,
        failures: &mut Vec<ServiceFailure>,
    ) {
        let unknown: Vec<&ServiceSummary> = listed
            .iter()
            .filter(|s| !self.service_namespace.contains_key(&s.id))
            .collect();
        let client = &self.client;
        let resolved: Vec<(&ServiceSummary, Result<String, AwsError>)> =
            futures::stream::iter(unknown)
                .map(|s| async move {
                    let ns = by_deadline(deadline, "GetService", client.service_namespace(&s.id));
                    (s, ns.await)
                })
                .buffer_unordered(self.opts.concurrency.max(1))
                .collect()
                .await;
        for (s, r) in resolved {
            match r {
                Ok(ns) => {
                    self.service_namespace.insert(s.id.clone(), ns);
                }
                Err(e) if e.kind == ErrorKind::NotFound => {}
                Err(error) => {
                    warn!(service = %s.name, service_id = %s.id, error = %error,
                        "could not find the namespace of a new service; trying again next cycle");
                    failures.push(ServiceFailure {
                        namespace: String::new(),
                        service: s.name.clone(),
                        error,
                        kept: false,
                    });
                }
            }
        }

        // A namespace created since the last read: read the list again, once.
        let known = |this: &Self, ns: &str| {
            this.namespaces
                .as_ref()
                .is_some_and(|(_, m)| m.contains_key(ns))
        };
        let needs_ns = listed.iter().any(|s| {
            self.service_namespace
                .get(&s.id)
                .is_some_and(|ns| !known(self, ns))
        });
        if needs_ns && !*ns_fresh {
            match self.refresh_namespaces(now, deadline).await {
                Ok(()) => *ns_fresh = true,
                Err(e) => warn!(error = %e, "could not re-read namespaces for a new service"),
            }
        }

        let listed_ids: BTreeSet<&str> = listed.iter().map(|s| s.id.as_str()).collect();
        self.service_namespace
            .retain(|id, _| listed_ids.contains(id.as_str()));
        let no_namespaces = HashMap::new();
        let ns_names = self.namespaces.as_ref().map_or(&no_namespaces, |(_, m)| m);
        let service_shard = match self.opts.shard {
            Some((shard, ShardKey::Service)) => Some(shard),
            _ => None,
        };
        self.excluded_services = 0;
        let mut next = BTreeMap::new();
        for s in listed {
            let Some(ns_name) = self
                .service_namespace
                .get(&s.id)
                .and_then(|ns| ns_names.get(ns))
                .cloned()
            else {
                continue;
            };
            if !self.selected(&ns_name) {
                continue;
            }
            if service_shard.is_some_and(|sh| !sh.keeps(&Shard::service_key(&ns_name, &s.name))) {
                self.excluded_services += 1;
                continue;
            }
            let st = match self.services.remove(&s.id) {
                Some(mut st) => {
                    st.summary = s.clone();
                    st
                }
                None => ServiceState::new(s.clone(), ns_name),
            };
            next.insert(s.id, st);
        }
        self.services = next;
    }

    fn warn_missing_namespaces(&mut self) {
        let Some((_, map)) = &self.namespaces else {
            return;
        };
        let known: BTreeSet<&str> = map.values().map(String::as_str).collect();
        for want in &self.opts.namespaces {
            if known.contains(want.as_str()) {
                self.missing_warned.remove(want);
            } else if self.missing_warned.insert(want.clone()) {
                warn!(namespace = %want, "namespace not found in this Region; it contributes no targets");
            }
        }
    }
}

/// Reads what is due for one service. Returns the updated state, the outcome, and
/// whether tags / instances were read.
async fn refresh_service<C: CloudMap>(
    client: &C,
    opts: &DiscoveryOptions,
    st: &mut ServiceState,
    now: Instant,
) -> (Outcome, bool, bool) {
    let mut tags_read = false;
    let mut tag_error = None;
    if ServiceState::due(st.tags_read_at, opts.tags_refresh, now) {
        tags_read = true;
        match client.tags(&st.summary.arn).await {
            Ok(t) => {
                if st.tags.as_deref() != Some(&t) {
                    st.tags = Some(Arc::new(t));
                }
                st.tags_read_at = Some(now);
            }
            Err(e) if e.kind == ErrorKind::NotFound => return (Outcome::Gone, true, false),
            Err(e) if st.tags.is_some() => tag_error = Some(e),
            Err(e) => return (Outcome::Failed(e), true, false),
        }
    }
    let tagged = st.tags.as_deref().is_some_and(wants_scraping);
    if !tagged {
        // Not scraped: no instance calls, and nothing kept.
        st.instances = None;
        st.excluded = 0;
        st.revision = None;
        st.instances_read_at = None;
        return match tag_error {
            Some(e) => (Outcome::Failed(e), tags_read, false),
            None => {
                st.confirmed_at = Some(now);
                (Outcome::Fresh, tags_read, false)
            }
        };
    }

    let ns = st.namespace.clone();
    let name = st.summary.name.clone();
    let revision = match client.instances_revision(&ns, &name).await {
        Ok(r) => r,
        Err(e) if e.kind == ErrorKind::NotFound => return (Outcome::Gone, tags_read, false),
        Err(e) => return (Outcome::Failed(e), tags_read, false),
    };
    let full = st.instances.is_none()
        || st.revision != Some(revision)
        || ServiceState::due(st.instances_read_at, opts.full_refresh, now);
    if full {
        match client.instances(&ns, &name, opts.health).await {
            Ok(mut list) => {
                st.excluded = 0;
                if let Some((shard, ShardKey::Task)) = opts.shard {
                    let all = list.len();
                    list.retain(|i| shard.keeps(&i.id));
                    st.excluded = all - list.len();
                }
                if st.instances.as_deref() != Some(&list) {
                    st.instances = Some(Arc::new(list));
                }
                st.revision = Some(revision);
                st.instances_read_at = Some(now);
            }
            Err(e) if e.kind == ErrorKind::NotFound => {
                return (Outcome::Gone, tags_read, true);
            }
            Err(e) => return (Outcome::Failed(e), tags_read, true),
        }
    }
    match tag_error {
        Some(e) => (Outcome::Failed(e), tags_read, full),
        None => {
            st.confirmed_at = Some(now);
            (Outcome::Fresh, tags_read, full)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::ServicePage;
    use std::sync::Mutex;

    /// A hand-written Cloud Map: plain data, per-operation failure switches and a
    /// call log.
    #[derive(Default)]
    struct Fake {
        state: Mutex<FakeState>,
    }

    #[derive(Default)]
    struct FakeState {
        namespaces: Vec<Namespace>,
        services: Vec<(ServiceSummary, String, BTreeMap<String, String>)>,
        instances: HashMap<String, (i64, Vec<Instance>)>,
        failing: BTreeSet<&'static str>,
        failing_services: BTreeSet<String>,
        /// Services whose revision call never answers.
        stalling_services: BTreeSet<String>,
        calls: Vec<&'static str>,
    }

    /// A deadline no unit test reaches.
    fn far() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    fn err(op: &'static str) -> AwsError {
        AwsError::new(op, ErrorKind::Server, "boom")
    }

    impl Fake {
        fn call(&self, op: &'static str, svc: Option<&str>) -> Result<(), AwsError> {
            let mut s = self.state.lock().unwrap();
            s.calls.push(op);
            if s.failing.contains(op) || svc.is_some_and(|n| s.failing_services.contains(n)) {
                return Err(err(op));
            }
            Ok(())
        }
        fn add_service(&self, ns: &str, name: &str, tags: &[(&str, &str)]) {
            let mut s = self.state.lock().unwrap();
            if !s.namespaces.iter().any(|n| n.name == ns) {
                s.namespaces.push(Namespace {
                    id: format!("ns-{ns}"),
                    name: ns.into(),
                });
            }
            s.services.push((
                ServiceSummary {
                    id: format!("srv-{name}"),
                    arn: format!("arn:srv-{name}"),
                    name: name.into(),
                },
                format!("ns-{ns}"),
                tags.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ));
            s.instances.insert(name.into(), (1, vec![]));
        }
        fn register(&self, svc: &str, id: &str, ip: &str) {
            let mut s = self.state.lock().unwrap();
            let e = s.instances.get_mut(svc).unwrap();
            e.0 += 1;
            e.1.push(Instance {
                id: id.into(),
                attributes: [("AWS_INSTANCE_IPV4".to_string(), ip.to_string())].into(),
            });
        }
        fn take_calls(&self) -> Vec<&'static str> {
            let mut c = std::mem::take(&mut self.state.lock().unwrap().calls);
            c.sort();
            c
        }
    }

    impl CloudMap for Fake {
        async fn namespaces(&self) -> Result<Vec<Namespace>, AwsError> {
            self.call("ListNamespaces", None)?;
            Ok(self.state.lock().unwrap().namespaces.clone())
        }
        /// Pages of two services, so listings span pages.
        async fn services_page(&self, token: Option<String>) -> Result<ServicePage, AwsError> {
            self.call("ListServices", None)?;
            let s = self.state.lock().unwrap();
            let from: usize = token.map_or(0, |t| t.parse().unwrap());
            let to = (from + 2).min(s.services.len());
            Ok(ServicePage {
                services: s.services[from..to].iter().map(|x| x.0.clone()).collect(),
                next: (to < s.services.len()).then(|| to.to_string()),
            })
        }
        async fn service_namespace(&self, id: &str) -> Result<String, AwsError> {
            self.call("GetService", None)?;
            let s = self.state.lock().unwrap();
            Ok(s.services.iter().find(|x| x.0.id == id).unwrap().1.clone())
        }
        async fn tags(&self, arn: &str) -> Result<BTreeMap<String, String>, AwsError> {
            let name = arn.trim_start_matches("arn:srv-").to_string();
            self.call("ListTagsForResource", Some(&name))?;
            let s = self.state.lock().unwrap();
            Ok(s.services
                .iter()
                .find(|x| x.0.arn == arn)
                .unwrap()
                .2
                .clone())
        }
        async fn instances_revision(&self, _ns: &str, svc: &str) -> Result<i64, AwsError> {
            self.call("DiscoverInstancesRevision", Some(svc))?;
            let stall = self.state.lock().unwrap().stalling_services.contains(svc);
            if stall {
                std::future::pending::<()>().await;
            }
            let s = self.state.lock().unwrap();
            match s.instances.get(svc) {
                Some(x) => Ok(x.0),
                None => Err(AwsError::new(
                    "DiscoverInstancesRevision",
                    ErrorKind::NotFound,
                    "gone",
                )),
            }
        }
        async fn instances(
            &self,
            _ns: &str,
            svc: &str,
            _h: HealthStatus,
        ) -> Result<Vec<Instance>, AwsError> {
            self.call("DiscoverInstances", Some(svc))?;
            Ok(self.state.lock().unwrap().instances[svc].1.clone())
        }
    }

    fn opts(namespaces: &[&str]) -> DiscoveryOptions {
        DiscoveryOptions {
            namespaces: namespaces.iter().map(|s| s.to_string()).collect(),
            health: HealthStatus::HealthyOrElseAll,
            tags_refresh: Duration::from_secs(300),
            full_refresh: Duration::from_secs(600),
            services_refresh: Duration::from_secs(60),
            concurrency: 4,
            listing_pages: 1,
            shard: None,
        }
    }

    fn ips(c: &Cycle) -> Vec<String> {
        let mut v: Vec<String> = c
            .snapshot
            .services
            .iter()
            .flat_map(|s| {
                s.instances
                    .iter()
                    .map(|i| i.attributes.get("AWS_INSTANCE_IPV4").unwrap().to_string())
            })
            .collect();
        v.sort();
        v
    }

    fn topology() -> Fake {
        let f = Fake::default();
        f.add_service("apps", "web", &[("METRICS_PATH", "/metrics")]);
        f.add_service("apps", "plain", &[("team", "x")]);
        f.add_service("other", "api", &[("METRICS_PATH", "/m")]);
        f.register("web", "t1", "10.0.0.1");
        f.register("web", "t2", "10.0.0.2");
        f.register("api", "t3", "10.0.1.1");
        f
    }

    #[tokio::test]
    async fn cold_then_steady_cycle_costs() {
        let mut d = Discovery::new(topology(), opts(&[]));
        let t0 = Instant::now();
        let c = d.cycle(t0, far()).await.unwrap();
        assert!(c.complete);
        assert_eq!(ips(&c), vec!["10.0.0.1", "10.0.0.2", "10.0.1.1"]);
        assert_eq!(c.stats.services, 3);
        assert_eq!(c.stats.tagged, 2);
        let cold = d.client().take_calls();
        assert_eq!(
            cold,
            vec![
                "DiscoverInstances",
                "DiscoverInstances",
                "DiscoverInstancesRevision",
                "DiscoverInstancesRevision",
                "GetService",
                "GetService",
                "GetService",
                "ListNamespaces",
                "ListServices",
                "ListServices",
                "ListTagsForResource",
                "ListTagsForResource",
                "ListTagsForResource",
            ],
            "the first listing reads every page"
        );

        let c2 = d.cycle(t0 + Duration::from_secs(30), far()).await.unwrap();
        assert!(c2.complete);
        assert_eq!(c2.snapshot, c.snapshot);
        assert_eq!(
            d.client().take_calls(),
            vec!["DiscoverInstancesRevision", "DiscoverInstancesRevision"],
            "steady state: one revision call per tagged service"
        );
        // The service listing on its own clock, one page per cycle: its first page
        // at t0+60, the second at t0+90.
        for t in [60, 90] {
            let cn = d.cycle(t0 + Duration::from_secs(t), far()).await.unwrap();
            assert_eq!(cn.snapshot, c.snapshot);
            assert_eq!(
                d.client().take_calls(),
                vec![
                    "DiscoverInstancesRevision",
                    "DiscoverInstancesRevision",
                    "ListServices"
                ],
                "a listing page at t0+{t}"
            );
        }
        for t in (120..300).step_by(30) {
            d.cycle(t0 + Duration::from_secs(t), far()).await.unwrap();
            assert_eq!(
                d.client().take_calls().len(),
                3,
                "one listing call at t0+{t}"
            );
        }
        // On the tags clock the namespace re-read takes the listing call of its
        // cycle; the pages follow.
        d.cycle(t0 + Duration::from_secs(300), far()).await.unwrap();
        let calls = d.client().take_calls();
        assert!(calls.contains(&"ListNamespaces"), "{calls:?}");
        assert!(!calls.contains(&"ListServices"), "{calls:?}");
    }

    /// A discovery past its cold cycle, and a new tagged service (on the listing's
    /// second page) with one task at 10.0.0.9 registered since.
    async fn after_cold_cycle_a_service_appears(o: DiscoveryOptions) -> (Discovery<Fake>, Instant) {
        let mut d = Discovery::new(topology(), o);
        let t0 = Instant::now();
        d.cycle(t0, far()).await.unwrap();
        d.client()
            .add_service("apps", "new", &[("METRICS_PATH", "/m")]);
        d.client().register("new", "t9", "10.0.0.9");
        (d, t0)
    }

    #[tokio::test]
    async fn more_listing_pages_per_cycle_finish_a_listing_sooner() {
        let o = DiscoveryOptions {
            listing_pages: 2,
            ..opts(&[])
        };
        let (mut d, t0) = after_cold_cycle_a_service_appears(o).await;
        d.client().take_calls();
        let c = d.cycle(t0 + Duration::from_secs(60), far()).await.unwrap();
        assert!(ips(&c).contains(&"10.0.0.9".to_string()));
        let listed = d.client().take_calls();
        assert_eq!(
            listed.iter().filter(|c| **c == "ListServices").count(),
            2,
            "{listed:?}"
        );
    }

    #[tokio::test]
    async fn a_throttled_listing_page_is_read_again_next_cycle() {
        let (mut d, t0) = after_cold_cycle_a_service_appears(opts(&[])).await;
        d.cycle(t0 + Duration::from_secs(60), far()).await.unwrap();
        d.client()
            .state
            .lock()
            .unwrap()
            .failing
            .insert("ListServices");
        let c = d.cycle(t0 + Duration::from_secs(90), far()).await.unwrap();
        assert!(c.listing_error.is_some());
        assert!(!c.complete);
        assert!(!ips(&c).is_empty(), "known services keep their targets");
        d.client().state.lock().unwrap().failing.clear();
        let c = d.cycle(t0 + Duration::from_secs(120), far()).await.unwrap();
        assert!(c.complete);
        assert!(
            ips(&c).contains(&"10.0.0.9".to_string()),
            "resumed at page two"
        );
    }

    #[tokio::test]
    async fn a_new_service_is_found_at_the_next_listing() {
        let (mut d, t0) = after_cold_cycle_a_service_appears(opts(&[])).await;
        let c = d.cycle(t0 + Duration::from_secs(30), far()).await.unwrap();
        assert!(!ips(&c).contains(&"10.0.0.9".to_string()));
        // Four services, two pages: the listing started at t0+60 ends at t0+90.
        let c = d.cycle(t0 + Duration::from_secs(60), far()).await.unwrap();
        assert!(!ips(&c).contains(&"10.0.0.9".to_string()));
        let c = d.cycle(t0 + Duration::from_secs(90), far()).await.unwrap();
        assert!(ips(&c).contains(&"10.0.0.9".to_string()));
    }

    #[tokio::test]
    async fn a_stalled_call_ends_at_the_deadline_and_keeps_last_known_data() {
        let mut d = Discovery::new(topology(), opts(&[]));
        let t0 = Instant::now();
        let first = d.cycle(t0, far()).await.unwrap();
        d.client()
            .state
            .lock()
            .unwrap()
            .stalling_services
            .insert("web".into());
        d.client().register("api", "t5", "10.0.1.5");
        let started = Instant::now();
        let c = d
            .cycle(started, started + Duration::from_millis(200))
            .await
            .unwrap();
        let took = started.elapsed();
        assert!(took < Duration::from_secs(2), "cycle took {took:?}");
        assert!(c.deadline_exceeded && !c.complete);
        assert_eq!(c.failures.len(), 1);
        assert_eq!(c.failures[0].service, "web");
        assert!(c.failures[0].kept && c.failures[0].error.is_deadline());
        // web kept as it was; api (not stalled) moved on.
        let mut want = ips(&first);
        want.push("10.0.1.5".into());
        want.sort();
        assert_eq!(ips(&c), want);
    }

    fn many(services: usize) -> Fake {
        let f = Fake::default();
        for i in 0..services {
            let name = format!("s{i}");
            f.add_service("apps", &name, &[("METRICS_PATH", "/m")]);
            for j in 0..4 {
                f.register(&name, &format!("{name}-t{j}"), &format!("10.{i}.0.{j}"));
            }
        }
        f
    }

    #[tokio::test]
    async fn service_shards_split_services_and_skip_other_shards_calls() {
        let count = 3;
        let mut seen = BTreeMap::new();
        for index in 0..count {
            let mut o = opts(&[]);
            o.shard = Some((Shard { index, count }, ShardKey::Service));
            let mut d = Discovery::new(many(30), o);
            let c = d.cycle(Instant::now(), far()).await.unwrap();
            let calls = d.client().take_calls();
            let tags = calls
                .iter()
                .filter(|c| **c == "ListTagsForResource")
                .count();
            assert_eq!(
                tags,
                c.snapshot.services.len(),
                "no calls for other shards' services"
            );
            assert_eq!(c.shard_excluded, 30 - c.snapshot.services.len());
            for s in &c.snapshot.services {
                assert_eq!(s.instances.len(), 4, "a service's targets stay together");
                assert!(
                    seen.insert(s.service.clone(), index).is_none(),
                    "{} twice",
                    s.service
                );
            }
        }
        assert_eq!(seen.len(), 30, "every service in exactly one shard");
    }

    #[tokio::test]
    async fn task_shards_split_instances() {
        let count = 2;
        let mut seen = BTreeSet::new();
        for index in 0..count {
            let mut o = opts(&[]);
            o.shard = Some((Shard { index, count }, ShardKey::Task));
            let mut d = Discovery::new(many(10), o);
            let c = d.cycle(Instant::now(), far()).await.unwrap();
            for i in c.snapshot.services.iter().flat_map(|s| s.instances.iter()) {
                assert!(seen.insert(i.id.clone()), "{} twice", i.id);
            }
            assert_eq!(c.shard_excluded + c.stats.instances, 40);
        }
        assert_eq!(seen.len(), 40, "every instance in exactly one shard");
    }

    #[tokio::test]
    async fn a_changed_revision_reads_only_that_service() {
        let mut d = Discovery::new(topology(), opts(&[]));
        let t0 = Instant::now();
        d.cycle(t0, far()).await.unwrap();
        d.client().take_calls();
        d.client().register("web", "t4", "10.0.0.4");
        let c = d.cycle(t0 + Duration::from_secs(30), far()).await.unwrap();
        assert_eq!(
            ips(&c),
            vec!["10.0.0.1", "10.0.0.2", "10.0.0.4", "10.0.1.1"]
        );
        let calls = d.client().take_calls();
        assert_eq!(
            calls.iter().filter(|c| **c == "DiscoverInstances").count(),
            1
        );
    }

    #[tokio::test]
    async fn tags_and_full_reads_happen_on_their_clocks() {
        let mut d = Discovery::new(topology(), opts(&[]));
        let t0 = Instant::now();
        d.cycle(t0, far()).await.unwrap();
        d.client().take_calls();
        let c = d.cycle(t0 + Duration::from_secs(300), far()).await.unwrap();
        assert_eq!(c.stats.tag_reads, 3);
        assert_eq!(c.stats.instance_reads, 0);
        let calls = d.client().take_calls();
        assert!(calls.contains(&"ListNamespaces"));
        let c = d.cycle(t0 + Duration::from_secs(600), far()).await.unwrap();
        assert_eq!(c.stats.instance_reads, 2);
    }

    #[tokio::test]
    async fn namespace_selection() {
        let mut d = Discovery::new(topology(), opts(&["other", "nope"]));
        let c = d.cycle(Instant::now(), far()).await.unwrap();
        assert_eq!(ips(&c), vec!["10.0.1.1"]);
        assert_eq!(c.stats.services, 1);
    }

    #[tokio::test]
    async fn failures_keep_last_known_data_and_report_age() {
        let mut d = Discovery::new(topology(), opts(&[]));
        let t0 = Instant::now();
        let first = d.cycle(t0, far()).await.unwrap();
        d.client()
            .state
            .lock()
            .unwrap()
            .failing_services
            .insert("web".into());
        d.client().register("api", "t5", "10.0.1.5");
        let c = d.cycle(t0 + Duration::from_secs(30), far()).await.unwrap();
        assert!(!c.complete);
        assert_eq!(c.failures.len(), 1);
        assert!(c.failures[0].kept);
        assert_eq!(
            ips(&c),
            vec!["10.0.0.1", "10.0.0.2", "10.0.1.1", "10.0.1.5"]
        );
        let web_age = c.ages.iter().find(|a| a.service == "web").unwrap();
        assert_eq!(web_age.age, Duration::from_secs(30));
        assert!(first.ages.iter().all(|a| a.age.is_zero()));

        // Listing and everything else failing: known services kept.
        d.client()
            .state
            .lock()
            .unwrap()
            .failing
            .extend(["ListServices", "DiscoverInstancesRevision"]);
        let c = d.cycle(t0 + Duration::from_secs(60), far()).await.unwrap();
        assert!(c.listing_error.is_some());
        assert_eq!(
            ips(&c),
            vec!["10.0.0.1", "10.0.0.2", "10.0.1.1", "10.0.1.5"]
        );

        // Recovery: changes flow within one cycle.
        {
            let mut s = d.client().state.lock().unwrap();
            s.failing.clear();
            s.failing_services.clear();
        }
        d.client().register("web", "t6", "10.0.0.6");
        let c = d.cycle(t0 + Duration::from_secs(90), far()).await.unwrap();
        assert!(c.complete);
        assert!(ips(&c).contains(&"10.0.0.6".to_string()));
    }

    #[tokio::test]
    async fn first_listing_failure_is_an_error() {
        let f = topology();
        f.state.lock().unwrap().failing.insert("ListServices");
        let mut d = Discovery::new(f, opts(&[]));
        assert!(d.cycle(Instant::now(), far()).await.is_err());
    }

    #[tokio::test]
    async fn new_service_failing_is_not_kept_and_cycle_incomplete() {
        let f = topology();
        f.state
            .lock()
            .unwrap()
            .failing_services
            .insert("api".into());
        let mut d = Discovery::new(f, opts(&[]));
        let c = d.cycle(Instant::now(), far()).await.unwrap();
        assert!(!c.complete);
        assert!(!c.failures[0].kept);
        assert_eq!(ips(&c), vec!["10.0.0.1", "10.0.0.2"]);
    }

    #[tokio::test]
    async fn removed_services_disappear_after_a_good_listing() {
        let mut d = Discovery::new(topology(), opts(&[]));
        let t0 = Instant::now();
        d.cycle(t0, far()).await.unwrap();
        d.client()
            .state
            .lock()
            .unwrap()
            .services
            .retain(|s| s.0.name != "api");
        d.client().state.lock().unwrap().instances.remove("api");
        // Between listings: the revision call answers ServiceNotFound.
        let c = d.cycle(t0 + Duration::from_secs(30), far()).await.unwrap();
        assert!(c.complete);
        assert_eq!(ips(&c), vec!["10.0.0.1", "10.0.0.2"]);
        let c = d.cycle(t0 + Duration::from_secs(60), far()).await.unwrap();
        assert_eq!(ips(&c), vec!["10.0.0.1", "10.0.0.2"]);
    }
}
