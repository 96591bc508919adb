output "role_arn" {
  description = "ARN of the role: one entry of the Prometheus module's discovery_role_arns."
  value       = aws_iam_role.this.arn
}

output "role_name" {
  description = "Name of the role."
  value       = aws_iam_role.this.name
}

output "account_id" {
  description = "The account the role discovers in: the aws_account_id label of its targets."
  value       = local.account_id
}
