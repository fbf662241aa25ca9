//! `VFIO_IOMMU_GET_INFO` for type1 containers: flags, page sizes and the capability chain (IOVA
//! ranges, DMA mappings available, dirty-tracking/migration), parsed with every offset and count
//! checked against the reply.

use std::os::fd::BorrowedFd;

use vfio_core::{Error, IovaRange, Result, caps, ioctl};
use vfio_sys as sys;

const OP: &str = "VFIO_IOMMU_GET_INFO";

/// What the type1 `VFIO_IOMMU_DIRTY_PAGES` support looks like
/// (`VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MigrationInfo {
    /// Capability flags (none defined yet).
    pub flags: u32,
    /// Page sizes a dirty bitmap may be requested in.
    pub pgsize_bitmap: u64,
    /// Largest bitmap, in bytes, one `VFIO_IOMMU_DIRTY_PAGES` call returns.
    pub max_dirty_bitmap_size: u64,
}

/// What `VFIO_IOMMU_GET_INFO` reports about a type1 container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IommuInfo {
    /// `vfio_iommu_type1_info.flags` (`VFIO_IOMMU_INFO_PGSIZES`, `VFIO_IOMMU_INFO_CAPS`).
    pub flags: u32,
    /// The IOVA page-size bitmap (0 if the kernel did not set `VFIO_IOMMU_INFO_PGSIZES`).
    pub page_sizes: u64,
    /// Usable IOVA ranges (`VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE`); all of 64-bit space when the
    /// kernel gives no such capability.
    pub iova_ranges: Vec<IovaRange>,
    /// How many more DMA mappings the container accepts (`VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL`).
    pub dma_avail: Option<u32>,
    /// Dirty-page tracking support (`VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION`): only the kernel's
    /// own type1 driver reports it, not the iommufd compatibility container.
    pub migration: Option<MigrationInfo>,
}

/// Issues `VFIO_IOMMU_GET_INFO` with the two-call argsz protocol; returns the whole reply.
fn get_info(fd: BorrowedFd<'_>, target: &str) -> Result<Vec<u8>> {
    let fixed = ioctl::argsz::<sys::vfio_iommu_type1_info>();
    let mut argsz = fixed;
    for _ in 0..4 {
        let mut words = vec![0u64; (argsz as usize).div_ceil(8)];
        // argsz is the first u32 of the struct, flags (0) the second.
        words[0] = if cfg!(target_endian = "little") {
            argsz as u64
        } else {
            (argsz as u64) << 32
        };
        // SAFETY: the buffer holds argsz bytes starting with a vfio_iommu_type1_info, 8-aligned.
        unsafe { ioctl::with_mut(fd, sys::VFIO_IOMMU_GET_INFO, &mut words[0]) }
            .map_err(|e| Error::kernel(OP, target, e))?;
        let bytes: Vec<u8> = words
            .iter()
            .flat_map(|w| w.to_ne_bytes())
            .take(argsz as usize)
            .collect();
        let wanted = caps::u32_at(&bytes, 0, OP, target)?;
        if wanted <= argsz {
            return Ok(bytes);
        }
        if wanted > 1 << 20 {
            return Err(Error::malformed(
                OP,
                target,
                format!("argsz {wanted} is implausibly large"),
            ));
        }
        argsz = wanted;
    }
    Err(Error::malformed(OP, target, "argsz kept growing"))
}

/// Issues `VFIO_IOMMU_GET_INFO` and parses the reply.
pub(crate) fn info(fd: BorrowedFd<'_>, target: &str) -> Result<IommuInfo> {
    IommuInfo::parse(&get_info(fd, target)?, target)
}

impl IommuInfo {
    /// Decodes a whole `VFIO_IOMMU_GET_INFO` reply (`vfio_iommu_type1_info` and its capability
    /// chain), as [`Container::info`](crate::Container::info) does after the ioctl, checking
    /// every offset and count against the buffer; `target` names the container in errors.
    /// Errors: Malformed when the reply breaks the uapi contract.
    pub fn parse(reply: &[u8], target: &str) -> Result<Self> {
        parse(reply, target)
    }
}

/// Parses a `VFIO_IOMMU_GET_INFO` reply (fixed part plus capability chain).
pub(crate) fn parse(b: &[u8], target: &str) -> Result<IommuInfo> {
    let flags = caps::u32_at(b, 4, OP, target)?;
    let page_sizes = if flags & sys::VFIO_IOMMU_INFO_PGSIZES != 0 {
        caps::u64_at(b, 8, OP, target)?
    } else {
        0
    };
    let cap_offset = if flags & sys::VFIO_IOMMU_INFO_CAPS != 0 {
        caps::u32_at(b, 16, OP, target)?
    } else {
        0
    };
    let fixed = std::mem::size_of::<sys::vfio_iommu_type1_info>();
    let mut out = IommuInfo {
        flags,
        page_sizes,
        iova_ranges: vec![IovaRange {
            start: 0,
            last: u64::MAX,
        }],
        dma_avail: None,
        migration: None,
    };
    for cap in caps::parse(b, fixed, cap_offset, OP, target)? {
        match cap.id as u32 {
            sys::VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE => {
                let n = caps::u32_at(cap.bytes, 8, OP, target)? as usize;
                // Each range is 16 bytes after the 16-byte head: check the count fits first.
                let need = n.checked_mul(16).and_then(|x| x.checked_add(16));
                if need.is_none_or(|need| need > cap.bytes.len()) {
                    return Err(Error::malformed(
                        OP,
                        target,
                        format!("IOVA range capability claims {n} ranges in {} bytes", cap.bytes.len()),
                    ));
                }
                let mut ranges = Vec::with_capacity(n);
                for i in 0..n {
                    let start = caps::u64_at(cap.bytes, 16 + 16 * i, OP, target)?;
                    let last = caps::u64_at(cap.bytes, 24 + 16 * i, OP, target)?;
                    if start > last {
                        return Err(Error::malformed(
                            OP,
                            target,
                            format!("IOVA range {i} starts at {start:#x} after its end {last:#x}"),
                        ));
                    }
                    ranges.push(IovaRange { start, last });
                }
                out.iova_ranges = ranges;
            }
            sys::VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL => {
                out.dma_avail = Some(caps::u32_at(cap.bytes, 8, OP, target)?);
            }
            sys::VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION => {
                out.migration = Some(MigrationInfo {
                    flags: caps::u32_at(cap.bytes, 8, OP, target)?,
                    pgsize_bitmap: caps::u64_at(cap.bytes, 16, OP, target)?,
                    max_dirty_bitmap_size: caps::u64_at(cap.bytes, 24, OP, target)?,
                });
            }
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(flags: u32, pgsizes: u64, cap_offset: u32) -> Vec<u8> {
        let mut v = 0u32.to_ne_bytes().to_vec();
        v.extend(flags.to_ne_bytes());
        v.extend(pgsizes.to_ne_bytes());
        v.extend(cap_offset.to_ne_bytes());
        v.extend(0u32.to_ne_bytes());
        v
    }

    fn cap(id: u32, next: u32, body: &[u8]) -> Vec<u8> {
        let mut v = (id as u16).to_ne_bytes().to_vec();
        v.extend(1u16.to_ne_bytes());
        v.extend(next.to_ne_bytes());
        v.extend(body);
        v
    }

    const FLAGS: u32 = sys::VFIO_IOMMU_INFO_PGSIZES | sys::VFIO_IOMMU_INFO_CAPS;

    #[test]
    fn parses_all_capabilities() {
        let mut b = head(FLAGS, 0x4020_1000, 24);
        // DMA avail at 24 (12 bytes + 4 pad = 16), IOVA ranges at 40, migration after.
        let mut avail = 65535u32.to_ne_bytes().to_vec();
        avail.extend([0; 4]);
        b.extend(cap(sys::VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL, 40, &avail));
        let mut r = 2u32.to_ne_bytes().to_vec();
        r.extend([0; 4]);
        for (s, l) in [(0u64, 0xfedf_ffffu64), (0xfef0_0000, u64::MAX)] {
            r.extend(s.to_ne_bytes());
            r.extend(l.to_ne_bytes());
        }
        b.extend(cap(sys::VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE, 40 + 48, &r));
        let mut m = 0u32.to_ne_bytes().to_vec();
        m.extend([0; 4]);
        m.extend(0x1000u64.to_ne_bytes());
        m.extend(0x1000_0000u64.to_ne_bytes());
        b.extend(cap(sys::VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION, 0, &m));
        let info = parse(&b, "c").unwrap();
        assert_eq!(info.page_sizes, 0x4020_1000);
        assert_eq!(info.dma_avail, Some(65535));
        assert_eq!(info.iova_ranges.len(), 2);
        assert_eq!(info.iova_ranges[1].start, 0xfef0_0000);
        assert_eq!(info.migration.unwrap().max_dirty_bitmap_size, 0x1000_0000);
    }

    #[test]
    fn no_caps_means_whole_space() {
        let info = parse(&head(sys::VFIO_IOMMU_INFO_PGSIZES, 0x1000, 0), "c").unwrap();
        assert_eq!(
            info.iova_ranges,
            vec![IovaRange {
                start: 0,
                last: u64::MAX
            }]
        );
        assert_eq!((info.dma_avail, info.migration), (None, None));
    }

    #[test]
    fn rejects_lying_counts_and_truncation() {
        let mut b = head(FLAGS, 0x1000, 24);
        let mut r = u32::MAX.to_ne_bytes().to_vec();
        r.extend([0; 4]);
        b.extend(cap(sys::VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE, 0, &r));
        assert!(matches!(parse(&b, "c"), Err(Error::Malformed { .. })));
        let mut b = head(FLAGS, 0x1000, 24);
        b.extend(cap(sys::VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL, 0, &[1]));
        assert!(parse(&b, "c").is_err(), "truncated DMA avail");
        let mut b = head(FLAGS, 0x1000, 24);
        let mut r = 1u32.to_ne_bytes().to_vec();
        r.extend([0; 4]);
        r.extend(5u64.to_ne_bytes());
        r.extend(4u64.to_ne_bytes());
        b.extend(cap(sys::VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE, 0, &r));
        assert!(parse(&b, "c").is_err(), "start after last");
        assert!(parse(&[0; 6], "c").is_err(), "short fixed part");
        assert!(parse(&head(FLAGS, 0, 200), "c").is_err(), "cap offset past the end");
    }
}
