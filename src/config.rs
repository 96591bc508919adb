//! Command line and configuration: one clap-derive tree, every flag with a
//! `CLOUDMAP_SD_*` environment twin, validated once before any AWS call.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::aws::accounts::{AccountsOptions, RoleArn, check_external_id};
use crate::check::CheckOptions;
use crate::discovery::DiscoveryOptions;
use crate::enrich::EnrichOptions;
use crate::file_sd;
use crate::http_sd::HttpSdOptions;
pub use crate::model::{HealthStatus, Shard, ShardKey};
pub use crate::prom_config::PrometheusMode;
use crate::remote_write::{ProbeOptions, RemoteWriteOptions, WatchConfig};
use crate::sidecar::{HostsFile, SidecarOptions};
use crate::targets::TargetOptions;
pub use crate::targets::{LabelStyle, MetaLabels};
pub use crate::telemetry::LogFormat;

/// Exit code for bad configuration (EX_USAGE from sysexits.h).
pub const EXIT_CONFIG: i32 = 64;

/// Prometheus file_sd targets from AWS Cloud Map services tagged METRICS_PATH /
/// METRICS_PORT, written atomically and only when they change.
///
/// AWS settings come from the standard chain: AWS_REGION, credentials, the ECS task
/// role, and AWS_ENDPOINT_URL for moto server or LocalStack.
#[derive(Debug, Parser)]
#[command(name = "cloudmap-sd", version, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub options: Options,
}

/// What to do; `run` when none is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Run the sidecar: discover every --interval, rewrite the file when it changes,
    /// serve /-/healthy, /-/ready and /metrics on --listen (the default command).
    Run,
    /// One discovery pass: write the output file (or print it with `--output -`).
    /// Exits 0 on success; non-zero when discovery failed, and then writes nothing.
    Once,
    /// Exit 0 when the sidecar listening on --listen is ready (has written its file),
    /// 1 otherwise. For an ECS container health check in an image with no shell or curl.
    Healthcheck,
    /// Preflight: Region and credentials, each AWS permission the sidecar uses, the
    /// output directory, the AMP remote_write probe and (with --prometheus-config) a
    /// lint of the Prometheus configuration. Prints a table; exits 1 on any failure.
    Check(CheckArgs),
}

/// Flags shared by every command.
#[derive(Debug, Clone, Args)]
pub struct Options {
    /// Cloud Map namespace to discover, by name (HTTP, private or public DNS).
    /// Repeat the flag, or give a comma-separated list in the environment variable.
    /// None: every namespace in the Region.
    #[arg(
        long = "namespace",
        env = "CLOUDMAP_SD_NAMESPACE",
        value_delimiter = ',',
        global = true
    )]
    pub namespaces: Vec<String>,

    /// An IAM role to assume, to discover in its account as in the sidecar's own:
    /// Cloud Map, the ECS and EC2 enrichment and the hosts file. One role per
    /// account; repeat the flag, or give a comma-separated list in the environment
    /// variable. With any role, every target carries `aws_account_id`. The
    /// sidecar's own role needs sts:AssumeRole on each; each role needs the
    /// discovery permissions in its account.
    #[arg(long = "role-arn", env = "CLOUDMAP_SD_ROLE_ARN", value_delimiter = ',', value_parser = clap::value_parser!(RoleArn), global = true)]
    pub role_arns: Vec<RoleArn>,

    /// The external id the trust policies of the --role-arn roles ask for.
    #[arg(long, env = "CLOUDMAP_SD_ROLE_EXTERNAL_ID", value_parser = parse_external_id, global = true)]
    pub role_external_id: Option<String>,

    /// With --role-arn: also discover in the account of the sidecar's own
    /// credentials. `false` discovers only in the roles' accounts.
    #[arg(long, env = "CLOUDMAP_SD_OWN_ACCOUNT", default_value_t = true, action = clap::ArgAction::Set, global = true)]
    pub own_account: bool,

    /// The file_sd JSON file to write. Its directory must exist and be writable by
    /// the sidecar: each write goes to a temporary file in the hidden subdirectory
    /// `.cloudmap-sd-staging` it makes there, then is renamed over the file, so
    /// Prometheus's watch of the directory sees one event per change. (When that
    /// subdirectory cannot be made, temporary files go beside the file, with a warning.)
    /// Give Prometheus a file_sd glob that matches the file (`*.json`); temporary files
    /// are hidden and end in `.tmp`, so no glob picks them up. `-` prints the JSON to
    /// stdout (only with `once`). `none` writes no file (only with `run`): the
    /// targets are served at /sd/targets only, and /-/ready turns true after the
    /// first complete discovery (a file named `none` is `./none`).
    #[arg(
        long,
        env = "CLOUDMAP_SD_OUTPUT",
        default_value = "cloudmap-sd.json",
        global = true
    )]
    pub output: PathBuf,

    /// Time between discovery cycles (humantime: `30s`, `1m`).
    #[arg(long, env = "CLOUDMAP_SD_INTERVAL", default_value = "30s", value_parser = parse_duration, global = true)]
    pub interval: Duration,

    /// Address of the HTTP server for /-/healthy (liveness), /-/ready (readiness: true
    /// after the first successful write), /metrics, and the http_sd endpoints
    /// /sd/targets and /sd/hosts. Loopback by default; to serve collectors in other
    /// tasks, listen on `0.0.0.0:9469` and set --http-sd-bearer-token-file.
    #[arg(
        long,
        env = "CLOUDMAP_SD_LISTEN",
        default_value = "127.0.0.1:9469",
        global = true
    )]
    pub listen: SocketAddr,

    /// A file holding the bearer token that /sd/targets and /sd/hosts require
    /// (`Authorization: Bearer <token>`; 401 without it). Read at start and again on
    /// SIGHUP (a file that cannot be read then keeps the token in use); compared in
    /// constant time. /-/healthy, /-/ready and /metrics stay open. Unset: /sd/* is
    /// open to whoever reaches --listen.
    #[arg(long, env = "CLOUDMAP_SD_HTTP_SD_BEARER_TOKEN_FILE", global = true)]
    pub http_sd_bearer_token_file: Option<PathBuf>,

    /// Label set written for each target. `default`: cloudmap_* / ecs_* labels, never a
    /// bare `cluster` label. `reloader`: exactly the labels of prometheus-sdconfig-reloader
    /// (cluster, service, taskdefinition, namespace, taskid, instance) for a drop-in
    /// migration; its `cluster` label overrides a `cluster` external label.
    #[arg(long, env = "CLOUDMAP_SD_LABEL_STYLE", value_enum, default_value_t = LabelStyle::Default, global = true)]
    pub label_style: LabelStyle,

    /// Which `__meta_*` labels each target carries (default label style; the reloader
    /// style has none). `all`: every Cloud Map instance attribute
    /// (`__meta_cloudmap_instance_attribute_<key>`) and service tag
    /// (`__meta_cloudmap_service_tag_<key>`). `tags`: the service tags only. `none`:
    /// neither, the plain labels only. Only relabel_configs can read them, yet
    /// Prometheus keeps them in memory for every target and parses them on every
    /// file_sd read: `none` makes the file about half as big (docs/labels.md).
    #[arg(long, env = "CLOUDMAP_SD_META_LABELS", value_enum, default_value_t = MetaLabels::All, global = true)]
    pub meta_labels: MetaLabels,

    /// Which instances DiscoverInstances returns, by Cloud Map health status.
    #[arg(long, env = "CLOUDMAP_SD_HEALTH_STATUS", value_enum, default_value_t = HealthStatus::HealthyOrElseAll, global = true)]
    pub health_status: HealthStatus,

    /// Port used when neither the endpoint's port tag nor the instance's
    /// AWS_INSTANCE_PORT attribute gives one. Unset: such an endpoint is skipped with a
    /// warning. The old reloader used 80.
    #[arg(long, env = "CLOUDMAP_SD_DEFAULT_PORT", value_parser = clap::value_parser!(u16).range(1..), global = true)]
    pub default_port: Option<u16>,

    /// How often service tags (and the namespace list) are read again. Between
    /// refreshes tags come from the cache.
    #[arg(long, env = "CLOUDMAP_SD_TAGS_REFRESH", default_value = "5m", value_parser = parse_duration, global = true)]
    pub tags_refresh: Duration,

    /// How often a listing of the Cloud Map services (ListServices) starts, to find
    /// new services. Known services are checked every --interval whatever this
    /// says, and a deleted service drops out at once.
    #[arg(long, env = "CLOUDMAP_SD_SERVICES_REFRESH", default_value = "1m", value_parser = parse_duration, global = true)]
    pub services_refresh: Duration,

    /// Listing calls per cycle after the first: ListServices pages (100 services
    /// each) and the namespace re-read. A listing of P pages spreads over P / N
    /// cycles, so a steady cycle costs one revision call per service plus at most N.
    /// The first cycle lists everything.
    #[arg(long, env = "CLOUDMAP_SD_LISTING_PAGES", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..), global = true)]
    pub listing_pages: u16,

    /// How often a service's instances are read in full even when its
    /// DiscoverInstancesRevision has not changed (the revision ignores health changes).
    #[arg(long, env = "CLOUDMAP_SD_FULL_REFRESH", default_value = "5m", value_parser = parse_duration, global = true)]
    pub full_refresh: Duration,

    /// Most AWS API calls in flight at once.
    #[arg(long, env = "CLOUDMAP_SD_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=256), global = true)]
    pub concurrency: u16,

    /// Deadline for one AWS API call, retries included.
    #[arg(long, env = "CLOUDMAP_SD_API_TIMEOUT", default_value = "10s", value_parser = parse_duration, global = true)]
    pub api_timeout: Duration,

    /// Deadline for one whole discovery cycle, so a stalled endpoint cannot stall
    /// the loop: calls still running then are abandoned, their services keep their
    /// last known targets, and the file is written with what is known. Default: the
    /// --interval.
    #[arg(long, env = "CLOUDMAP_SD_CYCLE_TIMEOUT", value_parser = parse_duration, global = true)]
    pub cycle_timeout: Option<Duration>,

    /// Publish only this shard's share of the targets, `INDEX/COUNT` (e.g. `0/3`,
    /// `1/3`, `2/3`): a target belongs to shard md5(key) mod COUNT, the function of
    /// Prometheus's `hashmod`, so the split is stable across restarts and versions.
    /// The HA replicas of one shard pass the same INDEX. Unset: every target.
    #[arg(long, env = "CLOUDMAP_SD_SHARD", value_parser = clap::value_parser!(Shard), global = true)]
    pub shard: Option<Shard>,

    /// What --shard hashes. `service`: `namespace/service`, so a service's targets
    /// stay together and other shards' services cost no API calls. `task`: the
    /// Cloud Map instance id (the ECS task id), for a finer split of large services.
    #[arg(long, env = "CLOUDMAP_SD_SHARD_KEY", value_enum, default_value_t = ShardKey::Service, global = true)]
    pub shard_key: ShardKey,

    /// Log format on stderr. The level comes from RUST_LOG (default `info`).
    #[arg(long, env = "CLOUDMAP_SD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    /// Base URL of the Prometheus beside the sidecar. The remote-write watch reads its
    /// own metrics (`/metrics`) to judge each remote_write queue.
    #[arg(
        long,
        env = "CLOUDMAP_SD_PROMETHEUS_URL",
        default_value = "http://127.0.0.1:9090",
        global = true
    )]
    pub prometheus_url: String,

    /// Time between two reads of Prometheus's metrics by the remote-write watch. `0s`
    /// turns the watch off. Prometheus not running (yet) is reported as the state
    /// `unreachable`, not as an error.
    #[arg(long, env = "CLOUDMAP_SD_REMOTE_WRITE_WATCH_INTERVAL", default_value = "30s", value_parser = parse_duration, global = true)]
    pub remote_write_watch_interval: Duration,

    /// Remote-write lag (newest sample seen minus newest sample sent) at which a queue
    /// is `failing`; half of it makes the queue `degraded`.
    #[arg(long, env = "CLOUDMAP_SD_REMOTE_WRITE_MAX_LAG", default_value = "2m", value_parser = parse_duration, global = true)]
    pub remote_write_max_lag: Duration,

    /// AMP remote_write URL to probe
    /// (`https://aps-workspaces.<region>.amazonaws.com/workspaces/<id>/api/v1/remote_write`).
    /// Default: the first AMP remote_write URL in --prometheus-config. Neither: no probe.
    #[arg(long, env = "CLOUDMAP_SD_AMP_REMOTE_WRITE_URL", global = true)]
    pub amp_remote_write_url: Option<String>,

    /// Time between two SigV4-signed AMP probes (one is sent at start). `0s` turns the
    /// probe off in `run`; `check` always probes.
    #[arg(long, env = "CLOUDMAP_SD_AMP_PROBE_INTERVAL", default_value = "5m", value_parser = parse_duration, global = true)]
    pub amp_probe_interval: Duration,

    /// The Prometheus configuration file: its remote_write URL is probed when
    /// --amp-remote-write-url is not given, and `check` lints it.
    #[arg(long, env = "CLOUDMAP_SD_PROMETHEUS_CONFIG", global = true)]
    pub prometheus_config: Option<PathBuf>,

    /// How the Prometheus beside the sidecar runs. `agent` (`--enable-feature=agent`
    /// in 2.x, `--agent` in 3.x) keeps no local TSDB: `check` then fails a
    /// configuration with rule_files, alerting or remote_read (agent mode refuses
    /// them), and the remote-write watch treats a missing remote_write queue as
    /// samples lost. The watch warns when Prometheus runs in the other mode.
    #[arg(long, env = "CLOUDMAP_SD_PROMETHEUS_MODE", value_enum, default_value_t = PrometheusMode::Server, global = true)]
    pub prometheus_mode: PrometheusMode,

    /// A Cloud Map service with no endpoint tag of its own (METRICS_*,
    /// ECS_METRICS_*; e.g. one that ECS Service Connect owns) takes them from the
    /// ECS service its instances name (ECS_CLUSTER_NAME, ECS_SERVICE_NAME), read with
    /// DescribeServices on the --tags-refresh clock. Needs ecs:DescribeServices.
    /// Cloud Map tags win when the Cloud Map service has any endpoint tag.
    #[arg(long, env = "CLOUDMAP_SD_ECS_SERVICE_TAGS", default_value_t = true, action = clap::ArgAction::Set, global = true)]
    pub ecs_service_tags: bool,

    /// Add ECS and EC2 facts to each task's labels (ecs_launch_type,
    /// ecs_task_revision, ec2_instance_id, ec2_name, ec2_instance_type), and read its
    /// port bindings, so that in bridge or host network mode a port tag (a container
    /// port) is published at its host port. Needs ecs:DescribeTasks,
    /// ecs:DescribeContainerInstances and ec2:DescribeInstances. `false`: ports are
    /// used as they are.
    #[arg(long, env = "CLOUDMAP_SD_ECS_ENRICHMENT", default_value_t = true, action = clap::ArgAction::Set, global = true)]
    pub ecs_enrichment: bool,

    /// With --ecs-enrichment: also read each task's EC2 host (ec2_instance_id,
    /// ec2_name, ec2_instance_type). `false` keeps the ECS facts only, and the
    /// sidecar then needs neither ecs:DescribeContainerInstances nor
    /// ec2:DescribeInstances.
    #[arg(long, env = "CLOUDMAP_SD_EC2_ENRICHMENT", default_value_t = true, action = clap::ArgAction::Set, global = true)]
    pub ec2_enrichment: bool,

    /// Longest a new task is held out of the file while its ECS/EC2 facts cannot be
    /// read, so its labels do not change once it is published. After that it is
    /// published without them.
    #[arg(long, env = "CLOUDMAP_SD_ENRICHMENT_HOLD", default_value = "60s", value_parser = parse_duration, global = true)]
    pub enrichment_hold: Duration,

    /// How often EC2 host tags (the Name tag) are read again; task facts are read
    /// once per task.
    #[arg(long, env = "CLOUDMAP_SD_EC2_NAME_REFRESH", default_value = "10m", value_parser = parse_duration, global = true)]
    pub ec2_name_refresh: Duration,

    /// Also write a file_sd file of EC2 hosts (node exporter, cAdvisor): the
    /// container instances of every cluster in which a discovered task runs (listed
    /// again every --ec2-name-refresh; needs ecs:ListContainerInstances), or the
    /// running instances matching --ec2-hosts-tag. One target per host and
    /// --ec2-hosts-port, `instance` set to the host's Name tag. Written as --output is
    /// (its directory must be writable; the staging subdirectory is made there too).
    /// The list is also served at /sd/hosts; `none` makes it for /sd/hosts only,
    /// with no file (`run`).
    #[arg(long, env = "CLOUDMAP_SD_EC2_HOSTS_OUTPUT", global = true)]
    pub ec2_hosts_output: Option<PathBuf>,

    /// Port scraped on each EC2 host; repeatable (env: comma-separated).
    #[arg(long = "ec2-hosts-port", env = "CLOUDMAP_SD_EC2_HOSTS_PORT", value_delimiter = ',', default_value = "9100", value_parser = clap::value_parser!(u16).range(1..), global = true)]
    pub ec2_hosts_ports: Vec<u16>,

    /// Select the EC2 hosts of --ec2-hosts-output by tag, `KEY=VALUE` (running
    /// instances only), instead of by the tasks seen on them.
    #[arg(long, env = "CLOUDMAP_SD_EC2_HOSTS_TAG", value_parser = parse_tag_filter, global = true)]
    pub ec2_hosts_tag: Option<TagFilter>,
}

/// An EC2 tag filter, `KEY=VALUE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagFilter {
    pub key: String,
    pub value: String,
}

fn parse_external_id(s: &str) -> Result<String, String> {
    check_external_id(s).map(|()| s.to_string())
}

fn parse_tag_filter(s: &str) -> Result<TagFilter, String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok(TagFilter {
            key: k.to_string(),
            value: v.to_string(),
        }),
        _ => Err("expected KEY=VALUE, e.g. ecs-cluster=prod".into()),
    }
}

/// Flags of `check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Args)]
pub struct CheckArgs {
    /// Output: a readable table, or one JSON object.
    #[arg(long, env = "CLOUDMAP_SD_CHECK_FORMAT", value_enum, default_value_t = CheckFormat::Table)]
    pub format: CheckFormat,
}

/// Output format of `check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CheckFormat {
    /// Columns CHECK, RESULT, DETAIL and a summary line.
    Table,
    /// `{"ok": bool, "checks": [{"check", "status", "detail"}]}`.
    Json,
}

/// An absolute http(s) URL with a host.
fn check_http_url(url: &str) -> Result<(), String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("not a URL ({e})"))?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(_)) => Ok(()),
        _ => Err("needs http:// or https:// and a host".into()),
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 30s, 2m, 1h)"))
}

/// A configuration that passed validation: every part's options, built once.
#[derive(Debug, Clone)]
pub struct Config {
    pub command: Command,
    pub log_format: LogFormat,
    /// Deadline of one AWS call (the SDK configuration's timeouts).
    pub api_timeout: Duration,
    /// The HTTP server's address (and the one `healthcheck` asks).
    pub listen: SocketAddr,
    /// The accounts to discover in.
    pub accounts: AccountsOptions,
    pub sidecar: SidecarOptions,
    pub remote_write: RemoteWriteOptions,
    pub check: CheckOptions,
    pub http_sd: HttpSdOptions,
}

/// What is wrong with a configuration, in one line.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl Cli {
    /// Checks what clap cannot (relations between flags and sane values), then
    /// builds every part's options.
    pub fn validate(self) -> Result<Config, ConfigError> {
        let command = self.command.unwrap_or(Command::Run);
        let o = &self.options;
        check_clocks(o).map_err(ConfigError)?;
        check_urls(o).map_err(ConfigError)?;
        check_outputs(o, command).map_err(ConfigError)?;
        check_accounts(o).map_err(ConfigError)?;
        Ok(build(command, normalized(self.options)))
    }
}

fn check_clocks(o: &Options) -> Result<(), String> {
    if o.interval < Duration::from_secs(1) {
        return Err(format!(
            "--interval {} is too short: use 1s or more",
            humantime::format_duration(o.interval)
        ));
    }
    for (flag, d) in [
        ("--tags-refresh", o.tags_refresh),
        ("--full-refresh", o.full_refresh),
        ("--services-refresh", o.services_refresh),
    ] {
        if d < o.interval {
            return Err(format!(
                "{flag} {} is shorter than --interval {}",
                humantime::format_duration(d),
                humantime::format_duration(o.interval)
            ));
        }
    }
    if o.api_timeout.is_zero() {
        return Err("--api-timeout must be more than 0s".into());
    }
    if o.cycle_timeout.is_some_and(|d| d < Duration::from_secs(1)) {
        return Err("--cycle-timeout: use 1s or more".into());
    }
    for (flag, d) in [
        (
            "--remote-write-watch-interval",
            o.remote_write_watch_interval,
        ),
        ("--amp-probe-interval", o.amp_probe_interval),
    ] {
        if !d.is_zero() && d < Duration::from_secs(1) {
            return Err(format!("{flag}: use 0s (off) or 1s or more"));
        }
    }
    if o.remote_write_max_lag < Duration::from_secs(1) {
        return Err("--remote-write-max-lag: use 1s or more".into());
    }
    Ok(())
}

fn check_urls(o: &Options) -> Result<(), String> {
    if let Err(e) = check_http_url(&o.prometheus_url) {
        return Err(format!("--prometheus-url {}: {e}", o.prometheus_url));
    }
    if let Some(u) = &o.amp_remote_write_url
        && let Err(e) = check_http_url(u)
    {
        return Err(format!("--amp-remote-write-url {u}: {e}"));
    }
    Ok(())
}

/// The value of --output and --ec2-hosts-output that writes no file.
const NO_FILE: &str = "none";

/// True for `--output none`: no file, the targets are only served over HTTP.
fn is_no_file(path: &Path) -> bool {
    path == Path::new(NO_FILE)
}

/// The file of an output flag; None for `none`.
fn file_of(path: &Path) -> Option<PathBuf> {
    (!is_no_file(path)).then(|| path.to_path_buf())
}

fn check_outputs(o: &Options, command: Command) -> Result<(), String> {
    if o.namespaces.iter().any(|n| n.trim().is_empty()) {
        return Err("--namespace: empty namespace name".into());
    }
    if o.output.as_os_str().is_empty() {
        return Err("--output: empty path".into());
    }
    let no_file = |flag: &str| {
        format!(
            "{flag} none (no file, served at /sd/*) works only with `run`: `once` writes a file, or prints it with --output -"
        )
    };
    if file_sd::is_stdout(&o.output) {
        if command != Command::Once {
            return Err("--output - (stdout) works only with `once`".into());
        }
    } else if is_no_file(&o.output) {
        if command == Command::Once {
            return Err(no_file("--output"));
        }
    } else if o.output.file_name().is_none() {
        return Err(format!("--output {}: not a file path", o.output.display()));
    }
    let Some(hosts) = &o.ec2_hosts_output else {
        return Ok(());
    };
    if !o.ecs_enrichment || !o.ec2_enrichment {
        return Err(
            "--ec2-hosts-output needs --ecs-enrichment true and --ec2-enrichment true".into(),
        );
    }
    if is_no_file(hosts) {
        return match command {
            Command::Once => Err(no_file("--ec2-hosts-output")),
            _ => Ok(()),
        };
    }
    if hosts == &o.output || file_sd::is_stdout(hosts) || hosts.file_name().is_none() {
        return Err(format!(
            "--ec2-hosts-output {}: must be a file path other than --output",
            hosts.display()
        ));
    }
    Ok(())
}

fn check_accounts(o: &Options) -> Result<(), String> {
    if o.role_arns.is_empty() {
        if o.role_external_id.is_some() {
            return Err("--role-external-id needs a --role-arn".into());
        }
        if !o.own_account {
            return Err(
                "--own-account false leaves no account to discover: give a --role-arn".into(),
            );
        }
    }
    let mut seen = std::collections::BTreeMap::new();
    for role in &o.role_arns {
        if let Some(other) = seen.insert(role.account(), role) {
            return Err(format!(
                "--role-arn {other} and {role} are both in account {}: give one role per account",
                role.account()
            ));
        }
    }
    Ok(())
}

/// Namespaces trimmed, sorted and de-duplicated.
fn normalized(mut options: Options) -> Options {
    options.namespaces = options
        .namespaces
        .iter()
        .map(|n| n.trim().to_string())
        .collect();
    options.namespaces.sort();
    options.namespaces.dedup();
    options
}

/// Every part's options from the flags: the one place they are converted.
fn build(command: Command, o: Options) -> Config {
    Config {
        command,
        log_format: o.log_format,
        api_timeout: o.api_timeout,
        listen: o.listen,
        accounts: accounts_options(&o),
        sidecar: sidecar_options(command, &o),
        remote_write: remote_write_options(&o),
        check: check_options(&o),
        http_sd: HttpSdOptions {
            bearer_token_file: o.http_sd_bearer_token_file.clone(),
            hosts: o.ec2_hosts_output.is_some(),
        },
    }
}

fn accounts_options(o: &Options) -> AccountsOptions {
    AccountsOptions {
        roles: o.role_arns.clone(),
        external_id: o.role_external_id.clone(),
        own: o.own_account,
    }
}

fn sidecar_options(command: Command, o: &Options) -> SidecarOptions {
    SidecarOptions {
        discovery: DiscoveryOptions {
            namespaces: o.namespaces.clone(),
            health: o.health_status,
            tags_refresh: o.tags_refresh,
            full_refresh: o.full_refresh,
            services_refresh: o.services_refresh,
            concurrency: usize::from(o.concurrency),
            listing_pages: usize::from(o.listing_pages),
            shard: o.shard.map(|s| (s, o.shard_key)),
            ecs_service_tags: o.ecs_service_tags,
        },
        enrich: o.ecs_enrichment.then(|| EnrichOptions {
            // One pass has no later cycle to wait for: a task whose host cannot
            // be named is written at once without the host's labels.
            hold: match command {
                Command::Once => Duration::ZERO,
                _ => o.enrichment_hold,
            },
            name_refresh: o.ec2_name_refresh,
            hosts_tag: o
                .ec2_hosts_tag
                .as_ref()
                .map(|t| (t.key.clone(), t.value.clone())),
            want_hosts: o.ec2_hosts_output.is_some(),
            ec2: o.ec2_enrichment,
        }),
        targets: TargetOptions {
            label_style: o.label_style,
            default_port: o.default_port,
            meta_labels: o.meta_labels,
        },
        output: file_of(&o.output),
        hosts: o.ec2_hosts_output.as_ref().map(|path| HostsFile {
            path: file_of(path),
            ports: o.ec2_hosts_ports.clone(),
        }),
        interval: o.interval,
        cycle_timeout: o.cycle_timeout.unwrap_or(o.interval),
    }
}

fn remote_write_options(o: &Options) -> RemoteWriteOptions {
    RemoteWriteOptions {
        watch: (!o.remote_write_watch_interval.is_zero()).then(|| WatchConfig {
            prometheus_url: o.prometheus_url.clone(),
            interval: o.remote_write_watch_interval,
            max_lag: o.remote_write_max_lag,
            timeout: o.remote_write_watch_interval.min(Duration::from_secs(10)),
            mode: o.prometheus_mode,
        }),
        probe: (!o.amp_probe_interval.is_zero()).then(|| ProbeOptions {
            interval: o.amp_probe_interval,
            url: o.amp_remote_write_url.clone(),
            prometheus_config: o.prometheus_config.clone(),
            timeout: o.api_timeout,
        }),
    }
}

fn check_options(o: &Options) -> CheckOptions {
    CheckOptions {
        namespaces: o.namespaces.clone(),
        output: file_of(&o.output),
        hosts_output: o.ec2_hosts_output.as_deref().and_then(file_of),
        ecs_enrichment: o.ecs_enrichment,
        ec2_enrichment: o.ec2_enrichment,
        ecs_service_tags: o.ecs_service_tags,
        hosts_by_cluster: o.ec2_hosts_output.is_some() && o.ec2_hosts_tag.is_none(),
        amp_url: o.amp_remote_write_url.clone(),
        prometheus_config: o.prometheus_config.clone(),
        api_timeout: o.api_timeout,
        prometheus_mode: o.prometheus_mode,
        http_sd_token: o.http_sd_bearer_token_file.is_some(),
        accounts: accounts_options(o),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let cli = Cli::try_parse_from(std::iter::once("cloudmap-sd").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        cli.validate().map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_run_the_sidecar() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.command, Command::Run);
        assert_eq!(c.sidecar.interval, Duration::from_secs(30));
        assert_eq!(c.listen.to_string(), "127.0.0.1:9469");
        assert_eq!(c.sidecar.discovery.health, HealthStatus::HealthyOrElseAll);
        assert_eq!(c.sidecar.targets.label_style, LabelStyle::Default);
        assert_eq!(c.sidecar.targets.meta_labels, MetaLabels::All);
        assert!(c.sidecar.discovery.namespaces.is_empty());
        assert!(c.sidecar.enrich.is_some() && c.remote_write.watch.is_some());
        assert!(c.sidecar.discovery.ecs_service_tags && c.check.ecs_service_tags);
    }

    #[test]
    fn ecs_service_tags_can_be_turned_off() {
        let c = parse(&["--ecs-service-tags", "false"]).unwrap();
        assert!(!c.sidecar.discovery.ecs_service_tags);
        assert!(!c.check.ecs_service_tags);
        let c = parse(&["--ecs-enrichment", "false"]).unwrap();
        assert!(
            c.sidecar.discovery.ecs_service_tags,
            "independent of enrichment"
        );
    }

    #[test]
    fn flags_work_before_and_after_the_subcommand() {
        let c = parse(&[
            "--interval",
            "10s",
            "once",
            "--output",
            "-",
            "--namespace",
            "a",
        ])
        .unwrap();
        assert_eq!(c.command, Command::Once);
        assert_eq!(c.sidecar.interval, Duration::from_secs(10));
        assert_eq!(c.sidecar.discovery.namespaces, vec!["a".to_string()]);
        assert!(file_sd::is_stdout(c.sidecar.output.as_deref().unwrap()));
        assert_eq!(
            c.sidecar.enrich.unwrap().hold,
            Duration::ZERO,
            "once holds no task"
        );
    }

    #[test]
    fn shard_and_its_key() {
        let c = parse(&["--shard", "2/3", "--shard-key", "task"]).unwrap();
        assert_eq!(
            c.sidecar.discovery.shard,
            Some((Shard { index: 2, count: 3 }, ShardKey::Task))
        );
        let c = parse(&[]).unwrap();
        assert_eq!(c.sidecar.discovery.shard, None);
        assert_eq!(c.sidecar.cycle_timeout, c.sidecar.interval);
        assert_eq!(c.sidecar.enrich.unwrap().hold, Duration::from_secs(60));
    }

    #[test]
    fn output_none_serves_without_a_file_in_run_only() {
        let c = parse(&["--output", "none", "--ec2-hosts-output", "none"]).unwrap();
        assert_eq!(c.sidecar.output, None);
        assert_eq!(c.sidecar.hosts.as_ref().unwrap().path, None);
        assert!(c.http_sd.hosts, "the hosts list is on, for /sd/hosts");
        assert_eq!(
            (c.check.output.clone(), c.check.hosts_output.clone()),
            (None, None)
        );
        let c = parse(&["--output", "./none"]).unwrap();
        assert_eq!(
            c.sidecar.output,
            Some(PathBuf::from("./none")),
            "a file named none"
        );
        let c = parse(&["--output", "none", "check"]).unwrap();
        assert_eq!(c.check.output, None);
        for args in [
            &["once", "--output", "none"][..],
            &["once", "--ec2-hosts-output", "none"][..],
        ] {
            let e = parse(args).unwrap_err();
            assert!(e.contains("works only with `run`"), "{args:?}: {e}");
        }
        let c = parse(&[]).unwrap();
        assert!(!c.http_sd.hosts && c.http_sd.bearer_token_file.is_none());
    }

    #[test]
    fn token_file_and_prometheus_mode() {
        let c = parse(&[
            "--http-sd-bearer-token-file",
            "/run/token",
            "--prometheus-mode",
            "agent",
        ])
        .unwrap();
        assert_eq!(
            c.http_sd.bearer_token_file,
            Some(PathBuf::from("/run/token"))
        );
        assert!(c.check.http_sd_token);
        assert_eq!(c.check.prometheus_mode, PrometheusMode::Agent);
        assert_eq!(c.remote_write.watch.unwrap().mode, PrometheusMode::Agent);
        assert_eq!(
            parse(&[]).unwrap().check.prometheus_mode,
            PrometheusMode::Server
        );
        assert!(parse(&["--prometheus-mode", "shard"]).is_err());
    }

    #[test]
    fn namespaces_repeat_and_dedup() {
        let c = parse(&["--namespace", "b", "--namespace", "a,b"]).unwrap();
        assert_eq!(
            c.sidecar.discovery.namespaces,
            vec!["a".to_string(), "b".to_string()]
        );
        assert_eq!(c.check.namespaces, c.sidecar.discovery.namespaces);
    }

    #[test]
    fn meta_labels_choose_the_families() {
        for (arg, want) in [
            ("all", MetaLabels::All),
            ("tags", MetaLabels::Tags),
            ("none", MetaLabels::None),
        ] {
            let c = parse(&["--meta-labels", arg]).unwrap();
            assert_eq!(c.sidecar.targets.meta_labels, want);
        }
        let e = parse(&["--meta-labels", "some"]).unwrap_err();
        assert!(e.contains("--meta-labels"), "{e}");
    }

    #[test]
    fn health_status_uses_the_api_spelling() {
        let c = parse(&["--health-status", "ALL"]).unwrap();
        assert_eq!(c.sidecar.discovery.health, HealthStatus::All);
        assert!(parse(&["--health-status", "sometimes"]).is_err());
    }

    #[test]
    fn roles_their_external_id_and_the_own_account() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.accounts, AccountsOptions::default());
        assert!(!c.accounts.labelled() && c.accounts.own);
        let c = parse(&[
            "--role-arn",
            "arn:aws:iam::111111111111:role/a",
            "--role-arn",
            "arn:aws:iam::222222222222:role/b,arn:aws:iam::333333333333:role/c",
            "--role-external-id",
            "central-prometheus",
            "--own-account",
            "false",
        ])
        .unwrap();
        let accounts: Vec<&str> = c.accounts.roles.iter().map(|r| r.account()).collect();
        assert_eq!(accounts, ["111111111111", "222222222222", "333333333333"]);
        assert_eq!(
            c.accounts.external_id.as_deref(),
            Some("central-prometheus")
        );
        assert!(c.accounts.labelled() && !c.accounts.own);
        assert_eq!(c.check.accounts, c.accounts);
    }

    #[test]
    fn bad_values_are_one_line_errors() {
        for (args, needle) in [
            (&["--interval", "soon"][..], "--interval"),
            (&["--interval", "100ms"][..], "too short"),
            (
                &["--tags-refresh", "10s", "--interval", "30s"][..],
                "--tags-refresh",
            ),
            (&["--output", "-"][..], "only with `once`"),
            (&["--namespace", " "][..], "empty namespace"),
            (&["--default-port", "0"][..], "--default-port"),
            (&["--listen", "nowhere"][..], "--listen"),
            (&["--concurrency", "0"][..], "--concurrency"),
            (&["--ec2-hosts-tag", "novalue"][..], "KEY=VALUE"),
            (&["--shard", "3/3"][..], "INDEX/COUNT"),
            (&["--shard", "1"][..], "INDEX/COUNT"),
            (&["--shard", "0/0"][..], "INDEX/COUNT"),
            (&["--shard=-1/2"][..], "INDEX/COUNT"),
            (&["--cycle-timeout", "10ms"][..], "--cycle-timeout"),
            (
                &["--services-refresh", "5s", "--interval", "10s"][..],
                "--services-refresh",
            ),
            (
                &["--ec2-hosts-output", "cloudmap-sd.json"][..],
                "other than --output",
            ),
            (
                &["--ecs-enrichment", "false", "--ec2-hosts-output", "h.json"][..],
                "needs --ecs-enrichment",
            ),
            (
                &["--ec2-enrichment", "false", "--ec2-hosts-output", "h.json"][..],
                "--ec2-enrichment true",
            ),
            (&["--role-arn", "my-role"][..], "not an IAM role ARN"),
            (
                &["--role-arn", "arn:aws:iam::12345:role/x"][..],
                "12 digits",
            ),
            (&["--role-external-id", "abc"][..], "needs a --role-arn"),
            (&["--own-account", "false"][..], "leaves no account"),
            (
                &[
                    "--role-arn",
                    "arn:aws:iam::111111111111:role/x",
                    "--role-external-id",
                    "a b",
                ][..],
                "--role-external-id",
            ),
            (
                &[
                    "--role-arn",
                    "arn:aws:iam::111111111111:role/x,arn:aws:iam::111111111111:role/y",
                ][..],
                "one role per account",
            ),
        ] {
            let e = parse(args).unwrap_err();
            assert!(e.contains(needle), "{args:?}: {e}");
        }
    }
}
