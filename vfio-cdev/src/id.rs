//! Typed iommufd object ids: the kernel names every object of an iommufd (IOAS, HWPT, bound
//! device, ...) by a `u32` unique within that iommufd. A distinct type per kind keeps an IOAS id
//! from being passed where a device id is meant.
//!
//! Each converts from and to `u32` (`From`, [`IoasId::get`]) for ids that come from elsewhere (a
//! primary process, a test interface); displayed, it is the bare number.

use std::fmt;

macro_rules! ids {
    ($($(#[$m:meta])* $name:ident;)*) => {$(
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[repr(transparent)]
        pub struct $name(u32);

        impl $name {
            /// The id as the kernel has it.
            #[inline]
            pub const fn get(self) -> u32 {
                self.0
            }
        }

        impl From<u32> for $name {
            #[inline]
            fn from(id: u32) -> Self {
                $name(id)
            }
        }

        impl From<$name> for u32 {
            #[inline]
            fn from(id: $name) -> u32 {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    )*};
}

ids! {
    /// The id of an I/O address space ([`crate::Ioas::id`]).
    IoasId;
    /// The id of a hardware page table ([`crate::Hwpt::id`], or one the kernel allocated when a
    /// device was attached to an IOAS).
    HwptId;
    /// The id a bound device has in its iommufd ([`crate::BoundDevice::devid`]: `out_devid` of
    /// `VFIO_DEVICE_BIND_IOMMUFD`, the `dev_id` of `IOMMU_GET_HW_INFO` and `IOMMU_HWPT_ALLOC`).
    DeviceId;
    /// A page table a device can be attached to: an IOAS or a HWPT (what
    /// `VFIO_DEVICE_ATTACH_IOMMUFD_PT` takes). Made from an [`IoasId`] or a [`HwptId`].
    PtId;
    /// Any object of an iommufd (what `IOMMU_DESTROY` takes). Made from the typed ids.
    ObjectId;
    /// The id of a vIOMMU ([`crate::Viommu::id`], `IOMMU_VIOMMU_ALLOC`).
    ViommuId;
    /// The id of a vDEVICE ([`crate::Vdevice::id`], `IOMMU_VDEVICE_ALLOC`).
    VdeviceId;
    /// The id of a fault queue ([`crate::FaultQueue::id`], `IOMMU_FAULT_QUEUE_ALLOC`; what
    /// `IOMMU_HWPT_ALLOC`'s `fault_id` takes).
    FaultId;
    /// The id of a vEVENTQ ([`crate::Veventq::id`], `IOMMU_VEVENTQ_ALLOC`).
    VeventqId;
    /// The id of a hardware queue ([`crate::HwQueue::id`], `IOMMU_HW_QUEUE_ALLOC`).
    HwQueueId;
}

macro_rules! widen {
    ($($from:ident => $to:ident),* $(,)?) => {$(
        impl From<$from> for $to {
            #[inline]
            fn from(id: $from) -> Self {
                $to(id.0)
            }
        }
    )*};
}

widen! {
    IoasId => PtId,
    HwptId => PtId,
    IoasId => ObjectId,
    HwptId => ObjectId,
    PtId => ObjectId,
    ViommuId => ObjectId,
    VdeviceId => ObjectId,
    FaultId => ObjectId,
    VeventqId => ObjectId,
    HwQueueId => ObjectId,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_convert_and_display_as_the_bare_number() {
        let ioas = IoasId::from(7);
        assert_eq!(ioas.get(), 7);
        assert_eq!(u32::from(ioas), 7);
        assert_eq!(ioas.to_string(), "7");
        assert_eq!(format!("{:#x}", HwptId::from(0xdead).get()), "0xdead");
        assert_eq!(PtId::from(ioas), PtId::from(7));
        assert_eq!(ObjectId::from(HwptId::from(3)).get(), 3);
        assert_eq!(ObjectId::from(PtId::from(ioas)), ObjectId::from(7));
        assert_eq!(size_of::<DeviceId>(), size_of::<u32>());
    }
}
