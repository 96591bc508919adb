# An AWS Distro for OpenTelemetry collector that takes its targets from cloudmap-sd's
# /sd/targets (http_sd, with the bearer token) and remote-writes them to AMP: the
# collector side of modules/discovery-service. One deployment per shard.

data "aws_partition" "current" {}
data "aws_region" "current" {}
data "aws_caller_identity" "current" {}

locals {
  partition  = data.aws_partition.current.partition
  dns_suffix = data.aws_partition.current.dns_suffix
  region     = data.aws_region.current.name
  account_id = data.aws_caller_identity.current.account_id
  is_fargate = var.launch_type == "FARGATE"

  workspace_arn    = "arn:${local.partition}:aps:${local.region}:${local.account_id}:workspace/${var.workspace_id}"
  remote_write_url = "https://aps-workspaces.${local.region}.${local.dns_suffix}/workspaces/${var.workspace_id}/api/v1/remote_write"

  sd_url = var.shard == null ? var.targets_url : "${var.targets_url}?shard=${var.shard.index}/${var.shard.count}&shard_key=${var.shard.key}"
  # The collector expands $${env:NAME} in its configuration: the token never sits in
  # the task definition, only in the secret ECS injects.
  token_env = "CLOUDMAP_SD_TOKEN"

  collector_config = yamlencode({
    extensions = {
      health_check = {}
      sigv4auth    = { region = local.region, service = "aps" }
    }
    receivers = {
      prometheus = {
        config = {
          global = { scrape_interval = var.scrape_interval }
          scrape_configs = [{
            job_name = var.job_name
            http_sd_configs = [merge(
              { url = local.sd_url, refresh_interval = var.refresh_interval },
              var.token_secret_arn == null ? {} : {
                authorization = { type = "Bearer", credentials = "$${env:${local.token_env}}" }
              },
            )]
          }]
        }
      }
    }
    exporters = {
      prometheusremotewrite = merge(
        { endpoint = local.remote_write_url, auth = { authenticator = "sigv4auth" } },
        length(var.external_labels) > 0 ? { external_labels = var.external_labels } : {},
      )
    }
    service = {
      extensions = ["health_check", "sigv4auth"]
      pipelines = {
        metrics = { receivers = ["prometheus"], exporters = ["prometheusremotewrite"] }
      }
    }
  })

  container = {
    name                   = "aws-otel-collector"
    image                  = var.image
    essential              = true
    readonlyRootFilesystem = true
    environment            = [{ name = "AOT_CONFIG_CONTENT", value = local.collector_config }]
    secrets                = var.token_secret_arn == null ? [] : [{ name = local.token_env, valueFrom = var.token_secret_arn }]
    # /healthcheck asks the health_check extension.
    healthCheck = {
      command     = ["/healthcheck"]
      interval    = 10
      timeout     = 5
      retries     = 3
      startPeriod = 30
    }
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.this.name
        awslogs-region        = local.region
        awslogs-stream-prefix = var.name
      }
    }
  }
}

resource "aws_cloudwatch_log_group" "this" {
  #checkov:skip=CKV_AWS_338:retention is an input (log_retention_days, default 30); these are the collector's operational logs, the metrics go to AMP
  name              = "/ecs/${var.name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.log_kms_key_arn
  tags              = var.tags
}

resource "aws_ecs_task_definition" "this" {
  family                   = var.name
  requires_compatibilities = [var.launch_type]
  network_mode             = "awsvpc"
  cpu                      = tostring(var.cpu)
  memory                   = tostring(var.memory)
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn

  container_definitions = jsonencode([local.container])

  dynamic "runtime_platform" {
    for_each = local.is_fargate ? [1] : []
    content {
      operating_system_family = "LINUX"
      cpu_architecture        = "X86_64"
    }
  }

  tags = var.tags
}

resource "aws_ecs_service" "this" {
  #checkov:skip=CKV_AWS_332:platform_version is var.platform_version (default LATEST) on Fargate; it is null only for EC2, which has no platform versions
  name                               = var.name
  cluster                            = var.cluster_arn
  task_definition                    = aws_ecs_task_definition.this.arn
  desired_count                      = var.desired_count
  launch_type                        = var.launch_type
  platform_version                   = local.is_fargate ? var.platform_version : null
  deployment_minimum_healthy_percent = 0
  deployment_maximum_percent         = 100
  enable_ecs_managed_tags            = true
  propagate_tags                     = "SERVICE"
  wait_for_steady_state              = var.wait_for_steady_state

  network_configuration {
    subnets          = var.subnet_ids
    security_groups  = var.security_group_ids
    assign_public_ip = var.assign_public_ip
  }

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  tags = var.tags

  lifecycle {
    precondition {
      condition     = local.is_fargate || !var.assign_public_ip
      error_message = "assign_public_ip works only with Fargate."
    }
  }
}

# ---------------------------------------------------------------------------
# IAM: the execution role reads the token, the task role writes to the workspace
# ---------------------------------------------------------------------------

# The two trust policies, from ../ecs-task-trust: the task role trusts only ECS
# tasks of this account and Region.
module "trust" {
  source = "../ecs-task-trust"

  partition  = local.partition
  region     = local.region
  account_id = local.account_id
}

resource "aws_iam_role" "execution" {
  name                 = "${var.name}-execution"
  description          = "ECS agent role of ${var.name}: write logs, read the http_sd token"
  assume_role_policy   = module.trust.execution_json
  permissions_boundary = var.permissions_boundary_arn
  tags                 = var.tags
}

data "aws_iam_policy_document" "execution" {
  statement {
    sid       = "WriteTaskLogs"
    effect    = "Allow"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.this.arn}:log-stream:*"]
  }

  dynamic "statement" {
    for_each = var.token_secret_arn == null ? [] : [1]
    content {
      sid       = "ReadHttpSdToken"
      effect    = "Allow"
      actions   = can(regex("^arn:[^:]+:ssm:", var.token_secret_arn)) ? ["ssm:GetParameters"] : ["secretsmanager:GetSecretValue"]
      resources = [var.token_secret_arn]
    }
  }

  dynamic "statement" {
    for_each = var.token_kms_key_arn == null ? [] : [1]
    content {
      sid       = "DecryptHttpSdToken"
      effect    = "Allow"
      actions   = ["kms:Decrypt"]
      resources = [var.token_kms_key_arn]
    }
  }
}

resource "aws_iam_role_policy" "execution" {
  name   = "${var.name}-execution"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution.json
}

resource "aws_iam_role" "task" {
  name                 = "${var.name}-task"
  description          = "Task role of ${var.name}: AMP remote write"
  assume_role_policy   = module.trust.task_json
  permissions_boundary = var.permissions_boundary_arn
  tags                 = var.tags
}

data "aws_iam_policy_document" "task" {
  statement {
    sid       = "AmpRemoteWrite"
    effect    = "Allow"
    actions   = ["aps:RemoteWrite"]
    resources = [local.workspace_arn]
  }
}

resource "aws_iam_role_policy" "task" {
  name   = "${var.name}-task"
  role   = aws_iam_role.task.id
  policy = data.aws_iam_policy_document.task.json
}
