//! Target building from literal fixtures.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::endpoints::{parse_port, valid_path};
use super::*;
use crate::model::tags::wants_scraping;
use crate::model::{Host, Instance, ServiceData, TaskFacts, attr};

fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn ecs_instance(id: &str, ip: &str, port: Option<&str>) -> Instance {
    let mut a = tags(&[
        (attr::IPV4, ip),
        (attr::AZ, "us-east-1a"),
        (attr::ECS_CLUSTER, "prod"),
        (attr::ECS_SERVICE, "web"),
        (attr::ECS_TASK_FAMILY, "web-td"),
    ]);
    if let Some(p) = port {
        a.insert(attr::PORT.into(), p.into());
    }
    Instance {
        id: id.into(),
        attributes: a.into(),
    }
}

fn svc(name: &str, t: &[(&str, &str)], instances: Vec<Instance>) -> ServiceData {
    ServiceData {
        namespace: "ns".into(),
        service: name.into(),
        tags: tags(t).into(),
        instances: instances.into(),
        ecs_service: None,
    }
}

fn opts() -> TargetOptions {
    TargetOptions::default()
}

fn run(services: Vec<ServiceData>) -> Built {
    build(
        &Snapshot {
            services,
            ..Snapshot::default()
        },
        &opts(),
    )
}

fn addrs(b: &Built) -> Vec<(String, String)> {
    b.groups
        .iter()
        .map(|g| (g.targets[0].clone(), g.labels["__metrics_path__"].clone()))
        .collect()
}

#[test]
fn primary_endpoint_with_all_default_labels() {
    let b = run(vec![svc(
        "web",
        &[("METRICS_PATH", "/metrics"), ("METRICS_PORT", "9100")],
        vec![ecs_instance("task1", "10.0.0.1", Some("8080"))],
    )]);
    assert!(b.skipped.is_empty());
    assert_eq!(b.groups.len(), 1);
    let g = &b.groups[0];
    assert_eq!(g.targets, vec!["10.0.0.1:9100"]);
    let expect = [
        ("__metrics_path__", "/metrics"),
        ("cloudmap_namespace", "ns"),
        ("cloudmap_service", "web"),
        ("ecs_cluster", "prod"),
        ("ecs_service", "web"),
        ("ecs_task_family", "web-td"),
        ("ecs_task_id", "task1"),
        ("availability_zone", "us-east-1a"),
        (
            "__meta_cloudmap_instance_attribute_AWS_INSTANCE_PORT",
            "8080",
        ),
        ("__meta_cloudmap_service_tag_METRICS_PORT", "9100"),
    ];
    for (k, v) in expect {
        assert_eq!(g.labels.get(k).map(String::as_str), Some(v), "label {k}");
    }
    assert!(
        !g.labels.contains_key("cluster"),
        "never a bare cluster label"
    );
    assert!(!g.labels.contains_key("metrics_endpoint"));
    assert!(!g.labels.contains_key("__scheme__"));
    assert!(
        !g.labels.contains_key("__address__"),
        "Prometheus sets __address__ from targets"
    );
}

/// The labels of the one target of `s` labelled with `meta`.
fn labels_with(meta: MetaLabels, style: LabelStyle, s: ServiceData) -> BTreeMap<String, String> {
    let o = TargetOptions {
        meta_labels: meta,
        label_style: style,
        ..opts()
    };
    let snapshot = Snapshot {
        services: vec![s],
        ..Snapshot::default()
    };
    let b = build(&snapshot, &o);
    let mut rendered = Vec::new();
    render_to(&snapshot, &o, &mut rendered).unwrap();
    assert_eq!(
        rendered,
        to_json(&b.groups),
        "render_to is build, byte for byte"
    );
    b.groups[0].labels.clone()
}

#[test]
fn meta_labels_choose_which_families_are_written() {
    let s = || {
        svc(
            "web",
            &[("METRICS_PATH", "/metrics"), ("team", "blue")],
            vec![ecs_instance("task1", "10.0.0.1", Some("8080"))],
        )
    };
    let meta = |l: &BTreeMap<String, String>| -> Vec<String> {
        l.keys()
            .filter(|k| k.starts_with("__meta_"))
            .cloned()
            .collect()
    };
    let plain = |l: &BTreeMap<String, String>| -> BTreeMap<String, String> {
        l.iter()
            .filter(|(k, _)| !k.starts_with("__meta_"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let all = labels_with(MetaLabels::All, LabelStyle::Default, s());
    assert_eq!(
        meta(&all),
        vec![
            "__meta_cloudmap_instance_attribute_AVAILABILITY_ZONE",
            "__meta_cloudmap_instance_attribute_AWS_INSTANCE_IPV4",
            "__meta_cloudmap_instance_attribute_AWS_INSTANCE_PORT",
            "__meta_cloudmap_instance_attribute_ECS_CLUSTER_NAME",
            "__meta_cloudmap_instance_attribute_ECS_SERVICE_NAME",
            "__meta_cloudmap_instance_attribute_ECS_TASK_DEFINITION_FAMILY",
            "__meta_cloudmap_service_tag_METRICS_PATH",
            "__meta_cloudmap_service_tag_team",
        ]
    );
    let tags = labels_with(MetaLabels::Tags, LabelStyle::Default, s());
    assert_eq!(
        meta(&tags),
        vec![
            "__meta_cloudmap_service_tag_METRICS_PATH",
            "__meta_cloudmap_service_tag_team",
        ]
    );
    assert_eq!(tags["__meta_cloudmap_service_tag_team"], "blue");
    let none = labels_with(MetaLabels::None, LabelStyle::Default, s());
    assert!(meta(&none).is_empty(), "{none:?}");
    // The plain labels are the same whatever the choice.
    assert_eq!(plain(&all), plain(&tags));
    assert_eq!(plain(&all), plain(&none));
    // The reloader style has no __meta_* labels at all.
    let reloader = labels_with(MetaLabels::All, LabelStyle::Reloader, s());
    assert!(meta(&reloader).is_empty(), "{reloader:?}");
}

#[test]
fn every_meta_family_is_decided_in_one_place() {
    use super::plan::MetaFamily;
    let o = |meta_labels, label_style| TargetOptions {
        meta_labels,
        label_style,
        ..opts()
    };
    for (family, tags) in [
        (MetaFamily::InstanceAttribute, false),
        (MetaFamily::ServiceTag, true),
        (MetaFamily::EcsServiceTag, true),
    ] {
        assert!(family.written(&o(MetaLabels::All, LabelStyle::Default)));
        assert_eq!(
            family.written(&o(MetaLabels::Tags, LabelStyle::Default)),
            tags
        );
        assert!(!family.written(&o(MetaLabels::None, LabelStyle::Default)));
        assert!(!family.written(&o(MetaLabels::All, LabelStyle::Reloader)));
    }
}

#[test]
fn port_falls_back_to_instance_port_then_default_port() {
    let s = || {
        svc(
            "web",
            &[("METRICS_PATH", "/m")],
            vec![
                ecs_instance("a", "10.0.0.1", Some("8080")),
                ecs_instance("b", "10.0.0.2", None),
            ],
        )
    };
    let b = run(vec![s()]);
    assert_eq!(addrs(&b), vec![("10.0.0.1:8080".into(), "/m".into())]);
    assert_eq!(b.skipped.len(), 1);
    assert_eq!(b.skipped[0].reason, SkipReason::MissingPort);
    assert_eq!(b.skipped[0].instance.as_deref(), Some("b"));

    let o = TargetOptions {
        default_port: Some(80),
        ..opts()
    };
    let b = build(
        &Snapshot {
            services: vec![s()],
            ..Snapshot::default()
        },
        &o,
    );
    assert_eq!(
        addrs(&b),
        vec![
            ("10.0.0.1:8080".into(), "/m".into()),
            ("10.0.0.2:80".into(), "/m".into())
        ]
    );
    assert!(b.skipped.is_empty());
}

#[test]
fn ecs_and_named_endpoints_add_targets_with_metrics_endpoint() {
    let b = run(vec![svc(
        "web",
        &[
            ("METRICS_PATH", "/metrics"),
            ("METRICS_PORT", "8080"),
            ("ECS_METRICS_PATH", "/stats"),
            ("ECS_METRICS_PORT", "9779"),
            ("METRICS_PATH_admin", "/admin/metrics"),
            ("METRICS_PORT_admin", "9000"),
            ("METRICS_SCHEME_admin", "HTTPS"),
        ],
        vec![ecs_instance("t", "10.0.0.1", None)],
    )]);
    assert!(b.skipped.is_empty(), "{:?}", b.skipped);
    let got: Vec<_> = b
        .groups
        .iter()
        .map(|g| {
            (
                g.targets[0].as_str(),
                g.labels.get("metrics_endpoint").map(String::as_str),
                g.labels.get("__scheme__").map(String::as_str),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("10.0.0.1:8080", None, None),
            ("10.0.0.1:9000", Some("admin"), Some("https")),
            ("10.0.0.1:9779", Some("ecs"), None),
        ]
    );
}

#[test]
fn malformed_tags_skip_only_that_endpoint() {
    let b = run(vec![
        svc(
            "bad",
            &[
                ("METRICS_PATH", "/metrics"),
                ("METRICS_PORT", "99999"),
                ("METRICS_PATH_x", "metrics"),
                ("METRICS_PATH_y", "/ok"),
                ("METRICS_PORT_y", "http"),
                ("METRICS_PATH_z", "/z"),
                ("METRICS_SCHEME_z", "ftp"),
                ("METRICS_PATH_", "/empty"),
                ("METRICS_PORT_w", "9000"),
                ("METRICS_PATH_ok", "/fine"),
                ("METRICS_PORT_ok", " 9001 "),
            ],
            vec![ecs_instance("t", "10.0.0.1", Some("8080"))],
        ),
        svc(
            "good",
            &[("METRICS_PATH", "/metrics")],
            vec![ecs_instance("u", "10.0.0.2", Some("8080"))],
        ),
    ]);
    assert_eq!(
        addrs(&b),
        vec![
            ("10.0.0.1:9001".into(), "/fine".into()),
            ("10.0.0.2:8080".into(), "/metrics".into())
        ]
    );
    let reasons: Vec<_> = b
        .skipped
        .iter()
        .map(|s| (s.service.as_str(), s.tag.as_str(), s.reason))
        .collect();
    assert_eq!(
        reasons,
        vec![
            ("bad", "METRICS_PATH_", SkipReason::InvalidName),
            ("bad", "METRICS_PATH_x", SkipReason::InvalidPath),
            ("bad", "METRICS_PORT", SkipReason::InvalidPort),
            ("bad", "METRICS_PORT_w", SkipReason::MissingPath),
            ("bad", "METRICS_PORT_y", SkipReason::InvalidPort),
            ("bad", "METRICS_SCHEME_z", SkipReason::InvalidScheme),
        ]
    );
    let port = b.skipped.iter().find(|s| s.tag == "METRICS_PORT").unwrap();
    assert_eq!(port.value.as_deref(), Some("99999"));
}

#[test]
fn services_counts_only_services_with_a_target() {
    let snapshot = Snapshot {
        services: vec![
            svc(
                "two-targets",
                &[("METRICS_PATH", "/metrics"), ("ECS_METRICS_PATH", "/m")],
                vec![ecs_instance("t", "10.0.0.1", Some("8080"))],
            ),
            // Tagged, but its one endpoint is malformed: no target.
            svc(
                "malformed",
                &[("METRICS_PATH", "/metrics"), ("METRICS_PORT", "http")],
                vec![ecs_instance("u", "10.0.0.2", Some("8080"))],
            ),
            // Tagged, with no task.
            svc("scaled-to-zero", &[("METRICS_PATH", "/metrics")], vec![]),
        ],
        ..Snapshot::default()
    };
    let s = summarize(&snapshot, &opts());
    assert_eq!((s.targets, s.services, s.skipped.len()), (2, 1, 1));
}

#[test]
fn port_and_path_validation() {
    for ok in ["1", "80", "65535", " 8080"] {
        assert!(parse_port(ok).is_some(), "{ok}");
    }
    for bad in ["0", "65536", "-1", "+80", "80a", "", "8080.0", "http", "१२"] {
        assert!(parse_port(bad).is_none(), "{bad}");
    }
    assert!(valid_path("/metrics"));
    assert!(valid_path("/a/b?x=1"));
    for bad in ["metrics", "", "/a b", "/a\tb", "/\u{7}"] {
        assert!(!valid_path(bad), "{bad:?}");
    }
}

#[test]
fn instance_address_forms() {
    let mut v6 = ecs_instance("v6", "", Some("8080"));
    v6.attributes.insert(attr::IPV6, "2600:1f18::1");
    let mut none = ecs_instance("none", "", Some("8080"));
    none.attributes.remove(attr::IPV4);
    let mut bad_port = ecs_instance("bp", "10.0.0.3", Some("eighty"));
    bad_port.attributes.insert("custom attr", "x");
    let garbage = ecs_instance("gb", "10.0.0.1:80", Some("8080"));
    let mut v6_in_v4 = ecs_instance("v6in4", "2600:1f18::2", Some("8080"));
    v6_in_v4.attributes.insert(attr::IPV6, "2600:1f18::2");
    let b = run(vec![svc(
        "web",
        &[("METRICS_PATH", "/m")],
        vec![v6, none, bad_port, garbage, v6_in_v4],
    )]);
    assert_eq!(
        addrs(&b),
        vec![
            ("[2600:1f18::1]:8080".into(), "/m".into()),
            ("[2600:1f18::2]:8080".into(), "/m".into())
        ]
    );
    let reasons: Vec<_> = b
        .skipped
        .iter()
        .map(|s| (s.instance.as_deref().unwrap(), s.reason))
        .collect();
    assert_eq!(
        reasons,
        vec![
            ("none", SkipReason::MissingAddress),
            ("gb", SkipReason::InvalidAddress),
            ("bp", SkipReason::InvalidPort)
        ]
    );
}

#[test]
fn untagged_services_are_not_scraped() {
    assert!(!wants_scraping(&tags(&[
        ("team", "a"),
        ("METRICS_PORT", "1")
    ])));
    assert!(wants_scraping(&tags(&[("METRICS_PATH", "/m")])));
    assert!(wants_scraping(&tags(&[("ECS_METRICS_PATH", "/m")])));
    assert!(wants_scraping(&tags(&[("METRICS_PATH_x", "/m")])));
    let b = run(vec![svc(
        "plain",
        &[("team", "a")],
        vec![ecs_instance("t", "10.0.0.1", Some("80"))],
    )]);
    assert_eq!(b, Built::default());
}

#[test]
fn reloader_style_emits_exactly_the_old_labels() {
    let s = svc(
        "web",
        &[("METRICS_PATH", "/metrics"), ("METRICS_SCHEME", "https")],
        vec![ecs_instance("task9", "10.0.0.9", Some("8080"))],
    );
    let o = TargetOptions {
        label_style: LabelStyle::Reloader,
        ..opts()
    };
    let b = build(
        &Snapshot {
            services: vec![s],
            ..Snapshot::default()
        },
        &o,
    );
    let l = &b.groups[0].labels;
    let keys: Vec<_> = l.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        vec![
            "__metrics_path__",
            "__scheme__",
            "cluster",
            "instance",
            "namespace",
            "service",
            "taskdefinition",
            "taskid"
        ]
    );
    assert_eq!(l["cluster"], "prod");
    assert_eq!(l["instance"], "10.0.0.9");
    assert_eq!(l["taskid"], "task9");
    assert_eq!(l["namespace"], "ns");
    assert_eq!(l["taskdefinition"], "web-td");
}

#[test]
fn non_ecs_instances_use_a_neutral_id_label() {
    let inst = Instance {
        id: "manual-1".into(),
        attributes: tags(&[(attr::IPV4, "192.0.2.1"), (attr::PORT, "80")]).into(),
    };
    let b = run(vec![svc("x", &[("METRICS_PATH", "/m")], vec![inst])]);
    let l = &b.groups[0].labels;
    assert_eq!(l["cloudmap_instance_id"], "manual-1");
    assert!(!l.contains_key("ecs_task_id"));
    assert!(
        !l.contains_key("ecs_cluster"),
        "absent attributes give no label"
    );
}

#[test]
fn label_names_are_sanitised() {
    assert_eq!(sanitize_label_name("team.name/x-y"), "team_name_x_y");
    assert_eq!(sanitize_label_name("ünï"), "_n_");
    assert_eq!(sanitize_label_name("OK_1"), "OK_1");
}

#[test]
fn output_is_sorted_and_independent_of_input_order() {
    let a = svc(
        "a",
        &[("METRICS_PATH", "/m")],
        vec![
            ecs_instance("2", "10.0.0.2", Some("80")),
            ecs_instance("1", "10.0.0.10", Some("80")),
        ],
    );
    let b = svc(
        "b",
        &[("METRICS_PATH", "/m")],
        vec![ecs_instance("3", "10.0.0.1", Some("80"))],
    );
    let one = run(vec![a.clone(), b.clone()]);
    let mut a2 = a.clone();
    Arc::make_mut(&mut a2.instances).reverse();
    let two = run(vec![b, a2]);
    assert_eq!(to_json(&one.groups), to_json(&two.groups));
    let targets: Vec<_> = one.groups.iter().map(|g| g.targets[0].as_str()).collect();
    let mut sorted = targets.clone();
    sorted.sort();
    assert_eq!(targets, sorted);
    assert!(one.groups.iter().all(|g| g.targets.len() == 1));
}

#[test]
fn task_facts_add_labels_and_held_tasks_wait() {
    let s = svc(
        "web",
        &[("METRICS_PATH", "/m")],
        vec![
            ecs_instance("ec2task", "10.0.0.1", Some("80")),
            ecs_instance("fargate", "10.0.0.2", Some("80")),
            ecs_instance("new", "10.0.0.3", Some("80")),
        ],
    );
    let tasks = BTreeMap::from([
        (
            "ec2task".to_string(),
            TaskFacts {
                launch_type: Some("EC2".into()),
                revision: Some("7".into()),
                ec2_instance_id: Some("i-1".into()),
                ec2_name: Some("host-1".into()),
                ec2_instance_type: Some("m5.large".into()),
                bindings: Some(Arc::from([])),
            },
        ),
        (
            "fargate".to_string(),
            TaskFacts {
                launch_type: Some("FARGATE".into()),
                revision: Some("7".into()),
                ..TaskFacts::default()
            },
        ),
    ]);
    let snap = Snapshot {
        services: vec![s],
        tasks: tasks.into(),
        held: BTreeSet::from(["new".to_string()]),
        accounts: Vec::new(),
    };
    let b = build(&snap, &opts());
    assert_eq!(b.groups.len(), 2, "the held task waits");
    let l = &b.groups[0].labels;
    assert_eq!(l["ec2_name"], "host-1");
    assert_eq!(l["ec2_instance_id"], "i-1");
    assert_eq!(l["ec2_instance_type"], "m5.large");
    assert_eq!(l["ecs_launch_type"], "EC2");
    assert_eq!(l["ecs_task_revision"], "7");
    let l = &b.groups[1].labels;
    assert_eq!(l["ecs_launch_type"], "FARGATE");
    assert!(!l.contains_key("ec2_name") && !l.contains_key("ec2_instance_id"));
}

#[test]
fn host_groups_use_the_name_tag_as_instance() {
    let hosts = vec![
        Host {
            instance_id: "i-2".into(),
            private_ip: Some("10.0.0.2".into()),
            ..Host::default()
        },
        Host {
            instance_id: "i-1".into(),
            name: Some("web-host".into()),
            instance_type: Some("t3.small".into()),
            availability_zone: Some("us-east-1b".into()),
            private_ip: Some("10.0.0.1".into()),
            cluster: Some("prod".into()),
        },
        Host {
            instance_id: "i-3".into(),
            ..Host::default()
        },
    ];
    let g = host_groups(&hosts, &[9100, 8080]);
    let got: Vec<(&str, &str)> = g
        .iter()
        .map(|g| (g.targets[0].as_str(), g.labels["instance"].as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("10.0.0.1:8080", "web-host"),
            ("10.0.0.1:9100", "web-host"),
            ("10.0.0.2:8080", "i-2"),
            ("10.0.0.2:9100", "i-2"),
        ]
    );
    assert_eq!(g[0].labels["ecs_cluster"], "prod");
    assert_eq!(g[0].labels["ec2_instance_type"], "t3.small");
    assert!(!g[2].labels.contains_key("ec2_name"));
    assert!(g.iter().all(|g| !g.labels.contains_key("__address__")));
}

#[test]
fn json_is_file_sd_shape() {
    let b = run(vec![svc(
        "web",
        &[("METRICS_PATH", "/m")],
        vec![ecs_instance("t", "10.0.0.1", Some("80"))],
    )]);
    let v: serde_json::Value = serde_json::from_slice(&to_json(&b.groups)).unwrap();
    assert_eq!(v[0]["targets"][0], "10.0.0.1:80");
    assert_eq!(v[0]["labels"]["cloudmap_service"], "web");
    assert_eq!(to_json(&[]), b"[]\n");
}

// ---------------------------------------------------------------------------------
// Port bindings (bridge and host network mode) and ECS service tags

/// Task facts with these (container, container port, host port) bindings.
fn bound(bindings: &[(&str, u16, u16)]) -> TaskFacts {
    TaskFacts {
        launch_type: Some("EC2".into()),
        bindings: Some(
            bindings
                .iter()
                .map(|(c, cp, hp)| crate::model::PortBinding {
                    container: Arc::from(*c),
                    container_port: *cp,
                    host_port: *hp,
                })
                .collect(),
        ),
        ..TaskFacts::default()
    }
}

fn with_tasks(services: Vec<ServiceData>, tasks: &[(&str, TaskFacts)]) -> Built {
    let snap = Snapshot {
        services,
        tasks: Arc::new(
            tasks
                .iter()
                .map(|(id, f)| (id.to_string(), f.clone()))
                .collect(),
        ),
        ..Snapshot::default()
    };
    build(&snap, &opts())
}

fn skips(b: &Built) -> Vec<(&str, Option<&str>, Option<&str>, SkipReason)> {
    b.skipped
        .iter()
        .map(|s| {
            (
                s.tag.as_str(),
                s.value.as_deref(),
                s.instance.as_deref(),
                s.reason,
            )
        })
        .collect()
}

#[test]
fn a_tagged_container_port_is_published_at_its_host_port() {
    // Bridge mode: ECS registered the host's IP and the app's host port 32768.
    let b = with_tasks(
        vec![svc(
            "web",
            &[
                ("METRICS_PATH", "/metrics"),
                ("METRICS_PORT", "9100"),
                ("ECS_METRICS_PATH", "/stats"),
                ("METRICS_PATH_app", "/app"),
                ("METRICS_PORT_app", "9200"),
            ],
            vec![ecs_instance("bridge", "10.0.0.1", Some("32768"))],
        )],
        &[(
            "bridge",
            bound(&[("app", 8080, 32768), ("exporter", 9100, 49153)]),
        )],
    );
    assert!(b.skipped.is_empty(), "{:?}", b.skipped);
    assert_eq!(
        addrs(&b),
        vec![
            // No port tag: AWS_INSTANCE_PORT is already a host port.
            ("10.0.0.1:32768".into(), "/stats".into()),
            ("10.0.0.1:49153".into(), "/metrics".into()),
            // A port no container binds is used as it is.
            ("10.0.0.1:9200".into(), "/app".into()),
        ]
    );
}

#[test]
fn awsvpc_tasks_and_other_instances_keep_the_tagged_port() {
    let b = with_tasks(
        vec![svc(
            "web",
            &[("METRICS_PATH", "/metrics"), ("METRICS_PORT", "9100")],
            vec![
                ecs_instance("awsvpc", "10.0.0.1", None),
                ecs_instance("unenriched", "10.0.0.2", None),
            ],
        )],
        &[("awsvpc", bound(&[]))],
    );
    assert!(b.skipped.is_empty());
    assert_eq!(
        addrs(&b),
        vec![
            ("10.0.0.1:9100".into(), "/metrics".into()),
            ("10.0.0.2:9100".into(), "/metrics".into()),
        ]
    );
}

#[test]
fn container_tags_tell_apart_containers_that_bind_one_port() {
    let b = with_tasks(
        vec![svc(
            "web",
            &[
                ("METRICS_PATH", "/metrics"),
                ("METRICS_PORT", "9100"),
                ("METRICS_CONTAINER", " b "),
                ("ECS_METRICS_PATH", "/stats"),
                ("ECS_METRICS_PORT", "9100"),
                ("ECS_METRICS_CONTAINER", "a"),
                ("METRICS_PATH_x", "/x"),
                ("METRICS_PORT_x", "9100"),
                ("METRICS_PATH_y", "/y"),
                ("METRICS_PORT_y", "9100"),
                ("METRICS_CONTAINER_y", "c"),
                ("METRICS_CONTAINER_z", "a"),
            ],
            vec![ecs_instance("two", "10.0.0.1", Some("32768"))],
        )],
        &[("two", bound(&[("a", 9100, 49153), ("b", 9100, 49154)]))],
    );
    assert_eq!(
        addrs(&b),
        vec![
            ("10.0.0.1:49153".into(), "/stats".into()),
            ("10.0.0.1:49154".into(), "/metrics".into()),
        ]
    );
    assert_eq!(
        skips(&b),
        vec![
            (
                "METRICS_CONTAINER_y",
                Some("c"),
                Some("two"),
                SkipReason::UnboundContainer
            ),
            (
                "METRICS_CONTAINER_z",
                Some("a"),
                None,
                SkipReason::MissingPath
            ),
            (
                "METRICS_PORT_x",
                Some("9100"),
                Some("two"),
                SkipReason::AmbiguousPort
            ),
        ]
    );
}

#[test]
fn unknown_bindings_hold_back_only_the_endpoints_that_need_them() {
    // Published after the hold without its ECS facts: the registered port is
    // right whatever the network mode; a container port may not be.
    let b = with_tasks(
        vec![svc(
            "web",
            &[
                ("METRICS_PATH", "/metrics"),
                ("ECS_METRICS_PATH", "/stats"),
                ("ECS_METRICS_PORT", "9100"),
            ],
            vec![ecs_instance("unknown", "10.0.0.1", Some("32768"))],
        )],
        &[("unknown", TaskFacts::default())],
    );
    assert_eq!(
        addrs(&b),
        vec![("10.0.0.1:32768".into(), "/metrics".into())]
    );
    assert_eq!(
        skips(&b),
        vec![(
            "ECS_METRICS_PORT",
            Some("9100"),
            Some("unknown"),
            SkipReason::UnknownBindings
        )]
    );
    // --default-port is a container port too.
    let snap = Snapshot {
        services: vec![svc(
            "web",
            &[("METRICS_PATH", "/metrics")],
            vec![ecs_instance("bridge", "10.0.0.1", None)],
        )],
        tasks: Arc::new(BTreeMap::from([(
            "bridge".to_string(),
            bound(&[("app", 80, 49200)]),
        )])),
        ..Snapshot::default()
    };
    let o = TargetOptions {
        default_port: Some(80),
        ..opts()
    };
    assert_eq!(
        addrs(&build(&snap, &o)),
        vec![("10.0.0.1:49200".into(), "/metrics".into())]
    );
}

#[test]
fn ecs_service_tags_describe_the_endpoints_and_show_as_meta_labels() {
    let mut s = svc(
        "sc",
        &[("AmazonECSManaged", "true")],
        vec![ecs_instance("t1", "10.0.0.1", Some("8080"))],
    );
    s.ecs_service = Some(Arc::new(crate::model::EcsService {
        cluster: "prod".into(),
        name: "api".into(),
        tags: tags(&[
            ("METRICS_PATH", "/metrics"),
            ("METRICS_PORT", "9100"),
            ("METRICS_PATH_bad", "nope"),
            ("team", "payments"),
        ]),
    }));
    let b = run(vec![s]);
    assert_eq!(addrs(&b), vec![("10.0.0.1:9100".into(), "/metrics".into())]);
    let l = &b.groups[0].labels;
    assert_eq!(l["__meta_ecs_service_tag_team"], "payments");
    assert_eq!(l["__meta_ecs_service_tag_METRICS_PORT"], "9100");
    assert_eq!(l["__meta_cloudmap_service_tag_AmazonECSManaged"], "true");
    assert!(!l.contains_key("__meta_cloudmap_service_tag_METRICS_PATH"));
    let skipped = &b.skipped[0];
    assert_eq!(skipped.tag, "METRICS_PATH_bad");
    assert_eq!(skipped.ecs_service.as_deref(), Some("prod/api"));
    assert_eq!(skipped.reason, SkipReason::InvalidPath);
}
