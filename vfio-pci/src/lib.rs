//! # vfio-pci: user-space PCI drivers over VFIO
//!
//! The crate most drivers start from. It opens a PCI function in the best mode the kernel offers
//! (device cdev + iommufd, else the legacy group/container API, else no-IOMMU) and gives typed
//! access to its config space, BARs and interrupts.
//!
//! ```text
//!   vfio-pci   <- you are here: PciDevice (config space, BARs, MSI)
//!   vfio-group | vfio-cdev    (the container of each mode)
//!   vfio-core                 (device fd, regions, IRQs, DMA memory)
//! ```
//!
//! ```no_run
//! use vfio_pci::{DmaAccess, DmaBuffer, DmaMapping, EventFd, PciDevice};
//! # fn demo() -> vfio_pci::Result<()> {
//! let addr = "0000:00:03.0".parse()?;
//! let dev = PciDevice::open(&addr, None)?;
//! let bar0 = dev.bar(0)?; // mmapped where the kernel allows, pread/pwrite elsewhere
//! println!("id {:#x}", bar0.read32(0)?);
//! let doorbell = bar0.register::<u32>(0x04)?; // checked once: a raw pointer's cost per access
//! doorbell.write(1);
//! dev.enable_bus_master()?;
//! let irq = EventFd::new()?;
//! dev.enable_msi([&irq])?;
//! let container = vfio_pci::default_container(dev.mode())?;
//! let buf = DmaBuffer::new(4096)?;
//! let map = DmaMapping::new(&*container, &buf, 0x10_0000, DmaAccess::READ_WRITE)?;
//! # Ok(()) }
//! ```
//!
//! The [`guide`] walks through a whole driver: open, config space, BARs, DMA, interrupts and
//! teardown, using this crate's re-exports only.

#![deny(missing_docs)]

pub mod bar;
pub mod binding;
pub mod capability;
pub mod config;
pub mod containers;
pub mod device;
pub mod doctor;
#[cfg(test)]
mod fake;
pub mod guide;
pub mod inventory;
pub mod peer;

pub use bar::{Bar, BarInfo, BarKind};
pub use binding::VfioPciBinding;
pub use capability::{Capability, MsiCap, MsixCap, PcieCap, PmCap, VendorCap};
pub use config::{Command, Status};
pub use containers::{DefaultContainer, default_container};
pub use device::{CONFIG_REGION, ERR_IRQ, INTX_IRQ, IrqMode, MSI_IRQ, MSIX_IRQ, PciDevice, REQ_IRQ, ROM_REGION};
pub use inventory::{DeviceSummary, Viability};
pub use vfio_core::RegisterWidth;
pub use vfio_core::{Mode, PciAddress};
// The vfio-core types a driver touches, so that a driver depends on `vfio_pci` alone: errors,
// DMA memory and mappings, eventfds, mapped regions and registers, IRQ requests, the container
// trait, modes and addresses.
pub use vfio_core::{
    Addressing, Container, Device, DmaAccess, DmaBuffer, DmaMapping, DmaPool, Errno, Error, EventFd, Interface,
    IovaRange, IrqFlags, IrqInfo, IrqSet, MappedRegion, OwnedDmaMapping, RegionInfo, Register, Result, SharedContainer,
    SriovVfs,
};
// ... and what a driver asks the machine and the pool: which modes it offers (`detect`,
// `Modes`), device flags (reset), pool handles and views.
pub use vfio_core::{DeviceFlags, DmaHandle, Modes, PoolBuffer, detect};
