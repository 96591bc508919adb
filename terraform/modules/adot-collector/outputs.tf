output "service_name" {
  description = "Name of the ECS service."
  value       = aws_ecs_service.this.name
}

output "task_definition_arn" {
  description = "ARN (with revision) of the task definition."
  value       = aws_ecs_task_definition.this.arn
}

output "task_role_name" {
  description = "Name of the task role (aps:RemoteWrite on the workspace)."
  value       = aws_iam_role.task.name
}

output "execution_role_name" {
  description = "Name of the execution role (logs, the token)."
  value       = aws_iam_role.execution.name
}

output "sd_url" {
  description = "The URL the collector reads its targets from, with its shard."
  value       = local.sd_url
}

output "collector_config" {
  description = "The collector's configuration (AOT_CONFIG_CONTENT); the token appears only as $${env:CLOUDMAP_SD_TOKEN}."
  value       = local.collector_config
}

output "remote_write_url" {
  description = "The AMP remote_write URL the collector sends to."
  value       = local.remote_write_url
}
