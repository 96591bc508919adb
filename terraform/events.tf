# The ECS event stream (enable_events): an EventBridge rule for the module's
# clusters' "ECS Task State Change" events, and one SQS queue per replica, each a
# target of the rule. SQS gives each message to one reader, and both replicas of
# an HA pair must see every event, so each replica reads a queue of its own:
# with events on, the module runs one ECS service (and task definition) per
# replica, each told its queue's URL (see ecs.tf and docs/deploy.md).
#
# Each queue admits only this rule (aws:SourceArn), is encrypted (SSE-SQS, which
# EventBridge can write without a key policy), keeps a message an hour at most (the
# cycle catches up with anything older), and only the task role may read it.

locals {
  # One queue, task definition and ECS service per replica with events; one of each
  # (desired_count tasks) without.
  replicas = var.enable_events ? var.desired_count : 1
  # The clusters whose task events refresh the sidecar: those given, else the one
  # Prometheus runs in.
  events_cluster_arns = length(var.events_cluster_arns) > 0 ? var.events_cluster_arns : [var.cluster_arn]
}

resource "aws_cloudwatch_event_rule" "events" {
  count = var.enable_events ? 1 : 0

  name        = "${var.name}-ecs-tasks"
  description = "ECS task state changes of the clusters ${var.name} scrapes, for its cloudmap-sd sidecars."
  event_pattern = jsonencode({
    source        = ["aws.ecs"]
    "detail-type" = ["ECS Task State Change"]
    detail        = { clusterArn = local.events_cluster_arns }
  })
  tags = var.tags
}

resource "aws_sqs_queue" "events" {
  count = var.enable_events ? local.replicas : 0

  name                       = "${var.name}-events-${count.index}"
  sqs_managed_sse_enabled    = var.events_kms_key_arn == null
  kms_master_key_id          = var.events_kms_key_arn
  message_retention_seconds  = 3600
  visibility_timeout_seconds = 30
  receive_wait_time_seconds  = 20
  tags                       = var.tags
}

data "aws_iam_policy_document" "events_queue" {
  count = var.enable_events ? local.replicas : 0

  statement {
    sid       = "OnlyTheEcsTaskRule"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.events[count.index].arn]
    principals {
      type        = "Service"
      identifiers = ["events.${local.dns_suffix}"]
    }
    condition {
      test     = "ArnEquals"
      variable = "aws:SourceArn"
      values   = [aws_cloudwatch_event_rule.events[0].arn]
    }
  }
}

resource "aws_sqs_queue_policy" "events" {
  count = var.enable_events ? local.replicas : 0

  queue_url = aws_sqs_queue.events[count.index].id
  policy    = data.aws_iam_policy_document.events_queue[count.index].json
}

resource "aws_cloudwatch_event_target" "events" {
  count = var.enable_events ? local.replicas : 0

  rule      = aws_cloudwatch_event_rule.events[0].name
  target_id = "${var.name}-events-${count.index}"
  arn       = aws_sqs_queue.events[count.index].arn
}
