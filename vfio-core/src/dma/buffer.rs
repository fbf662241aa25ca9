//! Memory a device may read and write by DMA, and the guard that keeps it mapped.
//!
//! A [`DmaBuffer`] is page-aligned memory owned by the process. It never hands out Rust
//! references to its bytes (the device may change them at any time): reads and writes copy
//! through raw pointers. A [`DmaMapping`](crate::DmaMapping) borrows both the buffer and the
//! container, so the memory cannot be freed, nor the container closed, while the device can
//! reach it; dropping the mapping unmaps the IOVA range.
//!
//! By default a buffer is the shared mapping of a sealed memfd (a file only this buffer
//! holds), so that a container can map it by file (`IOMMU_IOAS_MAP_FILE`): the kernel then
//! holds the file's pages rather than a virtual address, and a mapping whose guard was leaked
//! (`mem::forget`) can only ever reach those pages, never memory the process reuses (see the
//! [`dma`](crate::dma) module).

use std::ptr::NonNull;

use crate::{Error, Result};

/// Where a [`DmaBuffer`]'s memory comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backing {
    /// Anonymous private 4 KiB pages (`MAP_PRIVATE | MAP_ANONYMOUS`). No file stands behind
    /// them, so containers that pin lazily cannot map them through the safe borrowing
    /// [`DmaMapping`](crate::DmaMapping) (see the [`dma`](crate::dma) module); owned mappings
    /// ([`OwnedDmaMapping`](crate::OwnedDmaMapping), [`DmaPool`](crate::DmaPool)) take them
    /// everywhere.
    Anonymous,
    /// 2 MiB hugetlb pages (from `/proc/sys/vm/nr_hugepages`), as a shared mapping of a
    /// hugetlb memfd (`MFD_HUGETLB | MFD_HUGE_2MB`).
    Huge2M,
    /// 1 GiB hugetlb pages, as a shared mapping of a hugetlb memfd (`MFD_HUGE_1GB`).
    Huge1G,
    /// 4 KiB pages of a memfd, mapped shared (the default of [`DmaBuffer::new`]): shareable,
    /// and mappable by file with iommufd's `IOMMU_IOAS_MAP_FILE`.
    Memfd,
}

impl Backing {
    /// The page size of the backing: 4 KiB (the CPU page), 2 MiB or 1 GiB.
    pub fn page(self) -> usize {
        match self {
            Backing::Huge2M => 2 << 20,
            Backing::Huge1G => 1 << 30,
            Backing::Anonymous | Backing::Memfd => page_size(),
        }
    }

    /// Whether the memory is a file's (a memfd, hugetlb or not) rather than anonymous.
    pub fn is_file(self) -> bool {
        !matches!(self, Backing::Anonymous)
    }

    /// Whether the memory is hugetlb (not moved by compaction, pinned in large runs).
    pub fn is_huge(self) -> bool {
        matches!(self, Backing::Huge2M | Backing::Huge1G)
    }
}

/// Page-aligned, zero-filled memory for DMA.
pub struct DmaBuffer {
    ptr: NonNull<u8>,
    len: usize,
    backing: Backing,
    memfd: Option<std::os::fd::OwnedFd>,
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
            .field("backing", &self.backing)
            .finish()
    }
}

impl AsRef<DmaBuffer> for DmaBuffer {
    fn as_ref(&self) -> &DmaBuffer {
        self
    }
}

/// The system page size (the auxiliary vector's `AT_PAGESZ`), read once: it is on the hot path of
/// every safe DMA map (the IOVA alignment check), where asking the auxiliary vector each time
/// cost ~20 instructions.
#[inline]
pub fn page_size() -> usize {
    match PAGE_SIZE.load(std::sync::atomic::Ordering::Relaxed) {
        0 => page_size_first(),
        p => p,
    }
}

static PAGE_SIZE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

#[cold]
#[inline(never)]
fn page_size_first() -> usize {
    let p = rustix::param::page_size();
    PAGE_SIZE.store(p, std::sync::atomic::Ordering::Relaxed);
    p
}

impl DmaBuffer {
    /// Allocates `len` bytes (rounded up to whole pages) of a fresh memfd ([`Backing::Memfd`]),
    /// mapped shared and populated. On a kernel without `memfd_create` (ENOSYS) the memory is
    /// anonymous instead ([`DmaBuffer::backing`] tells). Errors: InvalidArgument for zero
    /// bytes; the errno of memfd_create, ftruncate or mmap (ENOMEM, EMFILE).
    pub fn new(len: usize) -> Result<Self> {
        match Self::with_backing(len, Backing::Memfd) {
            Err(e) if e.errno() == Some(crate::Errno::NOSYS) => Self::with_backing(len, Backing::Anonymous),
            r => r,
        }
    }

    /// Allocates `len` bytes (rounded up to whole pages of the backing), populated up front.
    /// File backings (memfd, hugetlb) are a memfd of exactly that length, sealed against
    /// growing and shrinking (`F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL`), mapped shared.
    /// Errors: for hugetlb backings, Unsupported when too few huge pages are reserved or the
    /// kernel lacks the page size (the error says how to reserve them); otherwise the errno of
    /// memfd_create/ftruncate/mmap.
    pub fn with_backing(len: usize, backing: Backing) -> Result<Self> {
        use rustix::mm::{MapFlags, ProtFlags};
        let what = format!("{len} bytes of {backing:?} memory");
        if len == 0 {
            return Err(Error::invalid("allocate DMA buffer", what, "length is zero"));
        }
        let page = backing.page();
        let len = len
            .checked_next_multiple_of(page)
            .ok_or_else(|| Error::invalid("allocate DMA buffer", &what, "length overflows"))?;
        let prot = ProtFlags::READ | ProtFlags::WRITE;
        let huge_error = |e: rustix::io::Errno| -> Error {
            let dir = format!("/sys/kernel/mm/hugepages/hugepages-{}kB", page / 1024);
            let reason = if std::path::Path::new(&dir).exists() {
                format!("not enough huge pages reserved ({e}): echo N > {dir}/nr_hugepages")
            } else {
                format!("this kernel offers no such huge page size ({e}): {dir} does not exist")
            };
            Error::unsupported("hugetlb DMA memory", &what, reason)
        };
        let mut memfd = None;
        let mapped = if backing == Backing::Anonymous {
            // SAFETY: a fresh private mapping at a kernel-chosen address aliases no Rust object.
            unsafe {
                rustix::mm::mmap_anonymous(std::ptr::null_mut(), len, prot, MapFlags::PRIVATE | MapFlags::POPULATE)
            }
        } else {
            // A hugetlb memfd of a page size the kernel lacks: ENODEV (no hugetlbfs mount of that
            // size) or EINVAL; too few pages: ENOMEM (at mmap, usually).
            let fd = new_memfd(backing, len, &what).map_err(|e| match (backing.is_huge(), e.errno()) {
                (
                    true,
                    Some(errno @ (rustix::io::Errno::INVAL | rustix::io::Errno::NOMEM | rustix::io::Errno::NODEV)),
                ) => huge_error(errno),
                _ => e,
            })?;
            // SAFETY: a fresh shared mapping of our own new memfd aliases no Rust object.
            let r = unsafe {
                rustix::mm::mmap(
                    std::ptr::null_mut(),
                    len,
                    prot,
                    MapFlags::SHARED | MapFlags::POPULATE,
                    &fd,
                    0,
                )
            };
            memfd = Some(fd);
            r
        };
        log::debug!(target: "vfio", "mmap {what} = {:?}", mapped.as_ref().map(|p| *p as usize));
        let ptr = mapped.map_err(|e| match backing {
            Backing::Huge2M | Backing::Huge1G if matches!(e, rustix::io::Errno::NOMEM | rustix::io::Errno::INVAL) => {
                huge_error(e)
            }
            _ => Error::kernel("mmap DMA buffer", &what, e),
        })?;
        let ptr = NonNull::new(ptr.cast()).ok_or_else(|| Error::malformed("mmap", "DMA buffer", "NULL"))?;
        Ok(DmaBuffer {
            ptr,
            len,
            backing,
            memfd,
        })
    }

    /// Allocates `len` bytes with the best backing the system offers right now: 1 GiB hugetlb
    /// pages when `len` is a multiple of 1 GiB and that many are free, else 2 MiB hugetlb pages
    /// when `len` is a multiple of 2 MiB and that many are free, else 4 KiB memfd pages (as
    /// [`DmaBuffer::new`]). All three are memfds, so every container maps them safely. A huge page is physically contiguous, so the kernel pins it in large
    /// runs and the IOMMU maps it with few large entries: mapping 1 GiB backed by 2 MiB pages is
    /// about 3x faster than anonymous memory in a type1 container (see BENCHMARKS.md). The length
    /// is never rounded up to a huge page: a length that is not a multiple gets the next smaller
    /// backing. [`DmaBuffer::backing`] tells which one was used.
    ///
    /// A refused huge-page allocation (too few pages reserved, or a page size the kernel lacks)
    /// is not an error: the next backing is tried. Errors: those of [`DmaBuffer::new`].
    pub fn new_preferred(len: usize) -> Result<Self> {
        for backing in [Backing::Huge1G, Backing::Huge2M] {
            let page = backing.page();
            if len >= page && len % page == 0 {
                if let Ok(buffer) = Self::with_backing(len, backing) {
                    return Ok(buffer);
                }
            }
        }
        Self::new(len)
    }

    /// Where the memory comes from.
    pub fn backing(&self) -> Backing {
        self.backing
    }

    /// The memfd behind a file-backed buffer ([`Backing::Memfd`], [`Backing::Huge2M`],
    /// [`Backing::Huge1G`]): for `IOMMU_IOAS_MAP_FILE` or for sharing. It is sealed against
    /// resizing, so the buffer's pages stay the file's for as long as the file lives.
    pub fn memfd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        self.memfd.as_ref().map(|f| f.as_fd())
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

    /// Copies `data` into the buffer at `offset` (no syscall). Errors: InvalidArgument when the
    /// range passes the buffer's end.
    pub fn write(&self, offset: usize, data: &[u8]) -> Result<()> {
        let p = self.range("write DMA buffer", offset, data.len())?;
        // SAFETY: p..p+len is inside the buffer (checked) and cannot overlap `data`, which is a
        // Rust slice (never a reference into this buffer).
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), p, data.len()) };
        Ok(())
    }

    /// Copies bytes at `offset` out of the buffer into `out` (no syscall). Errors:
    /// InvalidArgument when the range passes the buffer's end.
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

/// Single loads and stores the compiler may not merge, split, elide or reorder against each
/// other: what polling memory the device writes needs (a completion entry's phase bit, a status
/// word). Each is bounds- and alignment-checked.
macro_rules! volatile_access {
    ($($read:ident $write:ident $t:ty),*) => {$(
        #[doc = concat!("Volatile read of a `", stringify!($t), "` at `offset` (naturally aligned).")]
        pub fn $read(&self, offset: usize) -> Result<$t> {
            let p = self.aligned::<$t>("volatile read of DMA buffer", offset)?;
            // SAFETY: inside the buffer and aligned (checked); the device may write the memory
            // at any time, which a volatile load of a plain integer tolerates.
            Ok(unsafe { p.read_volatile() })
        }

        #[doc = concat!("Volatile write of a `", stringify!($t), "` at `offset` (naturally aligned).")]
        pub fn $write(&self, offset: usize, value: $t) -> Result<()> {
            let p = self.aligned::<$t>("volatile write of DMA buffer", offset)?;
            // SAFETY: as for the read.
            unsafe { p.write_volatile(value) };
            Ok(())
        }
    )*};
}

impl DmaBuffer {
    volatile_access!(read8 write8 u8, read16 write16 u16, read32 write32 u32, read64 write64 u64);

    fn aligned<T>(&self, op: &'static str, offset: usize) -> Result<*mut T> {
        let size = std::mem::size_of::<T>();
        let p = self.range(op, offset, size)?;
        if offset % size != 0 {
            return Err(Error::invalid(
                op,
                "DMA buffer",
                format!("{size}-byte access at {offset:#x} is not {size}-byte aligned"),
            ));
        }
        Ok(p.cast())
    }
}

/// A memfd of exactly `len` bytes for `backing` (hugetlb or not), sealed against resizing.
fn new_memfd(backing: Backing, len: usize, what: &str) -> Result<std::os::fd::OwnedFd> {
    use rustix::fs::{MemfdFlags, SealFlags};
    let mut flags = MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING;
    match backing {
        Backing::Huge2M => flags |= MemfdFlags::HUGETLB | MemfdFlags::HUGE_2MB,
        Backing::Huge1G => flags |= MemfdFlags::HUGETLB | MemfdFlags::HUGE_1GB,
        Backing::Memfd | Backing::Anonymous => {}
    }
    let fd = rustix::fs::memfd_create("vfio-rs-dma", flags);
    log::debug!(target: "vfio", "memfd_create(vfio-rs-dma, {flags:?}) = {fd:?}");
    let fd = fd.map_err(|e| Error::kernel("memfd_create", what, e))?;
    let res = rustix::fs::ftruncate(&fd, len as u64);
    log::debug!(target: "vfio", "ftruncate(memfd, {len:#x}) = {res:?}");
    res.map_err(|e| Error::kernel("ftruncate memfd", what, e))?;
    // The buffer's pages stay the file's: nobody holding the fd (it is lent out by `memfd()`)
    // can shrink it under a mapping or grow it. Sealing is a defence, not what soundness rests
    // on (a mapping by file holds the file's pages however the file changes), so a kernel that
    // refuses it is only logged.
    let seals = SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL;
    let res = rustix::fs::fcntl_add_seals(&fd, seals);
    log::debug!(target: "vfio", "fcntl(memfd, F_ADD_SEALS, {seals:?}) = {res:?}");
    Ok(fd)
}

impl Drop for DmaBuffer {
    fn drop(&mut self) {
        // SAFETY: exactly the mapping made in `with_backing`, into which no Rust reference was
        // ever handed out. A mapping whose guard was leaked may still name this memory: the
        // container that made it holds the memfd's pages or a pin (see the `dma` module), so
        // the device never reaches what this address range holds next.
        let res = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) };
        log::debug!(target: "vfio", "munmap(DMA buffer {:p}, {:#x} bytes) = {res:?}", self.ptr, self.len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg_attr(miri, ignore = "mmap(MAP_POPULATE), mlock and memfd, which Miri cannot run")]
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

    #[test]
    #[cfg_attr(miri, ignore = "mmap(MAP_POPULATE), mlock and memfd, which Miri cannot run")]
    fn volatile_accessors_check_alignment_and_bounds() {
        let b = DmaBuffer::new(4096).unwrap();
        b.write32(8, 0xdead_beef).unwrap();
        assert_eq!(b.read32(8).unwrap(), 0xdead_beef);
        assert_eq!(b.read16(8).unwrap(), 0xbeef);
        b.write64(4088, u64::MAX).unwrap();
        assert_eq!(b.read8(4095).unwrap(), 0xff);
        assert!(b.read32(6).is_err(), "misaligned");
        assert!(b.read64(4096).is_err(), "past the end");
        assert!(b.write16(usize::MAX - 1, 0).is_err(), "overflowing offset");
    }

    #[test]
    #[cfg_attr(miri, ignore = "mmap of hugetlb or anonymous memory, which Miri cannot run")]
    fn preferred_buffer_falls_back_and_never_rounds_up() {
        // Not a multiple of any huge page size: always a memfd, rounded to the base page only.
        let small = DmaBuffer::new_preferred(3 * page_size() + 1).unwrap();
        assert_eq!(small.backing(), Backing::Memfd);
        assert_eq!(small.len(), 4 * page_size());
        let odd = DmaBuffer::new_preferred((2 << 20) + page_size()).unwrap();
        assert_eq!(odd.backing(), Backing::Memfd);
        assert_eq!(odd.len(), (2 << 20) + page_size());
        // A multiple of 2 MiB: huge pages if this machine has them free, else a memfd; either
        // way exactly the length asked for, usable, aligned to its page, and file-backed.
        let big = DmaBuffer::new_preferred(4 << 20).unwrap();
        assert!(matches!(big.backing(), Backing::Huge2M | Backing::Memfd));
        assert!(big.memfd().is_some());
        assert_eq!(big.len(), 4 << 20);
        assert_eq!(big.as_ptr() as usize % big.backing().page(), 0);
        big.write(big.len() - 3, b"end").unwrap();
        assert!(DmaBuffer::new_preferred(0).is_err());
    }

    #[test]
    #[cfg_attr(miri, ignore = "mmap(MAP_POPULATE), mlock and memfd, which Miri cannot run")]
    fn memfd_buffer_is_shared_with_its_fd() {
        let b = DmaBuffer::with_backing(10, Backing::Memfd).unwrap();
        assert_eq!(b.backing(), Backing::Memfd);
        b.write(0, b"xyz").unwrap();
        let mut out = [0u8; 3];
        rustix::io::pread(b.memfd().unwrap(), &mut out, 0).unwrap();
        assert_eq!(&out, b"xyz");
    }

    #[test]
    #[cfg_attr(miri, ignore = "memfd and mmap, which Miri cannot run")]
    fn huge_pages_the_system_lacks_are_unsupported_not_an_errno() {
        // Whatever the machine has reserved: a buffer, or Unsupported saying how to get one
        // (1 GiB pages: usually no such hugetlbfs size, ENODEV; or none reserved, ENOMEM).
        for backing in [Backing::Huge1G, Backing::Huge2M] {
            match DmaBuffer::with_backing(backing.page(), backing) {
                Ok(b) => assert_eq!(b.backing(), backing),
                Err(e) => {
                    assert!(matches!(e, Error::Unsupported { .. }), "{backing:?}: {e:?}");
                    assert!(e.to_string().contains("huge"), "{e}");
                }
            }
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "memfd and fcntl, which Miri cannot run")]
    fn default_buffer_is_a_sealed_memfd_of_its_length() {
        use rustix::fs::SealFlags;
        let b = DmaBuffer::new(5000).unwrap();
        assert_eq!(b.backing(), Backing::Memfd, "the default backing is a memfd");
        assert!(b.backing().is_file() && !b.backing().is_huge());
        let fd = b.memfd().expect("a memfd buffer lends its fd");
        assert_eq!(rustix::fs::fstat(fd).unwrap().st_size as usize, b.len());
        let seals = rustix::fs::fcntl_get_seals(fd).unwrap();
        assert!(
            seals.contains(SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL),
            "{seals:?}"
        );
        // Whoever borrows the fd cannot take the pages away from under a mapping.
        assert!(rustix::fs::ftruncate(fd, 0).is_err());
        assert!(
            DmaBuffer::with_backing(4096, Backing::Anonymous)
                .unwrap()
                .memfd()
                .is_none()
        );
    }
}
