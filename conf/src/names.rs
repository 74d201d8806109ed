//! Names that validate when they are parsed, so a value of one of these types is known good everywhere
//! it travels: EC2 IDs, interface names, MAC addresses, Kubernetes extended-resource names.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {input:?}: {reason}")]
pub struct NameError {
    pub kind: &'static str,
    pub input: String,
    pub reason: String,
}

impl NameError {
    fn new(kind: &'static str, input: &str, reason: impl Into<String>) -> Self {
        Self { kind, input: input.to_string(), reason: reason.into() }
    }
}

/// Serde through `FromStr`/`Display`, so a bad value in a file fails with the type's own message.
macro_rules! string_serde {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// EC2 resource IDs: a fixed prefix and 8 (legacy) or 17 lowercase hex digits.
macro_rules! ec2_id {
    ($(#[$doc:meta])* $t:ident, $prefix:literal, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $t(String);

        impl $t {
            pub const PREFIX: &'static str = $prefix;
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $t {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                let hex = s.strip_prefix($prefix).ok_or_else(|| {
                    NameError::new($kind, s, concat!("must start with '", $prefix, "'"))
                })?;
                let well_formed = matches!(hex.len(), 8 | 17)
                    && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
                if !well_formed {
                    return Err(NameError::new(
                        $kind,
                        s,
                        concat!("expected '", $prefix, "' and 8 or 17 lowercase hex digits"),
                    ));
                }
                Ok(Self(s.to_string()))
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        string_serde!($t);
    };
}

ec2_id!(
    /// An ENI: `eni-0123456789abcdef0`.
    EniId, "eni-", "ENI ID"
);
ec2_id!(
    /// A subnet: `subnet-0123456789abcdef0`.
    SubnetId, "subnet-", "subnet ID"
);
ec2_id!(
    /// A security group: `sg-0123456789abcdef0`.
    SecurityGroupId, "sg-", "security group ID"
);
ec2_id!(
    /// An EC2 instance: `i-0123456789abcdef0`.
    InstanceId, "i-", "instance ID"
);

/// A Linux network interface name: 1..=15 bytes, no `/`, `:` or whitespace, not `.` or `..`
/// (the kernel's `dev_valid_name`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IfName(String);

impl IfName {
    pub const MAX_LEN: usize = 15;
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for IfName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        let err = |why: &str| NameError::new("interface name", s, why);
        if s.is_empty() {
            return Err(err("must not be empty"));
        }
        if s.len() > Self::MAX_LEN {
            return Err(err(&format!("is {} bytes, the kernel allows at most {}", s.len(), Self::MAX_LEN)));
        }
        if s == "." || s == ".." {
            return Err(err("must not be '.' or '..'"));
        }
        if s.chars().any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control()) {
            return Err(err("must not contain '/', ':', whitespace or control characters"));
        }
        Ok(Self(s.to_string()))
    }
}

impl fmt::Display for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
string_serde!(IfName);

/// An Ethernet MAC address; parsed from `aa:bb:cc:dd:ee:ff` or `aa-bb-…`, either case, shown lowercase
/// with colons (as EC2 and the kernel report it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl FromStr for MacAddr {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        let err = || NameError::new("MAC address", s, "expected six hex pairs like 0a:1b:2c:3d:4e:5f");
        let sep = if s.contains('-') { '-' } else { ':' };
        let mut out = [0u8; 6];
        let mut n = 0;
        for part in s.split(sep) {
            if n == 6 || part.len() != 2 {
                return Err(err());
            }
            out[n] = u8::from_str_radix(part, 16).map_err(|_| err())?;
            n += 1;
        }
        if n != 6 {
            return Err(err());
        }
        Ok(Self(out))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
    }
}
string_serde!(MacAddr);

/// A Kubernetes extended resource name, `domain/name` (e.g. `nodeeni.io/dpdk`): the domain a DNS
/// subdomain outside `kubernetes.io`, the name a qualified-name part of at most 63 characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceName(String);

impl ResourceName {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part after the `/`, used for the plugin's socket file name.
    pub fn short_name(&self) -> &str {
        self.0.rsplit_once('/').map_or(&self.0, |(_, n)| n)
    }
}

fn is_dns_label(label: &str) -> bool {
    let b = label.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

impl FromStr for ResourceName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        let err = |why: &str| NameError::new("resource name", s, why);
        let (domain, name) = s.split_once('/').ok_or_else(|| err("expected 'domain/name', e.g. nodeeni.io/dpdk"))?;
        if domain.len() > 253 || !domain.split('.').all(is_dns_label) {
            return Err(err("the domain must be a lowercase DNS subdomain"));
        }
        if domain == "kubernetes.io" || domain.ends_with(".kubernetes.io") {
            return Err(err("the kubernetes.io domain is reserved for Kubernetes' own resources"));
        }
        let nb = name.as_bytes();
        let name_ok = !nb.is_empty()
            && nb.len() <= 63
            && nb.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
            && nb[0].is_ascii_alphanumeric()
            && nb[nb.len() - 1].is_ascii_alphanumeric();
        if !name_ok {
            return Err(err("the name must be 1-63 characters of [A-Za-z0-9-_.], starting and ending alphanumeric"));
        }
        Ok(Self(s.to_string()))
    }
}

impl fmt::Display for ResourceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
string_serde!(ResourceName);

/// A kernel driver's name as sysfs shows it (`ena`, `vfio-pci`, `igb_uio`): 1..=64 bytes of ASCII
/// letters, digits, `_`, `-` and `.`, not `.` or `..`. It becomes a path component
/// (`/sys/bus/pci/drivers/<name>/bind`), so a name read from a record can never leave that folder.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DriverName(String);

impl DriverName {
    pub const MAX_LEN: usize = 64;
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A name this crate spells out itself (the DPDK drivers); checked in debug builds and tests.
    pub(crate) fn known(name: &'static str) -> Self {
        debug_assert!(name.parse::<DriverName>().is_ok(), "{name:?} is not a valid driver name");
        Self(name.to_string())
    }
}

impl FromStr for DriverName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        let err = |why: &str| NameError::new("driver name", s, why);
        if s.is_empty() || s.len() > Self::MAX_LEN {
            return Err(err(&format!("must be 1-{} bytes", Self::MAX_LEN)));
        }
        if s == "." || s == ".." {
            return Err(err("must not be '.' or '..'"));
        }
        if !s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')) {
            return Err(err("may hold only ASCII letters, digits, '_', '-' and '.'"));
        }
        Ok(Self(s.to_string()))
    }
}

impl fmt::Display for DriverName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
string_serde!(DriverName);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ec2_ids_take_8_or_17_lowercase_hex_digits() {
        assert!("eni-0123456789abcdef0".parse::<EniId>().is_ok());
        assert!("eni-12345678".parse::<EniId>().is_ok());
        assert!("subnet-11112222333344445".parse::<SubnetId>().is_ok());
        for bad in ["eni-", "eni-123", "eni-0123456789ABCDEF0", "sg-0123456789abcdef0", "eni-0123456789abcdefg"] {
            let err = bad.parse::<EniId>().expect_err(bad);
            assert!(err.to_string().contains("ENI ID"), "{err}");
        }
        assert!("subnet-xyz".parse::<SubnetId>().is_err());
        assert!("group-1".parse::<SecurityGroupId>().is_err());
    }

    #[test]
    fn ifnames_follow_the_kernel_rules() {
        assert!("eth0".parse::<IfName>().is_ok());
        assert!("a23456789012345".parse::<IfName>().is_ok());
        for bad in ["", "a234567890123456", "a/b", "a:b", "a b", ".", "..", "tab\t"] {
            assert!(bad.parse::<IfName>().is_err(), "{bad:?} accepted");
        }
        assert!("a234567890123456".parse::<IfName>().expect_err("long").to_string().contains("16 bytes"));
    }

    #[test]
    fn macs_parse_either_separator_and_case() {
        let m: MacAddr = "0A-1b-2C-3d-4E-5f".parse().expect("valid");
        assert_eq!(m.to_string(), "0a:1b:2c:3d:4e:5f");
        for bad in ["", "0a:1b:2c:3d:4e", "0a:1b:2c:3d:4e:5f:60", "0a:1b:2c:3d:4e:5", "zz:1b:2c:3d:4e:5f"] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn resource_names_need_a_domain_and_a_short_name() {
        let r: ResourceName = "nodeeni.io/user-plane".parse().expect("valid");
        assert_eq!(r.short_name(), "user-plane");
        for bad in [
            "not a resource name",
            "dpdk",
            "nodeeni.io/",
            "/dpdk",
            "Nodeeni.io/dpdk",
            "kubernetes.io/dpdk",
            "nodeeni.io/-dpdk",
            "nodeeni.io/a/b",
        ] {
            assert!(bad.parse::<ResourceName>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn driver_names_stay_one_path_component() {
        for good in ["ena", "vfio-pci", "igb_uio", "uio_pci_generic", "mlx5_core", "a.b", &"d".repeat(64)] {
            assert_eq!(good.parse::<DriverName>().expect(good).as_str(), good);
        }
        let long = "d".repeat(65);
        for bad in ["", ".", "..", "../../x", "a/b", "/ena", "ena\0", "e na", "ena\n", "é", long.as_str()] {
            assert!(bad.parse::<DriverName>().is_err(), "{bad:?} accepted");
        }
        for known in ["vfio-pci", "igb_uio", "uio_pci_generic"] {
            assert_eq!(DriverName::known(known), known.parse::<DriverName>().expect(known));
        }
        let err = serde_json::from_str::<DriverName>(r#""../../x""#).expect_err("refused when read");
        assert!(err.to_string().contains("driver name"), "{err}");
    }
}
