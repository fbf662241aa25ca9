//! A pool of DMA buffers mapped once into a container, with IOVAs from an [`IovaAllocator`] and
//! per-I/O address translation from an [`IovaCache`] (what libvfn calls its IOVA map): a driver
//! pays the map/unmap syscalls when it sets up, not on every I/O.

use crate::{Backing, Container, DmaAccess, DmaBuffer, Error, IovaAllocator, IovaCache, Result, page_size};

/// A buffer of a [`DmaPool`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DmaHandle(usize);

struct Slot {
    buffer: DmaBuffer,
    iova: u64,
}

/// Buffers owned by the pool and mapped in its container until freed or the pool is dropped.
///
/// The pool maps by address ([`Container::map_dma_raw`]) whatever the backing, on every backend:
/// it owns its buffers, frees one only after its unmap succeeded, and lends them
/// ([`DmaPool::buffer`]) only for as long as it lives. Forgetting the pool leaks every buffer,
/// which is sound (see the [`dma`](crate::dma) module).
pub struct DmaPool<'c> {
    container: &'c dyn Container,
    iovas: IovaAllocator,
    cache: IovaCache,
    slots: Vec<Option<Slot>>,
}

impl std::fmt::Debug for DmaPool<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DmaPool")
            .field("buffers", &self.slots.iter().flatten().count())
            .finish()
    }
}

impl<'c> DmaPool<'c> {
    /// A pool over the container's IOVA ranges ([`Container::iova_ranges`], which asks the
    /// kernel). Errors: those of `iova_ranges`.
    pub fn new(container: &'c dyn Container) -> Result<Self> {
        let ranges = container.iova_ranges()?;
        Ok(Self::with_ranges(container, &ranges))
    }

    /// A pool that allocates IOVAs only from `ranges` (e.g. below a device's DMA mask).
    pub fn with_ranges(container: &'c dyn Container, ranges: &[crate::IovaRange]) -> Self {
        DmaPool {
            container,
            iovas: IovaAllocator::new(ranges),
            cache: IovaCache::new(),
            slots: Vec::new(),
        }
    }

    /// Allocates a zeroed buffer of `len` bytes (whole pages), takes an IOVA for it and maps it
    /// (one map ioctl; later translations need none). Returns its handle. Errors:
    /// InvalidArgument when the pool's IOVA ranges have no room; those of [`DmaBuffer::new`]
    /// and of the container's map.
    pub fn alloc(&mut self, len: usize, access: DmaAccess) -> Result<DmaHandle> {
        self.alloc_with(len, Backing::Anonymous, access)
    }

    /// As [`DmaPool::alloc`] with the given backing; the IOVA is aligned to the backing's page
    /// size so the IOMMU can use huge pages too. Errors: as `alloc`, and those of
    /// [`DmaBuffer::with_backing`] (Unsupported when no huge pages are reserved).
    pub fn alloc_with(&mut self, len: usize, backing: Backing, access: DmaAccess) -> Result<DmaHandle> {
        let buffer = DmaBuffer::with_backing(len, backing)?;
        let size = buffer.len() as u64;
        let align = match backing {
            Backing::Huge2M => 2 << 20,
            Backing::Huge1G => 1 << 30,
            _ => page_size() as u64,
        };
        let iova = self.iovas.alloc(size, align)?;
        // SAFETY: the pool owns `buffer` and drops it only after a successful unmap (in `free` or
        // Drop; a failed unmap leaks it), and leaking the pool leaks its buffers, so the same
        // pages stay at that address while mapped; the buffer never hands out references.
        let device_addr = match unsafe { self.container.map_dma_raw(buffer.as_ptr(), size, iova, access) } {
            Ok(a) => a,
            Err(e) => {
                let _ = self.iovas.free(iova, size);
                return Err(e);
            }
        };
        self.cache.insert(buffer.as_ptr(), buffer.len(), device_addr);
        self.slots.push(Some(Slot { buffer, iova }));
        Ok(DmaHandle(self.slots.len() - 1))
    }

    fn slot(&self, h: DmaHandle) -> Result<&Slot> {
        self.slots
            .get(h.0)
            .and_then(Option::as_ref)
            .ok_or_else(|| Error::invalid("DMA pool", "DMA pool", format!("no live buffer {h:?}")))
    }

    /// The buffer behind a handle (no syscall). Errors: InvalidArgument for a freed handle.
    pub fn buffer(&self, h: DmaHandle) -> Result<&DmaBuffer> {
        Ok(&self.slot(h)?.buffer)
    }

    /// The address the device uses for byte `offset` of a buffer (no syscall). Errors:
    /// InvalidArgument for a freed handle or an offset past the buffer.
    pub fn device_addr(&self, h: DmaHandle, offset: usize) -> Result<u64> {
        let b = &self.slot(h)?.buffer;
        // SAFETY: only the address is computed; translate checks the bounds.
        let ptr = b.as_ptr().wrapping_add(offset);
        self.translate(ptr, 1)
            .ok_or_else(|| Error::invalid("DMA pool", "DMA pool", format!("offset {offset:#x} is past the buffer")))
    }

    /// The device address of `[ptr, ptr + len)` when one pool buffer holds all of it; no syscall.
    pub fn translate(&self, ptr: *const u8, len: usize) -> Option<u64> {
        self.cache.translate(ptr, len)
    }

    /// Unmaps a buffer (one unmap ioctl), frees it and gives its IOVA back to the pool.
    /// Errors: InvalidArgument for a handle that is not live (freed already); the unmap's
    /// errno otherwise, in which case the memory is leaked rather than freed under the device
    /// (ENOENT, nothing mapped there any more, is not an error).
    pub fn free(&mut self, h: DmaHandle) -> Result<()> {
        let slot = self
            .slots
            .get_mut(h.0)
            .and_then(Option::take)
            .ok_or_else(|| Error::invalid("DMA pool", "DMA pool", format!("no live buffer {h:?}")))?;
        let size = slot.buffer.len() as u64;
        self.cache.remove(slot.buffer.as_ptr());
        let res = self.container.unmap_dma(slot.iova, size);
        match res {
            // Unmapped now, or nothing is mapped there any more (an unmap-all came first).
            Ok(_) => {}
            Err(ref e) if e.errno() == Some(crate::Errno::NOENT) => {}
            Err(e) => {
                // The device may still reach the memory: leak it rather than free it.
                std::mem::forget(slot);
                return Err(e);
            }
        }
        self.iovas.free(slot.iova, size)?;
        drop(slot);
        Ok(())
    }
}

impl Drop for DmaPool<'_> {
    fn drop(&mut self) {
        for i in 0..self.slots.len() {
            if self.slots[i].is_some() {
                if let Err(e) = self.free(DmaHandle(i)) {
                    // Drop cannot fail: say what was leaked (the memory stays allocated, since
                    // the device may still reach it).
                    log::warn!(target: "vfio", "DMA pool buffer {i} could not be unmapped on drop, its memory is leaked: {e}");
                }
            }
        }
    }
}
