output "task_definition_arn" {
  description = "ARN (with revision) of the Prometheus + cloudmap-sd task definition."
  value       = aws_ecs_task_definition.this[0].arn
}

output "task_definition_family" {
  description = "Family of the task definition."
  value       = aws_ecs_task_definition.this[0].family
}

output "task_definition_revision" {
  description = "Revision of the task definition."
  value       = aws_ecs_task_definition.this[0].revision
}

output "container_names" {
  description = "Names of the init, sidecar and Prometheus containers."
  value       = local.container_names
}

output "service_name" {
  description = "Name of the ECS service (null when create_service is false)."
  value       = try(aws_ecs_service.this[0].name, null)
}

output "service_id" {
  description = "ID (ARN) of the ECS service (null when create_service is false)."
  value       = try(aws_ecs_service.this[0].id, null)
}

output "task_role_arn" {
  description = "ARN of the task role (Cloud Map, ECS/EC2 reads, aps:RemoteWrite)."
  value       = aws_iam_role.task.arn
}

output "task_role_name" {
  description = "Name of the task role, to attach more policies to."
  value       = aws_iam_role.task.name
}

output "execution_role_arn" {
  description = "ARN of the task execution role (logs, ECR pulls)."
  value       = aws_iam_role.execution.arn
}

output "execution_role_name" {
  description = "Name of the task execution role."
  value       = aws_iam_role.execution.name
}

output "workspace_id" {
  description = "ID of the AMP workspace written to (created or given)."
  value       = local.workspace_id
}

output "workspace_arn" {
  description = "ARN of the AMP workspace."
  value       = local.workspace_arn
}

output "workspace_prometheus_endpoint" {
  description = "Query endpoint of the AMP workspace (for Grafana and awscurl)."
  value       = "https://aps-workspaces.${local.region}.${local.dns_suffix}/workspaces/${local.workspace_id}/"
}

output "remote_write_url" {
  description = "remote_write URL that Prometheus uses."
  value       = local.remote_write_url
}

output "log_group_names" {
  description = "CloudWatch log groups: prometheus (also the init container) and cloudmap-sd."
  value = {
    prometheus  = aws_cloudwatch_log_group.prometheus.name
    cloudmap_sd = aws_cloudwatch_log_group.sidecar.name
  }
}

output "prometheus_config" {
  description = "The rendered prometheus.yml, with the placeholder that each task replaces by its own __replica__."
  value       = local.prometheus_config
}

output "replica_placeholder" {
  description = "The string in prometheus_config that the init container replaces with the task ID."
  value       = local.replica_placeholder
}

output "file_sd_path" {
  description = "Path of the file_sd file inside the task."
  value       = local.file_sd_file
}

output "ec2_hosts_file_sd_path" {
  description = "Path of the EC2 hosts file_sd file inside the task (null without ec2_hosts_ports)."
  value       = local.ec2_hosts_enabled ? local.ec2_hosts_file : null
}

output "events_queue_urls" {
  description = "With enable_events: the URL of each replica's event queue, in replica order (empty otherwise)."
  value       = aws_sqs_queue.events[*].url
}

output "events_rule_arn" {
  description = "With enable_events: the ARN of the EventBridge rule that fills the queues (null otherwise)."
  value       = try(aws_cloudwatch_event_rule.events[0].arn, null)
}

output "service_names" {
  description = "Names of the ECS services: one, or with enable_events one per replica."
  value       = aws_ecs_service.this[*].name
}

output "task_definition_arns" {
  description = "ARNs of the task definitions: one, or with enable_events one per replica (replica i reads queue i)."
  value       = aws_ecs_task_definition.this[*].arn
}
