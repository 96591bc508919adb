variable "partition" {
  description = "AWS partition of the account (aws, aws-cn, aws-us-gov)."
  type        = string
}

variable "region" {
  description = "Region the sidecar discovers in."
  type        = string
}

variable "account_id" {
  description = "The account whose Cloud Map, ECS and EC2 the statements allow."
  type        = string
}

variable "namespaces" {
  description = "Cloud Map namespace names: DiscoverInstances is limited to them. Empty: every namespace."
  type        = list(string)
  default     = []
}

variable "enable_ec2_enrichment" {
  description = "Allow ecs:DescribeContainerInstances and ec2:DescribeInstances (EC2 host labels)."
  type        = bool
  default     = true
}

variable "enable_ecs_service_tags" {
  description = "Allow ecs:DescribeServices (a Cloud Map service without tags of its own takes them from its ECS service: Service Connect)."
  type        = bool
  default     = true
}

variable "ec2_hosts_by_cluster" {
  description = "Allow ecs:ListContainerInstances (the hosts file by cluster); only with enable_ec2_enrichment."
  type        = bool
  default     = false
}
