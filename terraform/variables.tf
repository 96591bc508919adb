# ---------------------------------------------------------------------------
# Naming
# ---------------------------------------------------------------------------

variable "name" {
  description = "Name of the deployment: task definition family, ECS service, IAM role and log group prefix."
  type        = string
  default     = "prometheus"

  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9_-]{0,37}$", var.name))
    error_message = "name must be 1-38 letters, digits, '-' or '_', starting with a letter or digit (IAM role names get a suffix)."
  }
}

variable "tags" {
  description = "Tags added to every resource the module creates."
  type        = map(string)
  default     = {}
}

# ---------------------------------------------------------------------------
# Where the task runs
# ---------------------------------------------------------------------------

variable "cluster_arn" {
  description = "ARN of the ECS cluster that runs the Prometheus service."
  type        = string

  validation {
    condition     = can(regex("^arn:[^:]+:ecs:[^:]+:[0-9]{12}:cluster/.+$", var.cluster_arn))
    error_message = "cluster_arn must be an ECS cluster ARN (arn:aws:ecs:REGION:ACCOUNT:cluster/NAME)."
  }
}

variable "launch_type" {
  description = "FARGATE or EC2. Sets the task definition's compatibility, and the service's launch type unless capacity_provider_strategy is given."
  type        = string
  default     = "FARGATE"

  validation {
    condition     = contains(["FARGATE", "EC2"], var.launch_type)
    error_message = "launch_type must be FARGATE or EC2."
  }
}

variable "capacity_provider_strategy" {
  description = "Capacity providers for the service instead of a launch type (e.g. FARGATE and FARGATE_SPOT, or an EC2 Auto Scaling group provider). Empty: use launch_type."
  type = list(object({
    capacity_provider = string
    weight            = optional(number, 1)
    base              = optional(number, 0)
  }))
  default = []
}

variable "create_service" {
  description = "Create the ECS service. False: only the task definition, roles, logs and workspace (run the task yourself)."
  type        = bool
  default     = true
}

variable "desired_count" {
  description = "Number of Prometheus tasks (HA replicas). Each one scrapes every target and remote-writes with its own __replica__; AMP keeps one."
  type        = number
  default     = 2

  validation {
    condition     = var.desired_count >= 0 && floor(var.desired_count) == var.desired_count
    error_message = "desired_count must be a whole number, 0 or more."
  }
}

variable "subnet_ids" {
  description = "Subnets for the tasks (awsvpc network mode). Required when create_service is true. They need a route to the AWS APIs (NAT or VPC endpoints) and to the scrape targets."
  type        = list(string)
  default     = []
}

variable "security_group_ids" {
  description = "Security groups for the tasks. They must allow egress to the scrape targets' metrics ports and HTTPS (443) to the AWS APIs; no ingress is needed."
  type        = list(string)
  default     = []
}

variable "assign_public_ip" {
  description = "Give each task a public IP (Fargate in public subnets without NAT only). Must be false for EC2."
  type        = bool
  default     = false
}

variable "platform_version" {
  description = "Fargate platform version (ignored for EC2). The shared volume, health checks and dependsOn need 1.4.0 or later."
  type        = string
  default     = "LATEST"
}

variable "cpu" {
  description = "Task CPU units (a valid Fargate combination with memory when launch_type is FARGATE)."
  type        = number
  default     = 512
}

variable "memory" {
  description = "Task memory in MiB."
  type        = number
  default     = 1024
}

variable "cpu_architecture" {
  description = "X86_64 or ARM64 (Fargate runtime platform; on EC2 the container instance decides). Every image must exist for it."
  type        = string
  default     = "X86_64"

  validation {
    condition     = contains(["X86_64", "ARM64"], var.cpu_architecture)
    error_message = "cpu_architecture must be X86_64 or ARM64."
  }
}

variable "ephemeral_storage_gib" {
  description = "Fargate ephemeral storage for the task (21-200 GiB); null keeps the 20 GiB default. Holds the local TSDB."
  type        = number
  default     = null

  validation {
    condition     = var.ephemeral_storage_gib == null || try(var.ephemeral_storage_gib >= 21 && var.ephemeral_storage_gib <= 200, false)
    error_message = "ephemeral_storage_gib must be null or between 21 and 200."
  }
}

variable "wait_for_steady_state" {
  description = "Make terraform apply wait until the service reaches a steady state."
  type        = bool
  default     = false
}

# ---------------------------------------------------------------------------
# Images and users
# ---------------------------------------------------------------------------

variable "sidecar_image" {
  description = "cloudmap-sd container image (the binary is /cloudmap-sd; the image has no shell)."
  type        = string
}

variable "prometheus_image" {
  description = "Prometheus container image. Must contain /bin/prometheus and a busybox /bin/sh with wget (the official images do) unless init_image is set."
  type        = string
  default     = "quay.io/prometheus/prometheus:v3.5.0"
}

variable "init_image" {
  description = "Image of the short-lived init container that prepares the volumes and renders prometheus.yml. Needs /bin/sh, wget, sed, chown. null: prometheus_image."
  type        = string
  default     = null
}

variable "run_as_user" {
  description = "Numeric uid:gid that both the sidecar and Prometheus run as, and that owns the shared volumes. 65534:65534 is the user the official Prometheus image runs as."
  type        = string
  default     = "65534:65534"

  validation {
    condition     = can(regex("^[1-9][0-9]*:[1-9][0-9]*$", var.run_as_user))
    error_message = "run_as_user must be a numeric, non-root uid:gid such as 65534:65534."
  }
}

# ---------------------------------------------------------------------------
# cloudmap-sd
# ---------------------------------------------------------------------------

variable "namespaces" {
  description = "Cloud Map namespace names to discover. Empty: every namespace in the Region. When set, DiscoverInstances is also limited to them in IAM."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for n in var.namespaces : trimspace(n) != "" && !strcontains(n, ",")])
    error_message = "namespaces must be non-empty names without commas."
  }
}

variable "discovery_role_arns" {
  description = "IAM roles in other accounts to discover in as well (CLOUDMAP_SD_ROLE_ARN), one per account; every target then carries aws_account_id. The task role gets sts:AssumeRole on exactly these ARNs. Create each role with modules/discovery-role in its account. Empty: the own account only."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for a in var.discovery_role_arns : can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]+$", a))])
    error_message = "discovery_role_arns must be IAM role ARNs (arn:aws:iam::ACCOUNT:role/NAME)."
  }

  validation {
    condition     = length(distinct([for a in var.discovery_role_arns : split(":", a)[4]])) == length(var.discovery_role_arns)
    error_message = "discovery_role_arns must name one role per account."
  }
}

variable "discovery_role_external_id" {
  description = "The external id the trust policies of discovery_role_arns ask for (CLOUDMAP_SD_ROLE_EXTERNAL_ID; modules/discovery-role's external_id). null: none."
  type        = string
  default     = null

  validation {
    condition     = var.discovery_role_external_id == null ? true : (length(var.discovery_role_external_id) >= 2 && length(var.discovery_role_external_id) <= 1224 && can(regex("^[A-Za-z0-9+=,.@:/_-]+$", var.discovery_role_external_id)))
    error_message = "discovery_role_external_id must be 2-1224 of A-Z a-z 0-9 + = , . @ : / _ -."
  }
}

variable "discovery_interval" {
  description = "Time between discovery cycles (CLOUDMAP_SD_INTERVAL, humantime such as 30s or 1m)."
  type        = string
  default     = "30s"

  validation {
    condition     = can(regex("^[0-9]+(ms|s|m|h)$", var.discovery_interval))
    error_message = "discovery_interval must look like 30s, 2m or 1h."
  }
}

variable "label_style" {
  description = "Target labels: default (cloudmap_*/ecs_* labels) or reloader (the labels of prometheus-sdconfig-reloader, whose cluster label overrides the cluster external label)."
  type        = string
  default     = "default"

  validation {
    condition     = contains(["default", "reloader"], var.label_style)
    error_message = "label_style must be default or reloader."
  }
}

variable "shard" {
  description = "Make this deployment one shard of several (CLOUDMAP_SD_SHARD=index/count, CLOUDMAP_SD_SHARD_KEY=key): it scrapes only the targets with md5(key) mod count == index. Deploy the module once per index with the same count; its desired_count tasks are that shard's HA replicas. key: service (default) or task. null: one deployment scrapes every target."
  type = object({
    index = number
    count = number
    key   = optional(string, "service")
  })
  default = null

  validation {
    condition = var.shard == null ? true : (
      var.shard.count >= 1 && var.shard.index >= 0 && var.shard.index < var.shard.count &&
      floor(var.shard.index) == var.shard.index && floor(var.shard.count) == var.shard.count &&
      contains(["service", "task"], var.shard.key)
    )
    error_message = "shard needs whole numbers 0 <= index < count and key service or task."
  }
}

variable "sidecar_port" {
  description = "Port of the sidecar's health and metrics server, bound to 127.0.0.1 inside the task (CLOUDMAP_SD_LISTEN)."
  type        = number
  default     = 9469

  validation {
    condition     = var.sidecar_port >= 1024 && var.sidecar_port <= 65535 && var.sidecar_port != 9090
    error_message = "sidecar_port must be 1024-65535 and not 9090 (Prometheus)."
  }
}

variable "sidecar_environment" {
  description = "Extra environment for the sidecar, e.g. RUST_LOG or CLOUDMAP_SD_HEALTH_STATUS."
  type        = map(string)
  default     = {}
}

variable "enable_ec2_enrichment" {
  description = "Label targets that run on EC2 container instances with their host: grants ecs:DescribeContainerInstances and ec2:DescribeInstances and sets CLOUDMAP_SD_EC2_ENRICHMENT. false (a Fargate-only fleet) drops both and makes the sidecar skip those calls."
  type        = bool
  default     = true
}

variable "enable_ecs_service_tags" {
  description = "A Cloud Map service without METRICS_* tags of its own (ECS Service Connect's) takes them from the ECS service its tasks belong to: grants ecs:DescribeServices and sets CLOUDMAP_SD_ECS_SERVICE_TAGS. false drops both (such services are then not scraped)."
  type        = bool
  default     = true
}

variable "ec2_hosts_ports" {
  description = "Scrape the EC2 container instances themselves (node exporter, cAdvisor) on these ports: the sidecar also writes the hosts file file_sd/ec2-hosts.json (CLOUDMAP_SD_EC2_HOSTS_OUTPUT, CLOUDMAP_SD_EC2_HOSTS_PORT), one target per host and port, and Prometheus scrapes it in the job ec2-hosts. The hosts are the container instances of every cluster a discovered task runs in (the task role gets ecs:ListContainerInstances), or the instances tagged ec2_hosts_tag. Needs enable_ec2_enrichment = true; a Fargate-only fleet has no EC2 hosts to scrape. Empty: off."
  type        = list(number)
  default     = []

  validation {
    condition = alltrue([for p in var.ec2_hosts_ports : p >= 1 && p <= 65535 && floor(p) == p]) && (
      length(distinct(var.ec2_hosts_ports)) == length(var.ec2_hosts_ports)
    )
    error_message = "ec2_hosts_ports must be distinct whole port numbers 1-65535."
  }
}

variable "ec2_hosts_tag" {
  description = "KEY=VALUE: with ec2_hosts_ports, the hosts are the running EC2 instances with this tag (CLOUDMAP_SD_EC2_HOSTS_TAG) instead of the container instances of the clusters whose tasks the sidecar finds; the task role then gets no ecs:ListContainerInstances. null: by cluster."
  type        = string
  default     = null

  validation {
    condition     = var.ec2_hosts_tag == null || can(regex("^[^=]+=", var.ec2_hosts_tag))
    error_message = "ec2_hosts_tag must look like KEY=VALUE (a non-empty tag key, then =, then the value), e.g. ecs-hosts=prod."
  }
}

# ---------------------------------------------------------------------------
# Prometheus
# ---------------------------------------------------------------------------

variable "scrape_interval" {
  description = "Prometheus global scrape_interval (also evaluation_interval)."
  type        = string
  default     = "30s"
}

variable "scrape_timeout" {
  description = "Prometheus global scrape_timeout (not longer than scrape_interval)."
  type        = string
  default     = "10s"
}

variable "job_name" {
  description = "job label of the targets found by cloudmap-sd."
  type        = string
  default     = "cloudmap"
}

variable "cluster_label" {
  description = "Value of the cluster external label (AMP's HA de-duplication group). null: the ECS cluster name, with -shard-<index> appended when shard is set. Every replica of one Prometheus deployment must share it, and shards must not."
  type        = string
  default     = null
}

variable "external_labels" {
  description = "More external labels for every series. cluster and __replica__ are set by the module and cannot be given here."
  type        = map(string)
  default     = {}

  validation {
    condition     = !contains(keys(var.external_labels), "cluster") && !contains(keys(var.external_labels), "__replica__")
    error_message = "external_labels must not contain cluster or __replica__; use cluster_label."
  }
}

variable "scrape_relabel_configs" {
  description = "relabel_configs of the job_name scrape job (the targets cloudmap-sd finds), rendered as in prometheus.yml; fields left null are not written. E.g. [{ action = \"labeldrop\", regex = \"namespace|taskid\" }] keeps the series identity of a reloader build that wrote neither label (docs/migration.md). Empty: no relabel_configs."
  type = list(object({
    source_labels = optional(list(string))
    separator     = optional(string)
    regex         = optional(string)
    modulus       = optional(number)
    target_label  = optional(string)
    replacement   = optional(string)
    action        = optional(string)
  }))
  default = []

  validation {
    condition = alltrue([for r in var.scrape_relabel_configs : r.action == null ? true : contains(
      ["replace", "keep", "drop", "keepequal", "dropequal", "hashmod", "labelmap", "labeldrop", "labelkeep", "lowercase", "uppercase"],
      r.action,
    )])
    error_message = "scrape_relabel_configs: action must be one of replace, keep, drop, keepequal, dropequal, hashmod, labelmap, labeldrop, labelkeep, lowercase, uppercase (null: replace)."
  }
}

variable "extra_scrape_configs" {
  description = "More Prometheus scrape_configs entries (objects as in prometheus.yml), appended after the module's jobs."
  type        = any
  default     = []
}

variable "retention_time" {
  description = "Local TSDB retention (--storage.tsdb.retention.time). AMP keeps the long-term data. Ignored when prometheus_mode is agent (no TSDB)."
  type        = string
  default     = "1d"
}

variable "prometheus_mode" {
  description = "server: Prometheus keeps a local TSDB (--storage.tsdb.*). agent: Prometheus's agent mode, which AMP's documentation recommends for remote-write-only setups: a write-ahead log only (--storage.agent.path), no queries, rules or alerting; --agent on 3.x images, --enable-feature=agent on 2.x images (a prometheus_image tag starting with v2.). The sidecar gets CLOUDMAP_SD_PROMETHEUS_MODE so its watch and `check` expect that mode."
  type        = string
  default     = "server"

  validation {
    condition     = contains(["server", "agent"], var.prometheus_mode)
    error_message = "prometheus_mode must be server or agent."
  }
}

variable "prometheus_extra_args" {
  description = "More Prometheus command-line flags."
  type        = list(string)
  default     = []
}

# ---------------------------------------------------------------------------
# Amazon Managed Service for Prometheus
# ---------------------------------------------------------------------------

variable "create_workspace" {
  description = "Create an AMP workspace. false: give workspace_id."
  type        = bool
  default     = true
}

variable "workspace_id" {
  description = "ID (ws-...) of an existing AMP workspace in the same account and Region, used when create_workspace is false."
  type        = string
  default     = null

  validation {
    condition     = var.workspace_id == null || can(regex("^ws-[0-9a-zA-Z-]+$", var.workspace_id))
    error_message = "workspace_id must look like ws-12345678-abcd-1234-abcd-123456789012."
  }
}

variable "workspace_alias" {
  description = "Alias of the created workspace. null: name."
  type        = string
  default     = null
}

variable "workspace_kms_key_arn" {
  description = "Customer managed KMS key for the created workspace. null: AWS owned key."
  type        = string
  default     = null
}

# ---------------------------------------------------------------------------
# Logs and IAM
# ---------------------------------------------------------------------------

variable "log_retention_days" {
  description = "Retention of the two CloudWatch log groups, in days."
  type        = number
  default     = 30
}

variable "log_kms_key_arn" {
  description = "KMS key ARN to encrypt the log groups. null: CloudWatch Logs default encryption."
  type        = string
  default     = null
}

variable "ecr_repository_arns" {
  description = "ECR repositories the images come from; the execution role may pull only from these. Empty: no ECR permissions (public images)."
  type        = list(string)
  default     = []
}

variable "permissions_boundary_arn" {
  description = "Permissions boundary for both IAM roles."
  type        = string
  default     = null
}
