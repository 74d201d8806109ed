//! Kernel mode: the ENI's netdev moves into the pod. The rename happens inside the pod's namespace,
//! where udev and the host's network managers never see it; the original name also rides on the
//! device as its alias, so it is recoverable from the device itself, not only from our record.
//! The steps run against [`LinkOps`] (the netlink socket of each side), so tests can fail any of them.

use nodeeni_conf::MacAddr;
use nodeeni_conf::cni::{CniResult, Interface, Route};
use nodeeni_host::netlink::{Link, Netlink, NetlinkError};
use nodeeni_host::netns::NetNs;
use nodeeni_state::attachment::HostLinkState;

use crate::error::{PluginError, Result};
use crate::link_ops::LinkOps;

const EEXIST: i32 = 17;

/// The link's state now, to put back later.
pub fn capture(host: &mut impl LinkOps, link: &Link) -> std::result::Result<HostLinkState, NetlinkError> {
    Ok(HostLinkState {
        name: link.name.clone(),
        mtu: link.mtu,
        up: link.up,
        addresses: host.addresses(link.index)?,
        alias: link.alias.clone(),
    })
}

/// A name no pod or host interface is likely to hold, for when the original name is taken.
fn parking_name(mac: MacAddr) -> String {
    let m = mac.0;
    format!("neni{:02x}{:02x}{:02x}", m[3], m[4], m[5])
}

/// Moves the host link into the pod, named `ifname`, with `mtu`, up, carrying `ipam`'s addresses and
/// routes. Returns the pod-side link.
pub fn move_in(
    host: &mut impl LinkOps,
    pod: &mut impl LinkOps,
    pod_ns: &NetNs,
    link: &Link,
    ifname: &str,
    mtu: Option<u32>,
    ipam: &CniResult,
) -> Result<Link> {
    let mac = link.mac.ok_or_else(|| PluginError::DeviceNotFound(format!("{} has no MAC address", link.name)))?;
    if link.up {
        host.set_up(link.index, false)?;
    }
    host.set_alias(link.index, &link.name)?;
    host.move_to_netns(link.index, pod_ns)?;
    let moved = pod
        .link_by_mac(mac)?
        .ok_or_else(|| PluginError::DeviceNotFound(format!("{mac} did not arrive in the pod's namespace")))?;
    pod.set_name(moved.index, ifname)?;
    if let Some(mtu) = mtu
        && mtu != moved.mtu
    {
        pod.set_mtu(moved.index, mtu)?;
    }
    pod.set_up(moved.index, true)?;
    for ip in &ipam.ips {
        pod.add_address(moved.index, &ip.address)?;
    }
    for Route { dst, gw, mtu, .. } in &ipam.routes {
        pod.add_route(moved.index, dst, *gw, *mtu)?;
    }
    pod.link_by_index(moved.index)?
        .ok_or_else(|| PluginError::DeviceNotFound(format!("{ifname} vanished from the pod's namespace")))
}

/// Takes the link (found by MAC) out of the pod, if it is there: down, addresses removed, renamed back
/// inside the pod, then moved to the host. Returns whether it was found.
pub fn move_out(
    pod: &mut impl LinkOps,
    host_ns: &NetNs,
    mac: MacAddr,
    original: &str,
) -> std::result::Result<bool, NetlinkError> {
    let Some(link) = pod.link_by_mac(mac)? else { return Ok(false) };
    // Down for the rename (the kernel refuses to rename a running link); the move itself flushes the
    // pod's addresses, so they are not deleted one by one.
    pod.set_up(link.index, false)?;
    if link.name != original {
        match pod.set_name(link.index, original) {
            Err(e) if e.errno() == Some(EEXIST) => pod.set_name(link.index, &parking_name(mac))?,
            other => other?,
        }
    }
    match pod.move_to_netns(link.index, host_ns) {
        // The host took the name meanwhile: park it under a unique name; the host side fixes it up.
        Err(e) if e.errno() == Some(EEXIST) => {
            pod.set_name(link.index, &parking_name(mac))?;
            pod.move_to_netns(link.index, host_ns)?;
        }
        other => other?,
    }
    Ok(true)
}

/// Puts the host link (found by MAC, never by name: the kernel may have returned it as the pod's
/// ifname or `devN`) back to its recorded name, MTU, addresses, alias and state. Returns whether the
/// link was found.
pub fn restore_on_host(
    host: &mut impl LinkOps,
    mac: MacAddr,
    before: &HostLinkState,
) -> std::result::Result<bool, NetlinkError> {
    let Some(link) = host.link_by_mac(mac)? else { return Ok(false) };
    let mut up = link.up;
    if link.name != before.name {
        if link.up {
            host.set_up(link.index, false)?;
            up = false;
        }
        host.set_name(link.index, &before.name)?;
    }
    if link.mtu != before.mtu {
        host.set_mtu(link.index, before.mtu)?;
    }
    let present = host.addresses(link.index)?;
    for addr in before.addresses.iter().filter(|a| !present.contains(a)) {
        host.add_address(link.index, addr)?;
    }
    host.set_alias(link.index, before.alias.as_deref().unwrap_or(""))?;
    if up != before.up {
        host.set_up(link.index, before.up)?;
    }
    Ok(true)
}

/// The result's interface entry for the pod-side link.
pub fn interface(link: &Link, sandbox: &str, pci: Option<String>) -> Interface {
    Interface {
        name: link.name.clone(),
        mac: link.mac.map(|m| m.to_string()),
        mtu: Some(link.mtu),
        sandbox: Some(sandbox.to_string()),
        socket_path: None,
        pci_id: pci,
    }
}

/// CHECK: the pod-side interface is as ADD left it.
pub fn verify(pod: &mut Netlink, ifname: &str, expected: &CniResult) -> Result<()> {
    let link = pod
        .link_by_name(ifname)?
        .ok_or_else(|| PluginError::CheckMismatch(format!("interface {ifname} is missing from the pod")))?;
    let mismatch = |what: String| Err(PluginError::CheckMismatch(format!("{ifname}: {what}")));
    if let Some(want) = expected.interfaces.iter().find(|i| i.name == ifname) {
        let have_mac = link.mac.map(|m| m.to_string());
        if want.mac.is_some() && want.mac != have_mac {
            return mismatch(format!("MAC is {have_mac:?}, expected {:?}", want.mac));
        }
        if let Some(mtu) = want.mtu
            && mtu != link.mtu
        {
            return mismatch(format!("MTU is {}, expected {mtu}", link.mtu));
        }
    }
    if !link.up {
        return mismatch("is down".into());
    }
    let addrs = pod.addresses(link.index)?;
    for ip in &expected.ips {
        if !addrs.contains(&ip.address) {
            return mismatch(format!("address {} is missing", ip.address));
        }
    }
    let routes = pod.routes(link.index)?;
    for r in &expected.routes {
        if !routes
            .iter()
            .any(|have| have.dst.network() == r.dst.network() && have.dst.prefix == r.dst.prefix && have.gw == r.gw)
        {
            return mismatch(format!("route to {} is missing", r.dst));
        }
    }
    Ok(())
}
