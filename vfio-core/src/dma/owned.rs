//! A DMA mapping that owns what it needs: the buffer and a share of the container. It can be
//! stored in a driver's structs without lifetimes, and dropped in any order relative to the
//! device and the caller's container handle: the IOVA mapping is removed on drop, the container
//! closes after its last mapping, and the memory is freed only after the unmap.

use std::mem::ManuallyDrop;
use std::ops::Deref;
use std::sync::Arc;

use crate::{Container, DmaAccess, DmaBuffer, Result};

/// A container handle a mapping can keep: a process-wide one (such as `vfio_pci::default_container`)
/// or a shared custom one.
#[derive(Clone)]
pub enum SharedContainer {
    /// Lives for the whole process.
    Static(&'static dyn Container),
    /// Reference-counted: the container closes when the last handle goes.
    Shared(Arc<dyn Container>),
}

impl Deref for SharedContainer {
    type Target = dyn Container;
    fn deref(&self) -> &Self::Target {
        match self {
            SharedContainer::Static(c) => *c,
            SharedContainer::Shared(c) => c.as_ref(),
        }
    }
}

impl From<&'static dyn Container> for SharedContainer {
    fn from(c: &'static dyn Container) -> Self {
        SharedContainer::Static(c)
    }
}

impl From<Arc<dyn Container>> for SharedContainer {
    fn from(c: Arc<dyn Container>) -> Self {
        SharedContainer::Shared(c)
    }
}

impl std::fmt::Debug for SharedContainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SharedContainer({:?})", self.mode())
    }
}

/// A live IOVA mapping of an owned [`DmaBuffer`]; unmapped on drop, before the buffer is freed.
///
/// It maps by address ([`Container::map_dma_raw`]) whatever the backing, on every backend: the
/// buffer is freed only after a successful unmap, and no method gives it up before
/// ([`OwnedDmaMapping::into_buffer`] unmaps first and leaks it if that fails). Forgetting the
/// mapping (`mem::forget`) leaks the buffer, which is sound: the memory is never freed, so a
/// backend that pins by address lazily still finds the same pages there.
#[must_use = "the mapping is removed when this guard is dropped"]
#[derive(Debug)]
pub struct OwnedDmaMapping {
    container: SharedContainer,
    // Freed by Drop only after a successful unmap.
    buffer: ManuallyDrop<DmaBuffer>,
    iova: u64,
    device_addr: u64,
}

impl OwnedDmaMapping {
    /// Maps the whole `buffer` at `iova` (the container's `map_dma_raw`: `VFIO_IOMMU_MAP_DMA` or
    /// `IOMMU_IOAS_MAP`). Errors: those of [`Container::map_dma_raw`] (EEXIST, EINVAL, ENOMEM
    /// ...); on error the buffer is dropped (a failed map leaves nothing mapped: every backend
    /// undoes its own partial work).
    pub fn new(container: impl Into<SharedContainer>, buffer: DmaBuffer, iova: u64, access: DmaAccess) -> Result<Self> {
        let container = container.into();
        // SAFETY: the guard owns `buffer` and frees it only after a successful unmap (Drop,
        // into_buffer), and leaking the guard leaks the buffer, so the same pages stay at that
        // address for as long as the mapping exists; the buffer never gives out Rust references
        // into its memory.
        let device_addr = unsafe { container.map_dma_raw(buffer.as_ptr(), buffer.len() as u64, iova, access)? };
        Ok(OwnedDmaMapping {
            container,
            buffer: ManuallyDrop::new(buffer),
            iova,
            device_addr,
        })
    }

    /// The IOVA of the first byte.
    pub fn iova(&self) -> u64 {
        self.iova
    }

    /// The address to program into the device: the IOVA, or in no-IOMMU mode the physical address.
    pub fn device_addr(&self) -> u64 {
        self.device_addr
    }

    /// The buffer behind the mapping.
    pub fn buffer(&self) -> &DmaBuffer {
        &self.buffer
    }

    /// The container the mapping lives in.
    pub fn container(&self) -> &SharedContainer {
        &self.container
    }

    /// Unmaps and gives the buffer back. Errors: the unmap's errno (the buffer then stays
    /// mapped until the container closes, and is leaked rather than freed under the device).
    pub fn into_buffer(self) -> Result<DmaBuffer> {
        let mut this = ManuallyDrop::new(self);
        let unmapped = this.container.unmap_dma(this.iova, this.buffer.len() as u64);
        // SAFETY: `this` is never dropped nor used again: its two owned fields are each moved
        // out exactly once here.
        let (container, buffer) = unsafe { (std::ptr::read(&this.container), ManuallyDrop::take(&mut this.buffer)) };
        drop(container);
        match unmapped {
            Ok(_) => Ok(buffer),
            Err(e) => {
                std::mem::forget(buffer);
                Err(e)
            }
        }
    }
}

impl AsRef<DmaBuffer> for OwnedDmaMapping {
    fn as_ref(&self) -> &DmaBuffer {
        &self.buffer
    }
}

impl Drop for OwnedDmaMapping {
    fn drop(&mut self) {
        if crate::dma::mapping::unmap_on_drop(&*self.container, self.iova, self.buffer.len() as u64) {
            // SAFETY: the buffer is dropped once, here, and the field is not used afterwards.
            unsafe { ManuallyDrop::drop(&mut self.buffer) };
        }
        // On failure the device may still reach the memory: it is leaked, not freed.
    }
}
