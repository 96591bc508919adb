//! One service's cached knowledge and the reads that keep it fresh: tags on their
//! clock, the instances revision every cycle, the instances when the revision
//! moved or the full-refresh clock fell due.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::time::Instant;

use super::DiscoveryOptions;
use crate::aws::{AwsError, CloudMap, ErrorKind, ServiceSummary};
use crate::model::clock::due;
use crate::model::tags::wants_scraping;
use crate::model::{Instance, ShardKey};

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
        }
    }

    /// True when the service wants scraping, as far as its known tags say.
    pub(super) fn tagged(&self) -> bool {
        self.tags.as_deref().is_some_and(wants_scraping)
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
        if self.tagged() {
            match self.read_instances(client, opts, now).await {
                Ok(full) => full_read = full,
                Err((e, full)) if e.kind == ErrorKind::NotFound => {
                    return Read::new(Outcome::Gone, tags_read, full);
                }
                Err((e, full)) => return Read::new(Outcome::Failed(e), tags_read, full),
            }
        } else {
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
    }

    /// The revision, then the instances when they are due. Ok: whether they were
    /// read in full. Err: the error, and whether the full read was the one that
    /// failed.
    async fn read_instances<C: CloudMap>(
        &mut self,
        client: &C,
        opts: &DiscoveryOptions,
        now: Instant,
    ) -> Result<bool, (AwsError, bool)> {
        let (ns, name) = (&self.namespace, &self.summary.name);
        let revision = client
            .instances_revision(ns, name)
            .await
            .map_err(|e| (e, false))?;
        let full = self.instances.is_none()
            || self.revision != Some(revision)
            || due(self.instances_read_at, opts.full_refresh, now);
        if !full {
            return Ok(false);
        }
        let mut list = client
            .instances(ns, name, opts.health)
            .await
            .map_err(|e| (e, true))?;
        self.excluded = 0;
        if let Some((shard, ShardKey::Task)) = opts.shard {
            let all = list.len();
            list.retain(|i| shard.keeps(&ShardKey::Task.key(ns, name, &i.id)));
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
