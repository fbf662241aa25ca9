//! No-IOMMU DMA: nothing is translated, so a "mapping" is memory pinned in place by the process
//! and given to the device by its physical address (`/proc/self/pagemap`, `CAP_SYS_ADMIN`). The
//! pin table remembers what was pinned under which IOVA, so that an unmap can release it; and
//! what a no-IOMMU container answers about its (absent) IOMMU.
//!
//! # How a page is held in place, and what still is not guaranteed
//!
//! The kernel pins pages for a device only through an IOMMU driver (or iommufd's no-IOMMU cdev,
//! Linux >= 7.3, which vfio-cdev uses). The group no-IOMMU backend (`VFIO_NOIOMMU_IOMMU`) pins
//! nothing, so vfio-rs does what a process can, for every range it maps:
//!
//! 1. `mlock`: the pages are not swapped out.
//! 2. A reference on every page (on every huge page, for hugetlb memory), held until the unmap:
//!    the pages are spliced (`vmsplice`) into a pipe that the pin table keeps, unread. A page
//!    with a reference the kernel did not expect cannot be migrated (`folio_migrate_mapping`
//!    gives up on a reference count it does not expect), which stops compaction (including
//!    `vm.compact_unevictable_allowed=1`, the default, which lets compaction take locked pages),
//!    NUMA balancing, khugepaged's collapse, CMA allocations and memory offlining from moving it;
//!    and it is not freed when the process unmaps or frees the buffer, so a guard leaked with
//!    `mem::forget` leaves the device the buffer's old page, never one handed out again. (This
//!    is what `get_user_pages` gives an in-kernel user; it is not `FOLL_LONGTERM`: the page is
//!    not first moved out of `ZONE_MOVABLE`/CMA, so memory offlining of that block fails
//!    instead of moving it.)
//! 3. `MADV_DONTFORK` on private (anonymous) buffers mapped through the safe API: after a
//!    `fork`, copy-on-write would give the parent a new page on its next write while the device
//!    keeps the old one (a page reference does not stop copy-on-write; only a kernel pin does).
//!    Memfd buffers (the default) are shared mappings, which fork does not copy.
//! 4. The physical address is read after all of the above, and read again at the unmap: a page
//!    that moved anyway is logged (warn, target `vfio`), naming both addresses.
//!
//! What does not hold, and cannot from user space: memory failure handling (a poisoned page is
//! taken away whatever holds it); a device left running after its mapping is unmapped or its
//! container closed (without an IOMMU nothing stops a device from writing any physical address,
//! so the driver must stop its DMA before it unmaps); memory mapped with [`map_dma_raw`] that the
//! caller makes copy-on-write (its private memory is not marked `MADV_DONTFORK`, since the
//! library does not know what else shares those pages); and ranges that are not physically
//! contiguous, which are refused (one page, or one huge page, always is).
//!
//! [`map_dma_raw`]: vfio_core::Container::map_dma_raw

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Mutex, MutexGuard};

use vfio_core::{Errno, Error, IovaRange, Result};

/// The page sizes of a no-IOMMU container: every multiple of the CPU page size (there is no
/// translation, so any pinned, physically contiguous range works).
pub(crate) fn page_sizes() -> u64 {
    !(vfio_core::page_size() as u64 - 1)
}

/// The IOVA ranges of a no-IOMMU container: all of 64-bit space (IOVAs only name mappings
/// there; the device gets physical addresses).
pub(crate) fn iova_ranges() -> Vec<IovaRange> {
    vec![IovaRange {
        start: 0,
        last: u64::MAX,
    }]
}

/// How to pin one range.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PinHow {
    /// The size of the pages backing the memory (4 KiB, or a huge page size): one reference is
    /// taken per page of this size.
    pub page: usize,
    /// Private memory to mark `MADV_DONTFORK` (an anonymous [`vfio_core::DmaBuffer`]).
    pub dontfork: bool,
}

impl PinHow {
    /// For memory the library knows nothing about: a reference on every CPU page, no madvise.
    pub fn raw() -> Self {
        PinHow {
            page: vfio_core::page_size(),
            dontfork: false,
        }
    }
}

/// A no-IOMMU "mapping": memory locked and referenced in place, given to the device by physical
/// address.
#[derive(Debug)]
struct PinnedRange {
    iova: u64,
    vaddr: usize,
    size: u64,
    /// What the device was given.
    phys: u64,
    /// The read ends of the pipes holding a reference on every page; closing them releases it.
    refs: Vec<OwnedFd>,
}

/// The ranges a no-IOMMU container has pinned, by the IOVA that names each.
#[derive(Debug, Default)]
pub(crate) struct PinTable {
    pinned: Mutex<Vec<PinnedRange>>,
}

impl PinTable {
    fn lock(&self) -> MutexGuard<'_, Vec<PinnedRange>> {
        self.pinned.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Pins `[vaddr, vaddr + size)` (see the module docs) and returns its physical address,
    /// remembering it under `iova`; `target` names the range in errors. Out of line, so the
    /// IOMMU map path stays small. On any failure nothing stays pinned. Errors: InvalidArgument
    /// for a zero size or an IOVA range overlapping one already pinned; the errno of mlock,
    /// madvise, pipe or vmsplice (EFAULT for memory that is not readable); those of
    /// [`vfio_core::dma::pagemap::physical_range`] (Unsupported for memory that is not
    /// physically contiguous, or without `CAP_SYS_ADMIN`).
    #[inline(never)]
    pub(crate) fn pin(
        &self,
        vaddr: *mut u8,
        size: u64,
        iova: u64,
        how: PinHow,
        target: impl FnOnce() -> String,
    ) -> Result<u64> {
        let target = target();
        let len = usize::try_from(size)
            .map_err(|_| Error::invalid("no-IOMMU DMA pin", &target, "size does not fit in usize"))?;
        if len == 0 {
            return Err(Error::invalid("no-IOMMU DMA pin", &target, "size is zero"));
        }
        if vaddr.is_null() || (vaddr as usize).checked_add(len).is_none() {
            return Err(Error::invalid(
                "no-IOMMU DMA pin",
                &target,
                "null or wrapping address range",
            ));
        }
        let mut pinned = self.lock();
        if pinned
            .iter()
            .any(|p| iova < p.iova.saturating_add(p.size) && p.iova < iova.saturating_add(size))
        {
            return Err(Error::invalid(
                "no-IOMMU DMA pin",
                &target,
                "overlaps a range already pinned at that IOVA",
            ));
        }
        // SAFETY: mlock only changes residency of the caller's range; it does not touch contents.
        unsafe { rustix::mm::mlock(vaddr.cast(), len) }.map_err(|e| Error::kernel("mlock", &target, e))?;
        let mut range = PinnedRange {
            iova,
            vaddr: vaddr as usize,
            size,
            phys: 0,
            refs: Vec::new(),
        };
        let held = (|| {
            if how.dontfork {
                // SAFETY: MADV_DONTFORK only stops a child from inheriting the range; the range
                // is the caller's own memory (a DmaBuffer the caller is mapping).
                unsafe { rustix::mm::madvise(vaddr.cast(), len, rustix::mm::Advice::LinuxDontFork) }
                    .map_err(|e| Error::kernel("madvise(MADV_DONTFORK)", &target, e))?;
            }
            range.refs = reference_pages(range.vaddr, len, how.page.max(vfio_core::page_size()), &target)?;
            // Read only now: from here on the pages cannot move.
            vfio_core::dma::pagemap::physical_range(range.vaddr, len)
        })();
        match held {
            Ok(pa) => {
                range.phys = pa;
                pinned.push(range);
                Ok(pa)
            }
            Err(e) => {
                if let Err(u) = release(range) {
                    log::warn!(target: "vfio", "undoing a failed no-IOMMU pin: {u}");
                }
                Err(e)
            }
        }
    }

    /// Releases the ranges pinned at IOVAs inside `[iova, iova + size)`; returns their bytes.
    /// Each is checked first to still be at the physical address the device was given (a page
    /// that moved is logged, warn). Errors: the first munlock errno (ENOMEM when the memory was
    /// unmapped before its pin, e.g. after a leaked guard), each failure also logged (warn,
    /// target `vfio`); the ranges are released all the same.
    #[inline(never)]
    pub(crate) fn unpin(&self, iova: u64, size: u64) -> Result<u64> {
        let end = iova.saturating_add(size);
        let inside = |p: &PinnedRange| p.iova >= iova && p.iova.saturating_add(p.size) <= end;
        let released: Vec<PinnedRange> = {
            let mut pinned = self.lock();
            let (released, kept) = pinned.drain(..).partition(inside);
            *pinned = kept;
            released
        };
        let mut total = 0;
        let mut first = None;
        for p in released {
            check_in_place(&p);
            total += p.size;
            if let Err(e) = release(p) {
                log::warn!(target: "vfio", "no-IOMMU unpin: {e}");
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(total), Err)
    }

    /// Releases every pinned range; returns their bytes. Failures are logged (warn, target
    /// `vfio`) and the ranges released all the same (see [`PinTable::try_unpin_all`]).
    pub(crate) fn unpin_all(&self) -> u64 {
        let (total, errors) = self.release_all();
        for e in errors {
            log::warn!(target: "vfio", "no-IOMMU unpin: {e}");
        }
        total
    }

    /// As [`PinTable::unpin_all`], returning the first failure (the others logged, warn).
    pub(crate) fn try_unpin_all(&self) -> Result<u64> {
        let (total, errors) = self.release_all();
        let mut errors = errors.into_iter();
        match errors.next() {
            None => Ok(total),
            Some(first) => {
                for e in errors {
                    log::warn!(target: "vfio", "no-IOMMU unpin: {e}");
                }
                Err(first)
            }
        }
    }

    fn release_all(&self) -> (u64, Vec<Error>) {
        let ranges: Vec<PinnedRange> = std::mem::take(&mut *self.lock());
        let total = ranges.iter().map(|p| p.size).sum();
        // Not checked against their physical addresses: a leaked guard's buffer may be gone and
        // its addresses reused (its old pages are what the references below held).
        let errors = ranges.into_iter().filter_map(|p| release(p).err()).collect();
        (total, errors)
    }
}

/// Takes a reference on every `page`-sized page of `[vaddr, vaddr + len)` by splicing one byte
/// of each into pipes, and returns the pipes' read ends (the write ends are closed: the pipes
/// keep their buffers, and with them the page references, until the read ends close).
fn reference_pages(vaddr: usize, len: usize, page: usize, target: &str) -> Result<Vec<OwnedFd>> {
    let first = vaddr - vaddr % page;
    let count = (vaddr + len - first).div_ceil(page);
    let mut iov: Vec<libc::iovec> = (0..count)
        .map(|i| libc::iovec {
            // The first byte of each page of the range (the range's own first byte for the first).
            iov_base: (first + i * page).max(vaddr) as *mut libc::c_void,
            iov_len: 1,
        })
        .collect();
    let mut pipes = Vec::new();
    let mut done = 0;
    while done < count {
        let (read, write) = new_pipe(count - done, target)?;
        let slots = pipe_slots(&write);
        let mut in_pipe = 0;
        while in_pipe < slots && done < count {
            // At most IOV_MAX (1024) entries per call.
            let n = (count - done).min(slots - in_pipe).min(1024);
            let chunk = &mut iov[done..done + n];
            // SAFETY: vmsplice only reads the iovecs (n valid entries, alive for the call) and
            // takes references on the pages they name, which are the caller's mapped memory;
            // it writes nothing into the process.
            let r = unsafe {
                libc::vmsplice(
                    write.as_raw_fd(),
                    chunk.as_ptr(),
                    n,
                    libc::SPLICE_F_NONBLOCK as libc::c_uint,
                )
            };
            if r < 0 {
                return Err(Error::kernel(
                    "vmsplice",
                    target,
                    Errno::from_raw_os_error(last_errno()),
                ));
            }
            // One byte per page: whole entries only (a partial entry cannot be, it is one byte).
            let spliced = r as usize;
            if spliced == 0 {
                break;
            }
            in_pipe += spliced;
            done += spliced;
        }
        pipes.push(read);
        if in_pipe == 0 {
            return Err(Error::kernel("vmsplice", target, Errno::AGAIN));
        }
    }
    Ok(pipes)
}

/// A pipe (close-on-exec, non-blocking) sized for up to `wanted` buffers, as far as the kernel
/// allows (`F_SETPIPE_SZ`; without `CAP_SYS_RESOURCE` up to `/proc/sys/fs/pipe-max-size`).
fn new_pipe(wanted: usize, target: &str) -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array, which is valid for that.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(Error::kernel("pipe2", target, Errno::from_raw_os_error(last_errno())));
    }
    // SAFETY: both fds were just created by pipe2 and are owned by nobody else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let page = vfio_core::page_size();
    if wanted > 16 {
        let mut bytes = wanted.saturating_mul(page).next_power_of_two();
        // Ask for all of it, then halve until the kernel agrees (EPERM past the user's limit);
        // a pipe keeps its default 16 buffers when it agrees to nothing more.
        while bytes > 16 * page {
            // SAFETY: F_SETPIPE_SZ takes an integer and only resizes our own pipe.
            if unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, bytes as libc::c_int) } >= 0 {
                break;
            }
            bytes /= 2;
        }
    }
    Ok((read, write))
}

/// How many buffers (pages) the pipe holds.
fn pipe_slots(write: &OwnedFd) -> usize {
    // SAFETY: F_GETPIPE_SZ reads the size of our own pipe.
    let bytes = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ) };
    (bytes.max(0) as usize / vfio_core::page_size()).max(1)
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
}

/// Logs (warn) a pinned range whose first page is no longer at the physical address the device
/// was given. Skipped when the page cannot be read (not resident, no `CAP_SYS_ADMIN`).
fn check_in_place(p: &PinnedRange) {
    if let Ok(now) = vfio_core::dma::pagemap::physical_address(p.vaddr) {
        if now != p.phys {
            log::warn!(
                target: "vfio",
                "no-IOMMU mapping at iova {:#x}: virtual {:#x} is now at physical {now:#x}, not at {:#x} \
                 where the device was told to reach it (copy-on-write after a fork, or a migration)",
                p.iova,
                p.vaddr,
                p.phys
            );
        }
    }
}

/// Unlocks a range and drops its page references. Errors: the munlock errno (ENOMEM when the
/// memory is no longer mapped); the references are dropped all the same.
fn release(p: PinnedRange) -> Result<()> {
    drop(p.refs);
    // SAFETY: munlock only changes residency; the range may even be unmapped by now (ENOMEM).
    let res = unsafe { rustix::mm::munlock(p.vaddr as *mut std::ffi::c_void, p.size as usize) };
    res.map_err(|e| {
        Error::kernel(
            "munlock",
            format!(
                "no-IOMMU pin at iova {:#x} (virtual {:#x} size {:#x})",
                p.iova, p.vaddr, p.size
            ),
            e,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vfio_core::{Backing, DmaBuffer, page_size};

    #[test]
    fn answers_every_page_multiple_and_the_whole_space() {
        let page = vfio_core::page_size() as u64;
        let sizes = page_sizes();
        assert_eq!(sizes.trailing_zeros(), page.trailing_zeros());
        assert_eq!(sizes.count_ones(), 64 - page.trailing_zeros());
        assert_eq!(
            iova_ranges(),
            [IovaRange {
                start: 0,
                last: u64::MAX
            }]
        );
    }

    #[test]
    fn refuses_empty_and_overlapping_pins_and_unpins_by_iova() {
        let t = PinTable::default();
        let target = || "c iova".to_string();
        assert!(matches!(
            t.pin(std::ptr::null_mut(), 0, 0x1000, PinHow::raw(), target),
            Err(Error::InvalidArgument { .. })
        ));
        // A range recorded by hand (pinning for real needs CAP_SYS_ADMIN for the pagemap), at an
        // address nothing maps: releasing it reports munlock's ENOMEM instead of swallowing it.
        t.lock().push(PinnedRange {
            iova: 0x10_0000,
            vaddr: page_size(),
            size: 0x2000,
            phys: 0,
            refs: Vec::new(),
        });
        assert!(matches!(
            t.pin(page_size() as *mut u8, 0x1000, 0x10_1000, PinHow::raw(), target),
            Err(Error::InvalidArgument { .. })
        ));
        assert_eq!(
            t.unpin(0x10_1000, 0x1000).unwrap(),
            0,
            "a range that does not hold the whole pin"
        );
        if cfg!(miri) {
            return;
        }
        let e = t.unpin(0x10_0000, 0x2000).unwrap_err();
        assert_eq!(e.errno(), Some(Errno::NOMEM), "{e}");
        assert!(
            e.to_string().contains("munlock") && e.to_string().contains("0x100000"),
            "{e}"
        );
        assert_eq!(t.unpin(0x10_0000, 0x2000).unwrap(), 0, "released all the same");
        assert_eq!(t.try_unpin_all().unwrap(), 0);
    }

    #[test]
    #[cfg_attr(miri, ignore = "pipes, vmsplice and mlock, which Miri cannot run")]
    fn page_references_hold_every_page_until_released() {
        // Works without CAP_SYS_ADMIN: the references are taken before any physical address is
        // read. 40 pages need a pipe larger than the default 16 buffers (or several pipes).
        let buf = DmaBuffer::with_backing(40 * page_size(), Backing::Anonymous).unwrap();
        buf.fill(7);
        let refs = reference_pages(buf.as_ptr() as usize, buf.len(), page_size(), "test").unwrap();
        let waiting = |refs: &[OwnedFd]| -> usize {
            refs.iter()
                .map(|r| {
                    let mut n: libc::c_int = 0;
                    // SAFETY: FIONREAD writes one int: the bytes waiting in our own pipe.
                    assert_eq!(unsafe { libc::ioctl(r.as_raw_fd(), libc::FIONREAD, &mut n) }, 0);
                    n as usize
                })
                .sum()
        };
        assert_eq!(waiting(&refs), 40, "one byte, so one page reference, per page");
        // The pipes hold the pages themselves, not a copy: a write after the splice shows, and
        // the pages outlive the buffer (unmapped, its address space reused) with what the
        // buffer last wrote: what a device given their physical addresses would still reach.
        buf.fill(9);
        drop(buf);
        let reuse: Vec<DmaBuffer> = (0..8)
            .map(|_| {
                let b = DmaBuffer::with_backing(40 * page_size(), Backing::Anonymous).unwrap();
                b.fill(0xaa);
                b
            })
            .collect();
        for r in &refs {
            let mut got = [0u8; 64];
            let n = rustix::io::read(r, &mut got).unwrap();
            assert!(n > 0 && got[..n].iter().all(|&b| b == 9), "{:?}", &got[..n]);
        }
        drop(reuse);
        // A huge-page stride takes one reference per huge page only.
        let other = DmaBuffer::with_backing(3 * page_size(), Backing::Anonymous).unwrap();
        let refs2 = reference_pages(other.as_ptr() as usize + 100, 3 * page_size() - 100, 2 << 20, "test").unwrap();
        assert!((1..=2).contains(&waiting(&refs2)), "{}", waiting(&refs2));
    }
}
