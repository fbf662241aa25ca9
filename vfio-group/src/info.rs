//! `VFIO_IOMMU_GET_INFO` for type1 containers: page sizes and the IOVA-range capability.

use std::os::fd::BorrowedFd;

use vfio_core::{IovaRange, Result, caps, ioctl};
use vfio_sys as sys;

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
            .map_err(|e| vfio_core::Error::kernel("VFIO_IOMMU_GET_INFO", target, e))?;
        let bytes: Vec<u8> = words
            .iter()
            .flat_map(|w| w.to_ne_bytes())
            .take(argsz as usize)
            .collect();
        let wanted = caps::u32_at(&bytes, 0, "VFIO_IOMMU_GET_INFO", target)?;
        if wanted <= argsz {
            return Ok(bytes);
        }
        argsz = wanted;
    }
    Err(vfio_core::Error::malformed(
        "VFIO_IOMMU_GET_INFO",
        target,
        "argsz kept growing",
    ))
}

/// The container's IOVA page-size bitmap.
pub(crate) fn page_sizes(fd: BorrowedFd<'_>, target: &str) -> Result<u64> {
    let b = get_info(fd, target)?;
    caps::u64_at(&b, 8, "VFIO_IOMMU_GET_INFO", target)
}

/// The IOVA ranges of `VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE`, or the whole space without it.
pub(crate) fn iova_ranges(fd: BorrowedFd<'_>, target: &str) -> Result<Vec<IovaRange>> {
    const OP: &str = "VFIO_IOMMU_GET_INFO";
    let b = get_info(fd, target)?;
    let flags = caps::u32_at(&b, 4, OP, target)?;
    let cap_offset = if flags & sys::VFIO_IOMMU_INFO_CAPS != 0 {
        caps::u32_at(&b, 16, OP, target)?
    } else {
        0
    };
    let fixed = std::mem::size_of::<sys::vfio_iommu_type1_info>();
    for cap in caps::parse(&b, fixed, cap_offset, OP, target)? {
        if cap.id as u32 == sys::VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE {
            let n = caps::u32_at(cap.bytes, 8, OP, target)? as usize;
            let mut out = Vec::with_capacity(n.min(1024));
            for i in 0..n {
                let start = caps::u64_at(cap.bytes, 16 + 16 * i, OP, target)?;
                let last = caps::u64_at(cap.bytes, 24 + 16 * i, OP, target)?;
                out.push(IovaRange { start, last });
            }
            return Ok(out);
        }
    }
    Ok(vec![IovaRange {
        start: 0,
        last: u64::MAX,
    }])
}
