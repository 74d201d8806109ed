//! The pool configuration: which ENIs each node keeps, how they are made in EC2 and how they are handed
//! out, and how a `PoolConfig` document and its pools are read and checked (every problem at once, with
//! its path). A file is loaded by [`crate::load`], which also reads `NodeENI` manifests as pools
//! ([`crate::nodeeni`]); this module depends on neither.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::fields::{Fields, kind_of};
use crate::names::{DriverName, InstanceId, ResourceName, SecurityGroupId, SubnetId};
use crate::pci::PciAddress;
use crate::problems::{Problems, child, index};

/// The ENA driver's MTU range.
pub const MTU_RANGE: std::ops::RangeInclusive<i64> = 576..=9001;
/// Device index 0 is the instance's primary ENI; EC2 enforces the real upper bound per instance type.
pub const DEVICE_INDEX_RANGE: std::ops::RangeInclusive<i64> = 1..=127;
/// EC2 network card indexes (the largest types have 32 cards; the instance type decides the rest).
/// IPv6 addresses per ENI (EC2's largest types take 50; the instance type's own limit is checked
/// against DescribeInstanceTypes on the node).
pub const IPV6_ADDRESS_RANGE: std::ops::RangeInclusive<i64> = 0..=50;
/// How long extra free IPs stay on a host ENI before they go back to EC2, by default.
pub const DEFAULT_IP_COOLDOWN_SECS: i64 = 30;
pub const NETWORK_CARD_RANGE: std::ops::RangeInclusive<i64> = 0..=31;
pub const DEFAULT_STATE_DIR: &str = "/var/lib/nodeeni";
pub const DEFAULT_HOST_IFNAME_PREFIX: &str = "multus";

/// How a pool's ENIs are consumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Handed whole to one pod: the CNI moves the netdev into the pod's netns.
    Kernel,
    /// Handed to one pod bound to a DPDK driver (vfio-pci by default).
    Dpdk,
    /// Kept on the node, up, under a stable name, as a Multus ipvlan/macvlan master. Not advertised.
    Host,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Kernel => "kernel",
            Mode::Dpdk => "dpdk",
            Mode::Host => "host",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "kernel" => Ok(Mode::Kernel),
            "dpdk" => Ok(Mode::Dpdk),
            "host" => Ok(Mode::Host),
            other => Err(format!("unknown mode {other:?} (expected kernel, dpdk or host)")),
        }
    }
}

/// The userspace I/O drivers a DPDK pool may bind to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum DpdkDriver {
    #[default]
    #[serde(rename = "vfio-pci")]
    VfioPci,
    #[serde(rename = "igb_uio")]
    IgbUio,
    #[serde(rename = "uio_pci_generic")]
    UioPciGeneric,
}

impl DpdkDriver {
    pub fn as_str(self) -> &'static str {
        match self {
            DpdkDriver::VfioPci => "vfio-pci",
            DpdkDriver::IgbUio => "igb_uio",
            DpdkDriver::UioPciGeneric => "uio_pci_generic",
        }
    }

    /// The driver's sysfs name, to bind to.
    pub fn driver_name(self) -> DriverName {
        DriverName::from(self)
    }
}

impl From<DpdkDriver> for DriverName {
    fn from(d: DpdkDriver) -> Self {
        DriverName::known(d.as_str())
    }
}

impl fmt::Display for DpdkDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DpdkDriver {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "vfio-pci" => Ok(DpdkDriver::VfioPci),
            "igb_uio" => Ok(DpdkDriver::IgbUio),
            "uio_pci_generic" => Ok(DpdkDriver::UioPciGeneric),
            other => Err(format!("unknown DPDK driver {other:?} (expected vfio-pci, igb_uio or uio_pci_generic)")),
        }
    }
}

/// A subnet named by ID or by its `Name` tag (resolved in EC2).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum SubnetRef {
    Id(SubnetId),
    Name(String),
}

/// A security group named by ID or by its group name (resolved in the subnet's VPC).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum SecurityGroupRef {
    Id(SecurityGroupId),
    Name(String),
}

/// One pool of ENIs on a node, validated.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Pool {
    pub name: String,
    pub mode: Mode,
    /// The extended resource that advertises this pool (kernel and dpdk pools only).
    pub resource_name: Option<ResourceName>,
    pub subnets: Vec<SubnetRef>,
    pub security_groups: Vec<SecurityGroupRef>,
    pub enis_per_subnet: u32,
    pub first_device_index: u32,
    /// The EC2 network card the pool's ENIs attach on (device indexes are per card).
    pub network_card_index: u32,
    pub mtu: Option<u32>,
    pub description: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub secondary_ip_count: u32,
    /// IPv6 addresses EC2 assigns each ENI at create (the subnet needs an IPv6 CIDR).
    pub ipv6_address_count: u32,
    /// Host pools: free secondary IPs to keep on each ENI for `nodeeni-ipam` (0: none kept).
    pub warm_ip_target: u32,
    /// Host pools: at most this many secondary IPs on an ENI (None: the instance type's limit).
    pub max_ips_per_eni: Option<u32>,
    /// Host pools: how long an ENI has more free IPs than `warm_ip_target` before the extras go back.
    pub ip_cooldown_secs: u32,
    pub delete_on_termination: bool,
    /// EC2's source/destination check on the pool's ENIs: None leaves EC2's default (on) alone;
    /// Some is applied after the create and repaired as drift (routing pods want it off).
    pub source_dest_check: Option<bool>,
    pub dpdk_driver: DpdkDriver,
    /// Pin: the PCI address to bind (single-ENI dpdk pools).
    pub pci_address: Option<PciAddress>,
    /// Host pools: ENIs are named `<prefix><device index>` on every node.
    pub host_ifname_prefix: String,
    pub node_selector: BTreeMap<String, String>,
    /// Where the pool came from, for messages: `pools[2]` or `NodeENI(user-plane)`.
    #[serde(skip)]
    pub origin: String,
    /// What the pool's fields are called where it came from.
    #[serde(skip)]
    pub keys: &'static OriginKeys,
}

/// Field names of a pool in its source document, so problems found across pools point at the right key.
#[derive(Debug, PartialEq, Eq)]
pub struct OriginKeys {
    pub name: &'static str,
    pub resource_name: &'static str,
    pub device_index: &'static str,
    pub network_card: &'static str,
    pub warm_ip_target: &'static str,
    pub pci_address: &'static str,
    pub host_ifname_prefix: &'static str,
}

pub(crate) static POOL_KEYS: OriginKeys = OriginKeys {
    name: "name",
    resource_name: "resourceName",
    device_index: "firstDeviceIndex",
    network_card: "networkCardIndex",
    warm_ip_target: "warmIpTarget",
    pci_address: "pciAddress",
    host_ifname_prefix: "hostIfnamePrefix",
};

impl Pool {
    pub fn eni_count(&self) -> u32 {
        self.subnets.len() as u32 * self.enis_per_subnet
    }

    /// The device indexes this pool's ENIs take, one after another from the first.
    pub fn device_indexes(&self) -> Range<u32> {
        self.first_device_index..self.first_device_index + self.eni_count()
    }

    /// Whether the pool applies to a node with these labels (an empty selector matches every node).
    pub fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        self.node_selector.iter().all(|(k, v)| labels.get(k) == Some(v))
    }

    /// The stable host name of the ENI at `device_index` (host pools).
    pub fn host_ifname(&self, device_index: u32) -> String {
        format!("{}{}", self.host_ifname_prefix, device_index)
    }

    /// Two selectors can pick the same node unless they demand different values for one label.
    fn may_share_a_node(&self, other: &Pool) -> bool {
        self.node_selector.iter().all(|(k, v)| other.node_selector.get(k).is_none_or(|o| o == v))
    }
}

/// Which node this is. Anything left out comes from the instance metadata service (IMDSv2).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeIdentity {
    pub name: Option<String>,
    pub instance_id: Option<InstanceId>,
    pub availability_zone: Option<String>,
    pub instance_type: Option<String>,
    /// Node labels, matched against pools' nodeSelector.
    pub labels: BTreeMap<String, String>,
}

impl NodeIdentity {
    /// Whether both name the same node and instance: all but the labels, which the pool matches at
    /// every pass (the rest is resolved once, at start).
    pub fn same_instance(&self, other: &Self) -> bool {
        (&self.name, &self.instance_id, &self.availability_zone, &self.instance_type)
            == (&other.name, &other.instance_id, &other.availability_zone, &other.instance_type)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RetrySettings {
    pub max_attempts: u32,
    pub base_delay_ms: u64,
    pub max_delay_ms: u64,
}

impl Default for RetrySettings {
    fn default() -> Self {
        Self { max_attempts: 5, base_delay_ms: 200, max_delay_ms: 10_000 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CircuitBreakerSettings {
    pub failure_threshold: u32,
    pub success_threshold: u32,
    pub open_timeout_ms: u64,
    pub half_open_max_requests: u32,
}

impl Default for CircuitBreakerSettings {
    fn default() -> Self {
        Self { failure_threshold: 5, success_threshold: 2, open_timeout_ms: 30_000, half_open_max_requests: 1 }
    }
}

/// The client's pace for EC2. Mutations: a token bucket per EC2 request bucket (creates, deletes,
/// attribute changes, attach and detach each have their own account-wide bucket), and a bound on
/// mutations in flight. Describes: one bucket. Each rate is a ceiling: the client cuts it when EC2
/// throttles and grows it back slowly (see the README's "What a cluster costs the account").
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitSettings {
    pub mutating_per_second: u32,
    pub burst: u32,
    pub max_concurrent: u32,
    pub describe_per_second: u32,
    pub describe_burst: u32,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self { mutating_per_second: 5, burst: 10, max_concurrent: 4, describe_per_second: 10, describe_burst: 20 }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Ec2Settings {
    /// Endpoint override: a VPC endpoint, or the EC2 emulator in tests.
    pub endpoint_url: Option<String>,
    pub region: Option<String>,
    pub retry: RetrySettings,
    pub circuit_breaker: CircuitBreakerSettings,
    pub rate_limit: RateLimitSettings,
}

/// The default ceiling of the idle back-off: with it 5000 idle nodes list their ENIs about 8 times a
/// second, under half of the 20 describes a second an account's bucket refills.
pub const DEFAULT_IDLE_INTERVAL_MAX_SECS: u64 = 600;

/// The whole node configuration, validated.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolConfig {
    /// Tags every ENI nodeeni creates; leak collection only ever touches ENIs with this tag.
    pub cluster_name: String,
    pub node: NodeIdentity,
    pub ec2: Ec2Settings,
    pub state_dir: PathBuf,
    pub reconcile_interval_secs: u64,
    /// While passes find nothing to do, the wait between them doubles from
    /// `reconcile_interval_secs` up to this, so an idle cluster's listings do not grow with its size.
    pub idle_interval_max_secs: u64,
    pub leak_grace_secs: u64,
    pub pools: Vec<Pool>,
    /// Leave alone the ENIs of pools this configuration does not name, instead of removing them.
    /// Not read from the file: cluster mode sets it while the NodeENIs have not been listed (the
    /// API down or answering 404 at a start), when a pool missing here may be a NodeENI's.
    #[serde(skip)]
    pub keep_undeclared: bool,
}

impl PoolConfig {
    /// The pools that apply to a node with these labels.
    pub fn pools_for<'a>(&'a self, labels: &'a BTreeMap<String, String>) -> impl Iterator<Item = &'a Pool> {
        self.pools.iter().filter(move |p| p.selects(labels))
    }

    pub fn pool(&self, name: &str) -> Option<&Pool> {
        self.pools.iter().find(|p| p.name == name)
    }
}

pub const POOL_CONFIG_API_VERSION: &str = "nodeeni.io/v1alpha1";

/// Reads one `PoolConfig` document (its pools included); problems are recorded under `path`.
pub(crate) fn read_pool_config(doc: &Value, path: &str, problems: &mut Problems) -> Option<PoolConfig> {
    let mut f = Fields::of(doc, path, problems)?;
    if let Some(v) = f.string("apiVersion", problems)
        && v != POOL_CONFIG_API_VERSION
    {
        problems.push(f.path_of("apiVersion"), format!("expected {POOL_CONFIG_API_VERSION}, found {v:?}"));
    }
    f.string("kind", problems);
    let cluster_name = f.required::<String>("clusterName", problems);
    if let Some(name) = &cluster_name {
        check_tag_value(name, &f.path_of("clusterName"), problems);
    }
    let node = f.raw("node").and_then(|v| read_node(v, &f.path_of("node"), problems)).unwrap_or_default();
    let ec2 = f.raw("ec2").and_then(|v| read_ec2(v, &f.path_of("ec2"), problems)).unwrap_or_default();
    let state_dir = f.get::<PathBuf>("stateDir", problems).unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
    let reconcile_interval_secs = f.int_in("reconcileIntervalSeconds", 1..=86_400, problems).unwrap_or(60) as u64;
    let idle_interval_max_secs = f
        .int_in("idleIntervalMaxSeconds", 1..=86_400, problems)
        .map_or(DEFAULT_IDLE_INTERVAL_MAX_SECS.max(reconcile_interval_secs), |n| n as u64);
    if idle_interval_max_secs < reconcile_interval_secs {
        problems.push(f.path_of("idleIntervalMaxSeconds"), "must not be below reconcileIntervalSeconds");
    }
    let leak_grace_secs = f.int_in("leakGraceSeconds", 0..=604_800, problems).unwrap_or(300) as u64;
    let mut pools = Vec::new();
    match f.raw("pools") {
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                if let Some(p) = read_pool(item, &index(&f.path_of("pools"), i), problems) {
                    pools.push(p);
                }
            }
        }
        Some(other) => problems.push(f.path_of("pools"), format!("expected a list, found {}", kind_of(other))),
        None => {}
    }
    f.finish(problems);
    Some(PoolConfig {
        cluster_name: cluster_name.unwrap_or_default(),
        node,
        ec2,
        state_dir,
        reconcile_interval_secs,
        idle_interval_max_secs,
        leak_grace_secs,
        pools,
        keep_undeclared: false,
    })
}

fn read_node(v: &Value, path: &str, problems: &mut Problems) -> Option<NodeIdentity> {
    let mut f = Fields::of(v, path, problems)?;
    let node = NodeIdentity {
        name: f.string("name", problems),
        instance_id: f.parsed("instanceId", problems),
        availability_zone: f.string("availabilityZone", problems),
        instance_type: f.string("instanceType", problems),
        labels: f.get("labels", problems).unwrap_or_default(),
    };
    f.finish(problems);
    Some(node)
}

fn read_ec2(v: &Value, path: &str, problems: &mut Problems) -> Option<Ec2Settings> {
    let mut f = Fields::of(v, path, problems)?;
    let endpoint_url = f.string("endpointUrl", problems);
    if let Some(url) = &endpoint_url
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        problems.push(f.path_of("endpointUrl"), "must start with http:// or https://");
    }
    let region = f.string("region", problems);
    let mut retry = RetrySettings::default();
    if let Some(rv) = f.raw("retry")
        && let Some(mut r) = Fields::of(rv, &f.path_of("retry"), problems)
    {
        retry.max_attempts = r.int_in("maxAttempts", 1..=20, problems).map_or(retry.max_attempts, |n| n as u32);
        retry.base_delay_ms = r.int_in("baseDelayMs", 1..=60_000, problems).map_or(retry.base_delay_ms, |n| n as u64);
        retry.max_delay_ms = r.int_in("maxDelayMs", 1..=600_000, problems).map_or(retry.max_delay_ms, |n| n as u64);
        if retry.max_delay_ms < retry.base_delay_ms {
            problems.push(r.path_of("maxDelayMs"), "must not be below baseDelayMs");
        }
        r.finish(problems);
    }
    let mut circuit_breaker = CircuitBreakerSettings::default();
    if let Some(bv) = f.raw("circuitBreaker")
        && let Some(mut b) = Fields::of(bv, &f.path_of("circuitBreaker"), problems)
    {
        let cb = &mut circuit_breaker;
        cb.failure_threshold =
            b.int_in("failureThreshold", 1..=1000, problems).map_or(cb.failure_threshold, |n| n as u32);
        cb.success_threshold =
            b.int_in("successThreshold", 1..=1000, problems).map_or(cb.success_threshold, |n| n as u32);
        cb.open_timeout_ms =
            b.int_in("openTimeoutMs", 1..=3_600_000, problems).map_or(cb.open_timeout_ms, |n| n as u64);
        cb.half_open_max_requests =
            b.int_in("halfOpenMaxRequests", 1..=1000, problems).map_or(cb.half_open_max_requests, |n| n as u32);
        b.finish(problems);
    }
    let mut rate_limit = RateLimitSettings::default();
    if let Some(lv) = f.raw("rateLimit")
        && let Some(mut l) = Fields::of(lv, &f.path_of("rateLimit"), problems)
    {
        let rl = &mut rate_limit;
        rl.mutating_per_second =
            l.int_in("mutatingPerSecond", 1..=1000, problems).map_or(rl.mutating_per_second, |n| n as u32);
        rl.burst = l.int_in("burst", 1..=1000, problems).map_or(rl.burst, |n| n as u32);
        rl.max_concurrent = l.int_in("maxConcurrent", 1..=256, problems).map_or(rl.max_concurrent, |n| n as u32);
        rl.describe_per_second =
            l.int_in("describePerSecond", 1..=1000, problems).map_or(rl.describe_per_second, |n| n as u32);
        rl.describe_burst = l.int_in("describeBurst", 1..=1000, problems).map_or(rl.describe_burst, |n| n as u32);
        l.finish(problems);
    }
    f.finish(problems);
    Some(Ec2Settings { endpoint_url, region, retry, circuit_breaker, rate_limit })
}

/// EC2 tag values: at most 256 characters.
fn check_tag_value(value: &str, path: &str, problems: &mut Problems) {
    if value.is_empty() || value.len() > 256 {
        problems.push(path, "must be 1-256 characters (it becomes an EC2 tag value)");
    }
}

/// Pool names appear in tags, state records and logs: keep them to DNS-label characters.
pub(crate) fn check_pool_name(name: &str, path: &str, problems: &mut Problems) {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if !ok {
        problems.push(path, format!("{name:?} must be 1-63 characters of [a-z0-9-.], starting alphanumeric"));
    }
}

fn read_pool(v: &Value, path: &str, problems: &mut Problems) -> Option<Pool> {
    let mut f = Fields::of(v, path, problems)?;
    let name = f.required::<String>("name", problems);
    if let Some(n) = &name {
        check_pool_name(n, &f.path_of("name"), problems);
    }
    let mode = f
        .required::<String>("mode", problems)
        .and_then(|m| m.parse::<Mode>().map_err(|e| problems.push(f.path_of("mode"), e)).ok());
    let resource_name = f.parsed::<ResourceName>("resourceName", problems);
    let mut subnets: Vec<SubnetRef> =
        f.parsed_list::<SubnetId>("subnetIds", problems).into_iter().map(SubnetRef::Id).collect();
    subnets.extend(f.string_list("subnetNames", problems).into_iter().map(SubnetRef::Name));
    if subnets.is_empty() && !problems.iter().any(|p| p.path.starts_with(&f.path_of("subnetIds"))) {
        problems.push(path, "names no subnet: set subnetIds or subnetNames");
    }
    let mut security_groups: Vec<SecurityGroupRef> =
        f.parsed_list::<SecurityGroupId>("securityGroupIds", problems).into_iter().map(SecurityGroupRef::Id).collect();
    security_groups.extend(f.string_list("securityGroupNames", problems).into_iter().map(SecurityGroupRef::Name));
    let enis_per_subnet = f.int_in("enisPerSubnet", 1..=64, problems).unwrap_or(1) as u32;
    let first_device_index = f.int_in("firstDeviceIndex", DEVICE_INDEX_RANGE, problems).unwrap_or(1) as u32;
    let network_card_index = f.int_in("networkCardIndex", NETWORK_CARD_RANGE, problems).unwrap_or(0) as u32;
    let mtu = f.int_in("mtu", MTU_RANGE, problems).map(|n| n as u32);
    let description = f.string("description", problems);
    if let Some(d) = &description
        && d.len() > 255
    {
        problems.push(f.path_of("description"), "EC2 takes at most 255 characters");
    }
    let tags: BTreeMap<String, String> = f.get("tags", problems).unwrap_or_default();
    for (k, v) in &tags {
        let tag_path = child(&f.path_of("tags"), k);
        if k.is_empty() || k.len() > 128 || k.starts_with("aws:") {
            problems.push(&tag_path, "tag keys are 1-128 characters and may not start with 'aws:'");
        }
        if v.len() > 256 {
            problems.push(&tag_path, "tag values are at most 256 characters");
        }
    }
    let secondary_ip_count = f.int_in("secondaryIpCount", 0..=49, problems).unwrap_or(0) as u32;
    let ipv6_address_count = f.int_in("ipv6AddressCount", IPV6_ADDRESS_RANGE, problems).unwrap_or(0) as u32;
    let warm_ip_target = f.int_in("warmIpTarget", 0..=49, problems).unwrap_or(0) as u32;
    let max_ips_per_eni = f.int_in("maxIpsPerEni", 1..=49, problems).map(|n| n as u32);
    let ip_cooldown_secs = f.int_in("ipCooldownSeconds", 0..=3600, problems).unwrap_or(DEFAULT_IP_COOLDOWN_SECS) as u32;
    let delete_on_termination = f.get::<bool>("deleteOnTermination", problems).unwrap_or(true);
    let source_dest_check = f.get::<bool>("sourceDestCheck", problems);
    let dpdk_driver = f.parsed::<DpdkDriver>("dpdkDriver", problems);
    let pci_address = f.parsed::<PciAddress>("pciAddress", problems);
    let host_ifname_prefix = f.string("hostIfnamePrefix", problems);
    let node_selector = f.get("nodeSelector", problems).unwrap_or_default();
    f.finish(problems);
    let mode = mode?;
    Some(Pool {
        name: name?,
        mode,
        resource_name,
        subnets,
        security_groups,
        enis_per_subnet,
        first_device_index,
        network_card_index,
        mtu,
        description,
        tags,
        secondary_ip_count,
        ipv6_address_count,
        warm_ip_target,
        max_ips_per_eni,
        ip_cooldown_secs,
        delete_on_termination,
        source_dest_check,
        dpdk_driver: dpdk_driver.unwrap_or_default(),
        pci_address,
        host_ifname_prefix: host_ifname_prefix.unwrap_or_else(|| DEFAULT_HOST_IFNAME_PREFIX.to_string()),
        node_selector,
        origin: path.to_string(),
        keys: &POOL_KEYS,
    })
}

/// Rules that look at a pool as a whole, or at several pools together.
pub(crate) fn check_pools_together(pools: &[Pool], problems: &mut Problems) {
    for p in pools {
        let at = |key: &str| child(&p.origin, key);
        match p.mode {
            // An invalid name was reported where it was read; "required" would only repeat it.
            Mode::Kernel | Mode::Dpdk if p.resource_name.is_none() && !problems.has_path(&at(p.keys.resource_name)) => {
                problems.push(
                    at(p.keys.resource_name),
                    format!("required for a {} pool (it is how pods ask for it)", p.mode),
                );
            }
            Mode::Host if p.resource_name.is_some() => {
                problems.push(at(p.keys.resource_name), "host pools stay on the node and are not advertised; drop it");
            }
            _ => {}
        }
        if p.mode != Mode::Host && (p.warm_ip_target > 0 || p.max_ips_per_eni.is_some()) {
            problems.push(
                at(p.keys.warm_ip_target),
                format!("only host pools hand out addresses (nodeeni-ipam); a {} pool's ENIs go to pods whole", p.mode),
            );
        }
        if let Some(max) = p.max_ips_per_eni
            && p.warm_ip_target > max
        {
            problems.push(at(p.keys.warm_ip_target), format!("{} is above maxIpsPerEni {max}", p.warm_ip_target));
        }
        if p.pci_address.is_some() && p.mode != Mode::Dpdk {
            problems.push(at(p.keys.pci_address), "only dpdk pools bind a pinned PCI address");
        }
        if p.pci_address.is_some() && p.eni_count() > 1 {
            problems.push(at(p.keys.pci_address), format!("pins one device but the pool has {} ENIs", p.eni_count()));
        }
        let last = p.first_device_index + p.eni_count().saturating_sub(1);
        if i64::from(last) > *DEVICE_INDEX_RANGE.end() {
            problems.push(
                at(p.keys.device_index),
                format!("the pool's last ENI would take device index {last}, above 127"),
            );
        }
        if p.mode == Mode::Host {
            let longest = p.host_ifname(last);
            if let Err(e) = longest.parse::<crate::names::IfName>() {
                problems.push(at(p.keys.host_ifname_prefix), format!("makes an invalid interface name: {e}"));
            }
        }
    }
    for (i, a) in pools.iter().enumerate() {
        for b in &pools[i + 1..] {
            if a.name == b.name {
                problems.push(
                    child(&b.origin, b.keys.name),
                    format!("pool name {:?} is already used by {}", b.name, a.origin),
                );
            }
            if let (Some(ra), Some(rb)) = (&a.resource_name, &b.resource_name)
                && ra == rb
                && (a.mode != b.mode || (a.mode == Mode::Dpdk && a.dpdk_driver != b.dpdk_driver))
            {
                problems.push(
                    child(&b.origin, b.keys.resource_name),
                    format!(
                        "resource {ra} is also served by {} as {} ({}); one resource needs one mode and driver",
                        a.origin, a.mode, a.dpdk_driver
                    ),
                );
            }
            // Device-info files are named by the convention Multus reads (`/` becomes `-`), so two
            // distinct names can meet in one file prefix, and one resource's upkeep would remove the
            // other's files: refuse it here.
            if let (Some(ra), Some(rb)) = (&a.resource_name, &b.resource_name)
                && ra != rb
                && ra.as_str().replace('/', "-") == rb.as_str().replace('/', "-")
            {
                problems.push(
                    child(&b.origin, b.keys.resource_name),
                    format!(
                        "resources {ra} and {rb} (of {}) would name their device-info files alike; rename one",
                        a.origin
                    ),
                );
            }
            let (ia, ib) = (a.device_indexes(), b.device_indexes());
            let indexes_overlap = a.may_share_a_node(b) && ia.start < ib.end && ib.start < ia.end;
            if indexes_overlap && a.network_card_index != b.network_card_index {
                // Each card has its own device indexes, but host pools name their ENIs by index alone.
                if a.mode == Mode::Host && b.mode == Mode::Host && a.host_ifname_prefix == b.host_ifname_prefix {
                    problems.push(
                        child(&b.origin, b.keys.host_ifname_prefix),
                        format!(
                            "host interface names {}{}.. would also be {}'s (on network card {}): give one a different prefix or device indexes",
                            b.host_ifname_prefix,
                            ia.start.max(ib.start),
                            a.origin,
                            a.network_card_index
                        ),
                    );
                }
            } else if indexes_overlap {
                problems.push(
                    child(&b.origin, b.keys.device_index),
                    format!(
                        "device indexes {}..{} overlap {}..{} of {} on network card {} of nodes both select",
                        ib.start, ib.end, ia.start, ia.end, a.origin, a.network_card_index
                    ),
                );
            }
        }
    }
}
