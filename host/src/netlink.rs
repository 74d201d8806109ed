//! A small synchronous rtnetlink socket: one method per kernel operation on links, addresses and
//! routes. A socket belongs to the namespace it was opened in, so the CNI opens one on the host and one
//! in the pod and then works through the pair without switching namespaces again.

use std::io;
use std::net::IpAddr;
use std::os::fd::RawFd;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteMetric, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use nodeeni_conf::net::IpNet;
use nodeeni_conf::{MacAddr, PciAddress};

use crate::netns::{NetNs, NetnsError};

pub mod reply;

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("netlink socket: {0}")]
    Socket(#[source] io::Error),
    #[error("{op} failed: {source}")]
    Kernel {
        op: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot decode a netlink reply: {0}")]
    Decode(String),
    #[error(transparent)]
    Netns(#[from] NetnsError),
}

impl NetlinkError {
    /// The kernel's errno, when the kernel refused.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Kernel { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

type Result<T> = std::result::Result<T, NetlinkError>;

/// What the kernel says about one network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<MacAddr>,
    pub mtu: u32,
    /// Administratively up (IFF_UP).
    pub up: bool,
    pub alias: Option<String>,
    /// The permanent hardware address (IFLA_PERM_ADDRESS), where the driver has one: the address the
    /// device was made with, which no one in any namespace can change. Virtual links (veth) have none.
    pub perm_mac: Option<MacAddr>,
    /// The PCI device behind the link (IFLA_PARENT_DEV_NAME on the `pci` bus), where the kernel says.
    pub parent_pci: Option<PciAddress>,
}

/// A route as CHECK compares them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteEntry {
    pub dst: IpNet,
    pub gw: Option<IpAddr>,
}

#[derive(Debug)]
pub struct Netlink {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

fn family(ip: &IpAddr) -> AddressFamily {
    if ip.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 }
}

impl Netlink {
    /// A socket in the calling thread's namespace.
    pub fn open() -> Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(NetlinkError::Socket)?;
        socket.bind_auto().map_err(NetlinkError::Socket)?;
        socket.connect(&SocketAddr::new(0, 0)).map_err(NetlinkError::Socket)?;
        // Extended acks make the kernel say why, not only errno.
        let _ = socket.set_ext_ack(true);
        Ok(Self { socket, seq: 0, buf: vec![0; 64 * 1024] })
    }

    /// A socket in `ns`: the namespace is entered only while the socket is created.
    pub fn open_in(ns: &NetNs) -> Result<Self> {
        ns.run(Self::open)?
    }

    /// Sends one request and collects every reply message until the ack or the end of the dump.
    fn request(&mut self, msg: RouteNetlinkMessage, flags: u16, op: &str) -> Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        packet.finalize();
        let mut out = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut out);
        self.socket.send(&out, 0).map_err(NetlinkError::Socket)?;

        let expect =
            reply::Expect { seq: self.seq, dump: flags & NLM_F_DUMP == NLM_F_DUMP, ack: flags & NLM_F_ACK != 0, op };
        let mut replies = Vec::new();
        loop {
            let n = self.socket.recv(&mut &mut self.buf[..], 0).map_err(NetlinkError::Socket)?;
            if reply::read_buffer(&self.buf[..n], expect, &mut replies)? {
                return Ok(replies);
            }
        }
    }

    /// Every link in this namespace.
    pub fn links(&mut self) -> Result<Vec<Link>> {
        let replies = self.request(RouteNetlinkMessage::GetLink(LinkMessage::default()), NLM_F_DUMP, "list links")?;
        Ok(replies
            .into_iter()
            .filter_map(|r| match r {
                RouteNetlinkMessage::NewLink(m) => Some(reply::link(m)),
                _ => None,
            })
            .collect())
    }

    fn get_link(&mut self, msg: LinkMessage, what: &str) -> Result<Option<Link>> {
        match self.request(RouteNetlinkMessage::GetLink(msg), 0, &format!("get link {what}")) {
            Ok(replies) => Ok(replies.into_iter().find_map(|r| match r {
                RouteNetlinkMessage::NewLink(m) => Some(reply::link(m)),
                _ => None,
            })),
            Err(e) if e.errno() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn link_by_name(&mut self, name: &str) -> Result<Option<Link>> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        self.get_link(msg, name)
    }

    pub fn link_by_index(&mut self, index: u32) -> Result<Option<Link>> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        self.get_link(msg, &format!("#{index}"))
    }

    /// The link with this MAC. ENIs are found this way, never by name.
    pub fn link_by_mac(&mut self, mac: MacAddr) -> Result<Option<Link>> {
        Ok(self.links()?.into_iter().find(|l| l.mac == Some(mac)))
    }

    /// Every link whose address or permanent address is `mac`: the ENI, and any link someone gave
    /// its MAC (the caller tells them apart).
    pub fn links_by_mac(&mut self, mac: MacAddr) -> Result<Vec<Link>> {
        Ok(self.links()?.into_iter().filter(|l| l.mac == Some(mac) || l.perm_mac == Some(mac)).collect())
    }

    /// The links default routes (IPv4 and IPv6, main table) leave through: the node's way out.
    pub fn default_route_links(&mut self) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        for fam in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut msg = RouteMessage::default();
            msg.header.address_family = fam;
            for r in self.request(RouteNetlinkMessage::GetRoute(msg), NLM_F_DUMP, "list routes")? {
                if let RouteNetlinkMessage::NewRoute(m) = r {
                    out.extend(reply::default_route_links(&m));
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    fn set_link(&mut self, index: u32, op: &str, edit: impl FnOnce(&mut LinkMessage)) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        edit(&mut msg);
        self.request(RouteNetlinkMessage::SetLink(msg), NLM_F_ACK, op).map(drop)
    }

    pub fn set_up(&mut self, index: u32, up: bool) -> Result<()> {
        self.set_link(index, if up { "set link up" } else { "set link down" }, |m| {
            m.header.flags = if up { LinkFlags::Up } else { LinkFlags::empty() };
            m.header.change_mask = LinkFlags::Up;
        })
    }

    pub fn set_mtu(&mut self, index: u32, mtu: u32) -> Result<()> {
        self.set_link(index, &format!("set MTU {mtu}"), |m| m.attributes.push(LinkAttribute::Mtu(mtu)))
    }

    /// Renames a link; the kernel wants it down.
    pub fn set_name(&mut self, index: u32, name: &str) -> Result<()> {
        self.set_link(index, &format!("rename to {name}"), |m| m.attributes.push(LinkAttribute::IfName(name.into())))
    }

    /// Sets the alias (`ip link set alias`); an empty alias removes it.
    pub fn set_alias(&mut self, index: u32, alias: &str) -> Result<()> {
        self.set_link(index, "set alias", |m| m.attributes.push(LinkAttribute::IfAlias(alias.into())))
    }

    /// Moves a link into the namespace open at `ns_fd`.
    pub fn move_to_netns(&mut self, index: u32, ns_fd: RawFd) -> Result<()> {
        self.set_link(index, "move to namespace", |m| m.attributes.push(LinkAttribute::NetNsFd(ns_fd)))
    }

    fn addr_message(index: u32, net: &IpNet) -> AddressMessage {
        let mut msg = AddressMessage::default();
        msg.header.family = family(&net.addr);
        msg.header.prefix_len = net.prefix;
        msg.header.index = index;
        if net.is_ipv4() {
            msg.attributes.push(AddressAttribute::Local(net.addr));
        }
        msg.attributes.push(AddressAttribute::Address(net.addr));
        msg
    }

    /// The addresses on a link (global and link scope alike), IPv6 link-local excluded.
    pub fn addresses(&mut self, index: u32) -> Result<Vec<IpNet>> {
        let replies =
            self.request(RouteNetlinkMessage::GetAddress(AddressMessage::default()), NLM_F_DUMP, "list addresses")?;
        Ok(replies
            .iter()
            .filter_map(|r| match r {
                RouteNetlinkMessage::NewAddress(m) => reply::address(m),
                _ => None,
            })
            .filter_map(|(on, net)| (on == index).then_some(net))
            .collect())
    }

    pub fn add_address(&mut self, index: u32, net: &IpNet) -> Result<()> {
        let msg = Self::addr_message(index, net);
        self.request(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            &format!("add address {net}"),
        )
        .map(drop)
    }

    pub fn del_address(&mut self, index: u32, net: &IpNet) -> Result<()> {
        let msg = Self::addr_message(index, net);
        self.request(RouteNetlinkMessage::DelAddress(msg), NLM_F_ACK, &format!("delete address {net}")).map(drop)
    }

    /// Routes in the main table that leave through this link.
    pub fn routes(&mut self, index: u32) -> Result<Vec<RouteEntry>> {
        let mut out = Vec::new();
        for fam in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut msg = RouteMessage::default();
            msg.header.address_family = fam;
            let replies = self.request(RouteNetlinkMessage::GetRoute(msg), NLM_F_DUMP, "list routes")?;
            for r in replies {
                let RouteNetlinkMessage::NewRoute(m) = r else { continue };
                if let Some((Some(oif), entry)) = reply::route(&m, fam)
                    && oif == index
                {
                    out.push(entry);
                }
            }
        }
        Ok(out)
    }

    /// Adds a route out of `index`, through `gw` when given (on-link otherwise).
    pub fn add_route(&mut self, index: u32, dst: &IpNet, gw: Option<IpAddr>, mtu: Option<u32>) -> Result<()> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = family(&dst.addr);
        msg.header.destination_prefix_length = dst.prefix;
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.protocol = RouteProtocol::Boot;
        msg.header.kind = RouteType::Unicast;
        msg.header.scope = if gw.is_some() { RouteScope::Universe } else { RouteScope::Link };
        if dst.prefix > 0 {
            msg.attributes.push(RouteAttribute::Destination(RouteAddress::from(dst.network())));
        }
        if let Some(gw) = gw {
            msg.attributes.push(RouteAttribute::Gateway(RouteAddress::from(gw)));
        }
        msg.attributes.push(RouteAttribute::Oif(index));
        if let Some(mtu) = mtu {
            msg.attributes.push(RouteAttribute::Metrics(vec![RouteMetric::Mtu(mtu)]));
        }
        self.request(
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            &format!("add route {dst}"),
        )
        .map(drop)
    }
}
