# One discovery service for every collector of an environment:
#   - cloudmap-sd as its own ECS service (an HA pair), registered in Cloud Map as
#     cloudmap-sd.<name>.sd, its /sd/* behind a bearer token kept in Secrets Manager;
#   - `shards` ADOT collectors, each reading its share of the targets over http_sd
#     (?shard=INDEX/COUNT&shard_key=task) and remote-writing to a new AMP workspace.
# The discovery cost (Cloud Map, ECS and EC2 calls) is paid once, whatever the
# number of collectors.

data "aws_vpc" "this" {
  id = var.vpc_id
}

locals {
  tags    = { Project = var.name }
  sd_port = 9469
}

resource "aws_ecs_cluster" "this" {
  name = var.name
  tags = local.tags

  setting {
    name  = "containerInsights"
    value = "enabled"
  }
}

# The name collectors resolve: cloudmap-sd.<name>.sd
resource "aws_service_discovery_private_dns_namespace" "sd" {
  name        = "${var.name}.sd"
  description = "Discovery services of ${var.name}"
  vpc         = var.vpc_id
  tags        = local.tags
}

resource "aws_prometheus_workspace" "this" {
  alias = var.name
  tags  = local.tags
}

# ---------------------------------------------------------------------------
# Security groups: collectors reach the discovery service's port; the discovery
# service accepts it from the collectors only.
# ---------------------------------------------------------------------------

resource "aws_security_group" "discovery" {
  name        = "${var.name}-discovery"
  description = "cloudmap-sd discovery service tasks"
  vpc_id      = var.vpc_id
  tags        = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "discovery_from_collectors" {
  security_group_id            = aws_security_group.discovery.id
  description                  = "http_sd and health from the collectors"
  ip_protocol                  = "tcp"
  from_port                    = local.sd_port
  to_port                      = local.sd_port
  referenced_security_group_id = aws_security_group.collector.id
}

resource "aws_vpc_security_group_egress_rule" "discovery_https" {
  security_group_id = aws_security_group.discovery.id
  description       = "HTTPS to AWS APIs (Cloud Map, ECS, EC2, Secrets Manager, ECR, Logs)"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_security_group" "collector" {
  name        = "${var.name}-collector"
  description = "ADOT collector tasks"
  vpc_id      = var.vpc_id
  tags        = local.tags
}

resource "aws_vpc_security_group_egress_rule" "collector_sd" {
  security_group_id            = aws_security_group.collector.id
  description                  = "The discovery service's /sd/targets"
  ip_protocol                  = "tcp"
  from_port                    = local.sd_port
  to_port                      = local.sd_port
  referenced_security_group_id = aws_security_group.discovery.id
}

resource "aws_vpc_security_group_egress_rule" "collector_https" {
  security_group_id = aws_security_group.collector.id
  description       = "HTTPS to AMP, ECR, Logs and Secrets Manager"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_egress_rule" "collector_scrape" {
  for_each = toset([for p in var.metrics_ports : tostring(p)])

  security_group_id = aws_security_group.collector.id
  description       = "Scrape the applications on ${each.value}"
  ip_protocol       = "tcp"
  from_port         = tonumber(each.value)
  to_port           = tonumber(each.value)
  cidr_ipv4         = data.aws_vpc.this.cidr_block
}

# ---------------------------------------------------------------------------
# The discovery service and its collectors
# ---------------------------------------------------------------------------

module "discovery" {
  source = "../../modules/discovery-service"

  name               = "${var.name}-cloudmap-sd"
  cluster_arn        = aws_ecs_cluster.this.arn
  desired_count      = 2
  subnet_ids         = var.private_subnet_ids
  security_group_ids = [aws_security_group.discovery.id]
  sidecar_image      = var.sidecar_image
  port               = local.sd_port
  namespaces         = [var.apps_namespace]

  registry = {
    namespace_id   = aws_service_discovery_private_dns_namespace.sd.id
    namespace_name = aws_service_discovery_private_dns_namespace.sd.name
  }

  # Fargate-only applications: no EC2 host lookups.
  enable_ec2_enrichment = false

  tags = local.tags
}

module "collector" {
  source = "../../modules/adot-collector"
  count  = var.shards

  name               = "${var.name}-collector-${count.index}"
  cluster_arn        = aws_ecs_cluster.this.arn
  subnet_ids         = var.private_subnet_ids
  security_group_ids = [aws_security_group.collector.id]
  targets_url        = module.discovery.targets_url
  token_secret_arn   = module.discovery.token_secret_arn
  shard              = { index = count.index, count = var.shards, key = "task" }
  workspace_id       = aws_prometheus_workspace.this.id
  external_labels    = { collector = "${var.name}-collector-${count.index}" }

  tags = local.tags
}
