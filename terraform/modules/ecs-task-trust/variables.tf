variable "partition" {
  description = "AWS partition of the account (aws, aws-cn, aws-us-gov)."
  type        = string
}

variable "region" {
  description = "Region of the ECS tasks that may assume the task role."
  type        = string
}

variable "account_id" {
  description = "Account of the ECS tasks that may assume the task role."
  type        = string
}
