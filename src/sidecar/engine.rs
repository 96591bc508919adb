//! The engine: one pass over AWS (in each account, discovery, then enrichment
//! folded into the snapshot; the accounts' snapshots merged), what the file of that
//! pass holds, and the metrics and warnings about it. No clock and no file of its
//! own: the run loop and `once` drive it, and so does the benchmark.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::warn;

use super::SidecarOptions;
use super::account::{Account, AccountPass};
use super::metrics::{
    AccountLabels, AccountOutcomeLabels, ReasonLabels, RunMetrics, ServiceLabels,
};
use super::pass::Pass;
use crate::aws::{Accounts, AwsError, CloudMap, Ec2, Ecs};
use crate::discovery::{Refreshed, Wanted};
use crate::file_sd::Publish;
use crate::model::clock::unix_now;
use crate::model::{Host, Snapshot, TaskFacts};
use crate::targets::{self, SkipReason, Skipped, Summary, TargetOptions};

/// Longest a refresh between cycles may take (and at most the cycle timeout):
/// it runs in the loop, so a stalled endpoint must not hold the next cycle.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(15);

/// The ECS/EC2 facts of a snapshot's tasks, shared.
type TaskMap = Arc<std::collections::BTreeMap<String, TaskFacts>>;

/// The sidecar's discovery state and rendering: AWS calls and caches in, file
/// content out.
pub struct Engine<C, E, X> {
    accounts: Vec<Account<C, E, X>>,
    pub(super) publisher: Publisher,
    /// The last snapshot and its summary (the snapshot shares its data with
    /// discovery's cache, so keeping it costs little).
    last: Option<(Snapshot, Arc<Summary>)>,
    /// The task facts of the last merge of several accounts, and the accounts'
    /// own maps it was made of: reused while none of them changed.
    merged_tasks: Option<(Vec<TaskMap>, TaskMap)>,
    /// With several accounts, each one's snapshot of the last pass or refresh:
    /// a refresh of one account merges it with the others' as they were.
    parts: Vec<Snapshot>,
    cycle_timeout: Duration,
    hosts_ports: Option<Vec<u16>>,
}

impl<C: CloudMap, E: Ecs, X: Ec2> Engine<C, E, X> {
    /// The engine over `accounts` (the own account's clients alone, or several
    /// accounts' from `aws::sdk::accounts`).
    pub fn new(
        accounts: impl Into<Accounts<C, E, X>>,
        options: &SidecarOptions,
        metrics: Arc<RunMetrics>,
    ) -> Self {
        let accounts = accounts.into().0;
        let ids: BTreeSet<String> = accounts
            .iter()
            .filter_map(|a| a.id.as_deref().map(str::to_string))
            .collect();
        let accounts = accounts
            .into_iter()
            .map(|a| {
                let mut others = ids.clone();
                if let Some(id) = &a.id {
                    others.remove(&**id);
                }
                Account::new(a, options, others)
            })
            .collect();
        Engine {
            accounts,
            publisher: Publisher::new(options.targets.clone(), metrics),
            last: None,
            merged_tasks: None,
            parts: Vec::new(),
            cycle_timeout: options.cycle_timeout,
            hosts_ports: options.hosts.as_ref().map(|h| h.ports.clone()),
        }
    }

    /// One pass started at `started`, all calls of every account ending by
    /// `started` plus the cycle timeout; the accounts run side by side. `Err` only
    /// when in every account nothing is known yet and the service listing failed
    /// (the first account's error).
    pub async fn pass(&mut self, started: Instant) -> Result<Pass, AwsError> {
        let deadline = started + self.cycle_timeout;
        let runs = self.accounts.iter_mut().map(|a| a.pass(started, deadline));
        let (mut accounts, parts): (Vec<AccountPass>, Vec<Snapshot>) =
            futures::future::join_all(runs).await.into_iter().unzip();
        self.publisher.record_accounts(&accounts);
        if accounts.iter().all(|a| a.outcome.is_err()) {
            return Err(accounts
                .swap_remove(0)
                .outcome
                .expect_err("every account failed"));
        }
        Ok(self.conclude(accounts, parts))
    }

    /// Reads again, between cycles, the services events touched (by account
    /// index, see [`Engine::route`]), enriches what is new in them, and merges
    /// the result with the other accounts as they were: a pass like a cycle's,
    /// and what changed in each touched account. None before the first pass.
    pub async fn refresh(
        &mut self,
        touched: &BTreeMap<usize, Vec<Wanted>>,
        now: Instant,
    ) -> Option<(Pass, BTreeMap<usize, Refreshed>)> {
        let several = self.accounts.len() > 1;
        if self.last.is_none() || (several && self.parts.len() != self.accounts.len()) {
            return None;
        }
        let deadline = now + self.cycle_timeout.min(REFRESH_TIMEOUT);
        let mut accounts = Vec::with_capacity(self.accounts.len());
        let mut parts = Vec::with_capacity(self.accounts.len());
        let mut refreshed = BTreeMap::new();
        for (i, a) in self.accounts.iter_mut().enumerate() {
            let held = self.parts.get(i).map_or(0, |p| p.held.len());
            match touched.get(&i) {
                Some(wanted) => {
                    let (report, part, r) = a.refresh(wanted, now, deadline).await;
                    accounts.push(report);
                    parts.push(part);
                    refreshed.insert(i, r);
                }
                None => {
                    accounts.push(a.current(now, held));
                    parts.push(self.parts.get(i).cloned().unwrap_or_default());
                }
            }
        }
        Some((self.conclude(accounts, parts), refreshed))
    }

    /// The account an event of `account` belongs to (an index for
    /// [`Engine::refresh`]): the only account when targets carry none, the own
    /// (first) account when the event names none, else the account of that id.
    pub fn route(&self, account: Option<&str>) -> Option<usize> {
        match (account, self.accounts.as_slice()) {
            (_, [only]) if only.id().is_none() => Some(0),
            (None, _) => (!self.accounts.is_empty()).then_some(0),
            (Some(id), all) => all.iter().position(|a| a.id() == Some(id)),
        }
    }

    /// The account at `index` (see [`Engine::route`]).
    pub fn account_at(&self, index: usize) -> Option<&Account<C, E, X>> {
        self.accounts.get(index)
    }

    /// A pass from each account's report and snapshot: merged, summarised when
    /// it changed, with the hosts file.
    fn conclude(&mut self, accounts: Vec<AccountPass>, parts: Vec<Snapshot>) -> Pass {
        if parts.len() > 1 {
            self.parts.clone_from(&parts);
        }
        let snapshot = self.merge(&accounts, parts);
        let (summary, fresh) = match &self.last {
            Some((last, summary)) if *last == snapshot => (summary.clone(), false),
            _ => {
                let summary = Arc::new(self.publisher.summarize(&snapshot));
                self.last = Some((snapshot.clone(), summary.clone()));
                (summary, true)
            }
        };
        let hosts = self.hosts_file();
        Pass {
            accounts,
            snapshot,
            summary,
            fresh,
            targets: self.publisher.targets.clone(),
            hosts,
        }
    }

    /// The accounts' snapshots as one. The merged task facts are the same
    /// allocation as last time while no account's changed, so an unchanged pass
    /// compares cheaply.
    fn merge(&mut self, accounts: &[AccountPass], mut parts: Vec<Snapshot>) -> Snapshot {
        let tasks: Vec<_> = parts.iter().map(|p| p.tasks.clone()).collect();
        let reuse = self
            .merged_tasks
            .as_ref()
            .filter(|(was, _)| {
                was.len() == tasks.len() && was.iter().zip(&tasks).all(|(a, b)| Arc::ptr_eq(a, b))
            })
            .map(|(_, merged)| merged.clone());
        if reuse.is_some() {
            parts.iter_mut().for_each(|p| p.tasks = Arc::default());
        }
        let ids = accounts.iter().map(|a| a.id.clone());
        let mut snapshot = Snapshot::merge(ids.zip(parts).collect());
        match reuse {
            Some(merged) => snapshot.tasks = merged,
            None => self.merged_tasks = Some((tasks, snapshot.tasks.clone())),
        }
        snapshot
    }

    /// The hosts file content: the hosts of every account, once every account can
    /// say its own.
    fn hosts_file(&self) -> Option<Vec<u8>> {
        let ports = self.hosts_ports.as_ref()?;
        let hosts: Option<Vec<(Option<&str>, &[Host])>> = self
            .accounts
            .iter()
            .map(|a| a.hosts().map(|h| (a.id(), h)))
            .collect();
        Some(targets::to_json(&targets::account_host_groups(
            &hosts?, ports,
        )))
    }

    /// The account with this id (None: the own account when targets carry no
    /// account).
    pub fn account(&mut self, id: Option<&str>) -> Option<&mut Account<C, E, X>> {
        self.accounts.iter_mut().find(|a| a.id() == id)
    }

    /// The Cloud Map adapter of the first account (the benchmark reads its call
    /// counts).
    pub fn cloudmap(&self) -> &C {
        self.accounts[0].cloudmap()
    }
}

/// Turns cycles into file content and keeps metrics and warnings about them.
pub(super) struct Publisher {
    targets: TargetOptions,
    metrics: Arc<RunMetrics>,
    warned: BTreeSet<Skipped>,
    aged: BTreeSet<ServiceLabels>,
}

impl Publisher {
    fn new(targets: TargetOptions, metrics: Arc<RunMetrics>) -> Self {
        Publisher {
            targets,
            metrics,
            warned: BTreeSet::new(),
            aged: BTreeSet::new(),
        }
    }

    /// What the file of a snapshot holds; warns once about each newly skipped
    /// endpoint.
    fn summarize(&mut self, snapshot: &Snapshot) -> Summary {
        let summary = targets::summarize(snapshot, &self.targets);
        for reason in SkipReason::ALL {
            let n = summary
                .skipped
                .iter()
                .filter(|s| s.reason == reason)
                .count();
            self.metrics
                .skipped_endpoints
                .get_or_create(&ReasonLabels {
                    reason: reason.as_str(),
                })
                .set(n as i64);
        }
        let now: BTreeSet<Skipped> = summary.skipped.iter().cloned().collect();
        for s in now.difference(&self.warned) {
            warn!(
                namespace = %s.namespace,
                service = %s.service,
                tag = %s.tag,
                // Left out when there is none (an Option field records nothing).
                value = s.value.as_deref(),
                instance = s.instance.as_deref(),
                ecs_service = s.ecs_service.as_deref(),
                reason = %s.reason,
                "endpoint skipped: {}",
                s.reason.explain()
            );
        }
        self.warned = now;
        summary
    }

    /// Per-account cycle counters (when accounts are named), per-service failure
    /// counters and data-age gauges.
    fn record_accounts(&mut self, accounts: &[AccountPass]) {
        let mut aged = BTreeSet::new();
        for a in accounts {
            if let Some(id) = &a.id {
                let labels = AccountOutcomeLabels {
                    account: id.clone(),
                    outcome: a.outcome_label(),
                };
                self.metrics.account_cycles.get_or_create(&labels).inc();
            }
            let Ok((cycle, _)) = &a.outcome else { continue };
            let labels = |namespace: &str, service: &str| ServiceLabels {
                namespace: namespace.to_string(),
                service: service.to_string(),
                account: a.id.clone(),
            };
            for f in &cycle.failures {
                let l = labels(&f.namespace, &f.service);
                self.metrics.service_failures.get_or_create(&l).inc();
            }
            for age in &cycle.ages {
                let l = labels(&age.namespace, &age.service);
                self.metrics
                    .service_data_age
                    .get_or_create(&l)
                    .set(age.age.as_secs_f64());
                aged.insert(l);
            }
        }
        // An account that failed as a whole keeps its services' gauges (they were
        // not read, so they are not known gone).
        let failed: BTreeSet<Option<Arc<str>>> = accounts
            .iter()
            .filter(|a| a.outcome.is_err())
            .map(|a| a.id.clone())
            .collect();
        let gone: Vec<ServiceLabels> = self.aged.difference(&aged).cloned().collect();
        for l in gone {
            if failed.contains(&l.account) {
                aged.insert(l);
            } else {
                self.metrics.service_data_age.remove(&l);
            }
        }
        self.aged = aged;
    }

    /// A successful publish of the targets; `outcome`: what the file write did
    /// (None: there is no file).
    pub(super) fn published(&self, pass: &Pass, outcome: Option<Publish>) {
        let summary = &pass.summary;
        self.metrics.targets.set(summary.targets as i64);
        self.metrics.services.set(summary.services as i64);
        for id in pass.accounts.iter().filter_map(|a| a.id.as_ref()) {
            let n = summary
                .by_account
                .iter()
                .find(|(a, _)| **a == **id)
                .map_or(0, |(_, n)| *n);
            let labels = AccountLabels {
                account: id.clone(),
            };
            self.metrics
                .account_targets
                .get_or_create(&labels)
                .set(n as i64);
        }
        self.metrics.last_success.set(unix_now());
        if let Some(outcome) = outcome {
            self.metrics
                .writes
                .get_or_create(&super::metrics::OutcomeLabels {
                    outcome: outcome.as_str(),
                })
                .inc();
        }
    }
}
