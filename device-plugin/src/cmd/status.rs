//! `status`: the node state as a table or JSON.

use std::process::ExitCode;

/// `status`: the node's pool ENIs as the node state has them.
pub fn status(state_dir: &std::path::Path, as_json: bool) -> ExitCode {
    let store = nodeeni_state::node::NodeStore::new(state_dir);
    if !store.exists() {
        eprintln!("no node state at {} (has the daemon run on this node?)", store.path().display());
        return ExitCode::FAILURE;
    }
    let state = match store.load(std::time::Duration::from_secs(5)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    if as_json {
        match serde_json::to_string_pretty(&state) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        }
        return ExitCode::SUCCESS;
    }
    let dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    println!(
        "{:<24} {:<12} {:<7} {:<10} {:<4} {:<5} {:<10} {:<13} {:<18} {:<16} {:<7} HELD BY",
        "ENI", "POOL", "MODE", "STATE", "CARD", "INDEX", "IFNAME", "PCI", "MAC", "ADDRESS", "SRC/DST"
    );
    for e in &state.enis {
        println!(
            "{:<24} {:<12} {:<7} {:<10} {:<4} {:<5} {:<10} {:<13} {:<18} {:<16} {:<7} {}",
            dash(e.eni_id.as_ref().map(ToString::to_string)),
            e.pool,
            e.mode.as_str(),
            e.lifecycle.as_str(),
            // The network card, where a device index is known (records before cards: card 0).
            dash(e.device_index.map(|_| e.network_card.unwrap_or(0).to_string())),
            dash(e.device_index.map(|i| i.to_string())),
            dash(e.host_ifname.clone()),
            dash(e.pci.map(|p| p.to_string())),
            dash(e.mac.map(|m| m.to_string())),
            dash(e.primary_ip.map(|ip| ip.to_string())),
            // EC2's source/destination check: `off` on the ENIs of routing pools.
            dash(e.source_dest_check.map(|c| if c { "on" } else { "off" }.to_string())),
            dash(e.allocation.as_ref().map(|a| format!("{}/{}", a.container_id, a.ifname))),
        );
    }
    ExitCode::SUCCESS
}
