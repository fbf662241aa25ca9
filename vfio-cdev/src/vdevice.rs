//! vDEVICEs (`IOMMU_VDEVICE_ALLOC`, Linux >= 6.13): a device as a vIOMMU knows it, named by the
//! virtual id the guest uses for it (a virtual stream id, BDF or device id), so the kernel and
//! the hardware can translate guest commands and events between virtual and physical ids.

use std::sync::Arc;

use iommufd_sys as sys;
use vfio_core::ioctl::{self, Request, requests as req};
use vfio_core::{Errno, Error, Result};

use crate::object::Object;
use crate::{DeviceId, VdeviceId, Viommu, refused};

/// A vDEVICE, from [`Viommu::alloc_vdevice`]; destroyed (`IOMMU_DESTROY`) on drop. It holds its
/// vIOMMU. When the device is unbound first, the kernel has already removed the vDEVICE: the
/// destroy then answers ENOENT, which drop logs at debug level only.
#[derive(Debug)]
pub struct Vdevice {
    /// Destroys the vDEVICE (first, before its vIOMMU goes).
    object: Object,
    id: VdeviceId,
    virt_id: u64,
    dev: DeviceId,
    viommu: Arc<Viommu>,
}

impl Viommu {
    /// `IOMMU_VDEVICE_ALLOC` (Linux >= 6.13): tells the vIOMMU that device `dev` is known to
    /// the guest by `virt_id`. Errors: EEXIST (Kernel) when the device already has a vDEVICE or
    /// another device has `virt_id`; EINVAL for a device behind another IOMMU (or no IOMMU);
    /// ENOENT for an unknown device (or an id that is not a device); Unsupported without the
    /// ioctl (ENOTTY).
    #[doc(alias = "IOMMU_VDEVICE_ALLOC")]
    pub fn alloc_vdevice(self: &Arc<Self>, dev: DeviceId, virt_id: u64) -> Result<Vdevice> {
        let iommufd = self.iommufd();
        let mut a = sys::iommu_vdevice_alloc {
            viommu_id: self.id().get(),
            dev_id: dev.get(),
            virt_id,
            ..Default::default()
        };
        let target = || {
            format!(
                "{} viommu {} device {dev} virt id {virt_id:#x}",
                iommufd.target(),
                self.id()
            )
        };
        match ioctl::call::<req::VdeviceAlloc>(iommufd.ioctl_fd(), &mut a) {
            Ok(_) => Ok(Vdevice {
                object: Object::new(iommufd.clone(), VdeviceId::from(a.out_vdevice_id), "vdevice").gone_ok(),
                id: VdeviceId::from(a.out_vdevice_id),
                virt_id,
                dev,
                viommu: self.clone(),
            }),
            Err(e @ Errno::NOTTY) => Err(Error::unsupported(req::VdeviceAlloc::NAME, target(), e)),
            Err(e) => Err(refused::<req::VdeviceAlloc>(target, e)),
        }
    }
}

impl Vdevice {
    /// The object id.
    pub fn id(&self) -> VdeviceId {
        self.id
    }

    /// The virtual id the guest knows the device by.
    pub fn virt_id(&self) -> u64 {
        self.virt_id
    }

    /// The (bound) device.
    pub fn device(&self) -> DeviceId {
        self.dev
    }

    /// The vIOMMU it belongs to.
    pub fn viommu(&self) -> &Arc<Viommu> {
        &self.viommu
    }

    /// `IOMMU_DESTROY` of the vDEVICE now. Errors: ENOENT (Kernel) when the device was unbound
    /// (or unplugged) first, which removed it already; EBUSY while in use.
    #[doc(alias = "IOMMU_DESTROY")]
    pub fn destroy(self) -> Result<()> {
        self.object.destroy()
    }
}
