//! One AWS account the sidecar discovers in: its id, the role assumed into it, and
//! its own discovery and enricher, which hold that account's clients. The engine
//! runs one [`Account`] per account side by side and merges what they find, so
//! one account's failures never touch another's targets. Something that needs to
//! act on one account (refresh one of its services, say) finds it by its id
//! ([`super::Engine::account`]).

use std::collections::BTreeSet;
use std::sync::Arc;

use tokio::time::Instant;
use tracing::{error, info, warn};

use super::SidecarOptions;
use crate::aws::accounts::RoleSession;
use crate::aws::{AccountClients, AwsError, CloudMap, Ec2, Ecs};
use crate::discovery::{Cycle, Discovery, Refreshed, Wanted};
use crate::enrich::{Enriched, Enricher};
use crate::model::{Host, Snapshot};
use crate::targets::Summary;

/// One account: discovery plus, when enabled, enrichment, over its clients.
pub struct Account<C, E, X> {
    /// The account id, when targets carry it; None: the own account, unlabelled.
    id: Option<Arc<str>>,
    /// The role assumed into it; None: the sidecar's own credentials.
    role: Option<Arc<RoleSession>>,
    discovery: Discovery<C, E>,
    enricher: Option<Enricher<E, X>>,
    /// The hosts of the last pass that could say them.
    hosts: Option<Vec<Host>>,
}

/// What one account's pass found.
pub struct AccountPass {
    /// The account id, when targets carry it.
    pub id: Option<Arc<str>>,
    /// The ARN of the role assumed into it, if any.
    pub role: Option<String>,
    /// Its discovery cycle (whose snapshot has moved into the pass's merged
    /// snapshot) and enrichment, or why discovery failed before any service of
    /// the account was known.
    pub outcome: Result<(Cycle, Enriched), AwsError>,
    /// AssumeRole failed this cycle: the account's calls failed with it.
    pub role_error: Option<AwsError>,
    /// New tasks of the account held out of the file.
    pub held: usize,
}

impl AccountPass {
    /// Whether discovery in this account read everything this cycle.
    pub fn complete(&self) -> bool {
        matches!(&self.outcome, Ok((c, _)) if c.complete)
    }

    /// `complete`, `partial` (some reads failed: last known data kept) or `failed`
    /// (nothing known yet).
    pub fn outcome_label(&self) -> &'static str {
        match &self.outcome {
            Ok((c, _)) if c.complete => "complete",
            Ok(_) => "partial",
            Err(_) => "failed",
        }
    }

    /// The account's share of the cycle summary, one log line; nothing for the
    /// own account when targets carry no account (the cycle's line says it all).
    pub fn log_summary(&self, summary: &Summary) {
        let Some(id) = self.id.as_deref() else { return };
        let targets = summary
            .by_account
            .iter()
            .find(|(acc, _)| acc == id)
            .map_or(0, |(_, n)| *n);
        let role = self.role.as_deref().unwrap_or("(own credentials)");
        match &self.outcome {
            Ok((c, e)) => info!(
                account = id,
                role,
                outcome = self.outcome_label(),
                services = c.stats.services,
                tagged = c.stats.tagged,
                instances = c.stats.instances,
                targets,
                failed = c.failures.len() + usize::from(c.listing_error.is_some()),
                stale = c.failures.iter().filter(|f| f.kept).count(),
                held = self.held,
                enrich_errors = e.errors.len(),
                "account cycle done"
            ),
            Err(e) => {
                info!(account = id, role, outcome = "failed", targets, error = %e, "account cycle done");
            }
        }
    }

    /// Every failure of the account's cycle in one line (the role's first).
    pub fn describe_failures(&self) -> String {
        let mut parts = Vec::new();
        if let Some(e) = &self.role_error {
            parts.push(e.to_string());
        }
        match &self.outcome {
            Ok((c, _)) => parts.push(c.describe_failures()),
            Err(e) if self.role_error.is_none() => parts.push(e.to_string()),
            Err(_) => {}
        }
        parts.retain(|p| !p.is_empty());
        parts.join("; ")
    }
}

impl<C: CloudMap, E: Ecs, X: Ec2> Account<C, E, X> {
    /// The account of `clients`; `others`: the ids of the other accounts the
    /// sidecar discovers in (namespaces they share with this one are theirs).
    pub fn new(
        clients: AccountClients<C, E, X>,
        options: &SidecarOptions,
        others: BTreeSet<String>,
    ) -> Self {
        let c = clients.clients;
        let mut discovery = Discovery::with_ecs_services(
            c.cloudmap,
            Some(c.ecs.clone()),
            options.discovery.clone(),
        );
        if let Some(id) = &clients.id {
            discovery = discovery.in_account(id.clone(), others);
        }
        Account {
            id: clients.id,
            role: clients.role,
            discovery,
            enricher: options
                .enrich
                .clone()
                .map(|o| Enricher::new(c.ecs, c.ec2, o)),
            hosts: None,
        }
    }

    /// The account id, when targets carry it.
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// The account's discovery (and through it, its Cloud Map client).
    pub fn discovery(&mut self) -> &mut Discovery<C, E> {
        &mut self.discovery
    }

    /// The account's enricher (its ECS and EC2 clients), when enrichment is on.
    pub fn enricher(&mut self) -> Option<&mut Enricher<E, X>> {
        self.enricher.as_mut()
    }

    /// The Cloud Map adapter (the benchmark reads its call counts).
    pub fn cloudmap(&self) -> &C {
        self.discovery.client()
    }

    /// The account's hosts for the hosts file, as last known; None while no pass
    /// could say them.
    pub fn hosts(&self) -> Option<&[Host]> {
        self.hosts.as_deref()
    }

    /// A discovery cycle with the enrichment folded into its snapshot; every call
    /// ends by `deadline`. The snapshot comes back apart from the report.
    pub async fn pass(&mut self, now: Instant, deadline: Instant) -> (AccountPass, Snapshot) {
        if let Some(role) = &self.role {
            role.begin_cycle();
        }
        let (outcome, snapshot) = match self.discovery.cycle(now, deadline).await {
            Ok(mut cycle) => {
                let enriched = self.enrich(&mut cycle, now, deadline).await;
                let snapshot = std::mem::take(&mut cycle.snapshot);
                (Ok((cycle, enriched)), snapshot)
            }
            Err(e) => (Err(e), Snapshot::default()),
        };
        let report = AccountPass {
            held: snapshot.held.len(),
            id: self.id.clone(),
            role: self.role.as_ref().map(|r| r.role().to_string()),
            role_error: self.role.as_ref().and_then(|r| r.failure()),
            outcome,
        };
        self.log_failure(&report);
        (report, snapshot)
    }

    /// Reads the `wanted` services again between cycles (an event touched them),
    /// enriches what is new in them, and reports the account's whole state as a
    /// pass would; also the ids of the services whose lists changed or failed.
    pub async fn refresh(
        &mut self,
        wanted: &[Wanted],
        now: Instant,
        deadline: Instant,
    ) -> (AccountPass, Snapshot, Refreshed) {
        let (mut cycle, r) = self.discovery.refresh(wanted, now, deadline).await;
        let enriched = self.enrich(&mut cycle, now, deadline).await;
        let snapshot = std::mem::take(&mut cycle.snapshot);
        let report = AccountPass {
            held: snapshot.held.len(),
            id: self.id.clone(),
            role: self.role.as_ref().map(|r| r.role().to_string()),
            role_error: None,
            outcome: Ok((cycle, enriched)),
        };
        (report, snapshot, r)
    }

    /// The account as the last pass or refresh left it, reported as a pass that
    /// read nothing (its snapshot is the caller's to keep).
    pub fn current(&self, now: Instant, held: usize) -> AccountPass {
        AccountPass {
            held,
            id: self.id.clone(),
            role: self.role.as_ref().map(|r| r.role().to_string()),
            role_error: None,
            outcome: self.discovery.current(now).map(|mut c| {
                c.snapshot = Snapshot::default();
                (c, Enriched::default())
            }),
        }
    }

    /// The account's discovery, to look up what an event touches.
    pub fn discovery_ref(&self) -> &Discovery<C, E> {
        &self.discovery
    }

    /// Enriches the cycle's snapshot in place; keeps the hosts it could say.
    async fn enrich(&mut self, cycle: &mut Cycle, now: Instant, deadline: Instant) -> Enriched {
        let mut enriched = match self.enricher.as_mut() {
            Some(e) => e.enrich(&cycle.snapshot, now, deadline).await,
            None => Enriched::default(),
        };
        cycle.snapshot.tasks = std::mem::take(&mut enriched.tasks);
        cycle.snapshot.held = std::mem::take(&mut enriched.held);
        if enriched.hosts.is_some() {
            self.hosts.clone_from(&enriched.hosts);
        }
        enriched
    }

    /// An account of several says itself what went wrong in it (a single
    /// unlabelled account leaves that to the loop's own lines, as before).
    fn log_failure(&self, report: &AccountPass) {
        let Some(id) = &self.id else { return };
        let role = report.role.as_deref().unwrap_or("(own credentials)");
        if let (Some(e), Some(session)) = (&report.role_error, &self.role) {
            error!(account = %id, role, error = %session.failure_line(e),
                "cannot assume the role; this account keeps its last known targets and the others are not affected");
        } else if let Err(e) = &report.outcome {
            warn!(account = %id, role, error = %e,
                "discovery in this account failed before any of its services was known; the other accounts are not affected");
        }
    }
}
