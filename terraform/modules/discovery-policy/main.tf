# The sidecar's discovery permissions in one account and Region, as a policy document:
# Cloud Map, and the ECS/EC2 enrichment as switched on. One place for them: the
# Prometheus module's task role (its own account) and modules/discovery-role (another
# account) both take their discovery statements from here.

data "aws_iam_policy_document" "this" {
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

  # GetService and ListTagsForResource act on a service ARN: limited to the account
  # and Region (a service ARN does not name its namespace, so no narrower pattern).
  statement {
    sid     = "CloudMapReadServices"
    effect  = "Allow"
    actions = ["servicediscovery:GetService", "servicediscovery:ListTagsForResource"]
    resources = [
      "arn:${var.partition}:servicediscovery:${var.region}:${var.account_id}:service/*",
    ]
  }

  # Task facts (cluster, service, task definition, container instance) for labels.
  statement {
    sid       = "EcsDescribeTasks"
    effect    = "Allow"
    actions   = ["ecs:DescribeTasks"]
    resources = ["arn:${var.partition}:ecs:${var.region}:${var.account_id}:task/*"]
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
      resources = ["arn:${var.partition}:ecs:${var.region}:${var.account_id}:service/*"]
    }
  }

  dynamic "statement" {
    for_each = var.enable_ec2_enrichment ? [1] : []
    content {
      sid       = "EcsDescribeContainerInstances"
      effect    = "Allow"
      actions   = ["ecs:DescribeContainerInstances"]
      resources = ["arn:${var.partition}:ecs:${var.region}:${var.account_id}:container-instance/*"]
    }
  }

  # The hosts file by cluster (ec2_hosts_ports without ec2_hosts_tag): the sidecar
  # lists the container instances of every cluster a discovered task runs in.
  # ListContainerInstances takes the cluster ARN as its resource, but those clusters
  # are the applications' (any cluster of the account whose tasks are in Cloud Map),
  # not known here, so the narrowest pattern is every cluster of the account and
  # Region; no "*". With a tag filter the hosts come from ec2:DescribeInstances alone
  # and this statement is left out.
  dynamic "statement" {
    for_each = var.ec2_hosts_by_cluster && var.enable_ec2_enrichment ? [1] : []
    content {
      sid       = "EcsListContainerInstances"
      effect    = "Allow"
      actions   = ["ecs:ListContainerInstances"]
      resources = ["arn:${var.partition}:ecs:${var.region}:${var.account_id}:cluster/*"]
    }
  }

  # ec2:DescribeInstances has no resource-level permissions; it is read-only and
  # limited to the Region by the condition.
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
        values   = [var.region]
      }
    }
  }
}
