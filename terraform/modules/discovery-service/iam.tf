# Two roles: the execution role is used by the ECS agent (pull images, write logs,
# read the token for the init container), the task role by cloudmap-sd (Cloud Map,
# ECS and EC2 reads; no AMP: this service only discovers).

data "aws_iam_policy_document" "execution_trust" {
  statement {
    sid     = "EcsTasks"
    effect  = "Allow"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
  }
}

# The task role trusts only ECS tasks of this account and Region.
data "aws_iam_policy_document" "task_trust" {
  statement {
    sid     = "EcsTasksOfThisAccount"
    effect  = "Allow"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }

    condition {
      test     = "ArnLike"
      variable = "aws:SourceArn"
      values   = ["arn:${local.partition}:ecs:${local.region}:${local.account_id}:*"]
    }
  }
}

# ---------------------------------------------------------------------------
# Execution role
# ---------------------------------------------------------------------------

resource "aws_iam_role" "execution" {
  name                 = "${var.name}-execution"
  description          = "ECS agent role of ${var.name}: pull images, write logs, read the http_sd token"
  assume_role_policy   = data.aws_iam_policy_document.execution_trust.json
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
  assume_role_policy   = data.aws_iam_policy_document.task_trust.json
  permissions_boundary = var.permissions_boundary_arn
  tags                 = var.tags
}

data "aws_iam_policy_document" "task" {
  # ListNamespaces, ListServices, DiscoverInstances and DiscoverInstancesRevision have
  # no resource-level permissions in IAM: the Resource must be "*".
  statement {
    sid       = "CloudMapList"
    effect    = "Allow"
    actions   = ["servicediscovery:ListNamespaces", "servicediscovery:ListServices"]
    resources = ["*"]
  }

  statement {
    sid       = "CloudMapDiscover"
    effect    = "Allow"
    actions   = ["servicediscovery:DiscoverInstances", "servicediscovery:DiscoverInstancesRevision"]
    resources = ["*"]

    dynamic "condition" {
      for_each = length(var.namespaces) > 0 ? [1] : []
      content {
        test     = "StringEquals"
        variable = "servicediscovery:NamespaceName"
        values   = var.namespaces
      }
    }
  }

  statement {
    sid     = "CloudMapReadServices"
    effect  = "Allow"
    actions = ["servicediscovery:GetService", "servicediscovery:ListTagsForResource"]
    resources = [
      "arn:${local.partition}:servicediscovery:${local.region}:${local.account_id}:service/*",
    ]
  }

  statement {
    sid       = "EcsDescribeTasks"
    effect    = "Allow"
    actions   = ["ecs:DescribeTasks"]
    resources = ["arn:${local.partition}:ecs:${local.region}:${local.account_id}:task/*"]
  }

  dynamic "statement" {
    for_each = local.ec2_lookups ? [1] : []
    content {
      sid       = "EcsDescribeContainerInstances"
      effect    = "Allow"
      actions   = ["ecs:DescribeContainerInstances"]
      resources = ["arn:${local.partition}:ecs:${local.region}:${local.account_id}:container-instance/*"]
    }
  }

  # /sd/hosts lists the container instances of every cluster a discovered task runs in.
  dynamic "statement" {
    for_each = local.hosts_on && local.ec2_lookups ? [1] : []
    content {
      sid       = "EcsListContainerInstances"
      effect    = "Allow"
      actions   = ["ecs:ListContainerInstances"]
      resources = ["arn:${local.partition}:ecs:${local.region}:${local.account_id}:cluster/*"]
    }
  }

  dynamic "statement" {
    for_each = local.ec2_lookups ? [1] : []
    content {
      sid       = "Ec2DescribeHosts"
      effect    = "Allow"
      actions   = ["ec2:DescribeInstances"]
      resources = ["*"]

      condition {
        test     = "StringEquals"
        variable = "aws:RequestedRegion"
        values   = [local.region]
      }
    }
  }
}

resource "aws_iam_role_policy" "task" {
  name   = "${var.name}-task"
  role   = aws_iam_role.task.id
  policy = data.aws_iam_policy_document.task.json
}
