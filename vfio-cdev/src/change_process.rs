//! `IOMMU_IOAS_CHANGE_PROCESS`: a live iommufd handed to a new process.
//!
//! A driver that restarts (execs a new binary, or hands over to a fresh process) without
//! stopping DMA passes the iommufd, the IOAS ids and the device fds to its successor
//! (`vfio_core::fdpass`), and the successor calls [`Iommufd::change_process`] to take over the
//! accounting of the pinned pages. The mappings themselves never change: the IOMMU keeps
//! translating, so a device may keep DMA-ing through the whole handover. The recipe is in
//! `docs/restart.md`.

use vfio_core::ioctl::{self, Request, requests as req};
use vfio_core::{Errno, Error, Result};

use crate::Iommufd;

impl Iommufd {
    /// `IOMMU_IOAS_CHANGE_PROCESS` (Linux >= 6.13): moves the accounting of every page pinned
    /// by every IOAS of this iommufd to the calling process: `pinned_vm` (`VmPin` in
    /// `/proc/PID/status`) always, and `locked_vm` (`VmLck`) when the memory was mapped under
    /// per-process limits ([`Iommufd::set_rlimit_per_process`]`(true)`); per-user accounting is
    /// re-charged to the caller's user. The kernel charges the caller first (ENOMEM past its
    /// `RLIMIT_MEMLOCK`, and then nothing changed), then uncharges the old owner. Mappings,
    /// IOVAs and devices are untouched: DMA continues throughout. Called by the process that
    /// already owns the pages, it succeeds and changes nothing.
    ///
    /// Pages mapped by a process with `CAP_IPC_LOCK` are not accounted at all, so nothing of
    /// theirs moves (the call still succeeds).
    ///
    /// Only memory mapped by file ([`Ioas::map_file`](crate::Ioas::map_file) of a memfd) can
    /// move: a mapping by address names the old process's memory, which the new one does not
    /// have.
    ///
    /// Errors: Unsupported on kernels without the ioctl (ENOTTY, before 6.13); EINVAL (Kernel)
    /// when any mapping in any IOAS of the iommufd was made by address (`IOMMU_IOAS_MAP`,
    /// `IOMMU_IOAS_COPY`) or from a dma-buf, the message naming the fix; EBUSY while a map or
    /// unmap is under way in another thread; ENOMEM past the caller's locked-memory limit.
    /// Guest tests: `restart::restart_cdev_change_process` (edu, exec'd successor, VmPin/VmLck of
    /// both processes), `restart::change_process_with_a_non_file_mapping`.
    #[doc(alias = "IOMMU_IOAS_CHANGE_PROCESS")]
    pub fn change_process(&self) -> Result<()> {
        let mut c = iommufd_sys::iommu_ioas_change_process::default();
        match ioctl::call::<req::IoasChangeProcess>(self.ioctl_fd(), &mut c) {
            Ok(_) => Ok(()),
            Err(Errno::NOTTY) => Err(Error::unsupported(
                req::IoasChangeProcess::NAME,
                self.target(),
                "the kernel does not know IOMMU_IOAS_CHANGE_PROCESS (ENOTTY; needs Linux >= 6.13)",
            )),
            Err(Errno::INVAL) => Err(Error::kernel(
                req::IoasChangeProcess::NAME,
                format!(
                    "{} (a mapping in one of its IOASes is not file-backed: only pages mapped with \
                     IOMMU_IOAS_MAP_FILE can change process, one mapped by address (IOMMU_IOAS_MAP, \
                     IOMMU_IOAS_COPY, Ioas::map_raw, a borrowed DmaMapping of anonymous memory) or from \
                     a dma-buf cannot; unmap it and map the memory by file: Ioas::map_file with the \
                     memfd of a vfio_core::DmaBuffer::new, which is memfd-backed)",
                    self.target()
                ),
                Errno::INVAL,
            )),
            Err(e) => Err(crate::refused::<req::IoasChangeProcess>(|| self.target(), e)),
        }
    }
}
