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
/// IRQ index of the error interrupt: signalled when AER reports an uncorrectable error on the
/// device (kernels before 6.x offer it on PCIe devices only; count 0 otherwise).
pub const ERR_IRQ: u32 = sys::VFIO_PCI_ERR_IRQ_INDEX;
/// IRQ index of the request interrupt: signalled when the kernel wants the device back (its
/// unbind from vfio-pci waits until every fd of the device is closed).
pub const REQ_IRQ: u32 = sys::VFIO_PCI_REQ_IRQ_INDEX;
/// Region index of the expansion ROM.
pub const ROM_REGION: u32 = sys::VFIO_PCI_ROM_REGION_INDEX;

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
        let chosen = match mode {
            Some(m) => Ok(m),
            None => vfio_core::preferred(),
        };
        let container = chosen.and_then(crate::default_container);
        match container {
            Ok(c) => Self::open_in(c, address),
            // Without a usable mode, a problem with the device itself (missing, on another
            // driver) is the more useful error: check for one only on this failure path.
            Err(e) => Err(vfio_core::Sysfs::default().require_vfio_pci(address).err().unwrap_or(e)),
        }
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

    /// PCI hot reset (a secondary bus or slot reset) through `container`, the one the device was
    /// opened in (for [`PciDevice::open`]: `default_container(dev.mode())`). Every device the
    /// reset reaches must be owned through that container, which is checked first: an error
    /// names any that is not. The command register is put back afterwards. Returns the addresses
    /// of all devices reset, this one included: the others lost their state too. Errors: ENODEV
    /// when no bus or slot reset reaches the device (e.g. on a root bus).
    pub fn hot_reset(&self, container: &dyn Container) -> Result<Vec<PciAddress>> {
        let cmd = self.command()?;
        let info = container.hot_reset(&self.device)?;
        self.config_write16(offset::COMMAND, cmd.bits())?;
        Ok(info.devices.iter().map(|d| d.address).collect())
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

    /// Writes the command register (the kernel's vfio-pci virtualizes some bits, e.g. INTx
    /// disable; read it back to see what the device took).
    pub fn set_command(&self, command: Command) -> Result<()> {
        self.config_write16(offset::COMMAND, command.bits())
    }

    /// The class code: base class, subclass and programming interface (config 0x09-0x0b).
    pub fn class(&self) -> Result<u32> {
        let b: [u8; 3] = self.config_read(offset::CLASS)?;
        Ok(u32::from(b[2]) << 16 | u32::from(b[1]) << 8 | u32::from(b[0]))
    }

    /// Clears bus mastering: the device can no longer start DMA (nor send MSIs).
    pub fn disable_bus_master(&self) -> Result<()> {
        self.set_command(self.command()? - Command::BUS_MASTER)
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

    /// Routes the error interrupt ([`ERR_IRQ`]) to `eventfd`. Errors: EINVAL where the device
    /// has none (count 0).
    pub fn enable_err_irq(&self, eventfd: &EventFd) -> Result<()> {
        self.set_eventfds(ERR_IRQ, &[eventfd])
    }

    /// Routes the request interrupt ([`REQ_IRQ`]) to `eventfd`: when it fires, release the
    /// device (drop every handle of it) so the kernel can unbind it.
    pub fn enable_req_irq(&self, eventfd: &EventFd) -> Result<()> {
        self.set_eventfds(REQ_IRQ, &[eventfd])
    }

    /// Reads the whole expansion ROM (region 6; an image starts with 0x55 0xAA). Errors:
    /// Unsupported when the device has no ROM; the pread's errno otherwise.
    pub fn read_rom(&self) -> Result<Vec<u8>> {
        let info = self.device.region_info(ROM_REGION)?;
        if info.size == 0 {
            return Err(Error::unsupported(
                "expansion ROM",
                self.address,
                "the device has no ROM BAR",
            ));
        }
        let len = usize::try_from(info.size)
            .map_err(|_| Error::malformed("read ROM", self.address, format!("ROM size {:#x}", info.size)))?;
        let mut rom = vec![0u8; len];
        self.device.read_region(&info, 0, &mut rom)?;
        Ok(rom)
    }

    /// Disables every vector of an IRQ index (MSI_IRQ, MSIX_IRQ, INTX_IRQ, ERR_IRQ, REQ_IRQ).
    pub fn disable_irq(&self, index: u32) -> Result<()> {
        self.device.set_irqs(&IrqSet::disable(index))
    }
}
