//! The netlink socket against the real kernel, in per-test namespaces with veth links.

use nodeeni_host::netlink::Netlink;
use nodeeni_host::netns::NetNs;
use nodeeni_tests::netns::TestNs;
use nodeeni_tests::root::require_root;

#[test]
fn link_address_and_route_operations_work_in_a_namespace() {
    if !require_root("link_address_and_route_operations_work_in_a_namespace") {
        return;
    }
    let node = TestNs::new("nl-node");
    node.ip(&["link", "add", "eth1", "address", "0a:00:00:00:01:01", "type", "veth", "peer", "name", "peer1"]);
    let ns = NetNs::open(node.path()).expect("open");
    let mut nl = Netlink::open_in(&ns).expect("socket in node ns");

    let link = nl.link_by_name("eth1").expect("query").expect("exists");
    assert_eq!(link.mac.map(|m| m.to_string()).as_deref(), Some("0a:00:00:00:01:01"));
    assert!(!link.up);
    assert_eq!(
        nl.link_by_mac("0a:00:00:00:01:01".parse().expect("mac")).expect("query").map(|l| l.index),
        Some(link.index)
    );
    assert!(nl.link_by_name("nosuch0").expect("query").is_none(), "absent is None, not an error");
    assert!(nl.link_by_index(99_999).expect("query").is_none());

    nl.set_mtu(link.index, 9001).expect("mtu");
    nl.set_alias(link.index, "eth1").expect("alias");
    nl.set_name(link.index, "net7").expect("rename while down");
    nl.set_up(link.index, true).expect("up");
    let after = nl.link_by_index(link.index).expect("query").expect("exists");
    assert_eq!((after.name.as_str(), after.mtu, after.up, after.alias.as_deref()), ("net7", 9001, true, Some("eth1")));
    assert_eq!(node.mtu_and_up("net7"), (9001, true));
    nl.set_alias(link.index, "").expect("clear alias");
    assert_eq!(nl.link_by_index(link.index).expect("q").expect("e").alias, None);

    let addr = "10.9.0.5/24".parse().expect("cidr");
    nl.add_address(link.index, &addr).expect("add address");
    let err = nl.add_address(link.index, &addr).expect_err("duplicate");
    assert_eq!(err.errno(), Some(libc_eexist()), "{err}");
    assert_eq!(nl.addresses(link.index).expect("list"), vec![addr]);
    assert_eq!(node.addresses("net7"), ["10.9.0.5/24"]);
    let dst = "10.20.0.0/16".parse().expect("cidr");
    nl.add_route(link.index, &dst, Some("10.9.0.1".parse().expect("ip")), None).expect("route");
    let routes = nl.routes(link.index).expect("routes");
    assert!(
        routes.iter().any(|r| r.dst == dst && r.gw.map(|g| g.to_string()).as_deref() == Some("10.9.0.1")),
        "{routes:?}"
    );
    assert!(routes.iter().any(|r| r.dst.to_string() == "10.9.0.0/24" && r.gw.is_none()), "connected route: {routes:?}");
    nl.del_address(link.index, &addr).expect("del address");
    assert!(nl.addresses(link.index).expect("list").is_empty());

    // Move into another namespace, and find it there by MAC.
    let pod = TestNs::new("nl-pod");
    let pod_ns = NetNs::open(pod.path()).expect("open pod");
    nl.move_to_netns(link.index, pod_ns.raw_fd()).expect("move");
    assert!(!node.has_link("net7"));
    let mut pod_nl = Netlink::open_in(&pod_ns).expect("socket in pod ns");
    let moved = pod_nl.link_by_mac("0a:00:00:00:01:01".parse().expect("mac")).expect("q").expect("in pod");
    assert_eq!(moved.name, "net7");
    assert!(pod.has_link("net7"));
}

fn libc_eexist() -> i32 {
    17
}

#[test]
fn opening_something_that_is_not_a_namespace_fails_clearly() {
    if !require_root("opening_something_that_is_not_a_namespace_fails_clearly") {
        return;
    }
    let err = NetNs::open("/etc/hostname").expect_err("not a netns");
    assert!(err.to_string().contains("not a network namespace"), "{err}");
    let err = NetNs::open("/run/netns/does-not-exist-nodeeni").expect_err("missing");
    assert!(err.to_string().contains("does-not-exist-nodeeni"), "{err}");
}

#[test]
fn every_link_with_a_mac_and_the_default_route_links_are_listed() {
    if !require_root("every_link_with_a_mac_and_the_default_route_links_are_listed") {
        return;
    }
    let node = TestNs::new("nl-dflt");
    for (name, peer) in [("eth1", "peer1"), ("decoy", "peer2"), ("up0", "peer3")] {
        node.ip(&["link", "add", name, "type", "veth", "peer", "name", peer]);
    }
    node.ip(&["link", "set", "eth1", "address", "0a:00:00:00:02:01"]);
    node.ip(&["link", "set", "decoy", "address", "0a:00:00:00:02:01"]);
    let ns = NetNs::open(node.path()).expect("open");
    let mut nl = Netlink::open_in(&ns).expect("socket in node ns");
    let mut same: Vec<String> = nl
        .links_by_mac("0a:00:00:00:02:01".parse().expect("mac"))
        .expect("query")
        .into_iter()
        .map(|l| l.name)
        .collect();
    same.sort();
    assert_eq!(same, ["decoy", "eth1"]);
    let eth1 = nl.link_by_name("eth1").expect("query").expect("exists");
    assert_eq!((eth1.perm_mac, eth1.parent_pci), (None, None), "a veth has no hardware identity");

    assert!(nl.default_route_links().expect("routes").is_empty());
    for args in [
        &["link", "set", "up0", "up"][..],
        &["link", "set", "peer3", "up"],
        &["addr", "add", "10.8.0.2/24", "dev", "up0"],
        &["route", "add", "default", "via", "10.8.0.1", "dev", "up0"],
    ] {
        node.ip(args);
    }
    let up0 = nl.link_by_name("up0").expect("query").expect("exists");
    assert_eq!(nl.default_route_links().expect("routes"), [up0.index]);
}
