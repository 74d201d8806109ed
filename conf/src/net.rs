//! IP networks in CIDR form (`10.0.1.5/24`), as CNI results and the VPC speak them.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An address with its prefix length. The address keeps its host bits: `10.0.1.5/24` is an interface
/// address, not only a network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpNet {
    pub addr: IpAddr,
    pub prefix: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid CIDR {input:?}: {reason}")]
pub struct IpNetError {
    pub input: String,
    pub reason: &'static str,
}

impl IpNet {
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Self> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(Self { addr, prefix })
    }

    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    /// The network address: host bits cleared.
    pub fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        }
    }

    /// The VPC's subnet router: the network address plus one.
    pub fn vpc_gateway(&self) -> IpAddr {
        match self.network() {
            IpAddr::V4(n) => IpAddr::V4(Ipv4Addr::from(u32::from(n).wrapping_add(1))),
            IpAddr::V6(n) => IpAddr::V6((u128::from(n).wrapping_add(1)).into()),
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        IpNet { addr: ip, prefix: self.prefix }.network() == self.network() && ip.is_ipv4() == self.is_ipv4()
    }
}

impl FromStr for IpNet {
    type Err = IpNetError;
    fn from_str(s: &str) -> Result<Self, IpNetError> {
        let err = |reason| IpNetError { input: s.to_string(), reason };
        let (a, p) = s.split_once('/').ok_or_else(|| err("missing '/prefix'"))?;
        let addr: IpAddr = a.parse().map_err(|_| err("bad address"))?;
        let prefix: u8 = p.parse().map_err(|_| err("bad prefix length"))?;
        IpNet::new(addr, prefix).ok_or_else(|| err("prefix length too long for the address family"))
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Serialize for IpNet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpNet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_derives_the_vpc_gateway() {
        let n: IpNet = "10.0.1.57/24".parse().expect("valid");
        assert_eq!(n.network().to_string(), "10.0.1.0");
        assert_eq!(n.vpc_gateway().to_string(), "10.0.1.1");
        assert!(n.contains("10.0.1.200".parse().expect("ip")));
        assert!(!n.contains("10.0.2.1".parse().expect("ip")));
        let v6: IpNet = "2001:db8::5/64".parse().expect("valid");
        assert_eq!(v6.vpc_gateway().to_string(), "2001:db8::1");
        let all: IpNet = "0.0.0.0/0".parse().expect("valid");
        assert_eq!(all.network().to_string(), "0.0.0.0");
    }

    #[test]
    fn rejects_bad_cidrs() {
        for bad in ["10.0.0.1", "10.0.0.1/33", "10.0.0/24", "::1/129", "x/1", "10.0.0.1/-1"] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad}");
        }
    }
}
