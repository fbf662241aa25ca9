//! [`Uuid`]: the 16-byte identifiers VFIO takes for SR-IOV VF tokens
//! (`VFIO_DEVICE_FEATURE_PCI_VF_TOKEN`, `vf_token=` in group mode, `VFIO_DEVICE_BIND_FLAG_TOKEN`)
//! and mediated-device instances.

use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

/// A UUID, written `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (hex, either case).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Uuid([u8; 16]);

impl Uuid {
    /// The UUID of these bytes (in the order they are written).
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Uuid(bytes)
    }

    /// Its bytes, as the kernel takes them.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// A random (version 4) UUID from the kernel's random pool (`/dev/urandom`). Errors: Path
    /// when `/dev/urandom` cannot be read.
    pub fn random() -> Result<Self> {
        use std::io::Read;
        let mut b = [0u8; 16];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut b))
            .map_err(|e| Error::path("read", "/dev/urandom", e))?;
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        Ok(Uuid(b))
    }
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Uuid({self})")
    }
}

impl FromStr for Uuid {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| Error::invalid("parse UUID", format!("{s:?}"), why);
        let groups: Vec<&str> = s.split('-').collect();
        if groups.iter().map(|g| g.len()).collect::<Vec<_>>() != [8, 4, 4, 4, 12] {
            return Err(bad(
                "expected 8-4-4-4-12 hex digits, e.g. 83b8f4f2-509f-382f-3c1e-e6bfe0fa1001",
            ));
        }
        let hex: String = groups.concat();
        let mut out = [0u8; 16];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad("not a hex digit"))?;
        }
        Ok(Uuid(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prints_and_refuses() {
        let u: Uuid = "83B8F4F2-509F-382F-3C1E-E6BFE0FA1001".parse().unwrap();
        assert_eq!(u.to_string(), "83b8f4f2-509f-382f-3c1e-e6bfe0fa1001");
        assert_eq!(u.as_bytes()[0], 0x83);
        assert_eq!(u.to_string().parse::<Uuid>().unwrap(), u);
        for bad in [
            "",
            "83b8f4f2509f382f3c1ee6bfe0fa1001",
            "83b8f4f2-509f-382f-3c1e-e6bfe0fa100g",
            "83b8f4f2-509f-382f-3c1e-e6bfe0fa10011",
        ] {
            assert!(
                matches!(bad.parse::<Uuid>(), Err(Error::InvalidArgument { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "reads /dev/urandom")]
    fn random_is_version_4() {
        let (a, b) = (Uuid::random().unwrap(), Uuid::random().unwrap());
        assert_ne!(a, b);
        assert_eq!(a.as_bytes()[6] >> 4, 4);
        assert_eq!(a.as_bytes()[8] >> 6, 0b10);
    }
}
