//! A vIOMMU's mmap window (Linux >= 6.17): some vIOMMU types give the VMM a page of hardware (e.g.
//! a Tegra241 CMDQV VINTF page) to map into the guest, named by an offset and length of the
//! iommufd that `IOMMU_VIOMMU_ALLOC` writes back into its driver data. While it is mapped, the
//! kernel refuses to destroy the vIOMMU (EBUSY); the mapping holds the vIOMMU.

use std::os::fd::AsFd;
use std::ptr::NonNull;
use std::sync::Arc;

use vfio_core::{Error, Result};

use crate::Viommu;

/// A mapping of a vIOMMU's mmap window, from [`Viommu::mmap`]; unmapped on drop. It is device
/// memory: it is only reached through volatile, bounds-checked accesses.
#[derive(Debug)]
pub struct ViommuMapping {
    ptr: NonNull<u8>,
    len: usize,
    offset: u64,
    viommu: Arc<Viommu>,
}

// SAFETY: the mapping is a shared MMIO window owned by this value; it is only accessed through
// volatile reads and writes, which need no synchronisation beyond what the device defines.
unsafe impl Send for ViommuMapping {}
// SAFETY: as above: every access is a volatile read or write through `&self`.
unsafe impl Sync for ViommuMapping {}

impl Viommu {
    /// `mmap(2)` of the vIOMMU's window at `offset` of the iommufd, `len` bytes (the
    /// `out_mmap_offset`/`out_mmap_length` the driver wrote back into its [`crate::ViommuData`]).
    /// Errors: InvalidArgument for `len` 0; Kernel ENXIO when the range is not exactly the
    /// window (another offset, or a length other than the window's), EPERM/EINVAL from mmap.
    pub fn mmap(self: &Arc<Self>, offset: u64, len: u64) -> Result<ViommuMapping> {
        let target = || {
            format!(
                "{} viommu {} offset {offset:#x} length {len:#x}",
                self.iommufd().target(),
                self.id()
            )
        };
        let Some(len) = usize::try_from(len).ok().filter(|&l| l > 0) else {
            return Err(Error::invalid("mmap viommu", target(), "the length is 0 or too large"));
        };
        // SAFETY: a new shared mapping at an address the kernel chooses: it aliases no Rust
        // object, and is only reached through volatile accesses of ViommuMapping.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::SHARED,
                self.iommufd().as_fd(),
                offset,
            )
        }
        .map_err(|e| Error::kernel("mmap viommu", target(), e))?;
        log::debug!(target: "vfio", "mmap({}) = {ptr:?}", target());
        Ok(ViommuMapping {
            ptr: NonNull::new(ptr.cast()).expect("mmap never returns NULL on success"),
            len,
            offset,
            viommu: self.clone(),
        })
    }
}

impl ViommuMapping {
    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a mapping has at least one byte.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The iommufd offset it maps.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The vIOMMU it belongs to.
    pub fn viommu(&self) -> &Arc<Viommu> {
        &self.viommu
    }

    /// The start of the mapping, e.g. to map it into a guest with KVM.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    fn check(&self, offset: usize, width: usize) -> Result<()> {
        if offset % width != 0 || offset.checked_add(width).is_none_or(|end| end > self.len) {
            return Err(Error::invalid(
                "viommu mmap access",
                format!("viommu {} window of {:#x} bytes", self.viommu.id(), self.len),
                format!("{width}-byte access at {offset:#x} is unaligned or out of bounds"),
            ));
        }
        Ok(())
    }

    /// A volatile 32-bit read at `offset`. Errors: InvalidArgument when unaligned or out of bounds.
    pub fn read32(&self, offset: usize) -> Result<u32> {
        self.check(offset, 4)?;
        // SAFETY: offset is 4-aligned and inside the mapping (checked), which lives as long as self.
        Ok(unsafe { self.ptr.as_ptr().add(offset).cast::<u32>().read_volatile() })
    }

    /// A volatile 32-bit write at `offset`. Errors: InvalidArgument when unaligned or out of bounds.
    pub fn write32(&self, offset: usize, value: u32) -> Result<()> {
        self.check(offset, 4)?;
        // SAFETY: as read32; the mapping is writable (PROT_WRITE).
        unsafe { self.ptr.as_ptr().add(offset).cast::<u32>().write_volatile(value) };
        Ok(())
    }
}

impl Drop for ViommuMapping {
    fn drop(&mut self) {
        // SAFETY: ptr/len are exactly the mapping made in Viommu::mmap; no reference into it
        // outlives self (accesses copy values out).
        let res = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) };
        if let Err(e) = res {
            log::warn!(target: "vfio", "munmap of viommu {} window: {e}", self.viommu.id());
        }
    }
}
