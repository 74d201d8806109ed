//! The real EC2 client: aws-sdk-ec2 behind the [`Ec2`] trait, every call through the [`Resilient`]
//! layer (the SDK's own retries are off so the breaker and the counters see every attempt).

use std::net::IpAddr;
use std::time::Duration;

use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::types::{
    Filter, InstanceType, NetworkInterfaceAttachmentChanges, ResourceType, Tag, TagSpecification,
};
use nodeeni_conf::pool::Ec2Settings;
use nodeeni_conf::{EniId, InstanceId, SecurityGroupId, SubnetId};

use super::{Attachment, CreateEni, Ec2, Ec2Error, Ec2Result, Eni, Instance, InstanceLimits, Place, Subnet};
use crate::resilience::{CallError, Resilient};

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

/// The real client.
#[derive(Debug)]
pub struct AwsEc2 {
    client: aws_sdk_ec2::Client,
    pub resilience: Resilient,
    /// Results per page of every listing (EC2 allows 5 to 1000); each page is one call through the
    /// resilience layer, so a throttled page is retried alone.
    pub page_size: i32,
}

/// EC2's largest page.
pub const MAX_PAGE: i32 = 1000;

/// The next page's token, if EC2 says there is one and it is not one already followed (a service
/// that hands a token back again would otherwise keep the listing going forever).
fn next_page(token: Option<&str>, followed: &mut Vec<String>) -> Option<String> {
    let token = token.filter(|t| !t.is_empty())?.to_string();
    if followed.contains(&token) {
        tracing::warn!(token, "EC2 handed back a page token already followed; ending the listing there");
        return None;
    }
    followed.push(token.clone());
    Some(token)
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
        Self { client, resilience, page_size: MAX_PAGE }
    }

    /// Every ENI the filters match, page by page. An ENI on two pages (the listing moved under the
    /// pages) is one ENI.
    async fn enis_filtered(&self, filters: &[Filter]) -> Ec2Result<Vec<Eni>> {
        let mut out: Vec<Eni> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let (mut token, mut followed): (Option<String>, Vec<String>) = (None, Vec::new());
        loop {
            let resp = self
                .resilience
                .call("DescribeNetworkInterfaces", false, || {
                    let req = self
                        .client
                        .describe_network_interfaces()
                        .set_filters(Some(filters.to_vec()))
                        .max_results(self.page_size)
                        .set_next_token(token.clone());
                    async move { req.send().await.map_err(Ec2Error::from) }
                })
                .await?;
            // An ENI on two pages (the listing moved under the pages) is one ENI.
            for eni in resp.network_interfaces().iter().filter_map(to_eni) {
                if seen.insert(eni.id.clone()) {
                    out.push(eni);
                }
            }
            token = next_page(resp.next_token(), &mut followed);
            if token.is_none() {
                return Ok(out);
            }
        }
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
    let ipv6_addresses = ni.ipv6_addresses().iter().filter_map(|a| ip(a.ipv6_address())).collect();
    Some(Eni {
        id,
        subnet_id: ni.subnet_id().and_then(|s| s.parse().ok()),
        mac: ni.mac_address().and_then(|m| m.parse().ok()),
        primary_ip,
        secondary_ips,
        ipv6_addresses,
        status: ni.status().map(|s| s.as_str().to_string()).unwrap_or_default(),
        attachment: ni.attachment().and_then(|a| {
            Some(Attachment {
                id: a.attachment_id()?.to_string(),
                instance_id: a.instance_id().map(str::to_string),
                device_index: a.device_index().and_then(|d| u32::try_from(d).ok()),
                network_card: a.network_card_index().and_then(|c| u32::try_from(c).ok()),
                status: a.status().map(|s| s.as_str().to_string()).unwrap_or_default(),
                delete_on_termination: a.delete_on_termination(),
            })
        }),
        description: ni.description().filter(|d| !d.is_empty()).map(str::to_string),
        security_groups: ni.groups().iter().filter_map(|g| g.group_id().map(str::to_string)).collect(),
        source_dest_check: ni.source_dest_check(),
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
            let (mut token, mut followed): (Option<String>, Vec<String>) = (None, Vec::new());
            loop {
                let resp = self
                    .resilience
                    .call("DescribeSubnets", false, || {
                        let mut req = self.client.describe_subnets();
                        if use_ids {
                            // A few named IDs: one answer (EC2 takes no page size with IDs).
                            req = req.set_subnet_ids(Some(ids.iter().map(|i| i.to_string()).collect()));
                        } else {
                            req = req
                                .filters(Filter::builder().name("tag:Name").set_values(Some(names.to_vec())).build())
                                .max_results(self.page_size)
                                .set_next_token(token.clone());
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
                        name: s
                            .tags()
                            .iter()
                            .find(|t| t.key() == Some("Name"))
                            .and_then(|t| t.value())
                            .map(str::to_string),
                        ipv6_cidr: s
                            .ipv6_cidr_block_association_set()
                            .iter()
                            .filter(|a| {
                                a.ipv6_cidr_block_state().and_then(|st| st.state())
                                    == Some(&aws_sdk_ec2::types::SubnetCidrBlockStateCode::Associated)
                            })
                            .find_map(|a| a.ipv6_cidr_block().and_then(|c| c.parse().ok())),
                    });
                }
                token = next_page(resp.next_token(), &mut followed);
                if use_ids || token.is_none() {
                    break;
                }
            }
        }
        Ok(out)
    }

    async fn security_group_ids(&self, vpc_id: &str, names: &[String]) -> Ec2Result<Vec<(String, SecurityGroupId)>> {
        let mut out = Vec::new();
        let (mut token, mut followed): (Option<String>, Vec<String>) = (None, Vec::new());
        loop {
            let resp = self
                .resilience
                .call("DescribeSecurityGroups", false, || {
                    let req = self
                        .client
                        .describe_security_groups()
                        .filters(Filter::builder().name("vpc-id").values(vpc_id).build())
                        .filters(Filter::builder().name("group-name").set_values(Some(names.to_vec())).build())
                        .max_results(self.page_size)
                        .set_next_token(token.clone());
                    async move { req.send().await.map_err(Ec2Error::from) }
                })
                .await?;
            out.extend(
                resp.security_groups()
                    .iter()
                    .filter_map(|g| Some((g.group_name()?.to_string(), g.group_id()?.parse().ok()?))),
            );
            token = next_page(resp.next_token(), &mut followed);
            if token.is_none() {
                return Ok(out);
            }
        }
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
        let mut used: Vec<Place> = i
            .network_interfaces()
            .iter()
            .filter_map(|n| n.attachment())
            .filter_map(|a| {
                Some(Place {
                    network_card: a.network_card_index().map_or(Some(0), |c| u32::try_from(c).ok())?,
                    device_index: a.device_index().and_then(|d| u32::try_from(d).ok())?,
                })
            })
            .collect();
        used.sort_unstable();
        Ok(Some(Instance {
            id: id.clone(),
            availability_zone: i.placement().and_then(|p| p.availability_zone()).map(str::to_string),
            instance_type: i.instance_type().map(|t| t.as_str().to_string()),
            state: i.state().and_then(|s| s.name()).map(|n| n.as_str().to_string()),
            used_places: used,
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
        let ipv4_per_eni = info.ipv4_addresses_per_interface().and_then(|n| u32::try_from(n).ok()).unwrap_or(1);
        let ipv6_per_eni = match info.ipv6_supported() {
            Some(false) => 0,
            _ => info.ipv6_addresses_per_interface().and_then(|n| u32::try_from(n).ok()).unwrap_or(0),
        };
        // Multi-card types list each card's limit; single-card answers may list none.
        let mut enis_per_card: std::collections::BTreeMap<u32, u32> = info
            .network_cards()
            .iter()
            .filter_map(|c| {
                let index = u32::try_from(c.network_card_index().unwrap_or(0)).ok()?;
                let max = u32::try_from(c.maximum_network_interfaces()?).ok()?;
                Some((index, max.min(total)))
            })
            .collect();
        if enis_per_card.is_empty() {
            enis_per_card.insert(0, total);
        }
        Ok(InstanceLimits { enis_per_card, ipv4_per_eni, ipv6_per_eni })
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
                if r.ipv6_address_count > 0 {
                    req = req.ipv6_address_count(r.ipv6_address_count as i32);
                }
                if r.secondary_ip_count > 0 {
                    req = req.secondary_private_ip_address_count(r.secondary_ip_count as i32);
                }
                async move { req.send().await.map_err(Ec2Error::from) }
            })
            .await?;
        resp.network_interface().and_then(to_eni).ok_or_else(|| missing("network interface"))
    }

    async fn attach_eni(&self, eni: &EniId, instance: &InstanceId, place: Place) -> Ec2Result<String> {
        let resp = self
            .resilience
            .call("AttachNetworkInterface", true, || {
                let req = self
                    .client
                    .attach_network_interface()
                    .network_interface_id(eni.as_str())
                    .instance_id(instance.as_str())
                    .device_index(place.device_index as i32)
                    .network_card_index(place.network_card as i32);
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

    async fn set_source_dest_check(&self, eni: &EniId, check: bool) -> Ec2Result<()> {
        self.resilience
            .call("ModifyNetworkInterfaceAttribute", true, || {
                let value = aws_sdk_ec2::types::AttributeBooleanValue::builder().value(check).build();
                let req = self
                    .client
                    .modify_network_interface_attribute()
                    .network_interface_id(eni.as_str())
                    .source_dest_check(value);
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

    async fn assign_private_ips(&self, eni: &EniId, count: u32) -> Ec2Result<Vec<IpAddr>> {
        let resp = self
            .resilience
            .call("AssignPrivateIpAddresses", true, || {
                let req = self
                    .client
                    .assign_private_ip_addresses()
                    .network_interface_id(eni.as_str())
                    .secondary_private_ip_address_count(count as i32);
                async move { req.send().await.map_err(Ec2Error::from) }
            })
            .await?;
        Ok(resp.assigned_private_ip_addresses().iter().filter_map(|a| ip(a.private_ip_address())).collect())
    }

    async fn unassign_private_ips(&self, eni: &EniId, ips: &[IpAddr]) -> Ec2Result<()> {
        self.resilience
            .call("UnassignPrivateIpAddresses", true, || {
                let req = self
                    .client
                    .unassign_private_ip_addresses()
                    .network_interface_id(eni.as_str())
                    .set_private_ip_addresses(Some(ips.iter().map(ToString::to_string).collect()));
                async move { req.send().await.map_err(Ec2Error::from) }
            })
            .await?;
        Ok(())
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
        let filter = match value {
            Some(v) => Filter::builder().name(format!("tag:{tag}")).values(v).build(),
            None => Filter::builder().name("tag-key").values(tag).build(),
        };
        self.enis_filtered(&[filter]).await
    }

    async fn available_enis_tagged(&self, tag: &str, value: &str) -> Ec2Result<Vec<Eni>> {
        self.enis_filtered(&[
            Filter::builder().name(format!("tag:{tag}")).values(value).build(),
            Filter::builder().name("status").values("available").build(),
        ])
        .await
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
