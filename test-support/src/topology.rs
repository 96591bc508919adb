//! A declarative topology (EC2 hosts in ECS clusters, Cloud Map namespaces, tagged
//! services, their tasks run in ECS and registered as ECS does), seeded through the
//! one [`Seeder`], and the metrics endpoints its tasks and hosts answer on: what the
//! demo runs on, read from a JSON file by the `seed` binary.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use aws_sdk_ecs::types::LaunchType as EcsLaunchType;
use serde::{Deserialize, Serialize};

use crate::exporter::Endpoint;
use crate::seeder::{REGION, Seeder};

/// Hosts, namespaces and services to create.
#[derive(Debug, Clone, Deserialize)]
pub struct Topology {
    /// EC2 instances registered as container instances of their cluster.
    #[serde(default)]
    pub hosts: Vec<HostSpec>,
    /// `(port, path)` every host answers metrics on (a node exporter's).
    #[serde(default)]
    pub host_serves: Vec<(u16, String)>,
    pub namespaces: Vec<NamespaceSpec>,
    pub services: Vec<ServiceSpec>,
}

/// An EC2 instance in an ECS cluster.
#[derive(Debug, Clone, Deserialize)]
pub struct HostSpec {
    /// Its `Name` tag.
    #[serde(default)]
    pub name: Option<String>,
    pub cluster: String,
    /// Its private IPv4 address.
    pub ip: String,
}

/// How ECS runs a service's tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum LaunchType {
    /// On the container instances (EC2 hosts) of the cluster.
    Ec2,
    Fargate,
}

impl LaunchType {
    fn ecs(self) -> EcsLaunchType {
        match self {
            LaunchType::Ec2 => EcsLaunchType::Ec2,
            LaunchType::Fargate => EcsLaunchType::Fargate,
        }
    }
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
    /// Tasks run in ECS with this launch type (the cluster's hosts must exist for
    /// EC2); none: registered in Cloud Map only, under made-up task ids.
    #[serde(default)]
    pub launch_type: Option<LaunchType>,
    /// `(IPv4, AWS_INSTANCE_PORT)` of each task.
    pub tasks: Vec<(String, u16)>,
    /// `(port, path)` each task answers metrics on, and every `spare` address too;
    /// none: the tasks are real processes, not stand-ins.
    #[serde(default)]
    pub serves: Option<Vec<(u16, String)>>,
    /// Addresses of tasks not registered yet, answering as the tasks do: where a
    /// task added later (churn) is found.
    #[serde(default)]
    pub spare: Vec<String>,
    /// The targets the sidecar should write for it.
    pub expected_targets: usize,
    /// What the service shows, in a few words.
    pub note: String,
    /// What is broken in it on purpose (a target it serves nothing on), if anything.
    #[serde(default)]
    pub broken: Option<String>,
}

/// What was seeded, as the demo's checks read it.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub endpoint: String,
    /// The endpoint the sidecar is to use when it is not `endpoint` (the harness's
    /// proxy in front of moto, while the `seed` process that runs it lives).
    pub aws_endpoint: Option<String>,
    pub region: String,
    pub hosts: Vec<SeededHost>,
    pub host_serves: Vec<(u16, String)>,
    pub namespaces: BTreeMap<String, String>,
    pub services: Vec<SeededService>,
    pub expected_targets: usize,
    /// The services that should have targets, sorted.
    pub expected_services: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SeededHost {
    pub instance_id: String,
    pub name: Option<String>,
    pub cluster: String,
    pub ip: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SeededService {
    pub namespace: String,
    pub service: String,
    pub service_id: String,
    pub cluster: String,
    pub launch_type: Option<LaunchType>,
    pub tags: BTreeMap<String, String>,
    pub tasks: Vec<SeededTask>,
    pub serves: Option<Vec<(u16, String)>>,
    pub spare: Vec<String>,
    pub expected_targets: usize,
    pub note: String,
    pub broken: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SeededTask {
    pub id: String,
    pub ip: String,
    pub port: u16,
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
    let family = spec.family_name();
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

    /// Creates everything at `endpoint` (through `seeder`); what was made.
    pub async fn seed(&self, seeder: &Seeder, endpoint: &str, ids: &mut TaskIds) -> Summary {
        let hosts = self.seed_hosts(seeder).await;
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
            let ns_id = &namespaces[&spec.namespace];
            services.push(seed_service(seeder, spec, ns_id, ids).await);
        }
        let mut expected_services: Vec<String> = services
            .iter()
            .filter(|s| s.expected_targets > 0)
            .map(|s| s.service.clone())
            .collect();
        expected_services.sort();
        Summary {
            endpoint: endpoint.to_string(),
            aws_endpoint: None,
            region: REGION.to_string(),
            hosts,
            host_serves: self.host_serves.clone(),
            namespaces,
            expected_targets: services.iter().map(|s| s.expected_targets).sum(),
            expected_services,
            services,
        }
    }

    /// The clusters the hosts and the services name, then the hosts, each a
    /// container instance of its cluster.
    async fn seed_hosts(&self, seeder: &Seeder) -> Vec<SeededHost> {
        let clusters: BTreeSet<&str> = self
            .hosts
            .iter()
            .map(|h| h.cluster.as_str())
            .chain(
                self.services
                    .iter()
                    .filter(|s| s.launch_type.is_some())
                    .map(|s| s.cluster.as_str()),
            )
            .collect();
        for c in clusters {
            seeder.cluster(c).await;
        }
        let mut hosts = Vec::new();
        for h in &self.hosts {
            let instance_id = seeder.host_at(h.name.as_deref(), &h.ip).await;
            seeder.container_instance(&h.cluster, &instance_id).await;
            hosts.push(SeededHost {
                instance_id,
                name: h.name.clone(),
                cluster: h.cluster.clone(),
                ip: h.ip.clone(),
            });
        }
        hosts
    }
}

/// One service: its tasks run in ECS (or given made-up ids) and registered in
/// Cloud Map as ECS does.
async fn seed_service(
    seeder: &Seeder,
    spec: &ServiceSpec,
    ns_id: &str,
    ids: &mut TaskIds,
) -> SeededService {
    let tags: Vec<(&str, &str)> = spec
        .tags
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let service_id = seeder.service(ns_id, &spec.name, &tags).await;
    let task_ids = match spec.launch_type {
        Some(lt) => {
            let family = spec.family_name();
            seeder.family(&family).await;
            let n = spec.tasks.len();
            seeder.run_tasks(&spec.cluster, &family, lt.ecs(), n).await
        }
        None => spec.tasks.iter().map(|_| ids.next_id()).collect(),
    };
    let mut tasks = Vec::new();
    for (i, ((ip, port), id)) in spec.tasks.iter().zip(task_ids).enumerate() {
        let attrs = task_attributes(spec, ip, *port, i);
        seeder.instance(&service_id, &id, &attrs).await;
        tasks.push(SeededTask {
            id,
            ip: ip.clone(),
            port: *port,
        });
    }
    SeededService {
        namespace: spec.namespace.clone(),
        service: spec.name.clone(),
        service_id,
        cluster: spec.cluster.clone(),
        launch_type: spec.launch_type,
        tags: spec.tags.clone(),
        tasks,
        serves: spec.serves.clone(),
        spare: spec.spare.clone(),
        expected_targets: spec.expected_targets,
        note: spec.note.clone(),
        broken: spec.broken.clone(),
    }
}

impl ServiceSpec {
    /// The task definition family (default `<name>-task`).
    pub fn family_name(&self) -> String {
        self.family
            .clone()
            .unwrap_or_else(|| format!("{}-task", self.name))
    }
}

impl Summary {
    /// Every metrics endpoint the stand-ins answer on: each served port and path of
    /// each task and spare address, and of each host.
    pub fn endpoints(&self) -> Result<Vec<Endpoint>, String> {
        let mut out = Vec::new();
        let mut add = |ip: &str, port: u16, path: &str, labels: &[(&str, &str)]| {
            let addr: SocketAddr = format!("{ip}:{port}")
                .parse()
                .map_err(|e| format!("{ip}:{port}: {e}"))?;
            let labels = labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            out.push(Endpoint {
                addr,
                path: path.to_string(),
                labels,
            });
            Ok::<(), String>(())
        };
        for s in &self.services {
            let Some(serves) = &s.serves else { continue };
            let tasks = s.tasks.iter().map(|t| (t.ip.as_str(), t.id.as_str()));
            let spare = s.spare.iter().map(|ip| (ip.as_str(), "spare"));
            for (ip, task) in tasks.chain(spare) {
                for (port, path) in serves {
                    add(
                        ip,
                        *port,
                        path,
                        &[("service", &s.service), ("task_id", task)],
                    )?;
                }
            }
        }
        for h in &self.hosts {
            let name = h.name.as_deref().unwrap_or("");
            for (port, path) in &self.host_serves {
                add(
                    &h.ip,
                    *port,
                    path,
                    &[("host", name), ("instance_id", &h.instance_id)],
                )?;
            }
        }
        Ok(out)
    }

    /// A few readable lines.
    pub fn describe(&self) -> String {
        let mut out = format!("seeded {} ({}):\n", self.endpoint, self.region);
        for h in &self.hosts {
            out.push_str(&format!(
                "  EC2 host {} ({}) at {} in cluster {}\n",
                h.instance_id,
                h.name.as_deref().unwrap_or("no Name tag"),
                h.ip,
                h.cluster
            ));
        }
        for s in &self.services {
            let how = match s.launch_type {
                Some(LaunchType::Ec2) => " (ECS, EC2)",
                Some(LaunchType::Fargate) => " (ECS, Fargate)",
                None => "",
            };
            out.push_str(&format!(
                "  {}/{}: {} tasks{how} -> {} targets ({})\n",
                s.namespace,
                s.service,
                s.tasks.len(),
                s.expected_targets,
                s.note
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
        let bad_port = text.replace("${PORT}", "http");
        assert!(Topology::parse(&bad_port, &vars).is_err());
        let mut ids = TaskIds::new(7);
        let a = ids.next_id();
        assert_eq!(a.len(), 32);
        assert_ne!(a, ids.next_id());
        assert_eq!(TaskIds::new(7).next_id(), a);
    }

    #[test]
    fn stand_ins_answer_for_served_tasks_spare_addresses_and_hosts() {
        let task = |id: &str, ip: &str| SeededTask {
            id: id.into(),
            ip: ip.into(),
            port: 8080,
        };
        let service = |name: &str, serves: Option<Vec<(u16, String)>>| SeededService {
            namespace: "apps".into(),
            service: name.into(),
            service_id: format!("srv-{name}"),
            cluster: "c".into(),
            launch_type: Some(LaunchType::Ec2),
            tags: BTreeMap::new(),
            tasks: vec![task(&format!("{name}-1"), "127.9.0.2")],
            serves,
            spare: vec![],
            expected_targets: 1,
            note: String::new(),
            broken: None,
        };
        let mut web = service("web", Some(vec![(9100, "/metrics".into())]));
        web.spare = vec!["127.9.0.100".into()];
        let summary = Summary {
            endpoint: "http://127.0.0.1:5000".into(),
            aws_endpoint: None,
            region: REGION.into(),
            hosts: vec![SeededHost {
                instance_id: "i-1".into(),
                name: Some("h1".into()),
                cluster: "c".into(),
                ip: "127.9.0.201".into(),
            }],
            host_serves: vec![(9101, "/metrics".into())],
            namespaces: BTreeMap::new(),
            // A service of real processes (serves: None) gets no stand-in.
            services: vec![web, service("real", None)],
            expected_targets: 2,
            expected_services: vec![],
        };
        let got: Vec<(String, String, String)> = summary
            .endpoints()
            .unwrap()
            .into_iter()
            .map(|e| {
                let who = e.labels.get("task_id").or(e.labels.get("host")).cloned();
                (e.addr.to_string(), e.path, who.unwrap_or_default())
            })
            .collect();
        let want = [
            ("127.9.0.2:9100", "/metrics", "web-1"),
            ("127.9.0.100:9100", "/metrics", "spare"),
            ("127.9.0.201:9101", "/metrics", "h1"),
        ];
        let want: Vec<(String, String, String)> = want
            .iter()
            .map(|(a, p, w)| (a.to_string(), p.to_string(), w.to_string()))
            .collect();
        assert_eq!(got, want);
    }
}
