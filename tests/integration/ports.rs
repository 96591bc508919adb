//! Bridge and host network mode against moto server: a port from a tag names a
//! container port, published at the host port the task's container binds (the
//! test proxy fills DescribeTasks' `networkBindings` as ECS does, see
//! `test_support::proxy::ecs`); awsvpc tasks keep the tagged port; a task whose
//! bindings are unknown publishes no guess.

use std::collections::BTreeMap;
use std::time::Duration;

use cloudmap_sd_test_support::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(60);

/// (address, path) of every target in a file.
fn addresses(groups: &[Value]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = groups
        .iter()
        .map(|g| {
            (
                g["targets"][0].as_str().unwrap().to_string(),
                g["labels"]["__metrics_path__"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

/// The host port of `container`'s `port` in DescribeTasks' bindings.
fn host_port(bindings: &[(String, u16, u16)], container: &str, port: u16) -> u16 {
    bindings
        .iter()
        .find(|(c, p, _)| c == container && *p == port)
        .unwrap_or_else(|| panic!("no binding of {container}:{port} in {bindings:?}"))
        .2
}

struct Bridge {
    _moto: Moto,
    proxy: Proxy,
    s: Seeder,
    /// The EC2 host's private IP, which ECS registers for bridge tasks.
    host_ip: String,
    /// The exporter task: its id and bindings.
    exporter: (String, Vec<(String, u16, u16)>),
    /// The task whose containers `a` and `b` both bind 9100.
    pair: (String, Vec<(String, u16, u16)>),
    /// The awsvpc task: its id and ENI address.
    awsvpc: (String, String),
    ns: String,
}

/// One EC2 host in cluster `prod` running a bridge task with an app (8080) and an
/// exporter (9100), both on dynamic host ports; a bridge task whose containers `a`
/// and `b` both expose 9100; and an awsvpc Fargate task exposing 9100.
async fn bridge() -> Bridge {
    let moto = Moto::start();
    let proxy = Proxy::start(&moto.url).await;
    let s = Seeder::new(&proxy.url).await;
    let (host, host_ip) = s.host(Some("bridge-host")).await;
    s.cluster("prod").await;
    s.container_instance("prod", &host).await;
    let app = ContainerSpec {
        name: "app",
        ports: &[(8080, None)],
    };
    let exporter = ContainerSpec {
        name: "exporter",
        ports: &[(9100, None)],
    };
    s.port_mapped_task_definition("exporter", "bridge", &[app, exporter])
        .await;
    let pair = [
        ContainerSpec {
            name: "app",
            ports: &[(8080, None)],
        },
        ContainerSpec {
            name: "a",
            ports: &[(9100, None)],
        },
        ContainerSpec {
            name: "b",
            ports: &[(9100, None)],
        },
    ];
    s.port_mapped_task_definition("pair", "bridge", &pair).await;
    let vpc = ContainerSpec {
        name: "app",
        ports: &[(9100, None)],
    };
    s.port_mapped_task_definition("vpc", "awsvpc", &[vpc]).await;
    let exporter_task = s.ec2_tasks_of("prod", "exporter", 1).await.remove(0);
    let pair_task = s.ec2_tasks_of("prod", "pair", 1).await.remove(0);
    let awsvpc = s.awsvpc_task("prod", "vpc").await;
    let exporter_bindings = s.network_bindings("prod", &exporter_task).await;
    let pair_bindings = s.network_bindings("prod", &pair_task).await;
    assert!(s.network_bindings("prod", &awsvpc.0).await.is_empty());
    let ns = s.http_namespace("apps").await;
    Bridge {
        _moto: moto,
        proxy,
        s,
        host_ip,
        exporter: (exporter_task, exporter_bindings),
        pair: (pair_task, pair_bindings),
        awsvpc,
        ns,
    }
}

impl Bridge {
    /// Registers the exporter task as ECS does in bridge mode: the host's IP and the
    /// app's host port (the container port of the service registry).
    async fn register_exporter(&self, service_id: &str) {
        let (task, bindings) = &self.exporter;
        let app = host_port(bindings, "app", 8080);
        self.s
            .ecs_service_task(
                service_id,
                ("prod", "exporter"),
                task,
                &self.host_ip,
                Some(app),
            )
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_containers_are_published_at_their_host_ports_and_awsvpc_tasks_as_they_are() {
    let b = bridge().await;
    let s = &b.s;
    let exporter = s
        .service(
            &b.ns,
            "exporter",
            &[
                ("METRICS_PATH", "/metrics"),
                ("METRICS_PORT", "9100"),
                // No port tag: the registered (host) port of the app.
                ("ECS_METRICS_PATH", "/app"),
            ],
        )
        .await;
    b.register_exporter(&exporter).await;
    let pair = s
        .service(
            &b.ns,
            "pair",
            &[
                ("METRICS_PATH", "/metrics"),
                ("METRICS_PORT", "9100"),
                ("METRICS_CONTAINER", "b"),
                // Two containers bind 9100 and no container tag says which.
                ("METRICS_PATH_either", "/either"),
                ("METRICS_PORT_either", "9100"),
            ],
        )
        .await;
    let (pair_task, pair_bindings) = &b.pair;
    let pair_app = host_port(pair_bindings, "app", 8080);
    s.ecs_service_task(
        &pair,
        ("prod", "pair"),
        pair_task,
        &b.host_ip,
        Some(pair_app),
    )
    .await;
    let vpc = s
        .service(
            &b.ns,
            "vpc",
            &[("METRICS_PATH", "/metrics"), ("METRICS_PORT", "9100")],
        )
        .await;
    let (vpc_task, vpc_ip) = &b.awsvpc;
    s.ecs_service_task(&vpc, ("prod", "vpc"), vpc_task, vpc_ip, None)
        .await;

    let dir = tempfile::tempdir().unwrap();
    let before = b.proxy.counts();
    let sc = Sidecar::start(dir.path(), &b.proxy.url, &["--interval", "2s"]);
    sc.wait_ready(T).await;
    let cold = diff(&before, &b.proxy.counts());
    let (_, bindings) = &b.exporter;
    let h = &b.host_ip;
    let want = vec![
        (
            format!("{h}:{}", host_port(bindings, "app", 8080)),
            "/app".to_string(),
        ),
        (
            format!("{h}:{}", host_port(bindings, "exporter", 9100)),
            "/metrics".to_string(),
        ),
        (
            format!("{h}:{}", host_port(pair_bindings, "b", 9100)),
            "/metrics".to_string(),
        ),
        (format!("{vpc_ip}:9100"), "/metrics".to_string()),
    ];
    let mut want = want;
    want.sort();
    assert_eq!(addresses(&parse_file(&sc.output)), want);
    assert_eq!(
        sc.metric("cloudmap_sd_skipped_endpoints{reason=\"ambiguous_port\"}")
            .await,
        1.0,
        "METRICS_PORT_either names a port two containers bind"
    );
    assert!(sc.proc.log_text().contains("reason=ambiguous_port"));

    // The bindings come with the one DescribeTasks per cluster enrichment makes for
    // new tasks; a steady cycle asks ECS nothing.
    eprintln!("cold: {cold:?}");
    assert_eq!(cold.get("DescribeTasks"), Some(&1), "{cold:?}");
    let at = b.proxy.counts();
    sc.wait_cycles(2, T).await;
    let steady = diff(&at, &b.proxy.counts());
    eprintln!("two steady cycles: {steady:?}");
    let want_steady: BTreeMap<String, u64> = [("DiscoverInstancesRevision".to_string(), 6)].into();
    assert_eq!(steady, want_steady);
}

/// While DescribeTasks fails, a new bridge task is held; after the hold it is
/// published with its registered port only: the host port of its exporter is
/// unknown, so no address is guessed. It appears once DescribeTasks answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_without_known_bindings_publishes_no_guessed_port() {
    let b = bridge().await;
    let exporter =
        b.s.service(
            &b.ns,
            "exporter",
            &[
                ("METRICS_PATH", "/app"),
                ("ECS_METRICS_PATH", "/metrics"),
                ("ECS_METRICS_PORT", "9100"),
            ],
        )
        .await;
    b.register_exporter(&exporter).await;
    let (_, bindings) = &b.exporter;
    let app = format!("{}:{}", b.host_ip, host_port(bindings, "app", 8080));
    let metrics = format!("{}:{}", b.host_ip, host_port(bindings, "exporter", 9100));

    b.proxy.set_fault_for("DescribeTasks", Fault::ServerError);
    let dir = tempfile::tempdir().unwrap();
    let sc = Sidecar::start(
        dir.path(),
        &b.proxy.url,
        &["--interval", "1s", "--enrichment-hold", "2s"],
    );
    sc.wait_ready(T).await;
    let released = addresses(&parse_file(&sc.output));
    assert_eq!(released, vec![(app.clone(), "/app".to_string())]);
    assert_eq!(
        sc.metric("cloudmap_sd_skipped_endpoints{reason=\"unknown_bindings\"}")
            .await,
        1.0
    );
    let guessed = format!("{}:9100", b.host_ip);
    assert!(!sc.targets().contains(&guessed));

    b.proxy.set_fault_for("DescribeTasks", Fault::Pass);
    wait_for_async(T, "the exporter at its host port", || async {
        (sc.targets() == vec![app.clone(), metrics.clone()]).then_some(())
    })
    .await;
}
