data "aws_partition" "current" {}
data "aws_region" "current" {}
data "aws_caller_identity" "current" {}

locals {
  partition  = data.aws_partition.current.partition
  dns_suffix = data.aws_partition.current.dns_suffix
  region     = data.aws_region.current.name
  account_id = data.aws_caller_identity.current.account_id

  cluster_name = element(split("/", var.cluster_arn), length(split("/", var.cluster_arn)) - 1)
  # Shards are separate HA groups in AMP: one shared cluster label would make AMP keep
  # one shard's samples and drop the others' as a standby replica's.
  cluster_label = coalesce(
    var.cluster_label,
    var.shard == null ? local.cluster_name : "${local.cluster_name}-shard-${var.shard.index}",
  )
  is_fargate = var.launch_type == "FARGATE"

  # --- AMP workspace, created or given ---
  workspace_id  = var.create_workspace ? aws_prometheus_workspace.this[0].id : var.workspace_id
  workspace_arn = var.create_workspace ? aws_prometheus_workspace.this[0].arn : "arn:${local.partition}:aps:${local.region}:${local.account_id}:workspace/${var.workspace_id}"
  # The documented AMP endpoint; the same for a created or a given workspace.
  remote_write_url = "https://aps-workspaces.${local.region}.${local.dns_suffix}/workspaces/${local.workspace_id}/api/v1/remote_write"

  # --- Paths inside the task (one volume each) ---
  config_dir   = "/etc/prometheus/config"
  file_sd_dir  = "/etc/prometheus/file_sd"
  data_dir     = "/prometheus"
  file_sd_file = "${local.file_sd_dir}/cloudmap-sd.json"

  # The EC2 hosts file (ec2_hosts_ports) sits beside the targets file on the same
  # volume. Each scrape job names its own file, no glob: a "*.json" would read the
  # hosts file into the job_name job too (every host scraped twice, once under the
  # wrong job). Neither name matches the sidecar's temporary files either
  # (".<name>.<random>.tmp"). tests/moto/verify.py checks both.
  ec2_hosts_enabled  = length(var.ec2_hosts_ports) > 0
  ec2_hosts_file     = "${local.file_sd_dir}/ec2-hosts.json"
  ec2_hosts_job_name = "ec2-hosts"
  # Null fields are left out of prometheus.yml, so Prometheus applies its defaults.
  scrape_relabel_configs = [for r in var.scrape_relabel_configs : { for k, v in r : k => v if v != null }]

  container_names = {
    init       = "init"
    sidecar    = "cloudmap-sd"
    prometheus = "prometheus"
  }

  # The init container replaces this string with the task ID (see templates/init.sh).
  replica_placeholder = "ECS_TASK_REPLICA_PLACEHOLDER"

  # --- prometheus.yml, rendered here, completed per task by the init container ---
  prometheus_config = yamlencode({
    global = {
      scrape_interval     = var.scrape_interval
      scrape_timeout      = var.scrape_timeout
      evaluation_interval = var.scrape_interval
      external_labels = merge(var.external_labels, {
        cluster     = local.cluster_label
        __replica__ = local.replica_placeholder
      })
    }
    scrape_configs = concat(
      [
        merge(
          {
            job_name = var.job_name
            file_sd_configs = [{
              # The targets file only: not the hosts file, not a temporary file.
              files            = [local.file_sd_file]
              refresh_interval = "5m"
            }]
          },
          # No relabel_configs key at all when the input is empty.
          length(local.scrape_relabel_configs) > 0 ? { relabel_configs = local.scrape_relabel_configs } : {},
        ),
      ],
      local.ec2_hosts_enabled ? [{
        job_name = local.ec2_hosts_job_name
        file_sd_configs = [{
          files            = [local.ec2_hosts_file]
          refresh_interval = "5m"
        }]
      }] : [],
      [
        {
          job_name       = "prometheus"
          static_configs = [{ targets = ["127.0.0.1:9090"] }]
        },
        {
          job_name       = "cloudmap-sd"
          static_configs = [{ targets = ["127.0.0.1:${var.sidecar_port}"] }]
        },
      ],
      var.extra_scrape_configs,
    )
    remote_write = [{
      url   = local.remote_write_url
      sigv4 = { region = local.region }
    }]
  })
}

# ---------------------------------------------------------------------------
# Amazon Managed Service for Prometheus
# ---------------------------------------------------------------------------

resource "aws_prometheus_workspace" "this" {
  count = var.create_workspace ? 1 : 0

  alias       = coalesce(var.workspace_alias, var.name)
  kms_key_arn = var.workspace_kms_key_arn
  tags        = var.tags

  lifecycle {
    precondition {
      condition     = var.workspace_id == null
      error_message = "Give workspace_id only with create_workspace = false."
    }
  }
}

# ---------------------------------------------------------------------------
# Logs
# ---------------------------------------------------------------------------

# Retention and KMS key are inputs (log_retention_days, log_kms_key_arn).
resource "aws_cloudwatch_log_group" "prometheus" {
  #checkov:skip=CKV_AWS_338:retention is an input (log_retention_days, default 30); these are operational logs of Prometheus and the sidecar, the metrics themselves go to AMP
  name              = "/ecs/${var.name}/prometheus"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.log_kms_key_arn
  tags              = var.tags
}

resource "aws_cloudwatch_log_group" "sidecar" {
  #checkov:skip=CKV_AWS_338:retention is an input (log_retention_days, default 30); these are operational logs of Prometheus and the sidecar, the metrics themselves go to AMP
  name              = "/ecs/${var.name}/cloudmap-sd"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.log_kms_key_arn
  tags              = var.tags
}
