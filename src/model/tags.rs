//! The service tags that describe scrape endpoints, and the rules discovery and
//! target building share about them: which endpoint and field a tag sets
//! ([`classify`]), that a service is scraped when it carries an endpoint path tag
//! ([`wants_scraping`]), and which tag set describes a service's endpoints when both
//! its Cloud Map service and its ECS service are tagged ([`has_endpoint_tags`]).
//! Reading the endpoints out of the tags is the targets module's.

use std::collections::BTreeMap;

/// The primary endpoint's path (required for it to be scraped).
pub const METRICS_PATH: &str = "METRICS_PATH";
/// The primary endpoint's port.
pub const METRICS_PORT: &str = "METRICS_PORT";
/// The primary endpoint's scheme (`http` or `https`).
pub const METRICS_SCHEME: &str = "METRICS_SCHEME";
/// The container whose port binding the primary endpoint's port names (bridge and
/// host network mode, when several containers bind that port).
pub const METRICS_CONTAINER: &str = "METRICS_CONTAINER";
/// The extra ECS endpoint's path (an ecs_exporter-style sidecar).
pub const ECS_METRICS_PATH: &str = "ECS_METRICS_PATH";
/// The extra ECS endpoint's port.
pub const ECS_METRICS_PORT: &str = "ECS_METRICS_PORT";
/// The extra ECS endpoint's container.
pub const ECS_METRICS_CONTAINER: &str = "ECS_METRICS_CONTAINER";
/// Prefixes of a named endpoint's tags: `METRICS_PATH_<name>` and so on.
pub const NAMED_PATH: &str = "METRICS_PATH_";
pub const NAMED_PORT: &str = "METRICS_PORT_";
pub const NAMED_SCHEME: &str = "METRICS_SCHEME_";
pub const NAMED_CONTAINER: &str = "METRICS_CONTAINER_";

/// The endpoint a tag belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointName<'a> {
    Primary,
    /// `ECS_METRICS_*`.
    Ecs,
    /// `METRICS_*_<name>`; the name may be empty (a malformed tag).
    Named(&'a str),
}

/// The field of an endpoint a tag sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Path,
    Port,
    Scheme,
    Container,
}

/// Which endpoint and field a tag key sets; None for a tag that describes no
/// endpoint.
pub fn classify(key: &str) -> Option<(EndpointName<'_>, Field)> {
    Some(match key {
        METRICS_PATH => (EndpointName::Primary, Field::Path),
        METRICS_PORT => (EndpointName::Primary, Field::Port),
        METRICS_SCHEME => (EndpointName::Primary, Field::Scheme),
        METRICS_CONTAINER => (EndpointName::Primary, Field::Container),
        ECS_METRICS_PATH => (EndpointName::Ecs, Field::Path),
        ECS_METRICS_PORT => (EndpointName::Ecs, Field::Port),
        ECS_METRICS_CONTAINER => (EndpointName::Ecs, Field::Container),
        k => [
            (NAMED_PATH, Field::Path),
            (NAMED_PORT, Field::Port),
            (NAMED_SCHEME, Field::Scheme),
            (NAMED_CONTAINER, Field::Container),
        ]
        .into_iter()
        .find_map(|(p, f)| k.strip_prefix(p).map(|name| (EndpointName::Named(name), f)))?,
    })
}

/// True when a service carries at least one endpoint path tag, i.e. wants scraping.
/// Untagged services cost no instance calls.
pub fn wants_scraping(tags: &BTreeMap<String, String>) -> bool {
    tags.keys()
        .any(|k| matches!(classify(k), Some((_, Field::Path))))
}

/// True when a service carries any endpoint tag (path, port, scheme or container).
/// A Cloud Map service that does is described by its own tags only; one that does
/// not may take its endpoint tags from its ECS service.
pub fn has_endpoint_tags(tags: &BTreeMap<String, String>) -> bool {
    tags.keys().any(|k| classify(k).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(keys: &[&str]) -> BTreeMap<String, String> {
        keys.iter()
            .map(|k| (k.to_string(), "v".to_string()))
            .collect()
    }

    #[test]
    fn tags_are_classified_by_endpoint_and_field() {
        assert_eq!(
            classify("METRICS_CONTAINER_exporter"),
            Some((EndpointName::Named("exporter"), Field::Container))
        );
        assert_eq!(
            classify("ECS_METRICS_CONTAINER"),
            Some((EndpointName::Ecs, Field::Container))
        );
        assert_eq!(
            classify("METRICS_PATH_"),
            Some((EndpointName::Named(""), Field::Path))
        );
        assert_eq!(classify("team"), None);
        assert_eq!(classify("ECS_METRICS_SCHEME"), None);
    }

    #[test]
    fn scraping_needs_a_path_and_any_endpoint_tag_claims_the_service() {
        assert!(wants_scraping(&tags(&["METRICS_PATH_x"])));
        assert!(!wants_scraping(&tags(&["METRICS_PORT", "team"])));
        assert!(has_endpoint_tags(&tags(&["METRICS_PORT", "team"])));
        assert!(has_endpoint_tags(&tags(&["METRICS_CONTAINER"])));
        assert!(!has_endpoint_tags(&tags(&["AmazonECSManaged", "team"])));
    }
}
