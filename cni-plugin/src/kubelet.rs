//! What the kubelet allocated: its device manager's checkpoint (`kubelet_internal_checkpoint`, root's,
//! written when it admits a pod and before the pod's sandbox exists) lists, per pod UID, the device IDs
//! it gave each container. For a top-level `deviceID` (which Multus writes from the pod's allocation,
//! but a network config may also hold) this is the proof that the kubelet gave that ENI to this pod.

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

/// Whether the checkpoint at `path` lists `device` as given to the pod `pod_uid`. A missing checkpoint
/// lists nothing.
pub fn allocated_to(path: &Path, pod_uid: &str, device: &str) -> Result<bool, CheckpointError> {
    let shown = path.display().to_string();
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(source) => return Err(CheckpointError::Read { path: shown, source }),
    };
    let doc: Value = serde_json::from_slice(&bytes)
        .map_err(|e| CheckpointError::Format { path: shown.clone(), why: e.to_string() })?;
    let entries = doc
        .pointer("/Data/PodDeviceEntries")
        .and_then(Value::as_array)
        .ok_or_else(|| CheckpointError::Format { path: shown, why: "no Data.PodDeviceEntries".into() })?;
    Ok(entries.iter().any(|e| {
        e.get("PodUID").and_then(Value::as_str) == Some(pod_uid)
            && e.get("DeviceIDs").is_some_and(|ids| device_ids(ids).contains(&device))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_of_both_formats_are_read_per_pod() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("kubelet_internal_checkpoint");
        assert!(!allocated_to(&path, "uid-1", "eni-1").expect("missing is empty"));
        std::fs::write(
            &path,
            r#"{"Data": {"PodDeviceEntries": [
                {"PodUID": "uid-1", "ContainerName": "app", "ResourceName": "nodeeni.io/fast", "DeviceIDs": {"0": ["eni-1"], "-1": ["eni-2"]}, "AllocResp": ""},
                {"PodUID": "uid-2", "ContainerName": "app", "ResourceName": "nodeeni.io/fast", "DeviceIDs": ["eni-3"]}
            ], "RegisteredDevices": {"nodeeni.io/fast": ["eni-1", "eni-2", "eni-3"]}}, "Checksum": 1}"#,
        )
        .expect("write");
        assert!(allocated_to(&path, "uid-1", "eni-1").expect("read"));
        assert!(allocated_to(&path, "uid-1", "eni-2").expect("read"));
        assert!(!allocated_to(&path, "uid-1", "eni-3").expect("read"), "another pod's");
        assert!(allocated_to(&path, "uid-2", "eni-3").expect("read"), "the old list format");
        std::fs::write(&path, "{}").expect("write");
        assert!(matches!(allocated_to(&path, "uid-1", "eni-1"), Err(CheckpointError::Format { .. })));
    }
}
