//! A legacy VFIO container (`/dev/vfio/vfio`): an IOMMU context holding groups, with its IOMMU
//! type. DMA through it is in two other files, one per backend: type1 map/unmap in `dma.rs`
//! (dirty-page tracking in `dirty.rs`), the no-IOMMU pin table in `noiommu.rs`; this file holds
//! the fd, the groups, the IOMMU type and the [`vfio_core::Container`] implementation that
//! dispatches to them.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use vfio_core::ioctl::{self, requests as req};
use vfio_core::{Addressing, DmaAccess, Error, IovaRange, Mode, PciAddress, Result, Sysfs};
use vfio_sys as sys;

use crate::group::Group;
use crate::info::IommuInfo;
use crate::noiommu::{self, PinTable};

/// The IOMMU backend a container is set to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IommuType {
    /// `VFIO_TYPE1_IOMMU`.
    Type1,
    /// `VFIO_TYPE1v2_IOMMU`: no partial unmaps, reserved-region aware.
    Type1v2,
    /// `VFIO_NOIOMMU_IOMMU`: no translation; DMA uses physical addresses.
    NoIommu,
}

impl IommuType {
    fn raw(self) -> u32 {
        match self {
            IommuType::Type1 => sys::VFIO_TYPE1_IOMMU,
            IommuType::Type1v2 => sys::VFIO_TYPE1v2_IOMMU,
            IommuType::NoIommu => sys::VFIO_NOIOMMU_IOMMU,
        }
    }
}

/// Which kernel code serves the container: the answers to some DMA ioctls differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backend {
    /// The VFIO type1 IOMMU driver (`vfio_iommu_type1`, `CONFIG_VFIO_CONTAINER`).
    Type1,
    /// iommufd's emulation of `/dev/vfio/vfio` (`CONFIG_IOMMUFD_VFIO_CONTAINER`): type1 and
    /// type1v2 unmaps both follow iommufd's rules, and there is no dirty-page tracking.
    IommufdCompat,
    /// A no-IOMMU container: no translation and no DMA ioctls.
    NoIommu,
}

/// The container fd, shared by the container and every group that joined it.
#[derive(Debug)]
pub(crate) struct ContainerFd {
    fd: OwnedFd,
    path: PathBuf,
}

impl AsFd for ContainerFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl ContainerFd {
    /// The fd, typed for container requests.
    #[inline]
    fn ioctl_fd(&self) -> ioctl::Fd<'_, ioctl::kind::Container> {
        // SAFETY: a ContainerFd is built only by `Container::adopt`, which keeps it only when
        // the fd answers VFIO_GET_API_VERSION with the VFIO API version: a request that only
        // containers (`/dev/vfio/vfio`, or an iommufd's compatibility container) define, and the
        // only one issued before that check (any other fd answers it with ENOTTY).
        unsafe { ioctl::Fd::new_unchecked(self.fd.as_fd()) }
    }
}

#[derive(Debug, Default)]
struct State {
    groups: Vec<(u32, Arc<Group>)>,
    iommu: Option<IommuType>,
    wanted: Option<IommuType>,
}

/// An open `/dev/vfio/vfio` container.
#[derive(Debug)]
pub struct Container {
    fd: Arc<ContainerFd>,
    sysfs: Sysfs,
    /// The memory pinned for DMA: `Some` exactly in a no-IOMMU container.
    pins: Option<PinTable>,
    state: Mutex<State>,
}

/// The container fd, e.g. to hand it to a secondary process (`vfio_core::send_fds`), which
/// adopts it with [`Container::from_fd`]: DMA mappings made through either fd live in the same
/// kernel container.
impl AsFd for Container {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Container {
    /// Opens `/dev/vfio/vfio` and checks `VFIO_GET_API_VERSION`. With
    /// [`Addressing::Physical`] the groups it takes are no-IOMMU groups, the backend is
    /// `VFIO_NOIOMMU_IOMMU` and mappings return physical addresses ([`Mode::GROUP_NOIOMMU`]);
    /// with [`Addressing::Iova`] it is type1 ([`Mode::GROUP`]).
    #[doc(alias = "VFIO_GET_API_VERSION")]
    pub fn open(addressing: Addressing) -> Result<Self> {
        Self::open_in(Sysfs::default(), addressing)
    }

    /// As [`Container::open`], with sysfs and /dev taken from `sysfs`. Errors: Path (ENOENT)
    /// when the kernel has no `/dev/vfio/vfio` (no `VFIO_CONTAINER` nor
    /// `IOMMUFD_VFIO_CONTAINER`, or vfio not loaded); Unsupported for another API version.
    #[doc(alias = "VFIO_GET_API_VERSION")]
    pub fn open_in(sysfs: Sysfs, addressing: Addressing) -> Result<Self> {
        let path = sysfs.dev_dir().join("vfio/vfio");
        let fd = vfio_core::open_node(&path)?;
        Self::adopt(fd, path, sysfs, addressing)
    }

    /// Adopts an open container fd (for example one received from another process or opened
    /// by a launcher), checking `VFIO_GET_API_VERSION` on it. The fd should have no group yet:
    /// groups that joined it elsewhere are unknown to this value. Errors: ENOTTY (Kernel) when
    /// the fd is not a VFIO container, Unsupported for another API version.
    #[doc(alias = "VFIO_GET_API_VERSION")]
    pub fn from_fd(fd: OwnedFd, addressing: Addressing) -> Result<Self> {
        let path = PathBuf::from(format!("container fd {}", fd.as_raw_fd()));
        Self::adopt(fd, path, Sysfs::default(), addressing)
    }

    fn adopt(fd: OwnedFd, path: PathBuf, sysfs: Sysfs, addressing: Addressing) -> Result<Self> {
        let c = Container {
            fd: Arc::new(ContainerFd { fd, path }),
            sysfs,
            pins: (addressing == Addressing::Physical).then(PinTable::default),
            state: Mutex::default(),
        };
        let version = ioctl::call_int::<req::GetApiVersion>(c.ioctl_fd(), 0)
            .map_err(|e| ioctl::kernel_error::<req::GetApiVersion>(c.target(), e))?;
        if version != sys::VFIO_API_VERSION as i32 {
            return Err(Error::unsupported(
                "VFIO API",
                c.target(),
                format!("version {version}, expected {}", sys::VFIO_API_VERSION),
            ));
        }
        Ok(c)
    }

    /// The container fd, typed for container requests (see [`vfio_core::ioctl`]), e.g. to issue
    /// a request this crate does not wrap.
    #[inline]
    pub fn ioctl_fd(&self) -> ioctl::Fd<'_, ioctl::kind::Container> {
        self.fd.ioctl_fd()
    }

    /// How errors name the container: the node it was opened from, or the adopted fd.
    pub(crate) fn target(&self) -> String {
        self.fd.path.display().to_string()
    }

    /// The pin table of a no-IOMMU container; `None` for an IOMMU (type1) container.
    #[inline]
    pub(crate) fn pins(&self) -> Option<&PinTable> {
        self.pins.as_ref()
    }

    fn is_noiommu(&self) -> bool {
        self.pins.is_some()
    }

    /// `VFIO_CHECK_EXTENSION`: whether the container supports an IOMMU type.
    #[doc(alias = "VFIO_CHECK_EXTENSION")]
    pub fn check_extension(&self, iommu: IommuType) -> Result<bool> {
        self.check_extension_raw(iommu.raw())
    }

    /// `VFIO_CHECK_EXTENSION` for any extension number (`VFIO_UNMAP_ALL`, `VFIO_DMA_CC_IOMMU`...).
    #[doc(alias = "VFIO_CHECK_EXTENSION")]
    pub fn check_extension_raw(&self, extension: u32) -> Result<bool> {
        let n = ioctl::call_int::<req::CheckExtension>(self.ioctl_fd(), extension as usize)
            .map_err(|e| ioctl::kernel_error::<req::CheckExtension>(self.target(), e))?;
        Ok(n > 0)
    }

    /// The IOMMU type the container was set to (after the first group joined).
    pub fn iommu_type(&self) -> Option<IommuType> {
        self.lock().iommu
    }

    /// Chooses the IOMMU type `VFIO_SET_IOMMU` sets when the first group joins, instead of the
    /// default (type1v2 if supported, else type1). The kernel needs a group before
    /// `VFIO_SET_IOMMU`, so this records the choice; if the container is set already, it is only
    /// accepted when it is the type in force. Errors: Unsupported when `VFIO_CHECK_EXTENSION`
    /// says the container lacks the type; InvalidArgument for a no-IOMMU type in an IOMMU
    /// container (or the reverse), or a different type than the one already set.
    #[doc(alias = "VFIO_SET_IOMMU", alias = "VFIO_CHECK_EXTENSION")]
    pub fn set_iommu(&self, iommu: IommuType) -> Result<()> {
        if (iommu == IommuType::NoIommu) != self.is_noiommu() {
            return Err(Error::invalid(
                "VFIO_SET_IOMMU",
                self.target(),
                format!(
                    "{iommu:?} does not match a container opened with noiommu={}",
                    self.is_noiommu()
                ),
            ));
        }
        if !self.check_extension(iommu)? {
            return Err(Error::unsupported(
                "IOMMU type",
                self.target(),
                format!("VFIO_CHECK_EXTENSION({iommu:?}) is 0"),
            ));
        }
        let mut state = self.lock();
        match state.iommu {
            Some(set) if set != iommu => Err(Error::invalid(
                "VFIO_SET_IOMMU",
                self.target(),
                format!("the container is already set to {set:?}"),
            )),
            _ => {
                state.wanted = Some(iommu);
                Ok(())
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens group `id` (unless already held), checks it is viable and adds it to the container
    /// (`VFIO_GROUP_SET_CONTAINER`), setting the IOMMU type when it is the first group: the one
    /// chosen with [`Container::set_iommu`], else type1v2 if supported, else type1, or no-IOMMU
    /// for a no-IOMMU container. Errors: InvalidArgument naming the devices that make the group
    /// non-viable; the kernel's errno from `VFIO_GROUP_SET_CONTAINER` / `VFIO_SET_IOMMU` (EINVAL
    /// for an IOMMU type the group's IOMMU cannot share with the container's other groups).
    ///
    /// Groups the kernel took out of the container since (see [`Container::forget_detached`])
    /// are forgotten first, so a group whose devices were unbound from vfio-pci and bound again
    /// is opened afresh, and the IOMMU type is set again if the kernel dropped it.
    #[doc(
        alias = "VFIO_GROUP_SET_CONTAINER",
        alias = "VFIO_SET_IOMMU",
        alias = "VFIO_GROUP_GET_STATUS"
    )]
    pub fn add_group(&self, id: u32) -> Result<Arc<Group>> {
        let mut state = self.lock();
        Self::forget_detached_locked(&mut state);
        if let Some((_, g)) = state.groups.iter().find(|(gid, _)| *gid == id) {
            return Ok(g.clone());
        }
        let mut group = Group::open(self.sysfs.dev_dir(), id, self.is_noiommu())?;
        let status = group.status()?;
        if !status.viable {
            let culprits = crate::group::non_viable_devices(&self.sysfs, id);
            return Err(Error::invalid(
                "add group to container",
                group.path().display(),
                format!(
                    "group is not viable: {} bound to a non-VFIO driver",
                    if culprits.is_empty() {
                        "a device in it is".to_string()
                    } else {
                        culprits.join(", ")
                    }
                ),
            ));
        }
        group.set_container(&self.fd)?;
        if state.iommu.is_none() {
            let set = |ty: IommuType| {
                ioctl::call_int::<req::SetIommu>(self.ioctl_fd(), ty.raw() as usize)
                    .map(|_| ty)
                    .map_err(|e| ioctl::kernel_error::<req::SetIommu>(self.target(), e))
            };
            // Unless a type was asked for: type1v2, else type1 when the kernel refuses it (one
            // ioctl on the common path, no CHECK_EXTENSION first).
            let set = match state.wanted {
                Some(t) => set(t),
                None if self.is_noiommu() => set(IommuType::NoIommu),
                None => set(IommuType::Type1v2).or_else(|_| set(IommuType::Type1)),
            };
            match set {
                Ok(ty) => state.iommu = Some(ty),
                Err(e) => {
                    // Leave the container as it was: without this group.
                    let _ = group.unset_container();
                    return Err(e);
                }
            }
        }
        let group = Arc::new(group);
        state.groups.push((id, group.clone()));
        Ok(group)
    }

    /// Forgets the groups the kernel took out of this container behind its back, and returns
    /// their numbers. When the last device of a group leaves its VFIO driver (an unbind from
    /// vfio-pci, e.g. to hand the device to another driver or to bind it again), the kernel
    /// detaches the group from its container and retires the group (seen on 6.1 and 7.3): the
    /// fd held here then answers `VFIO_GROUP_GET_STATUS` with ENODEV, and would fail every
    /// `VFIO_GROUP_GET_DEVICE_FD`, while a new node of the same number serves the device once
    /// it is bound again. If no group is left, the kernel has also released the container's
    /// IOMMU driver (and with it every DMA mapping): the next group to join sets the IOMMU type
    /// again. Called by [`Container::add_group`] (so by `assign_device`) before anything else.
    /// Guest test: `group_unbound_is_forgotten_and_reopened`.
    #[doc(alias = "VFIO_GROUP_GET_STATUS")]
    pub fn forget_detached(&self) -> Vec<u32> {
        Self::forget_detached_locked(&mut self.lock())
    }

    fn forget_detached_locked(state: &mut State) -> Vec<u32> {
        let mut gone = Vec::new();
        state.groups.retain(|(id, g)| {
            let attached = g.status().is_ok_and(|s| s.container_set);
            if !attached {
                gone.push(*id);
            }
            attached
        });
        if !gone.is_empty() && state.groups.is_empty() {
            state.iommu = None;
        }
        gone
    }

    /// Removes group `id` from the container (`VFIO_GROUP_UNSET_CONTAINER`) and drops the
    /// container's handle on it. The last group out also unsets the IOMMU (the kernel does so,
    /// and removes every DMA mapping). Errors: InvalidArgument when the group is not in this
    /// container; EBUSY (Kernel) while a device of the group is open, from the type1 driver
    /// (iommufd's compatibility container lets the group go even then).
    #[doc(alias = "VFIO_GROUP_UNSET_CONTAINER")]
    pub fn remove_group(&self, id: u32) -> Result<()> {
        let mut state = self.lock();
        let Some(pos) = state.groups.iter().position(|(gid, _)| *gid == id) else {
            return Err(Error::invalid(
                "VFIO_GROUP_UNSET_CONTAINER",
                self.target(),
                format!("group {id} is not in this container"),
            ));
        };
        state.groups[pos].1.unset_container()?;
        state.groups.remove(pos);
        if state.groups.is_empty() {
            state.iommu = None;
            if let Some(pins) = self.pins() {
                pins.forget_all();
            }
        }
        Ok(())
    }

    /// The group `id` if it is in this container (never opens one).
    pub fn group(&self, id: u32) -> Option<Arc<Group>> {
        self.lock()
            .groups
            .iter()
            .find(|(gid, _)| *gid == id)
            .map(|(_, g)| g.clone())
    }

    /// The numbers of the groups in this container.
    pub fn group_ids(&self) -> Vec<u32> {
        self.lock().groups.iter().map(|(id, _)| *id).collect()
    }

    /// `VFIO_IOMMU_GET_INFO`: flags, page sizes, IOVA ranges, DMA mappings available and
    /// dirty-tracking support. Needs a group in the container (EINVAL from the kernel before);
    /// Unsupported in a no-IOMMU container.
    #[doc(alias = "VFIO_IOMMU_GET_INFO")]
    pub fn info(&self) -> Result<IommuInfo> {
        self.require_iommu("VFIO_IOMMU_GET_INFO")?;
        crate::info::info(self.ioctl_fd(), &self.target())
    }

    /// The page sizes mappings can use, as a bitmap (bit n set: 2^n-byte pages; the lowest set
    /// bit is the alignment every mapping needs): the same answer as
    /// [`vfio_core::Container::page_sizes`]. In an IOMMU container, the IOMMU's IOVA page sizes
    /// (`VFIO_IOMMU_GET_INFO.iova_pgsizes`), which needs a group in the container: EINVAL
    /// (Kernel) before the IOMMU type is set. In a no-IOMMU container, where nothing is
    /// translated, every multiple of the CPU page size (any pinned, physically contiguous range
    /// works), without asking the kernel.
    #[doc(alias = "VFIO_IOMMU_GET_INFO")]
    pub fn page_sizes(&self) -> Result<u64> {
        if self.is_noiommu() {
            return Ok(noiommu::page_sizes());
        }
        Ok(self.info()?.page_sizes)
    }

    /// Which kernel code serves this container. For an IOMMU container this needs a group (it
    /// asks `VFIO_IOMMU_GET_INFO`: the type1 driver always reports the migration capability,
    /// iommufd's compatibility layer never does). Errors: those of [`Container::info`].
    #[doc(alias = "VFIO_IOMMU_GET_INFO")]
    pub fn backend(&self) -> Result<Backend> {
        if self.is_noiommu() {
            return Ok(Backend::NoIommu);
        }
        Ok(if self.info()?.migration.is_some() {
            Backend::Type1
        } else {
            Backend::IommufdCompat
        })
    }

    fn require_iommu(&self, op: &'static str) -> Result<()> {
        if self.is_noiommu() {
            return Err(Error::unsupported(
                op,
                self.target(),
                "a no-IOMMU container has no IOMMU (nor IOVA space)",
            ));
        }
        Ok(())
    }
}

impl vfio_core::Container for Container {
    fn mode(&self) -> Mode {
        if self.is_noiommu() {
            Mode::GROUP_NOIOMMU
        } else {
            Mode::GROUP
        }
    }

    /// As [`Container::page_sizes`]: `VFIO_IOMMU_GET_INFO` page sizes; without an IOMMU, every
    /// multiple of the CPU page size.
    #[doc(alias = "VFIO_IOMMU_GET_INFO")]
    fn page_sizes(&self) -> Result<u64> {
        Container::page_sizes(self)
    }

    /// IOVA ranges from the `VFIO_IOMMU_GET_INFO` capability chain (all of 64-bit space when the
    /// kernel gives none). Without an IOMMU there is no IOVA space to restrict: the whole range
    /// (IOVAs only name mappings there; the device gets physical addresses).
    #[doc(alias = "VFIO_IOMMU_GET_INFO")]
    fn iova_ranges(&self) -> Result<Vec<IovaRange>> {
        if self.is_noiommu() {
            return Ok(noiommu::iova_ranges());
        }
        Ok(self.info()?.iova_ranges)
    }

    /// The driver is looked at only when a step fails (for the clearer error), so devices on
    /// VFIO variant drivers can be assigned too.
    #[doc(
        alias = "VFIO_GROUP_SET_CONTAINER",
        alias = "VFIO_SET_IOMMU",
        alias = "VFIO_GROUP_GET_DEVICE_FD"
    )]
    fn assign_device(&self, addr: &PciAddress) -> Result<vfio_core::Device> {
        let assigned = || -> Result<vfio_core::Device> {
            let id = self.sysfs.iommu_group(addr)?;
            let group = self.add_group(id)?;
            let fd = group.device_fd(&addr.to_string())?;
            Ok(vfio_core::Device::from_fd(fd, addr.to_string(), Some(group)))
        };
        assigned().map_err(|e| self.sysfs.explain_open_failure(addr).unwrap_or(e))
    }

    /// Collects the fds of the groups of every affected device; a group outside this container
    /// is an error naming the device.
    #[doc(alias = "VFIO_DEVICE_GET_PCI_HOT_RESET_INFO", alias = "VFIO_DEVICE_PCI_HOT_RESET")]
    fn hot_reset(&self, device: &vfio_core::Device) -> Result<vfio_core::HotResetInfo> {
        let info = device.hot_reset_info()?;
        let mut groups: Vec<Arc<Group>> = Vec::new();
        for dep in &info.devices {
            if groups.iter().any(|g| g.id() == dep.id) {
                continue;
            }
            let group = self.group(dep.id).ok_or_else(|| {
                Error::invalid(
                    "PCI hot reset",
                    device.name(),
                    format!(
                        "it would also reset {} (IOMMU group {}), whose group is not in this container",
                        dep.address, dep.id
                    ),
                )
            })?;
            groups.push(group);
        }
        let fds: Vec<_> = groups.iter().map(|g| g.as_fd()).collect();
        device.hot_reset(&fds)?;
        Ok(info)
    }

    /// `VFIO_IOMMU_MAP_DMA` with `VFIO_DMA_MAP_FLAG_READ`/`_WRITE` from `access`. Errors: EEXIST
    /// for an overlap, EINVAL for unaligned or out-of-range arguments (outside the IOVA ranges),
    /// and for an IOVA past the last IOVA range; EOVERFLOW when `iova + size` wraps past 2^64
    /// (iommufd compat and newer type1 drivers; older type1 drivers, e.g. Linux 6.1, say
    /// EINVAL); ENOMEM past the locked-memory limit, ENOSPC when no mapping is available. Guest
    /// tests: `dma_contract_type1`, `dma_contract_type1v2`.
    ///
    /// In a no-IOMMU container nothing is mapped: the memory is locked (`mlock`) and its
    /// physical address returned, which needs `CAP_SYS_ADMIN` and memory physically contiguous
    /// for `size` bytes (one page always is); otherwise Unsupported. `iova` only names the range
    /// for [`unmap_dma`](vfio_core::Container::unmap_dma).
    #[doc(alias = "VFIO_IOMMU_MAP_DMA")]
    unsafe fn map_dma_raw(&self, vaddr: *mut u8, size: u64, iova: u64, access: DmaAccess) -> Result<u64> {
        match self.pins() {
            // SAFETY: the caller's contract is this method's: the memory stays valid and
            // unreferenced while mapped.
            None => unsafe { self.map_type1(vaddr, size, iova, access) },
            Some(pins) => pins.pin(vaddr, size, iova, || self.dma_target(iova, size)),
        }
    }

    /// `VFIO_IOMMU_UNMAP_DMA`; returns the bytes the kernel unmapped. Errors: ENOENT when
    /// nothing was mapped in the range (the kernel itself answers success with 0 bytes on every
    /// backend, which [`Container::unmap_range`] returns as is); EOVERFLOW when `iova + size` wraps (EINVAL from
    /// older type1 drivers, e.g. Linux 6.1); EINVAL for unaligned arguments. A range that splits
    /// a mapping depends on the IOMMU type and on the [`Backend`] (asserted by the guest tests
    /// `dma_contract_type1`/`_type1v2`):
    ///
    /// | range splitting a mapping | type1 driver | iommufd compat |
    /// |---|---|---|
    /// | type1 (v1), starts inside it | 0 bytes, mapping kept | splits it, unmaps the pages |
    /// | type1 (v1), covers its start | unmaps the whole mapping | splits it, unmaps the pages |
    /// | type1v2 | EINVAL | ENOENT |
    ///
    /// In a no-IOMMU container, unpins the ranges pinned at IOVAs inside `[iova, iova + size)`.
    /// Type1 v1's "0 bytes, mapping kept" is ENOENT here too: nothing was unmapped.
    #[doc(alias = "VFIO_IOMMU_UNMAP_DMA")]
    fn unmap_dma(&self, iova: u64, size: u64) -> Result<u64> {
        match self.unmap_range(iova, size)? {
            0 if size > 0 => Err(Error::kernel(
                if self.is_noiommu() {
                    "no-IOMMU unpin found nothing pinned"
                } else {
                    "VFIO_IOMMU_UNMAP_DMA unmapped nothing"
                },
                self.dma_target(iova, size),
                vfio_core::Errno::NOENT,
            )),
            n => Ok(n),
        }
    }
}

/// The path of the container node under a /dev directory.
pub fn container_path(dev: &Path) -> PathBuf {
    dev.join("vfio/vfio")
}
