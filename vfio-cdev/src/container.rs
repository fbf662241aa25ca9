//! The cdev-mode container: one IOAS in an iommufd, with devices bound to the iommufd and
//! attached to the IOAS.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use vfio_core::{
    Addressing, DmaAccess, DmaBuffer, Errno, Error, Interface, IovaRange, Mode, PciAddress, Result, Sysfs,
};

use crate::{BoundDevice, HwptId, Ioas, Iommufd, IovaPlacement, UnboundDevice};

/// An IOAS used as a [`vfio_core::Container`].
///
/// Its safe map ([`vfio_core::Container::map_dma`], so [`vfio_core::DmaMapping`]) maps the
/// buffer's memfd (`IOMMU_IOAS_MAP_FILE`, Linux >= 6.13): an IOAS mapping by address is pinned
/// only while a device is attached, and by address again at the next attach, so only a mapping
/// by file stays sound when its guard is leaked (see [`vfio_core::dma`]). Anonymous buffers go
/// through [`vfio_core::OwnedDmaMapping`] or [`vfio_core::DmaPool`], which own them.
///
/// The addressing is never taken on trust where the kernel can tell: a no-IOMMU container
/// ([`Addressing::Physical`]) returns the physical address `IOMMU_IOAS_NOIOMMU_GET_PA` gives for
/// each mapping, and refuses (unmapping it again) until a no-IOMMU device is attached and the
/// kernel has one to give; [`Container::attach`] refuses a device of the other kind; and
/// [`Container::from_ioas`] asks the kernel what the adopted IOAS serves.
#[derive(Debug)]
pub struct Container {
    ioas: Arc<Ioas>,
    sysfs: Sysfs,
    addressing: Addressing,
    /// An adopted IOAS ([`Container::from_ioas`]) with IOVA addressing, on a kernel that has
    /// no-IOMMU cdev support: every mapping is checked with `IOMMU_IOAS_NOIOMMU_GET_PA`, in case
    /// whoever owns the IOAS attached a no-IOMMU device to it since.
    check_physical: bool,
    assigned: Arc<Mutex<HashSet<String>>>,
}

/// What `IOMMU_IOAS_NOIOMMU_GET_PA` says about an IOAS (see [`Container::from_ioas`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Served {
    /// It answered: a no-IOMMU device is attached.
    NoIommu,
    /// EOPNOTSUPP: no no-IOMMU domain (nothing attached yet, or IOMMU devices).
    NotNoIommu,
    /// ENOTTY: the kernel has no no-IOMMU cdev support at all.
    NoSupport,
    /// EPERM: the process lacks `CAP_SYS_RAWIO`, the kernel does not say.
    Unknown,
}

/// Owned by an assigned device: keeps the IOAS alive while the device fd is open and takes the
/// device off the container's list once that fd is closed.
struct Assignment {
    _ioas: Arc<Ioas>,
    assigned: Arc<Mutex<HashSet<String>>>,
    name: String,
    // Last: what the caller holds (e.g. an SR-IOV owner) goes after the IOAS.
    _hold: Option<vfio_core::Owner>,
}

impl Drop for Assignment {
    fn drop(&mut self) {
        self.assigned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.name);
    }
}

impl Container {
    /// Opens `/dev/iommu` and allocates a fresh IOAS in it (`IOMMU_IOAS_ALLOC`), for devices
    /// behind an IOMMU ([`Mode::CDEV`]). Errors: Unsupported when the kernel has no iommufd;
    /// the errno of the open or the ioctl.
    #[doc(alias = "IOMMU_IOAS_ALLOC")]
    pub fn new() -> Result<Self> {
        Self::with_iommufd(&Iommufd::open()?, Addressing::Iova)
    }

    /// As [`Container::new`], for no-IOMMU devices (`noiommu-vfioN`, Linux >= 7.3,
    /// [`Mode::CDEV_NOIOMMU`]): mappings return physical addresses
    /// (`IOMMU_IOAS_NOIOMMU_GET_PA`).
    #[doc(alias = "IOMMU_IOAS_ALLOC")]
    pub fn new_noiommu() -> Result<Self> {
        Self::with_iommufd(&Iommufd::open()?, Addressing::Physical)
    }

    /// A new IOAS in an existing iommufd (several containers may share one iommufd), for
    /// devices of the given addressing. Errors: the errno of `IOMMU_IOAS_ALLOC` (ENOMEM).
    #[doc(alias = "IOMMU_IOAS_ALLOC")]
    pub fn with_iommufd(iommufd: &Arc<Iommufd>, addressing: Addressing) -> Result<Self> {
        Ok(Container {
            ioas: Arc::new(iommufd.alloc_ioas()?),
            sysfs: Sysfs::default(),
            addressing,
            check_physical: false,
            assigned: Arc::default(),
        })
    }

    /// A container over an existing IOAS, e.g. one a secondary process adopted with
    /// [`Ioas::adopt`] from the iommufd and IOAS id its primary passed it. Its DMA mappings go
    /// into that IOAS, where every device attached to it sees them. `addressing` says whether
    /// the IOAS serves no-IOMMU devices, so that mappings return physical addresses; it is
    /// checked against the kernel, not trusted: one page is mapped for a moment (a memfd page,
    /// read-only, at an IOVA the kernel picks) and `IOMMU_IOAS_NOIOMMU_GET_PA` asked about it.
    ///
    /// - The kernel gives a physical address: a no-IOMMU device is attached, so
    ///   [`Addressing::Iova`] is refused (its IOVAs would be taken for physical addresses).
    /// - It refuses with EOPNOTSUPP (no no-IOMMU device attached now): either is accepted.
    ///   With [`Addressing::Physical`], every map asks for the physical address and is refused
    ///   until there is one; with [`Addressing::Iova`], every map checks that no no-IOMMU
    ///   device was attached since (one more ioctl per map, in adopted containers only).
    /// - ENOTTY (no no-IOMMU cdev support in the kernel): only [`Addressing::Iova`].
    /// - EPERM (no `CAP_SYS_RAWIO`): the kernel does not say; [`Addressing::Physical`] is
    ///   refused (it could not get physical addresses either), [`Addressing::Iova`] accepted
    ///   unchecked.
    ///
    /// Not detected: an IOAS serving IOMMU and no-IOMMU devices at once (the kernel answers
    /// from the domain that holds the pages, the first attached); only
    /// [`Container::attach`] keeps them apart, and `BoundDevice::attach` by id bypasses it.
    ///
    /// Errors: InvalidArgument or Unsupported as above, naming the IOAS; the kernel's errno
    /// from the probe map (ENOSPC when the IOAS has no free IOVA left).
    #[doc(alias = "IOMMU_IOAS_NOIOMMU_GET_PA")]
    pub fn from_ioas(ioas: Arc<Ioas>, addressing: Addressing) -> Result<Self> {
        let served = probe_served(&ioas)?;
        let target = || format!("{} ioas {}", ioas.iommufd().target(), ioas.id());
        match (addressing, served) {
            (Addressing::Iova, Served::NoIommu) => {
                return Err(Error::invalid(
                    "adopt IOAS",
                    target(),
                    "it serves a no-IOMMU device (IOMMU_IOAS_NOIOMMU_GET_PA gives physical addresses \
                     for its mappings), whose DMA addresses are physical: adopt it with \
                     Addressing::Physical",
                ));
            }
            (Addressing::Physical, Served::NoSupport) => {
                return Err(Error::unsupported(
                    "no-IOMMU cdev",
                    target(),
                    "the kernel has no IOMMU_IOAS_NOIOMMU_GET_PA (ENOTTY: no IOMMUFD_NOIOMMU, Linux >= 7.3), \
                     so no IOAS of it serves no-IOMMU devices: adopt it with Addressing::Iova",
                ));
            }
            (Addressing::Physical, Served::Unknown) => {
                return Err(Error::unsupported(
                    "no-IOMMU cdev",
                    target(),
                    "IOMMU_IOAS_NOIOMMU_GET_PA needs CAP_SYS_RAWIO (EPERM), without which no \
                     physical address can be had for a mapping",
                ));
            }
            _ => {}
        }
        Ok(Container {
            ioas,
            sysfs: Sysfs::default(),
            addressing,
            check_physical: addressing == Addressing::Iova && served == Served::NotNoIommu,
            assigned: Arc::default(),
        })
    }

    /// Closes the container, destroying its IOAS (`IOMMU_DESTROY`) and returning the kernel's
    /// answer, where dropping it would log a failure (warn, target `vfio`). Errors: InvalidArgument, before any ioctl, while the IOAS
    /// is still shared (a device assigned from this container is open, or a clone of
    /// [`Container::ioas`] is held): it is destroyed when the last holder drops it; EBUSY
    /// (Kernel) while a device bound elsewhere or a HWPT still uses it. An adopted IOAS is left
    /// to its owner (Ok).
    #[doc(alias = "IOMMU_DESTROY")]
    pub fn close(self) -> Result<()> {
        let id = self.ioas.id();
        match Arc::try_unwrap(self.ioas) {
            Ok(ioas) => ioas.destroy(),
            Err(ioas) => Err(Error::invalid(
                "close container",
                format!("{} ioas {id}", ioas.iommufd().target()),
                format!(
                    "the IOAS is still held by {} other handle(s) (devices assigned from this container, \
                     or clones of Container::ioas): it is destroyed when the last one is dropped",
                    Arc::strong_count(&ioas) - 1
                ),
            )),
        }
    }

    /// Opens the device's cdev, binds it to this container's iommufd and attaches it to the IOAS,
    /// returning the [`BoundDevice`] so it can later be moved to another IOAS (see
    /// [`Container::attach`]). Unlike [`vfio_core::Container::assign_device`] it does not
    /// record the device as assigned here. Errors: those of [`UnboundDevice::open`], bind and
    /// attach.
    #[doc(alias = "VFIO_DEVICE_BIND_IOMMUFD", alias = "VFIO_DEVICE_ATTACH_IOMMUFD_PT")]
    pub fn bind_device(&self, addr: &PciAddress) -> Result<BoundDevice> {
        self.bind_device_inner(addr, None)
    }

    /// As [`Container::bind_device`], presenting the SR-IOV VF token `token` (Linux >= 6.17,
    /// [`UnboundDevice::bind_with_vf_token`]). Errors: those of `bind_with_vf_token` (EACCES
    /// for a wrong token, naming the VF's PF) and of attach.
    #[doc(alias = "VFIO_DEVICE_BIND_IOMMUFD", alias = "VFIO_DEVICE_BIND_FLAG_TOKEN")]
    pub fn bind_device_with_vf_token(&self, addr: &PciAddress, token: &vfio_core::Uuid) -> Result<BoundDevice> {
        self.bind_device_inner(addr, Some(token))
    }

    fn bind_device_inner(&self, addr: &PciAddress, token: Option<&vfio_core::Uuid>) -> Result<BoundDevice> {
        let unbound = UnboundDevice::open(&self.sysfs, addr)?;
        let bound = match token {
            None => unbound.bind(self.ioas.iommufd()),
            Some(t) => unbound.bind_with_vf_token(self.ioas.iommufd(), t),
        };
        let dev = bound.map_err(|e| vfio_core::explain_vf_token_refusal(&self.sysfs, addr, token.is_some(), e))?;
        self.attach(&dev)?;
        Ok(dev)
    }

    /// Assigns `device` (see [`vfio_core::Container::assign`]) presenting `token` at bind (PCI
    /// functions only) and keeping `hold` alive until the device fd closes.
    fn assign_ref(
        &self,
        device: &vfio_core::DeviceRef,
        token: Option<&vfio_core::Uuid>,
        hold: Option<vfio_core::Owner>,
    ) -> Result<vfio_core::Device> {
        let name = device.vfio_name();
        let mut assigned = self.assigned.lock().unwrap_or_else(|p| p.into_inner());
        if assigned.contains(&name) {
            return Err(Error::invalid(
                "assign device",
                device,
                "already assigned to this container",
            ));
        }
        let dev = match device {
            vfio_core::DeviceRef::Pci(addr) => self.bind_device_inner(addr, token)?,
            other if token.is_some() => {
                return Err(Error::invalid(
                    "assign device",
                    other,
                    "a VF token is presented by PCI functions only",
                ));
            }
            other => self.bind_device_ref(other)?,
        };
        assigned.insert(name.clone());
        let owner = Assignment {
            _ioas: self.ioas.clone(),
            assigned: self.assigned.clone(),
            name,
            _hold: hold,
        };
        Ok(dev.into_device(Some(Arc::new(owner))))
    }

    /// As [`Container::bind_device`], for any device ([`UnboundDevice::open_ref`]).
    #[doc(alias = "VFIO_DEVICE_BIND_IOMMUFD", alias = "VFIO_DEVICE_ATTACH_IOMMUFD_PT")]
    pub fn bind_device_ref(&self, device: &vfio_core::DeviceRef) -> Result<BoundDevice> {
        let dev = UnboundDevice::open_ref(&self.sysfs, device)?.bind(self.ioas.iommufd())?;
        self.attach(&dev)?;
        Ok(dev)
    }

    /// `VFIO_DEVICE_ATTACH_IOMMUFD_PT` of `dev` to this container's IOAS: attaches it, or moves
    /// it here from the IOAS or HWPT it is attached to (the kernel replaces the page table; DMA
    /// from then on goes through this IOAS). Returns the HWPT the kernel attached. Errors:
    /// InvalidArgument, before any ioctl, when the device is bound to another iommufd (ids are
    /// per iommufd, so the kernel could otherwise attach it to an unrelated object there).
    #[doc(alias = "VFIO_DEVICE_ATTACH_IOMMUFD_PT")]
    pub fn attach(&self, dev: &BoundDevice) -> Result<HwptId> {
        if !Arc::ptr_eq(dev.iommufd(), self.ioas.iommufd()) {
            return Err(Error::invalid(
                "attach device",
                dev.name(),
                format!("bound to another iommufd than the one of IOAS {}", self.ioas.id()),
            ));
        }
        if dev.is_noiommu() != self.is_noiommu() {
            return Err(Error::invalid(
                "attach device",
                dev.name(),
                if dev.is_noiommu() {
                    "a no-IOMMU device (noiommu-vfioN) addresses memory physically: use a cdev-noiommu \
                     container (vfio_cdev::Container::new_noiommu)"
                } else {
                    "the device is behind an IOMMU: use a cdev container (vfio_cdev::Container::new), \
                     not a no-IOMMU one"
                },
            ));
        }
        dev.attach(self.ioas.id())
    }

    /// Whether the container serves no-IOMMU devices, so mappings return physical addresses.
    pub fn is_noiommu(&self) -> bool {
        self.addressing == Addressing::Physical
    }

    /// The IOAS behind the container, for cdev-only features.
    pub fn ioas(&self) -> &Arc<Ioas> {
        &self.ioas
    }
}

impl vfio_core::Container for Container {
    fn mode(&self) -> Mode {
        Mode::new(Interface::Cdev, self.addressing)
    }

    #[doc(alias = "IOMMU_IOAS_IOVA_RANGES")]
    fn iova_ranges(&self) -> Result<Vec<IovaRange>> {
        self.ioas.iova_ranges()
    }

    /// Every power of two from the IOAS's IOVA alignment up: iommufd splits mappings into
    /// whatever page sizes the attached IOMMUs have.
    #[doc(alias = "IOMMU_IOAS_IOVA_RANGES")]
    fn page_sizes(&self) -> Result<u64> {
        let align = self.ioas.iova_alignment()?.max(1);
        Ok(!(align.next_power_of_two() - 1))
    }

    /// Opens the device's cdev, binds it to the iommufd and attaches it to the IOAS. Errors:
    /// InvalidArgument while this container still has the device open (every clone of it and
    /// every BAR mapping dropped ends the assignment); the errors of
    /// [`UnboundDevice::open`], bind and attach.
    #[doc(alias = "VFIO_DEVICE_BIND_IOMMUFD", alias = "VFIO_DEVICE_ATTACH_IOMMUFD_PT")]
    fn assign_device(&self, addr: &PciAddress) -> Result<vfio_core::Device> {
        self.assign_device_with(addr, &vfio_core::AssignOptions::default())
    }

    /// Binds with `VFIO_DEVICE_BIND_FLAG_TOKEN` when a VF token is given (Linux >= 6.17,
    /// Unsupported before: see [`UnboundDevice::vf_token_bind_supported`]); EACCES names the
    /// VF's PF. A held object is released after the device fd closes.
    #[doc(alias = "VFIO_DEVICE_BIND_IOMMUFD", alias = "VFIO_DEVICE_BIND_FLAG_TOKEN")]
    fn assign_device_with(&self, addr: &PciAddress, opts: &vfio_core::AssignOptions) -> Result<vfio_core::Device> {
        self.assign_ref(
            &vfio_core::DeviceRef::Pci(*addr),
            opts.vf_token.as_ref(),
            opts.hold.clone(),
        )
    }

    /// As [`vfio_core::Container::assign_device`], for any device
    /// ([`UnboundDevice::open_ref`]): a mediated device's cdev is bound (an iommufd access) and
    /// attached to the IOAS, on machines without an IOMMU too.
    #[doc(alias = "VFIO_DEVICE_BIND_IOMMUFD", alias = "VFIO_DEVICE_ATTACH_IOMMUFD_PT")]
    fn assign(&self, device: &vfio_core::DeviceRef) -> Result<vfio_core::Device> {
        self.assign_ref(device, None, None)
    }

    /// The zero-length form: the kernel checks every affected device is bound to this iommufd;
    /// the ones that are not (id `VFIO_PCI_DEVID_NOT_OWNED`) are named in the error first.
    #[doc(alias = "VFIO_DEVICE_GET_PCI_HOT_RESET_INFO", alias = "VFIO_DEVICE_PCI_HOT_RESET")]
    fn hot_reset(&self, device: &vfio_core::Device) -> Result<vfio_core::HotResetInfo> {
        let ours = device.name().parse::<PciAddress>().is_ok_and(|a| {
            self.assigned
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&a.to_string())
        });
        if !ours {
            return Err(Error::invalid(
                "PCI hot reset",
                device.name(),
                "the device is not assigned to this container",
            ));
        }
        let info = device.hot_reset_info()?;
        if !info.all_owned {
            let foreign: Vec<String> = info
                .devices
                .iter()
                .filter(|d| d.id == u32::MAX)
                .map(|d| d.address.to_string())
                .collect();
            return Err(Error::invalid(
                "PCI hot reset",
                device.name(),
                format!(
                    "it would also reset {}, not bound to this iommufd",
                    if foreign.is_empty() {
                        "devices".to_string()
                    } else {
                        foreign.join(", ")
                    }
                ),
            ));
        }
        device.hot_reset(&[])?;
        Ok(info)
    }

    /// `IOMMU_IOAS_MAP_FILE` of the buffer's memfd at a fixed IOVA (the IOAS holds the file,
    /// so a leaked guard leaves the device the file's pages, whenever they are pinned); in
    /// no-IOMMU mode returns the physical address (see [`vfio_core::Container::map_dma_raw`]). Errors:
    /// Unsupported for a buffer without a memfd ([`vfio_core::Backing::Anonymous`]: use
    /// [`vfio_core::OwnedDmaMapping`], which owns it) or a kernel without `MAP_FILE` (Linux <
    /// 6.13); those of the map otherwise.
    #[doc(alias = "IOMMU_IOAS_MAP_FILE", alias = "IOMMU_IOAS_NOIOMMU_GET_PA")]
    #[inline]
    fn map_dma(&self, buffer: &DmaBuffer, iova: u64, access: DmaAccess) -> Result<u64> {
        let size = buffer.len() as u64;
        let fd = vfio_core::dma::require_memfd(buffer, || self.ioas.target(iova, size), "an iommufd IOAS")?;
        let iova = self
            .ioas
            .map_file(fd, 0, size, IovaPlacement::Fixed(iova), access)
            .map_err(|e| self.no_map_file(e))?;
        self.device_address(iova, size)
    }

    /// Maps at a fixed IOVA; in no-IOMMU mode returns the physical address
    /// (`IOMMU_IOAS_NOIOMMU_GET_PA`), which must cover the whole range contiguously. A mapping
    /// the kernel has no physical address for yet (no no-IOMMU device attached: EOPNOTSUPP) is
    /// unmapped again and refused, never answered with its IOVA.
    #[doc(alias = "IOMMU_IOAS_MAP", alias = "IOMMU_IOAS_NOIOMMU_GET_PA")]
    #[inline]
    unsafe fn map_dma_raw(&self, vaddr: *mut u8, size: u64, iova: u64, access: DmaAccess) -> Result<u64> {
        // SAFETY: forwarded to the caller.
        let iova = unsafe { self.ioas.map_raw(vaddr, size, IovaPlacement::Fixed(iova), access)? };
        self.device_address(iova, size)
    }

    #[doc(alias = "IOMMU_IOAS_UNMAP")]
    fn unmap_dma(&self, iova: u64, size: u64) -> Result<u64> {
        self.ioas.unmap(iova, size)
    }

    /// [`Ioas::import_dma_buf`] at a fixed IOVA; in no-IOMMU mode returns the BAR's physical
    /// address (`IOMMU_IOAS_NOIOMMU_GET_PA`; the import is unmapped again if there is none).
    #[doc(alias = "IOMMU_IOAS_MAP_FILE", alias = "IOMMU_IOAS_NOIOMMU_GET_PA")]
    fn map_dma_buf(&self, buf: &vfio_core::DmaBuf, iova: u64, access: DmaAccess) -> Result<u64> {
        let iova = self.ioas.import_dma_buf(buf, IovaPlacement::Fixed(iova), access)?;
        self.device_address(iova, buf.len())
    }

    /// Unsupported, without asking the kernel: iommufd pins the pages of what it maps by
    /// address, and a BAR's mmap has none (`IOMMU_IOAS_MAP` would fail with EFAULT once a
    /// device is attached): import a dma-buf of the BAR ([`vfio_core::Container::map_dma_buf`]).
    unsafe fn map_mmio_raw(
        &self,
        region: &vfio_core::MappedRegion,
        _offset: u64,
        _len: u64,
        _iova: u64,
        _access: DmaAccess,
    ) -> Result<u64> {
        Err(crate::ioas_dma_buf::mmio_refusal(region))
    }
}

impl Container {
    /// The address the device uses for a fresh mapping at `iova`: the IOVA, or without an IOMMU
    /// the physical address.
    #[inline]
    fn device_address(&self, iova: u64, size: u64) -> Result<u64> {
        if self.addressing == Addressing::Physical {
            return self.noiommu_address(iova, size);
        }
        if self.check_physical {
            self.check_not_physical(iova, size)?;
        }
        Ok(iova)
    }

    /// The physical address behind a fresh no-IOMMU mapping, which must be contiguous. On any
    /// failure the mapping is unmapped again, so that nothing the caller was not told about stays
    /// mapped. Out of line, so the IOMMU map path stays small.
    #[inline(never)]
    fn noiommu_address(&self, iova: u64, size: u64) -> Result<u64> {
        let target = || self.ioas.target(iova, size);
        let answer = self.ioas.noiommu_phys(iova, size);
        let err = match answer {
            Ok((phys, contiguous)) if contiguous >= size => return Ok(phys),
            Ok((_, contiguous)) => Error::unsupported(
                "no-IOMMU DMA",
                target(),
                format!(
                    "only {contiguous:#x} of {size:#x} bytes are physically contiguous: map one page \
                     (or one huge page) at a time"
                ),
            ),
            Err(e) if e.errno() == Some(Errno::OPNOTSUPP) => Error::unsupported(
                "no-IOMMU DMA",
                target(),
                format!(
                    "no no-IOMMU device is attached to ioas {} yet, so the kernel has no physical \
                     address for the mapping (it pins the pages when a device attaches; \
                     IOMMU_IOAS_NOIOMMU_GET_PA: EOPNOTSUPP): assign the device first, then map",
                    self.ioas.id()
                ),
            ),
            Err(e) if e.errno() == Some(Errno::PERM) => Error::unsupported(
                "no-IOMMU DMA",
                target(),
                "IOMMU_IOAS_NOIOMMU_GET_PA needs CAP_SYS_RAWIO (EPERM)",
            ),
            Err(e) => e,
        };
        if let Err(u) = self.ioas.unmap(iova, size) {
            log::warn!(target: "vfio", "unmapping a no-IOMMU mapping without a physical address: {u}");
        }
        Err(err)
    }

    /// For an adopted IOVA container: refuses (and unmaps) a mapping the kernel has a physical
    /// address for, i.e. one in an IOAS that a no-IOMMU device was attached to since adoption.
    #[inline(never)]
    fn check_not_physical(&self, iova: u64, size: u64) -> Result<()> {
        if self.ioas.noiommu_phys(iova, 1).is_err() {
            return Ok(());
        }
        if let Err(u) = self.ioas.unmap(iova, size) {
            log::warn!(target: "vfio", "unmapping a mapping of a no-IOMMU IOAS: {u}");
        }
        Err(Error::invalid(
            "DMA map",
            self.ioas.target(iova, size),
            "a no-IOMMU device is attached to the adopted IOAS now (IOMMU_IOAS_NOIOMMU_GET_PA answers), \
             so its DMA addresses are physical, not IOVAs: adopt the IOAS again with Addressing::Physical",
        ))
    }

    /// The error of a safe map that the kernel could not do by file.
    #[cold]
    #[inline(never)]
    fn no_map_file(&self, e: Error) -> Error {
        match e {
            Error::Unsupported { target, .. } => Error::unsupported(
                "safe DMA mapping",
                target,
                "the kernel lacks IOMMU_IOAS_MAP_FILE (Linux >= 6.13), which cdev mode needs to map a \
                 borrowed buffer safely (an IOAS mapping by address is pinned lazily, by address): \
                 use OwnedDmaMapping or DmaPool (they own their memory), or the unsafe map_dma_raw",
            ),
            e => e,
        }
    }
}

/// Asks the kernel whether `ioas` serves no-IOMMU devices: maps one page of a fresh memfd for a
/// moment and asks `IOMMU_IOAS_NOIOMMU_GET_PA` about it.
fn probe_served(ioas: &Ioas) -> Result<Served> {
    let page = DmaBuffer::new(vfio_core::page_size())?;
    let len = page.len() as u64;
    let iova = match page.memfd() {
        Some(fd) => match ioas.map_file(fd, 0, len, IovaPlacement::Any, DmaAccess::READ) {
            Err(Error::Unsupported { .. }) => None,
            r => Some(r?),
        },
        None => None,
    };
    let iova = match iova {
        Some(iova) => iova,
        // SAFETY: `page` is ours, mapped read-only, and freed only after the unmap below
        // succeeded (leaked otherwise); it hands out no references.
        None => unsafe { ioas.map_raw(page.as_ptr(), len, IovaPlacement::Any, DmaAccess::READ)? },
    };
    let answer = ioas.noiommu_phys(iova, len);
    if let Err(e) = ioas.unmap(iova, len) {
        // Still mapped, perhaps by address: the page must stay allocated.
        std::mem::forget(page);
        return Err(e);
    }
    Ok(match answer {
        Ok(_) => Served::NoIommu,
        Err(e) => match e.errno() {
            Some(Errno::OPNOTSUPP) => Served::NotNoIommu,
            Some(Errno::NOTTY) => Served::NoSupport,
            Some(Errno::PERM) => Served::Unknown,
            _ => return Err(e),
        },
    })
}
