//! One service's cached knowledge and the reads that keep it fresh: tags on their
//! clock, the instances revision every cycle, the instances when the revision
//! moved or the full-refresh clock fell due. A service without endpoint tags of its
//! own whose ECS service may describe it (`--ecs-service-tags`) has its instances
//! read on the tags clock only, to learn which ECS services registered them.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::time::Instant;

use super::DiscoveryOptions;
use super::ecs_services::{self, EcsGroup};
use crate::aws::{AwsError, CloudMap, ErrorKind, ServiceSummary};
use crate::model::clock::due;
use crate::model::tags::{has_endpoint_tags, wants_scraping};
use crate::model::{Instance, ShardKey, ShardTarget};

/// Cached knowledge about one service.
#[derive(Debug, Clone)]
pub(super) struct ServiceState {
    pub(super) summary: ServiceSummary,
    pub(super) namespace: String,
    /// Shared with the snapshots: replaced only when a read finds them changed,
    /// so an unchanged service is the same allocation cycle after cycle.
    pub(super) tags: Option<Arc<BTreeMap<String, String>>>,
    tags_read_at: Option<Instant>,
    revision: Option<i64>,
    /// This shard's instances (`--shard-key task` filters them as they are read).
    pub(super) instances: Option<Arc<Vec<Instance>>>,
    /// Instances of this service left to other shards.
    pub(super) excluded: usize,
    instances_read_at: Option<Instant>,
    /// Last time every call for this service succeeded.
    pub(super) confirmed_at: Option<Instant>,
    /// Its instances by the ECS service that registered them, while its ECS
    /// services' tags may describe it ([`ServiceState::ecs_candidate`]).
    pub(super) ecs_groups: Vec<EcsGroup>,
    /// The instance list the groups were made from.
    ecs_groups_from: Option<Arc<Vec<Instance>>>,
}

/// What one service's reads came to.
pub(super) enum Outcome {
    Fresh,
    Failed(AwsError),
    /// The service no longer exists.
    Gone,
}

/// One service's reads this cycle: the outcome, and which reads were made.
pub(super) struct Read {
    pub(super) outcome: Outcome,
    pub(super) tags_read: bool,
    pub(super) full_read: bool,
}

impl Read {
    fn new(outcome: Outcome, tags_read: bool, full_read: bool) -> Self {
        Read {
            outcome,
            tags_read,
            full_read,
        }
    }
}

impl ServiceState {
    pub(super) fn new(summary: ServiceSummary, namespace: String) -> Self {
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
            ecs_groups: Vec::new(),
            ecs_groups_from: None,
        }
    }

    /// True when the service wants scraping, as far as its known tags say (its
    /// own, or those of an ECS service of its instances).
    pub(super) fn tagged(&self) -> bool {
        self.tags.as_deref().is_some_and(wants_scraping)
            || self.ecs_groups.iter().any(EcsGroup::wants_scraping)
    }

    /// True when its ECS services' tags may describe it: the Cloud Map service's
    /// known tags hold no endpoint tag, and `--ecs-service-tags` is on.
    pub(super) fn ecs_candidate(&self, opts: &DiscoveryOptions) -> bool {
        opts.ecs_service_tags && self.tags.as_deref().is_some_and(|t| !has_endpoint_tags(t))
    }

    /// Groups the instances by ECS service after a read that changed them (or
    /// forgets the groups of a service that is no candidate any more).
    pub(super) fn regroup(&mut self, opts: &DiscoveryOptions) {
        let list = match &self.instances {
            Some(list) if self.ecs_candidate(opts) => list,
            _ => {
                self.ecs_groups.clear();
                self.ecs_groups_from = None;
                return;
            }
        };
        if self
            .ecs_groups_from
            .as_ref()
            .is_some_and(|f| Arc::ptr_eq(f, list))
        {
            return;
        }
        self.ecs_groups = ecs_services::group(list, &self.ecs_groups);
        self.ecs_groups_from = Some(list.clone());
    }

    /// True when the service still publishes last known data after a failed read:
    /// its tags are known, and so are its instances if it is scraped at all.
    pub(super) fn keeps_data(&self) -> bool {
        self.tags.is_some() && (self.instances.is_some() || !self.tagged())
    }

    /// Reads what is due for this service.
    pub(super) async fn refresh<C: CloudMap>(
        &mut self,
        client: &C,
        opts: &DiscoveryOptions,
        account: Option<&str>,
        now: Instant,
    ) -> Read {
        let tags_read = due(self.tags_read_at, opts.tags_refresh, now);
        // A failed tag read of a service whose tags are known is reported, but its
        // instances are still read.
        let mut tag_error = None;
        if tags_read {
            match self.read_tags(client, now).await {
                Ok(()) => {}
                Err(e) if e.kind == ErrorKind::NotFound => {
                    return Read::new(Outcome::Gone, true, false);
                }
                Err(e) if self.tags.is_some() => tag_error = Some(e),
                Err(e) => return Read::new(Outcome::Failed(e), true, false),
            }
        }
        let mut full_read = false;
        // Scraped: every cycle. A candidate for ECS service tags: on the tags clock
        // (or until a read succeeds), to learn its ECS services.
        let scraped = self.tagged();
        let candidate = !scraped && self.ecs_candidate(opts);
        if scraped || (candidate && (tags_read || self.instances.is_none())) {
            match self
                .read_instances(client, opts, account, now, scraped)
                .await
            {
                Ok(full) => full_read = full,
                Err((e, full)) if e.kind == ErrorKind::NotFound => {
                    return Read::new(Outcome::Gone, tags_read, full);
                }
                Err((e, full)) => return Read::new(Outcome::Failed(e), tags_read, full),
            }
        } else if !candidate {
            self.forget_instances();
        }
        let outcome = match tag_error {
            Some(e) => Outcome::Failed(e),
            None => {
                self.confirmed_at = Some(now);
                Outcome::Fresh
            }
        };
        Read::new(outcome, tags_read, full_read)
    }

    async fn read_tags<C: CloudMap>(&mut self, client: &C, now: Instant) -> Result<(), AwsError> {
        let t = client.tags(&self.summary.arn).await?;
        if self.tags.as_deref() != Some(&t) {
            self.tags = Some(Arc::new(t));
        }
        self.tags_read_at = Some(now);
        Ok(())
    }

    /// Not scraped: no instance calls, and nothing kept.
    fn forget_instances(&mut self) {
        self.instances = None;
        self.excluded = 0;
        self.revision = None;
        self.instances_read_at = None;
        self.ecs_groups.clear();
        self.ecs_groups_from = None;
    }

    /// The revision, then the instances when they are due (with `scraped`, also
    /// every `full_refresh`: health changes do not move the revision). Ok: whether
    /// they were read in full. Err: the error, and whether the full read was the one
    /// that failed.
    async fn read_instances<C: CloudMap>(
        &mut self,
        client: &C,
        opts: &DiscoveryOptions,
        account: Option<&str>,
        now: Instant,
        scraped: bool,
    ) -> Result<bool, (AwsError, bool)> {
        let (ns, name) = (&self.namespace, &self.summary.name);
        let owner = self.summary.owner.as_deref();
        let revision = client
            .instances_revision(ns, name, owner)
            .await
            .map_err(|e| (e, false))?;
        let full = self.instances.is_none()
            || self.revision != Some(revision)
            || (scraped && due(self.instances_read_at, opts.full_refresh, now));
        if !full {
            return Ok(false);
        }
        let mut list = client
            .instances(ns, name, owner, opts.health)
            .await
            .map_err(|e| (e, true))?;
        self.excluded = 0;
        if let Some((shard, ShardKey::Task)) = opts.shard {
            let all = list.len();
            list.retain(|i| {
                let target = ShardTarget {
                    account,
                    namespace: ns,
                    service: name,
                    instance: &i.id,
                };
                shard.keeps(&ShardKey::Task.of(&target))
            });
            self.excluded = all - list.len();
        }
        if self.instances.as_deref() != Some(&list) {
            self.instances = Some(Arc::new(list));
        }
        self.revision = Some(revision);
        self.instances_read_at = Some(now);
        Ok(true)
    }
}
