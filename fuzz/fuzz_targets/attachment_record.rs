//! An attachment record (`attachments/<container>@<ifname>.json`), read through `AttachmentStore` in a
//! scratch folder: by `load` and by `list` (which quarantines what does not read), in a boot that may
//! differ from the one the record names. Properties: no panic; an accepted record saves and loads
//! back equal, and its JSON round-trips.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nodeeni_conf::cni::ContainerId;
use nodeeni_state::attachment::{AttachmentRecord, AttachmentStore};

fuzz_target!(|data: &[u8]| {
    let dir = nodeeni_fuzz::scratch();
    nodeeni_fuzz::empty(dir);
    let store = AttachmentStore::new(dir).with_boot_id(Some("boot-b".into()));
    let id: ContainerId = "fuzz".parse().expect("a container ID");
    let path = store.path(&id, "eth0");
    std::fs::create_dir_all(store.dir()).expect("mkdir");

    std::fs::write(&path, data).expect("write");
    let listed = store.list().expect("list never fails on a bad record");
    assert!(listed.len() <= 1);

    nodeeni_fuzz::empty(store.dir());
    std::fs::write(&path, data).expect("write");
    let Ok(Some(mut record)) = store.load(&id, "eth0") else { return };
    let json = serde_json::to_vec(&record).expect("serializes");
    assert_eq!(serde_json::from_slice::<AttachmentRecord>(&json).expect("reads back"), record);
    // Saved under the path it was read from (the record's own names could point anywhere).
    (record.container_id, record.ifname) = (id.clone(), "eth0".into());
    store.save(&record).expect("save");
    assert_eq!(store.load(&id, "eth0").expect("load").as_ref(), Some(&record));
});
