//! A pool of DMA buffers mapped into a container, with IOVAs from an [`IovaAllocator`] and
//! per-I/O address translation from an [`IovaCache`] (what libvfn calls its IOVA map): a driver
//! pays the map/unmap syscalls when it sets up, not on every I/O.
//!
//! The pool maps its memory in chunks (2 MiB by default) and carves buffers out of them, so
//! that many small buffers cost few mappings: the type1 driver caps a container's mappings
//! (`vfio_iommu_type1.dma_entry_limit`, 65,535 by default), and 100,000 4 KiB buffers fit in
//! 196 mappings. It reads what the container has left ([`Container::dma_avail`]) and refuses,
//! naming the limit, before the kernel would.

use crate::dma::refusal;
use crate::host::doctor::Finding;
use crate::{
    Addressing, Backing, Container, DmaAccess, DmaBuffer, Errno, Error, IovaAllocator, IovaCache, IovaRange, Result,
    Sysfs, page_size,
};

/// The chunk size of a pool over an IOVA container: one mapping serves 512 4 KiB buffers.
const DEFAULT_CHUNK_SIZE: usize = 2 << 20;

/// A buffer of a [`DmaPool`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DmaHandle(usize);

/// One mapping: a buffer mapped whole, serving one pool buffer (dedicated) or many (shared).
struct Chunk {
    buffer: DmaBuffer,
    iova: u64,
    /// The address the device uses for the chunk's first byte.
    device_addr: u64,
    access: DmaAccess,
    /// Free space of a shared chunk, as IOVAs inside the chunk; `None` for a dedicated one.
    space: Option<IovaAllocator>,
    /// Pool buffers carved from it and not freed.
    live: usize,
}

struct Slot {
    chunk: usize,
    offset: usize,
    len: usize,
}

/// Buffers owned by the pool and reachable by the device until the pool is dropped.
///
/// The pool maps by address ([`Container::map_dma_raw`]) whatever the backing, on every backend:
/// it owns its memory, frees a chunk only after its unmap succeeded, and lends buffers
/// ([`DmaPool::buffer`]) only for as long as it lives. Forgetting the pool leaks every chunk,
/// which is sound (see the [`dma`](crate::dma) module).
///
/// Buffers smaller than the chunk size ([`DmaPool::set_chunk_size`]) are carved from shared
/// chunks of the same backing and access; larger ones get a chunk (a mapping) of their own. A
/// freed buffer's memory stays mapped until every buffer of its chunk is freed (then the chunk
/// is unmapped), and is zeroed when it is handed out again. Without an IOMMU (physical
/// addresses) a chunk is one page, since only a page is sure to be physically contiguous.
pub struct DmaPool<'c> {
    container: &'c dyn Container,
    /// IOVAs of chunks: one allocation per mapping, capped by what the container has left.
    iovas: IovaAllocator,
    cache: IovaCache,
    chunks: Vec<Option<Chunk>>,
    /// Indices of `chunks` that are empty, for reuse.
    free_chunks: Vec<usize>,
    slots: Vec<Option<Slot>>,
    chunk_size: usize,
    /// The shared chunk that served last: tried first.
    hint: Option<usize>,
    /// `Container::dma_avail` when last asked; `asked` says whether it was.
    dma_avail: Option<u32>,
    asked: bool,
}

impl std::fmt::Debug for DmaPool<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DmaPool")
            .field("buffers", &self.buffers())
            .field("mappings", &self.mappings())
            .field("chunk_size", &self.chunk_size)
            .field("dma_avail", &self.dma_avail)
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
    pub fn with_ranges(container: &'c dyn Container, ranges: &[IovaRange]) -> Self {
        let chunk_size = match container.addressing() {
            Addressing::Physical => page_size(),
            _ => DEFAULT_CHUNK_SIZE,
        };
        DmaPool {
            container,
            iovas: IovaAllocator::new(ranges),
            cache: IovaCache::new(),
            chunks: Vec::new(),
            free_chunks: Vec::new(),
            slots: Vec::new(),
            chunk_size,
            hint: None,
            dma_avail: None,
            asked: false,
        }
    }

    /// Sets the size of the chunks that later buffers are carved from (rounded up to whole
    /// pages of each backing); buffers of at least this size get a mapping of their own. A
    /// chunk size of one page maps every buffer on its own.
    pub fn set_chunk_size(&mut self, bytes: usize) {
        self.chunk_size = bytes.max(page_size());
    }

    /// The chunk size (2 MiB, or one page without an IOMMU, unless set).
    pub fn chunk_size(&self) -> usize {
        self.chunk_size
    }

    /// How many mappings the pool holds in its container now.
    pub fn mappings(&self) -> usize {
        self.iovas.allocations()
    }

    /// How many buffers are live (allocated, not freed).
    pub fn buffers(&self) -> usize {
        self.slots.iter().flatten().count()
    }

    /// What the container had left of its mapping limit when the pool last asked
    /// ([`Container::dma_avail`]: at its first mapping, and again when it ran out); `None`
    /// before, and on containers without a limit.
    pub fn dma_avail(&self) -> Option<u32> {
        self.dma_avail
    }

    /// Allocates a zeroed buffer of `len` bytes (whole pages), carved from a mapped chunk or,
    /// when none has room, from a new one (one map ioctl); later translations need none.
    /// Returns its handle. Errors: InvalidArgument for zero bytes and when the pool's IOVA
    /// ranges have no room; ENOSPC (Kernel) with [`Finding::DmaEntryLimit`] as its cause when the
    /// container has no mapping left (type1's `dma_entry_limit`; the pool refuses before the
    /// kernel would); those of [`DmaBuffer::new`] and of the container's map (whose ENOMEM
    /// carries [`Finding::MemlockLow`] when `RLIMIT_MEMLOCK` is the cause).
    pub fn alloc(&mut self, len: usize, access: DmaAccess) -> Result<DmaHandle> {
        self.alloc_with(len, Backing::Anonymous, access)
    }

    /// As [`DmaPool::alloc`] with the given backing; the IOVA is aligned to the backing's page
    /// size so the IOMMU can use huge pages too. Errors: as `alloc`, and those of
    /// [`DmaBuffer::with_backing`] (Unsupported when no huge pages are reserved).
    pub fn alloc_with(&mut self, len: usize, backing: Backing, access: DmaAccess) -> Result<DmaHandle> {
        let page = backing.page();
        let size = match len.checked_next_multiple_of(page) {
            Some(s) if len > 0 => s,
            _ => {
                return Err(Error::invalid(
                    "allocate DMA pool buffer",
                    "DMA pool",
                    format!("{len} bytes of {backing:?} memory"),
                ));
            }
        };
        let chunk_size = self.chunk_size.next_multiple_of(page);
        let (chunk, offset) = if size >= chunk_size {
            (self.map_chunk(size, backing, access, false)?, 0)
        } else {
            match self.carve(size, page, backing, access) {
                Some(found) => found,
                None => {
                    let c = self.map_shared_chunk(chunk_size, size, page, backing, access)?;
                    let found = self.carve_from(c, size, page);
                    found.map(|off| (c, off)).ok_or_else(|| {
                        Error::invalid("allocate DMA pool buffer", "DMA pool", "a new chunk has no room")
                    })?
                }
            }
        };
        let ch = self.chunks[chunk].as_mut().expect("live chunk");
        ch.live += 1;
        let ptr = ch.buffer.as_ptr().wrapping_add(offset);
        self.cache.insert(ptr, size, ch.device_addr + offset as u64);
        self.slots.push(Some(Slot {
            chunk,
            offset,
            len: size,
        }));
        Ok(DmaHandle(self.slots.len() - 1))
    }

    /// Room for `size` bytes in a shared chunk of this backing and access: the last one that
    /// served first, then any.
    fn carve(&mut self, size: usize, page: usize, backing: Backing, access: DmaAccess) -> Option<(usize, usize)> {
        let fits = |c: &Chunk| c.space.is_some() && c.access == access && c.buffer.backing() == backing;
        if let Some(h) = self.hint {
            if self.chunks.get(h).and_then(Option::as_ref).is_some_and(fits) {
                if let Some(off) = self.carve_from(h, size, page) {
                    return Some((h, off));
                }
            }
        }
        for i in 0..self.chunks.len() {
            if Some(i) != self.hint && self.chunks[i].as_ref().is_some_and(fits) {
                if let Some(off) = self.carve_from(i, size, page) {
                    self.hint = Some(i);
                    return Some((i, off));
                }
            }
        }
        None
    }

    /// Takes `size` bytes from shared chunk `i` and zeroes them; returns their offset.
    fn carve_from(&mut self, i: usize, size: usize, page: usize) -> Option<usize> {
        let c = self.chunks[i].as_mut()?;
        let iova = c.space.as_mut()?.alloc(size as u64, page as u64).ok()?;
        let offset = (iova - c.iova) as usize;
        // SAFETY: [offset, offset + size) is inside the chunk's buffer (its free space), which
        // no live pool buffer covers and to which no references exist (the pool only copies
        // through raw pointers). It may hold a freed buffer's bytes: the new one starts zeroed.
        unsafe { std::ptr::write_bytes(c.buffer.as_ptr().add(offset), 0, size) };
        self.hint = Some(i);
        Some(offset)
    }

    /// Maps a shared chunk of `chunk_size` bytes, or, when the pool's IOVA ranges have no room
    /// for one that big (a small window, or a fragmented one), of half that, down to `size`:
    /// a pool over a window smaller than the chunk size still serves buffers.
    fn map_shared_chunk(
        &mut self,
        chunk_size: usize,
        size: usize,
        page: usize,
        backing: Backing,
        access: DmaAccess,
    ) -> Result<usize> {
        let mut want = chunk_size;
        loop {
            match self.map_chunk(want, backing, access, true) {
                // The IOVA allocator's refusal (no errno): try a smaller chunk.
                Err(e) if want > size && e.errno().is_none() => {
                    want = (want / 2).next_multiple_of(page).max(size);
                }
                other => return other,
            }
        }
    }

    /// Allocates and maps a chunk of `size` bytes; returns its index.
    fn map_chunk(&mut self, size: usize, backing: Backing, access: DmaAccess, shared: bool) -> Result<usize> {
        if !self.asked {
            self.learn_avail();
        }
        let buffer = DmaBuffer::with_backing(size, backing)?;
        let size = buffer.len() as u64;
        let align = backing.page() as u64;
        let iova = match self.iovas.alloc(size, align) {
            Ok(iova) => iova,
            Err(e) => self.iova_refused(size, align, e)?,
        };
        // SAFETY: the pool owns `buffer` and drops it only after a successful unmap (in
        // `release` or Drop; a failed unmap leaks it), and leaking the pool leaks its chunks, so
        // the same pages stay at that address while mapped; the pool only copies through raw
        // pointers and never hands out references into the memory.
        let device_addr = match unsafe { self.container.map_dma_raw(buffer.as_ptr(), size, iova, access) } {
            Ok(a) => a,
            Err(e) => {
                let _ = self.iovas.free(iova, size);
                return Err(e);
            }
        };
        let space = shared.then(|| {
            IovaAllocator::new(&[IovaRange {
                start: iova,
                last: iova + (size - 1),
            }])
        });
        let chunk = Chunk {
            buffer,
            iova,
            device_addr,
            access,
            space,
            live: 0,
        };
        Ok(match self.free_chunks.pop() {
            Some(i) => {
                self.chunks[i] = Some(chunk);
                i
            }
            None => {
                self.chunks.push(Some(chunk));
                self.chunks.len() - 1
            }
        })
    }

    /// Asks the container how many mappings it has left and caps the chunk IOVAs at what the
    /// pool holds plus that. A failed query leaves the pool without a cap (the kernel still
    /// refuses past its limit) and is asked again at the next chunk.
    #[cold]
    #[inline(never)]
    fn learn_avail(&mut self) {
        if let Ok(avail) = self.container.dma_avail() {
            self.asked = true;
            self.dma_avail = avail;
            let max = avail.map(|a| self.iovas.allocations().saturating_add(a as usize));
            self.iovas.set_max_allocations(max);
        }
    }

    /// The chunk IOVA allocator refused: when it was the mapping cap, asks the container again
    /// (mappings may have gone since) and refuses, naming the limit, only if none is left.
    #[cold]
    #[inline(never)]
    fn iova_refused(&mut self, size: u64, align: u64, err: Error) -> Result<u64> {
        let capped = |a: &IovaAllocator| a.max_allocations().is_some_and(|m| a.allocations() >= m);
        if !capped(&self.iovas) {
            return Err(err);
        }
        self.learn_avail();
        if !capped(&self.iovas) {
            return self.iovas.alloc(size, align);
        }
        match refusal::dma_entry_limit(&Sysfs::default()) {
            Some(limit) => Err(Error::kernel(
                "VFIO_IOMMU_MAP_DMA",
                format!(
                    "DMA pool (refused before asking the kernel: {} mappings of its own, the container has {} left)",
                    self.iovas.allocations(),
                    self.dma_avail.unwrap_or(0)
                ),
                Errno::NOSPC,
            )
            .with_cause(Finding::DmaEntryLimit { limit })),
            // The limit is not readable: let the kernel answer.
            None => {
                let max = self.iovas.max_allocations();
                self.iovas.set_max_allocations(None);
                let res = self.iovas.alloc(size, align);
                self.iovas.set_max_allocations(max);
                res
            }
        }
    }

    fn slot(&self, h: DmaHandle) -> Result<(&Slot, &Chunk)> {
        self.slots
            .get(h.0)
            .and_then(Option::as_ref)
            .and_then(|s| Some((s, self.chunks.get(s.chunk)?.as_ref()?)))
            .ok_or_else(|| Error::invalid("DMA pool", "DMA pool", format!("no live buffer {h:?}")))
    }

    /// The buffer behind a handle (no syscall). Errors: InvalidArgument for a freed handle.
    pub fn buffer(&self, h: DmaHandle) -> Result<PoolBuffer<'_>> {
        let (s, c) = self.slot(h)?;
        Ok(PoolBuffer {
            chunk: &c.buffer,
            offset: s.offset,
            len: s.len,
        })
    }

    /// The address the device uses for byte `offset` of a buffer (no syscall). Errors:
    /// InvalidArgument for a freed handle or an offset past the buffer.
    pub fn device_addr(&self, h: DmaHandle, offset: usize) -> Result<u64> {
        let (s, c) = self.slot(h)?;
        if offset >= s.len {
            return Err(Error::invalid(
                "DMA pool",
                "DMA pool",
                format!("offset {offset:#x} is past the buffer"),
            ));
        }
        Ok(c.device_addr + (s.offset + offset) as u64)
    }

    /// The device address of `[ptr, ptr + len)` when one pool buffer holds all of it; no syscall.
    pub fn translate(&self, ptr: *const u8, len: usize) -> Option<u64> {
        self.cache.translate(ptr, len)
    }

    /// Frees a buffer: its memory goes back to its chunk, and the chunk is unmapped (one unmap
    /// ioctl), freed and its IOVA given back when it was the chunk's last buffer. Errors:
    /// InvalidArgument for a handle that is not live (freed already); the unmap's errno
    /// otherwise, in which case the chunk's memory is leaked rather than freed under the device
    /// (ENOENT, nothing mapped there any more, is not an error).
    pub fn free(&mut self, h: DmaHandle) -> Result<()> {
        self.slot(h)?;
        let slot = self.slots[h.0].take().expect("live slot");
        let c = self.chunks[slot.chunk].as_mut().expect("live chunk");
        self.cache.remove(c.buffer.as_ptr().wrapping_add(slot.offset));
        if let Some(space) = c.space.as_mut() {
            space.free(c.iova + slot.offset as u64, slot.len as u64)?;
        }
        c.live -= 1;
        if c.live == 0 {
            self.release(slot.chunk)?;
        }
        Ok(())
    }

    /// Unmaps chunk `i`, then frees its memory and IOVA (leaks the memory if the unmap fails).
    fn release(&mut self, i: usize) -> Result<()> {
        let Some(c) = self.chunks[i].take() else {
            return Ok(());
        };
        if self.hint == Some(i) {
            self.hint = None;
        }
        let size = c.buffer.len() as u64;
        match self.container.unmap_dma(c.iova, size) {
            // Unmapped now, or nothing is mapped there any more (an unmap-all came first).
            Ok(_) => {}
            Err(ref e) if e.errno() == Some(Errno::NOENT) => {}
            Err(e) => {
                // The device may still reach the memory: leak it rather than free it.
                std::mem::forget(c);
                return Err(e);
            }
        }
        self.iovas.free(c.iova, size)?;
        self.free_chunks.push(i);
        drop(c);
        Ok(())
    }
}

impl Drop for DmaPool<'_> {
    fn drop(&mut self) {
        for i in 0..self.chunks.len() {
            if let Err(e) = self.release(i) {
                // Drop cannot fail: say what was leaked (the memory stays allocated, since the
                // device may still reach it).
                log::warn!(target: "vfio", "DMA pool chunk {i} could not be unmapped on drop, its memory is leaked: {e}");
            }
        }
    }
}

/// One buffer of a [`DmaPool`], lent for as long as the pool lives: page-aligned memory that
/// the device may read and write at any time, so (as [`DmaBuffer`]) it never hands out Rust
/// references to its bytes; reads and writes copy through raw pointers, each bounds-checked
/// against this buffer (not its chunk).
#[derive(Debug, Clone, Copy)]
pub struct PoolBuffer<'p> {
    chunk: &'p DmaBuffer,
    offset: usize,
    len: usize,
}

macro_rules! pool_volatile_access {
    ($($read:ident $write:ident $t:ty),*) => {$(
        #[doc = concat!("Volatile read of a `", stringify!($t), "` at `offset` (naturally aligned).")]
        pub fn $read(&self, offset: usize) -> Result<$t> {
            self.check(offset, size_of::<$t>())?;
            self.chunk.$read(self.offset + offset)
        }

        #[doc = concat!("Volatile write of a `", stringify!($t), "` at `offset` (naturally aligned).")]
        pub fn $write(&self, offset: usize, value: $t) -> Result<()> {
            self.check(offset, size_of::<$t>())?;
            self.chunk.$write(self.offset + offset, value)
        }
    )*};
}

impl PoolBuffer<'_> {
    /// Length in bytes (a multiple of the backing's page size).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never true: zero-length buffers are refused.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Where the memory comes from.
    pub fn backing(&self) -> Backing {
        self.chunk.backing()
    }

    /// The buffer's virtual address.
    pub fn as_ptr(&self) -> *mut u8 {
        self.chunk.as_ptr().wrapping_add(self.offset)
    }

    fn check(&self, offset: usize, len: usize) -> Result<()> {
        if offset.checked_add(len).is_none_or(|e| e > self.len) {
            return Err(Error::invalid(
                "access DMA pool buffer",
                "DMA pool buffer",
                format!("{len} bytes at {offset:#x} exceed the buffer's {:#x} bytes", self.len),
            ));
        }
        Ok(())
    }

    /// Copies `data` into the buffer at `offset` (no syscall). Errors: InvalidArgument when the
    /// range passes the buffer's end.
    pub fn write(&self, offset: usize, data: &[u8]) -> Result<()> {
        self.check(offset, data.len())?;
        self.chunk.write(self.offset + offset, data)
    }

    /// Copies bytes at `offset` out of the buffer into `out` (no syscall). Errors:
    /// InvalidArgument when the range passes the buffer's end.
    pub fn read(&self, offset: usize, out: &mut [u8]) -> Result<()> {
        self.check(offset, out.len())?;
        self.chunk.read(self.offset + offset, out)
    }

    /// Sets every byte to `value`.
    pub fn fill(&self, value: u8) {
        // SAFETY: the buffer's own range of its chunk (offset + len <= the chunk's length, as
        // the pool carved it); no references into it exist.
        unsafe { std::ptr::write_bytes(self.as_ptr(), value, self.len) };
    }

    pool_volatile_access!(read8 write8 u8, read16 write16 u16, read32 write32 u32, read64 write64 u64);
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use super::*;
    use crate::{Device, HotResetInfo, Mode, PciAddress};

    /// A container that records mappings and, like type1, refuses past `limit` with ENOSPC.
    struct Fake {
        maps: Mutex<BTreeMap<u64, u64>>,
        limit: Option<u32>,
    }

    impl Fake {
        fn new(limit: Option<u32>) -> Self {
            Fake {
                maps: Mutex::new(BTreeMap::new()),
                limit,
            }
        }

        fn count(&self) -> usize {
            self.maps.lock().unwrap().len()
        }
    }

    impl Container for Fake {
        fn mode(&self) -> Mode {
            Mode::GROUP
        }
        fn iova_ranges(&self) -> Result<Vec<IovaRange>> {
            Ok(vec![IovaRange {
                start: 0,
                last: u64::MAX,
            }])
        }
        fn page_sizes(&self) -> Result<u64> {
            Ok(!0xfff)
        }
        fn assign_device(&self, addr: &PciAddress) -> Result<Device> {
            Err(Error::invalid("assign", addr, "fake"))
        }
        fn map_dma(&self, _: &DmaBuffer, _: u64, _: DmaAccess) -> Result<u64> {
            Err(Error::invalid("map", "fake", "fake"))
        }
        unsafe fn map_dma_raw(&self, _: *mut u8, size: u64, iova: u64, _: DmaAccess) -> Result<u64> {
            let mut m = self.maps.lock().unwrap();
            if self.limit.is_some_and(|l| m.len() >= l as usize) {
                return Err(Error::kernel("VFIO_IOMMU_MAP_DMA", "fake", Errno::NOSPC));
            }
            m.insert(iova, size);
            Ok(iova)
        }
        fn unmap_dma(&self, iova: u64, size: u64) -> Result<u64> {
            let mut m = self.maps.lock().unwrap();
            match m.remove(&iova) {
                Some(s) if s == size => Ok(s),
                _ => Err(Error::kernel("VFIO_IOMMU_UNMAP_DMA", "fake", Errno::NOENT)),
            }
        }
        fn hot_reset(&self, device: &Device) -> Result<HotResetInfo> {
            Err(Error::invalid("hot reset", device.name(), "fake"))
        }
        fn dma_avail(&self) -> Result<Option<u32>> {
            Ok(self.limit.map(|l| l - self.count() as u32))
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "allocates memfds and mmaps, which Miri does not support")]
    fn a_window_smaller_than_a_chunk_still_serves_buffers() {
        let c = Fake::new(None);
        let page = page_size() as u64;
        let mut pool = DmaPool::with_ranges(
            &c,
            &[IovaRange {
                start: 0x10_0000,
                last: 0x10_0000 + 63 * page - 1,
            }],
        );
        let hs: Vec<_> = (0..63)
            .map(|_| pool.alloc(page as usize, DmaAccess::READ_WRITE).unwrap())
            .collect();
        for &h in &hs {
            let a = pool.device_addr(h, 0).unwrap();
            assert!((0x10_0000..0x10_0000 + 63 * page).contains(&a), "{a:#x}");
        }
        assert!(
            pool.alloc(page as usize, DmaAccess::READ_WRITE).is_err(),
            "the window is full"
        );
    }

    #[test]
    #[cfg_attr(miri, ignore = "allocates memfds and mmaps, which Miri does not support")]
    fn many_small_buffers_share_few_mappings_and_come_back_zeroed() {
        let c = Fake::new(Some(8));
        let mut pool = DmaPool::new(&c).unwrap();
        let page = page_size();
        let hs: Vec<_> = (0..1000)
            .map(|_| pool.alloc(page, DmaAccess::READ_WRITE).unwrap())
            .collect();
        assert_eq!(pool.dma_avail(), Some(8));
        let per_chunk = DEFAULT_CHUNK_SIZE / page;
        assert_eq!(c.count(), 1000usize.div_ceil(per_chunk));
        assert_eq!(pool.mappings(), c.count());
        for (i, &h) in hs.iter().enumerate() {
            let b = pool.buffer(h).unwrap();
            b.write32(8, i as u32).unwrap();
            assert_eq!(pool.translate(b.as_ptr(), page), Some(pool.device_addr(h, 0).unwrap()));
            assert_eq!(pool.translate(b.as_ptr(), page + 1), None);
            assert!(b.write(page - 1, &[0, 0]).is_err(), "a write past the buffer");
        }
        assert_eq!(pool.buffer(hs[999]).unwrap().read32(8).unwrap(), 999);
        // Different access: another chunk.
        let r = pool.alloc(page, DmaAccess::READ).unwrap();
        assert_eq!(c.count(), 1000usize.div_ceil(per_chunk) + 1);
        pool.free(r).unwrap();
        assert_eq!(c.count(), 1000usize.div_ceil(per_chunk), "an emptied chunk is unmapped");
        pool.free(hs[3]).unwrap();
        assert!(pool.buffer(hs[3]).is_err());
        assert!(pool.free(hs[3]).is_err(), "double free");
        let again = pool.alloc(page, DmaAccess::READ_WRITE).unwrap();
        assert_eq!(
            pool.buffer(again).unwrap().read32(8).unwrap(),
            0,
            "reused memory is zeroed"
        );
        drop(pool);
        assert_eq!(c.count(), 0, "the pool unmaps everything on drop");
    }

    #[test]
    #[cfg_attr(miri, ignore = "allocates memfds and mmaps, which Miri does not support")]
    fn the_pool_keeps_within_the_mapping_limit() {
        let c = Fake::new(Some(3));
        let mut pool = DmaPool::new(&c).unwrap();
        pool.set_chunk_size(page_size());
        let hs: Vec<_> = (0..3)
            .map(|_| pool.alloc(page_size(), DmaAccess::READ).unwrap())
            .collect();
        let e = pool.alloc(page_size(), DmaAccess::READ).unwrap_err();
        assert_eq!(e.errno(), Some(Errno::NOSPC), "{e}");
        assert_eq!(c.count(), 3);
        pool.free(hs[0]).unwrap();
        // A mapping went: the pool asks again and maps.
        pool.alloc(page_size(), DmaAccess::READ).unwrap();
        assert_eq!(c.count(), 3);
        // Larger than a chunk: a mapping of its own.
        let mut big = DmaPool::new(&c).unwrap();
        assert!(big.alloc(4 * page_size(), DmaAccess::READ).is_err(), "no mapping left");
    }
}
