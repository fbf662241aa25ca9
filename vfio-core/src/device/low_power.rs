//! Low power (`VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY`, `_WITH_WAKEUP`, `_EXIT`, Linux 6.0): letting
//! the kernel runtime-suspend a device that the user is not using.
//!
//! What vfio-pci does (`drivers/vfio/pci/vfio_pci_core.c`, `vfio_pci_runtime_pm_entry`): it zaps
//! every mmap of the device's BARs, revokes its dma-bufs ([`DmaBuf`](crate::DmaBuf): an iommufd
//! import of one stays dead after the exit), marks the device engaged in low power and drops its
//! runtime-PM reference, so that on kernels with `CONFIG_PM` the device suspends (D3hot or
//! D3cold) once idle. Until the exit, a fault on a BAR mapping gets SIGBUS (the kernel refuses to
//! map BAR pages while engaged), so entry is refused here while mappings are live. Any
//! ioctl on the device fd resumes it first (config space reads through `pread` keep working);
//! with `_WITH_WAKEUP` the kernel signals the eventfd when the device resumes by itself (a PME,
//! or an access that woke it) and leaves low power on its own. Kernels built without `CONFIG_PM`
//! accept the requests, revoke and zap the same way, and never suspend nor signal the eventfd.

use std::os::fd::{AsRawFd, BorrowedFd};

use vfio_sys as sys;

use crate::{Device, Error, Result};

impl Device {
    /// Refuses low-power entry while this device has live BAR mappings.
    fn refuse_while_mapped(&self, op: &'static str) -> Result<()> {
        match self.live_mappings() {
            0 => Ok(()),
            n => Err(Error::invalid(
                op,
                self.name(),
                format!(
                    "{n} BAR mapping(s) of the device are live: the kernel would zap them and any access \
                     would get SIGBUS until low_power_exit; drop them first"
                ),
            )),
        }
    }

    /// `VFIO_DEVICE_FEATURE` SET of `VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY` (Linux 6.0): lets the
    /// kernel put the device in a low-power state (D3hot or D3cold, on kernels with
    /// `CONFIG_PM`) until [`Device::low_power_exit`]. Revokes the device's dma-bufs (importers
    /// keep a dead mapping: see [`DmaBuf`](crate::DmaBuf)). Errors: InvalidArgument, before the
    /// kernel is asked, while BAR mappings of the device ([`Device::live_mappings`]) are live;
    /// EINVAL (Kernel) when the device is in low power already (the kernel has revoked its
    /// dma-bufs all the same); ENOTTY on kernels before 6.0 or drivers without it.
    #[doc(alias = "VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY")]
    pub fn low_power_enter(&self) -> Result<()> {
        self.refuse_while_mapped("VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY")?;
        // SAFETY: the feature has no payload.
        unsafe { self.feature_set(sys::VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY, &mut []) }.map(drop)
    }

    /// `VFIO_DEVICE_FEATURE` SET of `VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP` (Linux
    /// 6.0): as [`Device::low_power_enter`], and when the device wakes by itself (a PME, or an
    /// access that resumed it) the kernel signals `eventfd` and leaves low power on its own (the
    /// kernel keeps its own reference to the eventfd until then, or until the exit). On kernels
    /// with runtime PM every ioctl on the device fd resumes it first, so
    /// [`Device::low_power_exit`] itself signals the eventfd (seen on Debian's 6.1); kernels
    /// without `CONFIG_PM` never suspend the device, so never signal. Errors: as
    /// [`Device::low_power_enter`]; EINVAL (Kernel) for an fd that is not an eventfd, EBADF for
    /// a closed one.
    #[doc(alias = "VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP")]
    pub fn low_power_enter_with_wakeup(&self, eventfd: BorrowedFd<'_>) -> Result<()> {
        self.refuse_while_mapped("VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP")?;
        let payload = sys::vfio_device_low_power_entry_with_wakeup {
            wakeup_eventfd: eventfd.as_raw_fd(),
            reserved: 0,
        };
        let mut bytes = zerocopy::IntoBytes::as_bytes(&payload).to_vec();
        // SAFETY: the payload holds an fd number (borrowed, so open for the call) and no
        // pointer; the kernel takes its own reference to the eventfd.
        unsafe { self.feature_set(sys::VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP, &mut bytes) }.map(drop)
    }

    /// `VFIO_DEVICE_FEATURE` SET of `VFIO_DEVICE_FEATURE_LOW_POWER_EXIT` (Linux 6.0): brings the
    /// device back to D0 and out of low power; BAR mappings fault in again, and dma-bufs are
    /// live again if memory decode is on (iommufd imports made before the entry stay dead:
    /// import again). Leaving low power when not in it succeeds. Errors: ENOTTY on kernels
    /// before 6.0 or drivers without it.
    #[doc(alias = "VFIO_DEVICE_FEATURE_LOW_POWER_EXIT")]
    pub fn low_power_exit(&self) -> Result<()> {
        // SAFETY: the feature has no payload.
        unsafe { self.feature_set(sys::VFIO_DEVICE_FEATURE_LOW_POWER_EXIT, &mut []) }.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wakeup_payload_is_the_uapi_one() {
        let payload = sys::vfio_device_low_power_entry_with_wakeup {
            wakeup_eventfd: 7,
            reserved: 0,
        };
        let bytes = zerocopy::IntoBytes::as_bytes(&payload);
        assert_eq!(bytes.len(), 8);
        assert_eq!(&bytes[..4], &7i32.to_ne_bytes());
        assert_eq!(sys::VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY, 3);
        assert_eq!(sys::VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP, 4);
        assert_eq!(sys::VFIO_DEVICE_FEATURE_LOW_POWER_EXIT, 5);
    }

    #[test]
    #[cfg_attr(miri, ignore = "memfd and mmap, which Miri cannot run")]
    fn entry_is_refused_while_a_mapping_is_live() {
        let fd = rustix::fs::memfd_create("bar", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&fd, 0x2000).unwrap();
        let dev = Device::from_fd(fd, "0000:00:04.0", None);
        let region = crate::RegionInfo {
            index: 0,
            flags: crate::RegionFlags::READ | crate::RegionFlags::WRITE | crate::RegionFlags::MMAP,
            size: 0x2000,
            offset: 0,
            caps: Vec::new(),
        };
        let map = dev.map_region(&region).unwrap();
        let map2 = dev.clone().map_region(&region).unwrap();
        assert_eq!(dev.live_mappings(), 2);
        for e in [
            dev.low_power_enter().unwrap_err(),
            dev.low_power_enter_with_wakeup(std::os::fd::AsFd::as_fd(&dev))
                .unwrap_err(),
        ] {
            assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
            let text = e.to_string();
            assert!(
                text.contains("0000:00:04.0") && text.contains("2 BAR mapping"),
                "{text}"
            );
        }
        drop((map, map2));
        assert_eq!(dev.live_mappings(), 0);
        // Past the check, the memfd answers the feature ioctl with ENOTTY.
        let e = dev.low_power_enter().unwrap_err();
        assert!(matches!(e, Error::Kernel { .. }), "{e}");
    }
}
