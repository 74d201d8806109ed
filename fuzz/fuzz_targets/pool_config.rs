//! The pool configuration file: YAML or JSON, several documents, `PoolConfig` and `NodeENI` manifests
//! merged (`PoolConfig::from_text`), with and without a cluster name from the command line.
//! Properties: no panic; an accepted config's pools are consistent (names valid and unique, advertised
//! modes named, device indexes within 1..=127) and it serializes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nodeeni_conf::{LoadOptions, Mode, PoolConfig};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for cluster_name in [None, Some("fuzz".to_string())] {
        let Ok(config) = PoolConfig::from_text(text, &LoadOptions { cluster_name }) else { continue };
        for (i, p) in config.pools.iter().enumerate() {
            assert!(!p.name.is_empty() && p.name.len() <= 63, "{:?}", p.name);
            assert!(config.pools[i + 1..].iter().all(|q| q.name != p.name), "pool {} twice", p.name);
            assert_eq!(p.resource_name.is_some(), p.mode != Mode::Host, "{}", p.name);
            let range = p.device_indexes();
            assert!(range.start >= 1 && range.end <= 128, "{}: {range:?}", p.name);
        }
        serde_json::to_string(&config).expect("an accepted config serializes");
    }
});
