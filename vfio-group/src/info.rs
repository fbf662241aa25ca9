//! `VFIO_IOMMU_GET_INFO` for type1 containers: flags, page sizes and the capability chain (IOVA
//! ranges, DMA mappings available, dirty-tracking/migration), parsed with every offset and count
//! checked against the reply.

use vfio_core::container::MAX_IOVA_RANGES;
use vfio_core::ioctl::{self, caps, kind, requests as req};
use vfio_core::{Error, IovaRange, Result};
use vfio_sys as sys;
use zerocopy::FromBytes;

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

/// Issues `VFIO_IOMMU_GET_INFO` (the two-call argsz protocol of [`ioctl::query`]) and parses
/// the reply.
pub(crate) fn info(fd: ioctl::Fd<'_, kind::Container>, target: &str) -> Result<IommuInfo> {
    let reply = ioctl::query::<req::IommuGetInfo>(fd, &Default::default(), || target.to_string())?;
    IommuInfo::parse(reply.bytes(), target)
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

/// Reads a `T` from the start of `bytes` (which need not be aligned), or Malformed naming `what`.
fn read<T: FromBytes>(bytes: &[u8], what: &str, target: &str) -> Result<T> {
    T::read_from_prefix(bytes).map(|(t, _)| t).map_err(|_| {
        Error::malformed(
            OP,
            target,
            format!(
                "{what} of {} bytes is shorter than its {}-byte struct",
                bytes.len(),
                size_of::<T>()
            ),
        )
    })
}

/// Parses a `VFIO_IOMMU_GET_INFO` reply (fixed part plus capability chain).
pub(crate) fn parse(b: &[u8], target: &str) -> Result<IommuInfo> {
    let head: sys::vfio_iommu_type1_info = read(b, "reply", target)?;
    let flags = head.flags;
    let page_sizes = if flags & sys::VFIO_IOMMU_INFO_PGSIZES != 0 {
        head.iova_pgsizes
    } else {
        0
    };
    let cap_offset = if flags & sys::VFIO_IOMMU_INFO_CAPS != 0 {
        head.cap_offset
    } else {
        0
    };
    let fixed = size_of::<sys::vfio_iommu_type1_info>();
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
                let cap_head: sys::vfio_iommu_type1_info_cap_iova_range =
                    read(cap.bytes, "IOVA range capability", target)?;
                let n = cap_head.nr_iovas as usize;
                if n > MAX_IOVA_RANGES {
                    return Err(Error::malformed(
                        OP,
                        target,
                        format!("IOVA range capability claims {n} ranges, above the limit of {MAX_IOVA_RANGES}"),
                    ));
                }
                // The ranges follow the head: check the count fits first.
                const HEAD: usize = size_of::<sys::vfio_iommu_type1_info_cap_iova_range>();
                const RANGE: usize = size_of::<sys::vfio_iova_range>();
                let need = n.checked_mul(RANGE).and_then(|x| x.checked_add(HEAD));
                let Some(table) = need.and_then(|need| cap.bytes.get(HEAD..need)) else {
                    return Err(Error::malformed(
                        OP,
                        target,
                        format!("IOVA range capability claims {n} ranges in {} bytes", cap.bytes.len()),
                    ));
                };
                let mut ranges = Vec::with_capacity(n);
                for (i, raw) in table.chunks_exact(RANGE).enumerate() {
                    let r: sys::vfio_iova_range = read(raw, "IOVA range", target)?;
                    if r.start > r.end {
                        return Err(Error::malformed(
                            OP,
                            target,
                            format!("IOVA range {i} starts at {:#x} after its end {:#x}", r.start, r.end),
                        ));
                    }
                    ranges.push(IovaRange {
                        start: r.start,
                        last: r.end,
                    });
                }
                out.iova_ranges = ranges;
            }
            sys::VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL => {
                let c: sys::vfio_iommu_type1_info_dma_avail = read(cap.bytes, "DMA avail capability", target)?;
                out.dma_avail = Some(c.avail);
            }
            sys::VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION => {
                let c: sys::vfio_iommu_type1_info_cap_migration = read(cap.bytes, "migration capability", target)?;
                out.migration = Some(MigrationInfo {
                    flags: c.flags,
                    pgsize_bitmap: c.pgsize_bitmap,
                    max_dirty_bitmap_size: c.max_dirty_bitmap_size,
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

    #[test]
    fn iova_range_count_is_capped_even_when_the_bytes_are_there() {
        let reply = |n: u32| {
            let mut b = head(FLAGS, 0x1000, 24);
            let mut r = n.to_ne_bytes().to_vec();
            r.extend([0; 4]);
            for i in 0..u64::from(n) {
                r.extend((i * 0x10_0000).to_ne_bytes());
                r.extend((i * 0x10_0000 + 0xfff).to_ne_bytes());
            }
            b.extend(cap(sys::VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE, 0, &r));
            b
        };
        let at_limit = parse(&reply(MAX_IOVA_RANGES as u32), "c").unwrap();
        assert_eq!(at_limit.iova_ranges.len(), MAX_IOVA_RANGES);
        let e = parse(&reply(MAX_IOVA_RANGES as u32 + 1), "container fd 5").unwrap_err();
        assert!(matches!(e, Error::Malformed { .. }), "{e:?}");
        let text = e.to_string();
        assert!(
            text.contains("container fd 5") && text.contains(&(MAX_IOVA_RANGES + 1).to_string()),
            "{text}"
        );
    }
}
