//! The event stream's pure parts and its consumer against the hand-written queue:
//! real-shaped events read, malformed ones refused with a reason, duplicates and
//! out-of-order events placed, each message counted and deleted when handled.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::consumer::Sorter;
use super::message::{Change, Event, Expect, NotAnEvent, parse};
use super::*;
use crate::aws::fakes::FakeQueue;
use crate::aws::{ErrorKind, QueueMessage};

const TASK: &str = "0f6e3b2a9c1d4e5f8a7b6c5d4e3f2a1b";

/// An "ECS Task State Change" event as EventBridge delivers it to SQS (the shape
/// of the ECS developer guide's example, trimmed of fields the sidecar ignores).
fn task_event(id: &str, last: &str, desired: &str, version: i64) -> String {
    serde_json::json!({
        "version": "0",
        "id": id,
        "detail-type": "ECS Task State Change",
        "source": "aws.ecs",
        "account": "111122223333",
        "time": "2026-11-30T10:00:00Z",
        "region": "us-east-1",
        "resources": [format!("arn:aws:ecs:us-east-1:111122223333:task/prod/{TASK}")],
        "detail": {
            "attachments": [],
            "availabilityZone": "us-east-1a",
            "clusterArn": "arn:aws:ecs:us-east-1:111122223333:cluster/prod",
            "containers": [{
                "containerArn": "arn:aws:ecs:us-east-1:111122223333:container/prod/x/y",
                "lastStatus": last,
                "name": "web",
                "taskArn": format!("arn:aws:ecs:us-east-1:111122223333:task/prod/{TASK}"),
                "networkInterfaces": [{"privateIpv4Address": "10.0.0.7"}]
            }],
            "createdAt": "2026-11-30T09:59:50.000Z",
            "launchType": "FARGATE",
            "cpu": "256",
            "memory": "512",
            "desiredStatus": desired,
            "group": "service:web",
            "lastStatus": last,
            "overrides": {"containerOverrides": [{"name": "web"}]},
            "startedBy": "ecs-svc/1234567890123456789",
            "taskArn": format!("arn:aws:ecs:us-east-1:111122223333:task/prod/{TASK}"),
            "taskDefinitionArn": "arn:aws:ecs:us-east-1:111122223333:task-definition/web:3",
            "updatedAt": "2026-11-30T10:00:00.000Z",
            "version": version
        }
    })
    .to_string()
}

fn cloudtrail_event(name: &str) -> String {
    serde_json::json!({
        "version": "0",
        "id": "ct-1",
        "detail-type": "AWS API Call via CloudTrail",
        "source": "aws.servicediscovery",
        "account": "111122223333",
        "region": "us-east-1",
        "detail": {
            "eventSource": "servicediscovery.amazonaws.com",
            "eventName": name,
            "requestParameters": {"ServiceId": "srv-abc", "InstanceId": TASK}
        }
    })
    .to_string()
}

#[test]
fn a_running_task_is_read_with_its_cluster_service_and_version() {
    let e = parse(&task_event("e1", "RUNNING", "RUNNING", 4)).unwrap();
    assert_eq!(e.id, "e1");
    assert_eq!(e.account.as_deref(), Some("111122223333"));
    assert_eq!(e.kind(), "task_state_change");
    let Change::Task(t) = &e.change else {
        panic!("{e:?}")
    };
    assert_eq!(t.task_id, TASK);
    assert_eq!(t.cluster, "prod");
    assert_eq!(t.ecs_service.as_deref(), Some("web"));
    assert_eq!(t.version, 4);
    assert_eq!(e.expect(), Expect::Present);
}

#[test]
fn stopping_and_stopped_tasks_are_to_be_gone_and_starting_ones_are_nothing_yet() {
    for (last, desired, want) in [
        ("STOPPED", "STOPPED", Expect::Absent),
        ("DEACTIVATING", "STOPPED", Expect::Absent),
        ("RUNNING", "STOPPED", Expect::Absent),
        ("PENDING", "RUNNING", Expect::Nothing),
        ("PROVISIONING", "RUNNING", Expect::Nothing),
        ("RUNNING", "RUNNING", Expect::Present),
    ] {
        let e = parse(&task_event("e", last, desired, 1)).unwrap();
        assert_eq!(e.expect(), want, "{last}/{desired}");
    }
}

#[test]
fn a_task_of_the_old_arn_format_and_without_a_service() {
    let body = task_event("e", "RUNNING", "RUNNING", 2)
        .replace(
            &format!("task/prod/{TASK}"),
            "task/b99d40b3-5176-4f71-9a52-9dbd6f1cebef",
        )
        .replace("service:web", "family:web");
    let e = parse(&body).unwrap();
    let Change::Task(t) = e.change else { panic!() };
    assert_eq!(t.task_id, "b99d40b3-5176-4f71-9a52-9dbd6f1cebef");
    assert_eq!(
        t.ecs_service, None,
        "only service:NAME names an ECS service"
    );
}

#[test]
fn cloudtrail_records_of_cloudmap_calls_name_the_service_and_instance() {
    let e = parse(&cloudtrail_event("RegisterInstance")).unwrap();
    assert_eq!(
        e.change,
        Change::Instance {
            service_id: "srv-abc".into(),
            instance_id: TASK.into(),
            present: true
        }
    );
    assert_eq!(e.kind(), "cloudmap_api_call");
    let e = parse(&cloudtrail_event("DeregisterInstance")).unwrap();
    assert_eq!(e.expect(), Expect::Absent);
    assert!(matches!(
        parse(&cloudtrail_event("CreateService")),
        Err(NotAnEvent::Other(_))
    ));
}

#[test]
fn an_event_wrapped_in_an_sns_notification_is_read() {
    let inner = task_event("e9", "RUNNING", "RUNNING", 1);
    let body =
        serde_json::json!({"Type": "Notification", "MessageId": "m", "Message": inner}).to_string();
    assert_eq!(parse(&body).unwrap().id, "e9");
}

#[test]
fn malformed_messages_say_why_and_other_events_are_other() {
    let cases = [
        ("not json at all", "not JSON"),
        ("{}", "not an EventBridge event"),
        (
            r#"{"detail-type":"ECS Task State Change","detail":{"taskArn":"x"}}"#,
            "without its fields",
        ),
        (
            r#"{"detail-type":"ECS Task State Change","detail":{"taskArn":"arn:aws:ecs:r:1:cluster/x","clusterArn":"c","lastStatus":"RUNNING","version":1}}"#,
            "task ARN",
        ),
        (
            r#"{"detail-type":"AWS API Call via CloudTrail","detail":{"eventName":"RegisterInstance","requestParameters":{}}}"#,
            "without ServiceId",
        ),
    ];
    for (body, why) in cases {
        match parse(body) {
            Err(NotAnEvent::Malformed(m)) => assert!(m.contains(why), "{body}: {m}"),
            other => panic!("{body}: {other:?}"),
        }
    }
    let other =
        r#"{"detail-type":"ECS Container Instance State Change","source":"aws.ecs","detail":{}}"#;
    assert!(matches!(parse(other), Err(NotAnEvent::Other(_))));
}

fn event(id: &str, version: i64) -> Event {
    parse(&task_event(id, "RUNNING", "RUNNING", version)).unwrap()
}

#[test]
fn duplicates_and_older_versions_change_nothing() {
    let now = Instant::now();
    let mut seen = Seen::new(Duration::from_secs(3600));
    assert_eq!(seen.note(&event("a", 2), now), Order::New);
    assert_eq!(seen.note(&event("a", 2), now), Order::Duplicate, "same id");
    assert_eq!(
        seen.note(&event("b", 2), now),
        Order::Duplicate,
        "same task version, another delivery id"
    );
    assert_eq!(seen.note(&event("c", 1), now), Order::OutOfOrder);
    assert_eq!(seen.note(&event("d", 5), now), Order::New);
    assert_eq!(seen.note(&event("e", 3), now), Order::OutOfOrder);
}

#[test]
fn what_is_seen_is_forgotten_after_a_while() {
    let now = Instant::now();
    let mut seen = Seen::new(Duration::from_secs(60));
    seen.note(&event("a", 2), now);
    assert_eq!(seen.len(), 2);
    let later = now + Duration::from_secs(120);
    assert_eq!(seen.note(&event("b", 1), later), Order::New, "forgotten");
    assert_eq!(seen.len(), 2, "only the new event's entries are left");
}

fn message(n: usize, body: String) -> QueueMessage {
    QueueMessage {
        id: format!("m{n}"),
        receipt: format!("r{n}"),
        body,
    }
}

fn exposition(metrics: &EventMetrics) -> String {
    let mut registry = Registry::with_prefix("cloudmap_sd");
    metrics.register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    text
}

#[test]
fn the_sorter_hands_on_what_to_act_on_and_deletes_the_rest() {
    let metrics = Arc::new(EventMetrics::default());
    let mut sorter = Sorter::new(Duration::from_secs(3600), metrics.clone());
    let batch = vec![
        message(0, task_event("a", "PENDING", "RUNNING", 1)),
        message(1, task_event("b", "RUNNING", "RUNNING", 3)),
        message(2, task_event("b", "RUNNING", "RUNNING", 3)),
        message(3, task_event("c", "RUNNING", "RUNNING", 2)),
        message(4, "{not json".to_string()),
        message(5, task_event("d", "STOPPED", "STOPPED", 5)),
    ];
    let (touches, deleted) = sorter.sort(batch, Instant::now());
    assert_eq!(deleted, ["r0", "r2", "r3", "r4"]);
    let got: Vec<(&str, bool)> = touches
        .iter()
        .map(|t| (t.receipt.as_str(), t.present))
        .collect();
    assert_eq!(got, [("r1", true), ("r5", false)]);
    assert_eq!(touches[0].instance(), TASK);
    assert_eq!(
        touches[0].target,
        Target::Task {
            task_id: TASK.into(),
            cluster: "prod".into(),
            ecs_service: Some("web".into())
        }
    );
    let text = exposition(&metrics);
    for line in [
        r#"cloudmap_sd_events_received_total{kind="task_state_change",outcome="ignored"} 1"#,
        r#"cloudmap_sd_events_received_total{kind="task_state_change",outcome="duplicate"} 1"#,
        r#"cloudmap_sd_events_received_total{kind="task_state_change",outcome="out_of_order"} 1"#,
        r#"cloudmap_sd_events_received_total{kind="malformed",outcome="malformed"} 1"#,
    ] {
        assert!(text.contains(line), "{line} not in\n{text}");
    }
}

#[tokio::test]
async fn the_consumer_feeds_the_loop_and_deletes_what_it_handled() {
    let queue = Arc::new(FakeQueue::default());
    let metrics = Arc::new(EventMetrics::default());
    let shutdown = CancellationToken::new();
    let mut options = EventsOptions::new("https://sqs.fake/1/q");
    options.wait = Duration::from_millis(200);
    let mut feed = spawn(queue.clone(), &options, metrics.clone(), shutdown.clone());
    queue.send("garbage");
    let receipt = queue.send(&task_event("a", "RUNNING", "RUNNING", 1));
    let batch = tokio::time::timeout(Duration::from_secs(5), feed.touches.recv())
        .await
        .expect("a touch")
        .unwrap();
    assert_eq!(batch.len(), 1);
    assert_eq!(batch[0].receipt, receipt);
    feed.done.send(batch[0].receipt.clone()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while queue.state.lock().unwrap().deleted.len() < 2 {
        assert!(Instant::now() < deadline, "messages not deleted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut deleted = queue.state.lock().unwrap().deleted.clone();
    deleted.sort();
    assert_eq!(deleted, ["receipt-1", "receipt-2"], "the malformed one too");
    shutdown.cancel();
    for t in feed.tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn a_failing_queue_is_reported_and_read_again_after_a_backoff() {
    let queue = Arc::new(FakeQueue::default());
    queue.state.lock().unwrap().failing = Some(ErrorKind::AccessDenied);
    let metrics = Arc::new(EventMetrics::default());
    let shutdown = CancellationToken::new();
    let mut options = EventsOptions::new("https://sqs.fake/1/q");
    options.wait = Duration::from_millis(100);
    let mut feed = spawn(queue.clone(), &options, metrics.clone(), shutdown.clone());
    let deadline = Instant::now() + Duration::from_secs(5);
    while metrics.queue_failing.get() != 1 {
        assert!(Instant::now() < deadline, "failure not reported");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(exposition(&metrics).contains(
        r#"cloudmap_sd_events_queue_errors_total{operation="ReceiveMessage",kind="access_denied"} 1"#
    ));
    queue.state.lock().unwrap().failing = None;
    queue.send(&task_event("a", "RUNNING", "RUNNING", 1));
    let batch = tokio::time::timeout(Duration::from_secs(5), feed.touches.recv())
        .await
        .expect("read again after the backoff")
        .unwrap();
    assert_eq!(batch.len(), 1);
    assert_eq!(metrics.queue_failing.get(), 0);
    let calls = queue.state.lock().unwrap().calls.len();
    assert!(calls <= 4, "a backoff, not a busy loop: {calls} calls");
    shutdown.cancel();
}
