//! Seeds moto (Cloud Map, ECS, EC2) through the real AWS SDK.

use aws_sdk_servicediscovery as sd;

pub const REGION: &str = "us-east-1";

/// Environment for talking to moto (directly or through a proxy) at `url`.
pub fn aws_env(url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", url.to_string()),
        ("AWS_REGION", REGION.to_string()),
        ("AWS_ACCESS_KEY_ID", "testing".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "testing".to_string()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
    ]
}

/// SDK configuration for moto at `url` with test credentials.
pub async fn sdk_config(url: &str) -> aws_config::SdkConfig {
    let creds = sd::config::Credentials::new("testing", "testing", None, None, "test");
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(REGION))
        .credentials_provider(creds)
        .endpoint_url(url)
        .load()
        .await
}

/// Seeds Cloud Map, ECS and EC2 in moto through the real SDK. (Point it at the
/// proxy when it starts ECS tasks: moto's ECS answers need the proxy's type fix.)
pub struct Seeder {
    pub sd: sd::Client,
    pub ecs: aws_sdk_ecs::Client,
    pub ec2: aws_sdk_ec2::Client,
}

/// Cloud Map. (No DiscoverInstances here: these clients lack the `data-` host
/// prefix fix that a custom endpoint needs for it.)
impl Seeder {
    pub async fn new(url: &str) -> Seeder {
        Seeder::with(&sdk_config(url).await)
    }

    fn with(conf: &aws_config::SdkConfig) -> Seeder {
        Seeder {
            sd: sd::Client::new(conf),
            ecs: aws_sdk_ecs::Client::new(conf),
            ec2: aws_sdk_ec2::Client::new(conf),
        }
    }

    /// Seeds the account of `role_arn`: moto keeps a backend per account, and
    /// calls signed with the credentials its AssumeRole hands out land in the
    /// role's account (the role need not exist).
    pub async fn in_account(url: &str, role_arn: &str) -> Seeder {
        let base = sdk_config(url).await;
        let out = aws_sdk_sts::Client::new(&base)
            .assume_role()
            .role_arn(role_arn)
            .role_session_name("seeder")
            .send()
            .await
            .unwrap_or_else(|e| panic!("AssumeRole {role_arn}: {e:?}"));
        let c = out.credentials.expect("AssumeRole answers credentials");
        let creds = sd::config::Credentials::new(
            c.access_key_id,
            c.secret_access_key,
            Some(c.session_token),
            None,
            "seeder",
        );
        let conf = base
            .into_builder()
            .credentials_provider(sd::config::SharedCredentialsProvider::new(creds))
            .build();
        Seeder::with(&conf)
    }

    /// Creates an HTTP namespace and returns its id.
    pub async fn http_namespace(&self, name: &str) -> String {
        self.sd
            .create_http_namespace()
            .name(name)
            .send()
            .await
            .unwrap();
        self.namespace_id(name).await
    }

    /// Creates a private DNS namespace and returns its id.
    pub async fn dns_namespace(&self, name: &str) -> String {
        self.sd
            .create_private_dns_namespace()
            .name(name)
            .vpc("vpc-0123456789abcdef0")
            .send()
            .await
            .unwrap();
        self.namespace_id(name).await
    }

    async fn namespace_id(&self, name: &str) -> String {
        let out = self.sd.list_namespaces().send().await.unwrap();
        out.namespaces()
            .iter()
            .find(|n| n.name() == Some(name))
            .and_then(|n| n.id())
            .unwrap()
            .to_string()
    }

    /// Creates a service with tags; returns its id.
    pub async fn service(&self, ns_id: &str, name: &str, tags: &[(&str, &str)]) -> String {
        let mut req = self.sd.create_service().name(name).namespace_id(ns_id);
        for (k, v) in tags {
            req = req.tags(sd::types::Tag::builder().key(*k).value(*v).build().unwrap());
        }
        req.send()
            .await
            .unwrap()
            .service()
            .unwrap()
            .id()
            .unwrap()
            .to_string()
    }

    /// Registers an ECS-task-like instance.
    pub async fn task(&self, service_id: &str, task_id: &str, ip: &str, port: Option<u16>) {
        let mut attrs = vec![
            ("AWS_INSTANCE_IPV4", ip.to_string()),
            ("AVAILABILITY_ZONE", "us-east-1a".to_string()),
            ("ECS_CLUSTER_NAME", "prod".to_string()),
            ("ECS_SERVICE_NAME", "svc".to_string()),
            ("ECS_TASK_DEFINITION_FAMILY", "family".to_string()),
            ("REGION", REGION.to_string()),
        ];
        if let Some(p) = port {
            attrs.push(("AWS_INSTANCE_PORT", p.to_string()));
        }
        self.instance(service_id, task_id, &attrs).await;
    }

    pub async fn instance(&self, service_id: &str, id: &str, attrs: &[(&str, String)]) {
        let mut req = self
            .sd
            .register_instance()
            .service_id(service_id)
            .instance_id(id);
        for (k, v) in attrs {
            req = req.attributes(*k, v.clone());
        }
        req.send().await.unwrap();
    }

    /// Registers `per_service` tasks in each of `services` new services of `ns`
    /// (`svc00`, ...; tagged METRICS_PATH=/metrics, METRICS_PORT=9100; task `s<i>t<t>`
    /// at 10.<i>.<t/200>.<t%200+1>), eight calls in flight; returns the service ids.
    pub async fn services_with_tasks(
        &self,
        ns: &str,
        services: usize,
        per_service: usize,
    ) -> Vec<String> {
        use futures::StreamExt;
        let mut ids = Vec::new();
        for i in 0..services {
            let tags = [("METRICS_PATH", "/metrics"), ("METRICS_PORT", "9100")];
            ids.push(self.service(ns, &format!("svc{i:02}"), &tags).await);
        }
        let tasks: Vec<(usize, usize)> = (0..services)
            .flat_map(|i| (0..per_service).map(move |t| (i, t)))
            .collect();
        futures::stream::iter(tasks)
            .map(|(i, t)| {
                let svc = ids[i].clone();
                async move {
                    let ip = format!("10.{i}.{}.{}", t / 200, t % 200 + 1);
                    self.task(&svc, &format!("s{i}t{t}"), &ip, None).await;
                }
            })
            .buffer_unordered(8)
            .collect::<Vec<()>>()
            .await;
        ids
    }

    pub async fn deregister(&self, service_id: &str, id: &str) {
        self.sd
            .deregister_instance()
            .service_id(service_id)
            .instance_id(id)
            .send()
            .await
            .unwrap();
    }
}

/// ECS and EC2.
impl Seeder {
    /// Starts an EC2 instance, with a Name tag when given; returns (id, private IP).
    pub async fn host(&self, name: Option<&str>) -> (String, String) {
        self.run_instance(name, None).await
    }

    /// Starts an EC2 instance at a chosen private IP (moto takes any, a loopback
    /// address included, so something on this machine can answer for the host),
    /// with a Name tag when given; returns its id.
    pub async fn host_at(&self, name: Option<&str>, ip: &str) -> String {
        self.run_instance(name, Some(ip)).await.0
    }

    async fn run_instance(&self, name: Option<&str>, ip: Option<&str>) -> (String, String) {
        let mut req = self
            .ec2
            .run_instances()
            .image_id("ami-12c6146b")
            .instance_type(aws_sdk_ec2::types::InstanceType::M5Large)
            .set_private_ip_address(ip.map(str::to_string))
            .min_count(1)
            .max_count(1);
        if let Some(n) = name {
            req = req.tag_specifications(
                aws_sdk_ec2::types::TagSpecification::builder()
                    .resource_type(aws_sdk_ec2::types::ResourceType::Instance)
                    .tags(
                        aws_sdk_ec2::types::Tag::builder()
                            .key("Name")
                            .value(n)
                            .build(),
                    )
                    .build(),
            );
        }
        let out = req.send().await.unwrap();
        let i = &out.instances()[0];
        (
            i.instance_id().unwrap().to_string(),
            i.private_ip_address().unwrap().to_string(),
        )
    }

    pub async fn rename(&self, instance_id: &str, name: &str) {
        self.ec2
            .create_tags()
            .resources(instance_id)
            .tags(
                aws_sdk_ec2::types::Tag::builder()
                    .key("Name")
                    .value(name)
                    .build(),
            )
            .send()
            .await
            .unwrap();
    }

    pub async fn cluster(&self, name: &str) {
        self.ecs
            .create_cluster()
            .cluster_name(name)
            .send()
            .await
            .unwrap();
    }

    /// Registers the task definition `web` (revision 1 the first time).
    pub async fn task_definition(&self) {
        self.family("web").await;
    }

    /// Registers a task definition of `family`, one small container named after it.
    pub async fn family(&self, family: &str) {
        self.ecs
            .register_task_definition()
            .family(family)
            .container_definitions(
                aws_sdk_ecs::types::ContainerDefinition::builder()
                    .name(family)
                    .image(format!("{family}:1"))
                    .memory(16)
                    .command("serve")
                    .build(),
            )
            .send()
            .await
            .unwrap();
    }

    /// Registers an EC2 instance as a container instance; returns its ARN.
    pub async fn container_instance(&self, cluster: &str, ec2_id: &str) -> String {
        let doc = format!(
            r#"{{"instanceId":"{ec2_id}","region":"{REGION}","availabilityZone":"us-east-1a"}}"#
        );
        let out = self
            .ecs
            .register_container_instance()
            .cluster(cluster)
            .instance_identity_document(doc)
            .send()
            .await
            .unwrap();
        out.container_instance()
            .unwrap()
            .container_instance_arn()
            .unwrap()
            .to_string()
    }

    /// Runs `count` EC2 tasks in a cluster (its container instances host them);
    /// returns their task ids.
    pub async fn ec2_tasks(&self, cluster: &str, count: usize) -> Vec<String> {
        let ec2 = aws_sdk_ecs::types::LaunchType::Ec2;
        self.run_tasks(cluster, "web", ec2, count).await
    }

    /// Runs `count` tasks of `family` in a cluster; returns their task ids.
    pub async fn run_tasks(
        &self,
        cluster: &str,
        family: &str,
        launch_type: aws_sdk_ecs::types::LaunchType,
        count: usize,
    ) -> Vec<String> {
        let mut ids = Vec::new();
        while ids.len() < count {
            let n = (count - ids.len()).min(10) as i32;
            let out = self
                .ecs
                .run_task()
                .cluster(cluster)
                .task_definition(family)
                .launch_type(launch_type.clone())
                .count(n)
                .send()
                .await
                .unwrap();
            assert!(
                !out.tasks().is_empty(),
                "run_task placed no task: {:?}",
                out.failures()
            );
            ids.extend(out.tasks().iter().map(|t| task_id(t.task_arn().unwrap())));
        }
        ids
    }

    /// Stops an ECS task.
    pub async fn stop_task(&self, cluster: &str, task_id: &str) {
        self.ecs
            .stop_task()
            .cluster(cluster)
            .task(task_id)
            .send()
            .await
            .unwrap();
    }

    /// Starts a Fargate task; returns its task id.
    pub async fn fargate_task(&self, cluster: &str) -> String {
        let out = self
            .ecs
            .run_task()
            .cluster(cluster)
            .task_definition("web")
            .launch_type(aws_sdk_ecs::types::LaunchType::Fargate)
            .send()
            .await
            .unwrap();
        task_id(out.tasks()[0].task_arn().unwrap())
    }
}

/// The ARN of role `name` in `account` (for `--role-arn` and [`Seeder::in_account`]).
pub fn role_arn(account: &str, name: &str) -> String {
    format!("arn:aws:iam::{account}:role/{name}")
}

pub fn task_id(arn: &str) -> String {
    arn.rsplit('/').next().unwrap().to_string()
}

impl Seeder {
    /// Registers a task in Cloud Map as ECS does, in cluster `cluster`.
    pub async fn ecs_task(&self, service_id: &str, cluster: &str, task_id: &str, ip: &str) {
        let attrs = [
            ("AWS_INSTANCE_IPV4", ip.to_string()),
            ("AWS_INSTANCE_PORT", "8080".to_string()),
            ("AVAILABILITY_ZONE", "us-east-1a".to_string()),
            ("ECS_CLUSTER_NAME", cluster.to_string()),
            ("ECS_SERVICE_NAME", "web".to_string()),
            ("ECS_TASK_DEFINITION_FAMILY", "web".to_string()),
        ];
        self.instance(service_id, task_id, &attrs).await;
    }
}

/// A container of a task definition: its name and its port mappings
/// (container port, host port; None leaves `hostPort` out, which ECS treats as
/// dynamic in bridge mode).
pub struct ContainerSpec<'a> {
    pub name: &'a str,
    pub ports: &'a [(u16, Option<u16>)],
}

/// Task definitions with port mappings, tasks of any family, awsvpc tasks, ECS
/// services with tags.
impl Seeder {
    /// Registers task definition `family` with network mode `mode` (`bridge`,
    /// `host` or `awsvpc`) and these containers.
    pub async fn port_mapped_task_definition(
        &self,
        family: &str,
        mode: &str,
        containers: &[ContainerSpec<'_>],
    ) {
        use aws_sdk_ecs::types::{ContainerDefinition, NetworkMode, PortMapping};
        let mut req = self
            .ecs
            .register_task_definition()
            .family(family)
            .network_mode(NetworkMode::from(mode));
        for c in containers {
            let mut def = ContainerDefinition::builder()
                .name(c.name)
                .image(format!("{}:1", c.name))
                .memory(16);
            for (container_port, host_port) in c.ports {
                def = def.port_mappings(
                    PortMapping::builder()
                        .container_port(i32::from(*container_port))
                        .set_host_port(host_port.map(i32::from))
                        .build(),
                );
            }
            req = req.container_definitions(def.build());
        }
        req.send().await.unwrap();
    }

    /// Runs `count` tasks of `family` on the container instances of `cluster`;
    /// their task ids.
    pub async fn ec2_tasks_of(&self, cluster: &str, family: &str, count: i32) -> Vec<String> {
        let out = self
            .ecs
            .run_task()
            .cluster(cluster)
            .task_definition(family)
            .launch_type(aws_sdk_ecs::types::LaunchType::Ec2)
            .count(count)
            .send()
            .await
            .unwrap();
        assert_eq!(
            out.tasks().len(),
            count as usize,
            "run_task placed too few tasks of {family}: {:?}",
            out.failures()
        );
        out.tasks()
            .iter()
            .map(|t| task_id(t.task_arn().unwrap()))
            .collect()
    }

    /// Starts a Fargate task of an awsvpc `family` in a new subnet (moto needs a
    /// subnet and a security group for it); its task id and ENI address.
    pub async fn awsvpc_task(&self, cluster: &str, family: &str) -> (String, String) {
        use aws_sdk_ecs::types::{AwsVpcConfiguration, LaunchType, NetworkConfiguration};
        let vpc = self
            .ec2
            .create_vpc()
            .cidr_block("10.60.0.0/16")
            .send()
            .await
            .unwrap();
        let vpc = vpc.vpc().unwrap().vpc_id().unwrap();
        let subnet = self
            .ec2
            .create_subnet()
            .vpc_id(vpc)
            .cidr_block("10.60.1.0/24")
            .send()
            .await
            .unwrap();
        let subnet = subnet.subnet().unwrap().subnet_id().unwrap();
        let group = self
            .ec2
            .create_security_group()
            .group_name(format!("{family}-tasks"))
            .description("tasks")
            .vpc_id(vpc)
            .send()
            .await
            .unwrap();
        let network = AwsVpcConfiguration::builder()
            .subnets(subnet)
            .security_groups(group.group_id().unwrap())
            .build()
            .unwrap();
        let out = self
            .ecs
            .run_task()
            .cluster(cluster)
            .task_definition(family)
            .launch_type(LaunchType::Fargate)
            .network_configuration(
                NetworkConfiguration::builder()
                    .awsvpc_configuration(network)
                    .build(),
            )
            .send()
            .await
            .unwrap();
        let task = &out.tasks()[0];
        let ip = task
            .attachments()
            .iter()
            .flat_map(|a| a.details())
            .find(|d| d.name() == Some("privateIPv4Address"))
            .and_then(|d| d.value())
            .expect("an awsvpc task has an ENI address")
            .to_string();
        (task_id(task.task_arn().unwrap()), ip)
    }

    /// (container, container port, host port) of each TCP port a task binds, as
    /// DescribeTasks answers (through the proxy, which fills them as ECS does).
    pub async fn network_bindings(&self, cluster: &str, task: &str) -> Vec<(String, u16, u16)> {
        let out = self
            .ecs
            .describe_tasks()
            .cluster(cluster)
            .tasks(task)
            .send()
            .await
            .unwrap();
        let mut v = Vec::new();
        for c in out.tasks().iter().flat_map(|t| t.containers()) {
            for b in c.network_bindings() {
                v.push((
                    c.name().unwrap_or_default().to_string(),
                    b.container_port().unwrap_or_default() as u16,
                    b.host_port().unwrap_or_default() as u16,
                ));
            }
        }
        v.sort();
        v
    }

    /// Creates ECS service `name` of `family` in `cluster` with these tags; its ARN.
    pub async fn ecs_service(
        &self,
        cluster: &str,
        name: &str,
        family: &str,
        tags: &[(&str, &str)],
    ) -> String {
        let mut req = self
            .ecs
            .create_service()
            .cluster(cluster)
            .service_name(name)
            .task_definition(family)
            .desired_count(0);
        for (k, v) in tags {
            req = req.tags(aws_sdk_ecs::types::Tag::builder().key(*k).value(*v).build());
        }
        let out = req.send().await.unwrap();
        out.service().unwrap().service_arn().unwrap().to_string()
    }

    /// Removes tags from an ECS service.
    pub async fn untag_ecs_service(&self, arn: &str, keys: &[&str]) {
        let mut req = self.ecs.untag_resource().resource_arn(arn);
        for k in keys {
            req = req.tag_keys(*k);
        }
        req.send().await.unwrap();
    }

    /// Registers a task in Cloud Map as ECS does for ECS service `ecs_service` of
    /// `cluster`: at `ip` (the host's, in bridge mode) and `port` (the registered
    /// container's host port).
    pub async fn ecs_service_task(
        &self,
        service_id: &str,
        (cluster, ecs_service): (&str, &str),
        task_id: &str,
        ip: &str,
        port: Option<u16>,
    ) {
        let mut attrs = vec![
            ("AWS_INSTANCE_IPV4", ip.to_string()),
            ("AVAILABILITY_ZONE", "us-east-1a".to_string()),
            ("ECS_CLUSTER_NAME", cluster.to_string()),
            ("ECS_SERVICE_NAME", ecs_service.to_string()),
            ("ECS_TASK_DEFINITION_FAMILY", ecs_service.to_string()),
        ];
        if let Some(p) = port {
            attrs.push(("AWS_INSTANCE_PORT", p.to_string()));
        }
        self.instance(service_id, task_id, &attrs).await;
    }
}
