//! The node state (`node-state.json`, and its previous copy `node-state.json.prev` that a torn file
//! falls back to), read through `NodeStore` in a scratch folder as the daemon and the CNI read it, in
//! a boot other than the one it names. The first byte says which file the rest is: odd, the previous
//! copy behind a torn (empty) state file; even, the state file beside a good previous copy.
//! Properties: no panic; an accepted state writes back (an update that changes nothing but the boot)
//! and reads equal, and its JSON round-trips.

#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use nodeeni_state::node::{NodeState, NodeStore, PREVIOUS_FILE, STATE_FILE, StoreError};

const GOOD: &str = r#"{"version": 1, "bootId": "boot-a", "enis": []}"#;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else { return };
    let dir = nodeeni_fuzz::scratch();
    nodeeni_fuzz::empty(dir);
    let (state, previous) = if first & 1 == 1 { (&b""[..], rest) } else { (rest, GOOD.as_bytes()) };
    std::fs::write(dir.join(STATE_FILE), state).expect("write");
    std::fs::write(dir.join(PREVIOUS_FILE), previous).expect("write");
    let store = NodeStore::new(dir).with_boot_id(Some("boot-b".into())).with_boot_time(Some(1_700_000_000));
    let t = Duration::from_secs(1);
    let Ok(read) = store.load(t) else { return };
    let json = serde_json::to_vec_pretty(&read).expect("serializes");
    assert_eq!(serde_json::from_slice::<NodeState>(&json).expect("reads back"), read);
    store.update(t, |_| Ok::<_, StoreError>(())).expect("an update of a readable state");
    assert_eq!(store.load(t).expect("reads after the update"), read);
});
