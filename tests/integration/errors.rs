//! The errors a user fixes by setting something: no Region, no credentials,
//! credentials AWS refuses or says have expired, an endpoint that cannot be reached.
//! Each is one line that says what to set, from `once` (its exact first line on
//! stderr, and the exit code) and in `check`'s rows; no SDK dump, no instance-metadata
//! (IMDS) warnings, no stderr line over 200 characters, by default. `RUST_LOG=debug`
//! still shows the SDK's own words.
//!
//! The instance metadata endpoint is a closed loopback port in every test, so the
//! SDK's IMDS lookups fail at once, as on a machine outside AWS, on any machine.

use std::process::Output;

use cloudmap_sd_test_support::*;

const NO_REGION: &str =
    "cloudmap-sd: no AWS Region configured: set AWS_REGION (ECS sets it for tasks)";
const NO_CREDENTIALS: &str = "cloudmap-sd: discovery failed, nothing written: no AWS credentials \
     found (ListNamespaces): set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE (in \
     ECS: a task role)";
const REFUSED: &str = "cloudmap-sd: discovery failed, nothing written: AWS refused the \
     credentials (ListNamespaces: UnrecognizedClientException): check AWS_ACCESS_KEY_ID and \
     AWS_SECRET_ACCESS_KEY, or AWS_PROFILE";
const EXPIRED: &str = "cloudmap-sd: discovery failed, nothing written: the AWS credentials have \
     expired (ListNamespaces: ExpiredTokenException): set fresh ones (with AWS_SESSION_TOKEN) or \
     renew AWS_PROFILE's login";
const UNREACHABLE: &str = "cloudmap-sd: discovery failed, nothing written: cannot connect to the \
     AWS endpoint (ListNamespaces: connection refused): check AWS_ENDPOINT_URL, AWS_REGION and \
     the network";

/// A loopback URL nothing listens on.
fn closed_url() -> String {
    format!("http://127.0.0.1:{}", free_port())
}

/// An environment with no AWS settings but the given ones: a home without `~/.aws`,
/// and the instance metadata on a closed port.
fn env(dir: &std::path::Path, extra: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("HOME", dir.display().to_string()),
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT", closed_url()),
    ];
    env.extend_from_slice(extra);
    env
}

fn keys(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_REGION", REGION.to_string()),
        ("AWS_ENDPOINT_URL", endpoint.to_string()),
        ("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "testing".to_string()),
    ]
}

/// `once` fails with exactly `line` on stderr (nothing else), exit `code`.
fn assert_once_says(env: &[(&'static str, String)], line: &str, code: i32) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("targets.json");
    let o = run_cli(&["once", "--output", out.to_str().unwrap()], env);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(code), "stderr:\n{stderr}");
    assert_eq!(stderr.lines().next(), Some(line), "stderr:\n{stderr}");
    assert_eq!(stderr.lines().count(), 1, "only that line:\n{stderr}");
    assert_short_lines(&o);
    assert!(!out.exists(), "nothing written");
}

/// No line on stderr or stdout over 200 characters.
fn assert_short_lines(o: &Output) {
    for text in [&o.stderr, &o.stdout] {
        for l in String::from_utf8_lossy(text).lines() {
            assert!(
                l.chars().count() <= 200,
                "a line of {} characters: {l}",
                l.chars().count()
            );
        }
    }
}

/// `check --format json` (and `extra` args): its rows as (check, status, detail);
/// stderr is empty.
fn check_rows(env: &[(&'static str, String)], extra: &[&str]) -> Vec<(String, String, String)> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("targets.json");
    let mut args = vec![
        "check",
        "--format",
        "json",
        "--output",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let o = run_cli(&args, env);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "check fails; stderr:\n{stderr}");
    assert_eq!(stderr, "", "nothing on stderr by default");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap().to_string();
            (s("check"), s("status"), s("detail"))
        })
        .collect()
}

fn row(rows: &[(String, String, String)], check: &str) -> (String, String) {
    rows.iter()
        .find(|r| r.0 == check)
        .map(|r| (r.1.clone(), r.2.clone()))
        .unwrap_or_else(|| panic!("no row {check}: {rows:?}"))
}

/// The line `once` prints, without its prefix, as `check` shows it for `operation`.
fn as_row(once_line: &str, operation: &str) -> String {
    once_line
        .trim_start_matches("cloudmap-sd: discovery failed, nothing written: ")
        .replace("ListNamespaces", operation)
}

#[test]
fn no_region_is_one_line_exit_64() {
    let dir = tempfile::tempdir().unwrap();
    let env = env(dir.path(), &[]);
    assert_once_says(&env, NO_REGION, 64);
    let rows = check_rows(&env, &[]);
    let want = NO_REGION.trim_start_matches("cloudmap-sd: ");
    assert_eq!(row(&rows, "aws region"), ("fail".into(), want.into()));
}

#[test]
fn no_credentials_is_one_line_and_debug_shows_the_sdk() {
    let dir = tempfile::tempdir().unwrap();
    let env = env(
        dir.path(),
        &[
            ("AWS_REGION", REGION.to_string()),
            ("AWS_ENDPOINT_URL", closed_url()),
        ],
    );
    assert_once_says(&env, NO_CREDENTIALS, 1);
    let amp = format!("{}/api/v1/write", closed_url());
    let rows = check_rows(&env, &["--amp-remote-write-url", &amp]);
    let want = "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, \
                or AWS_PROFILE (in ECS: a task role)";
    assert_eq!(row(&rows, "aws credentials"), ("fail".into(), want.into()));
    assert_eq!(
        row(&rows, "amp remote_write probe"),
        ("skip".into(), "needs AWS credentials".into()),
        "the credentials row says it"
    );

    // RUST_LOG=debug: the same line last, and the SDK's own account before it.
    let mut debug = env.clone();
    debug.push(("RUST_LOG", "debug".to_string()));
    let o = run_cli(&["once", "--output", "-"], &debug);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(stderr.lines().last(), Some(NO_CREDENTIALS), "{stderr}");
    assert!(stderr.contains("AWS call failed"), "{stderr}");
    assert!(
        stderr.contains("Ec2InstanceMetadata"),
        "the SDK's chain: {stderr}"
    );
}

// moto accepts any key; the proxy answers every call as AWS does for a key it does
// not know, or for expired temporary credentials.
async fn refusing(fault: Fault) -> Proxy {
    let proxy = Proxy::start(&closed_url()).await;
    proxy.set_fault(fault);
    proxy
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_are_one_line() {
    let proxy = refusing(Fault::RefuseCredentials).await;
    let dir = tempfile::tempdir().unwrap();
    let env = env(dir.path(), &keys(&proxy.url));
    let e = env.clone();
    tokio::task::spawn_blocking(move || assert_once_says(&e, REFUSED, 1))
        .await
        .unwrap();
    let rows = tokio::task::spawn_blocking(move || check_rows(&env, &[]))
        .await
        .unwrap();
    assert_eq!(row(&rows, "aws credentials").0, "pass", "the keys load");
    assert_eq!(
        row(&rows, "servicediscovery:ListNamespaces"),
        ("fail".into(), as_row(REFUSED, "ListNamespaces"))
    );
    let (status, detail) = row(&rows, "ec2:DescribeInstances");
    assert_eq!(status, "fail");
    assert!(
        detail.starts_with("AWS refused the credentials (DescribeInstances: AuthFailure)"),
        "{detail}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_credentials_are_one_line() {
    let proxy = refusing(Fault::ExpiredCredentials).await;
    let dir = tempfile::tempdir().unwrap();
    let mut env = env(dir.path(), &keys(&proxy.url));
    env.push(("AWS_SESSION_TOKEN", "FwoGZXIvYXdzEXAMPLE".to_string()));
    let e = env.clone();
    tokio::task::spawn_blocking(move || assert_once_says(&e, EXPIRED, 1))
        .await
        .unwrap();
    let rows = tokio::task::spawn_blocking(move || check_rows(&env, &[]))
        .await
        .unwrap();
    assert_eq!(
        row(&rows, "ecs:DescribeTasks"),
        ("fail".into(), as_row(EXPIRED, "DescribeTasks"))
    );
}

#[test]
fn an_unreachable_endpoint_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let env = env(dir.path(), &keys(&closed_url()));
    assert_once_says(&env, UNREACHABLE, 1);
    let rows = check_rows(&env, &[]);
    assert_eq!(
        row(&rows, "servicediscovery:GetService"),
        ("fail".into(), as_row(UNREACHABLE, "GetService"))
    );
}
