//! A PCI function owned through VFIO: the type drivers hold.

use std::os::fd::AsFd;
use std::sync::{Arc, Mutex, OnceLock};

use vfio_core::{AssignOptions, Container, Device, Error, IrqSet, Mode, PciAddress, RegionInfo, Result, SriovVfs};
use vfio_sys as sys;

use crate::config::{Command, Status, offset};

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

/// An open PCI device. Clones share the device fd, as do the BAR mappings made from it; when
/// the last of them goes the fd closes and the device is released: its group leaves the
/// container it was opened through (group mode, unless the group joined that container through
/// `vfio_group::Container::add_group`) or its cdev is unbound (cdev mode), so that another
/// process can open it.
#[derive(Debug, Clone)]
pub struct PciDevice {
    device: Device,
    address: PciAddress,
    /// The config region's info, asked for on the first config access and shared by clones.
    config: Arc<OnceLock<RegionInfo>>,
    mode: Mode,
    /// What the successful `VFIO_DEVICE_SET_IRQS` requests enabled, shared by clones.
    irqs: Arc<Mutex<IrqMode>>,
}

/// Which of INTx, MSI and MSI-X a [`PciDevice`] has enabled (vfio-pci allows one at a time),
/// as recorded from the successful `VFIO_DEVICE_SET_IRQS` requests it made
/// ([`PciDevice::irq_mode`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum IrqMode {
    /// None of them (the state after open, and after [`PciDevice::disable_irq`]).
    #[default]
    None,
    /// INTx, with its eventfd.
    Intx,
    /// MSI, with eventfds for vectors `0..vectors`.
    Msi {
        /// How many vectors the kernel enabled.
        vectors: u32,
    },
    /// MSI-X, with vectors `0..vectors` enabled (each with an eventfd, unless it was skipped by
    /// a [`PciDevice::set_msix_vectors`] that started past the end).
    Msix {
        /// How many vectors the kernel enabled.
        vectors: u32,
    },
}

impl IrqMode {
    /// The IRQ index enabled ([`INTX_IRQ`], [`MSI_IRQ`] or [`MSIX_IRQ`]), if any.
    pub fn index(self) -> Option<u32> {
        match self {
            IrqMode::None => None,
            IrqMode::Intx => Some(INTX_IRQ),
            IrqMode::Msi { .. } => Some(MSI_IRQ),
            IrqMode::Msix { .. } => Some(MSIX_IRQ),
        }
    }

    /// How many vectors are enabled (1 for INTx, 0 for none).
    pub fn vectors(self) -> u32 {
        match self {
            IrqMode::None => 0,
            IrqMode::Intx => 1,
            IrqMode::Msi { vectors } | IrqMode::Msix { vectors } => vectors,
        }
    }
}

impl PciDevice {
    /// Opens the device at `address` in `mode` (or [`vfio_core::preferred`] when `None`), through
    /// that mode's default container ([`crate::default_container`]), which the device holds
    /// until it closes (every clone and BAR mapping dropped). To ask first whether its IOMMU
    /// group can be opened at all, see [`PciDevice::viability`]. Errors: the device is not
    /// bound to vfio-pci (naming its driver), the mode is unavailable, or the kernel refused a
    /// step (with its errno, and the likely cause: EPERM when the IOMMU cannot isolate MSIs).
    /// A refused open undoes its steps: nothing of it stays held in the default container.
    pub fn open(address: &PciAddress, mode: Option<Mode>) -> Result<Self> {
        let chosen = match mode {
            Some(m) => Ok(m),
            None => vfio_core::preferred(),
        };
        let container = chosen.and_then(crate::default_container);
        match container {
            Ok(c) => {
                // The device holds the default container until its fd closes (its group
                // leaves first, then the container may close): `default_container(mode)`
                // finds this same container for as long as the device is open.
                let opts = AssignOptions::new().hold(Arc::new(c.clone()));
                let device = c.assign_device_with(address, &opts)?;
                Ok(Self::new(device, *address, c.mode()))
            }
            // Without a usable mode, a problem with the device itself (missing, on another
            // driver) is the more useful error: check for one only on this failure path.
            Err(e) => Err(vfio_core::Sysfs::default().require_vfio_pci(address).err().unwrap_or(e)),
        }
    }

    /// Whether the IOMMU group of the device at `address` can be opened now, and if not, which
    /// members on host drivers block it: [`inventory::viability`](crate::inventory::viability)
    /// on the running system's sysfs. Nothing is opened. Errors: the device does not exist.
    pub fn viability(address: &PciAddress) -> Result<crate::Viability> {
        crate::inventory::viability(&vfio_core::Sysfs::default(), address)
    }

    /// Opens the device at `address` in a container the caller made (errors as
    /// [`PciDevice::open`]; a refused open leaves the container as it was).
    pub fn open_in(container: &dyn Container, address: &PciAddress) -> Result<Self> {
        // A device assigned by PCI address is a vfio-pci (or vfio-pci variant) device: no
        // VFIO_DEVICE_GET_INFO check needed, unlike for a device fd of unknown origin.
        let device = container.assign_device(address)?;
        Ok(Self::new(device, *address, container.mode()))
    }

    /// Opens VF `index` of `vfs` (in [`SriovVfs::vfs`] order) in `mode` (or
    /// [`vfio_core::preferred`]) through that mode's default container, presenting the VF token
    /// ([`SriovVfs::open_vf`]); the VF holds `vfs`, so the VFs stay enabled and the PF open (not
    /// reset) until the VF is closed. Errors: as [`PciDevice::open_vf_in`].
    pub fn open_vf(vfs: &Arc<SriovVfs>, index: usize, mode: Option<Mode>) -> Result<Self> {
        let mode = match mode {
            Some(m) => m,
            None => vfio_core::preferred()?,
        };
        let c = crate::default_container(mode)?;
        let vf = vfs.vfs().get(index).copied().ok_or_else(|| {
            Error::invalid(
                "open SR-IOV VF",
                vfs.pf_address(),
                format!("VF index {index}, but the PF has {} VFs enabled", vfs.vfs().len()),
            )
        })?;
        // As `SriovVfs::open_vf`, also holding the default container (see `open`). Tuple
        // fields drop in order: the VFs' owner, then the container.
        let hold: vfio_core::Owner = Arc::new((vfs.clone(), c.clone()));
        let opts = AssignOptions::new().vf_token(*vfs.token()).hold(hold);
        let device = c.assign_device_with(&vf, &opts)?;
        Ok(Self::new(device, vf, c.mode()))
    }

    /// Opens VF `index` of `vfs` in `container`, presenting the VF token: group mode sends
    /// `"<vf> vf_token=<uuid>"` to `VFIO_GROUP_GET_DEVICE_FD` (Linux 5.7), cdev mode binds with
    /// `VFIO_DEVICE_BIND_FLAG_TOKEN` (Linux 6.17). Errors: InvalidArgument for an index past
    /// the VFs; Unsupported for cdev mode before Linux 6.17; EACCES (Kernel, naming the VF and
    /// its PF) when the kernel refuses the token; otherwise those of [`PciDevice::open_in`].
    pub fn open_vf_in(container: &dyn Container, vfs: &Arc<SriovVfs>, index: usize) -> Result<Self> {
        let device = vfs.open_vf(container, index)?;
        Ok(Self::new(device, vfs.vfs()[index], container.mode()))
    }

    /// Whether this function is an SR-IOV VF (sysfs has a `physfn` link for it). Errors: those
    /// of [`vfio_core::Sysfs::physfn`].
    pub fn is_virtfn(&self) -> Result<bool> {
        Ok(self.physfn()?.is_some())
    }

    /// The PF of this SR-IOV VF (its sysfs `physfn` link), or `None` when it is not a VF.
    /// Errors: those of [`vfio_core::Sysfs::physfn`].
    pub fn physfn(&self) -> Result<Option<PciAddress>> {
        vfio_core::Sysfs::default().physfn(&self.address)
    }

    fn new(device: Device, address: PciAddress, mode: Mode) -> Self {
        PciDevice {
            device,
            address,
            config: Arc::default(),
            mode,
            irqs: Arc::default(),
        }
    }

    /// Wraps a device already assigned (or adopted from another process), checking with
    /// `VFIO_DEVICE_GET_INFO` that it is a PCI device. Errors: InvalidArgument when it is not;
    /// the ioctl's errno.
    pub fn from_device(device: Device, address: PciAddress, mode: Mode) -> Result<Self> {
        let info = device.info()?;
        if !info.flags.contains(vfio_core::DeviceFlags::PCI) {
            return Err(Error::invalid(
                "open PCI device",
                address,
                "the VFIO device is not a vfio-pci device",
            ));
        }
        Ok(Self::new(device, address, mode))
    }

    /// The config region's info: `VFIO_DEVICE_GET_REGION_INFO` of index 7 the first time.
    fn config(&self) -> Result<&RegionInfo> {
        if let Some(c) = self.config.get() {
            return Ok(c);
        }
        let info = self.device.region_info(CONFIG_REGION)?;
        Ok(self.config.get_or_init(|| info))
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

    /// The config-space region (index 7), asked of the kernel on first use. Errors: the
    /// errno of `VFIO_DEVICE_GET_REGION_INFO`.
    pub fn config_region(&self) -> Result<RegionInfo> {
        self.config().cloned()
    }

    /// Size of config space: 256 bytes (PCI) or 4 KiB (PCIe). Errors: as for
    /// [`PciDevice::config_region`].
    pub fn config_size(&self) -> Result<u64> {
        Ok(self.config()?.size)
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

    /// Reads `N` bytes of config space at `offset`: one `pread(2)` on the device fd at the config
    /// region's offset. vfio-pci splits it into aligned accesses of at most 4 bytes and answers
    /// virtualized fields (BARs, capability pointers, ...) from its own copy. Errors:
    /// InvalidArgument when `offset + N` passes the end of config space (checked before the
    /// kernel is asked), the pread's errno, Malformed on a short read.
    pub fn config_read<const N: usize>(&self, offset: u16) -> Result<[u8; N]> {
        let mut b = [0u8; N];
        self.device.read_region(self.config()?, offset as u64, &mut b)?;
        Ok(b)
    }

    /// Writes bytes of config space at `offset`: one `pwrite(2)` on the device fd. The kernel
    /// filters what user space may change: writes to read-only or protected fields (ids, status,
    /// most capability fields) succeed but are dropped, so read back to see what took. Errors
    /// as for [`PciDevice::config_read`].
    pub fn config_write(&self, offset: u16, bytes: &[u8]) -> Result<()> {
        self.device.write_region(self.config()?, offset as u64, bytes)
    }

    /// 8-bit config read (see [`PciDevice::config_read`]).
    pub fn config_read8(&self, offset: u16) -> Result<u8> {
        Ok(self.config_read::<1>(offset)?[0])
    }

    /// 16-bit little-endian config read (see [`PciDevice::config_read`]).
    pub fn config_read16(&self, offset: u16) -> Result<u16> {
        Ok(u16::from_le_bytes(self.config_read(offset)?))
    }

    /// 32-bit little-endian config read (see [`PciDevice::config_read`]).
    pub fn config_read32(&self, offset: u16) -> Result<u32> {
        Ok(u32::from_le_bytes(self.config_read(offset)?))
    }

    /// 8-bit config write (see [`PciDevice::config_write`]).
    pub fn config_write8(&self, offset: u16, value: u8) -> Result<()> {
        self.config_write(offset, &[value])
    }

    /// 16-bit little-endian config write (see [`PciDevice::config_write`]).
    pub fn config_write16(&self, offset: u16, value: u16) -> Result<()> {
        self.config_write(offset, &value.to_le_bytes())
    }

    /// 32-bit little-endian config write (see [`PciDevice::config_write`]).
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

    /// The revision id (config 0x08), as sysfs `revision` shows it.
    pub fn revision_id(&self) -> Result<u8> {
        self.config_read8(offset::REVISION)
    }

    /// The header type register (config 0x0e): the layout in bits 0-6 (0 for the endpoints
    /// vfio-pci binds, 1 for a bridge) and the multi-function flag in bit 7.
    pub fn header_type(&self) -> Result<u8> {
        self.config_read8(offset::HEADER_TYPE)
    }

    /// Subsystem vendor id and subsystem id (config 0x2c and 0x2e), as sysfs `subsystem_vendor`
    /// and `subsystem_device` show them. Errors: Unsupported when the header is not type 0
    /// (bridges keep other registers there), besides the config read's errors.
    pub fn subsystem_ids(&self) -> Result<(u16, u16)> {
        let layout = self.header_type()? & 0x7f;
        if layout != 0 {
            return Err(Error::unsupported(
                "subsystem ids",
                self.address,
                format!("header type {layout} has no subsystem id registers (type 0 only)"),
            ));
        }
        Ok((
            self.config_read16(offset::SUBSYSTEM_VENDOR_ID)?,
            self.config_read16(offset::SUBSYSTEM_ID)?,
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

    /// The status register (config 0x06; see [`Status`] for what vfio-pci virtualizes). It
    /// cannot be written through VFIO: the kernel drops writes to it.
    pub fn status(&self) -> Result<Status> {
        Ok(Status::from_bits_retain(self.config_read16(offset::STATUS)?))
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

    /// Enables MSI with one eventfd per vector (`VFIO_DEVICE_SET_IRQS`, MSI index,
    /// `DATA_EVENTFD | ACTION_TRIGGER`), taking what a driver holds: `&[irq]`, `&vec_of_eventfds`,
    /// an iterator of [`BorrowedFd`](std::os::fd::BorrowedFd)s. The fds are borrowed for the
    /// call only, which is enough: the kernel takes its own reference to each eventfd, and keeps
    /// signalling it until the index is disabled ([`PciDevice::disable_irq`]), even if the
    /// caller closes its fd. Afterwards [`PciDevice::irq_mode`] reports MSI with that many
    /// vectors (config space does not: vfio-pci virtualizes the MSI enable bit, see
    /// [`MsiCap::enabled`](crate::MsiCap::enabled)). Errors: EINVAL when the device has fewer
    /// MSI vectors, or INTx or MSI-X is enabled.
    pub fn enable_msi<F: AsFd>(&self, vectors: impl IntoIterator<Item = F>) -> Result<()> {
        self.set_eventfds(MSI_IRQ, 0, vectors)
    }

    /// Enables MSI-X vectors `0..n` with one eventfd each (as [`PciDevice::enable_msi`], on the
    /// MSI-X index). Errors: EINVAL when the device has fewer MSI-X vectors, or INTx or MSI is
    /// enabled.
    pub fn enable_msix<F: AsFd>(&self, vectors: impl IntoIterator<Item = F>) -> Result<()> {
        self.set_eventfds(MSIX_IRQ, 0, vectors)
    }

    /// `VFIO_DEVICE_SET_IRQS` routing vectors `start..` of `index` to `vectors`, recording the
    /// interrupt mode on success.
    fn set_eventfds<F: AsFd>(&self, index: u32, start: u32, vectors: impl IntoIterator<Item = F>) -> Result<()> {
        // The items live in `held` for the whole call, so their borrowed fds stay open.
        let held: Vec<F> = vectors.into_iter().collect();
        let set = IrqSet::eventfds(index, start, held.iter().map(AsFd::as_fd));
        self.device.set_irqs(&set)?;
        let count = start.saturating_add(set.count());
        let mut mode = self.irqs.lock().unwrap_or_else(|p| p.into_inner());
        *mode = match (index, *mode) {
            (INTX_IRQ, _) => IrqMode::Intx,
            (MSI_IRQ, IrqMode::Msi { vectors }) => IrqMode::Msi {
                vectors: vectors.max(count),
            },
            (MSI_IRQ, _) => IrqMode::Msi { vectors: count },
            (MSIX_IRQ, IrqMode::Msix { vectors }) => IrqMode::Msix {
                vectors: vectors.max(count),
            },
            (MSIX_IRQ, _) => IrqMode::Msix { vectors: count },
            (_, m) => m,
        };
        Ok(())
    }

    /// Enables INTx with `eventfd` as its trigger (`VFIO_DEVICE_SET_IRQS`, INTx index,
    /// `DATA_EVENTFD | ACTION_TRIGGER`). INTx is level-triggered, so the kernel masks it each time
    /// it fires (automask: `IrqFlags::AUTOMASKED` in the INTx IRQ info) and signals the eventfd
    /// once; after servicing the device (clearing its interrupt condition), call
    /// [`PciDevice::unmask_intx`]. Errors: EINVAL when the device has no INTx (interrupt pin 0,
    /// so the IRQ info count is 0) or MSI or MSI-X is enabled.
    pub fn enable_intx(&self, eventfd: impl AsFd) -> Result<()> {
        self.set_eventfds(INTX_IRQ, 0, [eventfd])
    }

    /// Unmasks INTx (`VFIO_DEVICE_SET_IRQS`, INTx index, `DATA_NONE | ACTION_UNMASK`): after
    /// the automask of a delivered interrupt, or after [`PciDevice::mask_intx`]. If the device
    /// still asserts the line, the kernel signals the eventfd again right away and the line
    /// stays masked: an interrupt raised while masked is delivered, not lost. Unmasking a line
    /// that is not masked does nothing. Errors: EINVAL when INTx is not enabled or absent.
    pub fn unmask_intx(&self) -> Result<()> {
        self.device.set_irqs(&IrqSet::unmask(INTX_IRQ, 0, 1))
    }

    /// Masks INTx (`VFIO_DEVICE_SET_IRQS`, INTx index, `DATA_NONE | ACTION_MASK`): the kernel
    /// stops the line at the device (it sets INTx disable in the real command register, while
    /// user space sees its own virtual copy of that bit; devices without PCI 2.3 INTx masking
    /// get their host IRQ line disabled instead), so the eventfd is not signalled while masked.
    /// The device's interrupt condition is kept: [`Status::INTERRUPT_STATUS`] still shows it,
    /// and [`PciDevice::unmask_intx`] delivers it. Masking a line already masked (by the
    /// automask or an earlier call) does nothing. Errors: EINVAL when INTx is not enabled or
    /// absent.
    pub fn mask_intx(&self) -> Result<()> {
        self.device.set_irqs(&IrqSet::mask(INTX_IRQ, 0, 1))
    }

    /// Adds MSI-X vectors `start..start + n` with one eventfd each (the index must already be
    /// enabled, and the kernel must allow resizing: no `IrqFlags::NORESIZE`), or enables
    /// vectors `0..start + n` when it is not. The fds are borrowed for the call only, as for
    /// [`PciDevice::enable_msi`].
    pub fn set_msix_vectors<F: AsFd>(&self, start: u32, vectors: impl IntoIterator<Item = F>) -> Result<()> {
        self.set_eventfds(MSIX_IRQ, start, vectors)
    }

    /// Fires vector `vector` of IRQ index `index` from software (`VFIO_DEVICE_SET_IRQS`,
    /// `DATA_NONE | ACTION_TRIGGER`, count 1): the kernel signals the vector's eventfd as if the
    /// device had raised it, without touching the device. For tests of an interrupt path and
    /// for VMMs injecting interrupts. Errors: EINVAL when the index is not enabled or the
    /// vector is past its vectors.
    pub fn trigger_irq(&self, index: u32, vector: u32) -> Result<()> {
        self.device.set_irqs(&IrqSet::trigger(index, vector, 1))
    }

    /// Fires MSI-X vector `vector` from software ([`PciDevice::trigger_irq`] on [`MSIX_IRQ`]).
    pub fn trigger_msix(&self, vector: u32) -> Result<()> {
        self.trigger_irq(MSIX_IRQ, vector)
    }

    /// Fires MSI vector `vector` from software ([`PciDevice::trigger_irq`] on [`MSI_IRQ`]).
    pub fn trigger_msi(&self, vector: u32) -> Result<()> {
        self.trigger_irq(MSI_IRQ, vector)
    }

    /// Which of INTx, MSI and MSI-X this device has enabled through `VFIO_DEVICE_SET_IRQS`, and
    /// how many vectors: the library's record of the successful requests made through this
    /// `PciDevice` and its clones (not asked of the kernel, which has no query for it; requests
    /// sent through [`PciDevice::device`] directly are not seen). Unlike config space, it is
    /// true for MSI: vfio-pci virtualizes the MSI enable bit, which reads clear while MSI is
    /// enabled (see [`MsiCap::enabled`](crate::MsiCap::enabled)).
    pub fn irq_mode(&self) -> IrqMode {
        *self.irqs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Routes the error interrupt ([`ERR_IRQ`]) to `eventfd`. Errors: EINVAL where the device
    /// has none (count 0).
    pub fn enable_err_irq(&self, eventfd: impl AsFd) -> Result<()> {
        self.set_eventfds(ERR_IRQ, 0, [eventfd])
    }

    /// Routes the request interrupt ([`REQ_IRQ`]) to `eventfd`: when it fires, release the
    /// device (drop every handle of it) so the kernel can unbind it.
    pub fn enable_req_irq(&self, eventfd: impl AsFd) -> Result<()> {
        self.set_eventfds(REQ_IRQ, 0, [eventfd])
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
    /// Afterwards [`PciDevice::irq_mode`] is [`IrqMode::None`] when `index` was the enabled one
    /// of INTx, MSI and MSI-X.
    pub fn disable_irq(&self, index: u32) -> Result<()> {
        self.device.set_irqs(&IrqSet::disable(index))?;
        let mut mode = self.irqs.lock().unwrap_or_else(|p| p.into_inner());
        if mode.index() == Some(index) {
            *mode = IrqMode::None;
        }
        Ok(())
    }
}

#[cfg(test)]
impl PciDevice {
    /// A PciDevice over a fake device fd (see `crate::fake`) whose config region is `size`
    /// bytes at `offset`, without the kernel calls of [`PciDevice::from_device`].
    pub(crate) fn fake(device: Device, offset: u64, size: u64) -> Self {
        PciDevice {
            device,
            address: "0000:00:05.0".parse().expect("a valid address"),
            config: Arc::new(OnceLock::from(crate::fake::region(CONFIG_REGION, offset, size, None))),
            mode: Mode::GROUP,
            irqs: Arc::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake;

    /// A PciDevice whose config region is 256 bytes at 0x1000 of a memfd holding `header`.
    fn fake_pci(header: &[u8]) -> (PciDevice, Device) {
        let dev = fake::device(fake::memfd(0x2000, 0));
        fake::write_at(&dev, 0x1000, header);
        (PciDevice::fake(dev.clone(), 0x1000, 256), dev)
    }

    fn header() -> Vec<u8> {
        let mut h = vec![0u8; 64];
        h[0..4].copy_from_slice(&[0xf4, 0x1a, 0x05, 0x10]);
        h[0x06..0x08].copy_from_slice(&0x4210u16.to_le_bytes());
        h[0x08] = 0x02;
        h[0x0e] = 0x80;
        h[0x2c..0x30].copy_from_slice(&[0xf4, 0x1a, 0x04, 0x00]);
        h
    }

    #[test]
    #[cfg_attr(miri, ignore = "memfd and pread, which Miri cannot run")]
    fn header_registers() {
        let (pci, dev) = fake_pci(&header());
        assert_eq!(pci.ids().unwrap(), (0x1af4, 0x1005));
        let status = pci.status().unwrap();
        assert!(status.contains(Status::CAPABILITIES_LIST | Status::SIGNALED_SYSTEM_ERROR));
        assert_eq!(status.devsel_timing(), 1);
        assert_eq!(pci.revision_id().unwrap(), 2);
        assert_eq!(pci.header_type().unwrap(), 0x80, "multi-function, type 0");
        assert_eq!(pci.subsystem_ids().unwrap(), (0x1af4, 0x0004));
        // A bridge header keeps other registers at 0x2c.
        fake::write_at(&dev, 0x1000 + 0x0e, &[0x01]);
        let e = pci.subsystem_ids().unwrap_err();
        assert!(
            matches!(e, Error::Unsupported { .. }) && e.to_string().contains("0000:00:05.0"),
            "{e}"
        );
    }

    /// Writes of each width land little-endian where reads of the same width find them.
    #[test]
    #[cfg_attr(miri, ignore = "memfd and pread/pwrite, which Miri cannot run")]
    fn config_reads_and_writes_are_symmetric() {
        let (pci, dev) = fake_pci(&header());
        pci.config_write8(0x41, 0xab).unwrap();
        pci.config_write16(0x42, 0x1234).unwrap();
        pci.config_write32(0x44, 0xdead_beef).unwrap();
        assert_eq!(pci.config_read8(0x41).unwrap(), 0xab);
        assert_eq!(pci.config_read16(0x42).unwrap(), 0x1234);
        assert_eq!(pci.config_read32(0x44).unwrap(), 0xdead_beef);
        assert_eq!(
            fake::read_at(&dev, 0x1040, 8),
            [0x00, 0xab, 0x34, 0x12, 0xef, 0xbe, 0xad, 0xde]
        );
        assert_eq!(pci.config_read32(0x40).unwrap(), 0x1234_ab00);
        pci.set_command(Command::MEMORY_SPACE | Command::BUS_MASTER).unwrap();
        assert_eq!(pci.command().unwrap(), Command::MEMORY_SPACE | Command::BUS_MASTER);
        assert_eq!(pci.config_read::<2>(offset::COMMAND).unwrap(), [0x06, 0x00]);
    }

    #[test]
    #[cfg_attr(miri, ignore = "memfd, which Miri cannot run")]
    fn config_accesses_past_the_end_are_refused() {
        let (pci, _) = fake_pci(&header());
        for e in [
            pci.config_read8(256).unwrap_err(),
            pci.config_read16(255).unwrap_err(),
            pci.config_read32(253).unwrap_err(),
            pci.config_write8(256, 0).unwrap_err(),
            pci.config_write16(255, 0).unwrap_err(),
            pci.config_write32(0xfffe, 0).unwrap_err(),
        ] {
            assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
            assert!(e.to_string().contains("fake region 7"), "{e}");
        }
        assert!(pci.config_read32(252).is_ok());
    }
}
