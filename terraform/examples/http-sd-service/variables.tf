variable "region" {
  description = "AWS Region to deploy to."
  type        = string
  default     = "eu-west-1"
}

variable "name" {
  description = "Prefix of every name in the example."
  type        = string
  default     = "metrics-sd"
}

variable "vpc_id" {
  description = "Existing VPC for the tasks and the private DNS namespace."
  type        = string
}

variable "private_subnet_ids" {
  description = "Private subnets (with NAT or VPC endpoints for ECR, Logs, Secrets Manager, Cloud Map, ECS, EC2 and AMP) for the tasks."
  type        = list(string)
}

variable "sidecar_image" {
  description = "cloudmap-sd image, e.g. ACCOUNT.dkr.ecr.REGION.amazonaws.com/cloudmap-sd:0.1.0."
  type        = string
}

variable "apps_namespace" {
  description = "Name of the Cloud Map namespace whose tagged services the collectors scrape (created elsewhere, e.g. by examples/complete)."
  type        = string
}

variable "metrics_ports" {
  description = "Ports the applications serve metrics on; the collectors may reach them anywhere in the VPC."
  type        = list(number)
  default     = [9100]
}

variable "shards" {
  description = "Number of collectors; each scrapes its share (?shard=INDEX/COUNT, by task) of the one discovery service."
  type        = number
  default     = 2

  validation {
    condition     = var.shards >= 1 && var.shards <= 16 && floor(var.shards) == var.shards
    error_message = "shards must be a whole number from 1 to 16."
  }
}
