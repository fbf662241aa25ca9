//! An I/O address space (IOAS) inside an iommufd: the IOVA -> memory mappings that devices and
//! HWPTs attached to it use.

use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::Arc;

use iommufd_sys as sys;
use vfio_core::container::MAX_IOVA_RANGES;
use vfio_core::ioctl::{self, Request, requests as req};
use vfio_core::{DmaAccess, DmaBuffer, Errno, Error, IovaRange, Result};

use crate::{IoasId, Iommufd, refused};

/// An IOAS, from [`Iommufd::alloc_ioas`]; destroyed (`IOMMU_DESTROY`) on drop, unless it was
/// adopted ([`Ioas::adopt`]). A destroy that fails on drop (EBUSY: a device or HWPT still uses
/// it) is logged (warn, target `vfio`) with the IOAS and errno; [`Ioas::destroy`] returns it
/// instead.
#[derive(Debug)]
pub struct Ioas {
    id: IoasId,
    iommufd: Arc<Iommufd>,
    /// Allocated here, so destroyed here; an adopted IOAS belongs to whoever allocated it.
    owned: bool,
}

/// Where a mapping goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IovaPlacement {
    /// Exactly at this IOVA (`IOMMU_IOAS_MAP_FIXED_IOVA`).
    Fixed(u64),
    /// Wherever the kernel finds room inside the allowed ranges.
    Any,
}

impl Ioas {
    pub(crate) fn from_id(iommufd: Arc<Iommufd>, id: IoasId) -> Self {
        Ioas {
            id,
            iommufd,
            owned: true,
        }
    }

    /// Uses IOAS `id` of `iommufd`, allocated by someone else: typically a secondary process
    /// that received the iommufd from its primary (see `vfio_core::fdpass`) and the id as the
    /// fd's name. Mappings made through it are the kernel's like any other; dropping it does not
    /// destroy the IOAS. Checks the id with `IOMMU_IOAS_IOVA_RANGES`; errors: ENOENT when the
    /// iommufd has no IOAS of that id (another kind of object included).
    #[doc(alias = "IOMMU_IOAS_IOVA_RANGES")]
    pub fn adopt(iommufd: Arc<Iommufd>, id: IoasId) -> Result<Self> {
        let ioas = Ioas {
            id,
            iommufd,
            owned: false,
        };
        ioas.ranges_and_alignment()?;
        Ok(ioas)
    }

    /// The object id (what `VFIO_DEVICE_ATTACH_IOMMUFD_PT` takes).
    pub fn id(&self) -> IoasId {
        self.id
    }

    /// The iommufd the IOAS lives in.
    pub fn iommufd(&self) -> &Arc<Iommufd> {
        &self.iommufd
    }

    /// `IOMMU_DESTROY` of the IOAS now, returning the kernel's answer instead of logging it as
    /// the drop does. An adopted IOAS ([`Ioas::adopt`]) belongs to whoever allocated it and is
    /// left alone (Ok). Errors: EBUSY (Kernel) while a device or HWPT is attached to it or
    /// allocated from it (the IOAS then stays, and nothing is retried on drop); ENOENT when it
    /// is gone already.
    #[doc(alias = "IOMMU_DESTROY")]
    pub fn destroy(mut self) -> Result<()> {
        if std::mem::replace(&mut self.owned, false) {
            self.iommufd.destroy(self.id)
        } else {
            Ok(())
        }
    }

    pub(crate) fn target(&self, iova: u64, len: u64) -> String {
        format!(
            "{} ioas {} iova {iova:#x} length {len:#x}",
            self.iommufd.target(),
            self.id
        )
    }

    #[inline]
    fn map_flags(at: IovaPlacement, access: DmaAccess) -> (u32, u64) {
        let mut flags = 0;
        if access.contains(DmaAccess::READ) {
            flags |= sys::IOMMU_IOAS_MAP_READABLE;
        }
        if access.contains(DmaAccess::WRITE) {
            flags |= sys::IOMMU_IOAS_MAP_WRITEABLE;
        }
        match at {
            IovaPlacement::Fixed(iova) => (flags | sys::IOMMU_IOAS_MAP_FIXED_IOVA, iova),
            IovaPlacement::Any => (flags, 0),
        }
    }

    /// `IOMMU_IOAS_MAP` (Linux >= 6.2, like every IOAS ioctl here unless noted): maps `len`
    /// bytes of process memory at `vaddr`; returns the IOVA. Errors: EEXIST when a fixed IOVA
    /// overlaps a mapping, EINVAL for unaligned or zero-length arguments, ENOSPC when no free
    /// range fits, ENOMEM past the pinned-memory limit.
    ///
    /// # Safety
    /// The memory must stay allocated, and unreached by Rust references while the device may
    /// access it, until the range is unmapped.
    #[doc(alias = "IOMMU_IOAS_MAP")]
    #[inline]
    pub unsafe fn map_raw(&self, vaddr: *mut u8, len: u64, at: IovaPlacement, access: DmaAccess) -> Result<u64> {
        let (flags, iova) = Self::map_flags(at, access);
        let mut m = sys::iommu_ioas_map {
            flags,
            ioas_id: self.id.get(),
            user_va: vaddr as u64,
            length: len,
            iova,
            ..Default::default()
        };
        // SAFETY: user_va and length name the caller's memory, which it vouches for (this
        // function's contract); the argument holds no other pointer.
        unsafe { ioctl::call_unchecked::<req::IoasMap>(self.iommufd.ioctl_fd(), &mut m) }
            .map_err(|e| refused::<req::IoasMap>(|| self.target(iova, len), e))?;
        Ok(m.iova)
    }

    /// `IOMMU_IOAS_UNMAP`: removes whole mappings inside `[iova, iova + len)`; returns the bytes
    /// unmapped. Errors: ENOENT when nothing is mapped there or when the range would split
    /// a mapping (mappings are only removed whole). `unmap(0, u64::MAX)` unmaps everything.
    #[doc(alias = "IOMMU_IOAS_UNMAP")]
    #[inline]
    pub fn unmap(&self, iova: u64, len: u64) -> Result<u64> {
        let mut u = sys::iommu_ioas_unmap {
            ioas_id: self.id.get(),
            iova,
            length: len,
            ..Default::default()
        };
        ioctl::call::<req::IoasUnmap>(self.iommufd.ioctl_fd(), &mut u)
            .map_err(|e| refused::<req::IoasUnmap>(|| self.target(iova, len), e))?;
        Ok(u.length)
    }

    /// `IOMMU_IOAS_UNMAP` of `[0, u64::MAX]`: removes every mapping; returns the bytes unmapped
    /// (0 on an empty IOAS, which is not an error). Errors: the kernel's errno (EBUSY while an
    /// in-kernel user such as an mdev holds pages).
    #[doc(alias = "IOMMU_IOAS_UNMAP")]
    pub fn unmap_all(&self) -> Result<u64> {
        self.unmap(0, u64::MAX)
    }

    /// `IOMMU_IOAS_MAP_FILE` (Linux >= 6.13): maps `len` bytes of the file `fd` (a memfd, or a
    /// dma-buf on newer kernels) from byte offset `start`; returns the IOVA. The kernel pins the
    /// file's pages, not process memory, so no process mapping is involved. Errors: Unsupported
    /// on kernels without the ioctl (ENOTTY) or for a file kind the kernel does not map
    /// (EOPNOTSUPP); otherwise those of [`Ioas::map_raw`], and EBADF for a bad fd.
    #[doc(alias = "IOMMU_IOAS_MAP_FILE")]
    pub fn map_file(
        &self,
        fd: BorrowedFd<'_>,
        start: u64,
        len: u64,
        at: IovaPlacement,
        access: DmaAccess,
    ) -> Result<u64> {
        let (flags, iova) = Self::map_flags(at, access);
        let mut m = sys::iommu_ioas_map_file {
            flags,
            ioas_id: self.id.get(),
            fd: fd.as_raw_fd(),
            start,
            length: len,
            iova,
            ..Default::default()
        };
        // SAFETY: the argument holds no pointer, and no process memory is made reachable: the
        // kernel pins the file's own pages for as long as the mapping lives (whoever maps the
        // file into a process accepts, as for any shared file, that others may write it).
        let res = unsafe { ioctl::call_unchecked::<req::IoasMapFile>(self.iommufd.ioctl_fd(), &mut m) };
        match res {
            Ok(_) => Ok(m.iova),
            Err(e @ (Errno::NOTTY | Errno::OPNOTSUPP)) => Err(Error::unsupported(
                req::IoasMapFile::NAME,
                self.target(iova, len),
                format!("the kernel refused with {e} (needs Linux >= 6.13 and a memfd)"),
            )),
            Err(e) => Err(refused::<req::IoasMapFile>(|| self.target(iova, len), e)),
        }
    }

    /// `IOMMU_IOAS_COPY` (Linux >= 6.2): maps in this IOAS the pages that `src` maps at
    /// `[src_iova, src_iova + len)`, sharing the pin (no new memory is pinned); returns the IOVA
    /// here. The source range must match one whole mapping. Errors: ENOENT when the source range
    /// is not exactly a mapping, EEXIST when a fixed IOVA is taken, ENOSPC when nothing fits;
    /// InvalidArgument when `src` lives in another iommufd.
    ///
    /// # Safety
    /// The copy outlives the source mapping: the memory `src` maps there must stay allocated,
    /// and unreached by Rust references while the device may access it, until the copy is
    /// unmapped too (what [`Ioas::map_raw`] asks, for the copy). The copy shares the source's
    /// pages object: for a source mapped by address, an IOAS without an attached device pins
    /// them later, by that address, so "allocated" means the same pages still at the same
    /// address. The kernel copies whatever `src` maps at `src_iova` when it looks, which another
    /// thread may have changed since. [`Ioas::copy_of`] is the safe form.
    #[doc(alias = "IOMMU_IOAS_COPY")]
    pub unsafe fn copy_from(
        &self,
        src: &Ioas,
        src_iova: u64,
        len: u64,
        at: IovaPlacement,
        access: DmaAccess,
    ) -> Result<u64> {
        if !Arc::ptr_eq(&self.iommufd, &src.iommufd) {
            return Err(Error::invalid(
                req::IoasCopy::NAME,
                format!("ioas {} <- ioas {}", self.id, src.id),
                "the IOASes live in different iommufds",
            ));
        }
        let (flags, dst_iova) = Self::map_flags(at, access);
        let mut c = sys::iommu_ioas_copy {
            flags,
            dst_ioas_id: self.id.get(),
            src_ioas_id: src.id.get(),
            length: len,
            dst_iova,
            src_iova,
            ..Default::default()
        };
        // SAFETY: the argument holds no pointer; the memory made reachable at the new IOVA is
        // what `src` already maps there, which the caller vouches for (this function's contract).
        unsafe { ioctl::call_unchecked::<req::IoasCopy>(self.iommufd.ioctl_fd(), &mut c) }.map_err(|e| {
            refused::<req::IoasCopy>(
                || format!("{} from ioas {} iova {src_iova:#x}", self.target(dst_iova, len), src.id),
                e,
            )
        })?;
        Ok(c.dst_iova)
    }

    /// The safe form of [`Ioas::copy_from`]: maps the memory behind `source` (a DMA buffer, or
    /// a mapping of one such as a [`vfio_core::DmaMapping`] or [`vfio_core::OwnedDmaMapping`],
    /// or a reference to either) in this IOAS too, and holds `source` for as long as the copy
    /// lives ([`IoasCopy`], unmapped on drop; [`IoasCopy::into_source`] gives `source` back).
    ///
    /// It maps the buffer's memfd (`IOMMU_IOAS_MAP_FILE`, Linux >= 6.13) rather than copying
    /// by IOVA (`IOMMU_IOAS_COPY`): a copy by IOVA maps whatever the source IOAS holds there
    /// when the kernel looks (another thread may have unmapped it and mapped other memory
    /// since), and for memory mapped by address it shares a pin that an IOAS without an
    /// attached device takes lazily, by address. By file, the copy reaches the file's pages and
    /// nothing else, even if the guard is leaked and the source freed. The price: the pages
    /// are pinned (and counted against `RLIMIT_MEMLOCK`) once per IOAS, not shared.
    ///
    /// Errors: Unsupported for a buffer without a memfd ([`vfio_core::Backing::Anonymous`]) or
    /// a kernel without `IOMMU_IOAS_MAP_FILE`; otherwise those of [`Ioas::map_file`] (EEXIST
    /// when a fixed IOVA is taken, ENOSPC when nothing fits).
    #[doc(alias = "IOMMU_IOAS_MAP_FILE", alias = "IOMMU_IOAS_COPY")]
    pub fn copy_of<S: AsRef<DmaBuffer>>(
        self: &Arc<Self>,
        source: S,
        at: IovaPlacement,
        access: DmaAccess,
    ) -> Result<IoasCopy<S>> {
        let buffer = source.as_ref();
        let len = buffer.len() as u64;
        let at_iova = match at {
            IovaPlacement::Fixed(iova) => iova,
            IovaPlacement::Any => 0,
        };
        let fd = vfio_core::dma::require_memfd(buffer, || self.target(at_iova, len), "an iommufd IOAS")?;
        let iova = self.map_file(fd, 0, len, at, access)?;
        Ok(IoasCopy {
            ioas: self.clone(),
            iova,
            len,
            source: ManuallyDrop::new(source),
        })
    }

    /// `IOMMU_IOAS_ALLOW_IOVAS` (Linux >= 6.2): restricts the IOVAs this IOAS may use to `ranges` (replacing any
    /// earlier list; an empty list lifts the restriction). Automatic placement then only picks
    /// IOVAs inside them. Errors: EINVAL for an unaligned or inverted range, EBUSY when an
    /// existing mapping lies outside the new list.
    #[doc(alias = "IOMMU_IOAS_ALLOW_IOVAS")]
    pub fn allow_iovas(&self, ranges: &[IovaRange]) -> Result<()> {
        let mut raw: Vec<sys::iommu_iova_range> = ranges
            .iter()
            .map(|r| sys::iommu_iova_range {
                start: r.start,
                last: r.last,
            })
            .collect();
        let Ok(num_iovas) = u32::try_from(raw.len()) else {
            return Err(Error::invalid(
                req::IoasAllowIovas::NAME,
                format!("ioas {}", self.id),
                "too many ranges",
            ));
        };
        let mut a = sys::iommu_ioas_allow_iovas {
            ioas_id: self.id.get(),
            num_iovas,
            allowed_iovas: raw.as_mut_ptr() as u64,
            ..Default::default()
        };
        // SAFETY: allowed_iovas points at num_iovas readable iommu_iova_range entries, alive for
        // the call.
        unsafe { ioctl::call_unchecked::<req::IoasAllowIovas>(self.iommufd.ioctl_fd(), &mut a) }.map_err(|e| {
            refused::<req::IoasAllowIovas>(
                || format!("{} ioas {} ({ranges:x?})", self.iommufd.target(), self.id),
                e,
            )
        })?;
        Ok(())
    }

    /// `IOMMU_OPTION` `IOMMU_OPTION_HUGE_PAGES` (per IOAS, Linux >= 6.2): whether contiguous pages may be
    /// combined into larger IOMMU pages (the default). Set it before the first mapping or
    /// attachment; the kernel answers EBUSY afterwards.
    #[doc(alias = "IOMMU_OPTION", alias = "IOMMU_OPTION_HUGE_PAGES")]
    pub fn set_huge_pages(&self, enabled: bool) -> Result<()> {
        self.iommufd
            .option(sys::IOMMU_OPTION_HUGE_PAGES, self.id.get(), Some(u64::from(enabled)))
            .map(|_| ())
    }

    /// `IOMMU_OPTION` `IOMMU_OPTION_HUGE_PAGES` read back. Errors: the kernel's errno
    /// (EOPNOTSUPP before Linux 6.2's option support).
    #[doc(alias = "IOMMU_OPTION", alias = "IOMMU_OPTION_HUGE_PAGES")]
    pub fn huge_pages(&self) -> Result<bool> {
        Ok(self.iommufd.option(sys::IOMMU_OPTION_HUGE_PAGES, self.id.get(), None)? != 0)
    }

    /// `IOMMU_IOAS_IOVA_RANGES`: the IOVA ranges mappings may use (two-call protocol: EMSGSIZE
    /// says how many ranges there are).
    #[doc(alias = "IOMMU_IOAS_IOVA_RANGES")]
    pub fn iova_ranges(&self) -> Result<Vec<IovaRange>> {
        Ok(self.ranges_and_alignment()?.0)
    }

    /// The IOVA alignment every mapping must have (`out_iova_alignment` of
    /// `IOMMU_IOAS_IOVA_RANGES`): the smallest page size of the attached IOMMUs. Errors: the
    /// kernel's errno (ENOENT when the IOAS is gone).
    #[doc(alias = "IOMMU_IOAS_IOVA_RANGES")]
    pub fn iova_alignment(&self) -> Result<u64> {
        Ok(self.ranges_and_alignment()?.1)
    }

    fn ranges_and_alignment(&self) -> Result<(Vec<IovaRange>, u64)> {
        let target = || format!("{} ioas {}", self.iommufd.target(), self.id);
        let mut ranges: Vec<sys::iommu_iova_range> = Vec::new();
        // The kernel says how many ranges there are (EMSGSIZE); the count can grow between two
        // calls (ALLOW_IOVAS, an attach), so ask a few times, never for more than the cap.
        for _ in 0..4 {
            let mut r = sys::iommu_ioas_iova_ranges {
                ioas_id: self.id.get(),
                num_iovas: ranges.len() as u32,
                allowed_iovas: ranges.as_mut_ptr() as u64,
                ..Default::default()
            };
            // SAFETY: allowed_iovas points at num_iovas writable iommu_iova_range entries, alive
            // for the call; the kernel writes no more than num_iovas of them.
            let res = unsafe { ioctl::call_unchecked::<req::IoasIovaRanges>(self.iommufd.ioctl_fd(), &mut r) };
            match res {
                Ok(_) => {
                    ranges.truncate(r.num_iovas as usize);
                    let out = ranges
                        .iter()
                        .map(|r| IovaRange {
                            start: r.start,
                            last: r.last,
                        })
                        .collect();
                    return Ok((out, r.out_iova_alignment));
                }
                Err(Errno::MSGSIZE) if (r.num_iovas as usize) > ranges.len() => {
                    let n = range_capacity(r.num_iovas, target)?;
                    ranges = vec![sys::iommu_iova_range::default(); n];
                }
                Err(e) => return Err(refused::<req::IoasIovaRanges>(target, e)),
            }
        }
        Err(Error::malformed(
            req::IoasIovaRanges::NAME,
            target(),
            "the number of IOVA ranges kept growing over four calls",
        ))
    }

    /// `IOMMU_IOAS_NOIOMMU_GET_PA` (no-IOMMU cdev, kernels with `IOMMUFD_NOIOMMU`): the physical
    /// address behind `iova` and how many bytes from it are physically contiguous. The kernel
    /// answers only from a no-IOMMU domain (`iopt_get_phys`), so a success also proves that a
    /// no-IOMMU device is attached to the IOAS. Errors: ENOENT (Kernel) when nothing is mapped
    /// at `iova`; EOPNOTSUPP when no no-IOMMU domain holds the pages (no device attached yet, or
    /// the IOAS serves devices behind an IOMMU); EPERM without `CAP_SYS_RAWIO`; ENOTTY on
    /// kernels without no-IOMMU cdev support.
    #[doc(alias = "IOMMU_IOAS_NOIOMMU_GET_PA")]
    pub fn noiommu_phys(&self, iova: u64, len: u64) -> Result<(u64, u64)> {
        let mut q = sys::iommu_ioas_noiommu_get_pa {
            ioas_id: self.id.get(),
            iova,
            length: len,
            ..Default::default()
        };
        ioctl::call::<req::IoasNoiommuGetPa>(self.iommufd.ioctl_fd(), &mut q)
            .map_err(|e| refused::<req::IoasNoiommuGetPa>(|| self.target(iova, len), e))?;
        Ok((q.out_phys, q.length))
    }
}

/// How many range entries to offer `IOMMU_IOAS_IOVA_RANGES` after it answered EMSGSIZE with
/// `reported`: that many, unless it passes [`MAX_IOVA_RANGES`] (Malformed: the kernel does not
/// get to size the allocation).
fn range_capacity(reported: u32, target: impl FnOnce() -> String) -> Result<usize> {
    let n = reported as usize;
    if n > MAX_IOVA_RANGES {
        return Err(Error::malformed(
            req::IoasIovaRanges::NAME,
            target(),
            format!("the kernel reports {n} IOVA ranges, above the limit of {MAX_IOVA_RANGES}"),
        ));
    }
    Ok(n)
}

impl Drop for Ioas {
    fn drop(&mut self) {
        if self.owned {
            if let Err(e) = self.iommufd.destroy(self.id) {
                log::warn!(target: "vfio", "dropping ioas {} of {}: {e}", self.id, self.iommufd.target());
            }
        }
    }
}

/// A mapping, in one IOAS, of the memory behind a DMA buffer mapped elsewhere: the safe form of
/// [`Ioas::copy_from`], from [`Ioas::copy_of`]. It holds `S` (the source mapping or buffer)
/// for as long as it lives, and unmaps on drop (a failed unmap is logged, warn, target `vfio`:
/// the file's pages then stay mapped, and the source may still be freed, since the IOAS holds
/// the file and not the process's memory). Leaking it is sound for the same reason.
#[must_use = "the copy is unmapped when this guard is dropped"]
pub struct IoasCopy<S: AsRef<DmaBuffer>> {
    ioas: Arc<Ioas>,
    iova: u64,
    len: u64,
    // Dropped by Drop after the unmap (or moved out by into_source).
    source: ManuallyDrop<S>,
}

impl<S: AsRef<DmaBuffer>> std::fmt::Debug for IoasCopy<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoasCopy")
            .field("ioas", &self.ioas.id())
            .field("iova", &format_args!("{:#x}", self.iova))
            .field("len", &format_args!("{:#x}", self.len))
            .finish()
    }
}

impl<S: AsRef<DmaBuffer>> IoasCopy<S> {
    /// The IOVA of the copy in its IOAS.
    pub fn iova(&self) -> u64 {
        self.iova
    }

    /// The IOAS the copy lives in.
    pub fn ioas(&self) -> &Arc<Ioas> {
        &self.ioas
    }

    /// What the copy was made of.
    pub fn source(&self) -> &S {
        &self.source
    }

    /// Unmaps the copy and gives the source back. Errors: the unmap's errno (the copy then
    /// stays mapped, holding the file's pages, and the source is dropped).
    #[doc(alias = "IOMMU_IOAS_UNMAP")]
    pub fn into_source(self) -> Result<S> {
        let mut this = ManuallyDrop::new(self);
        let unmapped = this.ioas.unmap(this.iova, this.len);
        // SAFETY: `this` is never dropped nor used again: its two owned fields are each moved
        // out exactly once here.
        let (ioas, source) = unsafe { (std::ptr::read(&this.ioas), ManuallyDrop::take(&mut this.source)) };
        drop(ioas);
        unmapped.map(|_| source)
    }
}

impl<S: AsRef<DmaBuffer>> Drop for IoasCopy<S> {
    fn drop(&mut self) {
        match self.ioas.unmap(self.iova, self.len) {
            Ok(_) => {}
            Err(e) if e.errno() == Some(Errno::NOENT) => {}
            Err(e) => log::warn!(target: "vfio", "dropping the IOAS copy at iova {:#x}: {e}", self.iova),
        }
        // SAFETY: dropped once, here; the field is not used afterwards. The copy maps the
        // buffer's file, so freeing the source is sound even when the unmap failed.
        unsafe { ManuallyDrop::drop(&mut self.source) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    static WARNINGS: Mutex<Vec<String>> = Mutex::new(Vec::new());

    struct Capture;
    impl log::Log for Capture {
        fn enabled(&self, m: &log::Metadata) -> bool {
            m.target() == "vfio" && m.level() <= log::Level::Warn
        }
        fn log(&self, r: &log::Record) {
            if self.enabled(r.metadata()) {
                WARNINGS.lock().unwrap().push(r.args().to_string());
            }
        }
        fn flush(&self) {}
    }

    /// An "iommufd" that answers every request with ENOTTY (an eventfd).
    fn dead_iommufd() -> Arc<Iommufd> {
        Iommufd::from_fd(rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).unwrap())
    }

    #[test]
    fn range_counts_from_the_kernel_are_capped() {
        assert_eq!(range_capacity(3, || "ioas 1".into()).unwrap(), 3);
        assert_eq!(
            range_capacity(MAX_IOVA_RANGES as u32, || "ioas 1".into()).unwrap(),
            MAX_IOVA_RANGES
        );
        for lie in [MAX_IOVA_RANGES as u32 + 1, u32::MAX] {
            let e = range_capacity(lie, || "/dev/iommu ioas 1".into()).unwrap_err();
            assert!(matches!(e, Error::Malformed { .. }), "{e:?}");
            let text = e.to_string();
            assert!(
                text.contains("IOMMU_IOAS_IOVA_RANGES") && text.contains("ioas 1") && text.contains(&lie.to_string()),
                "{text}"
            );
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "eventfd(2) and ioctl(2), which Miri cannot run")]
    fn destroy_failures_are_returned_or_logged_never_swallowed() {
        let _ = log::set_logger(&Capture);
        log::set_max_level(log::LevelFilter::Warn);
        let iommufd = dead_iommufd();
        // The explicit form returns the kernel's answer, naming the object.
        let e = Ioas::from_id(iommufd.clone(), IoasId::from(41)).destroy().unwrap_err();
        assert_eq!(e.errno(), Some(Errno::NOTTY));
        assert!(e.to_string().contains("object 41"), "{e}");
        // An adopted IOAS is not ours to destroy.
        let adopted = Ioas {
            id: IoasId::from(43),
            iommufd: iommufd.clone(),
            owned: false,
        };
        adopted.destroy().unwrap();
        // Dropping logs the failure with the object and the errno.
        drop(Ioas::from_id(iommufd.clone(), IoasId::from(42)));
        drop(crate::Hwpt::from_id(iommufd, crate::HwptId::from(44)));
        let warnings = WARNINGS.lock().unwrap();
        let ioas = warnings
            .iter()
            .find(|w| w.contains("ioas 42"))
            .expect("the IOAS drop warned");
        assert!(ioas.contains("IOMMU_DESTROY") && ioas.contains("object 42"), "{ioas}");
        assert!(ioas.contains("ENOTTY") || ioas.contains("25"), "{ioas}");
        assert!(warnings.iter().any(|w| w.contains("hwpt 44")), "{warnings:?}");
        assert!(
            !warnings.iter().any(|w| w.contains("41") || w.contains("43")),
            "{warnings:?}"
        );
    }
}
