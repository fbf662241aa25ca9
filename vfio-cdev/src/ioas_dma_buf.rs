//! Importing a dma-buf of a peer device's BAR into an IOAS (`IOMMU_IOAS_MAP_FILE` of a vfio-pci
//! dma-buf, Linux 6.19): the peer-to-peer DMA route of iommufd, where mapping the BAR's mmap
//! fails with EFAULT (iommufd pins pages, and a BAR mmap has none).
//!
//! iommufd attaches to the dma-buf as a revocable, peer-to-peer importer and maps the BAR's
//! physical range as MMIO in every IOMMU domain of the IOAS. When the exporter revokes it (reset,
//! memory decode off, low power, close: see [`vfio_core::DmaBuf`]) iommufd unmaps it from the
//! domains for good: the IOVA stays allocated (a new map there is EEXIST) but reaches nothing, an
//! unmap removes it, and importing the dma-buf again works once the exporter is live.

use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;

use iommufd_sys as sys;
use vfio_core::ioctl::{self, requests as req};
use vfio_core::{DmaAccess, DmaBuf, Errno, Error, Result};

use crate::{Ioas, IovaPlacement};

impl Ioas {
    /// `IOMMU_IOAS_MAP_FILE` of a whole dma-buf (Linux 6.19 for vfio-pci dma-bufs): maps the
    /// BAR ranges behind `buf` (one range only) at `at`; returns the IOVA. Remove it with
    /// [`Ioas::unmap`]. The IOAS holds the dma-buf, not an address: safe whatever happens to
    /// `buf` afterwards. [`Ioas::map_dma_buf`] is the guard form.
    ///
    /// Errors: Unsupported for a dma-buf of several ranges or not from vfio-pci (EOPNOTSUPP), or
    /// a kernel without the ioctl (ENOTTY); ENODEV (Kernel) while the dma-buf is revoked (its
    /// exporter is reset, has memory decode off, is in low power, or closed); EEXIST when a
    /// fixed IOVA is in use; EINVAL for an unaligned IOVA.
    #[doc(alias = "IOMMU_IOAS_MAP_FILE")]
    pub fn import_dma_buf(&self, buf: &DmaBuf, at: IovaPlacement, access: DmaAccess) -> Result<u64> {
        let len = buf.len();
        let (mut flags, iova) = match at {
            IovaPlacement::Fixed(iova) => (sys::IOMMU_IOAS_MAP_FIXED_IOVA, iova),
            _ => (0, 0),
        };
        if access.contains(DmaAccess::READ) {
            flags |= sys::IOMMU_IOAS_MAP_READABLE;
        }
        if access.contains(DmaAccess::WRITE) {
            flags |= sys::IOMMU_IOAS_MAP_WRITEABLE;
        }
        let mut m = sys::iommu_ioas_map_file {
            flags,
            ioas_id: self.id().get(),
            fd: buf.as_fd().as_raw_fd(),
            start: 0,
            length: len,
            iova,
            ..Default::default()
        };
        // SAFETY: the argument holds no pointer, and no process memory is made reachable: the
        // IOAS takes its own reference on the dma-buf and maps the exporter's BAR, which the
        // exporter revokes (and iommufd unmaps) when the BAR goes.
        let res = unsafe { ioctl::call_unchecked::<req::IoasMapFile>(self.iommufd().ioctl_fd(), &mut m) };
        match res {
            Ok(_) => Ok(m.iova),
            Err(e) => Err(buf.import_error(self.target(iova, len), e)),
        }
    }

    /// [`Ioas::import_dma_buf`] as a guard: the [`IoasDmaBuf`] holds the IOAS and the dma-buf,
    /// and unmaps on drop. Errors: those of [`Ioas::import_dma_buf`].
    #[doc(alias = "IOMMU_IOAS_MAP_FILE")]
    pub fn map_dma_buf(self: &Arc<Self>, buf: Arc<DmaBuf>, at: IovaPlacement, access: DmaAccess) -> Result<IoasDmaBuf> {
        let iova = self.import_dma_buf(&buf, at, access)?;
        Ok(IoasDmaBuf {
            ioas: self.clone(),
            buf,
            iova,
        })
    }
}

/// A dma-buf imported into an IOAS, from [`Ioas::map_dma_buf`]: unmapped on drop (nothing
/// mapped there any more, ENOENT, is fine; another failure is logged, warn, target `vfio`).
/// Leaking it is sound: the IOAS keeps the dma-buf, which reaches only the exporter's BAR and is
/// revoked when that goes.
#[must_use = "the import is unmapped when this guard is dropped"]
#[derive(Debug)]
pub struct IoasDmaBuf {
    ioas: Arc<Ioas>,
    buf: Arc<DmaBuf>,
    iova: u64,
}

impl IoasDmaBuf {
    /// The IOVA of the first byte.
    pub fn iova(&self) -> u64 {
        self.iova
    }

    /// The dma-buf.
    pub fn dma_buf(&self) -> &Arc<DmaBuf> {
        &self.buf
    }

    /// The IOAS it is mapped in.
    pub fn ioas(&self) -> &Arc<Ioas> {
        &self.ioas
    }
}

impl Drop for IoasDmaBuf {
    fn drop(&mut self) {
        match self.ioas.unmap(self.iova, self.buf.len()) {
            Ok(_) => {}
            Err(e) if e.errno() == Some(Errno::NOENT) => {}
            Err(e) => log::warn!(target: "vfio", "dropping the dma-buf import at iova {:#x}: {e}", self.iova),
        }
    }
}

/// Why an iommufd container does not map a BAR's mmap (`Container::map_mmio_raw`).
#[cold]
pub(crate) fn mmio_refusal(region: &vfio_core::MappedRegion) -> Error {
    Error::unsupported(
        "BAR mapping for peer-to-peer DMA",
        format!("{} region {}", region.device().name(), region.region()),
        "iommufd cannot map PFNMAP memory such as a BAR's mmap (it pins pages, and the kernel answers \
         EFAULT): export a dma-buf of the BAR and import it (Container::map_dma_buf, or PeerMapping, \
         which picks that route)",
    )
}
