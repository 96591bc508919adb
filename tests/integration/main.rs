//! The integration tests: the real `cloudmap-sd` binary (and the library where a test
//! needs its public API) against a real moto server, a fault proxy and a real
//! Prometheus, through the `cloudmap-sd-test-support` harness.
//!
//! One test binary, one module per subject: cargo links each test binary against
//! the whole AWS SDK, so one binary links once, and its tests share the machine
//! under one scheduler (`cargo test -- --test-threads N`).

mod accounts;
mod bad_input;
mod check;
mod cloudmap;
mod ecs_service_tags;
mod enrichment;
mod errors;
mod events;
mod faults;
mod http_sd;
mod ports;
mod prometheus;
mod remote_write;
mod topologies;
