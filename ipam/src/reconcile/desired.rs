//! Desired: the pools that select this node, resolved in EC2 (subnets by ID or Name tag, security
//! groups by ID or name), as slots — `enisPerSubnet` ENIs in each subnet at consecutive device indexes
//! from `firstDeviceIndex` on the pool's network card (a card and device index are an ENI's place
//! on the instance).

use nodeeni_conf::pool::{SecurityGroupRef, SubnetRef};
use nodeeni_conf::{Mode, Pool, SecurityGroupId, SubnetId};

use super::{PoolError, Reconciler};
use crate::ec2::{Ec2, Place, Subnet};
use crate::host::HostPrep;
use crate::resilience::CallError;

/// One desired ENI: its pool, subnet and device index, and what the pool declares of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub pool: String,
    pub mode: Mode,
    pub subnet: Subnet,
    pub device_index: u32,
    /// The network card the device index is on.
    pub network_card: u32,
    /// The pool's security groups, resolved to IDs (empty: the subnet's VPC default, not enforced).
    pub security_groups: Vec<SecurityGroupId>,
    pub description: Option<String>,
    pub delete_on_termination: bool,
    /// The pool's source/destination check (None: EC2's, not enforced).
    pub source_dest_check: Option<bool>,
    /// IPv6 addresses a new ENI gets at create.
    pub ipv6_address_count: u32,
}

impl Slot {
    pub fn place(&self) -> Place {
        Place { network_card: self.network_card, device_index: self.device_index }
    }
}

/// The slots of every pool that selects this node, and the pools that cannot be served with why.
#[derive(Debug, Default)]
pub struct Desired {
    pub slots: Vec<Slot>,
    /// (pool, reason): their records are left alone this pass.
    pub refused: Vec<(String, String)>,
}

impl Desired {
    pub fn refused_pools(&self) -> Vec<String> {
        self.refused.iter().map(|(p, _)| p.clone()).collect()
    }
}

/// A pool's slots once its subnets and groups are known.
pub fn slots_of(pool: &Pool, subnets: &[Subnet], groups: &[SecurityGroupId]) -> Vec<Slot> {
    let mut out = Vec::new();
    let mut index = pool.first_device_index;
    for subnet in subnets {
        for _ in 0..pool.enis_per_subnet {
            out.push(Slot {
                pool: pool.name.clone(),
                mode: pool.mode,
                subnet: subnet.clone(),
                device_index: index,
                network_card: pool.network_card_index,
                security_groups: groups.to_vec(),
                description: pool.description.clone(),
                delete_on_termination: pool.delete_on_termination,
                source_dest_check: pool.source_dest_check,
                ipv6_address_count: pool.ipv6_address_count,
            });
            index += 1;
        }
    }
    out
}

impl<E: Ec2, H: HostPrep> Reconciler<E, H> {
    /// Resolves every pool that selects this node. A pool that cannot be served is refused with the
    /// reason; an EC2 failure (not a refusal) fails the pass.
    pub(super) async fn desired(&self) -> Result<Desired, PoolError> {
        let mut out = Desired::default();
        // The configuration carries the labels (the file's, or in cluster mode the Node's), so a label
        // change reaches the pool as a new configuration does.
        for pool in self.config.pools_for(&self.config.node.labels) {
            match self.resolve(pool).await {
                Ok((subnets, groups)) => out.slots.extend(slots_of(pool, &subnets, &groups)),
                Err(PoolError::Refused { pool, msg }) => {
                    tracing::error!(pool, msg, "pool refused");
                    out.refused.push((pool, msg));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    async fn resolve(&self, pool: &Pool) -> Result<(Vec<Subnet>, Vec<SecurityGroupId>), PoolError> {
        let refuse = |msg: String| PoolError::Refused { pool: pool.name.clone(), msg };
        let ids: Vec<SubnetId> =
            pool.subnets.iter().filter_map(|s| if let SubnetRef::Id(i) = s { Some(i.clone()) } else { None }).collect();
        let names: Vec<String> = pool
            .subnets
            .iter()
            .filter_map(|s| if let SubnetRef::Name(n) = s { Some(n.clone()) } else { None })
            .collect();
        let found = match self.lookups.subnets(&self.ec2, &ids, &names).await {
            Ok(f) => f,
            Err(CallError::NotFound { error, .. }) => return Err(refuse(format!("unknown subnet: {error}"))),
            Err(e) => return Err(e.into()),
        };
        let mut subnets = Vec::new();
        for s in &pool.subnets {
            let hit = found.iter().find(|f| match s {
                SubnetRef::Id(i) => &f.id == i,
                SubnetRef::Name(n) => f.name.as_ref() == Some(n),
            });
            let Some(hit) = hit else {
                return Err(refuse(format!("unknown subnet {s:?}")));
            };
            if hit.availability_zone != self.node.availability_zone {
                return Err(refuse(format!(
                    "subnet {} is in {}, the node is in {}: an ENI attaches only within its AZ",
                    hit.id, hit.availability_zone, self.node.availability_zone
                )));
            }
            if pool.ipv6_address_count > 0 && hit.ipv6_cidr.is_none() {
                return Err(refuse(format!(
                    "subnet {} has no IPv6 CIDR, and the pool asks {} IPv6 address(es) per ENI",
                    hit.id, pool.ipv6_address_count
                )));
            }
            subnets.push(hit.clone());
        }
        let mut groups: Vec<SecurityGroupId> = pool
            .security_groups
            .iter()
            .filter_map(|g| if let SecurityGroupRef::Id(i) = g { Some(i.clone()) } else { None })
            .collect();
        let names: Vec<String> = pool
            .security_groups
            .iter()
            .filter_map(|g| if let SecurityGroupRef::Name(n) = g { Some(n.clone()) } else { None })
            .collect();
        if !names.is_empty() {
            let vpc = subnets.first().map(|s| s.vpc_id.clone()).unwrap_or_default();
            let by_name = self.lookups.security_groups(&self.ec2, &vpc, &names).await?;
            for n in &names {
                match by_name.iter().find(|(name, _)| name == n) {
                    Some((_, id)) => groups.push(id.clone()),
                    None => return Err(refuse(format!("no security group named {n:?} in {vpc}"))),
                }
            }
        }
        Ok((subnets, groups))
    }
}
