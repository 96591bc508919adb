//! Tasks: which ECS tasks a snapshot holds, DescribeTasks for the new ones (one
//! call per batch, so a failed batch holds only its own tasks), and the facts each
//! task's labels and addresses get (its host port bindings too), held back within
//! bounds while incomplete.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use tokio::time::Instant;
use tracing::warn;

use super::{Enriched, Enricher, TaskEntry};
use crate::aws::{BATCH, Ec2, Ecs, EcsTask, ErrorKind, by_deadline};
use crate::model::{PortBinding, Snapshot, TaskFacts, attr};

/// A host's `Name` tag and instance type, as labels share them.
type NameAndType = (Option<Arc<str>>, Option<Arc<str>>);

/// The ECS tasks of a snapshot: task id -> cluster.
pub(super) fn present(snapshot: &Snapshot) -> HashMap<&str, &str> {
    let mut present = HashMap::new();
    for svc in &snapshot.services {
        for inst in svc.instances.iter() {
            if let Some(cluster) = inst.attributes.get(attr::ECS_CLUSTER) {
                present.insert(inst.id.as_str(), cluster);
            }
        }
    }
    present
}

impl<E: Ecs, X: Ec2> Enricher<E, X> {
    /// Forgets the tasks that are gone from the snapshot.
    pub(super) fn forget_gone(&mut self, present: &HashMap<&str, &str>) {
        self.tasks.retain(|id, _| present.contains_key(id.as_str()));
        self.first_seen
            .retain(|id, _| present.contains_key(id.as_str()));
        self.released.retain(|id| present.contains_key(id.as_str()));
    }

    /// DescribeTasks for the tasks not seen before.
    pub(super) async fn describe_new_tasks(
        &mut self,
        present: &HashMap<&str, &str>,
        now: Instant,
        deadline: Instant,
        out: &mut Enriched,
    ) {
        let mut unknown: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (id, cluster) in present {
            if !self.tasks.contains_key(*id) {
                unknown.entry(cluster).or_default().push(id.to_string());
                self.first_seen.entry(id.to_string()).or_insert(now);
            }
        }
        for (cluster, mut ids) in unknown {
            ids.sort();
            let mut batches = ids.chunks(BATCH);
            while let Some(batch) = batches.next() {
                let call = self.ecs.tasks(cluster, batch);
                match by_deadline(deadline, "DescribeTasks", call).await {
                    Ok(found) => self.learn_tasks(cluster, batch, found),
                    Err(e) if e.kind == ErrorKind::NotFound => {
                        // No such cluster: these instances are not ECS tasks here.
                        let rest: Vec<String> = batch
                            .iter()
                            .chain(batches.by_ref().flatten())
                            .cloned()
                            .collect();
                        self.learn_tasks(cluster, &rest, Vec::new());
                    }
                    Err(e) => {
                        warn!(cluster, tasks = batch.len(), error = %e, "could not describe new ECS tasks; holding them");
                        out.errors.push(e);
                    }
                }
            }
        }
    }

    /// Records what ECS said of the tasks `asked` of one cluster; a task it did not
    /// return is recorded as not an ECS task (facts None).
    fn learn_tasks(&mut self, cluster: &str, asked: &[String], found: Vec<(String, EcsTask)>) {
        let mut found: HashMap<String, EcsTask> = found.into_iter().collect();
        let cluster = self.strings.share(cluster);
        for id in asked {
            let facts = found.remove(id).map(|t| EcsTask {
                launch_type: t.launch_type.map(|s| self.strings.get(&s)),
                revision: t.revision.map(|s| self.strings.get(&s)),
                container_instance_arn: t.container_instance_arn.map(|s| self.strings.get(&s)),
                bindings: t
                    .bindings
                    .iter()
                    .map(|b| PortBinding {
                        container: self.strings.get(&b.container),
                        ..*b
                    })
                    .collect(),
            });
            let entry = TaskEntry {
                cluster: cluster.clone(),
                facts,
            };
            self.tasks.insert(id.clone(), entry);
        }
    }

    /// The facts of every task: complete ones go to `out`, the others are held or
    /// released by [`Enricher::hold_or_release`].
    pub(super) fn label_tasks(
        &mut self,
        present: &HashMap<&str, &str>,
        now: Instant,
        out: &mut Enriched,
    ) {
        let mut incomplete = Vec::new();
        // A host's name and type, shared by the labels of all its tasks.
        let mut host_labels: HashMap<&str, NameAndType> = HashMap::new();
        for (id, t) in &self.tasks {
            let Some(f) = &t.facts else {
                continue;
            };
            let ec2_id = f
                .container_instance_arn
                .as_ref()
                .filter(|_| self.opts.ec2)
                .and_then(|arn| self.container_instances.get(&**arn));
            let host = ec2_id.and_then(|i| self.hosts.get(&**i)).map(|(h, _)| h);
            let complete = !self.opts.ec2 || f.container_instance_arn.is_none() || host.is_some();
            let (ec2_name, ec2_instance_type) = match host {
                Some(h) => host_labels
                    .entry(&h.instance_id)
                    .or_insert_with(|| {
                        (
                            h.name.as_deref().map(Arc::from),
                            h.instance_type.as_deref().map(Arc::from),
                        )
                    })
                    .clone(),
                None => (None, None),
            };
            let facts = TaskFacts {
                launch_type: f.launch_type.clone(),
                revision: f.revision.clone(),
                ec2_instance_id: ec2_id.cloned(),
                ec2_name,
                ec2_instance_type,
                bindings: Some(f.bindings.clone()),
            };
            if complete {
                Arc::make_mut(&mut out.tasks).insert(id.clone(), facts);
            } else {
                incomplete.push((id.clone(), facts));
            }
        }
        for id in present.keys() {
            if !self.tasks.contains_key(*id) {
                incomplete.push((id.to_string(), TaskFacts::default()));
            }
        }
        // Only tasks still waiting for their facts need the time they were first seen.
        let waiting: HashSet<&str> = incomplete.iter().map(|(id, _)| id.as_str()).collect();
        self.first_seen
            .retain(|id, _| waiting.contains(id.as_str()));
        self.strings.sweep();
        for (id, facts) in incomplete {
            self.hold_or_release(&id, now, facts, out);
        }
    }

    /// Holds a task whose facts are incomplete, for at most the hold time; then
    /// publishes it with what is known, saying so once.
    fn hold_or_release(&mut self, id: &str, now: Instant, facts: TaskFacts, out: &mut Enriched) {
        let since = *self.first_seen.entry(id.to_string()).or_insert(now);
        if now.saturating_duration_since(since) < self.opts.hold {
            out.held.insert(id.to_string());
            return;
        }
        if self.released.insert(id.to_string()) {
            warn!(task = id, hold = %humantime::format_duration(self.opts.hold),
                "ECS/EC2 facts of a task still unknown after the hold time; publishing it without them");
        }
        Arc::make_mut(&mut out.tasks).insert(id.to_string(), facts);
    }
}
