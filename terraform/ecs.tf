# One task, three containers, three task-scoped volumes:
#
#   init        (root, exits)  chowns file-sd and data to run_as_user, writes
#                              prometheus.yml with this task's __replica__
#   cloudmap-sd (run_as_user)  writes file-sd/cloudmap-sd.json (and, with
#                              ec2_hosts_ports, file-sd/ec2-hosts.json); HEALTHY
#                              after the first successful write
#   prometheus  (run_as_user)  starts when init succeeded AND cloudmap-sd is HEALTHY;
#                              reads config and file-sd, writes data
#
# The volumes have no host path: on Fargate they live on the task's ephemeral
# storage, on EC2 in a directory the agent creates; both disappear with the task.

locals {
  # Agent mode keeps a write-ahead log only: 2.x spells the switch
  # --enable-feature=agent, 3.x --agent; both refuse --storage.tsdb.* flags then.
  prometheus_agent_flag = can(regex(":v2\\.", var.prometheus_image)) ? "--enable-feature=agent" : "--agent"
  prometheus_storage_args = var.prometheus_mode == "agent" ? [
    local.prometheus_agent_flag,
    "--storage.agent.path=${local.data_dir}",
    ] : [
    "--storage.tsdb.path=${local.data_dir}",
    "--storage.tsdb.retention.time=${var.retention_time}",
  ]

  volumes = {
    config  = { name = "prometheus-config", path = local.config_dir }
    file_sd = { name = "file-sd", path = local.file_sd_dir }
    data    = { name = "prometheus-data", path = local.data_dir }
  }

  sidecar_environment = merge(
    {
      CLOUDMAP_SD_OUTPUT      = local.file_sd_file
      CLOUDMAP_SD_INTERVAL    = var.discovery_interval
      CLOUDMAP_SD_LISTEN      = "127.0.0.1:${var.sidecar_port}"
      CLOUDMAP_SD_LABEL_STYLE = var.label_style
      # The workspace Prometheus remote-writes to: the sidecar's AMP probe (and the
      # AMP row of `cloudmap-sd check`) signs an empty write to it with the task role.
      CLOUDMAP_SD_AMP_REMOTE_WRITE_URL = local.remote_write_url
      # Off: no ecs:DescribeContainerInstances or ec2:DescribeInstances call (the
      # task role lacks them then) and no EC2 host labels; ECS task facts stay.
      CLOUDMAP_SD_EC2_ENRICHMENT = tostring(var.enable_ec2_enrichment)
      # Off: no ecs:DescribeServices call (the task role lacks it then), and a
      # Cloud Map service without METRICS_* tags is not scraped.
      CLOUDMAP_SD_ECS_SERVICE_TAGS = tostring(var.enable_ecs_service_tags)
      # What the remote-write watch and `check` expect of Prometheus.
      CLOUDMAP_SD_PROMETHEUS_MODE = var.prometheus_mode
      AWS_REGION                  = local.region
    },
    # No variable at all (rather than an empty one) means every namespace.
    length(var.namespaces) > 0 ? { CLOUDMAP_SD_NAMESPACE = join(",", var.namespaces) } : {},
    # Other accounts: one role each, assumed with the task role.
    length(var.discovery_role_arns) > 0 ? { CLOUDMAP_SD_ROLE_ARN = join(",", var.discovery_role_arns) } : {},
    var.discovery_role_external_id == null ? {} : { CLOUDMAP_SD_ROLE_EXTERNAL_ID = var.discovery_role_external_id },
    var.shard == null ? {} : {
      CLOUDMAP_SD_SHARD     = "${var.shard.index}/${var.shard.count}"
      CLOUDMAP_SD_SHARD_KEY = var.shard.key
    },
    # The EC2 hosts file, beside the targets file (Prometheus's job ec2-hosts).
    local.ec2_hosts_enabled ? {
      CLOUDMAP_SD_EC2_HOSTS_OUTPUT = local.ec2_hosts_file
      CLOUDMAP_SD_EC2_HOSTS_PORT   = join(",", var.ec2_hosts_ports)
    } : {},
    local.ec2_hosts_enabled && var.ec2_hosts_tag != null ? { CLOUDMAP_SD_EC2_HOSTS_TAG = var.ec2_hosts_tag } : {},
    var.sidecar_environment,
  )

  init_container = {
    name                   = local.container_names.init
    image                  = coalesce(var.init_image, var.prometheus_image)
    essential              = false
    user                   = "0"
    readonlyRootFilesystem = true
    entryPoint             = ["/bin/sh", "-c"]
    command                = [file("${path.module}/templates/init.sh")]
    environment = [for k, v in {
      PROMETHEUS_CONFIG   = local.prometheus_config
      REPLICA_PLACEHOLDER = local.replica_placeholder
      RUN_AS              = var.run_as_user
      CONFIG_DIR          = local.config_dir
      FILE_SD_DIR         = local.file_sd_dir
      DATA_DIR            = local.data_dir
    } : { name = k, value = v }]
    mountPoints = [for v in values(local.volumes) : {
      sourceVolume  = v.name
      containerPath = v.path
      readOnly      = false
    }]
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.prometheus.name
        awslogs-region        = local.region
        awslogs-stream-prefix = local.container_names.init
      }
    }
  }

  sidecar_container = {
    name                   = local.container_names.sidecar
    image                  = var.sidecar_image
    essential              = true
    user                   = var.run_as_user
    readonlyRootFilesystem = true
    entryPoint             = ["/cloudmap-sd"]
    command                = ["run"]
    environment            = [for k in sort(keys(local.sidecar_environment)) : { name = k, value = local.sidecar_environment[k] }]
    mountPoints = [{
      sourceVolume  = local.volumes.file_sd.name
      containerPath = local.volumes.file_sd.path
      readOnly      = false
    }]
    dependsOn = [{ containerName = local.container_names.init, condition = "SUCCESS" }]
    # Exec form: the image has no shell. Exits 0 once the first file_sd write succeeded.
    healthCheck = {
      command     = ["CMD", "/cloudmap-sd", "healthcheck"]
      interval    = 10
      timeout     = 5
      retries     = 3
      startPeriod = 60
    }
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.sidecar.name
        awslogs-region        = local.region
        awslogs-stream-prefix = local.container_names.sidecar
      }
    }
  }

  prometheus_container = {
    name                   = local.container_names.prometheus
    image                  = var.prometheus_image
    essential              = true
    user                   = var.run_as_user
    readonlyRootFilesystem = true
    command = concat(
      ["--config.file=${local.config_dir}/prometheus.yml"],
      local.prometheus_storage_args,
      ["--web.listen-address=:9090"],
      var.prometheus_extra_args,
    )
    portMappings = [{ containerPort = 9090, protocol = "tcp" }]
    mountPoints = [
      { sourceVolume = local.volumes.config.name, containerPath = local.volumes.config.path, readOnly = true },
      { sourceVolume = local.volumes.file_sd.name, containerPath = local.volumes.file_sd.path, readOnly = true },
      { sourceVolume = local.volumes.data.name, containerPath = local.volumes.data.path, readOnly = false },
    ]
    dependsOn = [
      { containerName = local.container_names.init, condition = "SUCCESS" },
      { containerName = local.container_names.sidecar, condition = "HEALTHY" },
    ]
    healthCheck = {
      command     = ["CMD", "wget", "-q", "-T", "3", "-O", "/dev/null", "http://127.0.0.1:9090/-/healthy"]
      interval    = 15
      timeout     = 5
      retries     = 3
      startPeriod = 120
    }
    # Time to flush the remote-write queue on SIGTERM (Fargate allows up to 120 s).
    stopTimeout = 60
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.prometheus.name
        awslogs-region        = local.region
        awslogs-stream-prefix = local.container_names.prometheus
      }
    }
  }
}

resource "aws_ecs_task_definition" "this" {
  family                   = var.name
  requires_compatibilities = [var.launch_type]
  network_mode             = "awsvpc"
  cpu                      = tostring(var.cpu)
  memory                   = tostring(var.memory)
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn

  container_definitions = jsonencode([
    local.init_container,
    local.sidecar_container,
    local.prometheus_container,
  ])

  dynamic "volume" {
    for_each = local.volumes
    content {
      name = volume.value.name
    }
  }

  # Fargate only: on EC2 the container instance decides architecture and disk.
  dynamic "runtime_platform" {
    for_each = local.is_fargate ? [1] : []
    content {
      operating_system_family = "LINUX"
      cpu_architecture        = var.cpu_architecture
    }
  }

  dynamic "ephemeral_storage" {
    for_each = local.is_fargate && var.ephemeral_storage_gib != null ? [1] : []
    content {
      size_in_gib = var.ephemeral_storage_gib
    }
  }

  tags = var.tags

  lifecycle {
    # The sidecar refuses --ec2-hosts-output without its EC2 host lookups (exit 64),
    # and the role would lack their permissions: say so at plan time instead.
    precondition {
      condition     = length(var.ec2_hosts_ports) == 0 || var.enable_ec2_enrichment
      error_message = "ec2_hosts_ports needs enable_ec2_enrichment = true: the hosts file is built from the sidecar's EC2 host lookups. A Fargate-only fleet has no EC2 hosts to scrape; leave ec2_hosts_ports empty there."
    }
    precondition {
      condition     = var.ec2_hosts_tag == null || length(var.ec2_hosts_ports) > 0
      error_message = "ec2_hosts_tag selects the hosts of the ec2-hosts job: set ec2_hosts_ports (e.g. [9100]) too, or leave ec2_hosts_tag null."
    }
    precondition {
      condition     = length(var.ec2_hosts_ports) == 0 || var.job_name != local.ec2_hosts_job_name
      error_message = "job_name must not be ec2-hosts when ec2_hosts_ports is set: that is the name of the hosts' scrape job."
    }
    # The sidecar refuses --role-external-id without a --role-arn (exit 64).
    precondition {
      condition     = var.discovery_role_external_id == null || length(var.discovery_role_arns) > 0
      error_message = "discovery_role_external_id is for the roles of discovery_role_arns: give those too, or leave it null."
    }
  }
}

resource "aws_ecs_service" "this" {
  #checkov:skip=CKV_AWS_332:platform_version is var.platform_version (default LATEST) on Fargate; it is null only for EC2, which has no platform versions
  count = var.create_service ? 1 : 0

  name                               = var.name
  cluster                            = var.cluster_arn
  task_definition                    = aws_ecs_task_definition.this.arn
  desired_count                      = var.desired_count
  launch_type                        = length(var.capacity_provider_strategy) == 0 ? var.launch_type : null
  platform_version                   = local.is_fargate ? var.platform_version : null
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200
  enable_ecs_managed_tags            = true
  propagate_tags                     = "SERVICE"
  wait_for_steady_state              = var.wait_for_steady_state

  dynamic "capacity_provider_strategy" {
    for_each = var.capacity_provider_strategy
    content {
      capacity_provider = capacity_provider_strategy.value.capacity_provider
      weight            = capacity_provider_strategy.value.weight
      base              = capacity_provider_strategy.value.base
    }
  }

  network_configuration {
    subnets          = var.subnet_ids
    security_groups  = var.security_group_ids
    assign_public_ip = var.assign_public_ip
  }

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  # EC2: keep the replicas in different Availability Zones, then on different hosts.
  dynamic "ordered_placement_strategy" {
    for_each = local.is_fargate ? [] : [
      { type = "spread", field = "attribute:ecs.availability-zone" },
      { type = "spread", field = "instanceId" },
    ]
    content {
      type  = ordered_placement_strategy.value.type
      field = ordered_placement_strategy.value.field
    }
  }

  tags = var.tags

  lifecycle {
    precondition {
      condition     = length(var.subnet_ids) > 0
      error_message = "subnet_ids is required when create_service is true."
    }
    precondition {
      condition     = local.is_fargate || !var.assign_public_ip
      error_message = "assign_public_ip works only with Fargate."
    }
  }
}
