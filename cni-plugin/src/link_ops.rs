//! The seam under the kernel steps: one method per link operation that ADD (finding the device,
//! refusing the node's own, the move into the pod), DEL's move out, the undo of either and CHECK use. The orchestration (`kernel`, `commands`: ordering, rollback)
//! runs against [`LinkOps`]; in the binary it is the netlink socket, whose real behaviour the root
//! tests check in namespaces, and in the unit tests a recording fake that can fail any call
//! (`link_ops::fake`), so every step's rollback is checked, not only the last one's.

use std::net::IpAddr;

use nodeeni_conf::MacAddr;
use nodeeni_conf::net::IpNet;
use nodeeni_host::netlink::{Link, Netlink, NetlinkError, RouteEntry};
use nodeeni_host::netns::NetNs;

#[cfg(test)]
pub mod fake;

type Result<T> = std::result::Result<T, NetlinkError>;

/// The link operations of one network namespace (a socket opened there).
pub trait LinkOps {
    fn link_by_name(&mut self, name: &str) -> Result<Option<Link>>;
    fn link_by_index(&mut self, index: u32) -> Result<Option<Link>>;
    /// Every link whose address or permanent address is `mac` (ENIs are found by MAC, never by name,
    /// and told from look-alikes by `kernel::find`).
    fn links_by_mac(&mut self, mac: MacAddr) -> Result<Vec<Link>>;
    /// The link's addresses (IPv6 link-local excluded).
    fn addresses(&mut self, index: u32) -> Result<Vec<IpNet>>;
    fn set_up(&mut self, index: u32, up: bool) -> Result<()>;
    /// Renames a link; the kernel wants it down.
    fn set_name(&mut self, index: u32, name: &str) -> Result<()>;
    fn set_mtu(&mut self, index: u32, mtu: u32) -> Result<()>;
    /// An empty alias removes it.
    fn set_alias(&mut self, index: u32, alias: &str) -> Result<()>;
    /// Moves the link into `ns`; the kernel takes it down and drops its addresses and routes.
    fn move_to_netns(&mut self, index: u32, ns: &NetNs) -> Result<()>;
    fn add_address(&mut self, index: u32, net: &IpNet) -> Result<()>;
    /// A route out of `index`, through `gw` when given (on-link otherwise).
    fn add_route(&mut self, index: u32, dst: &IpNet, gw: Option<IpAddr>, mtu: Option<u32>) -> Result<()>;
    /// Routes of the main table out of `index` (CHECK compares them with the result).
    fn routes(&mut self, index: u32) -> Result<Vec<RouteEntry>>;
    /// The links default routes leave through: the node's way out, never handed over.
    fn default_route_links(&mut self) -> Result<Vec<u32>>;
}

impl LinkOps for Netlink {
    fn link_by_name(&mut self, name: &str) -> Result<Option<Link>> {
        Netlink::link_by_name(self, name)
    }

    fn link_by_index(&mut self, index: u32) -> Result<Option<Link>> {
        Netlink::link_by_index(self, index)
    }

    fn links_by_mac(&mut self, mac: MacAddr) -> Result<Vec<Link>> {
        Netlink::links_by_mac(self, mac)
    }

    fn addresses(&mut self, index: u32) -> Result<Vec<IpNet>> {
        Netlink::addresses(self, index)
    }

    fn set_up(&mut self, index: u32, up: bool) -> Result<()> {
        Netlink::set_up(self, index, up)
    }

    fn set_name(&mut self, index: u32, name: &str) -> Result<()> {
        Netlink::set_name(self, index, name)
    }

    fn set_mtu(&mut self, index: u32, mtu: u32) -> Result<()> {
        Netlink::set_mtu(self, index, mtu)
    }

    fn set_alias(&mut self, index: u32, alias: &str) -> Result<()> {
        Netlink::set_alias(self, index, alias)
    }

    fn move_to_netns(&mut self, index: u32, ns: &NetNs) -> Result<()> {
        Netlink::move_to_netns(self, index, ns.raw_fd())
    }

    fn add_address(&mut self, index: u32, net: &IpNet) -> Result<()> {
        Netlink::add_address(self, index, net)
    }

    fn add_route(&mut self, index: u32, dst: &IpNet, gw: Option<IpAddr>, mtu: Option<u32>) -> Result<()> {
        Netlink::add_route(self, index, dst, gw, mtu)
    }

    fn routes(&mut self, index: u32) -> Result<Vec<RouteEntry>> {
        Netlink::routes(self, index)
    }

    fn default_route_links(&mut self) -> Result<Vec<u32>> {
        Netlink::default_route_links(self)
    }
}
