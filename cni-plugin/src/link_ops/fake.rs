//! A recording fake of two network namespaces, the host and one pod, for the orchestration tests.
//!
//! Every call is recorded with its side and arguments, and any call can be made to fail by its number
//! (counted from 1 across both sides, the failed call recorded too). It keeps the kernel rules the
//! orchestration depends on: a link that is up cannot be renamed (EBUSY), names are unique in a
//! namespace (EEXIST), moving a link takes it down and drops its addresses and routes, a route needs
//! its link up (ENETDOWN) and its gateway on-link (ENETUNREACH), an address is added once (EEXIST).

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::io;
use std::net::IpAddr;
use std::os::fd::RawFd;
use std::rc::Rc;

use nodeeni_conf::net::IpNet;
use nodeeni_conf::{MacAddr, PciAddress};
use nodeeni_host::netlink::{Link, NetlinkError, RouteEntry};
use nodeeni_host::netns::NetNs;

use super::LinkOps;

const EIO: i32 = 5;
const EBUSY: i32 = 16;
const EEXIST: i32 = 17;
const ENODEV: i32 = 19;
const EINVAL: i32 = 22;
const ENETDOWN: i32 = 100;
const ENETUNREACH: i32 = 101;

/// Which namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Side {
    Host,
    Pod,
}

/// One operation with its arguments, as the orchestration called it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    LinkByName(String),
    LinkByIndex(u32),
    LinksByMac(MacAddr),
    Addresses(u32),
    SetUp(u32, bool),
    SetName(u32, String),
    SetMtu(u32, u32),
    SetAlias(u32, String),
    /// The namespace the handle names (`None`: not one the fake knows).
    MoveToNetns(u32, Option<Side>),
    AddAddress(u32, IpNet),
    AddRoute(u32, IpNet, Option<IpAddr>, Option<u32>),
    Routes(u32),
    DefaultRouteLinks,
}

/// A recorded call: which namespace's handle, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub side: Side,
    pub op: Op,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeRoute {
    pub dst: IpNet,
    pub gw: Option<IpAddr>,
    pub mtu: Option<u32>,
}

/// A link and everything the kernel keeps about it that undo must restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeLink {
    pub side: Side,
    pub index: u32,
    pub name: String,
    pub mac: Option<MacAddr>,
    pub mtu: u32,
    pub up: bool,
    pub alias: Option<String>,
    pub addresses: Vec<IpNet>,
    pub routes: Vec<FakeRoute>,
    /// The hardware identity a real NIC reports (IFLA_PERM_ADDRESS, the parent PCI device).
    pub perm_mac: Option<MacAddr>,
    pub parent_pci: Option<PciAddress>,
}

impl FakeLink {
    pub fn new(side: Side, index: u32, name: &str, mac: Option<MacAddr>, mtu: u32, up: bool) -> Self {
        Self {
            side,
            index,
            name: name.into(),
            mac,
            mtu,
            up,
            alias: None,
            addresses: Vec::new(),
            routes: Vec::new(),
            perm_mac: None,
            parent_pci: None,
        }
    }

    fn link(&self) -> Link {
        Link {
            index: self.index,
            name: self.name.clone(),
            mac: self.mac,
            mtu: self.mtu,
            up: self.up,
            alias: self.alias.clone(),
            perm_mac: self.perm_mac,
            parent_pci: self.parent_pci,
        }
    }
}

#[derive(Debug, Default)]
struct World {
    links: Vec<FakeLink>,
    namespaces: HashMap<RawFd, Side>,
    calls: Vec<Call>,
    fail: BTreeSet<usize>,
}

fn kernel_error(op: &Op, errno: i32) -> NetlinkError {
    NetlinkError::Kernel { op: format!("{op:?}"), source: io::Error::from_raw_os_error(errno) }
}

impl World {
    fn link_mut(&mut self, side: Side, index: u32, op: &Op) -> Result<&mut FakeLink, NetlinkError> {
        self.links.iter_mut().find(|l| l.side == side && l.index == index).ok_or_else(|| kernel_error(op, ENODEV))
    }

    fn name_taken(&self, side: Side, name: &str, other_than: u32) -> bool {
        self.links.iter().any(|l| l.side == side && l.name == name && l.index != other_than)
    }

    fn find(&self, side: Side, f: impl Fn(&FakeLink) -> bool) -> Option<Link> {
        self.links.iter().find(|l| l.side == side && f(l)).map(FakeLink::link)
    }
}

/// The two namespaces, shared by the handles [`Fake::side`] gives out.
#[derive(Debug, Clone, Default)]
pub struct Fake(Rc<RefCell<World>>);

impl Fake {
    pub fn new(links: Vec<FakeLink>) -> Self {
        let fake = Self::default();
        fake.0.borrow_mut().links = links;
        fake
    }

    /// Says which side `ns` stands for, so moves through it land there.
    pub fn name_namespace(&self, side: Side, ns: &NetNs) {
        self.0.borrow_mut().namespaces.insert(ns.raw_fd(), side);
    }

    /// A handle on one namespace's links, as a netlink socket opened there.
    pub fn side(&self, side: Side) -> FakeLinks {
        FakeLinks { world: self.0.clone(), side }
    }

    /// Makes call number `n` (from 1, over both sides) fail with EIO.
    pub fn fail_call(&self, n: usize) {
        self.0.borrow_mut().fail.insert(n);
    }

    pub fn calls(&self) -> Vec<Call> {
        self.0.borrow().calls.clone()
    }

    /// Every link, host side first, by index.
    pub fn links(&self) -> Vec<FakeLink> {
        let mut links = self.0.borrow().links.clone();
        links.sort_by_key(|l| (l.side, l.index));
        links
    }
}

/// One namespace's link operations.
#[derive(Debug)]
pub struct FakeLinks {
    world: Rc<RefCell<World>>,
    side: Side,
}

impl FakeLinks {
    /// Records `op`, fails it if asked to, else lets `f` apply it to the world.
    fn call<T>(
        &mut self,
        op: Op,
        f: impl FnOnce(&mut World, Side, &Op) -> Result<T, NetlinkError>,
    ) -> Result<T, NetlinkError> {
        let mut world = self.world.borrow_mut();
        world.calls.push(Call { side: self.side, op: op.clone() });
        if world.fail.contains(&world.calls.len()) {
            return Err(NetlinkError::Kernel {
                op: format!("{op:?} (injected failure)"),
                source: io::Error::from_raw_os_error(EIO),
            });
        }
        f(&mut world, self.side, &op)
    }
}

impl LinkOps for FakeLinks {
    fn link_by_name(&mut self, name: &str) -> Result<Option<Link>, NetlinkError> {
        self.call(Op::LinkByName(name.into()), |w, side, _| Ok(w.find(side, |l| l.name == name)))
    }

    fn link_by_index(&mut self, index: u32) -> Result<Option<Link>, NetlinkError> {
        self.call(Op::LinkByIndex(index), |w, side, _| Ok(w.find(side, |l| l.index == index)))
    }

    fn links_by_mac(&mut self, mac: MacAddr) -> Result<Vec<Link>, NetlinkError> {
        self.call(Op::LinksByMac(mac), |w, side, _| {
            let mut found: Vec<&FakeLink> =
                w.links.iter().filter(|l| l.side == side && (l.mac == Some(mac) || l.perm_mac == Some(mac))).collect();
            found.sort_by_key(|l| l.index);
            Ok(found.into_iter().map(FakeLink::link).collect())
        })
    }

    fn addresses(&mut self, index: u32) -> Result<Vec<IpNet>, NetlinkError> {
        self.call(Op::Addresses(index), |w, side, _| {
            Ok(w.links
                .iter()
                .find(|l| l.side == side && l.index == index)
                .map(|l| l.addresses.clone())
                .unwrap_or_default())
        })
    }

    fn set_up(&mut self, index: u32, up: bool) -> Result<(), NetlinkError> {
        self.call(Op::SetUp(index, up), |w, side, op| {
            let link = w.link_mut(side, index, op)?;
            link.up = up;
            if !up {
                link.routes.clear();
            }
            Ok(())
        })
    }

    fn set_name(&mut self, index: u32, name: &str) -> Result<(), NetlinkError> {
        self.call(Op::SetName(index, name.into()), |w, side, op| {
            if name.is_empty() || name.len() > 15 {
                return Err(kernel_error(op, EINVAL));
            }
            if w.name_taken(side, name, index) {
                return Err(kernel_error(op, EEXIST));
            }
            let link = w.link_mut(side, index, op)?;
            if link.up && link.name != name {
                return Err(kernel_error(op, EBUSY));
            }
            link.name = name.into();
            Ok(())
        })
    }

    fn set_mtu(&mut self, index: u32, mtu: u32) -> Result<(), NetlinkError> {
        self.call(Op::SetMtu(index, mtu), |w, side, op| {
            if !(68..=65535).contains(&mtu) {
                return Err(kernel_error(op, EINVAL));
            }
            w.link_mut(side, index, op)?.mtu = mtu;
            Ok(())
        })
    }

    fn set_alias(&mut self, index: u32, alias: &str) -> Result<(), NetlinkError> {
        self.call(Op::SetAlias(index, alias.into()), |w, side, op| {
            w.link_mut(side, index, op)?.alias = (!alias.is_empty()).then(|| alias.to_string());
            Ok(())
        })
    }

    fn move_to_netns(&mut self, index: u32, ns: &NetNs) -> Result<(), NetlinkError> {
        let to = self.world.borrow().namespaces.get(&ns.raw_fd()).copied();
        self.call(Op::MoveToNetns(index, to), |w, side, op| {
            let to = to.ok_or_else(|| kernel_error(op, EINVAL))?;
            let name = w.link_mut(side, index, op)?.name.clone();
            if to == side {
                return Ok(());
            }
            if w.name_taken(to, &name, u32::MAX) {
                return Err(kernel_error(op, EEXIST));
            }
            let link = w.link_mut(side, index, op)?;
            link.side = to;
            link.up = false;
            link.addresses.clear();
            link.routes.clear();
            Ok(())
        })
    }

    fn add_address(&mut self, index: u32, net: &IpNet) -> Result<(), NetlinkError> {
        self.call(Op::AddAddress(index, *net), |w, side, op| {
            let link = w.link_mut(side, index, op)?;
            if link.addresses.contains(net) {
                return Err(kernel_error(op, EEXIST));
            }
            link.addresses.push(*net);
            Ok(())
        })
    }

    fn add_route(&mut self, index: u32, dst: &IpNet, gw: Option<IpAddr>, mtu: Option<u32>) -> Result<(), NetlinkError> {
        self.call(Op::AddRoute(index, *dst, gw, mtu), |w, side, op| {
            let link = w.link_mut(side, index, op)?;
            if !link.up {
                return Err(kernel_error(op, ENETDOWN));
            }
            if let Some(gw) = gw
                && !link.addresses.iter().any(|a| a.contains(gw))
            {
                return Err(kernel_error(op, ENETUNREACH));
            }
            if link.routes.iter().any(|r| r.dst == *dst) {
                return Err(kernel_error(op, EEXIST));
            }
            link.routes.push(FakeRoute { dst: *dst, gw, mtu });
            Ok(())
        })
    }

    fn routes(&mut self, index: u32) -> Result<Vec<RouteEntry>, NetlinkError> {
        self.call(Op::Routes(index), |w, side, _| {
            let link = w.links.iter().find(|l| l.side == side && l.index == index);
            Ok(link.map(|l| l.routes.iter().map(|r| RouteEntry { dst: r.dst, gw: r.gw }).collect()).unwrap_or_default())
        })
    }

    fn default_route_links(&mut self) -> Result<Vec<u32>, NetlinkError> {
        self.call(Op::DefaultRouteLinks, |w, side, _| {
            let mut out: Vec<u32> = w
                .links
                .iter()
                .filter(|l| l.side == side && l.routes.iter().any(|r| r.dst.prefix == 0))
                .map(|l| l.index)
                .collect();
            out.sort_unstable();
            Ok(out)
        })
    }
}
