//! Each IAM action the sidecar uses, exercised through the same adapter methods the
//! sidecar calls (so this list cannot drift from what it really calls), with
//! harmless arguments: names or ids that exist when the account has some, else
//! made-up ones (a not-found answer then shows that the call itself is allowed: IAM
//! is evaluated before the resource is looked up).

use std::collections::HashMap;

use super::CheckOptions;
use super::report::{Row, Status};
use crate::aws::{AwsError, CloudMap, Ec2, Ecs, ErrorKind, Queue};
use crate::model::HealthStatus;

/// Every Cloud Map action the sidecar uses, in the order they are checked.
pub const CLOUDMAP_ACTIONS: [&str; 6] = [
    "servicediscovery:ListNamespaces",
    "servicediscovery:ListServices",
    "servicediscovery:GetService",
    "servicediscovery:ListTagsForResource",
    "servicediscovery:DiscoverInstancesRevision",
    "servicediscovery:DiscoverInstances",
];

/// The ECS and EC2 actions of ECS service tags and of the enrichment, by what is
/// switched on.
pub fn enrichment_actions(options: &CheckOptions) -> Vec<&'static str> {
    let mut actions = Vec::new();
    if options.ecs_service_tags {
        actions.push("ecs:DescribeServices");
    }
    if options.ecs_enrichment {
        actions.push("ecs:DescribeTasks");
        if options.ec2_enrichment {
            actions.extend(["ecs:DescribeContainerInstances", "ec2:DescribeInstances"]);
        }
    }
    actions
}

/// A cluster, service, task, container instance and EC2 instance that do not exist.
const NO_CLUSTER: &str = "cloudmap-sd-check";
const NO_SERVICE: &str = "cloudmap-sd-check";
const NO_TASK: &str = "00000000000000000000000000000000";
const NO_CONTAINER_INSTANCE: &str = "00000000-0000-0000-0000-000000000000";
const NO_EC2_INSTANCE: &str = "i-00000000000000000";
/// GetService calls spent looking for a real service to try the calls on.
const LOOKUPS: usize = 10;

/// What a permission check calls with.
#[derive(Debug, Clone)]
pub struct Subject {
    pub namespace: String,
    pub service_name: String,
    pub service_id: String,
    pub service_arn: String,
    /// A service that exists (else made-up names, where "not found" proves the
    /// call was allowed).
    pub real: bool,
}

/// Who a denied action must be granted to, in the sidecar's own account.
pub const TASK_ROLE: &str = "the task role";

/// The Cloud Map rows: every action in [`CLOUDMAP_ACTIONS`], on `subject`;
/// `principal` is who must be granted a denied action.
pub async fn cloudmap_rows<C: CloudMap>(cm: &C, subject: &Subject, principal: &str) -> Vec<Row> {
    let s = subject;
    let results = [
        cm.namespaces().await.map(drop),
        cm.services_page(None).await.map(drop),
        cm.service_namespace(&s.service_id).await.map(drop),
        cm.tags(&s.service_arn).await.map(drop),
        cm.instances_revision(&s.namespace, &s.service_name, None)
            .await
            .map(drop),
        cm.instances(&s.namespace, &s.service_name, None, HealthStatus::All)
            .await
            .map(drop),
    ];
    CLOUDMAP_ACTIONS
        .iter()
        .zip(results)
        .map(|(action, r)| subject_row_by(action, s, r, principal))
        .collect()
}

/// The queue actions of `--events-queue-url`, in the order they are checked.
pub const QUEUE_ACTIONS: [&str; 3] = [
    "sqs:GetQueueAttributes",
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
];

/// A receipt handle no queue ever gave.
const NO_RECEIPT: &str = "cloudmap-sd-check";

/// The queue rows, through the consumer's own methods: its attributes (the
/// messages waiting), a receive that waits for nothing and hides nothing (a
/// message it gets stays visible to the sidecar), and a delete of a made-up
/// receipt handle (refused one by one, past authorisation). `principal` is who
/// must be granted a denied action.
pub async fn queue_rows<Q: Queue>(queue: &Q, principal: &str) -> Vec<Row> {
    let url = queue.url();
    let waiting = queue.waiting().await;
    if waiting
        .as_ref()
        .is_err_and(|e| e.kind == ErrorKind::NotFound)
    {
        let detail = format!("no such queue: {url} (--events-queue-url)");
        return QUEUE_ACTIONS
            .iter()
            .map(|a| Row::new(*a, Status::Fail, detail.clone()))
            .collect();
    }
    let mut first = permission_row_by(
        QUEUE_ACTIONS[0],
        waiting.as_ref().map(drop).map_err(Clone::clone),
        principal,
    );
    if let Ok(n) = waiting {
        first.detail = format!("allowed ({n} messages waiting in {url})");
    }
    let received = queue
        .receive(
            std::time::Duration::ZERO,
            1,
            Some(std::time::Duration::ZERO),
        )
        .await;
    let deleted = queue.delete(&[NO_RECEIPT.to_string()]).await;
    vec![
        first,
        permission_row_by(QUEUE_ACTIONS[1], received.map(drop), principal),
        permission_row_by(QUEUE_ACTIONS[2], past_auth(deleted.map(drop)), principal),
    ]
}

/// A missing cluster or task is an answer past authorisation: allowed.
fn past_auth(r: Result<(), AwsError>) -> Result<(), AwsError> {
    match r {
        Err(e) if matches!(e.kind, ErrorKind::Client) => Ok(()),
        other => other,
    }
}

/// The ECS and EC2 rows: describing an ECS service (ECS service tags), a task and a
/// container instance that do not exist, an instance that does not exist, and (for
/// a hosts file by cluster) listing a cluster's container instances. `principal` is
/// who must be granted a denied action.
pub async fn enrichment_rows<E: Ecs, X: Ec2>(
    ecs: &E,
    ec2: &X,
    options: &CheckOptions,
    principal: &str,
) -> Vec<Row> {
    let mut rows = Vec::new();
    if options.ecs_service_tags {
        let services = ecs
            .service_tags(NO_CLUSTER, &[NO_SERVICE.to_string()])
            .await;
        rows.push(permission_row_by(
            "ecs:DescribeServices",
            past_auth(services.map(drop)),
            principal,
        ));
    }
    if !options.ecs_enrichment {
        return rows;
    }
    let tasks = ecs.tasks(NO_CLUSTER, &[NO_TASK.to_string()]).await;
    rows.push(permission_row_by(
        "ecs:DescribeTasks",
        past_auth(tasks.map(drop)),
        principal,
    ));
    if options.ec2_enrichment {
        let cis = ecs
            .container_instances(NO_CLUSTER, &[NO_CONTAINER_INSTANCE.to_string()])
            .await;
        rows.push(permission_row_by(
            "ecs:DescribeContainerInstances",
            past_auth(cis.map(drop)),
            principal,
        ));
        let hosts = ec2.hosts(&[NO_EC2_INSTANCE.to_string()]).await;
        rows.push(permission_row_by(
            "ec2:DescribeInstances",
            hosts.map(drop),
            principal,
        ));
    } else {
        for action in ["ecs:DescribeContainerInstances", "ec2:DescribeInstances"] {
            rows.push(Row::new(action, Status::Skip, "--ec2-enrichment false"));
        }
    }
    if options.hosts_by_cluster {
        let listed = ecs.list_container_instances(NO_CLUSTER).await;
        rows.push(permission_row_by(
            "ecs:ListContainerInstances",
            past_auth(listed.map(drop)),
            principal,
        ));
    }
    rows
}

/// The verdict on one permission call made on `subject`: says which service it used,
/// and turns a denial on made-up names for an action a policy may scope to real
/// resources into a warning (the account has no service in the selection to try).
pub fn subject_row(action: &str, subject: &Subject, r: Result<(), AwsError>) -> Row {
    subject_row_by(action, subject, r, TASK_ROLE)
}

/// [`subject_row`], a denied action to be granted to `principal`.
pub fn subject_row_by(
    action: &str,
    subject: &Subject,
    r: Result<(), AwsError>,
    principal: &str,
) -> Row {
    let scoped = !matches!(
        action,
        "servicediscovery:ListNamespaces" | "servicediscovery:ListServices"
    );
    let mut row = permission_row_by(action, r, principal);
    if !scoped {
        return row;
    }
    let on = format!("{}/{}", subject.namespace, subject.service_name);
    if subject.real {
        row.detail = format!("{} (tried on {on})", row.detail);
    } else if row.status == Status::Fail && row.detail.starts_with("denied") {
        row.status = Status::Warn;
        row.detail = format!(
            "{} - tried on made-up names ({on}): no Cloud Map service in the selected \
             namespaces to try; a policy scoped to real services denies this. Run check \
             again once a service exists",
            row.detail
        );
    }
    row
}

/// The verdict on one permission call.
pub fn permission_row(action: &str, r: Result<(), AwsError>) -> Row {
    permission_row_by(action, r, TASK_ROLE)
}

/// [`permission_row`], a denied action to be granted to `principal`.
pub fn permission_row_by(action: &str, r: Result<(), AwsError>, principal: &str) -> Row {
    match r {
        Ok(()) => Row::new(action, Status::Pass, "allowed"),
        Err(e) if e.kind == ErrorKind::NotFound => Row::new(
            action,
            Status::Pass,
            "allowed (the test resource does not exist, which is fine)",
        ),
        // Refused credentials or an endpoint out of reach: the line `once` prints.
        Err(e) if e.cause.is_some() => Row::new(action, Status::Fail, e.to_string()),
        Err(e) if e.kind == ErrorKind::AccessDenied => Row::new(
            action,
            Status::Fail,
            format!("denied: grant {action} to {principal} ({})", e.message),
        ),
        Err(e) => Row::new(action, Status::Fail, format!("{} ({})", e.message, e.kind)),
    }
}

/// Picks real names and ids to call with: a service of the first selected namespace
/// that has one (a policy may allow DiscoverInstances only for the selected
/// namespaces), else of any namespace when none is selected; made-up names when
/// there is no such service among the first listed ones.
pub async fn subject<C: CloudMap>(cm: &C, namespaces: &[String], region: &str) -> Subject {
    let made_up = Subject {
        namespace: namespaces
            .first()
            .cloned()
            .unwrap_or_else(|| NO_CLUSTER.into()),
        service_name: NO_CLUSTER.into(),
        service_id: "srv-cloudmapsdcheck0".into(),
        service_arn: format!(
            "arn:aws:servicediscovery:{region}:000000000000:service/srv-cloudmapsdcheck0"
        ),
        real: false,
    };
    let (Ok(all), Ok(page)) = (cm.namespaces().await, cm.services_page(None).await) else {
        return made_up;
    };
    let names: HashMap<String, String> = all.into_iter().map(|n| (n.id, n.name)).collect();
    // The rank of a namespace: its place among the selected ones (any: 0).
    let rank = |name: &str| match namespaces.is_empty() {
        true => Some(0),
        false => namespaces.iter().position(|n| n == name),
    };
    let mut best: Option<(usize, Subject)> = None;
    for svc in page.services.into_iter().take(LOOKUPS) {
        let Ok(ns_id) = cm.service_namespace(&svc.id).await else {
            continue;
        };
        let Some(ns) = names.get(&ns_id) else {
            continue;
        };
        let Some(r) = rank(ns) else { continue };
        if best.as_ref().is_none_or(|(b, _)| r < *b) {
            let found = Subject {
                namespace: ns.clone(),
                service_name: svc.name,
                service_id: svc.id,
                service_arn: svc.arn,
                real: true,
            };
            best = Some((r, found));
        }
        if r == 0 {
            break;
        }
    }
    best.map_or(made_up, |(_, s)| s)
}
