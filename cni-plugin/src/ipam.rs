//! Addresses: delegated to the IPAM plugin the config names (found through CNI_PATH, run exactly as the
//! spec says: same environment, same config on stdin), or, with no `ipam` section, the ENI's own VPC
//! addresses from the node state, since the VPC routes only those.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use nodeeni_conf::cni::{CniEnv, CniResult, IpConfig, NetConf};
use nodeeni_state::node::EniRecord;
use serde_json::Value;

use crate::error::{PluginError, Result};

fn find_plugin(plugin: &str, env: &CniEnv) -> Result<PathBuf> {
    env.path.iter().map(|dir| dir.join(plugin)).find(|p| p.is_file()).ok_or_else(|| PluginError::Ipam {
        plugin: plugin.to_string(),
        code: None,
        msg: format!(
            "not found in CNI_PATH ({})",
            env.path.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(":")
        ),
    })
}

/// Which attachment a delegated call is for (GC undoes attachments other than the one in the env).
#[derive(Debug, Clone, Copy)]
pub struct For<'a> {
    pub container_id: &'a str,
    pub ifname: &'a str,
    pub netns: Option<&'a str>,
}

/// Runs the delegate with `command` (ADD, DEL, CHECK) for `who`. ADD returns its result.
pub fn delegate(plugin: &str, command: &str, who: For, env: &CniEnv, conf: &NetConf) -> Result<Option<CniResult>> {
    let bin = find_plugin(plugin, env)?;
    tracing::debug!(plugin, command, "delegating to IPAM");
    let err = |code, msg: String| PluginError::Ipam { plugin: plugin.to_string(), code, msg };
    let mut cmd = Command::new(&bin);
    cmd.env("CNI_COMMAND", command).env("CNI_CONTAINERID", who.container_id).env("CNI_IFNAME", who.ifname);
    match who.netns {
        Some(ns) => cmd.env("CNI_NETNS", ns),
        None => cmd.env_remove("CNI_NETNS"),
    };
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| err(None, format!("cannot run {}: {e}", bin.display())))?;
    let input = serde_json::to_vec(&conf.raw).map_err(|e| err(None, e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(&input).map_err(|e| err(None, format!("writing its stdin: {e}")))?;
    }
    let out = child.wait_with_output().map_err(|e| err(None, e.to_string()))?;
    if !out.status.success() {
        let reply: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        let code = reply.get("code").and_then(Value::as_u64).map(|c| c as u32);
        let msg = reply
            .get("msg")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(&out.stderr).trim().to_string());
        return Err(err(code, msg));
    }
    if command != "ADD" {
        return Ok(None);
    }
    let reply: Value = serde_json::from_slice(&out.stdout).map_err(|e| err(None, format!("unreadable result: {e}")))?;
    CniResult::parse(&reply).map(Some).map_err(|e| err(Some(e.code), e.msg))
}

/// The ENI's VPC addresses (primary, then secondaries) with the VPC router as gateway, then its IPv6
/// addresses without one: on EC2 the IPv6 router is reached by the link-local address its router
/// advertisements carry, which the kernel learns in the pod's namespace as on the instance.
pub fn vpc_addresses(record: &EniRecord) -> Result<CniResult> {
    let addresses = record.vpc_addresses();
    if addresses.is_empty() {
        let id = record.eni_id.as_ref().map_or("(no ID)".to_string(), |e| e.to_string());
        return Err(PluginError::Ipam {
            plugin: "vpc".into(),
            code: None,
            msg: format!("the node state has no address or subnet CIDR for {id}"),
        });
    }
    let gateway = record.vpc_gateway();
    Ok(CniResult {
        ips: addresses
            .into_iter()
            .map(|address| IpConfig { gateway: gateway.filter(|_| address.is_ipv4()), address, interface: None })
            .collect(),
        ..CniResult::default()
    })
}
