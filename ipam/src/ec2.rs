//! EC2, behind a narrow trait ([`Ec2`]) in nodeeni's own types, so the pool logic is tested against a
//! fake and the real client ([`AwsEc2`], aws-sdk-ec2) against an EC2 implementation (moto in tests).
//! Every call of the real client goes through the [`Resilient`] layer; the SDK's own retries are off so
//! the breaker and the counters see every attempt.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::time::Duration;

use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::types::{
    Filter, InstanceType, NetworkInterfaceAttachmentChanges, ResourceType, Tag, TagSpecification,
};
use nodeeni_conf::net::IpNet;
use nodeeni_conf::pool::Ec2Settings;
use nodeeni_conf::{EniId, InstanceId, MacAddr, SecurityGroupId, SubnetId};

use crate::resilience::{CallError, Classify, ErrorClass, Resilient};

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
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub id: String,
    pub instance_id: Option<String>,
    pub device_index: Option<u32>,
    pub status: String,
    pub delete_on_termination: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eni {
    pub id: EniId,
    pub subnet_id: Option<SubnetId>,
    pub mac: Option<MacAddr>,
    pub primary_ip: Option<IpAddr>,
    pub secondary_ips: Vec<IpAddr>,
    /// `available`, `in-use`, …
    pub status: String,
    pub attachment: Option<Attachment>,
    pub description: Option<String>,
    pub security_groups: Vec<String>,
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub id: InstanceId,
    pub availability_zone: Option<String>,
    pub instance_type: Option<String>,
    /// `pending`, `running`, `terminated`, …
    pub state: Option<String>,
    /// Device indexes taken on network card 0.
    pub used_device_indexes: Vec<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceLimits {
    /// ENIs the instance takes on network card 0, where the pool attaches (the whole instance's
    /// limit on single-card types).
    pub max_enis: u32,
    /// Network cards the instance type has.
    pub network_cards: u32,
    pub ipv4_per_eni: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateEni {
    pub subnet_id: SubnetId,
    pub security_groups: Vec<SecurityGroupId>,
    pub description: Option<String>,
    pub secondary_ip_count: u32,
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

impl<E: ProvideErrorMetadata + std::fmt::Debug, R: std::fmt::Debug> From<SdkError<E, R>> for Ec2Error
where
    R: HasStatus,
{
    fn from(e: SdkError<E, R>) -> Self {
        // No usable answer: timed out, never delivered, or cut off mid-response (a reset).
        let no_response =
            matches!(e, SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_));
        let status = e.raw_response().map(HasStatus::status);
        let code = e.code().map(str::to_string);
        let message = e.message().map(str::to_string).unwrap_or_else(|| match &e {
            SdkError::TimeoutError(_) => "timed out".to_string(),
            SdkError::DispatchFailure(d) => format!("request not delivered: {d:?}"),
            other => format!("{other:?}"),
        });
        Ec2Error { code, message, status, no_response }
    }
}

/// The HTTP status of a raw response.
pub trait HasStatus {
    fn status(&self) -> u16;
}

impl HasStatus for aws_sdk_ec2::config::http::HttpResponse {
    fn status(&self) -> u16 {
        self.status().as_u16()
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
        device_index: u32,
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
    fn detach_eni(&self, attachment_id: &str, force: bool) -> impl Future<Output = Ec2Result<()>> + Send;
    fn delete_eni(&self, eni: &EniId) -> impl Future<Output = Ec2Result<()>> + Send;
    /// ENIs carrying `tag = value` (all of them when `value` is None).
    fn enis_tagged(&self, tag: &str, value: Option<&str>) -> impl Future<Output = Ec2Result<Vec<Eni>>> + Send;
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
        device_index: u32,
    ) -> impl Future<Output = Ec2Result<String>> + Send {
        (**self).attach_eni(eni, instance, device_index)
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
    fn detach_eni(&self, attachment_id: &str, force: bool) -> impl Future<Output = Ec2Result<()>> + Send {
        (**self).detach_eni(attachment_id, force)
    }
    fn delete_eni(&self, eni: &EniId) -> impl Future<Output = Ec2Result<()>> + Send {
        (**self).delete_eni(eni)
    }
    fn enis_tagged(&self, tag: &str, value: Option<&str>) -> impl Future<Output = Ec2Result<Vec<Eni>>> + Send {
        (**self).enis_tagged(tag, value)
    }
    fn describe_eni(&self, id: &EniId) -> impl Future<Output = Ec2Result<Option<Eni>>> + Send {
        (**self).describe_eni(id)
    }
}

/// The real client.
#[derive(Debug)]
pub struct AwsEc2 {
    client: aws_sdk_ec2::Client,
    pub resilience: Resilient,
}

impl AwsEc2 {
    /// Builds a client from the standard credential chain and the config's region and endpoint.
    pub async fn new(settings: &Ec2Settings) -> Self {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_attempt_timeout(Duration::from_secs(20))
                    .build(),
            );
        if let Some(region) = &settings.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        if let Some(url) = &settings.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let sdk = loader.load().await;
        Self::from_client(aws_sdk_ec2::Client::new(&sdk), settings)
    }

    pub fn from_client(client: aws_sdk_ec2::Client, settings: &Ec2Settings) -> Self {
        let resilience = Resilient::new(settings.retry.clone(), settings.circuit_breaker.clone(), &settings.rate_limit);
        Self { client, resilience }
    }
}

fn ip(s: Option<&str>) -> Option<IpAddr> {
    s.and_then(|s| s.parse().ok())
}

fn to_eni(ni: &aws_sdk_ec2::types::NetworkInterface) -> Option<Eni> {
    let id: EniId = ni.network_interface_id()?.parse().ok()?;
    let primary_ip = ip(ni.private_ip_address());
    let secondary_ips = ni
        .private_ip_addresses()
        .iter()
        .filter(|a| a.primary() != Some(true))
        .filter_map(|a| ip(a.private_ip_address()))
        .collect();
    Some(Eni {
        id,
        subnet_id: ni.subnet_id().and_then(|s| s.parse().ok()),
        mac: ni.mac_address().and_then(|m| m.parse().ok()),
        primary_ip,
        secondary_ips,
        status: ni.status().map(|s| s.as_str().to_string()).unwrap_or_default(),
        attachment: ni.attachment().and_then(|a| {
            Some(Attachment {
                id: a.attachment_id()?.to_string(),
                instance_id: a.instance_id().map(str::to_string),
                device_index: a.device_index().and_then(|d| u32::try_from(d).ok()),
                status: a.status().map(|s| s.as_str().to_string()).unwrap_or_default(),
                delete_on_termination: a.delete_on_termination(),
            })
        }),
        description: ni.description().filter(|d| !d.is_empty()).map(str::to_string),
        security_groups: ni.groups().iter().filter_map(|g| g.group_id().map(str::to_string)).collect(),
        tags: ni.tag_set().iter().filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string()))).collect(),
    })
}

fn missing(what: &str) -> CallError<Ec2Error> {
    CallError::Fatal {
        op: "decode",
        error: Ec2Error {
            code: None,
            message: format!("EC2's answer has no {what}"),
            status: None,
            no_response: false,
        },
    }
}

impl Ec2 for AwsEc2 {
    async fn describe_subnets(&self, ids: &[SubnetId], names: &[String]) -> Ec2Result<Vec<Subnet>> {
        let mut out = Vec::new();
        let by_id = !ids.is_empty();
        let by_name = !names.is_empty();
        for (use_ids, active) in [(true, by_id), (false, by_name)] {
            if !active {
                continue;
            }
            let resp = self
                .resilience
                .call("DescribeSubnets", false, || {
                    let mut req = self.client.describe_subnets();
                    if use_ids {
                        req = req.set_subnet_ids(Some(ids.iter().map(|i| i.to_string()).collect()));
                    } else {
                        req = req.filters(Filter::builder().name("tag:Name").set_values(Some(names.to_vec())).build());
                    }
                    async move { req.send().await.map_err(Ec2Error::from) }
                })
                .await?;
            for s in resp.subnets() {
                let (Some(id), Some(cidr)) =
                    (s.subnet_id().and_then(|i| i.parse().ok()), s.cidr_block().and_then(|c| c.parse().ok()))
                else {
                    continue;
                };
                out.push(Subnet {
                    id,
                    cidr,
                    availability_zone: s.availability_zone().unwrap_or_default().to_string(),
                    vpc_id: s.vpc_id().unwrap_or_default().to_string(),
                    name: s.tags().iter().find(|t| t.key() == Some("Name")).and_then(|t| t.value()).map(str::to_string),
                });
            }
        }
        Ok(out)
    }

    async fn security_group_ids(&self, vpc_id: &str, names: &[String]) -> Ec2Result<Vec<(String, SecurityGroupId)>> {
        let resp = self
            .resilience
            .call("DescribeSecurityGroups", false, || {
                let req = self
                    .client
                    .describe_security_groups()
                    .filters(Filter::builder().name("vpc-id").values(vpc_id).build())
                    .filters(Filter::builder().name("group-name").set_values(Some(names.to_vec())).build());
                async move { req.send().await.map_err(Ec2Error::from) }
            })
            .await?;
        Ok(resp
            .security_groups()
            .iter()
            .filter_map(|g| Some((g.group_name()?.to_string(), g.group_id()?.parse().ok()?)))
            .collect())
    }

    async fn describe_instance(&self, id: &InstanceId) -> Ec2Result<Option<Instance>> {
        let result = self
            .resilience
            .call("DescribeInstances", false, || {
                let req = self.client.describe_instances().instance_ids(id.as_str());
                async move { req.send().await.map_err(Ec2Error::from) }
            })
            .await;
        let resp = match result {
            Ok(r) => r,
            Err(CallError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(i) = resp.reservations().iter().flat_map(|r| r.instances()).next() else { return Ok(None) };
        let mut used: Vec<u32> = i
            .network_interfaces()
            .iter()
            .filter_map(|n| n.attachment())
            .filter(|a| a.network_card_index().unwrap_or(0) == 0)
            .filter_map(|a| a.device_index().and_then(|d| u32::try_from(d).ok()))
            .collect();
        used.sort_unstable();
        Ok(Some(Instance {
            id: id.clone(),
            availability_zone: i.placement().and_then(|p| p.availability_zone()).map(str::to_string),
            instance_type: i.instance_type().map(|t| t.as_str().to_string()),
            state: i.state().and_then(|s| s.name()).map(|n| n.as_str().to_string()),
            used_device_indexes: used,
        }))
    }

    async fn instance_limits(&self, instance_type: &str) -> Ec2Result<InstanceLimits> {
        let resp = self
            .resilience
            .call("DescribeInstanceTypes", false, || {
                let req = self.client.describe_instance_types().instance_types(InstanceType::from(instance_type));
                async move { req.send().await.map_err(Ec2Error::from) }
            })
            .await?;
        let info =
            resp.instance_types().first().and_then(|t| t.network_info()).ok_or_else(|| missing("network info"))?;
        let total = info.maximum_network_interfaces().and_then(|n| u32::try_from(n).ok()).unwrap_or(1);
        // Multi-card types list each card's limit; the pool attaches on card 0.
        let card0 = info
            .network_cards()
            .iter()
            .find(|c| c.network_card_index().unwrap_or(0) == 0)
            .and_then(|c| c.maximum_network_interfaces())
            .and_then(|n| u32::try_from(n).ok());
        Ok(InstanceLimits {
            max_enis: card0.unwrap_or(total).min(total),
            network_cards: info.maximum_network_cards().and_then(|n| u32::try_from(n).ok()).unwrap_or(1),
            ipv4_per_eni: info.ipv4_addresses_per_interface().and_then(|n| u32::try_from(n).ok()).unwrap_or(1),
        })
    }

    async fn create_eni(&self, r: &CreateEni) -> Ec2Result<Eni> {
        let resp = self
            .resilience
            .call("CreateNetworkInterface", true, || {
                let mut spec = TagSpecification::builder().resource_type(ResourceType::NetworkInterface);
                for (k, v) in &r.tags {
                    spec = spec.tags(Tag::builder().key(k).value(v).build());
                }
                let mut req = self
                    .client
                    .create_network_interface()
                    .subnet_id(r.subnet_id.as_str())
                    .set_groups(Some(r.security_groups.iter().map(|g| g.to_string()).collect()))
                    .tag_specifications(spec.build())
                    .client_token(&r.client_token);
                if let Some(d) = &r.description {
                    req = req.description(d);
                }
                if r.secondary_ip_count > 0 {
                    req = req.secondary_private_ip_address_count(r.secondary_ip_count as i32);
                }
                async move { req.send().await.map_err(Ec2Error::from) }
            })
            .await?;
        resp.network_interface().and_then(to_eni).ok_or_else(|| missing("network interface"))
    }

    async fn attach_eni(&self, eni: &EniId, instance: &InstanceId, device_index: u32) -> Ec2Result<String> {
        let resp = self
            .resilience
            .call("AttachNetworkInterface", true, || {
                let req = self
                    .client
                    .attach_network_interface()
                    .network_interface_id(eni.as_str())
                    .instance_id(instance.as_str())
                    .device_index(device_index as i32)
                    .network_card_index(0);
                async move { req.send().await.map_err(Ec2Error::from) }
            })
            .await?;
        resp.attachment_id().map(str::to_string).ok_or_else(|| missing("attachment ID"))
    }

    async fn set_delete_on_termination(&self, eni: &EniId, attachment_id: &str, delete: bool) -> Ec2Result<()> {
        self.resilience
            .call("ModifyNetworkInterfaceAttribute", true, || {
                let changes = NetworkInterfaceAttachmentChanges::builder()
                    .attachment_id(attachment_id)
                    .delete_on_termination(delete)
                    .build();
                let req = self
                    .client
                    .modify_network_interface_attribute()
                    .network_interface_id(eni.as_str())
                    .attachment(changes);
                async move { req.send().await.map_err(Ec2Error::from) }
            })
            .await
            .map(drop)
    }

    async fn set_security_groups(&self, eni: &EniId, groups: &[SecurityGroupId]) -> Ec2Result<()> {
        self.resilience
            .call("ModifyNetworkInterfaceAttribute", true, || {
                let req = self
                    .client
                    .modify_network_interface_attribute()
                    .network_interface_id(eni.as_str())
                    .set_groups(Some(groups.iter().map(|g| g.to_string()).collect()));
                async move { req.send().await.map_err(Ec2Error::from) }
            })
            .await
            .map(drop)
    }

    async fn set_description(&self, eni: &EniId, description: &str) -> Ec2Result<()> {
        self.resilience
            .call("ModifyNetworkInterfaceAttribute", true, || {
                let value = aws_sdk_ec2::types::AttributeValue::builder().value(description).build();
                let req = self
                    .client
                    .modify_network_interface_attribute()
                    .network_interface_id(eni.as_str())
                    .description(value);
                async move { req.send().await.map_err(Ec2Error::from) }
            })
            .await
            .map(drop)
    }

    async fn detach_eni(&self, attachment_id: &str, force: bool) -> Ec2Result<()> {
        match self
            .resilience
            .call("DetachNetworkInterface", true, || {
                let req = self.client.detach_network_interface().attachment_id(attachment_id).force(force);
                async move { req.send().await.map_err(Ec2Error::from) }
            })
            .await
        {
            // Already detached: done.
            Ok(_) | Err(CallError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn delete_eni(&self, eni: &EniId) -> Ec2Result<()> {
        match self
            .resilience
            .call("DeleteNetworkInterface", true, || {
                let req = self.client.delete_network_interface().network_interface_id(eni.as_str());
                async move { req.send().await.map_err(Ec2Error::from) }
            })
            .await
        {
            // Already deleted: done.
            Ok(_) | Err(CallError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn enis_tagged(&self, tag: &str, value: Option<&str>) -> Ec2Result<Vec<Eni>> {
        let resp = self
            .resilience
            .call("DescribeNetworkInterfaces", false, || {
                let filter = match value {
                    Some(v) => Filter::builder().name(format!("tag:{tag}")).values(v).build(),
                    None => Filter::builder().name("tag-key").values(tag).build(),
                };
                let req = self.client.describe_network_interfaces().filters(filter);
                async move { req.send().await.map_err(Ec2Error::from) }
            })
            .await?;
        Ok(resp.network_interfaces().iter().filter_map(to_eni).collect())
    }

    async fn describe_eni(&self, id: &EniId) -> Ec2Result<Option<Eni>> {
        match self
            .resilience
            .call("DescribeNetworkInterfaces", false, || {
                let req = self.client.describe_network_interfaces().network_interface_ids(id.as_str());
                async move { req.send().await.map_err(Ec2Error::from) }
            })
            .await
        {
            Ok(resp) => Ok(resp.network_interfaces().first().and_then(to_eni)),
            Err(CallError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
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
