//! PCI hot reset (a secondary bus or slot reset): which devices it would reset
//! (`VFIO_DEVICE_GET_PCI_HOT_RESET_INFO`) and doing it (`VFIO_DEVICE_PCI_HOT_RESET`).

use std::os::fd::{AsRawFd, BorrowedFd};

use vfio_sys as sys;

use crate::ioctl::caps;
use crate::ioctl::{self, Request, requests as req};
use crate::{Device, Errno, Error, PciAddress, Result};

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
    #[doc(alias = "VFIO_DEVICE_GET_PCI_HOT_RESET_INFO")]
    pub fn hot_reset_info(&self) -> Result<HotResetInfo> {
        const ENTRY: usize = size_of::<sys::vfio_pci_dependent_device>();
        let mut count = 0usize;
        for _ in 0..4 {
            let mut buf = ioctl::VarBuf::<req::HotResetInfoHeader>::zeroed(ENTRY * count);
            match ioctl::call_var::<req::DeviceGetPciHotResetInfo>(self.ioctl_fd(), &mut buf) {
                Ok(_) => return HotResetInfo::parse(buf.bytes(), self.name()),
                Err(Errno::NOSPC) if buf.header().count as usize > count => {
                    count = buf.header().count as usize;
                    if count > MAX_DEPENDENTS {
                        return Err(Error::malformed(
                            req::DeviceGetPciHotResetInfo::NAME,
                            self.name(),
                            format!(
                                "the kernel reports {count} dependent devices, above the limit of {MAX_DEPENDENTS}"
                            ),
                        ));
                    }
                }
                Err(e) => return Err(ioctl::kernel_error::<req::DeviceGetPciHotResetInfo>(self.name(), e)),
            }
        }
        Err(Error::malformed(
            req::DeviceGetPciHotResetInfo::NAME,
            self.name(),
            "count kept growing",
        ))
    }

    /// `VFIO_DEVICE_PCI_HOT_RESET`. In group mode pass the fds of every group the reset touches
    /// (proof of ownership); in cdev mode pass none (the zero-length form: the kernel checks the
    /// affected devices are bound to the same iommufd). Errors: EPERM when a needed group is
    /// missing or a device is not owned; ENODEV when no reset can reach the device.
    #[doc(alias = "VFIO_DEVICE_PCI_HOT_RESET")]
    pub fn hot_reset(&self, group_fds: &[BorrowedFd<'_>]) -> Result<()> {
        let header = sys::vfio_pci_hot_reset {
            count: group_fds.len() as u32,
            ..Default::default()
        };
        let fds: Vec<u8> = group_fds.iter().flat_map(|fd| fd.as_raw_fd().to_ne_bytes()).collect();
        let mut buf = ioctl::VarBuf::with_tail(&header, &fds);
        // SAFETY: the header's count is the number of group fds that follow it in the buffer.
        unsafe { ioctl::call_var_unchecked::<req::DevicePciHotReset>(self.ioctl_fd(), &mut buf) }
            .map_err(|e| ioctl::kernel_error::<req::DevicePciHotReset>(self.name(), e))?;
        Ok(())
    }
}

/// The most dependent devices a hot-reset-info reply may announce (a PCI segment has 65,536
/// functions); a kernel answering more is reported as malformed instead of sizing an allocation.
pub const MAX_DEPENDENTS: usize = 65_536;

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
