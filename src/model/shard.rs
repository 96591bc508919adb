//! Sharding: which share of the targets one sidecar (or one http_sd request)
//! publishes.

use std::borrow::Cow;
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

impl ShardKey {
    /// The string a target is sharded by: the one rule `--shard` (in discovery) and
    /// a per-request `?shard=` (on the http_sd endpoint) both apply, so a share
    /// asked over HTTP equals the share a sidecar started with `--shard` publishes.
    pub fn key<'a>(self, namespace: &str, service: &str, instance_id: &'a str) -> Cow<'a, str> {
        match self {
            ShardKey::Service => Cow::Owned(Shard::service_key(namespace, service)),
            ShardKey::Task => Cow::Borrowed(instance_id),
        }
    }
}

impl Snapshot {
    /// The share of this snapshot that `shard` keeps by `key`: whole services by
    /// service key, the instances of each service by task key. Tags, task facts and
    /// unchanged instance lists stay shared with this snapshot.
    pub fn share(&self, shard: Shard, key: ShardKey) -> Snapshot {
        let services = self
            .services
            .iter()
            .filter_map(|svc| share_of_service(svc, shard, key))
            .collect();
        Snapshot {
            services,
            tasks: self.tasks.clone(),
            held: self.held.clone(),
        }
    }
}

/// What `shard` keeps of one service; None when nothing.
fn share_of_service(svc: &ServiceData, shard: Shard, key: ShardKey) -> Option<ServiceData> {
    let keeps = |id: &str| shard.keeps(&key.key(&svc.namespace, &svc.service, id));
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
    fn the_key_of_a_target() {
        assert_eq!(ShardKey::Service.key("ns", "api", "t-1"), "ns/api");
        assert_eq!(ShardKey::Task.key("ns", "api", "t-1"), "t-1");
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
