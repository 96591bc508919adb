variable "name" {
  description = "Name of the deployment: task definition family, ECS service, IAM role and log group prefix."
  type        = string
  default     = "adot-collector"

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
  description = "ARN of the ECS cluster that runs the collector."
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
  description = "Number of collector tasks. Each one scrapes every target of its share: more than 1 sends duplicates to AMP unless they carry HA labels AMP de-duplicates (external_labels cluster and __replica__ differ per task, which this module does not set)."
  type        = number
  default     = 1

  validation {
    condition     = var.desired_count >= 0 && floor(var.desired_count) == var.desired_count
    error_message = "desired_count must be a whole number, 0 or more."
  }
}

variable "subnet_ids" {
  description = "Subnets for the tasks (awsvpc), with routes to the targets, the discovery service and AMP."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) > 0
    error_message = "subnet_ids needs at least one subnet."
  }
}

variable "security_group_ids" {
  description = "Security groups for the tasks: egress to the discovery service's port, to the targets' metrics ports and HTTPS (443) to AMP."
  type        = list(string)

  validation {
    condition     = length(var.security_group_ids) > 0
    error_message = "security_group_ids needs at least one security group."
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
  default     = 512
}

variable "memory" {
  description = "Task memory in MiB."
  type        = number
  default     = 1024
}

variable "image" {
  description = "AWS Distro for OpenTelemetry collector image. It reads its configuration from AOT_CONFIG_CONTENT."
  type        = string
  default     = "public.ecr.aws/aws-observability/aws-otel-collector:v0.43.3"
}

variable "targets_url" {
  description = "The discovery service's /sd/targets URL (output targets_url of modules/discovery-service)."
  type        = string

  validation {
    condition     = can(regex("^https?://[^/?]+/sd/targets$", var.targets_url))
    error_message = "targets_url must be http(s)://HOST:PORT/sd/targets, without a query (set shard instead)."
  }
}

variable "token_secret_arn" {
  description = "ARN of the discovery service's bearer token (Secrets Manager secret or SSM parameter; output token_secret_arn of modules/discovery-service). null: the endpoint asks for no token."
  type        = string
  default     = null
}

variable "token_kms_key_arn" {
  description = "Customer managed KMS key of the token, if any: the execution role may decrypt with it."
  type        = string
  default     = null
}

variable "shard" {
  description = "Scrape only this share of the targets: the collector asks /sd/targets?shard=INDEX/COUNT&shard_key=KEY (the rule of cloudmap-sd's --shard). Deploy the module once per index with the same count. null: every target."
  type = object({
    index = number
    count = number
    key   = optional(string, "service")
  })
  default = null

  validation {
    condition = var.shard == null ? true : (
      var.shard.count >= 1 && var.shard.index >= 0 && var.shard.index < var.shard.count &&
      floor(var.shard.index) == var.shard.index && floor(var.shard.count) == var.shard.count &&
      contains(["service", "task"], var.shard.key)
    )
    error_message = "shard needs whole numbers 0 <= index < count and key service or task."
  }
}

variable "workspace_id" {
  description = "ID (ws-...) of the AMP workspace to remote-write to, in this account and Region."
  type        = string

  validation {
    condition     = can(regex("^ws-[0-9a-zA-Z-]+$", var.workspace_id))
    error_message = "workspace_id must look like ws-12345678-abcd-1234-abcd-123456789012."
  }
}

variable "job_name" {
  description = "job label of the discovered targets."
  type        = string
  default     = "cloudmap"
}

variable "scrape_interval" {
  description = "Scrape interval of the targets."
  type        = string
  default     = "30s"
}

variable "refresh_interval" {
  description = "How often the collector asks the discovery service for the targets."
  type        = string
  default     = "30s"
}

variable "external_labels" {
  description = "Labels added to every series the collector sends (the exporter's external_labels)."
  type        = map(string)
  default     = {}
}

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
