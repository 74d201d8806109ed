//! A "VPC" namespace: one bridge per subnet holding the subnet router's address (base + 1, as in AWS),
//! and veth stand-ins for ENIs: the node side carries the ENI's MAC, the peer sits on the subnet bridge,
//! so a pod that receives the stand-in can ping its gateway.

use std::sync::atomic::{AtomicU32, Ordering};

use crate::netns::TestNs;

#[derive(Debug)]
pub struct Vpc {
    pub ns: TestNs,
    subnets: std::sync::Mutex<Vec<(String, String)>>,
    peers: AtomicU32,
}

impl Vpc {
    pub fn new(label: &str) -> Self {
        Self { ns: TestNs::new(&format!("{label}-vpc")), subnets: Default::default(), peers: AtomicU32::new(0) }
    }

    /// Adds a subnet (`10.0.1.0/24`): a bridge with the gateway address. Returns the gateway.
    pub fn add_subnet(&self, cidr: &str) -> String {
        let (net, len) = cidr.split_once('/').expect("cidr");
        let mut octets: Vec<u8> = net.split('.').map(|o| o.parse().expect("ipv4")).collect();
        octets[3] += 1;
        let gw = format!("{}.{}.{}.{}", octets[0], octets[1], octets[2], octets[3]);
        let mut subnets = self.subnets.lock().expect("lock");
        let bridge = format!("br{}", subnets.len());
        self.ns.ip(&["link", "add", &bridge, "type", "bridge"]);
        self.ns.ip(&["addr", "add", &format!("{gw}/{len}"), "dev", &bridge]);
        self.ns.ip(&["link", "set", &bridge, "up"]);
        subnets.push((cidr.to_string(), bridge));
        gw
    }

    fn bridge_of(&self, cidr: &str) -> String {
        let subnets = self.subnets.lock().expect("lock");
        subnets.iter().find(|(c, _)| c == cidr).map(|(_, b)| b.clone()).unwrap_or_else(|| panic!("no subnet {cidr}"))
    }

    /// Plugs an ENI stand-in into `node` as `ifname` with `mac`, wired to subnet `cidr`.
    pub fn plug(&self, node: &TestNs, ifname: &str, mac: &str, cidr: &str) {
        self.plug_into(node.name(), ifname, mac, cidr);
    }

    /// [`Vpc::plug`] into the namespace named `node`.
    pub fn plug_into(&self, node: &str, ifname: &str, mac: &str, cidr: &str) {
        let peer = format!("p{}", self.peers.fetch_add(1, Ordering::Relaxed));
        let bridge = self.bridge_of(cidr);
        crate::netns::ip(&[
            "-n",
            node,
            "link",
            "add",
            ifname,
            "address",
            mac,
            "type",
            "veth",
            "peer",
            "name",
            &peer,
            "netns",
            self.ns.name(),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        self.ns.ip(&["link", "set", &peer, "master", &bridge, "up"]);
    }

    /// Pings `addr` from inside `ns`; true when it answers.
    pub fn ping_from(ns: &TestNs, addr: &str) -> bool {
        ns.exec("ping", &["-c", "1", "-W", "2", addr]).status.success()
    }
}
