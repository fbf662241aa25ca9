//! Nested HWPTs: a stage-1 page table the guest owns (described by driver data such as a VT-d
//! stage-1 table or an SMMUv3 STE) over a stage-2 parent, a [`Hwpt`] allocated with
//! [`crate::HwptFlags::nest_parent`] or a [`Viommu`]. DMA through it is translated by both, so it
//! reaches only what the parent's IOAS maps.

use std::sync::Arc;

use iommufd_sys as sys;
use vfio_core::Result;

use crate::object::Object;
use crate::{DeviceId, FaultQueue, Hwpt, HwptData, HwptId, Invalidation, InvalidationEntry, Iommufd, ObjectId, Viommu};

/// Flags of a nested HWPT allocation ([`Hwpt::alloc_nested`], [`Viommu::alloc_nested`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NestedFlags {
    /// `IOMMU_HWPT_ALLOC_PASID` (Linux >= 6.15): the nested HWPT can be attached to a PASID.
    pub pasid: bool,
}

impl NestedFlags {
    fn raw(self) -> u32 {
        if self.pasid { sys::IOMMU_HWPT_ALLOC_PASID } else { 0 }
    }
}

/// What a nested HWPT was allocated over; held so the parent outlives it.
#[derive(Debug, Clone)]
pub enum NestParent {
    /// A paging HWPT allocated with [`crate::HwptFlags::nest_parent`].
    Hwpt(Arc<Hwpt>),
    /// A vIOMMU (over a nest-parent HWPT).
    Viommu(Arc<Viommu>),
}

impl NestParent {
    fn id(&self) -> ObjectId {
        match self {
            NestParent::Hwpt(h) => h.id().into(),
            NestParent::Viommu(v) => v.id().into(),
        }
    }

    fn iommufd(&self) -> &Arc<Iommufd> {
        match self {
            NestParent::Hwpt(h) => h.iommufd(),
            NestParent::Viommu(v) => v.iommufd(),
        }
    }
}

/// A nested HWPT (`IOMMU_HWPT_ALLOC` over a nest parent, Linux >= 6.7, or over a vIOMMU,
/// Linux >= 6.13), destroyed (`IOMMU_DESTROY`) on drop; it holds its parent and its fault queue, so
/// they are destroyed after it. Attach devices (or PASIDs) to [`NestedHwpt::id`]; a destroy
/// while a device is attached is EBUSY (logged on drop, returned by [`NestedHwpt::destroy`]).
#[derive(Debug)]
pub struct NestedHwpt {
    /// Destroys the HWPT (first, before its parent and fault queue go).
    object: Object,
    id: HwptId,
    parent: NestParent,
    fault: Option<Arc<FaultQueue>>,
}

impl NestedHwpt {
    /// `IOMMU_HWPT_ALLOC` of a nested HWPT over `parent` with data of type `data_type`.
    pub(crate) fn alloc(
        parent: NestParent,
        dev: DeviceId,
        flags: u32,
        fault: Option<&Arc<FaultQueue>>,
        data_type: u32,
        data: &[u8],
    ) -> Result<Self> {
        let id = parent
            .iommufd()
            .hwpt_alloc_bytes(dev, parent.id(), flags, fault.map(|f| f.id()), data_type, data)?;
        Ok(NestedHwpt {
            object: Object::new(parent.iommufd().clone(), id, "nested hwpt"),
            id,
            parent,
            fault: fault.cloned(),
        })
    }

    /// The object id (what `VFIO_DEVICE_ATTACH_IOMMUFD_PT` and a PASID attach take).
    pub fn id(&self) -> HwptId {
        self.id
    }

    /// The iommufd the HWPT lives in.
    pub fn iommufd(&self) -> &Arc<Iommufd> {
        self.parent.iommufd()
    }

    /// The HWPT or vIOMMU it nests in.
    pub fn parent(&self) -> &NestParent {
        &self.parent
    }

    /// The fault queue faults of devices attached to it go to, if it was allocated with one.
    pub fn fault_queue(&self) -> Option<&Arc<FaultQueue>> {
        self.fault.as_ref()
    }

    /// `IOMMU_HWPT_INVALIDATE` (Linux >= 6.8) of this HWPT's stage-1 caches with `entries`
    /// (the driver's invalidation type, e.g. `iommu_hwpt_vtd_s1_invalidate`). Returns how many
    /// entries the kernel handled, on failure the count before the refused one. An empty slice
    /// probes whether the driver takes `T` (0 handled, or EINVAL). Errors: see
    /// [`Iommufd::invalidate_raw`].
    #[doc(alias = "IOMMU_HWPT_INVALIDATE")]
    pub fn invalidate<T: InvalidationEntry>(&self, entries: &[T]) -> Invalidation {
        self.iommufd().invalidate(self.id.into(), entries)
    }

    /// `IOMMU_DESTROY` of the HWPT now, returning the kernel's answer instead of logging it.
    /// Errors: EBUSY (Kernel) while a device or PASID is attached (the HWPT then stays, and
    /// nothing is retried on drop).
    #[doc(alias = "IOMMU_DESTROY")]
    pub fn destroy(self) -> Result<()> {
        self.object.destroy()
    }
}

impl Hwpt {
    /// `IOMMU_HWPT_ALLOC` (Linux >= 6.7) of a nested HWPT over this nest-parent HWPT for device
    /// `dev`, described by driver data `data`; with `fault` (Linux >= 6.11) its I/O page faults
    /// go to that queue. Errors: Unsupported when the driver does not take `D`'s data type or the
    /// flags (EOPNOTSUPP); EINVAL when this HWPT is not a nest parent (or is an auto domain, or of
    /// another IOMMU), or the data's size does not match the driver's; ENOENT for an unknown
    /// device or fault queue.
    #[doc(alias = "IOMMU_HWPT_ALLOC")]
    pub fn alloc_nested<D: HwptData>(
        self: &Arc<Self>,
        dev: DeviceId,
        flags: NestedFlags,
        fault: Option<&Arc<FaultQueue>>,
        data: &D,
    ) -> Result<NestedHwpt> {
        NestedHwpt::alloc(
            NestParent::Hwpt(self.clone()),
            dev,
            flags.raw(),
            fault,
            D::DATA_TYPE,
            data.as_bytes(),
        )
    }

    /// [`Hwpt::alloc_nested`] with untyped data of type `data_type` (for types without a Rust
    /// type, and to see how the kernel answers odd data). Errors: as [`Hwpt::alloc_nested`];
    /// EINVAL for data with type NONE, or a non-NONE type without data.
    #[doc(alias = "IOMMU_HWPT_ALLOC")]
    pub fn alloc_nested_raw(
        self: &Arc<Self>,
        dev: DeviceId,
        flags: NestedFlags,
        fault: Option<&Arc<FaultQueue>>,
        data_type: u32,
        data: &[u8],
    ) -> Result<NestedHwpt> {
        NestedHwpt::alloc(NestParent::Hwpt(self.clone()), dev, flags.raw(), fault, data_type, data)
    }
}
