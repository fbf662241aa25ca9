//! vIOMMUs (`IOMMU_VIOMMU_ALLOC`, Linux >= 6.13): the slice of a physical IOMMU that a VMM
//! presents to a guest as a virtual IOMMU, over a nest-parent HWPT (the stage 2). Nested HWPTs,
//! vDEVICEs, vEVENTQs and hardware queues are allocated from it, and guest cache invalidations
//! go through it. Offered by the ARM SMMUv3 (and Tegra241 CMDQV) and AMD drivers, and the
//! iommufd selftest mock; Intel VT-d and virtio-iommu have none (Unsupported).

use std::sync::Arc;

use iommufd_sys as sys;
use vfio_core::ioctl::{self, Request, requests as req};
use vfio_core::{Errno, Error, Result};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::nested_hwpt::NestParent;
use crate::object::Object;
use crate::{
    DeviceId, FaultQueue, Hwpt, HwptData, Invalidation, InvalidationEntry, Iommufd, NestedFlags, NestedHwpt, ViommuId,
    refused,
};

/// Driver data of `IOMMU_VIOMMU_ALLOC`: the uapi struct of vIOMMU type [`ViommuData::TYPE`]
/// (`enum iommu_viommu_type`). The kernel reads it and writes its outputs back into it (at most
/// `size_of::<Self>()` bytes).
///
/// # Safety
/// `Self` lays out the uapi struct of `TYPE`; every bit pattern the kernel writes back is valid
/// for it, and the kernel follows no user pointer in it.
pub unsafe trait ViommuData: IntoBytes + FromBytes + KnownLayout + Immutable {
    /// The vIOMMU `type`.
    const TYPE: u32;
}

// SAFETY: struct iommu_viommu_tegra241_cmdqv, IOMMU_VIOMMU_TYPE_TEGRA241_CMDQV: two u64
// outputs (an mmap offset and length of the iommufd), no pointer.
unsafe impl ViommuData for sys::iommu_viommu_tegra241_cmdqv {
    const TYPE: u32 = sys::IOMMU_VIOMMU_TYPE_TEGRA241_CMDQV;
}

/// A vIOMMU, from [`Hwpt::alloc_viommu`]; destroyed (`IOMMU_DESTROY`) on drop. It holds its
/// nest-parent HWPT; nested HWPTs, vDEVICEs, vEVENTQs and hardware queues allocated from it hold
/// it (the kernel refuses, EBUSY, to destroy a vIOMMU still in use).
#[derive(Debug)]
pub struct Viommu {
    /// Destroys the vIOMMU (first, before its parent goes).
    object: Object,
    id: ViommuId,
    ty: u32,
    parent: Arc<Hwpt>,
}

impl Hwpt {
    /// `IOMMU_VIOMMU_ALLOC` (Linux >= 6.13) of a vIOMMU of type `ty` (`enum iommu_viommu_type`)
    /// over this nest-parent HWPT, for the IOMMU behind device `dev`, without driver data.
    /// Errors: Unsupported when the IOMMU driver has no vIOMMU or not of that type (EOPNOTSUPP:
    /// Intel VT-d, virtio-iommu) or the kernel lacks the ioctl (ENOTTY); EINVAL when this HWPT
    /// is not a nest parent; ENOENT for an unknown device.
    #[doc(alias = "IOMMU_VIOMMU_ALLOC")]
    pub fn alloc_viommu(self: &Arc<Self>, dev: DeviceId, ty: u32) -> Result<Viommu> {
        self.viommu_alloc(dev, ty, &mut [])
    }

    /// [`Hwpt::alloc_viommu`] with driver data `data` of the type's struct, which the kernel
    /// fills with its outputs (e.g. an mmap offset). Errors: as [`Hwpt::alloc_viommu`]; EINVAL
    /// for data shorter than the driver's minimum.
    #[doc(alias = "IOMMU_VIOMMU_ALLOC")]
    pub fn alloc_viommu_with<V: ViommuData>(self: &Arc<Self>, dev: DeviceId, data: &mut V) -> Result<Viommu> {
        self.viommu_alloc(dev, V::TYPE, data.as_mut_bytes())
    }

    fn viommu_alloc(self: &Arc<Self>, dev: DeviceId, ty: u32, data: &mut [u8]) -> Result<Viommu> {
        let iommufd = self.iommufd();
        let (dev_id, hwpt_id) = (dev.get(), self.id().get());
        let target = || format!("{} device {dev_id} hwpt {hwpt_id} type {ty:#x}", iommufd.target());
        let mut a = sys::iommu_viommu_alloc {
            type_: ty,
            dev_id,
            hwpt_id,
            data_len: data.len() as u32,
            data_uptr: if data.is_empty() { 0 } else { data.as_mut_ptr() as u64 },
            ..Default::default()
        };
        // SAFETY: data_uptr is 0 (data_len 0) or points at data_len bytes, readable and writable
        // for the call, of a type valid for any bytes (ViommuData: FromBytes) that the kernel
        // reads and writes back within data_len; it keeps no reference.
        let res = unsafe { ioctl::call_unchecked::<req::ViommuAlloc>(iommufd.ioctl_fd(), &mut a) };
        match res {
            Ok(_) => Ok(Viommu {
                object: Object::new(iommufd.clone(), ViommuId::from(a.out_viommu_id), "viommu"),
                id: ViommuId::from(a.out_viommu_id),
                ty,
                parent: self.clone(),
            }),
            Err(e @ (Errno::NOTTY | Errno::OPNOTSUPP)) => Err(Error::unsupported(req::ViommuAlloc::NAME, target(), e)),
            Err(e) => Err(refused::<req::ViommuAlloc>(target, e)),
        }
    }
}

impl Viommu {
    /// The object id.
    pub fn id(&self) -> ViommuId {
        self.id
    }

    /// The vIOMMU type it was allocated with.
    pub fn viommu_type(&self) -> u32 {
        self.ty
    }

    /// The nest-parent HWPT it sits on.
    pub fn parent(&self) -> &Arc<Hwpt> {
        &self.parent
    }

    /// The iommufd it lives in.
    pub fn iommufd(&self) -> &Arc<Iommufd> {
        self.parent.iommufd()
    }

    /// `IOMMU_HWPT_ALLOC` (Linux >= 6.13) of a nested HWPT from this vIOMMU for device `dev`
    /// (which must sit behind the vIOMMU's IOMMU), described by `data`. Errors: as
    /// [`Hwpt::alloc_nested`]; EINVAL for a device behind another IOMMU.
    #[doc(alias = "IOMMU_HWPT_ALLOC")]
    pub fn alloc_nested<D: HwptData>(
        self: &Arc<Self>,
        dev: DeviceId,
        flags: NestedFlags,
        fault: Option<&Arc<FaultQueue>>,
        data: &D,
    ) -> Result<NestedHwpt> {
        self.alloc_nested_raw(dev, flags, fault, D::DATA_TYPE, data.as_bytes())
    }

    /// [`Viommu::alloc_nested`] with untyped data of type `data_type`.
    #[doc(alias = "IOMMU_HWPT_ALLOC")]
    pub fn alloc_nested_raw(
        self: &Arc<Self>,
        dev: DeviceId,
        flags: NestedFlags,
        fault: Option<&Arc<FaultQueue>>,
        data_type: u32,
        data: &[u8],
    ) -> Result<NestedHwpt> {
        let flags = if flags.pasid { sys::IOMMU_HWPT_ALLOC_PASID } else { 0 };
        NestedHwpt::alloc(NestParent::Viommu(self.clone()), dev, flags, fault, data_type, data)
    }

    /// `IOMMU_HWPT_INVALIDATE` (Linux >= 6.13) through the vIOMMU: flushes caches the driver
    /// keys by vDEVICE (device caches, ATC) with `entries` of its type. Returns how many entries
    /// were handled, on failure the count before the refused one. Errors: see
    /// [`Iommufd::invalidate_raw`]; EINVAL for an entry naming an unknown vDEVICE.
    #[doc(alias = "IOMMU_HWPT_INVALIDATE")]
    pub fn invalidate<T: InvalidationEntry>(&self, entries: &[T]) -> Invalidation {
        self.iommufd().invalidate(self.id.into(), entries)
    }

    /// `IOMMU_DESTROY` of the vIOMMU now. Errors: EBUSY (Kernel) while a nested HWPT, vDEVICE,
    /// vEVENTQ, hardware queue or mmap of it exists (it then stays; nothing is retried on drop).
    #[doc(alias = "IOMMU_DESTROY")]
    pub fn destroy(self) -> Result<()> {
        self.object.destroy()
    }
}
