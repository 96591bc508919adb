# A Cloud Map service that ECS registers an application's tasks in, tagged so that
# cloudmap-sd scrapes them. Use the service_registry output in the application's
# aws_ecs_service.
#
# With service_connect = true (ECS Service Connect creates and owns the Cloud Map
# service, and its tags cannot be set), nothing is created: put the ecs_service_tags
# output on the application's aws_ecs_service, and cloudmap-sd reads them there.

locals {
  endpoint_tags = merge(
    { METRICS_PATH = var.metrics_path },
    var.metrics_port == null ? {} : { METRICS_PORT = tostring(var.metrics_port) },
    var.metrics_scheme == null ? {} : { METRICS_SCHEME = var.metrics_scheme },
    var.metrics_container == null ? {} : { METRICS_CONTAINER = var.metrics_container },
    { for k, v in var.extra_endpoints : "METRICS_PATH_${k}" => v.path },
    { for k, v in var.extra_endpoints : "METRICS_PORT_${k}" => tostring(v.port) if v.port != null },
    { for k, v in var.extra_endpoints : "METRICS_CONTAINER_${k}" => v.container if v.container != null },
  )

  metrics_tags = var.prometheus_enabled ? local.endpoint_tags : {}
}

resource "aws_service_discovery_service" "this" {
  count = var.service_connect ? 0 : 1

  name          = var.name
  namespace_id  = var.namespace_id
  description   = var.description
  force_destroy = var.force_destroy
  tags          = merge(var.tags, local.metrics_tags)

  dynamic "dns_config" {
    for_each = var.dns_record_type == null ? [] : [1]
    content {
      namespace_id   = var.namespace_id
      routing_policy = "MULTIVALUE"

      dns_records {
        type = var.dns_record_type
        ttl  = var.dns_ttl
      }
    }
  }

  dynamic "health_check_custom_config" {
    for_each = var.custom_health_check ? [1] : []
    content {}
  }

  lifecycle {
    precondition {
      condition     = var.dns_record_type != "SRV" || (var.container_name != null && var.container_port != null)
      error_message = "SRV records need container_name and container_port."
    }

    precondition {
      condition     = var.name != null && var.namespace_id != null
      error_message = "name and namespace_id are needed for the Cloud Map service (not with service_connect = true)."
    }
  }
}
