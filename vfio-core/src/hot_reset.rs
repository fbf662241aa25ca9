//! PCI hot reset (a secondary bus or slot reset): which devices it would reset
//! (`VFIO_DEVICE_GET_PCI_HOT_RESET_INFO`) and doing it (`VFIO_DEVICE_PCI_HOT_RESET`).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use vfio_sys as sys;

use crate::{Device, Errno, Error, PciAddress, Result, caps, ioctl};

/// A device a hot reset of this one would also reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DependentDevice {
    /// Its IOMMU group number (group mode) or its iommufd device id (cdev mode; 0 = owned by
    /// this iommufd but not bound, `u32::MAX` = not owned).
    pub id: u32,
    /// Its PCI address.
    pub address: PciAddress,
}

/// What `VFIO_DEVICE_GET_PCI_HOT_RESET_INFO` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HotResetInfo {
    /// The ids are iommufd device ids (the device was opened as a cdev), not group numbers.
    pub dev_ids: bool,
    /// cdev mode: every affected device is owned by this iommufd, so the zero-length reset works.
    pub all_owned: bool,
    /// The affected devices, this one included.
    pub devices: Vec<DependentDevice>,
}

impl HotResetInfo {
    /// Decodes a whole `VFIO_DEVICE_GET_PCI_HOT_RESET_INFO` reply: the header and `count`
    /// dependent-device entries (no syscall). Errors: Malformed for a reply shorter than its
    /// header or its count says.
    pub fn parse(reply: &[u8], target: &str) -> Result<Self> {
        const OP: &str = "VFIO_DEVICE_GET_PCI_HOT_RESET_INFO";
        let flags = caps::u32_at(reply, 4, OP, target)?;
        let count = caps::u32_at(reply, 8, OP, target)? as usize;
        let mut devices = Vec::with_capacity(count.min(256));
        for i in 0..count {
            let at = 12 + 8 * i;
            let id = caps::u32_at(reply, at, OP, target)?;
            let b = reply
                .get(at + 4..at + 8)
                .ok_or_else(|| Error::malformed(OP, target, format!("entry {i} is past the reply")))?;
            let (segment, bus, devfn) = (u16::from_ne_bytes([b[0], b[1]]), b[2], b[3]);
            let address = PciAddress::new(segment as u32, bus, devfn >> 3, devfn & 7)?;
            devices.push(DependentDevice { id, address });
        }
        Ok(HotResetInfo {
            dev_ids: flags & sys::VFIO_PCI_HOT_RESET_FLAG_DEV_ID != 0,
            all_owned: flags & sys::VFIO_PCI_HOT_RESET_FLAG_DEV_ID_OWNED != 0,
            devices,
        })
    }
}

impl Device {
    /// `VFIO_DEVICE_GET_PCI_HOT_RESET_INFO` (two calls: ENOSPC says how many devices). Errors:
    /// ENODEV when no slot or bus reset can reach the device (e.g. on a root bus).
    pub fn hot_reset_info(&self) -> Result<HotResetInfo> {
        let mut count = 0usize;
        for _ in 0..4 {
            let argsz = 12 + 8 * count;
            let mut words = vec![0u32; argsz / 4];
            words[0] = argsz as u32;
            // SAFETY: `words` is a vfio_pci_hot_reset_info header with room for `count` entries,
            // as argsz says.
            let res = unsafe { ioctl::with_mut(self.as_fd(), sys::VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, &mut words[0]) };
            match res {
                Ok(_) => {
                    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
                    return HotResetInfo::parse(&bytes, self.name());
                }
                Err(Errno::NOSPC) if words[2] as usize > count => count = words[2] as usize,
                Err(e) => return Err(Error::kernel("VFIO_DEVICE_GET_PCI_HOT_RESET_INFO", self.name(), e)),
            }
        }
        Err(Error::malformed(
            "VFIO_DEVICE_GET_PCI_HOT_RESET_INFO",
            self.name(),
            "count kept growing",
        ))
    }

    /// `VFIO_DEVICE_PCI_HOT_RESET`. In group mode pass the fds of every group the reset touches
    /// (proof of ownership); in cdev mode pass none (the zero-length form: the kernel checks the
    /// affected devices are bound to the same iommufd). Errors: EPERM when a needed group is
    /// missing or a device is not owned; ENODEV when no reset can reach the device.
    pub fn hot_reset(&self, group_fds: &[BorrowedFd<'_>]) -> Result<()> {
        let argsz = 12 + 4 * group_fds.len();
        let mut words = vec![0u32; argsz / 4];
        words[0] = argsz as u32;
        words[2] = group_fds.len() as u32;
        for (i, fd) in group_fds.iter().enumerate() {
            words[3 + i] = fd.as_raw_fd() as u32;
        }
        // SAFETY: `words` is a vfio_pci_hot_reset header followed by `count` group fds.
        unsafe { ioctl::with_mut(self.as_fd(), sys::VFIO_DEVICE_PCI_HOT_RESET, &mut words[0]) }
            .map_err(|e| Error::kernel("VFIO_DEVICE_PCI_HOT_RESET", self.name(), e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dependents() {
        let mut r = Vec::new();
        for w in [
            28u32,
            sys::VFIO_PCI_HOT_RESET_FLAG_DEV_ID | sys::VFIO_PCI_HOT_RESET_FLAG_DEV_ID_OWNED,
            2,
        ] {
            r.extend(w.to_ne_bytes());
        }
        r.extend(7u32.to_ne_bytes());
        r.extend(0u16.to_ne_bytes());
        r.extend([3, (4 << 3) | 1]);
        r.extend(u32::MAX.to_ne_bytes());
        r.extend(1u16.to_ne_bytes());
        r.extend([0, 0x10]);
        let info = HotResetInfo::parse(&r, "dev").unwrap();
        assert!(info.dev_ids && info.all_owned);
        assert_eq!(
            info.devices[0],
            DependentDevice {
                id: 7,
                address: "0000:03:04.1".parse().unwrap()
            }
        );
        assert_eq!(info.devices[1].address.to_string(), "0001:00:02.0");
        assert!(HotResetInfo::parse(&r[..20], "dev").is_err(), "count beyond the reply");
    }
}
