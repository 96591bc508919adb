//! Between cycles: which known services an event touches (by the instance id, or
//! by the ECS service whose instances were seen in them), whether they already
//! show what it announced, and their refresh (the revision first, the instances
//! when it moved). A failed refresh keeps what was known, as a failed cycle read
//! does.

use std::collections::BTreeSet;

use futures::StreamExt;
use tokio::time::Instant;

use super::service::Full;
use super::{Cycle, CycleStats, Discovery, failed};
use crate::aws::{AwsError, CloudMap, EcsServices, ErrorKind};

/// One service to refresh, and whether to read its instances whatever the
/// revision says.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Wanted {
    pub service_id: String,
    pub always: bool,
}

/// What a refresh changed.
#[derive(Debug, Default)]
pub struct Refreshed {
    /// The services whose instance list changed (or that are gone).
    pub changed: BTreeSet<String>,
    /// The services whose refresh failed (they keep their last known list).
    pub failed: BTreeSet<String>,
}

impl<C: CloudMap, S: EcsServices> Discovery<C, S> {
    /// The known, scraped services an instance may be in: those whose known
    /// instances hold `instance`, and those in which instances of the ECS service
    /// `ecs` (cluster, name) were seen.
    pub fn touched(&self, instance: &str, ecs: Option<(&str, &str)>) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = self
            .services
            .iter()
            .filter(|(_, st)| {
                st.instances
                    .as_ref()
                    .is_some_and(|l| l.iter().any(|i| i.id == instance))
            })
            .map(|(id, _)| id.clone())
            .collect();
        if let Some((cluster, service)) = ecs {
            let key = (cluster.to_string(), service.to_string());
            if let Some(ids) = self.ecs_index.get(&key) {
                out.extend(
                    ids.iter()
                        .filter(|id| self.services.contains_key(*id))
                        .cloned(),
                );
            }
        }
        out.retain(|id| self.services.get(id).is_some_and(|st| st.tagged()));
        out
    }

    /// Whether `service_id` is a known service that is scraped.
    pub fn scrapes(&self, service_id: &str) -> bool {
        self.services.get(service_id).is_some_and(|st| st.tagged())
    }

    /// Whether the known instances of `service_id` show `instance` as `present`
    /// (true too for a service no longer known, and for an instance this shard
    /// does not publish: nothing to wait for there).
    pub fn shows(&self, service_id: &str, instance: &str, present: bool) -> bool {
        match self.services.get(service_id) {
            Some(st) => st.shows(&self.opts, self.account.as_deref(), instance, present),
            None => true,
        }
    }

    /// Reads the `wanted` services again, all calls ending by `deadline`: the
    /// account's whole state after it, as a cycle reports it, and which lists
    /// changed.
    pub async fn refresh(
        &mut self,
        wanted: &[Wanted],
        now: Instant,
        deadline: Instant,
    ) -> (Cycle, Refreshed) {
        let client = &self.client;
        let opts = &self.opts;
        let account = self.account.as_deref();
        let reads: Vec<(String, Result<bool, AwsError>)> =
            futures::stream::iter(self.services.iter_mut().filter_map(|(id, st)| {
                Some((id, st, wanted.iter().find(|w| w.service_id == *id)?))
            }))
            .map(|(id, st, w)| async move {
                let policy = if w.always {
                    Full::Always
                } else {
                    Full::IfMoved
                };
                let read = st.reread(client, opts, account, now, policy);
                let r = tokio::time::timeout_at(deadline, read)
                    .await
                    .unwrap_or_else(|_| Err(AwsError::deadline("event refresh")));
                (id.clone(), r)
            })
            .buffer_unordered(self.opts.concurrency.max(1))
            .collect()
            .await;
        let mut stats = CycleStats::default();
        let mut failures = Vec::new();
        let mut changed = BTreeSet::new();
        let mut failed_ids = BTreeSet::new();
        let mut interned = false;
        for (id, r) in reads {
            match r {
                Ok(true) => {
                    stats.instance_reads += 1;
                    interned |= self.took_new_list(&id);
                    changed.insert(id);
                }
                Ok(false) => {}
                Err(e) if e.kind == ErrorKind::NotFound => {
                    self.forget(&id);
                    changed.insert(id);
                }
                Err(e) => {
                    if let Some(st) = self.services.get(&id) {
                        failures.push(failed(st, e, st.keeps_data(), failures.len()));
                    }
                    failed_ids.insert(id);
                }
            }
        }
        if interned {
            self.strings.sweep();
        }
        let cycle = self.finish(now, stats, failures, None);
        let refreshed = Refreshed {
            changed,
            failed: failed_ids,
        };
        (cycle, refreshed)
    }

    /// The account's state as the last cycle and refreshes left it, reported as
    /// a cycle that read nothing; `Err` while no listing ever succeeded.
    pub fn current(&self, now: Instant) -> Result<Cycle, AwsError> {
        if !self.listed_once {
            return Err(AwsError::new(
                "ListServices",
                ErrorKind::Other,
                "no service listing has succeeded yet",
            ));
        }
        Ok(self.finish(now, CycleStats::default(), Vec::new(), None))
    }
}
