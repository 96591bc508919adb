output "service_id" {
  description = "ID of the Cloud Map service."
  value       = aws_service_discovery_service.this.id
}

output "service_arn" {
  description = "ARN of the Cloud Map service (the registry_arn of an ECS service registry)."
  value       = aws_service_discovery_service.this.arn
}

output "service_name" {
  description = "Name of the Cloud Map service."
  value       = aws_service_discovery_service.this.name
}

output "metrics_tags" {
  description = "The METRICS_* tags set on the service (empty when prometheus_enabled is false)."
  value       = local.metrics_tags
}

output "service_registry" {
  description = "Arguments for the service_registries block of the application's aws_ecs_service."
  value = {
    registry_arn   = aws_service_discovery_service.this.arn
    container_name = var.dns_record_type == "SRV" ? var.container_name : null
    container_port = var.dns_record_type == "SRV" ? var.container_port : null
  }
}
