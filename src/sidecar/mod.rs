//! The run loop and the `once` pass: discovery -> enrichment -> targets -> writer,
//! with metrics, logs and readiness around them.
//!
//! - [`engine`]: one pass and what its file holds (no clock, no file);
//! - [`account`]: one AWS account's discovery and enrichment, run side by side;
//! - [`pass`]: what one pass over every account found;
//! - [`run`](mod@run): the loop; [`once`](mod@once): one pass, written or printed;
//! - [`metrics`]: the loop's own metrics.

use std::path::PathBuf;
use std::time::Duration;

use crate::aws::AwsError;
use crate::discovery::DiscoveryOptions;
use crate::enrich::EnrichOptions;
use crate::file_sd::{FileSd, Publish, WriteError};
use crate::model::Snapshot;
use crate::targets::{self, TargetOptions};

pub mod account;
pub mod engine;
pub mod metrics;
pub mod once;
pub mod pass;
pub mod run;

pub use account::{Account, AccountPass};
pub use engine::Engine;
pub use metrics::RunMetrics;
pub use once::once;
pub use pass::Pass;
pub use run::run;

#[cfg(test)]
mod tests;

/// What the loop discovers, how it labels, and what it writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SidecarOptions {
    pub discovery: DiscoveryOptions,
    /// ECS/EC2 enrichment; None: off.
    pub enrich: Option<EnrichOptions>,
    pub targets: TargetOptions,
    /// The targets file (`-`: stdout, `once` only); None: no file, the targets are
    /// only served at /sd/targets (`--output none`, `run` only).
    pub output: Option<PathBuf>,
    /// The EC2 hosts list; None: not made.
    pub hosts: Option<HostsFile>,
    /// Time between cycles.
    pub interval: Duration,
    /// Deadline of one cycle.
    pub cycle_timeout: Duration,
}

/// The EC2 hosts list: the file it is written to (None: served at /sd/hosts only)
/// and the ports scraped on each host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostsFile {
    pub path: Option<PathBuf>,
    pub ports: Vec<u16>,
}

/// Why a `once` pass failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("discovery failed, nothing written: {0}")]
    Discovery(#[source] AwsError),
    #[error("discovery incomplete, nothing written: {0}")]
    Incomplete(String),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("cannot write to stdout: {0}")]
    Stdout(#[source] std::io::Error),
    #[error(
        "`once` needs a file or `-` (stdout): --output none serves /sd/* and works only with `run`"
    )]
    NoFile,
}

/// What a file is to hold.
enum Content {
    /// Small content, in memory (the hosts file).
    Bytes(Vec<u8>),
    /// The targets of a snapshot, rendered straight into the file.
    Targets {
        snapshot: Snapshot,
        targets: TargetOptions,
        /// False: the same snapshot as last time, so only a look at the file's
        /// size tells whether it must be written again (someone removed it).
        fresh: bool,
    },
}

impl Content {
    /// The targets file of a pass; `fresh`: whether it must be rendered.
    fn targets(pass: &Pass, fresh: bool) -> Self {
        Content::Targets {
            snapshot: pass.snapshot.clone(),
            targets: pass.targets.clone(),
            fresh,
        }
    }
}

/// Writes `content` off the runtime; the writer comes back with the result.
async fn write(mut writer: FileSd, content: Content) -> (FileSd, Result<Publish, WriteError>) {
    tokio::task::spawn_blocking(move || {
        let r = match content {
            Content::Bytes(b) => writer.publish(&b),
            Content::Targets { fresh: false, .. } if writer.still_current() => {
                Ok(Publish::Unchanged)
            }
            Content::Targets {
                snapshot, targets, ..
            } => writer.publish_with(|w| targets::render_to(&snapshot, &targets, w)),
        };
        (writer, r)
    })
    .await
    .expect("the file writer does not panic")
}
