//! The plain data every stage shares: what Cloud Map registered ([`Instance`] and
//! its [`Attributes`]), what one discovery cycle knows ([`Snapshot`]), the facts
//! enrichment adds ([`TaskFacts`], [`Host`]), and the few rules more than one stage
//! needs: which tags make a service scraped ([`tags`]), the shard a key belongs to
//! ([`Shard`]), and the refresh clocks ([`clock`]).
//!
//! No AWS types and no import from any other module of the crate.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

mod attributes;
pub mod clock;
mod shard;
pub mod tags;

pub use attributes::{Attributes, Interner};
pub use shard::{Shard, ShardKey, ShardTarget};

/// Cloud Map instance attributes that ECS sets when it registers a task.
pub mod attr {
    pub const IPV4: &str = "AWS_INSTANCE_IPV4";
    pub const IPV6: &str = "AWS_INSTANCE_IPV6";
    pub const PORT: &str = "AWS_INSTANCE_PORT";
    pub const AZ: &str = "AVAILABILITY_ZONE";
    pub const ECS_CLUSTER: &str = "ECS_CLUSTER_NAME";
    pub const ECS_SERVICE: &str = "ECS_SERVICE_NAME";
    pub const ECS_TASK_FAMILY: &str = "ECS_TASK_DEFINITION_FAMILY";
}

/// One Cloud Map instance as discovered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// Instance id; ECS uses the task id.
    pub id: String,
    pub attributes: Attributes,
}

/// One Cloud Map service with its tags and its last known instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceData {
    pub namespace: String,
    pub service: String,
    /// Shared with discovery's cache: a snapshot costs no copy of them.
    pub tags: Arc<BTreeMap<String, String>>,
    pub instances: Arc<Vec<Instance>>,
    /// The ECS service whose tags describe the endpoints, when the Cloud Map
    /// service has no endpoint tag of its own (see [`ServiceData::endpoint_tags`]).
    pub ecs_service: Option<Arc<EcsService>>,
}

impl ServiceData {
    /// The tags the endpoints are read from: the ECS service's when there is one
    /// (discovery sets it only for a Cloud Map service without endpoint tags), else
    /// the Cloud Map service's.
    pub fn endpoint_tags(&self) -> &BTreeMap<String, String> {
        match &self.ecs_service {
            Some(e) => &e.tags,
            None => &self.tags,
        }
    }
}

/// An ECS service and its tags (DescribeServices).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EcsService {
    /// The cluster name, as the instances' `ECS_CLUSTER_NAME` gives it.
    pub cluster: String,
    pub name: String,
    pub tags: BTreeMap<String, String>,
}

/// A container port that a task's container binds on its host (bridge or host
/// network mode), as ECS reports it in the task's `networkBindings` (TCP only).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortBinding {
    pub container: Arc<str>,
    pub container_port: u16,
    pub host_port: u16,
}

/// The ECS and EC2 facts about one task that its labels show (see the enrich
/// module); strings are shared between tasks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskFacts {
    pub launch_type: Option<Arc<str>>,
    pub revision: Option<Arc<str>>,
    pub ec2_instance_id: Option<Arc<str>>,
    pub ec2_name: Option<Arc<str>>,
    pub ec2_instance_type: Option<Arc<str>>,
    /// The host ports its containers bind (DescribeTasks `networkBindings`). None:
    /// not known (the task was published without its ECS facts after the hold);
    /// empty: it binds none (awsvpc, Fargate), so every port is the task's own.
    pub bindings: Option<Arc<[PortBinding]>>,
}

/// An EC2 instance: what DescribeInstances says of it, and, in the hosts file, the
/// ECS cluster of the tasks seen on it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Host {
    pub instance_id: String,
    /// The `Name` tag.
    pub name: Option<String>,
    pub instance_type: Option<String>,
    pub availability_zone: Option<String>,
    pub private_ip: Option<String>,
    /// The ECS cluster of the tasks seen on it (None as EC2 describes it).
    pub cluster: Option<String>,
}

/// Everything one discovery cycle knows: the input of target building.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub services: Vec<ServiceData>,
    /// ECS/EC2 facts by task id (= Cloud Map instance id).
    pub tasks: Arc<BTreeMap<String, TaskFacts>>,
    /// Task ids held back until their facts are known.
    pub held: BTreeSet<String>,
    /// The AWS account of each service, when targets carry `aws_account_id` (the
    /// sidecar discovers in other accounts): runs over `services` in their order,
    /// each an account id and how many services in a row belong to it. Empty: no
    /// target carries an account.
    pub accounts: Vec<(Arc<str>, usize)>,
}

impl Snapshot {
    /// Each service with the account it was found in (None: targets carry no
    /// account).
    pub fn services_by_account(&self) -> impl Iterator<Item = (Option<&str>, &ServiceData)> {
        let mut runs = self
            .accounts
            .iter()
            .flat_map(|(id, n)| std::iter::repeat_n(Some(&**id), *n));
        self.services
            .iter()
            .map(move |s| (runs.next().flatten(), s))
    }

    /// The snapshot of several accounts: their services in the order given, the
    /// facts of all their tasks, every held task. Each part comes with its account
    /// id, or None when targets carry no account (then there is one part, returned
    /// as it is).
    pub fn merge(parts: Vec<(Option<Arc<str>>, Snapshot)>) -> Snapshot {
        if parts.len() == 1 && parts[0].0.is_none() {
            return parts.into_iter().next().map(|(_, s)| s).unwrap_or_default();
        }
        let mut out = Snapshot::default();
        let tasks = Arc::make_mut(&mut out.tasks);
        for (id, part) in parts {
            if let Some(id) = id {
                out.accounts.push((id, part.services.len()));
            }
            out.services.extend(part.services);
            tasks.extend(part.tasks.iter().map(|(k, v)| (k.clone(), v.clone())));
            out.held.extend(part.held);
        }
        out
    }
}

/// Cloud Map health filter for DiscoverInstances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HealthStatus {
    /// Only healthy instances.
    Healthy,
    /// Only unhealthy instances.
    Unhealthy,
    /// Every instance.
    All,
    /// Healthy instances, or every instance when none is healthy.
    HealthyOrElseAll,
}
