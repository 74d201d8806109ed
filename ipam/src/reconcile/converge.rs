//! Converge: carry a [`Plan`] out. Drains are marked, removals run, then every slot converges at once
//! (the rate limiter bounds the mutations). A failure of one removal or slot is logged and the rest go
//! on; the pass reports the first failure after everything else was done. Each decision about a
//! record is taken under the node-state lock from the record as it is then, never from the plan's
//! snapshot: a pod may have claimed the ENI meanwhile.

use std::collections::BTreeSet;
use std::time::Duration;

use nodeeni_conf::{EniId, Pool};
use nodeeni_state::node::{EniRecord, Lifecycle, now_unix};

use super::desired::Slot;
use super::plan::{Plan, Removal, SlotWork, Step};
use super::{INTENT_TAG, PoolError, Reconciler, Report, fill_from};
use crate::ec2::{Attachment, CreateEni, Ec2, Eni, tags};
use crate::host::HostPrep;

/// How a removal ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Removed {
    Deleted,
    /// A pod holds it (found under the lock): draining instead.
    Held,
    /// Its record is gone already.
    Forgotten,
}

/// Lifecycles of an ENI on its way out.
fn removing(l: Lifecycle) -> bool {
    matches!(l, Lifecycle::Draining | Lifecycle::Detaching | Lifecycle::Deleting)
}

/// The EC2 client token of a create: unique per intent and at most 64 characters (EC2's limit),
/// whatever the pool's name.
pub fn client_token(instance: &str, pool: &str, device_index: u32, nonce: u64) -> String {
    // FNV-1a over the parts: stable, dependency-free, and plenty to tell one node's intents apart.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in [instance.as_bytes(), b"\0", pool.as_bytes(), b"\0", &device_index.to_le_bytes(), &nonce.to_le_bytes()]
    {
        for b in part {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("nodeeni-{instance}-{device_index}-{h:016x}")
}

impl<E: Ec2, H: HostPrep> Reconciler<E, H> {
    pub(super) async fn execute(&self, plan: Plan, listed: &[Eni], report: &mut Report) -> Result<(), PoolError> {
        let mut first_error: Option<PoolError> = None;
        let failed = |e: PoolError, what: String, first: &mut Option<PoolError>| {
            tracing::error!(error = %e, what, "part of the pass failed; the rest goes on");
            first.get_or_insert(e);
        };
        for id in &plan.drains {
            match self.mark_draining(id) {
                Ok(()) => report.draining.push(id.clone()),
                Err(e) => failed(e, format!("draining {id}"), &mut first_error),
            }
        }
        let removals = futures_util::future::join_all(plan.removals.iter().map(|r| self.remove(r))).await;
        let mut not_removed = BTreeSet::new();
        for (removal, result) in plan.removals.iter().zip(removals) {
            match result {
                Ok(Removed::Deleted) => report.deleted.push(removal.eni.clone()),
                Ok(Removed::Held) => {
                    report.draining.push(removal.eni.clone());
                    not_removed.insert(removal.eni.clone());
                }
                Ok(Removed::Forgotten) => {}
                Err(e) => {
                    not_removed.insert(removal.eni.clone());
                    failed(e, format!("removing {}", removal.eni), &mut first_error);
                }
            }
        }
        let mut work = Vec::new();
        for w in plan.slots {
            match &w.after_removal_of {
                Some(id) if not_removed.contains(id) => {
                    report.refused.push(format!("{}: {} waits for {id} to be removed", w.slot.pool, w.slot.place()))
                }
                _ => work.push(w),
            }
        }
        let results = futures_util::future::join_all(work.into_iter().map(|w| async move {
            let what = format!("{} {}", w.slot.pool, w.slot.place());
            let mut part = Report::default();
            (self.converge_slot(w, listed, &mut part).await, part, what)
        }))
        .await;
        for (result, part, what) in results {
            report.absorb(part);
            if let Err(e) = result {
                failed(e, what, &mut first_error);
            }
        }
        let attached = report.attached.clone();
        self.confirm_attachments(&attached, report).await?;
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn pool_of(&self, slot: &Slot) -> Result<&Pool, PoolError> {
        self.config.pool(&slot.pool).ok_or_else(|| PoolError::Refused {
            pool: slot.pool.clone(),
            msg: "the pool left the configuration during the pass".into(),
        })
    }

    /// One slot's steps, in a `slot` span naming the pool, the place and the ENI (once known).
    #[tracing::instrument(
        name = "slot",
        skip_all,
        fields(
            pool = %work.slot.pool,
            device_index = work.slot.device_index,
            network_card = work.slot.network_card,
            eni = work.existing.as_ref().and_then(|r| r.eni_id.as_ref()).map(tracing::field::display),
        ),
    )]
    async fn converge_slot(&self, work: SlotWork, listed: &[Eni], report: &mut Report) -> Result<(), PoolError> {
        let SlotWork { slot, existing, steps, .. } = work;
        let pool = self.pool_of(&slot)?;
        // A slot with nothing to do whose record already says what EC2 says is left alone: no
        // locked read of the whole node state per ENI, per pass (that made an idle pass quadratic).
        // Skipping decides nothing about the record: the merge it saves would only write the
        // snapshot's own values back (allocation and a removal's lifecycle are kept under the lock
        // either way), so whatever someone changed since stays as they left it.
        let unchanged = steps.is_empty().then(|| existing.clone()).flatten();
        // The lifecycle as this pass last saw or wrote it: a different one under the lock at the end
        // means someone else (`drain`) moved the record meanwhile.
        let mut seen = existing.as_ref().map(|r| r.lifecycle);
        // What EC2 said of the ENI already (the tag listing, or the create's answer): no describe per ENI.
        let (mut rec, mut eni) = match existing {
            Some(rec) => {
                let listed = match &rec.eni_id {
                    Some(id) => self.listed_or_described(id, listed).await?,
                    None => None,
                };
                (Some(rec), listed)
            }
            None => (None, None),
        };
        for step in steps {
            match step {
                Step::Create => {
                    let (r, e) = self.create(pool, &slot, report).await?;
                    seen = Some(r.lifecycle);
                    (rec, eni) = (Some(r), Some(e));
                }
                Step::Attach { lost } => {
                    let (Some(r), Some(e)) = (rec.as_mut(), eni.as_mut()) else { break };
                    if let Some(now) = self.attach(&slot, r, e, lost, report).await? {
                        if removing(now) {
                            // `drain` took it meanwhile: leave it to the removal.
                            return Ok(());
                        }
                        seen = Some(now);
                    }
                }
                Step::SetDeleteOnTermination => {
                    let Some(e) = eni.as_mut() else { break };
                    let Some(a) = e.attachment.as_mut() else { continue };
                    self.ec2.set_delete_on_termination(&e.id, &a.id, slot.delete_on_termination).await?;
                    a.delete_on_termination = Some(slot.delete_on_termination);
                }
                Step::SetSecurityGroups => {
                    let Some(e) = eni.as_mut() else { break };
                    self.ec2.set_security_groups(&e.id, &slot.security_groups).await?;
                    e.security_groups = slot.security_groups.iter().map(|g| g.to_string()).collect();
                    report.repaired.push(format!("{}: security groups reset", e.id));
                }
                Step::SetDescription => {
                    let (Some(e), Some(d)) = (eni.as_mut(), &slot.description) else { continue };
                    self.ec2.set_description(&e.id, d).await?;
                    e.description = Some(d.clone());
                    report.repaired.push(format!("{}: description reset", e.id));
                }
                Step::SetSourceDestCheck => {
                    let (Some(e), Some(want)) = (eni.as_mut(), slot.source_dest_check) else { continue };
                    if e.source_dest_check == Some(want) {
                        continue;
                    }
                    // Drift only if EC2 last listed the wanted value: a new ENI (its record holds the
                    // create's answer) or a pool that just asked for it is a change, not a repair.
                    let drifted = rec.as_ref().is_some_and(|r| r.source_dest_check == Some(want));
                    self.ec2.set_source_dest_check(&e.id, want).await?;
                    e.source_dest_check = Some(want);
                    if drifted {
                        tracing::warn!(eni = %e.id, source_dest_check = want, "source/destination check drifted; reset");
                        report.repaired.push(format!("{}: source/destination check reset", e.id));
                    } else {
                        tracing::info!(eni = %e.id, source_dest_check = want, "source/destination check set");
                    }
                }
                Step::Prepare => {
                    let (Some(r), Some(e)) = (rec.as_mut(), eni.as_ref()) else { break };
                    fill_from(r, e, Some(&slot.subnet));
                    // Decided under the lock: a pod may hold it now (then its netdev is the pod's and is
                    // left alone); if not, it is not claimable while its netdev is being prepared.
                    let (held, now) = self.update(|s| match s.eni_mut(&e.id) {
                        Some(cur) if cur.allocation.is_some() => (cur.allocation.clone(), Some(cur.lifecycle)),
                        Some(cur) => {
                            if cur.lifecycle == Lifecycle::Ready {
                                cur.lifecycle = Lifecycle::Attaching;
                            }
                            (None, Some(cur.lifecycle))
                        }
                        None => (None, None),
                    })?;
                    if now.is_some() && now != seen && now.is_some_and(removing) {
                        // `drain` took it meanwhile: leave it to the removal.
                        return Ok(());
                    }
                    seen = now.or(seen);
                    r.allocation = held;
                    let facts = self
                        .host
                        .prepare(pool, r)
                        .await
                        .map_err(|source| PoolError::Host { eni: e.id.clone(), source })?;
                    r.host_ifname = facts.ifname.or(r.host_ifname.take());
                    r.pci = facts.pci.or(r.pci);
                    r.driver = facts.driver.or(r.driver.take());
                    r.iommu_group = facts.iommu_group.or(r.iommu_group);
                    r.numa_node = facts.numa_node.or(r.numa_node);
                    r.lifecycle = Lifecycle::Ready;
                }
            }
        }
        let (Some(mut rec), Some(eni)) = (rec, eni) else { return Ok(()) };
        fill_from(&mut rec, &eni, Some(&slot.subnet));
        if unchanged.as_ref() == Some(&rec) {
            return Ok(());
        }
        let id = eni.id.clone();
        // Merged under the lock with the record as it is now: who holds it is the CNI's and stays; a
        // record that someone else moved to draining or removal since this pass saw it (`drain`,
        // another process) keeps that lifecycle, so it never becomes claimable again. One that an
        // earlier, interrupted removal left so and that is desired again comes back.
        self.update(|s| {
            if let Some(current) = s.eni_mut(&id) {
                let lifecycle = if Some(current.lifecycle) != seen && removing(current.lifecycle) {
                    current.lifecycle
                } else {
                    rec.lifecycle
                };
                // Address holds are the CNI's and address intents the address keeper's: both stay.
                let mut next = EniRecord {
                    allocation: current.allocation.take(),
                    ip_holds: std::mem::take(&mut current.ip_holds),
                    ips_releasing: std::mem::take(&mut current.ips_releasing),
                    ips_assigning_since: current.ips_assigning_since,
                    ip_surplus_since: current.ip_surplus_since,
                    updated_unix: current.updated_unix,
                    lifecycle,
                    ..rec
                };
                if next != *current {
                    next.updated_unix = now_unix();
                }
                *current = next;
            }
        })?;
        Ok(())
    }

    /// The ENI as the pass's listing had it; absent only when the listing missed it (adopt found it
    /// by describe) or it vanished while held.
    async fn listed_or_described(&self, id: &EniId, listed: &[Eni]) -> Result<Option<Eni>, PoolError> {
        if let Some(e) = listed.iter().find(|e| &e.id == id) {
            return Ok(Some(e.clone()));
        }
        Ok(self.ec2.describe_eni(id).await?)
    }

    async fn create(&self, pool: &Pool, slot: &Slot, report: &mut Report) -> Result<(EniRecord, Eni), PoolError> {
        let token = client_token(self.node.instance_id.as_str(), &pool.name, slot.device_index, fastrand::u64(..));
        // Intent first: a crash after the create finds the ENI again by this token.
        self.update(|s| {
            s.enis.push(EniRecord {
                subnet_id: Some(slot.subnet.id.clone()),
                subnet_cidr: Some(slot.subnet.cidr),
                subnet_ipv6_cidr: slot.subnet.ipv6_cidr,
                gateway: Some(slot.subnet.cidr.vpc_gateway()),
                device_index: Some(slot.device_index),
                network_card: Some(slot.network_card),
                dpdk_driver: (pool.mode == nodeeni_conf::Mode::Dpdk).then_some(pool.dpdk_driver),
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
                security_groups: slot.security_groups.clone(),
                description: pool.description.clone(),
                // A host pool keeping addresses gets its warm ones in the create.
                secondary_ip_count: pool
                    .secondary_ip_count
                    .max(pool.warm_ip_target.min(pool.max_ips_per_eni.unwrap_or(u32::MAX))),
                ipv6_address_count: slot.ipv6_address_count,
                tags: tagset,
                client_token: token.clone(),
            })
            .await?;
        tracing::Span::current().record("eni", tracing::field::display(&eni.id));
        tracing::info!(eni = %eni.id, pool = pool.name, device_index = slot.device_index, reason = "pool below its declared size", "created ENI");
        report.created.push(eni.id.clone());
        let rec = self
            .update(|s| {
                let rec = s.enis.iter_mut().find(|e| e.client_token.as_ref() == Some(&token) && e.eni_id.is_none());
                rec.map(|rec| {
                    fill_from(rec, &eni, Some(&slot.subnet));
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

    async fn attach(
        &self,
        slot: &Slot,
        rec: &mut EniRecord,
        eni: &mut Eni,
        lost: bool,
        report: &mut Report,
    ) -> Result<Option<Lifecycle>, PoolError> {
        let id = eni.id.clone();
        let mut written = None;
        if lost {
            tracing::warn!(eni = %id, "attachment lost (detached outside nodeeni); re-attaching");
            report.repaired.push(format!("{id}: re-attached"));
            // Not Ready until attached and prepared again: the device plugin reports it Unhealthy.
            rec.lifecycle = Lifecycle::Attaching;
            written = self.update(|s| {
                let r = s.eni_mut(&id)?;
                if r.lifecycle == Lifecycle::Ready {
                    r.lifecycle = Lifecycle::Attaching;
                }
                Some(r.lifecycle)
            })?;
        }
        let attachment = self.ec2.attach_eni(&id, &self.node.instance_id, slot.place()).await?;
        tracing::info!(eni = %id, attachment, device_index = slot.device_index, network_card = slot.network_card, "attached ENI");
        report.attached.push(id);
        eni.attachment = Some(Attachment {
            id: attachment,
            instance_id: Some(self.node.instance_id.to_string()),
            device_index: Some(slot.device_index),
            network_card: Some(slot.network_card),
            status: "attached".into(),
            delete_on_termination: None,
        });
        Ok(written)
    }

    /// Marks an undesired ENI that was held in the plan's snapshot draining. Decided under the lock:
    /// if its pod let go meanwhile it drains all the same (not claimable), and the next pass removes it.
    fn mark_draining(&self, id: &EniId) -> Result<(), PoolError> {
        self.update(|s| {
            if let Some(r) = s.eni_mut(id)
                && matches!(r.lifecycle, Lifecycle::Ready | Lifecycle::Attaching | Lifecycle::Creating)
            {
                tracing::info!(eni = %id, held = r.is_held(), "not desired any more: draining");
                r.lifecycle = Lifecycle::Draining;
            }
        })
    }

    /// Detaches (waiting until EC2 says so) and deletes an ENI no longer desired. Whether a pod holds
    /// it and the move to Detaching are one locked step: once Detaching, the CNI refuses to claim it.
    #[tracing::instrument(name = "removal", skip_all, fields(eni = %removal.eni, pool = %removal.pool))]
    pub(super) async fn remove(&self, removal: &Removal) -> Result<Removed, PoolError> {
        let id = &removal.eni;
        let decided = self.update(|s| match s.eni_mut(id) {
            None => Removed::Forgotten,
            Some(r) if r.is_held() => {
                if r.lifecycle != Lifecycle::Draining {
                    tracing::info!(eni = %id, holds = r.ip_holds.len(), "not desired any more but held by a pod: draining");
                    r.lifecycle = Lifecycle::Draining;
                }
                Removed::Held
            }
            Some(r) => {
                r.lifecycle = Lifecycle::Detaching;
                Removed::Deleted
            }
        })?;
        if decided != Removed::Deleted {
            return Ok(decided);
        }
        if let Some(a) = &removal.attachment_id {
            self.ec2.detach_eni(a, false).await?;
            let start = tokio::time::Instant::now();
            loop {
                match self.ec2.describe_eni(id).await? {
                    Some(e) if e.attachment.is_some() && e.status != "available" => {}
                    _ => break,
                }
                if start.elapsed() > self.detach_timeout {
                    return Err(PoolError::Refused {
                        pool: removal.pool.clone(),
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
        // The adapter reports a delete of an ENI already gone as done.
        self.ec2.delete_eni(id).await?;
        tracing::info!(eni = %id, pool = removal.pool, reason = "not declared for this node any more", "deleted ENI");
        self.update(|s| s.enis.retain(|r| r.eni_id.as_ref() != Some(id)))?;
        Ok(Removed::Deleted)
    }

    /// Waits (bounded by `attach_timeout`) until EC2 reports every attachment made in this pass as
    /// `attached`, with one listing per poll for all of them rather than a describe per ENI.
    async fn confirm_attachments(&self, attached: &[EniId], report: &mut Report) -> Result<(), PoolError> {
        if attached.is_empty() {
            return Ok(());
        }
        let start = tokio::time::Instant::now();
        // Polls back off (250 ms doubling to 4 s): a listing lags new ENIs by seconds, and each
        // poll is a describe from the account's shared bucket.
        let mut poll = Duration::from_millis(250);
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
            tokio::time::sleep(poll).await;
            poll = (poll * 2).min(Duration::from_secs(4));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::client_token;

    #[test]
    fn client_tokens_fit_ec2s_limit_whatever_the_pool_name() {
        let long = "a-pool-name-that-goes-on-and-on-far-beyond-what-anyone-expects-0123456789";
        let t = client_token("i-0123456789abcdef0", long, 15, u64::MAX);
        assert!(t.len() <= 64, "{} characters: {t}", t.len());
        assert_ne!(t, client_token("i-0123456789abcdef0", long, 15, 1), "a new intent, a new token");
        assert_ne!(t, client_token("i-0123456789abcdef0", "other", 15, u64::MAX));
    }
}
