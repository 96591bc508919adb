//! cloudmap-sd: Prometheus file_sd targets from AWS Cloud Map, for a Prometheus
//! running beside it in an Amazon ECS task.
//!
//! Data flows one way:
//! config -> aws adapters -> discovery -> targets -> file_sd writer -> Prometheus,
//! with the HTTP server reading shared state.
//!
//! | module | role |
//! |---|---|
//! | [`config`] | command line (clap), environment twins, validation |
//! | [`aws`] | Cloud Map, ECS, EC2 behind narrow traits; SDK adapters; custom-endpoint fix |
//! | [`discovery`] | one cycle: listing, caches, revisions, last-known-good |
//! | [`enrich`] | ECS task facts and EC2 host tags, cached, with a bounded hold |
//! | [`targets`] | pure: snapshot -> sorted, labelled target groups |
//! | [`file_sd`] | atomic, change-only writer |
//! | [`metrics`] | the sidecar's own metrics |
//! | [`remote_write`] | remote_write health: Prometheus metrics watch, AMP SigV4 probe |
//! | [`check`] | `check`: permissions, output directory, AMP probe, config lint |
//! | [`server`] | `/-/healthy`, `/-/ready`, `/metrics` |
//! | [`sidecar`] | the `run` loop and the `once` pass |
//! | [`telemetry`] | logging setup |
#![forbid(unsafe_code)]

pub mod aws;
pub mod check;
pub mod config;
pub mod discovery;
pub mod enrich;
pub mod file_sd;
pub mod metrics;
pub mod prom_config;
pub mod remote_write;
pub mod server;
pub mod sidecar;
pub mod targets;
pub mod telemetry;
