//! Pure target building: a discovery [`Snapshot`] and [`TargetOptions`] become sorted,
//! labelled file_sd [`TargetGroup`]s, plus the endpoints that had to be skipped and why.
//!
//! - [`endpoints`]: a service's tags read into endpoints, and the skip reasons;
//! - `plan`: the targets of a snapshot and their labels in either style;
//! - [`render`]: the file content, streamed;
//! - [`hosts`]: the EC2 hosts file.
//!
//! No I/O and no clocks here, so every rule is unit-tested with literal fixtures.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::model::Snapshot;

pub mod endpoints;
pub mod hosts;
mod plan;
pub mod render;

pub use endpoints::{SkipReason, Skipped};
pub use hosts::host_groups;
pub use plan::sanitize_label_name;
pub use render::render_to;

use plan::with_plan;

/// Label set of the written targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LabelStyle {
    /// `cloudmap_*`, `ecs_*`, `availability_zone`; no bare `cluster`.
    Default,
    /// The labels of prometheus-sdconfig-reloader, for migration.
    Reloader,
}

/// How targets are labelled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetOptions {
    pub label_style: LabelStyle,
    /// Port when neither the endpoint's port tag nor AWS_INSTANCE_PORT gives one.
    pub default_port: Option<u16>,
}

/// One file_sd entry. Serialises exactly as Prometheus reads it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct TargetGroup {
    pub targets: Vec<String>,
    pub labels: BTreeMap<String, String>,
}

/// What [`build`] produces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Built {
    /// Sorted, one target per group.
    pub groups: Vec<TargetGroup>,
    /// Sorted and de-duplicated.
    pub skipped: Vec<Skipped>,
}

/// What a snapshot's file would hold, without the file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Target groups.
    pub targets: usize,
    /// Services with at least one target (a tagged service whose tasks are all
    /// held, gone or unaddressable has none).
    pub services: usize,
    /// Sorted and de-duplicated.
    pub skipped: Vec<Skipped>,
}

/// Builds the target groups of a snapshot. Deterministic: the same snapshot gives
/// byte-identical output whatever the order of services and instances.
pub fn build(snapshot: &Snapshot, opts: &TargetOptions) -> Built {
    with_plan(snapshot, opts, |plan| Built {
        groups: plan
            .entries
            .iter()
            .map(|e| TargetGroup {
                targets: vec![e.addr.clone()],
                labels: plan
                    .labels(e)
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            })
            .collect(),
        skipped: plan.skipped,
    })
}

/// The targets and skipped endpoints of a snapshot, without rendering it.
pub fn summarize(snapshot: &Snapshot, opts: &TargetOptions) -> Summary {
    with_plan(snapshot, opts, |plan| Summary {
        targets: plan.entries.len(),
        services: plan.services(),
        skipped: plan.skipped,
    })
}

/// Serialises target groups as Prometheus file_sd JSON (pretty, newline-terminated).
pub fn to_json(groups: &[TargetGroup]) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(groups).expect("string maps always serialise");
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests;
