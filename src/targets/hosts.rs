//! The EC2 hosts file: one target per host and port.

use std::collections::{BTreeMap, BTreeSet};

use super::TargetGroup;
use super::plan::ACCOUNT_LABEL;
use crate::model::Host;

fn put(labels: &mut BTreeMap<String, String>, name: &str, value: Option<&String>) {
    if let Some(v) = value.filter(|v| !v.is_empty()) {
        labels.insert(name.to_string(), v.clone());
    }
}

/// Target groups for the EC2 hosts file: one per host and port, `instance` set to
/// the host's Name tag (its instance id when it has none), no `__address__` (Prometheus
/// sets it from `targets`). Hosts without a private IP are left out. Sorted.
pub fn host_groups(hosts: &[Host], ports: &[u16]) -> Vec<TargetGroup> {
    account_host_groups(&[(None, hosts)], ports)
}

/// [`host_groups`] of the hosts of several accounts, each group labelled with its
/// account (`aws_account_id`) when one is given. Sorted.
pub fn account_host_groups(hosts: &[(Option<&str>, &[Host])], ports: &[u16]) -> Vec<TargetGroup> {
    let mut out = BTreeSet::new();
    for (account, hosts) in hosts {
        add_hosts(&mut out, account.as_deref(), hosts, ports);
    }
    out.into_iter().collect()
}

fn add_hosts(
    out: &mut BTreeSet<TargetGroup>,
    account: Option<&str>,
    hosts: &[Host],
    ports: &[u16],
) {
    for h in hosts {
        let Some(ip) = h.private_ip.as_deref().filter(|ip| !ip.is_empty()) else {
            continue;
        };
        for port in ports {
            let addr = format!("{ip}:{port}");
            let mut l = BTreeMap::new();
            l.insert(
                "instance".to_string(),
                h.name.clone().unwrap_or_else(|| h.instance_id.clone()),
            );
            l.insert("ec2_instance_id".to_string(), h.instance_id.clone());
            put(&mut l, "ec2_name", h.name.as_ref());
            put(&mut l, "ec2_instance_type", h.instance_type.as_ref());
            put(&mut l, "availability_zone", h.availability_zone.as_ref());
            put(&mut l, "ecs_cluster", h.cluster.as_ref());
            if let Some(account) = account {
                l.insert(ACCOUNT_LABEL.to_string(), account.to_string());
            }
            out.insert(TargetGroup {
                targets: vec![addr],
                labels: l,
            });
        }
    }
}

/// Serialises target groups as Prometheus file_sd JSON (pretty, newline-terminated).
pub fn to_json(groups: &[TargetGroup]) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(groups).expect("string maps always serialise");
    out.push(b'\n');
    out
}
