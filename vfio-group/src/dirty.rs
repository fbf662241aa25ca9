//! Type1 dirty-page tracking (`VFIO_IOMMU_DIRTY_PAGES`): start, stop and read the bitmap of the
//! pages a device may have written. Only the kernel's type1 driver has it, for type1v2
//! containers; without a device that reports its own writes, type1 counts every pinned (mapped)
//! page as dirty.

use vfio_core::ioctl::{self, kind, requests as req};
use vfio_core::{Error, Result};
use vfio_sys::{self as sys, VFIO_IOMMU_DIRTY_PAGES, VFIO_IOMMU_UNMAP_DMA};

use crate::Container;

const OP: &str = "VFIO_IOMMU_DIRTY_PAGES";

/// The GET_BITMAP argument: the header followed by the range.
#[repr(C)]
struct GetBitmap {
    head: sys::vfio_iommu_type1_dirty_bitmap,
    range: sys::vfio_iommu_type1_dirty_bitmap_get,
}

/// The UNMAP_DMA argument with `VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP`: the header, then the
/// bitmap description in its `data[]`.
#[repr(C)]
struct UnmapBitmap {
    head: sys::vfio_iommu_type1_dma_unmap,
    bitmap: sys::vfio_bitmap,
}

vfio_core::request! {
    /// `VFIO_IOMMU_DIRTY_PAGES` with `VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP`: argsz covers the
    /// header and the range, whose bitmap pointer the kernel writes through.
    DirtyPagesGetBitmap = VFIO_IOMMU_DIRTY_PAGES on Container, GetBitmap, size head.argsz, unchecked;
    /// `VFIO_IOMMU_UNMAP_DMA` with `VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP`: argsz covers the
    /// header and the bitmap description, whose pointer the kernel writes through.
    UnmapDmaDirtyBitmap = VFIO_IOMMU_UNMAP_DMA on Container, UnmapBitmap, size head.argsz, unchecked;
}

impl Container {
    /// The dirty-tracking capability, or Unsupported naming why there is none.
    fn migration(&self) -> Result<crate::info::MigrationInfo> {
        self.info()?.migration.ok_or_else(|| {
            Error::unsupported(
                "VFIO_IOMMU_DIRTY_PAGES",
                self.target(),
                "no migration capability: iommufd's compatibility container has no type1 dirty \
                 tracking (use iommufd's own)",
            )
        })
    }

    /// `VFIO_IOMMU_DIRTY_PAGES_FLAG_START`: starts dirty-page tracking of every mapping.
    /// Errors: Unsupported without the migration capability (iommufd compat); EACCES (Kernel)
    /// in a type1 (v1) container, which the kernel never tracks.
    #[doc(alias = "VFIO_IOMMU_DIRTY_PAGES")]
    pub fn dirty_tracking_start(&self) -> Result<()> {
        self.migration()?;
        set(self.ioctl_fd(), &self.target(), sys::VFIO_IOMMU_DIRTY_PAGES_FLAG_START)
    }

    /// `VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP`: stops tracking (a no-op when not tracking). Errors as
    /// [`Container::dirty_tracking_start`].
    #[doc(alias = "VFIO_IOMMU_DIRTY_PAGES")]
    pub fn dirty_tracking_stop(&self) -> Result<()> {
        self.migration()?;
        set(self.ioctl_fd(), &self.target(), sys::VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP)
    }

    /// `VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP`: which pages of `[iova, iova + size)` were
    /// dirtied since tracking started or the last call, one bit per smallest IOMMU page (bit
    /// `n % 64` of word `n / 64`). Errors: InvalidArgument for a size that is not a multiple
    /// of that page or needs a larger bitmap than the kernel returns at once; EINVAL (Kernel)
    /// when not tracking or when the range splits a mapping; EOVERFLOW when it wraps.
    #[doc(alias = "VFIO_IOMMU_DIRTY_PAGES")]
    pub fn dirty_bitmap(&self, iova: u64, size: u64) -> Result<Vec<u64>> {
        let (pgsize, max) = self.dirty_page()?;
        get(self.ioctl_fd(), &self.target(), iova, size, pgsize, max)
    }

    /// `VFIO_IOMMU_UNMAP_DMA` with `VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP`: unmaps
    /// `[iova, iova + size)` and returns the bytes unmapped and which of its pages were dirtied
    /// (layout as in [`Container::dirty_bitmap`]). Errors: as `dirty_bitmap`, EINVAL (Kernel)
    /// when tracking is off.
    #[doc(alias = "VFIO_IOMMU_UNMAP_DMA")]
    pub fn unmap_dma_with_dirty_bitmap(&self, iova: u64, size: u64) -> Result<(u64, Vec<u64>)> {
        let (pgsize, max) = self.dirty_page()?;
        unmap_with_bitmap(self.ioctl_fd(), &self.target(), iova, size, pgsize, max)
    }

    /// The dirty-bitmap page size (the smallest IOMMU page) and the kernel's bitmap size limit.
    fn dirty_page(&self) -> Result<(u64, u64)> {
        let m = self.migration()?;
        Ok((
            1u64 << m.pgsize_bitmap.trailing_zeros().min(63),
            m.max_dirty_bitmap_size,
        ))
    }
}

/// `VFIO_IOMMU_DIRTY_PAGES` with the header only: `flags` is START or STOP.
fn set(fd: ioctl::Fd<'_, kind::Container>, target: &str, flags: u32) -> Result<()> {
    let mut arg = sys::vfio_iommu_type1_dirty_bitmap {
        flags,
        ..Default::default()
    };
    // SAFETY: with START or STOP the kernel reads the header alone (argsz covers nothing more),
    // and the header holds no pointer.
    unsafe { ioctl::call_unchecked::<req::IommuDirtyPages>(fd, &mut arg) }
        .map_err(|e| ioctl::kernel_error::<req::IommuDirtyPages>(target, e))?;
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

/// `VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP` for `[iova, iova + size)` in pages of `pgsize`
/// bytes, at most `max_bytes` of bitmap; one bit per page, bit `n % 64` of word `n / 64`.
fn get(
    fd: ioctl::Fd<'_, kind::Container>,
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
            flags: sys::VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP,
            ..Default::default()
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
    // the range's bitmap points at `bitmap`, `bytes` writable bytes that outlive the call.
    unsafe { ioctl::call_unchecked::<DirtyPagesGetBitmap>(fd, &mut arg) }
        .map_err(|e| ioctl::kernel_error::<DirtyPagesGetBitmap>(what, e))?;
    Ok(bitmap)
}

/// `VFIO_IOMMU_UNMAP_DMA` with `VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP`: unmaps `[iova, iova +
/// size)` and returns the bytes unmapped and the dirty bitmap of that range (layout as in [`get`]).
fn unmap_with_bitmap(
    fd: ioctl::Fd<'_, kind::Container>,
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
    // both); its data points at `bitmap`, `size` writable bytes that outlive the call.
    unsafe { ioctl::call_unchecked::<UnmapDmaDirtyBitmap>(fd, &mut arg) }.map_err(|e| Error::kernel(UNMAP, what, e))?;
    Ok((arg.head.size, bitmap))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vfio_core::ioctl::Request;

    #[test]
    fn layout_matches_the_uapi() {
        assert_eq!(std::mem::size_of::<GetBitmap>(), 8 + 40);
        assert_eq!(std::mem::offset_of!(GetBitmap, range), 8);
        assert_eq!(std::mem::size_of::<UnmapBitmap>(), 24 + 24);
        assert_eq!(std::mem::offset_of!(UnmapBitmap, bitmap), 24);
    }

    #[test]
    fn requests_carry_the_uapi_numbers_names_and_whole_argsz() {
        assert_eq!(DirtyPagesGetBitmap::CODE, req::IommuDirtyPages::CODE);
        assert_eq!(DirtyPagesGetBitmap::NAME, OP);
        assert_eq!(UnmapDmaDirtyBitmap::CODE, req::IommuUnmapDma::CODE);
        assert_eq!(UnmapDmaDirtyBitmap::NAME, "VFIO_IOMMU_UNMAP_DMA");
        let mut bitmap = [0u64; 1];
        let mut arg = UnmapBitmap {
            head: Default::default(),
            bitmap: sys::vfio_bitmap {
                pgsize: 0x1000,
                size: 8,
                data: bitmap.as_mut_ptr(),
            },
        };
        UnmapDmaDirtyBitmap::set_size(&mut arg, ioctl::argsz::<UnmapBitmap>());
        assert_eq!(arg.head.argsz, 48);
    }

    #[test]
    fn bitmap_words_checks_size_and_limit() {
        assert_eq!(bitmap_words(OP, "c", 0x4000, 0x1000, 8).unwrap(), 1);
        assert_eq!(bitmap_words(OP, "c", 65 * 0x1000, 0x1000, 16).unwrap(), 2);
        assert!(matches!(
            bitmap_words(OP, "c", 0x800, 0x1000, 8),
            Err(Error::InvalidArgument { .. })
        ));
        assert!(
            bitmap_words(OP, "c", 65 * 0x1000, 0x1000, 8).is_err(),
            "above the limit"
        );
        assert!(bitmap_words(OP, "c", 0x1000, 0, 8).is_err(), "no page size");
    }
}
