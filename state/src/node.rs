//! The node state: every ENI of every pool on this node, what the host knows of it, and which pod has
//! it. Written by the daemon as it reconciles and by the CNI as it hands ENIs out, each under the
//! file's exclusive lock, each write atomic; the daemon records its intent before every EC2 mutation.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nodeeni_conf::cni::ContainerId;
use nodeeni_conf::net::IpNet;
use nodeeni_conf::pool::DpdkDriver;
use nodeeni_conf::{DriverName, EniId, MacAddr, Mode, PciAddress, SubnetId};
use serde::{Deserialize, Serialize};

use crate::atomic::{Durability, replace};
use crate::lock::{LockError, acquire};

pub const STATE_FILE: &str = "node-state.json";
const LOCK_FILE: &str = "node-state.lock";
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("cannot read node state {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("node state {path} is corrupt: {source}")]
    Corrupt { path: PathBuf, source: serde_json::Error },
    #[error("node state {path} has schema version {found}, this build reads {SCHEMA_VERSION}")]
    Version { path: PathBuf, found: u32 },
    #[error("cannot write node state {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// Where an ENI is in its life on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Lifecycle {
    /// CreateNetworkInterface is about to be, or was, called; the ID may not be known yet.
    Creating,
    /// Created; AttachNetworkInterface is about to be, or was, called.
    Attaching,
    /// Attached and prepared on the host; can be handed out.
    Ready,
    /// To be removed once its pod lets go.
    Draining,
    Detaching,
    Deleting,
}

impl Lifecycle {
    /// The name the node state file, the metrics and `status` use.
    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Creating => "creating",
            Lifecycle::Attaching => "attaching",
            Lifecycle::Ready => "ready",
            Lifecycle::Draining => "draining",
            Lifecycle::Detaching => "detaching",
            Lifecycle::Deleting => "deleting",
        }
    }
}

/// Which pod has an ENI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Allocation {
    /// Validated when read: a record naming an impossible container is corrupt, not trusted.
    pub container_id: ContainerId,
    pub ifname: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    pub since_unix: u64,
}

/// One of a host ENI's addresses handed to a pod by `nodeeni-ipam` (the pod's interface sits on
/// the ENI through ipvlan, macvlan or a bridge): which attachment holds it, since when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpHold {
    pub ip: IpAddr,
    pub container_id: ContainerId,
    pub ifname: String,
    pub since_unix: u64,
}

/// One ENI of a pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EniRecord {
    /// None only while `Creating` and before EC2 answered.
    pub eni_id: Option<EniId>,
    pub pool: String,
    pub mode: Mode,
    pub lifecycle: Lifecycle,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet_id: Option<SubnetId>,
    /// The subnet's CIDR; its prefix length is the one the ENI's addresses take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet_cidr: Option<IpNet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_ip: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secondary_ips: Vec<IpAddr>,
    /// The ENI's IPv6 addresses (pools with `ipv6AddressCount`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ipv6_addresses: Vec<IpAddr>,
    /// The subnet's IPv6 CIDR, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet_ipv6_cidr: Option<IpNet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_index: Option<u32>,
    /// The EC2 network card the ENI attaches on (None: card 0, as records before cards were kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_card: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachment_id: Option<String>,
    /// The netdev's name on the host (the stable name, for host pools).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ifname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci: Option<PciAddress>,
    /// The kernel driver found on the device (ena), before any DPDK bind. A safe sysfs name, checked
    /// when the record is read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<DriverName>,
    /// The DPDK driver of dpdk pools (`vfio-pci`, `igb_uio`, `uio_pci_generic`, as in the config).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpdk_driver: Option<DpdkDriver>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iommu_group: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numa_node: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation: Option<Allocation>,
    /// The EC2 client token of a create in flight, so a restart can find what it made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_token: Option<String>,
    /// EC2's source/destination check on the ENI, as last listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_dest_check: Option<bool>,
    /// Host pools: the ENI's addresses `nodeeni-ipam` handed to pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_holds: Vec<IpHold>,
    /// Intent: secondary IPs being returned to EC2 (UnassignPrivateIpAddresses in flight). Never
    /// handed out; a restart returns them again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips_releasing: Vec<IpAddr>,
    /// Intent: an AssignPrivateIpAddresses in flight since then; a restart takes the ENI's addresses
    /// from EC2's listing, which has whatever it assigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ips_assigning_since: Option<u64>,
    /// Since when the ENI has had more free addresses than its pool's warm target (the cool-down
    /// before extras go back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_surplus_since: Option<u64>,
    pub updated_unix: u64,
}

impl EniRecord {
    /// A record of `pool`'s ENI in `lifecycle`, with nothing known yet.
    pub fn new(pool: impl Into<String>, mode: Mode, lifecycle: Lifecycle) -> Self {
        Self {
            eni_id: None,
            pool: pool.into(),
            mode,
            lifecycle,
            subnet_id: None,
            subnet_cidr: None,
            gateway: None,
            primary_ip: None,
            secondary_ips: Vec::new(),
            ipv6_addresses: Vec::new(),
            subnet_ipv6_cidr: None,
            mac: None,
            device_index: None,
            network_card: None,
            attachment_id: None,
            host_ifname: None,
            pci: None,
            driver: None,
            dpdk_driver: None,
            iommu_group: None,
            numa_node: None,
            mtu: None,
            allocation: None,
            client_token: None,
            source_dest_check: None,
            ip_holds: Vec::new(),
            ips_releasing: Vec::new(),
            ips_assigning_since: None,
            ip_surplus_since: None,
            updated_unix: now_unix(),
        }
    }

    /// The ENI's VPC addresses with the subnet's prefix length, primary first, then its IPv6
    /// addresses with the subnet's IPv6 prefix length.
    pub fn vpc_addresses(&self) -> Vec<IpNet> {
        let mut out: Vec<IpNet> = match self.subnet_cidr {
            Some(cidr) => self
                .primary_ip
                .iter()
                .chain(&self.secondary_ips)
                .filter_map(|ip| IpNet::new(*ip, cidr.prefix))
                .collect(),
            None => Vec::new(),
        };
        // IPv6 beside IPv4, with the subnet's IPv6 prefix.
        if let Some(cidr6) = self.subnet_ipv6_cidr {
            out.extend(self.ipv6_addresses.iter().filter_map(|ip| IpNet::new(*ip, cidr6.prefix)));
        }
        out
    }

    /// The subnet router: recorded, or the subnet's base address plus one.
    pub fn vpc_gateway(&self) -> Option<IpAddr> {
        self.gateway.or_else(|| self.subnet_cidr.map(|c| c.vpc_gateway()))
    }

    /// Secondary IPv4 addresses no pod holds and none being returned, in EC2's order.
    pub fn free_ipv4(&self) -> Vec<IpAddr> {
        self.secondary_ips
            .iter()
            .filter(|ip| !self.ip_holds.iter().any(|h| h.ip == **ip) && !self.ips_releasing.contains(ip))
            .copied()
            .collect()
    }

    /// IPv6 addresses no pod holds.
    pub fn free_ipv6(&self) -> Vec<IpAddr> {
        self.ipv6_addresses.iter().filter(|ip| !self.ip_holds.iter().any(|h| h.ip == **ip)).copied().collect()
    }

    /// Whether pods depend on it: one has the ENI, or pods have addresses of it (host pools). A held
    /// ENI drains instead of going.
    pub fn is_held(&self) -> bool {
        self.allocation.is_some() || !self.ip_holds.is_empty()
    }

    pub fn is_free(&self) -> bool {
        self.lifecycle == Lifecycle::Ready && self.allocation.is_none()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeState {
    pub version: u32,
    /// The boot (`/proc/sys/kernel/random/boot_id`) whose pods the allocations belong to. The first
    /// writer after a reboot finds another boot here and releases every allocation: their pods died
    /// with the boot, and no DEL will come for them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    #[serde(default)]
    pub enis: Vec<EniRecord>,
}

impl Default for NodeState {
    fn default() -> Self {
        Self { version: SCHEMA_VERSION, boot_id: None, enis: Vec::new() }
    }
}

impl NodeState {
    /// Brings the state into boot `boot`, which started at `booted_at` (unix seconds, when known):
    /// allocations and address holds made in another boot are released (their pods are gone). A state that names no
    /// boot (written before boot IDs were kept) releases only the allocations older than this boot's
    /// start: releasing on a guess would hand running pods' ENIs to others. Returns what it released.
    pub fn settle_boot(&mut self, boot: &str, booted_at: Option<u64>) -> Vec<EniId> {
        // Whether a hold (an ENI's allocation, an address's hold) taken at `since` (unix seconds)
        // belongs to an earlier boot.
        let earlier: fn(u64, Option<u64>) -> bool = match self.boot_id.as_deref() {
            Some(b) if b == boot => return Vec::new(),
            Some(_) => |_, _| true,
            None => |since, booted_at| booted_at.is_some_and(|t| since < t),
        };
        let mut released = Vec::new();
        for e in &mut self.enis {
            if e.allocation.as_ref().is_some_and(|a| earlier(a.since_unix, booted_at)) {
                e.allocation = None;
                if let Some(id) = &e.eni_id {
                    released.push(id.clone());
                }
            }
            // Addresses pods of the earlier boot held: the same rule, the hold's own time.
            let holds = e.ip_holds.len();
            e.ip_holds.retain(|h| !earlier(h.since_unix, booted_at));
            if e.ip_holds.len() != holds
                && let Some(id) = &e.eni_id
                && !released.contains(id)
            {
                released.push(id.clone());
            }
        }
        self.boot_id = Some(boot.to_string());
        released
    }

    pub fn eni(&self, id: &EniId) -> Option<&EniRecord> {
        self.enis.iter().find(|e| e.eni_id.as_ref() == Some(id))
    }

    pub fn eni_mut(&mut self, id: &EniId) -> Option<&mut EniRecord> {
        self.enis.iter_mut().find(|e| e.eni_id.as_ref() == Some(id))
    }

    pub fn by_mac(&self, mac: MacAddr) -> Option<&EniRecord> {
        self.enis.iter().find(|e| e.mac == Some(mac))
    }

    pub fn by_pci(&self, pci: PciAddress) -> Option<&EniRecord> {
        self.enis.iter().find(|e| e.pci == Some(pci))
    }

    /// The ENI given to this attachment, if any.
    pub fn allocated_to(&self, container_id: &ContainerId, ifname: &str) -> Option<&EniRecord> {
        self.enis
            .iter()
            .find(|e| e.allocation.as_ref().is_some_and(|a| &a.container_id == container_id && a.ifname == ifname))
    }
}

pub fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The node state file in a state folder.
#[derive(Debug, Clone)]
pub struct NodeStore {
    dir: PathBuf,
    /// This boot's ID; None where the kernel does not say (then nothing is released).
    boot: Option<String>,
    /// When this boot started (`btime` in /proc/stat), for states that name no boot.
    booted_at: Option<u64>,
}

/// Where the kernel names the current boot.
pub const BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";

/// The previous good copy of the node state, kept beside it for a torn write to fall back to.
pub const PREVIOUS_FILE: &str = "node-state.json.prev";

impl NodeStore {
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        let boot = std::fs::read_to_string(BOOT_ID_PATH).ok().map(|b| b.trim().to_string()).filter(|b| !b.is_empty());
        let booted_at = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| s.lines().find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok()));
        Self { dir: state_dir.into(), boot, booted_at }
    }

    /// The same store as if the boot had started at `booted_at` (tests).
    pub fn with_boot_time(mut self, booted_at: Option<u64>) -> Self {
        self.booted_at = booted_at;
        self
    }

    /// The same store as if the node were in boot `boot` (tests).
    pub fn with_boot_id(mut self, boot: Option<String>) -> Self {
        self.boot = boot;
        self
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    pub fn exists(&self) -> bool {
        self.path().exists()
    }

    fn lock(&self, exclusive: bool, timeout: Duration) -> Result<crate::lock::LockGuard, StoreError> {
        std::fs::create_dir_all(&self.dir).map_err(|source| StoreError::Write { path: self.dir.clone(), source })?;
        // The state lock file stays: shared holders may still have it open.
        Ok(acquire(&self.dir.join(LOCK_FILE), "node state", exclusive, false, timeout)?)
    }

    fn parse(path: &Path, bytes: &[u8]) -> Result<NodeState, StoreError> {
        let state: NodeState =
            serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt { path: path.to_path_buf(), source })?;
        if state.version != SCHEMA_VERSION {
            return Err(StoreError::Version { path: path.to_path_buf(), found: state.version });
        }
        Ok(state)
    }

    /// The state read into this boot (allocations of an earlier boot released), and the state as
    /// the file has it — None when the file was torn (power lost after a rename landed but before
    /// its data did) and the previous good copy was read instead.
    fn read_unlocked(&self) -> Result<(NodeState, Option<NodeState>), StoreError> {
        let path = self.path();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Nothing on disk: an update that changes nothing writes nothing, boot stamp or not.
                let empty = self.in_this_boot(NodeState::default());
                return Ok((empty.clone(), Some(empty)));
            }
            Err(source) => return Err(StoreError::Read { path, source }),
        };
        let (state, on_disk) = match Self::parse(&path, &bytes) {
            Ok(state) => (state.clone(), Some(state)),
            // Only a file cut short (empty, JSON that stops mid-way, or blocks of NUL bytes where the
            // data never landed, as some filesystems leave after a power loss) is torn: JSON we write
            // never holds a raw NUL. Whole JSON this build cannot read (a newer version's, a hand
            // edit) is refused as it is: falling back would overwrite it with an older state at the
            // next write.
            Err(torn)
                if matches!(&torn, StoreError::Corrupt { source, .. }
                    if bytes.iter().all(u8::is_ascii_whitespace)
                        || bytes.contains(&0)
                        || source.classify() == serde_json::error::Category::Eof) =>
            {
                let previous = self.dir.join(PREVIOUS_FILE);
                let Ok(state) =
                    std::fs::read(&previous).map_err(|_| ()).and_then(|b| Self::parse(&previous, &b).map_err(|_| ()))
                else {
                    return Err(torn);
                };
                tracing::error!(error = %torn, previous = %previous.display(), "node state unreadable; using the previous good copy (the daemon reconciles the rest from EC2)");
                (state, None)
            }
            Err(e) => return Err(e),
        };
        Ok((self.in_this_boot(state), on_disk))
    }

    fn in_this_boot(&self, mut state: NodeState) -> NodeState {
        if let Some(boot) = &self.boot {
            let released = state.settle_boot(boot, self.booted_at);
            if !released.is_empty() {
                tracing::warn!(
                    ?released,
                    boot,
                    "the node rebooted: ENIs and addresses held by pods of the earlier boot are free again"
                );
            }
        }
        state
    }

    /// A consistent snapshot, read under a shared lock. A missing file is an empty state.
    pub fn load(&self, timeout: Duration) -> Result<NodeState, StoreError> {
        let _guard = self.lock(false, timeout)?;
        Ok(self.read_unlocked()?.0)
    }

    /// Reads, lets `f` change the state, and writes it back atomically and durably (power loss
    /// included), all under the exclusive lock. Nothing is written when `f` fails or changes nothing.
    /// The daemon's intents before EC2 calls go through here.
    pub fn update<T, E>(&self, timeout: Duration, f: impl FnOnce(&mut NodeState) -> Result<T, E>) -> Result<T, E>
    where
        E: From<StoreError>,
    {
        self.update_with(Durability::PowerLoss, timeout, f)
    }

    /// [`Self::update`] with a chosen durability. Every writer of the shared node state (the daemon's
    /// intents, the CNI's claims) goes through `update`, so power-loss durability: a torn claim would
    /// make a running pod's ENI look free.
    fn update_with<T, E>(
        &self,
        durability: Durability,
        timeout: Duration,
        f: impl FnOnce(&mut NodeState) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<StoreError>,
    {
        let _guard = self.lock(true, timeout)?;
        let (mut state, on_disk) = self.read_unlocked()?;
        let out = f(&mut state)?;
        // Settling into this boot is a change too: it is compared with the file as it was.
        if on_disk.as_ref() != Some(&state) {
            let bytes = serde_json::to_vec_pretty(&state)
                .map_err(|source| StoreError::Corrupt { path: self.path(), source })?;
            self.write_unlocked(&bytes, on_disk.is_some(), durability)?;
        }
        Ok(out)
    }

    /// Replaces the state with `bytes`, keeping what was there (when it was good) as the previous
    /// copy: a hard link, so the old content stays whole whatever happens to the new.
    fn write_unlocked(&self, bytes: &[u8], keep_previous: bool, durability: Durability) -> Result<(), StoreError> {
        let path = self.path();
        let write = |path: &Path, source| StoreError::Write { path: path.to_path_buf(), source };
        if keep_previous && path.exists() {
            let previous = self.dir.join(PREVIOUS_FILE);
            let staged = self.dir.join(format!(".{PREVIOUS_FILE}.{}", std::process::id()));
            let _ = std::fs::remove_file(&staged);
            std::fs::hard_link(&path, &staged).map_err(|e| write(&staged, e))?;
            std::fs::rename(&staged, &previous).map_err(|e| write(&previous, e))?;
        }
        replace(&path, bytes, durability).map_err(|source| write(&path, source))
    }
}

impl AsRef<Path> for NodeStore {
    fn as_ref(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, pool: &str) -> EniRecord {
        EniRecord {
            eni_id: Some(id.parse().expect("id")),
            subnet_cidr: Some("10.0.1.0/24".parse().expect("cidr")),
            primary_ip: Some("10.0.1.20".parse().expect("ip")),
            secondary_ips: vec!["10.0.1.21".parse().expect("ip")],
            mac: Some("0a:00:00:00:00:01".parse().expect("mac")),
            device_index: Some(1),
            host_ifname: Some("eth1".into()),
            ..EniRecord::new(pool, Mode::Kernel, Lifecycle::Ready)
        }
    }

    #[test]
    fn a_lifecycles_name_is_the_one_the_file_holds() {
        for l in [
            Lifecycle::Creating,
            Lifecycle::Attaching,
            Lifecycle::Ready,
            Lifecycle::Draining,
            Lifecycle::Detaching,
            Lifecycle::Deleting,
        ] {
            assert_eq!(serde_json::to_value(l).expect("serialize"), serde_json::json!(l.as_str()));
        }
    }

    #[test]
    fn missing_file_is_empty_and_updates_persist() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = NodeStore::new(dir.path());
        assert!(store.load(Duration::from_secs(1)).expect("load").enis.is_empty());
        store
            .update(Duration::from_secs(1), |s| {
                s.enis.push(record("eni-12345678", "fast"));
                Ok::<_, StoreError>(())
            })
            .expect("update");
        let s = store.load(Duration::from_secs(1)).expect("load");
        let e = s.eni(&"eni-12345678".parse().expect("id")).expect("present");
        assert_eq!(
            e.vpc_addresses().iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            ["10.0.1.20/24", "10.0.1.21/24"]
        );
        assert_eq!(e.vpc_gateway().map(|g| g.to_string()).as_deref(), Some("10.0.1.1"));
    }

    #[test]
    fn a_failing_update_writes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = NodeStore::new(dir.path());
        let r: Result<(), StoreError> = store.update(Duration::from_secs(1), |s| {
            s.enis.push(record("eni-12345678", "fast"));
            Err(StoreError::Version { path: PathBuf::new(), found: 0 })
        });
        assert!(r.is_err());
        assert!(!store.exists());
    }

    #[test]
    fn corrupt_and_future_files_are_refused_not_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = NodeStore::new(dir.path());
        std::fs::write(store.path(), b"{ not json").expect("write");
        assert!(matches!(store.load(Duration::from_secs(1)), Err(StoreError::Corrupt { .. })));
        let r = store.update(Duration::from_secs(1), |_| Ok::<_, StoreError>(()));
        assert!(r.is_err());
        assert_eq!(std::fs::read(store.path()).expect("read"), b"{ not json", "never clobbered");
        std::fs::write(store.path(), br#"{"version": 9, "enis": []}"#).expect("write");
        assert!(matches!(store.load(Duration::from_secs(1)), Err(StoreError::Version { found: 9, .. })));
    }

    /// A node state as the build before the record newtypes wrote it: `containerId`, `driver` and
    /// `dpdkDriver` as plain strings.
    const OLD_STATE: &str = r#"{
  "version": 1,
  "enis": [
    {
      "eniId": "eni-0000000000000d0d1",
      "pool": "dp",
      "mode": "dpdk",
      "lifecycle": "ready",
      "subnetId": "subnet-0000000000000aaa1",
      "subnetCidr": "10.0.1.0/24",
      "gateway": "10.0.1.1",
      "primaryIp": "10.0.1.20",
      "mac": "0a:00:00:00:0d:01",
      "deviceIndex": 2,
      "attachmentId": "eni-attach-0000000000000001",
      "pci": "0000:00:06.0",
      "driver": "ena",
      "dpdkDriver": "uio_pci_generic",
      "iommuGroup": 7,
      "numaNode": 0,
      "allocation": {
        "containerId": "3f1c2a9e8b7d",
        "ifname": "dpdk0",
        "netns": "/var/run/netns/cni-1234",
        "sinceUnix": 1764000000
      },
      "updatedUnix": 1764000001
    },
    {
      "eniId": "eni-0000000000000abc1",
      "pool": "fast",
      "mode": "kernel",
      "lifecycle": "ready",
      "mac": "0a:00:00:00:00:11",
      "hostIfname": "eth1",
      "driver": "ena",
      "updatedUnix": 1764000002
    },
    {
      "eniId": null,
      "pool": "dp",
      "mode": "dpdk",
      "lifecycle": "creating",
      "dpdkDriver": "vfio-pci",
      "clientToken": "nodeeni-i-0123456789abcdef0-3-00000000000000ff",
      "updatedUnix": 1764000003
    }
  ]
}"#;

    #[test]
    fn a_node_state_in_the_old_format_reads_typed_and_writes_back_the_same() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = NodeStore::new(dir.path()).with_boot_id(None); // the format alone; boots are tested below
        std::fs::write(store.path(), OLD_STATE).expect("write");
        let state = store.load(Duration::from_secs(1)).expect("the old file reads");
        let dp = &state.enis[0];
        assert_eq!(dp.dpdk_driver, Some(DpdkDriver::UioPciGeneric));
        assert_eq!(dp.driver.as_ref().map(DriverName::as_str), Some("ena"));
        let held = dp.allocation.as_ref().expect("held");
        assert_eq!(held.container_id.as_str(), "3f1c2a9e8b7d");
        let id: ContainerId = "3f1c2a9e8b7d".parse().expect("id");
        assert_eq!(state.allocated_to(&id, "dpdk0").and_then(|e| e.eni_id.as_ref()), dp.eni_id.as_ref());
        assert_eq!(state.allocated_to(&id, "net1"), None);
        assert_eq!(state.enis[2].dpdk_driver, Some(DpdkDriver::VfioPci));

        // Written back (two real updates through the store, which writes only a changed state, the
        // second undoing the first): byte for byte the file it read.
        store
            .update(Duration::from_secs(1), |s| {
                s.enis[1].mtu = Some(9001);
                Ok::<_, StoreError>(())
            })
            .expect("update");
        store
            .update(Duration::from_secs(1), |s| {
                s.enis[1].mtu = None;
                Ok::<_, StoreError>(())
            })
            .expect("update");
        assert_eq!(std::fs::read_to_string(store.path()).expect("read"), OLD_STATE);
    }

    #[test]
    fn a_node_state_naming_an_unsafe_driver_or_container_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = NodeStore::new(dir.path());
        for (from, to) in [
            (r#""driver": "ena""#, r#""driver": "../../x""#),
            (r#""dpdkDriver": "uio_pci_generic""#, r#""dpdkDriver": "e1000""#),
            (r#""containerId": "3f1c2a9e8b7d""#, r#""containerId": "../etc""#),
        ] {
            let bad = OLD_STATE.replacen(from, to, 1);
            assert_ne!(bad, OLD_STATE);
            std::fs::write(store.path(), &bad).expect("write");
            assert!(matches!(store.load(Duration::from_secs(1)), Err(StoreError::Corrupt { .. })), "{to} accepted");
            let r = store.update(Duration::from_secs(1), |_| Ok::<_, StoreError>(()));
            assert!(r.is_err(), "{to}: never rewritten");
            assert_eq!(std::fs::read_to_string(store.path()).expect("read"), bad, "{to}: left as it was");
        }
    }

    #[test]
    fn concurrent_updates_lose_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = NodeStore::new(dir.path());
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for j in 0..10 {
                        store
                            .update(Duration::from_secs(10), |s| {
                                s.enis.push(record(&format!("eni-{:08x}", i * 100 + j), "p"));
                                Ok::<_, StoreError>(())
                            })
                            .expect("update");
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("thread");
        }
        assert_eq!(store.load(Duration::from_secs(1)).expect("load").enis.len(), 80);
    }

    fn held(id: &str) -> EniRecord {
        EniRecord {
            allocation: Some(Allocation {
                container_id: "pod-1".parse().expect("container id"),
                ifname: "net1".into(),
                netns: None,
                since_unix: 0,
            }),
            ..record(id, "fast")
        }
    }

    #[test]
    fn a_reboot_frees_what_pods_of_the_earlier_boot_held() {
        let dir = tempfile::tempdir().expect("tempdir");
        let before = NodeStore::new(dir.path()).with_boot_id(Some("boot-1".into()));
        before
            .update(Duration::from_secs(1), |s| {
                s.enis.push(held("eni-00000001"));
                Ok::<_, StoreError>(())
            })
            .expect("claim");
        assert!(before.load(Duration::from_secs(1)).expect("load").enis[0].allocation.is_some(), "same boot: held");
        let after = NodeStore::new(dir.path()).with_boot_id(Some("boot-2".into()));
        // A reader (health, Allocate) already sees it free; the first writer (daemon or CNI) makes it so.
        assert!(after.load(Duration::from_secs(1)).expect("load").enis[0].is_free());
        after.update(Duration::from_secs(1), |_| Ok::<_, StoreError>(())).expect("any update");
        let on_disk: NodeState = serde_json::from_slice(&std::fs::read(after.path()).expect("read")).expect("json");
        assert_eq!(on_disk.boot_id.as_deref(), Some("boot-2"));
        assert!(on_disk.enis[0].allocation.is_none(), "released on disk");
    }

    #[test]
    fn a_reboot_frees_the_addresses_pods_of_the_earlier_boot_held() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ip = |s: &str| -> IpAddr { s.parse().expect("ip") };
        let before = NodeStore::new(dir.path()).with_boot_id(Some("boot-1".into()));
        before
            .update(Duration::from_secs(1), |s| {
                let mut rec = record("eni-00000001", "masters");
                rec.secondary_ips = vec![ip("10.0.1.10"), ip("10.0.1.11"), ip("10.0.1.12")];
                rec.ips_releasing = vec![ip("10.0.1.12")];
                rec.ip_holds.push(IpHold {
                    ip: ip("10.0.1.10"),
                    container_id: "pod-1".parse().expect("container id"),
                    ifname: "net1".into(),
                    since_unix: now_unix(),
                });
                s.enis.push(rec);
                Ok::<_, StoreError>(())
            })
            .expect("hold");
        let same = before.load(Duration::from_secs(1)).expect("load");
        assert_eq!(same.enis[0].free_ipv4(), [ip("10.0.1.11")], "held and releasing ones are not free");
        let after = NodeStore::new(dir.path()).with_boot_id(Some("boot-2".into()));
        let rebooted = after.load(Duration::from_secs(1)).expect("load");
        assert!(rebooted.enis[0].ip_holds.is_empty(), "the pod died with the boot");
        assert_eq!(rebooted.enis[0].free_ipv4(), [ip("10.0.1.10"), ip("10.0.1.11")]);
    }

    #[test]
    fn a_state_from_before_boot_ids_frees_only_what_predates_this_boot() {
        // Upgrading the daemon while pods run must not free their ENIs; a reboot before the first
        // touch must not strand the earlier boot's.
        let dir = tempfile::tempdir().expect("tempdir");
        let at = |since: u64, id: &str| EniRecord {
            allocation: Some(Allocation {
                container_id: "pod-1".parse().expect("container id"),
                ifname: "net1".into(),
                netns: None,
                since_unix: since,
            }),
            ..record(id, "fast")
        };
        NodeStore::new(dir.path())
            .with_boot_id(None)
            .update(Duration::from_secs(1), |s| {
                s.enis.push(at(1_000, "eni-00000001"));
                s.enis.push(at(5_000, "eni-00000002"));
                Ok::<_, StoreError>(())
            })
            .expect("claims");
        let store = NodeStore::new(dir.path()).with_boot_id(Some("boot-1".into())).with_boot_time(Some(2_000));
        let state = store.load(Duration::from_secs(1)).expect("load");
        assert!(state.enis[0].allocation.is_none(), "claimed before this boot began: freed");
        assert!(state.enis[1].allocation.is_some(), "claimed in this boot: kept");
        let unknown = NodeStore::new(dir.path()).with_boot_id(Some("boot-1".into())).with_boot_time(None);
        assert!(unknown.load(Duration::from_secs(1)).expect("load").enis[0].allocation.is_some(), "no boot time: kept");
    }

    #[test]
    fn a_torn_state_falls_back_to_the_previous_good_copy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = NodeStore::new(dir.path()).with_boot_id(Some("b".into()));
        for id in ["eni-00000001", "eni-00000002"] {
            store
                .update(Duration::from_secs(1), |s| {
                    s.enis.push(record(id, "fast"));
                    Ok::<_, StoreError>(())
                })
                .expect("update");
        }
        // Power lost after the rename landed but before its data did: the file is empty.
        std::fs::write(store.path(), b"").expect("tear");
        let state = store.load(Duration::from_secs(1)).expect("the previous copy is read");
        assert_eq!(state.enis.len(), 1, "as of the write before the torn one");
        // The next write starts from it and leaves the torn file behind; the torn one never becomes
        // the previous copy.
        store
            .update(Duration::from_secs(1), |s| {
                s.enis.push(record("eni-00000003", "fast"));
                Ok::<_, StoreError>(())
            })
            .expect("update");
        assert_eq!(store.load(Duration::from_secs(1)).expect("load").enis.len(), 2);
        std::fs::write(store.path(), b"{").expect("tear again");
        assert_eq!(store.load(Duration::from_secs(1)).expect("previous").enis.len(), 1);
        // The file's length landed but its data did not: zeroes, in full or after a good start.
        let whole = std::fs::read(dir.path().join(PREVIOUS_FILE)).expect("previous copy");
        std::fs::write(store.path(), vec![0u8; whole.len()]).expect("zeroes");
        assert_eq!(store.load(Duration::from_secs(1)).expect("previous").enis.len(), 1, "all NUL");
        let mut half = whole[..whole.len() / 2].to_vec();
        half.resize(whole.len(), 0);
        std::fs::write(store.path(), half).expect("half zeroes");
        assert_eq!(store.load(Duration::from_secs(1)).expect("previous").enis.len(), 1, "NUL after a start");
    }

    #[test]
    fn a_whole_file_this_build_cannot_read_is_refused_not_replaced_by_the_previous_copy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = NodeStore::new(dir.path()).with_boot_id(None);
        for id in ["eni-00000001", "eni-00000002"] {
            store
                .update(Duration::from_secs(1), |s| {
                    s.enis.push(record(id, "fast"));
                    Ok::<_, StoreError>(())
                })
                .expect("update");
        }
        // Whole JSON with a lifecycle a newer build knows: not torn, so no fallback and no overwrite.
        let newer = std::fs::read_to_string(store.path()).expect("read").replace("\"ready\"", "\"quarantined\"");
        std::fs::write(store.path(), &newer).expect("write");
        assert!(matches!(store.load(Duration::from_secs(1)), Err(StoreError::Corrupt { .. })));
        let r = store.update(Duration::from_secs(1), |_| Ok::<_, StoreError>(()));
        assert!(r.is_err());
        assert_eq!(std::fs::read_to_string(store.path()).expect("read"), newer, "never clobbered");
    }
}
