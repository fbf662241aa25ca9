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
//! Its folders are its layers:
//!
//! | module | holds |
//! |---|---|
//! | [`ioctl`] | the typed request layer: one declaration per VFIO/iommufd ioctl, one call path, variable-length buffers, capability-chain parsing |
//! | [`device`] | the VFIO device: its fd, info, regions, IRQs, features, resets |
//! | [`mmio`] | mmapped device regions and checked-once registers |
//! | [`dma`] | memory a device may reach: buffers, mappings, the IOVA allocator and cache, the DMA pool, physical addresses |
//! | [`host`] | the machine around the device: sysfs, `/dev` nodes, modes, PCI addresses, eventfds, fd passing |
//! | [`container`] | the mode-independent container abstraction the mode crates implement |
//! | [`error`] | the one error type |
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

pub mod container;
pub mod device;
pub mod dma;
pub mod error;
pub mod host;
pub mod ioctl;
pub mod mmio;

pub use container::{AssignOptions, Container, IovaRange};
pub use device::migration::{
    self, Chunk, DataStream, MigFlags, MigState, Migration, PrecopyInfo, ResumeStream, SaveStream,
};
pub use device::{
    DependentDevice, Device, DeviceFlags, DeviceInfo, FeatureAccess, FeatureSupport, HotResetInfo, IoValue, Ioeventfd,
    IrqAction, IrqData, IrqFlags, IrqInfo, IrqSet, Owner, RegionCap, RegionFlags, RegionInfo, SparseArea,
};
pub use device::{DirtyBitmap, DmaLogRange, DmaLogging, MAX_LOG_RANGES};
pub use device::{DmaBuf, DmaBufMapping, DmabufId, DrmPlaneType, GfxPlane, PlaneKind, PlaneSource};
pub use dma::PoolBuffer;
pub use dma::{
    Backing, DmaAccess, DmaBuffer, DmaHandle, DmaMapping, DmaPool, IovaAllocator, IovaCache, OwnedDmaMapping,
    SharedContainer, page_size,
};
pub use dma::{PeerMapping, PeerRoute};
pub use error::{Errno, Error, Result, errno_name};
#[cfg(feature = "tokio")]
pub use host::AsyncEventFd;
pub use host::{
    Addressing, CdevNode, EventFd, FdKind, FdRequest, Interface, MAX_FDS, MODE_ENV, Mode, Modes, NamedFd, PciAddress,
    PciIdentity, SharedFd, Sysfs, Uuid, detect, detect_in, open_node, preferred, recv_fds, recv_request, request,
    send_fds, send_refusal, send_request,
};
pub use host::{DeviceRef, Mdev, MdevParent, MdevType, mdev_parents};
pub use host::{SriovVfs, explain_vf_token_refusal};
pub use mmio::{MappedRegion, Register, RegisterWidth};
