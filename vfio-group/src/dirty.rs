//! Type1 dirty-page tracking (`VFIO_IOMMU_DIRTY_PAGES`): start, stop and read the bitmap of the
//! pages a device may have written. Only the kernel's type1 driver has it, for type1v2
//! containers; without a device that reports its own writes, type1 counts every pinned (mapped)
//! page as dirty.

use std::os::fd::BorrowedFd;

use vfio_core::{Error, Result, ioctl};
use vfio_sys as sys;

const OP: &str = "VFIO_IOMMU_DIRTY_PAGES";

/// `VFIO_IOMMU_DIRTY_PAGES` with the header only (START or STOP).
pub(crate) fn set(fd: BorrowedFd<'_>, target: &str, flags: u32) -> Result<()> {
    let mut arg = sys::vfio_iommu_type1_dirty_bitmap {
        argsz: ioctl::argsz::<sys::vfio_iommu_type1_dirty_bitmap>(),
        flags,
        data: sys::__IncompleteArrayField::new(),
    };
    // SAFETY: a vfio_iommu_type1_dirty_bitmap whose argsz covers no trailing data, on a
    // container fd.
    unsafe { ioctl::with_mut(fd, sys::VFIO_IOMMU_DIRTY_PAGES, &mut arg) }.map_err(|e| Error::kernel(OP, target, e))?;
    Ok(())
}

/// How many u64 words the bitmap of `size` bytes in `pgsize` pages takes, checked against the
/// kernel's limit.
fn bitmap_words(op: &'static str, what: &str, size: u64, pgsize: u64, max_bytes: u64) -> Result<u64> {
    if pgsize == 0 || !pgsize.is_power_of_two() || size == 0 || size % pgsize != 0 {
        return Err(Error::invalid(
            op,
            what,
            format!("size must be a non-zero multiple of the {pgsize:#x}-byte dirty page"),
        ));
    }
    let words = (size / pgsize).div_ceil(64);
    if words * 8 > max_bytes {
        return Err(Error::invalid(
            op,
            what,
            format!(
                "needs a {}-byte bitmap, more than the kernel's {max_bytes}; ask for less",
                words * 8
            ),
        ));
    }
    Ok(words)
}

/// The GET_BITMAP argument: the header followed by the range.
#[repr(C)]
struct GetBitmap {
    head: sys::vfio_iommu_type1_dirty_bitmap,
    range: sys::vfio_iommu_type1_dirty_bitmap_get,
}

/// `VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP` for `[iova, iova + size)` in pages of `pgsize`
/// bytes, at most `max_bytes` of bitmap; one bit per page, bit `n % 64` of word `n / 64`.
pub(crate) fn get(
    fd: BorrowedFd<'_>,
    target: &str,
    iova: u64,
    size: u64,
    pgsize: u64,
    max_bytes: u64,
) -> Result<Vec<u64>> {
    let what = format!("{target} iova {iova:#x} size {size:#x}");
    let words = bitmap_words(OP, &what, size, pgsize, max_bytes)?;
    let bytes = words * 8;
    let mut bitmap = vec![0u64; usize::try_from(words).unwrap_or(usize::MAX)];
    let mut arg = GetBitmap {
        head: sys::vfio_iommu_type1_dirty_bitmap {
            argsz: ioctl::argsz::<GetBitmap>(),
            flags: sys::VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP,
            data: sys::__IncompleteArrayField::new(),
        },
        range: sys::vfio_iommu_type1_dirty_bitmap_get {
            iova,
            size,
            bitmap: sys::vfio_bitmap {
                pgsize,
                size: bytes,
                data: bitmap.as_mut_ptr(),
            },
        },
    };
    // SAFETY: the header is followed by the range as the uapi lays it out (argsz covers both);
    // `bitmap` holds `bytes` writable bytes and outlives the call.
    unsafe { ioctl::with_mut(fd, sys::VFIO_IOMMU_DIRTY_PAGES, &mut arg) }.map_err(|e| Error::kernel(OP, what, e))?;
    Ok(bitmap)
}

/// The UNMAP_DMA argument with `VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP`: the header, then the
/// bitmap description in its `data[]`.
#[repr(C)]
struct UnmapBitmap {
    head: sys::vfio_iommu_type1_dma_unmap,
    bitmap: sys::vfio_bitmap,
}

/// `VFIO_IOMMU_UNMAP_DMA` with `VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP`: unmaps `[iova, iova +
/// size)` and returns the bytes unmapped and the dirty bitmap of that range (layout as in [`get`]).
pub(crate) fn unmap_with_bitmap(
    fd: BorrowedFd<'_>,
    target: &str,
    iova: u64,
    size: u64,
    pgsize: u64,
    max_bytes: u64,
) -> Result<(u64, Vec<u64>)> {
    const UNMAP: &str = "VFIO_IOMMU_UNMAP_DMA (dirty bitmap)";
    let what = format!("{target} iova {iova:#x} size {size:#x}");
    let words = bitmap_words(UNMAP, &what, size, pgsize, max_bytes)?;
    let mut bitmap = vec![0u64; usize::try_from(words).unwrap_or(usize::MAX)];
    let mut arg = UnmapBitmap {
        head: sys::vfio_iommu_type1_dma_unmap {
            argsz: ioctl::argsz::<UnmapBitmap>(),
            flags: sys::VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP,
            iova,
            size,
            ..Default::default()
        },
        bitmap: sys::vfio_bitmap {
            pgsize,
            size: words * 8,
            data: bitmap.as_mut_ptr(),
        },
    };
    // SAFETY: the unmap header is followed by a vfio_bitmap as the uapi lays it out (argsz covers
    // both); `bitmap` holds `size` writable bytes and outlives the call.
    unsafe { ioctl::with_mut(fd, sys::VFIO_IOMMU_UNMAP_DMA, &mut arg) }.map_err(|e| Error::kernel(UNMAP, what, e))?;
    Ok((arg.head.size, bitmap))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_the_uapi() {
        assert_eq!(std::mem::size_of::<GetBitmap>(), 8 + 40);
        assert_eq!(std::mem::offset_of!(GetBitmap, range), 8);
        assert_eq!(std::mem::size_of::<UnmapBitmap>(), 24 + 24);
        assert_eq!(std::mem::offset_of!(UnmapBitmap, bitmap), 24);
    }
}
