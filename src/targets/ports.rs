//! Which port a target gets when its endpoint names a container port: in bridge and
//! host network mode a container port is reached on the host port ECS bound it to
//! (the task's `networkBindings`), not on the container port itself.

use super::endpoints::SkipReason;
use crate::model::TaskFacts;

/// The port to publish for `port`, a container port (a port tag's or
/// `--default-port`), of a task with `facts`; `container` is the container the
/// endpoint's container tag names, if any.
///
/// - No facts (not an ECS task, or enrichment off): `port` as it is.
/// - Facts without known bindings (published after the hold without its ECS
///   facts): unknown, so nothing is published rather than a guess.
/// - A container binds `port` over TCP: its host port. With a container tag only
///   that container's binding counts; without one, several containers binding
///   `port` is ambiguous.
/// - No container binds `port` (awsvpc and Fargate tasks bind none): `port` as it is.
pub(super) fn host_port(
    port: u16,
    container: Option<&str>,
    facts: Option<&TaskFacts>,
) -> Result<u16, SkipReason> {
    let Some(facts) = facts else {
        return Ok(port);
    };
    let Some(bindings) = &facts.bindings else {
        return Err(SkipReason::UnknownBindings);
    };
    let mut bound = bindings.iter().filter(|b| b.container_port == port);
    let Some(first) = bound.clone().next() else {
        return Ok(port);
    };
    match container {
        Some(name) => bound
            .find(|b| &*b.container == name)
            .map(|b| b.host_port)
            .ok_or(SkipReason::UnboundContainer),
        None if bound.any(|b| b.container != first.container) => Err(SkipReason::AmbiguousPort),
        None => Ok(first.host_port),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::PortBinding;

    fn facts(bindings: &[(&str, u16, u16)]) -> TaskFacts {
        TaskFacts {
            bindings: Some(
                bindings
                    .iter()
                    .map(|(c, cp, hp)| PortBinding {
                        container: Arc::from(*c),
                        container_port: *cp,
                        host_port: *hp,
                    })
                    .collect(),
            ),
            ..TaskFacts::default()
        }
    }

    #[test]
    fn a_bound_container_port_is_reached_on_its_host_port() {
        let f = facts(&[("app", 8080, 8080), ("exporter", 9100, 49153)]);
        assert_eq!(host_port(9100, None, Some(&f)), Ok(49153));
        assert_eq!(host_port(8080, None, Some(&f)), Ok(8080));
        assert_eq!(host_port(9100, Some("exporter"), Some(&f)), Ok(49153));
    }

    #[test]
    fn an_unbound_port_is_used_as_it_is() {
        let bridge = facts(&[("exporter", 9100, 49153)]);
        assert_eq!(host_port(9200, None, Some(&bridge)), Ok(9200));
        let awsvpc = facts(&[]);
        assert_eq!(host_port(9100, None, Some(&awsvpc)), Ok(9100));
        assert_eq!(host_port(9100, Some("exporter"), Some(&awsvpc)), Ok(9100));
        assert_eq!(host_port(9100, None, None), Ok(9100), "no facts");
    }

    #[test]
    fn several_containers_on_one_port_need_a_container_tag() {
        let f = facts(&[("a", 9100, 49153), ("b", 9100, 49154)]);
        assert_eq!(
            host_port(9100, None, Some(&f)),
            Err(SkipReason::AmbiguousPort)
        );
        assert_eq!(host_port(9100, Some("b"), Some(&f)), Ok(49154));
        assert_eq!(
            host_port(9100, Some("c"), Some(&f)),
            Err(SkipReason::UnboundContainer)
        );
    }

    #[test]
    fn unknown_bindings_publish_no_guess() {
        let f = TaskFacts::default();
        assert_eq!(
            host_port(9100, None, Some(&f)),
            Err(SkipReason::UnknownBindings)
        );
    }
}
