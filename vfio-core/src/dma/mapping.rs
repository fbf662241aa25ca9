//! [`DmaMapping`]: the guard that keeps a [`DmaBuffer`] mapped at an IOVA of a container.

use crate::{Container, DmaBuffer, Error, Result};

bitflags::bitflags! {
    /// What the device may do with a DMA mapping.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct DmaAccess: u32 {
        /// The device may read the memory.
        const READ = 1;
        /// The device may write the memory.
        const WRITE = 2;
        /// Both.
        const READ_WRITE = 3;
    }
}

/// A live IOVA mapping of a [`DmaBuffer`] in a container; unmapped on drop. Leaking it is sound
/// (the buffer's pages then stay reachable by the device, and leak; see the [`dma`](crate::dma)
/// module).
#[must_use = "the mapping is removed when this guard is dropped"]
pub struct DmaMapping<'a> {
    container: &'a dyn Container,
    buffer: &'a DmaBuffer,
    iova: u64,
    device_addr: u64,
}

impl std::fmt::Debug for DmaMapping<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DmaMapping")
            .field("iova", &format_args!("{:#x}", self.iova))
            .field("len", &self.buffer.len())
            .finish()
    }
}

impl<'a> DmaMapping<'a> {
    /// Maps the whole `buffer` at `iova` in `container` with the given access
    /// ([`Container::map_dma`]: `VFIO_IOMMU_MAP_DMA` on the type1 driver, `IOMMU_IOAS_MAP_FILE`
    /// of the buffer's memfd on iommufd (cdev mode and the compat container), pinning and a
    /// physical address without an IOMMU). The guard borrows both, so neither can go while the
    /// device can reach the memory, and unmaps on drop. Leaking the guard (`mem::forget`) is
    /// sound: the buffer's pages then stay with the device, never memory reused later (see the
    /// [`dma`](crate::dma) module). Errors: those of the container's map (EEXIST for an
    /// overlap, EINVAL for an unaligned or disallowed IOVA, ENOMEM past the locked-memory
    /// limit), and Unsupported where the backend would pin the buffer lazily by address (an
    /// anonymous buffer on iommufd: use [`DmaBuffer::new`], or an
    /// [`OwnedDmaMapping`](crate::OwnedDmaMapping)).
    #[inline]
    pub fn new(container: &'a dyn Container, buffer: &'a DmaBuffer, iova: u64, access: DmaAccess) -> Result<Self> {
        let device_addr = container.map_dma(buffer, iova, access)?;
        Ok(DmaMapping {
            container,
            buffer,
            iova,
            device_addr,
        })
    }

    /// The IOVA the device uses for the first byte.
    pub fn iova(&self) -> u64 {
        self.iova
    }

    /// The address to program into the device: the IOVA, or in no-IOMMU mode the physical address.
    pub fn device_addr(&self) -> u64 {
        self.device_addr
    }

    /// The buffer behind the mapping.
    pub fn buffer(&self) -> &DmaBuffer {
        self.buffer
    }
}

impl AsRef<DmaBuffer> for DmaMapping<'_> {
    fn as_ref(&self) -> &DmaBuffer {
        self.buffer
    }
}

impl Drop for DmaMapping<'_> {
    #[inline]
    fn drop(&mut self) {
        unmap_on_drop(self.container, self.iova, self.buffer.len() as u64);
    }
}

/// Unmaps a guard's range; true when the device can no longer reach the memory: unmapped now,
/// or nothing mapped there any more (ENOENT: e.g. an unmap-all came first). Any other failure
/// is logged (target `vfio`) and answers false, and the memory must then not be freed.
#[inline]
pub(crate) fn unmap_on_drop(container: &dyn Container, iova: u64, size: u64) -> bool {
    match container.unmap_dma(iova, size) {
        Ok(_) => true,
        Err(e) => unmapped_anyway(e, iova),
    }
}

#[cold]
#[inline(never)]
fn unmapped_anyway(e: Error, iova: u64) -> bool {
    if e.errno() == Some(crate::Errno::NOENT) {
        return true;
    }
    log::warn!(target: "vfio", "DMA mapping at iova {iova:#x} could not be unmapped on drop: {e}");
    false
}
