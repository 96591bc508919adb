//! The `cloudmap-sd` binary: parse and validate the command line, set up logging,
//! load the AWS SDK configuration once, wire the parts, dispatch.
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use clap::error::ErrorKind;
use tokio_util::sync::CancellationToken;

use cloudmap_sd::aws::error::Cause;
use cloudmap_sd::aws::sdk;
use cloudmap_sd::aws::sqs::SdkQueue;
use cloudmap_sd::config::{CheckFormat, Cli, Command, Config, EXIT_CONFIG};
use cloudmap_sd::http_sd::{BearerToken, HttpSd, HttpSdMetrics, Published};
use cloudmap_sd::metrics::Metrics;
use cloudmap_sd::remote_write::{self, Signing};
use cloudmap_sd::server::{self, Readiness};
use cloudmap_sd::{check, events, sidecar, telemetry};

fn config_error(msg: &str) -> ExitCode {
    eprintln!("cloudmap-sd: {msg}");
    ExitCode::from(EXIT_CONFIG as u8)
}

/// A clap error in one line: its message and hints, without the usage block.
fn one_line(e: &clap::Error) -> String {
    e.to_string()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("Usage:") && !l.starts_with("For more"))
        .map(|l| l.trim_start_matches("error: "))
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => return config_error(&format!("{} (see --help)", one_line(&e))),
    };
    let config = match cli.validate() {
        Ok(c) => c,
        Err(e) => return config_error(&e.to_string()),
    };
    match config.command {
        Command::Healthcheck => healthcheck(config.listen).await,
        Command::Check(args) => check_main(config, args.format).await,
        Command::Run => run_main(config).await,
        Command::Once => once_main(config).await,
    }
}

/// `healthcheck`: no logging setup and no AWS; ECS runs it every few seconds.
async fn healthcheck(listen: std::net::SocketAddr) -> ExitCode {
    match server::probe_ready(listen, Duration::from_secs(3)).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cloudmap-sd healthcheck: not ready: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `check`: the preflight table (or JSON) on stdout; exit 1 when a check failed.
async fn check_main(config: Config, format: CheckFormat) -> ExitCode {
    telemetry::init(config.log_format);
    let sdk = sdk::load_sdk_config(config.api_timeout).await;
    let deadline = check::deadline(&config.check);
    let Ok(report) = tokio::time::timeout(deadline, check::run(&config.check, &sdk)).await else {
        eprintln!("cloudmap-sd check: did not finish within {deadline:?}");
        return ExitCode::FAILURE;
    };
    match format {
        CheckFormat::Table => print!("{}", report.table()),
        CheckFormat::Json => println!("{}", report.json()),
    }
    if report.failed() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Logging, the SDK configuration (its Region required) and the metrics.
async fn start(config: &Config) -> Result<(aws_config::SdkConfig, Arc<Metrics>), ExitCode> {
    telemetry::init(config.log_format);
    let sdk = sdk::load_sdk_config(config.api_timeout).await;
    if sdk.region().is_none() {
        return Err(config_error(&Cause::NoRegion.to_string()));
    }
    let metrics = Metrics::with_parts(config.accounts.labelled(), config.events.is_some());
    Ok((sdk, Arc::new(metrics)))
}

/// `once`: one pass. Its failure is the command's answer: one plain line, like a
/// configuration error's, that says what failed (and what to set, when it knows).
async fn once_main(config: Config) -> ExitCode {
    let (sdk, metrics) = match start(&config).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let accounts = match sdk::accounts(&sdk, &config.accounts, &metrics.aws).await {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "cannot tell the account of the sidecar's own credentials; nothing written");
            return ExitCode::FAILURE;
        }
    };
    match sidecar::once(accounts, &config.sidecar, metrics.run.clone()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cloudmap-sd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `run`: the HTTP server, the remote-write watch and probe, and the loop, until
/// SIGTERM or SIGINT; then each is given a few seconds to stop.
async fn run_main(config: Config) -> ExitCode {
    // A token that cannot be read is bad configuration: exit 64 before anything.
    let token = match &config.http_sd.bearer_token_file {
        Some(path) => match BearerToken::load(path) {
            Ok(t) => Some(Arc::new(t)),
            Err(e) => return config_error(&format!("--http-sd-bearer-token-file: {e}")),
        },
        None => None,
    };
    let (sdk, metrics) = match start(&config).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let listener = match server::bind(config.listen).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %format!("cannot listen on {}: {e}", config.listen), "cloudmap-sd failed");
            return ExitCode::FAILURE;
        }
    };
    log_start(&config, token.is_some());
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    tokio::spawn(reload_on_sighup(token.clone(), metrics.http_sd.clone()));
    let readiness = Arc::new(match config.sidecar.output {
        Some(_) => Readiness::new(metrics.run.ready.clone()),
        None => Readiness::without_file(metrics.run.ready.clone()),
    });
    let published = Arc::new(Published::new(config.http_sd.hosts));
    let exposition: server::Exposition = {
        let metrics = metrics.clone();
        Arc::new(move || metrics.encode())
    };
    let http_sd = match HttpSd::new(published.clone(), token, metrics.http_sd.clone()) {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %format!("cannot start the http_sd render thread: {e}"), "cloudmap-sd failed");
            return ExitCode::FAILURE;
        }
    };
    let server = tokio::spawn(server::serve(
        listener,
        readiness.clone(),
        exposition,
        http_sd,
        shutdown.clone(),
    ));
    let watch = remote_write::spawn(
        config.remote_write.clone(),
        Signing::of(&sdk),
        metrics.remote_write.clone(),
        shutdown.clone(),
    );
    let events = config.events.as_ref().map(|o| {
        let queue = SdkQueue::new(&sdk, &o.queue_url, config.api_timeout, metrics.aws.clone());
        sidecar::Events {
            feed: events::spawn(queue, o, metrics.events.clone(), shutdown.clone()),
            metrics: metrics.events.clone(),
            settle: o.settle,
        }
    });
    if let Some(accounts) = accounts(&sdk, &config, &metrics, &shutdown).await {
        sidecar::run_with_events(
            accounts,
            &config.sidecar,
            metrics.run.clone(),
            readiness,
            published,
            events,
            shutdown.clone(),
        )
        .await;
    }
    shutdown.cancel();
    drain(server, watch).await
}

/// Every account's clients; with roles and the own account, asks the own
/// account's id again every --interval until it comes or `shutdown` (None).
async fn accounts(
    sdk: &aws_config::SdkConfig,
    config: &Config,
    metrics: &Metrics,
    shutdown: &CancellationToken,
) -> Option<sdk::SidecarAccounts> {
    loop {
        match sdk::accounts(sdk, &config.accounts, &metrics.aws).await {
            Ok(a) => return Some(a),
            Err(e) => tracing::error!(error = %e,
                "cannot tell the account of the sidecar's own credentials (sts:GetCallerIdentity); not ready, trying again next interval"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(config.sidecar.interval) => {}
        }
    }
}

/// Waits for the server (5 s) and the remote-write tasks (2 s) to stop.
async fn drain(
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    watch: tokio::task::JoinHandle<()>,
) -> ExitCode {
    let mut code = ExitCode::SUCCESS;
    match tokio::time::timeout(Duration::from_secs(5), server).await {
        Ok(Ok(Err(e))) => {
            tracing::error!(error = %format!("HTTP server failed: {e}"), "cloudmap-sd failed");
            code = ExitCode::FAILURE;
        }
        Ok(_) => {}
        Err(_) => tracing::warn!("HTTP server did not stop within 5s"),
    }
    if tokio::time::timeout(Duration::from_secs(2), watch)
        .await
        .is_err()
    {
        tracing::warn!("remote_write watch did not stop within 2s");
    }
    code
}

fn log_start(config: &Config, token: bool) {
    let s = &config.sidecar;
    let d = &s.discovery;
    if !config.listen.ip().is_loopback() && !token {
        tracing::warn!(listen = %config.listen,
            "/sd/targets and /sd/hosts are open to whoever reaches this address: set --http-sd-bearer-token-file");
    }
    let output = s
        .output
        .as_ref()
        .map_or("none (served at /sd/targets only)".to_string(), |o| {
            o.display().to_string()
        });
    tracing::info!(listen = %config.listen, output = %output,
        http_sd_token = token,
        interval = %humantime::format_duration(s.interval),
        cycle_timeout = %humantime::format_duration(s.cycle_timeout),
        namespaces = %if d.namespaces.is_empty() { "(all)".to_string() } else { d.namespaces.join(",") },
        shard = %d.shard.map_or("(none)".to_string(), |(s, key)| format!("{s} by {key:?}").to_lowercase()),
        events = config.events.as_ref().map_or("(off)", |e| e.queue_url.as_str()),
        "cloudmap-sd starting");
}

/// Reads the http_sd bearer token file again on every SIGHUP; a file that cannot
/// be read keeps the token in use. Without a token SIGHUP is only logged (it no
/// longer ends the process).
async fn reload_on_sighup(token: Option<Arc<BearerToken>>, metrics: Arc<HttpSdMetrics>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::error!("cannot install the SIGHUP handler; the bearer token is not reloaded");
        return;
    };
    while hup.recv().await.is_some() {
        let Some(token) = &token else {
            tracing::info!("SIGHUP: nothing to reload (no --http-sd-bearer-token-file)");
            continue;
        };
        match token.reload() {
            Ok(()) => {
                metrics.token_reload(true);
                tracing::info!(file = %token.path().display(), "SIGHUP: bearer token reloaded");
            }
            Err(e) => {
                metrics.token_reload(false);
                tracing::error!(error = %e, "SIGHUP: bearer token not reloaded; the previous token stays in use");
            }
        }
    }
}

/// Cancels `token` on the first SIGTERM or SIGINT.
async fn stop_on_signal(token: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return;
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(signal = name, "stopping");
    token.cancel();
}
