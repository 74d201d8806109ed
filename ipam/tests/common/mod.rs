//! moto worlds for the pool's tests: a VPC, subnets, a security group and the node's instance.

#![allow(dead_code)]

use aws_sdk_ec2::types::InstanceType;
use nodeeni_conf::load::LoadOptions;
use nodeeni_conf::{InstanceId, Pool, PoolConfig, SecurityGroupId, SubnetId};
use nodeeni_ipam::ec2::{AwsEc2, Ec2, tags};
use nodeeni_ipam::host::{HostError, HostFacts, HostPrep};
use nodeeni_ipam::identity::NodeIdentity;
use nodeeni_ipam::reconcile::Reconciler;
use nodeeni_ipam::store::EniRecord;
use nodeeni_tests::moto::Moto;

pub use nodeeni_tests::ec2world::sdk;

/// The harness's moto world with typed IDs.
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

/// A VPC with subnets in two AZs, a security group, and the node's instance in the first AZ.
pub async fn world(c: &aws_sdk_ec2::Client) -> World {
    world_with(c, InstanceType::C5Large).await
}

/// The same world with the node's instance of `instance_type`.
pub async fn world_with(c: &aws_sdk_ec2::Client, instance_type: InstanceType) -> World {
    let w = nodeeni_tests::ec2world::world_with(c, instance_type).await;
    World {
        vpc: w.vpc,
        subnet_a: w.subnet_a.parse().expect("subnet id"),
        subnet_b: w.subnet_b.parse().expect("subnet id"),
        subnet_c: w.subnet_c.parse().expect("subnet id"),
        sg: w.sg.parse().expect("sg id"),
        instance: w.instance.parse().expect("instance id"),
    }
}

/// EC2-only tests: there is no netdev to prepare, so the host side reports nothing.
#[derive(Debug)]
pub struct NoHostSide;

impl HostPrep for NoHostSide {
    async fn prepare(&self, _pool: &Pool, _record: &EniRecord) -> Result<HostFacts, HostError> {
        Ok(HostFacts::default())
    }
}

pub struct Setup {
    pub moto: Moto,
    pub raw: aws_sdk_ec2::Client,
    pub w: World,
    pub state: tempfile::TempDir,
    pub endpoint: String,
    /// The node's instance type, as its identity says.
    pub instance_type: String,
}

pub async fn setup(test: &str) -> Option<Setup> {
    setup_with(test, InstanceType::C5Large).await
}

/// The same, with the node's instance of `instance_type`.
pub async fn setup_with(test: &str, instance_type: InstanceType) -> Option<Setup> {
    let moto = Moto::start(test)?;
    let raw = sdk(&moto.endpoint);
    let w = world_with(&raw, instance_type.clone()).await;
    let endpoint = moto.endpoint.clone();
    let instance_type = instance_type.as_str().to_string();
    Some(Setup { moto, raw, w, state: tempfile::tempdir().expect("state"), endpoint, instance_type })
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
            instance_type: self.instance_type.clone(),
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

/// Gives the world's VPC an Amazon-provided IPv6 /56 and adds a dual-stack subnet in the node's AZ
/// (10.0.9.0/24 and the /56's first /64), named `dual-a`. Returns the subnet and its IPv6 CIDR.
pub async fn dual_stack_subnet(c: &aws_sdk_ec2::Client, w: &World) -> (SubnetId, String) {
    c.associate_vpc_cidr_block().vpc_id(&w.vpc).amazon_provided_ipv6_cidr_block(true).send().await.expect("ipv6 /56");
    let vpcs = c.describe_vpcs().vpc_ids(&w.vpc).send().await.expect("vpc");
    let block = vpcs
        .vpcs()
        .iter()
        .flat_map(|v| v.ipv6_cidr_block_association_set())
        .find_map(|a| a.ipv6_cidr_block())
        .expect("the VPC's IPv6 block")
        .to_string();
    let net: std::net::Ipv6Addr = block.split('/').next().and_then(|a| a.parse().ok()).expect("ipv6 block");
    let cidr6 = format!("{net}/64");
    let s = c
        .create_subnet()
        .vpc_id(&w.vpc)
        .cidr_block("10.0.9.0/24")
        .ipv6_cidr_block(&cidr6)
        .availability_zone("us-east-1a")
        .tag_specifications(
            aws_sdk_ec2::types::TagSpecification::builder()
                .resource_type(aws_sdk_ec2::types::ResourceType::Subnet)
                .tags(aws_sdk_ec2::types::Tag::builder().key("Name").value("dual-a").build())
                .build(),
        )
        .send()
        .await
        .expect("dual-stack subnet");
    let id = s.subnet().and_then(|s| s.subnet_id()).expect("subnet id").parse().expect("subnet id");
    (id, cidr6)
}
