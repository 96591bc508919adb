output "cluster_arn" {
  description = "ARN of the ECS cluster."
  value       = aws_ecs_cluster.this.arn
}

output "workspace_id" {
  description = "AMP workspace that Prometheus writes to."
  value       = module.prometheus.workspace_id
}

output "workspace_prometheus_endpoint" {
  description = "Query endpoint of the workspace."
  value       = module.prometheus.workspace_prometheus_endpoint
}

output "task_definition_arn" {
  description = "Prometheus + cloudmap-sd task definition."
  value       = module.prometheus.task_definition_arn
}

output "task_role_arn" {
  description = "Task role of Prometheus + cloudmap-sd."
  value       = module.prometheus.task_role_arn
}

output "log_group_names" {
  description = "Log groups of Prometheus and cloudmap-sd."
  value       = module.prometheus.log_group_names
}

output "app_cloudmap_service_arn" {
  description = "Cloud Map service of the demo application, tagged for scraping."
  value       = module.app_metrics.service_arn
}
