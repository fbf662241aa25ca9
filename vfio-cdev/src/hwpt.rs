//! Hardware page tables (HWPT): an IOMMU domain allocated explicitly from an IOAS for one device's
//! IOMMU ([`crate::Iommufd::alloc_hwpt`]), so it can carry flags an auto-created domain does not
//! (dirty tracking, nesting parent).

use std::sync::Arc;

use iommufd_sys as sys;
use vfio_core::ioctl::{self, Request, requests as req};
use vfio_core::{Errno, Error, Result};

use crate::{HwptId, Iommufd, refused};

/// Flags of [`Iommufd::alloc_hwpt`] (`enum iommufd_hwpt_alloc_flags`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HwptFlags {
    /// `IOMMU_HWPT_ALLOC_DIRTY_TRACKING`: the domain can track DMA writes; attaching a device
    /// whose IOMMU cannot is refused.
    pub dirty_tracking: bool,
    /// `IOMMU_HWPT_ALLOC_NEST_PARENT`: the domain may be the stage-2 parent of nested domains.
    pub nest_parent: bool,
}

impl HwptFlags {
    pub(crate) fn raw(self) -> u32 {
        let mut f = 0;
        if self.dirty_tracking {
            f |= sys::IOMMU_HWPT_ALLOC_DIRTY_TRACKING;
        }
        if self.nest_parent {
            f |= sys::IOMMU_HWPT_ALLOC_NEST_PARENT;
        }
        f
    }
}

/// A HWPT, from [`Iommufd::alloc_hwpt`]; destroyed (`IOMMU_DESTROY`) on drop. Drop it before the
/// IOAS it came from (the kernel refuses to destroy an IOAS that still has HWPTs). A destroy
/// that fails on drop (EBUSY: a device is still attached to it) is logged (warn, target `vfio`)
/// with the HWPT and errno; [`Hwpt::destroy`] returns it instead.
#[derive(Debug)]
pub struct Hwpt {
    id: HwptId,
    iommufd: Arc<Iommufd>,
    /// Still to be destroyed on drop (cleared by [`Hwpt::destroy`]).
    live: bool,
}

impl Hwpt {
    pub(crate) fn from_id(iommufd: Arc<Iommufd>, id: HwptId) -> Self {
        Hwpt {
            id,
            iommufd,
            live: true,
        }
    }

    /// `IOMMU_DESTROY` of the HWPT now, returning the kernel's answer instead of logging it as
    /// the drop does. Errors: EBUSY (Kernel) while a device is attached to it (the HWPT then
    /// stays, and nothing is retried on drop); ENOENT when it is gone already.
    #[doc(alias = "IOMMU_DESTROY")]
    pub fn destroy(mut self) -> Result<()> {
        self.live = false;
        self.iommufd.destroy(self.id)
    }

    /// The object id (what `VFIO_DEVICE_ATTACH_IOMMUFD_PT` takes).
    pub fn id(&self) -> HwptId {
        self.id
    }

    /// The iommufd the HWPT lives in.
    pub fn iommufd(&self) -> &Arc<Iommufd> {
        &self.iommufd
    }

    /// `IOMMU_HWPT_SET_DIRTY_TRACKING` (Linux >= 6.7): starts or stops recording DMA writes.
    /// Errors: Unsupported (EOPNOTSUPP) for a HWPT allocated without dirty tracking.
    #[doc(alias = "IOMMU_HWPT_SET_DIRTY_TRACKING")]
    pub fn set_dirty_tracking(&self, enable: bool) -> Result<()> {
        let mut s = sys::iommu_hwpt_set_dirty_tracking {
            flags: if enable {
                sys::IOMMU_HWPT_DIRTY_TRACKING_ENABLE
            } else {
                0
            },
            hwpt_id: self.id.get(),
            ..Default::default()
        };
        let res = ioctl::call::<req::HwptSetDirtyTracking>(self.iommufd.ioctl_fd(), &mut s);
        let target = || format!("{} hwpt {}", self.iommufd.target(), self.id);
        match res {
            Ok(_) => Ok(()),
            Err(e @ Errno::OPNOTSUPP) => Err(Error::unsupported(req::HwptSetDirtyTracking::NAME, target(), e)),
            Err(e) => Err(refused::<req::HwptSetDirtyTracking>(target, e)),
        }
    }

    /// `IOMMU_HWPT_GET_DIRTY_BITMAP` (Linux >= 6.7): which `page_size` pages of
    /// `[iova, iova + len)` were written by DMA; bit `i` (word `i / 64`, bit `i % 64`) is the page
    /// at `iova + i * page_size`. With `clear` the dirty state is reset as it is read.
    /// Errors: InvalidArgument unless `page_size` is a power of two dividing `iova` and a
    /// non-zero `len`; EINVAL from the kernel for a range outside the mappings.
    #[doc(alias = "IOMMU_HWPT_GET_DIRTY_BITMAP")]
    pub fn dirty_bitmap(&self, iova: u64, len: u64, page_size: u64, clear: bool) -> Result<Vec<u64>> {
        let target = || {
            format!(
                "{} hwpt {} iova {iova:#x} length {len:#x}",
                self.iommufd.target(),
                self.id
            )
        };
        if !page_size.is_power_of_two() || len == 0 || iova % page_size != 0 || len % page_size != 0 {
            return Err(Error::invalid(
                req::HwptGetDirtyBitmap::NAME,
                target(),
                format!("page size {page_size:#x} must be a power of two dividing a non-zero range"),
            ));
        }
        let words = usize::try_from((len / page_size).div_ceil(64)).unwrap_or(usize::MAX);
        if words > 1 << 24 {
            return Err(Error::invalid(
                req::HwptGetDirtyBitmap::NAME,
                target(),
                "bitmap larger than 128 MiB",
            ));
        }
        let mut bitmap = vec![0u64; words];
        let mut g = sys::iommu_hwpt_get_dirty_bitmap {
            hwpt_id: self.id.get(),
            flags: if clear {
                0
            } else {
                sys::IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR
            },
            iova,
            length: len,
            page_size,
            data: bitmap.as_mut_ptr() as u64,
            ..Default::default()
        };
        // SAFETY: data points at ceil(len / page_size / 64) writable u64s, alive for the call:
        // one bit per page of the range, all the kernel writes.
        let res = unsafe { ioctl::call_unchecked::<req::HwptGetDirtyBitmap>(self.iommufd.ioctl_fd(), &mut g) };
        match res {
            Ok(_) => Ok(bitmap),
            Err(e @ Errno::OPNOTSUPP) => Err(Error::unsupported(req::HwptGetDirtyBitmap::NAME, target(), e)),
            Err(e) => Err(refused::<req::HwptGetDirtyBitmap>(target, e)),
        }
    }
}

impl Drop for Hwpt {
    fn drop(&mut self) {
        if self.live {
            if let Err(e) = self.iommufd.destroy(self.id) {
                log::warn!(target: "vfio", "dropping hwpt {} of {}: {e}", self.id, self.iommufd.target());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg_attr(miri, ignore = "eventfd(2) and ioctl(2), which Miri cannot run")]
    fn destroy_returns_the_error_and_drop_does_not_retry() {
        // An eventfd answers every iommufd request with ENOTTY.
        let fd = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).unwrap();
        let iommufd = Iommufd::from_fd(fd);
        let hwpt = Hwpt::from_id(iommufd.clone(), HwptId::from(7));
        let e = hwpt.destroy().unwrap_err();
        assert_eq!(e.errno(), Some(Errno::NOTTY));
        assert!(e.to_string().contains("object 7"), "{e}");
        // Dropping one logs the failure (see ioas.rs for the captured warning) and goes on.
        drop(Hwpt::from_id(iommufd, HwptId::from(8)));
    }
}
