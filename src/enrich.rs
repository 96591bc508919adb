//! ECS and EC2 enrichment: for each discovered task, its launch type and task
//! definition revision (DescribeTasks), its EC2 host (DescribeContainerInstances)
//! and the host's `Name` tag and type (DescribeInstances).
//!
//! Caches: a task's facts and its host never change, so they are read once per task;
//! host tags (a host can be renamed) are read again every `name_refresh`. With no new
//! task, a cycle makes no ECS call and no EC2 call between Name refreshes.
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

use crate::aws::{AwsError, Ec2, Ecs, ErrorKind, Host, TaskFacts, by_deadline};
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
}

/// The result of one enrichment pass.
#[derive(Debug, Default)]
pub struct Enriched {
    /// Labels by task id; the same allocation as the last pass when nothing changed.
    pub tasks: Arc<BTreeMap<String, TaskInfo>>,
    /// Tasks held back this cycle.
    pub held: BTreeSet<String>,
    /// EC2 hosts for the hosts file; None when it could not be determined yet.
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
            released: HashSet::new(),
            settled: None,
        }
    }

    fn due(&self, at: Instant, now: Instant) -> bool {
        now.saturating_duration_since(at) >= self.opts.name_refresh
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
        if let Some(s) = &self.settled {
            let same = s.instances.len() == snapshot.services.len()
                && s.instances
                    .iter()
                    .zip(&snapshot.services)
                    .all(|(a, b)| Arc::ptr_eq(a, &b.instances));
            let hosts_due = self.hosts.values().any(|(_, at)| self.due(*at, now))
                || (self.opts.want_hosts
                    && self.opts.hosts_tag.is_some()
                    && self
                        .tagged
                        .as_ref()
                        .is_none_or(|(at, _)| self.due(*at, now)));
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

    /// A full pass; true when it left nothing to retry (no error, no task
    /// without its facts).
    async fn enrich_all(
        &mut self,
        snapshot: &Snapshot,
        now: Instant,
        deadline: Instant,
    ) -> (Enriched, bool) {
        let mut out = Enriched::default();

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
        for (cluster, mut ids) in unknown {
            ids.sort();
            match by_deadline(deadline, "DescribeTasks", self.ecs.tasks(cluster, &ids)).await {
                Ok(found) => {
                    let mut found: HashMap<String, TaskFacts> =
                        found.into_iter().map(|f| (f.task_id.clone(), f)).collect();
                    let cluster = self.strings.share(cluster);
                    for id in ids {
                        let mut share = |s: Option<String>| s.map(|s| self.strings.share(&s));
                        let facts = found.remove(&id).map(|f| Facts {
                            launch_type: share(f.launch_type),
                            revision: share(f.revision),
                            container_instance_arn: share(f.container_instance_arn),
                        });
                        self.tasks.insert(
                            id,
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
                    for id in ids {
                        self.tasks.insert(
                            id,
                            TaskEntry {
                                cluster: cluster.clone(),
                                facts: None,
                            },
                        );
                    }
                }
                Err(e) => {
                    warn!(cluster, tasks = ids.len(), error = %e, "could not describe new ECS tasks; holding them");
                    out.errors.push(e);
                }
            }
        }

        // 2. DescribeContainerInstances for hosts not mapped yet.
        let mut cis: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
        for t in self.tasks.values() {
            if let Some(arn) = t
                .facts
                .as_ref()
                .and_then(|f| f.container_instance_arn.as_ref())
                && !self.container_instances.contains_key(&**arn)
            {
                cis.entry(&t.cluster).or_default().insert(arn.to_string());
            }
        }
        for (cluster, arns) in cis {
            let arns: Vec<String> = arns.into_iter().collect();
            let call = self.ecs.container_instances(cluster, &arns);
            match by_deadline(deadline, "DescribeContainerInstances", call).await {
                Ok(pairs) => {
                    for (arn, ec2) in pairs {
                        let ec2 = self.strings.share(&ec2);
                        self.container_instances.insert(arn, ec2);
                    }
                }
                Err(e) => {
                    warn!(cluster, error = %e, "could not describe container instances");
                    out.errors.push(e);
                }
            }
        }

        // 3. Hosts: read new ones, refresh the others on the Name clock.
        let mut wanted: BTreeSet<String> = self
            .tasks
            .values()
            .filter_map(|t| t.facts.as_ref()?.container_instance_arn.as_ref())
            .filter_map(|arn| self.container_instances.get(&**arn))
            .map(|ec2| ec2.to_string())
            .collect();
        if self.opts.want_hosts
            && let Some((key, value)) = self.opts.hosts_tag.clone()
            && self
                .tagged
                .as_ref()
                .is_none_or(|(at, _)| self.due(*at, now))
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
        let due: Vec<String> = wanted
            .iter()
            .filter(|id| self.hosts.get(*id).is_none_or(|(_, at)| self.due(*at, now)))
            .cloned()
            .collect();
        if !due.is_empty() {
            match by_deadline(deadline, "DescribeInstances", self.ec2.hosts(&due)).await {
                Ok(hosts) => {
                    for h in hosts {
                        self.hosts.insert(h.instance_id.clone(), (h, now));
                    }
                }
                Err(e) => {
                    warn!(hosts = due.len(), error = %e, "could not describe EC2 hosts; keeping their cached tags");
                    out.errors.push(e);
                }
            }
        }
        self.hosts.retain(|id, _| wanted.contains(id));

        // 4. Labels per task; hold what is incomplete, within bounds.
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
                .and_then(|arn| self.container_instances.get(&**arn));
            let host = ec2_id.and_then(|i| self.hosts.get(&**i)).map(|(h, _)| h);
            let complete = f.container_instance_arn.is_none() || host.is_some();
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
        let settled = incomplete.is_empty() && out.errors.is_empty();
        // Only tasks still waiting for their facts need the time they were first seen.
        let waiting: HashSet<&str> = incomplete.iter().map(|(id, _)| id.as_str()).collect();
        self.first_seen
            .retain(|id, _| waiting.contains(id.as_str()));
        self.strings.sweep();
        for (id, info) in incomplete {
            self.hold_or_release(&id, now, info, &mut out);
        }

        if self.opts.want_hosts {
            out.hosts = Some(self.host_targets());
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
        hosts: Mutex<Vec<Host>>,
        fail_ecs: Mutex<bool>,
        calls: Mutex<Vec<(&'static str, usize)>>,
    }

    impl Ecs for &Fake {
        async fn tasks(&self, cluster: &str, ids: &[String]) -> Result<Vec<TaskFacts>, AwsError> {
            self.calls
                .lock()
                .unwrap()
                .push(("DescribeTasks", ids.len()));
            if *self.fail_ecs.lock().unwrap() {
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
    }

    impl Ec2 for &Fake {
        async fn hosts(&self, ids: &[String]) -> Result<Vec<Host>, AwsError> {
            self.calls
                .lock()
                .unwrap()
                .push(("DescribeInstances", ids.len()));
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
        assert_eq!(f.calls.lock().unwrap().len(), 3);

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
        assert_eq!(*f.calls.lock().unwrap(), vec![("DescribeInstances", 1)]);
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
    async fn new_tasks_of_a_cluster_go_in_one_adapter_call() {
        let mut f = Fake::default();
        let ids: Vec<String> = (0..250).map(|i| format!("t{i}")).collect();
        f.tasks = ids
            .iter()
            .map(|i| ("prod".to_string(), facts(i, "FARGATE", None)))
            .collect();
        let mut e = Enricher::new(&f, &f, opts());
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let r = e.enrich(&snapshot(&refs), Instant::now(), far()).await;
        assert_eq!(r.tasks.len(), 250);
        // The adapter splits into batches of 100 (checked on the wire against moto).
        assert_eq!(*f.calls.lock().unwrap(), vec![("DescribeTasks", 250)]);
    }
}
