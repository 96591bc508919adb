# The role cloudmap-sd assumes in another account (the Prometheus module's
# discovery_role_arns): trusted by the Prometheus task role only (and only with the
# external id, when one is given), allowed exactly the sidecar's discovery calls in
# this account and Region: Cloud Map, and the ECS/EC2 enrichment as enabled. The
# statements mirror the task role's discovery statements in ../../iam.tf.

data "aws_partition" "current" {}
data "aws_region" "current" {}
data "aws_caller_identity" "current" {}

locals {
  partition  = data.aws_partition.current.partition
  region     = data.aws_region.current.name
  account_id = data.aws_caller_identity.current.account_id
}

data "aws_iam_policy_document" "trust" {
  statement {
    sid     = "PrometheusTaskRole"
    effect  = "Allow"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "AWS"
      identifiers = [var.prometheus_task_role_arn]
    }

    dynamic "condition" {
      for_each = var.external_id == null ? [] : [1]
      content {
        test     = "StringEquals"
        variable = "sts:ExternalId"
        values   = [var.external_id]
      }
    }
  }
}

resource "aws_iam_role" "this" {
  name                 = var.name
  description          = "cloudmap-sd discovery in this account, assumed by ${var.prometheus_task_role_arn}"
  assume_role_policy   = data.aws_iam_policy_document.trust.json
  max_session_duration = var.max_session_duration
  permissions_boundary = var.permissions_boundary_arn
  tags                 = var.tags

  lifecycle {
    precondition {
      condition     = !var.ec2_hosts_by_cluster || var.enable_ec2_enrichment
      error_message = "ec2_hosts_by_cluster needs enable_ec2_enrichment = true: the hosts file is built from the EC2 host lookups."
    }
  }
}

data "aws_iam_policy_document" "discovery" {
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
    for_each = var.enable_ec2_enrichment ? [1] : []
    content {
      sid       = "EcsDescribeContainerInstances"
      effect    = "Allow"
      actions   = ["ecs:DescribeContainerInstances"]
      resources = ["arn:${local.partition}:ecs:${local.region}:${local.account_id}:container-instance/*"]
    }
  }

  dynamic "statement" {
    for_each = var.ec2_hosts_by_cluster && var.enable_ec2_enrichment ? [1] : []
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
}

resource "aws_iam_role_policy" "discovery" {
  name   = var.name
  role   = aws_iam_role.this.id
  policy = data.aws_iam_policy_document.discovery.json
}
