//! The Amazon EC2 adapter: DescribeInstances by id (batched) or by tag (paginated).

use std::sync::Arc;

use aws_sdk_ec2::Client;
use aws_sdk_ec2::operation::describe_instances::builders::DescribeInstancesFluentBuilder;
use aws_sdk_ec2::types::{Filter, Instance};

use super::calls::next_page;
use super::{AwsError, AwsMetrics, BATCH, Ec2};
use crate::model::Host;

/// EC2 through the SDK; counts every call in `metrics`.
#[derive(Clone)]
pub struct SdkEc2 {
    client: Client,
    metrics: Arc<AwsMetrics>,
}

impl SdkEc2 {
    pub fn new(client: Client, metrics: Arc<AwsMetrics>) -> Self {
        SdkEc2 { client, metrics }
    }

    /// Every host a DescribeInstances request returns, all pages, each page counted.
    async fn all_pages(
        &self,
        request: DescribeInstancesFluentBuilder,
    ) -> Result<Vec<Host>, AwsError> {
        const OP: &str = "DescribeInstances";
        let mut pages = request.into_paginator().send();
        let mut out = Vec::new();
        while let Some(page) = next_page(&self.metrics, OP, pages.next()).await {
            let page = page?;
            out.extend(
                page.reservations()
                    .iter()
                    .flat_map(|r| r.instances())
                    .filter_map(host),
            );
        }
        Ok(out)
    }
}

fn host(i: &Instance) -> Option<Host> {
    Some(Host {
        instance_id: i.instance_id()?.to_string(),
        name: i
            .tags()
            .iter()
            .find(|t| t.key() == Some("Name"))
            .and_then(|t| t.value())
            .filter(|v| !v.is_empty())
            .map(str::to_string),
        instance_type: i.instance_type().map(|t| t.as_str().to_string()),
        availability_zone: i
            .placement()
            .and_then(|p| p.availability_zone())
            .map(str::to_string),
        private_ip: i.private_ip_address().map(str::to_string),
        cluster: None,
    })
}

impl Ec2 for SdkEc2 {
    async fn hosts(&self, ids: &[String]) -> Result<Vec<Host>, AwsError> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(BATCH) {
            // A filter rather than InstanceIds: an id that no longer exists is left
            // out instead of failing the whole batch.
            let request = self.client.describe_instances().filters(
                Filter::builder()
                    .name("instance-id")
                    .set_values(Some(chunk.to_vec()))
                    .build(),
            );
            out.extend(self.all_pages(request).await?);
        }
        Ok(out)
    }

    async fn hosts_tagged(&self, key: &str, value: &str) -> Result<Vec<Host>, AwsError> {
        let request = self
            .client
            .describe_instances()
            .filters(
                Filter::builder()
                    .name(format!("tag:{key}"))
                    .values(value)
                    .build(),
            )
            .filters(
                Filter::builder()
                    .name("instance-state-name")
                    .values("running")
                    .build(),
            );
        self.all_pages(request).await
    }
}
