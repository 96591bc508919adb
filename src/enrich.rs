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

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::warn;

use crate::aws::{AwsError, BATCH, Ec2, Ecs, ErrorKind, Host, TaskFacts, by_deadline};
use crate::targets::{HostTarget, Instance, Interner, Snapshot, TaskInfo, attr};

/// How enrichment behaves.
#[derive(Debug, Clone)]
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
    /// Labels by task id; the same allocation as the last pass when nothing changed.
    pub tasks: Arc<BTreeMap<String, TaskInfo>>,
    /// Tasks held back this cycle.
    pub held: BTreeSet<String>,
    /// EC2 hosts for the hosts file; None when not wanted, or while no pass has
    /// been able to say them (every one so far had a failed call).
    pub hosts: Option<Vec<HostTarget>>,
    /// Calls that failed this pass.
    pub errors: Vec<AwsError>,
}

struct TaskEntry {
    cluster: Arc<str>,
    /// None: ECS does not know this id (not a task, or stopped).
    facts: Option<Facts>,
}

/// A host's `Name` tag and instance type, as labels share them.
type NameAndType = (Option<Arc<str>>, Option<Arc<str>>);

/// What labels need of a task's [`TaskFacts`], with strings shared between tasks.
struct Facts {
    launch_type: Option<Arc<str>>,
    revision: Option<Arc<str>>,
    container_instance_arn: Option<Arc<str>>,
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
    last_hosts: Option<Vec<HostTarget>>,
    released: HashSet<String>,
    /// The last pass, when it left nothing to retry: its result is reused while
    /// the instances and the host clocks stay the same.
    settled: Option<Settled>,
}

struct Settled {
    /// The instance lists it saw (compared by pointer: discovery keeps an
    /// unchanged list in the same allocation).
    instances: Vec<Arc<Vec<Instance>>>,
    tasks: Arc<BTreeMap<String, TaskInfo>>,
    hosts: Option<Vec<HostTarget>>,
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
        let refresh = self.opts.name_refresh;
        if let Some(s) = &self.settled {
            let same = s.instances.len() == snapshot.services.len()
                && s.instances
                    .iter()
                    .zip(&snapshot.services)
                    .all(|(a, b)| Arc::ptr_eq(a, &b.instances));
            let hosts_due = self.hosts.values().any(|(_, at)| due(refresh, *at, now))
                || (self.opts.want_hosts
                    && self.opts.hosts_tag.is_some()
                    && self
                        .tagged
                        .as_ref()
                        .is_none_or(|(at, _)| due(refresh, *at, now)))
                || self.missing.values().any(|at| due(refresh, *at, now))
                || self.clusters.values().any(|(at, _)| due(refresh, *at, now));
            if same && !hosts_due {
                return Enriched {
                    tasks: s.tasks.clone(),
                    held: BTreeSet::new(),
                    hosts: s.hosts.clone(),
                    errors: Vec::new(),
                };
            }
        }
        let (mut out, settled) = self.enrich_all(snapshot, now, deadline).await;
        if let Some(last) = &self.settled
            && last.tasks == out.tasks
        {
            out.tasks = last.tasks.clone();
        }
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

    /// A full pass; true when it left nothing to retry before a clock falls due (no
    /// error, no task held).
    async fn enrich_all(
        &mut self,
        snapshot: &Snapshot,
        now: Instant,
        deadline: Instant,
    ) -> (Enriched, bool) {
        let mut out = Enriched::default();
        let refresh = self.opts.name_refresh;

        // ECS tasks in the snapshot, by cluster.
        let mut present: HashMap<&str, &str> = HashMap::new();
        for svc in &snapshot.services {
            for inst in svc.instances.iter() {
                if let Some(cluster) = inst.attributes.get(attr::ECS_CLUSTER) {
                    present.insert(&inst.id, cluster);
                }
            }
        }
        self.tasks.retain(|id, _| present.contains_key(id.as_str()));
        self.first_seen
            .retain(|id, _| present.contains_key(id.as_str()));
        self.released.retain(|id| present.contains_key(id.as_str()));

        // 1. DescribeTasks for tasks not seen before.
        let mut unknown: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (id, cluster) in &present {
            if !self.tasks.contains_key(*id) {
                unknown.entry(cluster).or_default().push(id.to_string());
                self.first_seen.entry(id.to_string()).or_insert(now);
            }
        }
        // One call per batch, so a failed batch holds only its own tasks.
        for (cluster, mut ids) in unknown {
            ids.sort();
            let mut batches = ids.chunks(BATCH);
            while let Some(batch) = batches.next() {
                let call = self.ecs.tasks(cluster, batch);
                match by_deadline(deadline, "DescribeTasks", call).await {
                    Ok(found) => {
                        let mut found: HashMap<String, TaskFacts> =
                            found.into_iter().map(|f| (f.task_id.clone(), f)).collect();
                        let cluster = self.strings.share(cluster);
                        for id in batch {
                            let mut share = |s: Option<String>| s.map(|s| self.strings.share(&s));
                            let facts = found.remove(id).map(|f| Facts {
                                launch_type: share(f.launch_type),
                                revision: share(f.revision),
                                container_instance_arn: share(f.container_instance_arn),
                            });
                            self.tasks.insert(
                                id.clone(),
                                TaskEntry {
                                    cluster: cluster.clone(),
                                    facts,
                                },
                            );
                        }
                    }
                    Err(e) if e.kind == ErrorKind::NotFound => {
                        // No such cluster: these instances are not ECS tasks here.
                        let cluster = self.strings.share(cluster);
                        for id in batch.iter().chain(batches.by_ref().flatten()) {
                            self.tasks.insert(
                                id.clone(),
                                TaskEntry {
                                    cluster: cluster.clone(),
                                    facts: None,
                                },
                            );
                        }
                    }
                    Err(e) => {
                        warn!(cluster, tasks = batch.len(), error = %e, "could not describe new ECS tasks; holding them");
                        out.errors.push(e);
                    }
                }
            }
        }

        // 2. For the hosts file: the container instances of every cluster in which
        //    a task was found, listed when the cluster is first seen and then on the
        //    Name clock (hosts that run no discovered task, such as a node exporter
        //    daemon's, are scraped too).
        if self.lists_clusters() {
            let seen: BTreeSet<Arc<str>> = self
                .tasks
                .values()
                .filter(|t| t.facts.is_some())
                .map(|t| t.cluster.clone())
                .collect();
            self.clusters.retain(|c, _| seen.contains(c));
            for cluster in seen {
                if self
                    .clusters
                    .get(&cluster)
                    .is_some_and(|(at, _)| !due(refresh, *at, now))
                {
                    continue;
                }
                let call = self.ecs.list_container_instances(&cluster);
                match by_deadline(deadline, "ListContainerInstances", call).await {
                    Ok(arns) => {
                        let arns = arns.iter().map(|a| self.strings.share(a)).collect();
                        self.clusters.insert(cluster, (now, arns));
                    }
                    Err(e) => {
                        warn!(cluster = &*cluster, error = %e,
                            "could not list the container instances of a cluster; the hosts file keeps the hosts it has");
                        out.errors.push(e);
                    }
                }
            }
        }

        // 3. DescribeContainerInstances for container instances not mapped yet.
        let mut cis: BTreeMap<Arc<str>, BTreeSet<Arc<str>>> = BTreeMap::new();
        if self.opts.ec2 {
            for t in self.tasks.values() {
                if let Some(arn) = t
                    .facts
                    .as_ref()
                    .and_then(|f| f.container_instance_arn.as_ref())
                {
                    cis.entry(t.cluster.clone())
                        .or_default()
                        .insert(arn.clone());
                }
            }
            for (cluster, (_, arns)) in &self.clusters {
                cis.entry(cluster.clone())
                    .or_default()
                    .extend(arns.iter().cloned());
            }
        }
        let referenced: HashSet<Arc<str>> = cis.values().flatten().cloned().collect();
        self.container_instances
            .retain(|arn, _| referenced.contains(arn.as_str()));
        for (cluster, arns) in cis {
            let arns: Vec<String> = arns
                .iter()
                .filter(|arn| {
                    !self.container_instances.contains_key(&***arn)
                        && self
                            .missing
                            .get(&***arn)
                            .is_none_or(|at| due(refresh, *at, now))
                })
                .map(|arn| arn.to_string())
                .collect();
            for batch in arns.chunks(BATCH) {
                let call = self.ecs.container_instances(&cluster, batch);
                match by_deadline(deadline, "DescribeContainerInstances", call).await {
                    Ok(pairs) => {
                        for (arn, ec2) in pairs {
                            let ec2 = self.strings.share(&ec2);
                            self.missing.remove(&arn);
                            self.container_instances.insert(arn, ec2);
                        }
                        for arn in batch {
                            if !self.container_instances.contains_key(arn) {
                                self.missing.insert(arn.clone(), now);
                            }
                        }
                    }
                    Err(e) => {
                        warn!(cluster = &*cluster, error = %e, "could not describe container instances");
                        out.errors.push(e);
                    }
                }
            }
        }

        // 4. Hosts: read new ones, refresh the others on the Name clock.
        let mut wanted: BTreeSet<String> = referenced
            .iter()
            .filter_map(|arn| self.container_instances.get(&**arn))
            .map(|ec2| ec2.to_string())
            .collect();
        if self.opts.want_hosts
            && let Some((key, value)) = self.opts.hosts_tag.clone()
            && self
                .tagged
                .as_ref()
                .is_none_or(|(at, _)| due(refresh, *at, now))
        {
            match by_deadline(
                deadline,
                "DescribeInstances",
                self.ec2.hosts_tagged(&key, &value),
            )
            .await
            {
                Ok(hosts) => {
                    let ids = hosts.iter().map(|h| h.instance_id.clone()).collect();
                    for h in hosts {
                        self.missing.remove(&h.instance_id);
                        self.hosts.insert(h.instance_id.clone(), (h, now));
                    }
                    self.tagged = Some((now, ids));
                }
                Err(e) => {
                    warn!(tag = %format!("{key}={value}"), error = %e, "could not list EC2 hosts by tag");
                    out.errors.push(e);
                }
            }
        }
        if let Some((_, ids)) = &self.tagged {
            wanted.extend(ids.iter().cloned());
        }
        let asked: Vec<String> = wanted
            .iter()
            .filter(|id| {
                self.hosts
                    .get(*id)
                    .is_none_or(|(_, at)| due(refresh, *at, now))
                    && self
                        .missing
                        .get(*id)
                        .is_none_or(|at| due(refresh, *at, now))
            })
            .cloned()
            .collect();
        if !asked.is_empty() {
            match by_deadline(deadline, "DescribeInstances", self.ec2.hosts(&asked)).await {
                Ok(hosts) => {
                    let mut returned = HashSet::new();
                    for h in hosts {
                        returned.insert(h.instance_id.clone());
                        self.missing.remove(&h.instance_id);
                        self.hosts.insert(h.instance_id.clone(), (h, now));
                    }
                    for id in asked.into_iter().filter(|id| !returned.contains(id)) {
                        match self.hosts.get_mut(&id) {
                            // Gone from EC2 (terminated) while still wanted: keep its
                            // cached tags, ask again on the Name clock.
                            Some((_, at)) => *at = now,
                            None => {
                                self.missing.insert(id, now);
                            }
                        }
                    }
                }
                Err(e) => {
                    warn!(hosts = asked.len(), error = %e, "could not describe EC2 hosts; keeping their cached tags");
                    out.errors.push(e);
                }
            }
        }
        self.hosts.retain(|id, _| wanted.contains(id));
        self.missing
            .retain(|k, _| referenced.contains(k.as_str()) || wanted.contains(k));

        // 5. Labels per task; hold what is incomplete, within bounds.
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
            let info = TaskInfo {
                launch_type: f.launch_type.clone(),
                revision: f.revision.clone(),
                ec2_instance_id: ec2_id.cloned(),
                ec2_name,
                ec2_instance_type,
            };
            if complete {
                Arc::make_mut(&mut out.tasks).insert(id.clone(), info);
            } else {
                incomplete.push((id.clone(), info));
            }
        }
        for id in present.keys() {
            if !self.tasks.contains_key(*id) {
                incomplete.push((id.to_string(), TaskInfo::default()));
            }
        }
        // Only tasks still waiting for their facts need the time they were first seen.
        let waiting: HashSet<&str> = incomplete.iter().map(|(id, _)| id.as_str()).collect();
        self.first_seen
            .retain(|id, _| waiting.contains(id.as_str()));
        self.strings.sweep();
        for (id, info) in incomplete {
            self.hold_or_release(&id, now, info, &mut out);
        }
        let settled = out.errors.is_empty() && out.held.is_empty();

        // 6. The hosts file: exactly the hosts known after a pass without error;
        //    after a failed call, no host leaves it (last known good).
        if self.opts.want_hosts {
            let current = self.host_targets();
            out.hosts = if out.errors.is_empty() {
                Some(current)
            } else {
                self.last_hosts
                    .as_ref()
                    .map(|last| keep_known(current, last))
            };
            if out.hosts.is_some() {
                self.last_hosts.clone_from(&out.hosts);
            }
        }
        (out, settled)
    }

    fn hold_or_release(&mut self, id: &str, now: Instant, info: TaskInfo, out: &mut Enriched) {
        let since = *self.first_seen.entry(id.to_string()).or_insert(now);
        if now.saturating_duration_since(since) < self.opts.hold {
            out.held.insert(id.to_string());
            return;
        }
        if self.released.insert(id.to_string()) {
            warn!(task = id, hold = %humantime::format_duration(self.opts.hold),
                "ECS/EC2 facts of a task still unknown after the hold time; publishing it without them");
        }
        Arc::make_mut(&mut out.tasks).insert(id.to_string(), info);
    }

    fn host_targets(&self) -> Vec<HostTarget> {
        let mut cluster_of: HashMap<&str, &str> = HashMap::new();
        for t in self.tasks.values() {
            if let Some(ec2) = t
                .facts
                .as_ref()
                .and_then(|f| f.container_instance_arn.as_ref())
                .and_then(|arn| self.container_instances.get(&**arn))
            {
                cluster_of.insert(ec2, &t.cluster);
            }
        }
        for (cluster, (_, arns)) in &self.clusters {
            for ec2 in arns
                .iter()
                .filter_map(|a| self.container_instances.get(&**a))
            {
                cluster_of.insert(ec2, cluster);
            }
        }
        // With a tag filter, the hosts file holds exactly the tagged hosts.
        let tagged: Option<HashSet<&str>> = self.opts.hosts_tag.as_ref().map(|_| {
            self.tagged
                .iter()
                .flat_map(|(_, ids)| ids.iter().map(String::as_str))
                .collect()
        });
        let mut v: Vec<HostTarget> = self
            .hosts
            .values()
            .filter(|(h, _)| {
                tagged
                    .as_ref()
                    .is_none_or(|t| t.contains(h.instance_id.as_str()))
            })
            .map(|(h, _)| HostTarget {
                instance_id: h.instance_id.clone(),
                name: h.name.clone(),
                instance_type: h.instance_type.clone(),
                availability_zone: h.availability_zone.clone(),
                private_ip: h.private_ip.clone(),
                cluster: cluster_of
                    .get(h.instance_id.as_str())
                    .map(|c| c.to_string()),
            })
            .collect();
        v.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
        v
    }
}

/// Whether a clock read `at` is due again after `refresh`.
fn due(refresh: Duration, at: Instant, now: Instant) -> bool {
    now.saturating_duration_since(at) >= refresh
}

/// `current`, plus the hosts of `last` it lacks, by instance id.
fn keep_known(mut current: Vec<HostTarget>, last: &[HostTarget]) -> Vec<HostTarget> {
    let have: HashSet<String> = current.iter().map(|h| h.instance_id.clone()).collect();
    current.extend(
        last.iter()
            .filter(|h| !have.contains(&h.instance_id))
            .cloned(),
    );
    current.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
    current
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targets::{Instance, ServiceData};
    use std::sync::Mutex;

    /// A deadline no unit test reaches.
    fn far() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    #[derive(Default)]
    struct Fake {
        tasks: Vec<(String, TaskFacts)>,
        cis: Vec<(String, String)>,
        /// (cluster, container instance ARN) registered.
        listed: Mutex<Vec<(String, String)>>,
        hosts: Mutex<Vec<Host>>,
        fail_ecs: Mutex<bool>,
        fail_ec2: Mutex<bool>,
        /// DescribeTasks fails for a batch holding this task id.
        fail_tasks_with: Mutex<Option<String>>,
        calls: Mutex<Vec<(&'static str, usize)>>,
    }

    impl Ecs for &Fake {
        async fn tasks(&self, cluster: &str, ids: &[String]) -> Result<Vec<TaskFacts>, AwsError> {
            self.calls
                .lock()
                .unwrap()
                .push(("DescribeTasks", ids.len()));
            let failing_batch = self
                .fail_tasks_with
                .lock()
                .unwrap()
                .as_ref()
                .is_some_and(|id| ids.contains(id));
            if *self.fail_ecs.lock().unwrap() || failing_batch {
                return Err(AwsError::new(
                    "DescribeTasks",
                    crate::aws::ErrorKind::Throttled,
                    "slow down",
                ));
            }
            Ok(self
                .tasks
                .iter()
                .filter(|(c, f)| c == cluster && ids.contains(&f.task_id))
                .map(|(_, f)| f.clone())
                .collect())
        }
        async fn container_instances(
            &self,
            _cluster: &str,
            arns: &[String],
        ) -> Result<Vec<(String, String)>, AwsError> {
            self.calls
                .lock()
                .unwrap()
                .push(("DescribeContainerInstances", arns.len()));
            Ok(self
                .cis
                .iter()
                .filter(|(a, _)| arns.contains(a))
                .cloned()
                .collect())
        }
        async fn list_container_instances(&self, cluster: &str) -> Result<Vec<String>, AwsError> {
            self.calls
                .lock()
                .unwrap()
                .push(("ListContainerInstances", 0));
            Ok(self
                .listed
                .lock()
                .unwrap()
                .iter()
                .filter(|(c, _)| c == cluster)
                .map(|(_, a)| a.clone())
                .collect())
        }
    }

    impl Ec2 for &Fake {
        async fn hosts(&self, ids: &[String]) -> Result<Vec<Host>, AwsError> {
            self.calls
                .lock()
                .unwrap()
                .push(("DescribeInstances", ids.len()));
            if *self.fail_ec2.lock().unwrap() {
                return Err(AwsError::new(
                    "DescribeInstances",
                    crate::aws::ErrorKind::Server,
                    "internal error",
                ));
            }
            let h = self.hosts.lock().unwrap();
            Ok(h.iter()
                .filter(|h| ids.contains(&h.instance_id))
                .cloned()
                .collect())
        }
        async fn hosts_tagged(&self, _k: &str, _v: &str) -> Result<Vec<Host>, AwsError> {
            self.calls.lock().unwrap().push(("DescribeInstances", 0));
            Ok(self.hosts.lock().unwrap().clone())
        }
    }

    fn facts(id: &str, lt: &str, ci: Option<&str>) -> TaskFacts {
        TaskFacts {
            task_id: id.into(),
            launch_type: Some(lt.into()),
            revision: Some("3".into()),
            container_instance_arn: ci.map(str::to_string),
        }
    }

    fn fake() -> Fake {
        Fake {
            tasks: vec![
                ("prod".into(), facts("t1", "EC2", Some("ci-a"))),
                ("prod".into(), facts("t2", "FARGATE", None)),
            ],
            cis: vec![("ci-a".into(), "i-a".into())],
            hosts: Mutex::new(vec![Host {
                instance_id: "i-a".into(),
                name: Some("host-a".into()),
                instance_type: Some("m5.large".into()),
                availability_zone: Some("us-east-1a".into()),
                private_ip: Some("10.0.0.10".into()),
            }]),
            ..Fake::default()
        }
    }

    fn snapshot(ids: &[&str]) -> Snapshot {
        Snapshot {
            services: vec![ServiceData {
                namespace: "ns".into(),
                service: "web".into(),
                tags: Arc::default(),
                instances: Arc::new(
                    ids.iter()
                        .map(|id| Instance {
                            id: id.to_string(),
                            attributes: [(attr::ECS_CLUSTER.to_string(), "prod".to_string())]
                                .into(),
                        })
                        .collect(),
                ),
            }],
            ..Snapshot::default()
        }
    }

    fn opts() -> EnrichOptions {
        EnrichOptions {
            hold: Duration::from_secs(60),
            name_refresh: Duration::from_secs(300),
            hosts_tag: None,
            want_hosts: true,
            ec2: true,
        }
    }

    #[tokio::test]
    async fn ec2_and_fargate_tasks_then_a_free_steady_state() {
        let f = fake();
        let mut e = Enricher::new(&f, &f, opts());
        let t0 = Instant::now();
        let r = e.enrich(&snapshot(&["t1", "t2"]), t0, far()).await;
        assert!(r.errors.is_empty() && r.held.is_empty());
        let t1 = &r.tasks["t1"];
        assert_eq!(t1.ec2_name.as_deref(), Some("host-a"));
        assert_eq!(t1.ec2_instance_id.as_deref(), Some("i-a"));
        assert_eq!(t1.ec2_instance_type.as_deref(), Some("m5.large"));
        assert_eq!(t1.launch_type.as_deref(), Some("EC2"));
        let t2 = &r.tasks["t2"];
        assert_eq!(t2.launch_type.as_deref(), Some("FARGATE"));
        assert!(t2.ec2_instance_id.is_none() && t2.ec2_name.is_none());
        let hosts = r.hosts.unwrap();
        assert_eq!(hosts.len(), 1);
        assert_eq!(hosts[0].cluster.as_deref(), Some("prod"));
        assert_eq!(
            *f.calls.lock().unwrap(),
            [
                ("DescribeTasks", 2),
                ("ListContainerInstances", 0),
                ("DescribeContainerInstances", 1),
                ("DescribeInstances", 1)
            ]
        );

        f.calls.lock().unwrap().clear();
        let again = e
            .enrich(
                &snapshot(&["t1", "t2"]),
                t0 + Duration::from_secs(30),
                far(),
            )
            .await;
        assert_eq!(again.tasks, r.tasks);
        assert!(
            f.calls.lock().unwrap().is_empty(),
            "steady state makes no call"
        );

        // Rename: picked up on the Name clock only.
        f.hosts.lock().unwrap()[0].name = Some("renamed".into());
        let r = e
            .enrich(
                &snapshot(&["t1", "t2"]),
                t0 + Duration::from_secs(60),
                far(),
            )
            .await;
        assert_eq!(r.tasks["t1"].ec2_name.as_deref(), Some("host-a"));
        let r = e
            .enrich(
                &snapshot(&["t1", "t2"]),
                t0 + Duration::from_secs(300),
                far(),
            )
            .await;
        assert_eq!(r.tasks["t1"].ec2_name.as_deref(), Some("renamed"));
        assert_eq!(
            *f.calls.lock().unwrap(),
            [("ListContainerInstances", 0), ("DescribeInstances", 1)],
            "the hosts file's cluster listing and the Name refresh"
        );
    }

    #[tokio::test]
    async fn a_failing_ecs_holds_new_tasks_for_a_bounded_time_only() {
        let f = fake();
        let mut e = Enricher::new(&f, &f, opts());
        let t0 = Instant::now();
        e.enrich(&snapshot(&["t2"]), t0, far()).await;
        *f.fail_ecs.lock().unwrap() = true;
        let r = e
            .enrich(
                &snapshot(&["t1", "t2"]),
                t0 + Duration::from_secs(30),
                far(),
            )
            .await;
        assert_eq!(r.held, BTreeSet::from(["t1".to_string()]));
        assert_eq!(r.errors.len(), 1);
        assert_eq!(
            r.tasks["t2"].launch_type.as_deref(),
            Some("FARGATE"),
            "known task kept"
        );
        let r = e
            .enrich(
                &snapshot(&["t1", "t2"]),
                t0 + Duration::from_secs(95),
                far(),
            )
            .await;
        assert!(r.held.is_empty(), "released after the hold time");
        assert_eq!(r.tasks["t1"], TaskInfo::default());
    }

    #[tokio::test]
    async fn new_tasks_go_in_batches_of_100_and_a_failed_batch_holds_only_its_tasks() {
        let mut f = Fake::default();
        let ids: Vec<String> = (0..250).map(|i| format!("t{i}")).collect();
        f.tasks = ids
            .iter()
            .map(|i| ("prod".to_string(), facts(i, "FARGATE", None)))
            .collect();
        let no_hosts = EnrichOptions {
            want_hosts: false,
            ..opts()
        };
        let mut e = Enricher::new(&f, &f, no_hosts.clone());
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let r = e.enrich(&snapshot(&refs), Instant::now(), far()).await;
        assert_eq!(r.tasks.len(), 250);
        // ceil(250/100) calls (counted on the wire against moto too).
        assert_eq!(
            *f.calls.lock().unwrap(),
            [
                ("DescribeTasks", 100),
                ("DescribeTasks", 100),
                ("DescribeTasks", 50)
            ]
        );

        // The batch holding t1 fails: only its tasks are held.
        let mut e = Enricher::new(&f, &f, no_hosts.clone());
        *f.fail_tasks_with.lock().unwrap() = Some("t1".into());
        let r = e.enrich(&snapshot(&refs), Instant::now(), far()).await;
        assert_eq!(r.errors.len(), 1);
        assert!(r.held.contains("t1"));
        assert_eq!((r.held.len(), r.tasks.len()), (100, 150));
    }

    fn host(id: &str, name: &str) -> Host {
        Host {
            instance_id: id.into(),
            name: Some(name.into()),
            instance_type: Some("m5.large".into()),
            availability_zone: Some("us-east-1a".into()),
            private_ip: Some("10.0.0.10".into()),
        }
    }

    fn ids(hosts: &Option<Vec<HostTarget>>) -> Vec<&str> {
        hosts
            .as_ref()
            .expect("a hosts list")
            .iter()
            .map(|h| h.instance_id.as_str())
            .collect()
    }

    fn take_calls(f: &Fake) -> Vec<(&'static str, usize)> {
        std::mem::take(&mut *f.calls.lock().unwrap())
    }

    /// A cluster with two hosts, one running the discovered task.
    fn two_hosts() -> Fake {
        let f = fake();
        Fake {
            cis: vec![
                ("ci-a".into(), "i-a".into()),
                ("ci-b".into(), "i-b".into()),
                ("ci-c".into(), "i-c".into()),
            ],
            listed: Mutex::new(vec![
                ("prod".into(), "ci-a".into()),
                ("prod".into(), "ci-b".into()),
            ]),
            hosts: Mutex::new(vec![
                host("i-a", "host-a"),
                host("i-b", "daemon-only"),
                host("i-c", "new"),
            ]),
            ..f
        }
    }

    #[tokio::test]
    async fn hosts_file_lists_every_container_instance_of_the_clusters_seen() {
        let f = two_hosts();
        let mut e = Enricher::new(&f, &f, opts());
        let t0 = Instant::now();
        let r = e.enrich(&snapshot(&["t1"]), t0, far()).await;
        assert_eq!(ids(&r.hosts), ["i-a", "i-b"]);
        let daemon = &r.hosts.as_ref().unwrap()[1];
        assert_eq!(daemon.cluster.as_deref(), Some("prod"));
        assert_eq!(daemon.name.as_deref(), Some("daemon-only"));
        assert_eq!(
            take_calls(&f),
            [
                ("DescribeTasks", 1),
                ("ListContainerInstances", 0),
                ("DescribeContainerInstances", 2),
                ("DescribeInstances", 2)
            ]
        );
        e.enrich(&snapshot(&["t1"]), t0 + Duration::from_secs(30), far())
            .await;
        assert!(take_calls(&f).is_empty(), "steady state makes no call");

        // A host joins the cluster: found on the Name clock.
        f.listed
            .lock()
            .unwrap()
            .push(("prod".into(), "ci-c".into()));
        e.enrich(&snapshot(&["t1"]), t0 + Duration::from_secs(299), far())
            .await;
        assert!(take_calls(&f).is_empty());
        let r = e
            .enrich(&snapshot(&["t1"]), t0 + Duration::from_secs(300), far())
            .await;
        assert_eq!(ids(&r.hosts), ["i-a", "i-b", "i-c"]);
        assert_eq!(
            take_calls(&f),
            [
                ("ListContainerInstances", 0),
                ("DescribeContainerInstances", 1),
                ("DescribeInstances", 3)
            ]
        );
    }

    #[tokio::test]
    async fn a_failed_call_drops_no_host_and_an_early_one_writes_none() {
        // EC2 failing from the start: no hosts list at all, not an empty one.
        let f = two_hosts();
        *f.fail_ec2.lock().unwrap() = true;
        let mut e = Enricher::new(&f, &f, opts());
        let t0 = Instant::now();
        let r = e.enrich(&snapshot(&["t1"]), t0, far()).await;
        assert!(r.hosts.is_none() && r.errors.len() == 1);
        let r = e
            .enrich(&snapshot(&["t1"]), t0 + Duration::from_secs(90), far())
            .await;
        assert!(r.hosts.is_none(), "still none after the task's release");
        assert!(r.held.is_empty() && r.tasks.contains_key("t1"));
        *f.fail_ec2.lock().unwrap() = false;
        let r = e
            .enrich(&snapshot(&["t1"]), t0 + Duration::from_secs(91), far())
            .await;
        assert_eq!(ids(&r.hosts), ["i-a", "i-b"]);

        // A host leaves the cluster while EC2 fails: kept until a clean pass.
        let f = two_hosts();
        let mut e = Enricher::new(&f, &f, opts());
        let r = e.enrich(&snapshot(&["t1"]), t0, far()).await;
        assert_eq!(ids(&r.hosts), ["i-a", "i-b"]);
        f.listed.lock().unwrap().pop();
        *f.fail_ec2.lock().unwrap() = true;
        let r = e
            .enrich(&snapshot(&["t1"]), t0 + Duration::from_secs(300), far())
            .await;
        assert_eq!(r.errors.len(), 1);
        assert_eq!(ids(&r.hosts), ["i-a", "i-b"], "kept while a call fails");
        *f.fail_ec2.lock().unwrap() = false;
        let r = e
            .enrich(&snapshot(&["t1"]), t0 + Duration::from_secs(301), far())
            .await;
        assert_eq!(ids(&r.hosts), ["i-a"], "gone after a clean pass");
    }

    #[tokio::test]
    async fn a_host_ec2_does_not_return_is_asked_again_on_the_name_clock_only() {
        let mut f = fake();
        f.cis = vec![("ci-a".into(), "i-gone".into())];
        let mut e = Enricher::new(&f, &f, opts());
        let t0 = Instant::now();
        let r = e.enrich(&snapshot(&["t1"]), t0, far()).await;
        assert!(r.errors.is_empty());
        assert_eq!(r.held, BTreeSet::from(["t1".to_string()]));
        take_calls(&f);
        for s in [10, 30, 59] {
            let r = e
                .enrich(&snapshot(&["t1"]), t0 + Duration::from_secs(s), far())
                .await;
            assert!(r.held.contains("t1"));
        }
        assert!(take_calls(&f).is_empty(), "not asked again every cycle");
        let r = e
            .enrich(&snapshot(&["t1"]), t0 + Duration::from_secs(61), far())
            .await;
        let t1 = &r.tasks["t1"];
        assert_eq!(t1.ec2_instance_id.as_deref(), Some("i-gone"));
        assert!(t1.ec2_name.is_none());
        e.enrich(&snapshot(&["t1"]), t0 + Duration::from_secs(120), far())
            .await;
        assert!(take_calls(&f).is_empty());
        e.enrich(&snapshot(&["t1"]), t0 + Duration::from_secs(300), far())
            .await;
        assert_eq!(
            take_calls(&f),
            [("ListContainerInstances", 0), ("DescribeInstances", 1)]
        );
    }

    #[tokio::test]
    async fn with_no_hold_a_task_whose_host_is_unknown_is_published_at_once() {
        // What `once` does: there is no later cycle to wait for.
        let mut f = fake();
        f.cis = vec![("ci-a".into(), "i-gone".into())];
        let mut e = Enricher::new(
            &f,
            &f,
            EnrichOptions {
                hold: Duration::ZERO,
                ..opts()
            },
        );
        let r = e.enrich(&snapshot(&["t1"]), Instant::now(), far()).await;
        assert!(r.held.is_empty() && r.errors.is_empty());
        assert_eq!(r.tasks["t1"].ec2_instance_id.as_deref(), Some("i-gone"));
        assert_eq!(r.tasks["t1"].launch_type.as_deref(), Some("EC2"));
    }

    #[tokio::test]
    async fn without_ec2_a_task_gets_its_ecs_facts_only() {
        let f = fake();
        let mut e = Enricher::new(
            &f,
            &f,
            EnrichOptions {
                ec2: false,
                want_hosts: false,
                ..opts()
            },
        );
        let r = e
            .enrich(&snapshot(&["t1", "t2"]), Instant::now(), far())
            .await;
        assert!(r.held.is_empty() && r.errors.is_empty());
        assert_eq!(r.tasks["t1"].launch_type.as_deref(), Some("EC2"));
        assert_eq!(r.tasks["t1"].revision.as_deref(), Some("3"));
        assert!(r.tasks["t1"].ec2_instance_id.is_none() && r.tasks["t1"].ec2_name.is_none());
        assert_eq!(take_calls(&f), [("DescribeTasks", 2)]);
    }
}
