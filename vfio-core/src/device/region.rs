//! Device regions (`VFIO_DEVICE_GET_REGION_INFO`): where in the device fd each region lives,
//! its flags and its capabilities (sparse mmap areas, type, MSI-X mappable).

use bitflags::bitflags;
use vfio_sys as sys;

use crate::ioctl::caps;
use crate::{Error, Result};

bitflags! {
    /// `vfio_region_info.flags`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct RegionFlags: u32 {
        /// The region can be read with pread.
        const READ = sys::VFIO_REGION_INFO_FLAG_READ;
        /// The region can be written with pwrite.
        const WRITE = sys::VFIO_REGION_INFO_FLAG_WRITE;
        /// The region (or its sparse areas) can be mmapped.
        const MMAP = sys::VFIO_REGION_INFO_FLAG_MMAP;
        /// The info carries a capability chain.
        const CAPS = sys::VFIO_REGION_INFO_FLAG_CAPS;
        const _ = !0;
    }
}

/// A capability of a region (`VFIO_REGION_INFO_CAP_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegionCap {
    /// Only these areas may be mmapped (for example, a BAR minus its MSI-X table).
    SparseMmap(Vec<SparseArea>),
    /// A device-specific region type (e.g. an IGD OpRegion, a GFX EDID region).
    Type {
        /// Region type (`VFIO_REGION_TYPE_*`, vendor types have bit 31 set).
        type_: u32,
        /// Subtype within the type.
        subtype: u32,
    },
    /// The MSI-X table inside this BAR may be mmapped (interrupt remapping protects it).
    MsixMappable,
    /// A capability this crate does not decode, kept whole (header included).
    Unknown {
        /// Capability id.
        id: u16,
        /// Capability version.
        version: u16,
        /// Its bytes.
        bytes: Vec<u8>,
    },
}

/// One mmappable area of a region, relative to the region's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SparseArea {
    /// Offset inside the region.
    pub offset: u64,
    /// Length in bytes.
    pub size: u64,
}

/// One region of a device: its index, flags, size, offset inside the device fd and capabilities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionInfo {
    /// Region index (for PCI: BAR0-5 = 0-5, ROM = 6, config = 7, VGA = 8).
    pub index: u32,
    /// What the region supports.
    pub flags: RegionFlags,
    /// Size in bytes; 0 for an unimplemented region (e.g. an absent BAR).
    pub size: u64,
    /// Offset of the region inside the device fd (for pread/pwrite/mmap).
    pub offset: u64,
    /// The capability chain.
    pub caps: Vec<RegionCap>,
}

impl RegionInfo {
    /// Decodes a whole `VFIO_DEVICE_GET_REGION_INFO` reply (the struct and its capability chain),
    /// checking every offset against the buffer.
    pub fn parse(reply: &[u8], target: &str) -> Result<Self> {
        const OP: &str = "VFIO_DEVICE_GET_REGION_INFO";
        let fixed = std::mem::size_of::<sys::vfio_region_info>();
        if reply.len() < fixed {
            return Err(Error::malformed(
                OP,
                target,
                format!("reply of {} bytes is shorter than vfio_region_info", reply.len()),
            ));
        }
        let flags = RegionFlags::from_bits_retain(caps::u32_at(reply, 4, OP, target)?);
        let first = if flags.contains(RegionFlags::CAPS) {
            caps::u32_at(reply, 12, OP, target)?
        } else {
            0
        };
        let size = caps::u64_at(reply, 16, OP, target)?;
        let offset = caps::u64_at(reply, 24, OP, target)?;
        if offset.checked_add(size).is_none() {
            return Err(Error::malformed(
                OP,
                target,
                format!("region of {size:#x} bytes at {offset:#x} runs past the device fd's last offset"),
            ));
        }
        let mut out = Vec::new();
        for cap in caps::parse(reply, fixed, first, OP, target)? {
            out.push(match cap.id as u32 {
                sys::VFIO_REGION_INFO_CAP_SPARSE_MMAP => {
                    let n = caps::u32_at(cap.bytes, 8, OP, target)? as usize;
                    let mut areas = Vec::with_capacity(n.min(64));
                    for i in 0..n {
                        let area = caps::u64_at(cap.bytes, 16 + 16 * i, OP, target)?;
                        let len = caps::u64_at(cap.bytes, 24 + 16 * i, OP, target)?;
                        if area.checked_add(len).is_none_or(|end| end > size) {
                            return Err(Error::malformed(
                                OP,
                                target,
                                format!(
                                    "sparse mmap area {i} ({area:#x}+{len:#x}) is outside the region of {size:#x} bytes"
                                ),
                            ));
                        }
                        areas.push(SparseArea {
                            offset: area,
                            size: len,
                        });
                    }
                    RegionCap::SparseMmap(areas)
                }
                sys::VFIO_REGION_INFO_CAP_TYPE => RegionCap::Type {
                    type_: caps::u32_at(cap.bytes, 8, OP, target)?,
                    subtype: caps::u32_at(cap.bytes, 12, OP, target)?,
                },
                sys::VFIO_REGION_INFO_CAP_MSIX_MAPPABLE => RegionCap::MsixMappable,
                _ => RegionCap::Unknown {
                    id: cap.id,
                    version: cap.version,
                    bytes: cap.bytes.to_vec(),
                },
            });
        }
        Ok(RegionInfo {
            index: caps::u32_at(reply, 8, OP, target)?,
            flags,
            size,
            offset,
            caps: out,
        })
    }

    /// The areas that may be mmapped: the sparse areas when the region has that capability, the
    /// whole region when it is mmappable without one, nothing otherwise.
    pub fn mmap_areas(&self) -> Vec<SparseArea> {
        if !self.flags.contains(RegionFlags::MMAP) || self.size == 0 {
            return Vec::new();
        }
        for cap in &self.caps {
            if let RegionCap::SparseMmap(areas) = cap {
                return areas.iter().copied().filter(|a| a.size > 0).collect();
            }
        }
        vec![SparseArea {
            offset: 0,
            size: self.size,
        }]
    }

    /// Whether the region has the MSI-X-mappable capability.
    pub fn msix_mappable(&self) -> bool {
        self.caps.contains(&RegionCap::MsixMappable)
    }

    /// Checks `[offset, offset + len)` lies inside the region; returns the device-fd offset.
    pub(crate) fn file_offset(&self, op: &'static str, dev: &str, offset: u64, len: usize) -> Result<u64> {
        // Checked twice: `self` may have been built by hand, not by `parse`.
        let end = offset.checked_add(len as u64);
        match (end, self.offset.checked_add(offset)) {
            (Some(end), Some(pos)) if end <= self.size => Ok(pos),
            _ => Err(Error::invalid(
                op,
                format!("{dev} region {}", self.index),
                format!(
                    "access of {len} bytes at {offset:#x} is outside the region of {:#x} bytes",
                    self.size
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_bounds() {
        let r = RegionInfo {
            index: 0,
            flags: RegionFlags::READ,
            size: 0x100,
            offset: 0x1000,
            caps: vec![],
        };
        assert_eq!(r.file_offset("t", "dev", 0xfc, 4).unwrap(), 0x10fc);
        assert!(r.file_offset("t", "dev", 0xfd, 4).is_err());
        assert!(r.file_offset("t", "dev", u64::MAX, 2).is_err());
    }

    fn reply(flags: u32, caps: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        let argsz = 32 + caps.len() as u32;
        for w in [argsz, flags, 0, if caps.is_empty() { 0 } else { 32 }] {
            v.extend(w.to_ne_bytes());
        }
        v.extend(0x4000u64.to_ne_bytes());
        v.extend(0x10000u64.to_ne_bytes());
        v.extend(caps);
        v
    }

    fn cap(id: u16, next: u32, body: &[u8]) -> Vec<u8> {
        let mut v = id.to_ne_bytes().to_vec();
        v.extend(1u16.to_ne_bytes());
        v.extend(next.to_ne_bytes());
        v.extend(body);
        v
    }

    #[test]
    fn parses_sparse_mmap_and_unknown_caps() {
        let mut body = 2u32.to_ne_bytes().to_vec();
        body.extend(0u32.to_ne_bytes());
        for (o, s) in [(0u64, 0x1000u64), (0x3000, 0x1000)] {
            body.extend(o.to_ne_bytes());
            body.extend(s.to_ne_bytes());
        }
        let mut caps = cap(1, 32 + 8 + body.len() as u32, &body);
        caps.extend(cap(99, 0, &[7, 7, 7, 7]));
        let flags = sys::VFIO_REGION_INFO_FLAG_MMAP | sys::VFIO_REGION_INFO_FLAG_CAPS | sys::VFIO_REGION_INFO_FLAG_READ;
        let r = RegionInfo::parse(&reply(flags, &caps), "dev").unwrap();
        assert_eq!(r.size, 0x4000);
        assert_eq!(
            r.mmap_areas(),
            vec![
                SparseArea {
                    offset: 0,
                    size: 0x1000
                },
                SparseArea {
                    offset: 0x3000,
                    size: 0x1000
                }
            ]
        );
        assert!(matches!(&r.caps[1], RegionCap::Unknown { id: 99, bytes, .. } if bytes.len() == 12));
        assert!(!r.msix_mappable());
    }

    #[test]
    fn parses_region_type_and_msix_mappable() {
        // A vendor region type (e.g. igd's OpRegion: type 0x80008086, subtype 1) chained to the
        // MSI-X mappable capability, which has no body.
        let mut body = 0x8000_8086u32.to_ne_bytes().to_vec();
        body.extend(1u32.to_ne_bytes());
        let type_id = sys::VFIO_REGION_INFO_CAP_TYPE as u16;
        let msix_id = sys::VFIO_REGION_INFO_CAP_MSIX_MAPPABLE as u16;
        let mut caps = cap(type_id, 32 + 8 + body.len() as u32, &body);
        caps.extend(cap(msix_id, 0, &[]));
        let flags = sys::VFIO_REGION_INFO_FLAG_CAPS | sys::VFIO_REGION_INFO_FLAG_READ;
        let r = RegionInfo::parse(&reply(flags, &caps), "dev").unwrap();
        assert_eq!(
            r.caps,
            vec![
                RegionCap::Type {
                    type_: 0x8000_8086,
                    subtype: 1
                },
                RegionCap::MsixMappable
            ]
        );
        assert!(r.msix_mappable());
        // A type capability cut short (no subtype) is malformed, not read past its end.
        let short = cap(type_id, 0, &0x8000_8086u32.to_ne_bytes());
        let e = RegionInfo::parse(&reply(flags, &short), "dev").unwrap_err();
        assert!(matches!(e, Error::Malformed { .. }), "{e}");
    }

    #[test]
    fn sparse_count_beyond_the_buffer_is_malformed() {
        let mut body = 1000u32.to_ne_bytes().to_vec();
        body.extend(0u32.to_ne_bytes());
        let caps = cap(1, 0, &body);
        let flags = sys::VFIO_REGION_INFO_FLAG_MMAP | sys::VFIO_REGION_INFO_FLAG_CAPS;
        let e = RegionInfo::parse(&reply(flags, &caps), "dev").unwrap_err();
        assert!(matches!(e, Error::Malformed { .. }), "{e}");
        assert!(RegionInfo::parse(&[0u8; 8], "dev").is_err());
    }

    #[test]
    fn region_past_the_last_fd_offset_is_malformed() {
        // Found by the region_caps fuzz target: such a region made `file_offset` overflow.
        let mut r = reply(sys::VFIO_REGION_INFO_FLAG_READ, &[]);
        r[24..32].copy_from_slice(&0x1000_0000_0000u64.to_ne_bytes());
        r[16..24].copy_from_slice(&(u64::MAX - 0xfff).to_ne_bytes());
        let e = RegionInfo::parse(&r, "dev").unwrap_err();
        assert!(matches!(e, Error::Malformed { .. }), "{e}");
        let hand_made = RegionInfo {
            index: 0,
            flags: RegionFlags::READ,
            size: 0x100,
            offset: u64::MAX - 0x10,
            caps: vec![],
        };
        assert!(hand_made.file_offset("t", "dev", 0x20, 4).is_err());
    }

    #[test]
    fn sparse_area_outside_the_region_is_malformed() {
        // Found by the region_caps fuzz target: such an area was only refused at mmap time.
        for (o, s) in [(0x3000u64, 0x2000u64), (u64::MAX, 2)] {
            let mut body = 1u32.to_ne_bytes().to_vec();
            body.extend(0u32.to_ne_bytes());
            body.extend(o.to_ne_bytes());
            body.extend(s.to_ne_bytes());
            let flags = sys::VFIO_REGION_INFO_FLAG_MMAP | sys::VFIO_REGION_INFO_FLAG_CAPS;
            let e = RegionInfo::parse(&reply(flags, &cap(1, 0, &body)), "dev").unwrap_err();
            assert!(e.to_string().contains("outside the region of 0x4000 bytes"), "{e}");
        }
    }

    #[test]
    fn whole_region_without_caps() {
        let r = RegionInfo::parse(&reply(sys::VFIO_REGION_INFO_FLAG_MMAP, &[]), "dev").unwrap();
        assert_eq!(
            r.mmap_areas(),
            vec![SparseArea {
                offset: 0,
                size: 0x4000
            }]
        );
    }
}
