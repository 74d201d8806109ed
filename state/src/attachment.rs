//! What one CNI ADD did, per (container, ifname): written before the first change to the host and
//! updated as ADD goes, so DEL can undo it exactly even when the daemon is down, the prevResult is
//! missing, or ADD itself was killed halfway.

use std::path::{Path, PathBuf};

use nodeeni_conf::cni::{CniResult, ContainerId, HandOver};
use nodeeni_conf::net::IpNet;
use nodeeni_conf::pool::DpdkDriver;
use nodeeni_conf::{DriverName, EniId, MacAddr, PciAddress};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::atomic::{Durability, replace};

#[derive(Debug, thiserror::Error)]
pub enum AttachmentError {
    #[error("attachment record {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("attachment record {path} is corrupt: {source}")]
    Corrupt { path: PathBuf, source: serde_json::Error },
}

/// The netdev as it was on the host before ADD touched it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostLinkState {
    pub name: String,
    pub mtu: u32,
    pub up: bool,
    #[serde(default)]
    pub addresses: Vec<IpNet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// The link's ifindex when ADD took it: it keeps it in the pod, and no link a pod makes can have
    /// it while the ENI does, so it tells the ENI from a look-alike where no hardware identity does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifindex: Option<u32>,
}

/// How far ADD got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Phase {
    /// ADD started changing things; DEL must assume any step may have happened.
    Adding,
    /// ADD finished and returned its result.
    Added,
}

/// DPDK mode: which kernel driver the PCI device had before ADD bound it, to rebind at DEL.
///
/// On disk (`driverBefore`), as records have always had it: absent when not captured, `null` when the
/// device had no driver, the driver's name otherwise. DEL makes that name a sysfs path
/// (`bus/pci/drivers/<name>/bind`), so a record whose name is not a safe [`DriverName`] (`../../x`)
/// does not read: it is corrupt, and nothing is written anywhere from it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum DriverBefore {
    /// Not captured (kernel mode, or ADD stopped before looking): DEL leaves the driver alone.
    #[default]
    NotCaptured,
    /// The device had no driver: DEL unbinds it again.
    Unbound,
    /// The device was bound to this driver (`ena`, or a DPDK driver a pool had bound it to).
    Bound(DriverName),
}

impl DriverBefore {
    pub fn is_not_captured(&self) -> bool {
        matches!(self, DriverBefore::NotCaptured)
    }

    /// The driver to restore, when captured: `Some(None)` for an unbound device.
    pub fn captured(&self) -> Option<Option<&DriverName>> {
        match self {
            DriverBefore::NotCaptured => None,
            DriverBefore::Unbound => Some(None),
            DriverBefore::Bound(d) => Some(Some(d)),
        }
    }
}

impl From<Option<DriverName>> for DriverBefore {
    /// A captured driver link: `None` is a device without a driver.
    fn from(driver: Option<DriverName>) -> Self {
        driver.map_or(DriverBefore::Unbound, DriverBefore::Bound)
    }
}

impl Serialize for DriverBefore {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.captured() {
            Some(driver) => driver.serialize(s),
            // The record leaves the field out instead (it would read back as Unbound).
            None => Err(serde::ser::Error::custom("a driver that was not captured is left out, not written")),
        }
    }
}

impl<'de> Deserialize<'de> for DriverBefore {
    /// Called only for a present field (an absent one is `NotCaptured` by default): `null` is an
    /// unbound device. (The `Option<Option<String>>` this replaces read that `null` back as "not
    /// captured", so DEL never unbound such a device; this reads it as it was meant.)
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Option::<DriverName>::deserialize(d).map(DriverBefore::from)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachmentRecord {
    pub container_id: ContainerId,
    pub ifname: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    pub network: String,
    pub mode: HandOver,
    pub phase: Phase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eni_id: Option<EniId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci: Option<PciAddress>,
    /// Kernel mode: the netdev before the move.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<HostLinkState>,
    /// DPDK mode: the DPDK driver ADD binds the device to (absent in records written before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpdk_driver: Option<DpdkDriver>,
    /// DPDK mode: the driver before the bind.
    #[serde(default, skip_serializing_if = "DriverBefore::is_not_captured")]
    pub driver_before: DriverBefore,
    /// DPDK mode: the device's netdevs before the bind (DEL waits for them to return).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub netdevs_before: Vec<String>,
    /// The delegated IPAM plugin, if ADD called one (DEL must call it too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipam_type: Option<String>,
    /// The ENI was claimed from the node state's pool and must be released.
    #[serde(default)]
    pub claimed_from_pool: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<CniResult>,
    pub created_unix: u64,
    /// The network's configuration as ADD got it, less what a runtime sets per call (the CNI's
    /// `commands::network_config`): GC undoes only records of a network configured exactly like the
    /// one it is called for, since network names repeat (one per namespace's
    /// NetworkAttachmentDefinition). Absent in records written before it was kept: GC leaves those.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_config: Option<serde_json::Value>,
}

/// Attachment records in `<state_dir>/attachments`, one file per (container, ifname). Each file
/// carries the boot it was written in (`bootId`, beside the record's fields): a record of an earlier
/// boot describes a pod namespace that died with that boot, and undoing it now would disturb the ENI
/// as this boot's daemon prepared it, so such a record is dropped when it is next read.
#[derive(Debug, Clone)]
pub struct AttachmentStore {
    dir: PathBuf,
    /// This boot's ID; None where the kernel does not say (then no record is taken for stale).
    boot: Option<String>,
}

const BOOT_KEY: &str = "bootId";

impl AttachmentStore {
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        let boot = std::fs::read_to_string(crate::node::BOOT_ID_PATH)
            .ok()
            .map(|b| b.trim().to_string())
            .filter(|b| !b.is_empty());
        Self { dir: state_dir.into().join("attachments"), boot }
    }

    /// The same store as if the node were in boot `boot` (tests).
    pub fn with_boot_id(mut self, boot: Option<String>) -> Self {
        self.boot = boot;
        self
    }

    /// The record in `bytes`, or None when it was written in another boot (then the file goes).
    fn read_record(&self, path: &Path, bytes: &[u8]) -> Result<Option<AttachmentRecord>, AttachmentError> {
        let corrupt = |source| AttachmentError::Corrupt { path: path.to_path_buf(), source };
        let mut value: serde_json::Value = serde_json::from_slice(bytes).map_err(corrupt)?;
        let written_in = value.as_object_mut().and_then(|o| o.remove(BOOT_KEY));
        let record: AttachmentRecord = serde_json::from_value(value).map_err(corrupt)?;
        if let (Some(serde_json::Value::String(then)), Some(now)) = (&written_in, &self.boot)
            && then != now
        {
            tracing::info!(path = %path.display(), boot = then, "attachment record of an earlier boot: its pod is gone; dropped");
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(AttachmentError::Io { path: path.to_path_buf(), source }),
            }
            return Ok(None);
        }
        Ok(Some(record))
    }

    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// `<container>@<ifname>.json`: container IDs never hold `@` or `/`, so the pair maps to one name.
    pub fn path(&self, container_id: &ContainerId, ifname: &str) -> PathBuf {
        self.dir.join(format!("{container_id}@{ifname}.json"))
    }

    pub fn load(&self, container_id: &ContainerId, ifname: &str) -> Result<Option<AttachmentRecord>, AttachmentError> {
        let path = self.path(container_id, ifname);
        match std::fs::read(&path) {
            Ok(b) => self.read_record(&path, &b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(AttachmentError::Io { path, source }),
        }
    }

    pub fn save(&self, record: &AttachmentRecord) -> Result<(), AttachmentError> {
        let io = |path: &PathBuf, source| AttachmentError::Io { path: path.clone(), source };
        std::fs::create_dir_all(&self.dir).map_err(|e| io(&self.dir, e))?;
        let path = self.path(&record.container_id, &record.ifname);
        let corrupt = |source| AttachmentError::Corrupt { path: path.clone(), source };
        let mut value = serde_json::to_value(record).map_err(corrupt)?;
        if let (Some(o), Some(boot)) = (value.as_object_mut(), &self.boot) {
            o.insert(BOOT_KEY.into(), serde_json::Value::String(boot.clone()));
        }
        let bytes = serde_json::to_vec_pretty(&value).map_err(corrupt)?;
        // Durable: after a power loss the record must be whole (or the old one), never torn.
        replace(&path, &bytes, Durability::PowerLoss).map_err(|e| io(&path, e))
    }

    pub fn remove(&self, container_id: &ContainerId, ifname: &str) -> Result<(), AttachmentError> {
        let path = self.path(container_id, ifname);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(AttachmentError::Io { path, source }),
        }
    }

    /// Every record (unreadable files are reported, not skipped silently).
    /// Every record. One that cannot be read as a record is quarantined — renamed aside to
    /// `<name>.corrupt-<unix time>`, logged — so a single torn or forged file cannot fail every ADD
    /// and GC of the node; [`Self::quarantined`] counts them.
    pub fn list(&self) -> Result<Vec<AttachmentRecord>, AttachmentError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(AttachmentError::Io { path: self.dir.clone(), source }),
        };
        let mut out = Vec::new();
        for entry in entries.filter_map(|e| e.ok()) {
            let path = entry.path();
            if path.extension().is_none_or(|x| x != "json") || entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let bytes = std::fs::read(&path).map_err(|source| AttachmentError::Io { path: path.clone(), source })?;
            match self.read_record(&path, &bytes) {
                Ok(Some(record)) => out.push(record),
                Ok(None) => {}
                Err(AttachmentError::Corrupt { source: error, .. }) => {
                    let aside = path.with_extension(format!("json.corrupt-{}", crate::node::now_unix()));
                    match std::fs::rename(&path, &aside) {
                        Ok(()) => {
                            tracing::error!(path = %path.display(), aside = %aside.display(), %error, "attachment record unreadable; quarantined")
                        }
                        Err(e) => return Err(AttachmentError::Io { path, source: e }),
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// How many records were quarantined as unreadable.
    pub fn quarantined(&self) -> usize {
        std::fs::read_dir(&self.dir)
            .map(|d| {
                d.filter_map(|e| e.ok()).filter(|e| e.file_name().to_string_lossy().contains(".json.corrupt-")).count()
            })
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(c: &str) -> ContainerId {
        c.parse().expect("container id")
    }

    fn driver(d: &str) -> DriverName {
        d.parse().expect("driver name")
    }

    fn record(c: &str, i: &str) -> AttachmentRecord {
        AttachmentRecord {
            container_id: id(c),
            ifname: i.into(),
            netns: Some("/run/netns/x".into()),
            network: "net".into(),
            mode: HandOver::Kernel,
            phase: Phase::Adding,
            eni_id: None,
            mac: Some("0a:00:00:00:00:01".parse().expect("mac")),
            pci: None,
            host: Some(HostLinkState {
                name: "eth1".into(),
                mtu: 1500,
                up: false,
                addresses: vec![],
                alias: None,
                ifindex: None,
            }),
            dpdk_driver: None,
            driver_before: DriverBefore::NotCaptured,
            netdevs_before: vec![],
            ipam_type: None,
            claimed_from_pool: false,
            result: None,
            created_unix: 1,
            network_config: None,
        }
    }

    #[test]
    fn records_round_trip_and_pairs_never_collide() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = AttachmentStore::new(dir.path());
        let a = record("a.b", "c");
        let b = record("a", "b.c");
        store.save(&a).expect("save a");
        store.save(&b).expect("save b");
        assert_eq!(store.load(&id("a.b"), "c").expect("load"), Some(a));
        assert_eq!(store.load(&id("a"), "b.c").expect("load"), Some(b));
        assert_eq!(store.list().expect("list").len(), 2);
        store.remove(&id("a"), "b.c").expect("remove");
        store.remove(&id("a"), "b.c").expect("removing twice is fine");
        assert_eq!(store.load(&id("a"), "b.c").expect("load"), None);
        assert_eq!(store.list().expect("list").len(), 1);
    }

    #[test]
    fn a_corrupt_record_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = AttachmentStore::new(dir.path());
        std::fs::create_dir_all(store.dir()).expect("mkdir");
        std::fs::write(store.path(&id("c"), "net1"), b"nope").expect("write");
        let err = store.load(&id("c"), "net1").expect_err("corrupt");
        assert!(err.to_string().contains("c@net1.json"), "{err}");
    }

    /// Records exactly as the build before the newtypes wrote them (`driverBefore` an
    /// `Option<Option<String>>`, `containerId` a plain string, no `dpdkDriver`).
    const OLD_KERNEL: &str = r#"{
  "containerId": "3f1c2a9e8b7d",
  "ifname": "net1",
  "netns": "/var/run/netns/cni-1234",
  "network": "fast",
  "mode": "kernel",
  "phase": "added",
  "eniId": "eni-0000000000000abc1",
  "mac": "0a:00:00:00:00:11",
  "host": {"name": "eth1", "mtu": 9001, "up": true, "addresses": ["192.0.2.5/24"], "alias": "uplink"},
  "ipamType": "host-local",
  "claimedFromPool": true,
  "result": {"interfaces": [{"name": "net1", "mac": "0a:00:00:00:00:11", "sandbox": "/var/run/netns/cni-1234"}],
             "ips": [{"address": "10.0.1.50/24", "gateway": "10.0.1.1", "interface": 0}],
             "routes": [], "dns": {}},
  "createdUnix": 1764000000
}"#;
    const OLD_DPDK_FROM_ENA: &str = r#"{"containerId": "c1", "ifname": "dpdk0", "network": "dp", "mode": "dpdk",
        "phase": "adding", "pci": "0000:00:06.0", "driverBefore": "ena", "netdevsBefore": ["eth1"],
        "claimedFromPool": false, "createdUnix": 7}"#;
    const OLD_DPDK_UNBOUND: &str = r#"{"containerId": "c2", "ifname": "dpdk0", "network": "dp", "mode": "dpdk",
        "phase": "added", "pci": "0000:00:07.0", "driverBefore": null, "claimedFromPool": false, "createdUnix": 8}"#;
    const OLD_DPDK_BEFORE_CAPTURE: &str = r#"{"containerId": "c3", "ifname": "dpdk0", "network": "dp",
        "mode": "dpdk", "phase": "adding", "pci": "0000:00:08.0", "claimedFromPool": false, "createdUnix": 9}"#;

    #[test]
    fn records_in_the_old_format_still_read_and_write_back_the_same() {
        let kernel: AttachmentRecord = serde_json::from_str(OLD_KERNEL).expect("old kernel record");
        assert_eq!(kernel.container_id.as_str(), "3f1c2a9e8b7d");
        assert_eq!(kernel.driver_before, DriverBefore::NotCaptured);
        assert_eq!(kernel.dpdk_driver, None);
        assert_eq!(kernel.host.as_ref().map(|h| h.alias.as_deref()), Some(Some("uplink")));

        let ena: AttachmentRecord = serde_json::from_str(OLD_DPDK_FROM_ENA).expect("old dpdk record");
        assert_eq!(ena.driver_before, DriverBefore::Bound(driver("ena")));
        assert_eq!(ena.driver_before.captured(), Some(Some(&driver("ena"))));
        assert_eq!(ena.netdevs_before, ["eth1"]);

        // `null` was written for a device without a driver; the old type read it back as "not
        // captured". It is read as what it meant now.
        let unbound: AttachmentRecord = serde_json::from_str(OLD_DPDK_UNBOUND).expect("old unbound record");
        assert_eq!(unbound.driver_before, DriverBefore::Unbound);
        assert_eq!(unbound.driver_before.captured(), Some(None));

        let early: AttachmentRecord = serde_json::from_str(OLD_DPDK_BEFORE_CAPTURE).expect("old early record");
        assert_eq!(early.driver_before, DriverBefore::NotCaptured);
        assert_eq!(early.driver_before.captured(), None);

        // The wire format is unchanged: each writes back as the same JSON.
        for (old, rec) in [
            (OLD_KERNEL, &kernel),
            (OLD_DPDK_FROM_ENA, &ena),
            (OLD_DPDK_UNBOUND, &unbound),
            (OLD_DPDK_BEFORE_CAPTURE, &early),
        ] {
            let want: serde_json::Value = serde_json::from_str(old).expect("json");
            assert_eq!(serde_json::to_value(rec).expect("serialize"), want);
        }
    }

    #[test]
    fn new_fields_round_trip_through_the_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = AttachmentStore::new(dir.path());
        for (i, before) in [DriverBefore::NotCaptured, DriverBefore::Unbound, DriverBefore::Bound(driver("vfio-pci"))]
            .into_iter()
            .enumerate()
        {
            let rec = AttachmentRecord {
                mode: HandOver::Dpdk,
                pci: Some("0000:00:06.0".parse().expect("pci")),
                dpdk_driver: Some(DpdkDriver::IgbUio),
                driver_before: before,
                network_config: Some(serde_json::json!({"name": "dp", "type": "nodeeni", "mode": "dpdk"})),
                ..record(&format!("c{i}"), "dpdk0")
            };
            store.save(&rec).expect("save");
            let raw: serde_json::Value =
                serde_json::from_slice(&std::fs::read(store.path(&rec.container_id, "dpdk0")).expect("read"))
                    .expect("json");
            assert_eq!(raw["dpdkDriver"], "igb_uio");
            assert_eq!(raw["networkConfig"]["mode"], "dpdk");
            assert_eq!(store.load(&rec.container_id, "dpdk0").expect("load"), Some(rec));
        }
    }

    #[test]
    fn a_network_config_with_a_huge_number_loads_back_equal() {
        // Regression (fuzz target attachment_record): serde_json's fast float parser read
        // 9055555555500006204574808047819862 one ULP off its own output, so a record did not load back
        // equal and GC's comparison of network configurations would have judged it another network.
        // The workspace turns on serde_json's `float_roundtrip`.
        let dir = tempfile::tempdir().expect("tempdir");
        let store = AttachmentStore::new(dir.path());
        let config = r#"{"name":"fast","type":"nodeeni","mtu":9055555555500006204574808047819862}"#;
        let rec = AttachmentRecord {
            network_config: Some(serde_json::from_str(config).expect("json")),
            ..record("c1", "eth0")
        };
        store.save(&rec).expect("save");
        assert_eq!(store.load(&rec.container_id, "eth0").expect("load"), Some(rec));
    }

    #[test]
    fn a_record_with_an_invalid_container_id_or_driver_is_corrupt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = AttachmentStore::new(dir.path());
        std::fs::create_dir_all(store.dir()).expect("mkdir");
        let bad_id = OLD_DPDK_FROM_ENA.replace(r#""containerId": "c1""#, r#""containerId": "../etc""#);
        std::fs::write(store.dir().join("x@dpdk0.json"), &bad_id).expect("write");
        std::fs::write(store.path(&id("c1"), "dpdk0"), &bad_id).expect("write");
        assert!(matches!(store.load(&id("c1"), "dpdk0"), Err(AttachmentError::Corrupt { .. })));
        assert_eq!(store.list().expect("listed"), [], "unreadable records are set aside, not listed");
        assert_eq!(store.quarantined(), 2);
        let bad_driver = OLD_DPDK_FROM_ENA.replace(r#""mode": "dpdk""#, r#""mode": "dpdk", "dpdkDriver": "e1000""#);
        std::fs::write(store.path(&id("c1"), "dpdk0"), bad_driver).expect("write");
        assert!(matches!(store.load(&id("c1"), "dpdk0"), Err(AttachmentError::Corrupt { .. })));
        // The driver to restore becomes a path under bus/pci/drivers: one that would leave it is refused.
        for unsafe_name in ["../../x", "a/b", "..", ""] {
            let bad_before =
                OLD_DPDK_FROM_ENA.replace(r#""driverBefore": "ena""#, &format!(r#""driverBefore": "{unsafe_name}""#));
            std::fs::write(store.path(&id("c1"), "dpdk0"), bad_before).expect("write");
            let err = store.load(&id("c1"), "dpdk0").expect_err(unsafe_name);
            assert!(matches!(err, AttachmentError::Corrupt { .. }), "{unsafe_name:?}: {err}");
            assert!(err.to_string().contains("driver name"), "{err}");
        }
    }

    #[test]
    fn a_driver_that_was_not_captured_is_never_written_as_null() {
        assert!(serde_json::to_value(DriverBefore::NotCaptured).is_err());
        assert_eq!(serde_json::to_value(DriverBefore::Unbound).expect("unbound"), serde_json::Value::Null);
        let json = serde_json::to_value(record("c", "net1")).expect("record");
        assert!(json.get("driverBefore").is_none(), "{json}");
    }

    #[test]
    fn an_unreadable_record_is_quarantined_and_the_rest_listed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = AttachmentStore::new(dir.path());
        let good = record("keep", "net1");
        store.save(&good).expect("save");
        std::fs::write(store.dir().join("torn@net1.json"), b"{\"containerId\": \"torn\", \"ifn").expect("torn");
        let listed = store.list().expect("one bad file does not fail the listing");
        assert_eq!(listed, vec![good]);
        assert_eq!(store.quarantined(), 1);
        assert!(!store.dir().join("torn@net1.json").exists(), "moved aside");
        assert_eq!(store.list().expect("again").len(), 1, "and not looked at again");
    }

    #[test]
    fn records_of_an_earlier_boot_are_dropped_not_undone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let before = AttachmentStore::new(dir.path()).with_boot_id(Some("boot-1".into()));
        before.save(&record("old", "net1")).expect("save");
        assert!(before.load(&id("old"), "net1").expect("load").is_some(), "same boot: kept");
        let after = AttachmentStore::new(dir.path()).with_boot_id(Some("boot-2".into()));
        after.save(&record("new", "net1")).expect("save");
        assert_eq!(after.list().expect("list"), vec![record("new", "net1")], "the earlier boot's record is gone");
        assert!(!after.path(&id("old"), "net1").exists());
        assert_eq!(after.load(&id("old"), "net1").expect("load"), None, "a DEL for it finds nothing to undo");
        let raw: serde_json::Value =
            serde_json::from_slice(&std::fs::read(after.path(&id("new"), "net1")).expect("read")).expect("json");
        assert_eq!(raw["bootId"], "boot-2");
    }
}
