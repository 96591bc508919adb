//! `cloudmap-sd check`: a preflight run before (or beside) the sidecar. Each check is a
//! row of a [`Report`]: Region and credentials, each AWS permission the sidecar uses
//! (exercised through the sidecar's own adapters with a harmless call; with
//! `--role-arn`, in each account: the AssumeRole, then each permission through the
//! role, each row named by its account), the events queue (with
//! `--events-queue-url`: read without taking a message), the output
//! directories (through the writer's own rules), the AMP remote_write probe, and a
//! lint of the Prometheus configuration. Any `fail` row makes the command exit
//! non-zero.
//!
//! - [`report`]: rows, table and JSON; [`permissions`]: the AWS rows;
//! - [`lint`]: the pure lint of prometheus.yml and its glob matcher.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_credential_types::provider::ProvideCredentials;

use crate::aws::accounts::{self, AccountsOptions, RoleArn, RoleSession};
use crate::aws::error::Cause;
use crate::aws::sqs::SdkQueue;
use crate::aws::{AwsMetrics, sdk};
use crate::file_sd::{self, Staging, Tried};
use crate::prom_config::{PromConfig, PrometheusMode};
use crate::remote_write::{AmpProbe, probe_target};

pub mod lint;
pub mod permissions;
pub mod report;

pub use lint::{Setup, glob_match, lint, lint_setup};
pub use report::{Report, Row, Status};

use permissions::{CLOUDMAP_ACTIONS, TASK_ROLE, enrichment_actions};

/// What `check` looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckOptions {
    /// The selected namespaces (a real service of the first one is tried).
    pub namespaces: Vec<String>,
    /// The targets file (`-`: stdout); None: no file (`--output none`).
    pub output: Option<PathBuf>,
    /// The EC2 hosts file.
    pub hosts_output: Option<PathBuf>,
    pub ecs_enrichment: bool,
    pub ec2_enrichment: bool,
    /// `--ecs-service-tags` (ecs:DescribeServices).
    pub ecs_service_tags: bool,
    /// The hosts file lists the container instances of the clusters seen
    /// (ecs:ListContainerInstances), not hosts by tag.
    pub hosts_by_cluster: bool,
    /// `--amp-remote-write-url`.
    pub amp_url: Option<String>,
    /// `--prometheus-config`: linted, and its remote_write URL probed.
    pub prometheus_config: Option<PathBuf>,
    /// Deadline of each AWS call and of the probe.
    pub api_timeout: Duration,
    /// `--prometheus-mode`: what the lint expects of the configuration.
    pub prometheus_mode: PrometheusMode,
    /// `/sd/*` requires a bearer token (`--http-sd-bearer-token-file`).
    pub http_sd_token: bool,
    /// The accounts to check: the own one, and each role's.
    pub accounts: AccountsOptions,
    /// `--events-queue-url`: the queue's rows.
    pub events_queue_url: Option<String>,
}

/// Runs every check. `sdk` is the loaded AWS configuration.
pub async fn run(options: &CheckOptions, sdk: &SdkConfig) -> Report {
    let mut rows = Vec::new();
    let region = sdk.region().map(|r| r.to_string());
    rows.push(region_row(region.as_deref()));
    let credentials = credentials_row(sdk, options.api_timeout).await;
    let creds_ok = credentials.status == Status::Pass;
    rows.push(credentials);
    match region.as_deref() {
        Some(region) if creds_ok => rows.extend(account_rows(sdk, options, region).await),
        _ => rows.extend(skipped_permission_rows(options)),
    }
    if let Some(url) = &options.events_queue_url {
        match region.as_deref() {
            Some(_) if creds_ok => {
                let queue = SdkQueue::new(sdk, url, options.api_timeout, Arc::default());
                rows.extend(permissions::queue_rows(&queue, TASK_ROLE).await);
            }
            _ => rows.extend(
                permissions::QUEUE_ACTIONS
                    .iter()
                    .map(|a| Row::new(*a, Status::Skip, "no Region or credentials")),
            ),
        }
    }
    rows.push(match &options.output {
        Some(output) => output_dir_row(output),
        None => Row::new(
            "output directory writable",
            Status::Skip,
            "--output none: no file, the targets are served at /sd/targets",
        ),
    });
    if let Some(hosts) = &options.hosts_output {
        let mut row = output_dir_row(hosts);
        row.check = "ec2 hosts output directory writable".into();
        rows.push(row);
    }
    let config = prometheus_config(options, &mut rows);
    let probe = probe_row(options, config.as_ref(), sdk).await;
    rows.push(match probe.status {
        // Without credentials the probe can only say so again: the row above says
        // what to set.
        Status::Fail if !creds_ok => Row::new(probe.check, Status::Skip, "needs AWS credentials"),
        _ => probe,
    });
    match &config {
        Some(c) => rows.extend(lint_setup(
            c,
            Setup {
                output: options.output.as_deref(),
                mode: options.prometheus_mode,
                token: options.http_sd_token,
            },
        )),
        None if options.prometheus_config.is_none() => rows.push(Row::new(
            "prometheus: config lint",
            Status::Skip,
            "give --prometheus-config FILE to lint it",
        )),
        None => {}
    }
    Report { rows }
}

/// Deadline for the whole check, so a hanging endpoint cannot hang the command.
pub fn deadline(options: &CheckOptions) -> Duration {
    // The Cloud Map rows, the service lookup, credentials, the ECS/EC2 rows (5)
    // and the probe, each bounded by --api-timeout; the account rows once more
    // for each role (with its AssumeRole).
    let a = &options.accounts;
    let extra = (CLOUDMAP_ACTIONS.len() as u32 + 7) * a.roles.len() as u32;
    let queue = match options.events_queue_url {
        Some(_) => permissions::QUEUE_ACTIONS.len() as u32,
        None => 0,
    };
    options.api_timeout * (CLOUDMAP_ACTIONS.len() as u32 + 11 + extra + queue)
}

fn region_row(region: Option<&str>) -> Row {
    match region {
        Some(r) => Row::new("aws region", Status::Pass, r),
        None => Row::new("aws region", Status::Fail, Cause::NoRegion.to_string()),
    }
}

async fn credentials_row(sdk: &SdkConfig, timeout: Duration) -> Row {
    let Some(provider) = sdk.credentials_provider() else {
        return Row::new("aws credentials", Status::Fail, "no credentials provider");
    };
    match tokio::time::timeout(timeout, provider.provide_credentials()).await {
        Err(_) => Row::new(
            "aws credentials",
            Status::Fail,
            Cause::CredentialsUnavailable.line(&format!("no answer within {timeout:?}")),
        ),
        Ok(Err(e)) => {
            // The line `once` prints, without the call's name.
            let (cause, detail) = Cause::of_credentials(&e);
            Row::new("aws credentials", Status::Fail, cause.line(&detail))
        }
        Ok(Ok(c)) => {
            let shown: String = c.access_key_id().chars().take(4).collect();
            let temporary = if c.session_token().is_some() {
                " (temporary)"
            } else {
                ""
            };
            Row::new(
                "aws credentials",
                Status::Pass,
                format!("access key {shown}...{temporary}"),
            )
        }
    }
}

/// Every AWS permission in every account: without a role, the own account's rows
/// as they always were; with roles, the own account's (unless --own-account
/// false), then for each role its AssumeRole and its permissions, each row named
/// by its account.
async fn account_rows(sdk: &SdkConfig, options: &CheckOptions, region: &str) -> Vec<Row> {
    let a = &options.accounts;
    if !a.labelled() {
        return permission_rows(sdk, options, region, TASK_ROLE).await;
    }
    let metrics = AwsMetrics::default();
    let mut rows = Vec::new();
    if a.own {
        let (row, id) = match accounts::own_account(sdk, &metrics).await {
            Ok(id) => (
                Row::new(
                    "sts:GetCallerIdentity",
                    Status::Pass,
                    format!("own account {id}"),
                ),
                id,
            ),
            Err(e) => (
                Row::new("sts:GetCallerIdentity", Status::Fail, e.to_string()),
                "own account".to_string(),
            ),
        };
        rows.push(row);
        let own = permission_rows(sdk, options, region, TASK_ROLE).await;
        rows.extend(named(&id, own));
    }
    for role in &a.roles {
        rows.extend(role_rows(sdk, options, region, role).await);
    }
    rows
}

/// One role's rows: the AssumeRole, then each permission through the role.
async fn role_rows(
    sdk: &SdkConfig,
    options: &CheckOptions,
    region: &str,
    role: &RoleArn,
) -> Vec<Row> {
    let external_id = options.accounts.external_id.as_deref();
    let metrics = Arc::new(AwsMetrics::default());
    let (conf, session) = accounts::role_config(sdk, role, external_id, metrics).await;
    let assumed = assume_row(&session, options.api_timeout).await;
    let ok = assumed.status == Status::Pass;
    let mut rows = vec![assumed];
    let permissions = if ok {
        let principal = format!("role {role}");
        permission_rows(&conf, options, region, &principal).await
    } else {
        skipped_permission_rows(options)
            .into_iter()
            .map(|r| Row::new(r.check, Status::Skip, "the role could not be assumed"))
            .collect()
    };
    rows.extend(permissions);
    named(role.account(), rows)
}

/// Assumes the role once, as the sidecar would.
async fn assume_row(session: &RoleSession, timeout: Duration) -> Row {
    const NAME: &str = "sts:AssumeRole";
    session.begin_cycle();
    let role = session.role();
    match tokio::time::timeout(timeout, session.provide_credentials()).await {
        Ok(Ok(_)) => Row::new(NAME, Status::Pass, format!("assumed {role}")),
        // The one line the sidecar logs: what to set when the own credentials or
        // the endpoint are at fault, else which policies to fix.
        Ok(Err(_)) => match session.failure() {
            Some(e) => Row::new(NAME, Status::Fail, session.failure_line(&e)),
            None => Row::new(NAME, Status::Fail, format!("cannot assume {role}")),
        },
        Err(_) => Row::new(
            NAME,
            Status::Fail,
            format!("STS did not answer within {timeout:?} for {role}"),
        ),
    }
}

/// `rows`, each check named `ACCOUNT: check`.
fn named(account: &str, rows: Vec<Row>) -> Vec<Row> {
    rows.into_iter()
        .map(|r| Row {
            check: format!("{account}: {}", r.check),
            ..r
        })
        .collect()
}

/// Every AWS permission of one account, through the sidecar's adapters;
/// `principal`: who must be granted a denied action.
async fn permission_rows(
    sdk: &SdkConfig,
    options: &CheckOptions,
    region: &str,
    principal: &str,
) -> Vec<Row> {
    let clients = sdk::clients(sdk, Arc::new(AwsMetrics::default()));
    let subject = permissions::subject(&clients.cloudmap, &options.namespaces, region).await;
    let mut rows = permissions::cloudmap_rows(&clients.cloudmap, &subject, principal).await;
    let enrichment =
        permissions::enrichment_rows(&clients.ecs, &clients.ec2, options, principal).await;
    rows.extend(enrichment);
    rows
}

fn skipped_permission_rows(options: &CheckOptions) -> Vec<Row> {
    CLOUDMAP_ACTIONS
        .iter()
        .copied()
        .chain(enrichment_actions(options))
        .map(|action| Row::new(action, Status::Skip, "no Region or credentials"))
        .collect()
}

/// Publishes and removes a file beside `output` the way the writer does: the
/// staging directory made (and removed again when this made it), a temporary file
/// named as the writer names its own written there and renamed into the directory.
/// A staging directory that cannot be used is a warning: the writer falls back to
/// temporary files beside the file, which cost Prometheus a scan per write chunk.
pub fn output_dir_row(output: &Path) -> Row {
    const NAME: &str = "output directory writable";
    if file_sd::is_stdout(output) {
        return Row::new(NAME, Status::Skip, "--output - (stdout)");
    }
    match file_sd::try_directory(output) {
        Ok(Tried {
            dir,
            staging: Staging::Hidden(staging),
        }) => Row::new(
            NAME,
            Status::Pass,
            format!(
                "{}: write in {}, rename into {}, remove",
                dir.display(),
                staging.display(),
                dir.display()
            ),
        ),
        Ok(Tried {
            dir,
            staging: Staging::Beside(why),
        }) => Row::new(
            NAME,
            Status::Warn,
            format!(
                "{}: write, rename, remove; but {why}, so temporary files go beside the file \
                 and Prometheus re-reads its files on every write chunk (several file_sd scans \
                 per change): let the sidecar make {} there",
                dir.display(),
                file_sd::STAGING_DIR
            ),
        ),
        Err(e) => Row::new(
            NAME,
            Status::Fail,
            format!("{e} (--output {})", output.display()),
        ),
    }
}

/// Reads `--prometheus-config` when given, with a row that says whether it could.
fn prometheus_config(options: &CheckOptions, rows: &mut Vec<Row>) -> Option<PromConfig> {
    let path = options.prometheus_config.as_ref()?;
    const NAME: &str = "prometheus: config file";
    match PromConfig::load(path) {
        Ok(c) => {
            rows.push(Row::new(NAME, Status::Pass, path.display().to_string()));
            Some(c)
        }
        Err(e) => {
            rows.push(Row::new(NAME, Status::Fail, e.to_string()));
            None
        }
    }
}

/// The AMP probe, with the same target and signing Region `run` would use.
async fn probe_row(options: &CheckOptions, config: Option<&PromConfig>, sdk: &SdkConfig) -> Row {
    const NAME: &str = "amp remote_write probe";
    let region = sdk.region().map(|r| r.to_string());
    let Some((url, sig_region)) =
        probe_target(options.amp_url.as_deref(), config, region.as_deref())
    else {
        return Row::new(
            NAME,
            Status::Skip,
            "no --amp-remote-write-url and no remote_write URL in --prometheus-config",
        );
    };
    match AmpProbe::new(
        &url,
        sig_region,
        sdk.credentials_provider(),
        options.api_timeout,
    ) {
        Err(e) => Row::new(NAME, Status::Fail, e.to_string()),
        Ok(p) => {
            let o = p.probe().await;
            let status = if o.result.is_ok() {
                Status::Pass
            } else {
                Status::Fail
            };
            Row::new(NAME, status, format!("{url}: {o}"))
        }
    }
}

#[cfg(test)]
mod tests;
