//! `cloudmap-sd check`: a preflight run before (or beside) the sidecar. Each check is a
//! row of a [`Report`]: Region and credentials, each AWS permission the sidecar uses
//! (exercised through the sidecar's own adapters with a harmless call), the output
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

use crate::aws::error::Cause;
use crate::aws::{AwsMetrics, sdk};
use crate::file_sd;
use crate::prom_config::PromConfig;
use crate::remote_write::{AmpProbe, probe_target};

pub mod lint;
pub mod permissions;
pub mod report;

pub use lint::{glob_match, lint};
pub use report::{Report, Row, Status};

use permissions::{CLOUDMAP_ACTIONS, enrichment_actions};

/// What `check` looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckOptions {
    /// The selected namespaces (a real service of the first one is tried).
    pub namespaces: Vec<String>,
    /// The targets file (`-`: stdout).
    pub output: PathBuf,
    /// The EC2 hosts file.
    pub hosts_output: Option<PathBuf>,
    pub ecs_enrichment: bool,
    pub ec2_enrichment: bool,
    /// The hosts file lists the container instances of the clusters seen
    /// (ecs:ListContainerInstances), not hosts by tag.
    pub hosts_by_cluster: bool,
    /// `--amp-remote-write-url`.
    pub amp_url: Option<String>,
    /// `--prometheus-config`: linted, and its remote_write URL probed.
    pub prometheus_config: Option<PathBuf>,
    /// Deadline of each AWS call and of the probe.
    pub api_timeout: Duration,
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
        Some(region) if creds_ok => rows.extend(permission_rows(sdk, options, region).await),
        _ => rows.extend(skipped_permission_rows(options)),
    }
    rows.push(output_dir_row(&options.output));
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
        Some(c) => rows.extend(lint(c, &options.output)),
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
    // The Cloud Map rows, the service lookup, credentials, the ECS/EC2 rows (4)
    // and the probe, each bounded by --api-timeout.
    options.api_timeout * (CLOUDMAP_ACTIONS.len() as u32 + 10)
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

/// Every AWS permission, through the sidecar's adapters.
async fn permission_rows(sdk: &SdkConfig, options: &CheckOptions, region: &str) -> Vec<Row> {
    let clients = sdk::clients(sdk, Arc::new(AwsMetrics::default()));
    let subject = permissions::subject(&clients.cloudmap, &options.namespaces, region).await;
    let mut rows = permissions::cloudmap_rows(&clients.cloudmap, &subject).await;
    rows.extend(permissions::enrichment_rows(&clients.ecs, &clients.ec2, options).await);
    rows
}

fn skipped_permission_rows(options: &CheckOptions) -> Vec<Row> {
    CLOUDMAP_ACTIONS
        .iter()
        .chain(enrichment_actions(options))
        .map(|action| Row::new(*action, Status::Skip, "no Region or credentials"))
        .collect()
}

/// Writes, renames and removes a temporary file next to `output`, named as the
/// writer names its own.
pub fn output_dir_row(output: &Path) -> Row {
    const NAME: &str = "output directory writable";
    if file_sd::is_stdout(output) {
        return Row::new(NAME, Status::Skip, "--output - (stdout)");
    }
    match file_sd::try_directory(output) {
        Ok(dir) => Row::new(
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
