//! `IOMMU_HWPT_INVALIDATE` (Linux >= 6.8; through a vIOMMU >= 6.13): flushes the caches of a
//! nested HWPT or of a vIOMMU with an array of driver-defined entries, and tells how many entries
//! the kernel handled, on failure too.

use std::fmt;

use iommufd_sys as sys;
use vfio_core::ioctl::{self, Request, requests as req};
use vfio_core::{Errno, Error, Result};
use zerocopy::{Immutable, IntoBytes};

use crate::{Iommufd, ObjectId, refused};

/// An entry of an `IOMMU_HWPT_INVALIDATE` array: the uapi struct of invalidation data type
/// [`InvalidationEntry::DATA_TYPE`] (`enum iommu_hwpt_invalidate_data_type`), as the driver of a
/// nested HWPT or vIOMMU takes it. The kernel reads `size_of::<Self>()` bytes per entry and
/// follows no pointer in them.
///
/// # Safety
/// `Self` lays out the uapi struct of `DATA_TYPE` exactly (its size is the entry length the
/// driver expects), and holds no user pointer the kernel would follow.
pub unsafe trait InvalidationEntry: IntoBytes + Immutable {
    /// The `data_type` of `IOMMU_HWPT_INVALIDATE`.
    const DATA_TYPE: u32;
}

// SAFETY: struct iommu_hwpt_vtd_s1_invalidate, IOMMU_HWPT_INVALIDATE_DATA_VTD_S1; addresses
// are IOVAs of the stage-1 table, not user pointers.
unsafe impl InvalidationEntry for sys::iommu_hwpt_vtd_s1_invalidate {
    const DATA_TYPE: u32 = sys::IOMMU_HWPT_INVALIDATE_DATA_VTD_S1;
}

// SAFETY: struct iommu_viommu_arm_smmuv3_invalidate, IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3:
// an SMMUv3 command, no user pointer.
unsafe impl InvalidationEntry for sys::iommu_viommu_arm_smmuv3_invalidate {
    const DATA_TYPE: u32 = sys::IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3;
}

/// The answer of `IOMMU_HWPT_INVALIDATE`: how many entries the kernel handled (from the start of
/// the array) and whether it handled them all. On failure `handled` is the count before the
/// entry it refused, the kernel's `entry_num` written back (0 when it refused the request as a
/// whole).
#[must_use = "an invalidation can fail part way: check `result`"]
#[derive(Debug)]
pub struct Invalidation {
    /// Entries handled, counted from the first.
    pub handled: u32,
    /// `Ok` when every entry was handled; else the kernel's refusal of entry `handled`.
    pub result: Result<()>,
}

impl Invalidation {
    /// `Ok(handled)` when every entry was handled, else the error (the count is dropped).
    pub fn ok(self) -> Result<u32> {
        self.result.map(|()| self.handled)
    }
}

impl fmt::Display for Invalidation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.result {
            Ok(()) => write!(f, "{} entries handled", self.handled),
            Err(e) => write!(f, "{} entries handled, then {e}", self.handled),
        }
    }
}

/// The largest `entry_num` the kernel takes (`1 << 19`); it refuses more with EINVAL.
pub const MAX_INVALIDATION_ENTRIES: u32 = 1 << 19;

impl Iommufd {
    /// `IOMMU_HWPT_INVALIDATE` of `target` (a nested HWPT or a vIOMMU) with typed entries; see
    /// [`crate::NestedHwpt::invalidate`] and [`crate::Viommu::invalidate`].
    pub(crate) fn invalidate<T: InvalidationEntry>(&self, target: ObjectId, entries: &[T]) -> Invalidation {
        let Ok(num) = u32::try_from(entries.len()) else {
            return Invalidation {
                handled: 0,
                result: Err(Error::invalid(
                    req::HwptInvalidate::NAME,
                    format!("{} object {target}", self.target()),
                    format!("{} entries: more than u32::MAX", entries.len()),
                )),
            };
        };
        self.invalidate_raw(target, T::DATA_TYPE, size_of::<T>() as u32, num, entries.as_bytes())
    }

    /// `IOMMU_HWPT_INVALIDATE` with an untyped array: `entry_num` entries of `entry_len` bytes
    /// each, of invalidation data type `data_type`, taken from `bytes` (for data types without a
    /// Rust type, and for probing how the kernel answers odd lengths). With `entry_num` 0 it
    /// probes whether the target takes `data_type` (Ok with 0 handled, or EINVAL).
    ///
    /// Errors (in `result`, with `handled` the count before the refused entry): InvalidArgument
    /// when `entry_len * entry_num` exceeds `bytes` (checked first: the kernel reads only
    /// `bytes`); Unsupported on kernels without the ioctl (ENOTTY); otherwise the kernel's errno:
    /// EINVAL for a target that is neither a nested HWPT nor a vIOMMU (a paging HWPT), an
    /// unknown data type, `entry_len` 0, above 4096 or not the driver's, more than
    /// [`MAX_INVALIDATION_ENTRIES`] entries, or an entry the driver refuses; EOPNOTSUPP for
    /// an entry with flags the driver does not know or a target without an invalidation op.
    #[doc(alias = "IOMMU_HWPT_INVALIDATE")]
    pub fn invalidate_raw(
        &self,
        target: impl Into<ObjectId>,
        data_type: u32,
        entry_len: u32,
        entry_num: u32,
        bytes: &[u8],
    ) -> Invalidation {
        let id = target.into().get();
        let target = || format!("{} object {id} data type {data_type:#x}", self.target());
        if u64::from(entry_len) * u64::from(entry_num) > bytes.len() as u64 {
            return Invalidation {
                handled: 0,
                result: Err(Error::invalid(
                    req::HwptInvalidate::NAME,
                    target(),
                    format!(
                        "{entry_num} entries of {entry_len} bytes do not fit in the {}-byte array",
                        bytes.len()
                    ),
                )),
            };
        }
        let mut inv = sys::iommu_hwpt_invalidate {
            hwpt_id: id,
            data_uptr: bytes.as_ptr() as u64,
            data_type,
            entry_len,
            entry_num,
            ..Default::default()
        };
        // SAFETY: data_uptr points at bytes.len() >= entry_len * entry_num readable bytes (checked
        // above), alive for the call; the kernel only reads them and keeps no reference.
        let res = unsafe { ioctl::call_unchecked::<req::HwptInvalidate>(self.ioctl_fd(), &mut inv) };
        // The kernel writes entry_num back on every path of its handler (done_num); only a
        // kernel without the ioctl (ENOTTY) leaves it as it was.
        let handled = inv.entry_num.min(entry_num);
        let (handled, result) = match res {
            Ok(_) => (handled, Ok(())),
            Err(e @ Errno::NOTTY) => (0, Err(Error::unsupported(req::HwptInvalidate::NAME, target(), e))),
            Err(e) => (handled, Err(refused::<req::HwptInvalidate>(target, e))),
        };
        Invalidation { handled, result }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg_attr(miri, ignore = "eventfd(2) and ioctl(2), which Miri cannot run")]
    fn a_short_array_is_refused_before_the_kernel_and_enotty_handles_nothing() {
        // An eventfd answers every iommufd request with ENOTTY.
        let fd = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).unwrap();
        let iommufd = Iommufd::from_fd(fd);
        let inv = iommufd.invalidate_raw(ObjectId::from(3), 7, 8, 2, &[0; 8]);
        assert_eq!(inv.handled, 0);
        assert!(matches!(inv.result, Err(Error::InvalidArgument { .. })), "{inv}");
        let inv = iommufd.invalidate_raw(ObjectId::from(3), 7, 8, 1, &[0; 8]);
        assert_eq!(inv.handled, 0, "ENOTTY left entry_num as it was: {inv}");
        assert!(matches!(inv.result, Err(Error::Unsupported { .. })), "{inv}");
        assert!(inv.ok().is_err());
    }
}
