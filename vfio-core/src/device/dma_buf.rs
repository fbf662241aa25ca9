//! [`DmaBuf`]: a dma-buf fd a device exported (a display plane from
//! `VFIO_DEVICE_GET_GFX_DMABUF`), and its CPU mapping.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;

use crate::{Error, Result};

/// An owned dma-buf fd with its size. Dropping it closes the fd; the buffer lives on while a
/// mapping of it ([`DmaBufMapping`]) exists.
#[derive(Debug)]
pub struct DmaBuf {
    fd: OwnedFd,
    len: u64,
    name: String,
}

impl AsFd for DmaBuf {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl DmaBuf {
    /// Adopts a dma-buf fd; its size is `lseek(SEEK_END)` (dma-bufs answer it with their
    /// size). `name` is used in errors. Errors: the errno of lseek.
    pub fn new(fd: OwnedFd, name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        let len = rustix::fs::seek(&fd, rustix::fs::SeekFrom::End(0))
            .map_err(|e| Error::kernel("lseek(SEEK_END)", &name, e))?;
        Ok(DmaBuf { fd, len, name })
    }

    /// Its size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The name used in errors.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Gives the fd up (e.g. to pass to a compositor).
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    /// Whether the fd was opened for writing (`O_RDWR`): exporters choose; mbochs and most
    /// display exporters hand out read-only fds (`dma_buf_fd(buf, 0)`). Errors: the errno of
    /// `fcntl(F_GETFL)`.
    pub fn is_writable(&self) -> Result<bool> {
        let fl = rustix::fs::fcntl_getfl(&self.fd).map_err(|e| Error::kernel("fcntl(F_GETFL)", &self.name, e))?;
        Ok(fl.contains(rustix::fs::OFlags::RDWR) || fl.contains(rustix::fs::OFlags::WRONLY))
    }

    /// Maps the whole buffer (`mmap(2)`, MAP_SHARED: dma-bufs refuse private mappings),
    /// readable, and writable when the fd is ([`DmaBuf::is_writable`]; a writable shared
    /// mapping of a read-only fd is EACCES). Errors: InvalidArgument for an empty buffer;
    /// Unsupported for a read-only fd whose exporter maps only shared mappings (the kernel
    /// makes a shared mapping of a read-only file private: mbochs' dma-bufs cannot be mapped
    /// by the CPU at all); the errno of mmap otherwise (e.g. EINVAL from an exporter that does
    /// not allow CPU mappings).
    pub fn map(&self) -> Result<DmaBufMapping> {
        if self.len == 0 {
            return Err(Error::invalid("mmap dma-buf", &self.name, "the buffer is empty"));
        }
        let writable = self.is_writable()?;
        let mut prot = rustix::mm::ProtFlags::READ;
        if writable {
            prot |= rustix::mm::ProtFlags::WRITE;
        }
        let len = usize::try_from(self.len).map_err(|_| Error::invalid("mmap dma-buf", &self.name, "too large"))?;
        // SAFETY: a fresh shared mapping of the dma-buf at a kernel-chosen address; it aliases
        // no Rust object and is only reached through volatile accesses.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                rustix::mm::MapFlags::SHARED,
                &self.fd,
                0,
            )
        }
        .map_err(|e| match e {
            // A MAP_SHARED mapping of a read-only file loses VM_SHARED (mm/mmap.c), and
            // exporters that map only shared mappings (mbochs) refuse it.
            rustix::io::Errno::INVAL if !writable => Error::unsupported(
                "CPU mapping of a read-only dma-buf",
                &self.name,
                "the exporter handed out a read-only fd, so the kernel turns the shared mapping \
                 into a private one, which this exporter refuses (EINVAL; mbochs does so): \
                 import the dma-buf elsewhere (a GPU, a compositor) instead",
            ),
            e => Error::kernel("mmap dma-buf", format!("{} ({len:#x} bytes)", self.name), e),
        })?;
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| Error::malformed("mmap dma-buf", &self.name, "NULL"))?;
        Ok(DmaBufMapping {
            ptr,
            len,
            writable,
            name: self.name.clone(),
        })
    }
}

/// A CPU mapping of a [`DmaBuf`] (shared with the device and every other mapping of it),
/// reached through volatile copies; unmapped on drop (the buffer stays referenced until then).
#[derive(Debug)]
pub struct DmaBufMapping {
    ptr: NonNull<u8>,
    len: usize,
    writable: bool,
    name: String,
}

// SAFETY: the mapping is shared memory reached only through volatile accesses by raw pointer;
// no Rust reference into it is ever handed out.
unsafe impl Send for DmaBufMapping {}
// SAFETY: as above.
unsafe impl Sync for DmaBufMapping {}

impl DmaBufMapping {
    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it is empty (never: empty buffers are not mapped).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn check(&self, offset: usize, n: usize) -> Result<()> {
        if offset.checked_add(n).is_none_or(|end| end > self.len) {
            return Err(Error::invalid(
                "dma-buf copy",
                &self.name,
                format!("{n} bytes at {offset:#x} exceed the {:#x}-byte mapping", self.len),
            ));
        }
        Ok(())
    }

    /// Copies `out.len()` bytes at `offset` out of the buffer (volatile loads). Errors:
    /// InvalidArgument past the end.
    pub fn read_bytes(&self, offset: usize, out: &mut [u8]) -> Result<()> {
        self.check(offset, out.len())?;
        for (i, o) in out.iter_mut().enumerate() {
            // SAFETY: offset + i < len (checked), inside the mapping; volatile, no reference.
            *o = unsafe { self.ptr.as_ptr().add(offset + i).read_volatile() };
        }
        Ok(())
    }

    /// Whether the mapping can be written (the dma-buf fd was writable).
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// Copies `data` into the buffer at `offset` (volatile stores). Errors: InvalidArgument
    /// past the end, or for a read-only mapping (the store would fault).
    pub fn write_bytes(&self, offset: usize, data: &[u8]) -> Result<()> {
        self.check(offset, data.len())?;
        if !self.writable {
            return Err(Error::invalid(
                "dma-buf copy",
                &self.name,
                "the mapping is read-only: the exporter handed out a read-only fd",
            ));
        }
        for (i, b) in data.iter().enumerate() {
            // SAFETY: offset + i < len (checked), inside the mapping; volatile, no reference.
            unsafe { self.ptr.as_ptr().add(offset + i).write_volatile(*b) };
        }
        Ok(())
    }
}

impl Drop for DmaBufMapping {
    fn drop(&mut self) {
        // SAFETY: ptr/len are exactly the mapping made in DmaBuf::map, unmapped once here.
        if let Err(e) = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) } {
            log::warn!(target: "vfio", "munmap of dma-buf {}: {e}", self.name);
        }
    }
}
