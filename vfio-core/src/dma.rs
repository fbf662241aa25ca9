//! Memory a device may read and write by DMA, and the guard that keeps it mapped.
//!
//! A [`DmaBuffer`] is page-aligned anonymous memory owned by the process. It never hands out Rust
//! references to its bytes (the device may change them at any time): reads and writes copy
//! through raw pointers. A [`DmaMapping`] borrows both the buffer and the container, so the
//! memory cannot be freed, nor the container closed, while the device can reach it; dropping the
//! mapping unmaps the IOVA range.

use std::ptr::NonNull;

use crate::{Container, Error, Result};

/// Page-aligned, zero-filled anonymous memory for DMA.
pub struct DmaBuffer {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the buffer is plain memory owned by this value; all access is by copying through raw
// pointers, which is as thread-safe as the device's own concurrent access.
unsafe impl Send for DmaBuffer {}
// SAFETY: as above; no method hands out references into the memory.
unsafe impl Sync for DmaBuffer {}

impl std::fmt::Debug for DmaBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DmaBuffer")
            .field("addr", &self.ptr)
            .field("len", &self.len)
            .finish()
    }
}

/// The system page size.
pub fn page_size() -> usize {
    rustix::param::page_size()
}

impl DmaBuffer {
    /// Allocates `len` bytes (rounded up to whole pages) with `mmap(MAP_PRIVATE|MAP_ANONYMOUS)`.
    pub fn new(len: usize) -> Result<Self> {
        if len == 0 {
            return Err(Error::invalid(
                "allocate DMA buffer",
                "anonymous memory",
                "length is zero",
            ));
        }
        let len = len.div_ceil(page_size()) * page_size();
        // SAFETY: a fresh private anonymous mapping at a kernel-chosen address aliases nothing.
        let ptr = unsafe {
            rustix::mm::mmap_anonymous(
                std::ptr::null_mut(),
                len,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::PRIVATE | rustix::mm::MapFlags::POPULATE,
            )
        }
        .map_err(|e| Error::kernel("mmap DMA buffer", format!("{len} bytes of anonymous memory"), e))?;
        let ptr = NonNull::new(ptr.cast()).ok_or_else(|| Error::malformed("mmap", "DMA buffer", "NULL"))?;
        Ok(DmaBuffer { ptr, len })
    }

    /// Length in bytes (a multiple of the page size).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never true: zero-length buffers are refused.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The buffer's virtual address (what the IOMMU maps).
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    fn range(&self, op: &'static str, offset: usize, len: usize) -> Result<*mut u8> {
        if offset.checked_add(len).is_none_or(|e| e > self.len) {
            return Err(Error::invalid(
                op,
                "DMA buffer",
                format!("{len} bytes at {offset:#x} exceed the buffer's {:#x} bytes", self.len),
            ));
        }
        // SAFETY: offset + len <= self.len, inside the allocation.
        Ok(unsafe { self.ptr.as_ptr().add(offset) })
    }

    /// Copies `data` into the buffer at `offset`.
    pub fn write(&self, offset: usize, data: &[u8]) -> Result<()> {
        let p = self.range("write DMA buffer", offset, data.len())?;
        // SAFETY: p..p+len is inside the buffer (checked) and cannot overlap `data`, which is a
        // Rust slice (never a reference into this buffer).
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), p, data.len()) };
        Ok(())
    }

    /// Copies bytes at `offset` out of the buffer into `out`.
    pub fn read(&self, offset: usize, out: &mut [u8]) -> Result<()> {
        let p = self.range("read DMA buffer", offset, out.len())?;
        // SAFETY: as in `write`.
        unsafe { std::ptr::copy_nonoverlapping(p, out.as_mut_ptr(), out.len()) };
        Ok(())
    }

    /// Sets every byte to `value`.
    pub fn fill(&self, value: u8) {
        // SAFETY: the whole allocation, no references into it exist.
        unsafe { std::ptr::write_bytes(self.ptr.as_ptr(), value, self.len) };
    }
}

impl Drop for DmaBuffer {
    fn drop(&mut self) {
        // SAFETY: exactly the mapping made in `new`; any DmaMapping borrowing it is gone.
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

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

/// A live IOVA mapping of a [`DmaBuffer`] in a container; unmapped on drop.
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
            .field("len", &self.buffer.len)
            .finish()
    }
}

impl<'a> DmaMapping<'a> {
    /// Maps the whole `buffer` at `iova` in `container` with the given access.
    pub fn new(container: &'a dyn Container, buffer: &'a DmaBuffer, iova: u64, access: DmaAccess) -> Result<Self> {
        // SAFETY: the returned guard borrows `buffer` for 'a and unmaps on drop, so the memory
        // outlives the mapping; the buffer never gives out references the device could alias.
        let device_addr = unsafe { container.map_dma_raw(buffer.as_ptr(), buffer.len() as u64, iova, access)? };
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

impl Drop for DmaMapping<'_> {
    fn drop(&mut self) {
        let _ = self.container.unmap_dma(self.iova, self.buffer.len() as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffer_copy_in_out_and_bounds() {
        let b = DmaBuffer::new(100).unwrap();
        assert_eq!(b.len(), page_size());
        b.write(10, b"hello").unwrap();
        let mut out = [0u8; 5];
        b.read(10, &mut out).unwrap();
        assert_eq!(&out, b"hello");
        assert!(b.write(b.len() - 2, b"abc").is_err());
        assert!(DmaBuffer::new(0).is_err());
    }
}
