//! What one CNI ADD did, per (container, ifname): written before the first change to the host and
//! updated as ADD goes, so DEL can undo it exactly even when the daemon is down, the prevResult is
//! missing, or ADD itself was killed halfway.

use std::path::PathBuf;

use nodeeni_conf::cni::{CniResult, HandOver};
use nodeeni_conf::net::IpNet;
use nodeeni_conf::{EniId, MacAddr, PciAddress};
use serde::{Deserialize, Serialize};

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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachmentRecord {
    pub container_id: String,
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
    /// DPDK mode: the driver and netdevs before the bind (driver None: unbound).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver_before: Option<Option<String>>,
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
}

/// Attachment records in `<state_dir>/attachments`, one file per (container, ifname).
#[derive(Debug, Clone)]
pub struct AttachmentStore {
    dir: PathBuf,
}

impl AttachmentStore {
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Self { dir: state_dir.into().join("attachments") }
    }

    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// `<container>@<ifname>.json`: container IDs never hold `@`, so the pair maps to one name.
    pub fn path(&self, container_id: &str, ifname: &str) -> PathBuf {
        self.dir.join(format!("{container_id}@{ifname}.json"))
    }

    pub fn load(&self, container_id: &str, ifname: &str) -> Result<Option<AttachmentRecord>, AttachmentError> {
        let path = self.path(container_id, ifname);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|source| AttachmentError::Corrupt { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(AttachmentError::Io { path, source }),
        }
    }

    pub fn save(&self, record: &AttachmentRecord) -> Result<(), AttachmentError> {
        let io = |path: &PathBuf, source| AttachmentError::Io { path: path.clone(), source };
        std::fs::create_dir_all(&self.dir).map_err(|e| io(&self.dir, e))?;
        let path = self.path(&record.container_id, &record.ifname);
        let bytes = serde_json::to_vec_pretty(record)
            .map_err(|source| AttachmentError::Corrupt { path: path.clone(), source })?;
        // A reboot ends every pod namespace and with it what a record is for: crash safety is enough.
        replace(&path, &bytes, Durability::ProcessCrash).map_err(|e| io(&path, e))
    }

    pub fn remove(&self, container_id: &str, ifname: &str) -> Result<(), AttachmentError> {
        let path = self.path(container_id, ifname);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(AttachmentError::Io { path, source }),
        }
    }

    /// Every record (unreadable files are reported, not skipped silently).
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
            out.push(serde_json::from_slice(&bytes).map_err(|source| AttachmentError::Corrupt { path, source })?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(c: &str, i: &str) -> AttachmentRecord {
        AttachmentRecord {
            container_id: c.into(),
            ifname: i.into(),
            netns: Some("/run/netns/x".into()),
            network: "net".into(),
            mode: HandOver::Kernel,
            phase: Phase::Adding,
            eni_id: None,
            mac: Some("0a:00:00:00:00:01".parse().expect("mac")),
            pci: None,
            host: Some(HostLinkState { name: "eth1".into(), mtu: 1500, up: false, addresses: vec![], alias: None }),
            driver_before: None,
            netdevs_before: vec![],
            ipam_type: None,
            claimed_from_pool: false,
            result: None,
            created_unix: 1,
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
        assert_eq!(store.load("a.b", "c").expect("load"), Some(a));
        assert_eq!(store.load("a", "b.c").expect("load"), Some(b));
        assert_eq!(store.list().expect("list").len(), 2);
        store.remove("a", "b.c").expect("remove");
        store.remove("a", "b.c").expect("removing twice is fine");
        assert_eq!(store.load("a", "b.c").expect("load"), None);
        assert_eq!(store.list().expect("list").len(), 1);
    }

    #[test]
    fn a_corrupt_record_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = AttachmentStore::new(dir.path());
        std::fs::create_dir_all(store.dir()).expect("mkdir");
        std::fs::write(store.path("c", "net1"), b"nope").expect("write");
        let err = store.load("c", "net1").expect_err("corrupt");
        assert!(err.to_string().contains("c@net1.json"), "{err}");
    }
}
