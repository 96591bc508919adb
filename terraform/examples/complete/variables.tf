variable "region" {
  description = "AWS Region to deploy to."
  type        = string
  default     = "eu-west-1"
}

variable "name" {
  description = "Prefix of every name in the example."
  type        = string
  default     = "metrics-demo"
}

variable "vpc_id" {
  description = "Existing VPC for the tasks and the private DNS namespace."
  type        = string
}

variable "private_subnet_ids" {
  description = "Private subnets (with NAT or VPC endpoints for ECR, Logs, Cloud Map, ECS, EC2 and AMP) for the tasks."
  type        = list(string)
}

variable "sidecar_image" {
  description = "cloudmap-sd image, e.g. ACCOUNT.dkr.ecr.REGION.amazonaws.com/cloudmap-sd:0.1.0."
  type        = string
}

variable "sidecar_ecr_repository_arn" {
  description = "ARN of the ECR repository holding the sidecar image (null: the image is public)."
  type        = string
  default     = null
}
