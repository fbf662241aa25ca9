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
use crate::{Errno, Error, Result, ioctl};

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

bitflags! {
    /// Which directions of a `VFIO_DEVICE_FEATURE` to probe.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct FeatureAccess: u32 {
        /// The feature can be read.
        const GET = sys::VFIO_DEVICE_FEATURE_GET;
        /// The feature can be written.
        const SET = sys::VFIO_DEVICE_FEATURE_SET;
    }
}

/// What `VFIO_DEVICE_GET_INFO` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Device kind and features.
    pub flags: DeviceFlags,
    /// Number of region indexes (max index + 1).
    pub num_regions: u32,
    /// Number of IRQ indexes (max index + 1).
    pub num_irqs: u32,
    /// The capability chain (zPCI descriptions, PCIe atomic completer support, ...), kept as
    /// (id, version, bytes).
    pub caps: Vec<(u16, u16, Vec<u8>)>,
}

impl DeviceInfo {
    /// Decodes a whole `VFIO_DEVICE_GET_INFO` reply, checking every capability offset.
    pub fn parse(reply: &[u8], target: &str) -> Result<Self> {
        const OP: &str = "VFIO_DEVICE_GET_INFO";
        let fixed = std::mem::size_of::<sys::vfio_device_info>();
        if reply.len() < fixed {
            return Err(Error::malformed(
                OP,
                target,
                format!("reply of {} bytes is too short", reply.len()),
            ));
        }
        let flags = DeviceFlags::from_bits_retain(crate::caps::u32_at(reply, 4, OP, target)?);
        let first = if flags.contains(DeviceFlags::CAPS) {
            crate::caps::u32_at(reply, 16, OP, target)?
        } else {
            0
        };
        let caps = crate::caps::parse(reply, fixed, first, OP, target)?
            .into_iter()
            .map(|c| (c.id, c.version, c.bytes.to_vec()))
            .collect();
        Ok(DeviceInfo {
            flags,
            num_regions: crate::caps::u32_at(reply, 8, OP, target)?,
            num_irqs: crate::caps::u32_at(reply, 12, OP, target)?,
            caps,
        })
    }
}

pub(crate) fn pack(a: u32, b: u32) -> [u8; 8] {
    let mut w = [0u8; 8];
    w[..4].copy_from_slice(&a.to_ne_bytes());
    w[4..].copy_from_slice(&b.to_ne_bytes());
    w
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

    /// `VFIO_DEVICE_GET_INFO`, with its capability chain (two-call argsz protocol). Errors: the
    /// errno of the ioctl (ENODEV or EBADF after the device was released).
    pub fn info(&self) -> Result<DeviceInfo> {
        const OP: &str = "VFIO_DEVICE_GET_INFO";
        let prefill = [0u8; std::mem::size_of::<sys::vfio_device_info>()];
        // SAFETY: VFIO_DEVICE_GET_INFO takes an argsz-prefixed vfio_device_info.
        let reply = unsafe { ioctl::with_argsz(self.as_fd(), sys::VFIO_DEVICE_GET_INFO, &prefill) }
            .map_err(|e| Error::kernel(OP, self.name(), e))?;
        DeviceInfo::parse(&reply, self.name())
    }

    /// `VFIO_DEVICE_GET_REGION_INFO` for region `index`, with its capability chain (sparse mmap
    /// areas, region type, MSI-X mappable), using the two-call argsz protocol. Errors: EINVAL for
    /// an index the device does not have; Malformed when the reply breaks the uapi contract.
    pub fn region_info(&self, index: u32) -> Result<RegionInfo> {
        // Named only when something failed: formatting costs more than the ioctl.
        let target = || format!("{} region {index}", self.name());
        let mut prefill = [0u8; std::mem::size_of::<sys::vfio_region_info>()];
        prefill[8..12].copy_from_slice(&index.to_ne_bytes());
        // SAFETY: VFIO_DEVICE_GET_REGION_INFO takes an argsz-prefixed vfio_region_info.
        let reply = unsafe { ioctl::with_argsz(self.as_fd(), sys::VFIO_DEVICE_GET_REGION_INFO, &prefill) }
            .map_err(|e| Error::kernel("VFIO_DEVICE_GET_REGION_INFO", target(), e))?;
        RegionInfo::parse(&reply, "").map_err(|e| match e {
            Error::Malformed { op, reason, .. } => Error::Malformed {
                op,
                target: target(),
                reason,
            },
            other => other,
        })
    }

    fn with_target(&self, e: Error, target: String) -> Error {
        match e {
            Error::Kernel { op, errno, .. } => Error::Kernel { op, target, errno },
            other => other,
        }
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
    /// signalled ([`IrqFlags`](crate::IrqFlags)). Errors: EINVAL (Kernel) for an index the device does not have
    /// (vfio-pci has five: INTx, MSI, MSI-X, ERR, REQ).
    pub fn irq_info(&self, index: u32) -> Result<IrqInfo> {
        let mut info = sys::vfio_irq_info {
            argsz: ioctl::argsz::<sys::vfio_irq_info>(),
            index,
            ..Default::default()
        };
        self.ioctl_mut("VFIO_DEVICE_GET_IRQ_INFO", sys::VFIO_DEVICE_GET_IRQ_INFO, &mut info)?;
        Ok(IrqInfo::from_sys(&info))
    }

    /// `VFIO_DEVICE_SET_IRQS` with a prepared request (see [`IrqSet`]): routes vectors to
    /// eventfds, disables an index, or triggers, masks or unmasks vectors. Errors: EINVAL
    /// (Kernel) for vectors beyond the index's count, an action the index does not support
    /// (e.g. masking MSI), or a trigger of an index that is not enabled; EBADF for a closed fd.
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

    /// `VFIO_DEVICE_FEATURE` with `VFIO_DEVICE_FEATURE_PROBE`: whether the device supports
    /// `feature` for `access` (GET, SET or both). ENOTTY (kernels before 5.17), EOPNOTSUPP, and the
    /// EINVAL the kernel gives for features it does not know are "unsupported" (`Ok(false)`), not
    /// failures.
    pub fn feature_probe(&self, feature: u32, access: FeatureAccess) -> Result<bool> {
        let flags = sys::VFIO_DEVICE_FEATURE_PROBE | access.bits();
        match self.feature_raw("VFIO_DEVICE_FEATURE probe", feature, flags, &mut []) {
            Ok(()) => Ok(true),
            Err(e) if matches!(e.errno(), Some(Errno::NOTTY | Errno::OPNOTSUPP | Errno::INVAL)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `VFIO_DEVICE_FEATURE` GET of `feature` into `data` (the feature's payload struct; Linux
    /// 5.17 and later). Errors: ENOTTY (Kernel) when the kernel has no device features, ENOTTY or
    /// EINVAL when the device lacks this one (probe with [`Device::feature_probe`] first),
    /// EINVAL for a payload of the wrong size.
    pub fn feature_get(&self, feature: u32, data: &mut [u8]) -> Result<()> {
        self.feature_raw("VFIO_DEVICE_FEATURE get", feature, sys::VFIO_DEVICE_FEATURE_GET, data)
    }

    /// `VFIO_DEVICE_FEATURE` SET of `feature` from `data` (Linux 5.17 and later). Errors: as for
    /// [`Device::feature_get`]; the feature's own errno when the device refuses the state.
    pub fn feature_set(&self, feature: u32, data: &[u8]) -> Result<()> {
        let mut copy = data.to_vec();
        self.feature_raw(
            "VFIO_DEVICE_FEATURE set",
            feature,
            sys::VFIO_DEVICE_FEATURE_SET,
            &mut copy,
        )
    }

    fn feature_raw(&self, op: &'static str, feature: u32, flags: u32, data: &mut [u8]) -> Result<()> {
        if feature > sys::VFIO_DEVICE_FEATURE_MASK {
            return Err(Error::invalid(
                op,
                self.name(),
                format!("feature {feature:#x} is above the 16-bit feature index"),
            ));
        }
        let hdr = std::mem::size_of::<sys::vfio_device_feature>();
        let argsz = hdr + data.len();
        let mut words = vec![0u64; argsz.div_ceil(8)];
        words[0] = u64::from_ne_bytes(pack(argsz as u32, flags | feature));
        let bytes = words.as_mut_ptr().cast::<u8>();
        // SAFETY: `words` holds argsz bytes; the payload goes right after the 8-byte header.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), bytes.add(hdr), data.len()) };
        self.ioctl_mut(op, sys::VFIO_DEVICE_FEATURE, &mut words[0])
            .map_err(|e| self.with_target(e, format!("{} feature {feature}", self.name())))?;
        // SAFETY: as above; the kernel wrote at most argsz bytes back.
        unsafe { std::ptr::copy_nonoverlapping(bytes.add(hdr), data.as_mut_ptr(), data.len()) };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_info_keeps_capabilities() {
        let mut r = Vec::new();
        for w in [
            40u32,
            sys::VFIO_DEVICE_FLAGS_PCI | sys::VFIO_DEVICE_FLAGS_CAPS,
            9,
            5,
            24,
            0,
        ] {
            r.extend(w.to_ne_bytes());
        }
        r.extend((sys::VFIO_DEVICE_INFO_CAP_PCI_ATOMIC_COMP as u16).to_ne_bytes());
        r.extend(1u16.to_ne_bytes());
        r.extend(0u32.to_ne_bytes());
        r.extend(7u32.to_ne_bytes());
        r.extend(0u32.to_ne_bytes());
        let info = DeviceInfo::parse(&r, "dev").unwrap();
        assert_eq!((info.num_regions, info.num_irqs), (9, 5));
        assert!(info.flags.contains(DeviceFlags::PCI));
        assert_eq!(info.caps.len(), 1);
        assert_eq!(info.caps[0].0 as u32, sys::VFIO_DEVICE_INFO_CAP_PCI_ATOMIC_COMP);
        r[16] = 8; // a capability offset inside the fixed part
        assert!(DeviceInfo::parse(&r, "dev").is_err());
    }

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
