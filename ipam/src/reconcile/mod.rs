//! Reconcile: converge EC2 and the node state to the pools the config declares for this node.
//!
//! Every EC2 mutation is preceded by an intent in the node state (a durable write), so a crash at any
//! point is finished or undone on the next run: creates carry an intent tag to be found again, ENIs
//! tagged for this node are adopted, records of ENIs gone from EC2 are dropped. ENIs held by pods are
//! never taken away; they drain. One pass, each step in its own module:
//!
//! - [`desired`]: the pools that select this node, resolved in EC2, as slots (pool, subnet, index);
//! - [`adopt`](self#adopt): the node state brought in line with what EC2 lists;
//! - [`plan`]: what to do, decided without I/O from the slots, the node state, EC2's view and the
//!   instance's limits;
//! - `converge`: the plan carried out, each decision about a record taken again under the lock;
//! - [`addresses`]: free secondary IPs kept on host ENIs for `nodeeni-ipam`;
//! - `drain`, `leaks`: emptying the node; deleting ENIs of dead nodes;
//! - `run`: the loop the daemon runs.

pub mod addresses;
mod adopt;
mod converge;
pub mod desired;
mod drain;
mod error;
mod leaks;
pub mod lookups;
pub mod plan;
mod report;
mod run;

use std::time::Duration;

use nodeeni_conf::PoolConfig;
use nodeeni_state::node::{EniRecord, NodeState, NodeStore, StoreError};

pub use converge::client_token;
pub use drain::{DRAIN_MARKER, POOL_LOCK};
pub use error::PoolError;
pub use report::{DrainReport, Report};
pub use run::{JITTER, LoopSettings, PassObserver, next_wait};

use crate::ec2::{Ec2, Eni, Instance, Subnet, tags};
use crate::host::HostPrep;
use crate::identity::NodeIdentity;
use crate::resilience::CallError;

/// Marks a create so a restart can find what it made.
pub const INTENT_TAG: &str = "nodeeni.io/intent";
const STORE_TIMEOUT: Duration = Duration::from_secs(30);

/// The pool of one node: its EC2 client, host side, configuration, identity and node state.
#[derive(Debug)]
pub struct Reconciler<E: Ec2, H: HostPrep> {
    pub ec2: E,
    pub host: H,
    pub config: PoolConfig,
    pub node: NodeIdentity,
    pub store: NodeStore,
    /// How long to wait for a detach to finish.
    pub detach_timeout: Duration,
    /// How long to wait for EC2 to confirm an attachment.
    pub attach_timeout: Duration,
    /// EC2's answers kept between passes.
    pub lookups: lookups::Lookups,
}

impl<E: Ec2, H: HostPrep> Reconciler<E, H> {
    pub fn new(ec2: E, host: H, config: PoolConfig, node: NodeIdentity) -> Self {
        let store = NodeStore::new(&config.state_dir);
        Self {
            ec2,
            host,
            config,
            node,
            store,
            detach_timeout: Duration::from_secs(60),
            attach_timeout: Duration::from_secs(60),
            lookups: lookups::Lookups::default(),
        }
    }

    /// One full pass. Pools that cannot be served are reported, the rest still converge. Everything the
    /// pass logs is inside its `pass` span, which names the instance.
    #[tracing::instrument(name = "pass", skip_all, fields(instance = %self.node.instance_id))]
    pub async fn reconcile(&self) -> Result<Report, PoolError> {
        let result = self.reconcile_once().await;
        // An error EC2 will repeat (a subnet or group gone, a bad parameter): the next pass looks
        // everything up again. Not for a busy or unreachable EC2, which changes nothing
        // and where looking up again would only add to the crowd.
        let repeats = |e: &PoolError| matches!(e, PoolError::Ec2(CallError::NotFound { .. } | CallError::Fatal { .. }));
        if result.as_ref().is_err_and(repeats) {
            self.lookups.forget();
        } else if result.as_ref().is_ok_and(|r| !(r.attached.is_empty() && r.deleted.is_empty())) {
            self.lookups.forget_instance();
        }
        result
    }

    async fn describe_instance(&self) -> Result<Instance, PoolError> {
        self.lookups
            .describe_instance(&self.ec2, &self.node.instance_id)
            .await?
            .ok_or_else(|| PoolError::NoInstance(self.node.instance_id.clone()))
    }

    async fn reconcile_once(&self) -> Result<Report, PoolError> {
        let mut report = Report::default();
        let kept = self.lookups.instance();
        let mut described = kept.is_none();
        let mut instance = match kept {
            Some(i) => i,
            None => self.describe_instance().await?,
        };
        let limits = self.lookups.limits(&self.ec2, &self.node.instance_type).await?;
        let mut listed = self.mine().await?;
        let (found, state) = self.adopt(&listed, &mut report).await?;
        listed.extend(found);
        let mut desired = self.desired().await?;
        // A pool on a network card the instance type lacks is refused as a whole, so its ENIs on
        // another card (the pool moved, or a typo) stay instead of going for slots never served.
        let mut no_card: Vec<(String, String)> = Vec::new();
        desired.slots.retain(|slot| {
            if limits.max_enis(slot.network_card).is_some() {
                return true;
            }
            if !no_card.iter().any(|(p, _)| p == &slot.pool) {
                no_card.push((
                    slot.pool.clone(),
                    format!(
                        "the instance type has {} network card(s) and no network card {}",
                        limits.network_cards(),
                        slot.network_card
                    ),
                ));
            }
            false
        });
        let desired_refused_before = desired.refused.len();
        desired.refused.extend(no_card);
        if desired_refused_before > 0 {
            // A pool refused for its subnets or groups (unknown, another AZ) is resolved afresh next
            // pass: someone may be fixing them. A refusal from the plan is not about these.
            self.lookups.forget();
        }
        report.refused.extend(desired.refused.iter().map(|(pool, msg)| format!("{pool}: {msg}")));
        let mut refused_pools = desired.refused_pools();
        if self.config.keep_undeclared {
            // Records of pools the configuration does not name (adopted ones included) stay: they
            // may be a NodeENI's that cannot be listed now.
            let kept: std::collections::BTreeSet<String> = state
                .enis
                .iter()
                .map(|r| r.pool.clone())
                .filter(|p| self.config.pool(p).is_none() && !refused_pools.contains(p))
                .collect();
            if !kept.is_empty() {
                tracing::info!(pools = ?kept, "keeping the ENIs of pools not declared here until the NodeENIs are listed");
            }
            refused_pools.extend(kept);
        }
        let plan = loop {
            let plan = plan::plan(&plan::PlanInput {
                slots: &desired.slots,
                refused_pools: &refused_pools,
                records: &state.enis,
                listed: &listed,
                instance: &instance,
                limits: &limits,
            });
            // An attach (or a refusal for want of a place) is decided from the places taken:
            // those are described now, not kept.
            let attaches = plan.slots.iter().any(|w| w.steps.iter().any(|s| matches!(s, plan::Step::Attach { .. })));
            if described || (!attaches && plan.refused.is_empty()) {
                break plan;
            }
            instance = self.describe_instance().await?;
            described = true;
        };
        tracing::debug!(?plan, "planned");
        report.refused.extend(plan.refused.iter().cloned());
        self.execute(plan, &listed, &mut report).await?;
        // Only where a pool keeps addresses or a return was interrupted: no other pass pays a
        // node-state read for it.
        if self.config.pools.iter().any(addresses::managed) || state.enis.iter().any(|r| !r.ips_releasing.is_empty()) {
            self.keep_addresses(&listed, &limits, &mut report).await?;
        }
        Ok(report)
    }

    /// ENIs EC2 has for this node and cluster.
    async fn mine(&self) -> Result<Vec<Eni>, PoolError> {
        let all = self.ec2.enis_tagged(tags::NODE, Some(self.node.instance_id.as_str())).await?;
        Ok(all.into_iter().filter(|e| e.tags.get(tags::CLUSTER) == Some(&self.config.cluster_name)).collect())
    }

    fn load(&self) -> Result<NodeState, PoolError> {
        Ok(off_runtime(|| self.store.load(STORE_TIMEOUT))?)
    }

    /// One locked read-change-write of the node state (a flock wait of up to 30 s while the CNI
    /// holds it, and an fsync): off the runtime's workers, so health, Allocate and metrics go on.
    fn update<T>(&self, f: impl FnOnce(&mut NodeState) -> T) -> Result<T, PoolError> {
        Ok(off_runtime(|| self.store.update(STORE_TIMEOUT, |s| Ok::<_, StoreError>(f(s))))?)
    }
}

/// Runs blocking file work without stalling the runtime's other tasks: on a multi-threaded runtime
/// (the daemon's) the worker hands its queue to another thread meanwhile; a current-thread runtime
/// (tests, tools) has no other worker to hand it to, so it just runs.
pub(crate) fn off_runtime<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Copies what EC2 says of an ENI into its record.
fn fill_from(rec: &mut EniRecord, eni: &Eni, subnet: Option<&Subnet>) {
    rec.eni_id = Some(eni.id.clone());
    rec.mac = eni.mac;
    rec.primary_ip = eni.primary_ip;
    rec.secondary_ips = eni.secondary_ips.clone();
    rec.ipv6_addresses = eni.ipv6_addresses.clone();
    rec.subnet_id = eni.subnet_id.clone();
    if let Some(s) = subnet {
        rec.subnet_cidr = Some(s.cidr);
        rec.gateway = Some(s.cidr.vpc_gateway());
        rec.subnet_ipv6_cidr = s.ipv6_cidr;
    }
    rec.attachment_id = eni.attachment.as_ref().map(|a| a.id.clone());
    rec.source_dest_check = eni.source_dest_check;
}
