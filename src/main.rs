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
use cloudmap_sd::aws::endpoint::{load_sdk_config, servicediscovery_client};
use cloudmap_sd::config::{Cli, Command, EXIT_CONFIG, Options};
use cloudmap_sd::metrics::Metrics;
use cloudmap_sd::{server, sidecar, telemetry};

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

/// `run` (the loop) or `once` (one pass).
async fn sidecar_main(options: Options, run: bool) -> ExitCode {
    telemetry::init(options.log_format);
    let sdk = load_sdk_config(options.api_timeout).await;
    if sdk.region().is_none() {
        return config_error("no AWS Region configured: set AWS_REGION (ECS sets it for tasks)");
    }
    let metrics = Arc::new(Metrics::new());
    let cloudmap = SdkCloudMap::new(servicediscovery_client(&sdk), metrics.clone());
    let result = if run {
        let shutdown = CancellationToken::new();
        tokio::spawn(stop_on_signal(shutdown.clone()));
        sidecar::run(cloudmap, &options, metrics, shutdown).await
    } else {
        sidecar::once(cloudmap, &options, metrics).await
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
