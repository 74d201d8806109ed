//! EC2, behind a narrow trait ([`Ec2`]) in nodeeni's own types, so the pool logic is tested against a
//! fake and the real client ([`AwsEc2`], aws-sdk-ec2) against an EC2 implementation (moto in tests).
//! Every call of the real client goes through the [`Resilient`](crate::resilience::Resilient) layer; the SDK's own retries are off so
//! the breaker and the counters see every attempt.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;

use nodeeni_conf::net::IpNet;
use nodeeni_conf::{EniId, InstanceId, MacAddr, SecurityGroupId, SubnetId};

use crate::resilience::{CallError, Classify, ErrorClass};

mod aws;
pub use aws::{AwsEc2, HasStatus};

/// Tag keys nodeeni puts on every ENI it creates.
pub mod tags {
    pub const CLUSTER: &str = "nodeeni.io/cluster";
    pub const NODE: &str = "nodeeni.io/node-instance";
    pub const POOL: &str = "nodeeni.io/pool";
    pub const CREATED: &str = "nodeeni.io/created-unix";
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subnet {
    pub id: SubnetId,
    pub cidr: IpNet,
    pub availability_zone: String,
    pub vpc_id: String,
    pub name: Option<String>,
    /// The subnet's IPv6 CIDR (None: IPv4 only).
    pub ipv6_cidr: Option<IpNet>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub id: String,
    pub instance_id: Option<String>,
    pub device_index: Option<u32>,
    /// The network card it is on (None: EC2 did not say, which means card 0).
    pub network_card: Option<u32>,
    pub status: String,
    pub delete_on_termination: Option<bool>,
}

impl Attachment {
    pub fn place(&self) -> Option<Place> {
        self.device_index.map(|device_index| Place { network_card: self.network_card.unwrap_or(0), device_index })
    }
}

/// Where an ENI sits on an instance: device indexes are counted per network card.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Place {
    pub network_card: u32,
    pub device_index: u32,
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.network_card == 0 {
            write!(f, "device index {}", self.device_index)
        } else {
            write!(f, "device index {} of network card {}", self.device_index, self.network_card)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eni {
    pub id: EniId,
    pub subnet_id: Option<SubnetId>,
    pub mac: Option<MacAddr>,
    pub primary_ip: Option<IpAddr>,
    pub secondary_ips: Vec<IpAddr>,
    pub ipv6_addresses: Vec<IpAddr>,
    /// `available`, `in-use`, …
    pub status: String,
    pub attachment: Option<Attachment>,
    pub description: Option<String>,
    pub security_groups: Vec<String>,
    /// EC2's source/destination check (None: the answer did not say).
    pub source_dest_check: Option<bool>,
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub id: InstanceId,
    pub availability_zone: Option<String>,
    pub instance_type: Option<String>,
    /// `pending`, `running`, `terminated`, …
    pub state: Option<String>,
    /// The places taken, on every network card, sorted.
    pub used_places: Vec<Place>,
}

impl Instance {
    /// The device indexes taken on one card.
    pub fn used_on(&self, network_card: u32) -> impl Iterator<Item = u32> + '_ {
        self.used_places.iter().filter(move |p| p.network_card == network_card).map(|p| p.device_index)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceLimits {
    /// ENIs each network card takes, by card index (one entry, the whole instance's limit, on
    /// single-card types).
    pub enis_per_card: BTreeMap<u32, u32>,
    pub ipv4_per_eni: u32,
    /// IPv6 addresses an ENI takes (0: the type has no IPv6).
    pub ipv6_per_eni: u32,
}

impl InstanceLimits {
    /// A single-card type taking `max_enis`, with as many IPv6 addresses per ENI as IPv4 (as most
    /// types have).
    pub fn one_card(max_enis: u32, ipv4_per_eni: u32) -> Self {
        Self { enis_per_card: BTreeMap::from([(0, max_enis)]), ipv4_per_eni, ipv6_per_eni: ipv4_per_eni }
    }

    /// The ENIs `network_card` takes; None: the type has no such card.
    pub fn max_enis(&self, network_card: u32) -> Option<u32> {
        self.enis_per_card.get(&network_card).copied()
    }

    pub fn network_cards(&self) -> usize {
        self.enis_per_card.len()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateEni {
    pub subnet_id: SubnetId,
    pub security_groups: Vec<SecurityGroupId>,
    pub description: Option<String>,
    pub secondary_ip_count: u32,
    /// IPv6 addresses EC2 picks from the subnet's IPv6 CIDR (0: none).
    pub ipv6_address_count: u32,
    pub tags: BTreeMap<String, String>,
    /// Idempotency token: a retried create returns the same ENI instead of a second one.
    pub client_token: String,
}

/// What went wrong in one EC2 call.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}{}", code.as_deref().map(|c| format!("{c}: ")).unwrap_or_default(), message)]
pub struct Ec2Error {
    /// EC2's error code (`RequestLimitExceeded`, `InvalidSubnetID.NotFound`, …).
    pub code: Option<String>,
    pub message: String,
    /// HTTP status, when a response came.
    pub status: Option<u16>,
    /// No response: timeout, connection refused or reset.
    pub no_response: bool,
}

const THROTTLE_CODES: &[&str] = &[
    "RequestLimitExceeded",
    "Throttling",
    "ThrottlingException",
    "RequestThrottled",
    "EC2ThrottledException",
    "SlowDown",
];

impl Classify for Ec2Error {
    fn class(&self) -> ErrorClass {
        let code = self.code.as_deref().unwrap_or("");
        if THROTTLE_CODES.contains(&code) || self.status == Some(429) {
            ErrorClass::Throttled
        } else if code.ends_with(".NotFound") {
            ErrorClass::NotFound
        } else if self.no_response
            || self.status.is_some_and(|s| s >= 500)
            || code == "InternalError"
            || code == "Unavailable"
        {
            ErrorClass::Transient
        } else {
            ErrorClass::Fatal
        }
    }
}

pub type Ec2Result<T> = Result<T, CallError<Ec2Error>>;

/// The EC2 operations the pool uses — exactly these, which is also what the IAM policy grants.
pub trait Ec2: Send + Sync {
    fn describe_subnets(
        &self,
        ids: &[SubnetId],
        names: &[String],
    ) -> impl Future<Output = Ec2Result<Vec<Subnet>>> + Send;
    fn security_group_ids(
        &self,
        vpc_id: &str,
        names: &[String],
    ) -> impl Future<Output = Ec2Result<Vec<(String, SecurityGroupId)>>> + Send;
    fn describe_instance(&self, id: &InstanceId) -> impl Future<Output = Ec2Result<Option<Instance>>> + Send;
    fn instance_limits(&self, instance_type: &str) -> impl Future<Output = Ec2Result<InstanceLimits>> + Send;
    fn create_eni(&self, req: &CreateEni) -> impl Future<Output = Ec2Result<Eni>> + Send;
    fn attach_eni(
        &self,
        eni: &EniId,
        instance: &InstanceId,
        place: Place,
    ) -> impl Future<Output = Ec2Result<String>> + Send;
    fn set_delete_on_termination(
        &self,
        eni: &EniId,
        attachment_id: &str,
        delete: bool,
    ) -> impl Future<Output = Ec2Result<()>> + Send;
    fn set_security_groups(
        &self,
        eni: &EniId,
        groups: &[SecurityGroupId],
    ) -> impl Future<Output = Ec2Result<()>> + Send;
    fn set_description(&self, eni: &EniId, description: &str) -> impl Future<Output = Ec2Result<()>> + Send;
    fn set_source_dest_check(&self, eni: &EniId, check: bool) -> impl Future<Output = Ec2Result<()>> + Send;
    fn detach_eni(&self, attachment_id: &str, force: bool) -> impl Future<Output = Ec2Result<()>> + Send;
    /// AssignPrivateIpAddresses: `count` more secondary IPs, EC2's pick; returns them.
    fn assign_private_ips(&self, eni: &EniId, count: u32) -> impl Future<Output = Ec2Result<Vec<IpAddr>>> + Send;
    /// UnassignPrivateIpAddresses.
    fn unassign_private_ips(&self, eni: &EniId, ips: &[IpAddr]) -> impl Future<Output = Ec2Result<()>> + Send;
    fn delete_eni(&self, eni: &EniId) -> impl Future<Output = Ec2Result<()>> + Send;
    /// ENIs carrying `tag = value` (all of them when `value` is None).
    fn enis_tagged(&self, tag: &str, value: Option<&str>) -> impl Future<Output = Ec2Result<Vec<Eni>>> + Send;
    /// ENIs carrying `tag = value` that are `available` (attached to nothing), filtered by EC2: a
    /// cluster's leak candidates are few where its ENIs are many.
    fn available_enis_tagged(&self, tag: &str, value: &str) -> impl Future<Output = Ec2Result<Vec<Eni>>> + Send;
    fn describe_eni(&self, id: &EniId) -> impl Future<Output = Ec2Result<Option<Eni>>> + Send;
}

/// A shared client (the daemon's reconciler and its metrics read the same call counts and breaker).
impl<T: Ec2> Ec2 for std::sync::Arc<T> {
    fn describe_subnets(
        &self,
        ids: &[SubnetId],
        names: &[String],
    ) -> impl Future<Output = Ec2Result<Vec<Subnet>>> + Send {
        (**self).describe_subnets(ids, names)
    }
    fn security_group_ids(
        &self,
        vpc_id: &str,
        names: &[String],
    ) -> impl Future<Output = Ec2Result<Vec<(String, SecurityGroupId)>>> + Send {
        (**self).security_group_ids(vpc_id, names)
    }
    fn describe_instance(&self, id: &InstanceId) -> impl Future<Output = Ec2Result<Option<Instance>>> + Send {
        (**self).describe_instance(id)
    }
    fn instance_limits(&self, instance_type: &str) -> impl Future<Output = Ec2Result<InstanceLimits>> + Send {
        (**self).instance_limits(instance_type)
    }
    fn create_eni(&self, req: &CreateEni) -> impl Future<Output = Ec2Result<Eni>> + Send {
        (**self).create_eni(req)
    }
    fn attach_eni(
        &self,
        eni: &EniId,
        instance: &InstanceId,
        place: Place,
    ) -> impl Future<Output = Ec2Result<String>> + Send {
        (**self).attach_eni(eni, instance, place)
    }
    fn set_delete_on_termination(
        &self,
        eni: &EniId,
        attachment_id: &str,
        delete: bool,
    ) -> impl Future<Output = Ec2Result<()>> + Send {
        (**self).set_delete_on_termination(eni, attachment_id, delete)
    }
    fn set_security_groups(
        &self,
        eni: &EniId,
        groups: &[SecurityGroupId],
    ) -> impl Future<Output = Ec2Result<()>> + Send {
        (**self).set_security_groups(eni, groups)
    }
    fn set_description(&self, eni: &EniId, description: &str) -> impl Future<Output = Ec2Result<()>> + Send {
        (**self).set_description(eni, description)
    }
    fn set_source_dest_check(&self, eni: &EniId, check: bool) -> impl Future<Output = Ec2Result<()>> + Send {
        (**self).set_source_dest_check(eni, check)
    }
    fn detach_eni(&self, attachment_id: &str, force: bool) -> impl Future<Output = Ec2Result<()>> + Send {
        (**self).detach_eni(attachment_id, force)
    }
    fn assign_private_ips(&self, eni: &EniId, count: u32) -> impl Future<Output = Ec2Result<Vec<IpAddr>>> + Send {
        (**self).assign_private_ips(eni, count)
    }
    fn unassign_private_ips(&self, eni: &EniId, ips: &[IpAddr]) -> impl Future<Output = Ec2Result<()>> + Send {
        (**self).unassign_private_ips(eni, ips)
    }
    fn delete_eni(&self, eni: &EniId) -> impl Future<Output = Ec2Result<()>> + Send {
        (**self).delete_eni(eni)
    }
    fn enis_tagged(&self, tag: &str, value: Option<&str>) -> impl Future<Output = Ec2Result<Vec<Eni>>> + Send {
        (**self).enis_tagged(tag, value)
    }
    fn available_enis_tagged(&self, tag: &str, value: &str) -> impl Future<Output = Ec2Result<Vec<Eni>>> + Send {
        (**self).available_enis_tagged(tag, value)
    }
    fn describe_eni(&self, id: &EniId) -> impl Future<Output = Ec2Result<Option<Eni>>> + Send {
        (**self).describe_eni(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(code: Option<&str>, status: Option<u16>, no_response: bool) -> Ec2Error {
        Ec2Error { code: code.map(str::to_string), message: "m".into(), status, no_response }
    }

    #[test]
    fn errors_are_classed_by_code_and_status() {
        assert_eq!(err(Some("RequestLimitExceeded"), Some(503), false).class(), ErrorClass::Throttled);
        assert_eq!(err(Some("Throttling"), Some(400), false).class(), ErrorClass::Throttled);
        assert_eq!(err(None, Some(429), false).class(), ErrorClass::Throttled);
        assert_eq!(err(Some("InternalError"), Some(500), false).class(), ErrorClass::Transient);
        assert_eq!(err(None, Some(502), false).class(), ErrorClass::Transient);
        assert_eq!(err(None, None, true).class(), ErrorClass::Transient);
        assert_eq!(err(Some("InvalidNetworkInterfaceID.NotFound"), Some(400), false).class(), ErrorClass::NotFound);
        assert_eq!(err(Some("InvalidAttachmentID.NotFound"), Some(400), false).class(), ErrorClass::NotFound);
        assert_eq!(err(Some("InvalidParameterValue"), Some(400), false).class(), ErrorClass::Fatal);
        assert_eq!(err(Some("UnauthorizedOperation"), Some(403), false).class(), ErrorClass::Fatal);
        assert_eq!(err(Some("AttachmentLimitExceeded"), Some(400), false).class(), ErrorClass::Fatal);
        assert_eq!(err(Some("InvalidParameterValue"), Some(400), false).to_string(), "InvalidParameterValue: m");
    }
}
