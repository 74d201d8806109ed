//! The CNI environment (`CniEnv::from_vars`): the input is the process environment, one `NAME=VALUE` a
//! line (later lines win, as with `env`). Properties: no panic; what it accepts is consistent with the
//! command (ADD and CHECK have a container, netns and ifname; DEL a container and ifname), `CNI_ARGS`
//! is read as `parse_cni_args` reads it, and `CNI_PATH` holds no empty entry.

#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use nodeeni_conf::cni::{CniEnv, Command, parse_cni_args};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let vars: HashMap<&str, &str> = s.lines().filter_map(|l| l.split_once('=')).collect();
    let Ok(env) = CniEnv::from_vars(|k| vars.get(k).map(|v| v.to_string())) else { return };
    let (container, netns) = match env.command {
        Command::Add | Command::Check => (true, true),
        Command::Del => (true, false),
        Command::Version | Command::Status | Command::Gc => (false, false),
    };
    assert_eq!(env.container_id.is_some(), container);
    assert_eq!(env.ifname.is_some(), container);
    if netns {
        assert!(env.netns.is_some());
    }
    if let Some(id) = &env.container_id {
        assert_eq!(id.as_str().parse::<nodeeni_conf::cni::ContainerId>().as_ref(), Ok(id));
    }
    let args = vars.get("CNI_ARGS").filter(|a| !a.is_empty()).map(|a| parse_cni_args(a).expect("accepted above"));
    assert_eq!(env.args, args.unwrap_or_default());
    assert!(env.path.iter().all(|p| !p.as_os_str().is_empty()));
});
