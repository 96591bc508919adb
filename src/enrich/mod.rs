//! ECS and EC2 enrichment: for each discovered task, its launch type and task
//! definition revision (DescribeTasks), its EC2 host (DescribeContainerInstances)
//! and the host's `Name` tag and type (DescribeInstances).
//!
//! Caches: a task's facts and its host never change, so they are read once per task;
//! host tags (a host can be renamed) are read again every `name_refresh`. With no new
//! task, a cycle makes no ECS call and no EC2 call between Name refreshes.
//!
//! The hosts file (`want_hosts`): the EC2 hosts of every cluster in which a task was
//! found (ListContainerInstances when a cluster is first seen, then on the Name
//! clock), or the running instances with a tag. A pass with a failed call drops no
//! host from it. A container instance or EC2 instance that a successful call did
//! not return is asked for again on the Name clock only, so a task whose host is
//! gone does not cost calls every cycle.
//!
//! Label stability: a new task whose facts cannot be read yet is *held* (left out of
//! the file) for at most `hold`, so its series are not created once without and then
//! again with the EC2 labels. After `hold` it is published with what is known, and a
//! warning says so. A failure never touches tasks already enriched: they keep their
//! cached labels.

//!
//! - [`tasks`](self): new tasks, and the facts of each task's labels;
//! - hosts: container instances, EC2 hosts and the hosts file's list.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::aws::{AwsError, Ec2, Ecs, EcsTask};
use crate::model::{Host, Instance, Interner, Snapshot, TaskFacts};

mod hosts;
mod tasks;

/// How enrichment behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrichOptions {
    /// Longest a new task is held back while its facts cannot be read.
    pub hold: Duration,
    /// How often host tags are read again.
    pub name_refresh: Duration,
    /// Select EC2 hosts for the hosts file by this tag (key, value) instead of by
    /// the tasks seen.
    pub hosts_tag: Option<(String, String)>,
    /// Whether the hosts list is wanted at all.
    pub want_hosts: bool,
    /// Whether EC2 facts are read (DescribeContainerInstances, DescribeInstances);
    /// without them a task gets its ECS facts only.
    pub ec2: bool,
}

/// The result of one enrichment pass.
#[derive(Debug, Default)]
pub struct Enriched {
    /// Facts by task id; the same allocation as the last pass when nothing changed.
    pub tasks: Arc<BTreeMap<String, TaskFacts>>,
    /// Tasks held back this cycle.
    pub held: BTreeSet<String>,
    /// EC2 hosts for the hosts file; None when not wanted, or while no pass has
    /// been able to say them (every one so far had a failed call).
    pub hosts: Option<Vec<Host>>,
    /// Calls that failed this pass.
    pub errors: Vec<AwsError>,
}

struct TaskEntry {
    cluster: Arc<str>,
    /// None: ECS does not know this id (not a task, or stopped).
    facts: Option<EcsTask>,
}

/// The enrichment state machine; call [`Enricher::enrich`] after each discovery cycle.
pub struct Enricher<E, X> {
    ecs: E,
    ec2: X,
    opts: EnrichOptions,
    tasks: HashMap<String, TaskEntry>,
    /// Container instance ARN -> EC2 instance id.
    container_instances: HashMap<String, Arc<str>>,
    /// Strings shared between tasks (clusters, launch types, hosts).
    strings: Interner,
    /// EC2 instance id -> host and when it was read.
    hosts: HashMap<String, (Host, Instant)>,
    /// When a not yet enriched task was first seen.
    first_seen: HashMap<String, Instant>,
    /// Hosts selected by tag, and when.
    tagged: Option<(Instant, Vec<String>)>,
    /// Clusters whose container instances the hosts file lists: when they were
    /// listed, and the ARNs.
    clusters: HashMap<Arc<str>, (Instant, Vec<Arc<str>>)>,
    /// Container instance ARNs and EC2 instance ids that a successful call did not
    /// return, and when it was made: asked again only on the Name clock.
    missing: HashMap<String, Instant>,
    /// The hosts of the last pass that could say them, kept after a failed call.
    last_hosts: Option<Vec<Host>>,
    released: HashSet<String>,
    /// The last pass, when it left nothing to retry: its result is reused while
    /// the instances and the host clocks stay the same.
    settled: Option<Settled>,
}

struct Settled {
    /// The instance lists it saw (compared by pointer: discovery keeps an
    /// unchanged list in the same allocation).
    instances: Vec<Arc<Vec<Instance>>>,
    tasks: Arc<BTreeMap<String, TaskFacts>>,
    hosts: Option<Vec<Host>>,
}

impl Settled {
    /// Whether `snapshot` holds exactly the instance lists this pass saw.
    fn saw(&self, snapshot: &Snapshot) -> bool {
        self.instances.len() == snapshot.services.len()
            && self
                .instances
                .iter()
                .zip(&snapshot.services)
                .all(|(a, b)| Arc::ptr_eq(a, &b.instances))
    }
}

impl<E: Ecs, X: Ec2> Enricher<E, X> {
    pub fn new(ecs: E, ec2: X, opts: EnrichOptions) -> Self {
        Enricher {
            ecs,
            ec2,
            opts,
            tasks: HashMap::new(),
            container_instances: HashMap::new(),
            strings: Interner::default(),
            hosts: HashMap::new(),
            first_seen: HashMap::new(),
            tagged: None,
            clusters: HashMap::new(),
            missing: HashMap::new(),
            last_hosts: None,
            released: HashSet::new(),
            settled: None,
        }
    }

    /// Enriches the ECS tasks of `snapshot`; every call ends by `deadline` (a call
    /// abandoned then fails like any other: new tasks are held, known ones keep
    /// their cached facts).
    pub async fn enrich(
        &mut self,
        snapshot: &Snapshot,
        now: Instant,
        deadline: Instant,
    ) -> Enriched {
        if let Some(s) = &self.settled
            && s.saw(snapshot)
            && !self.host_clock_due(now)
        {
            return Enriched {
                tasks: s.tasks.clone(),
                held: BTreeSet::new(),
                hosts: s.hosts.clone(),
                errors: Vec::new(),
            };
        }
        let mut out = self.enrich_all(snapshot, now, deadline).await;
        if let Some(last) = &self.settled
            && last.tasks == out.tasks
        {
            out.tasks = last.tasks.clone();
        }
        let settled = out.errors.is_empty() && out.held.is_empty();
        self.settled = settled.then(|| Settled {
            instances: snapshot
                .services
                .iter()
                .map(|s| s.instances.clone())
                .collect(),
            tasks: out.tasks.clone(),
            hosts: out.hosts.clone(),
        });
        out
    }

    /// Whether the hosts file lists the container instances of every cluster seen.
    fn lists_clusters(&self) -> bool {
        self.opts.ec2 && self.opts.want_hosts && self.opts.hosts_tag.is_none()
    }

    /// A full pass, in steps.
    async fn enrich_all(
        &mut self,
        snapshot: &Snapshot,
        now: Instant,
        deadline: Instant,
    ) -> Enriched {
        let mut out = Enriched::default();
        let present = tasks::present(snapshot);
        self.forget_gone(&present);
        self.describe_new_tasks(&present, now, deadline, &mut out)
            .await;
        if self.lists_clusters() {
            self.list_clusters(now, deadline, &mut out).await;
        }
        let referenced = self.map_container_instances(now, deadline, &mut out).await;
        self.read_hosts(&referenced, now, deadline, &mut out).await;
        self.label_tasks(&present, now, &mut out);
        self.list_hosts(&mut out);
        out
    }
}

#[cfg(test)]
mod tests;
