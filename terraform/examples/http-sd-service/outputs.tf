output "targets_url" {
  description = "The discovery service's /sd/targets, for any other collector of the VPC."
  value       = module.discovery.targets_url
}

output "token_secret_arn" {
  description = "The bearer token those collectors send."
  value       = module.discovery.token_secret_arn
}

output "collector_urls" {
  description = "The share each collector reads."
  value       = [for c in module.collector : c.sd_url]
}

output "workspace_id" {
  description = "The AMP workspace the collectors write to."
  value       = aws_prometheus_workspace.this.id
}
