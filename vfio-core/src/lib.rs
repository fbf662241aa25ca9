//! # vfio-core: the mode-independent safe layer of vfio-rs
//!
//! ```text
//!   vfio-pci      (drivers: config space, BARs, interrupts)
//!      |
//!   vfio-group | vfio-cdev     (one crate per mode, each implements `Container`)
//!      |
//!   vfio-core     <- you are here: device fd, regions, IRQs, DMA memory, sysfs, modes, errors
//!      |
//!   vfio-sys, iommufd-sys      (bindgen output of the kernel uapi)
//! ```
//!
//! Everything here works on a VFIO device fd however it was obtained, so both modes share it.
//!
//! ```no_run
//! use vfio_core::{Device, RegionInfo};
//! # fn demo(device: Device) -> vfio_core::Result<()> {
//! let bar0 = device.region_info(0)?;
//! let mmio = device.map_region(&bar0)?;
//! println!("id register: {:#x}", mmio.read32(0)?);
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

pub mod caps;
pub mod container;
pub mod device;
pub mod dma;
pub mod dma_owned;
pub mod dma_pool;
pub mod error;
pub mod eventfd;
#[cfg(feature = "tokio")]
pub mod eventfd_async;
pub mod fdpass;
pub mod hot_reset;
pub mod ioctl;
pub mod iova;
pub mod irq;
pub mod mode;
pub mod node;
pub mod pagemap;
pub mod pci_address;
pub mod region;
pub mod register;
pub mod sysfs;

pub use container::{Container, IovaRange};
pub use device::{Device, DeviceFlags, DeviceInfo, FeatureAccess, Owner};
pub use dma::{Backing, DmaAccess, DmaBuffer, DmaMapping, page_size};
pub use dma_owned::{OwnedDmaMapping, SharedContainer};
pub use dma_pool::{DmaHandle, DmaPool};
pub use error::{Errno, Error, Result};
pub use eventfd::EventFd;
#[cfg(feature = "tokio")]
pub use eventfd_async::AsyncEventFd;
pub use fdpass::{FdKind, FdRequest, SharedFd, recv_fds, recv_request, request, send_fds, send_refusal, send_request};
pub use hot_reset::{DependentDevice, HotResetInfo};
pub use iova::{IovaAllocator, IovaCache};
pub use irq::{IrqAction, IrqData, IrqFlags, IrqInfo, IrqSet};
pub use mode::{MODE_ENV, Mode, Modes, detect, detect_in, preferred};
pub use node::open_node;
pub use pci_address::PciAddress;
pub use region::{MappedRegion, RegionCap, RegionFlags, RegionInfo, SparseArea};
pub use register::{Register, RegisterWidth};
pub use sysfs::{CdevNode, PciIdentity, Sysfs};
