//! `nodeeni-ipam`: the IPAM plugin for interfaces that sit on a `host` pool's ENI (ipvlan, macvlan, a
//! bridge or ptp on it). The VPC delivers only addresses assigned to an ENI, so a pod on a host ENI
//! gets one of that ENI's secondary private IPs (and, where the pool asks for IPv6, one of its IPv6
//! addresses), with the subnet's prefix and the VPC router as gateway. Each address handed out is
//! recorded per container and ifname in the node state, under its lock: never twice, released on
//! DEL, on GC and by a reboot (the boot ID), checked on CHECK. The daemon keeps enough free addresses
//! assigned (`warmIpTarget`).
//!
//! The same executable as `nodeeni`, run under this name. Its configuration is the main plugin's,
//! with `"ipam": {"type": "nodeeni-ipam", "pool": "<host pool>"}`; with several ENIs in the pool the
//! main plugin's `master` names the one. Both are only compared with the node state's records,
//! never used as a path or a device. Node settings (the state folder) come from the node file as for
//! `nodeeni`; a network configuration cannot move them.

use std::net::IpAddr;
use std::time::Duration;

use nodeeni_conf::Mode;
use nodeeni_conf::cni::{
    Attachment, CniEnv, CniError, CniResult, CniVersion, Command, ContainerId, IpConfig, NetConf, Route, codes,
};
use nodeeni_conf::net::IpNet;
use nodeeni_state::node::{EniRecord, IpHold, Lifecycle, NodeState, NodeStore, now_unix};
use serde_json::{Map, Value};

use crate::error::{PluginError, Result};

/// The name this executable answers to as the IPAM plugin.
pub const PLUGIN_NAME: &str = "nodeeni-ipam";

pub const HELP: &str = "\
nodeeni-ipam — IPAM plugin: a pod's address from a nodeeni host pool's ENI

Run by the main plugin (ipvlan, macvlan, bridge, ptp, ...) as its IPAM, not by hand. Configure it in
the main plugin's network configuration:

  \"ipam\": {\"type\": \"nodeeni-ipam\", \"pool\": \"<host pool>\", \"routes\": [{\"dst\": \"0.0.0.0/0\"}]}

ADD hands out one of the pool ENI's secondary private IPs (and one of its IPv6 addresses when the pool
has ipv6AddressCount) with the subnet's prefix and the VPC router as IPv4 gateway; with several ENIs
in the pool, the main plugin's `master` names the one (its host name, <prefix><device index>). DEL
releases it; CHECK verifies it; GC releases what cni.dev/valid-attachments leaves out; STATUS says
whether the pool has a ready ENI. The nodeeni daemon keeps warmIpTarget free addresses on each ENI.

Options: --help, --version";

/// How long a call waits for the node-state lock.
const LOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// What the configuration says to this plugin.
#[derive(Debug, Clone)]
pub struct IpamConf {
    pub cni_version: CniVersion,
    pub cni_version_str: String,
    pub name: String,
    /// The host pool to take addresses from.
    pub pool: String,
    /// The main plugin's `master`: which of the pool's ENIs (by host name).
    pub master: Option<String>,
    /// `ipam.routes`, returned as given.
    pub routes: Vec<Route>,
    /// GC: the attachments the runtime still uses.
    pub valid_attachments: Option<Vec<Attachment>>,
}

fn field_err(field: &str, msg: impl std::fmt::Display) -> CniError {
    CniError::invalid_config(format!("{field}: {msg}"))
}

fn opt_str<'a>(m: &'a Map<String, Value>, key: &str, at: &str) -> std::result::Result<Option<&'a str>, CniError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(field_err(at, "must be a string")),
    }
}

impl IpamConf {
    /// Reads the main plugin's configuration: only the keys this plugin needs (the rest is the main
    /// plugin's, whatever it is).
    pub fn parse(bytes: &[u8]) -> std::result::Result<Self, CniError> {
        let decode =
            |e: String| CniError::new(codes::DECODE_FAILURE, format!("cannot decode the configuration: {e}"), "");
        let raw: Value = serde_json::from_slice(bytes).map_err(|e| decode(e.to_string()))?;
        let Value::Object(m) = &raw else { return Err(decode("expected a JSON object".into())) };
        let cni_version_str =
            opt_str(m, "cniVersion", "cniVersion")?.ok_or_else(|| field_err("cniVersion", "required"))?.to_string();
        let cni_version: CniVersion = cni_version_str.parse()?;
        let name = opt_str(m, "name", "name")?.ok_or_else(|| field_err("name", "required"))?.to_string();
        let Some(Value::Object(ipam)) = m.get("ipam") else {
            return Err(field_err("ipam", "required: {\"type\": \"nodeeni-ipam\", \"pool\": \"<host pool>\"}"));
        };
        let pool = opt_str(ipam, "pool", "ipam.pool")?
            .ok_or_else(|| field_err("ipam.pool", "required: the host pool whose ENI's addresses pods get"))?;
        if pool.is_empty() || pool.len() > 253 {
            return Err(field_err("ipam.pool", "must be a pool name (1-253 characters)"));
        }
        let master = opt_str(m, "master", "master")?.map(str::to_string);
        let routes = match ipam.get("routes") {
            None | Some(Value::Null) => Vec::new(),
            Some(v) => serde_json::from_value(v.clone()).map_err(|e| field_err("ipam.routes", e))?,
        };
        let valid_attachments = match m.get("cni.dev/valid-attachments") {
            None | Some(Value::Null) => None,
            Some(v) => Some(serde_json::from_value(v.clone()).map_err(|e| field_err("cni.dev/valid-attachments", e))?),
        };
        Ok(Self { cni_version, cni_version_str, name, pool: pool.to_string(), master, routes, valid_attachments })
    }

    /// A configuration of this network with nothing but its version, name and type: what the node
    /// settings are resolved from (no path of a tenant's reaches them).
    pub fn settings_conf(&self) -> std::result::Result<NetConf, CniError> {
        let doc = serde_json::json!({"cniVersion": self.cni_version_str, "name": self.name, "type": PLUGIN_NAME});
        NetConf::parse(doc.to_string().as_bytes())
    }
}

fn of_pool<'s>(state: &'s NodeState, pool: &str) -> impl Iterator<Item = (usize, &'s EniRecord)> + 's {
    let pool = pool.to_string();
    state.enis.iter().enumerate().filter(move |(_, r)| r.pool == pool && r.eni_id.is_some())
}

fn held_by(rec: &EniRecord, container: &ContainerId, ifname: &str) -> Vec<IpAddr> {
    rec.ip_holds.iter().filter(|h| &h.container_id == container && h.ifname == ifname).map(|h| h.ip).collect()
}

/// The pool's ENI this attachment takes its address from: the one `master` names, or the only one.
fn pick(state: &NodeState, conf: &IpamConf) -> Result<usize> {
    let enis: Vec<(usize, &EniRecord)> = of_pool(state, &conf.pool).collect();
    if let Some((_, r)) = enis.iter().find(|(_, r)| r.mode != Mode::Host) {
        return Err(PluginError::Refused(format!(
            "pool {} is a {} pool: its ENIs go to pods whole; nodeeni-ipam serves host pools",
            conf.pool, r.mode
        )));
    }
    let names = || enis.iter().filter_map(|(_, r)| r.host_ifname.clone()).collect::<Vec<_>>().join(", ");
    let chosen = match &conf.master {
        Some(master) => {
            enis.iter().find(|(_, r)| r.host_ifname.as_deref() == Some(master.as_str())).ok_or_else(|| {
                PluginError::DeviceNotFound(format!(
                    "master {master:?} is not an ENI of host pool {} on this node (its ENIs: {})",
                    conf.pool,
                    names()
                ))
            })?
        }
        None => match enis.as_slice() {
            [one] => one,
            [] => {
                return Err(PluginError::DeviceNotFound(format!(
                    "host pool {} has no ENI on this node (is the pool declared for this node, and the daemon running?)",
                    conf.pool
                )));
            }
            more => {
                return Err(PluginError::Refused(format!(
                    "host pool {} has {} ENIs here ({}): the main plugin's master must name one",
                    conf.pool,
                    more.len(),
                    names()
                )));
            }
        },
    };
    if chosen.1.lifecycle != Lifecycle::Ready {
        return Err(PluginError::Cni(CniError::new(
            codes::TRY_AGAIN_LATER,
            format!(
                "ENI {} of host pool {} is {}, not ready; try again later",
                chosen.1.eni_id.as_ref().map_or("?".to_string(), |e| e.to_string()),
                conf.pool,
                chosen.1.lifecycle.as_str()
            ),
            "",
        )));
    }
    Ok(chosen.0)
}

/// The result for `ips` of `rec`: each with its subnet's prefix, IPv4 with the VPC router as gateway.
fn result_of(rec: &EniRecord, ips: &[IpAddr], conf: &IpamConf) -> Result<CniResult> {
    let mut out = CniResult { routes: conf.routes.clone(), ..CniResult::default() };
    for ip in ips {
        let (cidr, gateway) =
            if ip.is_ipv4() { (rec.subnet_cidr, rec.vpc_gateway()) } else { (rec.subnet_ipv6_cidr, None) };
        let address = cidr.and_then(|c| IpNet::new(*ip, c.prefix)).ok_or_else(|| {
            PluginError::Refused(format!("the node state has no subnet CIDR for {ip} of pool {}", conf.pool))
        })?;
        out.ips.push(IpConfig { address, gateway, interface: None });
    }
    Ok(out)
}

/// ADD: the attachment's addresses (the same again on a repeated ADD), taken under the node-state lock.
pub fn add(store: &NodeStore, conf: &IpamConf, container: &ContainerId, ifname: &str) -> Result<CniResult> {
    store.update(LOCK_TIMEOUT, |state| {
        for (_, rec) in of_pool(state, &conf.pool) {
            let held = held_by(rec, container, ifname);
            if !held.is_empty() {
                tracing::info!(pool = conf.pool, ips = ?held, "addresses already held by this attachment");
                return result_of(rec, &held, conf);
            }
        }
        let i = pick(state, conf)?;
        let rec = &mut state.enis[i];
        let eni = rec.eni_id.as_ref().map(ToString::to_string).unwrap_or_default();
        let exhausted = |family: &str, rec: &EniRecord| {
            PluginError::PoolExhausted(format!(
                "{eni} (host pool {}) has no free {family} address: {} held, {} assigned; the nodeeni daemon assigns \
                 more up to the pool's warmIpTarget and maxIpsPerEni",
                conf.pool,
                rec.ip_holds.len(),
                rec.secondary_ips.len() + rec.ipv6_addresses.len()
            ))
        };
        let mut ips = vec![*rec.free_ipv4().first().ok_or_else(|| exhausted("IPv4", rec))?];
        // A pool with IPv6 gives each pod one of those too.
        if !rec.ipv6_addresses.is_empty() && rec.subnet_ipv6_cidr.is_some() {
            ips.push(*rec.free_ipv6().first().ok_or_else(|| exhausted("IPv6", rec))?);
        }
        let since_unix = now_unix();
        for ip in &ips {
            rec.ip_holds.push(IpHold {
                ip: *ip,
                container_id: container.clone(),
                ifname: ifname.to_string(),
                since_unix,
            });
        }
        tracing::info!(eni, pool = conf.pool, ?ips, free_left = rec.free_ipv4().len(), "addresses handed out");
        result_of(rec, &ips, conf)
    })
}

/// DEL: releases whatever the attachment holds, on any ENI. Nothing held is success.
pub fn del(store: &NodeStore, container: &ContainerId, ifname: &str) -> Result<()> {
    if !store.exists() {
        return Ok(());
    }
    store.update(LOCK_TIMEOUT, |state| {
        for rec in &mut state.enis {
            let before = rec.ip_holds.len();
            rec.ip_holds.retain(|h| !(&h.container_id == container && h.ifname == ifname));
            if rec.ip_holds.len() != before {
                tracing::info!(eni = ?rec.eni_id, pool = rec.pool, released = before - rec.ip_holds.len(), "addresses released");
            }
        }
        Ok::<_, PluginError>(())
    })
}

/// CHECK: the attachment holds addresses of the pool's ENI, and EC2 (as last listed) still has them
/// on it.
pub fn check(store: &NodeStore, conf: &IpamConf, container: &ContainerId, ifname: &str) -> Result<()> {
    let state = store.load(LOCK_TIMEOUT)?;
    let Some((_, rec)) = of_pool(&state, &conf.pool).find(|(_, r)| !held_by(r, container, ifname).is_empty()) else {
        return Err(PluginError::CheckMismatch(format!(
            "{container}/{ifname} holds no address of host pool {}",
            conf.pool
        )));
    };
    for ip in held_by(rec, container, ifname) {
        if !rec.secondary_ips.contains(&ip) && !rec.ipv6_addresses.contains(&ip) {
            return Err(PluginError::CheckMismatch(format!(
                "{ip} is held by {container}/{ifname} but is no longer assigned to {}",
                rec.eni_id.as_ref().map_or("its ENI".to_string(), |e| e.to_string())
            )));
        }
    }
    if rec.lifecycle != Lifecycle::Ready {
        return Err(PluginError::CheckMismatch(format!("the ENI is {}, not ready", rec.lifecycle.as_str())));
    }
    Ok(())
}

/// GC: releases the pool's addresses held by attachments the runtime no longer lists.
pub fn gc(store: &NodeStore, conf: &IpamConf) -> Result<()> {
    let valid = conf.valid_attachments.as_ref().ok_or_else(|| {
        CniError::invalid_config("GC needs cni.dev/valid-attachments (the attachments still in use); refusing to guess")
    })?;
    if !store.exists() {
        return Ok(());
    }
    store.update(LOCK_TIMEOUT, |state| {
        for rec in state.enis.iter_mut().filter(|r| r.pool == conf.pool) {
            rec.ip_holds.retain(|h| {
                let listed = valid.iter().any(|v| v.container_id == h.container_id.as_str() && v.ifname == h.ifname);
                if !listed {
                    tracing::info!(ip = %h.ip, container = %h.container_id, ifname = h.ifname, "GC: released");
                }
                listed
            });
        }
        Ok::<_, PluginError>(())
    })
}

/// STATUS: the pool has a ready ENI on this node.
pub fn status(store: &NodeStore, conf: &IpamConf) -> Result<()> {
    let unavailable = |msg: String| PluginError::Cni(CniError::new(codes::PLUGIN_NOT_AVAILABLE, msg, ""));
    if !store.exists() {
        return Err(unavailable(format!(
            "no node state at {} (is the nodeeni daemon running?)",
            store.path().display()
        )));
    }
    let state = store.load(LOCK_TIMEOUT)?;
    if of_pool(&state, &conf.pool).any(|(_, r)| r.lifecycle == Lifecycle::Ready && r.mode == Mode::Host) {
        Ok(())
    } else {
        Err(unavailable(format!("host pool {} has no ready ENI on this node", conf.pool)))
    }
}

/// Runs one command; the caller prints the outcome.
pub fn run(env: &CniEnv, conf: &IpamConf, store: &NodeStore) -> Result<Option<CniResult>> {
    let key = || match (&env.container_id, &env.ifname) {
        (Some(c), Some(i)) => Ok((c, i.as_str())),
        _ => Err(PluginError::Cni(CniError::invalid_env("CNI_CONTAINERID and CNI_IFNAME are required"))),
    };
    match env.command {
        Command::Add => {
            let (c, i) = key()?;
            add(store, conf, c, i).map(Some)
        }
        Command::Del => {
            let (c, i) = key()?;
            del(store, c, i).map(|()| None)
        }
        Command::Check => {
            let (c, i) = key()?;
            check(store, conf, c, i).map(|()| None)
        }
        Command::Gc => gc(store, conf).map(|()| None),
        Command::Status => status(store, conf).map(|()| None),
        Command::Version => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn host_eni(id: &str, ifname: &str, ips: &[&str]) -> EniRecord {
        EniRecord {
            eni_id: Some(id.parse().expect("eni")),
            subnet_cidr: Some("10.0.2.0/24".parse().expect("cidr")),
            primary_ip: Some(ip("10.0.2.10")),
            secondary_ips: ips.iter().map(|s| ip(s)).collect(),
            host_ifname: Some(ifname.into()),
            ..EniRecord::new("masters", Mode::Host, Lifecycle::Ready)
        }
    }

    fn setup(enis: Vec<EniRecord>) -> (tempfile::TempDir, NodeStore) {
        let dir = tempfile::tempdir().expect("dir");
        let store = NodeStore::new(dir.path()).with_boot_id(Some("boot-1".into()));
        store
            .update(Duration::from_secs(1), |s| {
                s.enis = enis;
                Ok::<_, PluginError>(())
            })
            .expect("state");
        (dir, store)
    }

    fn conf(extra: &str) -> IpamConf {
        let text = format!(
            r#"{{"cniVersion": "1.0.0", "name": "net", "type": "macvlan", "mode": "bridge", {extra} "ipam": {{"type": "nodeeni-ipam", "pool": "masters"}}}}"#
        );
        IpamConf::parse(text.as_bytes()).expect("conf")
    }

    fn container(c: &str) -> ContainerId {
        c.parse().expect("container")
    }

    #[test]
    fn each_attachment_gets_its_own_secondary_ip_and_the_same_again_on_a_repeated_add() {
        let (_d, store) = setup(vec![host_eni("eni-00000001", "multus1", &["10.0.2.11", "10.0.2.12"])]);
        let c = conf("");
        let a = add(&store, &c, &container("pod-a"), "net1").expect("a");
        assert_eq!(a.ips[0].address.to_string(), "10.0.2.11/24");
        assert_eq!(a.ips[0].gateway, Some(ip("10.0.2.1")), "the VPC router");
        let again = add(&store, &c, &container("pod-a"), "net1").expect("again");
        assert_eq!(again.ips, a.ips, "idempotent");
        let b = add(&store, &c, &container("pod-b"), "net1").expect("b");
        assert_eq!(b.ips[0].address.to_string(), "10.0.2.12/24", "never the same address twice");
        let err = add(&store, &c, &container("pod-c"), "net1").expect_err("used up");
        assert_eq!(err.to_cni().code, codes::POOL_EXHAUSTED, "{err}");
        assert!(err.to_string().contains("warmIpTarget"), "{err}");
        check(&store, &c, &container("pod-a"), "net1").expect("check");
        del(&store, &container("pod-a"), "net1").expect("del");
        del(&store, &container("pod-a"), "net1").expect("del again");
        check(&store, &c, &container("pod-a"), "net1").expect_err("released");
        let c2 = add(&store, &c, &container("pod-c"), "net1").expect("c gets the released one");
        assert_eq!(c2.ips[0].address.to_string(), "10.0.2.11/24");
    }

    #[test]
    fn master_picks_the_eni_and_tenant_names_only_match_records() {
        let (_d, store) = setup(vec![
            host_eni("eni-00000001", "multus1", &["10.0.2.11"]),
            host_eni("eni-00000002", "multus2", &["10.0.2.21"]),
        ]);
        let err = add(&store, &conf(""), &container("pod-a"), "net1").expect_err("which one");
        assert!(err.to_string().contains("master must name one"), "{err}");
        let r = add(&store, &conf(r#""master": "multus2","#), &container("pod-a"), "net1").expect("on multus2");
        assert_eq!(r.ips[0].address.to_string(), "10.0.2.21/24");
        for bad in ["../../etc/passwd", "eth0", "multus3"] {
            let err =
                add(&store, &conf(&format!(r#""master": "{bad}","#)), &container("pod-b"), "net1").expect_err(bad);
            assert_eq!(err.to_cni().code, codes::DEVICE_NOT_FOUND, "{bad}: {err}");
        }
    }

    #[test]
    fn addresses_being_returned_are_never_handed_out_and_checks_see_what_ec2_took_back() {
        let mut rec = host_eni("eni-00000001", "multus1", &["10.0.2.11", "10.0.2.12"]);
        rec.ips_releasing = vec![ip("10.0.2.11")];
        let (_d, store) = setup(vec![rec]);
        let c = conf("");
        let r = add(&store, &c, &container("pod-a"), "net1").expect("a");
        assert_eq!(r.ips[0].address.to_string(), "10.0.2.12/24", "not the one being returned");
        store
            .update(Duration::from_secs(1), |s| {
                s.enis[0].secondary_ips.retain(|i| *i != ip("10.0.2.12"));
                Ok::<_, PluginError>(())
            })
            .expect("EC2 took it back");
        let err = check(&store, &c, &container("pod-a"), "net1").expect_err("gone from the ENI");
        assert!(err.to_string().contains("no longer assigned"), "{err}");
    }

    #[test]
    fn a_dual_stack_eni_gives_each_pod_an_ipv6_address_too() {
        let mut rec = host_eni("eni-00000001", "multus1", &["10.0.2.11"]);
        rec.ipv6_addresses = vec![ip("2600:1f18::11")];
        rec.subnet_ipv6_cidr = Some("2600:1f18::/64".parse().expect("cidr"));
        let (_d, store) = setup(vec![rec]);
        let r = add(&store, &conf(""), &container("pod-a"), "net1").expect("a");
        let got: Vec<(String, Option<IpAddr>)> = r.ips.iter().map(|i| (i.address.to_string(), i.gateway)).collect();
        assert_eq!(got, [("10.0.2.11/24".to_string(), Some(ip("10.0.2.1"))), ("2600:1f18::11/64".to_string(), None)]);
    }

    #[test]
    fn gc_releases_what_the_runtime_no_longer_lists_and_kernel_pools_are_refused() {
        let (_d, store) = setup(vec![host_eni("eni-00000001", "multus1", &["10.0.2.11", "10.0.2.12"])]);
        let c = conf("");
        add(&store, &c, &container("pod-a"), "net1").expect("a");
        add(&store, &c, &container("pod-b"), "net1").expect("b");
        let gc_conf = conf(r#""cni.dev/valid-attachments": [{"containerID": "pod-b", "ifname": "net1"}],"#);
        gc(&store, &gc_conf).expect("gc");
        let state = store.load(Duration::from_secs(1)).expect("state");
        let holders: Vec<&str> = state.enis[0].ip_holds.iter().map(|h| h.container_id.as_str()).collect();
        assert_eq!(holders, ["pod-b"]);
        gc(&store, &c).expect_err("GC without the list guesses nothing");
        status(&store, &c).expect("ready");

        let mut kernel = host_eni("eni-00000003", "eth3", &["10.0.2.31"]);
        kernel.mode = Mode::Kernel;
        let (_d, store) = setup(vec![kernel]);
        let err = add(&store, &c, &container("pod-a"), "net1").expect_err("kernel pool");
        assert!(err.to_string().contains("serves host pools"), "{err}");
    }

    #[test]
    fn the_configuration_needs_a_pool_and_keeps_the_main_plugins_keys_to_itself() {
        let c = conf("");
        assert_eq!((c.pool.as_str(), c.master.as_deref()), ("masters", None));
        let no_pool = r#"{"cniVersion": "1.0.0", "name": "n", "type": "ipvlan", "ipam": {"type": "nodeeni-ipam"}}"#;
        let err = IpamConf::parse(no_pool.as_bytes()).expect_err("pool required");
        assert!(err.msg.contains("ipam.pool"), "{}", err.msg);
        // The settings are resolved from version, name and type alone.
        let s = c.settings_conf().expect("conf");
        assert_eq!((s.state_dir.as_ref(), s.log_file.as_ref()), (None, None));
    }
}
