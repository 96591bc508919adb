# The role cloudmap-sd assumes in another account (the Prometheus module's
# discovery_role_arns): trusted by the Prometheus task role only (and only with the
# external id, when one is given), allowed exactly the sidecar's discovery calls in
# this account and Region: Cloud Map, and the ECS/EC2 enrichment as enabled, the same
# statements as the task role's own (../discovery-policy).

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

module "discovery_policy" {
  source = "../discovery-policy"

  partition               = local.partition
  region                  = local.region
  account_id              = local.account_id
  namespaces              = var.namespaces
  enable_ec2_enrichment   = var.enable_ec2_enrichment
  enable_ecs_service_tags = var.enable_ecs_service_tags
  ec2_hosts_by_cluster    = var.ec2_hosts_by_cluster
}

resource "aws_iam_role_policy" "discovery" {
  name   = var.name
  role   = aws_iam_role.this.id
  policy = module.discovery_policy.json
}
