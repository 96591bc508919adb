//! `cloudmap-sd check` end to end: the real binary against moto server (AWS), the
//! botocore-verified SigV4 server (AMP stand-in) and Prometheus configuration files.

use std::path::Path;

use cloudmap_sd_test_support::*;

const AMP: &str =
    "https://aps-workspaces.eu-west-1.amazonaws.com/workspaces/ws-0a1b2c/api/v1/remote_write";

fn prometheus_config(dir: &Path, sd_dir: &Path, external_labels: &str) -> std::path::PathBuf {
    let path = dir.join("prometheus.yml");
    std::fs::write(
        &path,
        format!(
            "global:\n  external_labels: {external_labels}\nremote_write:\n  - url: {AMP}\n    sigv4:\n      region: eu-west-1\n\
             scrape_configs:\n  - job_name: ecs\n    file_sd_configs:\n      - files: ['{}/*.json']\n",
            sd_dir.display()
        ),
    )
    .unwrap();
    path
}

/// Rows of the table as (check, result) pairs.
fn rows(stdout: &str) -> Vec<(String, String)> {
    stdout
        .lines()
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter_map(|l| {
            let mut cols = l.split("  ").map(str::trim).filter(|c| !c.is_empty());
            Some((cols.next()?.to_string(), cols.next()?.to_string()))
        })
        .collect()
}

async fn seed(moto: &Moto) {
    let s = Seeder::new(&moto.url).await;
    let ns = s.http_namespace("apps").await;
    let web = s
        .service(
            &ns,
            "web",
            &[("METRICS_PATH", "/metrics"), ("METRICS_PORT", "9100")],
        )
        .await;
    s.task(&web, "0a0a", "127.0.0.11", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_passes_with_full_permissions_and_a_good_config() {
    let moto = Moto::start();
    seed(&moto).await;
    let amp = Sigv4Server::start("testing", "testing", "eu-west-1", &[200]);
    let dir = tempfile::tempdir().unwrap();
    let sd_dir = dir.path().join("sd");
    std::fs::create_dir(&sd_dir).unwrap();
    let config = prometheus_config(
        dir.path(),
        &sd_dir,
        "{cluster: prod, __replica__: replica-1}",
    );
    let output = sd_dir.join("cloudmap-sd.json");
    let probe_url = format!("{}/workspaces/ws-0a1b2c/api/v1/remote_write", amp.url);
    let args = [
        "check",
        "--output",
        output.to_str().unwrap(),
        "--prometheus-config",
        config.to_str().unwrap(),
        "--amp-remote-write-url",
        &probe_url,
    ];
    let out = run_cli(&args, &aws_env(&moto.url));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "check failed:\n{stdout}\n{stderr}");
    let table = rows(&stdout);
    for action in [
        "servicediscovery:ListNamespaces",
        "servicediscovery:ListServices",
        "servicediscovery:GetService",
        "servicediscovery:ListTagsForResource",
        "servicediscovery:DiscoverInstancesRevision",
        "servicediscovery:DiscoverInstances",
        "ecs:DescribeServices",
        "ecs:DescribeTasks",
        "ecs:DescribeContainerInstances",
        "ec2:DescribeInstances",
        "aws region",
        "aws credentials",
        "output directory writable",
        "amp remote_write probe",
        "prometheus: external label cluster",
        "prometheus: external label __replica__",
        "prometheus: file_sd glob",
        "prometheus: remote_write[0] url",
        "prometheus: remote_write[0] sigv4",
    ] {
        assert!(
            table.iter().any(|(c, r)| c == action && r == "pass"),
            "{action} did not pass:\n{stdout}"
        );
    }
    assert_eq!(
        amp.lines(),
        vec!["ok 200".to_string()],
        "the probe was signed right"
    );
    assert!(
        stdout.contains(".cloudmap-sd-staging, rename into"),
        "the writer's staging directory is tried:\n{stdout}"
    );
    assert_eq!(
        std::fs::read_dir(&sd_dir).unwrap().count(),
        0,
        "check leaves no file (and no staging directory) behind"
    );

    let mut json_args = args.to_vec();
    json_args.extend(["--format", "json"]);
    let out = run_cli(&json_args, &aws_env(&moto.url));
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    assert!(v["checks"].as_array().unwrap().len() >= 15, "{v}");

    // The hosts file adds its directory and ecs:ListContainerInstances; without
    // EC2 enrichment the two EC2-side actions are skipped, not failed.
    let hosts = sd_dir.join("hosts.json");
    let mut hosts_args = args.to_vec();
    hosts_args.extend(["--ec2-hosts-output", hosts.to_str().unwrap()]);
    let out = run_cli(&hosts_args, &aws_env(&moto.url));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let rows_hosts = rows(&stdout);
    for check in [
        "ecs:ListContainerInstances",
        "ec2 hosts output directory writable",
    ] {
        assert!(
            rows_hosts.iter().any(|(c, r)| c == check && r == "pass"),
            "{check} did not pass:\n{stdout}"
        );
    }
    let mut no_ec2 = args.to_vec();
    no_ec2.extend(["--ec2-enrichment", "false"]);
    let out = run_cli(&no_ec2, &aws_env(&moto.url));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let rows_no_ec2 = rows(&stdout);
    for (check, want) in [
        ("ecs:DescribeServices", "pass"),
        ("ecs:DescribeTasks", "pass"),
        ("ecs:DescribeContainerInstances", "skip"),
        ("ec2:DescribeInstances", "skip"),
    ] {
        assert!(
            rows_no_ec2.iter().any(|(c, r)| c == check && r == want),
            "{check} is not {want}:\n{stdout}"
        );
    }
    // Without ECS service tags the sidecar never calls DescribeServices.
    let mut no_service_tags = args.to_vec();
    no_service_tags.extend(["--ecs-service-tags", "false"]);
    let out = run_cli(&no_service_tags, &aws_env(&moto.url));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        !rows(&stdout)
            .iter()
            .any(|(c, _)| c == "ecs:DescribeServices"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_fails_naming_an_unwritable_directory_and_a_missing_replica_label() {
    let moto = Moto::start();
    seed(&moto).await;
    let amp = Sigv4Server::start("testing", "testing", "eu-west-1", &[200]);
    let dir = tempfile::tempdir().unwrap();
    // The output's "directory" is a regular file: nothing can be created in it, not
    // even by root (a read-only mode would not stop root).
    let not_a_dir = dir.path().join("sd");
    std::fs::write(&not_a_dir, b"").unwrap();
    let config = prometheus_config(dir.path(), &not_a_dir, "{cluster: prod}");
    let output = not_a_dir.join("cloudmap-sd.json");
    let probe_url = format!("{}/workspaces/ws-0a1b2c/api/v1/remote_write", amp.url);
    let out = run_cli(
        &[
            "check",
            "--output",
            output.to_str().unwrap(),
            "--prometheus-config",
            config.to_str().unwrap(),
            "--amp-remote-write-url",
            &probe_url,
        ],
        &aws_env(&moto.url),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let rows = rows(&stdout);
    let failed: Vec<&str> = rows
        .iter()
        .filter(|(_, r)| r == "fail")
        .map(|(c, _)| c.as_str())
        .collect();
    assert_eq!(
        failed,
        vec![
            "output directory writable",
            "prometheus: external label __replica__"
        ],
        "{stdout}"
    );
    assert!(
        stdout.contains("external label `__replica__` missing"),
        "{stdout}"
    );
    assert!(stdout.contains(" pass, 2 fail, "), "{stdout}");
}

/// The permission rows try a service of the selected namespace, not the first one
/// in the Region: a task role may be allowed DiscoverInstances only there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_tries_a_service_of_the_selected_namespace() {
    let moto = Moto::start();
    let s = Seeder::new(&moto.url).await;
    // Listed first: another team's namespace and service.
    let other = s.http_namespace("aaa-other").await;
    s.service(&other, "aaa-first", &[]).await;
    seed(&moto).await;
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("t.json");
    let run = |namespace: &'static str| {
        let out = run_cli(
            &[
                "check",
                "--output",
                output.to_str().unwrap(),
                "--namespace",
                namespace,
                "--format",
                "json",
            ],
            &aws_env(&moto.url),
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
        let detail = |check: &str| {
            v["checks"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["check"] == check)
                .unwrap_or_else(|| panic!("no row {check}: {v}"))["detail"]
                .as_str()
                .unwrap()
                .to_string()
        };
        (
            detail("servicediscovery:DiscoverInstances"),
            detail("servicediscovery:ListTagsForResource"),
        )
    };
    let (discover, tags) = run("apps");
    assert!(discover.contains("tried on apps/web"), "{discover}");
    assert!(tags.contains("tried on apps/web"), "{tags}");
    // A selected namespace with no service: made-up names, where not found passes.
    let (discover, _) = run("empty-ns");
    assert!(discover.starts_with("allowed"), "{discover}");
    assert!(!discover.contains("tried on"), "{discover}");
}

/// `check` for a sidecar that writes no file and watches an agent: the directory is
/// skipped, the http_sd job on /sd/targets with the bearer token passes, and an
/// agent configuration with rule_files fails by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_lints_an_agent_reading_sd_targets_without_a_file() {
    let moto = Moto::start();
    seed(&moto).await;
    let amp = Sigv4Server::start("testing", "testing", "eu-west-1", &[200, 200]);
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "t0ken\n").unwrap();
    let agent = |extra: &str| {
        let path = dir.path().join("agent.yml");
        std::fs::write(
            &path,
            format!(
                "global:\n  external_labels: {{cluster: prod, __replica__: a1}}\nremote_write:\n  - url: {AMP}\n    sigv4:\n      region: eu-west-1\n\
                 scrape_configs:\n  - job_name: ecs\n    http_sd_configs:\n      - url: http://cloudmap-sd.apps.local:9469/sd/targets\n        \
                 authorization:\n          type: Bearer\n          credentials_file: {}\n{extra}",
                token.display()
            ),
        )
        .unwrap();
        path
    };
    let probe_url = format!("{}/workspaces/ws-0a1b2c/api/v1/remote_write", amp.url);
    let check = |config: &Path| {
        run_cli(
            &[
                "check",
                "--output",
                "none",
                "--prometheus-mode",
                "agent",
                "--http-sd-bearer-token-file",
                token.to_str().unwrap(),
                "--prometheus-config",
                config.to_str().unwrap(),
                "--amp-remote-write-url",
                &probe_url,
            ],
            &aws_env(&moto.url),
        )
    };
    let out = check(&agent(""));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "check failed:\n{stdout}");
    let table = rows(&stdout);
    for (row, result) in [
        ("output directory writable", "skip"),
        ("prometheus: agent mode", "pass"),
        ("prometheus: http_sd", "pass"),
    ] {
        assert!(
            table.iter().any(|(c, r)| c == row && r == result),
            "{row} is not {result}:\n{stdout}"
        );
    }
    assert!(
        table.iter().all(|(c, _)| c != "prometheus: file_sd glob"),
        "{stdout}"
    );

    let out = check(&agent("rule_files: [rules.yml]\n"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("prometheus: agent mode"))
        .unwrap_or_else(|| panic!("no agent mode row:\n{stdout}"));
    assert!(
        line.contains("fail") && line.contains("rule_files"),
        "{line}"
    );
}

/// The staging directory cannot be made (a file has its name): `check` warns and
/// says why, and `once` still writes the file, temporary files beside it, and says
/// so in its log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_staging_directory_that_cannot_be_made_is_a_warning_and_a_fallback() {
    let moto = Moto::start();
    seed(&moto).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".cloudmap-sd-staging"), b"in the way").unwrap();
    let output = dir.path().join("cloudmap-sd.json");
    let out = run_cli(
        &["check", "--output", output.to_str().unwrap()],
        &aws_env(&moto.url),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "a warning is not a failure:\n{stdout}"
    );
    assert!(
        rows(&stdout)
            .iter()
            .any(|(c, r)| c == "output directory writable" && r == "warn"),
        "{stdout}"
    );
    assert!(stdout.contains("is not a directory"), "{stdout}");
    assert!(
        stdout.contains("temporary files go beside the file"),
        "{stdout}"
    );

    let out = run_cli(
        &["once", "--output", output.to_str().unwrap()],
        &aws_env(&moto.url),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("the staging directory cannot be used"),
        "{stderr}"
    );
    assert_eq!(read_targets(&output), vec!["127.0.0.11:9100"]);
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
}
