//! `VFIO_DEVICE_IOEVENTFD` (Linux 4.17): the kernel writes a value into a BAR whenever an eventfd
//! is signalled, without a round trip through user space (a VMM's fast path for doorbells).

use std::os::fd::{AsRawFd, BorrowedFd};

use vfio_sys as sys;

use crate::ioctl::{self, requests as req};
use crate::{Device, RegionInfo, Result};

/// The value an ioeventfd writes, and so its width: a single access of 1, 2, 4 or 8 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IoValue {
    /// A 1-byte write.
    U8(u8),
    /// A 2-byte write.
    U16(u16),
    /// A 4-byte write.
    U32(u32),
    /// An 8-byte write (refused by kernels built without `iowrite64`).
    U64(u64),
}

impl IoValue {
    /// The access width in bytes.
    pub fn width(self) -> u32 {
        match self {
            IoValue::U8(_) => 1,
            IoValue::U16(_) => 2,
            IoValue::U32(_) => 4,
            IoValue::U64(_) => 8,
        }
    }

    fn data(self) -> u64 {
        match self {
            IoValue::U8(v) => v.into(),
            IoValue::U16(v) => v.into(),
            IoValue::U32(v) => v.into(),
            IoValue::U64(v) => v,
        }
    }

    fn flag(self) -> u32 {
        match self {
            IoValue::U8(_) => sys::VFIO_DEVICE_IOEVENTFD_8,
            IoValue::U16(_) => sys::VFIO_DEVICE_IOEVENTFD_16,
            IoValue::U32(_) => sys::VFIO_DEVICE_IOEVENTFD_32,
            IoValue::U64(_) => sys::VFIO_DEVICE_IOEVENTFD_64,
        }
    }
}

/// An ioeventfd registered with the kernel: while it lives, signalling its eventfd makes the
/// kernel write its value at its place in the BAR. Removed on drop (a failure is logged at warn
/// level) or with [`Ioeventfd::remove`], which returns the kernel's answer. Closing the device
/// removes every ioeventfd too; the kernel holds its own reference to the eventfd meanwhile.
#[derive(Debug)]
#[must_use = "the ioeventfd is removed when this value is dropped"]
pub struct Ioeventfd {
    device: Device,
    region: u32,
    offset: u64,
    file_offset: u64,
    value: IoValue,
    removed: bool,
}

impl Device {
    /// `VFIO_DEVICE_IOEVENTFD`: makes the kernel write `value` at `offset` in `region` (a BAR)
    /// whenever `eventfd` is signalled. vfio-pci takes up to 1000 per device. Errors:
    /// InvalidArgument, before the kernel is asked, for an access past the region's end; EINVAL
    /// (Kernel) for a region that is not a BAR, an access overlapping the MSI-X table, or an
    /// 8-byte write the kernel cannot do; EEXIST, said so in the error, when the same offset,
    /// width and value are registered already (the same place with another value is a second,
    /// separate ioeventfd); ENOSPC past the limit; ENOTTY on devices without ioeventfds.
    #[doc(alias = "VFIO_DEVICE_IOEVENTFD")]
    pub fn add_ioeventfd(
        &self,
        region: &RegionInfo,
        offset: u64,
        value: IoValue,
        eventfd: BorrowedFd<'_>,
    ) -> Result<Ioeventfd> {
        let file_offset = region.file_offset("ioeventfd", self.name(), offset, value.width() as usize)?;
        self.ioeventfd_raw(file_offset, value, eventfd.as_raw_fd())
            .map_err(|e| {
                let mut target = self.ioeventfd_target(region.index, offset, value);
                if e == crate::Errno::EXIST {
                    target.push_str(
                        " (EEXIST: an ioeventfd with this offset, width and value is registered on the \
                         device already; remove it first)",
                    );
                }
                ioctl::kernel_error::<req::DeviceIoeventfd>(target, e)
            })?;
        Ok(Ioeventfd {
            device: self.clone(),
            region: region.index,
            offset,
            file_offset,
            value,
            removed: false,
        })
    }

    fn ioeventfd_raw(&self, file_offset: u64, value: IoValue, fd: i32) -> std::result::Result<(), crate::Errno> {
        let mut arg = sys::vfio_device_ioeventfd {
            flags: value.flag(),
            offset: file_offset,
            data: value.data(),
            fd,
            ..Default::default()
        };
        ioctl::call::<req::DeviceIoeventfd>(self.ioctl_fd(), &mut arg).map(drop)
    }

    #[cold]
    fn ioeventfd_target(&self, region: u32, offset: u64, value: IoValue) -> String {
        format!(
            "{} region {region} offset {offset:#x} ({}-byte write of {:#x})",
            self.name(),
            value.width(),
            value.data()
        )
    }
}

impl Ioeventfd {
    /// The region, offset and value it writes.
    pub fn target(&self) -> (u32, u64, IoValue) {
        (self.region, self.offset, self.value)
    }

    /// `VFIO_DEVICE_IOEVENTFD` with fd -1: removes the registration. Errors: ENODEV (Kernel)
    /// when the kernel no longer has it (e.g. after a device reset re-created the device state).
    #[doc(alias = "VFIO_DEVICE_IOEVENTFD")]
    pub fn remove(mut self) -> Result<()> {
        self.removed = true;
        self.unregister()
    }

    fn unregister(&self) -> Result<()> {
        self.device
            .ioeventfd_raw(self.file_offset, self.value, -1)
            .map_err(|e| {
                ioctl::kernel_error::<req::DeviceIoeventfd>(
                    self.device.ioeventfd_target(self.region, self.offset, self.value),
                    e,
                )
            })
    }
}

impl Drop for Ioeventfd {
    fn drop(&mut self) {
        if !self.removed {
            if let Err(e) = self.unregister() {
                log::warn!(target: "vfio", "ioeventfd not removed on drop: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    #[test]
    fn values_carry_their_width() {
        assert_eq!(IoValue::U8(0xab).width(), 1);
        assert_eq!(IoValue::U16(1).flag(), sys::VFIO_DEVICE_IOEVENTFD_16);
        assert_eq!(IoValue::U32(0xdead_beef).data(), 0xdead_beef);
        assert_eq!(IoValue::U64(u64::MAX).flag(), sys::VFIO_DEVICE_IOEVENTFD_64);
    }

    #[test]
    #[cfg_attr(miri, ignore = "memfd_create and ioctl, which Miri cannot run")]
    fn past_the_region_is_refused_before_the_kernel() {
        let fd = rustix::fs::memfd_create("dev", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        let dev = Device::from_fd(fd, "0000:00:03.0", None);
        let region = RegionInfo {
            index: 0,
            flags: crate::RegionFlags::READ | crate::RegionFlags::WRITE,
            size: 0x100,
            offset: 0,
            caps: Vec::new(),
        };
        let e = crate::EventFd::new().unwrap();
        let err = dev
            .add_ioeventfd(&region, 0xfe, IoValue::U32(1), std::os::fd::AsFd::as_fd(&e))
            .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
        // Inside the region a memfd answers the ioctl with ENOTTY, named by the request.
        let err = dev
            .add_ioeventfd(&region, 0x4, IoValue::U32(1), std::os::fd::AsFd::as_fd(&e))
            .unwrap_err();
        assert_eq!(err.errno(), Some(crate::Errno::NOTTY));
        assert!(
            err.to_string()
                .contains("VFIO_DEVICE_IOEVENTFD on 0000:00:03.0 region 0 offset 0x4"),
            "{err}"
        );
    }
}
