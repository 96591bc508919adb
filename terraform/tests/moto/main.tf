# Test-only root configuration: applies the modules against a local moto server.
# Credentials come from the environment (AWS_ACCESS_KEY_ID=test ...), never from here.
# Run by scripts/terraform-test.sh; not meant for real AWS.

terraform {
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.40.0, < 7.0.0"
    }
  }
}

variable "moto_endpoint" {
  description = "URL of the moto server, e.g. http://127.0.0.1:5000."
  type        = string

  validation {
    condition     = can(regex("^http://(127\\.[0-9.]+|localhost)(:[0-9]+)?$", var.moto_endpoint))
    error_message = "moto_endpoint must be a loopback http URL."
  }
}

provider "aws" {
  region                      = "us-east-1"
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  skip_region_validation      = true

  endpoints {
    amp              = var.moto_endpoint
    ec2              = var.moto_endpoint
    ecs              = var.moto_endpoint
    iam              = var.moto_endpoint
    logs             = var.moto_endpoint
    secretsmanager   = var.moto_endpoint
    servicediscovery = var.moto_endpoint
    sts              = var.moto_endpoint
  }
}

locals {
  namespace_name = "apps.moto.test"
  # The roles of two other accounts, as their own states would output them.
  discovery_role_arns = [
    "arn:aws:iam::111111111111:role/cloudmap-sd-discovery",
    "arn:aws:iam::222222222222:role/cloudmap-sd-discovery",
  ]
}

# moto checks that the service's subnets and security groups exist.
resource "aws_vpc" "test" {
  #checkov:skip=CKV2_AWS_11:VPC on a local moto server for one test run; no traffic to log
  #checkov:skip=CKV2_AWS_12:VPC on a local moto server for one test run; its default security group is never used
  cidr_block = "10.99.0.0/16"
}

resource "aws_subnet" "test" {
  vpc_id     = aws_vpc.test.id
  cidr_block = "10.99.1.0/24"
}

resource "aws_security_group" "prometheus" {
  name        = "moto-test-prometheus"
  description = "Prometheus tasks of the moto test (no rules needed there)"
  vpc_id      = aws_vpc.test.id
}

resource "aws_ecs_cluster" "test" {
  name = "moto-test"

  setting {
    name  = "containerInsights"
    value = "enabled"
  }
}

resource "aws_service_discovery_http_namespace" "apps" {
  name        = local.namespace_name
  description = "Applications for the moto test"
}

# Fargate, new AMP workspace, namespaces given (IAM condition on NamespaceName),
# a Fargate-only fleet: no EC2 host lookups.
module "prometheus_fargate" {
  source = "../.."

  name                  = "prom-fargate"
  cluster_arn           = aws_ecs_cluster.test.arn
  launch_type           = "FARGATE"
  desired_count         = 2
  subnet_ids            = [aws_subnet.test.id]
  security_group_ids    = [aws_security_group.prometheus.id]
  sidecar_image         = "registry.example.test/cloudmap-sd:test"
  namespaces            = [aws_service_discovery_http_namespace.apps.name]
  external_labels       = { environment = "moto" }
  enable_ec2_enrichment = false
}

# EC2, an existing workspace, every namespace, EC2 host lookups on (the default), and
# an ECS service with launch type EC2: placement strategy, no platform version.
# moto 5.1.6 accepts that CreateService but neither stores nor returns
# placementStrategy; verify.py checks it in moto's request recording instead, and
# the drift check knows that gap.
# Also the EC2 hosts file by cluster (node exporter and cAdvisor on every container
# instance: ecs:ListContainerInstances) and relabel rules of the cloudmap job.
module "prometheus_ec2" {
  source = "../.."

  name               = "prom-ec2"
  cluster_arn        = aws_ecs_cluster.test.arn
  launch_type        = "EC2"
  desired_count      = 2
  subnet_ids         = [aws_subnet.test.id]
  security_group_ids = [aws_security_group.prometheus.id]
  create_workspace   = false
  workspace_id       = module.prometheus_fargate.workspace_id
  sidecar_image      = "registry.example.test/cloudmap-sd:test"
  cluster_label      = "moto-ec2"
  shard              = { index = 1, count = 3, key = "task" }
  ec2_hosts_ports    = [9100, 8080]
  scrape_relabel_configs = [
    { source_labels = ["ecs_service", "ecs_task_family"], separator = "/", target_label = "app", regex = "(.+)/.*", replacement = "$1" },
    { action = "labeldrop", regex = "ecs_task_revision" },
  ]
}

# A migration from the reloader: its labels, minus the two that the old build did
# not write (docs/migration.md), and the EC2 hosts by tag (no
# ecs:ListContainerInstances). Task definition and roles only (create_service =
# false); verify.py runs the sidecar with this task definition's environment.
module "prometheus_migration" {
  source = "../.."

  name             = "prom-migration"
  cluster_arn      = aws_ecs_cluster.test.arn
  create_service   = false
  create_workspace = false
  workspace_id     = module.prometheus_fargate.workspace_id
  sidecar_image    = "registry.example.test/cloudmap-sd:test"
  namespaces       = [aws_service_discovery_http_namespace.apps.name]
  label_style      = "reloader"
  job_name         = "ecs-services"
  # Every service is tagged in Cloud Map here: no ecs:DescribeServices.
  enable_ecs_service_tags = false
  ec2_hosts_ports         = [9100]
  ec2_hosts_tag           = "ecs-hosts=moto"
  scrape_relabel_configs = [
    { action = "labeldrop", regex = "namespace|taskid" },
  ]
}

# Agent mode: Prometheus keeps a write-ahead log only, the sidecar expects an agent.
# A task definition only; verify.py checks the flags and the environment.
module "prometheus_agent" {
  source = "../.."

  name             = "prom-agent"
  cluster_arn      = aws_ecs_cluster.test.arn
  create_service   = false
  create_workspace = false
  workspace_id     = module.prometheus_fargate.workspace_id
  sidecar_image    = "registry.example.test/cloudmap-sd:test"
  prometheus_mode  = "agent"
}

# cloudmap-sd as its own service, registered in a private DNS namespace, its token
# created in Secrets Manager; and one ADOT collector reading shard 1/2 by task from it.
resource "aws_service_discovery_private_dns_namespace" "sd" {
  name        = "sd.moto.test"
  description = "Discovery services of the moto test"
  vpc         = aws_vpc.test.id
}

module "discovery_service" {
  source = "../../modules/discovery-service"

  name               = "moto-sd"
  cluster_arn        = aws_ecs_cluster.test.arn
  subnet_ids         = [aws_subnet.test.id]
  security_group_ids = [aws_security_group.prometheus.id]
  sidecar_image      = "registry.example.test/cloudmap-sd:test"
  namespaces         = [aws_service_discovery_http_namespace.apps.name]
  ec2_hosts_ports    = [9100]

  registry = {
    namespace_id   = aws_service_discovery_private_dns_namespace.sd.id
    namespace_name = aws_service_discovery_private_dns_namespace.sd.name
  }
}

module "collector_shard" {
  source = "../../modules/adot-collector"

  name               = "moto-collector-1"
  cluster_arn        = aws_ecs_cluster.test.arn
  subnet_ids         = [aws_subnet.test.id]
  security_group_ids = [aws_security_group.prometheus.id]
  targets_url        = module.discovery_service.targets_url
  token_secret_arn   = module.discovery_service.token_secret_arn
  shard              = { index = 1, count = 2, key = "task" }
  workspace_id       = module.prometheus_fargate.workspace_id
}

# A central Prometheus that also discovers in two other accounts, and the role one of
# those accounts creates for it (in moto both live in the one test account). Task
# definition and roles only (create_service = false).
module "prometheus_accounts" {
  source = "../.."

  name                       = "prom-accounts"
  cluster_arn                = aws_ecs_cluster.test.arn
  create_service             = false
  create_workspace           = false
  workspace_id               = module.prometheus_fargate.workspace_id
  sidecar_image              = "registry.example.test/cloudmap-sd:test"
  discovery_role_arns        = local.discovery_role_arns
  discovery_role_external_id = "central-prometheus"
}

module "discovery_role" {
  source = "../../modules/discovery-role"

  name                     = "moto-cloudmap-sd-discovery"
  prometheus_task_role_arn = module.prometheus_accounts.task_role_arn
  external_id              = "central-prometheus"
  namespaces               = [local.namespace_name]
  ec2_hosts_by_cluster     = true
}

module "web_metrics" {
  source = "../../modules/scrape-target"

  name           = "web"
  namespace_id   = aws_service_discovery_http_namespace.apps.id
  metrics_path   = "/internal/metrics"
  metrics_port   = 9102
  metrics_scheme = "http"
  extra_endpoints = {
    envoy = { path = "/stats/prometheus", port = 9901 }
  }
  force_destroy = true
}

# An application on ECS Service Connect: ECS creates and owns its Cloud Map
# service, so the METRICS_* tags go on its ECS service (moto's CreateService
# registers nothing in Cloud Map; verify.py creates the service ECS would).
module "api_metrics" {
  source = "../../modules/scrape-target"

  service_connect   = true
  metrics_path      = "/metrics"
  metrics_port      = 9100
  metrics_container = "exporter"
}

# awsvpc: moto 5.1.6 answers a service without a network configuration with an
# empty networkConfiguration object, and the AWS provider crashes reading it.
resource "aws_ecs_task_definition" "api" {
  family       = "api"
  network_mode = "awsvpc"
  container_definitions = jsonencode([
    {
      name                   = "api"
      image                  = "registry.example.test/api:1"
      essential              = true
      memory                 = 64
      readonlyRootFilesystem = true
      portMappings           = [{ containerPort = 8080 }]
    },
    {
      name                   = "exporter"
      image                  = "registry.example.test/exporter:1"
      essential              = false
      memory                 = 32
      readonlyRootFilesystem = true
      portMappings           = [{ containerPort = 9100 }]
    },
  ])
}

resource "aws_ecs_service" "api" {
  name            = "api"
  cluster         = aws_ecs_cluster.test.arn
  task_definition = aws_ecs_task_definition.api.arn
  desired_count   = 0
  launch_type     = "EC2"
  tags            = merge({ team = "payments" }, module.api_metrics.ecs_service_tags)

  network_configuration {
    subnets         = [aws_subnet.test.id]
    security_groups = [aws_security_group.prometheus.id]
  }
}

module "quiet_metrics" {
  source = "../../modules/scrape-target"

  name               = "quiet"
  namespace_id       = aws_service_discovery_http_namespace.apps.id
  prometheus_enabled = false
  force_destroy      = true
}

output "namespace_name" {
  value = aws_service_discovery_http_namespace.apps.name
}

output "web_service_id" {
  value = module.web_metrics.service_id
}

output "web_metrics_tags" {
  value = module.web_metrics.metrics_tags
}

output "api" {
  value = {
    ecs_service_name = aws_ecs_service.api.name
    ecs_service_arn  = aws_ecs_service.api.id
    ecs_service_tags = module.api_metrics.ecs_service_tags
    service_id       = module.api_metrics.service_id
    service_registry = module.api_metrics.service_registry
  }
}

output "quiet_service_id" {
  value = module.quiet_metrics.service_id
}

output "fargate" {
  value = {
    task_definition_arn    = module.prometheus_fargate.task_definition_arn
    task_role_name         = module.prometheus_fargate.task_role_name
    execution_role_name    = module.prometheus_fargate.execution_role_name
    workspace_id           = module.prometheus_fargate.workspace_id
    workspace_arn          = module.prometheus_fargate.workspace_arn
    remote_write_url       = module.prometheus_fargate.remote_write_url
    service_name           = module.prometheus_fargate.service_name
    log_group_names        = module.prometheus_fargate.log_group_names
    replica_placeholder    = module.prometheus_fargate.replica_placeholder
    ec2_hosts_file_sd_path = module.prometheus_fargate.ec2_hosts_file_sd_path
  }
}

output "ec2" {
  value = {
    task_definition_arn    = module.prometheus_ec2.task_definition_arn
    task_role_name         = module.prometheus_ec2.task_role_name
    workspace_arn          = module.prometheus_ec2.workspace_arn
    remote_write_url       = module.prometheus_ec2.remote_write_url
    service_name           = module.prometheus_ec2.service_name
    file_sd_path           = module.prometheus_ec2.file_sd_path
    ec2_hosts_file_sd_path = module.prometheus_ec2.ec2_hosts_file_sd_path
  }
}

output "accounts" {
  value = {
    task_definition_arn = module.prometheus_accounts.task_definition_arn
    task_role_name      = module.prometheus_accounts.task_role_name
    task_role_arn       = module.prometheus_accounts.task_role_arn
    discovery_role_arns = local.discovery_role_arns
  }
}

output "discovery_role" {
  value = {
    role_arn   = module.discovery_role.role_arn
    role_name  = module.discovery_role.role_name
    account_id = module.discovery_role.account_id
  }
}

output "migration" {
  value = {
    task_definition_arn    = module.prometheus_migration.task_definition_arn
    task_role_name         = module.prometheus_migration.task_role_name
    service_name           = module.prometheus_migration.service_name
    file_sd_path           = module.prometheus_migration.file_sd_path
    ec2_hosts_file_sd_path = module.prometheus_migration.ec2_hosts_file_sd_path
    replica_placeholder    = module.prometheus_migration.replica_placeholder
  }
}

output "agent" {
  value = {
    task_definition_arn = module.prometheus_agent.task_definition_arn
    replica_placeholder = module.prometheus_agent.replica_placeholder
  }
}

output "discovery_service" {
  value = {
    service_name         = module.discovery_service.service_name
    task_definition_arn  = module.discovery_service.task_definition_arn
    task_role_name       = module.discovery_service.task_role_name
    execution_role_name  = module.discovery_service.execution_role_name
    cloud_map_service_id = module.discovery_service.cloud_map_service_id
    dns_name             = module.discovery_service.dns_name
    targets_url          = module.discovery_service.targets_url
    hosts_url            = module.discovery_service.hosts_url
    token_secret_arn     = module.discovery_service.token_secret_arn
    sd_namespace_id      = aws_service_discovery_private_dns_namespace.sd.id
  }
}

output "collector" {
  value = {
    service_name        = module.collector_shard.service_name
    task_definition_arn = module.collector_shard.task_definition_arn
    task_role_name      = module.collector_shard.task_role_name
    execution_role_name = module.collector_shard.execution_role_name
    sd_url              = module.collector_shard.sd_url
    remote_write_url    = module.collector_shard.remote_write_url
  }
}
