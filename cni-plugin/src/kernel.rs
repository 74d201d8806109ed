//! Kernel mode: the ENI's netdev moves into the pod. The rename happens inside the pod's namespace,
//! where udev and the host's network managers never see it; the original name also rides on the
//! device as its alias, so it is recoverable from the device itself, not only from our record.
//! The steps run against [`LinkOps`] (the netlink socket of each side), so tests can fail any of them.
//!
//! The device is found by its MAC, never by name, but never by the MAC alone: a pod with NET_ADMIN
//! can give any link the ENI's MAC. [`find`] takes the link whose permanent address or PCI device
//! (which no pod can make) says it is the ENI. At DEL, where ADD saw such a hardware identity (the
//! record keeps the PCI device then), nothing less is taken: a look-alike could otherwise copy the
//! MAC, the alias and, once the ENI has left the pod, even its ifindex. Where the kernel reported
//! neither (a veth stand-in), the link in the pod must carry the MAC, the alias ADD set and the
//! ifindex ADD recorded (when the record has it), and several such links are never guessed between.

use nodeeni_conf::cni::{CniResult, Interface, Route};
use nodeeni_conf::{MacAddr, PciAddress};
use nodeeni_host::netlink::{Link, NetlinkError};
use nodeeni_host::netns::NetNs;
use nodeeni_state::attachment::HostLinkState;

use crate::error::{PluginError, Result};
use crate::link_ops::LinkOps;

const EEXIST: i32 = 17;

/// A kernel step that failed: the kernel refused, or the ENI could not be told from a look-alike.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error(
        "{count} links carry {mac} ({names}) and nothing the kernel reports tells which is the ENI; none is touched"
    )]
    Ambiguous { mac: MacAddr, count: usize, names: String },
}

/// What identifies the ENI's netdev beyond its MAC.
#[derive(Debug, Clone, Copy)]
pub struct Identity<'a> {
    pub mac: MacAddr,
    /// The PCI device, when known (ADD saw it in sysfs, or the kernel reported it).
    pub pci: Option<PciAddress>,
    /// The alias ADD set (the host name), required of a link without a hardware identity in the pod.
    pub alias: Option<&'a str>,
    /// The ifindex the device had, when known: it keeps it across namespaces unless it is taken.
    pub index: Option<u32>,
    /// In a pod's namespace, where links with the ENI's MAC may be forged: several candidates are an
    /// error, not a guess. On the host (no pod can make links there) the first is taken, as before.
    pub in_pod: bool,
    /// DEL of an ENI the kernel vouched for at ADD: only a link whose permanent address or PCI device
    /// says it is the ENI is taken, never one that merely carries its MAC and alias.
    pub hardware_only: bool,
    /// DEL: in the pod, a link without a hardware identity is taken only at [`Identity::index`] (when
    /// known). ADD's own look after the move does not ask it (the kernel may renumber a link whose
    /// index the pod's namespace already uses).
    pub at_index_only: bool,
}

impl<'a> Identity<'a> {
    /// ADD, on the host, before the move: the MAC, and the PCI device when known.
    pub fn on_host(mac: MacAddr, pci: Option<PciAddress>) -> Self {
        Self { mac, pci, alias: None, index: None, in_pod: false, hardware_only: false, at_index_only: false }
    }

    /// DEL: the ENI as ADD recorded it. `pci` is the record's, which in kernel mode ADD keeps only when
    /// the kernel vouched for the device (see [`vouched_pci`]): then only hardware is taken.
    pub fn recorded(mac: MacAddr, pci: Option<PciAddress>, before: &'a HostLinkState) -> Self {
        Self {
            mac,
            pci,
            alias: Some(&before.name),
            index: before.ifindex,
            in_pod: true,
            hardware_only: pci.is_some(),
            at_index_only: true,
        }
    }
}

/// What ADD records as the ENI's PCI device in kernel mode: the one the kernel reports as the link's
/// parent, else `known` (from the node state or sysfs) when the link has the MAC as its permanent
/// address. None when the kernel vouches for nothing (a veth stand-in): DEL then goes by MAC, alias
/// and ifindex.
pub fn vouched_pci(link: &Link, known: Option<PciAddress>) -> Option<PciAddress> {
    match (link.parent_pci, link.perm_mac) {
        (Some(parent), _) => Some(parent),
        (None, Some(perm)) if link.mac == Some(perm) => known,
        _ => None,
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// The permanent address or the PCI device says it is the ENI.
    Hardware,
    /// Nothing says otherwise: the MAC (and, in a pod, the alias) match.
    Plausible,
    Not,
}

fn judge(link: &Link, id: &Identity) -> Verdict {
    if link.perm_mac.is_some_and(|p| p != id.mac) {
        return Verdict::Not;
    }
    if let (Some(have), Some(want)) = (link.parent_pci, id.pci)
        && have != want
    {
        return Verdict::Not;
    }
    if link.perm_mac == Some(id.mac) || (link.parent_pci.is_some() && link.parent_pci == id.pci) {
        return Verdict::Hardware;
    }
    if link.mac != Some(id.mac) || (id.in_pod && id.alias.is_some_and(|a| link.alias.as_deref() != Some(a))) {
        return Verdict::Not;
    }
    Verdict::Plausible
}

/// The ENI's link among those `ops` sees with its MAC (see the module's doc).
pub fn find(ops: &mut impl LinkOps, id: &Identity) -> std::result::Result<Option<Link>, StepError> {
    let links = ops.links_by_mac(id.mac)?;
    let of = |v: Verdict| links.iter().filter(|l| judge(l, id) == v).cloned().collect::<Vec<Link>>();
    let ambiguous = |found: &[Link]| StepError::Ambiguous {
        mac: id.mac,
        count: found.len(),
        names: found.iter().map(|l| l.name.as_str()).collect::<Vec<_>>().join(", "),
    };
    let hardware = of(Verdict::Hardware);
    match hardware.len() {
        0 if id.hardware_only => return Ok(None),
        0 => {}
        1 => return Ok(hardware.into_iter().next()),
        _ => return Err(ambiguous(&hardware)),
    }
    let mut plausible = of(Verdict::Plausible);
    if id.in_pod
        && id.at_index_only
        && let Some(index) = id.index
    {
        plausible.retain(|l| l.index == index);
    }
    if plausible.len() <= 1 || !id.in_pod {
        let at_index = plausible.iter().find(|l| Some(l.index) == id.index).cloned();
        return Ok(at_index.or_else(|| plausible.into_iter().next()));
    }
    let at_index: Vec<Link> = plausible.iter().filter(|l| Some(l.index) == id.index).cloned().collect();
    if at_index.len() == 1 {
        return Ok(at_index.into_iter().next());
    }
    Err(ambiguous(&plausible))
}

/// The link's state now, to put back later.
pub fn capture(host: &mut impl LinkOps, link: &Link) -> std::result::Result<HostLinkState, NetlinkError> {
    Ok(HostLinkState {
        name: link.name.clone(),
        mtu: link.mtu,
        up: link.up,
        addresses: host.addresses(link.index)?,
        alias: link.alias.clone(),
        ifindex: Some(link.index),
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
    // A link the pod already gave this MAC is not the one that arrived: the alias and index tell.
    let arrived = Identity {
        alias: Some(&link.name),
        index: Some(link.index),
        in_pod: true,
        ..Identity::on_host(mac, link.parent_pci)
    };
    let moved = find(pod, &arrived)?
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

/// Takes the ENI's link (see [`find`]) out of the pod, if it is there: down, renamed back inside the
/// pod, then moved to the host. Returns whether it was found.
pub fn move_out(
    pod: &mut impl LinkOps,
    host_ns: &NetNs,
    id: &Identity,
    original: &str,
) -> std::result::Result<bool, StepError> {
    let Some(link) = find(pod, &Identity { in_pod: true, ..*id })? else { return Ok(false) };
    let mac = id.mac;
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

/// Puts the host link (found by [`find`], never by name: the kernel may have returned it as the pod's
/// ifname or `devN`) back to its recorded name, MTU, addresses, alias and state. Returns whether the
/// link was found.
pub fn restore_on_host(
    host: &mut impl LinkOps,
    id: &Identity,
    before: &HostLinkState,
) -> std::result::Result<bool, StepError> {
    let Some(link) = find(host, &Identity { in_pod: false, ..*id })? else { return Ok(false) };
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
pub fn verify(pod: &mut impl LinkOps, ifname: &str, expected: &CniResult) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link_ops::fake::{Fake, FakeLink, Side};

    const ENI_INDEX: u32 = 7;

    fn mac() -> MacAddr {
        "0a:00:00:00:00:11".parse().expect("mac")
    }

    fn pci() -> PciAddress {
        "0000:00:06.0".parse().expect("pci")
    }

    fn before() -> HostLinkState {
        HostLinkState {
            name: "eth1".into(),
            mtu: 1500,
            up: false,
            addresses: Vec::new(),
            alias: None,
            ifindex: Some(ENI_INDEX),
        }
    }

    /// A link in the pod with the ENI's MAC and the alias ADD set; `hardware` gives it the ENI's
    /// permanent address, as the ENA driver reports it.
    fn in_pod(index: u32, name: &str, hardware: bool) -> FakeLink {
        let mut l = FakeLink::new(Side::Pod, index, name, Some(mac()), 1500, true);
        l.alias = Some("eth1".into());
        l.perm_mac = hardware.then(mac);
        l
    }

    fn found(links: Vec<FakeLink>, id: &Identity) -> Option<String> {
        let fake = Fake::new(links);
        find(&mut fake.side(Side::Pod), id).expect("find").map(|l| l.name)
    }

    /// Where ADD saw the kernel vouch for the ENI (the record keeps its PCI device), a link that only
    /// carries its MAC and alias is never taken, even at the recorded ifindex (once the ENI left the
    /// pod, a look-alike can have it). Before, such a link was taken as the ENI.
    #[test]
    fn a_recorded_hardware_identity_takes_only_hardware() {
        let before = before();
        let id = Identity::recorded(mac(), Some(pci()), &before);
        assert_eq!(found(vec![in_pod(ENI_INDEX, "net1", false)], &id), None, "a look-alike at the ENI's index");
        assert_eq!(found(vec![in_pod(3, "net1", false)], &id), None);
        let both = vec![in_pod(2, "decoy", false), in_pod(ENI_INDEX, "net1", true)];
        assert_eq!(found(both, &id).as_deref(), Some("net1"), "the ENI, by its permanent address");
        let mut by_parent = in_pod(ENI_INDEX, "net1", false);
        by_parent.parent_pci = Some(pci());
        assert_eq!(found(vec![by_parent], &id).as_deref(), Some("net1"), "the ENI, by its PCI device");
    }

    /// Where the kernel vouched for nothing (veth stand-ins), the link in the pod must be at the ifindex
    /// ADD recorded. Before, a single link with the MAC and alias was taken wherever it was.
    #[test]
    fn without_hardware_a_known_ifindex_must_match_in_the_pod() {
        let before = before();
        let id = Identity::recorded(mac(), None, &before);
        assert_eq!(found(vec![in_pod(3, "decoy", false)], &id), None, "a look-alike at another index");
        assert_eq!(found(vec![in_pod(ENI_INDEX, "net1", false)], &id).as_deref(), Some("net1"));
        let both = vec![in_pod(3, "decoy", false), in_pod(ENI_INDEX, "net1", false)];
        assert_eq!(found(both, &id).as_deref(), Some("net1"));
        // A record from before ifindexes were kept: one look-alike is all there is to go by.
        let old = HostLinkState { ifindex: None, ..before.clone() };
        assert_eq!(
            found(vec![in_pod(3, "net1", false)], &Identity::recorded(mac(), None, &old)).as_deref(),
            Some("net1")
        );
        // ADD's own look after the move is not bound to the index (the kernel may renumber the link).
        let arrived =
            Identity { alias: Some("eth1"), index: Some(ENI_INDEX), in_pod: true, ..Identity::on_host(mac(), None) };
        assert_eq!(found(vec![in_pod(3, "net1", false)], &arrived).as_deref(), Some("net1"));
    }

    #[test]
    fn the_record_keeps_a_pci_device_only_where_the_kernel_vouches_for_it() {
        let link = |perm: Option<MacAddr>, parent: Option<PciAddress>| Link {
            index: ENI_INDEX,
            name: "eth1".into(),
            mac: Some(mac()),
            mtu: 1500,
            up: false,
            alias: None,
            perm_mac: perm,
            parent_pci: parent,
        };
        let other: PciAddress = "0000:00:07.0".parse().expect("pci");
        assert_eq!(vouched_pci(&link(None, Some(other)), Some(pci())), Some(other), "the kernel's parent device");
        assert_eq!(vouched_pci(&link(Some(mac()), None), Some(pci())), Some(pci()), "a permanent address");
        assert_eq!(vouched_pci(&link(None, None), Some(pci())), None, "a veth stand-in in an emulated sysfs");
        let changed: MacAddr = "0a:00:00:00:00:99".parse().expect("mac");
        assert_eq!(vouched_pci(&link(Some(changed), None), Some(pci())), None, "a MAC that is not the permanent one");
    }
}
