//! AWS behind narrow, domain-shaped traits ([`CloudMap`], [`Ecs`], [`EcsServices`],
//! [`Ec2`]). The real
//! adapters own pagination, batch limits, error classification ([`error`]) and call
//! counting ([`calls`]); discovery and enrichment see only plain structs. `fakes`
//! (built for unit tests only) holds hand-written adapters; [`sdk`] loads the SDK
//! configuration once and fixes Cloud Map's host prefix on custom endpoints;
//! [`accounts`] assumes the roles of other accounts.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use crate::model::{HealthStatus, Host, Instance, PortBinding};

pub mod accounts;
pub mod calls;
pub mod cloudmap;
pub mod ec2;
pub mod ecs;
pub mod error;
#[cfg(test)]
pub mod fakes;
pub mod sdk;

pub use calls::{AwsMetrics, by_deadline};
pub use error::{AwsError, ErrorKind, classify};

/// Largest batch DescribeTasks, DescribeContainerInstances (and our
/// DescribeInstances-by-id calls) take.
pub const BATCH: usize = 100;

/// Largest batch DescribeServices takes (services of one cluster).
pub const SERVICES_BATCH: usize = 10;

/// A Cloud Map namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    pub id: String,
    pub name: String,
}

/// A Cloud Map service as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSummary {
    pub id: String,
    pub arn: String,
    pub name: String,
    /// The account that owns the service's namespace (`ResourceOwner`), when
    /// Cloud Map says: another account's for a namespace shared through AWS RAM.
    pub owner: Option<String>,
}

/// One ListServices page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServicePage {
    pub services: Vec<ServiceSummary>,
    /// The token of the next page; None on the last.
    pub next: Option<String>,
}

/// What discovery needs from AWS Cloud Map.
pub trait CloudMap: Send + Sync {
    /// Every namespace in the Region, all pages.
    fn namespaces(&self) -> impl Future<Output = Result<Vec<Namespace>, AwsError>> + Send;
    /// One page of the services in the Region: the first for `None`, else the one
    /// the token of the page before names.
    fn services_page(
        &self,
        token: Option<String>,
    ) -> impl Future<Output = Result<ServicePage, AwsError>> + Send;
    /// The namespace id of a service (it never changes, so callers cache it).
    fn service_namespace(
        &self,
        service_id: &str,
    ) -> impl Future<Output = Result<String, AwsError>> + Send;
    /// A service's tags.
    fn tags(
        &self,
        service_arn: &str,
    ) -> impl Future<Output = Result<BTreeMap<String, String>, AwsError>> + Send;
    /// The instances revision of a service: changes on register and deregister.
    /// `owner`: the account that owns the namespace, as listed (needed for a
    /// namespace another account shares).
    fn instances_revision(
        &self,
        namespace: &str,
        service: &str,
        owner: Option<&str>,
    ) -> impl Future<Output = Result<i64, AwsError>> + Send;
    /// A service's instances, up to the Cloud Map quota of 1000 per service.
    /// `owner` as for [`CloudMap::instances_revision`].
    fn instances(
        &self,
        namespace: &str,
        service: &str,
        owner: Option<&str>,
        health: HealthStatus,
    ) -> impl Future<Output = Result<Vec<Instance>, AwsError>> + Send;
}

/// What ECS says of one task, as far as labels need it: facts that never change
/// during the task's life.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EcsTask {
    /// `EC2`, `FARGATE` or `EXTERNAL`.
    pub launch_type: Option<Arc<str>>,
    /// Revision of the task definition.
    pub revision: Option<Arc<str>>,
    pub container_instance_arn: Option<Arc<str>>,
    /// The TCP host ports its containers bind (`networkBindings`; none in awsvpc).
    pub bindings: Arc<[PortBinding]>,
}

/// What enrichment needs from Amazon ECS. An adapter is cheap to clone: discovery
/// holds one for [`EcsServices`] too.
pub trait Ecs: EcsServices + Clone + Send + Sync {
    /// The tasks of one cluster that ECS knows, by task id (the last part of the
    /// task ARN, which is the Cloud Map instance id). Any number of ids: the adapter
    /// batches.
    fn tasks(
        &self,
        cluster: &str,
        task_ids: &[String],
    ) -> impl Future<Output = Result<Vec<(String, EcsTask)>, AwsError>> + Send;
    /// EC2 instance id of each container instance ARN of one cluster.
    fn container_instances(
        &self,
        cluster: &str,
        arns: &[String],
    ) -> impl Future<Output = Result<Vec<(String, String)>, AwsError>> + Send;
    /// The ARNs of the container instances registered in one cluster (every state
    /// but INACTIVE), all pages. A cluster that does not exist has none.
    fn list_container_instances(
        &self,
        cluster: &str,
    ) -> impl Future<Output = Result<Vec<String>, AwsError>> + Send;
}

/// Tags by key.
pub type Tags = BTreeMap<String, String>;

/// ECS services (by name) and their tags.
pub type ServiceTags = Vec<(String, Tags)>;

/// What discovery needs from Amazon ECS: the tags of ECS services, for Cloud Map
/// services that have no endpoint tags of their own.
pub trait EcsServices: Send + Sync {
    /// The tags of the services of one cluster that exist, by service name. Any
    /// number of names: the adapter batches. A cluster that does not exist has none.
    fn service_tags(
        &self,
        cluster: &str,
        services: &[String],
    ) -> impl Future<Output = Result<ServiceTags, AwsError>> + Send;
}

/// No ECS client: discovery without ECS service tags.
#[derive(Debug, Clone, Copy)]
pub enum NoEcs {}

impl EcsServices for NoEcs {
    async fn service_tags(
        &self,
        _cluster: &str,
        _services: &[String],
    ) -> Result<ServiceTags, AwsError> {
        match *self {}
    }
}

/// What enrichment needs from Amazon EC2.
pub trait Ec2: Send + Sync {
    /// The instances with these ids that exist. Any number of ids: the adapter batches.
    fn hosts(&self, ids: &[String]) -> impl Future<Output = Result<Vec<Host>, AwsError>> + Send;
    /// Running instances with tag `key` = `value`, all pages.
    fn hosts_tagged(
        &self,
        key: &str,
        value: &str,
    ) -> impl Future<Output = Result<Vec<Host>, AwsError>> + Send;
}

/// The three adapters the sidecar uses.
pub struct Clients<C, E, X> {
    pub cloudmap: C,
    pub ecs: E,
    pub ec2: X,
}

/// The adapters of one account the sidecar discovers in.
pub struct AccountClients<C, E, X> {
    /// The account id, when targets carry it (some role is given); None: the
    /// sidecar's own account, and targets carry no account.
    pub id: Option<Arc<str>>,
    /// The role assumed into the account; None: the sidecar's own credentials.
    pub role: Option<Arc<accounts::RoleSession>>,
    pub clients: Clients<C, E, X>,
}

/// Every account the sidecar discovers in, in order (the own account first).
pub struct Accounts<C, E, X>(pub Vec<AccountClients<C, E, X>>);

impl<C, E, X> From<Clients<C, E, X>> for Accounts<C, E, X> {
    /// The sidecar's own account alone, unlabelled.
    fn from(clients: Clients<C, E, X>) -> Self {
        Accounts(vec![AccountClients {
            id: None,
            role: None,
            clients,
        }])
    }
}
