//! Type1 DMA: `VFIO_IOMMU_MAP_DMA` and `VFIO_IOMMU_UNMAP_DMA` on the container fd, the hot path
//! of every mapping. Kept lean: the requests are issued inline, and a refused one builds its
//! error out of line. (A no-IOMMU container pins memory instead: see `noiommu.rs`; dirty-page
//! tracking is in `dirty.rs`.)

use vfio_core::ioctl::{self, Request, requests as req};
use vfio_core::{DmaAccess, Error, Result};
use vfio_sys as sys;

use crate::Container;

impl Container {
    /// `VFIO_IOMMU_UNMAP_DMA` with `VFIO_DMA_UNMAP_FLAG_ALL`: removes every mapping; returns the
    /// bytes unmapped. Errors: Unsupported when `VFIO_CHECK_EXTENSION(VFIO_UNMAP_ALL)` is 0 (and
    /// in a no-IOMMU container, where it unpins everything instead).
    #[doc(alias = "VFIO_IOMMU_UNMAP_DMA", alias = "VFIO_CHECK_EXTENSION")]
    pub fn unmap_all(&self) -> Result<u64> {
        if let Some(pins) = self.pins() {
            return Ok(pins.unpin_all());
        }
        if !self.check_extension_raw(sys::VFIO_UNMAP_ALL)? {
            return Err(Error::unsupported(
                "VFIO_DMA_UNMAP_FLAG_ALL",
                self.target(),
                "VFIO_CHECK_EXTENSION(VFIO_UNMAP_ALL) is 0",
            ));
        }
        self.unmap(0, 0, sys::VFIO_DMA_UNMAP_FLAG_ALL)
    }

    /// `VFIO_IOMMU_UNMAP_DMA` of `[iova, iova + size)` with the kernel's answer as it is: the
    /// bytes unmapped, 0 when nothing was mapped there (type1 reports that as success; the
    /// trait's [`unmap_dma`](vfio_core::Container::unmap_dma) turns it into ENOENT). The rules
    /// for ranges that split a mapping are in the table of
    /// [`unmap_dma`](vfio_core::Container::unmap_dma). In a no-IOMMU container, unpins the
    /// ranges pinned at IOVAs inside the range.
    #[doc(alias = "VFIO_IOMMU_UNMAP_DMA")]
    #[inline]
    pub fn unmap_range(&self, iova: u64, size: u64) -> Result<u64> {
        if let Some(pins) = self.pins() {
            return Ok(pins.unpin(iova, size));
        }
        self.unmap(iova, size, 0)
    }

    /// `VFIO_IOMMU_UNMAP_DMA` without a dirty bitmap (`flags` is 0 or `VFIO_DMA_UNMAP_FLAG_ALL`).
    #[inline]
    fn unmap(&self, iova: u64, size: u64, flags: u32) -> Result<u64> {
        let mut unmap = sys::vfio_iommu_type1_dma_unmap {
            flags,
            iova,
            size,
            ..Default::default()
        };
        ioctl::call::<req::IommuUnmapDma>(self.ioctl_fd(), &mut unmap)
            .map_err(|e| self.dma_error::<req::IommuUnmapDma>(iova, size, e))?;
        Ok(unmap.size)
    }

    /// `VFIO_IOMMU_MAP_DMA` of `size` bytes at `vaddr` to `iova`; returns `iova`.
    ///
    /// # Safety
    /// As [`vfio_core::Container::map_dma_raw`]: the memory stays allocated, and unreached by
    /// Rust references, until it is unmapped.
    #[inline]
    pub(crate) unsafe fn map_type1(&self, vaddr: *mut u8, size: u64, iova: u64, access: DmaAccess) -> Result<u64> {
        let mut flags = 0;
        if access.contains(DmaAccess::READ) {
            flags |= sys::VFIO_DMA_MAP_FLAG_READ;
        }
        if access.contains(DmaAccess::WRITE) {
            flags |= sys::VFIO_DMA_MAP_FLAG_WRITE;
        }
        let mut map = sys::vfio_iommu_type1_dma_map {
            argsz: 0, // set by the call
            flags,
            vaddr: vaddr as u64,
            iova,
            size,
        };
        // SAFETY: the kernel pins `[vaddr, vaddr + size)` and lets devices reach it until it is
        // unmapped, which the caller guarantees is sound.
        unsafe { ioctl::call_unchecked::<req::IommuMapDma>(self.ioctl_fd(), &mut map) }
            .map_err(|e| self.dma_error::<req::IommuMapDma>(iova, size, e))?;
        Ok(iova)
    }

    /// How errors name a DMA range: the container and the range.
    pub(crate) fn dma_target(&self, iova: u64, size: u64) -> String {
        format!("{} iova {iova:#x} size {size:#x}", self.target())
    }

    /// The error of a refused map or unmap, built out of line: the fast path stays small.
    #[cold]
    #[inline(never)]
    fn dma_error<R: Request>(&self, iova: u64, size: u64, errno: vfio_core::Errno) -> Error {
        ioctl::kernel_error::<R>(self.dma_target(iova, size), errno)
    }
}
