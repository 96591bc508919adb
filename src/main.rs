//! The `cloudmap-sd` binary: parse and validate the command line, set up logging,
//! build the AWS clients, dispatch.
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use clap::error::ErrorKind;
use tokio_util::sync::CancellationToken;

use cloudmap_sd::aws::cloudmap::SdkCloudMap;
use cloudmap_sd::aws::ec2::SdkEc2;
use cloudmap_sd::aws::ecs::SdkEcs;
use cloudmap_sd::aws::endpoint::{load_sdk_config, servicediscovery_client};
use cloudmap_sd::config::{CheckFormat, Cli, Command, EXIT_CONFIG, Options};
use cloudmap_sd::metrics::Metrics;
use cloudmap_sd::sidecar::Clients;
use cloudmap_sd::{check, server, sidecar, telemetry};

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
    let options = config.options;
    match config.command {
        Command::Healthcheck => healthcheck(options.listen).await,
        Command::Check(args) => check_main(options, args.format).await,
        Command::Run => sidecar_main(options, true).await,
        Command::Once => sidecar_main(options, false).await,
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
async fn check_main(options: Options, format: CheckFormat) -> ExitCode {
    telemetry::init(options.log_format);
    let sdk = load_sdk_config(options.api_timeout).await;
    let deadline = check::deadline(&options);
    let Ok(report) = tokio::time::timeout(deadline, check::run(&options, &sdk)).await else {
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

/// `run` (the loop) or `once` (one pass).
async fn sidecar_main(options: Options, run: bool) -> ExitCode {
    telemetry::init(options.log_format);
    let sdk = load_sdk_config(options.api_timeout).await;
    if sdk.region().is_none() {
        return config_error("no AWS Region configured: set AWS_REGION (ECS sets it for tasks)");
    }
    let metrics = Arc::new(Metrics::new());
    let clients = Clients {
        cloudmap: SdkCloudMap::new(servicediscovery_client(&sdk), metrics.clone()),
        ecs: SdkEcs::new(aws_sdk_ecs::Client::new(&sdk), metrics.clone()),
        ec2: SdkEc2::new(aws_sdk_ec2::Client::new(&sdk), metrics.clone()),
    };
    let result = if run {
        let shutdown = CancellationToken::new();
        tokio::spawn(stop_on_signal(shutdown.clone()));
        sidecar::run(clients, &options, metrics, shutdown).await
    } else {
        sidecar::once(clients, &options, metrics).await
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "cloudmap-sd failed");
            ExitCode::FAILURE
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
