//! The Amazon ECS adapter: DescribeTasks and DescribeContainerInstances, batched, and
//! ListContainerInstances, paginated.

use std::sync::Arc;

use aws_sdk_ecs::Client;

use super::{AwsError, BATCH, Call, Ecs, ErrorKind, TaskFacts, next_page};
use crate::metrics::Metrics;

/// ECS through the SDK; counts every call in `metrics`.
#[derive(Clone)]
pub struct SdkEcs {
    client: Client,
    metrics: Arc<Metrics>,
}

impl SdkEcs {
    pub fn new(client: Client, metrics: Arc<Metrics>) -> Self {
        SdkEcs { client, metrics }
    }
}

/// The last `/`-separated part of an ARN (a task id from a task ARN).
pub fn arn_id(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

/// The revision from a task definition ARN (`...:task-definition/family:7`).
fn revision(task_definition_arn: &str) -> Option<String> {
    let (_, rev) = task_definition_arn.rsplit_once(':')?;
    rev.bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| rev.to_string())
}

impl Ecs for SdkEcs {
    async fn tasks(&self, cluster: &str, task_ids: &[String]) -> Result<Vec<TaskFacts>, AwsError> {
        const OP: &str = "DescribeTasks";
        let mut out = Vec::with_capacity(task_ids.len());
        for chunk in task_ids.chunks(BATCH) {
            let call = Call::start(&self.metrics, OP);
            let r = self
                .client
                .describe_tasks()
                .cluster(cluster)
                .set_tasks(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| AwsError::from_sdk(OP, e));
            let page = call.end(r)?;
            for t in page.tasks() {
                let Some(arn) = t.task_arn() else { continue };
                out.push(TaskFacts {
                    task_id: arn_id(arn).to_string(),
                    launch_type: t.launch_type().map(|l| l.as_str().to_string()),
                    revision: t.task_definition_arn().and_then(revision),
                    container_instance_arn: t.container_instance_arn().map(str::to_string),
                });
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
            let call = Call::start(&self.metrics, OP);
            let r = self
                .client
                .describe_container_instances()
                .cluster(cluster)
                .set_container_instances(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| AwsError::from_sdk(OP, e));
            let page = call.end(r)?;
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
