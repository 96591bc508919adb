//! The plan of a snapshot: every target to publish (address, service, instance,
//! endpoint), sorted and de-duplicated, with the labels computed from references
//! when they are needed, so a plan of 10,000 targets stays small.

use std::collections::{BTreeMap, HashMap};

use super::endpoints::{Endpoint, SkipReason, Skipped, address, endpoints, parse_port};
use super::ports::host_port;
use super::{LabelStyle, MetaLabels, TargetOptions};
use crate::model::{Instance, ServiceData, Snapshot, TaskFacts, attr};

/// The label of the AWS account a target was found in, on every target when the
/// sidecar discovers in other accounts.
pub const ACCOUNT_LABEL: &str = "aws_account_id";

/// Turns a tag or attribute key into a valid label name part: `[a-zA-Z0-9_]`,
/// everything else becomes `_`.
pub fn sanitize_label_name(key: &str) -> String {
    key.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// A family of `__meta_*` labels, by what it is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum MetaFamily {
    /// `__meta_cloudmap_instance_attribute_<key>`: each attribute of the instance.
    InstanceAttribute,
    /// `__meta_cloudmap_service_tag_<key>`: each tag of the Cloud Map service.
    ServiceTag,
    /// `__meta_ecs_service_tag_<key>`: each tag of the ECS service whose tags
    /// describe a Cloud Map service without endpoint tags of its own.
    EcsServiceTag,
}

impl MetaFamily {
    /// Whether targets labelled with `opts` carry this family: the one place that
    /// decides which `__meta_*` labels are written. Only the default style has
    /// any; then `--meta-labels all` writes every family, `tags` the tag families,
    /// `none` none.
    pub(super) fn written(self, opts: &TargetOptions) -> bool {
        opts.label_style == LabelStyle::Default
            && match opts.meta_labels {
                MetaLabels::All => true,
                MetaLabels::Tags => self.is_tags(),
                MetaLabels::None => false,
            }
    }

    /// True for a family of tags (what `--meta-labels tags` keeps). A new family
    /// says here which kind it is.
    fn is_tags(self) -> bool {
        match self {
            MetaFamily::InstanceAttribute => false,
            MetaFamily::ServiceTag | MetaFamily::EcsServiceTag => true,
        }
    }
}

/// One target to publish: where it is and what it is made of.
pub(super) struct Entry<'a> {
    pub(super) addr: String,
    /// The account it was found in, when targets carry one.
    pub(super) account: Option<&'a str>,
    svc: &'a ServiceData,
    inst: &'a Instance,
    ep: &'a Endpoint,
}

/// Label names made from tag and attribute keys, computed once per key, for the
/// families that are written.
#[derive(Default)]
struct Names<'a> {
    attrs: HashMap<&'a str, String>,
    tags: HashMap<&'a str, String>,
    ecs_tags: HashMap<&'a str, String>,
    /// `MetaFamily::InstanceAttribute` is written.
    with_attrs: bool,
    /// `MetaFamily::ServiceTag` is written.
    with_tags: bool,
    /// `MetaFamily::EcsServiceTag` is written.
    with_ecs_tags: bool,
}

impl<'a> Names<'a> {
    fn new(opts: &TargetOptions) -> Self {
        Names {
            with_attrs: MetaFamily::InstanceAttribute.written(opts),
            with_tags: MetaFamily::ServiceTag.written(opts),
            with_ecs_tags: MetaFamily::EcsServiceTag.written(opts),
            ..Names::default()
        }
    }

    fn add_attributes(&mut self, inst: &'a Instance) {
        if !self.with_attrs {
            return;
        }
        for k in inst.attributes.keys() {
            self.attrs.entry(k).or_insert_with(|| {
                format!(
                    "__meta_cloudmap_instance_attribute_{}",
                    sanitize_label_name(k)
                )
            });
        }
    }

    fn add_tags(&mut self, svc: &'a ServiceData) {
        if self.with_tags {
            for k in svc.tags.keys() {
                self.tags.entry(k).or_insert_with(|| {
                    format!("__meta_cloudmap_service_tag_{}", sanitize_label_name(k))
                });
            }
        }
        if !self.with_ecs_tags {
            return;
        }
        for k in svc.ecs_service.iter().flat_map(|e| e.tags.keys()) {
            self.ecs_tags
                .entry(k)
                .or_insert_with(|| format!("__meta_ecs_service_tag_{}", sanitize_label_name(k)));
        }
    }
}

/// The sorted, de-duplicated targets of a snapshot and the endpoints skipped.
pub(super) struct Plan<'a> {
    snapshot: &'a Snapshot,
    opts: &'a TargetOptions,
    pub(super) entries: Vec<Entry<'a>>,
    names: Names<'a>,
    pub(super) skipped: Vec<Skipped>,
}

/// Runs `f` on the plan of a snapshot.
pub(super) fn with_plan<T>(
    snapshot: &Snapshot,
    opts: &TargetOptions,
    f: impl FnOnce(Plan<'_>) -> T,
) -> T {
    let mut skipped = Vec::new();
    let endpoints_of: Vec<Vec<Endpoint>> = snapshot
        .services
        .iter()
        .map(|svc| endpoints(svc, &mut skipped))
        .collect();
    f(Plan::new(snapshot, opts, &endpoints_of, skipped))
}

/// What names the port of a target made from `--default-port`, in a skip.
const DEFAULT_PORT_FLAG: &str = "--default-port";

/// A port that cannot be used: the tag (or attribute, or flag) at fault, its
/// value, and why.
type PortFault<'e> = (&'e str, Option<String>, SkipReason);

/// The port of `ep` on `inst`: the instance's AWS_INSTANCE_PORT (the host port ECS
/// registered) when the endpoint has no port tag; otherwise the port tag's port,
/// else the default port, each a container port that the task's port bindings
/// (`facts`) may map to a host port ([`host_port`]).
fn port_of<'e>(
    ep: &'e Endpoint,
    inst: &Instance,
    facts: Option<&TaskFacts>,
    default_port: Option<u16>,
) -> Result<u16, PortFault<'e>> {
    let (port, tag) = match &ep.port {
        Some((tag, p)) => (*p, tag.as_str()),
        None => match inst.attributes.get(attr::PORT) {
            Some(v) => {
                return parse_port(v)
                    .ok_or_else(|| (attr::PORT, Some(v.to_string()), SkipReason::InvalidPort));
            }
            None => (
                default_port.ok_or((attr::PORT, None, SkipReason::MissingPort))?,
                DEFAULT_PORT_FLAG,
            ),
        },
    };
    let container = ep.container.as_ref().map(|(_, name)| name.as_str());
    host_port(port, container, facts).map_err(|reason| match (reason, &ep.container) {
        (SkipReason::UnboundContainer, Some((tag, name))) => {
            (tag.as_str(), Some(name.clone()), reason)
        }
        _ => (tag, Some(port.to_string()), reason),
    })
}

impl<'a> Plan<'a> {
    fn new(
        snapshot: &'a Snapshot,
        opts: &'a TargetOptions,
        endpoints_of: &'a [Vec<Endpoint>],
        skipped: Vec<Skipped>,
    ) -> Self {
        let mut plan = Plan {
            snapshot,
            opts,
            entries: Vec::new(),
            names: Names::new(opts),
            skipped,
        };
        let mut entries = Vec::new();
        for ((account, svc), eps) in snapshot.services_by_account().zip(endpoints_of) {
            plan.add_service(account, svc, eps, &mut entries);
        }
        plan.skipped.sort();
        plan.skipped.dedup();
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

    /// How many services the targets come from.
    pub(super) fn services(&self) -> usize {
        let services: std::collections::HashSet<*const ServiceData> = self
            .entries
            .iter()
            .map(|e| std::ptr::from_ref(e.svc))
            .collect();
        services.len()
    }

    /// The targets of one service's instances that are not held, one per endpoint;
    /// what cannot be addressed goes to `skipped`.
    fn add_service(
        &mut self,
        account: Option<&'a str>,
        svc: &'a ServiceData,
        eps: &'a [Endpoint],
        entries: &mut Vec<Entry<'a>>,
    ) {
        let mut any = false;
        let held = &self.snapshot.held;
        for inst in svc.instances.iter().filter(|i| !held.contains(&i.id)) {
            let facts = self.snapshot.tasks.get(&inst.id);
            for ep in eps {
                let addr = port_of(ep, inst, facts, self.opts.default_port)
                    .and_then(|port| address(inst, port));
                let addr = match addr {
                    Ok((addr, _)) => addr,
                    Err((tag, value, reason)) => {
                        let id = Some(inst.id.as_str());
                        let s = Skipped::new(svc, tag, value.as_deref(), id, reason);
                        self.skipped.push(s);
                        continue;
                    }
                };
                self.names.add_attributes(inst);
                any = true;
                entries.push(Entry {
                    addr,
                    account,
                    svc,
                    inst,
                    ep,
                });
            }
        }
        if any {
            self.names.add_tags(svc);
        }
    }

    /// The labels of one target, borrowed from the snapshot and the plan. No
    /// `__address__`: Prometheus sets it from the group's `targets`.
    pub(super) fn labels<'p>(&'p self, e: &'p Entry<'a>) -> BTreeMap<&'p str, &'p str> {
        let mut l: BTreeMap<&str, &str> = BTreeMap::new();
        l.insert("__metrics_path__", &e.ep.path);
        if let Some(s) = e.ep.scheme {
            l.insert("__scheme__", s);
        }
        match self.opts.label_style {
            LabelStyle::Default => self.default_labels(e, &mut l),
            LabelStyle::Reloader => reloader_labels(e, &mut l),
        }
        if let Some(account) = e.account {
            l.insert(ACCOUNT_LABEL, account);
        }
        l
    }

    /// `cloudmap_*`, `ecs_*`, the task's facts, and the `__meta_*` labels of the
    /// families written (with the `__meta_ecs_service_tag_*` labels of an ECS service
    /// whose tags describe the endpoints).
    fn default_labels<'p>(&'p self, e: &'p Entry<'a>, l: &mut BTreeMap<&'p str, &'p str>) {
        let (svc, inst) = (e.svc, e.inst);
        let a = &inst.attributes;
        l.insert("cloudmap_namespace", &svc.namespace);
        l.insert("cloudmap_service", &svc.service);
        put(l, "ecs_cluster", a.get(attr::ECS_CLUSTER));
        put(l, "ecs_service", a.get(attr::ECS_SERVICE));
        put(l, "ecs_task_family", a.get(attr::ECS_TASK_FAMILY));
        put(l, "availability_zone", a.get(attr::AZ));
        // ECS registers a task with the task id as instance id; anything else
        // registered by hand keeps the neutral name.
        let id_label = if a.contains_key(attr::ECS_CLUSTER) {
            "ecs_task_id"
        } else {
            "cloudmap_instance_id"
        };
        l.insert(id_label, &inst.id);
        if let Some(name) = e.ep.kind.label() {
            l.insert("metrics_endpoint", name);
        }
        if let Some(t) = self.snapshot.tasks.get(&inst.id) {
            put(l, "ecs_launch_type", t.launch_type.as_deref());
            put(l, "ecs_task_revision", t.revision.as_deref());
            put(l, "ec2_instance_id", t.ec2_instance_id.as_deref());
            put(l, "ec2_name", t.ec2_name.as_deref());
            put(l, "ec2_instance_type", t.ec2_instance_type.as_deref());
        }
        if self.names.with_attrs {
            for (k, v) in a {
                l.insert(&self.names.attrs[k], v);
            }
        }
        if self.names.with_tags {
            for (k, v) in svc.tags.iter() {
                l.insert(&self.names.tags[k.as_str()], v);
            }
        }
        if self.names.with_ecs_tags {
            for (k, v) in svc.ecs_service.iter().flat_map(|e| e.tags.iter()) {
                l.insert(&self.names.ecs_tags[k.as_str()], v);
            }
        }
    }
}

/// Exactly the labels prometheus-sdconfig-reloader writes.
fn reloader_labels<'p>(e: &'p Entry<'_>, l: &mut BTreeMap<&'p str, &'p str>) {
    let a = &e.inst.attributes;
    put(l, "cluster", a.get(attr::ECS_CLUSTER));
    put(l, "service", a.get(attr::ECS_SERVICE));
    put(l, "taskdefinition", a.get(attr::ECS_TASK_FAMILY));
    l.insert("namespace", &e.svc.namespace);
    l.insert("taskid", &e.inst.id);
    // The address without its port (and IPv6 brackets).
    let host = e.addr.rsplit_once(':').map_or(&*e.addr, |(h, _)| h);
    l.insert(
        "instance",
        host.trim_start_matches('[').trim_end_matches(']'),
    );
}

/// Sets label `name` to `v` when `v` is there and not empty.
fn put<'p>(l: &mut BTreeMap<&'p str, &'p str>, name: &'p str, v: Option<&'p str>) {
    if let Some(v) = v.filter(|v| !v.is_empty()) {
        l.insert(name, v);
    }
}
