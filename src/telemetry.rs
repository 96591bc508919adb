//! Logging setup: `RUST_LOG` filter (default [`DEFAULT_FILTER`]), text or JSON
//! lines on stderr.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The filter without `RUST_LOG`: `info`, but only errors from the AWS SDK's own
/// crates. Outside AWS the SDK warns at length about every instance-metadata
/// (IMDS) lookup that fails, and the sidecar already says in one line what is
/// missing. `RUST_LOG` replaces this whole filter (`RUST_LOG=info` shows the SDK's
/// warnings, `RUST_LOG=debug` everything, the SDK's error text included).
pub const DEFAULT_FILTER: &str = "info,aws_config=error,aws_credential_types=error,\
                                  aws_sdk=error,aws_sigv4=error,aws_smithy=error,aws_types=error";

/// Installs the global subscriber. Call once, from `main`.
pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
