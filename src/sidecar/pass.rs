//! One pass over every account, as the loop and `once` see it: each account's
//! cycle, the merged snapshot and what its file holds, and the sums and verdicts
//! over the accounts.

use std::sync::Arc;

use super::account::AccountPass;
use crate::aws::AwsError;
use crate::discovery::{Cycle, CycleStats};
use crate::enrich::Enriched;
use crate::model::Snapshot;
use crate::targets::{Summary, TargetOptions};

/// One discovery pass over every account, summarised.
pub struct Pass {
    /// Each account's cycle, in the order of the accounts (one without roles).
    pub accounts: Vec<AccountPass>,
    /// What every account found, merged: what the targets file holds.
    pub snapshot: Snapshot,
    /// What the targets file holds.
    pub summary: Arc<Summary>,
    /// False when the snapshot equals the last pass's: nothing was planned, and
    /// the file needs no write unless someone removed it.
    pub fresh: bool,
    /// How the targets are labelled (to render the file).
    pub targets: TargetOptions,
    /// The hosts file content, when --ec2-hosts-output is set and the hosts of
    /// every account are known.
    pub hosts: Option<Vec<u8>>,
}

impl Pass {
    /// Whether discovery read everything this cycle, in every account: the
    /// snapshot is the whole truth, not partly last-known data.
    pub fn complete(&self) -> bool {
        self.accounts.iter().all(AccountPass::complete)
    }

    /// Whether some calls were cut by the cycle deadline.
    pub fn deadline_exceeded(&self) -> bool {
        self.accounts.iter().any(|a| match &a.outcome {
            Ok((c, _)) => c.deadline_exceeded,
            Err(e) => e.is_deadline(),
        })
    }

    /// The cycles' counters, summed over the accounts.
    pub fn stats(&self) -> CycleStats {
        let mut sum = CycleStats::default();
        for (c, _) in self.cycles() {
            sum += &c.stats;
        }
        sum
    }

    /// Services or instances left to other shards.
    pub fn shard_excluded(&self) -> usize {
        self.cycles().map(|(c, _)| c.shard_excluded).sum()
    }

    /// Failed reads: services, listings, and accounts where nothing is known yet.
    pub fn failed(&self) -> usize {
        self.accounts
            .iter()
            .map(|a| match &a.outcome {
                Ok((c, _)) => c.failures.len() + usize::from(c.listing_error.is_some()),
                Err(_) => 1,
            })
            .sum()
    }

    /// Failed services whose last known targets are published.
    pub fn stale(&self) -> usize {
        self.cycles()
            .map(|(c, _)| c.failures.iter().filter(|f| f.kept).count())
            .sum()
    }

    /// Enrichment calls that failed.
    pub fn enrich_errors(&self) -> impl Iterator<Item = &AwsError> {
        self.cycles().flat_map(|(_, e)| &e.errors)
    }

    /// Every failure of the pass in one line, each account's named when there
    /// are accounts.
    pub fn describe_failures(&self) -> String {
        let mut parts = Vec::new();
        for a in &self.accounts {
            let d = a.describe_failures();
            match (&a.id, d.is_empty()) {
                (_, true) => {}
                (Some(id), false) => parts.push(format!("account {id}: {d}")),
                (None, false) => parts.push(d),
            }
        }
        parts.join("; ")
    }

    fn cycles(&self) -> impl Iterator<Item = &(Cycle, Enriched)> {
        self.accounts.iter().filter_map(|a| a.outcome.as_ref().ok())
    }
}
