//! Hardware page tables (HWPT): an IOMMU domain allocated explicitly from an IOAS for one device's
//! IOMMU ([`crate::Iommufd::alloc_hwpt`]), so it can carry flags an auto-created domain does not
//! (dirty tracking, nesting parent).

use std::sync::Arc;

use iommufd_sys as sys;
use vfio_core::ioctl::{self, Request, requests as req};
use vfio_core::{Errno, Error, Result};
use zerocopy::{Immutable, IntoBytes};

use crate::object::Object;
use crate::{DeviceId, FaultId, FaultQueue, HwptId, IoasId, Iommufd, ObjectId, refused};

/// Flags of [`Iommufd::alloc_hwpt`] (`enum iommufd_hwpt_alloc_flags`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HwptFlags {
    /// `IOMMU_HWPT_ALLOC_DIRTY_TRACKING`: the domain can track DMA writes; attaching a device
    /// whose IOMMU cannot is refused.
    pub dirty_tracking: bool,
    /// `IOMMU_HWPT_ALLOC_NEST_PARENT`: the domain may be the stage-2 parent of nested domains.
    pub nest_parent: bool,
    /// `IOMMU_HWPT_ALLOC_PASID` (Linux >= 6.15): the domain can be attached to a PASID of a
    /// device (and, while PASIDs are attached, the device's RID must be on such a domain too).
    pub pasid: bool,
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
        if self.pasid {
            f |= sys::IOMMU_HWPT_ALLOC_PASID;
        }
        f
    }
}

/// Driver data of `IOMMU_HWPT_ALLOC`: the uapi struct of HWPT data type
/// [`HwptData::DATA_TYPE`] (`enum iommu_hwpt_data_type`), e.g. a VT-d stage-1 page table
/// description for a nested HWPT. The kernel copies `size_of::<Self>()` bytes of it.
///
/// # Safety
/// `Self` lays out the uapi struct of `DATA_TYPE`, and the kernel follows no user pointer inside
/// it (addresses in it are guest addresses, translated through the nesting parent).
pub unsafe trait HwptData: IntoBytes + Immutable {
    /// The `data_type` of `IOMMU_HWPT_ALLOC`.
    const DATA_TYPE: u32;
}

// SAFETY: struct iommu_hwpt_vtd_s1, IOMMU_HWPT_DATA_VTD_S1; pgtbl_addr is a guest physical
// address the IOMMU walks through the stage-2 parent.
unsafe impl HwptData for sys::iommu_hwpt_vtd_s1 {
    const DATA_TYPE: u32 = sys::IOMMU_HWPT_DATA_VTD_S1;
}

// SAFETY: struct iommu_hwpt_arm_smmuv3, IOMMU_HWPT_DATA_ARM_SMMUV3: a guest STE, no user pointer.
unsafe impl HwptData for sys::iommu_hwpt_arm_smmuv3 {
    const DATA_TYPE: u32 = sys::IOMMU_HWPT_DATA_ARM_SMMUV3;
}

// SAFETY: struct iommu_hwpt_amd_guest, IOMMU_HWPT_DATA_AMD_GUEST: a guest DTE, no user pointer.
unsafe impl HwptData for sys::iommu_hwpt_amd_guest {
    const DATA_TYPE: u32 = sys::IOMMU_HWPT_DATA_AMD_GUEST;
}

impl Iommufd {
    /// `IOMMU_HWPT_ALLOC` with everything raw: the one place the ioctl is issued with data.
    /// Errors: Unsupported for EOPNOTSUPP/ENOTTY, else the kernel's errno (Kernel).
    pub(crate) fn hwpt_alloc_bytes(
        &self,
        dev: DeviceId,
        pt: ObjectId,
        flags: u32,
        fault: Option<FaultId>,
        data_type: u32,
        data: &[u8],
    ) -> Result<HwptId> {
        let (dev_id, pt_id) = (dev.get(), pt.get());
        let target = || {
            format!(
                "{} device {dev_id} pt {pt_id} flags {flags:#x} data type {data_type:#x} ({} bytes){}",
                self.target(),
                data.len(),
                fault.map(|f| format!(" fault {f}")).unwrap_or_default()
            )
        };
        let Ok(data_len) = u32::try_from(data.len()) else {
            return Err(Error::invalid(
                req::HwptAlloc::NAME,
                target(),
                "driver data above 4 GiB",
            ));
        };
        let mut a = sys::iommu_hwpt_alloc {
            flags: flags
                | if fault.is_some() {
                    sys::IOMMU_HWPT_FAULT_ID_VALID
                } else {
                    0
                },
            dev_id,
            pt_id,
            data_type,
            data_len,
            data_uptr: if data.is_empty() { 0 } else { data.as_ptr() as u64 },
            fault_id: fault.map_or(0, FaultId::get),
            ..Default::default()
        };
        // SAFETY: data_uptr is 0 (with data_len 0) or points at data_len readable bytes alive for
        // the call, which the kernel copies and does not keep. Whatever the data describes, the
        // domain translates only to what the IOAS under it maps, which its callers vouched for.
        let res = unsafe { ioctl::call_unchecked::<req::HwptAlloc>(self.ioctl_fd(), &mut a) };
        match res {
            Ok(_) => Ok(HwptId::from(a.out_hwpt_id)),
            Err(e @ (Errno::NOTTY | Errno::OPNOTSUPP)) => Err(Error::unsupported(req::HwptAlloc::NAME, target(), e)),
            Err(e) => Err(refused::<req::HwptAlloc>(target, e)),
        }
    }

    /// `IOMMU_HWPT_ALLOC` (Linux >= 6.7) of a paging HWPT over IOAS `ioas` for device `dev`, as
    /// [`Iommufd::alloc_hwpt`], with driver data `data` (e.g. a driver's page-table format) and,
    /// with `fault` (Linux >= 6.11, `IOMMU_HWPT_FAULT_ID_VALID`), I/O page faults of devices
    /// attached to it reported on that queue (the HWPT keeps the queue alive). Errors:
    /// Unsupported (EOPNOTSUPP) when the driver refuses the flags or data type, or `fault` with
    /// `nest_parent`; EINVAL for data the driver's type does not match in size, or `ioas` not an
    /// IOAS; ENOENT for an unknown device or fault queue.
    #[doc(alias = "IOMMU_HWPT_ALLOC", alias = "IOMMU_HWPT_FAULT_ID_VALID")]
    pub fn alloc_hwpt_with<D: HwptData>(
        self: &Arc<Self>,
        dev: DeviceId,
        ioas: IoasId,
        flags: HwptFlags,
        fault: Option<&Arc<FaultQueue>>,
        data: Option<&D>,
    ) -> Result<Hwpt> {
        let (ty, bytes) = data.map_or((sys::IOMMU_HWPT_DATA_NONE, &[][..]), |d| (D::DATA_TYPE, d.as_bytes()));
        self.alloc_hwpt_raw(dev, ioas, flags.raw(), fault, ty, bytes)
    }

    /// `IOMMU_HWPT_ALLOC` with raw flags (`enum iommufd_hwpt_alloc_flags`; `FAULT_ID_VALID` is
    /// set from `fault`), any page-table object `pt` (an IOAS, a paging HWPT for a nested one, a
    /// vIOMMU) and untyped driver data: for data types without a Rust type, and to see how the
    /// kernel answers odd requests. The HWPT is destroyed on drop; it keeps `fault` alive but not
    /// `pt` (drop it first). Errors: as [`Iommufd::alloc_hwpt_with`]; EINVAL for data with type
    /// NONE, a non-NONE type without data, or `pt` a nested HWPT or a device.
    #[doc(alias = "IOMMU_HWPT_ALLOC")]
    pub fn alloc_hwpt_raw(
        self: &Arc<Self>,
        dev: DeviceId,
        pt: impl Into<ObjectId>,
        flags: u32,
        fault: Option<&Arc<FaultQueue>>,
        data_type: u32,
        data: &[u8],
    ) -> Result<Hwpt> {
        let id = self.hwpt_alloc_bytes(dev, pt.into(), flags, fault.map(|f| f.id()), data_type, data)?;
        let mut hwpt = Hwpt::from_id(self.clone(), id);
        hwpt.fault = fault.cloned();
        Ok(hwpt)
    }
}

/// A HWPT, from [`Iommufd::alloc_hwpt`]; destroyed (`IOMMU_DESTROY`) on drop. Drop it before the
/// IOAS it came from (the kernel refuses to destroy an IOAS that still has HWPTs). A destroy
/// that fails on drop (EBUSY: a device is still attached to it) is logged (warn, target `vfio`)
/// with the HWPT and errno; [`Hwpt::destroy`] returns it instead.
#[derive(Debug)]
pub struct Hwpt {
    /// Destroys the HWPT (first, before the fault queue goes).
    object: Object,
    id: HwptId,
    /// The fault queue the HWPT reports to (`fault_id`), kept until the HWPT is destroyed.
    fault: Option<Arc<FaultQueue>>,
}

impl Hwpt {
    pub(crate) fn from_id(iommufd: Arc<Iommufd>, id: HwptId) -> Self {
        Hwpt {
            object: Object::new(iommufd, id, "hwpt"),
            id,
            fault: None,
        }
    }

    /// The fault queue faults of devices attached to the HWPT go to, if it was allocated with one.
    pub fn fault_queue(&self) -> Option<&Arc<FaultQueue>> {
        self.fault.as_ref()
    }

    /// `IOMMU_DESTROY` of the HWPT now, returning the kernel's answer instead of logging it as
    /// the drop does. Errors: EBUSY (Kernel) while a device is attached to it (the HWPT then
    /// stays, and nothing is retried on drop); ENOENT when it is gone already.
    #[doc(alias = "IOMMU_DESTROY")]
    pub fn destroy(self) -> Result<()> {
        self.object.destroy()
    }

    /// The object id (what `VFIO_DEVICE_ATTACH_IOMMUFD_PT` takes).
    pub fn id(&self) -> HwptId {
        self.id
    }

    /// The iommufd the HWPT lives in.
    pub fn iommufd(&self) -> &Arc<Iommufd> {
        self.object.iommufd()
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
        let res = ioctl::call::<req::HwptSetDirtyTracking>(self.iommufd().ioctl_fd(), &mut s);
        let target = || format!("{} hwpt {}", self.iommufd().target(), self.id);
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
                self.iommufd().target(),
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
        let res = unsafe { ioctl::call_unchecked::<req::HwptGetDirtyBitmap>(self.iommufd().ioctl_fd(), &mut g) };
        match res {
            Ok(_) => Ok(bitmap),
            Err(e @ Errno::OPNOTSUPP) => Err(Error::unsupported(req::HwptGetDirtyBitmap::NAME, target(), e)),
            Err(e) => Err(refused::<req::HwptGetDirtyBitmap>(target, e)),
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
