//! Pure target building: a discovery [`Snapshot`] and [`TargetOptions`] become sorted,
//! labelled file_sd [`TargetGroup`]s, plus the endpoints that had to be skipped and why.
//!
//! No I/O and no clocks here, so every rule is unit-tested with literal fixtures.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::io::{self, Write};
use std::sync::Arc;

use serde::Serialize;

use crate::config::{LabelStyle, Shard};

/// Service tag holding the primary endpoint's path (required for it to be scraped).
pub const TAG_METRICS_PATH: &str = "METRICS_PATH";
/// Service tag holding the primary endpoint's port.
pub const TAG_METRICS_PORT: &str = "METRICS_PORT";
/// Service tag holding the primary endpoint's scheme (`http` or `https`).
pub const TAG_METRICS_SCHEME: &str = "METRICS_SCHEME";
/// Service tag for the extra ECS endpoint (an ecs_exporter-style sidecar).
pub const TAG_ECS_METRICS_PATH: &str = "ECS_METRICS_PATH";
/// Port of the extra ECS endpoint.
pub const TAG_ECS_METRICS_PORT: &str = "ECS_METRICS_PORT";

/// Cloud Map instance attributes that ECS sets when it registers a task.
pub mod attr {
    pub const IPV4: &str = "AWS_INSTANCE_IPV4";
    pub const IPV6: &str = "AWS_INSTANCE_IPV6";
    pub const PORT: &str = "AWS_INSTANCE_PORT";
    pub const AZ: &str = "AVAILABILITY_ZONE";
    pub const ECS_CLUSTER: &str = "ECS_CLUSTER_NAME";
    pub const ECS_SERVICE: &str = "ECS_SERVICE_NAME";
    pub const ECS_TASK_FAMILY: &str = "ECS_TASK_DEFINITION_FAMILY";
}

/// One Cloud Map instance as discovered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// Instance id; ECS uses the task id.
    pub id: String,
    pub attributes: Attributes,
}

/// Instance attributes: a map from name to value kept as one sorted slice, whose
/// strings discovery shares between instances (most tasks carry the same names
/// and many equal values: cluster, service, zone, port). At 10,000 instances this
/// is about a third of a `BTreeMap<String, String>` per instance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Attributes(Box<[(Arc<str>, Arc<str>)]>);

impl Attributes {
    fn find(&self, key: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| (**k).cmp(key))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.find(key).ok().map(|i| &*self.0[i].1)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.find(key).is_ok()
    }

    /// Sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (&**k, &**v))
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| &**k)
    }

    /// Sets `key` to `value`.
    pub fn insert(&mut self, key: impl Into<Arc<str>>, value: impl Into<Arc<str>>) {
        let mut v = std::mem::take(&mut self.0).into_vec();
        let key = key.into();
        match v.binary_search_by(|(k, _)| k.cmp(&key)) {
            Ok(i) => v[i].1 = value.into(),
            Err(i) => v.insert(i, (key, value.into())),
        }
        self.0 = v.into_boxed_slice();
    }

    /// Removes `key`; its value if it was there.
    pub fn remove(&mut self, key: &str) -> Option<Arc<str>> {
        let i = self.find(key).ok()?;
        let mut v = std::mem::take(&mut self.0).into_vec();
        let (_, value) = v.remove(i);
        self.0 = v.into_boxed_slice();
        Some(value)
    }

    /// Shares every name and value with equal strings in `pool`.
    pub fn intern(&mut self, pool: &mut Interner) {
        for (k, v) in self.0.iter_mut() {
            *k = pool.get(k);
            *v = pool.get(v);
        }
    }
}

impl<K: Into<Arc<str>>, V: Into<Arc<str>>> FromIterator<(K, V)> for Attributes {
    /// A later pair wins over an earlier one with the same name.
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let map: BTreeMap<Arc<str>, Arc<str>> = iter
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        Attributes(map.into_iter().collect())
    }
}

impl<K: Into<Arc<str>>, V: Into<Arc<str>>, const N: usize> From<[(K, V); N]> for Attributes {
    fn from(pairs: [(K, V); N]) -> Self {
        pairs.into_iter().collect()
    }
}

impl From<BTreeMap<String, String>> for Attributes {
    fn from(map: BTreeMap<String, String>) -> Self {
        map.into_iter().collect()
    }
}

impl<'a> IntoIterator for &'a Attributes {
    type Item = (&'a str, &'a str);
    type IntoIter = Box<dyn Iterator<Item = (&'a str, &'a str)> + 'a>;
    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

/// A pool of shared strings. `sweep` forgets those no one else holds any more.
#[derive(Debug, Default)]
pub struct Interner(std::collections::HashSet<Arc<str>>);

impl Interner {
    /// The pooled string equal to `s`, pooling `s` when there is none.
    pub fn get(&mut self, s: &Arc<str>) -> Arc<str> {
        match self.0.get(&**s) {
            Some(p) => p.clone(),
            None => {
                self.0.insert(s.clone());
                s.clone()
            }
        }
    }

    /// The pooled string equal to `s`, pooling a copy when there is none.
    pub fn share(&mut self, s: &str) -> Arc<str> {
        match self.0.get(s) {
            Some(p) => p.clone(),
            None => {
                let p: Arc<str> = Arc::from(s);
                self.0.insert(p.clone());
                p
            }
        }
    }

    pub fn sweep(&mut self) {
        self.0.retain(|s| Arc::strong_count(s) > 1);
    }
}

/// One Cloud Map service with its tags and its last known instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceData {
    pub namespace: String,
    pub service: String,
    /// Shared with discovery's cache: a snapshot costs no copy of them.
    pub tags: Arc<BTreeMap<String, String>>,
    pub instances: Arc<Vec<Instance>>,
}

/// ECS and EC2 facts about one task (see the enrich module).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskInfo {
    pub launch_type: Option<Arc<str>>,
    pub revision: Option<Arc<str>>,
    pub ec2_instance_id: Option<Arc<str>>,
    pub ec2_name: Option<Arc<str>>,
    pub ec2_instance_type: Option<Arc<str>>,
}

/// An EC2 host for the hosts file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostTarget {
    pub instance_id: String,
    pub name: Option<String>,
    pub instance_type: Option<String>,
    pub availability_zone: Option<String>,
    pub private_ip: Option<String>,
    /// The ECS cluster of the tasks seen on it.
    pub cluster: Option<String>,
}

/// Everything one discovery cycle knows, the input of [`build`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub services: Vec<ServiceData>,
    /// ECS/EC2 facts by task id (= Cloud Map instance id).
    pub tasks: Arc<BTreeMap<String, TaskInfo>>,
    /// Task ids held back until their facts are known.
    pub held: BTreeSet<String>,
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

/// How targets are labelled.
#[derive(Debug, Clone)]
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

/// Why an endpoint was not published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SkipReason {
    /// A port tag or attribute is not a number in 1-65535.
    InvalidPort,
    /// A path tag does not start with `/` or holds whitespace or control characters.
    InvalidPath,
    /// A scheme tag is neither `http` nor `https`.
    InvalidScheme,
    /// `METRICS_PATH_` / `METRICS_PORT_` with an empty endpoint name.
    InvalidName,
    /// No port tag, no AWS_INSTANCE_PORT and no --default-port.
    MissingPort,
    /// A port or scheme tag for an endpoint that has no path tag.
    MissingPath,
    /// The instance has neither AWS_INSTANCE_IPV4 nor AWS_INSTANCE_IPV6.
    MissingAddress,
    /// AWS_INSTANCE_IPV4 / AWS_INSTANCE_IPV6 is not an IP address of that family
    /// (and the other one gives no usable address either).
    InvalidAddress,
}

impl SkipReason {
    /// Every reason, for metrics that must show zeros too.
    pub const ALL: [SkipReason; 8] = [
        SkipReason::InvalidPort,
        SkipReason::InvalidPath,
        SkipReason::InvalidScheme,
        SkipReason::InvalidName,
        SkipReason::MissingPort,
        SkipReason::MissingPath,
        SkipReason::MissingAddress,
        SkipReason::InvalidAddress,
    ];

    /// Stable snake_case name, used as a metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::InvalidPort => "invalid_port",
            SkipReason::InvalidPath => "invalid_path",
            SkipReason::InvalidScheme => "invalid_scheme",
            SkipReason::InvalidName => "invalid_name",
            SkipReason::MissingPort => "missing_port",
            SkipReason::MissingPath => "missing_path",
            SkipReason::MissingAddress => "missing_address",
            SkipReason::InvalidAddress => "invalid_address",
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An endpoint left out, with enough detail for a warning that names the culprit.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Skipped {
    pub namespace: String,
    pub service: String,
    /// The tag (or instance attribute) at fault.
    pub tag: String,
    /// Its value, when it has one.
    pub value: Option<String>,
    /// The instance, when the fault is the instance's (address, port attribute).
    pub instance: Option<String>,
    pub reason: SkipReason,
}

impl Skipped {
    fn new(
        svc: &ServiceData,
        tag: &str,
        value: Option<&str>,
        instance: Option<&str>,
        reason: SkipReason,
    ) -> Self {
        Skipped {
            namespace: svc.namespace.clone(),
            service: svc.service.clone(),
            tag: tag.to_string(),
            value: value.map(str::to_string),
            instance: instance.map(str::to_string),
            reason,
        }
    }
}

/// What [`build`] produces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Built {
    /// Sorted, one target per group.
    pub groups: Vec<TargetGroup>,
    /// Sorted and de-duplicated.
    pub skipped: Vec<Skipped>,
}

/// True when a service carries at least one endpoint path tag, i.e. wants scraping.
/// Untagged services cost no instance calls.
pub fn wants_scraping(tags: &BTreeMap<String, String>) -> bool {
    tags.keys().any(|k| {
        k == TAG_METRICS_PATH || k == TAG_ECS_METRICS_PATH || k.starts_with("METRICS_PATH_")
    })
}

/// Which endpoint a tag set describes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum EndpointKind {
    Primary,
    Ecs,
    Named(String),
}

impl EndpointKind {
    fn label(&self) -> Option<&str> {
        match self {
            EndpointKind::Primary => None,
            EndpointKind::Ecs => Some("ecs"),
            EndpointKind::Named(n) => Some(n),
        }
    }
}

/// An endpoint as described by a service's tags, validated except for the port,
/// which may come from the instance.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Endpoint {
    kind: EndpointKind,
    path: String,
    /// The port tag (name, parsed port) when the endpoint has one.
    port: Option<u16>,
    scheme: Option<&'static str>,
}

#[derive(Default)]
struct TagGroup<'a> {
    path: Option<(&'a str, &'a str)>,
    port: Option<(&'a str, &'a str)>,
    scheme: Option<(&'a str, &'a str)>,
}

/// Reads a service's tags into endpoints; malformed ones go to `skipped`.
fn endpoints(svc: &ServiceData, skipped: &mut Vec<Skipped>) -> Vec<Endpoint> {
    let mut groups: BTreeMap<EndpointKind, TagGroup> = BTreeMap::new();
    let mut skip = |tag: &str, value: Option<&str>, reason| {
        skipped.push(Skipped::new(svc, tag, value, None, reason))
    };
    for (key, value) in svc.tags.iter() {
        let (kind, field) = match key.as_str() {
            TAG_METRICS_PATH => (EndpointKind::Primary, 0),
            TAG_METRICS_PORT => (EndpointKind::Primary, 1),
            TAG_METRICS_SCHEME => (EndpointKind::Primary, 2),
            TAG_ECS_METRICS_PATH => (EndpointKind::Ecs, 0),
            TAG_ECS_METRICS_PORT => (EndpointKind::Ecs, 1),
            k => {
                let named = [
                    ("METRICS_PATH_", 0),
                    ("METRICS_PORT_", 1),
                    ("METRICS_SCHEME_", 2),
                ]
                .into_iter()
                .find_map(|(p, f)| k.strip_prefix(p).map(|name| (name, f)));
                match named {
                    Some(("", _)) => {
                        skip(key, Some(value), SkipReason::InvalidName);
                        continue;
                    }
                    Some((name, f)) => (EndpointKind::Named(name.to_string()), f),
                    None => continue,
                }
            }
        };
        let g = groups.entry(kind).or_default();
        let slot = match field {
            0 => &mut g.path,
            1 => &mut g.port,
            _ => &mut g.scheme,
        };
        *slot = Some((key.as_str(), value.as_str()));
    }

    let mut out = Vec::new();
    for (kind, g) in groups {
        let Some((path_tag, path)) = g.path else {
            // A port or scheme without a path: probably a forgotten tag, say so.
            for (tag, value) in [g.port, g.scheme].into_iter().flatten() {
                skip(tag, Some(value), SkipReason::MissingPath);
            }
            continue;
        };
        let path = path.trim();
        if !valid_path(path) {
            skip(path_tag, Some(path), SkipReason::InvalidPath);
            continue;
        }
        let port = match g.port {
            None => None,
            Some((tag, v)) => match parse_port(v) {
                Some(p) => Some(p),
                None => {
                    skip(tag, Some(v), SkipReason::InvalidPort);
                    continue;
                }
            },
        };
        let scheme = match g.scheme {
            None => None,
            Some((tag, v)) => match v.trim().to_ascii_lowercase().as_str() {
                "http" => Some("http"),
                "https" => Some("https"),
                _ => {
                    skip(tag, Some(v), SkipReason::InvalidScheme);
                    continue;
                }
            },
        };
        out.push(Endpoint {
            kind,
            path: path.to_string(),
            port,
            scheme,
        });
    }
    out
}

fn valid_path(p: &str) -> bool {
    p.starts_with('/') && !p.chars().any(|c| c.is_whitespace() || c.is_control())
}

fn parse_port(v: &str) -> Option<u16> {
    let v = v.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse::<u16>().ok().filter(|p| *p != 0)
}

/// `host:port` (IPv6 in brackets) and the host, from AWS_INSTANCE_IPV4, else
/// AWS_INSTANCE_IPV6. Otherwise the attribute at fault, its value and the reason.
fn address(
    inst: &Instance,
    port: u16,
) -> Result<(String, String), (&'static str, Option<String>, SkipReason)> {
    let value = |k: &str| {
        inst.attributes
            .get(k)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    };
    let mut bad = None;
    if let Some(v4) = value(attr::IPV4) {
        match v4.parse::<std::net::Ipv4Addr>() {
            Ok(ip) => return Ok((format!("{ip}:{port}"), ip.to_string())),
            Err(_) => bad = Some((attr::IPV4, Some(v4.to_string()), SkipReason::InvalidAddress)),
        }
    }
    if let Some(v6) = value(attr::IPV6) {
        match v6.parse::<std::net::Ipv6Addr>() {
            Ok(ip) => return Ok((format!("[{ip}]:{port}"), ip.to_string())),
            Err(_) => {
                bad = bad.or(Some((
                    attr::IPV6,
                    Some(v6.to_string()),
                    SkipReason::InvalidAddress,
                )))
            }
        }
    }
    Err(bad.unwrap_or((attr::IPV4, None, SkipReason::MissingAddress)))
}

/// Turns a tag or attribute key into a valid label name part: `[a-zA-Z0-9_]`,
/// everything else becomes `_`.
pub fn sanitize_label_name(key: &str) -> String {
    key.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// One target to publish: where it is and what it is made of. Labels are computed
/// from these references when needed, so a plan of 10,000 targets is small.
struct Entry<'a> {
    addr: String,
    svc: &'a ServiceData,
    inst: &'a Instance,
    ep: &'a Endpoint,
}

/// Label names made from tag and attribute keys, computed once per key.
#[derive(Default)]
struct Names<'a> {
    attrs: HashMap<&'a str, String>,
    tags: HashMap<&'a str, String>,
}

/// The sorted, de-duplicated targets of a snapshot and the endpoints skipped.
struct Plan<'a> {
    snapshot: &'a Snapshot,
    opts: &'a TargetOptions,
    entries: Vec<Entry<'a>>,
    names: Names<'a>,
    skipped: Vec<Skipped>,
}

impl<'a> Plan<'a> {
    fn new(
        snapshot: &'a Snapshot,
        opts: &'a TargetOptions,
        endpoints_of: &'a [Vec<Endpoint>],
        skipped: Vec<Skipped>,
    ) -> Self {
        let mut skipped = skipped;
        let mut entries = Vec::new();
        let mut names = Names::default();
        for (svc, eps) in snapshot.services.iter().zip(endpoints_of) {
            if eps.is_empty() {
                continue;
            }
            let mut any = false;
            for inst in svc
                .instances
                .iter()
                .filter(|i| !snapshot.held.contains(&i.id))
            {
                for ep in eps {
                    let mut skip = |tag: &str, value: Option<&str>, reason| {
                        skipped.push(Skipped::new(svc, tag, value, Some(&inst.id), reason))
                    };
                    let port = match ep.port {
                        Some(p) => p,
                        None => match inst.attributes.get(attr::PORT) {
                            Some(v) => match parse_port(v) {
                                Some(p) => p,
                                None => {
                                    skip(attr::PORT, Some(v), SkipReason::InvalidPort);
                                    continue;
                                }
                            },
                            None => match opts.default_port {
                                Some(p) => p,
                                None => {
                                    skip(attr::PORT, None, SkipReason::MissingPort);
                                    continue;
                                }
                            },
                        },
                    };
                    let (addr, _) = match address(inst, port) {
                        Ok(a) => a,
                        Err((tag, value, reason)) => {
                            skip(tag, value.as_deref(), reason);
                            continue;
                        }
                    };
                    if opts.label_style == LabelStyle::Default {
                        for k in inst.attributes.keys() {
                            names.attrs.entry(k).or_insert_with(|| {
                                format!(
                                    "__meta_cloudmap_instance_attribute_{}",
                                    sanitize_label_name(k)
                                )
                            });
                        }
                    }
                    any = true;
                    entries.push(Entry {
                        addr,
                        svc,
                        inst,
                        ep,
                    });
                }
            }
            if any && opts.label_style == LabelStyle::Default {
                for k in svc.tags.keys() {
                    names.tags.entry(k).or_insert_with(|| {
                        format!("__meta_cloudmap_service_tag_{}", sanitize_label_name(k))
                    });
                }
            }
        }
        skipped.sort();
        skipped.dedup();
        let mut plan = Plan {
            snapshot,
            opts,
            entries: Vec::new(),
            names,
            skipped,
        };
        // The order of TargetGroup: by address, then by labels (computed only for
        // the rare targets that share an address).
        entries.sort_by(|a, b| {
            a.addr
                .cmp(&b.addr)
                .then_with(|| plan.labels(a).cmp(&plan.labels(b)))
        });
        entries.dedup_by(|a, b| a.addr == b.addr && plan.labels(a) == plan.labels(b));
        plan.entries = entries;
        plan
    }

    /// The labels of one target, borrowed from the snapshot and the plan.
    fn labels<'p>(&'p self, e: &'p Entry<'a>) -> BTreeMap<&'p str, &'p str> {
        let (svc, inst, ep) = (e.svc, e.inst, e.ep);
        let a = &inst.attributes;
        let mut l: BTreeMap<&str, &str> = BTreeMap::new();
        let put = |l: &mut BTreeMap<&'p str, &'p str>, name: &'p str, v: Option<&'p str>| {
            if let Some(v) = v.filter(|v| !v.is_empty()) {
                l.insert(name, v);
            }
        };
        l.insert("__address__", &e.addr);
        l.insert("__metrics_path__", &ep.path);
        if let Some(s) = ep.scheme {
            l.insert("__scheme__", s);
        }
        match self.opts.label_style {
            LabelStyle::Default => {
                l.insert("cloudmap_namespace", &svc.namespace);
                l.insert("cloudmap_service", &svc.service);
                put(&mut l, "ecs_cluster", a.get(attr::ECS_CLUSTER));
                put(&mut l, "ecs_service", a.get(attr::ECS_SERVICE));
                put(&mut l, "ecs_task_family", a.get(attr::ECS_TASK_FAMILY));
                put(&mut l, "availability_zone", a.get(attr::AZ));
                // ECS registers a task with the task id as instance id; anything
                // else registered by hand keeps the neutral name.
                let id_label = if a.contains_key(attr::ECS_CLUSTER) {
                    "ecs_task_id"
                } else {
                    "cloudmap_instance_id"
                };
                l.insert(id_label, &inst.id);
                if let Some(name) = ep.kind.label() {
                    l.insert("metrics_endpoint", name);
                }
                if let Some(t) = self.snapshot.tasks.get(&inst.id) {
                    put(&mut l, "ecs_launch_type", t.launch_type.as_deref());
                    put(&mut l, "ecs_task_revision", t.revision.as_deref());
                    put(&mut l, "ec2_instance_id", t.ec2_instance_id.as_deref());
                    put(&mut l, "ec2_name", t.ec2_name.as_deref());
                    put(&mut l, "ec2_instance_type", t.ec2_instance_type.as_deref());
                }
                for (k, v) in a {
                    l.insert(&self.names.attrs[k], v);
                }
                for (k, v) in svc.tags.iter() {
                    l.insert(&self.names.tags[k.as_str()], v);
                }
            }
            LabelStyle::Reloader => {
                put(&mut l, "cluster", a.get(attr::ECS_CLUSTER));
                put(&mut l, "service", a.get(attr::ECS_SERVICE));
                put(&mut l, "taskdefinition", a.get(attr::ECS_TASK_FAMILY));
                l.insert("namespace", &svc.namespace);
                l.insert("taskid", &inst.id);
                // The address without its port (and IPv6 brackets).
                let host = e.addr.rsplit_once(':').map_or(&*e.addr, |(h, _)| h);
                l.insert(
                    "instance",
                    host.trim_start_matches('[').trim_end_matches(']'),
                );
            }
        }
        l
    }
}

/// Runs `f` on the plan of a snapshot.
fn with_plan<T>(snapshot: &Snapshot, opts: &TargetOptions, f: impl FnOnce(Plan<'_>) -> T) -> T {
    let mut skipped = Vec::new();
    let endpoints_of: Vec<Vec<Endpoint>> = snapshot
        .services
        .iter()
        .map(|svc| endpoints(svc, &mut skipped))
        .collect();
    f(Plan::new(snapshot, opts, &endpoints_of, skipped))
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

/// A snapshot's file content, and what [`build`] would say about it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rendered {
    /// The file_sd JSON, exactly `to_json(&build(..).groups)`.
    pub content: Vec<u8>,
    /// Target groups in it.
    pub targets: usize,
    /// Sorted and de-duplicated.
    pub skipped: Vec<Skipped>,
}

/// What a snapshot's file would hold, without the file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Target groups.
    pub targets: usize,
    /// Sorted and de-duplicated.
    pub skipped: Vec<Skipped>,
}

/// Serialises a plan's groups one by one, as `TargetGroup`s would.
struct Lazy<'p, 'a>(&'p Plan<'a>);

#[derive(Serialize)]
struct GroupRef<'p> {
    targets: [&'p str; 1],
    labels: BTreeMap<&'p str, &'p str>,
}

impl Serialize for Lazy<'_, '_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.0.entries.len()))?;
        for e in &self.0.entries {
            seq.serialize_element(&GroupRef {
                targets: [&e.addr],
                labels: self.0.labels(e),
            })?;
        }
        seq.end()
    }
}

/// The targets and skipped endpoints of a snapshot, without rendering it.
pub fn summarize(snapshot: &Snapshot, opts: &TargetOptions) -> Summary {
    with_plan(snapshot, opts, |plan| Summary {
        targets: plan.entries.len(),
        skipped: plan.skipped,
    })
}

/// Writes the file content of a snapshot to `w` as it is made: no label map per
/// target is kept and the content is never held whole, so memory stays small
/// whatever the number of targets. Byte for byte `to_json(&build(..).groups)`.
pub fn render_to(snapshot: &Snapshot, opts: &TargetOptions, w: &mut dyn Write) -> io::Result<()> {
    with_plan(snapshot, opts, |plan| {
        // serde_json writes many small pieces; batch them before they reach `w`.
        let mut w = io::BufWriter::with_capacity(64 * 1024, w);
        serde_json::to_writer_pretty(&mut w, &Lazy(&plan))?;
        w.write_all(b"\n")?;
        w.flush()
    })
}

/// The file content of a snapshot in memory, with its summary.
pub fn render(snapshot: &Snapshot, opts: &TargetOptions) -> Rendered {
    let mut content = Vec::new();
    render_to(snapshot, opts, &mut content).expect("writing to memory does not fail");
    let Summary { targets, skipped } = summarize(snapshot, opts);
    Rendered {
        content,
        targets,
        skipped,
    }
}

fn put(labels: &mut BTreeMap<String, String>, name: &str, value: Option<&String>) {
    if let Some(v) = value.filter(|v| !v.is_empty()) {
        labels.insert(name.to_string(), v.clone());
    }
}

/// Target groups for the EC2 hosts file: one per host and port, `instance` set to
/// the host's Name tag (its instance id when it has none). Hosts without a private
/// IP are left out. Sorted.
pub fn host_groups(hosts: &[HostTarget], ports: &[u16]) -> Vec<TargetGroup> {
    let mut out = BTreeSet::new();
    for h in hosts {
        let Some(ip) = h.private_ip.as_deref().filter(|ip| !ip.is_empty()) else {
            continue;
        };
        for port in ports {
            let addr = format!("{ip}:{port}");
            let mut l = BTreeMap::new();
            l.insert("__address__".to_string(), addr.clone());
            l.insert(
                "instance".to_string(),
                h.name.clone().unwrap_or_else(|| h.instance_id.clone()),
            );
            l.insert("ec2_instance_id".to_string(), h.instance_id.clone());
            put(&mut l, "ec2_name", h.name.as_ref());
            put(&mut l, "ec2_instance_type", h.instance_type.as_ref());
            put(&mut l, "availability_zone", h.availability_zone.as_ref());
            put(&mut l, "ecs_cluster", h.cluster.as_ref());
            out.insert(TargetGroup {
                targets: vec![addr],
                labels: l,
            });
        }
    }
    out.into_iter().collect()
}

/// Serialises target groups as Prometheus file_sd JSON (pretty, newline-terminated).
pub fn to_json(groups: &[TargetGroup]) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(groups).expect("string maps always serialise");
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn ecs_instance(id: &str, ip: &str, port: Option<&str>) -> Instance {
        let mut a = tags(&[
            (attr::IPV4, ip),
            (attr::AZ, "us-east-1a"),
            (attr::ECS_CLUSTER, "prod"),
            (attr::ECS_SERVICE, "web"),
            (attr::ECS_TASK_FAMILY, "web-td"),
        ]);
        if let Some(p) = port {
            a.insert(attr::PORT.into(), p.into());
        }
        Instance {
            id: id.into(),
            attributes: a.into(),
        }
    }

    fn svc(name: &str, t: &[(&str, &str)], instances: Vec<Instance>) -> ServiceData {
        ServiceData {
            namespace: "ns".into(),
            service: name.into(),
            tags: tags(t).into(),
            instances: instances.into(),
        }
    }

    fn opts() -> TargetOptions {
        TargetOptions {
            label_style: LabelStyle::Default,
            default_port: None,
        }
    }

    fn run(services: Vec<ServiceData>) -> Built {
        build(
            &Snapshot {
                services,
                ..Snapshot::default()
            },
            &opts(),
        )
    }

    fn addrs(b: &Built) -> Vec<(String, String)> {
        b.groups
            .iter()
            .map(|g| (g.targets[0].clone(), g.labels["__metrics_path__"].clone()))
            .collect()
    }

    #[test]
    fn primary_endpoint_with_all_default_labels() {
        let b = run(vec![svc(
            "web",
            &[("METRICS_PATH", "/metrics"), ("METRICS_PORT", "9100")],
            vec![ecs_instance("task1", "10.0.0.1", Some("8080"))],
        )]);
        assert!(b.skipped.is_empty());
        assert_eq!(b.groups.len(), 1);
        let g = &b.groups[0];
        assert_eq!(g.targets, vec!["10.0.0.1:9100"]);
        let expect = [
            ("__address__", "10.0.0.1:9100"),
            ("__metrics_path__", "/metrics"),
            ("cloudmap_namespace", "ns"),
            ("cloudmap_service", "web"),
            ("ecs_cluster", "prod"),
            ("ecs_service", "web"),
            ("ecs_task_family", "web-td"),
            ("ecs_task_id", "task1"),
            ("availability_zone", "us-east-1a"),
            (
                "__meta_cloudmap_instance_attribute_AWS_INSTANCE_PORT",
                "8080",
            ),
            ("__meta_cloudmap_service_tag_METRICS_PORT", "9100"),
        ];
        for (k, v) in expect {
            assert_eq!(g.labels.get(k).map(String::as_str), Some(v), "label {k}");
        }
        assert!(
            !g.labels.contains_key("cluster"),
            "never a bare cluster label"
        );
        assert!(!g.labels.contains_key("metrics_endpoint"));
        assert!(!g.labels.contains_key("__scheme__"));
    }

    #[test]
    fn port_falls_back_to_instance_port_then_default_port() {
        let s = || {
            svc(
                "web",
                &[("METRICS_PATH", "/m")],
                vec![
                    ecs_instance("a", "10.0.0.1", Some("8080")),
                    ecs_instance("b", "10.0.0.2", None),
                ],
            )
        };
        let b = run(vec![s()]);
        assert_eq!(addrs(&b), vec![("10.0.0.1:8080".into(), "/m".into())]);
        assert_eq!(b.skipped.len(), 1);
        assert_eq!(b.skipped[0].reason, SkipReason::MissingPort);
        assert_eq!(b.skipped[0].instance.as_deref(), Some("b"));

        let o = TargetOptions {
            default_port: Some(80),
            ..opts()
        };
        let b = build(
            &Snapshot {
                services: vec![s()],
                ..Snapshot::default()
            },
            &o,
        );
        assert_eq!(
            addrs(&b),
            vec![
                ("10.0.0.1:8080".into(), "/m".into()),
                ("10.0.0.2:80".into(), "/m".into())
            ]
        );
        assert!(b.skipped.is_empty());
    }

    #[test]
    fn ecs_and_named_endpoints_add_targets_with_metrics_endpoint() {
        let b = run(vec![svc(
            "web",
            &[
                ("METRICS_PATH", "/metrics"),
                ("METRICS_PORT", "8080"),
                ("ECS_METRICS_PATH", "/stats"),
                ("ECS_METRICS_PORT", "9779"),
                ("METRICS_PATH_admin", "/admin/metrics"),
                ("METRICS_PORT_admin", "9000"),
                ("METRICS_SCHEME_admin", "HTTPS"),
            ],
            vec![ecs_instance("t", "10.0.0.1", None)],
        )]);
        assert!(b.skipped.is_empty(), "{:?}", b.skipped);
        let got: Vec<_> = b
            .groups
            .iter()
            .map(|g| {
                (
                    g.targets[0].as_str(),
                    g.labels.get("metrics_endpoint").map(String::as_str),
                    g.labels.get("__scheme__").map(String::as_str),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("10.0.0.1:8080", None, None),
                ("10.0.0.1:9000", Some("admin"), Some("https")),
                ("10.0.0.1:9779", Some("ecs"), None),
            ]
        );
    }

    #[test]
    fn malformed_tags_skip_only_that_endpoint() {
        let b = run(vec![
            svc(
                "bad",
                &[
                    ("METRICS_PATH", "/metrics"),
                    ("METRICS_PORT", "99999"),
                    ("METRICS_PATH_x", "metrics"),
                    ("METRICS_PATH_y", "/ok"),
                    ("METRICS_PORT_y", "http"),
                    ("METRICS_PATH_z", "/z"),
                    ("METRICS_SCHEME_z", "ftp"),
                    ("METRICS_PATH_", "/empty"),
                    ("METRICS_PORT_w", "9000"),
                    ("METRICS_PATH_ok", "/fine"),
                    ("METRICS_PORT_ok", " 9001 "),
                ],
                vec![ecs_instance("t", "10.0.0.1", Some("8080"))],
            ),
            svc(
                "good",
                &[("METRICS_PATH", "/metrics")],
                vec![ecs_instance("u", "10.0.0.2", Some("8080"))],
            ),
        ]);
        assert_eq!(
            addrs(&b),
            vec![
                ("10.0.0.1:9001".into(), "/fine".into()),
                ("10.0.0.2:8080".into(), "/metrics".into())
            ]
        );
        let reasons: Vec<_> = b
            .skipped
            .iter()
            .map(|s| (s.service.as_str(), s.tag.as_str(), s.reason))
            .collect();
        assert_eq!(
            reasons,
            vec![
                ("bad", "METRICS_PATH_", SkipReason::InvalidName),
                ("bad", "METRICS_PATH_x", SkipReason::InvalidPath),
                ("bad", "METRICS_PORT", SkipReason::InvalidPort),
                ("bad", "METRICS_PORT_w", SkipReason::MissingPath),
                ("bad", "METRICS_PORT_y", SkipReason::InvalidPort),
                ("bad", "METRICS_SCHEME_z", SkipReason::InvalidScheme),
            ]
        );
        let port = b.skipped.iter().find(|s| s.tag == "METRICS_PORT").unwrap();
        assert_eq!(port.value.as_deref(), Some("99999"));
    }

    #[test]
    fn port_and_path_validation() {
        for ok in ["1", "80", "65535", " 8080"] {
            assert!(parse_port(ok).is_some(), "{ok}");
        }
        for bad in ["0", "65536", "-1", "+80", "80a", "", "8080.0", "http", "१२"] {
            assert!(parse_port(bad).is_none(), "{bad}");
        }
        assert!(valid_path("/metrics"));
        assert!(valid_path("/a/b?x=1"));
        for bad in ["metrics", "", "/a b", "/a\tb", "/\u{7}"] {
            assert!(!valid_path(bad), "{bad:?}");
        }
    }

    #[test]
    fn instance_address_forms() {
        let mut v6 = ecs_instance("v6", "", Some("8080"));
        v6.attributes.insert(attr::IPV6, "2600:1f18::1");
        let mut none = ecs_instance("none", "", Some("8080"));
        none.attributes.remove(attr::IPV4);
        let mut bad_port = ecs_instance("bp", "10.0.0.3", Some("eighty"));
        bad_port.attributes.insert("custom attr", "x");
        let garbage = ecs_instance("gb", "10.0.0.1:80", Some("8080"));
        let mut v6_in_v4 = ecs_instance("v6in4", "2600:1f18::2", Some("8080"));
        v6_in_v4.attributes.insert(attr::IPV6, "2600:1f18::2");
        let b = run(vec![svc(
            "web",
            &[("METRICS_PATH", "/m")],
            vec![v6, none, bad_port, garbage, v6_in_v4],
        )]);
        assert_eq!(
            addrs(&b),
            vec![
                ("[2600:1f18::1]:8080".into(), "/m".into()),
                ("[2600:1f18::2]:8080".into(), "/m".into())
            ]
        );
        let reasons: Vec<_> = b
            .skipped
            .iter()
            .map(|s| (s.instance.as_deref().unwrap(), s.reason))
            .collect();
        assert_eq!(
            reasons,
            vec![
                ("none", SkipReason::MissingAddress),
                ("gb", SkipReason::InvalidAddress),
                ("bp", SkipReason::InvalidPort)
            ]
        );
    }

    #[test]
    fn untagged_services_are_not_scraped() {
        assert!(!wants_scraping(&tags(&[
            ("team", "a"),
            ("METRICS_PORT", "1")
        ])));
        assert!(wants_scraping(&tags(&[("METRICS_PATH", "/m")])));
        assert!(wants_scraping(&tags(&[("ECS_METRICS_PATH", "/m")])));
        assert!(wants_scraping(&tags(&[("METRICS_PATH_x", "/m")])));
        let b = run(vec![svc(
            "plain",
            &[("team", "a")],
            vec![ecs_instance("t", "10.0.0.1", Some("80"))],
        )]);
        assert_eq!(b, Built::default());
    }

    #[test]
    fn reloader_style_emits_exactly_the_old_labels() {
        let s = svc(
            "web",
            &[("METRICS_PATH", "/metrics"), ("METRICS_SCHEME", "https")],
            vec![ecs_instance("task9", "10.0.0.9", Some("8080"))],
        );
        let o = TargetOptions {
            label_style: LabelStyle::Reloader,
            default_port: None,
        };
        let b = build(
            &Snapshot {
                services: vec![s],
                ..Snapshot::default()
            },
            &o,
        );
        let l = &b.groups[0].labels;
        let keys: Vec<_> = l.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            vec![
                "__address__",
                "__metrics_path__",
                "__scheme__",
                "cluster",
                "instance",
                "namespace",
                "service",
                "taskdefinition",
                "taskid"
            ]
        );
        assert_eq!(l["cluster"], "prod");
        assert_eq!(l["instance"], "10.0.0.9");
        assert_eq!(l["taskid"], "task9");
        assert_eq!(l["namespace"], "ns");
        assert_eq!(l["taskdefinition"], "web-td");
    }

    #[test]
    fn non_ecs_instances_use_a_neutral_id_label() {
        let inst = Instance {
            id: "manual-1".into(),
            attributes: tags(&[(attr::IPV4, "192.0.2.1"), (attr::PORT, "80")]).into(),
        };
        let b = run(vec![svc("x", &[("METRICS_PATH", "/m")], vec![inst])]);
        let l = &b.groups[0].labels;
        assert_eq!(l["cloudmap_instance_id"], "manual-1");
        assert!(!l.contains_key("ecs_task_id"));
        assert!(
            !l.contains_key("ecs_cluster"),
            "absent attributes give no label"
        );
    }

    #[test]
    fn label_names_are_sanitised() {
        assert_eq!(sanitize_label_name("team.name/x-y"), "team_name_x_y");
        assert_eq!(sanitize_label_name("ünï"), "_n_");
        assert_eq!(sanitize_label_name("OK_1"), "OK_1");
    }

    #[test]
    fn output_is_sorted_and_independent_of_input_order() {
        let a = svc(
            "a",
            &[("METRICS_PATH", "/m")],
            vec![
                ecs_instance("2", "10.0.0.2", Some("80")),
                ecs_instance("1", "10.0.0.10", Some("80")),
            ],
        );
        let b = svc(
            "b",
            &[("METRICS_PATH", "/m")],
            vec![ecs_instance("3", "10.0.0.1", Some("80"))],
        );
        let one = run(vec![a.clone(), b.clone()]);
        let mut a2 = a.clone();
        Arc::make_mut(&mut a2.instances).reverse();
        let two = run(vec![b, a2]);
        assert_eq!(to_json(&one.groups), to_json(&two.groups));
        let targets: Vec<_> = one.groups.iter().map(|g| g.targets[0].as_str()).collect();
        let mut sorted = targets.clone();
        sorted.sort();
        assert_eq!(targets, sorted);
        assert!(one.groups.iter().all(|g| g.targets.len() == 1));
    }

    #[test]
    fn task_facts_add_labels_and_held_tasks_wait() {
        let s = svc(
            "web",
            &[("METRICS_PATH", "/m")],
            vec![
                ecs_instance("ec2task", "10.0.0.1", Some("80")),
                ecs_instance("fargate", "10.0.0.2", Some("80")),
                ecs_instance("new", "10.0.0.3", Some("80")),
            ],
        );
        let tasks = BTreeMap::from([
            (
                "ec2task".to_string(),
                TaskInfo {
                    launch_type: Some("EC2".into()),
                    revision: Some("7".into()),
                    ec2_instance_id: Some("i-1".into()),
                    ec2_name: Some("host-1".into()),
                    ec2_instance_type: Some("m5.large".into()),
                },
            ),
            (
                "fargate".to_string(),
                TaskInfo {
                    launch_type: Some("FARGATE".into()),
                    revision: Some("7".into()),
                    ..TaskInfo::default()
                },
            ),
        ]);
        let snap = Snapshot {
            services: vec![s],
            tasks: tasks.into(),
            held: BTreeSet::from(["new".to_string()]),
        };
        let b = build(&snap, &opts());
        assert_eq!(b.groups.len(), 2, "the held task waits");
        let l = &b.groups[0].labels;
        assert_eq!(l["ec2_name"], "host-1");
        assert_eq!(l["ec2_instance_id"], "i-1");
        assert_eq!(l["ec2_instance_type"], "m5.large");
        assert_eq!(l["ecs_launch_type"], "EC2");
        assert_eq!(l["ecs_task_revision"], "7");
        let l = &b.groups[1].labels;
        assert_eq!(l["ecs_launch_type"], "FARGATE");
        assert!(!l.contains_key("ec2_name") && !l.contains_key("ec2_instance_id"));
    }

    #[test]
    fn host_groups_use_the_name_tag_as_instance() {
        let hosts = vec![
            HostTarget {
                instance_id: "i-2".into(),
                private_ip: Some("10.0.0.2".into()),
                ..HostTarget::default()
            },
            HostTarget {
                instance_id: "i-1".into(),
                name: Some("web-host".into()),
                instance_type: Some("t3.small".into()),
                availability_zone: Some("us-east-1b".into()),
                private_ip: Some("10.0.0.1".into()),
                cluster: Some("prod".into()),
            },
            HostTarget {
                instance_id: "i-3".into(),
                ..HostTarget::default()
            },
        ];
        let g = host_groups(&hosts, &[9100, 8080]);
        let got: Vec<(&str, &str)> = g
            .iter()
            .map(|g| (g.targets[0].as_str(), g.labels["instance"].as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("10.0.0.1:8080", "web-host"),
                ("10.0.0.1:9100", "web-host"),
                ("10.0.0.2:8080", "i-2"),
                ("10.0.0.2:9100", "i-2"),
            ]
        );
        assert_eq!(g[0].labels["ecs_cluster"], "prod");
        assert_eq!(g[0].labels["ec2_instance_type"], "t3.small");
        assert!(!g[2].labels.contains_key("ec2_name"));
    }

    #[test]
    fn json_is_file_sd_shape() {
        let b = run(vec![svc(
            "web",
            &[("METRICS_PATH", "/m")],
            vec![ecs_instance("t", "10.0.0.1", Some("80"))],
        )]);
        let v: serde_json::Value = serde_json::from_slice(&to_json(&b.groups)).unwrap();
        assert_eq!(v[0]["targets"][0], "10.0.0.1:80");
        assert_eq!(v[0]["labels"]["cloudmap_service"], "web");
        assert_eq!(to_json(&[]), b"[]\n");
    }

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
}
