//! A result of any supported version, as a `prevResult` or a delegated IPAM plugin's answer
//! (`CniResult::parse`). Properties: no panic; what parses writes in every version (`to_json`) and
//! reads back, equal in 1.1.0 and equal less the fields an older version does not define.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nodeeni_conf::cni::{CniResult, CniVersion};
use serde_json::Value;

/// What `to_json(v)` keeps of `r`: fields older versions do not define are dropped.
fn as_in(r: &CniResult, v: CniVersion) -> CniResult {
    let mut r = r.clone();
    if v < CniVersion::V1_1_0 {
        for i in &mut r.interfaces {
            (i.mtu, i.pci_id, i.socket_path) = (None, None, None);
        }
        for rt in &mut r.routes {
            (rt.mtu, rt.advmss, rt.priority, rt.table, rt.scope) = (None, None, None, None, None);
        }
    }
    r
}

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<Value>(data) else { return };
    let Ok(result) = CniResult::parse(&v) else { return };
    for version in CniVersion::ALL {
        let written = result.to_json(version.as_str());
        let again = CniResult::parse(&written).expect("a result we wrote reads back");
        assert_eq!(again, as_in(&result, version), "round trip in {version}");
    }
});
