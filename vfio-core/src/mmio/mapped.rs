//! [`MappedRegion`]: an `mmap(2)`ed view of (part of) a device region, with volatile, bounds- and
//! alignment-checked access.

use std::os::fd::AsFd;
use std::ptr::NonNull;

use crate::{Device, Error, RegionFlags, RegionInfo, Result};

/// An `mmap(2)` of (part of) a device region. Accesses are volatile, bounds- and
/// alignment-checked; the mapping is unmapped on drop and keeps its device open until then.
pub struct MappedRegion {
    ptr: NonNull<u8>,
    len: usize,
    region: u32,
    region_offset: u64,
    device: Device,
}

// SAFETY: the mapping is device memory reached only through volatile accesses; MMIO from several
// threads is as safe as the device makes it, and no Rust reference into it is ever handed out.
unsafe impl Send for MappedRegion {}
// SAFETY: as above; every access method takes &self and is a single volatile load or store.
unsafe impl Sync for MappedRegion {}

impl std::fmt::Debug for MappedRegion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MappedRegion")
            .field("device", &self.device.name())
            .field("region", &self.region)
            .field("len", &self.len)
            .finish()
    }
}

impl MappedRegion {
    /// `mmap(2)` of `len` bytes at `offset` inside `region` of `device` (both page aligned),
    /// shared and readable/writable as the region's flags allow; the mapping keeps the device
    /// open and is unmapped on drop. Errors: InvalidArgument for a range outside the region or
    /// not page aligned; Unsupported when the region has no MMAP flag; the errno of mmap
    /// (EINVAL when vfio-pci refuses the range, e.g. a sparse region's hole).
    pub fn new(device: Device, region: &RegionInfo, offset: u64, len: u64) -> Result<Self> {
        let target = || format!("{} region {}", device.name(), region.index);
        if !region.flags.contains(RegionFlags::MMAP) {
            return Err(Error::unsupported(
                "mmap",
                target(),
                "the region has no VFIO_REGION_INFO_FLAG_MMAP",
            ));
        }
        let pos = region.file_offset("mmap region", device.name(), offset, len as usize)?;
        if len == 0 {
            return Err(Error::invalid("mmap region", target(), "length is zero"));
        }
        let mut prot = rustix::mm::ProtFlags::empty();
        if region.flags.contains(RegionFlags::READ) {
            prot |= rustix::mm::ProtFlags::READ;
        }
        if region.flags.contains(RegionFlags::WRITE) {
            prot |= rustix::mm::ProtFlags::WRITE;
        }
        // SAFETY: a fresh shared mapping of the device fd at a kernel-chosen address; it aliases no
        // Rust object and is only reached through volatile accesses.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len as usize,
                prot,
                rustix::mm::MapFlags::SHARED,
                device.as_fd(),
                pos,
            )
        }
        .map_err(|e| {
            Error::kernel(
                "mmap region",
                format!("{} offset {offset:#x} length {len:#x}", target()),
                e,
            )
        })?;
        log::debug!(target: "vfio", "mmap({} offset {offset:#x}, {len:#x} bytes) = {ptr:p}", target());
        let ptr = NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| Error::malformed("mmap region", target(), "mmap returned NULL"))?;
        device.note_mapping(true);
        Ok(MappedRegion {
            ptr,
            len: len as usize,
            region: region.index,
            region_offset: offset,
            device,
        })
    }

    /// The mapping's length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty (never: zero-length maps are refused).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Where the mapping starts inside its region.
    pub fn region_offset(&self) -> u64 {
        self.region_offset
    }

    /// The index of the region it maps (for PCI: the BAR number).
    pub fn region(&self) -> u32 {
        self.region
    }

    /// The device the mapping belongs to.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The mapping's base address, for code that must hand it to something else (e.g. a raw
    /// benchmark). Access through it is the caller's responsibility.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The address of a `T` at `offset`, after the bounds and alignment checks. Inlined, so a
    /// constant offset leaves one comparison against the mapping's length on the fast path; the
    /// error is built out of line.
    #[inline]
    pub(crate) fn checked_ptr<T>(&self, offset: u64) -> Result<*mut T> {
        self.check(offset)
    }

    #[inline(always)]
    fn check<T>(&self, offset: u64) -> Result<*mut T> {
        let size = std::mem::size_of::<T>() as u64;
        if offset.checked_add(size).is_none_or(|end| end > self.len as u64) || offset % size != 0 {
            return Err(self.access_error(offset, size));
        }
        // SAFETY: offset + size <= len, so the result stays inside the mapping (and offset fits
        // a usize).
        Ok(unsafe { self.ptr.as_ptr().add(offset as usize) }.cast())
    }

    /// Copies `out.len()` bytes at `offset` out of the mapping with volatile loads, each the
    /// widest naturally aligned access (8, 4, 2 or 1 bytes) that fits: what MMIO registers and
    /// device memory expect, never a byte-wise `memcpy` the compiler may reshape. No syscall.
    /// Errors: InvalidArgument when the range passes the mapping's end.
    pub fn read_bytes(&self, offset: u64, out: &mut [u8]) -> Result<()> {
        let offset = self.check_range(offset, out.len())?;
        let mut done = 0;
        while done < out.len() {
            let at = offset + done;
            let n = Self::chunk(at, out.len() - done);
            // SAFETY: at + n <= len (checked above), aligned to n by `chunk`.
            let p = unsafe { self.ptr.as_ptr().add(at) };
            let dst = &mut out[done..done + n];
            // SAFETY: p is inside the mapping and n-aligned; only volatile loads touch it.
            unsafe {
                match n {
                    8 => dst.copy_from_slice(&p.cast::<u64>().read_volatile().to_ne_bytes()),
                    4 => dst.copy_from_slice(&p.cast::<u32>().read_volatile().to_ne_bytes()),
                    2 => dst.copy_from_slice(&p.cast::<u16>().read_volatile().to_ne_bytes()),
                    _ => dst[0] = p.read_volatile(),
                }
            }
            done += n;
        }
        Ok(())
    }

    /// Copies `data` into the mapping at `offset` with volatile stores, widest aligned first
    /// (see [`MappedRegion::read_bytes`]). Errors: InvalidArgument when the range passes the
    /// mapping's end.
    pub fn write_bytes(&self, offset: u64, data: &[u8]) -> Result<()> {
        let offset = self.check_range(offset, data.len())?;
        let mut done = 0;
        while done < data.len() {
            let at = offset + done;
            let n = Self::chunk(at, data.len() - done);
            let b = &data[done..done + n];
            // SAFETY: at + n <= len (checked above), aligned to n by `chunk`.
            let p = unsafe { self.ptr.as_ptr().add(at) };
            // SAFETY: p is inside the mapping and n-aligned; only volatile stores touch it.
            unsafe {
                match n {
                    8 => p
                        .cast::<u64>()
                        .write_volatile(u64::from_ne_bytes(b.try_into().unwrap_or_default())),
                    4 => p
                        .cast::<u32>()
                        .write_volatile(u32::from_ne_bytes(b.try_into().unwrap_or_default())),
                    2 => p
                        .cast::<u16>()
                        .write_volatile(u16::from_ne_bytes(b.try_into().unwrap_or_default())),
                    _ => p.write_volatile(b[0]),
                }
            }
            done += n;
        }
        Ok(())
    }

    /// The widest access (8, 4, 2, 1) aligned at `at` that fits in `left` bytes.
    fn chunk(at: usize, left: usize) -> usize {
        [8, 4, 2, 1]
            .into_iter()
            .find(|&n| at % n == 0 && n <= left)
            .unwrap_or(1)
    }

    /// Checks `[offset, offset + len)` lies inside the mapping; returns `offset` as a `usize`.
    fn check_range(&self, offset: u64, len: usize) -> Result<usize> {
        if offset.checked_add(len as u64).is_none_or(|end| end > self.len as u64) {
            return Err(Error::invalid(
                "MMIO copy",
                format!("{} region {}", self.device.name(), self.region),
                format!("{len} bytes at {offset:#x} exceed the {:#x}-byte mapping", self.len),
            ));
        }
        Ok(offset as usize)
    }

    #[cold]
    #[inline(never)]
    fn access_error(&self, offset: u64, size: u64) -> Error {
        let target = format!("{} region {}", self.device.name(), self.region);
        if offset.checked_add(size).is_none_or(|end| end > self.len as u64) {
            Error::invalid(
                "MMIO access",
                target,
                format!(
                    "{size}-byte access at {offset:#x} is past the end of the {:#x}-byte mapping",
                    self.len
                ),
            )
        } else {
            Error::invalid(
                "MMIO access",
                target,
                format!("{size}-byte access at {offset:#x} is not {size}-byte aligned"),
            )
        }
    }

    /// Volatile 8-bit read at `offset`.
    /// No syscall. Errors: InvalidArgument for an access past the mapping or misaligned.
    #[inline]
    pub fn read8(&self, offset: u64) -> Result<u8> {
        let p = self.check::<u8>(offset)?;
        // SAFETY: p is inside the live mapping and aligned (checked).
        Ok(unsafe { p.read_volatile() })
    }

    /// Volatile 16-bit read at `offset` (2-byte aligned).
    /// No syscall. Errors: InvalidArgument for an access past the mapping or misaligned.
    #[inline]
    pub fn read16(&self, offset: u64) -> Result<u16> {
        let p = self.check::<u16>(offset)?;
        // SAFETY: p is inside the live mapping and aligned (checked).
        Ok(unsafe { p.read_volatile() })
    }

    /// Volatile 32-bit read at `offset` (4-byte aligned).
    /// No syscall. Errors: InvalidArgument for an access past the mapping or misaligned.
    #[inline]
    pub fn read32(&self, offset: u64) -> Result<u32> {
        let p = self.check::<u32>(offset)?;
        // SAFETY: p is inside the live mapping and aligned (checked).
        Ok(unsafe { p.read_volatile() })
    }

    /// Volatile 64-bit read at `offset` (8-byte aligned).
    /// No syscall. Errors: InvalidArgument for an access past the mapping or misaligned.
    #[inline]
    pub fn read64(&self, offset: u64) -> Result<u64> {
        let p = self.check::<u64>(offset)?;
        // SAFETY: p is inside the live mapping and aligned (checked).
        Ok(unsafe { p.read_volatile() })
    }

    /// Volatile 8-bit write at `offset`.
    /// No syscall. Errors: InvalidArgument for an access past the mapping or misaligned.
    #[inline]
    pub fn write8(&self, offset: u64, value: u8) -> Result<()> {
        let p = self.check::<u8>(offset)?;
        // SAFETY: p is inside the live mapping and aligned (checked).
        unsafe { p.write_volatile(value) };
        Ok(())
    }

    /// Volatile 16-bit write at `offset` (2-byte aligned).
    /// No syscall. Errors: InvalidArgument for an access past the mapping or misaligned.
    #[inline]
    pub fn write16(&self, offset: u64, value: u16) -> Result<()> {
        let p = self.check::<u16>(offset)?;
        // SAFETY: p is inside the live mapping and aligned (checked).
        unsafe { p.write_volatile(value) };
        Ok(())
    }

    /// Volatile 32-bit write at `offset` (4-byte aligned).
    /// No syscall. Errors: InvalidArgument for an access past the mapping or misaligned.
    #[inline]
    pub fn write32(&self, offset: u64, value: u32) -> Result<()> {
        let p = self.check::<u32>(offset)?;
        // SAFETY: p is inside the live mapping and aligned (checked).
        unsafe { p.write_volatile(value) };
        Ok(())
    }

    /// Volatile 64-bit write at `offset` (8-byte aligned).
    /// No syscall. Errors: InvalidArgument for an access past the mapping or misaligned.
    #[inline]
    pub fn write64(&self, offset: u64, value: u64) -> Result<()> {
        let p = self.check::<u64>(offset)?;
        // SAFETY: p is inside the live mapping and aligned (checked).
        unsafe { p.write_volatile(value) };
        Ok(())
    }
}

impl Drop for MappedRegion {
    fn drop(&mut self) {
        // SAFETY: ptr/len are exactly the mapping made in `new`, and no reference into it exists.
        let res = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) };
        self.device.note_mapping(false);
        log::debug!(target: "vfio", "munmap({} region {}, {:#x} bytes) = {res:?}", self.device.name(), self.region, self.len);
    }
}
