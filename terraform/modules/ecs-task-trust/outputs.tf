output "execution_json" {
  description = "Trust policy of the execution role: ECS tasks (the ECS agent acting for them)."
  value       = data.aws_iam_policy_document.execution.json
}

output "task_json" {
  description = "Trust policy of the task role: ECS tasks of this account and Region only."
  value       = data.aws_iam_policy_document.task.json
}
