//! The two custom resources: `NodeENI`, what a user declares (the Go controller's resource, same
//! group, version and spec fields, so existing manifests apply unchanged), and `NodeENIState`, what one
//! node's daemon reports (one object per node, written only by that node).
//!
//! The schemas are generated from these types; `deploy/crds.yaml` is their rendering (see
//! [`crds_yaml`]), and a test fails when the two differ. The schema refuses at `kubectl apply` what
//! `validate-config` refuses where a schema can say it: the ID, resource-name and PCI patterns, the
//! device-index and MTU ranges, the driver enum, and (as CEL rules) the rules that look at several
//! fields. The daemon still reads every NodeENI through conf's validation: the schema is a first gate
//! for people, not the check the daemon relies on.

use std::collections::BTreeMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use nodeeni_conf::pool::DpdkDriver;
use serde::{Deserialize, Serialize};

/// `subnet-` and 8 or 17 lowercase hex digits, as conf's `SubnetId` parses them.
const SUBNET_ID: &str = "^subnet-([0-9a-f]{8}|[0-9a-f]{17})$";
const SECURITY_GROUP_ID: &str = "^sg-([0-9a-f]{8}|[0-9a-f]{17})$";
/// A lowercase DNS subdomain, `/`, and a name of [A-Za-z0-9-_.] starting and ending alphanumeric.
/// (The kubernetes.io domain is refused by a CEL rule: JSON Schema patterns have no lookahead.)
const RESOURCE_NAME: &str = "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*/([A-Za-z0-9]|[A-Za-z0-9][-A-Za-z0-9_.]{0,61}[A-Za-z0-9])$";
/// `[dddd:]bb:dd.f` in hex, device at most 1f, function at most 7.
const PCI_ADDRESS: &str = "^([0-9a-fA-F]{4}:)?[0-9a-fA-F]{2}:[01][0-9a-fA-F]\\.[0-7]$";

/// How many subnets a NodeENI names, in CEL (each gets one ENI).
const SUBNET_COUNT: &str = "(has(self.subnetID) ? 1 : 0) + (has(self.subnetIDs) ? size(self.subnetIDs) : 0) + \
                            (has(self.subnetName) ? 1 : 0) + (has(self.subnetNames) ? size(self.subnetNames) : 0)";

/// ENIs for the nodes a selector picks: one in each listed subnet, from `deviceIndex` on. Modes follow
/// how the Go controller's users consume them: `enableDPDK` → dpdk; a `dpdkResourceName` alone → kernel
/// (the ENA netdev moved into the pod); neither → host (kept on the node as a Multus master).
// kube's printcolumn(...) lists repeat `type_ = "string"` by design; clippy reads them as duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[kube(
    group = "networking.k8s.aws",
    version = "v1alpha1",
    kind = "NodeENI",
    plural = "nodeenis",
    singular = "nodeeni",
    shortname = "neni",
    doc = "ENIs that nodeeni keeps on every node the selector picks",
    // conf reads the name as a pool name: at most 63 of [a-z0-9-.], starting alphanumeric.
    validation = Rule::new("self.metadata.name.matches('^[a-z0-9][a-z0-9.-]{0,62}$')").message("the name is a pool name: 1-63 characters of [a-z0-9-.], starting alphanumeric"),
    printcolumn(
        name = "Subnets",
        type_ = "string",
        json_path = ".spec.subnetIDs",
        description = "subnets by ID (subnetID when one)"
    ),
    printcolumn(name = "Subnet", type_ = "string", json_path = ".spec.subnetID", priority = 1),
    printcolumn(
        name = "DPDK",
        type_ = "boolean",
        json_path = ".spec.enableDPDK",
        description = "bound to a DPDK driver (dpdk mode)"
    ),
    printcolumn(
        name = "Resource",
        type_ = "string",
        json_path = ".spec.dpdkResourceName",
        description = "the extended resource pods request"
    ),
    printcolumn(name = "Index", type_ = "integer", json_path = ".spec.deviceIndex"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(
    validation = Rule::new(SUBNET_COUNT.to_string() + " > 0").message("names no subnet: set subnetID, subnetIDs, subnetName or subnetNames"),
    validation = Rule::new("!has(self.dpdkPCIAddress) || (has(self.enableDPDK) && self.enableDPDK)").message("only dpdk NodeENIs (enableDPDK) bind a pinned PCI address"),
    validation = Rule::new("!has(self.dpdkPCIAddress) || ".to_string() + SUBNET_COUNT + " <= 1").message("dpdkPCIAddress pins one device: name one subnet"),
    validation = Rule::new("!has(self.dpdkResourceName) || !(self.dpdkResourceName.split('/')[0] == 'kubernetes.io' || self.dpdkResourceName.split('/')[0].endsWith('.kubernetes.io'))").message("the kubernetes.io domain is reserved for Kubernetes' own resources"),
    validation = Rule::new("(has(self.deviceIndex) ? self.deviceIndex : 1) + ".to_string() + SUBNET_COUNT + " - 1 <= 127").message("the last ENI would take a device index above 127")
)]
#[serde(rename_all = "camelCase")]
pub struct NodeENISpec {
    /// Nodes whose labels hold all of these get the ENIs; empty: every node.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// One subnet by ID.
    #[serde(rename = "subnetID", default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = SUBNET_ID))]
    pub subnet_id: Option<String>,
    /// Several subnets by ID: one ENI in each.
    #[serde(rename = "subnetIDs", default, skip_serializing_if = "Option::is_none")]
    #[schemars(inner(regex(pattern = SUBNET_ID)))]
    pub subnet_ids: Option<Vec<String>>,
    /// One subnet by its Name tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub subnet_name: Option<String>,
    /// Several subnets by Name tag: one ENI in each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(inner(length(min = 1)))]
    pub subnet_names: Option<Vec<String>>,
    /// Security groups by ID (default: the VPC's default group).
    #[serde(rename = "securityGroupIDs", default, skip_serializing_if = "Option::is_none")]
    #[schemars(inner(regex(pattern = SECURITY_GROUP_ID)))]
    pub security_group_ids: Option<Vec<String>>,
    /// Security groups by group name, in the subnet's VPC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(inner(length(min = 1)))]
    pub security_group_names: Option<Vec<String>>,
    /// Device index of the first ENI (0 is the instance's primary ENI); default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 127))]
    pub device_index: Option<i32>,
    /// The EC2 network card the ENI attaches on (instances with several cards); default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 31))]
    pub network_card_index: Option<i32>,
    /// IPv6 addresses EC2 assigns the ENI at create (the subnet needs an IPv6 CIDR); default 0.
    #[serde(rename = "ipv6AddressCount", default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 50))]
    pub ipv6_address_count: Option<i32>,
    /// Host NodeENIs: free secondary IPs kept on the ENI for pods' nodeeni-ipam addresses; default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 49))]
    pub warm_ip_target: Option<i32>,
    /// Host NodeENIs: at most this many secondary IPs on the ENI; default the instance type's limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 49))]
    pub max_ips_per_eni: Option<i32>,
    /// Host NodeENIs: seconds extra free IPs stay before they go back to EC2; default 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 3600))]
    pub ip_cooldown_seconds: Option<i32>,
    /// Delete the ENI when the instance terminates; default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_on_termination: Option<bool>,
    /// EC2's source/destination check on the ENI (off for routing pods); unset: EC2's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_dest_check: Option<bool>,
    /// The ENI's description in EC2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// MTU set on the interface (the ENA range).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 576, max = 9001))]
    pub mtu: Option<i32>,
    /// Bind the device to a DPDK driver and advertise it (dpdk mode).
    #[serde(rename = "enableDPDK", default, skip_serializing_if = "Option::is_none")]
    pub enable_dpdk: Option<bool>,
    /// The DPDK driver; default vfio-pci.
    #[serde(rename = "dpdkDriver", default, skip_serializing_if = "Option::is_none")]
    pub dpdk_driver: Option<DpdkDriver>,
    /// The extended resource pods request (dpdk default nodeeni.io/dpdk; alone: kernel mode).
    #[serde(rename = "dpdkResourceName", default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = RESOURCE_NAME), length(max = 317))]
    pub dpdk_resource_name: Option<String>,
    /// Pin the PCI address to bind (one ENI only).
    #[serde(rename = "dpdkPCIAddress", default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = PCI_ADDRESS))]
    pub dpdk_pci_address: Option<String>,
}

/// One node's ENIs as its daemon last saw them. Named after the node, owned by the Node (so it goes
/// when the node goes), written only by that node's daemon with server-side apply.
// kube's printcolumn(...) lists repeat `type_ = "string"` by design; clippy reads them as duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Debug, Clone, PartialEq, Default, schemars::JsonSchema)]
#[kube(
    group = "networking.k8s.aws",
    version = "v1alpha1",
    kind = "NodeENIState",
    plural = "nodeenistates",
    singular = "nodeenistate",
    shortname = "nenis",
    status = "NodeENIStateStatus",
    doc = "The ENIs of one node, as its nodeeni daemon reports them",
    printcolumn(name = "Instance", type_ = "string", json_path = ".spec.instanceID"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Degraded\")].reason"),
    printcolumn(name = "ENIs", type_ = "integer", json_path = ".status.eniCount"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct NodeENIStateSpec {
    pub node_name: String,
    #[serde(rename = "instanceID")]
    pub instance_id: String,
    pub availability_zone: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeENIStateStatus {
    #[serde(default)]
    pub eni_count: u32,
    #[serde(default)]
    pub enis: Vec<EniStatus>,
    /// Ready (every declaration this node is selected by converged) and Degraded (with the reason).
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// `metadata.generation` of each NodeENI, by name, that the last good pass converged to.
    #[serde(default)]
    pub observed_generations: BTreeMap<String, i64>,
}

/// One ENI of the node.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EniStatus {
    /// Empty while the create has not answered.
    #[serde(rename = "eniID", default)]
    pub eni_id: String,
    /// The pool: a NodeENI's name, or a pool of the configuration file.
    pub pool: String,
    /// `NodeENI` or `PoolConfig`: where the pool is declared.
    pub declared_by: String,
    pub mode: String,
    pub lifecycle: String,
    #[serde(rename = "subnetID", default, skip_serializing_if = "Option::is_none")]
    pub subnet_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_index: Option<u32>,
    /// The network card it attaches on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_card_index: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_ip: Option<String>,
    /// The ENI's IPv6 addresses.
    #[serde(rename = "ipv6Addresses", default, skip_serializing_if = "Vec::is_empty")]
    pub ipv6_addresses: Vec<String>,
    /// EC2's source/destination check on the ENI, as last listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_dest_check: Option<bool>,
    /// The container ID of the pod holding it (what the CNI's ADD recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_by: Option<String>,
}

/// A condition in the Kubernetes shape (type, status, reason, message, lastTransitionTime).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// "True", "False" or "Unknown".
    pub status: String,
    pub reason: String,
    #[serde(default)]
    pub message: String,
    /// RFC 3339.
    pub last_transition_time: String,
}

/// Both CRDs as one YAML stream, as checked into deploy/crds.yaml.
pub fn crds_yaml() -> String {
    let crds: [CustomResourceDefinition; 2] = [NodeENI::crd(), NodeENIState::crd()];
    let mut out = String::from(
        "# Generated from cluster/src/crd.rs by `nodeeni-device-plugin crds`; a test fails when they differ.\n\
         # yamllint disable rule:line-length rule:indentation\n",
    );
    for crd in crds {
        out.push_str("---\n");
        let mut value = serde_json::to_value(&crd).unwrap_or_default();
        drop_nullable(&mut value);
        // A CRD always serializes to YAML.
        out.push_str(&serde_yaml_ng::to_string(&value).unwrap_or_default());
    }
    out
}

/// Removes `nullable: true` (and `null` from enums) that schemars writes for every `Option`. conf reads
/// a null as absent; without `nullable` the API server drops a null instead of storing it, so the CEL
/// rules' `has()` never meets a null (and `size(null)` never fails an object conf would accept).
fn drop_nullable(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            map.remove("nullable");
            if let Some(serde_json::Value::Array(values)) = map.get_mut("enum") {
                values.retain(|e| !e.is_null());
            }
            map.values_mut().for_each(drop_nullable);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(drop_nullable),
        _ => {}
    }
}
