//! cloudmap-sd: Prometheus file_sd targets from AWS Cloud Map, for a Prometheus
//! running beside it in an Amazon ECS task.
//!
//! Data flows one way (ARCHITECTURE.md at the repository root is the map):
//! aws adapters -> discovery -> enrich -> targets -> file_sd writer -> Prometheus,
//! with the run loop driving it, the HTTP server reading what it publishes, and the
//! remote-write watch beside it.
//!
//! | module | role |
//! |---|---|
//! | [`model`] | the plain data every stage shares; imports nothing of the crate |
//! | [`aws`] | Cloud Map, ECS, EC2 behind narrow traits; SDK adapters, error kinds, call accounting, fakes |
//! | [`discovery`] | one cycle: listing, per-service reads, caches, last-known-good |
//! | [`enrich`] | ECS task facts and EC2 hosts, cached, with a bounded hold |
//! | [`targets`] | pure: snapshot -> sorted, labelled target groups, rendered |
//! | [`file_sd`] | atomic, change-only writer and its directory rules |
//! | [`prom_config`] | a typed reading of prometheus.yml |
//! | [`remote_write`] | remote_write health: Prometheus metrics watch, AMP SigV4 probe |
//! | [`check`] | `check`: permissions, output directory, AMP probe, config lint |
//! | [`http_sd`] | `/sd/targets`, `/sd/hosts`: what the loop published, rendered on request, shards, token |
//! | [`server`] | `/-/healthy`, `/-/ready`, `/metrics`, and the http_sd routes |
//! | [`sidecar`] | the `run` loop and the `once` pass |
//! | [`metrics`] | puts every part's metrics in one registry |
//! | [`config`] | command line (clap), validation, every part's options built once |
//! | [`telemetry`] | logging setup |
#![forbid(unsafe_code)]
// The library logs through tracing; only the binary prints (the CLI's own output).
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod aws;
pub mod check;
pub mod config;
pub mod discovery;
pub mod enrich;
pub mod file_sd;
pub mod http_sd;
pub mod metrics;
pub mod model;
pub mod prom_config;
pub mod remote_write;
pub mod server;
pub mod sidecar;
pub mod targets;
pub mod telemetry;
