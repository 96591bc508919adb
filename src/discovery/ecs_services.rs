//! ECS service tags: a Cloud Map service with no endpoint tag of its own (one that
//! ECS Service Connect created and owns, say) takes its endpoint tags from the ECS
//! service that registered its instances, named by their `ECS_CLUSTER_NAME` and
//! `ECS_SERVICE_NAME` attributes. The tags are read with DescribeServices (10
//! services of one cluster per call), cached, and read again on the tags clock.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::time::Instant;

use crate::aws::{AwsError, EcsServices, by_deadline};
use crate::model::clock::due;
use crate::model::{EcsService, Instance, attr};

/// An ECS service, as instances name it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct EcsKey {
    pub(super) cluster: Arc<str>,
    pub(super) service: Arc<str>,
}

/// The instances of a Cloud Map service that one ECS service registered, and that
/// ECS service's tags once they are known.
#[derive(Debug, Clone)]
pub(super) struct EcsGroup {
    pub(super) key: EcsKey,
    /// The whole list (the same allocation) when every instance is this service's.
    pub(super) instances: Arc<Vec<Instance>>,
    pub(super) service: Option<Arc<EcsService>>,
}

impl EcsGroup {
    /// True when the ECS service's known tags ask for scraping.
    pub(super) fn wants_scraping(&self) -> bool {
        self.service
            .as_ref()
            .is_some_and(|s| crate::model::tags::wants_scraping(&s.tags))
    }
}

/// The instances of `list` by the ECS service that registered them, sorted by
/// service; instances that name none are left out. The tags known in `old` are
/// kept.
pub(super) fn group(list: &Arc<Vec<Instance>>, old: &[EcsGroup]) -> Vec<EcsGroup> {
    let mut by_key: BTreeMap<EcsKey, Vec<&Instance>> = BTreeMap::new();
    for inst in list.iter() {
        let a = &inst.attributes;
        if let (Some(cluster), Some(service)) = (a.get(attr::ECS_CLUSTER), a.get(attr::ECS_SERVICE))
        {
            let key = EcsKey {
                cluster: cluster.into(),
                service: service.into(),
            };
            by_key.entry(key).or_default().push(inst);
        }
    }
    let whole = by_key.len() == 1 && by_key.values().all(|v| v.len() == list.len());
    by_key
        .into_iter()
        .map(|(key, insts)| EcsGroup {
            service: old
                .iter()
                .find(|g| g.key == key)
                .and_then(|g| g.service.clone()),
            key,
            instances: match whole {
                true => list.clone(),
                false => Arc::new(insts.into_iter().cloned().collect()),
            },
        })
        .collect()
}

/// The cached tags of the ECS services that discovery needs, and the client that
/// reads them.
pub(super) struct EcsServiceTags<S> {
    client: S,
    /// By service: its tags (empty for a service ECS does not know) and when they
    /// were read.
    known: HashMap<EcsKey, (Arc<EcsService>, Instant)>,
}

impl<S: EcsServices> EcsServiceTags<S> {
    pub(super) fn new(client: S) -> Self {
        EcsServiceTags {
            client,
            known: HashMap::new(),
        }
    }

    /// The tags of one ECS service, when a read succeeded once.
    pub(super) fn get(&self, key: &EcsKey) -> Option<&Arc<EcsService>> {
        self.known.get(key).map(|(s, _)| s)
    }

    /// Reads the tags of the services in `wanted` that are new or older than
    /// `refresh` (one DescribeServices per 10 services of a cluster, clusters in
    /// parallel), and forgets the services no longer wanted. A cluster whose read
    /// fails keeps its services' last known tags; its error is returned.
    pub(super) async fn refresh(
        &mut self,
        wanted: &BTreeSet<EcsKey>,
        refresh: Duration,
        now: Instant,
        deadline: Instant,
        concurrency: usize,
    ) -> BTreeMap<Arc<str>, AwsError> {
        self.known.retain(|k, _| wanted.contains(k));
        let mut due_by_cluster: BTreeMap<Arc<str>, Vec<String>> = BTreeMap::new();
        for key in wanted {
            if due(self.known.get(key).map(|(_, at)| *at), refresh, now) {
                let names = due_by_cluster.entry(key.cluster.clone()).or_default();
                names.push(key.service.to_string());
            }
        }
        let client = &self.client;
        let answers: Vec<_> = futures::stream::iter(due_by_cluster)
            .map(|(cluster, names)| async move {
                let call = client.service_tags(&cluster, &names);
                let r = by_deadline(deadline, "DescribeServices", call).await;
                (cluster, names, r)
            })
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
        let mut errors = BTreeMap::new();
        for (cluster, names, r) in answers {
            match r {
                Ok(found) => self.learn(&cluster, names, found, now),
                Err(e) => {
                    errors.insert(cluster, e);
                }
            }
        }
        errors
    }

    /// Records the tags DescribeServices gave for `names` of `cluster`; a service
    /// it did not return has none.
    fn learn(
        &mut self,
        cluster: &Arc<str>,
        names: Vec<String>,
        found: Vec<(String, BTreeMap<String, String>)>,
        now: Instant,
    ) {
        let mut found: HashMap<String, BTreeMap<String, String>> = found.into_iter().collect();
        for name in names {
            let tags = found.remove(&name).unwrap_or_default();
            let key = EcsKey {
                cluster: cluster.clone(),
                service: name.as_str().into(),
            };
            // An unchanged service keeps its allocation, so snapshots stay equal.
            let same = self.known.get(&key).filter(|(s, _)| s.tags == tags);
            let service = match same {
                Some((s, _)) => s.clone(),
                None => Arc::new(EcsService {
                    cluster: cluster.to_string(),
                    name,
                    tags,
                }),
            };
            self.known.insert(key, (service, now));
        }
    }
}
