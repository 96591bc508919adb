//! Seeded topologies that more than one test module reads.

use cloudmap_sd_test_support::{Moto, Seeder};

/// Namespace `apps`: `web` (METRICS_PATH=/metrics, METRICS_PORT=9100) with two tasks,
/// `api` (METRICS_PATH=/m, ECS_METRICS_PATH=/stats, ECS_METRICS_PORT=9779) with one
/// task on port 8080: four targets. Returns the seeder and web's service id.
pub async fn four_targets(moto: &Moto) -> (Seeder, String) {
    let s = Seeder::new(&moto.url).await;
    let ns = s.http_namespace("apps").await;
    let web = s
        .service(
            &ns,
            "web",
            &[("METRICS_PATH", "/metrics"), ("METRICS_PORT", "9100")],
        )
        .await;
    let api = s
        .service(
            &ns,
            "api",
            &[
                ("METRICS_PATH", "/m"),
                ("ECS_METRICS_PATH", "/stats"),
                ("ECS_METRICS_PORT", "9779"),
            ],
        )
        .await;
    s.task(&web, "0a0a", "127.0.0.11", None).await;
    s.task(&web, "0b0b", "127.0.0.12", None).await;
    s.task(&api, "0c0c", "127.0.0.13", Some(8080)).await;
    (s, web)
}
