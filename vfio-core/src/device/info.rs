//! What `VFIO_DEVICE_GET_INFO` reports: the device's kind, its region and IRQ counts, and its
//! capability chain.

use bitflags::bitflags;
use vfio_sys as sys;

use crate::{Error, Result};

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
        let flags = DeviceFlags::from_bits_retain(crate::ioctl::caps::u32_at(reply, 4, OP, target)?);
        let first = if flags.contains(DeviceFlags::CAPS) {
            crate::ioctl::caps::u32_at(reply, 16, OP, target)?
        } else {
            0
        };
        let caps = crate::ioctl::caps::parse(reply, fixed, first, OP, target)?
            .into_iter()
            .map(|c| (c.id, c.version, c.bytes.to_vec()))
            .collect();
        Ok(DeviceInfo {
            flags,
            num_regions: crate::ioctl::caps::u32_at(reply, 8, OP, target)?,
            num_irqs: crate::ioctl::caps::u32_at(reply, 12, OP, target)?,
            caps,
        })
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
}
