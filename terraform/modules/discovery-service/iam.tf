# Two roles: the execution role is used by the ECS agent (pull images, write logs,
# read the token for the init container), the task role by cloudmap-sd (Cloud Map,
# ECS and EC2 reads; no AMP: this service only discovers).

# The two trust policies, from ../ecs-task-trust.
module "trust" {
  source = "../ecs-task-trust"

  partition  = local.partition
  region     = local.region
  account_id = local.account_id
}

# ---------------------------------------------------------------------------
# Execution role
# ---------------------------------------------------------------------------

resource "aws_iam_role" "execution" {
  name                 = "${var.name}-execution"
  description          = "ECS agent role of ${var.name}: pull images, write logs, read the http_sd token"
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

  # The token, for the init container's `secrets` (this one secret or parameter).
  statement {
    sid       = "ReadHttpSdToken"
    effect    = "Allow"
    actions   = local.token_in_ssm ? ["ssm:GetParameters"] : ["secretsmanager:GetSecretValue"]
    resources = [local.token_secret_arn]
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

  dynamic "statement" {
    for_each = length(var.ecr_repository_arns) > 0 ? [1] : []
    content {
      sid       = "EcrLogin"
      effect    = "Allow"
      actions   = ["ecr:GetAuthorizationToken"]
      resources = ["*"] # GetAuthorizationToken has no resource-level permissions
    }
  }

  dynamic "statement" {
    for_each = length(var.ecr_repository_arns) > 0 ? [1] : []
    content {
      sid       = "EcrPullImages"
      effect    = "Allow"
      actions   = ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
      resources = var.ecr_repository_arns
    }
  }
}

resource "aws_iam_role_policy" "execution" {
  name   = "${var.name}-execution"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution.json
}

# ---------------------------------------------------------------------------
# Task role: the calls cloudmap-sd makes
# ---------------------------------------------------------------------------

resource "aws_iam_role" "task" {
  name                 = "${var.name}-task"
  description          = "Task role of ${var.name}: Cloud Map discovery and ECS/EC2 enrichment"
  assume_role_policy   = module.trust.task_json
  permissions_boundary = var.permissions_boundary_arn
  tags                 = var.tags
}

# The sidecar's discovery statements come from the one place that holds them
# (../discovery-policy, as for the Prometheus module's task role): Cloud Map, the
# ECS/EC2 enrichment as enabled, ecs:DescribeServices for ECS service tags, and
# ecs:ListContainerInstances when /sd/hosts lists the hosts by cluster.
module "discovery_policy" {
  source = "../discovery-policy"

  partition               = local.partition
  region                  = local.region
  account_id              = local.account_id
  namespaces              = var.namespaces
  enable_ec2_enrichment   = var.enable_ec2_enrichment
  enable_ecs_service_tags = var.enable_ecs_service_tags
  ec2_hosts_by_cluster    = local.hosts_on
}

resource "aws_iam_role_policy" "task" {
  name   = "${var.name}-task"
  role   = aws_iam_role.task.id
  policy = module.discovery_policy.json
}
