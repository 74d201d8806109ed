//! The CNI spec's wire types: versions, the environment a runtime sets, network configuration (single
//! and lists), results in every version we speak, and errors with the spec's codes.
//!
//! Results are held in one shape (1.1.0's) and written in the version the configuration asks for.
//! A `prevResult` of any supported version is read into the same shape.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::names::{EniId, IfName, MacAddr};
use crate::net::IpNet;
use crate::pci::PciAddress;

// ---------------------------------------------------------------------------------------------------
// Versions

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CniVersion {
    V0_3_0,
    V0_3_1,
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

impl CniVersion {
    pub const ALL: [CniVersion; 5] =
        [CniVersion::V0_3_0, CniVersion::V0_3_1, CniVersion::V0_4_0, CniVersion::V1_0_0, CniVersion::V1_1_0];
    pub const LATEST: CniVersion = CniVersion::V1_1_0;

    pub fn as_str(self) -> &'static str {
        match self {
            CniVersion::V0_3_0 => "0.3.0",
            CniVersion::V0_3_1 => "0.3.1",
            CniVersion::V0_4_0 => "0.4.0",
            CniVersion::V1_0_0 => "1.0.0",
            CniVersion::V1_1_0 => "1.1.0",
        }
    }

    /// CHECK arrived in 0.4.0.
    pub fn has_check(self) -> bool {
        self >= CniVersion::V0_4_0
    }

    /// STATUS and GC arrived in 1.1.0.
    pub fn has_status_and_gc(self) -> bool {
        self >= CniVersion::V1_1_0
    }
}

impl fmt::Display for CniVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CniVersion {
    type Err = CniError;
    fn from_str(s: &str) -> Result<Self, CniError> {
        CniVersion::ALL.into_iter().find(|v| v.as_str() == s).ok_or_else(|| {
            CniError::new(
                codes::INCOMPATIBLE_VERSION,
                format!("cniVersion {s:?} is not supported"),
                format!("supported versions: {}", supported_versions().join(", ")),
            )
        })
    }
}

pub fn supported_versions() -> Vec<&'static str> {
    CniVersion::ALL.iter().map(|v| v.as_str()).collect()
}

/// The VERSION command's answer.
pub fn version_info(asked: Option<&str>) -> Value {
    json!({
        "cniVersion": asked.unwrap_or(CniVersion::LATEST.as_str()),
        "supportedVersions": supported_versions(),
    })
}

// ---------------------------------------------------------------------------------------------------
// Errors

/// The spec's error codes, and ours above 100.
pub mod codes {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENV: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODE_FAILURE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    pub const PLUGIN_NOT_AVAILABLE: u32 = 50;
    pub const PLUGIN_NOT_AVAILABLE_LIMITED: u32 = 51;
    /// Ours: the named device does not exist on the host.
    pub const DEVICE_NOT_FOUND: u32 = 100;
    /// Ours: the device is already given to another container.
    pub const DEVICE_IN_USE: u32 = 101;
    /// Ours: a netlink operation failed.
    pub const NETLINK: u32 = 102;
    /// Ours: a sysfs/PCI driver operation failed.
    pub const DRIVER_BIND: u32 = 103;
    /// Ours: the delegated IPAM plugin failed.
    pub const IPAM: u32 = 104;
    /// Ours: the node state could not be read or written.
    pub const NODE_STATE: u32 = 105;
    /// Ours: CHECK found the interface differs from what ADD set up.
    pub const CHECK_MISMATCH: u32 = 106;
    /// Ours: the pool has no free ENI.
    pub const POOL_EXHAUSTED: u32 = 107;
    /// Ours: undoing an attachment failed; its record is kept so DEL can retry.
    pub const CLEANUP: u32 = 108;
}

/// An error as the spec writes it on stdout: `{cniVersion, code, msg, details}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("CNI error {code}: {msg}{}", if details.is_empty() { String::new() } else { format!(" ({details})") })]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self { code, msg: msg.into(), details: details.into() }
    }

    pub fn invalid_config(msg: impl Into<String>) -> Self {
        Self::new(codes::INVALID_CONFIG, msg, "")
    }

    pub fn invalid_env(msg: impl Into<String>) -> Self {
        Self::new(codes::INVALID_ENV, msg, "")
    }

    pub fn to_json(&self, version: &str) -> Value {
        let mut v = json!({ "cniVersion": version, "code": self.code, "msg": self.msg });
        if !self.details.is_empty() {
            v["details"] = Value::String(self.details.clone());
        }
        v
    }
}

// ---------------------------------------------------------------------------------------------------
// Environment

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Status,
    Gc,
}

impl FromStr for Command {
    type Err = CniError;
    fn from_str(s: &str) -> Result<Self, CniError> {
        Ok(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            other => {
                return Err(CniError::invalid_env(format!(
                    "CNI_COMMAND {other:?} is not one of ADD, DEL, CHECK, VERSION, STATUS, GC"
                )));
            }
        })
    }
}

/// A container ID the spec accepts, which is also safe as a file name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ContainerId(String);

impl ContainerId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ContainerId {
    type Error = CniError;
    fn try_from(s: String) -> Result<Self, CniError> {
        s.parse()
    }
}

impl From<ContainerId> for String {
    fn from(c: ContainerId) -> String {
        c.0
    }
}

impl FromStr for ContainerId {
    type Err = CniError;
    fn from_str(s: &str) -> Result<Self, CniError> {
        let b = s.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= 255
            && b[0].is_ascii_alphanumeric()
            && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
        if !ok {
            return Err(CniError::invalid_env(format!(
                "CNI_CONTAINERID {s:?} is not a valid container ID (1-255 of [A-Za-z0-9_.-], starting alphanumeric)"
            )));
        }
        Ok(Self(s.to_string()))
    }
}

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the runtime said through `CNI_*` variables, checked for the command at hand.
#[derive(Debug, Clone)]
pub struct CniEnv {
    pub command: Command,
    pub container_id: Option<ContainerId>,
    pub netns: Option<PathBuf>,
    pub ifname: Option<IfName>,
    pub args: BTreeMap<String, String>,
    pub path: Vec<PathBuf>,
}

impl CniEnv {
    /// Reads the variables through `get` (the process environment, or a map in tests).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self, CniError> {
        let command: Command = get("CNI_COMMAND")
            .filter(|s| !s.is_empty())
            .ok_or_else(|| CniError::invalid_env("CNI_COMMAND is not set"))?
            .parse()?;
        let non_empty = |k: &str| get(k).filter(|s| !s.is_empty());
        let need = |k: &str| {
            non_empty(k).ok_or_else(|| CniError::invalid_env(format!("{k} is required for this command but not set")))
        };
        let (needs_container, needs_netns) = match command {
            Command::Add | Command::Check => (true, true),
            Command::Del => (true, false),
            Command::Version | Command::Status | Command::Gc => (false, false),
        };
        let container_id = if needs_container { Some(need("CNI_CONTAINERID")?.parse()?) } else { None };
        let netns = if needs_netns {
            Some(PathBuf::from(need("CNI_NETNS")?))
        } else {
            non_empty("CNI_NETNS").map(PathBuf::from)
        };
        let ifname = if needs_container {
            let raw = need("CNI_IFNAME")?;
            Some(raw.parse::<IfName>().map_err(|e| CniError::invalid_env(format!("CNI_IFNAME: {e}")))?)
        } else {
            None
        };
        let args = match non_empty("CNI_ARGS") {
            Some(a) => parse_cni_args(&a)?,
            None => BTreeMap::new(),
        };
        let path = non_empty("CNI_PATH")
            .map(|p| p.split(':').filter(|s| !s.is_empty()).map(PathBuf::from).collect())
            .unwrap_or_default();
        Ok(Self { command, container_id, netns, ifname, args, path })
    }
}

/// `CNI_ARGS`: `K=V;K2=V2`.
pub fn parse_cni_args(s: &str) -> Result<BTreeMap<String, String>, CniError> {
    let mut out = BTreeMap::new();
    for pair in s.split(';').filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| CniError::invalid_env(format!("CNI_ARGS: {pair:?} is not KEY=VALUE")))?;
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------------
// Network configuration

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty() && self.domain.is_none() && self.search.is_empty() && self.options.is_empty()
    }
}

/// Which ENI a configuration asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceSelector {
    Eni(EniId),
    Pci(PciAddress),
    Ifname(IfName),
    Mac(MacAddr),
    /// Any free ENI of this pool, from the node state.
    Pool(String),
}

impl fmt::Display for DeviceSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSelector::Eni(e) => write!(f, "ENI {e}"),
            DeviceSelector::Pci(p) => write!(f, "PCI device {p}"),
            DeviceSelector::Ifname(n) => write!(f, "device {n}"),
            DeviceSelector::Mac(m) => write!(f, "MAC {m}"),
            DeviceSelector::Pool(p) => write!(f, "a free ENI of pool {p}"),
        }
    }
}

/// Which key named the device. Only the runtime's `runtimeConfig.deviceID` and Multus' `deviceID` /
/// `pciBusID` can carry the kubelet's allocation; the plugin decides what each may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSource {
    /// `runtimeConfig.deviceID`, from the `deviceID` capability: what the kubelet allocated.
    RuntimeConfig,
    /// Top-level `deviceID` (Multus writes it from the pod's allocation; a config may also hold one).
    DeviceId,
    /// Top-level `pciBusID`.
    PciBusId,
    /// `device`: a host ifname.
    Device,
    /// `mac`.
    Mac,
    /// `pool`.
    Pool,
}

impl DeviceSource {
    /// The configuration key, for messages.
    pub fn key(self) -> &'static str {
        match self {
            DeviceSource::RuntimeConfig => "runtimeConfig.deviceID",
            DeviceSource::DeviceId => "deviceID",
            DeviceSource::PciBusId => "pciBusID",
            DeviceSource::Device => "device",
            DeviceSource::Mac => "mac",
            DeviceSource::Pool => "pool",
        }
    }
}

/// How the plugin hands the device over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HandOver {
    Kernel,
    Dpdk,
}

pub const DEFAULT_STATE_DIR: &str = "/var/lib/nodeeni";
pub const DEFAULT_SYSFS_ROOT: &str = "/sys";
pub const DEFAULT_LOCK_TIMEOUT_SECS: u64 = 30;

/// The `nodeeni` plugin's network configuration, as a runtime passes it on stdin.
#[derive(Debug, Clone)]
pub struct NetConf {
    pub cni_version: CniVersion,
    /// The version string exactly as given, echoed in results and errors.
    pub cni_version_str: String,
    pub name: String,
    pub plugin_type: String,
    pub device: Option<DeviceSelector>,
    /// Which key `device` came from.
    pub device_source: Option<DeviceSource>,
    /// Multus' `pciBusID`, kept to fill the result's `pciID`.
    pub pci_bus_id: Option<PciAddress>,
    pub mode: Option<HandOver>,
    pub dpdk_driver: Option<String>,
    pub mtu: Option<u32>,
    /// The IPAM section, passed verbatim to the delegate named by its `type`.
    pub ipam: Option<Value>,
    pub ipam_type: Option<String>,
    pub dns: Dns,
    /// The chain's result so far, parsed (of any supported version).
    pub prev_result: Option<CniResult>,
    /// Node-level paths as the config gave them (`logFile`, `stateDir`, `sysfsRoot`): used only where
    /// no node file says otherwise (see [`NodeSettings::resolve`]).
    pub log_file: Option<PathBuf>,
    pub log_level: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub lock_timeout_secs: u64,
    pub sysfs_root: Option<PathBuf>,
    /// GC: `cni.dev/valid-attachments`, the attachments the runtime still uses.
    pub valid_attachments: Option<Vec<Attachment>>,
    /// `args` (conventionally `{"cni": {...}}`), passed through untouched.
    pub args: Option<Map<String, Value>>,
    /// Capabilities the config declares (`{"deviceID": true}`); the runtime answers in runtimeConfig.
    pub capabilities: BTreeMap<String, bool>,
    /// What the runtime filled in for those capabilities.
    pub runtime_config: Option<Map<String, Value>>,
    /// The whole document, for delegating to IPAM with everything the runtime sent.
    pub raw: Value,
}

/// One attachment as GC lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

fn decode_err(e: impl fmt::Display) -> CniError {
    CniError::new(codes::DECODE_FAILURE, format!("cannot decode the network configuration: {e}"), "")
}

fn field_err(field: &str, e: impl fmt::Display) -> CniError {
    CniError::new(codes::INVALID_CONFIG, format!("{field}: {e}"), "")
}

fn opt_str<'a>(m: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, CniError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(field_err(key, "must be a string")),
    }
}

/// Parses a device ID as Multus and kubelet pass it: an ENI ID or a PCI address.
pub fn parse_device_id(s: &str, field: &str) -> Result<DeviceSelector, CniError> {
    if s.starts_with(EniId::PREFIX) {
        return s.parse::<EniId>().map(DeviceSelector::Eni).map_err(|e| field_err(field, e));
    }
    s.parse::<PciAddress>()
        .map(DeviceSelector::Pci)
        .map_err(|e| field_err(field, format!("neither an ENI ID nor a PCI address: {e}")))
}

impl NetConf {
    /// Parses stdin. Decode failures are code 6, unknown versions 1, bad fields 7; each names the field.
    pub fn parse(bytes: &[u8]) -> Result<Self, CniError> {
        let raw: Value = serde_json::from_slice(bytes).map_err(decode_err)?;
        let Value::Object(m) = &raw else {
            return Err(decode_err("expected a JSON object"));
        };
        let cni_version_str = opt_str(m, "cniVersion")?.ok_or_else(|| field_err("cniVersion", "required"))?.to_string();
        let cni_version: CniVersion = cni_version_str.parse()?;
        let name = opt_str(m, "name")?.ok_or_else(|| field_err("name", "required"))?.to_string();
        let plugin_type = opt_str(m, "type")?.ok_or_else(|| field_err("type", "required"))?.to_string();

        // Which device: the runtime's capability first, then Multus' top-level keys, then ours.
        let runtime_config = match m.get("runtimeConfig") {
            None | Some(Value::Null) => None,
            Some(Value::Object(rc)) => Some(rc),
            Some(_) => return Err(field_err("runtimeConfig", "must be an object")),
        };
        let rc_device = match runtime_config {
            Some(rc) => opt_str(rc, "deviceID").map_err(|_| field_err("runtimeConfig.deviceID", "must be a string"))?,
            None => None,
        };
        let pci_bus_id = opt_str(m, "pciBusID")?
            .map(|s| s.parse::<PciAddress>().map_err(|e| field_err("pciBusID", e)))
            .transpose()?;
        let (device, device_source) = if let Some(id) = rc_device {
            (Some(parse_device_id(id, "runtimeConfig.deviceID")?), Some(DeviceSource::RuntimeConfig))
        } else if let Some(id) = opt_str(m, "deviceID")? {
            (Some(parse_device_id(id, "deviceID")?), Some(DeviceSource::DeviceId))
        } else if let Some(p) = pci_bus_id {
            (Some(DeviceSelector::Pci(p)), Some(DeviceSource::PciBusId))
        } else if let Some(d) = opt_str(m, "device")? {
            (Some(DeviceSelector::Ifname(d.parse().map_err(|e| field_err("device", e))?)), Some(DeviceSource::Device))
        } else if let Some(mac) = opt_str(m, "mac")? {
            (Some(DeviceSelector::Mac(mac.parse().map_err(|e| field_err("mac", e))?)), Some(DeviceSource::Mac))
        } else {
            match opt_str(m, "pool")? {
                Some(p) => (Some(DeviceSelector::Pool(p.to_string())), Some(DeviceSource::Pool)),
                None => (None, None),
            }
        };

        let mode = match opt_str(m, "mode")? {
            None => None,
            Some("kernel") => Some(HandOver::Kernel),
            Some("dpdk") => Some(HandOver::Dpdk),
            Some(other) => return Err(field_err("mode", format!("{other:?} is not kernel or dpdk"))),
        };
        let dpdk_driver = opt_str(m, "dpdkDriver")?.map(str::to_string);
        if let Some(d) = &dpdk_driver
            && d.parse::<crate::pool::DpdkDriver>().is_err()
        {
            return Err(field_err("dpdkDriver", format!("{d:?} is not vfio-pci, igb_uio or uio_pci_generic")));
        }
        let mtu = match m.get("mtu") {
            None | Some(Value::Null) => None,
            Some(v) => {
                let n = v.as_u64().ok_or_else(|| field_err("mtu", "must be a positive integer"))?;
                if !(68..=65535).contains(&n) {
                    return Err(field_err("mtu", format!("{n} is out of range 68..=65535")));
                }
                Some(n as u32)
            }
        };
        let (ipam, ipam_type) = match m.get("ipam") {
            None | Some(Value::Null) => (None, None),
            Some(Value::Object(i)) if i.is_empty() => (None, None),
            Some(Value::Object(i)) => {
                let t = opt_str(i, "type").map_err(|_| field_err("ipam.type", "must be a string"))?;
                let t = t.ok_or_else(|| field_err("ipam.type", "required when ipam is given"))?;
                if t.contains('/') || t == "." || t == ".." {
                    return Err(field_err("ipam.type", format!("{t:?} is not a plugin name")));
                }
                (Some(Value::Object(i.clone())), Some(t.to_string()))
            }
            Some(_) => return Err(field_err("ipam", "must be an object")),
        };
        let dns = match m.get("dns") {
            None | Some(Value::Null) => Dns::default(),
            Some(v) => serde_json::from_value(v.clone()).map_err(|e| field_err("dns", e))?,
        };
        let prev_result = m
            .get("prevResult")
            .filter(|v| !v.is_null())
            .map(|pr| CniResult::parse(pr).map_err(|e| field_err("prevResult", e.msg)))
            .transpose()?;
        let lock_timeout_secs = match m.get("lockTimeoutSeconds") {
            None | Some(Value::Null) => DEFAULT_LOCK_TIMEOUT_SECS,
            Some(v) => v
                .as_u64()
                .filter(|n| (1..=600).contains(n))
                .ok_or_else(|| field_err("lockTimeoutSeconds", "must be an integer in 1..=600"))?,
        };
        let args = match m.get("args") {
            None | Some(Value::Null) => None,
            Some(Value::Object(a)) => Some(a.clone()),
            Some(_) => return Err(field_err("args", "must be an object")),
        };
        let capabilities = match m.get("capabilities") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(v) => serde_json::from_value(v.clone())
                .map_err(|e| field_err("capabilities", format!("must map names to booleans: {e}")))?,
        };
        let valid_attachments = match m.get("cni.dev/valid-attachments") {
            None | Some(Value::Null) => None,
            Some(v) => Some(serde_json::from_value(v.clone()).map_err(|e| field_err("cni.dev/valid-attachments", e))?),
        };
        Ok(Self {
            cni_version,
            cni_version_str,
            name,
            plugin_type,
            device,
            device_source,
            pci_bus_id,
            mode,
            dpdk_driver,
            mtu,
            ipam,
            ipam_type,
            dns,
            prev_result,
            log_file: opt_str(m, "logFile")?.map(PathBuf::from),
            log_level: opt_str(m, "logLevel")?.map(str::to_string),
            state_dir: opt_str(m, "stateDir")?.map(PathBuf::from),
            lock_timeout_secs,
            sysfs_root: opt_str(m, "sysfsRoot")?.map(PathBuf::from),
            valid_attachments,
            args,
            capabilities,
            runtime_config: runtime_config.cloned(),
            raw,
        })
    }
}

// ---------------------------------------------------------------------------------------------------
// The node file

/// The node file: node-level settings of the plugin, written by root (the daemon's `install-cni`),
/// never by a network config. Its path is this constant unless [`NODE_FILE_ENV`] names another.
pub const NODE_FILE: &str = "/etc/nodeeni/node.json";
/// The environment variable that moves the node file (runtimes set the plugin's environment; network
/// configs cannot).
pub const NODE_FILE_ENV: &str = "NODEENI_NODE_FILE";
/// The kubelet's device-manager checkpoint: which pod the kubelet gave each device.
pub const DEFAULT_KUBELET_CHECKPOINT: &str = "/var/lib/kubelet/device-plugins/kubelet_internal_checkpoint";
/// The CNI's log file on a node where the daemon runs (what `install-cni` writes, and what the shipped
/// network attachments name).
pub const DEFAULT_LOG_FILE: &str = "/var/log/nodeeni-cni.log";

fn default_state_dir() -> PathBuf {
    PathBuf::from(DEFAULT_STATE_DIR)
}

fn default_sysfs_root() -> PathBuf {
    PathBuf::from(DEFAULT_SYSFS_ROOT)
}

fn default_checkpoint() -> PathBuf {
    PathBuf::from(DEFAULT_KUBELET_CHECKPOINT)
}

/// The node file's content. Unknown keys are errors; every path must be absolute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeFile {
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    #[serde(default = "default_sysfs_root")]
    pub sysfs_root: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_file: Option<PathBuf>,
    /// Network configs may set `stateDir`, `sysfsRoot` and `logFile` (false: refused, unless equal to
    /// this file's).
    #[serde(default)]
    pub allow_netconf_paths: bool,
    /// Devices the node state does not know (`device`, `mac`, a PCI address) may be handed out.
    #[serde(default)]
    pub allow_standalone_devices: bool,
    /// DPDK mode may bind network devices of other vendors than ENA (0x1d0f).
    #[serde(default)]
    pub allow_non_ena_dpdk: bool,
    #[serde(default = "default_checkpoint")]
    pub kubelet_checkpoint: PathBuf,
}

impl Default for NodeFile {
    /// The defaults of every key: the daemon's paths, nothing left to network configs, no log file.
    fn default() -> Self {
        Self {
            state_dir: default_state_dir(),
            sysfs_root: default_sysfs_root(),
            log_file: None,
            allow_netconf_paths: false,
            allow_standalone_devices: false,
            allow_non_ena_dpdk: false,
            kubelet_checkpoint: default_checkpoint(),
        }
    }
}

impl NodeFile {
    /// What `install-cni` writes on a node whose daemon keeps its state in `state_dir`: the defaults,
    /// with the CNI's log at [`DEFAULT_LOG_FILE`].
    pub fn installed(state_dir: PathBuf) -> Self {
        Self { state_dir, log_file: Some(PathBuf::from(DEFAULT_LOG_FILE)), ..Self::default() }
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let file: NodeFile = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        for (key, path) in [
            ("stateDir", Some(&file.state_dir)),
            ("sysfsRoot", Some(&file.sysfs_root)),
            ("logFile", file.log_file.as_ref()),
            ("kubeletCheckpoint", Some(&file.kubelet_checkpoint)),
        ] {
            if let Some(p) = path
                && !p.is_absolute()
            {
                return Err(format!("{key}: {} is not an absolute path", p.display()));
            }
        }
        Ok(file)
    }
}

/// Where a call's node-level settings come from.
#[derive(Debug, Clone, Copy)]
pub enum NodeSource<'a> {
    /// The node file at this path.
    File(&'a Path, &'a NodeFile),
    /// No node file, but the daemon's node state is at this path (in the default state folder): the
    /// daemon runs here and `install-cni` has not written the node file (yet, or it was removed). What
    /// it would write for that folder holds ([`NodeFile::installed`]): nothing from network configs,
    /// no standalone devices. Fail closed, not open.
    DaemonState(&'a Path),
    /// Neither: standalone use on a host without the daemon, where the config's keys apply.
    Standalone,
}

/// The plugin's node-level settings for one call: the node file's, or, on a host without one
/// (standalone use, no daemon), the network config's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSettings {
    pub state_dir: PathBuf,
    pub sysfs_root: PathBuf,
    pub log_file: Option<PathBuf>,
    pub allow_standalone_devices: bool,
    pub allow_non_ena_dpdk: bool,
    pub kubelet_checkpoint: PathBuf,
    /// The node file these came from, if any.
    pub node_file: Option<PathBuf>,
    /// The daemon's node state that made the node file's defaults apply without a node file.
    pub daemon_state: Option<PathBuf>,
    /// What the plugin should log as a warning once its log is open: keys of the config it ignored
    /// (DEL, GC, STATUS), defaults applied for want of a node file.
    pub warnings: Vec<String>,
}

impl NodeSettings {
    /// [`NodeSettings::resolve_for`] an ADD (or CHECK): the strict reading.
    pub fn resolve(node: Option<(&Path, &NodeFile)>, conf: &NetConf) -> Result<Self, CniError> {
        let source = node.map_or(NodeSource::Standalone, |(path, file)| NodeSource::File(path, file));
        Self::resolve_for(source, conf, Command::Add)
    }

    /// Settings from `source` and the config for `command`. Where the node file (or, without one, the
    /// daemon's defaults) does not allow them, the config's `stateDir`, `sysfsRoot` and `logFile` are
    /// refused (code 7) on ADD and CHECK unless they say what the node file says. DEL, GC and STATUS
    /// ignore them instead, with a warning, and use the node file's: they must never fail forever on a
    /// config written before the node file existed (it would keep a pod from being torn down).
    pub fn resolve_for(source: NodeSource<'_>, conf: &NetConf, command: Command) -> Result<Self, CniError> {
        let installed;
        let (file, whose) = match source {
            NodeSource::Standalone => {
                return Ok(Self {
                    state_dir: conf.state_dir.clone().unwrap_or_else(default_state_dir),
                    sysfs_root: conf.sysfs_root.clone().unwrap_or_else(default_sysfs_root),
                    log_file: conf.log_file.clone(),
                    allow_standalone_devices: true,
                    allow_non_ena_dpdk: false,
                    kubelet_checkpoint: default_checkpoint(),
                    node_file: None,
                    daemon_state: None,
                    warnings: Vec::new(),
                });
            }
            NodeSource::File(path, file) => (file, format!("the node file {}", path.display())),
            NodeSource::DaemonState(state) => {
                let folder = state.parent().map_or_else(default_state_dir, Path::to_path_buf);
                installed = NodeFile::installed(folder);
                let whose = format!(
                    "the node file's defaults (there is no node file, but the nodeeni daemon's node state {} says the \
                     daemon runs here; `nodeeni-device-plugin install-cni` writes the file)",
                    state.display()
                );
                (&installed, whose)
            }
        };
        let mut warnings = Vec::new();
        if let NodeSource::DaemonState(_) = source {
            warnings.push(format!("node settings are {whose}"));
        }
        let lenient = matches!(command, Command::Del | Command::Gc | Command::Status);
        let netconf = file.allow_netconf_paths;
        if !netconf {
            for (key, given, node) in [
                ("stateDir", conf.state_dir.as_ref(), Some(&file.state_dir)),
                ("sysfsRoot", conf.sysfs_root.as_ref(), Some(&file.sysfs_root)),
                ("logFile", conf.log_file.as_ref(), file.log_file.as_ref()),
            ] {
                let Some(given) = given.filter(|g| Some(*g) != node) else { continue };
                if lenient {
                    let used = node.map_or_else(|| "none".to_string(), |n| n.display().to_string());
                    warnings.push(format!(
                        "{key} {} of the network config is ignored: on this node it is set by {whose} ({used}); \
                         remove the key from the config",
                        given.display()
                    ));
                    continue;
                }
                return Err(field_err(
                    key,
                    format!(
                        "{} is not allowed here: on this node it is set by {whose}, not by network configs; remove the \
                         key",
                        given.display()
                    ),
                ));
            }
        }
        let or = |given: &Option<PathBuf>, node: &PathBuf| given.clone().unwrap_or_else(|| node.clone());
        Ok(Self {
            state_dir: if netconf { or(&conf.state_dir, &file.state_dir) } else { file.state_dir.clone() },
            sysfs_root: if netconf { or(&conf.sysfs_root, &file.sysfs_root) } else { file.sysfs_root.clone() },
            log_file: if netconf {
                conf.log_file.clone().or_else(|| file.log_file.clone())
            } else {
                file.log_file.clone()
            },
            allow_standalone_devices: file.allow_standalone_devices,
            allow_non_ena_dpdk: file.allow_non_ena_dpdk,
            kubelet_checkpoint: file.kubelet_checkpoint.clone(),
            node_file: match source {
                NodeSource::File(path, _) => Some(path.to_path_buf()),
                _ => None,
            },
            daemon_state: match source {
                NodeSource::DaemonState(state) => Some(state.to_path_buf()),
                _ => None,
            },
            warnings,
        })
    }
}

/// A configuration list (`.conflist`), as runtimes read from their config folder.
#[derive(Debug, Clone)]
pub struct NetConfList {
    pub cni_version: CniVersion,
    pub name: String,
    pub disable_check: bool,
    pub disable_gc: bool,
    pub plugins: Vec<Value>,
}

impl NetConfList {
    pub fn parse(bytes: &[u8]) -> Result<Self, CniError> {
        let raw: Value = serde_json::from_slice(bytes).map_err(decode_err)?;
        let Value::Object(m) = &raw else {
            return Err(decode_err("expected a JSON object"));
        };
        let cni_version: CniVersion =
            opt_str(m, "cniVersion")?.ok_or_else(|| field_err("cniVersion", "required"))?.parse()?;
        let name = opt_str(m, "name")?.ok_or_else(|| field_err("name", "required"))?.to_string();
        let flag = |k: &str| match m.get(k) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(field_err(k, "must be a boolean")),
        };
        let plugins = match m.get("plugins") {
            Some(Value::Array(p)) if !p.is_empty() => p.clone(),
            Some(Value::Array(_)) => return Err(field_err("plugins", "must not be empty")),
            _ => return Err(field_err("plugins", "required: a list of plugin configurations")),
        };
        for (i, p) in plugins.iter().enumerate() {
            if p.get("type").and_then(Value::as_str).is_none_or(str::is_empty) {
                return Err(field_err(&format!("plugins[{i}].type"), "required"));
            }
        }
        Ok(Self { cni_version, name, disable_check: flag("disableCheck")?, disable_gc: flag("disableGC")?, plugins })
    }
}

// ---------------------------------------------------------------------------------------------------
// Results

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    #[serde(default, rename = "socketPath", skip_serializing_if = "Option::is_none")]
    pub socket_path: Option<String>,
    #[serde(default, rename = "pciID", skip_serializing_if = "Option::is_none")]
    pub pci_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    pub address: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advmss: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u32>,
}

impl Route {
    pub fn new(dst: IpNet, gw: Option<IpAddr>) -> Self {
        Self { dst, gw, mtu: None, advmss: None, priority: None, table: None, scope: None }
    }
}

/// A result in the 1.1.0 shape; [`CniResult::to_json`] writes any supported version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniResult {
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    #[serde(default)]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub dns: Dns,
}

impl CniResult {
    /// Reads a result of any supported version (a prevResult, or a delegate IPAM plugin's answer).
    pub fn parse(v: &Value) -> Result<Self, CniError> {
        let Value::Object(m) = v else {
            return Err(CniError::new(codes::DECODE_FAILURE, "a result must be a JSON object", ""));
        };
        if let Some(ver) = m.get("cniVersion").and_then(Value::as_str) {
            ver.parse::<CniVersion>()?;
        }
        // 0.3.x/0.4.0 mark each IP with "version"; it says nothing the address does not.
        let mut m = m.clone();
        if let Some(Value::Array(ips)) = m.get_mut("ips") {
            for ip in ips.iter_mut() {
                if let Value::Object(o) = ip {
                    o.remove("version");
                }
            }
        }
        m.remove("cniVersion");
        serde_json::from_value(Value::Object(m))
            .map_err(|e| CniError::new(codes::DECODE_FAILURE, format!("cannot decode a result: {e}"), ""))
    }

    /// Writes the result in `version`: older versions lose the fields they do not define, 0.x adds
    /// each IP's `version`.
    pub fn to_json(&self, version: &str) -> Value {
        let v = version.parse::<CniVersion>().unwrap_or(CniVersion::LATEST);
        let interfaces: Vec<Value> = self
            .interfaces
            .iter()
            .map(|i| {
                let mut i = i.clone();
                if v < CniVersion::V1_1_0 {
                    i.mtu = None;
                    i.pci_id = None;
                    i.socket_path = None;
                }
                serde_json::to_value(i).unwrap_or(Value::Null)
            })
            .collect();
        let ips: Vec<Value> = self
            .ips
            .iter()
            .map(|ip| {
                let mut o = serde_json::to_value(ip).unwrap_or(Value::Null);
                if v < CniVersion::V1_0_0 {
                    o["version"] = Value::String(if ip.address.is_ipv4() { "4" } else { "6" }.into());
                }
                o
            })
            .collect();
        let routes: Vec<Value> = self
            .routes
            .iter()
            .map(|r| {
                let mut r = r.clone();
                if v < CniVersion::V1_1_0 {
                    (r.mtu, r.advmss, r.priority, r.table, r.scope) = (None, None, None, None, None);
                }
                serde_json::to_value(r).unwrap_or(Value::Null)
            })
            .collect();
        let mut out = json!({ "cniVersion": version });
        if !interfaces.is_empty() {
            out["interfaces"] = Value::Array(interfaces);
        }
        if !ips.is_empty() {
            out["ips"] = Value::Array(ips);
        }
        if !routes.is_empty() {
            out["routes"] = Value::Array(routes);
        }
        if !self.dns.is_empty() {
            out["dns"] = serde_json::to_value(&self.dns).unwrap_or(Value::Null);
        }
        out
    }
}
