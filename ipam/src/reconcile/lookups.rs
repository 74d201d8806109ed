//! Lookups: what a pass asks EC2 that rarely changes — the pools' subnets and security groups, the
//! instance type's limits, the instance's taken device indexes — kept between passes, so a pass that
//! finds nothing to do makes one call: the listing of the node's ENIs. With 1000 nodes a pass a
//! minute, five describes each would be 83 a second against an account's 20.
//!
//! What is kept is forgotten after a pool is refused for its subnets or groups, after an error EC2
//! will repeat (a deleted subnet or group shows as the create's or modify's error first), and after
//! `LOOKUP_TTL`; not after a busy or unreachable EC2, nor a store or host error. The instance is described
//! again whenever the plan would attach: its device indexes are what an attach decides from, and
//! other tools may have taken one.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use nodeeni_conf::{InstanceId, SecurityGroupId, SubnetId};
use tokio::time::Instant;

use crate::ec2::{Ec2, Ec2Result, Instance, InstanceLimits, Subnet};

/// How long resolved subnets and security groups are trusted.
pub const LOOKUP_TTL: Duration = Duration::from_secs(6 * 3600);

type SubnetQuery = (Vec<SubnetId>, Vec<String>);
type GroupQuery = (String, Vec<String>);

/// Answers by query, each trusted for `LOOKUP_TTL`.
#[derive(Debug)]
struct Expiring<K, V>(HashMap<K, (Instant, V)>);

impl<K, V> Default for Expiring<K, V> {
    fn default() -> Self {
        Self(HashMap::new())
    }
}

impl<K: std::hash::Hash + Eq, V: Clone> Expiring<K, V> {
    fn fresh(&self, query: &K) -> Option<V> {
        self.0.get(query).filter(|(at, _)| at.elapsed() < LOOKUP_TTL).map(|(_, v)| v.clone())
    }

    fn keep(&mut self, query: K, answer: V) {
        self.0.insert(query, (Instant::now(), answer));
    }
}

#[derive(Debug, Default)]
struct Kept {
    subnets: Expiring<SubnetQuery, Vec<Subnet>>,
    groups: Expiring<GroupQuery, Vec<(String, SecurityGroupId)>>,
    limits: HashMap<String, InstanceLimits>,
    instance: Option<Instance>,
}

/// The kept answers, shared by a pass's parallel steps.
#[derive(Debug, Default)]
pub struct Lookups {
    kept: Mutex<Kept>,
}

impl Lookups {
    fn kept(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The kept answer to `query` in the map `pick` chooses, or `ask`'s (then kept).
    async fn kept_or<K: std::hash::Hash + Eq, V: Clone>(
        &self,
        pick: impl Fn(&mut Kept) -> &mut Expiring<K, V>,
        query: K,
        ask: impl std::future::Future<Output = Ec2Result<V>>,
    ) -> Ec2Result<V> {
        if let Some(answer) = pick(&mut self.kept()).fresh(&query) {
            return Ok(answer);
        }
        let answer = ask.await?;
        pick(&mut self.kept()).keep(query, answer.clone());
        Ok(answer)
    }

    pub async fn subnets(&self, ec2: &impl Ec2, ids: &[SubnetId], names: &[String]) -> Ec2Result<Vec<Subnet>> {
        self.kept_or(|k| &mut k.subnets, (ids.to_vec(), names.to_vec()), ec2.describe_subnets(ids, names)).await
    }

    pub async fn security_groups(
        &self,
        ec2: &impl Ec2,
        vpc: &str,
        names: &[String],
    ) -> Ec2Result<Vec<(String, SecurityGroupId)>> {
        self.kept_or(|k| &mut k.groups, (vpc.to_string(), names.to_vec()), ec2.security_group_ids(vpc, names)).await
    }

    /// The limits already known for `instance_type` (no EC2 call).
    pub fn kept_limits(&self, instance_type: &str) -> Option<InstanceLimits> {
        self.kept().limits.get(instance_type).cloned()
    }

    /// An instance type's limits never change.
    pub async fn limits(&self, ec2: &impl Ec2, instance_type: &str) -> Ec2Result<InstanceLimits> {
        if let Some(l) = self.kept().limits.get(instance_type).cloned() {
            return Ok(l);
        }
        let limits = ec2.instance_limits(instance_type).await?;
        self.kept().limits.insert(instance_type.to_string(), limits.clone());
        Ok(limits)
    }

    /// The instance as last described, if kept.
    pub fn instance(&self) -> Option<Instance> {
        self.kept().instance.clone()
    }

    /// Describes the instance now, and keeps the answer.
    pub async fn describe_instance(&self, ec2: &impl Ec2, id: &InstanceId) -> Ec2Result<Option<Instance>> {
        let instance = ec2.describe_instance(id).await?;
        self.kept().instance = instance.clone();
        Ok(instance)
    }

    /// The instance's device indexes changed (this pass attached or removed): describe it next time.
    pub fn forget_instance(&self) {
        self.kept().instance = None;
    }

    /// Forgets everything but the instance type's limits.
    pub fn forget(&self) {
        let mut kept = self.kept();
        kept.subnets = Expiring::default();
        kept.groups = Expiring::default();
        kept.instance = None;
    }
}
