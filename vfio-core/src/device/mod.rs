//! A VFIO device file descriptor, however it was obtained: `VFIO_GROUP_GET_DEVICE_FD` in group
//! mode, `open("/dev/vfio/devices/vfioN")` + `VFIO_DEVICE_BIND_IOMMUFD` in cdev mode, or adopted
//! from another process.
//!
//! Everything about the device lives here: the fd ([`Device`]), what it reports
//! ([`DeviceInfo`]), its regions ([`RegionInfo`]), IRQs ([`IrqInfo`], [`IrqSet`]), features and
//! resets. Mapped views of its regions are in [`mmio`](crate::mmio).

use std::any::Any;
use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use vfio_sys as sys;

use crate::ioctl::{self, requests as req};
use crate::{Error, MappedRegion, Result};

mod dma_buf;
mod dma_logging;
mod feature;
mod gfx;
mod hot_reset;
mod info;
mod ioeventfd;
mod irq;
mod low_power;
pub mod migration;
mod region;

pub use dma_buf::{DmaBuf, DmaBufMapping};
pub use dma_logging::{DirtyBitmap, DmaLogRange, DmaLogging, MAX_LOG_RANGES};
pub use feature::{FeatureAccess, FeatureSupport};
pub use gfx::{DmabufId, DrmPlaneType, GfxPlane, PlaneKind, PlaneSource};
pub use hot_reset::{DependentDevice, HotResetInfo, MAX_DEPENDENTS};
pub use info::{DeviceFlags, DeviceInfo};
pub use ioeventfd::{IoValue, Ioeventfd};
pub use irq::{IrqAction, IrqData, IrqFlags, IrqInfo, IrqSet};
pub use migration::{Chunk, DataStream, MigFlags, MigState, Migration, PrecopyInfo, ResumeStream, SaveStream};
pub use region::{RegionCap, RegionFlags, RegionInfo, SparseArea};

/// Whatever must outlive the device fd: its group and container, or its IOAS and iommufd.
pub type Owner = Arc<dyn Any + Send + Sync>;

struct DeviceFd {
    // Field order is drop order: the device fd closes before the objects it depends on.
    fd: OwnedFd,
    name: String,
    _owner: Option<Owner>,
    /// Live [`MappedRegion`]s of the device (made through any clone), for the low-power checks.
    mmaps: std::sync::atomic::AtomicUsize,
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
                mmaps: Default::default(),
            }),
        }
    }

    /// Keeps `owner` alive until the device fd is closed, after the owner the device has
    /// already (its group or IOAS): e.g. the [`crate::Mdev`] it was opened from, so that the
    /// instance is removed only once its fd is closed. Only a fresh device takes it. Errors:
    /// InvalidArgument when the device is shared already (a clone or a mapping of it exists).
    pub fn keep_alive(&mut self, owner: Owner) -> Result<()> {
        let name = self.inner.name.clone();
        let inner = Arc::get_mut(&mut self.inner).ok_or_else(|| {
            Error::invalid(
                "keep an owner alive with the device",
                name,
                "the device is shared already (a clone or a mapping of it exists)",
            )
        })?;
        // A tuple drops in field order: the existing owner (group lease, IOAS) goes first.
        let previous = inner._owner.take();
        inner._owner = Some(Arc::new((previous, owner)));
        Ok(())
    }

    /// The name used in errors (normally the PCI address).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// How many [`MappedRegion`]s of this device are live (made through this handle or any
    /// clone; a leaked one counts for ever). A device fd adopted twice counts each separately.
    pub fn live_mappings(&self) -> usize {
        self.inner.mmaps.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Counts a [`MappedRegion`] made (`true`) or unmapped (`false`).
    pub(crate) fn note_mapping(&self, live: bool) {
        use std::sync::atomic::Ordering;
        if live {
            self.inner.mmaps.fetch_add(1, Ordering::Relaxed);
        } else {
            self.inner.mmaps.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// The device fd, typed for device requests (see [`ioctl`]).
    #[inline]
    pub fn ioctl_fd(&self) -> ioctl::Fd<'_, ioctl::kind::Device> {
        // SAFETY: a Device holds a VFIO device fd (or, when adopted with `from_fd`, an fd the
        // caller named a device; any other fd answers VFIO's requests with ENOTTY).
        unsafe { ioctl::Fd::new_unchecked(self.as_fd()) }
    }

    /// `VFIO_DEVICE_GET_INFO`, with its capability chain (two-call argsz protocol). Errors: the
    /// errno of the ioctl (ENODEV or EBADF after the device was released).
    #[doc(alias = "VFIO_DEVICE_GET_INFO")]
    pub fn info(&self) -> Result<DeviceInfo> {
        let reply = ioctl::query::<req::DeviceGetInfo>(self.ioctl_fd(), &Default::default(), || self.name().into())?;
        DeviceInfo::parse(reply.bytes(), self.name())
    }

    /// `VFIO_DEVICE_GET_REGION_INFO` for region `index`, with its capability chain (sparse mmap
    /// areas, region type, MSI-X mappable), using the two-call argsz protocol. Errors: EINVAL for
    /// an index the device does not have; Malformed when the reply breaks the uapi contract.
    #[doc(alias = "VFIO_DEVICE_GET_REGION_INFO")]
    pub fn region_info(&self, index: u32) -> Result<RegionInfo> {
        // Named only when something failed: formatting costs more than the ioctl.
        let target = || format!("{} region {index}", self.name());
        let header = sys::vfio_region_info {
            index,
            ..Default::default()
        };
        let reply = ioctl::query::<req::DeviceGetRegionInfo>(self.ioctl_fd(), &header, target)?;
        RegionInfo::parse(reply.bytes(), "").map_err(|e| match e {
            Error::Malformed { op, reason, .. } => Error::Malformed {
                op,
                target: target(),
                reason,
            },
            other => other,
        })
    }

    /// Maps every mmappable area of a region ([`RegionInfo::mmap_areas`]) with `mmap(2)` on the
    /// device fd: the whole region, or its sparse areas (e.g. a BAR around its MSI-X table).
    /// Each mapping keeps the device open. Errors: the errno of mmap (e.g. EINVAL for a region
    /// without the MMAP flag); an empty list when nothing of the region may be mapped.
    pub fn map_region_areas(&self, region: &RegionInfo) -> Result<Vec<MappedRegion>> {
        region
            .mmap_areas()
            .into_iter()
            .map(|a| MappedRegion::new(self.clone(), region, a.offset, a.size))
            .collect()
    }

    /// Reads `buf.len()` bytes at `offset` inside a region with `pread(2)`. Errors:
    /// InvalidArgument for an access past the region's end (before the kernel is asked);
    /// Malformed for a short read; the kernel's errno (Kernel), e.g. EIO from vfio-pci for a
    /// BAR while memory decoding is off, EINVAL for a region the device cannot read.
    pub fn read_region(&self, region: &RegionInfo, offset: u64, buf: &mut [u8]) -> Result<()> {
        let pos = region.file_offset("read region", self.name(), offset, buf.len())?;
        let res = rustix::io::pread(self.as_fd(), &mut *buf, pos);
        log::debug!(target: "vfio", "pread({}, {} bytes at {pos:#x}) = {res:?}", self.name(), buf.len());
        let n = res.map_err(|e| Error::kernel("pread region", self.region_target(region, offset), e))?;
        if n != buf.len() {
            return Err(Error::malformed(
                "pread region",
                self.region_target(region, offset),
                format!("short read: {n} of {} bytes", buf.len()),
            ));
        }
        Ok(())
    }

    /// Writes `buf` at `offset` inside a region with `pwrite(2)`. Errors: as for
    /// [`Device::read_region`] (a short write is Malformed).
    pub fn write_region(&self, region: &RegionInfo, offset: u64, buf: &[u8]) -> Result<()> {
        let pos = region.file_offset("write region", self.name(), offset, buf.len())?;
        let res = rustix::io::pwrite(self.as_fd(), buf, pos);
        log::debug!(target: "vfio", "pwrite({}, {} bytes at {pos:#x}) = {res:?}", self.name(), buf.len());
        let n = res.map_err(|e| Error::kernel("pwrite region", self.region_target(region, offset), e))?;
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

    /// Maps a whole region with `mmap(2)` (refused when the region has sparse areas: use
    /// [`Device::map_region_areas`]). The mapping keeps the device open.
    /// Errors: Unsupported when the region has no MMAP flag; the errno of mmap otherwise.
    pub fn map_region(&self, region: &RegionInfo) -> Result<MappedRegion> {
        if region.caps.iter().any(|c| matches!(c, crate::RegionCap::SparseMmap(_))) {
            return Err(Error::unsupported(
                "whole-region mmap",
                format!("{} region {}", self.name(), region.index),
                "the region is sparse: map its areas with map_region_areas",
            ));
        }
        MappedRegion::new(self.clone(), region, 0, region.size)
    }

    /// `VFIO_DEVICE_GET_IRQ_INFO` for IRQ `index`: how many vectors it has and how they can be
    /// signalled ([`IrqFlags`]). Errors: EINVAL (Kernel) for an index the device does not have
    /// (vfio-pci has five: INTx, MSI, MSI-X, ERR, REQ).
    #[doc(alias = "VFIO_DEVICE_GET_IRQ_INFO")]
    pub fn irq_info(&self, index: u32) -> Result<IrqInfo> {
        let mut info = sys::vfio_irq_info {
            index,
            ..Default::default()
        };
        ioctl::call::<req::DeviceGetIrqInfo>(self.ioctl_fd(), &mut info).map_err(|e| {
            ioctl::kernel_error::<req::DeviceGetIrqInfo>(format!("{} irq index {index}", self.name()), e)
        })?;
        Ok(IrqInfo::from_sys(&info))
    }

    /// `VFIO_DEVICE_SET_IRQS` with a prepared request (see [`IrqSet`]): routes vectors to
    /// eventfds, disables an index, or triggers, masks or unmasks vectors. Errors: EINVAL
    /// (Kernel) for vectors beyond the index's count, an action the index does not support
    /// (e.g. masking MSI), or a trigger of an index that is not enabled; EBADF for a closed fd.
    #[doc(alias = "VFIO_DEVICE_SET_IRQS")]
    pub fn set_irqs(&self, set: &IrqSet) -> Result<()> {
        let mut buf = set.to_buf();
        ioctl::call_var::<req::DeviceSetIrqs>(self.ioctl_fd(), &mut buf).map_err(|e| {
            ioctl::kernel_error::<req::DeviceSetIrqs>(format!("{} irq index {}", self.name(), set.index()), e)
        })?;
        Ok(())
    }

    /// `VFIO_DEVICE_RESET`: a function-level reset. Errors: ENOTTY/EINVAL when the device has no
    /// reset method (see [`DeviceFlags::RESET`]).
    #[doc(alias = "VFIO_DEVICE_RESET")]
    pub fn reset(&self) -> Result<()> {
        ioctl::call_int::<req::DeviceReset>(self.ioctl_fd(), 0)
            .map_err(|e| ioctl::kernel_error::<req::DeviceReset>(self.name(), e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A memfd stands in for the device fd: pread/pwrite at region offsets, bounds and short
    /// transfers.
    #[test]
    #[cfg_attr(miri, ignore = "memfd_create and pread, which Miri cannot run")]
    fn region_access_checks_bounds_and_short_transfers() {
        let fd = rustix::fs::memfd_create("region", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&fd, 0x3000).unwrap();
        let dev = Device::from_fd(fd, "0000:00:03.0", None);
        // A region at file offset 0x1000 that claims 0x4000 bytes: only 0x2000 exist behind it.
        let region = RegionInfo {
            index: 2,
            flags: crate::RegionFlags::READ | crate::RegionFlags::WRITE,
            size: 0x4000,
            offset: 0x1000,
            caps: Vec::new(),
        };
        dev.write_region(&region, 0x10, &[1, 2, 3, 4]).unwrap();
        let mut buf = [0u8; 4];
        dev.read_region(&region, 0x10, &mut buf).unwrap();
        assert_eq!(buf, [1, 2, 3, 4]);
        // Past the file's end: the kernel returns fewer bytes.
        let short = dev.read_region(&region, 0x1ffe, &mut buf).unwrap_err();
        assert!(matches!(short, Error::Malformed { .. }), "{short:?}");
        assert!(short.to_string().contains("short read: 2 of 4"), "{short}");
        assert!(short.to_string().contains("0000:00:03.0 region 2"), "{short}");
        // Past the region's end: refused before any syscall.
        let past = dev.read_region(&region, 0x3ffe, &mut buf).unwrap_err();
        assert!(matches!(past, Error::InvalidArgument { .. }), "{past:?}");
        let past = dev.write_region(&region, 0x4000, &[0]).unwrap_err();
        assert!(matches!(past, Error::InvalidArgument { .. }), "{past:?}");
    }
}
