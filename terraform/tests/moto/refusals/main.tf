# Test-only root configuration: inputs the module must refuse at plan time, with the
# message each one must give. scripts/terraform-test.sh plans it against the moto
# server (nothing is applied) and verify.py `refusals` matches every error to its
# module call. Not meant for real AWS.
#
# The bad values come from variables: `terraform validate` sees root variables as
# unknown, so the configuration itself stays valid and only the plan refuses it.

terraform {
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.40.0, < 7.0.0"
    }
  }
}

variable "moto_endpoint" {
  description = "URL of the moto server, e.g. http://127.0.0.1:5000."
  type        = string

  validation {
    condition     = can(regex("^http://(127\\.[0-9.]+|localhost)(:[0-9]+)?$", var.moto_endpoint))
    error_message = "moto_endpoint must be a loopback http URL."
  }
}

variable "fargate_only" {
  description = "enable_ec2_enrichment of the Fargate-only fleet that asks for EC2 hosts anyway."
  type        = bool
  default     = false
}

variable "hosts_tag" {
  description = "A well-formed tag filter, given without ec2_hosts_ports."
  type        = string
  default     = "ecs-hosts=prod"
}

variable "malformed_tag" {
  description = "A tag filter without '='."
  type        = string
  default     = "ecs-hosts"
}

variable "repeated_ports" {
  description = "The same port twice."
  type        = list(number)
  default     = [9100, 9100]
}

variable "unknown_action" {
  description = "A relabel action Prometheus does not have."
  type        = string
  default     = "labeldorp"
}

variable "role_arns" {
  description = "Two roles in one account, and a user ARN."
  type        = list(string)
  default     = ["arn:aws:iam::111111111111:role/a", "arn:aws:iam::111111111111:role/b"]
}

variable "not_a_role" {
  description = "A user ARN where a role ARN belongs."
  type        = list(string)
  default     = ["arn:aws:iam::111111111111:user/a"]
}

variable "external_id" {
  description = "An external id given without any role."
  type        = string
  default     = "central-prometheus"
}

variable "hosts_job_name" {
  description = "job_name equal to the hosts' scrape job."
  type        = string
  default     = "ec2-hosts"
}

provider "aws" {
  region                      = "us-east-1"
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  skip_region_validation      = true

  endpoints {
    amp              = var.moto_endpoint
    ec2              = var.moto_endpoint
    ecs              = var.moto_endpoint
    iam              = var.moto_endpoint
    logs             = var.moto_endpoint
    servicediscovery = var.moto_endpoint
    sts              = var.moto_endpoint
  }
}

locals {
  cluster_arn = "arn:aws:ecs:us-east-1:123456789012:cluster/moto-refusals"
  image       = "registry.example.test/cloudmap-sd:test"
}

module "hosts_on_fargate_only_fleet" {
  source = "../../.."

  name                  = "refuse-fargate-hosts"
  cluster_arn           = local.cluster_arn
  create_service        = false
  sidecar_image         = local.image
  enable_ec2_enrichment = var.fargate_only
  ec2_hosts_ports       = [9100]
}

module "hosts_tag_without_ports" {
  source = "../../.."

  name           = "refuse-tag-only"
  cluster_arn    = local.cluster_arn
  create_service = false
  sidecar_image  = local.image
  ec2_hosts_tag  = var.hosts_tag
}

module "hosts_tag_malformed" {
  source = "../../.."

  name            = "refuse-bad-tag"
  cluster_arn     = local.cluster_arn
  create_service  = false
  sidecar_image   = local.image
  ec2_hosts_ports = [9100]
  ec2_hosts_tag   = var.malformed_tag
}

module "hosts_ports_repeated" {
  source = "../../.."

  name            = "refuse-ports"
  cluster_arn     = local.cluster_arn
  create_service  = false
  sidecar_image   = local.image
  ec2_hosts_ports = var.repeated_ports
}

module "relabel_unknown_action" {
  source = "../../.."

  name                   = "refuse-relabel"
  cluster_arn            = local.cluster_arn
  create_service         = false
  sidecar_image          = local.image
  scrape_relabel_configs = [{ action = var.unknown_action, regex = "namespace|taskid" }]
}

module "hosts_job_name_taken" {
  source = "../../.."

  name            = "refuse-job-name"
  cluster_arn     = local.cluster_arn
  create_service  = false
  sidecar_image   = local.image
  job_name        = var.hosts_job_name
  ec2_hosts_ports = [9100]
}

module "roles_in_one_account" {
  source = "../../.."

  name                = "refuse-two-roles"
  cluster_arn         = local.cluster_arn
  create_service      = false
  sidecar_image       = local.image
  discovery_role_arns = var.role_arns
}

module "role_arn_malformed" {
  source = "../../.."

  name                = "refuse-role-arn"
  cluster_arn         = local.cluster_arn
  create_service      = false
  sidecar_image       = local.image
  discovery_role_arns = var.not_a_role
}

module "external_id_without_roles" {
  source = "../../.."

  name                       = "refuse-external-id"
  cluster_arn                = local.cluster_arn
  create_service             = false
  sidecar_image              = local.image
  discovery_role_external_id = var.external_id
}
