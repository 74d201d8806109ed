//! What the kubelet and the container runtime add around a CNI call that the libcni driver does not,
//! and that the plugin needs to take an ENI of an advertised pool (it takes one only as the kubelet
//! allocated it to the calling pod):
//!
//! - the kubelet's device-manager checkpoint, which lists the device IDs Allocate gave each pod (the
//!   kubelet writes it when it admits the pod, before the sandbox exists);
//! - the pod's UID in `CNI_ARGS` (`K8S_POD_UID`), as containerd and CRI-O pass it. libcni sets
//!   `CNI_ARGS` from its `RuntimeConf.Args`, which the driver leaves empty, so a shim put first in
//!   `CNI_PATH` sets it and runs the plugin;
//! - for the node in a box, the CNI's node file (as `install-cni` writes it) pointing the plugin at
//!   the box's state folder, log file and checkpoint.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

/// The UID the pod of sandbox `container` has: what the shim passes as `K8S_POD_UID`.
pub fn pod_uid(container: &str) -> String {
    format!("uid-{container}")
}

/// Writes `body` at `path` through a temporary file and a rename, so no reader sees half of it.
fn replace(path: &Path, body: &[u8], mode: u32) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, body).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).expect("chmod");
    std::fs::rename(&tmp, path).unwrap_or_else(|e| panic!("rename to {}: {e}", path.display()));
}

/// The kubelet's device-manager checkpoint (`kubelet_internal_checkpoint`), in the format the
/// kubelet writes (device IDs per NUMA node).
#[derive(Debug, Clone)]
pub struct Checkpoint {
    path: PathBuf,
}

impl Checkpoint {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records that Allocate gave the pod `pod_uid` the devices `ids` of `resource`, beside what the
    /// checkpoint already lists.
    pub fn allocate(&self, pod_uid: &str, resource: &str, ids: &[&str]) {
        let mut doc = match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice::<Value>(&bytes).expect("checkpoint JSON"),
            Err(_) => json!({"Data": {"PodDeviceEntries": [], "RegisteredDevices": {}}, "Checksum": 0}),
        };
        let entry = json!({
            "PodUID": pod_uid, "ContainerName": "app", "ResourceName": resource, "DeviceIDs": {"-1": ids},
            "AllocResp": "",
        });
        doc["Data"]["PodDeviceEntries"].as_array_mut().expect("entries").push(entry);
        replace(&self.path, doc.to_string().as_bytes(), 0o600);
    }
}

/// A folder in `dir` holding `nodeeni`, a shim that passes the pod's UID ([`pod_uid`] of
/// `CNI_CONTAINERID`) in `CNI_ARGS` and runs `plugin`: put it first in `CNI_PATH`. Written once.
pub fn pod_uid_shim(dir: &Path, plugin: &Path) -> PathBuf {
    let folder = dir.join("runtime-shim");
    let shim = folder.join("nodeeni");
    if !shim.exists() {
        std::fs::create_dir_all(&folder).expect("shim folder");
        let script = format!(
            "#!/bin/sh\n# The runtime's CNI_ARGS, which libcni leaves empty without RuntimeConf.Args.\n\
             CNI_ARGS=\"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=$CNI_CONTAINERID;K8S_POD_UID=uid-$CNI_CONTAINERID\"\n\
             export CNI_ARGS\nexec '{}' \"$@\"\n",
            plugin.display()
        );
        replace(&shim, script.as_bytes(), 0o755);
        // The host-pool IPAM plugin: the same executable under its own name, as install-cni puts it.
        std::os::unix::fs::symlink(plugin, folder.join("nodeeni-ipam")).expect("nodeeni-ipam");
    }
    folder
}

/// The resource the node in a box allocates from for CNI calls (its kernel pool's).
const RESOURCE: &str = crate::nodebox::KERNEL_RESOURCE;

/// For a runtime's CNI call (`verb`: add, check, del) on the node in a box whose folder is
/// `box_dir`: on ADD with a `deviceID=<id>` capability, the kubelet's allocation of that device to
/// the pod of `container` is recorded in the checkpoint. Returns the environment for the libcni
/// driver: the shim first in `CNI_PATH`, and `NODEENI_NODE_FILE` naming a node file (written once)
/// with the box's state folder, CNI log and checkpoint.
pub fn kubelet_side(
    box_dir: &Path,
    state_dir: &Path,
    verb: &str,
    container: &str,
    caps: &[&str],
) -> Vec<(String, String)> {
    let etc = box_dir.join("etc-nodeeni");
    let checkpoint = Checkpoint::new(box_dir.join("kubelet_internal_checkpoint"));
    let node_file = etc.join("node.json");
    if !node_file.exists() {
        std::fs::create_dir_all(&etc).expect("node file folder");
        std::fs::set_permissions(&etc, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let file = json!({
            "stateDir": state_dir,
            "logFile": box_dir.join("cni.log"),
            "kubeletCheckpoint": checkpoint.path(),
        });
        replace(&node_file, file.to_string().as_bytes(), 0o644);
    }
    if verb == "add" {
        for id in caps.iter().filter_map(|c| c.strip_prefix("deviceID=")) {
            checkpoint.allocate(&pod_uid(container), RESOURCE, &[id]);
        }
    }
    let shim = pod_uid_shim(box_dir, &crate::bins::path("nodeeni"));
    vec![
        ("CNI_PATH".into(), format!("{}:{}", shim.display(), crate::bins::cni_path())),
        ("NODEENI_NODE_FILE".into(), node_file.display().to_string()),
    ]
}
