//! What a container gets for its ENIs, in the conventions DPDK apps and Multus already read from the
//! SR-IOV device plugin:
//!
//! - `PCIDEVICE_<RESOURCE>` = the PCI addresses, comma-separated; `PCIDEVICE_<RESOURCE>_INFO` = JSON
//!   keyed by PCI address with the device ID (the ENI ID) and, for DPDK, the vfio mounts;
//!   `NODEENI_ENI_IDS_<RESOURCE>` = the ENI IDs;
//! - DPDK: device nodes `/dev/vfio/vfio` and the IOMMU group's node, read-write. Most EC2 instances have
//!   no IOMMU, so vfio runs in no-IOMMU mode and the host node is `/dev/vfio/noiommu-<group>`; the
//!   container always sees `/dev/vfio/<group>`;
//! - a Network Plumbing WG device-info file per device (`<resource with / as ->-<id>-device.json`,
//!   type pci, version 1.1.0, read-only), removed when the device leaves.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use nodeeni_conf::{EniId, Mode, ResourceName};
use nodeeni_proto::deviceplugin::v1beta1 as api;
use nodeeni_state::atomic::{Durability, replace_file};
use serde_json::json;
use tokio::sync::watch;

use crate::devices::{Device, pcidevice_env};

pub const DEFAULT_DEVINFO_DIR: &str = "/var/run/k8s.cni.cncf.io/devinfo/dp";

#[derive(Debug, Clone)]
pub struct AllocateSettings {
    pub resource: ResourceName,
    pub mode: Mode,
    /// Where device nodes live (`/dev`; a temp tree in tests).
    pub dev_root: PathBuf,
    pub devinfo_dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum AllocateError {
    #[error("{eni}: no vfio node for IOMMU group {group} under {dir} (is the device bound to vfio-pci?)")]
    NoVfioNode { eni: EniId, group: u32, dir: PathBuf },
    #[error("{eni}: DPDK devices need a PCI address and an IOMMU group; the node state has none yet")]
    NotBound { eni: EniId },
    #[error("{eni} left the resource while it was being allocated")]
    Departed { eni: EniId },
    #[error("device-info file {path}: {source}")]
    DevInfo { path: PathBuf, source: std::io::Error },
}

/// The host and container paths of a vfio group's node.
fn vfio_group_node(settings: &AllocateSettings, d: &Device, group: u32) -> Result<(PathBuf, String), AllocateError> {
    let dir = settings.dev_root.join("vfio");
    let container = format!("/dev/vfio/{group}");
    for host in [dir.join(group.to_string()), dir.join(format!("noiommu-{group}"))] {
        if host.exists() {
            return Ok((host, container));
        }
    }
    Err(AllocateError::NoVfioNode { eni: d.eni_id.clone(), group, dir })
}

/// The response for one container asking for `devices`.
pub fn container_response(
    settings: &AllocateSettings,
    devices: &[&Device],
) -> Result<api::ContainerAllocateResponse, AllocateError> {
    let resource = settings.resource.as_str();
    let env = pcidevice_env(resource);
    let mut info = serde_json::Map::new();
    let mut specs = Vec::new();
    let mut pcis = Vec::new();
    if settings.mode == Mode::Dpdk && !devices.is_empty() {
        specs.push(api::DeviceSpec {
            container_path: "/dev/vfio/vfio".into(),
            host_path: settings.dev_root.join("vfio/vfio").display().to_string(),
            permissions: "rw".into(),
        });
    }
    for d in devices {
        let mut entry = json!({"generic": {"deviceID": d.eni_id.to_string()}});
        if settings.mode == Mode::Dpdk {
            let (Some(_), Some(group)) = (d.pci, d.iommu_group) else {
                return Err(AllocateError::NotBound { eni: d.eni_id.clone() });
            };
            let (host, container) = vfio_group_node(settings, d, group)?;
            entry["vfio"] = json!({"dev-mount": container, "mount": "/dev/vfio/vfio"});
            specs.push(api::DeviceSpec {
                container_path: container,
                host_path: host.display().to_string(),
                permissions: "rw".into(),
            });
        }
        if let Some(pci) = d.pci {
            pcis.push(pci.to_string());
            info.insert(pci.to_string(), entry);
        }
    }
    let mut envs = std::collections::HashMap::new();
    envs.insert(env.clone(), pcis.join(","));
    envs.insert(format!("{env}_INFO"), serde_json::Value::Object(info).to_string());
    envs.insert(
        format!("NODEENI_ENI_IDS_{}", env.trim_start_matches("PCIDEVICE_")),
        devices.iter().map(|d| d.eni_id.to_string()).collect::<Vec<_>>().join(","),
    );
    Ok(api::ContainerAllocateResponse {
        envs,
        mounts: vec![],
        devices: specs,
        annotations: Default::default(),
        cdi_devices: vec![],
    })
}

/// `<resource with / as ->-<device id>-device.json`.
pub fn devinfo_path(settings: &AllocateSettings, eni: &EniId) -> PathBuf {
    settings.devinfo_dir.join(format!("{}-{eni}-device.json", settings.resource.as_str().replace('/', "-")))
}

/// Device-info files are read-only for everyone, as the SR-IOV device plugin writes them.
const DEVINFO_MODE: u32 = 0o444;

/// The file's content, refusing to follow a symlink at `path`.
fn read_no_follow(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file =
        std::fs::OpenOptions::new().read(true).custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC).open(path)?;
    let mut out = Vec::new();
    file.read_to_end(&mut out)?;
    Ok(out)
}

/// Writes the device-info file for a device with a PCI address (read-only, replaced atomically).
fn write_devinfo(settings: &AllocateSettings, d: &Device) -> Result<Option<PathBuf>, AllocateError> {
    let Some(pci) = d.pci else { return Ok(None) };
    let path = devinfo_path(settings, &d.eni_id);
    let err = |source| AllocateError::DevInfo { path: path.clone(), source };
    let body = json!({"type": "pci", "version": "1.1.0", "pci": {"pci-address": pci.to_string()}}).to_string();
    // A device's file never changes (its PCI address is fixed): one already right is left alone, which
    // keeps Allocate to one read on the hot path. Only a regular file counts: a symlink is replaced.
    if read_no_follow(&path).is_ok_and(|old| old == body.as_bytes()) {
        return Ok(Some(path));
    }
    std::fs::create_dir_all(&settings.devinfo_dir).map_err(err)?;
    // Device-info files are read by other processes (Multus, the pod's tools): crash safety is enough,
    // a reboot re-allocates every device anyway.
    replace_file(&path, body.as_bytes(), DEVINFO_MODE, Durability::ProcessCrash).map_err(|e| err(e.into()))?;
    Ok(Some(path))
}

/// One resource's device-info files. Allocate writes them and the upkeep removes those of devices
/// that left; both go through here one at a time and judge against the newest device list, so a
/// tidy-up woken by an older list cannot remove the file Allocate has just written for a device that
/// arrived since, and Allocate cannot write one for a device the tidy-up has just let go.
#[derive(Debug, Clone)]
pub struct DevInfoFiles {
    settings: Arc<AllocateSettings>,
    devices: watch::Receiver<Vec<Device>>,
    one_at_a_time: Arc<Mutex<()>>,
}

impl DevInfoFiles {
    pub fn new(settings: Arc<AllocateSettings>, devices: watch::Receiver<Vec<Device>>) -> Self {
        Self { settings, devices, one_at_a_time: Arc::new(Mutex::new(())) }
    }

    fn listed(&self) -> BTreeSet<EniId> {
        // Copied out: a borrow held across file I/O would hold up the health watch's next publish.
        self.devices.borrow().iter().map(|d| d.eni_id.clone()).collect()
    }

    /// Writes the files of `picked`, each of which must still be a device of the resource.
    pub fn write(&self, picked: &[&Device]) -> Result<Vec<PathBuf>, AllocateError> {
        let _turn = self.one_at_a_time.lock().unwrap_or_else(|p| p.into_inner());
        let listed = self.listed();
        if let Some(gone) = picked.iter().find(|d| !listed.contains(&d.eni_id)) {
            return Err(AllocateError::Departed { eni: gone.eni_id.clone() });
        }
        let mut written = Vec::new();
        for d in picked {
            written.extend(write_devinfo(&self.settings, d)?);
        }
        Ok(written)
    }

    /// Removes the files of this resource's devices that are not in the newest list.
    pub fn tidy(&self) -> Result<Vec<PathBuf>, AllocateError> {
        let _turn = self.one_at_a_time.lock().unwrap_or_else(|p| p.into_inner());
        remove_stale_devinfo(&self.settings, &self.listed())
    }
}

/// Removes the device-info files of this resource's devices that are not `listed`.
fn remove_stale_devinfo(settings: &AllocateSettings, listed: &BTreeSet<EniId>) -> Result<Vec<PathBuf>, AllocateError> {
    let prefix = format!("{}-", settings.resource.as_str().replace('/', "-"));
    let keep: BTreeSet<PathBuf> = listed.iter().map(|id| devinfo_path(settings, id)).collect();
    let mut removed = Vec::new();
    let entries = match std::fs::read_dir(&settings.devinfo_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
        Err(source) => return Err(AllocateError::DevInfo { path: settings.devinfo_dir.clone(), source }),
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let ours =
            name.starts_with(&prefix) && name.ends_with("-device.json") && name[prefix.len()..].starts_with("eni-");
        if ours && !keep.contains(&path) {
            std::fs::remove_file(&path).map_err(|source| AllocateError::DevInfo { path: path.clone(), source })?;
            removed.push(path);
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use super::*;

    fn kernel_settings(root: &std::path::Path) -> AllocateSettings {
        AllocateSettings {
            resource: "nodeeni.io/fast".parse().expect("resource"),
            mode: Mode::Kernel,
            dev_root: root.join("dev"),
            devinfo_dir: root.join("devinfo"),
        }
    }

    #[test]
    fn a_right_device_info_file_is_kept_and_a_wrong_one_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = kernel_settings(dir.path());
        let d = Device {
            eni_id: "eni-00000001".parse().expect("id"),
            pci: Some("0000:00:06.0".parse().expect("pci")),
            healthy: true,
            numa_node: None,
            network_card: 0,
            iommu_group: None,
        };
        let path = write_devinfo(&settings, &d).expect("write").expect("a path");
        let first = std::fs::metadata(&path).expect("meta").ino();
        write_devinfo(&settings, &d).expect("again");
        assert_eq!(std::fs::metadata(&path).expect("meta").ino(), first, "a right file is not rewritten");
        let moved = Device { pci: Some("0000:00:07.0".parse().expect("pci")), ..d };
        write_devinfo(&settings, &moved).expect("replace");
        let body: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
        assert_eq!(body["pci"]["pci-address"], "0000:00:07.0");
        assert_eq!(std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777, 0o444);
    }

    #[test]
    fn a_symlink_planted_at_a_device_info_path_is_replaced_not_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = kernel_settings(dir.path());
        let d = device("eni-00000001", "0000:00:06.0");
        let path = devinfo_path(&settings, &d.eni_id);
        std::fs::create_dir_all(&settings.devinfo_dir).expect("mkdir");
        let victim = dir.path().join("victim");
        // Even a target already holding the right content: the link is not taken as our file.
        let body = json!({"type": "pci", "version": "1.1.0", "pci": {"pci-address": "0000:00:06.0"}}).to_string();
        std::fs::write(&victim, &body).expect("victim");
        std::os::unix::fs::symlink(&victim, &path).expect("plant");
        write_devinfo(&settings, &d).expect("write");
        let meta = std::fs::symlink_metadata(&path).expect("lstat");
        assert!(meta.file_type().is_file(), "the symlink was replaced by our file");
        assert_eq!(meta.permissions().mode() & 0o777, 0o444);
        assert_eq!(std::fs::read(&victim).expect("victim"), body.as_bytes());
        assert_ne!(std::fs::metadata(&victim).expect("meta").permissions().mode() & 0o777, 0o444, "victim untouched");
        assert_eq!(std::fs::read_dir(&settings.devinfo_dir).expect("ls").count(), 1, "no temp file left");
    }

    fn device(id: &str, pci: &str) -> Device {
        Device {
            eni_id: id.parse().expect("id"),
            pci: Some(pci.parse().expect("pci")),
            healthy: true,
            numa_node: None,
            network_card: 0,
            iommu_group: None,
        }
    }

    #[test]
    fn files_follow_the_newest_device_list() {
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = Arc::new(AllocateSettings {
            resource: "nodeeni.io/fast".parse().expect("resource"),
            mode: Mode::Kernel,
            dev_root: dir.path().join("dev"),
            devinfo_dir: dir.path().join("devinfo"),
        });
        let (a, b) = (device("eni-0000000a", "0000:00:06.0"), device("eni-0000000b", "0000:00:07.0"));
        let (tx, rx) = watch::channel(vec![a.clone()]);
        let files = DevInfoFiles::new(settings.clone(), rx);
        let a_file = files.write(&[&a]).expect("a").remove(0);
        // b arrives and is allocated; a tidy-up now judges by the list that has b, whatever woke it.
        tx.send(vec![a.clone(), b.clone()]).expect("publish");
        let b_file = files.write(&[&b]).expect("b").remove(0);
        assert_eq!(files.tidy().expect("tidy"), Vec::<PathBuf>::new());
        assert!(a_file.exists() && b_file.exists());
        // a leaves: its file goes, and it can no longer be given out.
        tx.send(vec![b.clone()]).expect("publish");
        assert_eq!(files.tidy().expect("tidy"), vec![a_file.clone()]);
        assert!(!a_file.exists() && b_file.exists());
        assert!(matches!(files.write(&[&a]), Err(AllocateError::Departed { .. })));
        assert!(!a_file.exists());
        // Another resource's files and unrelated files in the shared folder are not ours to remove.
        std::fs::write(settings.devinfo_dir.join("nodeeni.io-dpdk-eni-0000000c-device.json"), b"{}").expect("w");
        std::fs::write(settings.devinfo_dir.join("sriov-thing.json"), b"{}").expect("w");
        tx.send(vec![]).expect("publish");
        assert_eq!(files.tidy().expect("tidy"), vec![b_file]);
        assert_eq!(std::fs::read_dir(&settings.devinfo_dir).expect("ls").count(), 2);
    }
}
