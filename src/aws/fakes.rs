//! Hand-written adapters over plain data, for unit tests: per-operation failure
//! switches and a log of the calls made.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use super::{
    AwsError, CloudMap, Ec2, Ecs, EcsServices, EcsTask, ErrorKind, Namespace, SERVICES_BATCH,
    ServicePage, ServiceSummary, ServiceTags, Tags,
};
use crate::model::{HealthStatus, Host, Instance};

/// A hand-written Cloud Map: plain data, per-operation failure switches and a
/// call log.
#[derive(Default)]
pub struct FakeCloudMap {
    pub state: Mutex<FakeCloudMapState>,
}

/// What the fake Cloud Map holds, and its switches.
#[derive(Default)]
pub struct FakeCloudMapState {
    pub namespaces: Vec<Namespace>,
    pub services: Vec<(ServiceSummary, String, BTreeMap<String, String>)>,
    pub instances: HashMap<String, (i64, Vec<Instance>)>,
    pub failing: BTreeSet<&'static str>,
    pub failing_services: BTreeSet<String>,
    /// Services whose revision call never answers.
    pub stalling_services: BTreeSet<String>,
    pub calls: Vec<&'static str>,
    /// The owner account each revision and instances call named.
    pub owners_asked: Vec<Option<String>>,
}

fn err(op: &'static str) -> AwsError {
    AwsError::new(op, ErrorKind::Server, "boom")
}

impl FakeCloudMap {
    /// Logs one call of `op` (for service `svc`); fails when a switch says so.
    pub fn call(&self, op: &'static str, svc: Option<&str>) -> Result<(), AwsError> {
        let mut s = self.state.lock().unwrap();
        s.calls.push(op);
        if s.failing.contains(op) || svc.is_some_and(|n| s.failing_services.contains(n)) {
            return Err(err(op));
        }
        Ok(())
    }
    /// Adds a service (and its namespace, named `ns-<ns>`), with no instance.
    pub fn add_service(&self, ns: &str, name: &str, tags: &[(&str, &str)]) {
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
                owner: None,
            },
            format!("ns-{ns}"),
            tags.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ));
        s.instances.insert(name.into(), (1, vec![]));
    }
    /// Lists the service as in a namespace `owner` shares with the account.
    pub fn set_owner(&self, svc: &str, owner: &str) {
        let mut s = self.state.lock().unwrap();
        let entry = s.services.iter_mut().find(|x| x.0.name == svc).unwrap();
        entry.0.owner = Some(owner.into());
    }
    /// Registers an ECS task of `cluster` (no ECS service) with an IPv4 address; the
    /// revision moves.
    pub fn register_cluster_task(&self, svc: &str, id: &str, ip: &str, cluster: &str) {
        let mut s = self.state.lock().unwrap();
        let e = s.instances.get_mut(svc).unwrap();
        e.0 += 1;
        e.1.push(Instance {
            id: id.into(),
            attributes: [
                ("AWS_INSTANCE_IPV4".to_string(), ip.to_string()),
                ("ECS_CLUSTER_NAME".to_string(), cluster.to_string()),
            ]
            .into(),
        });
    }
    /// Registers an instance with an IPv4 address; the revision moves.
    pub fn register(&self, svc: &str, id: &str, ip: &str) {
        let mut s = self.state.lock().unwrap();
        let e = s.instances.get_mut(svc).unwrap();
        e.0 += 1;
        e.1.push(Instance {
            id: id.into(),
            attributes: [("AWS_INSTANCE_IPV4".to_string(), ip.to_string())].into(),
        });
    }
    /// Registers an instance as ECS registers a task of ECS service `ecs_service`
    /// in `cluster`; the revision moves.
    pub fn register_task(&self, svc: &str, id: &str, ip: &str, cluster: &str, ecs_service: &str) {
        let mut s = self.state.lock().unwrap();
        let e = s.instances.get_mut(svc).unwrap();
        e.0 += 1;
        e.1.push(Instance {
            id: id.into(),
            attributes: [
                ("AWS_INSTANCE_IPV4", ip),
                ("ECS_CLUSTER_NAME", cluster),
                ("ECS_SERVICE_NAME", ecs_service),
            ]
            .into(),
        });
    }
    /// Replaces the tags of Cloud Map service `name`.
    pub fn retag(&self, name: &str, tags: &[(&str, &str)]) {
        let mut s = self.state.lock().unwrap();
        let svc = s.services.iter_mut().find(|x| x.0.name == name).unwrap();
        svc.2 = tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    }
    /// The calls made since the last look, sorted.
    pub fn take_calls(&self) -> Vec<&'static str> {
        let mut c = std::mem::take(&mut self.state.lock().unwrap().calls);
        c.sort();
        c
    }
}

impl CloudMap for FakeCloudMap {
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
    async fn instances_revision(
        &self,
        _ns: &str,
        svc: &str,
        owner: Option<&str>,
    ) -> Result<i64, AwsError> {
        self.state
            .lock()
            .unwrap()
            .owners_asked
            .push(owner.map(str::to_string));
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
        owner: Option<&str>,
        _h: HealthStatus,
    ) -> Result<Vec<Instance>, AwsError> {
        self.state
            .lock()
            .unwrap()
            .owners_asked
            .push(owner.map(str::to_string));
        self.call("DiscoverInstances", Some(svc))?;
        Ok(self.state.lock().unwrap().instances[svc].1.clone())
    }
}

/// Hand-written ECS and EC2: plain data, failure switches and a call log
/// (operation, items asked for).
#[derive(Default)]
pub struct FakeEcs {
    /// (cluster, task id, task).
    pub tasks: Vec<(String, String, EcsTask)>,
    pub cis: Vec<(String, String)>,
    /// (cluster, container instance ARN) registered.
    pub listed: Mutex<Vec<(String, String)>>,
    pub hosts: Mutex<Vec<Host>>,
    pub fail_ecs: Mutex<bool>,
    pub fail_ec2: Mutex<bool>,
    /// DescribeTasks fails for a batch holding this task id.
    pub fail_tasks_with: Mutex<Option<String>>,
    /// ECS services: (cluster, name, tags).
    pub services: Mutex<Vec<(String, String, Tags)>>,
    /// DescribeServices fails.
    pub fail_services: Mutex<bool>,
    pub calls: Mutex<Vec<(&'static str, usize)>>,
}

impl Ecs for &FakeEcs {
    async fn tasks(
        &self,
        cluster: &str,
        ids: &[String],
    ) -> Result<Vec<(String, EcsTask)>, AwsError> {
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
                ErrorKind::Throttled,
                "slow down",
            ));
        }
        Ok(self
            .tasks
            .iter()
            .filter(|(c, id, _)| c == cluster && ids.contains(id))
            .map(|(_, id, t)| (id.clone(), t.clone()))
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

impl FakeEcs {
    /// Creates (or re-tags) ECS service `name` of `cluster`.
    pub fn tag_service(&self, cluster: &str, name: &str, tags: &[(&str, &str)]) {
        let tags: BTreeMap<String, String> = tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut s = self.services.lock().unwrap();
        s.retain(|(c, n, _)| !(c == cluster && n == name));
        s.push((cluster.into(), name.into(), tags));
    }
}

impl EcsServices for &FakeEcs {
    /// One call per batch of 10, as the adapter makes them.
    async fn service_tags(&self, cluster: &str, names: &[String]) -> Result<ServiceTags, AwsError> {
        for chunk in names.chunks(SERVICES_BATCH) {
            self.calls
                .lock()
                .unwrap()
                .push(("DescribeServices", chunk.len()));
        }
        if *self.fail_services.lock().unwrap() {
            return Err(AwsError::new(
                "DescribeServices",
                ErrorKind::Throttled,
                "slow down",
            ));
        }
        Ok(self
            .services
            .lock()
            .unwrap()
            .iter()
            .filter(|(c, n, _)| c == cluster && names.contains(n))
            .map(|(_, n, t)| (n.clone(), t.clone()))
            .collect())
    }
}

impl Ec2 for &FakeEcs {
    async fn hosts(&self, ids: &[String]) -> Result<Vec<Host>, AwsError> {
        self.calls
            .lock()
            .unwrap()
            .push(("DescribeInstances", ids.len()));
        if *self.fail_ec2.lock().unwrap() {
            return Err(AwsError::new(
                "DescribeInstances",
                ErrorKind::Server,
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
