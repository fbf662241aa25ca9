//! A VFIO device file descriptor, however it was obtained: `VFIO_GROUP_GET_DEVICE_FD` in group
//! mode, `open("/dev/vfio/devices/vfioN")` + `VFIO_DEVICE_BIND_IOMMUFD` in cdev mode, or adopted
//! from another process.

use std::any::Any;
use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use bitflags::bitflags;
use vfio_sys as sys;

use crate::irq::{IrqInfo, IrqSet};
use crate::region::{MappedRegion, RegionInfo};
use crate::{Error, Result, ioctl};

bitflags! {
    /// `vfio_device_info.flags`: what kind of device this is and what it supports.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct DeviceFlags: u32 {
        /// `VFIO_DEVICE_RESET` is supported.
        const RESET = sys::VFIO_DEVICE_FLAGS_RESET;
        /// A vfio-pci device.
        const PCI = sys::VFIO_DEVICE_FLAGS_PCI;
        /// A vfio-platform device.
        const PLATFORM = sys::VFIO_DEVICE_FLAGS_PLATFORM;
        /// A vfio-amba device.
        const AMBA = sys::VFIO_DEVICE_FLAGS_AMBA;
        /// A vfio-ccw device.
        const CCW = sys::VFIO_DEVICE_FLAGS_CCW;
        /// A vfio-ap device.
        const AP = sys::VFIO_DEVICE_FLAGS_AP;
        /// A vfio-fsl-mc device.
        const FSL_MC = sys::VFIO_DEVICE_FLAGS_FSL_MC;
        /// The info carries a capability chain.
        const CAPS = sys::VFIO_DEVICE_FLAGS_CAPS;
        /// A vfio-cdx device.
        const CDX = sys::VFIO_DEVICE_FLAGS_CDX;
        const _ = !0;
    }
}

/// What `VFIO_DEVICE_GET_INFO` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Device kind and features.
    pub flags: DeviceFlags,
    /// Number of region indexes (max index + 1).
    pub num_regions: u32,
    /// Number of IRQ indexes (max index + 1).
    pub num_irqs: u32,
}

/// Whatever must outlive the device fd: its group and container, or its IOAS and iommufd.
pub type Owner = Arc<dyn Any + Send + Sync>;

struct DeviceFd {
    // Field order is drop order: the device fd closes before the objects it depends on.
    fd: OwnedFd,
    name: String,
    _owner: Option<Owner>,
}

/// An open VFIO device. Cloning is cheap and shares the fd; the fd closes when the last clone and
/// the last [`MappedRegion`] of it are gone, and only then is its owner (group or IOAS) released,
/// so no drop order makes the kernel report the device busy.
#[derive(Clone)]
pub struct Device {
    inner: Arc<DeviceFd>,
}

impl fmt::Debug for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Device")
            .field("name", &self.inner.name)
            .field("fd", &self.inner.fd)
            .finish()
    }
}

impl AsFd for Device {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.fd.as_fd()
    }
}

impl Device {
    /// Adopts an open VFIO device fd (for example one received from another process).
    /// `name` is used in error messages; `owner` is kept alive until the fd is closed.
    pub fn from_fd(fd: OwnedFd, name: impl Into<String>, owner: Option<Owner>) -> Self {
        Device {
            inner: Arc::new(DeviceFd {
                fd,
                name: name.into(),
                _owner: owner,
            }),
        }
    }

    /// The name used in errors (normally the PCI address).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    fn ioctl_mut<T>(&self, op: &'static str, request: u32, arg: &mut T) -> Result<i32> {
        // SAFETY: every caller in this crate passes the uapi struct that `request` is defined
        // with, on a VFIO device fd, with argsz set to its size.
        unsafe { ioctl::with_mut(self.as_fd(), request, arg) }.map_err(|e| Error::kernel(op, self.name(), e))
    }

    /// `VFIO_DEVICE_GET_INFO`. Errors: the errno of the ioctl (EINVAL for a short argsz; ENODEV
    /// or EBADF after the device was released).
    pub fn info(&self) -> Result<DeviceInfo> {
        let mut info = sys::vfio_device_info {
            argsz: ioctl::argsz::<sys::vfio_device_info>(),
            ..Default::default()
        };
        self.ioctl_mut("VFIO_DEVICE_GET_INFO", sys::VFIO_DEVICE_GET_INFO, &mut info)?;
        Ok(DeviceInfo {
            flags: DeviceFlags::from_bits_retain(info.flags),
            num_regions: info.num_regions,
            num_irqs: info.num_irqs,
        })
    }

    /// `VFIO_DEVICE_GET_REGION_INFO` for region `index`. Errors: EINVAL for an index the device
    /// does not have.
    pub fn region_info(&self, index: u32) -> Result<RegionInfo> {
        let mut info = sys::vfio_region_info {
            argsz: ioctl::argsz::<sys::vfio_region_info>(),
            index,
            ..Default::default()
        };
        self.ioctl_mut(
            "VFIO_DEVICE_GET_REGION_INFO",
            sys::VFIO_DEVICE_GET_REGION_INFO,
            &mut info,
        )?;
        Ok(RegionInfo::from_sys(&info))
    }

    /// Reads `buf.len()` bytes at `offset` inside a region with `pread(2)`. An access past the
    /// region's end is refused before the kernel is asked; a short read is an error.
    pub fn read_region(&self, region: &RegionInfo, offset: u64, buf: &mut [u8]) -> Result<()> {
        let pos = region.file_offset("read region", self.name(), offset, buf.len())?;
        let n = rustix::io::pread(self.as_fd(), &mut *buf, pos)
            .map_err(|e| Error::kernel("pread region", self.region_target(region, offset), e))?;
        if n != buf.len() {
            return Err(Error::malformed(
                "pread region",
                self.region_target(region, offset),
                format!("short read: {n} of {} bytes", buf.len()),
            ));
        }
        Ok(())
    }

    /// Writes `buf` at `offset` inside a region with `pwrite(2)`; bounds checked as for reads.
    pub fn write_region(&self, region: &RegionInfo, offset: u64, buf: &[u8]) -> Result<()> {
        let pos = region.file_offset("write region", self.name(), offset, buf.len())?;
        let n = rustix::io::pwrite(self.as_fd(), buf, pos)
            .map_err(|e| Error::kernel("pwrite region", self.region_target(region, offset), e))?;
        if n != buf.len() {
            return Err(Error::malformed(
                "pwrite region",
                self.region_target(region, offset),
                format!("short write: {n} of {} bytes", buf.len()),
            ));
        }
        Ok(())
    }

    fn region_target(&self, region: &RegionInfo, offset: u64) -> String {
        format!("{} region {} offset {offset:#x}", self.name(), region.index)
    }

    /// Maps a whole region with `mmap(2)`. The mapping keeps the device open.
    /// Errors: Unsupported when the region has no MMAP flag; the errno of mmap otherwise.
    pub fn map_region(&self, region: &RegionInfo) -> Result<MappedRegion> {
        MappedRegion::new(self.clone(), region, 0, region.size)
    }

    /// `VFIO_DEVICE_GET_IRQ_INFO` for IRQ `index`.
    pub fn irq_info(&self, index: u32) -> Result<IrqInfo> {
        let mut info = sys::vfio_irq_info {
            argsz: ioctl::argsz::<sys::vfio_irq_info>(),
            index,
            ..Default::default()
        };
        self.ioctl_mut("VFIO_DEVICE_GET_IRQ_INFO", sys::VFIO_DEVICE_GET_IRQ_INFO, &mut info)?;
        Ok(IrqInfo::from_sys(&info))
    }

    /// `VFIO_DEVICE_SET_IRQS` with a prepared request (see [`IrqSet`]).
    pub fn set_irqs(&self, set: &IrqSet) -> Result<()> {
        let mut buf = set.to_bytes();
        // SAFETY: `buf` is a vfio_irq_set header followed by exactly the data its argsz and count
        // announce (built by IrqSet::to_bytes), 8-byte aligned.
        unsafe { ioctl::with_mut(self.as_fd(), sys::VFIO_DEVICE_SET_IRQS, &mut *buf.as_mut_ptr()) }.map_err(|e| {
            Error::kernel(
                "VFIO_DEVICE_SET_IRQS",
                format!("{} irq index {}", self.name(), set.index),
                e,
            )
        })?;
        Ok(())
    }

    /// `VFIO_DEVICE_RESET`: a function-level reset. Errors: ENOTTY/EINVAL when the device has no
    /// reset method (see [`DeviceFlags::RESET`]).
    pub fn reset(&self) -> Result<()> {
        // SAFETY: VFIO_DEVICE_RESET takes no argument.
        unsafe { ioctl::with_int(self.as_fd(), sys::VFIO_DEVICE_RESET, 0) }
            .map_err(|e| Error::kernel("VFIO_DEVICE_RESET", self.name(), e))?;
        Ok(())
    }
}
