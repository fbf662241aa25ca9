//! One device register inside a mapped region, checked once: a driver's hot registers (an NVMe
//! doorbell, an interrupt acknowledge) then cost one volatile load or store per access, exactly
//! what a raw pointer costs, while the borrow keeps the mapping (and so the device) alive.

use std::marker::PhantomData;

use crate::{MappedRegion, Result};

mod sealed {
    pub trait Sealed {}
    impl Sealed for u8 {}
    impl Sealed for u16 {}
    impl Sealed for u32 {}
    impl Sealed for u64 {}
}

/// The widths a register can have: `u8`, `u16`, `u32`, `u64`. Sealed.
pub trait RegisterWidth: sealed::Sealed + Copy {}
impl RegisterWidth for u8 {}
impl RegisterWidth for u16 {}
impl RegisterWidth for u32 {}
impl RegisterWidth for u64 {}

/// A `T`-wide register at a fixed offset of a [`MappedRegion`], bounds- and alignment-checked
/// when made ([`MappedRegion::register`]); reads and writes are single volatile accesses of
/// width `T`, as MMIO needs, and cannot fail.
#[derive(Debug, Clone, Copy)]
pub struct Register<'a, T: RegisterWidth> {
    ptr: *mut T,
    _region: PhantomData<&'a MappedRegion>,
}

// SAFETY: a register is a fixed address inside a mapping borrowed for 'a; MappedRegion is Sync
// (every access is volatile and the device serializes them), so sharing or sending a handle to
// one of its registers is as safe as sharing the region.
unsafe impl<T: RegisterWidth> Send for Register<'_, T> {}
// SAFETY: as above.
unsafe impl<T: RegisterWidth> Sync for Register<'_, T> {}

impl<'a, T: RegisterWidth> Register<'a, T> {
    /// Volatile read of the register (no syscall).
    #[inline]
    pub fn read(&self) -> T {
        // SAFETY: `ptr` was checked to lie inside the mapping, aligned, when the handle was made,
        // and the borrow keeps the mapping alive.
        unsafe { self.ptr.read_volatile() }
    }

    /// Volatile write of the register (no syscall).
    #[inline]
    pub fn write(&self, value: T) {
        // SAFETY: as in `read`.
        unsafe { self.ptr.write_volatile(value) }
    }
}

impl MappedRegion {
    /// The `T`-wide register at `offset`, checked once here. Errors: InvalidArgument for an
    /// offset past the mapping or not aligned to `T`.
    #[inline]
    pub fn register<T: RegisterWidth>(&self, offset: u64) -> Result<Register<'_, T>> {
        Ok(Register {
            ptr: self.checked_ptr::<T>(offset)?,
            _region: PhantomData,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Device, Error, RegionFlags, RegionInfo};

    /// A memfd stands in for a device fd: `mmap` of a region reaches its bytes.
    #[test]
    #[cfg_attr(miri, ignore = "memfd_create and mmap, which Miri cannot run")]
    fn register_is_checked_once_then_reads_and_writes_the_mapping() {
        let fd = rustix::fs::memfd_create("register", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&fd, 0x2000).unwrap();
        let dev = Device::from_fd(fd, "0000:00:03.0", None);
        let region = RegionInfo {
            index: 0,
            flags: RegionFlags::READ | RegionFlags::WRITE | RegionFlags::MMAP,
            size: 0x1000,
            offset: 0x1000,
            caps: Vec::new(),
        };
        let map = MappedRegion::new(dev, &region, 0, 0x1000).unwrap();
        let doorbell = map.register::<u32>(0x100).unwrap();
        doorbell.write(0xdead_beef);
        assert_eq!(doorbell.read(), 0xdead_beef);
        assert_eq!(map.read32(0x100).unwrap(), 0xdead_beef);
        let wide = map.register::<u64>(0xff8).unwrap();
        wide.write(u64::MAX);
        assert_eq!(map.read64(0xff8).unwrap(), u64::MAX);
        for (e, what) in [
            (map.register::<u32>(0x1000).unwrap_err(), "past the end"),
            (map.register::<u64>(0x104).unwrap_err(), "aligned"),
        ] {
            assert!(matches!(e, Error::InvalidArgument { .. }), "{e:?}");
            assert!(e.to_string().contains(what), "{e}");
        }
    }
}
