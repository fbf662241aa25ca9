//! Type1 DMA: `VFIO_IOMMU_MAP_DMA` and `VFIO_IOMMU_UNMAP_DMA` on the container fd, the hot path
//! of every mapping. Kept lean: the requests are issued inline, and a refused one builds its
//! error out of line. (A no-IOMMU container pins memory instead: see `noiommu.rs`; dirty-page
//! tracking is in `dirty.rs`.)
//!
//! The safe map ([`vfio_core::Container::map_dma`]) takes the path that stays sound when its
//! guard is leaked (see [`vfio_core::dma`]), by backend:
//!
//! - the type1 driver pins at map time once the container has an IOMMU domain
//!   (`vfio_iommu_type1.c`: `vfio_dma_do_map` pins when `domain_list` is not empty, and the
//!   first group's `VFIO_SET_IOMMU` attaches a domain; the last IOMMU group out unmaps and
//!   unpins everything), so any buffer maps by address. Mediated devices' groups (emulated
//!   IOMMU, no domain) are pinned lazily by address instead: once one joined through this
//!   container, the safe map is refused. An adopted container ([`Container::from_fd`]) does not
//!   know the groups that joined elsewhere, so it refuses while any mediated device's group
//!   existed on the machine at its first safe map. Not seen: a mediated device's group that
//!   joins the kernel container later through another handle of it (another process's), whose
//!   IOMMU groups then all leave: only then would the type1 driver pin lazily again;
//! - iommufd's compat container pins lazily (no domain until a device fd is open, none again
//!   once the last closes), so it maps the buffer's memfd by file: the compat container fd is
//!   an iommufd, and takes `IOMMU_IOAS_MAP_FILE` on its compat IOAS (`IOMMU_VFIO_IOAS`);
//!   `VFIO_IOMMU_UNMAP_DMA` removes such a mapping like any other;
//! - a no-IOMMU container pins in user space (`noiommu.rs`).

use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use iommufd_sys as iosys;
use vfio_core::dma::refusal::{MapBackend, explain_map_refusal};
use vfio_core::ioctl::{self, Request, kind, requests as req};
use vfio_core::{DmaAccess, DmaBuffer, Errno, Error, Result, Sysfs};
use vfio_sys as sys;

use crate::Container;
use crate::noiommu::PinHow;

/// What the safe map of an IOMMU container learns about the kernel code behind it, at its first
/// safe map, and which mediated-device groups joined since.
#[derive(Debug, Default)]
pub(crate) struct DmaGate {
    path: OnceLock<SafePath>,
    /// A group whose IOMMU is emulated (a mediated device's) joined through this container, or
    /// (adopted containers) one existed on the machine at the first safe map.
    emulated: AtomicBool,
    /// Adopted from an fd ([`Container::from_fd`]): groups may have joined elsewhere.
    adopted: AtomicBool,
}

/// How the safe map maps, by backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SafePath {
    /// The type1 driver: by address, pinned at map time.
    Type1,
    /// iommufd's compat container: by file, into this compat IOAS.
    Compat(u32),
}

impl DmaGate {
    /// Notes that the container was adopted from an fd, so that groups may have joined it
    /// elsewhere (`Container::from_fd`).
    pub(crate) fn adopted(&self) {
        self.adopted.store(true, Ordering::Relaxed);
    }

    /// Notes a group that joined the container through this value (`Container::join`, under
    /// the state lock). Before the first safe map nothing is read: resolving the path checks
    /// every group then (`resolve_safe_path`), so opening a device costs no sysfs lookups.
    pub(crate) fn group_joined(&self, sysfs: &Sysfs, id: u32) {
        if self.path.get().is_some() {
            self.note(sysfs, id);
        }
    }

    /// Marks the gate if group `id` is a mediated device's (sticky).
    fn note(&self, sysfs: &Sysfs, id: u32) {
        if emulated_group(sysfs, id) {
            self.emulated.store(true, Ordering::Relaxed);
        }
    }
}

/// Whether group `id` is a mediated device's (its IOMMU emulated by VFIO): VFIO names such an
/// IOMMU group `vfio-noiommu` (`vfio_noiommu_group_alloc`, as for no-IOMMU groups) but serves
/// it at `/dev/vfio/<id>` (no-IOMMU groups are `/dev/vfio/noiommu-<id>`).
fn emulated_group(sysfs: &Sysfs, id: u32) -> bool {
    let name = sysfs.root().join(format!("kernel/iommu_groups/{id}/name"));
    std::fs::read_to_string(name).is_ok_and(|n| n.trim() == "vfio-noiommu")
        && sysfs.dev_dir().join("vfio").join(id.to_string()).exists()
}

/// Whether any mediated device's group exists on the machine (its node under `/dev/vfio`).
fn any_emulated_group(sysfs: &Sysfs) -> bool {
    let Ok(dir) = std::fs::read_dir(sysfs.dev_dir().join("vfio")) else {
        return false;
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .any(|id| emulated_group(sysfs, id))
}

impl Container {
    /// `VFIO_IOMMU_UNMAP_DMA` with `VFIO_DMA_UNMAP_FLAG_ALL`: removes every mapping; returns the
    /// bytes unmapped. Errors: Unsupported when `VFIO_CHECK_EXTENSION(VFIO_UNMAP_ALL)` is 0. In a
    /// no-IOMMU container it unpins everything instead (errors: the first munlock errno, the
    /// ranges released all the same).
    #[doc(alias = "VFIO_IOMMU_UNMAP_DMA", alias = "VFIO_CHECK_EXTENSION")]
    pub fn unmap_all(&self) -> Result<u64> {
        if let Some(pins) = self.pins() {
            return pins.try_unpin_all();
        }
        if !self.check_extension_raw(sys::VFIO_UNMAP_ALL)? {
            return Err(Error::unsupported(
                "VFIO_DMA_UNMAP_FLAG_ALL",
                self.target(),
                "VFIO_CHECK_EXTENSION(VFIO_UNMAP_ALL) is 0",
            ));
        }
        self.unmap(0, 0, sys::VFIO_DMA_UNMAP_FLAG_ALL)
    }

    /// `VFIO_IOMMU_UNMAP_DMA` of `[iova, iova + size)` with the kernel's answer as it is: the
    /// bytes unmapped, 0 when nothing was mapped there (type1 reports that as success; the
    /// trait's [`unmap_dma`](vfio_core::Container::unmap_dma) turns it into ENOENT). The rules
    /// for ranges that split a mapping are in the table of
    /// [`unmap_dma`](vfio_core::Container::unmap_dma). In a no-IOMMU container, unpins the
    /// ranges pinned at IOVAs inside the range (errors: munlock's errno, e.g. ENOMEM for memory
    /// unmapped before its pin; the ranges are released all the same).
    #[doc(alias = "VFIO_IOMMU_UNMAP_DMA")]
    #[inline]
    pub fn unmap_range(&self, iova: u64, size: u64) -> Result<u64> {
        if let Some(pins) = self.pins() {
            return pins.unpin(iova, size);
        }
        self.unmap(iova, size, 0)
    }

    /// `VFIO_IOMMU_UNMAP_DMA` without a dirty bitmap (`flags` is 0 or `VFIO_DMA_UNMAP_FLAG_ALL`).
    #[inline]
    pub(crate) fn unmap(&self, iova: u64, size: u64, flags: u32) -> Result<u64> {
        let mut unmap = sys::vfio_iommu_type1_dma_unmap {
            flags,
            iova,
            size,
            ..Default::default()
        };
        ioctl::call::<req::IommuUnmapDma>(self.ioctl_fd(), &mut unmap)
            .map_err(|e| self.dma_error::<req::IommuUnmapDma>(iova, size, e))?;
        Ok(unmap.size)
    }

    /// `VFIO_IOMMU_MAP_DMA` of `size` bytes at `vaddr` to `iova`; returns `iova`.
    ///
    /// # Safety
    /// As [`vfio_core::Container::map_dma_raw`]: the memory stays allocated, and unreached by
    /// Rust references, until it is unmapped.
    #[inline]
    pub(crate) unsafe fn map_type1(&self, vaddr: *mut u8, size: u64, iova: u64, access: DmaAccess) -> Result<u64> {
        let mut flags = 0;
        if access.contains(DmaAccess::READ) {
            flags |= sys::VFIO_DMA_MAP_FLAG_READ;
        }
        if access.contains(DmaAccess::WRITE) {
            flags |= sys::VFIO_DMA_MAP_FLAG_WRITE;
        }
        let mut map = sys::vfio_iommu_type1_dma_map {
            argsz: 0, // set by the call
            flags,
            vaddr: vaddr as u64,
            iova,
            size,
        };
        // SAFETY: the kernel pins `[vaddr, vaddr + size)` and lets devices reach it until it is
        // unmapped, which the caller guarantees is sound.
        unsafe { ioctl::call_unchecked::<req::IommuMapDma>(self.ioctl_fd(), &mut map) }
            .map_err(|e| self.dma_error::<req::IommuMapDma>(iova, size, e))?;
        Ok(iova)
    }

    /// The safe map ([`vfio_core::Container::map_dma`]) of the whole `buffer` at `iova`: by
    /// address on the type1 driver, by file on iommufd's compat container, pinned in user space
    /// without an IOMMU (see the module docs). Errors: Unsupported where the backend would pin
    /// the buffer lazily by address (an anonymous buffer on the compat container, a kernel
    /// without `IOMMU_IOAS_MAP_FILE`, a mediated device's group in a type1 container);
    /// InvalidArgument before any group joined; those of the map otherwise.
    #[inline]
    pub(crate) fn map_buffer(&self, buffer: &DmaBuffer, iova: u64, access: DmaAccess) -> Result<u64> {
        let size = buffer.len() as u64;
        if let Some(pins) = self.pins() {
            let how = PinHow {
                page: buffer.backing().page(),
                dontfork: !buffer.backing().is_file(),
            };
            return pins.pin(buffer.as_ptr(), size, iova, how, || self.dma_target(iova, size));
        }
        match self.safe_path()? {
            SafePath::Type1 if !self.dma.emulated.load(Ordering::Relaxed) => {
                // SAFETY: the type1 driver pins the pages at map time (the container has an
                // IOMMU domain: its path resolved, so a group joined and VFIO_SET_IOMMU attached
                // it, and no emulated group is in it) and holds them until the unmap or until
                // the last IOMMU group leaves (which unmaps everything): the device reaches
                // those pages only, even if `buffer` is freed first. The buffer hands out no
                // references into its memory.
                unsafe { self.map_type1(buffer.as_ptr(), size, iova, access) }
            }
            SafePath::Type1 => Err(self.emulated_refusal(iova, size)),
            SafePath::Compat(ioas) => self.map_compat_file(buffer, ioas, iova, access),
        }
    }

    /// Which way the safe map goes, learned once (one ioctl) at the first safe map.
    #[inline]
    pub(crate) fn safe_path(&self) -> Result<SafePath> {
        match self.dma.path.get() {
            Some(p) => Ok(*p),
            None => self.resolve_safe_path(),
        }
    }

    #[cold]
    #[inline(never)]
    fn resolve_safe_path(&self) -> Result<SafePath> {
        // IOMMU_VFIO_IOAS(GET) is an iommufd request: iommufd's compat container (an iommufd
        // behind /dev/vfio/vfio) answers with its compat IOAS; the type1 driver does not know
        // the number (ENOTTY); a container without an IOMMU driver yet refuses every request
        // it does not know (EINVAL).
        let mut v = iosys::iommu_vfio_ioas {
            op: iosys::IOMMU_VFIO_IOAS_GET as u16,
            ..Default::default()
        };
        let res = ioctl::call::<req::VfioIoas>(self.iommufd_fd(), &mut v);
        let path = match res {
            Ok(_) => SafePath::Compat(v.ioas_id),
            Err(Errno::NOTTY) => SafePath::Type1,
            Err(e) => {
                return Err(Error::invalid(
                    "DMA map",
                    self.target(),
                    format!(
                        "the container has no IOMMU yet (IOMMU_VFIO_IOAS: {e}): a group must join it \
                         first (assign a device, or add_group)"
                    ),
                ));
            }
        };
        // Under the state lock, so that a group joining meanwhile is either seen here or, once
        // the path is set, checked by `group_joined`.
        let state = self.lock();
        if path == SafePath::Type1 {
            for id in state.group_ids() {
                self.dma.note(&self.sysfs, id);
            }
            if self.dma.adopted.load(Ordering::Relaxed) && any_emulated_group(&self.sysfs) {
                self.dma.emulated.store(true, Ordering::Relaxed);
            }
        }
        let path = *self.dma.path.get_or_init(|| path);
        drop(state);
        Ok(path)
    }

    /// The container fd typed for iommufd requests: only `IOMMU_VFIO_IOAS` and
    /// `IOMMU_IOAS_MAP_FILE` are issued on it, the latter only once the former proved the fd an
    /// iommufd.
    #[inline]
    pub(crate) fn iommufd_fd(&self) -> ioctl::Fd<'_, kind::Iommufd> {
        let fd: BorrowedFd<'_> = self.ioctl_fd().borrow();
        // SAFETY: a container fd is either iommufd's compat container, which is an iommufd
        // (`iommufd_fops`: it takes every iommufd request), or a VFIO container, which answers
        // the iommufd request numbers (';' 0x80 and up, above every VFIO request) with ENOTTY
        // (the type1 driver's default) or EINVAL (no IOMMU driver yet) without acting on them.
        unsafe { ioctl::Fd::new_unchecked(fd) }
    }

    /// `IOMMU_IOAS_MAP_FILE` of the buffer's memfd into the compat IOAS at a fixed IOVA.
    fn map_compat_file(&self, buffer: &DmaBuffer, ioas: u32, iova: u64, access: DmaAccess) -> Result<u64> {
        let size = buffer.len() as u64;
        let fd = vfio_core::dma::require_memfd(buffer, || self.dma_target(iova, size), "iommufd's compat container")?;
        let mut flags = iosys::IOMMU_IOAS_MAP_FIXED_IOVA;
        if access.contains(DmaAccess::READ) {
            flags |= iosys::IOMMU_IOAS_MAP_READABLE;
        }
        if access.contains(DmaAccess::WRITE) {
            flags |= iosys::IOMMU_IOAS_MAP_WRITEABLE;
        }
        let mut m = iosys::iommu_ioas_map_file {
            flags,
            ioas_id: ioas,
            fd: fd.as_raw_fd(),
            start: 0,
            length: size,
            iova,
            ..Default::default()
        };
        // SAFETY: the argument holds no pointer, and no process memory is made reachable: the
        // IOAS takes a reference on the memfd and reaches its pages only, whoever frees the
        // buffer's mapping first. The fd is the compat container's iommufd (resolved above).
        let res = unsafe { ioctl::call_unchecked::<req::IoasMapFile>(self.iommufd_fd(), &mut m) };
        match res {
            Ok(_) => Ok(iova),
            Err(e @ (Errno::NOTTY | Errno::OPNOTSUPP)) => Err(Error::unsupported(
                "safe DMA mapping",
                self.dma_target(iova, size),
                format!(
                    "iommufd's compat container pins memory mapped by address lazily (while no device \
                     fd is open), so a borrowed buffer is mapped by file, and the kernel refused \
                     IOMMU_IOAS_MAP_FILE ({e}; Linux >= 6.13): use OwnedDmaMapping or DmaPool (they own \
                     their memory), or the unsafe map_dma_raw"
                ),
            )),
            Err(e) => Err(self.dma_error::<req::IoasMapFile>(iova, size, e)),
        }
    }

    #[cold]
    #[inline(never)]
    fn emulated_refusal(&self, iova: u64, size: u64) -> Error {
        Error::unsupported(
            "safe DMA mapping",
            self.dma_target(iova, size),
            "a mediated device's group (emulated IOMMU) joined this type1 container (or, for a container \
             adopted from an fd, existed on the machine when it first mapped): the type1 driver pins for such groups lazily, by address \
             (and unpins back to that when the last IOMMU group leaves), so a leaked guard could let \
             the device reach memory reused later: use OwnedDmaMapping or DmaPool (they own their \
             memory), or the unsafe map_dma_raw",
        )
    }

    /// How errors name a DMA range: the container and the range.
    pub(crate) fn dma_target(&self, iova: u64, size: u64) -> String {
        format!("{} iova {iova:#x} size {size:#x}", self.target())
    }

    /// The error of a refused map or unmap, built out of line: the fast path stays small.
    #[cold]
    #[inline(never)]
    fn dma_error<R: Request>(&self, iova: u64, size: u64, errno: Errno) -> Error {
        let err = ioctl::kernel_error::<R>(self.dma_target(iova, size), errno);
        // A refused map: type1's mapping limit (ENOSPC), RLIMIT_MEMLOCK (ENOMEM).
        // (By name: VFIO reuses request numbers between fd kinds.)
        let backend = match R::NAME {
            n if n == req::IommuMapDma::NAME => MapBackend::Container,
            n if n == req::IoasMapFile::NAME => MapBackend::Iommufd,
            _ => return err,
        };
        explain_map_refusal(err, backend, &self.sysfs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg_attr(miri, ignore = "creates files, which Miri isolates")]
    fn mediated_device_groups_are_told_from_noiommu_and_iommu_groups() {
        let root = std::env::temp_dir().join(format!("vfio-group-emulated-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let (sys, dev) = (root.join("sys"), root.join("dev"));
        for (id, name) in [(5, Some("vfio-noiommu")), (6, Some("vfio-noiommu")), (7, None)] {
            let dir = sys.join(format!("kernel/iommu_groups/{id}"));
            std::fs::create_dir_all(&dir).unwrap();
            if let Some(name) = name {
                std::fs::write(dir.join("name"), format!("{name}\n")).unwrap();
            }
        }
        std::fs::create_dir_all(dev.join("vfio")).unwrap();
        // 5: a mediated device's group (emulated IOMMU); 6: a no-IOMMU group; 7: a real one.
        for node in ["vfio", "5", "noiommu-6", "7"] {
            std::fs::write(dev.join("vfio").join(node), "").unwrap();
        }
        let sysfs = Sysfs::at(&sys, &dev);
        assert!(emulated_group(&sysfs, 5));
        assert!(!emulated_group(&sysfs, 6), "no-IOMMU groups are not mediated ones");
        assert!(!emulated_group(&sysfs, 7));
        assert!(any_emulated_group(&sysfs));
        std::fs::remove_file(dev.join("vfio/5")).unwrap();
        assert!(!any_emulated_group(&sysfs));
        let gate = DmaGate::default();
        gate.group_joined(&sysfs, 5);
        assert!(
            !gate.emulated.load(Ordering::Relaxed),
            "nothing read before the path resolves"
        );
        gate.path.set(SafePath::Type1).unwrap();
        gate.group_joined(&sysfs, 7);
        assert!(!gate.emulated.load(Ordering::Relaxed));
        std::fs::write(dev.join("vfio/5"), "").unwrap();
        gate.group_joined(&sysfs, 5);
        assert!(
            gate.emulated.load(Ordering::Relaxed),
            "sticky once a mediated group joined"
        );
        std::fs::remove_dir_all(root).unwrap();
    }
}
