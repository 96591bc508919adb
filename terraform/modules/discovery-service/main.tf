# cloudmap-sd as its own ECS service: one discovery (an HA pair) for every collector
# and shard of an environment, over http_sd. Each task:
#
#   init        (root, exits)  writes the bearer token from the secret into
#                              /run/cloudmap-sd/token, readable by run_as_user only
#   cloudmap-sd (run_as_user)  no file (CLOUDMAP_SD_OUTPUT=none); serves /sd/targets
#                              on 0.0.0.0:port with that token; HEALTHY after the
#                              first complete discovery
#
# ECS registers every task in Cloud Map (registry), so collectors read
# http://SERVICE.NAMESPACE:PORT/sd/targets.

data "aws_partition" "current" {}
data "aws_region" "current" {}
data "aws_caller_identity" "current" {}

locals {
  partition  = data.aws_partition.current.partition
  region     = data.aws_region.current.name
  account_id = data.aws_caller_identity.current.account_id
  is_fargate = var.launch_type == "FARGATE"

  container_names = {
    init    = "init"
    sidecar = "cloudmap-sd"
  }
  token_dir  = "/run/cloudmap-sd"
  token_file = "${local.token_dir}/token"

  create_token     = var.token_secret_arn == null
  token_secret_arn = local.create_token ? aws_secretsmanager_secret.token[0].arn : var.token_secret_arn
  token_in_ssm     = can(regex("^arn:[^:]+:ssm:", local.token_secret_arn))

  dns_name = "${var.registry.service_name}.${var.registry.namespace_name}"
  base_url = "http://${local.dns_name}:${var.port}"
  hosts_on = length(var.ec2_hosts_ports) > 0

  environment = merge(
    {
      CLOUDMAP_SD_OUTPUT                      = "none"
      CLOUDMAP_SD_LISTEN                      = "0.0.0.0:${var.port}"
      CLOUDMAP_SD_HTTP_SD_BEARER_TOKEN_FILE   = local.token_file
      CLOUDMAP_SD_INTERVAL                    = var.discovery_interval
      CLOUDMAP_SD_LABEL_STYLE                 = var.label_style
      CLOUDMAP_SD_EC2_ENRICHMENT              = tostring(var.enable_ec2_enrichment)
      CLOUDMAP_SD_ECS_SERVICE_TAGS            = tostring(var.enable_ecs_service_tags)
      CLOUDMAP_SD_REMOTE_WRITE_WATCH_INTERVAL = "0s"
      CLOUDMAP_SD_AMP_PROBE_INTERVAL          = "0s"
      AWS_REGION                              = local.region
    },
    length(var.namespaces) > 0 ? { CLOUDMAP_SD_NAMESPACE = join(",", var.namespaces) } : {},
    local.hosts_on ? {
      CLOUDMAP_SD_EC2_HOSTS_OUTPUT = "none"
      CLOUDMAP_SD_EC2_HOSTS_PORT   = join(",", var.ec2_hosts_ports)
    } : {},
    var.environment,
  )
}

# ---------------------------------------------------------------------------
# Cloud Map: the name collectors resolve (and, with scrape_itself, the tags that
# make cloudmap-sd list its own tasks)
# ---------------------------------------------------------------------------

module "registration" {
  source = "../scrape-target"

  name               = var.registry.service_name
  namespace_id       = var.registry.namespace_id
  description        = "cloudmap-sd http_sd endpoint of ${var.name}"
  dns_record_type    = "A"
  prometheus_enabled = var.registry.scrape_itself
  metrics_path       = "/metrics"
  metrics_port       = var.port
  tags               = var.tags
}

# ---------------------------------------------------------------------------
# The bearer token, when not given
# ---------------------------------------------------------------------------

resource "aws_secretsmanager_secret" "token" {
  #checkov:skip=CKV2_AWS_57:no Lambda rotation: the token is read by the sidecar and the collectors at task start, so a rotation is a new secret value followed by a redeployment of both (docs/deploy.md)
  count = local.create_token ? 1 : 0

  name_prefix = "${var.name}-http-sd-token-"
  description = "Bearer token of cloudmap-sd's /sd/* endpoints (${var.name})"
  kms_key_id  = var.token_kms_key_arn
  tags        = var.tags
}

data "aws_secretsmanager_random_password" "token" {
  count = local.create_token ? 1 : 0

  password_length     = 48
  exclude_punctuation = true
}

resource "aws_secretsmanager_secret_version" "token" {
  count = local.create_token ? 1 : 0

  secret_id     = aws_secretsmanager_secret.token[0].id
  secret_string = data.aws_secretsmanager_random_password.token[0].random_password

  lifecycle {
    # The data source draws a new value on every plan: keep the first one.
    ignore_changes = [secret_string]
  }
}

# ---------------------------------------------------------------------------
# Logs
# ---------------------------------------------------------------------------

resource "aws_cloudwatch_log_group" "this" {
  #checkov:skip=CKV_AWS_338:retention is an input (log_retention_days, default 30); these are the discovery service's operational logs
  name              = "/ecs/${var.name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.log_kms_key_arn
  tags              = var.tags
}

# ---------------------------------------------------------------------------
# Task definition and service
# ---------------------------------------------------------------------------

locals {
  log_configuration = {
    logDriver = "awslogs"
    options = {
      awslogs-group         = aws_cloudwatch_log_group.this.name
      awslogs-region        = local.region
      awslogs-stream-prefix = var.name
    }
  }

  init_container = {
    name                   = local.container_names.init
    image                  = var.init_image
    essential              = false
    user                   = "0"
    readonlyRootFilesystem = true
    entryPoint             = ["/bin/sh", "-c"]
    command                = ["set -eu; umask 077; printf '%s' \"$HTTP_SD_TOKEN\" > \"$TOKEN_FILE\"; chown \"$RUN_AS\" \"$TOKEN_DIR\" \"$TOKEN_FILE\"; chmod 0500 \"$TOKEN_DIR\"; chmod 0400 \"$TOKEN_FILE\"; echo \"init: token written to $TOKEN_FILE for $RUN_AS\""]
    environment = [for k, v in {
      RUN_AS     = var.run_as_user
      TOKEN_DIR  = local.token_dir
      TOKEN_FILE = local.token_file
    } : { name = k, value = v }]
    secrets     = [{ name = "HTTP_SD_TOKEN", valueFrom = local.token_secret_arn }]
    mountPoints = [{ sourceVolume = "token", containerPath = local.token_dir, readOnly = false }]
    logConfiguration = merge(local.log_configuration, {
      options = merge(local.log_configuration.options, { awslogs-stream-prefix = local.container_names.init })
    })
  }

  sidecar_container = {
    name                   = local.container_names.sidecar
    image                  = var.sidecar_image
    essential              = true
    user                   = var.run_as_user
    readonlyRootFilesystem = true
    entryPoint             = ["/cloudmap-sd"]
    command                = ["run"]
    environment            = [for k in sort(keys(local.environment)) : { name = k, value = local.environment[k] }]
    portMappings           = [{ containerPort = var.port, protocol = "tcp" }]
    mountPoints            = [{ sourceVolume = "token", containerPath = local.token_dir, readOnly = true }]
    dependsOn              = [{ containerName = local.container_names.init, condition = "SUCCESS" }]
    # Exec form: the image has no shell. Exits 0 once the first complete discovery
    # is served (no file: readiness follows discovery).
    healthCheck = {
      command     = ["CMD", "/cloudmap-sd", "healthcheck"]
      interval    = 10
      timeout     = 5
      retries     = 3
      startPeriod = 60
    }
    logConfiguration = local.log_configuration
  }
}

resource "aws_ecs_task_definition" "this" {
  family                   = var.name
  requires_compatibilities = [var.launch_type]
  network_mode             = "awsvpc"
  cpu                      = tostring(var.cpu)
  memory                   = tostring(var.memory)
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn

  container_definitions = jsonencode([local.init_container, local.sidecar_container])

  # Task-scoped, never on the host: the token lives as long as the task.
  volume {
    name = "token"
  }

  dynamic "runtime_platform" {
    for_each = local.is_fargate ? [1] : []
    content {
      operating_system_family = "LINUX"
      cpu_architecture        = var.cpu_architecture
    }
  }

  tags = var.tags

  lifecycle {
    precondition {
      condition     = !local.hosts_on || var.enable_ec2_enrichment
      error_message = "ec2_hosts_ports needs enable_ec2_enrichment = true: the hosts list is built from the EC2 host lookups."
    }
  }
}

resource "aws_ecs_service" "this" {
  #checkov:skip=CKV_AWS_332:platform_version is var.platform_version (default LATEST) on Fargate; it is null only for EC2, which has no platform versions
  name                               = var.name
  cluster                            = var.cluster_arn
  task_definition                    = aws_ecs_task_definition.this.arn
  desired_count                      = var.desired_count
  launch_type                        = var.launch_type
  platform_version                   = local.is_fargate ? var.platform_version : null
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200
  enable_ecs_managed_tags            = true
  propagate_tags                     = "SERVICE"
  wait_for_steady_state              = var.wait_for_steady_state

  network_configuration {
    subnets          = var.subnet_ids
    security_groups  = var.security_group_ids
    assign_public_ip = var.assign_public_ip
  }

  # ECS registers each task's IP under SERVICE.NAMESPACE, and deregisters it when
  # the task stops or turns UNHEALTHY.
  service_registries {
    registry_arn = module.registration.service_arn
  }

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  dynamic "ordered_placement_strategy" {
    for_each = local.is_fargate ? [] : [
      { type = "spread", field = "attribute:ecs.availability-zone" },
      { type = "spread", field = "instanceId" },
    ]
    content {
      type  = ordered_placement_strategy.value.type
      field = ordered_placement_strategy.value.field
    }
  }

  tags = var.tags

  lifecycle {
    precondition {
      condition     = local.is_fargate || !var.assign_public_ip
      error_message = "assign_public_ip works only with Fargate."
    }
  }
}
