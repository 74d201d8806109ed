//! The pure plan: table tests for each decision, and property tests over random node states for
//! what must hold whatever the inputs (no held ENI removed, no more attachments to a network card
//! than its free places, no place given twice or taken from an ENI that stays, refused pools
//! untouched, every slot served or refused).

use std::collections::{BTreeMap, BTreeSet};

use nodeeni_conf::{EniId, InstanceId, Mode};
use nodeeni_ipam::ec2::{Attachment, Eni, Instance, InstanceLimits, Place, Subnet};
use nodeeni_ipam::reconcile::desired::Slot;
use nodeeni_ipam::reconcile::plan::{Plan, PlanInput, Step, plan};
use nodeeni_ipam::store::{Allocation, EniRecord, Lifecycle};
use proptest::prelude::*;

const NODE: &str = "i-0000000000000000a";

fn node() -> InstanceId {
    NODE.parse().expect("instance")
}

fn eni_id(n: u32) -> EniId {
    format!("eni-{n:08x}").parse().expect("eni id")
}

fn subnet() -> Subnet {
    Subnet {
        id: "subnet-00000001".parse().expect("subnet"),
        cidr: "10.0.1.0/24".parse().expect("cidr"),
        availability_zone: "us-east-1a".into(),
        vpc_id: "vpc-1".into(),
        name: None,
        ipv6_cidr: None,
    }
}

fn slot(pool: &str, index: u32) -> Slot {
    Slot {
        pool: pool.into(),
        mode: Mode::Kernel,
        subnet: subnet(),
        device_index: index,
        network_card: 0,
        security_groups: vec!["sg-00000001".parse().expect("sg")],
        description: Some(format!("{pool} pool")),
        delete_on_termination: true,
        source_dest_check: None,
        ipv6_address_count: 0,
    }
}

fn record(pool: &str, index: u32, id: u32, lifecycle: Lifecycle, held: bool) -> EniRecord {
    EniRecord {
        eni_id: Some(eni_id(id)),
        device_index: Some(index),
        host_ifname: Some(format!("eth{index}")),
        allocation: held.then(|| Allocation {
            container_id: format!("pod-{id}").parse().expect("container id"),
            ifname: "net1".into(),
            netns: None,
            since_unix: 0,
        }),
        ..EniRecord::new(pool, Mode::Kernel, lifecycle)
    }
}

/// Where an ENI is attached, as EC2 lists it.
#[derive(Debug, Clone, Copy)]
enum At {
    /// Here, at this device index of network card 0.
    Here(u32),
    /// Here, at this place.
    HereOn(Place),
    Elsewhere,
    Nowhere,
}

fn listed(id: u32, pool: &str, at: At) -> Eni {
    let attachment = match at {
        At::Here(i) => return listed(id, pool, At::HereOn(place(0, i))),
        At::HereOn(place) => Some(Attachment {
            id: format!("eni-attach-{id:08x}"),
            instance_id: Some(NODE.into()),
            device_index: Some(place.device_index),
            network_card: Some(place.network_card),
            status: "attached".into(),
            delete_on_termination: Some(true),
        }),
        At::Elsewhere => Some(Attachment {
            id: format!("eni-attach-{id:08x}"),
            instance_id: Some("i-0000000000000000b".into()),
            device_index: Some(1),
            network_card: None,
            status: "attached".into(),
            delete_on_termination: Some(true),
        }),
        At::Nowhere => None,
    };
    Eni {
        id: eni_id(id),
        subnet_id: Some(subnet().id),
        mac: None,
        primary_ip: None,
        secondary_ips: Vec::new(),
        ipv6_addresses: Vec::new(),
        status: if attachment.is_some() { "in-use" } else { "available" }.into(),
        attachment,
        description: Some(format!("{pool} pool")),
        security_groups: vec!["sg-00000001".into()],
        source_dest_check: Some(true),
        tags: BTreeMap::new(),
    }
}

fn place(network_card: u32, device_index: u32) -> Place {
    Place { network_card, device_index }
}

/// An instance with these device indexes taken on network card 0.
fn instance(used: &[u32]) -> Instance {
    instance_at(&used.iter().map(|i| place(0, *i)).collect::<Vec<_>>())
}

fn instance_at(used: &[Place]) -> Instance {
    let mut used = used.to_vec();
    used.sort_unstable();
    Instance {
        id: node(),
        availability_zone: Some("us-east-1a".into()),
        instance_type: Some("c5.xlarge".into()),
        state: Some("running".into()),
        used_places: used,
    }
}

fn limits(max_enis: u32) -> InstanceLimits {
    InstanceLimits::one_card(max_enis, 10)
}

struct Case {
    slots: Vec<Slot>,
    refused: Vec<String>,
    records: Vec<EniRecord>,
    listed: Vec<Eni>,
    instance: Instance,
    limits: InstanceLimits,
}

impl Case {
    fn new(slots: Vec<Slot>) -> Self {
        Self {
            slots,
            refused: Vec::new(),
            records: Vec::new(),
            listed: Vec::new(),
            instance: instance(&[0]),
            limits: limits(4),
        }
    }
    fn plan(&self) -> Plan {
        plan(&PlanInput {
            slots: &self.slots,
            refused_pools: &self.refused,
            records: &self.records,
            listed: &self.listed,
            instance: &self.instance,
            limits: &self.limits,
        })
    }
}

const NEW: [Step; 4] = [Step::Create, Step::Attach { lost: false }, Step::SetDeleteOnTermination, Step::Prepare];

#[test]
fn an_empty_node_creates_attaches_and_prepares_every_slot() {
    let p = Case::new(vec![slot("fast", 1), slot("fast", 2)]).plan();
    assert_eq!(p.slots.len(), 2);
    for w in &p.slots {
        assert_eq!(w.steps, NEW, "{w:?}");
        assert!(w.existing.is_none());
    }
    assert!(p.removals.is_empty() && p.drains.is_empty() && p.refused.is_empty(), "{p:?}");
}

#[test]
fn a_converged_slot_has_nothing_to_do() {
    let mut c = Case::new(vec![slot("fast", 1)]);
    c.records = vec![record("fast", 1, 1, Lifecycle::Ready, false)];
    c.listed = vec![listed(1, "fast", At::Here(1))];
    c.instance = instance(&[0, 1]);
    let p = c.plan();
    assert_eq!(p.slots.len(), 1);
    assert_eq!(p.slots[0].steps, [], "{p:?}");
}

#[test]
fn a_lost_attachment_is_reattached_and_prepared_again() {
    let mut c = Case::new(vec![slot("fast", 1)]);
    c.records = vec![record("fast", 1, 1, Lifecycle::Ready, false)];
    c.listed = vec![listed(1, "fast", At::Nowhere)];
    assert_eq!(c.plan().slots[0].steps, [Step::Attach { lost: true }, Step::SetDeleteOnTermination, Step::Prepare]);
    // Created but never attached (a crash): attached, not reported as a lost one.
    c.records[0].lifecycle = Lifecycle::Attaching;
    assert_eq!(c.plan().slots[0].steps, [Step::Attach { lost: false }, Step::SetDeleteOnTermination, Step::Prepare]);
}

#[test]
fn drift_in_groups_description_and_delete_on_termination_is_repaired() {
    let mut c = Case::new(vec![slot("fast", 1)]);
    c.records = vec![record("fast", 1, 1, Lifecycle::Ready, false)];
    let mut e = listed(1, "fast", At::Here(1));
    e.security_groups = vec!["sg-00000002".into()];
    e.description = Some("hand edited".into());
    if let Some(a) = e.attachment.as_mut() {
        a.delete_on_termination = Some(false);
    }
    c.listed = vec![e];
    c.instance = instance(&[0, 1]);
    assert_eq!(c.plan().slots[0].steps, [Step::SetDeleteOnTermination, Step::SetSecurityGroups, Step::SetDescription]);
}

#[test]
fn a_source_dest_check_the_pool_sets_is_applied_after_the_create_and_repaired_as_drift() {
    let mut routing = slot("upf", 1);
    routing.source_dest_check = Some(false);
    let mut c = Case::new(vec![routing]);
    c.instance = instance(&[0]);
    assert_eq!(
        c.plan().slots[0].steps,
        [
            Step::Create,
            Step::Attach { lost: false },
            Step::SetDeleteOnTermination,
            Step::SetSourceDestCheck,
            Step::Prepare
        ]
    );

    // Attached and off: nothing to do. Turned on again in EC2: set back.
    c.records = vec![record("upf", 1, 1, Lifecycle::Ready, false)];
    let mut e = listed(1, "upf", At::Here(1));
    e.description = Some("upf pool".into());
    e.source_dest_check = Some(false);
    c.listed = vec![e.clone()];
    c.instance = instance(&[0, 1]);
    assert_eq!(c.plan().slots[0].steps, []);
    e.source_dest_check = Some(true);
    c.listed = vec![e];
    assert_eq!(c.plan().slots[0].steps, [Step::SetSourceDestCheck]);

    // A pool that does not say leaves EC2's value alone, whatever it is.
    let mut c2 = Case::new(vec![slot("fast", 1)]);
    c2.records = vec![record("fast", 1, 1, Lifecycle::Ready, false)];
    let mut off = listed(1, "fast", At::Here(1));
    off.source_dest_check = Some(false);
    c2.listed = vec![off];
    c2.instance = instance(&[0, 1]);
    assert_eq!(c2.plan().slots[0].steps, []);
}

#[test]
fn a_kernel_eni_without_its_netdev_is_prepared_a_dpdk_one_is_not() {
    let mut c = Case::new(vec![slot("fast", 1)]);
    let mut r = record("fast", 1, 1, Lifecycle::Ready, false);
    r.host_ifname = None;
    c.records = vec![r];
    c.listed = vec![listed(1, "fast", At::Here(1))];
    c.instance = instance(&[0, 1]);
    assert_eq!(c.plan().slots[0].steps, [Step::Prepare]);
    c.slots[0].mode = Mode::Dpdk;
    assert_eq!(c.plan().slots[0].steps, [], "a bound DPDK device has no netdev");
}

#[test]
fn undesired_enis_are_removed_unless_held_then_they_drain() {
    let mut c = Case::new(vec![slot("fast", 1)]);
    c.records = vec![
        record("fast", 1, 1, Lifecycle::Ready, false),
        record("fast", 2, 2, Lifecycle::Ready, false),
        record("fast", 3, 3, Lifecycle::Ready, true),
    ];
    c.listed = vec![listed(1, "fast", At::Here(1)), listed(2, "fast", At::Here(2)), listed(3, "fast", At::Here(3))];
    c.instance = instance(&[0, 1, 2, 3]);
    let p = c.plan();
    assert_eq!(p.removals.iter().map(|r| r.eni.clone()).collect::<Vec<_>>(), [eni_id(2)]);
    assert_eq!(p.removals[0].attachment_id.as_deref(), Some("eni-attach-00000002"));
    assert_eq!(p.drains, [eni_id(3)]);
}

#[test]
fn records_of_a_refused_pool_are_left_alone() {
    let mut c = Case::new(vec![]);
    c.refused = vec!["far".into()];
    c.records = vec![record("far", 1, 1, Lifecycle::Ready, false)];
    c.listed = vec![listed(1, "far", At::Here(1))];
    let p = c.plan();
    assert!(p.removals.is_empty() && p.drains.is_empty(), "{p:?}");
}

#[test]
fn a_full_instance_and_a_taken_index_are_refused_with_the_reason() {
    // c5.xlarge-like: 4 places; the primary and a foreign ENI at index 1 leave two.
    let mut c = Case::new(vec![slot("fast", 1), slot("fast", 2), slot("fast", 3), slot("fast", 4)]);
    c.instance = instance(&[0, 1]);
    let p = c.plan();
    assert!(p.refused.iter().any(|r| r == "fast: device index 1 is taken by another ENI"), "{p:?}");
    assert!(
        p.refused.iter().any(|r| r == "fast: the instance takes 4 ENIs and has no free slot for device index 4"),
        "{p:?}"
    );
    assert_eq!(p.slots.iter().map(|w| w.slot.device_index).collect::<Vec<_>>(), [2, 3]);
}

#[test]
fn each_network_card_has_its_own_places_and_refusals_name_the_card() {
    let on_card = |pool: &str, card: u32, index: u32| Slot { network_card: card, ..slot(pool, index) };
    // Two cards of 3 ENIs: card 0 holds the primary and a foreign ENI at 1, card 1 one at 1.
    let mut c = Case::new(vec![
        on_card("fast", 0, 1),
        on_card("fast", 0, 2),
        on_card("up", 1, 1),
        on_card("up", 1, 2),
        on_card("up", 1, 3),
        on_card("up", 1, 4),
        on_card("far", 2, 1),
    ]);
    c.limits = InstanceLimits { enis_per_card: [(0, 3), (1, 3)].into(), ipv4_per_eni: 50, ipv6_per_eni: 50 };
    c.instance = instance_at(&[place(0, 0), place(0, 1), place(1, 1)]);
    let p = c.plan();
    let attaching: Vec<Place> = p.slots.iter().filter(|w| w.attaches()).map(|w| w.slot.place()).collect();
    assert_eq!(attaching, [place(0, 2), place(1, 2), place(1, 3)], "{p:?}");
    let refused: BTreeSet<&str> = p.refused.iter().map(String::as_str).collect();
    assert_eq!(
        refused,
        BTreeSet::from([
            "fast: device index 1 is taken by another ENI",
            "up: device index 1 of network card 1 is taken by another ENI",
            "up: network card 1 takes 3 ENIs and has no free slot for device index 4 of network card 1",
            "far: the instance type has 2 network card(s) and no network card 2",
        ]),
        "{p:?}"
    );

    // A record at the slot's index on another card (the pool moved) does not serve it: it is
    // removed, and the slot gets a new ENI on its card.
    let mut c = Case::new(vec![on_card("up", 1, 1)]);
    c.limits = InstanceLimits { enis_per_card: [(0, 3), (1, 3)].into(), ipv4_per_eni: 50, ipv6_per_eni: 50 };
    c.records = vec![EniRecord { network_card: Some(0), ..record("up", 1, 1, Lifecycle::Ready, false) }];
    c.listed = vec![listed(1, "up", At::Here(1))];
    c.instance = instance_at(&[place(0, 0), place(0, 1)]);
    let p = c.plan();
    assert_eq!(p.removals.iter().map(|r| r.eni.clone()).collect::<Vec<_>>(), [eni_id(1)], "{p:?}");
    assert_eq!((p.slots.len(), p.slots[0].existing.is_none(), p.slots[0].steps[0]), (1, true, Step::Create));
    // Its own record (card 1) serves it, and a record from before cards were kept is card 0's.
    c.records[0].network_card = Some(1);
    c.listed = vec![listed(1, "up", At::HereOn(place(1, 1)))];
    c.instance = instance_at(&[place(0, 0), place(1, 1)]);
    let p = c.plan();
    assert!(p.removals.is_empty() && p.slots[0].existing.is_some() && !p.slots[0].attaches(), "{p:?}");
    let mut c = Case::new(vec![slot("fast", 1)]);
    c.records = vec![record("fast", 1, 1, Lifecycle::Ready, false)];
    c.listed = vec![listed(1, "fast", At::Here(1))];
    c.instance = instance(&[0, 1]);
    let p = c.plan();
    assert!(c.records[0].network_card.is_none() && p.slots[0].existing.is_some() && p.removals.is_empty(), "{p:?}");
}

#[test]
fn a_reattach_counts_against_the_free_places() {
    let mut c = Case::new(vec![slot("fast", 1), slot("fast", 2)]);
    c.limits = limits(2);
    c.records = vec![record("fast", 1, 1, Lifecycle::Ready, false)];
    c.listed = vec![listed(1, "fast", At::Nowhere)];
    let p = c.plan();
    assert_eq!(p.slots.len(), 1, "one place for two attaches: {p:?}");
    assert_eq!(p.refused.len(), 1, "{p:?}");
}

#[test]
fn the_index_of_a_removed_eni_is_reused_after_its_removal() {
    // The pool was renamed: old's ENI at index 1 goes, new's slot takes index 1.
    let mut c = Case::new(vec![slot("new", 1)]);
    c.records = vec![record("old", 1, 1, Lifecycle::Ready, false)];
    c.listed = vec![listed(1, "old", At::Here(1))];
    c.instance = instance(&[0, 1]);
    let p = c.plan();
    assert_eq!(p.removals.len(), 1);
    assert_eq!(p.slots.len(), 1);
    assert_eq!(p.slots[0].after_removal_of, Some(eni_id(1)));
}

#[test]
fn a_duplicate_of_a_slot_is_removed_and_the_held_one_kept() {
    // Two ENIs for one slot (a create listed late and made again): the pod's stays.
    let mut c = Case::new(vec![slot("fast", 1)]);
    c.records = vec![record("fast", 1, 1, Lifecycle::Ready, false), record("fast", 1, 2, Lifecycle::Ready, true)];
    c.listed = vec![listed(1, "fast", At::Nowhere), listed(2, "fast", At::Here(1))];
    c.instance = instance(&[0, 1]);
    let p = c.plan();
    assert_eq!(p.slots[0].existing.as_ref().and_then(|r| r.eni_id.clone()), Some(eni_id(2)));
    assert_eq!(p.removals.iter().map(|r| r.eni.clone()).collect::<Vec<_>>(), [eni_id(1)]);
}

#[test]
fn a_held_eni_gone_from_ec2_is_neither_recreated_nor_removed() {
    let mut c = Case::new(vec![slot("fast", 1)]);
    c.records = vec![record("fast", 1, 1, Lifecycle::Ready, true)];
    let p = c.plan();
    assert!(p.slots.is_empty() && p.removals.is_empty() && p.drains.is_empty(), "{p:?}");
}

// Property tests: random pools, records, listings and instances.

#[derive(Debug, Clone)]
struct World {
    slots: Vec<Slot>,
    refused: Vec<String>,
    records: Vec<EniRecord>,
    listed: Vec<Eni>,
    used: Vec<Place>,
    limits: InstanceLimits,
}

const POOLS: [&str; 3] = ["a", "b", "c"];

/// Pools a and b are kernel pools, c a DPDK one (its slots and records say so).
fn pool_mode(p: usize) -> Mode {
    if p == 2 { Mode::Dpdk } else { Mode::Kernel }
}

/// Pool b attaches on network card 1 (which the instance type may lack), a and c on card 0.
fn pool_card(p: usize) -> u32 {
    u32::from(p == 1)
}

const LIFECYCLES: [Lifecycle; 6] = [
    Lifecycle::Ready,
    Lifecycle::Attaching,
    Lifecycle::Draining,
    Lifecycle::Detaching,
    Lifecycle::Creating,
    Lifecycle::Deleting,
];

/// Random pools, records and listings: records in every lifecycle (a `Creating` one may have no ENI ID
/// yet: EC2 never answered), held or not, some on another card than their pool's (the pool moved);
/// ENIs EC2 lists attached here at the recorded place, here at another index, to another instance,
/// detached, or (held ones) not at all; places in use that no listed ENI explains; and instance
/// types of one card or two.
fn world() -> impl Strategy<Value = World> {
    let slots = prop::collection::btree_set((0usize..3, 1u32..8), 0..8);
    let records = prop::collection::vec(
        (0usize..3, 1u32..9, any::<bool>(), 0usize..6, 0u8..5, any::<bool>(), prop::bool::weighted(0.15)),
        0..10,
    );
    let foreign = prop::collection::btree_set((0u32..2, 1u32..9), 0..5);
    let cards = (1u32..9, prop::option::of(1u32..9));
    (slots, records, foreign, cards, prop::option::of(0usize..3)).prop_map(
        |(slots, records, foreign, (max0, max1), refused)| {
            let slots: Vec<Slot> = slots
                .into_iter()
                .map(|(p, i)| Slot { mode: pool_mode(p), network_card: pool_card(p), ..slot(POOLS[p], i) })
                .collect();
            let mut limits = limits(max0);
            if let Some(max1) = max1 {
                limits.enis_per_card.insert(1, max1);
            }
            let mut recs = Vec::new();
            let mut listed_enis = Vec::new();
            let mut used: BTreeSet<Place> = [place(0, 0)].into();
            used.extend(foreign.into_iter().map(|(c, i)| place(c, i)));
            for (n, (p, index, held, lifecycle, at, unanswered, moved)) in records.into_iter().enumerate() {
                let id = n as u32 + 1;
                let lifecycle = LIFECYCLES[lifecycle];
                let card = if moved { 1 - pool_card(p) } else { pool_card(p) };
                let mut rec = EniRecord {
                    mode: pool_mode(p),
                    network_card: Some(card),
                    ..record(POOLS[p], index, id, lifecycle, held)
                };
                if lifecycle == Lifecycle::Creating && unanswered {
                    rec.eni_id = None;
                    rec.allocation = None;
                    recs.push(rec);
                    continue;
                }
                recs.push(rec);
                // An ENI attached here sits at its place unless something else is there already.
                let at = match at {
                    0 if !used.contains(&place(card, index)) => {
                        used.insert(place(card, index));
                        Some(At::HereOn(place(card, index)))
                    }
                    // Attached here, but not where the record says.
                    3 => match (1..9).find(|i| *i != index && !used.contains(&place(card, *i))) {
                        Some(other) => {
                            used.insert(place(card, other));
                            Some(At::HereOn(place(card, other)))
                        }
                        None => Some(At::Nowhere),
                    },
                    0 | 1 => Some(At::Nowhere),
                    _ if held => None, // held and gone from EC2
                    _ => Some(At::Elsewhere),
                };
                if let Some(at) = at {
                    listed_enis.push(listed(id, POOLS[p], at));
                }
            }
            World {
                slots,
                refused: refused.map(|p| POOLS[p].to_string()).into_iter().collect(),
                records: recs,
                listed: listed_enis,
                used: used.into_iter().collect(),
                limits,
            }
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn no_plan_breaks_the_pools_invariants(w in world()) {
        let inst = instance_at(&w.used);
        let input = PlanInput {
            slots: &w.slots,
            refused_pools: &w.refused,
            records: &w.records,
            listed: &w.listed,
            instance: &inst,
            limits: &w.limits,
        };
        let p = plan(&input);
        let held: BTreeSet<EniId> =
            w.records.iter().filter(|r| r.allocation.is_some()).filter_map(|r| r.eni_id.clone()).collect();
        let pool_of: BTreeMap<EniId, String> =
            w.records.iter().filter_map(|r| Some((r.eni_id.clone()?, r.pool.clone()))).collect();

        // No held ENI is ever removed; only held ones drain.
        for r in &p.removals {
            prop_assert!(!held.contains(&r.eni), "removes held {}: {p:?}", r.eni);
        }
        for d in &p.drains {
            prop_assert!(held.contains(d));
        }
        // Refused pools' records are untouched.
        for id in p.removals.iter().map(|r| &r.eni).chain(&p.drains) {
            prop_assert!(!w.refused.contains(&pool_of[id]), "touches refused pool's {id}");
        }
        // No more attachments to a card than its free places, and none to a card the type lacks.
        let attaches: Vec<Place> = p.slots.iter().filter(|s| s.attaches()).map(|s| s.slot.place()).collect();
        for card in [0, 1, 2] {
            let used = w.used.iter().filter(|u| u.network_card == card).count();
            let attaching = attaches.iter().filter(|a| a.network_card == card).count();
            match w.limits.max_enis(card) {
                Some(max) => prop_assert!(
                    used + attaching <= (max as usize).max(used),
                    "card {card}: {used} used + {attaching} attaches > {max}: {p:?}"
                ),
                None => prop_assert_eq!(attaching, 0, "attaches to card {} the type lacks: {:?}", card, p),
            }
        }
        // No place twice; none that an ENI which stays is using.
        let distinct: BTreeSet<Place> = attaches.iter().copied().collect();
        prop_assert_eq!(distinct.len(), attaches.len(), "a place given twice: {:?}", attaches);
        let removed: BTreeSet<&EniId> = p.removals.iter().map(|r| &r.eni).collect();
        for s in p.slots.iter().filter(|s| s.attaches()) {
            let at_place = s.slot.place();
            if w.used.contains(&at_place) {
                // Reused only from an ENI this plan removes, and the one attached at that place.
                let by = s.after_removal_of.as_ref();
                prop_assert!(by.is_some_and(|id| removed.contains(id)), "{at_place} in use and not freed: {p:?}");
                let at = w.listed.iter().find(|e| Some(&e.id) == by).and_then(|e| e.attachment.as_ref());
                prop_assert_eq!(at.and_then(|a| a.place()), Some(at_place));
            }
        }
        // Nothing undesired is forgotten: every record serving no slot, of a pool not refused, is
        // removed or (held) drained.
        let serving_ids: BTreeSet<&EniId> = p.slots.iter().filter_map(|s| s.existing.as_ref()?.eni_id.as_ref()).collect();
        for r in &w.records {
            let Some(id) = &r.eni_id else { continue };
            if desired_by(&w, r) || w.refused.contains(&r.pool) || serving_ids.contains(id) {
                continue;
            }
            prop_assert!(removed.contains(id) || p.drains.contains(id), "{id} of {} forgotten: {p:?}", r.pool);
        }
        // A record on another card than its pool's never serves the pool's slot.
        for s in &p.slots {
            if let Some(r) = &s.existing {
                prop_assert_eq!(r.network_card.unwrap_or(0), s.slot.network_card, "{:?}", s);
            }
        }
        // Every slot is served or refused; no ENI serves two slots or is both kept and removed.
        let absent: Vec<&Slot> = w.slots.iter().filter(|s| !p.slots.iter().any(|x| x.slot == **s)).collect();
        let unexplained = absent.iter().filter(|s| !held_and_gone(&w, s)).count();
        prop_assert!(unexplained <= p.refused.len() && p.refused.len() <= absent.len(), "{p:?}");
        let serving: Vec<&EniId> = p.slots.iter().filter_map(|s| s.existing.as_ref()?.eni_id.as_ref()).collect();
        let unique: BTreeSet<&&EniId> = serving.iter().collect();
        prop_assert_eq!(unique.len(), serving.len());
        for id in &serving {
            prop_assert!(!removed.contains(id) && !p.drains.contains(id));
        }
    }
}

/// Whether a slot of the record's pool sits at the record's place.
fn desired_by(w: &World, r: &EniRecord) -> bool {
    w.slots.iter().any(|s| {
        s.pool == r.pool && Some(s.device_index) == r.device_index && r.network_card.unwrap_or(0) == s.network_card
    })
}

/// Whether a held ENI that EC2 no longer lists may serve the slot (then nothing is done for it).
fn held_and_gone(w: &World, s: &Slot) -> bool {
    w.records.iter().any(|r| {
        r.pool == s.pool
            && r.device_index == Some(s.device_index)
            && r.network_card.unwrap_or(0) == s.network_card
            && r.allocation.is_some()
            && !w.listed.iter().any(|e| Some(&e.id) == r.eni_id.as_ref())
    })
}
