//! The service tags that describe scrape endpoints, and the one rule discovery and
//! target building share about them: a service is scraped when it carries an
//! endpoint path tag. Reading the endpoints out of the tags is the targets module's.

use std::collections::BTreeMap;

/// The primary endpoint's path (required for it to be scraped).
pub const METRICS_PATH: &str = "METRICS_PATH";
/// The primary endpoint's port.
pub const METRICS_PORT: &str = "METRICS_PORT";
/// The primary endpoint's scheme (`http` or `https`).
pub const METRICS_SCHEME: &str = "METRICS_SCHEME";
/// The extra ECS endpoint's path (an ecs_exporter-style sidecar).
pub const ECS_METRICS_PATH: &str = "ECS_METRICS_PATH";
/// The extra ECS endpoint's port.
pub const ECS_METRICS_PORT: &str = "ECS_METRICS_PORT";
/// Prefixes of a named endpoint's tags: `METRICS_PATH_<name>` and so on.
pub const NAMED_PATH: &str = "METRICS_PATH_";
pub const NAMED_PORT: &str = "METRICS_PORT_";
pub const NAMED_SCHEME: &str = "METRICS_SCHEME_";

/// True when a service carries at least one endpoint path tag, i.e. wants scraping.
/// Untagged services cost no instance calls.
pub fn wants_scraping(tags: &BTreeMap<String, String>) -> bool {
    tags.keys()
        .any(|k| k == METRICS_PATH || k == ECS_METRICS_PATH || k.starts_with(NAMED_PATH))
}
