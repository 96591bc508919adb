//! Sharding: which share of the targets one sidecar (or one http_sd request)
//! publishes.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use super::{ServiceData, Snapshot};

/// `INDEX/COUNT`: this shard keeps the keys whose hash modulo COUNT is INDEX.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

/// What a shard hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ShardKey {
    /// `namespace/service`: a service's targets stay in one shard.
    Service,
    /// The Cloud Map instance id (ECS task id).
    Task,
}

/// What sharding looks at in a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardTarget<'a> {
    /// The target's `aws_account_id`, when targets carry one (other accounts are
    /// discovered); None otherwise.
    pub account: Option<&'a str>,
    pub namespace: &'a str,
    pub service: &'a str,
    /// The Cloud Map instance id (the ECS task id); not needed by
    /// [`ShardKey::Service`].
    pub instance: &'a str,
}

impl ShardKey {
    /// The key a target is sharded by: `namespace/service` ([`ShardKey::Service`])
    /// or the instance id ([`ShardKey::Task`]), after `account/` when targets carry
    /// `aws_account_id` (equal names in two accounts are then two keys). With
    /// Prometheus's `hashmod`, the same split is `source_labels` [aws_account_id,]
    /// cloudmap_namespace, cloudmap_service (or ecs_task_id) joined by `/`.
    /// This is the one rule: the discovery and any per-request shard use it.
    pub fn of(self, target: &ShardTarget<'_>) -> String {
        let own = match self {
            ShardKey::Service => Shard::service_key(target.namespace, target.service),
            ShardKey::Task => target.instance.to_string(),
        };
        match target.account {
            Some(account) => format!("{account}/{own}"),
            None => own,
        }
    }
}

impl Shard {
    /// The shard `key` belongs to among `count`: the md5 of the key, its last 8
    /// bytes read as a big-endian number, modulo `count`. This is the function of
    /// Prometheus's `hashmod` relabel action, so an operator can reproduce the split
    /// with relabelling, and it never changes across restarts or versions.
    pub fn of(key: &str, count: u32) -> u32 {
        use md5::{Digest, Md5};
        let digest = Md5::digest(key.as_bytes());
        let mut low = [0u8; 8];
        low.copy_from_slice(&digest[8..16]);
        (u64::from_be_bytes(low) % u64::from(count.max(1))) as u32
    }

    /// Whether this shard keeps `key`.
    pub fn keeps(&self, key: &str) -> bool {
        Shard::of(key, self.count) == self.index
    }

    /// The key of a service for `--shard-key service`.
    pub fn service_key(namespace: &str, service: &str) -> String {
        format!("{namespace}/{service}")
    }
}

impl Snapshot {
    /// The share of this snapshot that `shard` keeps by `key`: whole services by
    /// service key, the instances of each service by task key, each target's key
    /// made by [`ShardKey::of`] with the account of its service (the same rule as
    /// `--shard`). Each account keeps its run in [`Snapshot::accounts`] (possibly
    /// empty). Tags, task facts and unchanged instance lists stay shared with this
    /// snapshot.
    pub fn share(&self, shard: Shard, key: ShardKey) -> Snapshot {
        let mut out = Snapshot {
            services: Vec::new(),
            tasks: self.tasks.clone(),
            held: self.held.clone(),
            accounts: Vec::new(),
        };
        if self.accounts.is_empty() {
            out.services = self
                .services
                .iter()
                .filter_map(|svc| share_of_service(None, svc, shard, key))
                .collect();
            return out;
        }
        let mut services = self.services.iter();
        for (account, n) in &self.accounts {
            let kept: Vec<_> = services
                .by_ref()
                .take(*n)
                .filter_map(|svc| share_of_service(Some(account), svc, shard, key))
                .collect();
            out.accounts.push((account.clone(), kept.len()));
            out.services.extend(kept);
        }
        out
    }
}

/// What `shard` keeps of one service found in `account`; None when nothing.
fn share_of_service(
    account: Option<&str>,
    svc: &ServiceData,
    shard: Shard,
    key: ShardKey,
) -> Option<ServiceData> {
    let keeps = |instance: &str| {
        shard.keeps(&key.of(&ShardTarget {
            account,
            namespace: &svc.namespace,
            service: &svc.service,
            instance,
        }))
    };
    match key {
        ShardKey::Service => keeps("").then(|| svc.clone()),
        ShardKey::Task => {
            let kept: Vec<_> = svc
                .instances
                .iter()
                .filter(|i| keeps(&i.id))
                .cloned()
                .collect();
            (!kept.is_empty()).then(|| ServiceData {
                instances: Arc::new(kept),
                ..svc.clone()
            })
        }
    }
}

impl FromStr for Shard {
    type Err = String;

    /// `INDEX/COUNT` with `0 <= INDEX < COUNT`.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("expected INDEX/COUNT with 0 <= INDEX < COUNT, e.g. 0/3, not {s:?}");
        let (i, c) = s.split_once('/').ok_or_else(bad)?;
        let index: u32 = i.trim().parse().map_err(|_| bad())?;
        let count: u32 = c.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_function_is_prometheus_hashmod() {
        // Reference values: md5 of the key, last 8 bytes big-endian (computed with
        // Python's hashlib), modulo the count.
        assert_eq!(Shard::of("a", 3), (3585878926028121697u64 % 3) as u32);
        assert_eq!(
            Shard::of("prod/api", 7),
            (4049542640361990847u64 % 7) as u32
        );
        assert_eq!(Shard::of("task-1", 3), (2131566220572373302u64 % 3) as u32);
        assert_eq!(Shard::of("", 7), (16825458760271544958u64 % 7) as u32);
        assert_eq!(Shard::of("anything", 1), 0);
    }

    #[test]
    fn shards_split_keys_exactly_once_and_evenly() {
        let count = 4;
        let shards: Vec<Shard> = (0..count).map(|index| Shard { index, count }).collect();
        let mut per = vec![0usize; count as usize];
        for i in 0..4000 {
            let key = Shard::service_key("ns", &format!("svc-{i}"));
            let owners: Vec<u32> = shards
                .iter()
                .filter(|s| s.keeps(&key))
                .map(|s| s.index)
                .collect();
            assert_eq!(owners.len(), 1, "{key}: {owners:?}");
            per[owners[0] as usize] += 1;
        }
        for n in per {
            assert!(
                (800..1200).contains(&n),
                "uneven split: {n} of 4000 in one of 4 shards"
            );
        }
    }

    #[test]
    fn the_account_leads_the_key_only_when_targets_carry_it() {
        let t = ShardTarget {
            account: None,
            namespace: "prod",
            service: "api",
            instance: "0123abcd",
        };
        assert_eq!(ShardKey::Service.of(&t), "prod/api");
        assert_eq!(ShardKey::Task.of(&t), "0123abcd");
        let t = ShardTarget {
            account: Some("111111111111"),
            ..t
        };
        assert_eq!(ShardKey::Service.of(&t), "111111111111/prod/api");
        assert_eq!(ShardKey::Task.of(&t), "111111111111/0123abcd");
        // The same service name in two accounts: two keys, which may land apart.
        let other = ShardTarget {
            account: Some("222222222222"),
            ..t
        };
        assert_ne!(ShardKey::Service.of(&t), ShardKey::Service.of(&other));
    }

    #[test]
    fn parse_and_display() {
        let s: Shard = "1/3".parse().unwrap();
        assert_eq!(s, Shard { index: 1, count: 3 });
        assert_eq!(s.to_string(), "1/3");
        for bad in ["3/3", "0/0", "x/2", "1", "-1/2"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }
}
