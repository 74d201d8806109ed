//! The node file (`/etc/nodeeni/node.json`, `NodeFile::parse`). Properties: no panic; every path of an
//! accepted file is absolute; it writes back and parses equal.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nodeeni_conf::cni::NodeFile;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = NodeFile::parse(data) else { return };
    assert!(file.state_dir.is_absolute() && file.sysfs_root.is_absolute() && file.kubelet_checkpoint.is_absolute());
    assert!(file.log_file.as_ref().is_none_or(|p| p.is_absolute()));
    let written = serde_json::to_vec(&file).expect("serializes");
    assert_eq!(NodeFile::parse(&written).expect("what we wrote parses"), file);
});
