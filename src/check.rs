//! `cloudmap-sd check`: a preflight run before (or beside) the sidecar. Each check is a
//! row of a [`Report`]: Region and credentials, each AWS permission the sidecar uses
//! (exercised with a harmless call), the output directory, the AMP remote_write probe,
//! and a lint of the Prometheus configuration. Any `fail` row makes the command exit
//! non-zero.
//!
//! The lint ([`lint`]) and the glob matcher ([`glob_match`]) are pure.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_config::SdkConfig;
use aws_credential_types::provider::ProvideCredentials;
use futures::future::BoxFuture;
use serde::Serialize;

use crate::aws::{AwsError, ErrorKind};
use crate::config::{Cli, Options};
use crate::prom_config::PromConfig;
use crate::remote_write::{self, AmpProbe};

/// The verdict of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
    Skip,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => "fail",
            Status::Skip => "skip",
        }
    }
}

/// One row of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    pub check: String,
    pub status: Status,
    pub detail: String,
}

impl Row {
    pub fn new(check: impl Into<String>, status: Status, detail: impl Into<String>) -> Self {
        Row {
            check: check.into(),
            status,
            detail: detail.into(),
        }
    }
}

/// Every check's result, in order.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub rows: Vec<Row>,
}

impl Report {
    /// True when a check failed.
    pub fn failed(&self) -> bool {
        self.rows.iter().any(|r| r.status == Status::Fail)
    }

    /// A readable table: CHECK, RESULT, DETAIL, and a summary line.
    pub fn table(&self) -> String {
        let w = self
            .rows
            .iter()
            .map(|r| r.check.chars().count())
            .max()
            .unwrap_or(5)
            .max(5);
        let mut out = String::new();
        let _ = writeln!(out, "{:<w$}  {:<6}  DETAIL", "CHECK", "RESULT");
        for r in &self.rows {
            let _ = writeln!(
                out,
                "{:<w$}  {:<6}  {}",
                r.check,
                r.status.as_str(),
                r.detail
            );
        }
        let count = |s| self.rows.iter().filter(|r| r.status == s).count();
        let _ = writeln!(
            out,
            "\nchecks: {} pass, {} fail, {} warn, {} skip",
            count(Status::Pass),
            count(Status::Fail),
            count(Status::Warn),
            count(Status::Skip)
        );
        out
    }

    /// `{"ok": bool, "checks": [{"check", "status", "detail"}]}`.
    pub fn json(&self) -> String {
        serde_json::json!({ "ok": !self.failed(), "checks": self.rows }).to_string()
    }
}

// ---------------------------------------------------------------------------------
// AWS permissions.
// ---------------------------------------------------------------------------------

/// What a permission check may call with: the client and names or ids that exist when
/// the account has some, else made-up ones (a not-found answer then shows that the
/// call itself is allowed: IAM is evaluated before the resource is looked up).
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

type Call = for<'a> fn(
    &'a aws_sdk_servicediscovery::Client,
    &'a Subject,
) -> BoxFuture<'a, Result<(), AwsError>>;

/// One IAM action and the harmless call that exercises it.
pub struct Permission {
    pub action: &'static str,
    pub call: Call,
}

macro_rules! sd_err {
    ($op:literal) => {
        |e| AwsError::from_sdk($op, e)
    };
}

/// Every Cloud Map action the sidecar uses. To check another action, add a row.
pub const CLOUDMAP_PERMISSIONS: &[Permission] = &[
    Permission {
        action: "servicediscovery:ListNamespaces",
        call: |c, _| {
            Box::pin(async move {
                c.list_namespaces()
                    .max_results(1)
                    .send()
                    .await
                    .map(drop)
                    .map_err(sd_err!("ListNamespaces"))
            })
        },
    },
    Permission {
        action: "servicediscovery:ListServices",
        call: |c, _| {
            Box::pin(async move {
                c.list_services()
                    .max_results(1)
                    .send()
                    .await
                    .map(drop)
                    .map_err(sd_err!("ListServices"))
            })
        },
    },
    Permission {
        action: "servicediscovery:GetService",
        call: |c, s| {
            Box::pin(async move {
                c.get_service()
                    .id(&s.service_id)
                    .send()
                    .await
                    .map(drop)
                    .map_err(sd_err!("GetService"))
            })
        },
    },
    Permission {
        action: "servicediscovery:ListTagsForResource",
        call: |c, s| {
            Box::pin(async move {
                c.list_tags_for_resource()
                    .resource_arn(&s.service_arn)
                    .send()
                    .await
                    .map(drop)
                    .map_err(sd_err!("ListTagsForResource"))
            })
        },
    },
    Permission {
        action: "servicediscovery:DiscoverInstancesRevision",
        call: |c, s| {
            Box::pin(async move {
                c.discover_instances_revision()
                    .namespace_name(&s.namespace)
                    .service_name(&s.service_name)
                    .send()
                    .await
                    .map(drop)
                    .map_err(sd_err!("DiscoverInstancesRevision"))
            })
        },
    },
    Permission {
        action: "servicediscovery:DiscoverInstances",
        call: |c, s| {
            Box::pin(async move {
                c.discover_instances()
                    .namespace_name(&s.namespace)
                    .service_name(&s.service_name)
                    .max_results(1)
                    .send()
                    .await
                    .map(drop)
                    .map_err(sd_err!("DiscoverInstances"))
            })
        },
    },
];

/// The verdict on one permission call made on `subject`: says which service it used,
/// and turns a denial on made-up names for an action a policy may scope to real
/// resources into a warning (the account has no service in the selection to try).
pub fn subject_row(p: &Permission, subject: &Subject, r: Result<(), AwsError>) -> Row {
    let scoped = !matches!(
        p.action,
        "servicediscovery:ListNamespaces" | "servicediscovery:ListServices"
    );
    let mut row = permission_row(p.action, r);
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
    match r {
        Ok(()) => Row::new(action, Status::Pass, "allowed"),
        Err(e) if e.kind == ErrorKind::NotFound => Row::new(
            action,
            Status::Pass,
            "allowed (the test resource does not exist, which is fine)",
        ),
        Err(e) if e.credentials_refused() => Row::new(
            action,
            Status::Fail,
            format!(
                "the credentials were refused, not the action: check the access key, \
                     its secret, the session token and the clock ({})",
                e.message
            ),
        ),
        Err(e) if e.kind == ErrorKind::AccessDenied => Row::new(
            action,
            Status::Fail,
            format!("denied: grant {action} to the task role ({})", e.message),
        ),
        Err(e) => Row::new(action, Status::Fail, format!("{} ({})", e.message, e.kind)),
    }
}

/// The ECS and EC2 actions of the enrichment (--ecs-enrichment), each exercised
/// with a harmless call: describing a task and a container instance that do not
/// exist, and one page of instances.
async fn enrichment_permissions(sdk: &aws_config::SdkConfig, options: &Options) -> Vec<Row> {
    let ecs = aws_sdk_ecs::Client::new(sdk);
    let ec2 = aws_sdk_ec2::Client::new(sdk);
    // A missing cluster or task is an answer past authorisation: allowed.
    let allowed_past_auth = |r: Result<(), AwsError>| match r {
        Err(e) if matches!(e.kind, ErrorKind::Client) => Ok(()),
        other => other,
    };
    let tasks = ecs
        .describe_tasks()
        .cluster("cloudmap-sd-check")
        .tasks("00000000000000000000000000000000")
        .send()
        .await
        .map(drop)
        .map_err(|e| AwsError::from_sdk("DescribeTasks", e));
    let cis = ecs
        .describe_container_instances()
        .cluster("cloudmap-sd-check")
        .container_instances("00000000-0000-0000-0000-000000000000")
        .send()
        .await
        .map(drop)
        .map_err(|e| AwsError::from_sdk("DescribeContainerInstances", e));
    let hosts = ec2
        .describe_instances()
        .max_results(5)
        .send()
        .await
        .map(drop)
        .map_err(|e| AwsError::from_sdk("DescribeInstances", e));
    let mut rows = vec![permission_row(
        "ecs:DescribeTasks",
        allowed_past_auth(tasks),
    )];
    if options.ec2_enrichment {
        rows.push(permission_row(
            "ecs:DescribeContainerInstances",
            allowed_past_auth(cis),
        ));
        rows.push(permission_row("ec2:DescribeInstances", hosts));
    } else {
        for action in ["ecs:DescribeContainerInstances", "ec2:DescribeInstances"] {
            rows.push(Row::new(action, Status::Skip, "--ec2-enrichment false"));
        }
    }
    if options.ec2_hosts_output.is_some() && options.ec2_hosts_tag.is_none() {
        let listed = ecs
            .list_container_instances()
            .cluster("cloudmap-sd-check")
            .max_results(1)
            .send()
            .await
            .map(drop)
            .map_err(|e| AwsError::from_sdk("ListContainerInstances", e));
        rows.push(permission_row(
            "ecs:ListContainerInstances",
            allowed_past_auth(listed),
        ));
    }
    rows
}

/// Picks real names and ids to call with: a service of the first selected namespace
/// that has one (a policy may allow DiscoverInstances only for the selected
/// namespaces), else of any namespace when none is selected; made-up names when
/// there is no such service.
async fn subject(
    client: &aws_sdk_servicediscovery::Client,
    options: &Options,
    region: &str,
) -> Subject {
    let mut s = Subject {
        namespace: options
            .namespaces
            .first()
            .cloned()
            .unwrap_or_else(|| "cloudmap-sd-check".into()),
        service_name: "cloudmap-sd-check".into(),
        service_id: "srv-cloudmapsdcheck0".into(),
        service_arn: format!(
            "arn:aws:servicediscovery:{region}:000000000000:service/srv-cloudmapsdcheck0"
        ),
        real: false,
    };
    // (namespace id, name) pairs to look for a service in; None: any namespace.
    let scopes: Option<Vec<(String, String)>> = if options.namespaces.is_empty() {
        None
    } else {
        let mut found = Vec::new();
        let mut pages = client.list_namespaces().into_paginator().send();
        while let Some(Ok(page)) = pages.next().await {
            for ns in page.namespaces() {
                if let (Some(id), Some(name)) = (ns.id(), ns.name())
                    && options.namespaces.iter().any(|n| n == name)
                {
                    found.push((id.to_string(), name.to_string()));
                }
            }
        }
        found.sort_by_key(|(_, name)| options.namespaces.iter().position(|n| n == name));
        Some(found)
    };
    // The first service of a namespace (any namespace: None). The filter is checked
    // with GetService too, and at most a few candidates are tried, so a server that
    // ignores the filter (moto) gives the right answer as well.
    let first_service = |namespace_id: Option<String>| async move {
        let filter = match &namespace_id {
            Some(id) => Some(
                aws_sdk_servicediscovery::types::ServiceFilter::builder()
                    .name(aws_sdk_servicediscovery::types::ServiceFilterName::NamespaceId)
                    .values(id)
                    .condition(aws_sdk_servicediscovery::types::FilterCondition::Eq)
                    .build()
                    .ok()?,
            ),
            None => None,
        };
        let out = client
            .list_services()
            .set_filters(filter.map(|f| vec![f]))
            .max_results(10)
            .send()
            .await
            .ok()?;
        for svc in out.services() {
            let (Some(id), Some(arn), Some(name)) = (svc.id(), svc.arn(), svc.name()) else {
                continue;
            };
            if let Some(want) = &namespace_id {
                let got = client.get_service().id(id).send().await.ok();
                if got.as_ref().and_then(|g| g.service()?.namespace_id()) != Some(want.as_str()) {
                    continue;
                }
            }
            return Some((id.to_string(), arn.to_string(), name.to_string()));
        }
        None
    };
    let found = match &scopes {
        Some(scopes) => {
            let mut hit = None;
            for (id, name) in scopes {
                if let Some(svc) = first_service(Some(id.clone())).await {
                    hit = Some((svc, Some(name.clone())));
                    break;
                }
            }
            hit
        }
        None => first_service(None).await.map(|svc| (svc, None)),
    };
    if let Some(((id, arn, name), namespace)) = found {
        s.service_id = id;
        s.service_arn = arn;
        s.service_name = name;
        s.real = true;
        match namespace {
            Some(n) => s.namespace = n,
            None => {
                if let Ok(g) = client.get_service().id(&s.service_id).send().await
                    && let Some(ns_id) = g.service().and_then(|x| x.namespace_id())
                    && let Ok(ns) = client.get_namespace().id(ns_id).send().await
                    && let Some(n) = ns.namespace().and_then(|n| n.name())
                {
                    s.namespace = n.to_string();
                }
            }
        }
    }
    s
}

// ---------------------------------------------------------------------------------
// Output directory.
// ---------------------------------------------------------------------------------

/// Writes, renames and removes a hidden temporary file next to `output`.
pub fn output_dir_row(output: &Path) -> Row {
    const NAME: &str = "output directory writable";
    if Cli::is_stdout(output) {
        return Row::new(NAME, Status::Skip, "--output - (stdout)");
    }
    let dir = match output.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let attempt = || -> Result<(), String> {
        let mut tmp = tempfile::Builder::new()
            .prefix(".cloudmap-sd-check.")
            .suffix(".tmp")
            .tempfile_in(&dir)
            .map_err(|e| format!("cannot create a file in {}: {e}", dir.display()))?;
        tmp.write_all(b"[]\n")
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(|e| format!("cannot write in {}: {e}", dir.display()))?;
        let renamed = dir.join(format!(
            ".cloudmap-sd-check.{}.renamed.tmp",
            std::process::id()
        ));
        tmp.persist(&renamed)
            .map_err(|e| format!("cannot rename in {}: {}", dir.display(), e.error))?;
        std::fs::remove_file(&renamed)
            .map_err(|e| format!("cannot remove {}: {e}", renamed.display()))
    };
    match attempt() {
        Ok(()) => Row::new(
            NAME,
            Status::Pass,
            format!("{}: write, rename, remove", dir.display()),
        ),
        Err(e) => Row::new(
            NAME,
            Status::Fail,
            format!("{e} (--output {})", output.display()),
        ),
    }
}

// ---------------------------------------------------------------------------------
// Prometheus configuration lint.
// ---------------------------------------------------------------------------------

/// Go's `filepath.Match` (what Prometheus's file_sd uses) for one path element:
/// `*`, `?`, `[...]` with ranges and `^`/`!` negation, `\` escapes.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    fn class(p: &[char], c: char) -> Option<(bool, usize)> {
        // p starts after '['; returns (matched, length consumed including ']').
        let mut i = 0;
        let negate = matches!(p.first(), Some('^' | '!'));
        if negate {
            i += 1;
        }
        let mut matched = false;
        let mut first = true;
        while i < p.len() {
            if p[i] == ']' && !first {
                return Some((matched != negate, i + 1));
            }
            first = false;
            let lo = if p[i] == '\\' {
                i += 1;
                *p.get(i)?
            } else {
                p[i]
            };
            i += 1;
            let hi = if p.get(i) == Some(&'-') && p.get(i + 1).is_some_and(|c| *c != ']') {
                i += 1;
                let h = if p[i] == '\\' {
                    i += 1;
                    *p.get(i)?
                } else {
                    p[i]
                };
                i += 1;
                h
            } else {
                lo
            };
            if lo <= c && c <= hi {
                matched = true;
            }
        }
        None
    }
    fn go(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('*') => (0..=n.len()).any(|k| go(&p[1..], &n[k..])),
            Some('?') => !n.is_empty() && go(&p[1..], &n[1..]),
            Some('[') => match n.first() {
                Some(&c) => match class(&p[1..], c) {
                    Some((true, len)) => go(&p[1 + len..], &n[1..]),
                    _ => false,
                },
                None => false,
            },
            Some('\\') if p.len() > 1 => n.first() == Some(&p[1]) && go(&p[2..], &n[1..]),
            Some(&c) => n.first() == Some(&c) && go(&p[1..], &n[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    go(&p, &n)
}

/// The lexical form of a path: `.` and `..` resolved without touching the disk.
fn normalize(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            c => out.push(c.as_os_str()),
        }
    }
    out
}

/// Lints a Prometheus configuration for a sidecar that writes `output`.
pub fn lint(config: &PromConfig, output: &Path) -> Vec<Row> {
    let mut rows = Vec::new();
    // remote_write: URL shape and sigv4 region.
    if config.remote_write.is_empty() {
        rows.push(Row::new(
            "prometheus: remote_write",
            Status::Fail,
            "no remote_write section: nothing is sent to AMP",
        ));
    }
    for (i, rw) in config.remote_write.iter().enumerate() {
        let name = format!("prometheus: remote_write[{i}] url");
        let Some(region) = remote_write::amp_region(&rw.url) else {
            rows.push(Row::new(
                name,
                Status::Warn,
                format!(
                    "{} is not an AMP URL (https://aps-workspaces.<region>.amazonaws.com/workspaces/<id>/api/v1/remote_write)",
                    rw.url
                ),
            ));
            continue;
        };
        let uri: http::Uri = rw.url.parse().expect("amp_region parsed it");
        let segments: Vec<&str> = uri.path().trim_matches('/').split('/').collect();
        let shape_ok = uri.scheme_str() == Some("https")
            && matches!(segments.as_slice(), ["workspaces", id, "api", "v1", "remote_write"] if id.starts_with("ws-"));
        rows.push(if shape_ok {
            Row::new(name, Status::Pass, format!("AMP workspace in {region}"))
        } else {
            Row::new(
                name,
                Status::Fail,
                format!(
                    "{} should be https://aps-workspaces.{region}.amazonaws.com/workspaces/ws-<id>/api/v1/remote_write",
                    rw.url
                ),
            )
        });
        let name = format!("prometheus: remote_write[{i}] sigv4");
        rows.push(match &rw.sigv4 {
            None => Row::new(
                name,
                Status::Fail,
                format!("no sigv4 block: AMP refuses unsigned writes; add `sigv4: {{region: {region}}}`"),
            ),
            Some(None) => Row::new(
                name,
                Status::Warn,
                format!(
                    "sigv4 without region: Prometheus falls back to the default Region; set `region: {region}`"
                ),
            ),
            Some(Some(r)) if *r == region => Row::new(name, Status::Pass, format!("region {r}")),
            Some(Some(r)) => Row::new(
                name,
                Status::Fail,
                format!("sigv4 region {r} differs from the URL's Region {region}: signatures will be refused"),
            ),
        });
    }
    // External labels for AMP HA de-duplication.
    for (label, why) in [
        (
            "cluster",
            "AMP de-duplicates HA replicas by `cluster` + `__replica__`",
        ),
        (
            "__replica__",
            "each replica needs its own `__replica__` for AMP HA de-duplication (AMP drops the label)",
        ),
    ] {
        let name = format!("prometheus: external label {label}");
        rows.push(match config.external_labels.get(label) {
            Some(v) if !v.is_empty() => Row::new(name, Status::Pass, format!("{label}={v}")),
            _ => Row::new(
                name,
                Status::Fail,
                format!("external label `{label}` missing in global.external_labels: {why}"),
            ),
        });
    }
    // file_sd: a pattern that matches our output, none that matches our temp file.
    let name = "prometheus: file_sd glob";
    if Cli::is_stdout(output) {
        rows.push(Row::new(name, Status::Skip, "--output - (stdout)"));
        return rows;
    }
    let out = normalize(&std::env::current_dir().unwrap_or_default().join(output));
    let file = out
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = format!(".{file}.AbC123.tmp");
    let mut exact = Vec::new();
    let mut by_name = Vec::new();
    let mut temp_hits = Vec::new();
    for (job, pat) in &config.file_sd {
        let pat_name = pat
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let same_dir = pat.parent().map(normalize) == out.parent().map(Path::to_path_buf);
        if glob_match(&pat_name, &temp) {
            temp_hits.push(format!("{} (job {job})", pat.display()));
        }
        if glob_match(&pat_name, &file) {
            if same_dir {
                exact.push(format!("{} (job {job})", pat.display()));
            } else {
                by_name.push(format!("{} (job {job})", pat.display()));
            }
        }
    }
    rows.push(if !temp_hits.is_empty() {
        Row::new(
            name,
            Status::Fail,
            format!(
                "{} also matches the temporary file {temp}: Prometheus could read a half-written file; end the pattern in .json",
                temp_hits.join(", ")
            ),
        )
    } else if !exact.is_empty() {
        Row::new(name, Status::Pass, format!("{} matches {}", exact.join(", "), out.display()))
    } else if !by_name.is_empty() {
        Row::new(
            name,
            Status::Warn,
            format!(
                "{} matches the name {file} in another directory: fine only if the volume is mounted there in the Prometheus container",
                by_name.join(", ")
            ),
        )
    } else if config.file_sd.is_empty() {
        Row::new(name, Status::Fail, "no file_sd_configs: Prometheus never reads the targets file")
    } else {
        Row::new(
            name,
            Status::Fail,
            format!("no file_sd pattern matches {}", out.display()),
        )
    });
    rows
}

// ---------------------------------------------------------------------------------
// The whole check.
// ---------------------------------------------------------------------------------

/// Runs every check. `sdk` is the loaded AWS configuration.
pub async fn run(options: &Options, sdk: &SdkConfig) -> Report {
    let mut report = Report::default();
    let rows = &mut report.rows;

    // Region and credentials.
    let region = sdk.region().map(|r| r.to_string());
    rows.push(match &region {
        Some(r) => Row::new("aws region", Status::Pass, r.clone()),
        None => Row::new(
            "aws region",
            Status::Fail,
            "no Region: set AWS_REGION (ECS sets it for tasks)",
        ),
    });
    let creds = match sdk.credentials_provider() {
        None => Err("no credentials provider".to_string()),
        Some(p) => match tokio::time::timeout(options.api_timeout, p.provide_credentials()).await {
            Err(_) => Err("the credentials provider did not answer in time".into()),
            Ok(Err(e)) => Err(format!("cannot load credentials: {e}")),
            Ok(Ok(c)) => Ok(c),
        },
    };
    let creds_ok = creds.is_ok();
    rows.push(match creds {
        Ok(c) => {
            let id = c.access_key_id();
            let shown: String = id.chars().take(4).collect();
            Row::new(
                "aws credentials",
                Status::Pass,
                format!(
                    "access key {shown}...{}",
                    if c.session_token().is_some() {
                        " (temporary)"
                    } else {
                        ""
                    }
                ),
            )
        }
        Err(e) => Row::new("aws credentials", Status::Fail, e),
    });

    // Permissions.
    if region.is_some() && creds_ok {
        let client = crate::aws::endpoint::servicediscovery_client(sdk);
        let subject = subject(&client, options, region.as_deref().unwrap_or_default()).await;
        for p in CLOUDMAP_PERMISSIONS {
            let r = (p.call)(&client, &subject).await;
            rows.push(subject_row(p, &subject, r));
        }
        if options.ecs_enrichment {
            rows.extend(enrichment_permissions(sdk, options).await);
        }
    } else {
        let enrichment: &[&str] = if !options.ecs_enrichment {
            &[]
        } else if options.ec2_enrichment {
            &[
                "ecs:DescribeTasks",
                "ecs:DescribeContainerInstances",
                "ec2:DescribeInstances",
            ]
        } else {
            &["ecs:DescribeTasks"]
        };
        for action in CLOUDMAP_PERMISSIONS
            .iter()
            .map(|p| p.action)
            .chain(enrichment.iter().copied())
        {
            rows.push(Row::new(action, Status::Skip, "no Region or credentials"));
        }
    }

    // Output directories.
    rows.push(output_dir_row(&options.output));
    if let Some(hosts) = &options.ec2_hosts_output {
        let mut row = output_dir_row(hosts);
        row.check = "ec2 hosts output directory writable".into();
        rows.push(row);
    }

    // Prometheus configuration.
    let config = match &options.prometheus_config {
        None => None,
        Some(path) => match PromConfig::load(path) {
            Ok(c) => {
                rows.push(Row::new(
                    "prometheus: config file",
                    Status::Pass,
                    path.display().to_string(),
                ));
                Some(c)
            }
            Err(e) => {
                rows.push(Row::new(
                    "prometheus: config file",
                    Status::Fail,
                    e.to_string(),
                ));
                None
            }
        },
    };

    // AMP probe.
    let target = match (
        &options.amp_remote_write_url,
        config
            .as_ref()
            .and_then(|c| c.probe_entry(|u| remote_write::amp_region(u).is_some())),
    ) {
        (Some(u), _) => Some(u.clone()),
        (None, Some(e)) => Some(e.url.clone()),
        (None, None) => None,
    };
    rows.push(match target {
        None => Row::new(
            "amp remote_write probe",
            Status::Skip,
            "no --amp-remote-write-url and no remote_write URL in --prometheus-config",
        ),
        Some(url) => {
            let sig_region = remote_write::amp_region(&url)
                .or_else(|| {
                    config.as_ref().and_then(|c| {
                        c.probe_entry(|u| remote_write::amp_region(u).is_some())?
                            .sigv4
                            .clone()
                            .flatten()
                    })
                })
                .or(region.clone())
                .unwrap_or_else(|| "us-east-1".into());
            match AmpProbe::new(
                &url,
                sig_region,
                sdk.credentials_provider(),
                options.api_timeout,
            ) {
                Err(e) => Row::new("amp remote_write probe", Status::Fail, e.to_string()),
                Ok(p) => {
                    let o = p.probe().await;
                    Row::new(
                        "amp remote_write probe",
                        if o.result.is_ok() {
                            Status::Pass
                        } else {
                            Status::Fail
                        },
                        format!("{url}: {o}"),
                    )
                }
            }
        }
    });

    if let Some(c) = &config {
        rows.extend(lint(c, &options.output));
    } else if options.prometheus_config.is_none() {
        rows.push(Row::new(
            "prometheus: config lint",
            Status::Skip,
            "give --prometheus-config FILE to lint it",
        ));
    }
    report
}

/// Deadline for the whole check, so a hanging endpoint cannot hang the command.
pub fn deadline(options: &Options) -> Duration {
    // The Cloud Map rows, the service lookup (3 calls), credentials, the ECS/EC2
    // rows (4) and the probe, each bounded by --api-timeout.
    options.api_timeout * (CLOUDMAP_PERMISSIONS.len() as u32 + 10)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let refused = AwsError::new(
            "GetService",
            ErrorKind::AccessDenied,
            "UnrecognizedClientException: The security token included in the request is invalid.",
        );
        let r = permission_row(a, Err(refused));
        assert_eq!(r.status, Status::Fail);
        assert!(
            r.detail.contains("credentials were refused"),
            "{}",
            r.detail
        );
        assert!(!r.detail.contains("grant"), "{}", r.detail);
    }

    #[test]
    fn a_denial_on_made_up_names_is_a_warning_and_real_ones_are_named() {
        let p = CLOUDMAP_PERMISSIONS
            .iter()
            .find(|p| p.action == "servicediscovery:DiscoverInstances")
            .unwrap();
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
        let list = &CLOUDMAP_PERMISSIONS[0];
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
}
