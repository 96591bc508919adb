//! The service listing: ListNamespaces and ListServices pages, spread over cycles
//! once the first listing is done, then applied (namespaces resolved once per new
//! service, the selection and the shard kept, removed services forgotten).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use futures::StreamExt;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::service::ServiceState;
use super::{Discovery, ServiceFailure};
use crate::aws::{
    AwsError, CloudMap, EcsServices, ErrorKind, Namespace, ServiceSummary, by_deadline,
};
use crate::model::clock::due;
use crate::model::{ShardKey, ShardTarget};

/// A service listing spread over cycles.
pub(super) struct Listing {
    started: Instant,
    /// The page to read next: None before the first.
    next: Option<String>,
    /// Pages read so far.
    pages: usize,
    seen: Vec<ServiceSummary>,
}

/// What the listing step did this cycle.
pub(super) enum Listed {
    /// Nothing was due, or the listing goes on next cycle, or it finished.
    Ok,
    /// A page failed; the known services are kept.
    Failed(AwsError),
}

impl<C: CloudMap, S: EcsServices> Discovery<C, S> {
    /// Starts a listing when one is due and reads what this cycle's budget allows of
    /// the one in progress. `Err` only when no listing ever succeeded.
    pub(super) async fn list(
        &mut self,
        now: Instant,
        deadline: Instant,
        failures: &mut Vec<ServiceFailure>,
    ) -> Result<Listed, AwsError> {
        let starting =
            self.listing.is_none() && due(self.listed_at, self.opts.services_refresh, now);
        if starting {
            self.listing = Some(Listing {
                started: now,
                next: None,
                pages: 0,
                seen: Vec::new(),
            });
        }
        if self.listing.is_none() {
            return Ok(Listed::Ok);
        }
        // The first listing is read whole; later ones by `listing_pages` calls per
        // cycle, so a steady cycle stays near one call per service.
        let mut budget = if self.listed_once {
            self.opts.listing_pages.max(1)
        } else {
            usize::MAX
        };
        let mut ns_fresh = false;
        if starting && self.namespaces_due(now) {
            budget -= 1;
            ns_fresh = self.reread_namespaces(now, deadline).await?;
        }
        self.read_pages(budget, now, deadline, &mut ns_fresh, failures)
            .await
    }

    /// Namespaces are cached, re-read on the tags clock when a listing starts.
    fn namespaces_due(&self, now: Instant) -> bool {
        due(
            self.namespaces.as_ref().map(|(at, _)| *at),
            self.opts.tags_refresh,
            now,
        )
    }

    /// Re-reads the namespaces; a failure keeps the cached list when there is one.
    /// Ok: whether the list is fresh.
    async fn reread_namespaces(
        &mut self,
        now: Instant,
        deadline: Instant,
    ) -> Result<bool, AwsError> {
        match self.refresh_namespaces(now, deadline).await {
            Ok(()) => Ok(true),
            Err(e) if self.namespaces.is_some() => {
                warn!(error = %e, "could not re-read namespaces; using the cached list");
                Ok(false)
            }
            Err(e) => {
                self.listing = None;
                Err(e)
            }
        }
    }

    /// Reads up to `budget` ListServices pages of the listing in progress, and
    /// applies the listing when its last page came.
    async fn read_pages(
        &mut self,
        mut budget: usize,
        now: Instant,
        deadline: Instant,
        ns_fresh: &mut bool,
        failures: &mut Vec<ServiceFailure>,
    ) -> Result<Listed, AwsError> {
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
                    self.apply_listing(done.seen, now, deadline, ns_fresh, failures)
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
                    return Ok(Listed::Failed(e));
                }
                Err(e) => {
                    self.listing = None;
                    return Err(e);
                }
            }
        }
        Ok(Listed::Ok)
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
        self.resolve_namespaces(&listed, deadline, failures).await;
        // A namespace created since the last read: read the list again, once.
        if self.names_unknown_namespace(&listed) && !*ns_fresh {
            match self.refresh_namespaces(now, deadline).await {
                Ok(()) => *ns_fresh = true,
                Err(e) => warn!(error = %e, "could not re-read namespaces for a new service"),
            }
        }
        let listed_ids: BTreeSet<&str> = listed.iter().map(|s| s.id.as_str()).collect();
        self.service_namespace
            .retain(|id, _| listed_ids.contains(id.as_str()));
        self.select(listed);
    }

    /// GetService for each listed service whose namespace is not known yet.
    async fn resolve_namespaces(
        &mut self,
        listed: &[ServiceSummary],
        deadline: Instant,
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
    }

    /// Whether a listed service lies in a namespace the cached list does not name.
    fn names_unknown_namespace(&self, listed: &[ServiceSummary]) -> bool {
        let known = |ns: &str| {
            self.namespaces
                .as_ref()
                .is_some_and(|(_, m)| m.contains_key(ns))
        };
        listed.iter().any(|s| {
            self.service_namespace
                .get(&s.id)
                .is_some_and(|ns| !known(ns))
        })
    }

    /// Keeps the listed services of the selected namespaces and of this shard,
    /// with what is cached about them.
    fn select(&mut self, listed: Vec<ServiceSummary>) {
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
            if !self.selected(&ns_name) || self.left_to_owner(&s) {
                continue;
            }
            let target = ShardTarget {
                account: self.account.as_deref(),
                namespace: &ns_name,
                service: &s.name,
                instance: "",
            };
            if service_shard.is_some_and(|sh| !sh.keeps(&ShardKey::Service.of(&target))) {
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

    /// A service in a namespace shared by an account the sidecar discovers in
    /// itself: that account's discovery has it.
    fn left_to_owner(&self, s: &ServiceSummary) -> bool {
        let left = s.owner.as_ref().is_some_and(|o| self.others.contains(o));
        if left {
            debug!(service = %s.name, owner = s.owner.as_deref().unwrap_or(""),
                "service in a namespace shared by another discovered account; discovered there");
        }
        left
    }

    fn selected(&self, namespace: &str) -> bool {
        self.opts.namespaces.is_empty() || self.opts.namespaces.iter().any(|n| n == namespace)
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
