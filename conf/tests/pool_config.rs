//! The pool configuration and NodeENI manifests: what valid files turn into, and that every rule
//! reports its problem at the right path, all at once.

use std::path::Path;

use nodeeni_conf::load::{ConfigError, LoadOptions};
use nodeeni_conf::pool::{DpdkDriver, SecurityGroupRef, SubnetRef};
use nodeeni_conf::{Mode, PoolConfig, Problems};

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/nodeeni").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn with_cluster() -> LoadOptions {
    LoadOptions { cluster_name: Some("test-cluster".into()) }
}

fn problems(text: &str) -> Problems {
    match PoolConfig::from_text(text, &with_cluster()) {
        Err(ConfigError::Invalid(p)) => p,
        other => panic!("expected validation problems, got {other:?}"),
    }
}

fn assert_problem(p: &Problems, path: &str, words: &str) {
    assert!(
        p.iter().any(|x| x.path == path && x.message.contains(words)),
        "no problem at {path} mentioning {words:?} in:\n{p}"
    );
}

const FULL: &str = r#"
apiVersion: nodeeni.io/v1alpha1
kind: PoolConfig
clusterName: prod-eu
stateDir: /tmp/nodeeni-state
reconcileIntervalSeconds: 30
idleIntervalMaxSeconds: 900
leakGraceSeconds: 600
node:
  instanceId: i-0123456789abcdef0
  availabilityZone: eu-west-1a
  instanceType: c6in.8xlarge
  labels: {role: upf}
ec2:
  endpointUrl: http://127.0.0.1:5000
  region: eu-west-1
  retry: {maxAttempts: 7, baseDelayMs: 50, maxDelayMs: 2000}
  circuitBreaker: {failureThreshold: 3, successThreshold: 1, openTimeoutMs: 5000, halfOpenMaxRequests: 2}
  rateLimit: {mutatingPerSecond: 10, burst: 20, maxConcurrent: 8, describePerSecond: 4, describeBurst: 6}
pools:
  - name: fast
    mode: kernel
    resourceName: nodeeni.io/fast
    subnetIds: [subnet-0123456789abcdef0, subnet-11112222]
    securityGroupIds: [sg-0123456789abcdef0]
    securityGroupNames: [fast-pods]
    enisPerSubnet: 2
    firstDeviceIndex: 1
    mtu: 9001
    description: fast path
    tags: {team: core}
    secondaryIpCount: 3
    ipv6AddressCount: 2
    deleteOnTermination: false
    sourceDestCheck: false
    nodeSelector: {role: upf}
  - name: dpdk
    mode: dpdk
    resourceName: nodeeni.io/dpdk
    subnetNames: [user-plane-a]
    firstDeviceIndex: 5
    networkCardIndex: 1
    dpdkDriver: igb_uio
    pciAddress: "00:07.0"
  - name: masters
    mode: host
    subnetIds: [subnet-22223333]
    firstDeviceIndex: 6
    hostIfnamePrefix: net
"#;

#[test]
fn a_full_pool_config_reads_every_key() {
    let c = PoolConfig::from_text(FULL, &LoadOptions::default()).expect("valid");
    assert_eq!(c.cluster_name, "prod-eu");
    assert_eq!(c.state_dir, Path::new("/tmp/nodeeni-state"));
    assert_eq!((c.reconcile_interval_secs, c.leak_grace_secs), (30, 600));
    assert_eq!(c.node.instance_id.as_ref().map(|i| i.as_str()), Some("i-0123456789abcdef0"));
    assert_eq!(c.node.labels.get("role").map(String::as_str), Some("upf"));
    assert_eq!(c.ec2.endpoint_url.as_deref(), Some("http://127.0.0.1:5000"));
    assert_eq!(c.ec2.retry.max_attempts, 7);
    assert_eq!(c.ec2.circuit_breaker.half_open_max_requests, 2);
    assert_eq!(c.ec2.rate_limit.max_concurrent, 8);
    assert_eq!((c.ec2.rate_limit.describe_per_second, c.ec2.rate_limit.describe_burst), (4, 6));
    assert_eq!(c.idle_interval_max_secs, 900);

    let fast = c.pool("fast").expect("fast");
    assert_eq!(fast.mode, Mode::Kernel);
    assert_eq!(fast.eni_count(), 4);
    assert_eq!(fast.device_indexes(), 1..5);
    assert_eq!(fast.security_groups.len(), 2);
    assert!(matches!(&fast.security_groups[1], SecurityGroupRef::Name(n) if n == "fast-pods"));
    assert_eq!((fast.mtu, fast.secondary_ip_count, fast.delete_on_termination), (Some(9001), 3, false));
    assert_eq!(fast.tags.get("team").map(String::as_str), Some("core"));
    assert_eq!(fast.source_dest_check, Some(false));
    assert_eq!(fast.ipv6_address_count, 2);

    let dpdk = c.pool("dpdk").expect("dpdk");
    assert_eq!(dpdk.dpdk_driver, DpdkDriver::IgbUio);
    assert_eq!(dpdk.pci_address.map(|p| p.to_string()).as_deref(), Some("0000:00:07.0"));
    assert!(matches!(&dpdk.subnets[0], SubnetRef::Name(n) if n == "user-plane-a"));
    assert!(dpdk.delete_on_termination, "deleteOnTermination defaults to true");
    assert_eq!(dpdk.source_dest_check, None, "unset: EC2's own, not enforced");
    assert_eq!((dpdk.network_card_index, fast.network_card_index), (1, 0), "networkCardIndex defaults to 0");
    assert_eq!(dpdk.ipv6_address_count, 0, "IPv4 only unless asked");

    let masters = c.pool("masters").expect("masters");
    assert_eq!(masters.host_ifname(6), "net6");
    let labels = c.node.labels.clone();
    assert_eq!(c.pools_for(&labels).count(), 3);
    assert_eq!(c.pools_for(&Default::default()).count(), 2, "fast selects role=upf only");
}

#[test]
fn json_is_accepted_too() {
    let json = r#"{"clusterName": "c", "pools": [{"name": "p", "mode": "host", "subnetIds": ["subnet-12345678"]}]}"#;
    let c = PoolConfig::from_text(json, &LoadOptions::default()).expect("valid");
    let p = c.pool("p").expect("pool p");
    assert_eq!(p.mode, Mode::Host);
    assert_eq!(p.host_ifname(1), "multus1");
    assert_eq!(c.ec2.retry.max_attempts, 5, "defaults fill what is left out");
}

#[test]
fn every_rule_reports_its_path_in_one_pass() {
    let text = r#"
clusterName: c
pools:
  - name: a
    mode: kernel
    resourceName: nodeeni.io/a
    subnetIds: [subnet-12345678]
  - name: Bad_Name
    mode: kernel
    resourceName: "not a resource"
    subnetIds: [subnet-12345678, subnet-zz]
    securityGroupIds: [group-1]
    mtu: 20000
    firstDeviceIndex: 0
    dpdkDriver: e1000
    pciAddress: "0000:00:20.9"
    secondaryIpCount: 99
  - name: a
    mode: turbo
    subnetIds: [subnet-12345678]
"#;
    let p = problems(text);
    assert_problem(&p, "pools[1].name", "must be 1-63 characters");
    assert_problem(&p, "pools[1].resourceName", "invalid resource name");
    assert_problem(&p, "pools[1].subnetIds[1]", "invalid subnet ID");
    assert_problem(&p, "pools[1].securityGroupIds[0]", "security group ID");
    assert_problem(&p, "pools[1].mtu", "20000 is out of range 576..=9001");
    assert_problem(&p, "pools[1].firstDeviceIndex", "0 is out of range 1..=127");
    assert_problem(&p, "pools[1].dpdkDriver", "unknown DPDK driver");
    assert_problem(&p, "pools[1].pciAddress", "device out of range");
    assert_problem(&p, "pools[1].secondaryIpCount", "out of range");
    assert_problem(&p, "pools[2].mode", "unknown mode \"turbo\"");
    assert!(p.len() >= 10, "all problems at once, got:\n{p}");
    let shown = p.to_string();
    assert!(shown.starts_with(&format!("{} problems", p.len())), "{shown}");
    assert!(shown.contains("pools[1].mtu: 20000"), "{shown}");
}

#[test]
fn pools_are_checked_against_each_other() {
    let text = r#"
clusterName: c
pools:
  - {name: a, mode: kernel, resourceName: nodeeni.io/x, subnetIds: [subnet-12345678], enisPerSubnet: 3}
  - {name: a, mode: dpdk, resourceName: nodeeni.io/x, subnetIds: [subnet-12345678], firstDeviceIndex: 2}
  - {name: k, mode: kernel, subnetIds: [subnet-12345678], firstDeviceIndex: 10}
  - {name: h, mode: host, resourceName: nodeeni.io/h, subnetIds: [subnet-12345678], firstDeviceIndex: 11}
  - {name: pin, mode: kernel, resourceName: nodeeni.io/p, pciAddress: "00:05.0", subnetIds: [subnet-12345678], firstDeviceIndex: 12}
  - {name: many, mode: dpdk, resourceName: nodeeni.io/m, pciAddress: "00:06.0", subnetIds: [subnet-12345678], enisPerSubnet: 2, firstDeviceIndex: 13}
  - {name: long, mode: host, hostIfnamePrefix: averyverylongname, subnetIds: [subnet-12345678], firstDeviceIndex: 20}
  - {name: top, mode: host, subnetIds: [subnet-12345678], enisPerSubnet: 4, firstDeviceIndex: 126}
  - {name: nosubnet, mode: host, firstDeviceIndex: 30}
"#;
    let p = problems(text);
    assert_problem(&p, "pools[1].name", "already used by pools[0]");
    assert_problem(&p, "pools[1].resourceName", "one resource needs one mode");
    assert_problem(&p, "pools[1].firstDeviceIndex", "overlap");
    assert_problem(&p, "pools[2].resourceName", "required for a kernel pool");
    assert_problem(&p, "pools[3].resourceName", "not advertised");
    assert_problem(&p, "pools[4].pciAddress", "only dpdk pools");
    assert_problem(&p, "pools[5].pciAddress", "pins one device but the pool has 2 ENIs");
    assert_problem(&p, "pools[6].hostIfnamePrefix", "invalid interface name");
    assert_problem(&p, "pools[7].firstDeviceIndex", "above 127");
    assert_problem(&p, "pools[8]", "names no subnet");
}

#[test]
fn device_indexes_may_repeat_on_pools_that_never_share_a_node() {
    let text = r#"
clusterName: c
pools:
  - {name: a, mode: host, subnetIds: [subnet-12345678], nodeSelector: {role: upf}}
  - {name: b, mode: host, subnetIds: [subnet-12345678], nodeSelector: {role: db}}
  - {name: c, mode: kernel, resourceName: nodeeni.io/c, subnetIds: [subnet-12345678], nodeSelector: {zone: a}}
"#;
    let p = problems(text);
    assert!(!p.has_path("pools[1].firstDeviceIndex"), "disjoint selectors: {p}");
    assert_problem(&p, "pools[2].firstDeviceIndex", "overlap 1..2 of pools[0]");
}

#[test]
fn device_indexes_are_per_network_card() {
    let text = r#"
clusterName: c
pools:
  - {name: a, mode: kernel, resourceName: nodeeni.io/a, subnetIds: [subnet-12345678]}
  - {name: b, mode: kernel, resourceName: nodeeni.io/b, subnetIds: [subnet-12345678], networkCardIndex: 1}
  - {name: c, mode: kernel, resourceName: nodeeni.io/c, subnetIds: [subnet-12345678], networkCardIndex: 1}
  - {name: h0, mode: host, subnetIds: [subnet-12345678], firstDeviceIndex: 4}
  - {name: h1, mode: host, subnetIds: [subnet-12345678], firstDeviceIndex: 4, networkCardIndex: 2}
  - {name: h2, mode: host, subnetIds: [subnet-12345678], firstDeviceIndex: 4, networkCardIndex: 3, hostIfnamePrefix: card3_}
  - {name: x, mode: host, subnetIds: [subnet-12345678], firstDeviceIndex: 9, networkCardIndex: 32}
"#;
    let p = problems(text);
    assert!(!p.has_path("pools[1].firstDeviceIndex"), "index 1 on card 1 is not index 1 on card 0: {p}");
    assert_problem(&p, "pools[2].firstDeviceIndex", "overlap 1..2 of pools[1] on network card 1");
    assert_problem(&p, "pools[4].hostIfnamePrefix", "host interface names multus4.. would also be pools[3]'s");
    assert!(!p.has_path("pools[5].hostIfnamePrefix"), "another prefix, other names: {p}");
    assert_problem(&p, "pools[6].networkCardIndex", "0..=31");
}

#[test]
fn unknown_keys_are_errors_at_every_level() {
    let text = r#"
clusterName: c
colour: blue
node: {instanceID: i-12345678}
ec2: {endpoint: x, retry: {attempts: 1}, circuitBreaker: {threshold: 1}, rateLimit: {qps: 1}}
pools:
  - {name: a, mode: host, subnetIds: [subnet-12345678], subnetID: subnet-12345678}
"#;
    let p = problems(text);
    for path in [
        "colour",
        "node.instanceID",
        "ec2.endpoint",
        "ec2.retry.attempts",
        "ec2.circuitBreaker.threshold",
        "ec2.rateLimit.qps",
        "pools[0].subnetID",
    ] {
        assert_problem(&p, path, "unknown key");
    }
}

#[test]
fn wrong_types_and_settings_are_reported() {
    let text = r#"
apiVersion: nodeeni.io/v2
clusterName: ""
node: {instanceId: vm-1, labels: [a]}
reconcileIntervalSeconds: 120
idleIntervalMaxSeconds: 60
ec2: {endpointUrl: "ftp://x", retry: {baseDelayMs: 500, maxDelayMs: 100}, rateLimit: {describePerSecond: 0}}
pools:
  - {name: a, mode: host, subnetIds: subnet-12345678, mtu: "1500", deleteOnTermination: "yes", sourceDestCheck: off, tags: {"aws:x": y}}
"#;
    let p = problems(text);
    assert_problem(&p, "idleIntervalMaxSeconds", "reconcileIntervalSeconds");
    assert_problem(&p, "ec2.rateLimit.describePerSecond", "1");
    assert_problem(&p, "apiVersion", "expected nodeeni.io/v1alpha1");
    assert_problem(&p, "clusterName", "1-256 characters");
    assert_problem(&p, "node.instanceId", "instance ID");
    assert_problem(&p, "node.labels", "invalid type");
    assert_problem(&p, "ec2.endpointUrl", "http://");
    assert_problem(&p, "ec2.retry.maxDelayMs", "baseDelayMs");
    assert_problem(&p, "pools[0].subnetIds", "expected a list, found a string");
    assert_problem(&p, "pools[0].mtu", "expected an integer, found a string");
    assert_problem(&p, "pools[0].deleteOnTermination", "invalid type");
    assert_problem(&p, "pools[0].sourceDestCheck", "invalid type");
    assert_problem(&p, "pools[0].tags.aws:x", "aws:");
}

#[test]
fn malformed_files_fail_to_decode_with_a_location() {
    for bad in ["pools: [\n  - name: a\n  mode", "{\"clusterName\": \"c\", ", "\t- x", "---\n---\n", ""] {
        match PoolConfig::from_text(bad, &with_cluster()) {
            Err(ConfigError::Decode(msg)) => assert!(!msg.is_empty()),
            other => panic!("{bad:?}: expected a decode error, got {other:?}"),
        }
    }
    match PoolConfig::from_text("pools: [\n  - name: a\n  mode", &with_cluster()) {
        Err(ConfigError::Decode(msg)) => assert!(msg.contains("line"), "{msg}"),
        other => panic!("{other:?}"),
    }
    let p = problems("[1, 2]");
    assert_problem(&p, "", "expected a mapping, found a list");
    let p = problems("kind: Deployment\napiVersion: apps/v1\n");
    assert_problem(&p, "kind", "unknown kind \"Deployment\"");
    let p = problems("clusterName: a\n---\nclusterName: b\n");
    assert_problem(&p, "documents[1]", "a second PoolConfig");
}

#[test]
fn from_file_names_an_unreadable_path() {
    let err = PoolConfig::from_file(Path::new("/nonexistent/nodeeni.yaml"), &with_cluster()).expect_err("missing");
    assert!(err.to_string().contains("/nonexistent/nodeeni.yaml"), "{err}");
}

// ----- NodeENI manifests -----

#[test]
fn nodeeni_dpdk_manifest_becomes_a_dpdk_pool() {
    let c = PoolConfig::from_text(&fixture("dpdk.yaml"), &with_cluster()).expect("valid");
    assert_eq!(c.cluster_name, "test-cluster");
    let p = c.pool("user-plane").expect("pool named after metadata.name");
    assert_eq!(p.mode, Mode::Dpdk);
    assert_eq!(p.resource_name.as_ref().map(|r| r.as_str()), Some("nodeeni.io/user-plane"));
    assert_eq!(p.first_device_index, 3);
    assert_eq!(p.mtu, Some(9001));
    assert_eq!(p.dpdk_driver, DpdkDriver::VfioPci);
    assert_eq!(p.pci_address.map(|a| a.to_string()).as_deref(), Some("0000:00:07.0"));
    assert_eq!(p.node_selector.get("role").map(String::as_str), Some("upf"));
    assert!(matches!(&p.subnets[..], [SubnetRef::Id(s)] if s.as_str() == "subnet-0aaaabbbbccccdddd"));
    assert!(p.delete_on_termination, "default true");
    assert_eq!(p.source_dest_check, None);
    assert_eq!(p.eni_count(), 1);
    let routing = fixture("dpdk.yaml").replace("spec:\n", "spec:\n  sourceDestCheck: false\n");
    let c = PoolConfig::from_text(&routing, &with_cluster()).expect("valid");
    assert_eq!(c.pool("user-plane").expect("pool").source_dest_check, Some(false), "NodeENI: the same field");
    assert_eq!(p.network_card_index, 0, "card 0 unless the NodeENI says");
    let on_card = fixture("dpdk.yaml").replace("spec:\n", "spec:\n  networkCardIndex: 1\n");
    let c = PoolConfig::from_text(&on_card, &with_cluster()).expect("valid");
    assert_eq!(c.pool("user-plane").expect("pool").network_card_index, 1, "NodeENI: the same field");
    let p = problems(&fixture("dpdk.yaml").replace("spec:\n", "spec:\n  networkCardIndex: -1\n"));
    assert_problem(&p, "NodeENI(user-plane).spec.networkCardIndex", "out of range");
    let dual = fixture("dpdk.yaml").replace("spec:\n", "spec:\n  ipv6AddressCount: 1\n");
    let c = PoolConfig::from_text(&dual, &with_cluster()).expect("valid");
    assert_eq!(c.pool("user-plane").expect("pool").ipv6_address_count, 1, "NodeENI: the same field");
    let p = problems(&fixture("dpdk.yaml").replace("spec:\n", "spec:\n  ipv6AddressCount: 51\n"));
    assert_problem(&p, "NodeENI(user-plane).spec.ipv6AddressCount", "51 is out of range 0..=50");
}

#[test]
fn nodeeni_without_dpdk_or_resource_is_a_host_pool() {
    let c = PoolConfig::from_text(&fixture("single-subnet.yaml"), &with_cluster()).expect("valid");
    let p = c.pool("storage-net").expect("pool");
    assert_eq!(p.mode, Mode::Host);
    assert_eq!(p.resource_name, None);
    assert_eq!(p.description.as_deref(), Some("storage network for database pods"));
    assert_eq!(p.host_ifname(p.first_device_index), "multus1");
    assert!(p.selects(&[("nodeeni.io/storage".to_string(), "true".to_string())].into()));
    assert!(!p.selects(&Default::default()));
}

#[test]
fn nodeeni_multi_document_file_gives_one_eni_per_subnet() {
    let c = PoolConfig::from_text(&fixture("multi-subnet-by-name.yaml"), &with_cluster()).expect("valid");
    assert_eq!(c.pools.len(), 2);
    let sig = c.pool("signalling").expect("signalling");
    assert_eq!(sig.subnets, vec![SubnetRef::Name("signalling-a".into()), SubnetRef::Name("signalling-b".into())]);
    assert_eq!(sig.device_indexes(), 2..4, "one ENI in every subnet, indexes from deviceIndex");
    assert!(matches!(&sig.security_groups[..], [SecurityGroupRef::Name(n)] if n == "signalling"));
    let oam = c.pool("oam").expect("oam");
    assert_eq!(oam.device_indexes(), 5..6);
}

#[test]
fn nodeeni_invalid_manifest_reports_every_field() {
    let p = problems(&fixture("invalid.yaml"));
    let at = |k: &str| format!("NodeENI(broken).spec.{k}");
    assert_problem(&p, &at("subnetID"), "invalid subnet ID");
    assert_problem(&p, &at("securityGroupIDs[0]"), "security group ID");
    assert_problem(&p, &at("deviceIndex"), "-1 is out of range");
    assert_problem(&p, &at("mtu"), "20000 is out of range");
    assert_problem(&p, &at("dpdkDriver"), "e1000");
    assert_problem(&p, &at("dpdkResourceName"), "invalid resource name");
    assert_problem(&p, &at("dpdkPCIAddress"), "out of range");
    assert_eq!(p.len(), 7, "exactly the seven broken fields:\n{p}");
}

#[test]
fn nodeeni_modes_follow_how_users_consume_enis() {
    let text = r#"
apiVersion: networking.k8s.aws/v1alpha1
kind: NodeENI
metadata: {name: sriov-style, uid: abc, resourceVersion: "7"}
spec: {subnetID: subnet-12345678, dpdkResourceName: nodeeni.io/ena, deviceIndex: 2}
status: {attachments: []}
---
apiVersion: networking.k8s.aws/v1alpha1
kind: NodeENI
metadata: {name: dpdk-default}
spec: {subnetID: subnet-12345678, enableDPDK: true, deviceIndex: 3}
"#;
    let c = PoolConfig::from_text(text, &with_cluster()).expect("valid");
    let k = c.pool("sriov-style").expect("kernel");
    assert_eq!((k.mode, k.resource_name.as_ref().map(|r| r.as_str())), (Mode::Kernel, Some("nodeeni.io/ena")));
    let d = c.pool("dpdk-default").expect("dpdk");
    assert_eq!((d.mode, d.resource_name.as_ref().map(|r| r.as_str())), (Mode::Dpdk, Some("nodeeni.io/dpdk")));
}

#[test]
fn nodeenis_naming_one_resource_make_one_resource() {
    let text = r#"
apiVersion: networking.k8s.aws/v1alpha1
kind: NodeENI
metadata: {name: up-a}
spec: {subnetID: subnet-12345678, enableDPDK: true, dpdkResourceName: nodeeni.io/up, deviceIndex: 2}
---
apiVersion: networking.k8s.aws/v1alpha1
kind: NodeENI
metadata: {name: up-b}
spec: {subnetIDs: [subnet-87654321], enableDPDK: true, dpdkResourceName: nodeeni.io/up, deviceIndex: 3}
"#;
    let c = PoolConfig::from_text(text, &with_cluster()).expect("valid");
    let serving: Vec<_> = c
        .pools
        .iter()
        .filter(|p| p.resource_name.as_ref().is_some_and(|r| r.as_str() == "nodeeni.io/up"))
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(serving, ["up-a", "up-b"]);

    let clash =
        text.replace("spec: {subnetIDs: [subnet-87654321], enableDPDK: true,", "spec: {subnetIDs: [subnet-87654321],");
    let p = problems(&clash);
    assert_problem(&p, "NodeENI(up-b).spec.dpdkResourceName", "one resource needs one mode");
}

#[test]
fn nodeeni_unknown_spec_keys_and_missing_parts_are_errors() {
    let text = r#"
apiVersion: networking.k8s.aws/v1beta9
kind: NodeENI
metadata: {name: x}
spec: {subnetID: subnet-12345678, subnetId: subnet-12345678, mtus: 1}
extra: 1
---
apiVersion: networking.k8s.aws/v1alpha1
kind: NodeENI
metadata: {labels: {}}
spec: {}
---
apiVersion: networking.k8s.aws/v1alpha1
kind: NodeENI
metadata: {name: nospec}
"#;
    let p = problems(text);
    assert_problem(&p, "NodeENI(x).apiVersion", "networking.k8s.aws/v1alpha1");
    assert_problem(&p, "NodeENI(x).spec.subnetId", "unknown key");
    assert_problem(&p, "NodeENI(x).spec.mtus", "unknown key");
    assert_problem(&p, "NodeENI(x).extra", "unknown key");
    assert_problem(&p, "documents[1].metadata.name", "required");
    assert_problem(&p, "documents[1].spec.subnetID", "names no subnet");
    assert_problem(&p, "NodeENI(nospec).spec", "required");
}

#[test]
fn nodeeni_only_files_need_a_cluster_name() {
    match PoolConfig::from_text(&fixture("dpdk.yaml"), &LoadOptions::default()) {
        Err(ConfigError::Invalid(p)) => assert_problem(&p, "clusterName", "required"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_pool_config_and_nodeenis_combine() {
    let text = format!(
        "clusterName: mixed\npools:\n  - {{name: own, mode: host, subnetIds: [subnet-12345678], firstDeviceIndex: 7}}\n---\n{}",
        fixture("dpdk.yaml")
    );
    let c = PoolConfig::from_text(&text, &LoadOptions::default()).expect("valid");
    assert_eq!(c.cluster_name, "mixed");
    let names: Vec<_> = c.pools.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["own", "user-plane"]);
}

#[test]
fn every_dpdk_driver_is_a_valid_sysfs_driver_name() {
    for d in [DpdkDriver::VfioPci, DpdkDriver::IgbUio, DpdkDriver::UioPciGeneric] {
        assert_eq!(d.driver_name().as_str(), d.as_str());
        assert_eq!(d.as_str().parse::<nodeeni_conf::DriverName>().ok(), Some(d.driver_name()));
    }
}

#[test]
fn resources_whose_device_info_files_would_share_a_name_are_refused() {
    let text = r#"clusterName: c
pools:
  - {name: a, mode: kernel, resourceName: a.io-b/c, subnetIds: [subnet-12345678]}
  - {name: b, mode: kernel, resourceName: a.io/b-c, subnetIds: [subnet-12345678], firstDeviceIndex: 2}
"#;
    let p = problems(text);
    assert_problem(&p, "pools[1].resourceName", "would name their device-info files alike");
}

#[test]
fn the_idle_back_off_ceiling_defaults_to_ten_minutes_or_the_interval() {
    let base = "clusterName: c\npools: []\n";
    assert_eq!(PoolConfig::from_text(base, &LoadOptions::default()).expect("valid").idle_interval_max_secs, 600);
    let slow = format!("{base}reconcileIntervalSeconds: 1800\n");
    let c = PoolConfig::from_text(&slow, &LoadOptions::default()).expect("valid");
    assert_eq!(c.idle_interval_max_secs, 1800, "never below the interval");
}
