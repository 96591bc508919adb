//! The engine over several accounts, against the hand-written adapters: merged
//! targets with their account, one account's failures kept to itself, shard keys
//! and namespaces shared between accounts, and the per-account metrics.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio::time::Instant;

use super::*;
use crate::aws::fakes::{FakeCloudMap, FakeEcs};
use crate::aws::{AccountClients, Accounts, Clients, EcsTask};
use crate::model::{HealthStatus, Host, Shard, ShardKey, ShardTarget};
use crate::targets::{ACCOUNT_LABEL, LabelStyle, build};

const A: &str = "111111111111";
const B: &str = "222222222222";

fn options(shard: Option<(Shard, ShardKey)>) -> SidecarOptions {
    SidecarOptions {
        discovery: DiscoveryOptions {
            namespaces: Vec::new(),
            health: HealthStatus::HealthyOrElseAll,
            tags_refresh: Duration::from_secs(300),
            full_refresh: Duration::from_secs(600),
            services_refresh: Duration::from_secs(60),
            concurrency: 4,
            listing_pages: 1,
            shard,
            ecs_service_tags: false,
        },
        enrich: Some(EnrichOptions {
            hold: Duration::from_secs(60),
            name_refresh: Duration::from_secs(300),
            hosts_tag: None,
            want_hosts: true,
            ec2: true,
        }),
        targets: TargetOptions {
            label_style: LabelStyle::Default,
            default_port: Some(8080),
            ..TargetOptions::default()
        },
        output: Some("targets.json".into()),
        hosts: Some(HostsFile {
            path: Some("hosts.json".into()),
            ports: vec![9100],
        }),
        interval: Duration::from_secs(30),
        cycle_timeout: Duration::from_secs(30),
    }
}

/// One account's Cloud Map: service `web` of namespace `apps` with task `task`
/// at `ip` in cluster `prod`.
fn cloudmap(task: &str, ip: &str) -> FakeCloudMap {
    let f = FakeCloudMap::default();
    f.add_service("apps", "web", &[("METRICS_PATH", "/metrics")]);
    f.register_cluster_task("web", task, ip, "prod");
    f
}

/// One account's ECS and EC2: `task` runs on EC2 host `host`.
fn ecs(task: &str, host: &str, ip: &str) -> FakeEcs {
    FakeEcs {
        tasks: vec![(
            "prod".into(),
            task.into(),
            EcsTask {
                launch_type: Some("EC2".into()),
                revision: Some("1".into()),
                container_instance_arn: Some(format!("ci-{host}").into()),
                ..EcsTask::default()
            },
        )],
        cis: vec![(format!("ci-{host}"), format!("i-{host}"))],
        hosts: Mutex::new(vec![Host {
            instance_id: format!("i-{host}"),
            name: Some(host.into()),
            private_ip: Some(ip.into()),
            ..Host::default()
        }]),
        ..FakeEcs::default()
    }
}

fn account<'e>(
    id: &str,
    cloudmap: FakeCloudMap,
    ecs: &'e FakeEcs,
) -> AccountClients<FakeCloudMap, &'e FakeEcs, &'e FakeEcs> {
    AccountClients {
        id: Some(id.into()),
        role: None,
        clients: Clients {
            cloudmap,
            ecs,
            ec2: ecs,
        },
    }
}

/// The ECS and EC2 of accounts A (task `ta` on `host-a`) and B (`tb` on `host-b`).
fn ecs_of_both() -> (FakeEcs, FakeEcs) {
    (
        ecs("ta", "host-a", "10.1.0.10"),
        ecs("tb", "host-b", "10.2.0.10"),
    )
}

/// Accounts A and B, each with service `web` of namespace `apps` and one task:
/// `ta` at 10.1.0.1 in A, `tb` at 10.2.0.1 in B.
fn both<'e>(ea: &'e FakeEcs, eb: &'e FakeEcs) -> Accounts<FakeCloudMap, &'e FakeEcs, &'e FakeEcs> {
    Accounts(vec![
        account(A, cloudmap("ta", "10.1.0.1"), ea),
        account(B, cloudmap("tb", "10.2.0.1"), eb),
    ])
}

/// The targets of a pass: address and account of each.
fn targets_of(pass: &Pass) -> Vec<(String, String)> {
    build(&pass.snapshot, &pass.targets)
        .groups
        .iter()
        .map(|g| {
            let account = g.labels.get(ACCOUNT_LABEL).cloned().unwrap_or_default();
            (g.targets[0].clone(), account)
        })
        .collect()
}

fn cloudmap_of<'e>(
    engine: &'e mut Engine<FakeCloudMap, &FakeEcs, &FakeEcs>,
    id: &str,
) -> &'e FakeCloudMap {
    engine.account(Some(id)).unwrap().discovery().client()
}

#[tokio::test]
async fn two_accounts_are_merged_each_target_with_its_account() {
    let (ea, eb) = ecs_of_both();
    let accounts = both(&ea, &eb);
    let metrics = Arc::new(RunMetrics::default());
    let mut engine = Engine::new(accounts, &options(None), metrics.clone());
    let t0 = Instant::now();
    let p = engine.pass(t0).await.unwrap();
    assert!(p.complete(), "{}", p.describe_failures());
    // The same namespace and service name in both accounts: two targets.
    assert_eq!(
        targets_of(&p),
        [
            ("10.1.0.1:8080".to_string(), A.to_string()),
            ("10.2.0.1:8080".to_string(), B.to_string())
        ]
    );
    assert_eq!(
        p.summary.by_account,
        [(A.to_string(), 1), (B.to_string(), 1)]
    );
    // Each account's tasks enriched through that account's own ECS and EC2.
    let groups = build(&p.snapshot, &p.targets).groups;
    assert_eq!(groups[0].labels["ec2_name"], "host-a");
    assert_eq!(groups[1].labels["ec2_name"], "host-b");
    let hosts: serde_json::Value = serde_json::from_slice(p.hosts.as_ref().unwrap()).unwrap();
    let hosts: Vec<(&str, &str)> = hosts
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["labels"]["instance"].as_str().unwrap(),
                g["labels"][ACCOUNT_LABEL].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(hosts, [("host-a", A), ("host-b", B)]);

    // A steady pass: nothing new, and the merged task facts are the same
    // allocation (an unchanged pass compares cheaply).
    let again = engine.pass(t0 + Duration::from_secs(30)).await.unwrap();
    assert!(!again.fresh);
    assert!(Arc::ptr_eq(&again.snapshot.tasks, &p.snapshot.tasks));
}

#[tokio::test]
async fn one_failing_account_keeps_its_targets_and_does_not_touch_the_other() {
    let (ea, eb) = ecs_of_both();
    let accounts = both(&ea, &eb);
    let metrics = Arc::new(RunMetrics::default());
    let mut engine = Engine::new(accounts, &options(None), metrics.clone());
    let t0 = Instant::now();
    engine.pass(t0).await.unwrap();
    {
        let b = cloudmap_of(&mut engine, B);
        let mut s = b.state.lock().unwrap();
        for op in [
            "DiscoverInstancesRevision",
            "DiscoverInstances",
            "ListServices",
        ] {
            s.failing.insert(op);
        }
    }
    *eb.fail_ecs.lock().unwrap() = true;
    cloudmap_of(&mut engine, A).register_cluster_task("web", "ta2", "10.1.0.2", "prod");
    let p = engine.pass(t0 + Duration::from_secs(30)).await.unwrap();
    assert!(!p.complete());
    assert!(p.accounts[0].complete() && !p.accounts[1].complete());
    assert_eq!(p.accounts[1].outcome_label(), "partial");
    assert!(
        p.describe_failures().starts_with(&format!("account {B}: ")),
        "{}",
        p.describe_failures()
    );
    // A's new task (not known to A's ECS: published at once, without facts).
    let got = targets_of(&p);
    assert!(got.contains(&("10.1.0.2:8080".into(), A.into())), "{got:?}");
    assert!(
        got.contains(&("10.2.0.1:8080".into(), B.into())),
        "B's last known target is kept: {got:?}"
    );
    assert_eq!(p.stale(), 1);
    let mut registry = Registry::with_prefix("cloudmap_sd");
    metrics.register(&mut registry);
    metrics.register_accounts(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    for line in [
        format!(r#"cloudmap_sd_account_cycles_total{{account="{A}",outcome="complete"}} 2"#),
        format!(r#"cloudmap_sd_account_cycles_total{{account="{B}",outcome="partial"}} 1"#),
        format!(
            r#"cloudmap_sd_service_failures_total{{namespace="apps",service="web",account="{B}"}} 1"#
        ),
        format!(
            r#"cloudmap_sd_service_data_age_seconds{{namespace="apps",service="web",account="{A}"}} 0.0"#
        ),
    ] {
        assert!(text.contains(&line), "{line} not in\n{text}");
    }
}

#[tokio::test]
async fn an_account_with_nothing_known_yet_leaves_the_others_published_but_incomplete() {
    let (ea, eb) = (
        ecs("ta", "host-a", "10.1.0.10"),
        ecs("tb", "host-b", "10.2.0.10"),
    );
    let b = cloudmap("tb", "10.2.0.1");
    b.state.lock().unwrap().failing.insert("ListNamespaces");
    let accounts = Accounts(vec![
        account(A, cloudmap("ta", "10.1.0.1"), &ea),
        account(B, b, &eb),
    ]);
    let mut engine = Engine::new(accounts, &options(None), Arc::new(RunMetrics::default()));
    let t0 = Instant::now();
    let p = engine.pass(t0).await.unwrap();
    assert!(!p.complete(), "an account that knows nothing: not complete");
    assert_eq!(p.accounts[1].outcome_label(), "failed");
    assert_eq!(
        targets_of(&p),
        [("10.1.0.1:8080".to_string(), A.to_string())]
    );
    assert_eq!(
        p.hosts, None,
        "the hosts file waits for every account's hosts"
    );
    // Every account failing: the pass fails, as a single account's does.
    cloudmap_of(&mut engine, A)
        .state
        .lock()
        .unwrap()
        .failing
        .insert("DiscoverInstancesRevision");
    let (ec, ed) = (
        ecs("tc", "host-c", "10.3.0.10"),
        ecs("td", "host-d", "10.4.0.10"),
    );
    let (c, d) = (cloudmap("tc", "10.3.0.1"), cloudmap("td", "10.4.0.1"));
    for f in [&c, &d] {
        f.state.lock().unwrap().failing.insert("ListNamespaces");
    }
    let accounts = Accounts(vec![account(A, c, &ec), account(B, d, &ed)]);
    let mut engine = Engine::new(accounts, &options(None), Arc::new(RunMetrics::default()));
    assert!(engine.pass(t0).await.is_err());
}

#[tokio::test]
async fn shard_keys_start_with_the_account() {
    let shard = Shard { index: 0, count: 2 };
    let names: Vec<String> = (0..12).map(|i| format!("svc-{i}")).collect();
    let make = || {
        let f = FakeCloudMap::default();
        for n in &names {
            f.add_service("apps", n, &[("METRICS_PATH", "/m")]);
            f.register(n, &format!("{n}-task"), "10.0.0.1");
        }
        f
    };
    let e = FakeEcs::default();
    let accounts = Accounts(vec![account(A, make(), &e), account(B, make(), &e)]);
    let mut o = options(Some((shard, ShardKey::Service)));
    o.enrich = None;
    o.hosts = None;
    let mut engine = Engine::new(accounts, &o, Arc::new(RunMetrics::default()));
    let p = engine.pass(Instant::now()).await.unwrap();
    let mut got: Vec<(String, String)> = p
        .snapshot
        .services_by_account()
        .map(|(a, s)| (a.unwrap().to_string(), s.service.clone()))
        .collect();
    got.sort();
    let mut want = Vec::new();
    for account in [A, B] {
        for n in &names {
            let t = ShardTarget {
                account: Some(account),
                namespace: "apps",
                service: n,
                instance: "",
            };
            if shard.keeps(&ShardKey::Service.of(&t)) {
                want.push((account.to_string(), n.clone()));
            }
        }
    }
    want.sort();
    assert_eq!(got, want);
    // The account changes the split: the two accounts keep different services.
    let of = |acc: &str| -> Vec<&String> {
        got.iter()
            .filter(|(a, _)| a == acc)
            .map(|(_, s)| s)
            .collect()
    };
    assert_ne!(of(A), of(B));
}

/// What `/sd/targets?shard=I/N` serves (`Snapshot::share` of the merged snapshot of
/// every account) is, byte for byte, the file a sidecar started with `--shard I/N`
/// writes, with roles (equal names in both accounts) and by either key.
#[tokio::test]
async fn a_share_of_the_merged_snapshot_is_what_shard_publishes() {
    let make = |net: u8| {
        let f = FakeCloudMap::default();
        for i in 0..8 {
            let n = format!("svc-{i}");
            f.add_service("apps", &n, &[("METRICS_PATH", "/m")]);
            for t in 0..3 {
                f.register(&n, &format!("{n}-task-{t}"), &format!("10.{net}.{i}.{t}"));
            }
        }
        f
    };
    let e = FakeEcs::default();
    let engine = |shard| {
        let accounts = Accounts(vec![account(A, make(1), &e), account(B, make(2), &e)]);
        let mut o = options(shard);
        o.enrich = None;
        o.hosts = None;
        Engine::new(accounts, &o, Arc::new(RunMetrics::default()))
    };
    let render = |snapshot: &Snapshot, pass: &Pass| {
        let mut out = Vec::new();
        targets::render_to(snapshot, &pass.targets, &mut out).unwrap();
        out
    };
    let now = Instant::now();
    let whole = engine(None).pass(now).await.unwrap();
    assert_eq!(whole.summary.targets, 48);
    for key in [ShardKey::Service, ShardKey::Task] {
        let mut total = 0;
        for index in 0..3 {
            let shard = Shard { index, count: 3 };
            let sharded = engine(Some((shard, key))).pass(now).await.unwrap();
            let share = whole.snapshot.share(shard, key);
            assert_eq!(
                String::from_utf8(render(&share, &whole)).unwrap(),
                String::from_utf8(render(&sharded.snapshot, &sharded)).unwrap(),
                "shard {shard} by {key:?}"
            );
            total += targets::summarize(&share, &whole.targets).targets;
        }
        assert_eq!(total, 48, "the shares by {key:?} make the whole");
    }
}

#[tokio::test]
async fn a_shared_namespace_is_discovered_once_through_its_owner() {
    const C: &str = "333333333333";
    let a = FakeCloudMap::default();
    a.add_service("apps", "own", &[("METRICS_PATH", "/m")]);
    a.add_service("shared", "from-b", &[("METRICS_PATH", "/m")]);
    a.add_service("elsewhere", "from-c", &[("METRICS_PATH", "/m")]);
    a.set_owner("from-b", B);
    a.set_owner("from-c", C);
    for s in ["own", "from-b", "from-c"] {
        a.register(s, &format!("{s}-1"), "10.0.0.1");
    }
    let b = FakeCloudMap::default();
    b.add_service("shared", "from-b", &[("METRICS_PATH", "/m")]);
    b.register("from-b", "from-b-1", "10.0.0.1");
    let e = FakeEcs::default();
    let accounts = Accounts(vec![account(A, a, &e), account(B, b, &e)]);
    let mut o = options(None);
    o.enrich = None;
    o.hosts = None;
    let mut engine = Engine::new(accounts, &o, Arc::new(RunMetrics::default()));
    let p = engine.pass(Instant::now()).await.unwrap();
    let mut got: Vec<(&str, &str)> = p
        .snapshot
        .services_by_account()
        .map(|(acc, s)| (acc.unwrap(), s.service.as_str()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [(A, "from-c"), (A, "own"), (B, "from-b")],
        "B's namespace shared with A is discovered in B only"
    );
    let asked = cloudmap_of(&mut engine, A)
        .state
        .lock()
        .unwrap()
        .owners_asked
        .clone();
    assert!(
        asked.contains(&Some(C.to_string())) && asked.contains(&None),
        "the owner of a shared namespace is named in the calls: {asked:?}"
    );
}

#[tokio::test]
async fn without_accounts_nothing_carries_one() {
    let f = cloudmap("ta", "10.1.0.1");
    let e = ecs("ta", "host-a", "10.1.0.10");
    let clients = Clients {
        cloudmap: f,
        ecs: &e,
        ec2: &e,
    };
    let mut engine = Engine::new(clients, &options(None), Arc::new(RunMetrics::default()));
    let p = engine.pass(Instant::now()).await.unwrap();
    assert!(p.snapshot.accounts.is_empty());
    assert!(p.summary.by_account.is_empty());
    assert_eq!(
        targets_of(&p),
        [("10.1.0.1:8080".to_string(), String::new())]
    );
    assert!(!String::from_utf8_lossy(p.hosts.as_ref().unwrap()).contains(ACCOUNT_LABEL));
}
