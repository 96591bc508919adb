//! The Amazon ECS adapter: DescribeTasks, DescribeContainerInstances and
//! DescribeServices, batched, and ListContainerInstances, paginated.

use std::collections::BTreeMap;
use std::sync::Arc;

use aws_sdk_ecs::Client;
use aws_sdk_ecs::types::{Container, ServiceField, TransportProtocol};

use super::calls::{counted, next_page};
use super::{
    AwsError, AwsMetrics, BATCH, Ecs, EcsServices, EcsTask, ErrorKind, SERVICES_BATCH, ServiceTags,
};
use crate::model::PortBinding;

/// ECS through the SDK; counts every call in `metrics`.
#[derive(Clone)]
pub struct SdkEcs {
    client: Client,
    metrics: Arc<AwsMetrics>,
}

impl SdkEcs {
    pub fn new(client: Client, metrics: Arc<AwsMetrics>) -> Self {
        SdkEcs { client, metrics }
    }
}

/// The last `/`-separated part of an ARN (a task id from a task ARN).
pub fn arn_id(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

/// The TCP host ports the containers of a task bind, one per container and
/// container port (ECS may report a port twice, bound on IPv4 and IPv6: the IPv4
/// binding is kept). Bindings of port ranges, which name no single port, are left
/// out.
fn bindings(containers: &[Container]) -> Arc<[PortBinding]> {
    let mut out: BTreeMap<(&str, u16), (u16, bool)> = BTreeMap::new();
    for c in containers {
        let Some(name) = c.name() else { continue };
        for b in c.network_bindings() {
            if b.protocol().is_some_and(|p| *p != TransportProtocol::Tcp) {
                continue;
            }
            let port = |p: Option<i32>| p.and_then(|p| u16::try_from(p).ok()).filter(|p| *p != 0);
            let (Some(container_port), Some(host_port)) =
                (port(b.container_port()), port(b.host_port()))
            else {
                continue;
            };
            let ipv4 = !b.bind_ip().is_some_and(|ip| ip.contains(':'));
            let slot = out
                .entry((name, container_port))
                .or_insert((host_port, ipv4));
            if ipv4 && !slot.1 {
                *slot = (host_port, ipv4);
            }
        }
    }
    out.into_iter()
        .map(
            |((container, container_port), (host_port, _))| PortBinding {
                container: container.into(),
                container_port,
                host_port,
            },
        )
        .collect()
}

/// The revision from a task definition ARN (`...:task-definition/family:7`).
fn revision(task_definition_arn: &str) -> Option<Arc<str>> {
    let (_, rev) = task_definition_arn.rsplit_once(':')?;
    rev.bytes().all(|b| b.is_ascii_digit()).then(|| rev.into())
}

impl Ecs for SdkEcs {
    async fn tasks(
        &self,
        cluster: &str,
        task_ids: &[String],
    ) -> Result<Vec<(String, EcsTask)>, AwsError> {
        const OP: &str = "DescribeTasks";
        let mut out = Vec::with_capacity(task_ids.len());
        for chunk in task_ids.chunks(BATCH) {
            let request = self
                .client
                .describe_tasks()
                .cluster(cluster)
                .set_tasks(Some(chunk.to_vec()))
                .send();
            let page = counted(&self.metrics, OP, request).await?;
            for t in page.tasks() {
                let Some(arn) = t.task_arn() else { continue };
                let task = EcsTask {
                    launch_type: t.launch_type().map(|l| l.as_str().into()),
                    revision: t.task_definition_arn().and_then(revision),
                    container_instance_arn: t.container_instance_arn().map(Into::into),
                    bindings: bindings(t.containers()),
                };
                out.push((arn_id(arn).to_string(), task));
            }
        }
        Ok(out)
    }

    async fn container_instances(
        &self,
        cluster: &str,
        arns: &[String],
    ) -> Result<Vec<(String, String)>, AwsError> {
        const OP: &str = "DescribeContainerInstances";
        let mut out = Vec::with_capacity(arns.len());
        for chunk in arns.chunks(BATCH) {
            let request = self
                .client
                .describe_container_instances()
                .cluster(cluster)
                .set_container_instances(Some(chunk.to_vec()))
                .send();
            let page = counted(&self.metrics, OP, request).await?;
            for ci in page.container_instances() {
                if let (Some(arn), Some(ec2)) = (ci.container_instance_arn(), ci.ec2_instance_id())
                {
                    out.push((arn.to_string(), ec2.to_string()));
                }
            }
        }
        Ok(out)
    }

    async fn list_container_instances(&self, cluster: &str) -> Result<Vec<String>, AwsError> {
        const OP: &str = "ListContainerInstances";
        let mut pages = self
            .client
            .list_container_instances()
            .cluster(cluster)
            .max_results(100)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = next_page(&self.metrics, OP, pages.next()).await {
            match page {
                Ok(page) => out.extend(page.container_instance_arns().iter().cloned()),
                Err(e) if e.kind == ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
}

impl EcsServices for SdkEcs {
    async fn service_tags(
        &self,
        cluster: &str,
        services: &[String],
    ) -> Result<ServiceTags, AwsError> {
        const OP: &str = "DescribeServices";
        let mut out = Vec::with_capacity(services.len());
        for chunk in services.chunks(SERVICES_BATCH) {
            let request = self
                .client
                .describe_services()
                .cluster(cluster)
                .set_services(Some(chunk.to_vec()))
                .include(ServiceField::Tags)
                .send();
            let page = match counted(&self.metrics, OP, request).await {
                Ok(page) => page,
                Err(e) if e.kind == ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(e),
            };
            // A service ECS does not know is in `failures` (MISSING): left out.
            for s in page.services() {
                let Some(name) = s.service_name() else {
                    continue;
                };
                let tags = s
                    .tags()
                    .iter()
                    .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
                    .collect();
                out.push((name.to_string(), tags));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_revisions_from_arns() {
        assert_eq!(
            arn_id("arn:aws:ecs:us-east-1:123:task/prod/0123abcd"),
            "0123abcd"
        );
        assert_eq!(arn_id("0123abcd"), "0123abcd");
        assert_eq!(
            revision("arn:aws:ecs:us-east-1:123:task-definition/web:17").as_deref(),
            Some("17")
        );
        assert_eq!(revision("web"), None);
    }

    #[test]
    fn bindings_keep_tcp_ports_once_per_container_port() {
        use aws_sdk_ecs::types::NetworkBinding;
        let binding = |ip: &str, c: i32, h: i32, p: TransportProtocol| {
            NetworkBinding::builder()
                .bind_ip(ip)
                .container_port(c)
                .host_port(h)
                .protocol(p)
                .build()
        };
        let exporter = Container::builder()
            .name("exporter")
            .network_bindings(binding("::", 9100, 49154, TransportProtocol::Tcp))
            .network_bindings(binding("0.0.0.0", 9100, 49153, TransportProtocol::Tcp))
            .network_bindings(binding("0.0.0.0", 8125, 49160, TransportProtocol::Udp))
            .build();
        let app = Container::builder()
            .name("app")
            .network_bindings(binding("0.0.0.0", 8080, 8080, TransportProtocol::Tcp))
            .network_bindings(
                NetworkBinding::builder()
                    .container_port_range("9000-9009")
                    .build(),
            )
            .build();
        let got = bindings(&[exporter, app]);
        let want: Vec<(&str, u16, u16)> = vec![("app", 8080, 8080), ("exporter", 9100, 49153)];
        let got: Vec<(&str, u16, u16)> = got
            .iter()
            .map(|b| (&*b.container, b.container_port, b.host_port))
            .collect();
        assert_eq!(got, want);
    }
}
