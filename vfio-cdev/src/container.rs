//! The cdev-mode container: one IOAS in an iommufd, with devices bound to the iommufd and
//! attached to the IOAS.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use vfio_core::{Addressing, DmaAccess, Error, Interface, IovaRange, Mode, PciAddress, Result, Sysfs};

use crate::{BoundDevice, HwptId, Ioas, Iommufd, IovaPlacement, UnboundDevice};

/// An IOAS used as a [`vfio_core::Container`].
#[derive(Debug)]
pub struct Container {
    ioas: Arc<Ioas>,
    sysfs: Sysfs,
    addressing: Addressing,
    assigned: Arc<Mutex<HashSet<PciAddress>>>,
}

/// Owned by an assigned device: keeps the IOAS alive while the device fd is open and takes the
/// device off the container's list once that fd is closed.
struct Assignment {
    _ioas: Arc<Ioas>,
    assigned: Arc<Mutex<HashSet<PciAddress>>>,
    addr: PciAddress,
}

impl Drop for Assignment {
    fn drop(&mut self) {
        self.assigned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.addr);
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
            assigned: Arc::default(),
        })
    }

    /// A container over an existing IOAS, e.g. one a secondary process adopted with
    /// [`Ioas::adopt`] from the iommufd and IOAS id its primary passed it. Its DMA mappings go
    /// into that IOAS, where every device attached to it sees them. `addressing` says whether
    /// the IOAS serves no-IOMMU devices, so that mappings return physical addresses (as
    /// [`vfio_group::Container::from_fd`](https://docs.rs/vfio-group) takes it for containers).
    pub fn from_ioas(ioas: Arc<Ioas>, addressing: Addressing) -> Self {
        Container {
            ioas,
            sysfs: Sysfs::default(),
            addressing,
            assigned: Arc::default(),
        }
    }

    /// Opens the device's cdev, binds it to this container's iommufd and attaches it to the IOAS,
    /// returning the [`BoundDevice`] so it can later be moved to another IOAS (see
    /// [`Container::attach`]). Unlike [`vfio_core::Container::assign_device`] it does not
    /// record the device as assigned here. Errors: those of [`UnboundDevice::open`], bind and
    /// attach.
    #[doc(alias = "VFIO_DEVICE_BIND_IOMMUFD", alias = "VFIO_DEVICE_ATTACH_IOMMUFD_PT")]
    pub fn bind_device(&self, addr: &PciAddress) -> Result<BoundDevice> {
        let dev = UnboundDevice::open(&self.sysfs, addr)?.bind(self.ioas.iommufd())?;
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
        let mut assigned = self.assigned.lock().unwrap_or_else(|p| p.into_inner());
        if assigned.contains(addr) {
            return Err(Error::invalid(
                "assign device",
                addr,
                "already assigned to this container",
            ));
        }
        let dev = self.bind_device(addr)?;
        assigned.insert(*addr);
        let owner = Assignment {
            _ioas: self.ioas.clone(),
            assigned: self.assigned.clone(),
            addr: *addr,
        };
        Ok(dev.into_device(Some(Arc::new(owner))))
    }

    /// The zero-length form: the kernel checks every affected device is bound to this iommufd;
    /// the ones that are not (id `VFIO_PCI_DEVID_NOT_OWNED`) are named in the error first.
    #[doc(alias = "VFIO_DEVICE_GET_PCI_HOT_RESET_INFO", alias = "VFIO_DEVICE_PCI_HOT_RESET")]
    fn hot_reset(&self, device: &vfio_core::Device) -> Result<vfio_core::HotResetInfo> {
        let ours = device
            .name()
            .parse::<PciAddress>()
            .is_ok_and(|a| self.assigned.lock().unwrap_or_else(|p| p.into_inner()).contains(&a));
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

    /// Maps at a fixed IOVA; in no-IOMMU mode returns the physical address, which must cover the
    /// whole range contiguously.
    #[doc(alias = "IOMMU_IOAS_MAP", alias = "IOMMU_IOAS_NOIOMMU_GET_PA")]
    unsafe fn map_dma_raw(&self, vaddr: *mut u8, size: u64, iova: u64, access: DmaAccess) -> Result<u64> {
        // SAFETY: forwarded to the caller.
        let iova = unsafe { self.ioas.map_raw(vaddr, size, IovaPlacement::Fixed(iova), access)? };
        if !self.is_noiommu() {
            return Ok(iova);
        }
        self.noiommu_address(iova, size)
    }

    #[doc(alias = "IOMMU_IOAS_UNMAP")]
    fn unmap_dma(&self, iova: u64, size: u64) -> Result<u64> {
        self.ioas.unmap(iova, size)
    }
}

impl Container {
    /// The physical address behind a fresh no-IOMMU mapping, which must be contiguous (else it
    /// is unmapped again). Out of line, so the IOMMU map path stays small.
    #[inline(never)]
    fn noiommu_address(&self, iova: u64, size: u64) -> Result<u64> {
        let (phys, contiguous) = self.ioas.noiommu_phys(iova, size)?;
        if contiguous < size {
            let _ = self.ioas.unmap(iova, size);
            return Err(Error::unsupported(
                "no-IOMMU DMA",
                format!("iova {iova:#x}"),
                format!("only {contiguous:#x} of {size:#x} bytes are physically contiguous"),
            ));
        }
        Ok(phys)
    }
}
