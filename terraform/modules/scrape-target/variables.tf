variable "name" {
  description = "Name of the Cloud Map service (for DNS namespaces also the DNS label: NAME.NAMESPACE). Required unless service_connect."
  type        = string
  default     = null
}

variable "namespace_id" {
  description = "ID of the Cloud Map namespace (HTTP, private DNS or public DNS) that the service belongs to. Required unless service_connect."
  type        = string
  default     = null
}

variable "service_connect" {
  description = "The application uses ECS Service Connect, which creates and owns its Cloud Map service (tags cannot be set on it): create nothing, and give the tags as the ecs_service_tags output for the application's aws_ecs_service. cloudmap-sd (CLOUDMAP_SD_ECS_SERVICE_TAGS, on by default) reads them from the ECS service its instances name. The DNS, health check and force_destroy inputs are for the Cloud Map service and do not apply."
  type        = bool
  default     = false
}

variable "description" {
  description = "Description of the Cloud Map service."
  type        = string
  default     = null
}

variable "prometheus_enabled" {
  description = "The switch: true tags the service so cloudmap-sd turns its instances into scrape targets; false removes the tags (the service and its registrations stay)."
  type        = bool
  default     = true
}

variable "metrics_path" {
  description = "HTTP path of the metrics endpoint (METRICS_PATH tag)."
  type        = string
  default     = "/metrics"

  validation {
    condition     = startswith(var.metrics_path, "/")
    error_message = "metrics_path must start with '/'."
  }
}

variable "metrics_port" {
  description = "Port of the metrics endpoint (METRICS_PORT tag). null: the port ECS registers (AWS_INSTANCE_PORT, SRV records only)."
  type        = number
  default     = null

  validation {
    condition     = var.metrics_port == null || try(var.metrics_port >= 1 && var.metrics_port <= 65535 && floor(var.metrics_port) == var.metrics_port, false)
    error_message = "metrics_port must be null or a port number 1-65535."
  }
}

variable "metrics_scheme" {
  description = "http or https (METRICS_SCHEME tag). null: http."
  type        = string
  default     = null

  validation {
    condition     = var.metrics_scheme == null || contains(["http", "https"], coalesce(var.metrics_scheme, "http"))
    error_message = "metrics_scheme must be null, http or https."
  }
}

variable "metrics_container" {
  description = "Container whose port mapping metrics_port names (METRICS_CONTAINER tag), for bridge or host network mode when several containers of the task map that port. null: the one container that maps it."
  type        = string
  default     = null

  validation {
    condition     = var.metrics_container == null || try(length(trimspace(var.metrics_container)) > 0, false)
    error_message = "metrics_container must be null or a container name."
  }
}

variable "extra_endpoints" {
  description = "More metrics endpoints per task, by name: METRICS_PATH_<name>, METRICS_PORT_<name> and METRICS_CONTAINER_<name> tags (e.g. an exporter sidecar; container as metrics_container)."
  type = map(object({
    path      = string
    port      = optional(number)
    container = optional(string)
  }))
  default = {}

  validation {
    condition = alltrue([for k, v in var.extra_endpoints :
      can(regex("^[A-Za-z0-9_-]+$", k)) && startswith(v.path, "/") &&
    (v.port == null || try(v.port >= 1 && v.port <= 65535, false))])
    error_message = "extra_endpoints: names of letters, digits, '_' or '-'; paths starting with '/'; ports 1-65535."
  }
}

variable "dns_record_type" {
  description = "DNS record type for DNS namespaces: A (awsvpc tasks) or SRV (bridge/host networking; then give container_name and container_port). null for an HTTP namespace."
  type        = string
  default     = null

  validation {
    condition     = var.dns_record_type == null || contains(["A", "SRV"], coalesce(var.dns_record_type, "A"))
    error_message = "dns_record_type must be null, A or SRV."
  }
}

variable "dns_ttl" {
  description = "TTL of the DNS records, in seconds."
  type        = number
  default     = 10
}

variable "container_name" {
  description = "Container that ECS registers (needed with SRV records)."
  type        = string
  default     = null
}

variable "container_port" {
  description = "Container port that ECS registers (needed with SRV records)."
  type        = number
  default     = null
}

variable "custom_health_check" {
  description = "Add a custom health check config, so ECS reports task health to Cloud Map (then cloudmap-sd can skip unhealthy tasks)."
  type        = bool
  default     = false
}

variable "force_destroy" {
  description = "Delete the service on destroy even when instances are still registered."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Other tags of the Cloud Map service (the METRICS_* tags are added to these)."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for k in keys(var.tags) : !startswith(k, "METRICS_") && !startswith(k, "ECS_METRICS_")])
    error_message = "tags must not contain METRICS_* keys: use metrics_path, metrics_port, metrics_scheme and extra_endpoints."
  }
}
