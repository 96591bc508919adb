//! Property tests of target building under bad input: arbitrary service tags (a
//! Cloud Map service's, or an ECS service's that describe it), instance attributes
//! and task port bindings never make `build` panic, never produce an invalid
//! file_sd document, and every endpoint ends up either as a target or as a skip
//! with a reason, while the good endpoints next to the bad ones stay intact.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use cloudmap_sd::model::{
    EcsService, Instance, PortBinding, ServiceData, Snapshot, TaskFacts, attr, tags,
};
use cloudmap_sd::targets::{
    Built, LabelStyle, MetaLabels, SkipReason, Skipped, TargetGroup, TargetOptions, build,
    render_to, summarize, to_json,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::TestCaseError;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------

/// A string of roughly `256..=10_240` bytes made by repeating a short arbitrary unit.
fn huge() -> impl Strategy<Value = String> {
    (vec(any::<char>(), 1..6), 256usize..=10_240).prop_map(|(unit, target)| {
        let unit: String = unit.into_iter().collect();
        let mut s = String::with_capacity(target + 8);
        while s.len() < target {
            s.push_str(&unit);
        }
        s
    })
}

/// Values that a careless or hostile tag or attribute could hold.
fn junk() -> BoxedStrategy<String> {
    prop_oneof![
        Just(String::new()),
        Just(" ".to_string()),
        Just("\t\n".to_string()),
        "[0-9]{1,7}",
        "[-+][0-9]{1,6}",
        "[ \t]{0,2}0{0,4}[0-9]{1,6}[ \t\n]{0,2}",
        "[0-9]{1,5}\\.[0-9]{1,3}",
        "[0-9]{1,3}e[0-9]",
        "0x[0-9a-f]{1,4}",
        "[١٢٣٤٥६७८९]{1,4}",
        "[\\x00-\\x1f\\x7f ]{1,6}",
        "/[a-z]{0,4}[ \t\n\\x00\\x07\u{a0}\u{2028}][a-z]{0,4}",
        "[a-z]{1,8}",
        any::<String>(),
        vec(any::<char>(), 0..24).prop_map(|c| c.into_iter().collect::<String>()),
        huge(),
    ]
    .boxed()
}

fn path_value() -> BoxedStrategy<String> {
    prop_oneof![
        6 => "/[a-zA-Z0-9/_.?=&%-]{0,16}",
        1 => "[ \t]{1,3}/[a-z]{1,8}[ \t\n]{1,3}",
        1 => "[a-z]{1,8}",
        2 => junk(),
    ]
    .boxed()
}

/// Container ports the generated tasks bind, so that port tags meet them.
const BOUND_PORTS: [u16; 3] = [80, 8080, 9100];

/// Container names the generated tasks use, so that container tags meet them.
const CONTAINERS: [&str; 3] = ["a", "b", "app"];

fn port_value() -> BoxedStrategy<String> {
    prop_oneof![
        4 => (1u16..=u16::MAX).prop_map(|p| p.to_string()),
        2 => select(BOUND_PORTS.to_vec()).prop_map(|p| p.to_string()),
        1 => Just("0".to_string()),
        1 => (65_536u32..=999_999).prop_map(|p| p.to_string()),
        1 => (1u16..=u16::MAX).prop_map(|p| format!(" 000{p}\t")),
        3 => junk(),
    ]
    .boxed()
}

fn scheme_value() -> BoxedStrategy<String> {
    prop_oneof![
        3 => select(vec!["http", "https", "HTTP", " HtTpS\n", "ftp", "http:", "https://", ""])
            .prop_map(str::to_string),
        1 => junk(),
    ]
    .boxed()
}

fn container_value() -> BoxedStrategy<String> {
    prop_oneof![
        4 => select(vec!["a", "b", "app", " b\t", "c", ""]).prop_map(str::to_string),
        1 => junk(),
    ]
    .boxed()
}

/// Endpoint names: a small pool so path, port and scheme tags meet, plus anything.
fn endpoint_name() -> BoxedStrategy<String> {
    prop_oneof![
        4 => select(vec!["", "a", "b", "ecs", "admin", "Ünï", "x y", "\u{0}", "名前", "_"])
            .prop_map(str::to_string),
        1 => junk(),
    ]
    .boxed()
}

/// Tag keys that are no endpoint tag but look a lot like one, or anything at all.
fn other_key() -> BoxedStrategy<String> {
    prop_oneof![
        select(vec![
            "metrics_path",
            "METRICS_PATH ",
            " METRICS_PORT",
            "METRICS_PATHS",
            "ECS_METRICS_SCHEME",
            "ECS_METRICS_PATH_x",
            "METRICS_",
            "team",
            "",
        ])
        .prop_map(str::to_string),
        "[A-Za-z_.:/ -]{0,16}",
        any::<String>(),
        huge(),
    ]
    .boxed()
}

fn tag() -> BoxedStrategy<(String, String)> {
    prop_oneof![
        3 => path_value().prop_map(|v| (tags::METRICS_PATH.to_string(), v)),
        2 => port_value().prop_map(|v| (tags::METRICS_PORT.to_string(), v)),
        1 => scheme_value().prop_map(|v| (tags::METRICS_SCHEME.to_string(), v)),
        1 => path_value().prop_map(|v| (tags::ECS_METRICS_PATH.to_string(), v)),
        1 => port_value().prop_map(|v| (tags::ECS_METRICS_PORT.to_string(), v)),
        2 => (endpoint_name(), path_value()).prop_map(|(n, v)| (format!("METRICS_PATH_{n}"), v)),
        2 => (endpoint_name(), port_value()).prop_map(|(n, v)| (format!("METRICS_PORT_{n}"), v)),
        1 => (endpoint_name(), scheme_value())
            .prop_map(|(n, v)| (format!("METRICS_SCHEME_{n}"), v)),
        1 => container_value().prop_map(|v| (tags::METRICS_CONTAINER.to_string(), v)),
        1 => container_value().prop_map(|v| (tags::ECS_METRICS_CONTAINER.to_string(), v)),
        1 => (endpoint_name(), container_value())
            .prop_map(|(n, v)| (format!("METRICS_CONTAINER_{n}"), v)),
        2 => (other_key(), junk()),
    ]
    .boxed()
}

fn tags() -> impl Strategy<Value = BTreeMap<String, String>> {
    vec(tag(), 0..10).prop_map(|t| t.into_iter().collect())
}

fn ipv4_value() -> BoxedStrategy<String> {
    prop_oneof![
        5 => any::<[u8; 4]>().prop_map(|o| Ipv4Addr::from(o).to_string()),
        1 => any::<[u8; 4]>().prop_map(|o| format!(" {}\t\n", Ipv4Addr::from(o))),
        1 => Just("   ".to_string()),
        2 => junk(),
    ]
    .boxed()
}

fn ipv6_value() -> BoxedStrategy<String> {
    prop_oneof![
        4 => any::<[u16; 8]>().prop_map(|s| Ipv6Addr::from(s).to_string()),
        1 => Just(" 2001:db8::1 ".to_string()),
        1 => Just(String::new()),
        2 => junk(),
    ]
    .boxed()
}

fn attributes() -> impl Strategy<Value = BTreeMap<String, String>> {
    (
        prop::option::weighted(0.7, ipv4_value()),
        prop::option::weighted(0.4, ipv6_value()),
        prop::option::weighted(0.6, port_value()),
        prop::option::weighted(0.5, junk()),
        prop::option::weighted(0.5, junk()),
        prop::option::weighted(0.5, junk()),
        prop::option::weighted(0.5, junk()),
        vec((other_key(), junk()), 0..3),
    )
        .prop_map(|(v4, v6, port, cluster, service, family, az, extra)| {
            let mut a: BTreeMap<String, String> = extra.into_iter().collect();
            let known = [
                (attr::IPV4, v4),
                (attr::IPV6, v6),
                (attr::PORT, port),
                (attr::ECS_CLUSTER, cluster),
                (attr::ECS_SERVICE, service),
                (attr::ECS_TASK_FAMILY, family),
                (attr::AZ, az),
            ];
            for (k, v) in known {
                if let Some(v) = v {
                    a.insert(k.to_string(), v);
                }
            }
            a
        })
}

/// A task's port bindings as the ECS adapter gives them: one host port per
/// container and container port. None: unknown (published without its facts).
fn bindings() -> impl Strategy<Value = Option<Arc<[PortBinding]>>> {
    let port = prop_oneof![2 => select(BOUND_PORTS.to_vec()), 1 => 1u16..=u16::MAX];
    let binding = (select(CONTAINERS.to_vec()), port, 1u16..=u16::MAX);
    prop::option::weighted(
        0.8,
        prop::collection::btree_map(
            binding.prop_map(|(c, cp, hp)| ((c, cp), hp)),
            Just(()),
            0..5,
        ),
    )
    .prop_map(|b| {
        b.map(|b| {
            b.into_keys()
                .map(|((container, container_port), host_port)| PortBinding {
                    container: container.into(),
                    container_port,
                    host_port,
                })
                .collect()
        })
    })
}

fn task_facts() -> impl Strategy<Value = TaskFacts> {
    (
        prop::option::of(junk()),
        prop::option::of(junk()),
        prop::option::of(junk()),
        prop::option::of(junk()),
        prop::option::of(junk()),
        bindings(),
    )
        .prop_map(
            |(launch_type, revision, ec2_instance_id, ec2_name, ec2_instance_type, bindings)| {
                TaskFacts {
                    launch_type: launch_type.map(Into::into),
                    revision: revision.map(Into::into),
                    ec2_instance_id: ec2_instance_id.map(Into::into),
                    ec2_name: ec2_name.map(Into::into),
                    ec2_instance_type: ec2_instance_type.map(Into::into),
                    bindings,
                }
            },
        )
}

fn instance_id() -> BoxedStrategy<String> {
    prop_oneof![3 => "[a-f0-9]{1,6}", 1 => junk()].boxed()
}

/// An instance, its task facts if any, and whether it is held back.
fn instance() -> impl Strategy<Value = (Instance, Option<TaskFacts>, bool)> {
    (
        instance_id(),
        attributes(),
        prop::option::weighted(0.3, task_facts()),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(id, attributes, task, held)| {
            (
                Instance {
                    id,
                    attributes: attributes.into(),
                },
                task,
                held,
            )
        })
}

fn service_name() -> BoxedStrategy<String> {
    prop_oneof![3 => "[a-z][a-z0-9-]{0,10}", 1 => junk()].boxed()
}

/// The ECS service whose tags describe a Cloud Map service, sometimes.
fn ecs_service() -> impl Strategy<Value = Option<Arc<EcsService>>> {
    prop::option::weighted(
        0.3,
        (service_name(), service_name(), tags()).prop_map(|(cluster, name, tags)| {
            Arc::new(EcsService {
                cluster,
                name,
                tags,
            })
        }),
    )
}

fn snapshot() -> impl Strategy<Value = Snapshot> {
    vec(
        (
            service_name(),
            service_name(),
            tags(),
            vec(instance(), 0..6),
            ecs_service(),
        ),
        1..4,
    )
    .prop_map(|services| {
        let mut snap = Snapshot::default();
        for (namespace, service, tags, insts, ecs_service) in services {
            let mut instances = Vec::new();
            for (inst, task, held) in insts {
                if let Some(t) = task {
                    Arc::make_mut(&mut snap.tasks).insert(inst.id.clone(), t);
                }
                if held {
                    snap.held.insert(inst.id.clone());
                }
                instances.push(inst);
            }
            snap.services.push(ServiceData {
                namespace,
                service,
                tags: tags.into(),
                instances: instances.into(),
                ecs_service,
            });
        }
        snap
    })
}

fn options() -> impl Strategy<Value = TargetOptions> {
    (
        prop_oneof![Just(LabelStyle::Default), Just(LabelStyle::Reloader)],
        prop::option::of(prop_oneof![select(BOUND_PORTS.to_vec()), 1u16..=u16::MAX]),
        prop_oneof![
            Just(MetaLabels::All),
            Just(MetaLabels::Tags),
            Just(MetaLabels::None)
        ],
    )
        .prop_map(|(label_style, default_port, meta_labels)| TargetOptions {
            label_style,
            default_port,
            meta_labels,
        })
}

// ---------------------------------------------------------------------------
// Output checks
// ---------------------------------------------------------------------------

/// Prometheus's label name syntax: `[a-zA-Z_][a-zA-Z0-9_]*`.
fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `host:port` with a canonical port in 1-65535 and a non-empty host without
/// surrounding whitespace. (The exact form, brackets around IPv6, is checked
/// against the model.)
fn check_address(addr: &str) -> Result<(), TestCaseError> {
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err(TestCaseError::fail(format!("no port in {addr:?}")));
    };
    let parsed: u16 = port
        .parse()
        .map_err(|_| TestCaseError::fail(format!("port of {addr:?} is not a u16")))?;
    prop_assert!(parsed >= 1, "port 0 in {:?}", addr);
    prop_assert_eq!(parsed.to_string(), port, "port not canonical in {:?}", addr);
    prop_assert!(!host.is_empty(), "empty host in {:?}", addr);
    prop_assert_eq!(host.trim(), host, "host with surrounding whitespace");
    Ok(())
}

/// The file_sd document: a JSON array of `{targets: [one string], labels: {string:
/// string}}` that reads back as exactly the groups it was written from.
fn check_json(groups: &[TargetGroup], json: &[u8]) -> Result<(), TestCaseError> {
    prop_assert!(json.ends_with(b"\n"), "document not newline-terminated");
    let doc: serde_json::Value = serde_json::from_slice(json)
        .map_err(|e| TestCaseError::fail(format!("to_json output does not parse: {e}")))?;
    let Some(entries) = doc.as_array() else {
        return Err(TestCaseError::fail("top level is not an array"));
    };
    prop_assert_eq!(entries.len(), groups.len());
    for (entry, group) in entries.iter().zip(groups) {
        let Some(obj) = entry.as_object() else {
            return Err(TestCaseError::fail("entry is not an object"));
        };
        let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        prop_assert_eq!(keys, vec!["labels", "targets"]);
        let Some(targets) = obj["targets"].as_array() else {
            return Err(TestCaseError::fail("targets is not an array"));
        };
        prop_assert_eq!(targets.len(), 1, "one target per group");
        prop_assert_eq!(targets[0].as_str(), Some(group.targets[0].as_str()));
        let Some(labels) = obj["labels"].as_object() else {
            return Err(TestCaseError::fail("labels is not an object"));
        };
        let mut read = BTreeMap::new();
        for (name, value) in labels {
            prop_assert!(is_label_name(name), "invalid label name {:?}", name);
            let Some(value) = value.as_str() else {
                return Err(TestCaseError::fail(format!("label {name} is not a string")));
            };
            read.insert(name.clone(), value.to_string());
        }
        prop_assert_eq!(&read, &group.labels);
    }
    Ok(())
}

/// Every structural promise of [`build`]'s output.
fn check_built(built: &Built) -> Result<(), TestCaseError> {
    prop_assert!(
        built.groups.windows(2).all(|w| w[0] < w[1]),
        "groups not strictly sorted (unsorted or duplicated)"
    );
    prop_assert!(
        built.skipped.windows(2).all(|w| w[0] < w[1]),
        "skipped not strictly sorted (unsorted or duplicated)"
    );
    for g in &built.groups {
        prop_assert_eq!(g.targets.len(), 1);
        prop_assert!(
            !g.labels.contains_key("__address__"),
            "__address__ repeated in labels (Prometheus takes it from targets)"
        );
        check_address(&g.targets[0])?;
        let path = g.labels.get("__metrics_path__");
        prop_assert!(
            path.is_some_and(|p| p.starts_with('/')),
            "bad __metrics_path__ {:?}",
            path
        );
        if let Some(s) = g.labels.get("__scheme__") {
            prop_assert!(s == "http" || s == "https", "bad __scheme__ {:?}", s);
        }
        for name in g.labels.keys() {
            prop_assert!(is_label_name(name), "invalid label name {:?}", name);
        }
    }
    check_json(&built.groups, &to_json(&built.groups))
}

// ---------------------------------------------------------------------------
// An independent model of which endpoint becomes what
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Ep {
    Primary,
    Ecs,
    Named(String),
}

const PATH: usize = 0;
const PORT: usize = 1;
const SCHEME: usize = 2;
const CONTAINER: usize = 3;

/// Which endpoint and which of its fields a tag key sets, if any.
fn classify(key: &str) -> Option<(Ep, usize)> {
    match key {
        "METRICS_PATH" => Some((Ep::Primary, PATH)),
        "METRICS_PORT" => Some((Ep::Primary, PORT)),
        "METRICS_SCHEME" => Some((Ep::Primary, SCHEME)),
        "METRICS_CONTAINER" => Some((Ep::Primary, CONTAINER)),
        "ECS_METRICS_PATH" => Some((Ep::Ecs, PATH)),
        "ECS_METRICS_PORT" => Some((Ep::Ecs, PORT)),
        "ECS_METRICS_CONTAINER" => Some((Ep::Ecs, CONTAINER)),
        _ => [
            ("METRICS_PATH_", PATH),
            ("METRICS_PORT_", PORT),
            ("METRICS_SCHEME_", SCHEME),
            ("METRICS_CONTAINER_", CONTAINER),
        ]
        .into_iter()
        .find_map(|(prefix, field)| {
            key.strip_prefix(prefix)
                .map(|name| (Ep::Named(name.to_string()), field))
        }),
    }
}

/// A port: optional surrounding whitespace, ASCII digits only, value 1-65535.
fn model_port(raw: &str) -> Option<u16> {
    let t = raw.trim();
    if t.is_empty() || !t.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let digits = t.trim_start_matches('0');
    if digits.len() > 5 {
        return None;
    }
    let n: u32 = if digits.is_empty() {
        0
    } else {
        digits.parse().ok()?
    };
    u16::try_from(n).ok().filter(|p| *p != 0)
}

fn model_path_ok(trimmed: &str) -> bool {
    trimmed.starts_with('/')
        && trimmed
            .chars()
            .all(|c| !c.is_whitespace() && !c.is_control())
}

/// Where the container port `port` of a task is reached: the host port of the one
/// container binding it (the named one, when the endpoint names one); the port
/// itself when no container binds it or the instance has no task facts; else why
/// not.
fn model_host_port(
    port: u16,
    container: Option<&str>,
    facts: Option<&TaskFacts>,
) -> Result<u16, SkipReason> {
    let Some(facts) = facts else {
        return Ok(port);
    };
    let Some(bindings) = &facts.bindings else {
        return Err(SkipReason::UnknownBindings);
    };
    let on_port: Vec<&PortBinding> = bindings
        .iter()
        .filter(|b| b.container_port == port)
        .collect();
    if on_port.is_empty() {
        return Ok(port);
    }
    if let Some(name) = container {
        return on_port
            .iter()
            .find(|b| &*b.container == name)
            .map(|b| b.host_port)
            .ok_or(SkipReason::UnboundContainer);
    }
    let containers: BTreeSet<&str> = on_port.iter().map(|b| &*b.container).collect();
    if containers.len() > 1 {
        Err(SkipReason::AmbiguousPort)
    } else {
        Ok(on_port[0].host_port)
    }
}

fn model_scheme(raw: &str) -> Option<&'static str> {
    let t = raw.trim();
    if t.eq_ignore_ascii_case("http") {
        Some("http")
    } else if t.eq_ignore_ascii_case("https") {
        Some("https")
    } else {
        None
    }
}

/// What a target group shows of where it came from, in the given label style.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Seen {
    namespace: Option<String>,
    service: Option<String>,
    instance_id: Option<String>,
    address: String,
    path: Option<String>,
    scheme: Option<String>,
    endpoint: Option<String>,
    instance_label: Option<String>,
}

fn seen(group: &TargetGroup, style: LabelStyle) -> Seen {
    let l = &group.labels;
    let get = |k: &str| l.get(k).cloned();
    match style {
        LabelStyle::Default => Seen {
            namespace: get("cloudmap_namespace"),
            service: get("cloudmap_service"),
            instance_id: get("ecs_task_id").or_else(|| get("cloudmap_instance_id")),
            address: group.targets[0].clone(),
            path: get("__metrics_path__"),
            scheme: get("__scheme__"),
            endpoint: get("metrics_endpoint"),
            instance_label: None,
        },
        LabelStyle::Reloader => Seen {
            namespace: get("namespace"),
            service: None,
            instance_id: get("taskid"),
            address: group.targets[0].clone(),
            path: get("__metrics_path__"),
            scheme: get("__scheme__"),
            endpoint: None,
            instance_label: get("instance"),
        },
    }
}

#[derive(Default)]
struct Expected {
    targets: BTreeSet<Seen>,
    skipped: BTreeSet<Skipped>,
    /// Targets whose address attribute is a real IP: (target, the socket it must be).
    sockets: Vec<(String, SocketAddr)>,
    /// Number of (instance, valid endpoint) pairs looked at.
    pairs: usize,
    /// How many of those pairs became a target (before de-duplication).
    target_pairs: usize,
}

struct ValidEndpoint<'a> {
    ep: Ep,
    path: String,
    /// The port tag and its port.
    port: Option<(&'a str, u16)>,
    scheme: Option<&'static str>,
    /// The container tag and the (trimmed, non-empty) container it names.
    container: Option<(&'a str, &'a str)>,
}

fn model(snap: &Snapshot, opts: &TargetOptions) -> Expected {
    let mut out = Expected::default();
    for svc in &snap.services {
        let skip = |tag: &str, value: Option<&str>, instance: Option<&str>, reason| Skipped {
            namespace: svc.namespace.clone(),
            service: svc.service.clone(),
            tag: tag.to_string(),
            value: value.map(str::to_string),
            instance: instance.map(str::to_string),
            ecs_service: svc
                .ecs_service
                .as_ref()
                .map(|e| format!("{}/{}", e.cluster, e.name)),
            reason,
        };

        // An ECS service's tags, when there is one, describe the endpoints.
        let endpoint_tags = match &svc.ecs_service {
            Some(e) => &e.tags,
            None => &*svc.tags,
        };
        let mut by_endpoint: BTreeMap<Ep, [Option<(&str, &str)>; 4]> = BTreeMap::new();
        for (key, value) in endpoint_tags {
            match classify(key) {
                None => {}
                Some((Ep::Named(name), _)) if name.is_empty() => {
                    out.skipped
                        .insert(skip(key, Some(value), None, SkipReason::InvalidName));
                }
                Some((ep, field)) => {
                    by_endpoint.entry(ep).or_default()[field] = Some((key, value));
                }
            }
        }

        let mut valid = Vec::new();
        for (ep, [path, port, scheme, container]) in by_endpoint {
            let Some((path_tag, path)) = path else {
                for (tag, value) in [port, scheme, container].into_iter().flatten() {
                    out.skipped
                        .insert(skip(tag, Some(value), None, SkipReason::MissingPath));
                }
                continue;
            };
            let path = path.trim();
            if !model_path_ok(path) {
                out.skipped
                    .insert(skip(path_tag, Some(path), None, SkipReason::InvalidPath));
                continue;
            }
            let port = match port {
                None => None,
                Some((tag, raw)) => match model_port(raw) {
                    Some(p) => Some((tag, p)),
                    None => {
                        out.skipped
                            .insert(skip(tag, Some(raw), None, SkipReason::InvalidPort));
                        continue;
                    }
                },
            };
            let scheme = match scheme {
                None => None,
                Some((tag, raw)) => match model_scheme(raw) {
                    Some(s) => Some(s),
                    None => {
                        out.skipped
                            .insert(skip(tag, Some(raw), None, SkipReason::InvalidScheme));
                        continue;
                    }
                },
            };
            let container = container
                .map(|(tag, raw)| (tag, raw.trim()))
                .filter(|(_, name)| !name.is_empty());
            valid.push(ValidEndpoint {
                ep,
                path: path.to_string(),
                port,
                scheme,
                container,
            });
        }

        for inst in svc.instances.iter() {
            if snap.held.contains(&inst.id) {
                continue;
            }
            let a = &inst.attributes;
            let id = Some(inst.id.as_str());
            for ve in &valid {
                out.pairs += 1;
                // A port tag's or the default port is a container port; the
                // registered AWS_INSTANCE_PORT is a host port already.
                let container_port = match (ve.port, a.get(attr::PORT), opts.default_port) {
                    (Some((tag, p)), _, _) => Some((tag, p)),
                    (None, None, Some(p)) => Some(("--default-port", p)),
                    _ => None,
                };
                let port = match (container_port, a.get(attr::PORT)) {
                    (Some((tag, p)), _) => {
                        let name = ve.container.map(|(_, n)| n);
                        match model_host_port(p, name, snap.tasks.get(&inst.id)) {
                            Ok(host) => host,
                            Err(SkipReason::UnboundContainer) => {
                                let (tag, name) = ve.container.unwrap();
                                out.skipped.insert(skip(
                                    tag,
                                    Some(name),
                                    id,
                                    SkipReason::UnboundContainer,
                                ));
                                continue;
                            }
                            Err(reason) => {
                                let port = p.to_string();
                                out.skipped.insert(skip(tag, Some(&port), id, reason));
                                continue;
                            }
                        }
                    }
                    (None, Some(raw)) => match model_port(raw) {
                        Some(p) => p,
                        None => {
                            out.skipped.insert(skip(
                                attr::PORT,
                                Some(raw),
                                id,
                                SkipReason::InvalidPort,
                            ));
                            continue;
                        }
                    },
                    (None, None) => {
                        out.skipped
                            .insert(skip(attr::PORT, None, id, SkipReason::MissingPort));
                        continue;
                    }
                };
                let usable = |k: &str| a.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
                // IPv4 first, IPv6 next; a value that is not an address of its
                // family is skipped as invalid when the other gives nothing either.
                let v4 = usable(attr::IPV4).map(|v| (v, v.parse::<Ipv4Addr>().ok()));
                let v6 = usable(attr::IPV6).map(|v| (v, v.parse::<Ipv6Addr>().ok()));
                let (address, host, ip) = match (v4, v6) {
                    (Some((_, Some(ip))), _) => {
                        (format!("{ip}:{port}"), ip.to_string(), Some(IpAddr::V4(ip)))
                    }
                    (_, Some((_, Some(ip)))) => (
                        format!("[{ip}]:{port}"),
                        ip.to_string(),
                        Some(IpAddr::V6(ip)),
                    ),
                    (Some((raw, None)), _) => {
                        out.skipped.insert(skip(
                            attr::IPV4,
                            Some(raw),
                            id,
                            SkipReason::InvalidAddress,
                        ));
                        continue;
                    }
                    (None, Some((raw, None))) => {
                        out.skipped.insert(skip(
                            attr::IPV6,
                            Some(raw),
                            id,
                            SkipReason::InvalidAddress,
                        ));
                        continue;
                    }
                    (None, None) => {
                        out.skipped
                            .insert(skip(attr::IPV4, None, id, SkipReason::MissingAddress));
                        continue;
                    }
                };
                out.target_pairs += 1;
                if let Some(ip) = ip {
                    out.sockets
                        .push((address.clone(), SocketAddr::new(ip, port)));
                }
                let endpoint = match &ve.ep {
                    Ep::Primary => None,
                    Ep::Ecs => Some("ecs".to_string()),
                    Ep::Named(n) => Some(n.clone()),
                };
                let default_style = matches!(opts.label_style, LabelStyle::Default);
                out.targets.insert(Seen {
                    namespace: Some(svc.namespace.clone()),
                    service: default_style.then(|| svc.service.clone()),
                    instance_id: Some(inst.id.clone()),
                    address,
                    path: Some(ve.path.clone()),
                    scheme: ve.scheme.map(str::to_string),
                    endpoint: endpoint.filter(|_| default_style),
                    instance_label: (!default_style).then(|| host.to_string()),
                });
            }
        }
    }
    out
}

/// What `build` makes of a snapshot, checked against the independent model: the
/// same targets and the same skips. Both, for more checks.
fn built_as_modelled(
    snap: &Snapshot,
    opts: &TargetOptions,
) -> Result<(Built, Expected), TestCaseError> {
    let built = build(snap, opts);
    let want = model(snap, opts);
    let got: BTreeSet<Seen> = built
        .groups
        .iter()
        .map(|g| seen(g, opts.label_style))
        .collect();
    prop_assert_eq!(&got, &want.targets, "targets differ from the model");
    let want_skipped: Vec<Skipped> = want.skipped.iter().cloned().collect();
    prop_assert_eq!(&built.skipped, &want_skipped, "skips differ from the model");
    Ok((built, want))
}

/// The same snapshot with services and each service's instances in reverse order.
fn reversed(snap: &Snapshot) -> Snapshot {
    let mut r = snap.clone();
    r.services.reverse();
    for s in &mut r.services {
        Arc::make_mut(&mut s.instances).reverse();
    }
    r
}

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    /// Whatever the tags and attributes hold, `build` returns (no panic), its output
    /// is a valid, sorted, duplicate-free file_sd document with valid label names and
    /// `host:port` targets, and it depends only on the snapshot's content.
    #[test]
    fn arbitrary_input_builds_valid_deterministic_file_sd(
        snap in snapshot(),
        opts in options(),
    ) {
        let built = build(&snap, &opts);
        check_built(&built)?;

        let again = build(&snap, &opts);
        prop_assert_eq!(to_json(&built.groups), to_json(&again.groups), "not deterministic");
        prop_assert_eq!(&built, &again);

        // The streaming renderer the sidecar uses writes exactly these bytes.
        let mut content = Vec::new();
        render_to(&snap, &opts, &mut content).unwrap();
        prop_assert_eq!(&content, &to_json(&built.groups), "render differs from build");
        let summary = summarize(&snap, &opts);
        prop_assert_eq!(summary.targets, built.groups.len());
        prop_assert_eq!(&summary.skipped, &built.skipped);

        let other_order = build(&reversed(&snap), &opts);
        prop_assert_eq!(
            to_json(&built.groups),
            to_json(&other_order.groups),
            "output depends on input order"
        );
        prop_assert_eq!(&built.skipped, &other_order.skipped);

        // --meta-labels: `tags` writes no instance attribute, `none` (and the
        // reloader style) no __meta_* label at all.
        for g in &built.groups {
            let has = |prefix: &str| g.labels.keys().any(|k| k.starts_with(prefix));
            let (attrs, tags) = match (opts.label_style, opts.meta_labels) {
                (LabelStyle::Reloader, _) | (_, MetaLabels::None) => (false, false),
                (_, MetaLabels::Tags) => (false, true),
                (_, MetaLabels::All) => (true, true),
            };
            if !attrs {
                prop_assert!(!has("__meta_cloudmap_instance_attribute_"), "{:?}", g);
            }
            if !tags {
                prop_assert!(!has("__meta_"), "{:?}", g);
            }
        }

        if matches!(opts.label_style, LabelStyle::Default) && opts.meta_labels != MetaLabels::None {
            // Tag and attribute keys are sanitised into label names, but their values
            // are kept verbatim as label values.
            let by_label = |prefix: &str, map: &BTreeMap<String, String>| {
                let mut m: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
                for (k, v) in map {
                    let name: String = k
                        .chars()
                        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                        .collect();
                    m.entry(format!("{prefix}{name}")).or_default().insert(v.clone());
                }
                m
            };
            for g in &built.groups {
                let no_ecs_tags = BTreeMap::new();
                let keeps_raw_tag_values = |svc: &&ServiceData| {
                    let ecs_tags = svc.ecs_service.as_ref().map_or(&no_ecs_tags, |e| &e.tags);
                    let keeps = |prefix, tags| {
                        by_label(prefix, tags).iter().all(|(name, values)| {
                            g.labels.get(name).is_some_and(|v| values.contains(v))
                        })
                    };
                    g.labels.get("cloudmap_namespace") == Some(&svc.namespace)
                        && g.labels.get("cloudmap_service") == Some(&svc.service)
                        && keeps("__meta_cloudmap_service_tag_", &svc.tags)
                        && keeps("__meta_ecs_service_tag_", ecs_tags)
                };
                prop_assert!(
                    snap.services.iter().any(|svc| keeps_raw_tag_values(&svc)),
                    "no service whose raw tag values match the labels of {:?}",
                    g
                );
            }
        }
    }

    /// Accounting: for every service, every instance that is not held and every
    /// endpoint its tags define, the endpoint is a target or a skip with the reason an
    /// independent reading of the tag rules gives; malformed tags are skipped once per
    /// service; nothing else appears.
    #[test]
    fn every_endpoint_is_a_target_or_a_skip_with_a_reason(
        snap in snapshot(),
        opts in options(),
    ) {
        let (built, want) = built_as_modelled(&snap, &opts)?;

        // Every looked-at pair went one way or the other, and de-duplication only
        // ever merges targets, it never invents them.
        prop_assert!(want.target_pairs <= want.pairs);
        prop_assert!(built.groups.len() <= want.target_pairs);
        prop_assert!(built.groups.len() >= want.targets.len());

        // A real IP address attribute always gives a target that parses as a socket.
        for (target, socket) in &want.sockets {
            prop_assert_eq!(target.parse::<SocketAddr>().ok(), Some(*socket));
        }
    }

    /// Port bindings: endpoints whose port tags name the ports tasks bind, with or
    /// without container tags, on tasks whose bindings are known or not, follow
    /// the independent model too (the general snapshots meet these cases rarely).
    #[test]
    fn container_ports_follow_the_model_of_port_bindings(
        endpoints in vec(
            (
                endpoint_name(),
                select(BOUND_PORTS.to_vec()),
                prop::option::weighted(0.5, container_value()),
            ),
            1..4,
        ),
        tasks in vec((any::<[u8; 4]>(), prop::option::weighted(0.9, bindings())), 1..4),
        opts in options(),
    ) {
        let mut tags = BTreeMap::new();
        for (name, port, container) in endpoints {
            tags.insert(format!("METRICS_PATH_{name}"), "/m".to_string());
            tags.insert(format!("METRICS_PORT_{name}"), port.to_string());
            if let Some(c) = container {
                tags.insert(format!("METRICS_CONTAINER_{name}"), c);
            }
        }
        let mut snap = Snapshot::default();
        let mut instances = Vec::new();
        for (i, (ip, bindings)) in tasks.into_iter().enumerate() {
            let id = format!("task-{i}");
            if let Some(bindings) = bindings {
                let facts = TaskFacts { bindings, ..TaskFacts::default() };
                Arc::make_mut(&mut snap.tasks).insert(id.clone(), facts);
            }
            let attributes = BTreeMap::from([(attr::IPV4.to_string(), Ipv4Addr::from(ip).to_string())]);
            instances.push(Instance { id, attributes: attributes.into() });
        }
        snap.services.push(ServiceData {
            namespace: "ns".into(),
            service: "svc".into(),
            tags: tags.into(),
            instances: instances.into(),
            ecs_service: None,
        });
        built_as_modelled(&snap, &opts)?;
    }

    /// A valid primary endpoint (METRICS_PATH=/metrics, METRICS_PORT=9100) on an
    /// instance with a valid IPv4 gives exactly one primary target, whatever junk
    /// named, ECS or unrelated tags and attributes come with it.
    #[test]
    fn valid_primary_endpoint_survives_junk_tags(
        junk_tags in tags(),
        attrs in attributes(),
        ip in any::<[u8; 4]>(),
        others in vec(attributes(), 0..3),
        namespace in service_name(),
        service in service_name(),
        opts in options(),
    ) {
        let ip = Ipv4Addr::from(ip);
        let mut tags = junk_tags;
        tags.insert(tags::METRICS_PATH.into(), "/metrics".into());
        tags.insert(tags::METRICS_PORT.into(), "9100".into());
        tags.remove(tags::METRICS_SCHEME);
        let mut attributes = attrs;
        attributes.insert(attr::IPV4.into(), ip.to_string());
        let good_id = "good-instance";
        let mut instances = vec![Instance { id: good_id.into(), attributes: attributes.into() }];
        for (i, attributes) in others.into_iter().enumerate() {
            instances.push(Instance { id: format!("other-{i}"), attributes: attributes.into() });
        }
        let snap = Snapshot {
            services: vec![ServiceData { namespace, service, tags: tags.into(), instances: instances.into(), ecs_service: None }],
            ..Snapshot::default()
        };

        let built = build(&snap, &opts);
        check_built(&built)?;

        let want_addr = format!("{ip}:9100");
        let primary: Vec<&TargetGroup> = built
            .groups
            .iter()
            .filter(|g| match opts.label_style {
                LabelStyle::Default => {
                    (g.labels.get("ecs_task_id").or(g.labels.get("cloudmap_instance_id")))
                        .is_some_and(|id| id == good_id)
                        && !g.labels.contains_key("metrics_endpoint")
                }
                LabelStyle::Reloader => {
                    g.labels.get("taskid").is_some_and(|id| id == good_id)
                        && g.targets[0] == want_addr
                        && g.labels.get("__metrics_path__").is_some_and(|p| p == "/metrics")
                        && !g.labels.contains_key("__scheme__")
                }
            })
            .collect();
        prop_assert_eq!(primary.len(), 1, "want one primary target, got {:?}", primary);
        prop_assert_eq!(&primary[0].targets[0], &want_addr);
        prop_assert_eq!(
            primary[0].labels.get("__metrics_path__").map(String::as_str),
            Some("/metrics")
        );
        prop_assert!(
            !built
                .skipped
                .iter()
                .any(|s| s.tag == tags::METRICS_PATH || s.tag == tags::METRICS_PORT),
            "the valid primary tags were reported as skipped: {:?}",
            built.skipped
        );
    }
}

// ---------------------------------------------------------------------------
// Fixed cases
// ---------------------------------------------------------------------------

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn one_service(
    namespace: &str,
    service: &str,
    tags: &[(&str, &str)],
    instances: Vec<Instance>,
) -> Snapshot {
    Snapshot {
        services: vec![ServiceData {
            namespace: namespace.into(),
            service: service.into(),
            tags: map(tags).into(),
            instances: instances.into(),
            ecs_service: None,
        }],
        ..Snapshot::default()
    }
}

fn opts(label_style: LabelStyle) -> TargetOptions {
    TargetOptions {
        label_style,
        ..TargetOptions::default()
    }
}

const PRIMARY: [(&str, &str); 2] = [
    (tags::METRICS_PATH, "/metrics"),
    (tags::METRICS_PORT, "9100"),
];

#[test]
fn ipv6_only_instance_gets_a_bracketed_address() {
    let instances = vec![
        Instance {
            id: "v6".into(),
            attributes: map(&[(attr::IPV6, "2001:db8::7")]).into(),
        },
        Instance {
            id: "blank-v4".into(),
            attributes: map(&[(attr::IPV4, " \t"), (attr::IPV6, " 2001:db8::8 ")]).into(),
        },
    ];
    let snap = one_service("ns", "web", &PRIMARY, instances);
    for style in [LabelStyle::Default, LabelStyle::Reloader] {
        let built = build(&snap, &opts(style));
        check_built(&built).unwrap();
        assert!(built.skipped.is_empty(), "{:?}", built.skipped);
        let targets: Vec<&str> = built.groups.iter().map(|g| g.targets[0].as_str()).collect();
        assert_eq!(targets, ["[2001:db8::7]:9100", "[2001:db8::8]:9100"]);
        for t in targets {
            let sock: SocketAddr = t.parse().unwrap();
            assert!(sock.is_ipv6());
            assert_eq!(sock.port(), 9100);
        }
        if style == LabelStyle::Reloader {
            assert_eq!(built.groups[0].labels["instance"], "2001:db8::7");
        }
    }
}

#[test]
fn instance_without_an_address_is_skipped_as_missing_address() {
    let instances = vec![
        Instance {
            id: "nothing".into(),
            attributes: map(&[(attr::PORT, "8080")]).into(),
        },
        Instance {
            id: "blank".into(),
            attributes: map(&[(attr::IPV4, "  "), (attr::IPV6, "")]).into(),
        },
        Instance {
            id: "fine".into(),
            attributes: map(&[(attr::IPV4, "10.1.2.3")]).into(),
        },
    ];
    let snap = one_service("ns", "web", &PRIMARY, instances);
    for style in [LabelStyle::Default, LabelStyle::Reloader] {
        let built = build(&snap, &opts(style));
        check_built(&built).unwrap();
        let targets: Vec<&str> = built.groups.iter().map(|g| g.targets[0].as_str()).collect();
        assert_eq!(targets, ["10.1.2.3:9100"]);
        let skipped: Vec<(Option<&str>, &str, SkipReason)> = built
            .skipped
            .iter()
            .map(|s| (s.instance.as_deref(), s.tag.as_str(), s.reason))
            .collect();
        assert_eq!(
            skipped,
            [
                (Some("blank"), attr::IPV4, SkipReason::MissingAddress),
                (Some("nothing"), attr::IPV4, SkipReason::MissingAddress),
            ]
        );
        assert!(
            built
                .skipped
                .iter()
                .all(|s| s.namespace == "ns" && s.service == "web")
        );
    }
}

#[test]
fn thousand_instances_give_a_thousand_targets() {
    let instances: Vec<Instance> = (0..1000u32)
        .map(|i| Instance {
            id: format!("task-{i:04}"),
            attributes: map(&[
                (attr::IPV4, &format!("10.0.{}.{}", i / 256, i % 256)),
                (attr::ECS_CLUSTER, "prod"),
                (attr::AZ, "eu-west-1a"),
            ])
            .into(),
        })
        .collect();
    let snap = one_service("ns", "big", &[(tags::METRICS_PATH, "/metrics")], instances);
    let o = TargetOptions {
        default_port: Some(8080),
        ..TargetOptions::default()
    };
    let built = build(&snap, &o);
    check_built(&built).unwrap();
    assert!(built.skipped.is_empty(), "{:?}", built.skipped);
    assert_eq!(built.groups.len(), 1000);
    let targets: BTreeSet<&str> = built.groups.iter().map(|g| g.targets[0].as_str()).collect();
    assert_eq!(targets.len(), 1000, "one distinct target per instance");
    assert!(targets.contains("10.0.3.231:8080"));
    let ids: BTreeSet<&str> = built
        .groups
        .iter()
        .map(|g| g.labels["ecs_task_id"].as_str())
        .collect();
    assert_eq!(ids.len(), 1000);
    let doc: serde_json::Value = serde_json::from_slice(&to_json(&built.groups)).unwrap();
    assert_eq!(doc.as_array().map(Vec::len), Some(1000));
    assert_eq!(build(&reversed(&snap), &o), built);
}

#[test]
fn unicode_and_huge_names_stay_verbatim_label_values() {
    let mut huge_service = String::new();
    while huge_service.len() < 10 * 1024 {
        huge_service.push_str("sérvice-名前\"\\\u{0}\u{7f}\n ");
    }
    let namespace = "ñamespace.🦀/テスト";
    let huge_id = "i".repeat(10 * 1024);
    let tag_value = "välue \"quoted\" \u{1}\u{2028}";
    let tags = [
        (tags::METRICS_PATH, "/metrics"),
        (tags::METRICS_PORT, "9100"),
        ("チーム.name", tag_value),
        ("", "empty key"),
    ];
    let instances = vec![Instance {
        id: huge_id.clone(),
        attributes: map(&[
            (attr::IPV4, "192.0.2.10"),
            (attr::ECS_CLUSTER, "clüster"),
            ("weird key ✓", "x\u{0}y"),
        ])
        .into(),
    }];
    let snap = one_service(namespace, &huge_service, &tags, instances);

    let built = build(&snap, &opts(LabelStyle::Default));
    check_built(&built).unwrap();
    assert!(built.skipped.is_empty(), "{:?}", built.skipped);
    assert_eq!(built.groups.len(), 1);
    let json = to_json(&built.groups);
    let doc: serde_json::Value = serde_json::from_slice(&json).unwrap();
    let labels = &doc[0]["labels"];
    assert_eq!(
        labels["cloudmap_service"].as_str(),
        Some(huge_service.as_str())
    );
    assert_eq!(labels["cloudmap_namespace"].as_str(), Some(namespace));
    assert_eq!(labels["ecs_task_id"].as_str(), Some(huge_id.as_str()));
    assert_eq!(labels["ecs_cluster"].as_str(), Some("clüster"));
    assert_eq!(
        labels["__meta_cloudmap_service_tag_____name"].as_str(),
        Some(tag_value),
        "unicode key sanitised into the name, value kept: {labels}"
    );
    assert_eq!(
        labels["__meta_cloudmap_service_tag_"].as_str(),
        Some("empty key")
    );
    assert_eq!(
        labels["__meta_cloudmap_instance_attribute_weird_key__"].as_str(),
        Some("x\u{0}y")
    );

    let built = build(&snap, &opts(LabelStyle::Reloader));
    check_built(&built).unwrap();
    let l = &built.groups[0].labels;
    assert_eq!(l["namespace"], namespace);
    assert_eq!(l["taskid"], huge_id);
    assert_eq!(l["cluster"], "clüster");
    assert_eq!(l["instance"], "192.0.2.10");
}
