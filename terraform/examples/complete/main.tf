# A complete deployment in an existing VPC:
#   - an ECS cluster and a private DNS namespace for the applications,
#   - Prometheus + cloudmap-sd (two HA replicas on Fargate) writing to a new AMP workspace,
#   - a demo application (node-exporter) registered in Cloud Map with the
#     "prometheus enabled" tags, which the sidecar finds and Prometheus scrapes.

data "aws_vpc" "this" {
  id = var.vpc_id
}

locals {
  tags = {
    Project = var.name
  }
  app_port = 9100
}

resource "aws_ecs_cluster" "this" {
  name = var.name
  tags = local.tags

  setting {
    name  = "containerInsights"
    value = "enabled"
  }
}

resource "aws_service_discovery_private_dns_namespace" "apps" {
  name        = "${var.name}.internal"
  description = "Applications of ${var.name}"
  vpc         = var.vpc_id
  tags        = local.tags
}

# ---------------------------------------------------------------------------
# Security groups: Prometheus may reach the apps' metrics port and HTTPS; the app
# accepts its metrics port from Prometheus only.
# ---------------------------------------------------------------------------

resource "aws_security_group" "prometheus" {
  name        = "${var.name}-prometheus"
  description = "Prometheus and cloudmap-sd tasks"
  vpc_id      = var.vpc_id
  tags        = local.tags
}

resource "aws_vpc_security_group_egress_rule" "prometheus_https" {
  security_group_id = aws_security_group.prometheus.id
  description       = "HTTPS to AWS APIs (Cloud Map, ECS, EC2, AMP, ECR, Logs)"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_egress_rule" "prometheus_scrape" {
  security_group_id            = aws_security_group.prometheus.id
  description                  = "Scrape the demo application"
  ip_protocol                  = "tcp"
  from_port                    = local.app_port
  to_port                      = local.app_port
  referenced_security_group_id = aws_security_group.app.id
}

# With ec2_hosts_ports: the host exporters, anywhere in the VPC (their instances'
# security groups must accept these ports from the Prometheus security group).
resource "aws_vpc_security_group_egress_rule" "prometheus_hosts" {
  for_each = toset([for p in var.ec2_hosts_ports : tostring(p)])

  security_group_id = aws_security_group.prometheus.id
  description       = "Scrape the EC2 hosts' exporters on ${each.value}"
  ip_protocol       = "tcp"
  from_port         = tonumber(each.value)
  to_port           = tonumber(each.value)
  cidr_ipv4         = data.aws_vpc.this.cidr_block
}

resource "aws_security_group" "app" {
  name        = "${var.name}-app"
  description = "Demo application tasks"
  vpc_id      = var.vpc_id
  tags        = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "app_metrics" {
  security_group_id            = aws_security_group.app.id
  description                  = "Metrics port, from Prometheus only"
  ip_protocol                  = "tcp"
  from_port                    = local.app_port
  to_port                      = local.app_port
  referenced_security_group_id = aws_security_group.prometheus.id
}

resource "aws_vpc_security_group_egress_rule" "app_https" {
  security_group_id = aws_security_group.app.id
  description       = "HTTPS for image pulls"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

# ---------------------------------------------------------------------------
# Prometheus + cloudmap-sd
# ---------------------------------------------------------------------------

module "prometheus" {
  source = "../.."

  name               = "${var.name}-prometheus"
  cluster_arn        = aws_ecs_cluster.this.arn
  launch_type        = "FARGATE"
  desired_count      = 2
  subnet_ids         = var.private_subnet_ids
  security_group_ids = [aws_security_group.prometheus.id]

  sidecar_image       = var.sidecar_image
  ecr_repository_arns = var.sidecar_ecr_repository_arn == null ? [] : [var.sidecar_ecr_repository_arn]
  namespaces          = [aws_service_discovery_private_dns_namespace.apps.name]
  discovery_interval  = "30s"

  # The demo is Fargate only: no EC2 hosts to look up, unless ec2_hosts_ports asks
  # for the hosts of other applications (it needs the EC2 host lookups).
  enable_ec2_enrichment = length(var.ec2_hosts_ports) > 0
  ec2_hosts_ports       = var.ec2_hosts_ports
  ec2_hosts_tag         = var.ec2_hosts_tag

  # Relabelling of the discovered targets' job: here, the Cloud Map service name also
  # as `service`, the label the dashboards of the old set-up grouped by.
  scrape_relabel_configs = [
    { source_labels = ["cloudmap_service"], target_label = "service" },
  ]

  create_workspace = true
  external_labels = {
    environment = "demo"
    vpc         = data.aws_vpc.this.id
  }

  tags = local.tags
}

# ---------------------------------------------------------------------------
# The demo application and its "prometheus enabled" switch
# ---------------------------------------------------------------------------

module "app_metrics" {
  source = "../../modules/scrape-target"

  name               = "node-exporter"
  namespace_id       = aws_service_discovery_private_dns_namespace.apps.id
  dns_record_type    = "A"
  prometheus_enabled = true
  metrics_path       = "/metrics"
  metrics_port       = local.app_port
  tags               = local.tags
}

resource "aws_ecs_task_definition" "app" {
  family                   = "${var.name}-node-exporter"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = "256"
  memory                   = "512"

  container_definitions = jsonencode([{
    name                   = "node-exporter"
    image                  = "quay.io/prometheus/node-exporter:v1.9.1"
    essential              = true
    user                   = "65534:65534"
    readonlyRootFilesystem = true
    portMappings           = [{ containerPort = local.app_port, protocol = "tcp" }]
  }])

  tags = local.tags
}

resource "aws_ecs_service" "app" {
  name            = "${var.name}-node-exporter"
  cluster         = aws_ecs_cluster.this.arn
  task_definition = aws_ecs_task_definition.app.arn
  desired_count   = 1
  launch_type     = "FARGATE"

  network_configuration {
    subnets          = var.private_subnet_ids
    security_groups  = [aws_security_group.app.id]
    assign_public_ip = false
  }

  # ECS registers every task (its IP) in the tagged Cloud Map service.
  service_registries {
    registry_arn   = module.app_metrics.service_registry.registry_arn
    container_name = module.app_metrics.service_registry.container_name
    container_port = module.app_metrics.service_registry.container_port
  }

  tags = local.tags
}
