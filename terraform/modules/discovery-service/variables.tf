# ---------------------------------------------------------------------------
# Naming and placement
# ---------------------------------------------------------------------------

variable "name" {
  description = "Name of the deployment: task definition family, ECS service, IAM role and log group prefix."
  type        = string
  default     = "cloudmap-sd"

  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9_-]{0,37}$", var.name))
    error_message = "name must be 1-38 letters, digits, '-' or '_', starting with a letter or digit (IAM role names get a suffix)."
  }
}

variable "tags" {
  description = "Tags added to every resource the module creates."
  type        = map(string)
  default     = {}
}

variable "cluster_arn" {
  description = "ARN of the ECS cluster that runs the service."
  type        = string

  validation {
    condition     = can(regex("^arn:[^:]+:ecs:[^:]+:[0-9]{12}:cluster/.+$", var.cluster_arn))
    error_message = "cluster_arn must be an ECS cluster ARN (arn:aws:ecs:REGION:ACCOUNT:cluster/NAME)."
  }
}

variable "launch_type" {
  description = "FARGATE or EC2."
  type        = string
  default     = "FARGATE"

  validation {
    condition     = contains(["FARGATE", "EC2"], var.launch_type)
    error_message = "launch_type must be FARGATE or EC2."
  }
}

variable "desired_count" {
  description = "Number of tasks. 2 makes an HA pair: both discover everything and answer alike (the same bytes, the same ETag), and Cloud Map's DNS gives collectors either."
  type        = number
  default     = 2

  validation {
    condition     = var.desired_count >= 0 && floor(var.desired_count) == var.desired_count
    error_message = "desired_count must be a whole number, 0 or more."
  }
}

variable "subnet_ids" {
  description = "Subnets for the tasks (awsvpc). They need a route to the AWS APIs (NAT or VPC endpoints for Cloud Map, ECS, EC2, Secrets Manager or SSM, ECR and Logs)."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) > 0
    error_message = "subnet_ids needs at least one subnet."
  }
}

variable "security_group_ids" {
  description = "Security groups for the tasks. They must accept TCP on port (9469) from the collectors' security groups, and allow HTTPS (443) out to the AWS APIs."
  type        = list(string)

  validation {
    condition     = length(var.security_group_ids) > 0
    error_message = "security_group_ids needs at least one security group (ingress on port from the collectors)."
  }
}

variable "assign_public_ip" {
  description = "Give each task a public IP (Fargate in public subnets without NAT only)."
  type        = bool
  default     = false
}

variable "platform_version" {
  description = "Fargate platform version (ignored for EC2)."
  type        = string
  default     = "LATEST"
}

variable "cpu" {
  description = "Task CPU units."
  type        = number
  default     = 256
}

variable "memory" {
  description = "Task memory in MiB. The sidecar needs about 40 MiB at 10,000 targets plus one copy of the rendered list (about 1.2 KB per target); 512 leaves room."
  type        = number
  default     = 512
}

variable "cpu_architecture" {
  description = "X86_64 or ARM64 (Fargate runtime platform). Both images must exist for it."
  type        = string
  default     = "X86_64"

  validation {
    condition     = contains(["X86_64", "ARM64"], var.cpu_architecture)
    error_message = "cpu_architecture must be X86_64 or ARM64."
  }
}

# ---------------------------------------------------------------------------
# Images and user
# ---------------------------------------------------------------------------

variable "sidecar_image" {
  description = "cloudmap-sd container image (the binary is /cloudmap-sd; the image has no shell)."
  type        = string
}

variable "init_image" {
  description = "Image of the short-lived init container that writes the bearer token from the secret into a file only the sidecar's user can read. Needs /bin/sh, printf and chown (busybox)."
  type        = string
  default     = "public.ecr.aws/docker/library/busybox:1.36"
}

variable "run_as_user" {
  description = "Numeric, non-root uid:gid the sidecar runs as and that owns the token file."
  type        = string
  default     = "65534:65534"

  validation {
    condition     = can(regex("^[1-9][0-9]*:[1-9][0-9]*$", var.run_as_user))
    error_message = "run_as_user must be a numeric, non-root uid:gid such as 65534:65534."
  }
}

# ---------------------------------------------------------------------------
# Cloud Map registration: how collectors find the service
# ---------------------------------------------------------------------------

variable "registry" {
  description = "The private DNS namespace the tasks register in (ECS registers each task's IP), and the name under it: collectors read http://SERVICE.NAMESPACE:PORT/sd/targets. scrape_itself tags the registration METRICS_PATH=/metrics and METRICS_PORT=port, so that cloudmap-sd lists its own tasks as targets."
  type = object({
    namespace_id   = string
    namespace_name = string
    service_name   = optional(string, "cloudmap-sd")
    scrape_itself  = optional(bool, true)
  })

  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", var.registry.service_name))
    error_message = "registry.service_name must be a DNS label: lower-case letters, digits and '-'."
  }
}

variable "port" {
  description = "Port of /sd/targets, /sd/hosts, /-/ready and /metrics (CLOUDMAP_SD_LISTEN=0.0.0.0:port)."
  type        = number
  default     = 9469

  validation {
    condition     = var.port >= 1024 && var.port <= 65535
    error_message = "port must be 1024-65535."
  }
}

# ---------------------------------------------------------------------------
# The bearer token of /sd/*
# ---------------------------------------------------------------------------

variable "token_secret_arn" {
  description = "ARN of the bearer token that /sd/* requires: a Secrets Manager secret or an SSM SecureString parameter holding the token alone. null: the module creates a Secrets Manager secret with a random 48-character token (it is then in the Terraform state). Collectors read the same secret (output token_secret_arn). To rotate, write a new value and redeploy this service and the collectors."
  type        = string
  default     = null

  validation {
    condition     = var.token_secret_arn == null || can(regex("^arn:[^:]+:(secretsmanager:[^:]+:[0-9]{12}:secret:|ssm:[^:]+:[0-9]{12}:parameter/).+$", var.token_secret_arn))
    error_message = "token_secret_arn must be a Secrets Manager secret ARN or an SSM parameter ARN."
  }
}

variable "token_kms_key_arn" {
  description = "Customer managed KMS key of the token: encrypts the created secret, and the execution role may decrypt with it. null: the AWS managed key."
  type        = string
  default     = null
}

# ---------------------------------------------------------------------------
# Discovery
# ---------------------------------------------------------------------------

variable "namespaces" {
  description = "Cloud Map namespace names to discover. Empty: every namespace in the Region. When set, DiscoverInstances is also limited to them in IAM."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for n in var.namespaces : trimspace(n) != "" && !strcontains(n, ",")])
    error_message = "namespaces must be non-empty names without commas."
  }
}

variable "discovery_interval" {
  description = "Time between discovery cycles (CLOUDMAP_SD_INTERVAL)."
  type        = string
  default     = "30s"

  validation {
    condition     = can(regex("^[0-9]+(ms|s|m|h)$", var.discovery_interval))
    error_message = "discovery_interval must look like 30s, 2m or 1h."
  }
}

variable "label_style" {
  description = "Target labels: default or reloader (docs/labels.md)."
  type        = string
  default     = "default"

  validation {
    condition     = contains(["default", "reloader"], var.label_style)
    error_message = "label_style must be default or reloader."
  }
}

variable "enable_ec2_enrichment" {
  description = "Label targets on EC2 container instances with their host (ecs:DescribeContainerInstances, ec2:DescribeInstances). false for a Fargate-only fleet."
  type        = bool
  default     = true
}

variable "enable_ecs_service_tags" {
  description = "A Cloud Map service without METRICS_* tags of its own takes them from its ECS service (Service Connect): CLOUDMAP_SD_ECS_SERVICE_TAGS, and ecs:DescribeServices in the task role. false: neither."
  type        = bool
  default     = true
}

variable "ec2_hosts_ports" {
  description = "Serve the EC2 hosts at /sd/hosts, one target per host and port (CLOUDMAP_SD_EC2_HOSTS_OUTPUT=none). Needs enable_ec2_enrichment. Empty: /sd/hosts answers 404."
  type        = list(number)
  default     = []

  validation {
    condition     = alltrue([for p in var.ec2_hosts_ports : p >= 1 && p <= 65535 && floor(p) == p])
    error_message = "ec2_hosts_ports must be whole port numbers 1-65535."
  }
}

variable "environment" {
  description = "Extra environment for cloudmap-sd, e.g. RUST_LOG or CLOUDMAP_SD_HEALTH_STATUS."
  type        = map(string)
  default     = {}
}

# ---------------------------------------------------------------------------
# Logs and IAM
# ---------------------------------------------------------------------------

variable "log_retention_days" {
  description = "Retention of the log group, in days."
  type        = number
  default     = 30
}

variable "log_kms_key_arn" {
  description = "KMS key ARN to encrypt the log group. null: CloudWatch Logs default encryption."
  type        = string
  default     = null
}

variable "ecr_repository_arns" {
  description = "ECR repositories the images come from; the execution role may pull only from these. Empty: no ECR permissions (public images)."
  type        = list(string)
  default     = []
}

variable "permissions_boundary_arn" {
  description = "Permissions boundary for both IAM roles."
  type        = string
  default     = null
}

variable "wait_for_steady_state" {
  description = "Make terraform apply wait until the service reaches a steady state."
  type        = bool
  default     = false
}
