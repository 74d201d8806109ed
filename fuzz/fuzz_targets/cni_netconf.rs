//! A network configuration on stdin (`NetConf::parse`) and a configuration list (`NetConfList::parse`),
//! for every spec version: the first byte may force `cniVersion` to one of them, so each version's
//! path is fuzzed whatever the input names. Properties: no panic; a parsed prevResult writes back in
//! every version and reads again; node settings resolve without panic from what the config says.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nodeeni_conf::cni::{CniResult, CniVersion, Command, NetConf, NetConfList, NodeFile, NodeSettings, NodeSource};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else { return };
    let forced = CniVersion::ALL.get(usize::from(first % 8)).copied();
    let owned;
    let bytes = match (forced, serde_json::from_slice::<Value>(rest)) {
        (Some(v), Ok(Value::Object(mut m))) => {
            m.insert("cniVersion".into(), Value::String(v.as_str().into()));
            owned = serde_json::to_vec(&Value::Object(m)).expect("a JSON object serializes");
            &owned[..]
        }
        _ => rest,
    };
    let _ = NetConfList::parse(bytes);
    let Ok(conf) = NetConf::parse(bytes) else { return };
    assert_eq!(conf.cni_version.as_str(), conf.cni_version_str);
    if let Some(prev) = &conf.prev_result {
        for v in CniVersion::ALL {
            let again = CniResult::parse(&prev.to_json(v.as_str())).expect("a result we wrote reads back");
            if v == CniVersion::LATEST {
                assert_eq!(&again, prev, "prevResult round trip in {v}");
            }
        }
    }
    let node = NodeFile::default();
    let path = std::path::Path::new("/etc/nodeeni/node.json");
    for command in [Command::Add, Command::Del, Command::Check, Command::Gc, Command::Status] {
        let _ = NodeSettings::resolve_for(NodeSource::File(path, &node), &conf, command);
        let _ = NodeSettings::resolve_for(NodeSource::DaemonState(path), &conf, command);
        let _ = NodeSettings::resolve_for(NodeSource::Standalone, &conf, command);
    }
});
