//! What the run loop last published, as `/sd/*` serves it.

use std::sync::{Arc, RwLock};

use tokio::sync::OnceCell;

use super::body::Body;
use crate::model::Snapshot;
use crate::targets::TargetOptions;

/// One publish of the run loop: what `/sd/*` serves until the next one.
pub struct Publication {
    pub(super) snapshot: Snapshot,
    pub(super) targets: TargetOptions,
    /// The EC2 hosts list, when it is on and known.
    pub(super) hosts: Option<Body>,
    /// The whole targets list, rendered on the first request.
    pub(super) whole: OnceCell<Body>,
}

/// What the run loop last published, read by the http_sd handlers. The loop sets it
/// after every publish; until the first, `/sd/*` answers 503.
pub struct Published {
    /// Whether the EC2 hosts list is on (`/sd/hosts` answers 404 when it is not).
    pub(super) hosts_on: bool,
    current: RwLock<Option<Arc<Publication>>>,
}

impl Published {
    /// Nothing published yet; `hosts_on`: the EC2 hosts list is made.
    pub fn new(hosts_on: bool) -> Self {
        Published {
            hosts_on,
            current: RwLock::new(None),
        }
    }

    /// Records a publish: the snapshot and the options of the file, and the hosts
    /// list when this cycle made one (None keeps the last known list). A publish
    /// equal to the current one changes nothing, so its rendered body is kept; a
    /// change of the hosts list alone keeps the targets body.
    pub fn publish(&self, snapshot: &Snapshot, targets: &TargetOptions, hosts: Option<&[u8]>) {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        let last = current.as_ref();
        let old_hosts = last.and_then(|p| p.hosts.as_ref());
        let hosts = match (hosts, old_hosts) {
            (Some(new), Some(old)) if old.holds(new) => Some(old.clone()),
            (Some(new), _) => Some(Body::of(new)),
            (None, old) => old.cloned(),
        };
        let same_targets = last.is_some_and(|p| p.snapshot == *snapshot && p.targets == *targets);
        let same_hosts = hosts.as_ref().map(|b| &b.etag) == old_hosts.map(|b| &b.etag);
        if same_targets && same_hosts {
            return;
        }
        let whole = match last {
            Some(p) if same_targets => OnceCell::new_with(p.whole.get().cloned()),
            _ => OnceCell::new(),
        };
        *current = Some(Arc::new(Publication {
            snapshot: snapshot.clone(),
            targets: targets.clone(),
            hosts,
            whole,
        }));
    }

    /// The current publication; None before the first.
    pub fn current(&self) -> Option<Arc<Publication>> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
