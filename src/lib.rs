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
//! | [`aws`] | Cloud Map behind a narrow trait; SDK adapter; custom-endpoint fix |
//! | [`discovery`] | one cycle: listing, caches, revisions, last-known-good |
//! | [`targets`] | pure: snapshot -> sorted, labelled target groups |
//! | [`file_sd`] | atomic, change-only writer |
//! | [`metrics`] | the sidecar's own metrics |
//! | [`server`] | `/-/healthy`, `/-/ready`, `/metrics` |
//! | [`sidecar`] | the `run` loop and the `once` pass |
//! | [`telemetry`] | logging setup |
#![forbid(unsafe_code)]

pub mod aws;
pub mod config;
pub mod discovery;
pub mod file_sd;
pub mod metrics;
pub mod server;
pub mod sidecar;
pub mod targets;
pub mod telemetry;
