//! Where moto's ECS answers differ from AWS's, the proxy rewrites them as AWS
//! answers (checked with moto 5.1.6):
//!
//! - a task's container `cpu` / `memory` / `memoryReservation` are JSON numbers in
//!   moto and strings in the ECS API (the Rust SDK rejects the numbers);
//! - DescribeTasks lists only a task's first container, and never fills
//!   `networkBindings`: the proxy lists every container of the task definition and
//!   binds ports as ECS does from its `portMappings` (see [`Emulation::bind`]);
//! - DescribeServices takes any number of services, where AWS refuses more than
//!   10 in one call ([`over_describe_services_limit`]).

use std::collections::HashMap;

use hyper::body::Bytes;
use serde_json::{Value, json};

/// The first and last port of the range ECS gives dynamic host ports from on
/// Linux container instances (when the kernel's own range is not set).
pub const EPHEMERAL_PORTS: (u64, u64) = (49153, 65535);

/// Most services one DescribeServices call takes in AWS.
const DESCRIBE_SERVICES_LIMIT: usize = 10;

/// What the ECS rewrites remember across requests.
#[derive(Debug)]
pub(super) struct Emulation {
    /// Task definitions by ARN, as moto's DescribeTaskDefinition gives them (a
    /// registered revision never changes).
    task_definitions: HashMap<String, Value>,
    /// Host ports given to dynamic mappings: (task ARN, container, container port).
    host_ports: HashMap<(String, String, u64), u64>,
    next_port: u64,
}

impl Default for Emulation {
    fn default() -> Self {
        Emulation {
            task_definitions: HashMap::new(),
            host_ports: HashMap::new(),
            next_port: EPHEMERAL_PORTS.0,
        }
    }
}

/// The task definition ARNs of a DescribeTasks answer that `emu` does not know.
pub(super) fn unknown_task_definitions(answer: &Value, emu: &Emulation) -> Vec<String> {
    let mut arns: Vec<String> = tasks(answer)
        .filter_map(|t| t["taskDefinitionArn"].as_str())
        .filter(|arn| !emu.task_definitions.contains_key(*arn))
        .map(str::to_string)
        .collect();
    arns.sort();
    arns.dedup();
    arns
}

fn tasks(answer: &Value) -> impl Iterator<Item = &Value> {
    answer["tasks"].as_array().into_iter().flatten()
}

impl Emulation {
    /// Keeps a DescribeTaskDefinition answer.
    pub(super) fn learn_task_definition(&mut self, arn: String, answer: &Value) {
        if answer["taskDefinition"].is_object() {
            self.task_definitions
                .insert(arn, answer["taskDefinition"].clone());
        }
    }

    /// Lists every container of each task's definition and adds the
    /// `networkBindings` ECS would report, as ECS binds them.
    pub(super) fn add_containers_and_bindings(&mut self, answer: &mut Value) {
        let Some(tasks) = answer["tasks"].as_array_mut() else {
            return;
        };
        for task in tasks {
            let arn = task["taskArn"].as_str().unwrap_or_default().to_string();
            let Some(def) = task["taskDefinitionArn"]
                .as_str()
                .and_then(|d| self.task_definitions.get(d))
                .cloned()
            else {
                continue;
            };
            let mode = def["networkMode"].as_str().unwrap_or("bridge").to_string();
            let Some(listed) = task["containers"].as_array().cloned() else {
                continue;
            };
            let Some(template) = listed.first().cloned() else {
                continue;
            };
            let mut containers = Vec::new();
            for cdef in def["containerDefinitions"].as_array().into_iter().flatten() {
                let name = cdef["name"].as_str().unwrap_or_default();
                let mut c = listed
                    .iter()
                    .find(|c| c["name"] == name)
                    .cloned()
                    .unwrap_or_else(|| {
                        let mut c = template.clone();
                        c["name"] = json!(name);
                        c["image"] = cdef["image"].clone();
                        let first = template["containerArn"].as_str().unwrap_or_default();
                        c["containerArn"] = json!(format!("{first}-{name}"));
                        c
                    });
                c["networkBindings"] = json!(self.bind(&arn, &mode, cdef));
                containers.push(c);
            }
            task["containers"] = json!(containers);
        }
    }

    /// The bindings ECS reports for one container: in `bridge` mode a mapping
    /// without `hostPort` (or with 0) gets a port from the ephemeral range, kept
    /// for the task's life, and a static one keeps its port; in `host` mode the
    /// container port is bound on the host; `awsvpc` and `none` bind nothing.
    fn bind(&mut self, task: &str, mode: &str, cdef: &Value) -> Vec<Value> {
        let mut out = Vec::new();
        if mode != "bridge" && mode != "host" {
            return out;
        }
        let name = cdef["name"].as_str().unwrap_or_default();
        for m in cdef["portMappings"].as_array().into_iter().flatten() {
            let Some(container_port) = m["containerPort"].as_u64() else {
                continue;
            };
            let host_port = match (mode, m["hostPort"].as_u64()) {
                ("host", _) => container_port,
                (_, Some(p)) if p != 0 => p,
                _ => self.dynamic_port(task, name, container_port),
            };
            out.push(json!({
                "bindIP": "0.0.0.0",
                "containerPort": container_port,
                "hostPort": host_port,
                "protocol": m["protocol"].as_str().unwrap_or("tcp"),
            }));
        }
        out
    }

    fn dynamic_port(&mut self, task: &str, container: &str, port: u64) -> u64 {
        let key = (task.to_string(), container.to_string(), port);
        *self.host_ports.entry(key).or_insert_with(|| {
            let p = self.next_port;
            assert!(
                p <= EPHEMERAL_PORTS.1,
                "test proxy: ephemeral ports used up"
            );
            self.next_port += 1;
            p
        })
    }
}

/// A DescribeServices request naming more services than AWS takes in one call.
pub(super) fn over_describe_services_limit(body: &[u8]) -> bool {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["services"].as_array().map(Vec::len))
        .is_some_and(|n| n > DESCRIBE_SERVICES_LIMIT)
}

/// moto writes a task's container `cpu` / `memory` as JSON numbers where the ECS
/// API has strings; the Rust SDK rejects that. Rewrite them as AWS sends them.
pub(super) fn fix_number_fields(body: Bytes) -> Bytes {
    fn walk(v: &mut Value, in_containers: bool) {
        match v {
            Value::Array(a) => a.iter_mut().for_each(|x| walk(x, in_containers)),
            Value::Object(o) => {
                for (k, x) in o.iter_mut() {
                    if in_containers
                        && matches!(k.as_str(), "cpu" | "memory" | "memoryReservation")
                        && x.is_number()
                    {
                        *x = Value::String(x.to_string());
                    } else {
                        walk(x, k == "containers");
                    }
                }
            }
            _ => {}
        }
    }
    match serde_json::from_slice::<Value>(&body) {
        Ok(mut v) => {
            walk(&mut v, false);
            Bytes::from(serde_json::to_vec(&v).unwrap())
        }
        Err(_) => body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_bound_as_ecs_binds_them() {
        let mut emu = Emulation::default();
        let def = json!({
            "taskDefinitionArn": "td:1",
            "networkMode": "bridge",
            "containerDefinitions": [
                {"name": "app", "image": "a", "portMappings": [{"containerPort": 8080, "hostPort": 8080}]},
                {"name": "exporter", "image": "e", "portMappings": [{"containerPort": 9100}, {"containerPort": 9200, "hostPort": 0}]},
            ],
        });
        emu.learn_task_definition("td:1".into(), &json!({"taskDefinition": def}));
        let task = |arn: &str| {
            json!({"taskArn": arn, "taskDefinitionArn": "td:1",
                   "containers": [{"name": "app", "containerArn": "c1", "image": "a"}]})
        };
        let mut answer = json!({"tasks": [task("t1"), task("t2")]});
        assert!(unknown_task_definitions(&answer, &emu).is_empty());
        emu.add_containers_and_bindings(&mut answer);
        let ports = |t: usize, c: usize| -> Vec<(u64, u64)> {
            answer["tasks"][t]["containers"][c]["networkBindings"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| {
                    (
                        b["containerPort"].as_u64().unwrap(),
                        b["hostPort"].as_u64().unwrap(),
                    )
                })
                .collect()
        };
        assert_eq!(ports(0, 0), vec![(8080, 8080)]);
        assert_eq!(ports(0, 1), vec![(9100, 49153), (9200, 49154)]);
        assert_eq!(ports(1, 1), vec![(9100, 49155), (9200, 49156)]);
        assert_eq!(answer["tasks"][0]["containers"][1]["name"], "exporter");
        // Asked again, a task keeps its ports.
        let mut again = json!({"tasks": [task("t1")]});
        emu.add_containers_and_bindings(&mut again);
        assert_eq!(
            again["tasks"][0]["containers"][1]["networkBindings"][0]["hostPort"],
            49153
        );

        for (mode, want) in [("host", vec![json!(9100)]), ("awsvpc", vec![])] {
            let mut def = def.clone();
            def["networkMode"] = json!(mode);
            emu.learn_task_definition("td:2".into(), &json!({"taskDefinition": def}));
            let mut a = json!({"tasks": [{"taskArn": "t3", "taskDefinitionArn": "td:2",
                "containers": [{"name": "app"}]}]});
            emu.add_containers_and_bindings(&mut a);
            let got: Vec<Value> = a["tasks"][0]["containers"][1]["networkBindings"]
                .as_array()
                .unwrap()
                .iter()
                .take(1)
                .map(|b| b["hostPort"].clone())
                .collect();
            assert_eq!(got, want, "{mode}");
        }
    }

    #[test]
    fn describe_services_takes_ten() {
        let names = |n: usize| {
            let v: Vec<String> = (0..n).map(|i| format!("s{i}")).collect();
            serde_json::to_vec(&json!({"cluster": "c", "services": v})).unwrap()
        };
        assert!(!over_describe_services_limit(&names(10)));
        assert!(over_describe_services_limit(&names(11)));
    }
}
