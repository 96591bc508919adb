//! A service's tags read into endpoints (path, port, scheme, container), each
//! checked, and the reasons an endpoint or one instance of it is skipped.

use std::collections::BTreeMap;
use std::fmt;

use crate::model::tags::{self, EndpointName, Field};
use crate::model::{Instance, ServiceData, attr};

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
    /// A port, scheme or container tag for an endpoint that has no path tag.
    MissingPath,
    /// The instance has neither AWS_INSTANCE_IPV4 nor AWS_INSTANCE_IPV6.
    MissingAddress,
    /// AWS_INSTANCE_IPV4 / AWS_INSTANCE_IPV6 is not an IP address of that family
    /// (and the other one gives no usable address either).
    InvalidAddress,
    /// Several containers of the task bind the endpoint's port and no container
    /// tag picks one.
    AmbiguousPort,
    /// The container tag names a container that does not bind the endpoint's port,
    /// while other containers of the task do.
    UnboundContainer,
    /// The task's port bindings are not known (published without its ECS facts),
    /// so the host port of the endpoint's container port cannot be told.
    UnknownBindings,
}

impl SkipReason {
    /// Every reason, for metrics that must show zeros too.
    pub const ALL: [SkipReason; 11] = [
        SkipReason::InvalidPort,
        SkipReason::InvalidPath,
        SkipReason::InvalidScheme,
        SkipReason::InvalidName,
        SkipReason::MissingPort,
        SkipReason::MissingPath,
        SkipReason::MissingAddress,
        SkipReason::InvalidAddress,
        SkipReason::AmbiguousPort,
        SkipReason::UnboundContainer,
        SkipReason::UnknownBindings,
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
            SkipReason::AmbiguousPort => "ambiguous_port",
            SkipReason::UnboundContainer => "unbound_container",
            SkipReason::UnknownBindings => "unknown_bindings",
        }
    }

    /// What is wrong, in words an operator can act on (the skip warning says it).
    pub fn explain(self) -> &'static str {
        match self {
            SkipReason::InvalidPort => "port is not a number from 1 to 65535",
            SkipReason::InvalidPath => "path must start with / and hold no spaces",
            SkipReason::InvalidScheme => "scheme must be http or https",
            SkipReason::InvalidName => {
                "endpoint name after METRICS_PATH_ / METRICS_PORT_ / METRICS_SCHEME_ / \
                 METRICS_CONTAINER_ is empty"
            }
            SkipReason::MissingPort => {
                "no port tag, no AWS_INSTANCE_PORT attribute and no --default-port"
            }
            SkipReason::MissingPath => {
                "port, scheme or container tag without the matching path tag"
            }
            SkipReason::MissingAddress => "instance has no AWS_INSTANCE_IPV4 or AWS_INSTANCE_IPV6",
            SkipReason::InvalidAddress => {
                "AWS_INSTANCE_IPV4 / AWS_INSTANCE_IPV6 is not an IP address of that family"
            }
            SkipReason::AmbiguousPort => {
                "several containers of the task bind this port: name one with the \
                 endpoint's container tag (METRICS_CONTAINER, ECS_METRICS_CONTAINER, \
                 METRICS_CONTAINER_<name>)"
            }
            SkipReason::UnboundContainer => {
                "the named container does not bind this port, other containers of the task do"
            }
            SkipReason::UnknownBindings => {
                "the task's port bindings are unknown (ECS DescribeTasks has not answered \
                 for it), so its host port cannot be told; published once they are known"
            }
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
    /// The instance, when the fault is the instance's (address, port attribute,
    /// port bindings).
    pub instance: Option<String>,
    /// The ECS service (`cluster/service`) whose tag it is, when the endpoints come
    /// from the ECS service's tags.
    pub ecs_service: Option<String>,
    pub reason: SkipReason,
}

impl Skipped {
    pub(super) fn new(
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
            ecs_service: svc
                .ecs_service
                .as_ref()
                .map(|e| format!("{}/{}", e.cluster, e.name)),
            reason,
        }
    }
}

/// Which endpoint a tag set describes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum EndpointKind {
    Primary,
    Ecs,
    Named(String),
}

impl EndpointKind {
    pub(super) fn label(&self) -> Option<&str> {
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
pub(super) struct Endpoint {
    pub(super) kind: EndpointKind,
    pub(super) path: String,
    /// The port tag and its port when the endpoint has one.
    pub(super) port: Option<(String, u16)>,
    pub(super) scheme: Option<&'static str>,
    /// The container tag and the container it names: whose binding of the port
    /// counts when several containers bind it.
    pub(super) container: Option<(String, String)>,
}

#[derive(Default)]
struct TagGroup<'a> {
    path: Option<TagValue<'a>>,
    port: Option<TagValue<'a>>,
    scheme: Option<TagValue<'a>>,
    container: Option<TagValue<'a>>,
}

/// Reads a service's endpoint tags (its own, or its ECS service's) into endpoints;
/// malformed ones go to `skipped`.
pub(super) fn endpoints(svc: &ServiceData, skipped: &mut Vec<Skipped>) -> Vec<Endpoint> {
    let mut skip = |tag: &str, value: Option<&str>, reason| {
        skipped.push(Skipped::new(svc, tag, value, None, reason))
    };
    let mut out = Vec::new();
    for (kind, g) in tag_groups(svc, &mut skip) {
        let Some(path) = g.path else {
            // A port, scheme or container without a path: probably a forgotten
            // tag, say so.
            for (tag, value) in [g.port, g.scheme, g.container].into_iter().flatten() {
                skip(tag, Some(value), SkipReason::MissingPath);
            }
            continue;
        };
        match endpoint(kind, path, g.port, g.scheme) {
            Ok(mut ep) => {
                ep.container = g
                    .container
                    .map(|(tag, v)| (tag.to_string(), v.trim().to_string()))
                    .filter(|(_, v)| !v.is_empty());
                out.push(ep)
            }
            Err((tag, value, reason)) => skip(tag, Some(value), reason),
        }
    }
    out
}

/// The endpoint tags of a service, grouped by endpoint; a named endpoint's tag
/// with an empty name is skipped.
fn tag_groups<'a>(
    svc: &'a ServiceData,
    skip: &mut impl FnMut(&str, Option<&str>, SkipReason),
) -> BTreeMap<EndpointKind, TagGroup<'a>> {
    let mut groups: BTreeMap<EndpointKind, TagGroup> = BTreeMap::new();
    for (key, value) in svc.endpoint_tags() {
        let Some((name, field)) = tags::classify(key) else {
            continue;
        };
        let kind = match name {
            EndpointName::Primary => EndpointKind::Primary,
            EndpointName::Ecs => EndpointKind::Ecs,
            EndpointName::Named("") => {
                skip(key, Some(value), SkipReason::InvalidName);
                continue;
            }
            EndpointName::Named(n) => EndpointKind::Named(n.to_string()),
        };
        let g = groups.entry(kind).or_default();
        let slot = match field {
            Field::Path => &mut g.path,
            Field::Port => &mut g.port,
            Field::Scheme => &mut g.scheme,
            Field::Container => &mut g.container,
        };
        *slot = Some((key.as_str(), value.as_str()));
    }
    groups
}

/// A (tag, value) pair.
type TagValue<'a> = (&'a str, &'a str);

/// One endpoint from its tags, each checked; else the tag at fault, its value and
/// why.
fn endpoint<'a>(
    kind: EndpointKind,
    (path_tag, path): TagValue<'a>,
    port: Option<TagValue<'a>>,
    scheme: Option<TagValue<'a>>,
) -> Result<Endpoint, (&'a str, &'a str, SkipReason)> {
    let path = path.trim();
    if !valid_path(path) {
        return Err((path_tag, path, SkipReason::InvalidPath));
    }
    let port = match port {
        None => None,
        Some((tag, v)) => Some((
            tag.to_string(),
            parse_port(v).ok_or((tag, v, SkipReason::InvalidPort))?,
        )),
    };
    let scheme = match scheme {
        None => None,
        Some((tag, v)) => Some(match v.trim().to_ascii_lowercase().as_str() {
            "http" => "http",
            "https" => "https",
            _ => return Err((tag, v, SkipReason::InvalidScheme)),
        }),
    };
    Ok(Endpoint {
        kind,
        path: path.to_string(),
        port,
        scheme,
        container: None,
    })
}

pub(super) fn valid_path(p: &str) -> bool {
    p.starts_with('/') && !p.chars().any(|c| c.is_whitespace() || c.is_control())
}

pub(super) fn parse_port(v: &str) -> Option<u16> {
    let v = v.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse::<u16>().ok().filter(|p| *p != 0)
}

/// `host:port` (IPv6 in brackets) and the host, from AWS_INSTANCE_IPV4, else
/// AWS_INSTANCE_IPV6. Otherwise the attribute at fault, its value and the reason.
pub(super) fn address(
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
