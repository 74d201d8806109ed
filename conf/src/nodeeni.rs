//! `NodeENI` manifests (networking.k8s.aws/v1alpha1), the custom resource of the Go NodeENI controller,
//! read as pools so its users keep their YAML. Modes follow how those users consume the ENIs today:
//! `enableDPDK` → dpdk; a `dpdkResourceName` alone (an ENA netdev advertised and moved into the pod) →
//! kernel; neither → host (a Multus ipvlan/macvlan master). One ENI in every listed subnet.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::fields::Fields;
use crate::names::{ResourceName, SecurityGroupId, SubnetId};
use crate::pci::PciAddress;
use crate::pool::{
    DEFAULT_HOST_IFNAME_PREFIX, DEFAULT_IP_COOLDOWN_SECS, DEVICE_INDEX_RANGE, DpdkDriver, IPV6_ADDRESS_RANGE,
    MTU_RANGE, Mode, NETWORK_CARD_RANGE, OriginKeys, Pool, SecurityGroupRef, SubnetRef, check_pool_name,
};
use crate::problems::{Problems, child};

pub const KIND: &str = "NodeENI";
pub const API_VERSION: &str = "networking.k8s.aws/v1alpha1";
/// The resource a DPDK NodeENI is advertised as when it names none.
pub const DEFAULT_DPDK_RESOURCE: &str = "nodeeni.io/dpdk";

static NODEENI_KEYS: OriginKeys = OriginKeys {
    name: "metadata.name",
    resource_name: "spec.dpdkResourceName",
    device_index: "spec.deviceIndex",
    network_card: "spec.networkCardIndex",
    warm_ip_target: "spec.warmIpTarget",
    pci_address: "spec.dpdkPCIAddress",
    host_ifname_prefix: "metadata.name",
};

/// Reads one NodeENI document as a pool; problems are recorded under `NodeENI(<name>)`.
pub(crate) fn to_pool(doc: &Value, doc_path: &str, problems: &mut Problems) -> Option<Pool> {
    let name = doc.pointer("/metadata/name").and_then(Value::as_str).map(str::to_string);
    // Messages name the object, which is how a person finds it in a file of many.
    let origin = match &name {
        Some(n) => format!("{KIND}({n})"),
        None => doc_path.to_string(),
    };
    let mut f = Fields::of(doc, &origin, problems)?;
    match f.string("apiVersion", problems) {
        Some(v) if v == API_VERSION => {}
        Some(v) => problems.push(f.path_of("apiVersion"), format!("expected {API_VERSION}, found {v:?}")),
        None => problems.push(f.path_of("apiVersion"), "required"),
    }
    f.raw("kind");
    // metadata carries whatever the API server added (uid, resourceVersion, …); only the name matters.
    f.raw("metadata");
    // status is the old controller's report, not configuration.
    f.raw("status");
    match &name {
        Some(n) => check_pool_name(n, &child(&origin, "metadata.name"), problems),
        None => problems.push(child(&origin, "metadata.name"), "required"),
    }
    let spec = f.raw("spec");
    f.finish(problems);
    let Some(spec) = spec else {
        problems.push(child(&origin, "spec"), "required");
        return None;
    };
    let mut s = Fields::of(spec, &child(&origin, "spec"), problems)?;

    let node_selector: BTreeMap<String, String> = s.get("nodeSelector", problems).unwrap_or_default();
    let mut subnets: Vec<SubnetRef> = Vec::new();
    if let Some(id) = s.parsed::<SubnetId>("subnetID", problems) {
        subnets.push(SubnetRef::Id(id));
    }
    subnets.extend(s.parsed_list::<SubnetId>("subnetIDs", problems).into_iter().map(SubnetRef::Id));
    if let Some(n) = s.string("subnetName", problems) {
        subnets.push(SubnetRef::Name(n));
    }
    subnets.extend(s.string_list("subnetNames", problems).into_iter().map(SubnetRef::Name));
    let mut unique = Vec::new();
    for sn in subnets {
        if !unique.contains(&sn) {
            unique.push(sn);
        }
    }
    let subnets = unique;
    let subnet_problem = problems.iter().any(|p| p.path.starts_with(&s.path_of("subnet")));
    if subnets.is_empty() && !subnet_problem {
        problems.push(s.path_of("subnetID"), "names no subnet: set subnetID, subnetIDs, subnetName or subnetNames");
    }
    let mut security_groups: Vec<SecurityGroupRef> =
        s.parsed_list::<SecurityGroupId>("securityGroupIDs", problems).into_iter().map(SecurityGroupRef::Id).collect();
    security_groups.extend(s.string_list("securityGroupNames", problems).into_iter().map(SecurityGroupRef::Name));
    let device_index = s.int_in("deviceIndex", DEVICE_INDEX_RANGE, problems).unwrap_or(1) as u32;
    let network_card_index = s.int_in("networkCardIndex", NETWORK_CARD_RANGE, problems).unwrap_or(0) as u32;
    let delete_on_termination = s.get::<bool>("deleteOnTermination", problems).unwrap_or(true);
    let ipv6_address_count = s.int_in("ipv6AddressCount", IPV6_ADDRESS_RANGE, problems).unwrap_or(0) as u32;
    let warm_ip_target = s.int_in("warmIpTarget", 0..=49, problems).unwrap_or(0) as u32;
    let max_ips_per_eni = s.int_in("maxIpsPerEni", 1..=49, problems).map(|n| n as u32);
    let ip_cooldown_secs = s.int_in("ipCooldownSeconds", 0..=3600, problems).unwrap_or(DEFAULT_IP_COOLDOWN_SECS) as u32;
    let source_dest_check = s.get::<bool>("sourceDestCheck", problems);
    let description = s.string("description", problems);
    let mtu = s.int_in("mtu", MTU_RANGE, problems).map(|n| n as u32);
    let enable_dpdk = s.get::<bool>("enableDPDK", problems).unwrap_or(false);
    let dpdk_driver = s.parsed::<DpdkDriver>("dpdkDriver", problems).unwrap_or_default();
    let resource_given = s.raw("dpdkResourceName").is_some();
    let resource_name = s.parsed::<ResourceName>("dpdkResourceName", problems);
    let pci_address = s.parsed::<PciAddress>("dpdkPCIAddress", problems);
    s.finish(problems);

    let mode = if enable_dpdk {
        Mode::Dpdk
    } else if resource_given {
        Mode::Kernel
    } else {
        Mode::Host
    };
    let resource_name = match (mode, resource_name) {
        (Mode::Dpdk, None) if !resource_given => DEFAULT_DPDK_RESOURCE.parse().ok(),
        (_, r) => r,
    };
    Some(Pool {
        name: name.unwrap_or_default(),
        mode,
        resource_name,
        subnets,
        security_groups,
        enis_per_subnet: 1,
        first_device_index: device_index,
        network_card_index,
        mtu,
        description,
        tags: BTreeMap::new(),
        secondary_ip_count: 0,
        ipv6_address_count,
        warm_ip_target,
        max_ips_per_eni,
        ip_cooldown_secs,
        delete_on_termination,
        source_dest_check,
        dpdk_driver,
        pci_address,
        host_ifname_prefix: DEFAULT_HOST_IFNAME_PREFIX.to_string(),
        node_selector,
        origin,
        keys: &NODEENI_KEYS,
    })
}
