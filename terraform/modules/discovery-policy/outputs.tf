output "json" {
  description = "The policy document, for source_policy_documents or an inline role policy."
  value       = data.aws_iam_policy_document.this.json
}
