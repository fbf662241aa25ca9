//! # vfio-cdev: the device-cdev + iommufd mode
//!
//! ```text
//!   Iommufd (/dev/iommu)
//!     ├── Ioas   iommufd.alloc_ioas()                 <- Container implements vfio_core::Container
//!     └── Hwpt   iommufd.alloc_hwpt(dev, ioas, ..)    (dirty tracking, nest parent)
//!   UnboundDevice (/dev/vfio/devices/vfioN)
//!     └── bind(iommufd) -> BoundDevice -> attach(ioas or hwpt id) -> vfio_core::Device
//! ```
//!
//! Objects of an iommufd are named by typed ids ([`IoasId`], [`HwptId`], [`DeviceId`]; a device
//! attaches to a [`PtId`], either of the first two). Every ioctl goes through vfio-core's typed
//! request layer ([`vfio_core::ioctl`]); each wrapper carries the kernel's name as a doc alias.
//!
//! ```no_run
//! use vfio_core::{Container as _, DmaAccess, DmaBuffer, DmaMapping};
//! # fn demo() -> vfio_core::Result<()> {
//! let container = vfio_cdev::Container::new()?;
//! let device = container.assign_device(&"0000:00:03.0".parse()?)?;
//! let buf = DmaBuffer::new(4096)?;
//! let map = DmaMapping::new(&container, &buf, 0x10_0000, DmaAccess::READ_WRITE)?;
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

#[cfg(feature = "tokio")]
pub mod async_queue;
pub mod container;
pub mod device;
pub mod fault;
pub mod hw_info;
pub mod hw_queue;
pub mod hwpt;
pub mod id;
pub mod invalidation;
pub mod ioas;
pub mod ioas_dma_buf;
pub mod iommufd;
pub mod nested_hwpt;
pub mod vdevice;
pub mod veventq;
pub mod viommu;
pub mod viommu_mmap;

#[cfg(feature = "tokio")]
pub use async_queue::{AsyncFaultQueue, AsyncVeventq};
pub use container::Container;
pub use device::{BoundDevice, UnboundDevice};
pub use fault::{Fault, FaultCookie, FaultPerm, FaultQueue, PageResponseCode};
pub use hw_info::HwInfo;
pub use hw_info::{HwInfoKind, HwInfoType};
pub use hw_queue::{HwQueue, HwQueueType};
pub use hwpt::HwptData;
pub use hwpt::{Hwpt, HwptFlags};
pub use id::{DeviceId, HwptId, IoasId, ObjectId, PtId};
pub use id::{FaultId, HwQueueId, VdeviceId, VeventqId, ViommuId};
pub use invalidation::{Invalidation, InvalidationEntry};
pub use ioas::{Ioas, IoasCopy, IovaPlacement};
pub use ioas_dma_buf::IoasDmaBuf;
pub use iommufd::Iommufd;
pub use nested_hwpt::{NestParent, NestedFlags, NestedHwpt};
pub use vdevice::Vdevice;
pub use veventq::{Vevent, VeventData, Veventq};
pub use viommu::{Viommu, ViommuData};
pub use viommu_mmap::ViommuMapping;

// `impl Iommufd` for IOMMU_IOAS_CHANGE_PROCESS (a live iommufd handed to a new process).
mod change_process;
mod object;

use vfio_core::ioctl::{Errno, Request};

/// The error of a refused request `R`, with its target formatted only now: kept out of line so
/// that the fast paths (IOAS map and unmap) carry neither the formatting nor the error.
#[cold]
#[inline(never)]
pub(crate) fn refused<R: Request>(target: impl FnOnce() -> String, errno: Errno) -> vfio_core::Error {
    use vfio_core::dma::refusal::{MapBackend, explain_map_refusal};
    use vfio_core::ioctl::requests as req;
    let err = vfio_core::ioctl::kernel_error::<R>(target(), errno);
    // A refused map: RLIMIT_MEMLOCK (ENOMEM) is the cause the library can find out.
    if [req::IoasMap::NAME, req::IoasMapFile::NAME, req::IoasCopy::NAME].contains(&R::NAME) {
        explain_map_refusal(err, MapBackend::Iommufd, &vfio_core::Sysfs::default())
    } else {
        err
    }
}
