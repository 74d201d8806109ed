//! `CNI_ARGS` (`K=V;K2=V2`, `parse_cni_args`). Properties: no panic; what parses writes back as
//! `K=V;…` and parses to the same map.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nodeeni_conf::cni::parse_cni_args;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let Ok(args) = parse_cni_args(s) else { return };
    let written: Vec<String> = args.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let again = parse_cni_args(&written.join(";")).expect("what we wrote parses");
    assert_eq!(again, args);
});
