//! moto worlds for the pool's tests: a VPC, subnets, a security group and the node's instance.

#![allow(dead_code)]

use aws_sdk_ec2::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_ec2::types::{InstanceType, ResourceType, Tag, TagSpecification};
use nodeeni_conf::pool::LoadOptions;
use nodeeni_conf::{InstanceId, Pool, PoolConfig, SecurityGroupId, SubnetId};
use nodeeni_ipam::ec2::{AwsEc2, Ec2, tags};
use nodeeni_ipam::reconcile::{HostFacts, HostPrep, NodeIdentity, Reconciler};
use nodeeni_ipam::store::EniRecord;
use nodeeni_tests::moto::Moto;

/// A raw SDK client for setting the world up (and for checking what our client did).
pub fn sdk(endpoint: &str) -> aws_sdk_ec2::Client {
    let conf = aws_sdk_ec2::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("testing", "testing", None, None, "tests"))
        .build();
    aws_sdk_ec2::Client::from_conf(conf)
}

#[derive(Debug)]
pub struct World {
    pub vpc: String,
    pub subnet_a: SubnetId,
    pub subnet_b: SubnetId,
    /// A second subnet in the node's AZ.
    pub subnet_c: SubnetId,
    pub sg: SecurityGroupId,
    pub instance: InstanceId,
}

fn name_tag(kind: ResourceType, name: &str) -> TagSpecification {
    TagSpecification::builder().resource_type(kind).tags(Tag::builder().key("Name").value(name).build()).build()
}

/// A VPC with subnets in two AZs, a security group, and the node's instance in the first AZ.
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
            s.subnet().and_then(|s| s.subnet_id()).expect("subnet id").parse::<SubnetId>().expect("valid id")
        }
    };
    let subnet_a = subnet("10.0.1.0/24", "us-east-1a", "user-plane-a").await;
    let subnet_b = subnet("10.0.2.0/24", "us-east-1b", "user-plane-b").await;
    let subnet_c = subnet("10.0.3.0/24", "us-east-1a", "signalling-a").await;
    let sg =
        c.create_security_group().group_name("enis").description("pool ENIs").vpc_id(&vpc).send().await.expect("sg");
    let sg: SecurityGroupId = sg.group_id().expect("sg id").parse().expect("valid");
    let images = c.describe_images().send().await.expect("images");
    let ami = images.images().first().and_then(|i| i.image_id()).unwrap_or("ami-12c6146b").to_string();
    let run = c
        .run_instances()
        .image_id(ami)
        .min_count(1)
        .max_count(1)
        .instance_type(instance_type)
        .subnet_id(subnet_a.as_str())
        .send()
        .await
        .expect("instance");
    let instance = run.instances().first().and_then(|i| i.instance_id()).expect("id").parse().expect("valid");
    World { vpc, subnet_a, subnet_b, subnet_c, sg, instance }
}

/// EC2-only tests: there is no netdev to prepare, so the host side reports nothing.
#[derive(Debug)]
pub struct NoHostSide;

impl HostPrep for NoHostSide {
    async fn prepare(&self, _pool: &Pool, _record: &EniRecord) -> Result<HostFacts, String> {
        Ok(HostFacts::default())
    }
}

pub struct Setup {
    pub moto: Moto,
    pub raw: aws_sdk_ec2::Client,
    pub w: World,
    pub state: tempfile::TempDir,
    pub endpoint: String,
}

pub async fn setup(test: &str) -> Option<Setup> {
    let moto = Moto::start(test)?;
    let raw = sdk(&moto.endpoint);
    let w = world(&raw).await;
    let endpoint = moto.endpoint.clone();
    Some(Setup { moto, raw, w, state: tempfile::tempdir().expect("state"), endpoint })
}

impl Setup {
    pub fn config(&self, pools: &str) -> PoolConfig {
        let text = format!(
            "clusterName: test\nstateDir: {}\nleakGraceSeconds: 300\nec2: {{endpointUrl: \"{}\", region: us-east-1}}\npools:\n{pools}",
            self.state.path().display(),
            self.endpoint
        );
        PoolConfig::from_text(&text, &LoadOptions::default()).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    pub fn reconciler(&self, config: PoolConfig) -> Reconciler<AwsEc2, NoHostSide> {
        self.reconciler_via(config, &self.endpoint)
    }

    /// A reconciler whose EC2 client talks to `endpoint` (a fault-injecting proxy, say).
    pub fn reconciler_via(&self, config: PoolConfig, endpoint: &str) -> Reconciler<AwsEc2, NoHostSide> {
        let ec2 = AwsEc2::from_client(sdk(endpoint), &config.ec2);
        let node = NodeIdentity {
            instance_id: self.w.instance.clone(),
            availability_zone: "us-east-1a".into(),
            instance_type: "c5.large".into(),
            labels: Default::default(),
        };
        let mut r = Reconciler::new(ec2, NoHostSide, config, node);
        r.detach_timeout = std::time::Duration::from_secs(10);
        r
    }

    pub fn fast(&self, per_subnet: u32) -> String {
        format!(
            "  - {{name: fast, mode: kernel, resourceName: nodeeni.io/fast, subnetIds: [{}], securityGroupNames: [enis], \
             enisPerSubnet: {per_subnet}, secondaryIpCount: 1, deleteOnTermination: false, description: fast pool, tags: {{team: core}}}}\n",
            self.w.subnet_a
        )
    }

    pub async fn cluster_enis(&self, ec2: &AwsEc2) -> Vec<nodeeni_ipam::ec2::Eni> {
        ec2.enis_tagged(tags::CLUSTER, Some("test")).await.expect("describe")
    }
}
