//! Pure target building: a discovery [`Snapshot`] and [`TargetOptions`] become sorted,
//! labelled file_sd [`TargetGroup`]s, plus the endpoints that had to be skipped and why.
//!
//! - [`endpoints`]: a service's tags read into endpoints, and the skip reasons;
//! - `ports`: the host port of a container port (bridge and host network mode);
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
mod ports;
pub mod render;

pub use endpoints::{SkipReason, Skipped};
pub use hosts::{account_host_groups, host_groups};
pub use plan::{ACCOUNT_LABEL, sanitize_label_name};
pub use render::render_to;

use plan::with_plan;

/// Label set of the written targets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LabelStyle {
    /// `cloudmap_*`, `ecs_*`, `availability_zone`; no bare `cluster`.
    #[default]
    Default,
    /// The labels of prometheus-sdconfig-reloader, for migration.
    Reloader,
}

/// Which `__meta_*` labels the targets carry (default label style only; the
/// reloader style has none). Prometheus keeps every one in memory as a discovered
/// label of each target, and re-parses them on every file_sd scan; relabelling
/// rules are all that can read them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum MetaLabels {
    /// Every family: each instance attribute and each service tag.
    #[default]
    All,
    /// The tag families only (`__meta_cloudmap_service_tag_*`): a few per service,
    /// what relabelling usually keys on (team, tier); no instance attributes.
    Tags,
    /// None: the plain labels only.
    None,
}

/// How targets are labelled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetOptions {
    pub label_style: LabelStyle,
    /// Port when neither the endpoint's port tag nor AWS_INSTANCE_PORT gives one.
    pub default_port: Option<u16>,
    /// The `__meta_*` families written (the file and the HTTP endpoint alike).
    pub meta_labels: MetaLabels,
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
    /// Target groups by account, when targets carry one; sorted by account.
    pub by_account: Vec<(String, usize)>,
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
    with_plan(snapshot, opts, |plan| {
        let mut by_account = std::collections::BTreeMap::<&str, usize>::new();
        for account in plan.entries.iter().filter_map(|e| e.account) {
            *by_account.entry(account).or_default() += 1;
        }
        Summary {
            targets: plan.entries.len(),
            services: plan.services(),
            by_account: by_account
                .into_iter()
                .map(|(a, n)| (a.to_string(), n))
                .collect(),
            skipped: plan.skipped,
        }
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
