//! PCI addresses (`DDDD:BB:DD.F`), as sysfs and `VFIO_GROUP_GET_DEVICE_FD` spell them.

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// A PCI function address: domain, bus, device (slot) and function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PciAddress {
    /// PCI domain (segment), 0 on most machines.
    pub domain: u32,
    /// Bus number.
    pub bus: u8,
    /// Device (slot) number, 0..=31.
    pub device: u8,
    /// Function number, 0..=7.
    pub function: u8,
}

impl PciAddress {
    /// Builds an address, checking device <= 31 and function <= 7. Errors: InvalidArgument
    /// naming the address otherwise.
    pub fn new(domain: u32, bus: u8, device: u8, function: u8) -> crate::Result<Self> {
        if device > 31 || function > 7 {
            return Err(Error::invalid(
                "PciAddress::new",
                format!("{domain:04x}:{bus:02x}:{device:02x}.{function:x}"),
                "device must be <= 0x1f and function <= 7",
            ));
        }
        Ok(PciAddress {
            domain,
            bus,
            device,
            function,
        })
    }
}

impl fmt::Display for PciAddress {
    /// The sysfs form, `0000:00:03.0`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{:x}",
            self.domain, self.bus, self.device, self.function
        )
    }
}

impl FromStr for PciAddress {
    type Err = Error;

    /// Parses `DDDD:BB:DD.F` or `BB:DD.F` (domain 0), hexadecimal, case-insensitive.
    fn from_str(s: &str) -> crate::Result<Self> {
        let bad = |why: &str| {
            Error::invalid(
                "parse PCI address",
                format!("{s:?}"),
                format!("{why} (expected DDDD:BB:DD.F or BB:DD.F)"),
            )
        };
        let (rest, function) = s.rsplit_once('.').ok_or_else(|| bad("no '.' before the function"))?;
        let parts: Vec<&str> = rest.split(':').collect();
        let (domain, bus, device) = match parts.as_slice() {
            [d, b, s] => (*d, *b, *s),
            [b, s] => ("0", *b, *s),
            _ => return Err(bad("wrong number of ':' separated fields")),
        };
        let hex = |field: &str, max_len: usize, name: &str| -> crate::Result<u32> {
            if field.is_empty() || field.len() > max_len || !field.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(bad(&format!("{name} {field:?} is not 1-{max_len} hex digits")));
            }
            u32::from_str_radix(field, 16).map_err(|_| bad(name))
        };
        let domain = hex(domain, 8, "domain")?;
        let bus = hex(bus, 2, "bus")? as u8;
        let device = hex(device, 2, "device")?;
        let function = hex(function, 1, "function")?;
        if device > 31 {
            return Err(bad("device is above 0x1f"));
        }
        if function > 7 {
            return Err(bad("function is above 7"));
        }
        Ok(PciAddress {
            domain,
            bus,
            device: device as u8,
            function: function as u8,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_and_short_forms() {
        let a: PciAddress = "0000:00:03.0".parse().unwrap();
        assert_eq!(a, PciAddress::new(0, 0, 3, 0).unwrap());
        assert_eq!(
            "01:1f.7".parse::<PciAddress>().unwrap(),
            PciAddress::new(0, 1, 31, 7).unwrap()
        );
        assert_eq!(
            "ABCD:ff:00.1".parse::<PciAddress>().unwrap().to_string(),
            "abcd:ff:00.1"
        );
    }

    #[test]
    fn rejects_malformed() {
        for s in [
            "",
            "0000:00:03",
            "00:20.0",
            "00:00.8",
            "0000:000:00.0",
            "x:00:00.0",
            "0:0:0:0.0",
            "00:00.-1",
        ] {
            let e = s.parse::<PciAddress>().unwrap_err();
            assert!(e.to_string().contains(&format!("{s:?}")), "{e}");
        }
    }
}
