//! What the kubelet allocated: its device manager's checkpoint (`kubelet_internal_checkpoint`, root's,
//! written when it admits a pod and before the pod's sandbox exists) lists, per pod UID, the device IDs
//! it gave each container. Whatever key names the device (`runtimeConfig.deviceID`, which libcni
//! passes through from the config itself when the runtime injects none, or Multus' `deviceID`, which
//! a config may also hold), this is the proof that the kubelet gave that ENI to this pod. A checkpoint
//! that is missing or does not read proves nothing: the caller refuses (fail closed).

use std::path::Path;

use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot read the kubelet's checkpoint {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("the kubelet's checkpoint {path} is not what this plugin reads: {why}")]
    Format { path: String, why: String },
}

/// The device IDs of one entry: a list (kubelets before 1.20) or lists per NUMA node.
fn device_ids(v: &Value) -> Vec<&str> {
    match v {
        Value::Array(ids) => ids.iter().filter_map(Value::as_str).collect(),
        Value::Object(per_numa) => per_numa.values().flat_map(device_ids).collect(),
        _ => Vec::new(),
    }
}

/// Whether the checkpoint at `path` lists, as given to the pod `pod_uid`, a device ID that `is_it`
/// (one device may be listed under its ENI ID or its PCI address, by whichever device plugin
/// allocated it). A missing checkpoint is an error, like one that does not read.
pub fn allocated_to(path: &Path, pod_uid: &str, is_it: impl Fn(&str) -> bool) -> Result<bool, CheckpointError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| CheckpointError::Read { path: shown.clone(), source })?;
    let doc: Value = serde_json::from_slice(&bytes)
        .map_err(|e| CheckpointError::Format { path: shown.clone(), why: e.to_string() })?;
    let entries = doc
        .pointer("/Data/PodDeviceEntries")
        .and_then(Value::as_array)
        .ok_or_else(|| CheckpointError::Format { path: shown, why: "no Data.PodDeviceEntries".into() })?;
    Ok(entries.iter().any(|e| {
        e.get("PodUID").and_then(Value::as_str) == Some(pod_uid)
            && e.get("DeviceIDs").is_some_and(|ids| device_ids(ids).into_iter().any(&is_it))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_of_both_formats_are_read_per_pod() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("kubelet_internal_checkpoint");
        let is = |want: &'static str| move |id: &str| id == want;
        let missing = allocated_to(&path, "uid-1", is("eni-1")).expect_err("a missing checkpoint proves nothing");
        assert!(matches!(missing, CheckpointError::Read { .. }), "{missing}");
        std::fs::write(
            &path,
            r#"{"Data": {"PodDeviceEntries": [
                {"PodUID": "uid-1", "ContainerName": "app", "ResourceName": "nodeeni.io/fast", "DeviceIDs": {"0": ["eni-1"], "-1": ["eni-2"]}, "AllocResp": ""},
                {"PodUID": "uid-2", "ContainerName": "app", "ResourceName": "nodeeni.io/fast", "DeviceIDs": ["eni-3"]}
            ], "RegisteredDevices": {"nodeeni.io/fast": ["eni-1", "eni-2", "eni-3"]}}, "Checksum": 1}"#,
        )
        .expect("write");
        assert!(allocated_to(&path, "uid-1", is("eni-1")).expect("read"));
        assert!(allocated_to(&path, "uid-1", is("eni-2")).expect("read"));
        assert!(!allocated_to(&path, "uid-1", is("eni-3")).expect("read"), "another pod's");
        assert!(allocated_to(&path, "uid-2", is("eni-3")).expect("read"), "the old list format");
        std::fs::write(&path, "{}").expect("write");
        assert!(matches!(allocated_to(&path, "uid-1", is("eni-1")), Err(CheckpointError::Format { .. })));
    }
}
