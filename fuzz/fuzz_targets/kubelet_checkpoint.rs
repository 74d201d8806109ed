//! The kubelet's device-manager checkpoint (`kubelet_internal_checkpoint`), read by the CNI plugin's
//! `kubelet::allocated_to` from a file in a scratch folder, for a pod UID and device IDs as the plugin
//! asks (each listed ID checked as `parse_device_id` reads it). Property: no panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nodeeni_conf::cni::parse_device_id;
use nodeeni_fuzz::kubelet::allocated_to;

fuzz_target!(|data: &[u8]| {
    let dir = nodeeni_fuzz::scratch();
    let path = dir.join("kubelet_internal_checkpoint");
    std::fs::write(&path, data).expect("write");
    for pod in ["uid-1", ""] {
        let _ = allocated_to(&path, pod, |id| parse_device_id(id, "deviceID").is_ok());
    }
});
