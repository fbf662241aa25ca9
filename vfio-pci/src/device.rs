//! A PCI function owned through VFIO: the type drivers hold.

use vfio_core::{Container, Device, Error, EventFd, IrqSet, MappedRegion, Mode, PciAddress, RegionInfo, Result};
use vfio_sys as sys;

use crate::config::{Command, offset};

/// Region index of the config space.
pub const CONFIG_REGION: u32 = sys::VFIO_PCI_CONFIG_REGION_INDEX;
/// IRQ index of INTx.
pub const INTX_IRQ: u32 = sys::VFIO_PCI_INTX_IRQ_INDEX;
/// IRQ index of MSI.
pub const MSI_IRQ: u32 = sys::VFIO_PCI_MSI_IRQ_INDEX;
/// IRQ index of MSI-X.
pub const MSIX_IRQ: u32 = sys::VFIO_PCI_MSIX_IRQ_INDEX;

/// An open PCI device.
#[derive(Debug, Clone)]
pub struct PciDevice {
    device: Device,
    address: PciAddress,
    config: RegionInfo,
    mode: Mode,
}

impl PciDevice {
    /// Opens the device at `address` in `mode` (or [`vfio_core::preferred`] when `None`), through
    /// that mode's default container. Errors: the device is not bound to vfio-pci (naming its
    /// driver), the mode is unavailable, or the kernel refused a step (with its errno).
    pub fn open(address: &PciAddress, mode: Option<Mode>) -> Result<Self> {
        let mode = match mode {
            Some(m) => m,
            None => vfio_core::preferred()?,
        };
        Self::open_in(crate::default_container(mode)?, address)
    }

    /// Opens the device at `address` in a container the caller made.
    pub fn open_in(container: &dyn Container, address: &PciAddress) -> Result<Self> {
        let device = container.assign_device(address)?;
        Self::from_device(device, *address, container.mode())
    }

    /// Wraps a device already assigned (or adopted from another process).
    pub fn from_device(device: Device, address: PciAddress, mode: Mode) -> Result<Self> {
        let info = device.info()?;
        if !info.flags.contains(vfio_core::DeviceFlags::PCI) {
            return Err(Error::invalid(
                "open PCI device",
                address,
                "the VFIO device is not a vfio-pci device",
            ));
        }
        let config = device.region_info(CONFIG_REGION)?;
        Ok(PciDevice {
            device,
            address,
            config,
            mode,
        })
    }

    /// The general VFIO device (regions, IRQs, reset).
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The PCI address.
    pub fn address(&self) -> PciAddress {
        self.address
    }

    /// The mode it was opened in.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The config-space region (index 7).
    pub fn config_region(&self) -> RegionInfo {
        self.config.clone()
    }

    /// Size of config space: 256 bytes (PCI) or 4 KiB (PCIe).
    pub fn config_size(&self) -> u64 {
        self.config.size
    }

    /// `VFIO_DEVICE_RESET` (function reset) with the command register put back afterwards, since
    /// a reset clears memory decoding and bus mastering.
    pub fn reset(&self) -> Result<()> {
        let cmd = self.command()?;
        self.device.reset()?;
        self.config_write16(offset::COMMAND, cmd.bits())
    }

    /// Reads `N` bytes of config space at `offset` (pread on the config region; range-checked).
    pub fn config_read<const N: usize>(&self, offset: u16) -> Result<[u8; N]> {
        let mut b = [0u8; N];
        self.device.read_region(&self.config, offset as u64, &mut b)?;
        Ok(b)
    }

    /// Writes bytes of config space at `offset` (pwrite; the kernel filters what user space may
    /// change).
    pub fn config_write(&self, offset: u16, bytes: &[u8]) -> Result<()> {
        self.device.write_region(&self.config, offset as u64, bytes)
    }

    /// 8-bit config read.
    pub fn config_read8(&self, offset: u16) -> Result<u8> {
        Ok(self.config_read::<1>(offset)?[0])
    }

    /// 16-bit little-endian config read.
    pub fn config_read16(&self, offset: u16) -> Result<u16> {
        Ok(u16::from_le_bytes(self.config_read(offset)?))
    }

    /// 32-bit little-endian config read.
    pub fn config_read32(&self, offset: u16) -> Result<u32> {
        Ok(u32::from_le_bytes(self.config_read(offset)?))
    }

    /// 16-bit little-endian config write.
    pub fn config_write16(&self, offset: u16, value: u16) -> Result<()> {
        self.config_write(offset, &value.to_le_bytes())
    }

    /// 32-bit little-endian config write.
    pub fn config_write32(&self, offset: u16, value: u32) -> Result<()> {
        self.config_write(offset, &value.to_le_bytes())
    }

    /// Vendor and device id.
    pub fn ids(&self) -> Result<(u16, u16)> {
        Ok((
            self.config_read16(offset::VENDOR_ID)?,
            self.config_read16(offset::DEVICE_ID)?,
        ))
    }

    /// The command register.
    pub fn command(&self) -> Result<Command> {
        Ok(Command::from_bits_retain(self.config_read16(offset::COMMAND)?))
    }

    /// Sets memory-space decoding and bus mastering, which DMA and MSI need.
    pub fn enable_bus_master(&self) -> Result<()> {
        let cmd = self.command()? | Command::MEMORY_SPACE | Command::BUS_MASTER;
        self.config_write16(offset::COMMAND, cmd.bits())
    }

    /// Maps BAR `bar` (0-5) whole. Errors: Unsupported for a BAR that cannot be mmapped (absent,
    /// I/O ports, or no MMAP flag).
    pub fn map_bar(&self, bar: u32) -> Result<MappedRegion> {
        if bar > 5 {
            return Err(Error::invalid(
                "map BAR",
                self.address,
                format!("BAR {bar} does not exist (0-5)"),
            ));
        }
        let info = self.device.region_info(bar)?;
        if info.size == 0 {
            return Err(Error::unsupported(
                "BAR mmap",
                format!("{} BAR {bar}", self.address),
                "the BAR is not implemented",
            ));
        }
        self.device.map_region(&info)
    }

    /// Enables MSI with one eventfd per vector (`VFIO_DEVICE_SET_IRQS`, MSI index, trigger).
    /// Errors: EINVAL when the device has fewer MSI vectors.
    pub fn enable_msi(&self, vectors: &[&EventFd]) -> Result<()> {
        self.set_eventfds(MSI_IRQ, vectors)
    }

    /// Enables MSI-X vectors `0..vectors.len()` with one eventfd each.
    pub fn enable_msix(&self, vectors: &[&EventFd]) -> Result<()> {
        self.set_eventfds(MSIX_IRQ, vectors)
    }

    fn set_eventfds(&self, index: u32, vectors: &[&EventFd]) -> Result<()> {
        use std::os::fd::AsFd;
        let fds: Vec<_> = vectors.iter().map(|e| Some(e.as_fd())).collect();
        self.device.set_irqs(&IrqSet::eventfds(index, 0, &fds))
    }

    /// Enables INTx with `eventfd` as its trigger. INTx is level-triggered: the kernel masks it
    /// each time it fires (automask), so after servicing the device call [`PciDevice::unmask_intx`].
    pub fn enable_intx(&self, eventfd: &EventFd) -> Result<()> {
        self.set_eventfds(INTX_IRQ, &[eventfd])
    }

    /// Unmasks INTx after the device was serviced.
    pub fn unmask_intx(&self) -> Result<()> {
        self.device.set_irqs(&IrqSet::unmask(INTX_IRQ, 0, 1))
    }

    /// Masks INTx.
    pub fn mask_intx(&self) -> Result<()> {
        self.device.set_irqs(&IrqSet::mask(INTX_IRQ, 0, 1))
    }

    /// Adds MSI-X vectors `start..start + vectors.len()` (the index must already be enabled, and
    /// the kernel must allow resizing: no `IrqFlags::NORESIZE`), or enables them when it is not.
    pub fn set_msix_vectors(&self, start: u32, vectors: &[&EventFd]) -> Result<()> {
        use std::os::fd::AsFd;
        let fds: Vec<_> = vectors.iter().map(|e| Some(e.as_fd())).collect();
        self.device.set_irqs(&IrqSet::eventfds(MSIX_IRQ, start, &fds))
    }

    /// Disables every vector of an IRQ index (MSI_IRQ, MSIX_IRQ, INTX_IRQ).
    pub fn disable_irq(&self, index: u32) -> Result<()> {
        self.device.set_irqs(&IrqSet::disable(index))
    }
}
