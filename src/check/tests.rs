//! The pure parts of `check`: globs, the lint, the verdicts, the report.

use std::path::Path;

use super::permissions::{CLOUDMAP_ACTIONS, Subject, permission_row, subject_row};
use super::*;
use crate::aws::{AwsError, ErrorKind};

#[test]
fn go_style_globs() {
    for (p, n, want) in [
        ("*.json", "targets.json", true),
        ("*.json", ".targets.json.x1.tmp", false),
        ("*", ".targets.json.x1.tmp", true),
        ("*.json*", ".t.json.x.tmp", true),
        ("tg_?.json", "tg_1.json", true),
        ("tg_[0-9].json", "tg_a.json", false),
        ("tg_[^0-9].json", "tg_a.json", true),
        ("targets.json", "targets.json", true),
        ("targets.json", "other.json", false),
    ] {
        assert_eq!(glob_match(p, n), want, "{p} vs {n}");
    }
}

fn cfg(yaml: &str) -> PromConfig {
    PromConfig::parse(yaml, Path::new("/etc/prometheus")).unwrap()
}

const GOOD: &str = r#"
global:
  external_labels: {cluster: prod, __replica__: replica-1}
remote_write:
  - url: https://aps-workspaces.eu-west-1.amazonaws.com/workspaces/ws-0a1b/api/v1/remote_write
    sigv4: {region: eu-west-1}
scrape_configs:
  - job_name: ecs
    file_sd_configs:
      - files: [/sd/*.json]
"#;

fn statuses(rows: &[Row]) -> Vec<(String, Status)> {
    rows.iter().map(|r| (r.check.clone(), r.status)).collect()
}

#[test]
fn a_good_config_passes() {
    let rows = lint(&cfg(GOOD), Path::new("/sd/cloudmap-sd.json"));
    assert!(rows.iter().all(|r| r.status == Status::Pass), "{rows:#?}");
    assert_eq!(rows.len(), 5, "{:?}", statuses(&rows));
}

#[test]
fn each_problem_is_named() {
    let bad = r#"
global:
  external_labels: {cluster: prod}
remote_write:
  - url: https://aps-workspaces.eu-west-1.amazonaws.com/workspaces/ws-0a1b/api/v1/write
    sigv4: {region: us-east-1}
scrape_configs:
  - job_name: ecs
    file_sd_configs:
      - files: ['/sd/*']
"#;
    let rows = lint(&cfg(bad), Path::new("/sd/cloudmap-sd.json"));
    let failed: Vec<&Row> = rows.iter().filter(|r| r.status == Status::Fail).collect();
    let text = format!("{failed:#?}");
    assert_eq!(failed.len(), 4, "{text}");
    assert!(text.contains("/api/v1/remote_write"), "{text}");
    assert!(text.contains("sigv4 region us-east-1 differs"), "{text}");
    assert!(text.contains("`__replica__` missing"), "{text}");
    assert!(text.contains("temporary file"), "{text}");
}

#[test]
fn missing_sigv4_and_file_sd() {
    let c = cfg(
        "remote_write:\n  - url: https://aps-workspaces.eu-west-1.amazonaws.com/workspaces/ws-1/api/v1/remote_write\n",
    );
    let rows = lint(&c, Path::new("/sd/x.json"));
    let text = format!("{rows:#?}");
    assert!(text.contains("no sigv4 block"), "{text}");
    assert!(text.contains("no file_sd_configs"), "{text}");
    assert!(text.contains("`cluster` missing"), "{text}");
}

#[test]
fn another_mount_point_is_a_warning() {
    let rows = lint(&cfg(GOOD), Path::new("/elsewhere/cloudmap-sd.json"));
    let r = rows
        .iter()
        .find(|r| r.check == "prometheus: file_sd glob")
        .unwrap();
    assert_eq!(r.status, Status::Warn, "{r:?}");
    let rows = lint(&cfg(GOOD), Path::new("/sd/cloudmap-sd.yaml"));
    let r = rows
        .iter()
        .find(|r| r.check == "prometheus: file_sd glob")
        .unwrap();
    assert_eq!(r.status, Status::Fail, "{r:?}");
}

#[test]
fn non_amp_remote_write_is_a_warning() {
    let c = cfg("remote_write:\n  - url: http://127.0.0.1:9090/api/v1/write\n");
    let rows = lint(&c, Path::new("x.json"));
    assert_eq!(rows[0].status, Status::Warn);
}

#[test]
fn permission_verdicts() {
    let a = "servicediscovery:GetService";
    assert_eq!(permission_row(a, Ok(())).status, Status::Pass);
    let nf = AwsError::new("GetService", ErrorKind::NotFound, "ServiceNotFound");
    assert_eq!(permission_row(a, Err(nf)).status, Status::Pass);
    let denied = AwsError::new(
        "GetService",
        ErrorKind::AccessDenied,
        "AccessDeniedException: no",
    );
    let r = permission_row(a, Err(denied));
    assert_eq!(r.status, Status::Fail);
    assert!(
        r.detail.contains("grant servicediscovery:GetService"),
        "{}",
        r.detail
    );
    // A key AWS does not know is not a policy problem.
    let refused = AwsError::service(
        "GetService",
        "UnrecognizedClientException",
        "The security token included in the request is invalid.",
        400,
    );
    let line = refused.to_string();
    let r = permission_row(a, Err(refused));
    assert_eq!(r.status, Status::Fail);
    assert_eq!(r.detail, line, "the line once prints");
    assert!(
        r.detail.starts_with("AWS refused the credentials"),
        "{}",
        r.detail
    );
    assert!(!r.detail.contains("grant"), "{}", r.detail);
}

#[test]
fn a_denial_on_made_up_names_is_a_warning_and_real_ones_are_named() {
    let p = "servicediscovery:DiscoverInstances";
    let mut subject = Subject {
        namespace: "apps".into(),
        service_name: "cloudmap-sd-check".into(),
        service_id: "srv-x".into(),
        service_arn: "arn:x".into(),
        real: false,
    };
    let denied = || {
        Err(AwsError::new(
            "DiscoverInstances",
            ErrorKind::AccessDenied,
            "AccessDeniedException: not authorized",
        ))
    };
    let r = subject_row(p, &subject, denied());
    assert_eq!(r.status, Status::Warn, "{r:?}");
    assert!(
        r.detail.contains("made-up names (apps/cloudmap-sd-check)"),
        "{r:?}"
    );
    subject.real = true;
    subject.service_name = "web".into();
    let r = subject_row(p, &subject, denied());
    assert_eq!(r.status, Status::Fail, "a real service denied is a failure");
    assert!(r.detail.contains("tried on apps/web"), "{r:?}");
    let list = CLOUDMAP_ACTIONS[0];
    assert_eq!(subject_row(list, &subject, denied()).status, Status::Fail);
}

#[test]
fn output_dir_checks() {
    let dir = tempfile::tempdir().unwrap();
    let ok = output_dir_row(&dir.path().join("t.json"));
    assert_eq!(ok.status, Status::Pass, "{ok:?}");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing left behind"
    );
    let file = dir.path().join("file");
    std::fs::write(&file, b"").unwrap();
    let bad = output_dir_row(&file.join("t.json"));
    assert_eq!(bad.status, Status::Fail, "{bad:?}");
    assert!(bad.detail.contains("cannot create"), "{}", bad.detail);
}

#[test]
fn a_staging_directory_that_cannot_be_made_is_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let ok = output_dir_row(&dir.path().join("t.json"));
    assert!(
        ok.detail.contains(crate::file_sd::STAGING_DIR),
        "{}",
        ok.detail
    );
    std::fs::write(dir.path().join(crate::file_sd::STAGING_DIR), b"").unwrap();
    let warn = output_dir_row(&dir.path().join("t.json"));
    assert_eq!(warn.status, Status::Warn, "{warn:?}");
    assert!(
        warn.detail.contains("is not a directory"),
        "{}",
        warn.detail
    );
    assert!(
        warn.detail.contains("temporary files go beside the file"),
        "{}",
        warn.detail
    );
}

#[test]
fn table_and_json() {
    let r = Report {
        rows: vec![
            Row::new("aws region", Status::Pass, "us-east-1"),
            Row::new("output directory writable", Status::Fail, "nope"),
        ],
    };
    assert!(r.failed());
    let t = r.table();
    assert!(t.starts_with("CHECK"), "{t}");
    assert!(t.contains("output directory writable  fail    nope"), "{t}");
    assert!(t.contains("checks: 1 pass, 1 fail, 0 warn, 0 skip"), "{t}");
    let v: serde_json::Value = serde_json::from_str(&r.json()).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["checks"][1]["status"], "fail");
}

#[tokio::test]
async fn the_queue_rows_read_without_taking_a_message() {
    use crate::aws::fakes::FakeQueue;
    let queue = FakeQueue::default();
    queue.send("{}");
    let rows = permissions::queue_rows(&queue, TASK_ROLE).await;
    let checks: Vec<&str> = rows.iter().map(|r| r.check.as_str()).collect();
    assert_eq!(checks, permissions::QUEUE_ACTIONS);
    assert!(rows.iter().all(|r| r.status == Status::Pass), "{rows:?}");
    assert!(rows[0].detail.contains("1 messages waiting"), "{rows:?}");
    queue.state.lock().unwrap().failing = Some(ErrorKind::AccessDenied);
    let rows = permissions::queue_rows(&queue, TASK_ROLE).await;
    for r in &rows {
        assert_eq!(r.status, Status::Fail, "{r:?}");
        assert!(
            r.detail
                .contains(&format!("grant {} to the task role", r.check)),
            "{r:?}"
        );
    }
}
