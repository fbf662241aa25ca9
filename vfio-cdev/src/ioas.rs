//! An I/O address space (IOAS) inside an iommufd: the IOVA -> memory mappings that devices and
//! HWPTs attached to it use.

use std::sync::Arc;

use iommufd_sys as sys;
use vfio_core::{DmaAccess, Errno, Error, IovaRange, Result, ioctl};

use crate::Iommufd;

/// An IOAS; destroyed (`IOMMU_DESTROY`) on drop.
#[derive(Debug)]
pub struct Ioas {
    id: u32,
    iommufd: Arc<Iommufd>,
}

/// Where a mapping goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IovaPlacement {
    /// Exactly at this IOVA (`IOMMU_IOAS_MAP_FIXED_IOVA`).
    Fixed(u64),
    /// Wherever the kernel finds room inside the allowed ranges.
    Any,
}

impl Ioas {
    pub(crate) fn from_id(iommufd: Arc<Iommufd>, id: u32) -> Self {
        Ioas { id, iommufd }
    }

    /// The object id (what `VFIO_DEVICE_ATTACH_IOMMUFD_PT` takes).
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The iommufd the IOAS lives in.
    pub fn iommufd(&self) -> &Arc<Iommufd> {
        &self.iommufd
    }

    fn target(&self, iova: u64, len: u64) -> String {
        format!(
            "{} ioas {} iova {iova:#x} length {len:#x}",
            self.iommufd.target(),
            self.id
        )
    }

    /// `IOMMU_IOAS_MAP`: maps `len` bytes of process memory at `vaddr`; returns the IOVA.
    /// Errors: EEXIST when a fixed IOVA overlaps a mapping, EINVAL for unaligned or zero-length
    /// arguments, ENOSPC when no free range fits, ENOMEM past the pinned-memory limit.
    ///
    /// # Safety
    /// The memory must stay allocated, and unreached by Rust references while the device may
    /// access it, until the range is unmapped.
    pub unsafe fn map_raw(&self, vaddr: *mut u8, len: u64, at: IovaPlacement, access: DmaAccess) -> Result<u64> {
        let mut flags = 0;
        if access.contains(DmaAccess::READ) {
            flags |= sys::IOMMU_IOAS_MAP_READABLE;
        }
        if access.contains(DmaAccess::WRITE) {
            flags |= sys::IOMMU_IOAS_MAP_WRITEABLE;
        }
        let iova = match at {
            IovaPlacement::Fixed(iova) => {
                flags |= sys::IOMMU_IOAS_MAP_FIXED_IOVA;
                iova
            }
            IovaPlacement::Any => 0,
        };
        let mut m = sys::iommu_ioas_map {
            size: ioctl::argsz::<sys::iommu_ioas_map>(),
            flags,
            ioas_id: self.id,
            user_va: vaddr as u64,
            length: len,
            iova,
            ..Default::default()
        };
        // SAFETY: IOMMU_IOAS_MAP takes an iommu_ioas_map; the caller vouches for the memory.
        unsafe {
            self.iommufd
                .call("IOMMU_IOAS_MAP", || self.target(iova, len), sys::IOMMU_IOAS_MAP, &mut m)?
        };
        Ok(m.iova)
    }

    /// `IOMMU_IOAS_UNMAP`: removes whole mappings inside `[iova, iova + len)`; returns the bytes
    /// unmapped. Errors: ENOENT when nothing is mapped there, EINVAL when the range would
    /// split a mapping. `unmap(0, u64::MAX)` unmaps everything.
    pub fn unmap(&self, iova: u64, len: u64) -> Result<u64> {
        let mut u = sys::iommu_ioas_unmap {
            size: ioctl::argsz::<sys::iommu_ioas_unmap>(),
            ioas_id: self.id,
            iova,
            length: len,
        };
        // SAFETY: IOMMU_IOAS_UNMAP takes an iommu_ioas_unmap.
        unsafe {
            self.iommufd.call(
                "IOMMU_IOAS_UNMAP",
                || self.target(iova, len),
                sys::IOMMU_IOAS_UNMAP,
                &mut u,
            )?
        };
        Ok(u.length)
    }

    /// `IOMMU_IOAS_IOVA_RANGES` (two-call protocol: EMSGSIZE says how many ranges there are).
    pub fn iova_ranges(&self) -> Result<Vec<IovaRange>> {
        let mut ranges: Vec<sys::iommu_iova_range> = Vec::new();
        loop {
            let mut r = sys::iommu_ioas_iova_ranges {
                size: ioctl::argsz::<sys::iommu_ioas_iova_ranges>(),
                ioas_id: self.id,
                num_iovas: ranges.len() as u32,
                allowed_iovas: ranges.as_mut_ptr() as u64,
                ..Default::default()
            };
            // SAFETY: allowed_iovas points at num_iovas writable iommu_iova_range entries.
            let res = unsafe {
                ioctl::with_mut(
                    std::os::fd::AsFd::as_fd(&*self.iommufd),
                    sys::IOMMU_IOAS_IOVA_RANGES,
                    &mut r,
                )
            };
            match res {
                Ok(_) => {
                    ranges.truncate(r.num_iovas as usize);
                    return Ok(ranges
                        .iter()
                        .map(|r| IovaRange {
                            start: r.start,
                            last: r.last,
                        })
                        .collect());
                }
                Err(Errno::MSGSIZE) if (r.num_iovas as usize) > ranges.len() => {
                    ranges = vec![sys::iommu_iova_range::default(); r.num_iovas as usize];
                }
                Err(e) => {
                    return Err(Error::kernel(
                        "IOMMU_IOAS_IOVA_RANGES",
                        format!("{} ioas {}", self.iommufd.target(), self.id),
                        e,
                    ));
                }
            }
        }
    }

    /// `IOMMU_IOAS_NOIOMMU_GET_PA` (no-IOMMU cdev, kernels with `IOMMUFD_NOIOMMU`): the physical
    /// address behind `iova` and how many bytes from it are physically contiguous.
    pub fn noiommu_phys(&self, iova: u64, len: u64) -> Result<(u64, u64)> {
        let mut q = sys::iommu_ioas_noiommu_get_pa {
            size: ioctl::argsz::<sys::iommu_ioas_noiommu_get_pa>(),
            ioas_id: self.id,
            iova,
            length: len,
            ..Default::default()
        };
        // SAFETY: IOMMU_IOAS_NOIOMMU_GET_PA takes an iommu_ioas_noiommu_get_pa.
        unsafe {
            self.iommufd.call(
                "IOMMU_IOAS_NOIOMMU_GET_PA",
                || self.target(iova, len),
                sys::IOMMU_IOAS_NOIOMMU_GET_PA,
                &mut q,
            )?
        };
        Ok((q.out_phys, q.length))
    }
}

impl Drop for Ioas {
    fn drop(&mut self) {
        let _ = self.iommufd.destroy(self.id);
    }
}
