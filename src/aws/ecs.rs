//! The Amazon ECS adapter: DescribeTasks and DescribeContainerInstances, batched, and
//! ListContainerInstances, paginated.

use std::sync::Arc;

use aws_sdk_ecs::Client;

use super::calls::{counted, next_page};
use super::{AwsError, AwsMetrics, BATCH, Ecs, EcsTask, ErrorKind};

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
}
