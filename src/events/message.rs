//! Reading one queue message: the EventBridge envelope (or an SNS notification
//! that wraps one) of an "ECS Task State Change" event, or of an "AWS API Call via
//! CloudTrail" event for Cloud Map's RegisterInstance / DeregisterInstance. Pure:
//! text in, an [`Event`] or the reason it is not one out.

use serde::Deserialize;
use serde_json::Value;

/// What a message said, as far as discovery cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The envelope's `id` (EventBridge's, the same on every delivery of it).
    pub id: String,
    /// The account the event comes from (`account`); None when the envelope has
    /// none.
    pub account: Option<String>,
    pub change: Change,
}

/// The change an event announces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// An ECS task changed state.
    Task(TaskChange),
    /// A Cloud Map instance was registered (`present`) or deregistered, as
    /// CloudTrail recorded the call.
    Instance {
        service_id: String,
        instance_id: String,
        present: bool,
    },
}

/// An "ECS Task State Change" event, as far as discovery cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskChange {
    /// The task id: the last part of the task ARN, and the Cloud Map instance id
    /// ECS registers the task under.
    pub task_id: String,
    /// The cluster's name (the last part of its ARN), as `ECS_CLUSTER_NAME` says it.
    pub cluster: String,
    /// The ECS service that started the task (`group` `service:NAME`), if one did.
    pub ecs_service: Option<String>,
    pub last_status: String,
    pub desired_status: String,
    /// ECS's version of the task (`detail.version`): it orders a task's events.
    pub version: i64,
}

/// Where a task stands for Cloud Map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Running: ECS registers it in Cloud Map (around now).
    Present,
    /// Stopping or stopped: ECS deregisters it.
    Absent,
    /// Still starting: nothing to look for yet.
    Nothing,
}

impl TaskChange {
    /// What Cloud Map should show for this task once ECS has acted.
    pub fn expect(&self) -> Expect {
        let stopping = matches!(
            self.last_status.as_str(),
            "DEACTIVATING" | "STOPPING" | "DEPROVISIONING" | "STOPPED" | "DELETED"
        );
        if stopping || self.desired_status == "STOPPED" {
            Expect::Absent
        } else if self.last_status == "RUNNING" {
            Expect::Present
        } else {
            Expect::Nothing
        }
    }
}

impl Event {
    /// What Cloud Map should show for the instance once the change is made.
    pub fn expect(&self) -> Expect {
        match &self.change {
            Change::Task(t) => t.expect(),
            Change::Instance { present: true, .. } => Expect::Present,
            Change::Instance { present: false, .. } => Expect::Absent,
        }
    }

    /// The `kind` label of the event.
    pub fn kind(&self) -> &'static str {
        match self.change {
            Change::Task(_) => KIND_TASK,
            Change::Instance { .. } => KIND_CLOUDMAP,
        }
    }
}

/// `kind` label values.
pub const KIND_TASK: &str = "task_state_change";
pub const KIND_CLOUDMAP: &str = "cloudmap_api_call";
pub const KIND_OTHER: &str = "other";
pub const KIND_MALFORMED: &str = "malformed";

/// Why a message is no event to act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotAnEvent {
    /// Not the JSON of an EventBridge envelope, or one that lacks what its
    /// detail-type promises.
    #[error("malformed: {0}")]
    Malformed(String),
    /// A well-formed event of another kind (another detail-type, or a CloudTrail
    /// record of another call).
    #[error("not an event the sidecar follows ({0})")]
    Other(String),
}

impl NotAnEvent {
    /// The `kind` label of the message.
    pub fn kind(&self) -> &'static str {
        match self {
            NotAnEvent::Malformed(_) => KIND_MALFORMED,
            NotAnEvent::Other(_) => KIND_OTHER,
        }
    }
}

#[derive(Deserialize)]
struct Envelope {
    id: Option<String>,
    #[serde(rename = "detail-type")]
    detail_type: String,
    source: Option<String>,
    account: Option<String>,
    detail: Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TaskDetail {
    task_arn: String,
    cluster_arn: String,
    group: Option<String>,
    last_status: String,
    desired_status: Option<String>,
    version: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CloudTrailDetail {
    event_source: Option<String>,
    event_name: String,
    request_parameters: Option<InstanceParameters>,
    error_code: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InstanceParameters {
    service_id: Option<String>,
    instance_id: Option<String>,
}

/// An SNS notification (a topic fanned out to the queue without raw delivery).
#[derive(Deserialize)]
struct Notification {
    #[serde(rename = "Type")]
    kind: String,
    #[serde(rename = "Message")]
    message: String,
}

const TASK_STATE_CHANGE: &str = "ECS Task State Change";
const CLOUDTRAIL_CALL: &str = "AWS API Call via CloudTrail";

fn malformed(what: impl std::fmt::Display) -> NotAnEvent {
    NotAnEvent::Malformed(what.to_string())
}

/// Reads one message body.
pub fn parse(body: &str) -> Result<Event, NotAnEvent> {
    let value: Value =
        serde_json::from_str(body).map_err(|e| malformed(format!("not JSON ({e})")))?;
    let value = match serde_json::from_value::<Notification>(value.clone()) {
        Ok(n) if n.kind == "Notification" => serde_json::from_str(&n.message)
            .map_err(|e| malformed(format!("SNS message is not JSON ({e})")))?,
        _ => value,
    };
    let envelope: Envelope = serde_json::from_value(value)
        .map_err(|e| malformed(format!("not an EventBridge event ({e})")))?;
    let change = match envelope.detail_type.as_str() {
        TASK_STATE_CHANGE => Change::Task(task_change(envelope.detail)?),
        CLOUDTRAIL_CALL => instance_change(envelope.detail)?,
        other => {
            let source = envelope.source.as_deref().unwrap_or("?");
            return Err(NotAnEvent::Other(format!("{source}: {other}")));
        }
    };
    Ok(Event {
        id: envelope.id.unwrap_or_default(),
        account: envelope.account.filter(|a| !a.is_empty()),
        change,
    })
}

/// The last `/`-separated part of an ARN (a task's or a cluster's name or id).
fn last_part(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

fn task_change(detail: Value) -> Result<TaskChange, NotAnEvent> {
    let d: TaskDetail = serde_json::from_value(detail)
        .map_err(|e| malformed(format!("{TASK_STATE_CHANGE} without its fields ({e})")))?;
    let task_id = last_part(&d.task_arn);
    let cluster = last_part(&d.cluster_arn);
    if !d.task_arn.contains(":task/") || task_id.is_empty() || cluster.is_empty() {
        return Err(malformed(format!(
            "{TASK_STATE_CHANGE} with task ARN {:?} and cluster ARN {:?}",
            d.task_arn, d.cluster_arn
        )));
    }
    let ecs_service = d
        .group
        .as_deref()
        .and_then(|g| g.strip_prefix("service:"))
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    Ok(TaskChange {
        task_id: task_id.to_string(),
        cluster: cluster.to_string(),
        ecs_service,
        desired_status: d.desired_status.unwrap_or_default(),
        last_status: d.last_status,
        version: d.version,
    })
}

fn instance_change(detail: Value) -> Result<Change, NotAnEvent> {
    let d: CloudTrailDetail = serde_json::from_value(detail)
        .map_err(|e| malformed(format!("{CLOUDTRAIL_CALL} without its fields ({e})")))?;
    let present = match d.event_name.as_str() {
        "RegisterInstance" => true,
        "DeregisterInstance" => false,
        other => return Err(NotAnEvent::Other(format!("CloudTrail: {other}"))),
    };
    if d.event_source
        .as_deref()
        .is_some_and(|s| s != "servicediscovery.amazonaws.com")
    {
        return Err(NotAnEvent::Other(format!("CloudTrail: {}", d.event_name)));
    }
    if let Some(code) = d.error_code {
        return Err(NotAnEvent::Other(format!(
            "CloudTrail: {} failed ({code})",
            d.event_name
        )));
    }
    let p = d
        .request_parameters
        .ok_or_else(|| malformed("CloudTrail record without requestParameters"))?;
    match (p.service_id, p.instance_id) {
        (Some(service_id), Some(instance_id))
            if !service_id.is_empty() && !instance_id.is_empty() =>
        {
            Ok(Change::Instance {
                service_id,
                instance_id,
                present,
            })
        }
        _ => Err(malformed(format!(
            "{} record without ServiceId or InstanceId",
            d.event_name
        ))),
    }
}
