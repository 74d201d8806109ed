//! PCI addresses, one type for the whole workspace. Accepts `dddd:bb:dd.f` and the short `bb:dd.f`,
//! either case; always shows the kernel's lowercase four-part form used under /sys/bus/pci/devices.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A PCI function address (domain, bus, device, function).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PciAddress {
    pub domain: u16,
    pub bus: u8,
    pub device: u8,
    pub function: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid PCI address {input:?}: {reason} (expected dddd:bb:dd.f or bb:dd.f, hex)")]
pub struct PciAddressError {
    pub input: String,
    pub reason: &'static str,
}

impl PciAddress {
    pub const MAX_DEVICE: u8 = 0x1f;
    pub const MAX_FUNCTION: u8 = 7;

    pub fn new(domain: u16, bus: u8, device: u8, function: u8) -> Option<Self> {
        (device <= Self::MAX_DEVICE && function <= Self::MAX_FUNCTION).then_some(Self { domain, bus, device, function })
    }
}

fn hex_field(s: &str, width: usize) -> Option<u32> {
    if s.len() != width || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(s, 16).ok()
}

impl FromStr for PciAddress {
    type Err = PciAddressError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |reason| PciAddressError { input: input.to_string(), reason };
        let (slot, function) = input.rsplit_once('.').ok_or_else(|| err("missing '.function'"))?;
        let parts: Vec<&str> = slot.split(':').collect();
        let (domain, bus, device) = match parts.as_slice() {
            [d, b, dev] => (hex_field(d, 4).ok_or_else(|| err("domain must be 4 hex digits"))?, *b, *dev),
            [b, dev] => (0, *b, *dev),
            _ => return Err(err("wrong number of ':' separated fields")),
        };
        let bus = hex_field(bus, 2).ok_or_else(|| err("bus must be 2 hex digits"))?;
        let device = hex_field(device, 2).ok_or_else(|| err("device must be 2 hex digits"))?;
        let function = hex_field(function, 1).ok_or_else(|| err("function must be 1 hex digit"))?;
        if device > u32::from(Self::MAX_DEVICE) {
            return Err(err("device out of range (max 1f)"));
        }
        if function > u32::from(Self::MAX_FUNCTION) {
            return Err(err("function out of range (max 7)"));
        }
        // The widths checked above bound every field to its type.
        Ok(Self { domain: domain as u16, bus: bus as u8, device: device as u8, function: function as u8 })
    }
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04x}:{:02x}:{:02x}.{:x}", self.domain, self.bus, self.device, self.function)
    }
}

impl Serialize for PciAddress {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PciAddress {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_long_and_short_forms_in_either_case() {
        let a: PciAddress = "0000:0A:1F.7".parse().expect("valid");
        assert_eq!(a, PciAddress { domain: 0, bus: 0x0a, device: 0x1f, function: 7 });
        assert_eq!(a.to_string(), "0000:0a:1f.7");
        let b: PciAddress = "00:07.0".parse().expect("valid");
        assert_eq!(b.to_string(), "0000:00:07.0");
        let c: PciAddress = "ffff:ff:1f.7".parse().expect("valid");
        assert_eq!(c.domain, 0xffff);
    }

    #[test]
    fn rejects_out_of_range_and_malformed() {
        for (bad, why) in [
            ("0000:00:20.0", "device out of range"),
            ("0000:00:1f.8", "function out of range"),
            ("0000:00:20.9", "device out of range"),
            ("000g:00:01.0", "domain"),
            ("0000:00:01", "missing"),
            ("0:00:01.0", "domain"),
            ("0000:000:01.0", "bus"),
            ("0000:00:1.0", "device"),
            ("0000:00:01.10", "function"),
            ("", "missing"),
            ("0000:00:00:01.0", "wrong number"),
            ("+000:00:01.0", "domain"),
        ] {
            let err = bad.parse::<PciAddress>().expect_err(bad);
            assert!(err.to_string().contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn serde_uses_the_normalized_string() {
        let a: PciAddress = serde_json::from_str("\"00:1E.3\"").expect("valid");
        assert_eq!(serde_json::to_string(&a).expect("serializes"), "\"0000:00:1e.3\"");
        assert!(serde_json::from_str::<PciAddress>("\"00:20.0\"").is_err());
    }

    proptest! {
        #[test]
        fn round_trips_through_every_accepted_spelling(
            domain in any::<u16>(), bus in any::<u8>(), device in 0u8..=0x1f, function in 0u8..=7,
            upper in any::<bool>(),
        ) {
            let addr = PciAddress::new(domain, bus, device, function).expect("in range");
            let text = addr.to_string();
            prop_assert_eq!(text.parse::<PciAddress>().expect("own output parses"), addr);
            let shouted = if upper { text.to_uppercase() } else { text.clone() };
            prop_assert_eq!(shouted.parse::<PciAddress>().expect("either case"), addr);
            if domain == 0 {
                prop_assert_eq!(text[5..].parse::<PciAddress>().expect("short form"), addr);
            }
        }

        #[test]
        fn out_of_range_device_or_function_never_parses(device in 0x20u8..=0xff, function in 8u8..=0xf) {
            let bad_device = format!("0000:00:{device:02x}.0");
            prop_assert!(bad_device.parse::<PciAddress>().is_err());
            let bad_function = format!("0000:00:00.{function:x}");
            prop_assert!(bad_function.parse::<PciAddress>().is_err());
        }

        #[test]
        fn arbitrary_text_never_panics(s in ".{0,20}") {
            let _ = s.parse::<PciAddress>();
        }
    }
}
