//! The plan: what a pass does, decided without I/O from the desired slots, the node state, what EC2
//! listed and the instance's limits. The executor ([`super::converge`]) carries it out; every
//! decision it depends on about a record (is it held by a pod?) is taken again there under the
//! node-state lock, since a pod may claim an ENI between this snapshot and the action.
//!
//! What a plan guarantees, whatever its inputs (the property tests try random ones):
//! - an ENI held by a pod is never removed: it drains;
//! - no more ENIs are attached to a network card than it has free places for, and none to a card
//!   the instance type lacks;
//! - no place (card and device index) is given twice, nor one in use by an ENI that stays (one that
//!   this plan removes may be reused, after its removal succeeded);
//! - records of pools that were refused this pass are left alone;
//! - every desired slot is either served or refused with a reason.

use std::collections::{BTreeMap, BTreeSet};

use nodeeni_conf::{EniId, Mode};
use nodeeni_state::node::{EniRecord, Lifecycle};

use super::desired::Slot;
use crate::ec2::{Eni, Instance, InstanceLimits, Place};

/// Everything the plan is decided from.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    pub slots: &'a [Slot],
    /// Pools that could not be resolved this pass: their records stay as they are.
    pub refused_pools: &'a [String],
    pub records: &'a [EniRecord],
    /// The ENIs EC2 has for this node and cluster.
    pub listed: &'a [Eni],
    pub instance: &'a Instance,
    pub limits: &'a InstanceLimits,
}

/// One step of converging a slot, in the order they are carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// CreateNetworkInterface (after an intent in the node state).
    Create,
    /// AttachNetworkInterface at the slot's place; `lost`: it was Ready, so someone detached it.
    Attach {
        lost: bool,
    },
    SetDeleteOnTermination,
    SetSecurityGroups,
    SetDescription,
    /// ModifyNetworkInterfaceAttribute SourceDestCheck: after the create (CreateNetworkInterface
    /// cannot set it), or as drift.
    SetSourceDestCheck,
    /// Find the netdev and prepare it for the pool's mode.
    Prepare,
}

/// The work of one desired slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotWork {
    pub slot: Slot,
    /// The record serving it (None: a new ENI).
    pub existing: Option<EniRecord>,
    pub steps: Vec<Step>,
    /// The attach reuses the place of an ENI this plan removes: only once that removal succeeded.
    pub after_removal_of: Option<EniId>,
}

impl SlotWork {
    pub fn attaches(&self) -> bool {
        self.steps.iter().any(|s| matches!(s, Step::Attach { .. }))
    }
}

/// An ENI no longer desired and not held (in this snapshot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    pub eni: EniId,
    pub pool: String,
    /// The attachment to detach first, if EC2 listed one.
    pub attachment_id: Option<String>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    pub removals: Vec<Removal>,
    /// Not desired but held by a pod: marked draining, removed once the pod lets go.
    pub drains: Vec<EniId>,
    pub slots: Vec<SlotWork>,
    /// Slots that cannot be served, and why.
    pub refused: Vec<String>,
}

/// Decides the pass. Pure: same inputs, same plan.
pub fn plan(input: &PlanInput) -> Plan {
    let PlanInput { slots, refused_pools, records, listed, instance, limits } = *input;
    let listed_by_id: BTreeMap<&EniId, &Eni> = listed.iter().map(|e| (&e.id, e)).collect();
    let attached_here =
        |eni: &Eni| eni.attachment.as_ref().is_some_and(|a| a.instance_id.as_deref() == Some(instance.id.as_str()));

    // Each slot is served by one record: a held one first, then one attached here, then any.
    let mut serving: Vec<Option<usize>> = vec![None; slots.len()];
    let mut matched = BTreeSet::new();
    for (si, slot) in slots.iter().enumerate() {
        let rank = |r: &EniRecord| {
            let listed_here = r.eni_id.as_ref().and_then(|id| listed_by_id.get(id)).is_some_and(|e| attached_here(e));
            (!r.is_held(), !listed_here)
        };
        serving[si] = records
            .iter()
            .enumerate()
            .filter(|(ri, r)| {
                !matched.contains(ri)
                    && r.eni_id.is_some()
                    && r.pool == slot.pool
                    && r.device_index == Some(slot.device_index)
                    && r.network_card.unwrap_or(0) == slot.network_card
            })
            .min_by_key(|(ri, r)| (rank(r), *ri))
            .map(|(ri, _)| ri);
        if let Some(ri) = serving[si] {
            matched.insert(ri);
        }
    }

    let mut out = Plan::default();
    // Places freed by removals in this plan, and by which ENI.
    let mut freed: BTreeMap<Place, EniId> = BTreeMap::new();
    for (ri, rec) in records.iter().enumerate() {
        let Some(id) = &rec.eni_id else { continue };
        if matched.contains(&ri) || refused_pools.contains(&rec.pool) {
            continue;
        }
        if rec.is_held() {
            out.drains.push(id.clone());
            continue;
        }
        let listed = listed_by_id.get(id);
        if let Some(a) = listed.filter(|e| attached_here(e)).and_then(|e| e.attachment.as_ref())
            && let Some(place) = a.place()
        {
            freed.insert(place, id.clone());
        }
        out.removals.push(Removal {
            eni: id.clone(),
            pool: rec.pool.clone(),
            attachment_id: listed.and_then(|e| e.attachment.as_ref()).map(|a| a.id.clone()),
        });
    }

    // Places: each card's limit less what is attached on it now (removals free theirs only next
    // pass, so a failed removal cannot overfill a card).
    let used: BTreeSet<Place> = instance.used_places.iter().copied().collect();
    let mut free: BTreeMap<u32, u32> = BTreeMap::new();
    let mut given: BTreeSet<Place> = BTreeSet::new();
    for (si, slot) in slots.iter().enumerate() {
        let existing = serving[si].map(|ri| records[ri].clone());
        let known = existing.as_ref().and_then(|r| r.eni_id.as_ref()).and_then(|id| listed_by_id.get(id)).copied();
        if existing.is_some() && known.is_none() {
            // Held by a pod and gone from EC2 (adopt kept the record): nothing to converge.
            continue;
        }
        if existing.is_none() && slot.ipv6_address_count > limits.ipv6_per_eni {
            out.refused.push(format!(
                "{}: the pool asks {} IPv6 address(es) per ENI and the instance type takes {}",
                slot.pool, slot.ipv6_address_count, limits.ipv6_per_eni
            ));
            continue;
        }
        let needs_attach = !known.is_some_and(attached_here);
        let mut after_removal_of = None;
        if needs_attach {
            let place = slot.place();
            let card = slot.network_card;
            let Some(max) = limits.max_enis(card) else {
                out.refused.push(format!(
                    "{}: the instance type has {} network card(s) and no network card {card}",
                    slot.pool,
                    limits.network_cards()
                ));
                continue;
            };
            let card_free =
                free.entry(card).or_insert_with(|| max.saturating_sub(instance.used_on(card).count() as u32));
            if *card_free == 0 {
                out.refused.push(if limits.network_cards() == 1 {
                    format!("{}: the instance takes {max} ENIs and has no free slot for {place}", slot.pool)
                } else {
                    format!("{}: network card {card} takes {max} ENIs and has no free slot for {place}", slot.pool)
                });
                continue;
            }
            if given.contains(&place) || (used.contains(&place) && !freed.contains_key(&place)) {
                out.refused.push(format!("{}: {place} is taken by another ENI", slot.pool));
                continue;
            }
            if used.contains(&place) {
                after_removal_of = freed.get(&place).cloned();
            }
            *card_free -= 1;
            given.insert(place);
        }
        let mut steps = Vec::new();
        match (&existing, known) {
            (None, _) => {
                steps.extend([Step::Create, Step::Attach { lost: false }, Step::SetDeleteOnTermination]);
                if slot.source_dest_check.is_some() {
                    // Checked against the create's answer when carried out: EC2's default may be it.
                    steps.push(Step::SetSourceDestCheck);
                }
            }
            (Some(rec), Some(eni)) => {
                if needs_attach {
                    steps.push(Step::Attach { lost: rec.lifecycle == Lifecycle::Ready });
                    steps.push(Step::SetDeleteOnTermination);
                } else if eni.attachment.as_ref().and_then(|a| a.delete_on_termination)
                    != Some(slot.delete_on_termination)
                {
                    steps.push(Step::SetDeleteOnTermination);
                }
                let mut want: Vec<String> = slot.security_groups.iter().map(|g| g.to_string()).collect();
                let mut have = eni.security_groups.clone();
                want.sort();
                have.sort();
                if !want.is_empty() && want != have {
                    steps.push(Step::SetSecurityGroups);
                }
                if slot.description.as_ref().is_some_and(|d| eni.description.as_ref() != Some(d)) {
                    steps.push(Step::SetDescription);
                }
                if slot.source_dest_check.is_some_and(|c| eni.source_dest_check != Some(c)) {
                    steps.push(Step::SetSourceDestCheck);
                }
            }
            (Some(_), None) => {}
        }
        let prepared = existing
            .as_ref()
            .is_some_and(|r| r.lifecycle == Lifecycle::Ready && (r.host_ifname.is_some() || slot.mode == Mode::Dpdk));
        if needs_attach || !prepared {
            steps.push(Step::Prepare);
        }
        out.slots.push(SlotWork { slot: slot.clone(), existing, steps, after_removal_of });
    }
    out
}
