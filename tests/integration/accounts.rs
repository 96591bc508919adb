//! Several AWS accounts in one moto server (moto keeps a backend per account and
//! honours the credentials its AssumeRole hands out): targets of both with their
//! `aws_account_id`, enrichment and the hosts file in each, one account's failures
//! (its endpoint, or its role) kept to itself, the calls each account costs on the
//! wire, `once`, `check` and the configuration errors.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cloudmap_sd::model::{ShardKey, ShardTarget};
use cloudmap_sd_test_support::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(60);
/// moto's default account: the one of the test credentials.
const OWN: &str = MOTO_ACCOUNT;
const OTHER: &str = "111111111111";

fn role() -> String {
    role_arn(OTHER, "cloudmap-sd-discovery")
}

/// moto, the proxy in front of it, a seeder in each account (through the proxy,
/// whose type fix moto's ECS answers need).
struct Stack {
    _moto: Moto,
    proxy: Proxy,
    own: Seeder,
    other: Seeder,
}

async fn stack() -> Stack {
    let moto = Moto::start();
    let proxy = Proxy::start(&moto.url).await;
    let own = Seeder::new(&proxy.url).await;
    let other = Seeder::in_account(&proxy.url, &role_arn(OTHER, "seeder")).await;
    Stack {
        _moto: moto,
        proxy,
        own,
        other,
    }
}

/// In one account: an EC2 host named `host` in cluster `prod`, an ECS task on it,
/// and service `web` of namespace `apps` (the same names in every account) with
/// that task at `ip`. Returns the service id.
async fn seed(s: &Seeder, host: &str, ip: &str) -> String {
    let (host_id, _) = s.host(Some(host)).await;
    s.task_definition().await;
    s.cluster("prod").await;
    s.container_instance("prod", &host_id).await;
    let task = s.ec2_tasks("prod", 1).await.remove(0);
    let ns = s.http_namespace("apps").await;
    let web = s.service(&ns, "web", &[("METRICS_PATH", "/metrics")]).await;
    s.ecs_task(&web, "prod", &task, ip).await;
    web
}

/// Each target's address with its labels.
fn by_address(groups: &[Value]) -> BTreeMap<String, BTreeMap<String, String>> {
    groups
        .iter()
        .map(|g| {
            let labels = g["labels"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect();
            (g["targets"][0].as_str().unwrap().to_string(), labels)
        })
        .collect()
}

fn file_targets(sc: &Sidecar) -> BTreeMap<String, BTreeMap<String, String>> {
    by_address(&parse_file(&sc.output))
}

/// The value of one metric sample, by its exact name and labels.
async fn sample(sc: &Sidecar, series: &str) -> f64 {
    let (_, body) = http_get(&sc.url("/metrics")).await.expect("metrics");
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// `extra` after the role of the other account and its external id.
fn role_args(extra: &[&str]) -> Vec<String> {
    let mut v = vec![
        "--role-arn".to_string(),
        role(),
        "--role-external-id".to_string(),
        "central-prometheus".to_string(),
    ];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

/// `cloudmap-sd ARGS` with the other account's role, against the proxy.
fn run_with_role(proxy: &Proxy, extra: &[&str]) -> std::process::Output {
    let args = role_args(extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_cli(&args, &aws_env(&proxy.url))
}

/// `cloudmap-sd run` with the other account's role, writing in `dir`.
fn start_with_role(dir: &std::path::Path, proxy: &Proxy, extra: &[&str]) -> Sidecar {
    let args = role_args(extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Sidecar::start(dir, &proxy.url, &args)
}

/// A stack whose two accounts are seeded alike (hosts `own-host` and `other-host`,
/// tasks at 10.0.0.1 and 10.1.0.1); the two `web` service ids.
async fn seeded() -> (Stack, String, String) {
    let st = stack().await;
    let own_web = seed(&st.own, "own-host", "10.0.0.1").await;
    let other_web = seed(&st.other, "other-host", "10.1.0.1").await;
    (st, own_web, other_web)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_accounts_each_target_with_its_account_and_one_failing_keeps_its_own() {
    let (st, own_web, other_web) = seeded().await;
    let (proxy, own, other) = (&st.proxy, &st.own, &st.other);
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts.json");
    let extra = [
        "--interval",
        "1s",
        "--ec2-hosts-output",
        hosts.to_str().unwrap(),
    ];
    let sc = start_with_role(dir.path(), proxy, &extra);
    sc.wait_ready(T).await;

    // Both accounts' targets, each with its account and its own ECS/EC2 facts.
    let t = file_targets(&sc);
    assert_eq!(t.len(), 2, "{t:?}");
    let (a, b) = (&t["10.0.0.1:8080"], &t["10.1.0.1:8080"]);
    assert_eq!(a["aws_account_id"], OWN);
    assert_eq!(b["aws_account_id"], OTHER);
    assert_eq!(
        (
            a["cloudmap_service"].as_str(),
            b["cloudmap_service"].as_str()
        ),
        ("web", "web")
    );
    assert_eq!(a["ec2_name"], "own-host");
    assert_eq!(b["ec2_name"], "other-host");
    assert_eq!(b["ecs_launch_type"], "EC2");
    let h = by_address(&parse_file(&hosts));
    let mut host_accounts: Vec<(&str, &str)> = h
        .values()
        .map(|l| (l["instance"].as_str(), l["aws_account_id"].as_str()))
        .collect();
    host_accounts.sort();
    assert_eq!(host_accounts, [("other-host", OTHER), ("own-host", OWN)]);

    // The calls of a steady cycle, per account, on the wire.
    sc.wait_cycles(3, T).await;
    let (own0, other0) = (proxy.counts_for(OWN), proxy.counts_for(OTHER));
    let assumed0 = proxy.counts().get("AssumeRole").copied().unwrap_or(0);
    let c0 = sc.cycles().await;
    sc.wait_cycles(5, T).await;
    let cycles = sc.cycles().await - c0;
    let (own1, other1) = (proxy.counts_for(OWN), proxy.counts_for(OTHER));
    let assumed1 = proxy.counts().get("AssumeRole").copied().unwrap_or(0);
    let (own_d, other_d) = (diff(&own0, &own1), diff(&other0, &other1));
    eprintln!(
        "steady: {cycles} cycles; own account {own_d:?}; other account {other_d:?}; AssumeRole {}",
        assumed1 - assumed0
    );
    for d in [&own_d, &other_d] {
        let revisions = d.get("DiscoverInstancesRevision").copied().unwrap_or(0) as f64;
        assert!(
            (cycles - 1.0..=cycles + 1.0).contains(&revisions),
            "one revision call per cycle and service: {d:?} in {cycles} cycles"
        );
        for op in d.keys() {
            assert!(
                matches!(
                    op.as_str(),
                    "DiscoverInstancesRevision" | "ListServices" | "ListNamespaces"
                ),
                "no ECS, EC2 or STS call in a steady cycle: {d:?}"
            );
        }
    }
    assert_eq!(assumed1, assumed0, "the role's credentials are cached");
    assert_eq!(
        sample(
            &sc,
            &format!(r#"cloudmap_sd_account_targets{{account="{OTHER}"}}"#)
        )
        .await,
        1.0
    );

    // The other account's endpoint fails: its target stays, with its labels; the
    // own account goes on being published.
    proxy.set_fault_for_account(OTHER, Fault::ServerError, 1.0);
    let partial =
        format!(r#"cloudmap_sd_account_cycles_total{{account="{OTHER}",outcome="partial"}}"#);
    wait_for_async(T, "a partial cycle of the other account", || async {
        (sample(&sc, &partial).await >= 2.0).then_some(())
    })
    .await;
    own.task(&own_web, "0b0b0b", "10.0.0.2", Some(8080)).await;
    wait_for(T, "the own account's new task", || {
        file_targets(&sc)
            .contains_key("10.0.0.2:8080")
            .then_some(())
    });
    let t = file_targets(&sc);
    assert_eq!(
        t["10.1.0.1:8080"], *b,
        "the failing account keeps its target as it was"
    );
    assert_eq!(t.len(), 3);
    let failures = format!(
        r#"cloudmap_sd_service_failures_total{{namespace="apps",service="web",account="{OTHER}"}}"#
    );
    assert!(sample(&sc, &failures).await >= 1.0);
    let own_partial =
        format!(r#"cloudmap_sd_account_cycles_total{{account="{OWN}",outcome="partial"}}"#);
    assert_eq!(
        sample(&sc, &own_partial).await,
        0.0,
        "the own account is not touched"
    );

    // The endpoint back: the other account's news arrive.
    proxy.set_fault_for_account(OTHER, Fault::Pass, 0.0);
    other
        .task(&other_web, "0c0c0c", "10.1.0.2", Some(8080))
        .await;
    wait_for(T, "the other account's new task", || {
        file_targets(&sc)
            .contains_key("10.1.0.2:8080")
            .then_some(())
    });
    assert_eq!(file_targets(&sc)["10.1.0.2:8080"]["aws_account_id"], OTHER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assumed_credentials_are_renewed_and_a_role_refused_fails_only_its_account() {
    let (st, own_web, other_web) = seeded().await;
    let (proxy, own, other) = (&st.proxy, &st.own, &st.other);
    // Sessions of 20 s: the SDK renews them 5 to 10 s before they expire.
    proxy.shorten_assumed_sessions(Some(Duration::from_secs(20)));
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let assumed0 = proxy.counts().get("AssumeRole").copied().unwrap_or(0);
    let sc = start_with_role(dir.path(), proxy, &["--interval", "1s"]);
    sc.wait_ready(T).await;
    let not_complete = |outcome: &str| {
        format!(r#"cloudmap_sd_account_cycles_total{{account="{OTHER}",outcome="{outcome}"}}"#)
    };
    // Renewed before expiry: a third AssumeRole comes, and no cycle of the other
    // account ever failed for want of credentials.
    wait_for(T, "three AssumeRole calls", || {
        let n = proxy.counts().get("AssumeRole").copied().unwrap_or(0) - assumed0;
        (n >= 3).then_some(n)
    });
    let (n, secs) = (
        proxy.counts()["AssumeRole"] - assumed0,
        started.elapsed().as_secs_f64(),
    );
    eprintln!("AssumeRole: {n} calls in {secs:.1} s with 20 s sessions");
    assert_eq!(sample(&sc, &not_complete("partial")).await, 0.0);
    assert_eq!(sample(&sc, &not_complete("failed")).await, 0.0);

    // STS refuses the role from now on: once the credentials expire the other
    // account fails, keeps its target, and tries AssumeRole once per cycle.
    proxy.set_fault_for("AssumeRole", Fault::Deny);
    let denied = format!(
        r#"cloudmap_sd_aws_api_calls_total{{operation="AssumeRole",outcome="access_denied",account="{OTHER}"}}"#
    );
    wait_for_async(T, "a refused AssumeRole", || async {
        (sample(&sc, &denied).await >= 1.0).then_some(())
    })
    .await;
    let (d0, c0) = (sample(&sc, &denied).await, sc.cycles().await);
    let attempts0 = proxy.counts()["AssumeRole"];
    sc.wait_cycles(4, T).await;
    let (d1, c1) = (sample(&sc, &denied).await, sc.cycles().await);
    let attempts = proxy.counts()["AssumeRole"] - attempts0;
    eprintln!(
        "refused role: {attempts} AssumeRole requests in {} cycles",
        c1 - c0
    );
    assert!(
        (attempts as f64) <= (c1 - c0) + 1.0 && d1 - d0 <= (c1 - c0) + 1.0,
        "one AssumeRole per cycle while refused: {attempts} in {} cycles",
        c1 - c0
    );
    own.task(&own_web, "0b0b0b", "10.0.0.2", Some(8080)).await;
    wait_for(T, "the own account's new task", || {
        file_targets(&sc)
            .contains_key("10.0.0.2:8080")
            .then_some(())
    });
    let t = file_targets(&sc);
    assert_eq!(t["10.1.0.1:8080"]["aws_account_id"], OTHER, "kept: {t:?}");
    assert!(sample(&sc, &not_complete("partial")).await >= 1.0);
    let log = sc.proc.log_text();
    assert!(
        log.contains("cannot assume the role") && log.contains("trust policy"),
        "the log says what to fix:\n{log}"
    );

    // STS grants the role again: the other account recovers by itself.
    proxy.set_fault_for("AssumeRole", Fault::Pass);
    other
        .task(&other_web, "0c0c0c", "10.1.0.2", Some(8080))
        .await;
    wait_for(T, "the other account's new task", || {
        file_targets(&sc)
            .contains_key("10.1.0.2:8080")
            .then_some(())
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_writes_both_accounts_or_nothing() {
    let (st, _, _) = seeded().await;
    let proxy = &st.proxy;
    let out = run_with_role(proxy, &["once", "--output", "-"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let groups: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let t = by_address(&groups);
    assert_eq!(t["10.0.0.1:8080"]["aws_account_id"], OWN);
    assert_eq!(t["10.1.0.1:8080"]["aws_account_id"], OTHER);
    assert_eq!(t["10.1.0.1:8080"]["ec2_name"], "other-host");

    // Only the other account: --own-account false.
    let out = run_with_role(proxy, &["once", "--output", "-", "--own-account", "false"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let groups: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        by_address(&groups).keys().collect::<Vec<_>>(),
        ["10.1.0.1:8080"]
    );

    // One account failing: `once` writes nothing and says which account.
    proxy.set_fault_for_account(OTHER, Fault::ServerError, 1.0);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("t.json");
    let out = run_with_role(proxy, &["once", "--output", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("account {OTHER}")), "{stderr}");
    assert!(!file.exists(), "nothing written");
}

/// The same service names in both accounts: `svc-0` ... `svc-5` of namespace `apps`,
/// one task each (`t<net><i>` at 10.<net>.0.<i>:8080; net 0 own, 1 other).
async fn same_names_in_both(st: &Stack) {
    for (s, net) in [(&st.own, 0), (&st.other, 1)] {
        let ns = s.http_namespace("apps").await;
        for i in 0..6 {
            let name = format!("svc-{i}");
            let id = s.service(&ns, &name, &[("METRICS_PATH", "/m")]).await;
            s.task(
                &id,
                &format!("t{net}{i}"),
                &format!("10.{net}.0.{i}"),
                Some(8080),
            )
            .await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_split_the_accounts_by_keys_that_start_with_the_account() {
    let st = stack().await;
    same_names_in_both(&st).await;
    let mut seen: Vec<(String, String)> = Vec::new();
    for index in 0..2 {
        let shard = format!("{index}/2");
        let extra = [
            "once",
            "--output",
            "-",
            "--shard",
            &shard,
            "--ecs-enrichment",
            "false",
        ];
        let out = run_with_role(&st.proxy, &extra);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let groups: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
        for (_, l) in by_address(&groups) {
            let (account, service) = (&l["aws_account_id"], &l["cloudmap_service"]);
            let key = ShardKey::Service.of(&ShardTarget {
                account: Some(account),
                namespace: "apps",
                service,
                instance: "",
            });
            assert_eq!(
                cloudmap_sd::model::Shard::of(&key, 2),
                index,
                "{key} published by shard {shard}"
            );
            seen.push((account.clone(), service.clone()));
        }
    }
    seen.sort();
    assert_eq!(
        seen.len(),
        12,
        "every target in exactly one shard: {seen:?}"
    );
    seen.dedup();
    assert_eq!(seen.len(), 12);
}

/// Without a file (`--output none`), /sd/targets serves both accounts' targets, each
/// with its `aws_account_id`, and each `?shard=I/N` share is byte for byte what
/// `once --shard I/N` prints with the same role, by either key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sd_targets_without_a_file_serves_every_account_and_shares_as_shard_does() {
    let st = stack().await;
    same_names_in_both(&st).await;
    let dir = tempfile::tempdir().unwrap();
    let args = role_args(&["--interval", "1s", "--ecs-enrichment", "false"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let sc = Sidecar::start_serving(dir.path(), &st.proxy.url, &args);
    sc.wait_ready(T).await;
    let (status, body) = http_get(&sc.url("/sd/targets")).await.expect("/sd/targets");
    assert_eq!(status, 200, "{body}");
    let groups: Vec<Value> = serde_json::from_str(&body).unwrap();
    let t = by_address(&groups);
    assert_eq!(t.len(), 12, "{body}");
    for i in 0..6 {
        assert_eq!(t[&format!("10.0.0.{i}:8080")]["aws_account_id"], OWN);
        assert_eq!(t[&format!("10.1.0.{i}:8080")]["aws_account_id"], OTHER);
    }
    for account in [OWN, OTHER] {
        let series = format!("cloudmap_sd_account_targets{{account=\"{account}\"}}");
        assert_eq!(sample(&sc, &series).await, 6.0, "{series}");
    }
    assert_eq!(
        sc.metric("cloudmap_sd_file_writes_total").await,
        0.0,
        "no file written"
    );
    let mut seen = 0;
    for key in ["service", "task"] {
        for index in 0..2 {
            let shard = format!("{index}/2");
            let url = sc.url(&format!("/sd/targets?shard={shard}&shard_key={key}"));
            let (status, share) = http_get(&url).await.expect("a share");
            assert_eq!(status, 200, "{url}: {share}");
            let once = [
                "once",
                "--output",
                "-",
                "--shard",
                &shard,
                "--shard-key",
                key,
                "--ecs-enrichment",
                "false",
            ];
            let out = run_with_role(&st.proxy, &once);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(
                share,
                String::from_utf8_lossy(&out.stdout),
                "?shard={shard}&shard_key={key} equals --shard {shard} --shard-key {key}"
            );
            seen += serde_json::from_str::<Vec<Value>>(&share).unwrap().len();
        }
    }
    assert_eq!(seen, 24, "each key's shares hold the 12 targets once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_shows_each_account_and_what_to_fix_when_a_role_is_refused() {
    let (st, _, _) = seeded().await;
    let proxy = &st.proxy;
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("t.json");
    let check = ["check", "--output", out_file.to_str().unwrap()];
    let out = run_with_role(proxy, &check);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let row = |stdout: &str, check: &str| -> String {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("{check} ")))
            .unwrap_or_else(|| panic!("no row {check:?} in\n{stdout}"))
            .to_string()
    };
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(row(&stdout, "sts:GetCallerIdentity").contains(OWN));
    for account in [OWN, OTHER] {
        for action in [
            "servicediscovery:ListNamespaces",
            "servicediscovery:DiscoverInstances",
            "ecs:DescribeTasks",
        ] {
            let r = row(&stdout, &format!("{account}: {action}"));
            assert!(r.contains(" pass "), "{r}");
        }
    }
    assert!(row(&stdout, &format!("{OTHER}: sts:AssumeRole")).contains(" pass "));
    assert!(
        row(
            &stdout,
            &format!("{OTHER}: servicediscovery:DiscoverInstances")
        )
        .contains("tried on apps/web"),
        "the other account's permissions are tried on its own service"
    );

    proxy.set_fault_for("AssumeRole", Fault::Deny);
    let out = run_with_role(proxy, &check);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!out.status.success(), "{stdout}");
    let r = row(&stdout, &format!("{OTHER}: sts:AssumeRole"));
    assert!(
        r.contains(" fail ") && r.contains("AccessDenied") && r.contains("trust policy"),
        "{r}"
    );
    assert!(
        row(
            &stdout,
            &format!("{OTHER}: servicediscovery:ListNamespaces")
        )
        .contains(" skip ")
    );
    assert!(row(&stdout, &format!("{OWN}: servicediscovery:ListNamespaces")).contains(" pass "));
}

/// STS refuses the sidecar's own credentials when it asks for the role (a key AWS
/// does not know, expired temporary credentials): not the role's policies but the
/// credentials are to fix, and check's row and the account's calls in `once` say so
/// in the one line of the credentials' cause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_asked_for_with_refused_credentials_says_what_to_set() {
    let (st, _, _) = seeded().await;
    let proxy = &st.proxy;
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("t.json");
    let out_path = out_file.to_str().unwrap();
    let role = role();
    for (fault, line) in [
        (
            Fault::RefuseCredentials,
            format!(
                "AWS refused the credentials (AssumeRole: role {role}: InvalidClientTokenId): \
                 check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
            ),
        ),
        (
            Fault::ExpiredCredentials,
            format!(
                "the AWS credentials have expired (AssumeRole: role {role}: ExpiredToken): \
                 set fresh ones (with AWS_SESSION_TOKEN) or renew AWS_PROFILE's login"
            ),
        ),
    ] {
        proxy.set_fault_for("AssumeRole", fault);
        let out = run_with_role(proxy, &["check", "--format", "json", "--output", out_path]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let rows = v["checks"].as_array().unwrap();
        let detail = |check: &str| {
            rows.iter()
                .find(|r| r["check"] == check)
                .map(|r| (r["status"].as_str().unwrap(), r["detail"].as_str().unwrap()))
                .unwrap_or_else(|| panic!("no row {check}: {rows:#?}"))
        };
        assert_eq!(
            detail(&format!("{OTHER}: sts:AssumeRole")),
            ("fail", line.as_str()),
            "the credentials' line, not the trust policy"
        );
        assert_eq!(
            detail(&format!("{OWN}: servicediscovery:ListNamespaces")).0,
            "pass"
        );

        // The other account's calls fail with it: `once` in that account alone
        // prints the same line for its first call.
        let out = run_with_role(proxy, &["once", "--own-account", "false", "--output", "-"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        // The account's own error log line (as in `run`), then the answer.
        let said = stderr.lines().last().unwrap_or("");
        let (what, rest) = line.split_once(" (AssumeRole: ").unwrap();
        assert!(
            said.starts_with("cloudmap-sd: ")
                && said.contains(&format!("{what} ("))
                && said.ends_with(rest.split_once(')').unwrap().1)
                && said.contains(&format!(": role {role}: ")),
            "{said}\nwants the line of: {line}"
        );
        assert!(!stderr.contains("trust policy"), "{stderr}");
    }
    proxy.set_fault_for("AssumeRole", Fault::Pass);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_role_configuration_exits_64_before_any_aws_call() {
    let moto = Moto::start();
    let proxy = Proxy::start(&moto.url).await;
    for (args, needle) in [
        (
            vec!["once", "--role-arn", "cloudmap-sd-discovery"],
            "not an IAM role ARN",
        ),
        (
            vec!["run", "--role-arn", "arn:aws:iam::111:role/x"],
            "12 digits",
        ),
        (vec!["once", "--own-account", "false"], "give a --role-arn"),
        (
            vec!["check", "--role-external-id", "x1"],
            "needs a --role-arn",
        ),
    ] {
        let out = run_cli(&args, &aws_env(&proxy.url));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
    assert_eq!(proxy.total(), 0, "no AWS call: {:?}", proxy.counts());
}
