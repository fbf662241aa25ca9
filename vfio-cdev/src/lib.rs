//! # vfio-cdev: the device-cdev + iommufd mode
//!
//! ```text
//!   Iommufd (/dev/iommu)
//!     ├── Ioas (IOMMU_IOAS_ALLOC)          <- Container implements vfio_core::Container
//!     └── Hwpt (IOMMU_HWPT_ALLOC from an Ioas: dirty tracking, nest parent)
//!   UnboundDevice (/dev/vfio/devices/vfioN)
//!     └── bind(iommufd) -> BoundDevice -> attach(ioas) -> vfio_core::Device
//! ```
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

pub mod container;
pub mod device;
pub mod hwpt;
pub mod ioas;
pub mod iommufd;

pub use container::Container;
pub use device::{BoundDevice, UnboundDevice};
pub use hwpt::{HwInfo, Hwpt, HwptFlags};
pub use ioas::{Ioas, IovaPlacement};
pub use iommufd::Iommufd;
