//! ACS (Access Control Services, PCIe extended capability 0x000d) along a device's path to
//! the root, read from each bridge's sysfs `config`. The kernel splits IOMMU groups only where
//! every bridge above a function isolates it (source validation, request and completion
//! redirection, upstream forwarding); a bridge without ACS puts what is below it in one group.

use std::path::Path;

use vfio_core::{PciAddress, Sysfs};

/// The ACS extended capability id.
pub const ACS_ID: u16 = 0x000d;

/// ACS control bits the kernel requires for isolation (`REQ_ACS_FLAGS` in drivers/iommu:
/// source validation, request redirect, completion redirect, upstream forwarding).
pub const ACS_ISOLATING: u16 = 0x0001 | 0x0004 | 0x0008 | 0x0010;

/// What a bridge's config space says about ACS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acs {
    /// The capability at `offset`, with its capability and control registers.
    Present {
        /// Its offset in config space.
        offset: u16,
        /// The ACS capability register (what the bridge can do).
        capability: u16,
        /// The ACS control register (what is enabled).
        control: u16,
    },
    /// Extended config space was read, and it has no ACS capability.
    Absent,
    /// No extended config space (a conventional PCI function), or it could not be read
    /// (without root, sysfs `config` gives only the first 64 bytes).
    Unknown,
}

impl Acs {
    /// Whether the bridge isolates the functions below it: every bit of [`ACS_ISOLATING`] that
    /// the bridge implements is enabled (the kernel's `pci_acs_flags_enabled`: a bit the bridge
    /// does not implement counts as enabled).
    pub fn isolates(&self) -> Option<bool> {
        match *self {
            Acs::Present {
                capability, control, ..
            } => {
                let needed = ACS_ISOLATING & capability;
                Some(control & needed == needed)
            }
            Acs::Absent => Some(false),
            Acs::Unknown => None,
        }
    }

    /// Parses config space bytes (as sysfs `config` gives them).
    pub fn parse(config: &[u8]) -> Self {
        if config.len() <= 0x100 {
            return Acs::Unknown;
        }
        let u16_at = |o: usize| config.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
        let u32_at = |o: usize| {
            config
                .get(o..o + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        let mut offset = 0x100usize;
        // At most (4096 - 256) / 4 headers: a loop in a broken list ends.
        for _ in 0..960 {
            let Some(header) = u32_at(offset) else {
                return Acs::Absent;
            };
            if header == 0 || header == u32::MAX {
                return Acs::Absent;
            }
            if header as u16 == ACS_ID {
                return match (u16_at(offset + 4), u16_at(offset + 6)) {
                    (Some(capability), Some(control)) => Acs::Present {
                        offset: offset as u16,
                        capability,
                        control,
                    },
                    _ => Acs::Unknown,
                };
            }
            let next = (header >> 20) as usize & !3;
            if next < 0x100 {
                return Acs::Absent;
            }
            offset = next;
        }
        Acs::Absent
    }
}

/// One bridge on the way from a device to its root bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcsHop {
    /// The bridge.
    pub bridge: PciAddress,
    /// Its ACS.
    pub acs: Acs,
}

/// The bridges above `addr`, nearest first, with their ACS, from the device's canonical sysfs
/// path (`/sys/devices/pci0000:00/0000:00:0a.0/0000:01:00.0`). Empty for a root-bus device.
pub fn path_to_root(sysfs: &Sysfs, addr: &PciAddress) -> Vec<AcsHop> {
    let Ok(real) = std::fs::canonicalize(sysfs.pci_device_dir(addr)) else {
        return Vec::new();
    };
    let mut hops = Vec::new();
    let mut dir: Option<&Path> = real.parent();
    while let Some(d) = dir {
        let Some(bridge) = d
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<PciAddress>().ok())
        else {
            break;
        };
        let acs = std::fs::read(d.join("config")).map_or(Acs::Unknown, |c| Acs::parse(&c));
        hops.push(AcsHop { bridge, acs });
        dir = d.parent();
    }
    hops
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 4 KiB of config space with extended capabilities `(id, body)` chained from 0x100.
    fn config(caps: &[(u16, [u16; 2])]) -> Vec<u8> {
        let mut c = vec![0u8; 4096];
        let mut off = 0x100;
        for (i, (id, body)) in caps.iter().enumerate() {
            let next = if i + 1 < caps.len() { off + 0x10 } else { 0 };
            let header = u32::from(*id) | (1 << 16) | ((next as u32) << 20);
            c[off..off + 4].copy_from_slice(&header.to_le_bytes());
            c[off + 4..off + 6].copy_from_slice(&body[0].to_le_bytes());
            c[off + 6..off + 8].copy_from_slice(&body[1].to_le_bytes());
            off += 0x10;
        }
        c
    }

    #[test]
    fn acs_found_after_other_capabilities() {
        // AER, then ACS with every isolating bit implemented and enabled.
        let c = config(&[(0x0001, [0, 0]), (ACS_ID, [0x001f, 0x001d])]);
        let acs = Acs::parse(&c);
        assert_eq!(
            acs,
            Acs::Present {
                offset: 0x110,
                capability: 0x1f,
                control: 0x1d
            }
        );
        assert_eq!(acs.isolates(), Some(true));
        // Implemented but off: no isolation.
        assert_eq!(Acs::parse(&config(&[(ACS_ID, [0x001f, 0])])).isolates(), Some(false));
    }

    #[test]
    fn no_acs_short_config_and_broken_lists() {
        assert_eq!(Acs::parse(&config(&[(0x0001, [0, 0])])), Acs::Absent);
        assert_eq!(Acs::parse(&[0u8; 256]), Acs::Unknown);
        assert_eq!(Acs::parse(&[0u8; 64]), Acs::Unknown);
        assert_eq!(Acs::parse(&vec![0u8; 4096]), Acs::Absent);
        assert_eq!(Acs::parse(&vec![0xffu8; 4096]), Acs::Absent);
        // A capability pointing to itself ends.
        let mut c = vec![0u8; 4096];
        c[0x100..0x104].copy_from_slice(&(0x0001u32 | (0x100 << 20)).to_le_bytes());
        assert_eq!(Acs::parse(&c), Acs::Absent);
        // Truncated right after the ACS header.
        let c = config(&[(ACS_ID, [1, 1])]);
        assert_eq!(Acs::parse(&c[..0x105]), Acs::Unknown);
        assert_eq!(Acs::Unknown.isolates(), None);
    }

    #[test]
    fn path_walks_bridges_nearest_first() {
        let root = std::env::temp_dir().join(format!("vfio-pci-acs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let port = root.join("sys/devices/pci0000:00/0000:00:0a.0");
        let dev = port.join("0000:01:00.0");
        std::fs::create_dir_all(&dev).unwrap();
        std::fs::write(port.join("config"), config(&[(ACS_ID, [0x1f, 0x1d])])).unwrap();
        std::fs::create_dir_all(root.join("sys/bus/pci/devices")).unwrap();
        std::os::unix::fs::symlink(&dev, root.join("sys/bus/pci/devices/0000:01:00.0")).unwrap();
        let s = Sysfs::at(root.join("sys"), root.join("dev"));
        let hops = path_to_root(&s, &"0000:01:00.0".parse().unwrap());
        assert_eq!(hops.len(), 1);
        assert_eq!(hops[0].bridge, "0000:00:0a.0".parse().unwrap());
        assert_eq!(hops[0].acs.isolates(), Some(true));
        assert!(path_to_root(&s, &"0000:02:00.0".parse().unwrap()).is_empty());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
