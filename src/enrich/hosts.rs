//! Hosts: the container instances of the clusters seen (for the hosts file),
//! DescribeContainerInstances for the ones not mapped yet, DescribeInstances for new
//! hosts and on the Name clock, and the hosts file's list, never shrunk by a failed
//! call.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use tokio::time::Instant;
use tracing::warn;

use super::{Enriched, Enricher};
use crate::aws::{BATCH, Ec2, Ecs, by_deadline};
use crate::model::Host;
use crate::model::clock::due;

impl<E: Ecs, X: Ec2> Enricher<E, X> {
    /// Whether a clock read at `at` is due on the Name clock.
    fn name_due(&self, at: Instant, now: Instant) -> bool {
        due(Some(at), self.opts.name_refresh, now)
    }

    /// For the hosts file: the container instances of every cluster in which a task
    /// was found, listed when the cluster is first seen and then on the Name clock
    /// (hosts that run no discovered task, such as a node exporter daemon's, are
    /// scraped too).
    pub(super) async fn list_clusters(
        &mut self,
        now: Instant,
        deadline: Instant,
        out: &mut Enriched,
    ) {
        let seen: BTreeSet<Arc<str>> = self
            .tasks
            .values()
            .filter(|t| t.facts.is_some())
            .map(|t| t.cluster.clone())
            .collect();
        self.clusters.retain(|c, _| seen.contains(c));
        for cluster in seen {
            if self
                .clusters
                .get(&cluster)
                .is_some_and(|(at, _)| !self.name_due(*at, now))
            {
                continue;
            }
            let call = self.ecs.list_container_instances(&cluster);
            match by_deadline(deadline, "ListContainerInstances", call).await {
                Ok(arns) => {
                    let arns = arns.iter().map(|a| self.strings.share(a)).collect();
                    self.clusters.insert(cluster, (now, arns));
                }
                Err(e) => {
                    warn!(cluster = &*cluster, error = %e,
                        "could not list the container instances of a cluster; the hosts file keeps the hosts it has");
                    out.errors.push(e);
                }
            }
        }
    }

    /// The container instances in use, by cluster: those of the tasks, and those
    /// the hosts file lists.
    fn container_instances_in_use(&self) -> BTreeMap<Arc<str>, BTreeSet<Arc<str>>> {
        let mut cis: BTreeMap<Arc<str>, BTreeSet<Arc<str>>> = BTreeMap::new();
        if !self.opts.ec2 {
            return cis;
        }
        for t in self.tasks.values() {
            if let Some(arn) = t
                .facts
                .as_ref()
                .and_then(|f| f.container_instance_arn.as_ref())
            {
                cis.entry(t.cluster.clone())
                    .or_default()
                    .insert(arn.clone());
            }
        }
        for (cluster, (_, arns)) in &self.clusters {
            cis.entry(cluster.clone())
                .or_default()
                .extend(arns.iter().cloned());
        }
        cis
    }

    /// DescribeContainerInstances for the container instances in use that are not
    /// mapped to an EC2 instance yet. Returns every container instance in use.
    pub(super) async fn map_container_instances(
        &mut self,
        now: Instant,
        deadline: Instant,
        out: &mut Enriched,
    ) -> HashSet<Arc<str>> {
        let cis = self.container_instances_in_use();
        let referenced: HashSet<Arc<str>> = cis.values().flatten().cloned().collect();
        self.container_instances
            .retain(|arn, _| referenced.contains(arn.as_str()));
        for (cluster, arns) in cis {
            let arns: Vec<String> = arns
                .iter()
                .filter(|arn| {
                    !self.container_instances.contains_key(&***arn)
                        && self
                            .missing
                            .get(&***arn)
                            .is_none_or(|at| self.name_due(*at, now))
                })
                .map(|arn| arn.to_string())
                .collect();
            for batch in arns.chunks(BATCH) {
                let call = self.ecs.container_instances(&cluster, batch);
                match by_deadline(deadline, "DescribeContainerInstances", call).await {
                    Ok(pairs) => self.learn_container_instances(batch, pairs, now),
                    Err(e) => {
                        warn!(cluster = &*cluster, error = %e, "could not describe container instances");
                        out.errors.push(e);
                    }
                }
            }
        }
        referenced
    }

    fn learn_container_instances(
        &mut self,
        asked: &[String],
        pairs: Vec<(String, String)>,
        now: Instant,
    ) {
        for (arn, ec2) in pairs {
            let ec2 = self.strings.share(&ec2);
            self.missing.remove(&arn);
            self.container_instances.insert(arn, ec2);
        }
        for arn in asked {
            if !self.container_instances.contains_key(arn) {
                self.missing.insert(arn.clone(), now);
            }
        }
    }

    /// Hosts: the tagged ones listed on the Name clock, then DescribeInstances for
    /// new hosts and for the others on the Name clock. `referenced`: the container
    /// instances in use.
    pub(super) async fn read_hosts(
        &mut self,
        referenced: &HashSet<Arc<str>>,
        now: Instant,
        deadline: Instant,
        out: &mut Enriched,
    ) {
        let mut wanted: BTreeSet<String> = referenced
            .iter()
            .filter_map(|arn| self.container_instances.get(&**arn))
            .map(|ec2| ec2.to_string())
            .collect();
        self.list_tagged_hosts(now, deadline, out).await;
        if let Some((_, ids)) = &self.tagged {
            wanted.extend(ids.iter().cloned());
        }
        let asked: Vec<String> = wanted
            .iter()
            .filter(|id| {
                self.hosts
                    .get(*id)
                    .is_none_or(|(_, at)| self.name_due(*at, now))
                    && self
                        .missing
                        .get(*id)
                        .is_none_or(|at| self.name_due(*at, now))
            })
            .cloned()
            .collect();
        if !asked.is_empty() {
            match by_deadline(deadline, "DescribeInstances", self.ec2.hosts(&asked)).await {
                Ok(hosts) => self.learn_hosts(asked, hosts, now),
                Err(e) => {
                    warn!(hosts = asked.len(), error = %e, "could not describe EC2 hosts; keeping their cached tags");
                    out.errors.push(e);
                }
            }
        }
        self.hosts.retain(|id, _| wanted.contains(id));
        self.missing
            .retain(|k, _| referenced.contains(k.as_str()) || wanted.contains(k));
    }

    /// With `--ec2-hosts-tag`: the running instances with the tag, on the Name clock.
    async fn list_tagged_hosts(&mut self, now: Instant, deadline: Instant, out: &mut Enriched) {
        if !self.opts.want_hosts {
            return;
        }
        let Some((key, value)) = self.opts.hosts_tag.clone() else {
            return;
        };
        if self
            .tagged
            .as_ref()
            .is_some_and(|(at, _)| !self.name_due(*at, now))
        {
            return;
        }
        let call = self.ec2.hosts_tagged(&key, &value);
        match by_deadline(deadline, "DescribeInstances", call).await {
            Ok(hosts) => {
                let ids = hosts.iter().map(|h| h.instance_id.clone()).collect();
                for h in hosts {
                    self.missing.remove(&h.instance_id);
                    self.hosts.insert(h.instance_id.clone(), (h, now));
                }
                self.tagged = Some((now, ids));
            }
            Err(e) => {
                warn!(tag = %format!("{key}={value}"), error = %e, "could not list EC2 hosts by tag");
                out.errors.push(e);
            }
        }
    }

    fn learn_hosts(&mut self, asked: Vec<String>, hosts: Vec<Host>, now: Instant) {
        let mut returned = HashSet::new();
        for h in hosts {
            returned.insert(h.instance_id.clone());
            self.missing.remove(&h.instance_id);
            self.hosts.insert(h.instance_id.clone(), (h, now));
        }
        for id in asked.into_iter().filter(|id| !returned.contains(id)) {
            match self.hosts.get_mut(&id) {
                // Gone from EC2 (terminated) while still wanted: keep its cached
                // tags, ask again on the Name clock.
                Some((_, at)) => *at = now,
                None => {
                    self.missing.insert(id, now);
                }
            }
        }
    }

    /// The hosts file: exactly the hosts known after a pass without error; after a
    /// failed call, no host leaves it (last known good).
    pub(super) fn list_hosts(&mut self, out: &mut Enriched) {
        if !self.opts.want_hosts {
            return;
        }
        let current = self.host_list();
        out.hosts = if out.errors.is_empty() {
            Some(current)
        } else {
            self.last_hosts
                .as_ref()
                .map(|last| keep_known(current, last))
        };
        if out.hosts.is_some() {
            self.last_hosts.clone_from(&out.hosts);
        }
    }

    /// The known hosts for the hosts file, each with the cluster of its tasks.
    fn host_list(&self) -> Vec<Host> {
        let mut cluster_of: HashMap<&str, &str> = HashMap::new();
        for t in self.tasks.values() {
            if let Some(ec2) = t
                .facts
                .as_ref()
                .and_then(|f| f.container_instance_arn.as_ref())
                .and_then(|arn| self.container_instances.get(&**arn))
            {
                cluster_of.insert(ec2, &t.cluster);
            }
        }
        for (cluster, (_, arns)) in &self.clusters {
            for ec2 in arns
                .iter()
                .filter_map(|a| self.container_instances.get(&**a))
            {
                cluster_of.insert(ec2, cluster);
            }
        }
        // With a tag filter, the hosts file holds exactly the tagged hosts.
        let tagged: Option<HashSet<&str>> = self.opts.hosts_tag.as_ref().map(|_| {
            self.tagged
                .iter()
                .flat_map(|(_, ids)| ids.iter().map(String::as_str))
                .collect()
        });
        let mut v: Vec<Host> = self
            .hosts
            .values()
            .filter(|(h, _)| {
                tagged
                    .as_ref()
                    .is_none_or(|t| t.contains(h.instance_id.as_str()))
            })
            .map(|(h, _)| Host {
                cluster: cluster_of
                    .get(h.instance_id.as_str())
                    .map(|c| c.to_string()),
                ..h.clone()
            })
            .collect();
        v.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
        v
    }

    /// Whether any host clock falls due at `now` (a settled pass is then not reused).
    pub(super) fn host_clock_due(&self, now: Instant) -> bool {
        self.hosts.values().any(|(_, at)| self.name_due(*at, now))
            || (self.opts.want_hosts
                && self.opts.hosts_tag.is_some()
                && self
                    .tagged
                    .as_ref()
                    .is_none_or(|(at, _)| self.name_due(*at, now)))
            || self.missing.values().any(|at| self.name_due(*at, now))
            || self
                .clusters
                .values()
                .any(|(at, _)| self.name_due(*at, now))
    }
}

/// `current`, plus the hosts of `last` it lacks, by instance id.
fn keep_known(mut current: Vec<Host>, last: &[Host]) -> Vec<Host> {
    let have: HashSet<String> = current.iter().map(|h| h.instance_id.clone()).collect();
    current.extend(
        last.iter()
            .filter(|h| !have.contains(&h.instance_id))
            .cloned(),
    );
    current.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
    current
}
