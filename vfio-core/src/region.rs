//! Device regions (`VFIO_DEVICE_GET_REGION_INFO`): where in the device fd each region lives, and
//! `mmap(2)`ed views of them with volatile, bounds- and alignment-checked access.

use std::os::fd::AsFd;
use std::ptr::NonNull;

use bitflags::bitflags;
use vfio_sys as sys;

use crate::{Device, Error, Result, caps};

bitflags! {
    /// `vfio_region_info.flags`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct RegionFlags: u32 {
        /// The region can be read with pread.
        const READ = sys::VFIO_REGION_INFO_FLAG_READ;
        /// The region can be written with pwrite.
        const WRITE = sys::VFIO_REGION_INFO_FLAG_WRITE;
        /// The region (or its sparse areas) can be mmapped.
        const MMAP = sys::VFIO_REGION_INFO_FLAG_MMAP;
        /// The info carries a capability chain.
        const CAPS = sys::VFIO_REGION_INFO_FLAG_CAPS;
        const _ = !0;
    }
}

/// A capability of a region (`VFIO_REGION_INFO_CAP_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegionCap {
    /// Only these areas may be mmapped (for example, a BAR minus its MSI-X table).
    SparseMmap(Vec<SparseArea>),
    /// A device-specific region type (e.g. an IGD OpRegion, a GFX EDID region).
    Type {
        /// Region type (`VFIO_REGION_TYPE_*`, vendor types have bit 31 set).
        type_: u32,
        /// Subtype within the type.
        subtype: u32,
    },
    /// The MSI-X table inside this BAR may be mmapped (interrupt remapping protects it).
    MsixMappable,
    /// A capability this crate does not decode, kept whole (header included).
    Unknown {
        /// Capability id.
        id: u16,
        /// Capability version.
        version: u16,
        /// Its bytes.
        bytes: Vec<u8>,
    },
}

/// One mmappable area of a region, relative to the region's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SparseArea {
    /// Offset inside the region.
    pub offset: u64,
    /// Length in bytes.
    pub size: u64,
}

/// One region of a device: its index, flags, size, offset inside the device fd and capabilities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionInfo {
    /// Region index (for PCI: BAR0-5 = 0-5, ROM = 6, config = 7, VGA = 8).
    pub index: u32,
    /// What the region supports.
    pub flags: RegionFlags,
    /// Size in bytes; 0 for an unimplemented region (e.g. an absent BAR).
    pub size: u64,
    /// Offset of the region inside the device fd (for pread/pwrite/mmap).
    pub offset: u64,
    /// The capability chain.
    pub caps: Vec<RegionCap>,
}

impl RegionInfo {
    /// Decodes a whole `VFIO_DEVICE_GET_REGION_INFO` reply (the struct and its capability chain),
    /// checking every offset against the buffer.
    pub fn parse(reply: &[u8], target: &str) -> Result<Self> {
        const OP: &str = "VFIO_DEVICE_GET_REGION_INFO";
        let fixed = std::mem::size_of::<sys::vfio_region_info>();
        if reply.len() < fixed {
            return Err(Error::malformed(
                OP,
                target,
                format!("reply of {} bytes is shorter than vfio_region_info", reply.len()),
            ));
        }
        let flags = RegionFlags::from_bits_retain(caps::u32_at(reply, 4, OP, target)?);
        let first = if flags.contains(RegionFlags::CAPS) {
            caps::u32_at(reply, 12, OP, target)?
        } else {
            0
        };
        let size = caps::u64_at(reply, 16, OP, target)?;
        let offset = caps::u64_at(reply, 24, OP, target)?;
        if offset.checked_add(size).is_none() {
            return Err(Error::malformed(
                OP,
                target,
                format!("region of {size:#x} bytes at {offset:#x} runs past the device fd's last offset"),
            ));
        }
        let mut out = Vec::new();
        for cap in caps::parse(reply, fixed, first, OP, target)? {
            out.push(match cap.id as u32 {
                sys::VFIO_REGION_INFO_CAP_SPARSE_MMAP => {
                    let n = caps::u32_at(cap.bytes, 8, OP, target)? as usize;
                    let mut areas = Vec::with_capacity(n.min(64));
                    for i in 0..n {
                        let area = caps::u64_at(cap.bytes, 16 + 16 * i, OP, target)?;
                        let len = caps::u64_at(cap.bytes, 24 + 16 * i, OP, target)?;
                        if area.checked_add(len).is_none_or(|end| end > size) {
                            return Err(Error::malformed(
                                OP,
                                target,
                                format!(
                                    "sparse mmap area {i} ({area:#x}+{len:#x}) is outside the region of {size:#x} bytes"
                                ),
                            ));
                        }
                        areas.push(SparseArea {
                            offset: area,
                            size: len,
                        });
                    }
                    RegionCap::SparseMmap(areas)
                }
                sys::VFIO_REGION_INFO_CAP_TYPE => RegionCap::Type {
                    type_: caps::u32_at(cap.bytes, 8, OP, target)?,
                    subtype: caps::u32_at(cap.bytes, 12, OP, target)?,
                },
                sys::VFIO_REGION_INFO_CAP_MSIX_MAPPABLE => RegionCap::MsixMappable,
                _ => RegionCap::Unknown {
                    id: cap.id,
                    version: cap.version,
                    bytes: cap.bytes.to_vec(),
                },
            });
        }
        Ok(RegionInfo {
            index: caps::u32_at(reply, 8, OP, target)?,
            flags,
            size,
            offset,
            caps: out,
        })
    }

    /// The areas that may be mmapped: the sparse areas when the region has that capability, the
    /// whole region when it is mmappable without one, nothing otherwise.
    pub fn mmap_areas(&self) -> Vec<SparseArea> {
        if !self.flags.contains(RegionFlags::MMAP) || self.size == 0 {
            return Vec::new();
        }
        for cap in &self.caps {
            if let RegionCap::SparseMmap(areas) = cap {
                return areas.iter().copied().filter(|a| a.size > 0).collect();
            }
        }
        vec![SparseArea {
            offset: 0,
            size: self.size,
        }]
    }

    /// Whether the region has the MSI-X-mappable capability.
    pub fn msix_mappable(&self) -> bool {
        self.caps.contains(&RegionCap::MsixMappable)
    }

    /// Checks `[offset, offset + len)` lies inside the region; returns the device-fd offset.
    pub(crate) fn file_offset(&self, op: &'static str, dev: &str, offset: u64, len: usize) -> Result<u64> {
        // Checked twice: `self` may have been built by hand, not by `parse`.
        let end = offset.checked_add(len as u64);
        match (end, self.offset.checked_add(offset)) {
            (Some(end), Some(pos)) if end <= self.size => Ok(pos),
            _ => Err(Error::invalid(
                op,
                format!("{dev} region {}", self.index),
                format!(
                    "access of {len} bytes at {offset:#x} is outside the region of {:#x} bytes",
                    self.size
                ),
            )),
        }
    }
}

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
    pub(crate) fn checked_ptr<T>(&self, offset: usize) -> Result<*mut T> {
        self.check(offset)
    }

    #[inline]
    fn check<T>(&self, offset: usize) -> Result<*mut T> {
        let size = std::mem::size_of::<T>();
        if offset.checked_add(size).is_none_or(|end| end > self.len) || offset % size != 0 {
            return Err(self.access_error(offset, size));
        }
        // SAFETY: offset + size <= len, so the result stays inside the mapping.
        Ok(unsafe { self.ptr.as_ptr().add(offset) }.cast())
    }

    /// Copies `out.len()` bytes at `offset` out of the mapping with volatile loads, each the
    /// widest naturally aligned access (8, 4, 2 or 1 bytes) that fits: what MMIO registers and
    /// device memory expect, never a byte-wise `memcpy` the compiler may reshape. No syscall.
    /// Errors: InvalidArgument when the range passes the mapping's end.
    pub fn read_bytes(&self, offset: usize, out: &mut [u8]) -> Result<()> {
        self.check_range(offset, out.len())?;
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
    pub fn write_bytes(&self, offset: usize, data: &[u8]) -> Result<()> {
        self.check_range(offset, data.len())?;
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

    fn check_range(&self, offset: usize, len: usize) -> Result<()> {
        if offset.checked_add(len).is_none_or(|end| end > self.len) {
            return Err(Error::invalid(
                "MMIO copy",
                format!("{} region {}", self.device.name(), self.region),
                format!("{len} bytes at {offset:#x} exceed the {:#x}-byte mapping", self.len),
            ));
        }
        Ok(())
    }

    #[cold]
    #[inline(never)]
    fn access_error(&self, offset: usize, size: usize) -> Error {
        let target = format!("{} region {}", self.device.name(), self.region);
        if offset.checked_add(size).is_none_or(|end| end > self.len) {
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
    pub fn read8(&self, offset: usize) -> Result<u8> {
        let p = self.check::<u8>(offset)?;
        // SAFETY: p is inside the live mapping and aligned (checked).
        Ok(unsafe { p.read_volatile() })
    }

    /// Volatile 16-bit read at `offset` (2-byte aligned).
    /// No syscall. Errors: InvalidArgument for an access past the mapping or misaligned.
    #[inline]
    pub fn read16(&self, offset: usize) -> Result<u16> {
        let p = self.check::<u16>(offset)?;
        // SAFETY: p is inside the live mapping and aligned (checked).
        Ok(unsafe { p.read_volatile() })
    }

    /// Volatile 32-bit read at `offset` (4-byte aligned).
    /// No syscall. Errors: InvalidArgument for an access past the mapping or misaligned.
    #[inline]
    pub fn read32(&self, offset: usize) -> Result<u32> {
        let p = self.check::<u32>(offset)?;
        // SAFETY: p is inside the live mapping and aligned (checked).
        Ok(unsafe { p.read_volatile() })
    }

    /// Volatile 64-bit read at `offset` (8-byte aligned).
    /// No syscall. Errors: InvalidArgument for an access past the mapping or misaligned.
    #[inline]
    pub fn read64(&self, offset: usize) -> Result<u64> {
        let p = self.check::<u64>(offset)?;
        // SAFETY: p is inside the live mapping and aligned (checked).
        Ok(unsafe { p.read_volatile() })
    }

    /// Volatile 8-bit write at `offset`.
    /// No syscall. Errors: InvalidArgument for an access past the mapping or misaligned.
    #[inline]
    pub fn write8(&self, offset: usize, value: u8) -> Result<()> {
        let p = self.check::<u8>(offset)?;
        // SAFETY: p is inside the live mapping and aligned (checked).
        unsafe { p.write_volatile(value) };
        Ok(())
    }

    /// Volatile 16-bit write at `offset` (2-byte aligned).
    /// No syscall. Errors: InvalidArgument for an access past the mapping or misaligned.
    #[inline]
    pub fn write16(&self, offset: usize, value: u16) -> Result<()> {
        let p = self.check::<u16>(offset)?;
        // SAFETY: p is inside the live mapping and aligned (checked).
        unsafe { p.write_volatile(value) };
        Ok(())
    }

    /// Volatile 32-bit write at `offset` (4-byte aligned).
    /// No syscall. Errors: InvalidArgument for an access past the mapping or misaligned.
    #[inline]
    pub fn write32(&self, offset: usize, value: u32) -> Result<()> {
        let p = self.check::<u32>(offset)?;
        // SAFETY: p is inside the live mapping and aligned (checked).
        unsafe { p.write_volatile(value) };
        Ok(())
    }

    /// Volatile 64-bit write at `offset` (8-byte aligned).
    /// No syscall. Errors: InvalidArgument for an access past the mapping or misaligned.
    #[inline]
    pub fn write64(&self, offset: usize, value: u64) -> Result<()> {
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
        log::debug!(target: "vfio", "munmap({} region {}, {:#x} bytes) = {res:?}", self.device.name(), self.region, self.len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_bounds() {
        let r = RegionInfo {
            index: 0,
            flags: RegionFlags::READ,
            size: 0x100,
            offset: 0x1000,
            caps: vec![],
        };
        assert_eq!(r.file_offset("t", "dev", 0xfc, 4).unwrap(), 0x10fc);
        assert!(r.file_offset("t", "dev", 0xfd, 4).is_err());
        assert!(r.file_offset("t", "dev", u64::MAX, 2).is_err());
    }

    fn reply(flags: u32, caps: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        let argsz = 32 + caps.len() as u32;
        for w in [argsz, flags, 0, if caps.is_empty() { 0 } else { 32 }] {
            v.extend(w.to_ne_bytes());
        }
        v.extend(0x4000u64.to_ne_bytes());
        v.extend(0x10000u64.to_ne_bytes());
        v.extend(caps);
        v
    }

    fn cap(id: u16, next: u32, body: &[u8]) -> Vec<u8> {
        let mut v = id.to_ne_bytes().to_vec();
        v.extend(1u16.to_ne_bytes());
        v.extend(next.to_ne_bytes());
        v.extend(body);
        v
    }

    #[test]
    fn parses_sparse_mmap_and_unknown_caps() {
        let mut body = 2u32.to_ne_bytes().to_vec();
        body.extend(0u32.to_ne_bytes());
        for (o, s) in [(0u64, 0x1000u64), (0x3000, 0x1000)] {
            body.extend(o.to_ne_bytes());
            body.extend(s.to_ne_bytes());
        }
        let mut caps = cap(1, 32 + 8 + body.len() as u32, &body);
        caps.extend(cap(99, 0, &[7, 7, 7, 7]));
        let flags = sys::VFIO_REGION_INFO_FLAG_MMAP | sys::VFIO_REGION_INFO_FLAG_CAPS | sys::VFIO_REGION_INFO_FLAG_READ;
        let r = RegionInfo::parse(&reply(flags, &caps), "dev").unwrap();
        assert_eq!(r.size, 0x4000);
        assert_eq!(
            r.mmap_areas(),
            vec![
                SparseArea {
                    offset: 0,
                    size: 0x1000
                },
                SparseArea {
                    offset: 0x3000,
                    size: 0x1000
                }
            ]
        );
        assert!(matches!(&r.caps[1], RegionCap::Unknown { id: 99, bytes, .. } if bytes.len() == 12));
        assert!(!r.msix_mappable());
    }

    #[test]
    fn parses_region_type_and_msix_mappable() {
        // A vendor region type (e.g. igd's OpRegion: type 0x80008086, subtype 1) chained to the
        // MSI-X mappable capability, which has no body.
        let mut body = 0x8000_8086u32.to_ne_bytes().to_vec();
        body.extend(1u32.to_ne_bytes());
        let type_id = sys::VFIO_REGION_INFO_CAP_TYPE as u16;
        let msix_id = sys::VFIO_REGION_INFO_CAP_MSIX_MAPPABLE as u16;
        let mut caps = cap(type_id, 32 + 8 + body.len() as u32, &body);
        caps.extend(cap(msix_id, 0, &[]));
        let flags = sys::VFIO_REGION_INFO_FLAG_CAPS | sys::VFIO_REGION_INFO_FLAG_READ;
        let r = RegionInfo::parse(&reply(flags, &caps), "dev").unwrap();
        assert_eq!(
            r.caps,
            vec![
                RegionCap::Type {
                    type_: 0x8000_8086,
                    subtype: 1
                },
                RegionCap::MsixMappable
            ]
        );
        assert!(r.msix_mappable());
        // A type capability cut short (no subtype) is malformed, not read past its end.
        let short = cap(type_id, 0, &0x8000_8086u32.to_ne_bytes());
        let e = RegionInfo::parse(&reply(flags, &short), "dev").unwrap_err();
        assert!(matches!(e, Error::Malformed { .. }), "{e}");
    }

    #[test]
    fn sparse_count_beyond_the_buffer_is_malformed() {
        let mut body = 1000u32.to_ne_bytes().to_vec();
        body.extend(0u32.to_ne_bytes());
        let caps = cap(1, 0, &body);
        let flags = sys::VFIO_REGION_INFO_FLAG_MMAP | sys::VFIO_REGION_INFO_FLAG_CAPS;
        let e = RegionInfo::parse(&reply(flags, &caps), "dev").unwrap_err();
        assert!(matches!(e, Error::Malformed { .. }), "{e}");
        assert!(RegionInfo::parse(&[0u8; 8], "dev").is_err());
    }

    #[test]
    fn region_past_the_last_fd_offset_is_malformed() {
        // Found by the region_caps fuzz target: such a region made `file_offset` overflow.
        let mut r = reply(sys::VFIO_REGION_INFO_FLAG_READ, &[]);
        r[24..32].copy_from_slice(&0x1000_0000_0000u64.to_ne_bytes());
        r[16..24].copy_from_slice(&(u64::MAX - 0xfff).to_ne_bytes());
        let e = RegionInfo::parse(&r, "dev").unwrap_err();
        assert!(matches!(e, Error::Malformed { .. }), "{e}");
        let hand_made = RegionInfo {
            index: 0,
            flags: RegionFlags::READ,
            size: 0x100,
            offset: u64::MAX - 0x10,
            caps: vec![],
        };
        assert!(hand_made.file_offset("t", "dev", 0x20, 4).is_err());
    }

    #[test]
    fn sparse_area_outside_the_region_is_malformed() {
        // Found by the region_caps fuzz target: such an area was only refused at mmap time.
        for (o, s) in [(0x3000u64, 0x2000u64), (u64::MAX, 2)] {
            let mut body = 1u32.to_ne_bytes().to_vec();
            body.extend(0u32.to_ne_bytes());
            body.extend(o.to_ne_bytes());
            body.extend(s.to_ne_bytes());
            let flags = sys::VFIO_REGION_INFO_FLAG_MMAP | sys::VFIO_REGION_INFO_FLAG_CAPS;
            let e = RegionInfo::parse(&reply(flags, &cap(1, 0, &body)), "dev").unwrap_err();
            assert!(e.to_string().contains("outside the region of 0x4000 bytes"), "{e}");
        }
    }

    #[test]
    fn whole_region_without_caps() {
        let r = RegionInfo::parse(&reply(sys::VFIO_REGION_INFO_FLAG_MMAP, &[]), "dev").unwrap();
        assert_eq!(
            r.mmap_areas(),
            vec![SparseArea {
                offset: 0,
                size: 0x4000
            }]
        );
    }
}
