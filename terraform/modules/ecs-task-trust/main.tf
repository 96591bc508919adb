# The trust policies of an ECS task's two roles, in one place for every module that
# runs a task (the Prometheus module, discovery-service, adot-collector).

# The execution role (used by the ECS agent) keeps the plain trust policy that the
# ECS documentation gives.
data "aws_iam_policy_document" "execution" {
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

# The task role (used by the containers) trusts only ECS tasks of this account and
# Region: the confused-deputy guard that the ECS documentation recommends for task
# roles.
data "aws_iam_policy_document" "task" {
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
      values   = [var.account_id]
    }

    condition {
      test     = "ArnLike"
      variable = "aws:SourceArn"
      values   = ["arn:${var.partition}:ecs:${var.region}:${var.account_id}:*"]
    }
  }
}
