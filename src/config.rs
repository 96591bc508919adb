//! Command line and configuration: one clap-derive tree, every flag with a
//! `CLOUDMAP_SD_*` environment twin, validated once before any AWS call.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

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

    /// The file_sd JSON file to write. Its directory must exist. Give Prometheus a
    /// file_sd glob that matches it (`*.json`); the temporary file written next to it
    /// is hidden and ends in `.tmp`, so the glob never picks it up. `-` prints the JSON
    /// to stdout (only with `once`).
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
    /// after the first successful write) and /metrics.
    #[arg(
        long,
        env = "CLOUDMAP_SD_LISTEN",
        default_value = "127.0.0.1:9469",
        global = true
    )]
    pub listen: SocketAddr,

    /// Label set written for each target. `default`: cloudmap_* / ecs_* labels, never a
    /// bare `cluster` label. `reloader`: exactly the labels of prometheus-sdconfig-reloader
    /// (cluster, service, taskdefinition, namespace, taskid, instance) for a drop-in
    /// migration; its `cluster` label overrides a `cluster` external label.
    #[arg(long, env = "CLOUDMAP_SD_LABEL_STYLE", value_enum, default_value_t = LabelStyle::Default, global = true)]
    pub label_style: LabelStyle,

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
    #[arg(long, env = "CLOUDMAP_SD_SHARD", value_parser = parse_shard, global = true)]
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

    /// Add ECS and EC2 facts to each task's labels (ecs_launch_type,
    /// ecs_task_revision, ec2_instance_id, ec2_name, ec2_instance_type). Needs
    /// ecs:DescribeTasks, ecs:DescribeContainerInstances and ec2:DescribeInstances.
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
    /// --ec2-hosts-port, `instance` set to the host's Name tag.
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

impl Options {
    /// The deadline of one cycle: --cycle-timeout, else the interval.
    pub fn cycle_timeout(&self) -> Duration {
        self.cycle_timeout.unwrap_or(self.interval)
    }
}

/// `--shard INDEX/COUNT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

fn parse_shard(s: &str) -> Result<Shard, String> {
    let bad = || format!("expected INDEX/COUNT with 0 <= INDEX < COUNT, e.g. 0/3, not {s:?}");
    let (i, c) = s.split_once('/').ok_or_else(bad)?;
    let index: u32 = i.trim().parse().map_err(|_| bad())?;
    let count: u32 = c.trim().parse().map_err(|_| bad())?;
    if count == 0 || index >= count {
        return Err(bad());
    }
    Ok(Shard { index, count })
}

/// What `--shard` hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ShardKey {
    /// `namespace/service`: a service's targets stay in one shard.
    Service,
    /// The Cloud Map instance id (ECS task id).
    Task,
}

/// An EC2 tag filter, `KEY=VALUE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagFilter {
    pub key: String,
    pub value: String,
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

/// Label set of the written targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LabelStyle {
    /// `cloudmap_*`, `ecs_*`, `availability_zone`; no bare `cluster`.
    Default,
    /// The labels of prometheus-sdconfig-reloader, for migration.
    Reloader,
}

/// Cloud Map health filter for DiscoverInstances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HealthStatus {
    /// Only healthy instances.
    Healthy,
    /// Only unhealthy instances.
    Unhealthy,
    /// Every instance.
    All,
    /// Healthy instances, or every instance when none is healthy.
    HealthyOrElseAll,
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

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
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

/// A configuration that passed validation.
#[derive(Debug, Clone)]
pub struct Config {
    pub command: Command,
    pub options: Options,
}

/// What is wrong with a configuration, in one line.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl Cli {
    /// Checks what clap cannot: relations between flags and sane values.
    pub fn validate(self) -> Result<Config, ConfigError> {
        let command = self.command.unwrap_or(Command::Run);
        let o = &self.options;
        let err = |m: String| Err(ConfigError(m));
        if o.interval < Duration::from_secs(1) {
            return err(format!(
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
                return err(format!(
                    "{flag} {} is shorter than --interval {}",
                    humantime::format_duration(d),
                    humantime::format_duration(o.interval)
                ));
            }
        }
        if o.api_timeout.is_zero() {
            return err("--api-timeout must be more than 0s".into());
        }
        if o.cycle_timeout.is_some_and(|d| d < Duration::from_secs(1)) {
            return err("--cycle-timeout: use 1s or more".into());
        }
        if let Err(e) = check_http_url(&o.prometheus_url) {
            return err(format!("--prometheus-url {}: {e}", o.prometheus_url));
        }
        if let Some(u) = &o.amp_remote_write_url
            && let Err(e) = check_http_url(u)
        {
            return err(format!("--amp-remote-write-url {u}: {e}"));
        }
        for (flag, d) in [
            (
                "--remote-write-watch-interval",
                o.remote_write_watch_interval,
            ),
            ("--amp-probe-interval", o.amp_probe_interval),
        ] {
            if !d.is_zero() && d < Duration::from_secs(1) {
                return err(format!("{flag}: use 0s (off) or 1s or more"));
            }
        }
        if o.remote_write_max_lag < Duration::from_secs(1) {
            return err("--remote-write-max-lag: use 1s or more".into());
        }
        if o.namespaces.iter().any(|n| n.trim().is_empty()) {
            return err("--namespace: empty namespace name".into());
        }
        if o.output.as_os_str().is_empty() {
            return err("--output: empty path".into());
        }
        if o.output.as_os_str() == "-" {
            if command != Command::Once {
                return err("--output - (stdout) works only with `once`".into());
            }
        } else if o.output.file_name().is_none() {
            return err(format!("--output {}: not a file path", o.output.display()));
        }
        if let Some(hosts) = &o.ec2_hosts_output {
            if !o.ecs_enrichment || !o.ec2_enrichment {
                return err(
                    "--ec2-hosts-output needs --ecs-enrichment true and --ec2-enrichment true"
                        .into(),
                );
            }
            if hosts == &o.output || hosts.as_os_str() == "-" || hosts.file_name().is_none() {
                return err(format!(
                    "--ec2-hosts-output {}: must be a file path other than --output",
                    hosts.display()
                ));
            }
        }
        let mut options = self.options;
        options.namespaces = options
            .namespaces
            .iter()
            .map(|n| n.trim().to_string())
            .collect();
        options.namespaces.sort();
        options.namespaces.dedup();
        Ok(Config { command, options })
    }

    /// True when the output goes to stdout.
    pub fn is_stdout(path: &std::path::Path) -> bool {
        path.as_os_str() == "-"
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
        assert_eq!(c.options.interval, Duration::from_secs(30));
        assert_eq!(c.options.listen.to_string(), "127.0.0.1:9469");
        assert_eq!(c.options.health_status, HealthStatus::HealthyOrElseAll);
        assert_eq!(c.options.label_style, LabelStyle::Default);
        assert!(c.options.namespaces.is_empty());
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
        assert_eq!(c.options.interval, Duration::from_secs(10));
        assert_eq!(c.options.namespaces, vec!["a".to_string()]);
        assert!(Cli::is_stdout(&c.options.output));
    }

    #[test]
    fn shard_and_its_key() {
        let c = parse(&["--shard", "2/3", "--shard-key", "task"]).unwrap();
        assert_eq!(c.options.shard, Some(Shard { index: 2, count: 3 }));
        assert_eq!(c.options.shard_key, ShardKey::Task);
        let c = parse(&[]).unwrap();
        assert_eq!(c.options.shard, None);
        assert_eq!(c.options.shard_key, ShardKey::Service);
        assert_eq!(c.options.cycle_timeout(), c.options.interval);
    }

    #[test]
    fn namespaces_repeat_and_dedup() {
        let c = parse(&["--namespace", "b", "--namespace", "a,b"]).unwrap();
        assert_eq!(c.options.namespaces, vec!["a".to_string(), "b".to_string()]);
    }

    #[test]
    fn health_status_uses_the_api_spelling() {
        let c = parse(&["--health-status", "ALL"]).unwrap();
        assert_eq!(c.options.health_status, HealthStatus::All);
        assert!(parse(&["--health-status", "sometimes"]).is_err());
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
        ] {
            let e = parse(args).unwrap_err();
            assert!(e.contains(needle), "{args:?}: {e}");
        }
    }
}
