//! Test harness of cloudmap-sd, shared by the integration tests, the benchmark and the
//! demo: a real moto server, a counting/fault proxy in front of it, a seeder using the
//! real AWS SDK, stand-in metrics endpoints for a topology's tasks and hosts, the real
//! `cloudmap-sd` binary, and a real Prometheus. A missing tool
//! fails with instructions; nothing is skipped.
//!
//! It does not depend on the `cloudmap-sd` library (a dev-dependency cycle would build
//! the library twice); it drives the binary.

pub mod events;
pub mod exporter;
pub mod http;
pub mod load;
pub mod moto;
pub mod process;
pub mod prometheus;
pub mod proxy;
pub mod seeder;
pub mod sidecar;
pub mod sigv4;
pub mod topology;
pub mod wait;

pub use events::{EventQueue, TaskState};
pub use exporter::{Endpoint, Exporters};
pub use http::{Answer, get_status, http_get, http_get_with, http_post, post_blocking};
pub use load::{LoadReport, load};
pub use moto::Moto;
pub use process::{Proc, free_port, venv, which};
pub use prometheus::{
    FileSdStats, Mode, active_targets, file_sd_config, http_sd_job, prometheus, prometheus_bin,
    prometheus_in, prometheus_on,
};
pub use proxy::{
    AWS_DISCOVER_INSTANCES_DEFAULT_MAX, Fault, MOTO_ACCOUNT, Proxy, diff, operation_of,
};
pub use seeder::{ContainerSpec, REGION, Seeder, aws_env, role_arn, sdk_config, task_id};
pub use sidecar::{Sidecar, labels_of, parse_file, read_targets, run_cli, sidecar_bin, sum_metric};
pub use sigv4::{Sigv4Server, python};
pub use wait::{wait_for, wait_for_async};
