# Two roles: the execution role is used by the ECS agent (pull images, write logs),
# the task role by the containers (cloudmap-sd and Prometheus).

# The execution role keeps the plain trust policy that the ECS documentation gives.
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

# The task role trusts only ECS tasks of this account and Region (the confused-deputy
# guard that the ECS documentation recommends for task roles).
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
  description          = "ECS agent role of ${var.name}: pull images, write the task's logs"
  assume_role_policy   = data.aws_iam_policy_document.execution_trust.json
  permissions_boundary = var.permissions_boundary_arn
  tags                 = var.tags
}

data "aws_iam_policy_document" "execution" {
  statement {
    sid     = "WriteTaskLogs"
    effect  = "Allow"
    actions = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = [
      "${aws_cloudwatch_log_group.prometheus.arn}:log-stream:*",
      "${aws_cloudwatch_log_group.sidecar.arn}:log-stream:*",
    ]
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
# Task role: exactly the calls cloudmap-sd and Prometheus make
# ---------------------------------------------------------------------------

resource "aws_iam_role" "task" {
  name                 = "${var.name}-task"
  description          = "Task role of ${var.name}: Cloud Map discovery, ECS/EC2 enrichment, AMP remote write"
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

  # DiscoverInstances* accept the servicediscovery:NamespaceName condition key: when
  # the namespaces are known, the role can read instances of those namespaces only.
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

  # GetService and ListTagsForResource act on a service ARN: limited to this account
  # and Region (a service ARN does not name its namespace, so no narrower pattern).
  statement {
    sid     = "CloudMapReadServices"
    effect  = "Allow"
    actions = ["servicediscovery:GetService", "servicediscovery:ListTagsForResource"]
    resources = [
      "arn:${local.partition}:servicediscovery:${local.region}:${local.account_id}:service/*",
    ]
  }

  # Task facts (cluster, service, task definition, container instance) for labels.
  statement {
    sid       = "EcsDescribeTasks"
    effect    = "Allow"
    actions   = ["ecs:DescribeTasks"]
    resources = ["arn:${local.partition}:ecs:${local.region}:${local.account_id}:task/*"]
  }

  # ECS service tags: the METRICS_* tags of the ECS services whose tasks are in a
  # Cloud Map service without tags of its own (Service Connect). DescribeServices
  # acts on service ARNs; the applications' services are not known to this module,
  # so every service of this account and Region.
  dynamic "statement" {
    for_each = var.enable_ecs_service_tags ? [1] : []
    content {
      sid       = "EcsDescribeServices"
      effect    = "Allow"
      actions   = ["ecs:DescribeServices"]
      resources = ["arn:${local.partition}:ecs:${local.region}:${local.account_id}:service/*"]
    }
  }

  dynamic "statement" {
    for_each = var.enable_ec2_enrichment ? [1] : []
    content {
      sid       = "EcsDescribeContainerInstances"
      effect    = "Allow"
      actions   = ["ecs:DescribeContainerInstances"]
      resources = ["arn:${local.partition}:ecs:${local.region}:${local.account_id}:container-instance/*"]
    }
  }

  # The hosts file by cluster (ec2_hosts_ports without ec2_hosts_tag): the sidecar
  # lists the container instances of every cluster a discovered task runs in.
  # ListContainerInstances takes the cluster ARN as its resource, but those clusters
  # are the applications' (any cluster of the account whose tasks are in Cloud Map),
  # not known to this module, so the narrowest pattern is every cluster of this
  # account and Region; no "*". With a tag filter the hosts come from
  # ec2:DescribeInstances alone and this statement is left out.
  dynamic "statement" {
    for_each = local.ec2_hosts_enabled && var.ec2_hosts_tag == null && var.enable_ec2_enrichment ? [1] : []
    content {
      sid       = "EcsListContainerInstances"
      effect    = "Allow"
      actions   = ["ecs:ListContainerInstances"]
      resources = ["arn:${local.partition}:ecs:${local.region}:${local.account_id}:cluster/*"]
    }
  }

  # ec2:DescribeInstances has no resource-level permissions; it is read-only and
  # limited to this Region by the condition.
  dynamic "statement" {
    for_each = var.enable_ec2_enrichment ? [1] : []
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

  # Prometheus: remote_write to this one workspace, nothing else.
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
