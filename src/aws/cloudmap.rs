//! The AWS Cloud Map adapter over the AWS SDK for Rust.

use std::collections::BTreeMap;
use std::sync::Arc;

use aws_sdk_servicediscovery::Client;
use aws_sdk_servicediscovery::types::HealthStatusFilter;

use super::calls::{InFlight, counted, next_page};
use super::{AwsError, AwsMetrics, CloudMap, ErrorKind, Namespace, ServicePage, ServiceSummary};
use crate::model::{HealthStatus, Instance};

/// Largest page ListNamespaces / ListServices accept.
const LIST_PAGE: i32 = 100;
/// DiscoverInstances has no pagination; 1000 is both its MaxResults limit and the
/// Cloud Map quota of instances per service.
const DISCOVER_MAX: i32 = 1000;

/// Cloud Map through the SDK; counts every call in `metrics`.
#[derive(Clone)]
pub struct SdkCloudMap {
    client: Client,
    metrics: Arc<AwsMetrics>,
}

impl SdkCloudMap {
    pub fn new(client: Client, metrics: Arc<AwsMetrics>) -> Self {
        SdkCloudMap { client, metrics }
    }
}

fn missing(op: &'static str, what: &str) -> AwsError {
    AwsError::new(op, ErrorKind::Server, format!("response without {what}"))
}

impl CloudMap for SdkCloudMap {
    async fn namespaces(&self) -> Result<Vec<Namespace>, AwsError> {
        const OP: &str = "ListNamespaces";
        let mut pages = self
            .client
            .list_namespaces()
            .max_results(LIST_PAGE)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = next_page(&self.metrics, OP, pages.next()).await {
            let page = page?;
            for ns in page.namespaces() {
                let (Some(id), Some(name)) = (ns.id(), ns.name()) else {
                    return Err(missing(OP, "namespace id or name"));
                };
                out.push(Namespace {
                    id: id.to_string(),
                    name: name.to_string(),
                });
            }
        }
        Ok(out)
    }

    async fn services_page(&self, token: Option<String>) -> Result<ServicePage, AwsError> {
        const OP: &str = "ListServices";
        let request = self
            .client
            .list_services()
            .max_results(LIST_PAGE)
            .set_next_token(token)
            .send();
        let page = counted(&self.metrics, OP, request).await?;
        let mut out = Vec::new();
        for s in page.services() {
            let (Some(id), Some(arn), Some(name)) = (s.id(), s.arn(), s.name()) else {
                return Err(missing(OP, "service id, ARN or name"));
            };
            out.push(ServiceSummary {
                id: id.to_string(),
                arn: arn.to_string(),
                name: name.to_string(),
                owner: s.resource_owner().map(str::to_string),
            });
        }
        Ok(ServicePage {
            services: out,
            next: page
                .next_token()
                .filter(|t| !t.is_empty())
                .map(str::to_string),
        })
    }

    async fn service_namespace(&self, service_id: &str) -> Result<String, AwsError> {
        const OP: &str = "GetService";
        let call = InFlight::start(&self.metrics, OP);
        let r = self
            .client
            .get_service()
            .id(service_id)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk(OP, e))
            .and_then(|o| {
                o.service()
                    .and_then(|s| s.namespace_id())
                    .map(str::to_string)
                    .ok_or_else(|| missing(OP, "namespace id"))
            });
        call.end(r)
    }

    async fn tags(&self, service_arn: &str) -> Result<BTreeMap<String, String>, AwsError> {
        const OP: &str = "ListTagsForResource";
        let call = InFlight::start(&self.metrics, OP);
        let r = self
            .client
            .list_tags_for_resource()
            .resource_arn(service_arn)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk(OP, e))
            .map(|o| {
                o.tags()
                    .iter()
                    .map(|t| (t.key().to_string(), t.value().to_string()))
                    .collect()
            });
        call.end(r)
    }

    async fn instances_revision(
        &self,
        namespace: &str,
        service: &str,
        owner: Option<&str>,
    ) -> Result<i64, AwsError> {
        const OP: &str = "DiscoverInstancesRevision";
        let call = InFlight::start(&self.metrics, OP);
        let r = self
            .client
            .discover_instances_revision()
            .namespace_name(namespace)
            .service_name(service)
            .set_owner_account(owner.map(str::to_string))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk(OP, e))
            .and_then(|o| {
                o.instances_revision()
                    .ok_or_else(|| missing(OP, "InstancesRevision"))
            });
        call.end(r)
    }

    async fn instances(
        &self,
        namespace: &str,
        service: &str,
        owner: Option<&str>,
        health: HealthStatus,
    ) -> Result<Vec<Instance>, AwsError> {
        const OP: &str = "DiscoverInstances";
        let filter = match health {
            HealthStatus::Healthy => HealthStatusFilter::Healthy,
            HealthStatus::Unhealthy => HealthStatusFilter::Unhealthy,
            HealthStatus::All => HealthStatusFilter::All,
            HealthStatus::HealthyOrElseAll => HealthStatusFilter::HealthyOrElseAll,
        };
        let call = InFlight::start(&self.metrics, OP);
        let r = self
            .client
            .discover_instances()
            .namespace_name(namespace)
            .service_name(service)
            .set_owner_account(owner.map(str::to_string))
            .max_results(DISCOVER_MAX)
            .health_status(filter)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk(OP, e))
            .map(|o| {
                o.instances()
                    .iter()
                    .filter_map(|i| {
                        Some(Instance {
                            id: i.instance_id()?.to_string(),
                            attributes: i
                                .attributes()
                                .map(|a| a.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                                .unwrap_or_default(),
                        })
                    })
                    .collect()
            });
        call.end(r)
    }
}
