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

variable "ec2_hosts_ports" {
  description = "Also scrape the EC2 container instances of the applications' clusters on these ports (node exporter 9100, cAdvisor 8080), in the job ec2-hosts. The demo application runs on Fargate, which has no hosts, so the default is off; set it when EC2 container instances run your other applications."
  type        = list(number)
  default     = []
}

variable "ec2_hosts_tag" {
  description = "KEY=VALUE: with ec2_hosts_ports, scrape the running EC2 instances with this tag instead of the container instances of the clusters seen. null: by cluster."
  type        = string
  default     = null
}
