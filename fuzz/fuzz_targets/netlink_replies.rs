//! The netlink replies the plugin reads: a receive buffer of rtnetlink messages as the kernel would
//! send it, walked by `nodeeni_host::netlink::reply::read_buffer` (the code `Netlink::request` runs),
//! and every link, address and route message converted as the socket's methods convert them. The
//! first byte picks what the request expected (a dump, an ack, or one message). Properties: no panic;
//! an empty buffer ends no request.

#![no_main]

use libfuzzer_sys::fuzz_target;
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use nodeeni_host::netlink::reply::{self, Expect};

fuzz_target!(|data: &[u8]| {
    let Some((&first, buf)) = data.split_first() else { return };
    let expect = Expect { seq: 1, dump: first & 1 == 1, ack: first & 2 == 2, op: "fuzz" };
    let mut replies = Vec::new();
    let ended = reply::read_buffer(buf, expect, &mut replies);
    if buf.is_empty() {
        assert!(matches!(ended, Ok(false)), "nothing read, nothing ended");
    }
    for r in replies {
        match r {
            RouteNetlinkMessage::NewLink(m) => drop(reply::link(m)),
            RouteNetlinkMessage::NewAddress(m) => drop(reply::address(&m)),
            RouteNetlinkMessage::NewRoute(m) => {
                drop(reply::default_route_links(&m));
                for family in [AddressFamily::Inet, AddressFamily::Inet6] {
                    drop(reply::route(&m, family));
                }
            }
            _ => {}
        }
    }
});
