output "service_name" {
  description = "Name of the ECS service."
  value       = aws_ecs_service.this.name
}

output "task_definition_arn" {
  description = "ARN (with revision) of the task definition."
  value       = aws_ecs_task_definition.this.arn
}

output "task_role_name" {
  description = "Name of the task role (Cloud Map, ECS and EC2 reads)."
  value       = aws_iam_role.task.name
}

output "execution_role_name" {
  description = "Name of the execution role (logs, images, the token)."
  value       = aws_iam_role.execution.name
}

output "cloud_map_service_id" {
  description = "ID of the Cloud Map service the tasks register in."
  value       = module.registration.service_id
}

output "dns_name" {
  description = "The name collectors resolve: SERVICE.NAMESPACE."
  value       = local.dns_name
}

output "targets_url" {
  description = "URL of the targets for http_sd_configs (add ?shard=INDEX/COUNT for a share)."
  value       = "${local.base_url}/sd/targets"
}

output "hosts_url" {
  description = "URL of the EC2 hosts list (null without ec2_hosts_ports)."
  value       = local.hosts_on ? "${local.base_url}/sd/hosts" : null
}

output "port" {
  description = "Port of the endpoints; the tasks' security groups must accept it from the collectors."
  value       = var.port
}

output "token_secret_arn" {
  description = "ARN of the bearer token (created or given): give it to the collectors as an ECS secret."
  value       = local.token_secret_arn
}

output "log_group_name" {
  description = "CloudWatch log group of the tasks."
  value       = aws_cloudwatch_log_group.this.name
}
