//! The pool's reconcile against moto, for what only a real EC2 implementation proves (the SDK's wire
//! format, filters, tags and error codes): warm, shrink, remove, drain, refuse, collect leaks, repair
//! drift. Crashes, lost answers, lagging listings and the loop run against the in-memory EC2
//! (pool_behaviour.rs). The host side is left out here (no netdevs appear for moto's ENIs).

mod common;

use std::collections::BTreeSet;

use common::{setup, setup_with};
use nodeeni_ipam::ec2::{Ec2, tags};
use nodeeni_ipam::store::{Allocation, Lifecycle};

#[tokio::test]
async fn warming_a_pool_creates_tags_and_attaches_each_eni_with_three_mutations() {
    let Some(s) = setup("warming_a_pool").await else { return };
    let r = s.reconciler(s.config(&s.fast(2)));
    let report = r.reconcile().await.expect("reconcile");
    assert_eq!(report.created.len(), 2, "{report:?}");
    assert!(report.refused.is_empty(), "{report:?}");
    let enis = s.cluster_enis(&r.ec2).await;
    assert_eq!(enis.len(), 2);
    let indexes: BTreeSet<u32> = enis.iter().filter_map(|e| e.attachment.as_ref()?.device_index).collect();
    assert_eq!(indexes, [1, 2].into(), "consecutive indexes from firstDeviceIndex");
    for e in &enis {
        assert_eq!(e.tags.get(tags::NODE).map(String::as_str), Some(s.w.instance.as_str()));
        assert_eq!(e.tags.get(tags::POOL).map(String::as_str), Some("fast"));
        assert_eq!(e.tags.get("team").map(String::as_str), Some("core"), "user tags");
        assert!(e.tags.contains_key(tags::CREATED));
        assert_eq!(e.secondary_ips.len(), 1);
        assert_eq!(e.security_groups, [s.w.sg.to_string()], "group resolved by name");
        assert_eq!(e.description.as_deref(), Some("fast pool"));
        let a = e.attachment.as_ref().expect("attached");
        assert_eq!(a.delete_on_termination, Some(false), "as configured");
    }
    let state = r.store.load(std::time::Duration::from_secs(1)).expect("state");
    assert_eq!(state.enis.len(), 2);
    for rec in &state.enis {
        assert_eq!(rec.lifecycle, Lifecycle::Ready);
        assert!(rec.mac.is_some() && rec.primary_ip.is_some() && rec.attachment_id.is_some());
        assert_eq!(rec.subnet_cidr.map(|c| c.to_string()).as_deref(), Some("10.0.1.0/24"));
        assert_eq!(rec.vpc_gateway().map(|g| g.to_string()).as_deref(), Some("10.0.1.1"));
        assert_eq!(rec.vpc_addresses().len(), 2, "primary and secondary");
    }
    let stats = r.ec2.resilience.stats.snapshot();
    let mutations: u64 = ["CreateNetworkInterface", "AttachNetworkInterface", "ModifyNetworkInterfaceAttribute"]
        .iter()
        .map(|op| stats.get(&(*op, "ok")).copied().unwrap_or(0))
        .sum();
    assert_eq!(mutations, 6, "3 mutating calls per warmed ENI: {stats:?}");

    // A second pass changes nothing.
    let again = r.reconcile().await.expect("reconcile");
    assert!(again.created.is_empty() && again.deleted.is_empty() && again.attached.is_empty(), "{again:?}");
    assert_eq!(r.ec2.resilience.stats.attempts("CreateNetworkInterface"), 2);
}

#[tokio::test]
async fn shrinking_then_removing_a_pool_detaches_and_deletes() {
    let Some(s) = setup("shrink_remove").await else { return };
    s.reconciler(s.config(&s.fast(2))).reconcile().await.expect("warm");
    let r = s.reconciler(s.config(&s.fast(1)));
    let report = r.reconcile().await.expect("shrink");
    assert_eq!(report.deleted.len(), 1, "{report:?}");
    let left = s.cluster_enis(&r.ec2).await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].attachment.as_ref().and_then(|a| a.device_index), Some(1), "the highest index goes");
    let r = s.reconciler(s.config("  []\n"));
    r.reconcile().await.expect("remove");
    assert!(s.cluster_enis(&r.ec2).await.is_empty(), "nothing left in EC2");
    assert!(r.store.load(std::time::Duration::from_secs(1)).expect("state").enis.is_empty());
}

#[tokio::test]
async fn an_eni_held_by_a_pod_drains_instead_of_being_taken() {
    let Some(s) = setup("drain_held").await else { return };
    let r = s.reconciler(s.config(&s.fast(1)));
    r.reconcile().await.expect("warm");
    r.store
        .update(std::time::Duration::from_secs(1), |st| {
            st.enis[0].allocation = Some(Allocation {
                container_id: "pod-1".parse().expect("container id"),
                ifname: "net1".into(),
                netns: None,
                since_unix: 0,
            });
            Ok::<_, nodeeni_ipam::store::StoreError>(())
        })
        .expect("claim");
    let r = s.reconciler(s.config("  []\n"));
    let report = r.reconcile().await.expect("remove pool");
    assert_eq!(report.draining.len(), 1, "{report:?}");
    assert_eq!(s.cluster_enis(&r.ec2).await.len(), 1, "still there while the pod has it");
    assert_eq!(r.store.load(std::time::Duration::from_secs(1)).expect("state").enis[0].lifecycle, Lifecycle::Draining);
    r.store
        .update(std::time::Duration::from_secs(1), |st| {
            st.enis[0].allocation = None;
            Ok::<_, nodeeni_ipam::store::StoreError>(())
        })
        .expect("release");
    let report = r.reconcile().await.expect("after release");
    assert_eq!(report.deleted.len(), 1);
    assert!(s.cluster_enis(&r.ec2).await.is_empty());
}

#[tokio::test]
async fn a_subnet_in_another_az_is_refused_and_other_pools_still_converge() {
    let Some(s) = setup("wrong_az").await else { return };
    let pools = format!(
        "  - {{name: far, mode: host, subnetIds: [{}], firstDeviceIndex: 1}}\n  - {{name: near, mode: host, subnetNames: [signalling-a], firstDeviceIndex: 2}}\n",
        s.w.subnet_b
    );
    let r = s.reconciler(s.config(&pools));
    let report = r.reconcile().await.expect("reconcile");
    assert_eq!(report.refused.len(), 1, "{report:?}");
    assert!(report.refused[0].contains("us-east-1b") && report.refused[0].starts_with("far"), "{report:?}");
    let enis = s.cluster_enis(&r.ec2).await;
    assert_eq!(enis.len(), 1, "the near pool still got its ENI");
    assert_eq!(enis[0].subnet_id.as_ref(), Some(&s.w.subnet_c), "subnet found by its Name tag");
    let bad = format!(
        "  - {{name: ghost, mode: host, subnetNames: [no-such-subnet], firstDeviceIndex: 1}}\n  - {}",
        "{name: g2, mode: host, securityGroupNames: [nope], subnetIds: [SUB], firstDeviceIndex: 2}\n"
            .replace("SUB", s.w.subnet_a.as_str())
    );
    let report = s.reconciler(s.config(&bad)).reconcile().await.expect("reconcile");
    assert!(report.refused.iter().any(|r| r.contains("unknown subnet")), "{report:?}");
    assert!(report.refused.iter().any(|r| r.contains("no security group named \"nope\"")), "{report:?}");
}

#[tokio::test]
async fn two_pools_in_two_subnets() {
    let Some(s) = setup("two_pools").await else { return };
    let pools = format!(
        "  - {{name: a, mode: kernel, resourceName: nodeeni.io/a, subnetIds: [{}], firstDeviceIndex: 1}}\n  - {{name: b, mode: dpdk, resourceName: nodeeni.io/b, subnetIds: [{}], firstDeviceIndex: 2}}\n",
        s.w.subnet_a, s.w.subnet_c
    );
    let r = s.reconciler(s.config(&pools));
    r.reconcile().await.expect("reconcile");
    let state = r.store.load(std::time::Duration::from_secs(1)).expect("state");
    let by_pool: BTreeSet<(String, String)> = state
        .enis
        .iter()
        .map(|e| (e.pool.clone(), e.subnet_id.as_ref().map(|s| s.to_string()).unwrap_or_default()))
        .collect();
    assert_eq!(by_pool, [("a".into(), s.w.subnet_a.to_string()), ("b".into(), s.w.subnet_c.to_string())].into());
    let dpdk = state.enis.iter().find(|e| e.pool == "b").expect("b");
    assert_eq!(dpdk.dpdk_driver, Some(nodeeni_conf::pool::DpdkDriver::VfioPci));
}

#[tokio::test]
async fn leak_collection_deletes_only_old_enis_of_gone_nodes_in_this_cluster() {
    let Some(s) = setup("leaks").await else { return };
    let r = s.reconciler(s.config("  []\n"));
    // A node that is gone: an instance, terminated.
    let images = s.raw.describe_images().send().await.expect("images");
    let ami = images.images().first().and_then(|i| i.image_id()).unwrap_or("ami-12c6146b").to_string();
    let run = s
        .raw
        .run_instances()
        .image_id(ami)
        .min_count(1)
        .max_count(1)
        .subnet_id(s.w.subnet_a.as_str())
        .send()
        .await
        .expect("run");
    let gone = run.instances()[0].instance_id().expect("id").to_string();
    s.raw.terminate_instances().instance_ids(&gone).send().await.expect("terminate");
    let old = (nodeeni_ipam::store::now_unix() - 3600).to_string();
    let young = nodeeni_ipam::store::now_unix().to_string();
    let make = |cluster: &'static str, node: String, created: String| {
        let raw = s.raw.clone();
        let subnet = s.w.subnet_a.to_string();
        async move {
            let spec = aws_sdk_ec2::types::TagSpecification::builder()
                .resource_type(aws_sdk_ec2::types::ResourceType::NetworkInterface)
                .tags(aws_sdk_ec2::types::Tag::builder().key(tags::CLUSTER).value(cluster).build())
                .tags(aws_sdk_ec2::types::Tag::builder().key(tags::NODE).value(node).build())
                .tags(aws_sdk_ec2::types::Tag::builder().key(tags::CREATED).value(created).build())
                .build();
            let out =
                raw.create_network_interface().subnet_id(subnet).tag_specifications(spec).send().await.expect("create");
            out.network_interface().and_then(|n| n.network_interface_id()).expect("id").to_string()
        }
    };
    let leaked = make("test", gone.clone(), old.clone()).await;
    let too_young = make("test", gone.clone(), young).await;
    let other_cluster = make("someone-else", gone.clone(), old.clone()).await;
    let live_node = make("test", s.w.instance.to_string(), old).await;
    let deleted = r.collect_leaks().await.expect("collect");
    assert_eq!(deleted.iter().map(|d| d.to_string()).collect::<Vec<_>>(), [leaked]);
    let remaining: BTreeSet<String> =
        r.ec2.enis_tagged(tags::NODE, None).await.expect("d").into_iter().map(|e| e.id.to_string()).collect();
    assert_eq!(remaining, [too_young, other_cluster, live_node].into());
}

#[tokio::test]
async fn drift_outside_nodeeni_is_repaired() {
    let Some(s) = setup("drift").await else { return };
    let r = s.reconciler(s.config(&s.fast(1)));
    r.reconcile().await.expect("warm");
    let eni = s.cluster_enis(&r.ec2).await.remove(0);
    // Someone detaches it and changes its description.
    let attachment = eni.attachment.as_ref().expect("attached").id.clone();
    r.ec2.detach_eni(&attachment, true).await.expect("detach outside");
    r.ec2.set_description(&eni.id, "hand edited").await.expect("edit outside");
    let report = r.reconcile().await.expect("repair");
    assert!(report.repaired.iter().any(|x| x.contains("re-attached")), "{report:?}");
    assert!(report.repaired.iter().any(|x| x.contains("description reset")), "{report:?}");
    let now = r.ec2.describe_eni(&eni.id).await.expect("d").expect("exists");
    assert_eq!(now.attachment.as_ref().and_then(|a| a.device_index), Some(1));
    assert_eq!(now.description.as_deref(), Some("fast pool"));
    // Someone deletes it: the record goes and a new ENI takes the slot.
    let attachment = now.attachment.expect("attached").id;
    r.ec2.detach_eni(&attachment, true).await.expect("detach");
    r.ec2.delete_eni(&eni.id).await.expect("delete outside");
    let report = r.reconcile().await.expect("repair");
    assert!(report.repaired.iter().any(|x| x.contains("vanished")), "{report:?}");
    assert_eq!(report.created.len(), 1);
    let enis = s.cluster_enis(&r.ec2).await;
    assert_eq!(enis.len(), 1);
    assert_ne!(enis[0].id, eni.id);
}

#[tokio::test]
async fn drain_empties_the_node_and_reports_what_pods_still_hold() {
    let Some(s) = setup("drain").await else { return };
    let r = s.reconciler(s.config(&s.fast(2)));
    r.reconcile().await.expect("warm");
    let held = r
        .store
        .update(std::time::Duration::from_secs(1), |st| {
            st.enis[0].allocation = Some(Allocation {
                container_id: "pod-1".parse().expect("container id"),
                ifname: "net1".into(),
                netns: None,
                since_unix: 0,
            });
            Ok::<_, nodeeni_ipam::store::StoreError>(st.enis[0].eni_id.clone().expect("id"))
        })
        .expect("claim");
    let report = r.drain(std::time::Duration::from_millis(800)).await.expect("drain");
    assert_eq!(report.deleted.len(), 1, "{report:?}");
    assert_eq!(report.remaining, std::slice::from_ref(&held), "the pod's ENI is waited for, not taken");
    assert_eq!(s.cluster_enis(&r.ec2).await.len(), 1);
    r.store
        .update(std::time::Duration::from_secs(1), |st| {
            st.enis[0].allocation = None;
            Ok::<_, nodeeni_ipam::store::StoreError>(())
        })
        .expect("release");
    let report = r.drain(std::time::Duration::from_secs(5)).await.expect("drain");
    assert_eq!((report.deleted, report.remaining.len()), (vec![held], 0));
    assert!(s.cluster_enis(&r.ec2).await.is_empty(), "every pool ENI detached and deleted in EC2");
}

#[tokio::test]
async fn a_full_instance_or_a_taken_index_is_refused_clearly() {
    let Some(s) = setup("no_free_index").await else { return };
    // Someone else's ENI already sits at device index 1.
    let other = s.raw.create_network_interface().subnet_id(s.w.subnet_a.as_str()).send().await.expect("create");
    let other_id = other.network_interface().and_then(|n| n.network_interface_id()).expect("id").to_string();
    s.raw
        .attach_network_interface()
        .network_interface_id(&other_id)
        .instance_id(s.w.instance.as_str())
        .device_index(1)
        .send()
        .await
        .expect("attach");
    // c5.large takes 3 ENIs: the primary and the foreign one leave room for one more.
    let r = s.reconciler(s.config(&s.fast(3)));
    let report = r.reconcile().await.expect("reconcile");
    assert!(report.refused.iter().any(|x| x.contains("device index 1 is taken by another ENI")), "{report:?}");
    assert!(report.refused.iter().any(|x| x.contains("the instance takes 3 ENIs")), "{report:?}");
    assert_eq!(report.created.len(), 1, "the one free slot is used: {report:?}");
    assert_eq!(s.cluster_enis(&r.ec2).await.len(), 1);
}

#[tokio::test]
async fn a_routing_pools_source_dest_check_is_turned_off_at_create_and_kept_off() {
    let Some(s) = setup("source_dest_check").await else { return };
    let routing = s.fast(1).replace("deleteOnTermination: false", "deleteOnTermination: false, sourceDestCheck: false");
    let r = s.reconciler(s.config(&routing));
    let warm = r.reconcile().await.expect("warm");
    assert!(warm.repaired.is_empty(), "set at create, not drift: {warm:?}");
    let eni = s.cluster_enis(&r.ec2).await.remove(0);
    assert_eq!(eni.source_dest_check, Some(false), "the pool turned it off");
    let stats = r.ec2.resilience.stats.snapshot();
    assert_eq!(
        stats.get(&("ModifyNetworkInterfaceAttribute", "ok")).copied(),
        Some(2),
        "DeleteOnTermination and the check"
    );
    let record = r.store.load(std::time::Duration::from_secs(1)).expect("state").enis.remove(0);
    assert_eq!(record.source_dest_check, Some(false), "the record shows it, for status");
    // Someone turns it back on: repaired as drift.
    r.ec2.set_source_dest_check(&eni.id, true).await.expect("edit outside");
    let report = r.reconcile().await.expect("repair");
    assert!(report.repaired.iter().any(|x| x.contains("source/destination check reset")), "{report:?}");
    let now = r.ec2.describe_eni(&eni.id).await.expect("describe").expect("exists");
    assert_eq!(now.source_dest_check, Some(false));
    // A pool that does not say leaves EC2's value alone.
    let r = s.reconciler(s.config(&s.fast(1)));
    let report = r.reconcile().await.expect("unmanaged");
    assert!(report.repaired.is_empty(), "{report:?}");
    assert_eq!(r.ec2.resilience.stats.attempts("ModifyNetworkInterfaceAttribute"), 0, "no call for an unset check");
    let now = r.ec2.describe_eni(&eni.id).await.expect("describe").expect("exists");
    assert_eq!(now.source_dest_check, Some(false), "left as it was");
}

/// A node with two network cards (c6in.32xlarge): pools on card 0 and card 1 take the same device
/// index, each on its card; the card is in the record and in EC2's listing; a pool naming a card
/// the type lacks is refused with the card's name, and the others converge. moto records the card
/// only through tests/moto-server.py; the per-card limits are moto's DescribeInstanceTypes data.
#[tokio::test]
async fn pools_on_two_network_cards_take_the_same_index_each_on_its_card() {
    let Some(s) = setup_with("two_network_cards", aws_sdk_ec2::types::InstanceType::C6in32xlarge).await else {
        return;
    };
    let pools = format!(
        "{}  - {{name: up, mode: kernel, resourceName: nodeeni.io/up, subnetIds: [{a}], networkCardIndex: 1, enisPerSubnet: 2}}\n  \
         - {{name: far, mode: kernel, resourceName: nodeeni.io/far, subnetIds: [{a}], networkCardIndex: 2}}\n",
        s.fast(1),
        a = s.w.subnet_a
    );
    let r = s.reconciler(s.config(&pools));
    let report = r.reconcile().await.expect("reconcile");
    assert_eq!(
        report.refused,
        ["far: the instance type has 2 network card(s) and no network card 2"],
        "the refusal names the card"
    );
    assert_eq!(report.created.len(), 3, "the other pools converge: {report:?}");
    let state = r.store.load(std::time::Duration::from_secs(1)).expect("state");
    let mut places: Vec<(String, Option<u32>, Option<u32>)> =
        state.enis.iter().map(|e| (e.pool.clone(), e.network_card, e.device_index)).collect();
    places.sort();
    assert_eq!(
        places,
        [("fast".into(), Some(0), Some(1)), ("up".into(), Some(1), Some(1)), ("up".into(), Some(1), Some(2))],
        "device index 1 on both cards"
    );
    let listed = s.cluster_enis(&r.ec2).await;
    let mut on_cards: Vec<(u32, u32)> = listed
        .iter()
        .filter_map(|e| e.attachment.as_ref()?.place())
        .map(|p| (p.network_card, p.device_index))
        .collect();
    on_cards.sort();
    assert_eq!(on_cards, [(0, 1), (1, 1), (1, 2)], "EC2 has them where the records say");
    let again = r.reconcile().await.expect("reconcile");
    assert!(again.created.is_empty() && again.attached.is_empty() && again.refused.len() == 1, "{again:?}");
    assert_eq!(r.ec2.resilience.stats.attempts("AttachNetworkInterface"), 3, "no attach is tried on card 2");
    // `up` moved to a card the type lacks (a typo): refused as a whole, its ENIs stay.
    let moved = pools.replace("networkCardIndex: 1", "networkCardIndex: 5");
    let r = s.reconciler(s.config(&moved));
    let report = r.reconcile().await.expect("reconcile");
    assert!(report.deleted.is_empty() && report.draining.is_empty(), "{report:?}");
    assert!(
        report.refused.iter().any(|x| x == "up: the instance type has 2 network card(s) and no network card 5"),
        "{report:?}"
    );
    assert_eq!(s.cluster_enis(&r.ec2).await.len(), 3, "nothing removed");
    assert_eq!(r.ec2.resilience.stats.attempts("AttachNetworkInterface"), 0, "no attach on a missing card");
}

/// `ipv6AddressCount`: a dual-stack subnet's ENI gets its IPv6 addresses at create, recorded with the
/// subnet's IPv6 CIDR (what the CNI hands the pod); a pool asking IPv6 of an IPv4-only subnet, or more
/// than the instance type takes per ENI, is refused with the reason and the others converge.
#[tokio::test]
async fn a_pool_asking_ipv6_gets_it_at_create_and_records_it() {
    let Some(s) = setup("ipv6_address_count").await else { return };
    let (dual, cidr6) = common::dual_stack_subnet(&s.raw, &s.w).await;
    let pools = format!(
        "  - {{name: dual, mode: kernel, resourceName: nodeeni.io/dual, subnetIds: [{dual}], ipv6AddressCount: 2}}\n  \
         - {{name: v4only, mode: kernel, resourceName: nodeeni.io/v4, subnetIds: [{a}], ipv6AddressCount: 1, firstDeviceIndex: 2}}\n",
        a = s.w.subnet_a
    );
    let r = s.reconciler(s.config(&pools));
    let report = r.reconcile().await.expect("reconcile");
    assert_eq!(report.refused.len(), 1, "{report:?}");
    assert!(report.refused[0].starts_with("v4only") && report.refused[0].contains("has no IPv6 CIDR"), "{report:?}");
    let record = r.store.load(std::time::Duration::from_secs(1)).expect("state").enis.remove(0);
    let cidr6: nodeeni_conf::net::IpNet = cidr6.parse().expect("cidr");
    assert_eq!(record.subnet_ipv6_cidr, Some(cidr6));
    assert_eq!(record.ipv6_addresses.len(), 2, "{record:?}");
    let listed = s.cluster_enis(&r.ec2).await;
    assert_eq!(listed[0].ipv6_addresses, record.ipv6_addresses, "what EC2 assigned is what is recorded");
    let v6: Vec<_> = record.vpc_addresses().into_iter().filter(|a| !a.is_ipv4()).collect();
    assert_eq!(v6.len(), 2);
    assert!(v6.iter().all(|a| a.prefix == 64), "with the subnet's prefix: {v6:?}");

    // c5.large takes 10 IPv6 addresses per ENI: 11 is refused before any create.
    let state = tempfile::tempdir().expect("state");
    let text = s.config(&format!(
        "  - {{name: many, mode: kernel, resourceName: nodeeni.io/many, subnetIds: [{dual}], ipv6AddressCount: 11, firstDeviceIndex: 2}}\n"
    ));
    let r = s.reconciler(nodeeni_conf::PoolConfig { state_dir: state.path().to_path_buf(), ..text });
    let report = r.reconcile().await.expect("reconcile");
    assert_eq!(
        report.refused,
        ["many: the pool asks 11 IPv6 address(es) per ENI and the instance type takes 10"],
        "{report:?}"
    );
    assert!(report.created.is_empty());
}
