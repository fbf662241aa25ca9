//! Device features (`VFIO_DEVICE_FEATURE`, Linux 5.17 and later): probe, get and set.

use bitflags::bitflags;
use vfio_sys as sys;

use crate::ioctl::{self, requests as req};
use crate::{Device, Error, Result, Uuid};

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

/// Whether a device offers a feature, from a `VFIO_DEVICE_FEATURE_PROBE`.
#[derive(Debug)]
#[non_exhaustive]
pub enum FeatureSupport {
    /// The device offers the feature for the directions asked.
    Supported,
    /// The kernel or the device does not have it.
    NotOffered,
    /// The probe itself failed for another reason.
    Refused(Error),
}

impl FeatureSupport {
    /// Whether the answer is [`FeatureSupport::Supported`].
    pub fn is_supported(&self) -> bool {
        matches!(self, FeatureSupport::Supported)
    }
}

impl Device {
    /// `VFIO_DEVICE_FEATURE` with `VFIO_DEVICE_FEATURE_PROBE`: whether the device supports
    /// `feature` for `access` (GET, SET or both). ENOTTY (kernels before 5.17), EOPNOTSUPP, and the
    /// EINVAL the kernel gives for features it does not know are "unsupported" (`Ok(false)`), not
    /// failures.
    #[doc(alias = "VFIO_DEVICE_FEATURE")]
    pub fn feature_probe(&self, feature: u32, access: FeatureAccess) -> Result<bool> {
        let flags = sys::VFIO_DEVICE_FEATURE_PROBE | access.bits();
        // SAFETY: a probe carries no payload: the kernel reads nothing past the header.
        match unsafe { self.feature_raw("VFIO_DEVICE_FEATURE probe", feature, flags, &mut []) } {
            Ok(_) => Ok(true),
            Err(e) if e.errno().is_some_and(ioctl::is_unsupported::<req::DeviceFeature>) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `VFIO_DEVICE_FEATURE` GET of `feature` into `data` (the feature's payload struct; Linux
    /// 5.17 and later); returns the ioctl's return value. The typed calls below are the safe way
    /// to use the features they cover. Errors: ENOTTY (Kernel) when the kernel has no device
    /// features, ENOTTY or EINVAL when the device lacks this one (probe with
    /// [`Device::feature_probe`] first), EINVAL for a payload of the wrong size.
    ///
    /// # Safety
    /// `data` is the payload `feature` defines, and every pointer inside it (e.g. the bitmap
    /// addresses of `VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT`) is valid for the kernel to write
    /// for the duration of the call. Any fd the kernel returns (in the payload or as the return
    /// value) becomes the caller's to close.
    #[doc(alias = "VFIO_DEVICE_FEATURE")]
    pub unsafe fn feature_get(&self, feature: u32, data: &mut [u8]) -> Result<i32> {
        // SAFETY: forwarded to the caller.
        unsafe { self.feature_raw("VFIO_DEVICE_FEATURE get", feature, sys::VFIO_DEVICE_FEATURE_GET, data) }
    }

    /// `VFIO_DEVICE_FEATURE` SET of `feature` with payload `data` (Linux 5.17 and later). The
    /// kernel may write back into the payload (e.g. `MIG_DEVICE_STATE`'s `data_fd`), so `data`
    /// holds its reply afterwards; returns the ioctl's return value (e.g. the dma-buf fd of
    /// `VFIO_DEVICE_FEATURE_DMA_BUF`). Errors: as for [`Device::feature_get`]; the feature's
    /// own errno when the device refuses the state.
    ///
    /// # Safety
    /// As for [`Device::feature_get`]: pointers in the payload are valid for what the kernel
    /// does with them, fds in it are open for the call, and returned fds are the caller's.
    #[doc(alias = "VFIO_DEVICE_FEATURE")]
    pub unsafe fn feature_set(&self, feature: u32, data: &mut [u8]) -> Result<i32> {
        // SAFETY: forwarded to the caller.
        unsafe { self.feature_raw("VFIO_DEVICE_FEATURE set", feature, sys::VFIO_DEVICE_FEATURE_SET, data) }
    }

    /// `VFIO_DEVICE_FEATURE` probe, answered three ways: [`FeatureSupport::Supported`],
    /// [`FeatureSupport::NotOffered`] (ENOTTY from kernels before 5.17 or devices without
    /// features, EOPNOTSUPP, or the EINVAL the kernel gives for a feature it does not know), or
    /// [`FeatureSupport::Refused`] with any other errno (e.g. EBADF on a closed device).
    #[doc(alias = "VFIO_DEVICE_FEATURE")]
    pub fn feature_support(&self, feature: u32, access: FeatureAccess) -> FeatureSupport {
        match self.feature_probe(feature, access) {
            Ok(true) => FeatureSupport::Supported,
            Ok(false) => FeatureSupport::NotOffered,
            Err(e) => FeatureSupport::Refused(e),
        }
    }

    /// `VFIO_DEVICE_FEATURE_PCI_VF_TOKEN` SET (Linux 5.7): the VF token of this SR-IOV PF,
    /// which whoever opens one of its VFs (or, while VFs exist, the PF again) must present.
    /// Every SR-IOV PF on vfio-pci takes one, before or after its VFs are enabled (vfio-pci's
    /// `enable_sriov=1` gates only enabling them); the PF starts with a random token that it
    /// keeps across closes. There is no GET. [`SriovVfs`](crate::SriovVfs) sets it and enables
    /// the VFs in the safe order. Errors: ENOTTY (Kernel) when the device is not an SR-IOV PF
    /// (or the kernel has no device features); EINVAL for a payload of the wrong size.
    #[doc(alias = "VFIO_DEVICE_FEATURE_PCI_VF_TOKEN")]
    pub fn set_vf_token(&self, token: &Uuid) -> Result<()> {
        let mut bytes = *token.as_bytes();
        // SAFETY: the payload is the 16-byte UUID, no pointer.
        match unsafe { self.feature_set(sys::VFIO_DEVICE_FEATURE_PCI_VF_TOKEN, &mut bytes) } {
            Ok(_) => Ok(()),
            Err(Error::Kernel {
                op,
                target,
                errno: errno @ crate::Errno::NOTTY,
                cause,
            }) => Err(Error::Kernel {
                op,
                target: format!("{target} (ENOTTY: not an SR-IOV PF on vfio-pci, so it has no VF token)"),
                errno,
                cause,
            }),
            Err(e) => Err(e),
        }
    }

    /// `VFIO_DEVICE_FEATURE_BUS_MASTER` SET (Linux 6.17): turns the device's bus mastering on
    /// or off without touching config space. Offered by drivers whose devices have no config
    /// space to do it through (vfio-cdx); vfio-pci does not offer it: there, set the command
    /// register. Errors: ENOTTY/EINVAL (Kernel) when not offered.
    #[doc(alias = "VFIO_DEVICE_FEATURE_BUS_MASTER")]
    pub fn set_bus_master(&self, enable: bool) -> Result<()> {
        let payload = sys::vfio_device_feature_bus_master {
            op: if enable {
                sys::VFIO_DEVICE_FEATURE_SET_MASTER
            } else {
                sys::VFIO_DEVICE_FEATURE_CLEAR_MASTER
            },
        };
        let mut bytes = zerocopy::IntoBytes::as_bytes(&payload).to_vec();
        // SAFETY: the payload is the bus-master op, no pointer.
        unsafe { self.feature_set(sys::VFIO_DEVICE_FEATURE_BUS_MASTER, &mut bytes) }.map(drop)
    }

    /// `VFIO_DEVICE_FEATURE_ZPCI_ERROR` GET (Linux 6.19, s390 only): the platform's PCI error
    /// report for the device. Errors: Unsupported on any other architecture (without asking
    /// the kernel); ENOTTY/EINVAL (Kernel) when not offered.
    #[doc(alias = "VFIO_DEVICE_FEATURE_ZPCI_ERROR")]
    pub fn zpci_error(&self) -> Result<u64> {
        if !cfg!(target_arch = "s390x") {
            return Err(Error::unsupported(
                "VFIO_DEVICE_FEATURE_ZPCI_ERROR",
                self.name(),
                "zPCI error reports exist on s390 only",
            ));
        }
        let mut bytes = [0u8; 8];
        // SAFETY: the payload is a u64 the kernel fills, no pointer.
        unsafe { self.feature_get(sys::VFIO_DEVICE_FEATURE_ZPCI_ERROR, &mut bytes) }?;
        Ok(u64::from_ne_bytes(bytes))
    }

    /// # Safety
    /// As [`Device::feature_get`].
    unsafe fn feature_raw(&self, op: &'static str, feature: u32, flags: u32, data: &mut [u8]) -> Result<i32> {
        if feature > sys::VFIO_DEVICE_FEATURE_MASK {
            return Err(Error::invalid(
                op,
                self.name(),
                format!("feature {feature:#x} is above the 16-bit feature index"),
            ));
        }
        let header = sys::vfio_device_feature {
            flags: flags | feature,
            ..Default::default()
        };
        let mut buf = ioctl::VarBuf::with_tail(&header, data);
        // SAFETY: the caller vouches for the payload (see feature_get).
        let ret = unsafe { ioctl::call_var_unchecked::<req::DeviceFeature>(self.ioctl_fd(), &mut buf) }
            .map_err(|e| Error::kernel(op, format!("{} feature {feature}", self.name()), e))?;
        data.copy_from_slice(buf.tail());
        Ok(ret)
    }
}
