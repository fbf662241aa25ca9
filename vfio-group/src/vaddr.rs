//! type1's `VFIO_UPDATE_VADDR`: a live container handed to a new process.
//!
//! The type1 driver pins every mapped page at map time and remembers the process address
//! (`vaddr`) it came from, and the process whose locked memory pays for it. A driver that
//! restarts without stopping DMA invalidates the vaddr of each mapping
//! ([`Container::invalidate_vaddr`]), hands the container, group and device fds to its
//! successor (`vfio_core::fdpass`, with the memfd the memory lives in), and the successor maps
//! the same memory and gives each mapping its new address ([`Container::update_vaddr`]), which
//! also moves the locked-memory accounting to it. The IOMMU page tables are never touched: the
//! device keeps DMA-ing into the same pinned pages throughout. The recipe is in
//! `docs/restart.md`.
//!
//! # What the kernel does while a vaddr is invalid (Linux 7.3, `vfio_iommu_type1.c`)
//! - The IOMMU mappings and the pins stay as they are: DMA by the device continues, nothing
//!   faults, nothing blocks.
//! - The kernel's own users of the address are refused: a group joining the container
//!   (`VFIO_GROUP_SET_CONTAINER`) is EBUSY, and pinning or copying for a mediated device is
//!   EBUSY with a one-time kernel warning (which is why the extension reads 0 while one is in
//!   the container). Kernels 5.12 to 6.1 (mainline) made those users wait for the update instead.
//! - `VFIO_IOMMU_UNMAP_DMA` of the range works as usual (by IOVA): the pages are unpinned and
//!   uncharged from the process that owns the accounting (if it still exists).

use vfio_core::ioctl::{self, Request, requests as req};
use vfio_core::{Errno, Error, Result};
use vfio_sys as sys;

use crate::{Backend, Container};

impl Container {
    /// `VFIO_CHECK_EXTENSION(VFIO_UPDATE_VADDR)` (Linux >= 5.12): whether
    /// [`invalidate_vaddr`](Container::invalidate_vaddr) and
    /// [`update_vaddr`](Container::update_vaddr) work here. The type1 driver says yes only once
    /// it is set (a group joined: `VFIO_SET_IOMMU`) and while no mediated device's group is in
    /// the container; iommufd's compat container always says no (its equivalent is the cdev
    /// mode's `IOMMU_IOAS_CHANGE_PROCESS`); a no-IOMMU container has no mappings to update
    /// (false, no ioctl). Errors: the kernel's errno.
    #[doc(alias = "VFIO_CHECK_EXTENSION", alias = "VFIO_UPDATE_VADDR")]
    pub fn supports_update_vaddr(&self) -> Result<bool> {
        if self.pins().is_some() {
            return Ok(false);
        }
        self.check_extension_raw(sys::VFIO_UPDATE_VADDR)
    }

    /// `VFIO_IOMMU_UNMAP_DMA` with `VFIO_DMA_UNMAP_FLAG_VADDR` (Linux >= 5.12): forgets the
    /// process address of every mapping inside `[iova, iova + size)` without unmapping
    /// anything; returns the bytes of the mappings invalidated. The device keeps reaching the
    /// same pinned pages, so the caller may unmap or reuse its own address range: this is safe.
    /// Until [`update_vaddr`](Container::update_vaddr) gives each mapping an address again, the
    /// kernel refuses a group joining this container (EBUSY; see the module docs).
    ///
    /// Errors: Unsupported when [`supports_update_vaddr`](Container::supports_update_vaddr) is
    /// false (iommufd's compat container, no group yet, a mediated device, no-IOMMU), saying
    /// which; EINVAL (Kernel) when a mapping in the range is invalidated already (then none of
    /// the range is: the kernel restores those it had marked) or the range splits a mapping
    /// (type1v2); ENOENT when no mapping is in the range.
    #[doc(alias = "VFIO_IOMMU_UNMAP_DMA", alias = "VFIO_DMA_UNMAP_FLAG_VADDR")]
    pub fn invalidate_vaddr(&self, iova: u64, size: u64) -> Result<u64> {
        self.require_update_vaddr("VFIO_DMA_UNMAP_FLAG_VADDR", iova, size)?;
        let mut unmap = sys::vfio_iommu_type1_dma_unmap {
            flags: sys::VFIO_DMA_UNMAP_FLAG_VADDR,
            iova,
            size,
            ..Default::default()
        };
        ioctl::call::<req::IommuUnmapDma>(self.ioctl_fd(), &mut unmap)
            .map_err(|e| ioctl::kernel_error::<req::IommuUnmapDma>(self.vaddr_target(iova, size), e))?;
        if unmap.size == 0 && size > 0 {
            return Err(Error::kernel(
                req::IommuUnmapDma::NAME,
                format!(
                    "{} (VFIO_DMA_UNMAP_FLAG_VADDR: no mapping in the range)",
                    self.vaddr_target(iova, size)
                ),
                Errno::NOENT,
            ));
        }
        Ok(unmap.size)
    }

    /// `VFIO_IOMMU_MAP_DMA` with `VFIO_DMA_MAP_FLAG_VADDR` (Linux >= 5.12): gives the mapping at
    /// exactly `[iova, iova + size)`, invalidated before by
    /// [`invalidate_vaddr`](Container::invalidate_vaddr) (in this process or the one that
    /// handed the container over), its new address `vaddr` in the calling process, and moves
    /// the mapping's locked-memory accounting (`VmLck`, checked against the caller's
    /// `RLIMIT_MEMLOCK` unless it has `CAP_IPC_LOCK`) from the old owner to the caller. The
    /// kernel changes no page: it does not look at `vaddr` now (the pages stay those pinned at
    /// the original map), it uses it later.
    ///
    /// Errors: Unsupported as for [`invalidate_vaddr`](Container::invalidate_vaddr); ENOENT
    /// when nothing is mapped at `iova`; EINVAL (Kernel) when the mapping there is not
    /// invalidated, does not start at `iova` or is not exactly `size` bytes long, or for
    /// unaligned arguments; ENOMEM past the caller's locked-memory limit (the mapping stays
    /// invalidated and owned by the old process). Guest tests: `restart::restart_type1_update_vaddr`
    /// (edu, exec'd successor, each refusal above), `restart::update_vaddr_refused_where_not_offered`.
    ///
    /// # Safety
    /// `[vaddr, vaddr + size)` must map, in the calling process, the very memory the mapping
    /// was created with (the same pages in the same order: the same memfd at the same offset,
    /// mapped shared), and keep doing so until the range is unmapped or invalidated again. The
    /// kernel trusts the address: it pins through it for an IOMMU domain added later (a group
    /// joining the container), and copies or pins through it for a mediated device, so other
    /// memory there would be made reachable by the device, or the device and the kernel would
    /// disagree about the pages behind the IOVA.
    #[doc(alias = "VFIO_IOMMU_MAP_DMA", alias = "VFIO_DMA_MAP_FLAG_VADDR")]
    pub unsafe fn update_vaddr(&self, iova: u64, size: u64, vaddr: *mut u8) -> Result<()> {
        self.require_update_vaddr("VFIO_DMA_MAP_FLAG_VADDR", iova, size)?;
        let mut map = sys::vfio_iommu_type1_dma_map {
            argsz: 0, // set by the call
            flags: sys::VFIO_DMA_MAP_FLAG_VADDR,
            vaddr: vaddr as u64,
            iova,
            size,
        };
        // SAFETY: no page is pinned or mapped by this call; the address the kernel records for
        // later pins maps the mapping's own memory, which the caller guarantees.
        unsafe { ioctl::call_unchecked::<req::IommuMapDma>(self.ioctl_fd(), &mut map) }
            .map_err(|e| ioctl::kernel_error::<req::IommuMapDma>(self.vaddr_target(iova, size), e))?;
        Ok(())
    }

    fn vaddr_target(&self, iova: u64, size: u64) -> String {
        self.dma_target(iova, size)
    }

    /// Unsupported, saying why, unless the container offers `VFIO_UPDATE_VADDR`.
    fn require_update_vaddr(&self, feature: &'static str, iova: u64, size: u64) -> Result<()> {
        if self.supports_update_vaddr()? {
            return Ok(());
        }
        let why = if self.pins().is_some() {
            "a no-IOMMU container maps nothing (no IOMMU, no IOVA space)"
        } else {
            // VFIO_IOMMU_GET_INFO tells the backends apart, and fails before VFIO_SET_IOMMU.
            match self.backend() {
                Ok(Backend::IommufdCompat) => {
                    "VFIO_CHECK_EXTENSION(VFIO_UPDATE_VADDR) is 0: iommufd's compat container does not \
                     implement it; open the device in cdev mode and hand the iommufd over with \
                     IOMMU_IOAS_CHANGE_PROCESS (vfio_cdev::Iommufd::change_process) instead"
                }
                Err(_) => {
                    "VFIO_CHECK_EXTENSION(VFIO_UPDATE_VADDR) is 0: the type1 driver offers it only once a \
                     group joined the container (VFIO_SET_IOMMU)"
                }
                Ok(_) => {
                    "VFIO_CHECK_EXTENSION(VFIO_UPDATE_VADDR) is 0: a mediated device's group is in the \
                     container (the type1 driver could not pin for it while an address is invalid), or the \
                     kernel is older than 5.12"
                }
            }
        };
        Err(Error::unsupported(feature, self.dma_target(iova, size), why))
    }
}
