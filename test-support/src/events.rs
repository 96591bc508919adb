//! The ECS event stream on moto: an SQS queue that an EventBridge rule fills with
//! "ECS Task State Change" events, and the events ECS would send, put through
//! EventBridge (moto's ECS emits none).
//!
//! moto's EventBridge delivers to an SQS target at once, but its default delivery
//! drops the envelope's `account` field; the rule's target here has an input
//! template that rebuilds the envelope as AWS delivers it (AWS needs none).

use aws_sdk_eventbridge as eb;
use aws_sdk_sqs as sqs;

use crate::seeder::{REGION, sdk_config};

/// The account moto's default credentials are in.
const ACCOUNT: &str = "123456789012";

/// The envelope AWS delivers, rebuilt from moto's event (see the module doc).
const TEMPLATE: &str = r#"{"version": "0", "id": "<id>", "detail-type": "<detail-type>", "source": "<source>", "account": "<account>", "time": <time>, "region": "<region>", "resources": <resources>, "detail": <detail>}"#;

/// An SQS queue fed by an EventBridge rule for ECS task state changes.
pub struct EventQueue {
    pub url: String,
    pub arn: String,
    pub sqs: sqs::Client,
    pub events: eb::Client,
}

/// What a task state change says (the fields the sidecar reads, and a few more
/// that ECS always sends).
#[derive(Debug, Clone)]
pub struct TaskState<'a> {
    pub cluster: &'a str,
    pub task_id: &'a str,
    /// The ECS service that started it (`group` is then `service:NAME`).
    pub service: Option<&'a str>,
    pub last: &'a str,
    pub desired: &'a str,
    pub version: i64,
}

impl TaskState<'_> {
    /// The `detail` of the event ECS sends for this state (ECS developer guide,
    /// "Amazon ECS task state change events").
    pub fn detail(&self) -> serde_json::Value {
        let arn = |kind: &str, rest: &str| format!("arn:aws:ecs:{REGION}:{ACCOUNT}:{kind}/{rest}");
        let task_arn = arn("task", &format!("{}/{}", self.cluster, self.task_id));
        let group = match self.service {
            Some(s) => format!("service:{s}"),
            None => "family:web".to_string(),
        };
        serde_json::json!({
            "attachments": [],
            "attributes": [{"name": "ecs.cpu-architecture", "value": "x86_64"}],
            "availabilityZone": format!("{REGION}a"),
            "clusterArn": arn("cluster", self.cluster),
            "connectivity": "CONNECTED",
            "containers": [{
                "containerArn": arn("container", &format!("{}/{}/web", self.cluster, self.task_id)),
                "lastStatus": self.last,
                "name": "web",
                "image": "web:1",
                "taskArn": task_arn,
                "networkInterfaces": [],
                "cpu": "0"
            }],
            "cpu": "256",
            "createdAt": "2026-12-01T10:00:00.000Z",
            "desiredStatus": self.desired,
            "enableExecuteCommand": false,
            "group": group,
            "launchType": "EC2",
            "lastStatus": self.last,
            "memory": "512",
            "overrides": {"containerOverrides": [{"name": "web"}]},
            "startedBy": "ecs-svc/0123456789012345678",
            "taskArn": task_arn,
            "taskDefinitionArn": arn("task-definition", "web:1"),
            "updatedAt": "2026-12-01T10:00:01.000Z",
            "version": self.version
        })
    }
}

impl EventQueue {
    /// Creates queue `name` and a rule of that name whose target it is.
    pub async fn create(moto_url: &str, name: &str) -> EventQueue {
        let conf = sdk_config(moto_url).await;
        let sqs = sqs::Client::new(&conf);
        let events = eb::Client::new(&conf);
        let url = sqs
            .create_queue()
            .queue_name(name)
            .send()
            .await
            .expect("CreateQueue")
            .queue_url
            .expect("a queue URL");
        let arn = format!("arn:aws:sqs:{REGION}:{ACCOUNT}:{name}");
        let pattern = r#"{"source": ["aws.ecs", "aws.servicediscovery"], "detail-type": ["ECS Task State Change", "AWS API Call via CloudTrail"]}"#;
        events
            .put_rule()
            .name(name)
            .event_pattern(pattern)
            .send()
            .await
            .expect("PutRule");
        let paths = [
            "id",
            "detail-type",
            "source",
            "account",
            "time",
            "region",
            "resources",
            "detail",
        ];
        let mut transformer = eb::types::InputTransformer::builder().input_template(TEMPLATE);
        for p in paths {
            transformer = transformer.input_paths_map(p, format!("$.{p}"));
        }
        let target = eb::types::Target::builder()
            .id("sidecar")
            .arn(&arn)
            .input_transformer(transformer.build().unwrap())
            .build()
            .unwrap();
        let out = events
            .put_targets()
            .rule(name)
            .targets(target)
            .send()
            .await
            .expect("PutTargets");
        assert_eq!(out.failed_entry_count, 0, "{out:?}");
        EventQueue {
            url,
            arn,
            sqs,
            events,
        }
    }

    /// Puts the event ECS sends for `state` on the default bus.
    pub async fn task_state(&self, state: &TaskState<'_>) {
        self.put("aws.ecs", "ECS Task State Change", &state.detail())
            .await;
    }

    /// Puts one event on the default bus.
    pub async fn put(&self, source: &str, detail_type: &str, detail: &serde_json::Value) {
        let entry = eb::types::PutEventsRequestEntry::builder()
            .source(source)
            .detail_type(detail_type)
            .detail(detail.to_string())
            .build();
        let out = self
            .events
            .put_events()
            .entries(entry)
            .send()
            .await
            .expect("PutEvents");
        assert_eq!(out.failed_entry_count, 0, "{out:?}");
    }

    /// Sends a message straight to the queue (one that no rule would write).
    pub async fn send_raw(&self, body: &str) {
        self.sqs
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .send()
            .await
            .expect("SendMessage");
    }

    /// About how many messages are in the queue, visible or in flight.
    pub async fn messages(&self) -> u64 {
        use sqs::types::QueueAttributeName as A;
        let out = self
            .sqs
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(A::ApproximateNumberOfMessages)
            .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .expect("GetQueueAttributes");
        let attrs = out.attributes.unwrap_or_default();
        [
            A::ApproximateNumberOfMessages,
            A::ApproximateNumberOfMessagesNotVisible,
        ]
        .iter()
        .filter_map(|k| attrs.get(k)?.parse::<u64>().ok())
        .sum()
    }
}
