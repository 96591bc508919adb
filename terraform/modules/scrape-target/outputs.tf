output "service_id" {
  description = "ID of the Cloud Map service (null with service_connect: ECS creates it)."
  value       = one(aws_service_discovery_service.this[*].id)
}

output "service_arn" {
  description = "ARN of the Cloud Map service (the registry_arn of an ECS service registry; null with service_connect)."
  value       = one(aws_service_discovery_service.this[*].arn)
}

output "service_name" {
  description = "Name of the Cloud Map service (null with service_connect)."
  value       = one(aws_service_discovery_service.this[*].name)
}

output "metrics_tags" {
  description = "The METRICS_* tags (empty when prometheus_enabled is false): on the Cloud Map service, or, with service_connect, for the ECS service (ecs_service_tags)."
  value       = local.metrics_tags
}

output "ecs_service_tags" {
  description = "With service_connect: the tags to merge into the application's aws_ecs_service tags, where cloudmap-sd reads them (empty otherwise, and when prometheus_enabled is false)."
  value       = var.service_connect ? local.metrics_tags : {}
}

output "service_registry" {
  description = "Arguments for the service_registries block of the application's aws_ecs_service (null with service_connect)."
  value = var.service_connect ? null : {
    registry_arn   = aws_service_discovery_service.this[0].arn
    container_name = var.dns_record_type == "SRV" ? var.container_name : null
    container_port = var.dns_record_type == "SRV" ? var.container_port : null
  }
}
