variable "name" {
  description = "Name of the IAM role to create in this account (the ARN to give the Prometheus module's discovery_role_arns)."
  type        = string
  default     = "cloudmap-sd-discovery"

  validation {
    condition     = can(regex("^[A-Za-z0-9+=,.@_-]{1,64}$", var.name))
    error_message = "name must be 1-64 of A-Z a-z 0-9 + = , . @ _ -."
  }
}

variable "prometheus_task_role_arn" {
  description = "ARN of the task role of the Prometheus deployment that discovers in this account (the Prometheus module's task_role_arn output, in the monitoring account). Only that role may assume this one."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]+$", var.prometheus_task_role_arn))
    error_message = "prometheus_task_role_arn must be an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)."
  }
}

variable "external_id" {
  description = "External id the assuming side must present (sts:ExternalId), the same as the Prometheus module's discovery_role_external_id. null: none asked."
  type        = string
  default     = null

  validation {
    condition     = var.external_id == null ? true : (length(var.external_id) >= 2 && length(var.external_id) <= 1224 && can(regex("^[A-Za-z0-9+=,.@:/_-]+$", var.external_id)))
    error_message = "external_id must be 2-1224 of A-Z a-z 0-9 + = , . @ : / _ -."
  }
}

variable "namespaces" {
  description = "Cloud Map namespace names the Prometheus deployment discovers (its namespaces input): DiscoverInstances is limited to them. Empty: every namespace."
  type        = list(string)
  default     = []
}

variable "enable_ec2_enrichment" {
  description = "Grant ecs:DescribeContainerInstances and ec2:DescribeInstances, for the EC2 host labels (the Prometheus module's enable_ec2_enrichment)."
  type        = bool
  default     = true
}

variable "enable_ecs_service_tags" {
  description = "Grant ecs:DescribeServices, for Cloud Map services without tags of their own that take them from their ECS service (the Prometheus module's enable_ecs_service_tags)."
  type        = bool
  default     = true
}

variable "ec2_hosts_by_cluster" {
  description = "Grant ecs:ListContainerInstances, for the EC2 hosts file by cluster (the Prometheus module's ec2_hosts_ports without ec2_hosts_tag). Needs enable_ec2_enrichment."
  type        = bool
  default     = false
}

variable "max_session_duration" {
  description = "Longest session of the role, in seconds (3600-43200). The sidecar asks for the default hour and renews it before it expires."
  type        = number
  default     = 3600

  validation {
    condition     = var.max_session_duration >= 3600 && var.max_session_duration <= 43200
    error_message = "max_session_duration must be 3600-43200 seconds."
  }
}

variable "permissions_boundary_arn" {
  description = "Permissions boundary for the role. null: none."
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags of the role."
  type        = map(string)
  default     = {}
}
