//! # vfio-group: the legacy VFIO group/container mode
//!
//! ```text
//!   Container (/dev/vfio/vfio, type1v2 | type1 | no-IOMMU)
//!     └── Group (/dev/vfio/<N> | /dev/vfio/noiommu-<N>)
//!           └── Device (VFIO_GROUP_GET_DEVICE_FD)  -> vfio_core::Device
//! ```
//!
//! [`Container`] implements [`vfio_core::Container`]: assigning a PCI device opens its group,
//! adds it to the container (setting the IOMMU type on the first group) and returns the device.
//! Beyond that it offers:
//!
//! - [`Container::from_fd`] to adopt an fd, [`Container::set_iommu`] to choose type1 or type1v2;
//! - [`Container::info`] (`VFIO_IOMMU_GET_INFO`: flags, page sizes, IOVA ranges, DMA mappings
//!   available, dirty tracking) and [`Container::backend`]: the type1 driver or iommufd's
//!   compatibility container, whose unmap rules differ (see `unmap_dma`);
//! - [`Container::unmap_all`], [`Container::remove_group`], and type1 dirty-page tracking
//!   ([`Container::dirty_tracking_start`], [`Container::dirty_bitmap`]);
//! - in a no-IOMMU container, DMA by physical address: `map_dma_raw` locks the memory and returns
//!   its physical address from `/proc/self/pagemap` ([`vfio_core::dma::pagemap`], `CAP_SYS_ADMIN`);
//! - [`legacy`]: the deprecated group-only API.
//!
//! ```no_run
//! use vfio_core::{Container as _, DmaAccess, DmaBuffer, DmaMapping};
//! # fn demo() -> vfio_core::Result<()> {
//! let container = vfio_group::Container::open(vfio_core::Addressing::Iova)?;
//! let device = container.assign_device(&"0000:00:03.0".parse()?)?;
//! let buf = DmaBuffer::new(4096)?;
//! let map = DmaMapping::new(&container, &buf, 0x10_0000, DmaAccess::READ_WRITE)?;
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

pub mod container;
mod dirty;
mod dma;
pub mod group;
mod info;
pub mod legacy;
mod noiommu;
mod peer;
mod vaddr;

pub use container::{Backend, Container, IommuType};
pub use group::{Group, GroupStatus};
pub use info::{IommuInfo, MigrationInfo};
