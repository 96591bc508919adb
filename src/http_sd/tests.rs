//! The http_sd routes against literal snapshots, through the router itself.

use std::collections::BTreeSet;

use axum::body::Body as AxumBody;
use axum::http::Request;
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::*;
use crate::model::{Instance, ServiceData, ShardTarget, Snapshot, attr};
use crate::targets::{LabelStyle, TargetOptions};

fn instance(id: &str, ip: &str) -> Instance {
    let attrs = [
        (attr::IPV4, ip),
        (attr::ECS_CLUSTER, "prod"),
        (attr::AZ, "us-east-1a"),
    ];
    Instance {
        id: id.into(),
        attributes: attrs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<std::collections::BTreeMap<_, _>>()
            .into(),
    }
}

/// `services` services of `tasks` tasks each, all scraped on port 9100.
fn snapshot(services: usize, tasks: usize) -> Snapshot {
    snapshot_at(0, services, tasks)
}

/// [`snapshot`] with task addresses `10.<net>.<service>.<task>`.
fn snapshot_at(net: u8, services: usize, tasks: usize) -> Snapshot {
    let tags: std::collections::BTreeMap<String, String> =
        [("METRICS_PATH", "/metrics"), ("METRICS_PORT", "9100")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    let tags = Arc::new(tags);
    Snapshot {
        services: (0..services)
            .map(|s| ServiceData {
                namespace: "apps".into(),
                service: format!("svc-{s}"),
                tags: tags.clone(),
                ecs_service: None,
                instances: Arc::new(
                    (0..tasks)
                        .map(|t| instance(&format!("task-{s}-{t}"), &format!("10.{net}.{s}.{t}")))
                        .collect(),
                ),
            })
            .collect(),
        ..Snapshot::default()
    }
}

fn options() -> TargetOptions {
    TargetOptions {
        label_style: LabelStyle::Default,
        default_port: None,
        ..TargetOptions::default()
    }
}

/// What the file of `snapshot` holds.
fn file_bytes(snapshot: &Snapshot) -> Vec<u8> {
    let mut v = Vec::new();
    targets::render_to(snapshot, &options(), &mut v).unwrap();
    v
}

struct Fixture {
    published: Arc<Published>,
    metrics: Arc<HttpSdMetrics>,
    router: Router,
}

fn fixture(hosts_on: bool, token: Option<Arc<BearerToken>>) -> Fixture {
    let published = Arc::new(Published::new(hosts_on));
    let metrics = Arc::new(HttpSdMetrics::default());
    let router = HttpSd::new(published.clone(), token, metrics.clone())
        .unwrap()
        .routes();
    Fixture {
        published,
        metrics,
        router,
    }
}

async fn get(
    router: &Router,
    uri: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Vec<u8>) {
    let mut req = Request::get(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = router
        .clone()
        .oneshot(req.body(AxumBody::empty()).unwrap())
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes().to_vec();
    (parts.status, parts.headers, bytes)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn renders(m: &HttpSdMetrics, body: &'static str) -> u64 {
    m.renders.get_or_create(&metrics::BodyLabels { body }).get()
}

/// The addresses in a body.
fn addresses(body: &[u8]) -> BTreeSet<String> {
    let groups: Vec<serde_json::Value> = serde_json::from_slice(body).unwrap();
    groups
        .iter()
        .map(|g| g["targets"][0].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn serves_the_bytes_of_the_file_with_an_etag_and_304() {
    let f = fixture(false, None);
    let snap = snapshot(3, 4);
    f.published.publish(&snap, &options(), None);
    let (status, headers, body) = get(&f.router, "/sd/targets", &[]).await;
    assert_eq!(status, StatusCode::OK, "{}", text(&body));
    assert_eq!(body, file_bytes(&snap), "the bytes of the file");
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    let etag = headers[header::ETAG].to_str().unwrap().to_string();
    assert_eq!(etag, etag_of(&file_bytes(&snap)));
    assert!(etag.starts_with('"') && etag.len() == 34, "{etag}");

    let (status, headers, body) = get(&f.router, "/sd/targets", &[("if-none-match", &etag)]).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert!(body.is_empty());
    assert_eq!(headers[header::ETAG], etag.as_str());
    let weak = format!("\"other\", W/{etag}");
    let (status, ..) = get(&f.router, "/sd/targets", &[("if-none-match", &weak)]).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    let (status, ..) = get(&f.router, "/sd/targets", &[("if-none-match", "\"other\"")]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        renders(&f.metrics, "whole"),
        1,
        "rendered once, shared after"
    );

    // An equal publish keeps the body; a change renders anew, with another tag.
    f.published.publish(&snap.clone(), &options(), None);
    get(&f.router, "/sd/targets", &[]).await;
    assert_eq!(renders(&f.metrics, "whole"), 1);
    let changed = snapshot(3, 5);
    f.published.publish(&changed, &options(), None);
    let (_, headers, body) = get(&f.router, "/sd/targets", &[("if-none-match", &etag)]).await;
    assert_eq!(body, file_bytes(&changed));
    assert_ne!(headers[header::ETAG], etag.as_str());
    assert_eq!(renders(&f.metrics, "whole"), 2);
    let ok = f.metrics.requests.get_or_create(&metrics::RequestLabels {
        endpoint: "targets",
        code: "200",
    });
    assert_eq!(ok.get(), 4);
}

#[tokio::test]
async fn before_the_first_publish_503_and_bad_parameters_400() {
    let f = fixture(false, None);
    let (status, _, body) = get(&f.router, "/sd/targets", &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let body = text(&body);
    assert!(
        body.contains("no complete discovery yet") && body.lines().count() == 1,
        "{body}"
    );
    for (q, needle) in [
        ("shard=3/3", "INDEX/COUNT"),
        ("shards=1/2", "unknown parameter"),
        ("shard_key=task", "needs shard"),
    ] {
        let (status, _, body) = get(&f.router, &format!("/sd/targets?{q}"), &[]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{q}");
        assert!(text(&body).contains(needle), "{q}: {}", text(&body));
    }
}

#[tokio::test]
async fn shares_hold_every_target_once_by_the_rule_of_shard() {
    shares_by_the_rule_of_shard(snapshot(12, 5)).await;
}

/// With roles: the same namespace and service names in two accounts, each
/// target's key led by its `aws_account_id` (`ShardKey::of`, as `--shard` does).
#[tokio::test]
async fn shares_of_several_accounts_key_each_target_with_its_account() {
    let snap = Snapshot::merge(vec![
        (Some("111111111111".into()), snapshot_at(1, 12, 5)),
        (Some("222222222222".into()), snapshot_at(2, 12, 5)),
    ]);
    shares_by_the_rule_of_shard(snap).await;
}

/// Every share of `snap` over `/sd/targets?shard=` renders `Snapshot::share`, each
/// target in it belongs to that shard by `ShardKey::of`, and the shares of each key
/// make the whole list, every target once.
async fn shares_by_the_rule_of_shard(snap: Snapshot) {
    let f = fixture(false, None);
    f.published.publish(&snap, &options(), None);
    let whole = addresses(&file_bytes(&snap));
    for key in [ShardKey::Service, ShardKey::Task] {
        let name = if key == ShardKey::Service {
            "service"
        } else {
            "task"
        };
        let mut seen = BTreeSet::new();
        for index in 0..3 {
            let shard = Shard { index, count: 3 };
            let uri = format!("/sd/targets?shard={shard}&shard_key={name}");
            let (status, headers, body) = get(&f.router, &uri, &[]).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(body, file_bytes(&snap.share(shard, key)), "{uri}");
            assert_eq!(headers[header::ETAG], etag_of(&body).as_str());
            let groups: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
            for g in &groups {
                let l = &g["labels"];
                let id = l["ecs_task_id"].as_str().unwrap();
                let k = key.of(&ShardTarget {
                    account: l.get(targets::ACCOUNT_LABEL).and_then(|a| a.as_str()),
                    namespace: "apps",
                    service: l["cloudmap_service"].as_str().unwrap(),
                    instance: id,
                });
                assert!(shard.keeps(&k), "{uri}: {k} belongs to another shard");
                assert!(
                    seen.insert(g["targets"][0].as_str().unwrap().to_string()),
                    "twice"
                );
            }
        }
        assert_eq!(seen, whole, "the shares of {name} make the whole");
    }
    assert_eq!(renders(&f.metrics, "share"), 6);
}

#[tokio::test(start_paused = true)]
async fn shares_wait_for_a_render_slot_held_until_sent() {
    let f = fixture(false, None);
    f.published.publish(&snapshot(4, 2), &options(), None);
    let request = || {
        Request::get("/sd/targets?shard=0/2")
            .body(AxumBody::empty())
            .unwrap()
    };
    // Bodies not read yet hold their slots.
    let mut held = Vec::new();
    for _ in 0..RENDERS {
        let r = f.router.clone().oneshot(request()).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        held.push(r);
    }
    let r = f.router.clone().oneshot(request()).await.unwrap();
    assert_eq!(
        r.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "no slot within the wait"
    );
    drop(held.pop());
    let r = f.router.clone().oneshot(request()).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "a sent body frees its slot");
    // The whole list needs no slot.
    let r = f
        .router
        .clone()
        .oneshot(Request::get("/sd/targets").body(AxumBody::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn hosts_list_off_unknown_and_known() {
    let off = fixture(false, None);
    off.published
        .publish(&snapshot(1, 1), &options(), Some(b"[]\n"));
    let (status, _, body) = get(&off.router, "/sd/hosts", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{}", text(&body));

    let on = fixture(true, None);
    let (status, ..) = get(&on.router, "/sd/hosts", &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "nothing published");
    on.published.publish(&snapshot(1, 1), &options(), None);
    let (status, _, body) = get(&on.router, "/sd/hosts", &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(text(&body).contains("not known yet"));
    let hosts = b"[{\"targets\":[\"10.1.0.1:9100\"],\"labels\":{}}]\n";
    on.published
        .publish(&snapshot(1, 1), &options(), Some(hosts));
    let (status, headers, body) = get(&on.router, "/sd/hosts", &[]).await;
    assert_eq!((status, body.as_slice()), (StatusCode::OK, &hosts[..]));
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    // A cycle without a hosts list keeps the last one; the targets body is kept too.
    get(&on.router, "/sd/targets", &[]).await;
    on.published.publish(&snapshot(1, 1), &options(), None);
    let (_, _, body) = get(&on.router, "/sd/hosts", &[]).await;
    assert_eq!(body, hosts);
    on.published
        .publish(&snapshot(1, 1), &options(), Some(b"[]\n"));
    get(&on.router, "/sd/targets", &[]).await;
    assert_eq!(
        renders(&on.metrics, "whole"),
        1,
        "a hosts change keeps the targets body"
    );
    let (status, ..) = get(&on.router, "/sd/hosts?shard=0/2", &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_token_guards_every_sd_answer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, "t0ken\n").unwrap();
    let token = Arc::new(BearerToken::load(&path).unwrap());
    let f = fixture(true, Some(token));
    for uri in ["/sd/targets", "/sd/hosts", "/sd/targets?bad=1"] {
        let (status, headers, _) = get(&f.router, uri, &[]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}");
        assert_eq!(
            headers[header::WWW_AUTHENTICATE],
            "Bearer realm=\"cloudmap-sd\""
        );
        let (status, ..) = get(&f.router, uri, &[("authorization", "Bearer wrong")]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}");
    }
    let (status, ..) = get(
        &f.router,
        "/sd/targets",
        &[("authorization", "Bearer t0ken")],
    )
    .await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "authorised, nothing published yet"
    );
    f.published.publish(&snapshot(1, 2), &options(), None);
    let (status, ..) = get(
        &f.router,
        "/sd/targets",
        &[("authorization", "Bearer t0ken")],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let denied = f.metrics.requests.get_or_create(&metrics::RequestLabels {
        endpoint: "targets",
        code: "401",
    });
    assert_eq!(denied.get(), 4);
}
