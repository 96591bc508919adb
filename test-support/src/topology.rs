//! A declarative Cloud Map topology (namespaces, tagged services, ECS-registered
//! tasks), seeded through the one [`Seeder`]: what the demo runs on, read from a
//! JSON file by the `seed` binary.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::seeder::{REGION, Seeder};

/// Namespaces and services to create.
#[derive(Debug, Clone, Deserialize)]
pub struct Topology {
    pub namespaces: Vec<NamespaceSpec>,
    pub services: Vec<ServiceSpec>,
}

/// A Cloud Map namespace.
#[derive(Debug, Clone, Deserialize)]
pub struct NamespaceSpec {
    pub name: String,
    /// `http` or `dns` (private DNS, in a made-up VPC).
    pub kind: NamespaceKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NamespaceKind {
    Http,
    Dns,
}

/// A service and the tasks ECS would register in it.
#[derive(Debug, Clone, Deserialize)]
pub struct ServiceSpec {
    pub name: String,
    pub namespace: String,
    /// The ECS cluster of its tasks.
    pub cluster: String,
    /// The task definition family (default `<name>-task`).
    #[serde(default)]
    pub family: Option<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// `(IPv4, AWS_INSTANCE_PORT)` of each task.
    pub tasks: Vec<(String, u16)>,
    /// The targets the sidecar should write for it.
    pub expected_targets: usize,
    /// What the service shows, in a few words.
    pub note: String,
}

/// What was seeded, as the demo's checks read it.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub endpoint: String,
    pub region: String,
    pub namespaces: BTreeMap<String, String>,
    pub services: Vec<SeededService>,
    pub expected_targets: usize,
    /// The services that should have targets, sorted.
    pub expected_services: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SeededService {
    pub namespace: String,
    pub service: String,
    pub service_id: String,
    pub tags: BTreeMap<String, String>,
    pub instances: usize,
    pub instance_ids: Vec<String>,
    pub expected_targets: usize,
    pub note: String,
}

/// Task ids like the ones ECS gives (32 hex digits), the same for the same seed.
pub struct TaskIds(u64);

impl TaskIds {
    pub fn new(seed: u64) -> Self {
        TaskIds(seed | 1)
    }

    /// The next id (xorshift64, twice for 128 bits).
    pub fn next_id(&mut self) -> String {
        let mut half = || {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        };
        format!("{:016x}{:016x}", half(), half())
    }
}

/// The attributes ECS registers for a task of `spec` (its `index`-th).
pub fn task_attributes(
    spec: &ServiceSpec,
    ip: &str,
    port: u16,
    index: usize,
) -> Vec<(&'static str, String)> {
    let family = spec
        .family
        .clone()
        .unwrap_or_else(|| format!("{}-task", spec.name));
    vec![
        ("AWS_INSTANCE_IPV4", ip.to_string()),
        ("AWS_INSTANCE_PORT", port.to_string()),
        ("AWS_INIT_HEALTH_STATUS", "HEALTHY".to_string()),
        (
            "AVAILABILITY_ZONE",
            format!("{REGION}{}", ["a", "b", "c"][index % 3]),
        ),
        ("ECS_CLUSTER_NAME", spec.cluster.clone()),
        ("ECS_SERVICE_NAME", spec.name.clone()),
        ("ECS_TASK_DEFINITION_FAMILY", family),
        ("REGION", REGION.to_string()),
    ]
}

impl Topology {
    /// Reads a topology from JSON, with every `${NAME}` replaced by its value in
    /// `vars` (an unknown name is an error).
    pub fn parse(text: &str, vars: &BTreeMap<String, String>) -> Result<Topology, String> {
        let mut text = text.to_string();
        for (name, value) in vars {
            text = text.replace(&format!("${{{name}}}"), value);
        }
        if let Some(at) = text.find("${") {
            let rest: String = text[at..].chars().take(30).collect();
            return Err(format!(
                "no value for {rest}... (give it with --var NAME=VALUE)"
            ));
        }
        let topology: Topology = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        for s in &topology.services {
            if !topology.namespaces.iter().any(|n| n.name == s.namespace) {
                return Err(format!("service {}: no namespace {}", s.name, s.namespace));
            }
        }
        Ok(topology)
    }

    /// Creates everything in Cloud Map at `endpoint`; what was made.
    pub async fn seed(&self, seeder: &Seeder, endpoint: &str, ids: &mut TaskIds) -> Summary {
        let mut namespaces = BTreeMap::new();
        for ns in &self.namespaces {
            let id = match ns.kind {
                NamespaceKind::Http => seeder.http_namespace(&ns.name).await,
                NamespaceKind::Dns => seeder.dns_namespace(&ns.name).await,
            };
            namespaces.insert(ns.name.clone(), id);
        }
        let mut services = Vec::new();
        for spec in &self.services {
            let tags: Vec<(&str, &str)> = spec
                .tags
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let service_id = seeder
                .service(&namespaces[&spec.namespace], &spec.name, &tags)
                .await;
            let mut instance_ids = Vec::new();
            for (i, (ip, port)) in spec.tasks.iter().enumerate() {
                let id = ids.next_id();
                seeder
                    .instance(&service_id, &id, &task_attributes(spec, ip, *port, i))
                    .await;
                instance_ids.push(id);
            }
            services.push(SeededService {
                namespace: spec.namespace.clone(),
                service: spec.name.clone(),
                service_id,
                tags: spec.tags.clone(),
                instances: instance_ids.len(),
                instance_ids,
                expected_targets: spec.expected_targets,
                note: spec.note.clone(),
            });
        }
        let mut expected_services: Vec<String> = services
            .iter()
            .filter(|s| s.expected_targets > 0)
            .map(|s| s.service.clone())
            .collect();
        expected_services.sort();
        Summary {
            endpoint: endpoint.to_string(),
            region: REGION.to_string(),
            namespaces,
            expected_targets: services.iter().map(|s| s.expected_targets).sum(),
            expected_services,
            services,
        }
    }
}

impl Summary {
    /// A few readable lines.
    pub fn describe(&self) -> String {
        let mut out = format!("seeded {} ({}):\n", self.endpoint, self.region);
        for s in &self.services {
            out.push_str(&format!(
                "  {}/{}: {} tasks -> {} targets ({})\n",
                s.namespace, s.service, s.instances, s.expected_targets, s.note
            ));
        }
        out.push_str(&format!(
            "expected: {} targets from services {}\n",
            self.expected_targets,
            self.expected_services.join(", ")
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_filled_and_names_checked() {
        let text = r#"{"namespaces": [{"name": "apps", "kind": "http"}],
            "services": [{"name": "m", "namespace": "apps", "cluster": "c",
            "tasks": [["127.0.0.1", ${PORT}]], "expected_targets": 1, "note": "n"}]}"#;
        let vars = BTreeMap::from([("PORT".to_string(), "9469".to_string())]);
        let t = Topology::parse(text, &vars).unwrap();
        assert_eq!(t.services[0].tasks, vec![("127.0.0.1".to_string(), 9469)]);
        let e = Topology::parse(text, &BTreeMap::new()).unwrap_err();
        assert!(e.contains("${PORT}"), "{e}");
        let bad = text.replace("\"namespace\": \"apps\"", "\"namespace\": \"other\"");
        assert!(
            Topology::parse(&bad, &vars)
                .unwrap_err()
                .contains("no namespace other")
        );
        let mut ids = TaskIds::new(7);
        let a = ids.next_id();
        assert_eq!(a.len(), 32);
        assert_ne!(a, ids.next_id());
        assert_eq!(TaskIds::new(7).next_id(), a);
    }
}
