//! The real EC2 client (aws-sdk-ec2 through our resilience layer) against moto in server mode.

use std::collections::BTreeMap;

mod common;

use common::{sdk, world};
use nodeeni_conf::pool::Ec2Settings;
use nodeeni_ipam::ec2::{AwsEc2, CreateEni, Ec2, Place, tags};
use nodeeni_tests::moto::Moto;

fn place(network_card: u32, device_index: u32) -> Place {
    Place { network_card, device_index }
}

#[tokio::test]
async fn the_client_does_every_pool_operation_against_moto() {
    let Some(moto) = Moto::start("the_client_does_every_pool_operation_against_moto") else { return };
    let raw = sdk(&moto.endpoint);
    let w = world(&raw).await;
    let ec2 = AwsEc2::from_client(raw.clone(), &Ec2Settings::default());

    let by_id = ec2.describe_subnets(std::slice::from_ref(&w.subnet_a), &[]).await.expect("subnets by id");
    assert_eq!(by_id.len(), 1);
    assert_eq!(
        (by_id[0].cidr.to_string().as_str(), by_id[0].availability_zone.as_str()),
        ("10.0.1.0/24", "us-east-1a")
    );
    let by_name = ec2.describe_subnets(&[], &["user-plane-b".to_string()]).await.expect("subnets by name");
    assert_eq!(by_name.iter().map(|s| s.id.clone()).collect::<Vec<_>>(), vec![w.subnet_b.clone()]);
    assert_eq!(by_name[0].name.as_deref(), Some("user-plane-b"));
    let groups = ec2.security_group_ids(&w.vpc, &["enis".to_string()]).await.expect("groups");
    assert_eq!(groups, vec![("enis".to_string(), w.sg.clone())]);

    let inst = ec2.describe_instance(&w.instance).await.expect("instance").expect("exists");
    assert_eq!(inst.availability_zone.as_deref(), Some("us-east-1a"));
    assert_eq!(inst.instance_type.as_deref(), Some("c5.large"));
    assert_eq!(inst.used_places, [place(0, 0)], "only the primary ENI");
    let limits = ec2.instance_limits("c5.large").await.expect("limits");
    assert_eq!(limits.max_enis(0), Some(3), "c5.large takes 3 ENIs (from DescribeInstanceTypes)");
    assert_eq!((limits.network_cards(), limits.max_enis(1)), (1, None));

    let tagset: BTreeMap<String, String> = [
        (tags::CLUSTER.to_string(), "test".to_string()),
        (tags::NODE.to_string(), w.instance.to_string()),
        (tags::POOL.to_string(), "fast".to_string()),
        ("team".to_string(), "core".to_string()),
    ]
    .into();
    let eni = ec2
        .create_eni(&CreateEni {
            subnet_id: w.subnet_a.clone(),
            security_groups: vec![w.sg.clone()],
            description: Some("nodeeni fast".into()),
            secondary_ip_count: 2,
            ipv6_address_count: 0,
            tags: tagset.clone(),
            client_token: "token-1".into(),
        })
        .await
        .expect("create");
    assert_eq!(eni.tags, tagset, "tags set in the create call");
    assert_eq!(eni.secondary_ips.len(), 2);
    assert!(eni.mac.is_some() && eni.primary_ip.is_some());
    assert_eq!(eni.security_groups, [w.sg.to_string()]);

    let attachment = ec2.attach_eni(&eni.id, &w.instance, place(0, 1)).await.expect("attach");
    ec2.set_delete_on_termination(&eni.id, &attachment, true).await.expect("delete on termination");
    let seen = ec2.describe_eni(&eni.id).await.expect("describe").expect("exists");
    let att = seen.attachment.expect("attached");
    assert_eq!((att.place(), att.instance_id.as_deref()), (Some(place(0, 1)), Some(w.instance.as_str())));
    // The listing shows the change (moto through tests/moto-server.py, which applies it): otherwise
    // every pass would set it again.
    assert_eq!(att.delete_on_termination, Some(true));
    ec2.set_source_dest_check(&eni.id, false).await.expect("source/dest check");
    let seen = ec2.describe_eni(&eni.id).await.expect("describe").expect("exists");
    assert_eq!(seen.source_dest_check, Some(false));
    assert_eq!(
        ec2.describe_instance(&w.instance).await.expect("instance").expect("exists").used_places,
        [place(0, 0), place(0, 1)]
    );
    let tagged = ec2.enis_tagged(tags::CLUSTER, Some("test")).await.expect("by tag");
    assert_eq!(tagged.iter().map(|e| e.id.clone()).collect::<Vec<_>>(), vec![eni.id.clone()]);
    // Leak collection's listing: EC2 (moto, with tests/moto-server.py's `status` filter) leaves out
    // the attached ENI and keeps a detached one of the same cluster.
    let spare = ec2
        .create_eni(&CreateEni {
            subnet_id: w.subnet_a.clone(),
            security_groups: vec![w.sg.clone()],
            description: None,
            secondary_ip_count: 0,
            ipv6_address_count: 0,
            tags: tagset.clone(),
            client_token: "token-spare".into(),
        })
        .await
        .expect("create");
    let available = ec2.available_enis_tagged(tags::CLUSTER, "test").await.expect("available by tag");
    assert_eq!(available.iter().map(|e| e.id.clone()).collect::<Vec<_>>(), vec![spare.id.clone()]);
    assert!(ec2.available_enis_tagged(tags::CLUSTER, "another-cluster").await.expect("by tag").is_empty());
    ec2.delete_eni(&spare.id).await.expect("delete the spare");
    let other = ec2.enis_tagged(tags::CLUSTER, Some("another-cluster")).await.expect("by tag");
    assert!(other.is_empty());

    ec2.set_description(&eni.id, "changed").await.expect("description");
    assert_eq!(ec2.describe_eni(&eni.id).await.expect("d").expect("e").description.as_deref(), Some("changed"));

    ec2.detach_eni(&attachment, false).await.expect("detach");
    let seen = ec2.describe_eni(&eni.id).await.expect("describe").expect("exists");
    assert_eq!(seen.status, "available");
    ec2.delete_eni(&eni.id).await.expect("delete");
    assert_eq!(ec2.describe_eni(&eni.id).await.expect("describe"), None);
    ec2.delete_eni(&eni.id).await.expect("deleting a deleted ENI is done, not an error");

    let stats = ec2.resilience.stats.snapshot();
    assert_eq!(stats.get(&("CreateNetworkInterface", "ok")), Some(&2), "the ENI and the spare");
    assert_eq!(stats.get(&("DeleteNetworkInterface", "not_found")), Some(&1));

    // A client error fails fast with EC2's code.
    let bad = ec2
        .create_eni(&CreateEni {
            subnet_id: "subnet-0000000000000dead".parse().expect("id"),
            security_groups: vec![],
            description: None,
            secondary_ip_count: 0,
            ipv6_address_count: 0,
            tags: BTreeMap::new(),
            client_token: "token-2".into(),
        })
        .await
        .expect_err("unknown subnet");
    assert!(bad.to_string().contains("InvalidSubnetID.NotFound"), "{bad}");
}

/// A stand-in for EC2's DescribeNetworkInterfaces that pages as EC2 does (moto returns every item in
/// one answer whatever MaxResults says): `total` ENIs, `MaxResults` per page, `NextToken` an offset.
/// Returns its endpoint and the (MaxResults, NextToken) of each request.
/// Each request's (MaxResults, NextToken), as the stand-in saw it.
type PageRequests = std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>;

/// With `stuck`, it hands back the first page's token forever (a service bug the client must survive).
fn paging_ec2(total: usize, stuck: bool) -> (String, PageRequests) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().take(50) {
            let Ok(mut conn) = conn else { return };
            let mut reader = BufReader::new(conn.try_clone().expect("clone"));
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let form = String::from_utf8_lossy(&body).into_owned();
            let param =
                |k: &str| form.split('&').find_map(|kv| kv.strip_prefix(&format!("{k}="))).unwrap_or("").to_string();
            let (max, token) = (param("MaxResults"), param("NextToken"));
            log.lock().expect("log").push((max.clone(), token.clone()));
            let from: usize = token.parse().unwrap_or(0);
            let to = (from + max.parse().unwrap_or(1000)).min(total);
            let items: String = (from..to)
                .map(|n| {
                    format!(
                        "<item><networkInterfaceId>eni-{n:08x}</networkInterfaceId><status>available</status></item>"
                    )
                })
                .collect();
            let next = match (stuck, to < total) {
                (true, _) => "<nextToken>0</nextToken>".to_string(),
                (false, true) => format!("<nextToken>{to}</nextToken>"),
                (false, false) => String::new(),
            };
            let xml = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<DescribeNetworkInterfacesResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\"><requestId>r</requestId><networkInterfaceSet>{items}</networkInterfaceSet>{next}</DescribeNetworkInterfacesResponse>"
            );
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: text/xml;charset=UTF-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{xml}",
                xml.len()
            );
        }
    });
    (endpoint, seen)
}

#[tokio::test]
async fn listings_follow_every_page() {
    let (endpoint, seen) = paging_ec2(12, false);
    let mut ec2 = AwsEc2::from_client(sdk(&endpoint), &Ec2Settings::default());
    ec2.page_size = 5;
    let listed = ec2.enis_tagged(tags::CLUSTER, Some("paged")).await.expect("list");
    let ids: std::collections::BTreeSet<_> = listed.iter().map(|e| e.id.to_string()).collect();
    assert_eq!(listed.len(), 12, "every page read, not just the first: {ids:?}");
    assert_eq!(ids.len(), 12, "no page read twice");
    let requests = seen.lock().expect("log").clone();
    let expected: Vec<(String, String)> =
        [("5", ""), ("5", "5"), ("5", "10")].iter().map(|(m, t)| (m.to_string(), t.to_string())).collect();
    assert_eq!(requests, expected, "page size sent, each next token followed once");
    assert_eq!(ec2.resilience.stats.attempts("DescribeNetworkInterfaces"), 3, "one call per page");
}

#[tokio::test]
async fn a_page_token_handed_back_again_ends_the_listing_and_repeats_count_once() {
    let (endpoint, seen) = paging_ec2(12, true);
    let mut ec2 = AwsEc2::from_client(sdk(&endpoint), &Ec2Settings::default());
    ec2.page_size = 5;
    let listed = ec2.enis_tagged(tags::CLUSTER, Some("paged")).await.expect("list");
    assert_eq!(listed.len(), 5, "the first page once, though it came twice");
    assert_eq!(seen.lock().expect("log").len(), 2, "the repeated token is followed once, then the listing ends");
}

/// An instance type with two network cards (c6in.32xlarge: 8 ENIs on each, as moto's
/// DescribeInstanceTypes data has it). moto records the card of an attach only through
/// tests/moto-server.py, which gives each card its own device indexes and limit as EC2 does.
#[tokio::test]
async fn attachments_land_on_the_card_they_name_against_moto() {
    let Some(moto) = Moto::start("attachments_land_on_the_card_they_name_against_moto") else { return };
    let raw = sdk(&moto.endpoint);
    let w = common::world_with(&raw, aws_sdk_ec2::types::InstanceType::C6in32xlarge).await;
    let ec2 = AwsEc2::from_client(raw.clone(), &Ec2Settings::default());
    let limits = ec2.instance_limits("c6in.32xlarge").await.expect("limits");
    assert_eq!(limits.enis_per_card, [(0, 8), (1, 8)].into(), "one limit per card, from DescribeInstanceTypes");

    let create = |token: &str| CreateEni {
        subnet_id: w.subnet_a.clone(),
        security_groups: vec![],
        description: None,
        secondary_ip_count: 0,
        ipv6_address_count: 0,
        tags: BTreeMap::new(),
        client_token: token.into(),
    };
    let on_card_0 = ec2.create_eni(&create("card-0")).await.expect("create");
    let on_card_1 = ec2.create_eni(&create("card-1")).await.expect("create");
    ec2.attach_eni(&on_card_0.id, &w.instance, place(0, 1)).await.expect("attach on card 0");
    // The same device index on the other card is another place.
    let attachment = ec2.attach_eni(&on_card_1.id, &w.instance, place(1, 1)).await.expect("attach on card 1");
    let listed = ec2.describe_eni(&on_card_1.id).await.expect("describe").expect("exists");
    assert_eq!(listed.attachment.and_then(|a| a.place()), Some(place(1, 1)), "the listing names the card");
    let inst = ec2.describe_instance(&w.instance).await.expect("instance").expect("exists");
    assert_eq!(inst.used_places, [place(0, 0), place(0, 1), place(1, 1)]);
    assert_eq!(inst.used_on(1).collect::<Vec<_>>(), [1]);

    // A card the type lacks is refused by EC2, with its reason.
    let third = ec2.create_eni(&create("card-2")).await.expect("create");
    let err = ec2.attach_eni(&third.id, &w.instance, place(2, 1)).await.expect_err("no card 2");
    assert!(err.to_string().contains("network card index"), "{err}");

    ec2.detach_eni(&attachment, false).await.expect("detach");
    let inst = ec2.describe_instance(&w.instance).await.expect("instance").expect("exists");
    assert_eq!(inst.used_places, [place(0, 0), place(0, 1)], "card 1's place is free again");
    ec2.attach_eni(&on_card_1.id, &w.instance, place(1, 1)).await.expect("re-attach on card 1");
}

/// IPv6 as far as moto has it: a subnet's IPv6 CIDR (Amazon-provided /56 on the VPC, a /64 on the
/// subnet), IPv6 addresses EC2 picks at create from it, and the type's per-ENI IPv6 limit.
#[tokio::test]
async fn an_eni_gets_ipv6_addresses_from_a_dual_stack_subnet_against_moto() {
    let Some(moto) = Moto::start("an_eni_gets_ipv6_addresses_from_a_dual_stack_subnet_against_moto") else { return };
    let raw = sdk(&moto.endpoint);
    let w = world(&raw).await;
    let (dual, cidr6) = common::dual_stack_subnet(&raw, &w).await;
    let ec2 = AwsEc2::from_client(raw.clone(), &Ec2Settings::default());
    let subnets = ec2.describe_subnets(&[dual.clone(), w.subnet_a.clone()], &[]).await.expect("subnets");
    let ipv6_of = |id: &nodeeni_conf::SubnetId| subnets.iter().find(|s| &s.id == id).and_then(|s| s.ipv6_cidr);
    assert_eq!(ipv6_of(&dual).map(|c| c.to_string()), Some(cidr6.clone()), "the subnet's IPv6 CIDR");
    assert_eq!(ipv6_of(&w.subnet_a), None, "an IPv4-only subnet has none");
    let limits = ec2.instance_limits("c5.large").await.expect("limits");
    assert_eq!(limits.ipv6_per_eni, 10, "c5.large: 10 IPv6 addresses per ENI (DescribeInstanceTypes)");

    let eni = ec2
        .create_eni(&CreateEni {
            subnet_id: dual.clone(),
            security_groups: vec![],
            description: None,
            secondary_ip_count: 1,
            ipv6_address_count: 2,
            tags: BTreeMap::new(),
            client_token: "dual".into(),
        })
        .await
        .expect("create");
    let cidr6: nodeeni_conf::net::IpNet = cidr6.parse().expect("cidr");
    assert_eq!(eni.ipv6_addresses.len(), 2, "{eni:?}");
    assert!(eni.ipv6_addresses.iter().all(|a| a.is_ipv6() && cidr6.contains(*a)), "from the subnet's /64: {eni:?}");
    assert_eq!(eni.secondary_ips.len(), 1, "IPv4 beside them");
    let listed = ec2.describe_eni(&eni.id).await.expect("describe").expect("exists");
    assert_eq!(listed.ipv6_addresses, eni.ipv6_addresses, "listings show them");
}

/// AssignPrivateIpAddresses and UnassignPrivateIpAddresses, as the address keeper of host pools
/// uses them: what an assign returns is what EC2 lists on the ENI, and an unassign takes exactly
/// the named ones back.
#[tokio::test]
async fn secondary_ips_are_assigned_and_returned_against_moto() {
    let Some(moto) = Moto::start("secondary_ips_are_assigned_and_returned_against_moto") else { return };
    let raw = sdk(&moto.endpoint);
    let w = world(&raw).await;
    let ec2 = AwsEc2::from_client(raw.clone(), &Ec2Settings::default());
    let eni = ec2
        .create_eni(&CreateEni {
            subnet_id: w.subnet_a.clone(),
            security_groups: vec![],
            description: None,
            secondary_ip_count: 1,
            ipv6_address_count: 0,
            tags: BTreeMap::new(),
            client_token: "ips".into(),
        })
        .await
        .expect("create");
    let assigned = ec2.assign_private_ips(&eni.id, 3).await.expect("assign");
    assert_eq!(assigned.len(), 3, "{assigned:?}");
    let listed = ec2.describe_eni(&eni.id).await.expect("describe").expect("exists");
    assert_eq!(listed.secondary_ips.len(), 4);
    assert!(assigned.iter().all(|ip| listed.secondary_ips.contains(ip)), "EC2 lists what it assigned");
    ec2.unassign_private_ips(&eni.id, &assigned[..2]).await.expect("unassign");
    let listed = ec2.describe_eni(&eni.id).await.expect("describe").expect("exists");
    let mut want = vec![eni.secondary_ips[0], assigned[2]];
    let mut have = listed.secondary_ips.clone();
    want.sort();
    have.sort();
    assert_eq!(have, want, "exactly the named ones went back");
    let stats = ec2.resilience.stats.snapshot();
    assert_eq!(stats.get(&("AssignPrivateIpAddresses", "ok")), Some(&1));
    assert_eq!(stats.get(&("UnassignPrivateIpAddresses", "ok")), Some(&1));
}
