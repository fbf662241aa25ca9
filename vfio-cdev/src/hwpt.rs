//! Hardware page tables (HWPT): an IOMMU domain allocated explicitly from an IOAS for one device's
//! IOMMU, so it can carry flags an auto-created domain does not (dirty tracking, nesting parent).
//! Also `IOMMU_GET_HW_INFO`, which says what the device's IOMMU can do before allocating one.

use std::sync::Arc;

use iommufd_sys as sys;
use vfio_core::{Errno, Error, Result, ioctl};

use crate::Iommufd;

/// Flags of [`Hwpt::alloc`] (`enum iommufd_hwpt_alloc_flags`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HwptFlags {
    /// `IOMMU_HWPT_ALLOC_DIRTY_TRACKING`: the domain can track DMA writes; attaching a device
    /// whose IOMMU cannot is refused.
    pub dirty_tracking: bool,
    /// `IOMMU_HWPT_ALLOC_NEST_PARENT`: the domain may be the stage-2 parent of nested domains.
    pub nest_parent: bool,
}

impl HwptFlags {
    fn raw(self) -> u32 {
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

/// What `IOMMU_GET_HW_INFO` reports about the IOMMU behind a bound device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HwInfo {
    /// `enum iommu_hw_info_type` of `data` (0 when the driver reports none).
    pub data_type: u32,
    /// The driver-specific info (e.g. `struct iommu_hw_info_vtd`), as the kernel wrote it.
    pub data: Vec<u8>,
    /// `enum iommufd_hw_capabilities` bits.
    pub capabilities: u64,
    /// Width of PASIDs; 0 without PASID support.
    pub max_pasid_log2: u8,
}

impl HwInfo {
    /// Whether the IOMMU can track DMA writes (`IOMMU_HW_CAP_DIRTY_TRACKING`), i.e. a
    /// [`HwptFlags::dirty_tracking`] HWPT can be allocated for this device.
    pub fn dirty_tracking(&self) -> bool {
        self.capabilities & u64::from(sys::IOMMU_HW_CAP_DIRTY_TRACKING) != 0
    }
}

impl Iommufd {
    /// `IOMMU_GET_HW_INFO` (Linux >= 6.7) for device `dev_id` (a [`crate::BoundDevice::devid`]),
    /// with up to 256 bytes of driver-specific data. Errors: ENOENT for an unknown device;
    /// Unsupported on kernels without the ioctl (ENOTTY) or a driver without info (EOPNOTSUPP).
    pub fn hw_info(&self, dev_id: u32) -> Result<HwInfo> {
        let mut data = vec![0u8; 256];
        let mut h = sys::iommu_hw_info {
            size: ioctl::argsz::<sys::iommu_hw_info>(),
            dev_id,
            data_len: data.len() as u32,
            data_uptr: data.as_mut_ptr() as u64,
            ..Default::default()
        };
        // SAFETY: IOMMU_GET_HW_INFO takes an iommu_hw_info; data_uptr points at data_len writable
        // bytes that outlive the call.
        let res = unsafe { ioctl::with_mut(std::os::fd::AsFd::as_fd(self), sys::IOMMU_GET_HW_INFO, &mut h) };
        let target = || format!("{} device {dev_id}", self.target());
        match res {
            Ok(_) => {}
            Err(e @ (Errno::NOTTY | Errno::OPNOTSUPP)) => {
                return Err(Error::unsupported("IOMMU_GET_HW_INFO", target(), e));
            }
            Err(e) => return Err(Error::kernel("IOMMU_GET_HW_INFO", target(), e)),
        }
        data.truncate((h.data_len as usize).min(data.len()));
        // SAFETY: both union members are a u32; the kernel wrote out_data_type.
        let data_type = unsafe { h.__bindgen_anon_1.out_data_type };
        Ok(HwInfo {
            data_type,
            data,
            capabilities: h.out_capabilities,
            max_pasid_log2: h.out_max_pasid_log2,
        })
    }
}

/// A HWPT; destroyed (`IOMMU_DESTROY`) on drop. Drop it before the IOAS it came from (the
/// kernel refuses to destroy an IOAS that still has HWPTs).
#[derive(Debug)]
pub struct Hwpt {
    id: u32,
    iommufd: Arc<Iommufd>,
}

impl Hwpt {
    /// `IOMMU_HWPT_ALLOC` (Linux >= 6.7; dirty tracking >= 6.7, nest parent >= 6.7): a paging
    /// domain for device `dev_id`'s IOMMU holding the mappings of IOAS `pt_id` (kept in sync with
    /// it). Attach devices to [`Hwpt::id`]. Errors: Unsupported when the IOMMU cannot honour the
    /// flags (EOPNOTSUPP) or the kernel lacks the ioctl (ENOTTY); ENOENT for an unknown device,
    /// EINVAL for a `pt_id` that is not an IOAS of this iommufd.
    pub fn alloc(iommufd: &Arc<Iommufd>, dev_id: u32, pt_id: u32, flags: HwptFlags) -> Result<Self> {
        let mut a = sys::iommu_hwpt_alloc {
            size: ioctl::argsz::<sys::iommu_hwpt_alloc>(),
            flags: flags.raw(),
            dev_id,
            pt_id,
            ..Default::default()
        };
        // SAFETY: IOMMU_HWPT_ALLOC takes an iommu_hwpt_alloc; no driver data (data_uptr 0).
        let res = unsafe { ioctl::with_mut(std::os::fd::AsFd::as_fd(&**iommufd), sys::IOMMU_HWPT_ALLOC, &mut a) };
        let target = || format!("{} device {dev_id} pt {pt_id} {flags:?}", iommufd.target());
        match res {
            Ok(_) => Ok(Hwpt {
                id: a.out_hwpt_id,
                iommufd: iommufd.clone(),
            }),
            Err(e @ (Errno::NOTTY | Errno::OPNOTSUPP)) => Err(Error::unsupported("IOMMU_HWPT_ALLOC", target(), e)),
            Err(e) => Err(Error::kernel("IOMMU_HWPT_ALLOC", target(), e)),
        }
    }

    /// The object id (what `VFIO_DEVICE_ATTACH_IOMMUFD_PT` takes).
    pub fn id(&self) -> u32 {
        self.id
    }

    /// `IOMMU_HWPT_SET_DIRTY_TRACKING` (Linux >= 6.7): starts or stops recording DMA writes.
    /// Errors: Unsupported (EOPNOTSUPP) for a HWPT allocated without dirty tracking.
    pub fn set_dirty_tracking(&self, enable: bool) -> Result<()> {
        let mut s = sys::iommu_hwpt_set_dirty_tracking {
            size: ioctl::argsz::<sys::iommu_hwpt_set_dirty_tracking>(),
            flags: if enable {
                sys::IOMMU_HWPT_DIRTY_TRACKING_ENABLE
            } else {
                0
            },
            hwpt_id: self.id,
            ..Default::default()
        };
        // SAFETY: IOMMU_HWPT_SET_DIRTY_TRACKING takes an iommu_hwpt_set_dirty_tracking.
        let res = unsafe {
            ioctl::with_mut(
                std::os::fd::AsFd::as_fd(&*self.iommufd),
                sys::IOMMU_HWPT_SET_DIRTY_TRACKING,
                &mut s,
            )
        };
        let target = || format!("{} hwpt {}", self.iommufd.target(), self.id);
        match res {
            Ok(_) => Ok(()),
            Err(e @ Errno::OPNOTSUPP) => Err(Error::unsupported("IOMMU_HWPT_SET_DIRTY_TRACKING", target(), e)),
            Err(e) => Err(Error::kernel("IOMMU_HWPT_SET_DIRTY_TRACKING", target(), e)),
        }
    }

    /// `IOMMU_HWPT_GET_DIRTY_BITMAP` (Linux >= 6.7): which `page_size` pages of
    /// `[iova, iova + len)` were written by DMA; bit `i` (word `i / 64`, bit `i % 64`) is the page
    /// at `iova + i * page_size`. With `clear` the dirty state is reset as it is read.
    /// Errors: InvalidArgument unless `page_size` is a power of two dividing `iova` and a
    /// non-zero `len`; EINVAL from the kernel for a range outside the mappings.
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
                "IOMMU_HWPT_GET_DIRTY_BITMAP",
                target(),
                format!("page size {page_size:#x} must be a power of two dividing a non-zero range"),
            ));
        }
        let words = usize::try_from((len / page_size).div_ceil(64)).unwrap_or(usize::MAX);
        if words > 1 << 24 {
            return Err(Error::invalid(
                "IOMMU_HWPT_GET_DIRTY_BITMAP",
                target(),
                "bitmap larger than 128 MiB",
            ));
        }
        let mut bitmap = vec![0u64; words];
        let mut g = sys::iommu_hwpt_get_dirty_bitmap {
            size: ioctl::argsz::<sys::iommu_hwpt_get_dirty_bitmap>(),
            hwpt_id: self.id,
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
        // SAFETY: data points at ceil(len / page_size / 64) writable u64s, alive for the call.
        let res = unsafe {
            ioctl::with_mut(
                std::os::fd::AsFd::as_fd(&*self.iommufd),
                sys::IOMMU_HWPT_GET_DIRTY_BITMAP,
                &mut g,
            )
        };
        match res {
            Ok(_) => Ok(bitmap),
            Err(e @ Errno::OPNOTSUPP) => Err(Error::unsupported("IOMMU_HWPT_GET_DIRTY_BITMAP", target(), e)),
            Err(e) => Err(Error::kernel("IOMMU_HWPT_GET_DIRTY_BITMAP", target(), e)),
        }
    }
}

impl Drop for Hwpt {
    fn drop(&mut self) {
        let _ = self.iommufd.destroy(self.id);
    }
}
