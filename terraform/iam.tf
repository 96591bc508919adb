# Two roles: the execution role is used by the ECS agent (pull images, write logs),
# the task role by the containers (cloudmap-sd and Prometheus).

# The two trust policies come from ./modules/ecs-task-trust (one place for every
# module that runs a task).
module "trust" {
  source = "./modules/ecs-task-trust"

  partition  = local.partition
  region     = local.region
  account_id = local.account_id
}

# ---------------------------------------------------------------------------
# Execution role
# ---------------------------------------------------------------------------

resource "aws_iam_role" "execution" {
  name                 = "${var.name}-execution"
  description          = "ECS agent role of ${var.name}: pull images, write the task's logs"
  assume_role_policy   = module.trust.execution_json
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

module "discovery_policy" {
  source = "./modules/discovery-policy"

  partition               = local.partition
  region                  = local.region
  account_id              = local.account_id
  namespaces              = var.namespaces
  enable_ec2_enrichment   = var.enable_ec2_enrichment
  enable_ecs_service_tags = var.enable_ecs_service_tags
  ec2_hosts_by_cluster    = local.ec2_hosts_enabled && var.ec2_hosts_tag == null
}

resource "aws_iam_role" "task" {
  name                 = "${var.name}-task"
  description          = "Task role of ${var.name}: Cloud Map discovery, ECS/EC2 enrichment, AMP remote write"
  assume_role_policy   = module.trust.task_json
  permissions_boundary = var.permissions_boundary_arn
  tags                 = var.tags
}

data "aws_iam_policy_document" "task" {
  # The sidecar's discovery in this account (modules/discovery-policy).
  source_policy_documents = [module.discovery_policy.json]

  # Other accounts (discovery_role_arns): the roles the sidecar assumes, exactly
  # those; each role's own policy says what it may do in its account.
  dynamic "statement" {
    for_each = length(var.discovery_role_arns) > 0 ? [1] : []
    content {
      sid       = "AssumeDiscoveryRoles"
      effect    = "Allow"
      actions   = ["sts:AssumeRole"]
      resources = var.discovery_role_arns
    }
  }

  # Prometheus: remote_write to this one workspace, nothing else.
  # The event queues (enable_events): read and delete, on those queues only.
  dynamic "statement" {
    for_each = var.enable_events ? [1] : []
    content {
      sid       = "ReadEventQueues"
      actions   = ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"]
      resources = aws_sqs_queue.events[*].arn
    }
  }
  dynamic "statement" {
    for_each = var.enable_events && var.events_kms_key_arn != null ? [1] : []
    content {
      sid       = "DecryptEventQueues"
      actions   = ["kms:Decrypt"]
      resources = [var.events_kms_key_arn]
    }
  }
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
