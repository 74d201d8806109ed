//! Reconcile: converge EC2 and the node state to the pools the config declares for this node.
//!
//! Desired: for each pool that selects this node, `enisPerSubnet` ENIs in each subnet, at consecutive
//! device indexes from `firstDeviceIndex` (a device index is an ENI's slot). Actual: the ENIs EC2 has
//! tagged for this node and cluster, and the node state. Every EC2 mutation is preceded by an intent
//! in the node state (a durable write), so a crash at any point is finished or undone on the next run:
//! creates carry an intent tag to be found again, ENIs tagged for this node are adopted, records of
//! ENIs gone from EC2 are dropped. ENIs held by pods are never taken away; they drain.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use nodeeni_conf::pool::{SecurityGroupRef, SubnetRef};
use nodeeni_conf::{EniId, InstanceId, Mode, Pool, PoolConfig, SecurityGroupId, SubnetId};
use nodeeni_state::node::{EniRecord, Lifecycle, NodeStore, StoreError, now_unix};

use crate::ec2::{CreateEni, Ec2, Ec2Error, Eni, Subnet, tags};
use crate::resilience::CallError;

/// Marks a create so a restart can find what it made.
pub const INTENT_TAG: &str = "nodeeni.io/intent";
const STORE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error(transparent)]
    Ec2(#[from] CallError<Ec2Error>),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("pool {pool}: {msg}")]
    Refused { pool: String, msg: String },
    #[error("instance {0} not found in EC2")]
    NoInstance(InstanceId),
    #[error("host side of {eni}: {msg}")]
    Host { eni: String, msg: String },
    /// Test hook: a simulated crash at a named point.
    #[error("simulated crash {0:?}")]
    Crash(CrashPoint),
}

impl PoolError {
    /// What went wrong, as a short stable word (a metric label).
    pub fn kind(&self) -> &'static str {
        match self {
            PoolError::Ec2(_) => "ec2",
            PoolError::Store(_) => "state",
            PoolError::Refused { .. } => "refused",
            PoolError::NoInstance(_) => "no_instance",
            PoolError::Host { .. } => "host",
            PoolError::Crash(_) => "crash",
        }
    }
}

/// Where a test may stop the reconciler as a crash would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    AfterCreate,
    AfterAttach,
}

/// The node as EC2 knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    pub instance_id: InstanceId,
    pub availability_zone: String,
    pub instance_type: String,
    pub labels: BTreeMap<String, String>,
}

/// What the host knows of an attached ENI once it is prepared for its pool.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFacts {
    pub ifname: Option<String>,
    pub pci: Option<nodeeni_conf::PciAddress>,
    pub driver: Option<String>,
    pub iommu_group: Option<u32>,
    pub numa_node: Option<u32>,
}

/// The host side: find the attached ENI's netdev by MAC and prepare it for its pool's mode.
pub trait HostPrep: Send + Sync {
    fn prepare(&self, pool: &Pool, record: &EniRecord) -> impl Future<Output = Result<HostFacts, String>> + Send;
}

/// What one reconcile did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub created: Vec<EniId>,
    pub attached: Vec<EniId>,
    pub adopted: Vec<EniId>,
    pub deleted: Vec<EniId>,
    /// Drift repaired: re-attached, security groups or description reset, records of vanished ENIs dropped.
    pub repaired: Vec<String>,
    /// Held by pods: waiting to be released before removal.
    pub draining: Vec<EniId>,
    /// Pools that could not be served, and why; the others were still reconciled.
    pub refused: Vec<String>,
}

impl Report {
    fn absorb(&mut self, other: Report) {
        self.created.extend(other.created);
        self.attached.extend(other.attached);
        self.adopted.extend(other.adopted);
        self.deleted.extend(other.deleted);
        self.repaired.extend(other.repaired);
        self.draining.extend(other.draining);
        self.refused.extend(other.refused);
    }
}

/// What [`Reconciler::drain`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DrainReport {
    pub deleted: Vec<EniId>,
    /// Still on the node when the time ran out (held by pods).
    pub remaining: Vec<EniId>,
}

#[derive(Debug)]
pub struct Reconciler<E: Ec2, H: HostPrep> {
    pub ec2: E,
    pub host: H,
    pub config: PoolConfig,
    pub node: NodeIdentity,
    pub store: NodeStore,
    /// Test hook: stop like a crash here.
    pub crash_at: Option<CrashPoint>,
    /// How long to wait for a detach to finish.
    pub detach_timeout: Duration,
    /// How long to wait for EC2 to confirm an attachment.
    pub attach_timeout: Duration,
}

/// A pool with its subnets and security groups resolved in EC2.
struct Resolved<'a> {
    pool: &'a Pool,
    subnets: Vec<Subnet>,
    groups: Vec<SecurityGroupId>,
}

/// One desired ENI: pool, subnet, device index.
#[derive(Debug, Clone)]
struct Slot {
    pool: String,
    subnet: Subnet,
    device_index: u32,
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
            crash_at: None,
            detach_timeout: Duration::from_secs(60),
            attach_timeout: Duration::from_secs(60),
        }
    }

    fn crash(&self, at: CrashPoint) -> Result<(), PoolError> {
        if self.crash_at == Some(at) { Err(PoolError::Crash(at)) } else { Ok(()) }
    }

    fn my_pools(&self) -> Vec<&Pool> {
        self.config.pools_for(&self.node.labels).collect()
    }

    async fn resolve<'a>(&self, pool: &'a Pool) -> Result<Resolved<'a>, PoolError> {
        let refuse = |msg: String| PoolError::Refused { pool: pool.name.clone(), msg };
        let ids: Vec<SubnetId> =
            pool.subnets.iter().filter_map(|s| if let SubnetRef::Id(i) = s { Some(i.clone()) } else { None }).collect();
        let names: Vec<String> = pool
            .subnets
            .iter()
            .filter_map(|s| if let SubnetRef::Name(n) = s { Some(n.clone()) } else { None })
            .collect();
        let found = match self.ec2.describe_subnets(&ids, &names).await {
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
            let by_name = self.ec2.security_group_ids(&vpc, &names).await?;
            for n in &names {
                match by_name.iter().find(|(name, _)| name == n) {
                    Some((_, id)) => groups.push(id.clone()),
                    None => return Err(refuse(format!("no security group named {n:?} in {vpc}"))),
                }
            }
        }
        Ok(Resolved { pool, subnets, groups })
    }

    fn slots(r: &Resolved) -> Vec<Slot> {
        let mut out = Vec::new();
        let mut index = r.pool.first_device_index;
        for subnet in &r.subnets {
            for _ in 0..r.pool.enis_per_subnet {
                out.push(Slot { pool: r.pool.name.clone(), subnet: subnet.clone(), device_index: index });
                index += 1;
            }
        }
        out
    }

    /// ENIs EC2 has for this node and cluster.
    async fn mine(&self) -> Result<Vec<Eni>, PoolError> {
        let all = self.ec2.enis_tagged(tags::NODE, Some(self.node.instance_id.as_str())).await?;
        Ok(all.into_iter().filter(|e| e.tags.get(tags::CLUSTER) == Some(&self.config.cluster_name)).collect())
    }

    fn update<T>(&self, f: impl FnOnce(&mut nodeeni_state::node::NodeState) -> T) -> Result<T, PoolError> {
        Ok(self.store.update(STORE_TIMEOUT, |s| Ok::<_, StoreError>(f(s)))?)
    }

    fn fill_from(rec: &mut EniRecord, eni: &Eni, subnet: Option<&Subnet>) {
        rec.eni_id = Some(eni.id.clone());
        rec.mac = eni.mac;
        rec.primary_ip = eni.primary_ip;
        rec.secondary_ips = eni.secondary_ips.clone();
        rec.subnet_id = eni.subnet_id.clone();
        if let Some(s) = subnet {
            rec.subnet_cidr = Some(s.cidr);
            rec.gateway = Some(s.cidr.vpc_gateway());
        }
        rec.attachment_id = eni.attachment.as_ref().map(|a| a.id.clone());
        rec.updated_unix = now_unix();
    }

    /// Brings the node state in line with what EC2 says exists: finish interrupted creates, adopt
    /// ENIs tagged for this node, drop records of ENIs that are gone.
    fn sync_state(&self, mine: &[Eni], report: &mut Report) -> Result<(), PoolError> {
        let pool_names: Vec<String> = self.config.pools.iter().map(|p| p.name.clone()).collect();
        self.update(|s| {
            for eni in mine {
                if s.eni(&eni.id).is_some() {
                    continue;
                }
                let token = eni.tags.get(INTENT_TAG);
                if let Some(rec) = s.enis.iter_mut().find(|r| r.eni_id.is_none() && r.client_token.as_ref() == token && token.is_some()) {
                    tracing::info!(eni = %eni.id, "finishing a create interrupted by a restart");
                    Self::fill_from(rec, eni, None);
                    rec.lifecycle = Lifecycle::Attaching;
                    report.adopted.push(eni.id.clone());
                    continue;
                }
                let pool = eni.tags.get(tags::POOL).cloned().unwrap_or_default();
                tracing::info!(eni = %eni.id, pool, known_pool = pool_names.contains(&pool), "adopting an ENI tagged for this node");
                let mode = self.config.pool(&pool).map_or(Mode::Kernel, |p| p.mode);
                let mut rec = EniRecord {
                    device_index: eni.attachment.as_ref().and_then(|a| a.device_index),
                    client_token: token.cloned(),
                    ..EniRecord::new(pool, mode, Lifecycle::Attaching)
                };
                Self::fill_from(&mut rec, eni, None);
                s.enis.push(rec);
                report.adopted.push(eni.id.clone());
            }
            s.enis.retain(|r| match &r.eni_id {
                Some(id) if !mine.iter().any(|e| &e.id == id) => {
                    if r.allocation.is_some() {
                        tracing::warn!(eni = %id, "ENI held by a pod is gone from EC2; keeping its record until the pod lets go");
                        return true;
                    }
                    tracing::warn!(eni = %id, "ENI gone from EC2 (deleted outside nodeeni); dropping its record");
                    report.repaired.push(format!("{id}: vanished from EC2, record dropped"));
                    false
                }
                // A create whose intent never reached EC2.
                None if r.lifecycle == Lifecycle::Creating => false,
                _ => true,
            });
        })
    }

    /// One full pass. Pools that cannot be served are reported, the rest still converge.
    pub async fn reconcile(&self) -> Result<Report, PoolError> {
        let mut report = Report::default();
        let instance = self
            .ec2
            .describe_instance(&self.node.instance_id)
            .await?
            .ok_or_else(|| PoolError::NoInstance(self.node.instance_id.clone()))?;
        let limits = self.ec2.instance_limits(&self.node.instance_type).await?;
        let mine = self.mine().await?;
        self.sync_state(&mine, &mut report)?;

        let mut resolved = Vec::new();
        let mut refused_pools = Vec::new();
        for pool in self.my_pools() {
            match self.resolve(pool).await {
                Ok(r) => resolved.push(r),
                Err(PoolError::Refused { pool, msg }) => {
                    tracing::error!(pool, msg, "pool refused");
                    report.refused.push(format!("{pool}: {msg}"));
                    refused_pools.push(pool);
                }
                Err(e) => return Err(e),
            }
        }
        let desired: Vec<Slot> = resolved.iter().flat_map(Self::slots).collect();
        let mut used = instance.used_device_indexes.clone();

        // Remove what is not desired (pool gone, shrunk, or no longer selecting this node).
        let state = self.store.load(STORE_TIMEOUT)?;
        for rec in &state.enis {
            let Some(id) = rec.eni_id.clone() else { continue };
            if refused_pools.contains(&rec.pool) {
                continue;
            }
            let wanted = desired.iter().any(|d| d.pool == rec.pool && Some(d.device_index) == rec.device_index);
            if !wanted {
                self.remove(rec, &id, &mine, &mut report).await?;
            }
        }

        // Create and attach what is missing; repair what drifted. Capacity and device indexes are
        // decided first, then every slot converges at once (the rate limiter bounds the mutations).
        let state = self.store.load(STORE_TIMEOUT)?;
        let attached_indexes: Vec<u32> =
            mine.iter().filter_map(|e| e.attachment.as_ref().and_then(|a| a.device_index)).collect();
        let mut free = limits.max_enis.saturating_sub(used.len() as u32);
        let mut work = Vec::new();
        for r in &resolved {
            for slot in Self::slots(r) {
                let existing = state
                    .enis
                    .iter()
                    .find(|e| e.pool == slot.pool && e.device_index == Some(slot.device_index))
                    .cloned();
                if existing.is_none() {
                    if free == 0 {
                        report.refused.push(format!(
                            "{}: the instance takes {} ENIs and has no free slot for device index {}",
                            slot.pool, limits.max_enis, slot.device_index
                        ));
                        continue;
                    }
                    if used.contains(&slot.device_index) && !attached_indexes.contains(&slot.device_index) {
                        report
                            .refused
                            .push(format!("{}: device index {} is taken by another ENI", slot.pool, slot.device_index));
                        continue;
                    }
                    free -= 1;
                    used.push(slot.device_index);
                }
                work.push((r, slot, existing));
            }
        }
        let mine = &mine;
        let results = futures_util::future::join_all(work.into_iter().map(|(r, slot, existing)| async move {
            let mut part = Report::default();
            // What EC2 said of the ENI already (the tag listing, or the create's answer): no describe per ENI.
            let (rec, known) = match existing {
                Some(rec) => {
                    let known = rec.eni_id.as_ref().and_then(|id| mine.iter().find(|e| &e.id == id).cloned());
                    (rec, known)
                }
                None => {
                    let (rec, eni) = self.create(r, &slot, &mut part).await?;
                    (rec, Some(eni))
                }
            };
            self.ensure_attached(r, &slot, rec, known, &mut part).await?;
            Ok::<_, PoolError>(part)
        }))
        .await;
        let mut first_error = None;
        for result in results {
            match result {
                Ok(part) => report.absorb(part),
                Err(e) => {
                    tracing::error!(error = %e, "converging a slot failed");
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        let attached = report.attached.clone();
        self.confirm_attachments(&attached, &mut report).await?;
        Ok(report)
    }

    async fn create(&self, r: &Resolved<'_>, slot: &Slot, report: &mut Report) -> Result<(EniRecord, Eni), PoolError> {
        let pool = r.pool;
        let token = format!("{}-{}-{}-{}", self.node.instance_id, pool.name, slot.device_index, now_unix());
        // Intent first: a crash after the create finds the ENI again by this token.
        self.update(|s| {
            s.enis.push(EniRecord {
                subnet_id: Some(slot.subnet.id.clone()),
                subnet_cidr: Some(slot.subnet.cidr),
                gateway: Some(slot.subnet.cidr.vpc_gateway()),
                device_index: Some(slot.device_index),
                dpdk_driver: (pool.mode == Mode::Dpdk).then(|| pool.dpdk_driver.to_string()),
                mtu: pool.mtu,
                client_token: Some(token.clone()),
                ..EniRecord::new(pool.name.clone(), pool.mode, Lifecycle::Creating)
            })
        })?;
        let mut tagset = pool.tags.clone();
        tagset.insert(tags::CLUSTER.into(), self.config.cluster_name.clone());
        tagset.insert(tags::NODE.into(), self.node.instance_id.to_string());
        tagset.insert(tags::POOL.into(), pool.name.clone());
        tagset.insert(tags::CREATED.into(), now_unix().to_string());
        tagset.insert(INTENT_TAG.into(), token.clone());
        let eni = self
            .ec2
            .create_eni(&CreateEni {
                subnet_id: slot.subnet.id.clone(),
                security_groups: r.groups.clone(),
                description: pool.description.clone(),
                secondary_ip_count: pool.secondary_ip_count,
                tags: tagset,
                client_token: token.clone(),
            })
            .await?;
        tracing::info!(eni = %eni.id, pool = pool.name, device_index = slot.device_index, reason = "pool below its declared size", "created ENI");
        report.created.push(eni.id.clone());
        self.crash(CrashPoint::AfterCreate)?;
        let rec = self
            .update(|s| {
                let rec = s.enis.iter_mut().find(|e| e.client_token.as_ref() == Some(&token) && e.eni_id.is_none());
                rec.map(|rec| {
                    Self::fill_from(rec, &eni, Some(&slot.subnet));
                    rec.lifecycle = Lifecycle::Attaching;
                    rec.clone()
                })
            })?
            .ok_or_else(|| PoolError::Refused {
                pool: pool.name.clone(),
                msg: "the create intent vanished from the node state".into(),
            })?;
        Ok((rec, eni))
    }

    async fn ensure_attached(
        &self,
        r: &Resolved<'_>,
        slot: &Slot,
        rec: EniRecord,
        known: Option<Eni>,
        report: &mut Report,
    ) -> Result<(), PoolError> {
        let Some(id) = rec.eni_id.clone() else { return Ok(()) };
        // Not in EC2's listing: a vanished ENI still held by a pod; nothing to attach.
        let Some(mut eni) = known else { return Ok(()) };
        let attached_here =
            eni.attachment.as_ref().is_some_and(|a| a.instance_id.as_deref() == Some(self.node.instance_id.as_str()));
        let mut rec = rec;
        if !attached_here {
            if rec.lifecycle == Lifecycle::Ready {
                tracing::warn!(eni = %id, "attachment lost (detached outside nodeeni); re-attaching");
                report.repaired.push(format!("{id}: re-attached"));
                // Not Ready until attached and prepared again: the device plugin reports it Unhealthy.
                rec.lifecycle = Lifecycle::Attaching;
                self.update(|s| {
                    if let Some(r) = s.eni_mut(&id) {
                        r.lifecycle = Lifecycle::Attaching;
                    }
                })?;
            }
            let attachment = self.ec2.attach_eni(&id, &self.node.instance_id, slot.device_index).await?;
            tracing::info!(eni = %id, attachment, device_index = slot.device_index, "attached ENI");
            report.attached.push(id.clone());
            self.crash(CrashPoint::AfterAttach)?;
            self.ec2.set_delete_on_termination(&id, &attachment, r.pool.delete_on_termination).await?;
            eni.attachment = Some(crate::ec2::Attachment {
                id: attachment,
                instance_id: Some(self.node.instance_id.to_string()),
                device_index: Some(slot.device_index),
                status: "attached".into(),
                delete_on_termination: Some(r.pool.delete_on_termination),
            });
        } else if let Some(a) = &eni.attachment
            && a.delete_on_termination != Some(r.pool.delete_on_termination)
        {
            self.ec2.set_delete_on_termination(&id, &a.id, r.pool.delete_on_termination).await?;
        }
        // Drift in what we declared: security groups and description.
        let mut want_groups: Vec<String> = r.groups.iter().map(|g| g.to_string()).collect();
        let mut have_groups = eni.security_groups.clone();
        want_groups.sort();
        have_groups.sort();
        if !want_groups.is_empty() && want_groups != have_groups {
            self.ec2.set_security_groups(&id, &r.groups).await?;
            report.repaired.push(format!("{id}: security groups reset"));
        }
        if let Some(d) = &r.pool.description
            && eni.description.as_ref() != Some(d)
        {
            self.ec2.set_description(&id, d).await?;
            report.repaired.push(format!("{id}: description reset"));
        }
        Self::fill_from(&mut rec, &eni, Some(&slot.subnet));
        if rec.lifecycle != Lifecycle::Ready || rec.host_ifname.is_none() && r.pool.mode != Mode::Dpdk {
            match self.host.prepare(r.pool, &rec).await {
                Ok(facts) => {
                    rec.host_ifname = facts.ifname.or(rec.host_ifname);
                    rec.pci = facts.pci.or(rec.pci);
                    rec.driver = facts.driver.or(rec.driver);
                    rec.iommu_group = facts.iommu_group.or(rec.iommu_group);
                    rec.numa_node = facts.numa_node.or(rec.numa_node);
                    rec.lifecycle = Lifecycle::Ready;
                }
                Err(msg) => return Err(PoolError::Host { eni: id.to_string(), msg }),
            }
        }
        self.update(|s| {
            if let Some(slot_rec) = s.eni_mut(&id) {
                let allocation = slot_rec.allocation.take();
                *slot_rec = EniRecord { allocation, ..rec };
            }
        })?;
        Ok(())
    }

    /// Detach (waiting until EC2 says so) and delete an ENI no longer desired, unless a pod holds it.
    async fn remove(&self, rec: &EniRecord, id: &EniId, mine: &[Eni], report: &mut Report) -> Result<(), PoolError> {
        if rec.allocation.is_some() {
            if rec.lifecycle != Lifecycle::Draining {
                tracing::info!(eni = %id, "not desired any more but held by a pod: draining");
                self.update(|s| {
                    if let Some(r) = s.eni_mut(id) {
                        r.lifecycle = Lifecycle::Draining;
                    }
                })?;
            }
            report.draining.push(id.clone());
            return Ok(());
        }
        self.update(|s| {
            if let Some(r) = s.eni_mut(id) {
                r.lifecycle = Lifecycle::Detaching;
            }
        })?;
        let attachment = mine.iter().find(|e| &e.id == id).and_then(|e| e.attachment.clone());
        if let Some(a) = attachment {
            self.ec2.detach_eni(&a.id, false).await?;
            let start = tokio::time::Instant::now();
            loop {
                match self.ec2.describe_eni(id).await? {
                    Some(e) if e.attachment.is_some() && e.status != "available" => {}
                    _ => break,
                }
                if start.elapsed() > self.detach_timeout {
                    return Err(PoolError::Refused {
                        pool: rec.pool.clone(),
                        msg: format!("{id} did not detach within {:?}", self.detach_timeout),
                    });
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        self.update(|s| {
            if let Some(r) = s.eni_mut(id) {
                r.lifecycle = Lifecycle::Deleting;
            }
        })?;
        self.ec2.delete_eni(id).await?;
        tracing::info!(eni = %id, pool = rec.pool, reason = "not declared for this node any more", "deleted ENI");
        self.update(|s| s.enis.retain(|r| r.eni_id.as_ref() != Some(id)))?;
        report.deleted.push(id.clone());
        Ok(())
    }

    /// Waits (bounded by `attach_timeout`) until EC2 reports every attachment made in this pass as
    /// `attached`, with one listing per poll for all of them rather than a describe per ENI.
    async fn confirm_attachments(&self, attached: &[EniId], report: &mut Report) -> Result<(), PoolError> {
        if attached.is_empty() {
            return Ok(());
        }
        let start = tokio::time::Instant::now();
        loop {
            let mine = self.mine().await?;
            let pending: Vec<&EniId> = attached
                .iter()
                .filter(|id| {
                    !mine.iter().any(|e| &e.id == *id && e.attachment.as_ref().is_some_and(|a| a.status == "attached"))
                })
                .collect();
            if pending.is_empty() {
                return Ok(());
            }
            if start.elapsed() >= self.attach_timeout {
                for id in pending {
                    tracing::error!(eni = %id, "attachment not confirmed by EC2 in time");
                    report.refused.push(format!("{id}: attachment not confirmed within {:?}", self.attach_timeout));
                }
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Empties the node: every ENI of this node is detached and deleted; ENIs held by pods are waited
    /// for until `timeout`. Reports what it deleted and what it could not remove.
    pub async fn drain(&self, timeout: Duration) -> Result<DrainReport, PoolError> {
        let start = tokio::time::Instant::now();
        let mut out = DrainReport::default();
        loop {
            let mine = self.mine().await?;
            let mut report = Report::default();
            self.sync_state(&mine, &mut report)?;
            for rec in self.store.load(STORE_TIMEOUT)?.enis {
                if let Some(id) = rec.eni_id.clone() {
                    self.remove(&rec, &id, &mine, &mut report).await?;
                }
            }
            out.deleted.extend(report.deleted);
            out.remaining = self.store.load(STORE_TIMEOUT)?.enis.iter().filter_map(|e| e.eni_id.clone()).collect();
            if out.remaining.is_empty() || start.elapsed() >= timeout {
                if !out.remaining.is_empty() {
                    tracing::warn!(remaining = ?out.remaining, "drain timed out; these are still held by pods");
                }
                return Ok(out);
            }
            tokio::time::sleep(Duration::from_millis(500).min(timeout.saturating_sub(start.elapsed()))).await;
        }
    }

    /// Reconciles every `interval`, and at once whenever `now` is notified, until `stop` is notified.
    /// A failed pass is logged and handed to `on_pass` like a good one; the loop goes on.
    pub async fn run(
        &self,
        interval: Duration,
        now: &tokio::sync::Notify,
        stop: &tokio::sync::Notify,
        mut on_pass: impl FnMut(&Result<Report, PoolError>),
    ) {
        loop {
            let result = self.reconcile().await;
            match &result {
                Ok(r) if r != &Report::default() => tracing::info!(report = ?r, "reconciled"),
                Ok(_) => tracing::debug!("reconciled; nothing to do"),
                Err(e) => tracing::error!(error = %e, "reconcile failed; retrying at the next pass"),
            }
            on_pass(&result);
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = now.notified() => tracing::debug!("reconcile requested"),
                _ = stop.notified() => return,
            }
        }
    }

    /// Deletes ENIs of this cluster that are `available`, older than the grace period, and whose node
    /// instance is terminated or gone (asked of EC2, not guessed). Returns what it deleted.
    pub async fn collect_leaks(&self) -> Result<Vec<EniId>, PoolError> {
        let grace = self.config.leak_grace_secs;
        let now = now_unix();
        let mut deleted = Vec::new();
        for eni in self.ec2.enis_tagged(tags::CLUSTER, Some(&self.config.cluster_name)).await? {
            if eni.status != "available" {
                continue;
            }
            let created = eni.tags.get(tags::CREATED).and_then(|c| c.parse::<u64>().ok()).unwrap_or(now);
            if now.saturating_sub(created) < grace {
                continue;
            }
            let Some(owner) = eni.tags.get(tags::NODE).and_then(|i| i.parse::<InstanceId>().ok()) else { continue };
            let alive = match self.ec2.describe_instance(&owner).await? {
                Some(i) => !matches!(i.state.as_deref(), Some("terminated") | Some("shutting-down")),
                None => false,
            };
            if alive {
                continue;
            }
            tracing::warn!(eni = %eni.id, owner = %owner, "leaked ENI: its node is gone; deleting");
            self.ec2.delete_eni(&eni.id).await?;
            deleted.push(eni.id);
        }
        Ok(deleted)
    }
}
