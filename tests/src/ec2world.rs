//! moto worlds: a VPC, subnets, a security group and the node's instance, made through the SDK the
//! way an operator's account would have them.

use aws_sdk_ec2::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_ec2::types::{InstanceType, ResourceType, Tag, TagSpecification};

/// A raw SDK client for setting the world up (and for checking what nodeeni did).
pub fn sdk(endpoint: &str) -> aws_sdk_ec2::Client {
    let conf = aws_sdk_ec2::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("testing", "testing", None, None, "tests"))
        .build();
    aws_sdk_ec2::Client::from_conf(conf)
}

#[derive(Debug, Clone)]
pub struct World {
    pub vpc: String,
    /// 10.0.1.0/24 in us-east-1a, named user-plane-a.
    pub subnet_a: String,
    /// 10.0.2.0/24 in us-east-1b, named user-plane-b.
    pub subnet_b: String,
    /// 10.0.3.0/24 in us-east-1a (the node's AZ), named signalling-a.
    pub subnet_c: String,
    /// Security group `enis`.
    pub sg: String,
    /// The node's instance, in us-east-1a.
    pub instance: String,
}

impl World {
    /// The CIDR of each subnet, by ID.
    pub fn cidrs(&self) -> Vec<(String, String)> {
        vec![
            (self.subnet_a.clone(), "10.0.1.0/24".into()),
            (self.subnet_b.clone(), "10.0.2.0/24".into()),
            (self.subnet_c.clone(), "10.0.3.0/24".into()),
        ]
    }
}

fn name_tag(kind: ResourceType, name: &str) -> TagSpecification {
    TagSpecification::builder().resource_type(kind).tags(Tag::builder().key("Name").value(name).build()).build()
}

/// A VPC with subnets in two AZs, a security group, and a c5.large node instance in the first AZ.
pub async fn world(c: &aws_sdk_ec2::Client) -> World {
    world_with(c, InstanceType::C5Large).await
}

/// The same world with the node's instance of `instance_type`.
pub async fn world_with(c: &aws_sdk_ec2::Client, instance_type: InstanceType) -> World {
    let vpc = c.create_vpc().cidr_block("10.0.0.0/16").send().await.expect("vpc");
    let vpc = vpc.vpc().and_then(|v| v.vpc_id()).expect("vpc id").to_string();
    let subnet = |cidr: &'static str, az: &'static str, name: &'static str| {
        let vpc = vpc.clone();
        async move {
            let s = c
                .create_subnet()
                .vpc_id(vpc)
                .cidr_block(cidr)
                .availability_zone(az)
                .tag_specifications(name_tag(ResourceType::Subnet, name))
                .send()
                .await
                .expect("subnet");
            s.subnet().and_then(|s| s.subnet_id()).expect("subnet id").to_string()
        }
    };
    let subnet_a = subnet("10.0.1.0/24", "us-east-1a", "user-plane-a").await;
    let subnet_b = subnet("10.0.2.0/24", "us-east-1b", "user-plane-b").await;
    let subnet_c = subnet("10.0.3.0/24", "us-east-1a", "signalling-a").await;
    let sg =
        c.create_security_group().group_name("enis").description("pool ENIs").vpc_id(&vpc).send().await.expect("sg");
    let sg = sg.group_id().expect("sg id").to_string();
    let images = c.describe_images().send().await.expect("images");
    let ami = images.images().first().and_then(|i| i.image_id()).unwrap_or("ami-12c6146b").to_string();
    let run = c
        .run_instances()
        .image_id(ami)
        .min_count(1)
        .max_count(1)
        .instance_type(instance_type)
        .subnet_id(&subnet_a)
        .send()
        .await
        .expect("instance");
    let instance = run.instances().first().and_then(|i| i.instance_id()).expect("id").to_string();
    World { vpc, subnet_a, subnet_b, subnet_c, sg, instance }
}

/// ENIs of `cluster` in moto (by the cluster tag), with their status.
pub async fn cluster_enis(c: &aws_sdk_ec2::Client, cluster: &str) -> Vec<(String, String)> {
    let filter = aws_sdk_ec2::types::Filter::builder().name("tag:nodeeni.io/cluster").values(cluster).build();
    let out = c.describe_network_interfaces().filters(filter).send().await.expect("describe");
    out.network_interfaces()
        .iter()
        .filter_map(|n| {
            Some((
                n.network_interface_id()?.to_string(),
                n.status().map(|s| s.as_str().to_string()).unwrap_or_default(),
            ))
        })
        .collect()
}
