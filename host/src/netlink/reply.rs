//! Reading the kernel's replies: a receive buffer walked message by message, and each link, address
//! and route message turned into what the rest of nodeeni uses. Pure (bytes and messages in, values
//! out), so the fuzz target `netlink_replies` drives exactly this code.

use std::net::IpAddr;

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::AddressFamily;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage};
use nodeeni_conf::MacAddr;
use nodeeni_conf::net::IpNet;

use super::{Link, NetlinkError, RouteEntry};

/// What the request that the replies answer expects.
#[derive(Debug, Clone, Copy)]
pub struct Expect<'a> {
    /// The request's sequence number: replies to anything else are skipped.
    pub seq: u32,
    /// A dump: messages until `Done`.
    pub dump: bool,
    /// An ack was asked for: messages until the ack (an error message with no code).
    pub ack: bool,
    /// The operation, for the error the kernel's refusal becomes.
    pub op: &'a str,
}

/// Walks one receive buffer, appending the payloads of replies to `replies`; `Ok(true)` once the
/// request is answered in full, `Ok(false)` when more is to be received.
pub fn read_buffer(
    buf: &[u8],
    expect: Expect<'_>,
    replies: &mut Vec<RouteNetlinkMessage>,
) -> Result<bool, NetlinkError> {
    let mut offset = 0;
    while offset < buf.len() {
        let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[offset..])
            .map_err(|e| NetlinkError::Decode(e.to_string()))?;
        let len = reply.header.length as usize;
        if len == 0 {
            return Err(NetlinkError::Decode("zero-length message".into()));
        }
        // Messages are 4-byte aligned; `saturating_add` keeps a forged length near usize::MAX from
        // wrapping round to an earlier offset.
        offset = offset.saturating_add(len.saturating_add(3) & !3);
        if reply.header.sequence_number != expect.seq {
            continue;
        }
        match reply.payload {
            NetlinkPayload::Done(_) => return Ok(true),
            NetlinkPayload::Error(e) => {
                let Some(code) = e.code else {
                    if !expect.dump {
                        return Ok(true);
                    }
                    continue;
                };
                return Err(kernel_refusal(expect.op, code));
            }
            NetlinkPayload::InnerMessage(m) => {
                replies.push(m);
                if !expect.dump && !expect.ack {
                    return Ok(true);
                }
            }
            _ => {}
        }
    }
    Ok(false)
}

/// The kernel's refusal (a negated errno) as an error. Not `ErrorMessage::to_io`: it negates with
/// `abs`, which panics on `i32::MIN` (found by the `netlink_replies` fuzz target); a code no errno
/// can be is a decode error instead.
fn kernel_refusal(op: &str, code: std::num::NonZeroI32) -> NetlinkError {
    match code.get().checked_neg() {
        Some(errno) if errno > 0 => {
            NetlinkError::Kernel { op: op.to_string(), source: std::io::Error::from_raw_os_error(errno) }
        }
        _ => NetlinkError::Decode(format!("{op}: the kernel's reply carries error code {code}, which is no errno")),
    }
}

fn mac_of(bytes: &[u8]) -> Option<MacAddr> {
    <[u8; 6]>::try_from(bytes).ok().map(MacAddr)
}

/// A link message as a [`Link`].
pub fn link(m: LinkMessage) -> Link {
    let mut link = Link {
        index: m.header.index,
        name: String::new(),
        mac: None,
        mtu: 0,
        up: m.header.flags.contains(LinkFlags::Up),
        alias: None,
        perm_mac: None,
        parent_pci: None,
    };
    let (mut parent, mut parent_bus) = (None, None);
    for a in m.attributes {
        match a {
            LinkAttribute::IfName(n) => link.name = n,
            LinkAttribute::Mtu(mtu) => link.mtu = mtu,
            LinkAttribute::IfAlias(a) if !a.is_empty() => link.alias = Some(a),
            LinkAttribute::Address(bytes) => link.mac = mac_of(&bytes),
            // The kernel reports it only when it is not all zeroes.
            LinkAttribute::PermAddress(bytes) => link.perm_mac = mac_of(&bytes).filter(|m| m.0 != [0; 6]),
            LinkAttribute::ParentDevName(n) => parent = Some(n),
            LinkAttribute::ParentDevBusName(b) => parent_bus = Some(b),
            _ => {}
        }
    }
    if parent_bus.as_deref() == Some("pci") {
        link.parent_pci = parent.and_then(|p| p.parse().ok());
    }
    link
}

/// An address message's link and address; IPv6 link-local addresses (which the kernel makes on its
/// own) are none.
pub fn address(m: &AddressMessage) -> Option<(u32, IpNet)> {
    let mut addr = None;
    for a in &m.attributes {
        match a {
            AddressAttribute::Local(ip) => addr = Some(*ip),
            AddressAttribute::Address(ip) if addr.is_none() => addr = Some(*ip),
            _ => {}
        }
    }
    let ip = addr.filter(|ip| !matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80))?;
    Some((m.header.index, IpNet::new(ip, m.header.prefix_len)?))
}

fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// A main-table route of family `family`: the link it leaves through and the route; routes of other
/// tables are none.
pub fn route(m: &RouteMessage, family: AddressFamily) -> Option<(Option<u32>, RouteEntry)> {
    if m.header.table != RouteHeader::RT_TABLE_MAIN {
        return None;
    }
    let (mut oif, mut dst, mut gw) = (None, None, None);
    for a in &m.attributes {
        match a {
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Destination(d) => dst = route_ip(d),
            RouteAttribute::Gateway(g) => gw = route_ip(g),
            _ => {}
        }
    }
    let unspecified = if family == AddressFamily::Inet { IpAddr::from([0, 0, 0, 0]) } else { IpAddr::from([0u16; 8]) };
    let dst = IpNet::new(dst.unwrap_or(unspecified), m.header.destination_prefix_length)?;
    Some((oif, RouteEntry { dst, gw }))
}

/// The links a main-table default route leaves through (every hop of a multipath one); none for any
/// other route.
pub fn default_route_links(m: &RouteMessage) -> Vec<u32> {
    if m.header.table != RouteHeader::RT_TABLE_MAIN || m.header.destination_prefix_length != 0 {
        return Vec::new();
    }
    let mut out = Vec::new();
    for a in &m.attributes {
        match a {
            RouteAttribute::Oif(i) => out.push(*i),
            RouteAttribute::MultiPath(hops) => out.extend(hops.iter().map(|h| h.interface_index)),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use netlink_packet_core::{DoneMessage, ErrorMessage, NetlinkHeader};

    use super::*;

    fn bytes(seq: u32, payload: NetlinkPayload<RouteNetlinkMessage>) -> Vec<u8> {
        let mut header = NetlinkHeader::default();
        header.sequence_number = seq;
        let mut m = NetlinkMessage::new(header, payload);
        m.finalize();
        let mut out = vec![0u8; m.buffer_len()];
        m.serialize(&mut out);
        out
    }

    fn new_link(index: u32, name: &str) -> NetlinkPayload<RouteNetlinkMessage> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.attributes.push(LinkAttribute::IfName(name.into()));
        m.attributes.push(LinkAttribute::Address(vec![0x0a, 0, 0, 0, 0, 1]));
        m.attributes.push(LinkAttribute::ParentDevBusName("pci".into()));
        m.attributes.push(LinkAttribute::ParentDevName("0000:00:06.0".into()));
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(m))
    }

    const DUMP: Expect<'static> = Expect { seq: 7, dump: true, ack: false, op: "list links" };

    #[test]
    fn a_dump_reads_until_done_and_skips_other_requests_replies() {
        let mut buf = bytes(7, new_link(2, "eth1"));
        buf.extend(bytes(6, new_link(3, "stale")));
        let mut replies = Vec::new();
        assert!(!read_buffer(&buf, DUMP, &mut replies).expect("read"), "no Done yet: receive more");
        let done = bytes(7, NetlinkPayload::Done(DoneMessage::default()));
        assert!(read_buffer(&done, DUMP, &mut replies).expect("read"));
        let links: Vec<Link> = replies
            .into_iter()
            .filter_map(|r| match r {
                RouteNetlinkMessage::NewLink(m) => Some(link(m)),
                _ => None,
            })
            .collect();
        assert_eq!(links.len(), 1, "the reply to sequence 6 is not this request's");
        assert_eq!(links[0].name, "eth1");
        assert_eq!(links[0].mac, Some(MacAddr([0x0a, 0, 0, 0, 0, 1])));
        assert_eq!(links[0].parent_pci.map(|p| p.to_string()).as_deref(), Some("0000:00:06.0"));
    }

    #[test]
    fn a_kernel_refusal_is_an_error_naming_the_operation_and_an_ack_ends_the_request() {
        let mut refusal = ErrorMessage::default();
        refusal.code = std::num::NonZeroI32::new(-libc::ENODEV);
        let e = read_buffer(&bytes(7, NetlinkPayload::Error(refusal)), DUMP, &mut Vec::new()).expect_err("refused");
        assert_eq!(e.errno(), Some(libc::ENODEV));
        assert!(e.to_string().contains("list links"), "{e}");
        let ack = Expect { dump: false, ack: true, op: "set link up", ..DUMP };
        assert!(
            read_buffer(&bytes(7, NetlinkPayload::Error(ErrorMessage::default())), ack, &mut Vec::new()).expect("ack")
        );
    }

    #[test]
    fn an_error_code_that_is_no_errno_is_a_decode_error() {
        // Regression (fuzz target netlink_replies): i32::MIN made netlink-packet-core's `to_io` panic.
        for code in [i32::MIN, 1, i32::MAX] {
            let mut odd = ErrorMessage::default();
            odd.code = std::num::NonZeroI32::new(code);
            let r = read_buffer(&bytes(7, NetlinkPayload::Error(odd)), DUMP, &mut Vec::new());
            assert!(matches!(r, Err(NetlinkError::Decode(_))), "code {code}: {r:?}");
        }
    }

    #[test]
    fn truncated_and_zero_length_messages_are_decode_errors_not_panics() {
        let whole = bytes(7, new_link(2, "eth1"));
        for cut in 1..whole.len() {
            let r = read_buffer(&whole[..cut], DUMP, &mut Vec::new());
            assert!(!matches!(r, Ok(true)), "a cut message never ends a dump ({cut} bytes)");
        }
        let mut zero = whole.clone();
        zero[..4].copy_from_slice(&0u32.to_ne_bytes());
        assert!(matches!(read_buffer(&zero, DUMP, &mut Vec::new()), Err(NetlinkError::Decode(_))));
    }
}
