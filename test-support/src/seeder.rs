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
        let conf = sdk_config(url).await;
        Seeder {
            sd: sd::Client::new(&conf),
            ecs: aws_sdk_ecs::Client::new(&conf),
            ec2: aws_sdk_ec2::Client::new(&conf),
        }
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
