//! # Writing a driver
//!
//! A walk from finding a device to tearing it down, with this crate's re-exports only: a
//! driver needs `vfio_pci` as its one dependency. The examples use QEMU's `edu` device
//! (`-device edu`: BAR0 registers, a DMA engine, one MSI vector); `examples/edu.rs` and
//! `examples/nvme_identify.rs` are the same steps as programs that run in a minute.
//!
//! ## 1. Before opening: the device, its driver, its group
//!
//! VFIO opens a device bound to `vfio-pci`, and takes DMA ownership of its whole IOMMU group:
//! every other function in that group must be on `vfio-pci` too, unbound, or a bridge.
//! [`PciDevice::viability`] asks sysfs, without opening anything, and names the members that
//! block the group. [`VfioPciBinding`] moves a device
//! to `vfio-pci` (and back when it is dropped, if asked to); `lsvfio doctor` explains
//! everything else (permissions, IOMMU, interrupt remapping, memlock limits).
//!
//! ```no_run
//! use vfio_pci::{PciAddress, PciDevice, Viability};
//! # fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let addr: PciAddress = "0000:00:03.0".parse()?;
//! match PciDevice::viability(&addr)? {
//!     Viability::Viable { group } => println!("group {group} can be opened"),
//!     Viability::NotViable { group, blockers } => {
//!         for (dev, driver) in &blockers {
//!             eprintln!("group {group}: unbind {dev} from {driver} (or bind it to vfio-pci)");
//!         }
//!         return Err("IOMMU group not viable".into());
//!     }
//!     other => return Err(format!("{other}").into()),
//! }
//! # Ok(()) }
//! ```
//!
//! ## 2. Opening
//!
//! [`PciDevice::open`] picks the best mode the kernel offers (device cdev + iommufd, else the
//! group/container API, else no-IOMMU; `VFIO_RS_MODE` or `Some(mode)` forces one) and assigns
//! the device to that mode's default container ([`default_container`](crate::default_container)).
//! Clones of a [`PciDevice`] share the device fd. Every error is a [`Error`](crate::Error)
//! naming the device, the step and the kernel's errno, with the likely cause where the library
//! can find it.
//!
//! ```no_run
//! use vfio_pci::{Command, PciDevice};
//! # fn demo() -> vfio_pci::Result<()> {
//! let dev = PciDevice::open(&"0000:00:03.0".parse()?, None)?;
//! let (vendor, device) = dev.ids()?;
//! println!("{vendor:04x}:{device:04x} in {} mode", dev.mode());
//! // DMA and MSI need memory decoding and bus mastering.
//! dev.enable_bus_master()?;
//! assert!(dev.command()?.contains(Command::BUS_MASTER));
//! # Ok(()) }
//! ```
//!
//! ## 3. Registers
//!
//! [`PciDevice::bar`] gives a BAR's registers, bounds- and alignment-checked, through an mmap
//! where the kernel allows one and `pread`/`pwrite` on the device fd elsewhere.
//!
//! ```no_run
//! # fn demo(dev: &vfio_pci::PciDevice) -> vfio_pci::Result<()> {
//! let regs = dev.bar(0)?;
//! assert_eq!(regs.read32(0x00)?, 0x010000ed); // edu's ID register
//! regs.write32(0x04, 0x1234)?; // liveness: reads back inverted
//! assert_eq!(regs.read32(0x04)?, !0x1234);
//! # Ok(()) }
//! ```
//!
//! ## 4. DMA
//!
//! DMA memory is a [`DmaBuffer`](crate::DmaBuffer) mapped at an IOVA of the container the
//! device was opened in. [`DmaMapping`](crate::DmaMapping) borrows both, so neither can go
//! while the device can reach the memory, and unmaps on drop; its
//! [`device_addr`](crate::DmaMapping::device_addr) is what the device is programmed with (the
//! IOVA, or the physical address without an IOMMU). IOVAs are page aligned and inside the
//! container's [`iova_ranges`](crate::Container::iova_ranges) (x86 reserves the MSI window at
//! 0xfee00000): a mapping that breaks a rule is refused with an error naming it. A driver that
//! does I/O on many buffers allocates from a [`DmaPool`](crate::DmaPool) (IOVAs chosen for
//! it, a translation per I/O without a map); one that stores mappings in its structs without
//! lifetimes uses [`OwnedDmaMapping`](crate::OwnedDmaMapping) with a
//! [`DefaultContainer`](crate::DefaultContainer) share.
//!
//! ```no_run
//! use vfio_pci::{DmaAccess, DmaBuffer, DmaMapping};
//! # fn demo(dev: &vfio_pci::PciDevice) -> vfio_pci::Result<()> {
//! let container = vfio_pci::default_container(dev.mode())?; // the one `dev` was opened in
//! let buf = DmaBuffer::new(4096)?;
//! buf.write(0, b"hello, device")?;
//! let map = DmaMapping::new(&*container, &buf, 0x10_0000, DmaAccess::READ_WRITE)?;
//! let regs = dev.bar(0)?;
//! // edu: copy 13 bytes from RAM into its buffer at 0x40000 (registers 0x80..0x98).
//! regs.write32(0x80, map.device_addr() as u32)?;
//! regs.write32(0x84, (map.device_addr() >> 32) as u32)?;
//! regs.write32(0x88, 0x40000)?;
//! regs.write32(0x90, 13)?;
//! regs.write32(0x98, 1 | 4)?; // start, RAM -> device, raise an interrupt when done
//! # Ok(()) }
//! ```
//!
//! ## 5. Interrupts
//!
//! Each vector signals an [`EventFd`](crate::EventFd). [`PciDevice::enable_msi`],
//! [`enable_msix`](PciDevice::enable_msix) and [`set_msix_vectors`](PciDevice::set_msix_vectors)
//! take the eventfds as the driver holds them (`&[irq]`, `&Vec<EventFd>`, borrowed fds),
//! for the call only: the kernel keeps its own reference to each until the vectors are
//! disabled. [`PciDevice::irq_mode`] says what is enabled (config space cannot: vfio-pci
//! virtualizes MSI's enable bit). [`trigger_msix`](PciDevice::trigger_msix) and
//! [`trigger_msi`](PciDevice::trigger_msi) fire a vector from software, to test the
//! interrupt path without the device.
//!
//! ```no_run
//! use std::time::Duration;
//! use vfio_pci::{EventFd, IrqMode};
//! # fn demo(dev: &vfio_pci::PciDevice, nvme: &vfio_pci::PciDevice) -> vfio_pci::Result<()> {
//! let irq = EventFd::new()?;
//! dev.enable_msi([&irq])?;
//! assert_eq!(dev.irq_mode(), IrqMode::Msi { vectors: 1 });
//! match irq.wait_timeout(Duration::from_secs(1))? {
//!     Some(n) => println!("{n} interrupt(s)"),
//!     None => println!("no interrupt yet"),
//! }
//! // The same eventfd, fired from software.
//! dev.trigger_msi(0)?;
//! assert!(irq.wait_timeout(Duration::from_secs(1))?.is_some());
//!
//! // MSI-X (an NVMe controller, say): one eventfd per vector, from the Vec the driver keeps.
//! let vectors: Vec<EventFd> = (0..4).map(|_| EventFd::new()).collect::<Result<_, _>>()?;
//! nvme.enable_msix(&vectors)?;
//! nvme.trigger_msix(3)?;
//! assert!(vectors[3].wait_timeout(Duration::from_secs(1))?.is_some());
//! # Ok(()) }
//! ```
//!
//! ## 6. Teardown
//!
//! Stop the device first (no DMA, no interrupts), then drop what was built, newest first:
//! mappings, buffers, the device, the container handle. Every handle closes what it owns on
//! drop and logs what it could not; nothing depends on the order for soundness (a leaked
//! [`DmaMapping`](crate::DmaMapping) leaks its pages rather than freeing them under the
//! device), and no order makes the kernel answer EBUSY. When the last device opened through the
//! default container and the last [`DefaultContainer`](crate::DefaultContainer) handle are
//! gone, the container is closed and the process holds nothing of VFIO: another process can
//! open the device.
//!
//! ```no_run
//! # fn demo(dev: vfio_pci::PciDevice, map: vfio_pci::DmaMapping<'_>) -> vfio_pci::Result<()> {
//! dev.disable_irq(vfio_pci::MSI_IRQ)?;
//! dev.disable_bus_master()?;
//! drop(map); // unmapped
//! drop(dev); // the group leaves the container, the device fd closes
//! # Ok(()) }
//! ```

#[allow(unused_imports)]
use crate::{PciDevice, VfioPciBinding};
