//! A legacy VFIO container (`/dev/vfio/vfio`): an IOMMU context holding groups, with DMA mapped
//! through the type1 (or no-IOMMU) backend.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use vfio_core::{DmaAccess, Error, IovaRange, Mode, PciAddress, Result, Sysfs, ioctl};
use vfio_sys as sys;

use crate::group::Group;
use crate::info::IommuInfo;

/// The IOMMU backend a container is set to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// A no-IOMMU "mapping": memory locked in place, given to the device by physical address.
#[derive(Debug)]
struct PinnedRange {
    iova: u64,
    vaddr: usize,
    size: u64,
}

#[derive(Debug, Default)]
struct State {
    groups: Vec<(u32, Arc<Group>)>,
    iommu: Option<IommuType>,
    wanted: Option<IommuType>,
    pinned: Vec<PinnedRange>,
}

/// An open `/dev/vfio/vfio` container.
#[derive(Debug)]
pub struct Container {
    fd: Arc<ContainerFd>,
    sysfs: Sysfs,
    noiommu: bool,
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
    /// Opens `/dev/vfio/vfio` and checks `VFIO_GET_API_VERSION`. With `noiommu`, the groups it
    /// takes are no-IOMMU groups and the backend is `VFIO_NOIOMMU_IOMMU`.
    pub fn open(noiommu: bool) -> Result<Self> {
        Self::open_in(Sysfs::default(), noiommu)
    }

    /// As [`Container::open`], with sysfs and /dev taken from `sysfs`. Errors: Path (ENOENT)
    /// when the kernel has no `/dev/vfio/vfio` (no `VFIO_CONTAINER` nor
    /// `IOMMUFD_VFIO_CONTAINER`, or vfio not loaded); Unsupported for another API version.
    pub fn open_in(sysfs: Sysfs, noiommu: bool) -> Result<Self> {
        let path = sysfs.dev_dir().join("vfio/vfio");
        let fd = vfio_core::open_node(&path)?;
        Self::adopt(fd, path, sysfs, noiommu)
    }

    /// Adopts an open container fd (for example one received from another process or opened
    /// by a launcher), checking `VFIO_GET_API_VERSION` on it. The fd should have no group yet:
    /// groups that joined it elsewhere are unknown to this value. Errors: ENOTTY (Kernel) when
    /// the fd is not a VFIO container, Unsupported for another API version.
    pub fn from_fd(fd: OwnedFd, noiommu: bool) -> Result<Self> {
        let path = PathBuf::from(format!("container fd {}", fd.as_raw_fd()));
        Self::adopt(fd, path, Sysfs::default(), noiommu)
    }

    fn adopt(fd: OwnedFd, path: PathBuf, sysfs: Sysfs, noiommu: bool) -> Result<Self> {
        let c = Container {
            fd: Arc::new(ContainerFd { fd, path }),
            sysfs,
            noiommu,
            state: Mutex::default(),
        };
        let version = c.int_ioctl("VFIO_GET_API_VERSION", sys::VFIO_GET_API_VERSION, 0)?;
        if version != sys::VFIO_API_VERSION as i32 {
            return Err(Error::unsupported(
                "VFIO API",
                c.target(),
                format!("version {version}, expected {}", sys::VFIO_API_VERSION),
            ));
        }
        Ok(c)
    }

    fn target(&self) -> String {
        self.fd.path.display().to_string()
    }

    fn int_ioctl(&self, op: &'static str, request: u32, arg: usize) -> Result<i32> {
        // SAFETY: callers pass container ioctls that take an integer or no argument.
        unsafe { ioctl::with_int(self.fd.as_fd(), request, arg) }.map_err(|e| Error::kernel(op, self.target(), e))
    }

    /// `VFIO_CHECK_EXTENSION`: whether the container supports an IOMMU type.
    pub fn check_extension(&self, iommu: IommuType) -> Result<bool> {
        self.check_extension_raw(iommu.raw())
    }

    /// `VFIO_CHECK_EXTENSION` for any extension number (`VFIO_UNMAP_ALL`, `VFIO_DMA_CC_IOMMU`...).
    pub fn check_extension_raw(&self, extension: u32) -> Result<bool> {
        Ok(self.int_ioctl("VFIO_CHECK_EXTENSION", sys::VFIO_CHECK_EXTENSION, extension as usize)? > 0)
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
    pub fn set_iommu(&self, iommu: IommuType) -> Result<()> {
        if (iommu == IommuType::NoIommu) != self.noiommu {
            return Err(Error::invalid(
                "VFIO_SET_IOMMU",
                self.target(),
                format!(
                    "{iommu:?} does not match a container opened with noiommu={}",
                    self.noiommu
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
    pub fn add_group(&self, id: u32) -> Result<Arc<Group>> {
        let mut state = self.lock();
        Self::forget_detached_locked(&mut state);
        if let Some((_, g)) = state.groups.iter().find(|(gid, _)| *gid == id) {
            return Ok(g.clone());
        }
        let mut group = Group::open(self.sysfs.dev_dir(), id, self.noiommu)?;
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
                self.int_ioctl("VFIO_SET_IOMMU", sys::VFIO_SET_IOMMU, ty.raw() as usize)
                    .map(|_| ty)
            };
            // Unless a type was asked for: type1v2, else type1 when the kernel refuses it (one
            // ioctl on the common path, no CHECK_EXTENSION first).
            let set = match state.wanted {
                Some(t) => set(t),
                None if self.noiommu => set(IommuType::NoIommu),
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
            state.pinned.clear();
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
    pub fn info(&self) -> Result<IommuInfo> {
        self.require_iommu("VFIO_IOMMU_GET_INFO")?;
        crate::info::info(self.fd.as_fd(), &self.target())
    }

    /// The IOVA page sizes the IOMMU supports (`VFIO_IOMMU_GET_INFO.iova_pgsizes`); needs a group
    /// in the container. Errors: EINVAL (Kernel) before the IOMMU type is set.
    pub fn page_sizes(&self) -> Result<u64> {
        Ok(self.info()?.page_sizes)
    }

    /// Which kernel code serves this container. For an IOMMU container this needs a group (it
    /// asks `VFIO_IOMMU_GET_INFO`: the type1 driver always reports the migration capability,
    /// iommufd's compatibility layer never does). Errors: those of [`Container::info`].
    pub fn backend(&self) -> Result<Backend> {
        if self.noiommu {
            return Ok(Backend::NoIommu);
        }
        Ok(if self.info()?.migration.is_some() {
            Backend::Type1
        } else {
            Backend::IommufdCompat
        })
    }

    /// The dirty-tracking capability, or Unsupported naming why there is none.
    fn migration(&self) -> Result<crate::info::MigrationInfo> {
        self.info()?.migration.ok_or_else(|| {
            Error::unsupported(
                "VFIO_IOMMU_DIRTY_PAGES",
                self.target(),
                "no migration capability: iommufd's compatibility container has no type1 dirty \
                 tracking (use iommufd's own)",
            )
        })
    }

    /// `VFIO_IOMMU_DIRTY_PAGES_FLAG_START`: starts dirty-page tracking of every mapping.
    /// Errors: Unsupported without the migration capability (iommufd compat); EACCES (Kernel)
    /// in a type1 (v1) container, which the kernel never tracks.
    pub fn dirty_tracking_start(&self) -> Result<()> {
        self.migration()?;
        crate::dirty::set(self.fd.as_fd(), &self.target(), sys::VFIO_IOMMU_DIRTY_PAGES_FLAG_START)
    }

    /// `VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP`: stops tracking (a no-op when not tracking). Errors as
    /// [`Container::dirty_tracking_start`].
    pub fn dirty_tracking_stop(&self) -> Result<()> {
        self.migration()?;
        crate::dirty::set(self.fd.as_fd(), &self.target(), sys::VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP)
    }

    /// `VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP`: which pages of `[iova, iova + size)` were
    /// dirtied since tracking started or the last call, one bit per smallest IOMMU page (bit
    /// `n % 64` of word `n / 64`). Errors: InvalidArgument for a size that is not a multiple
    /// of that page or needs a larger bitmap than the kernel returns at once; EINVAL (Kernel)
    /// when not tracking or when the range splits a mapping; EOVERFLOW when it wraps.
    pub fn dirty_bitmap(&self, iova: u64, size: u64) -> Result<Vec<u64>> {
        let (pgsize, max) = self.dirty_page()?;
        crate::dirty::get(self.fd.as_fd(), &self.target(), iova, size, pgsize, max)
    }

    /// `VFIO_IOMMU_UNMAP_DMA` with `VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP`: unmaps
    /// `[iova, iova + size)` and returns the bytes unmapped and which of its pages were dirtied
    /// (layout as in [`Container::dirty_bitmap`]). Errors: as `dirty_bitmap`, EINVAL (Kernel)
    /// when tracking is off.
    pub fn unmap_dma_with_dirty_bitmap(&self, iova: u64, size: u64) -> Result<(u64, Vec<u64>)> {
        let (pgsize, max) = self.dirty_page()?;
        crate::dirty::unmap_with_bitmap(self.fd.as_fd(), &self.target(), iova, size, pgsize, max)
    }

    /// The dirty-bitmap page size (the smallest IOMMU page) and the kernel's bitmap size limit.
    fn dirty_page(&self) -> Result<(u64, u64)> {
        let m = self.migration()?;
        Ok((
            1u64 << m.pgsize_bitmap.trailing_zeros().min(63),
            m.max_dirty_bitmap_size,
        ))
    }

    fn require_iommu(&self, op: &'static str) -> Result<()> {
        if self.noiommu {
            return Err(Error::unsupported(
                op,
                self.target(),
                "a no-IOMMU container has no IOMMU (nor IOVA space)",
            ));
        }
        Ok(())
    }

    /// `VFIO_IOMMU_UNMAP_DMA` with `VFIO_DMA_UNMAP_FLAG_ALL`: removes every mapping; returns the
    /// bytes unmapped. Errors: Unsupported when `VFIO_CHECK_EXTENSION(VFIO_UNMAP_ALL)` is 0 (and
    /// in a no-IOMMU container, where it unpins everything instead).
    pub fn unmap_all(&self) -> Result<u64> {
        if self.noiommu {
            let mut state = self.lock();
            let total = state.pinned.iter().map(|p| p.size).sum();
            for p in state.pinned.drain(..) {
                unlock(&p);
            }
            return Ok(total);
        }
        if !self.check_extension_raw(sys::VFIO_UNMAP_ALL)? {
            return Err(Error::unsupported(
                "VFIO_DMA_UNMAP_FLAG_ALL",
                self.target(),
                "VFIO_CHECK_EXTENSION(VFIO_UNMAP_ALL) is 0",
            ));
        }
        self.unmap(0, 0, sys::VFIO_DMA_UNMAP_FLAG_ALL)
    }

    /// `VFIO_IOMMU_UNMAP_DMA` of `[iova, iova + size)` with the kernel's answer as it is: the
    /// bytes unmapped, 0 when nothing was mapped there (type1 reports that as success; the
    /// trait's [`unmap_dma`](vfio_core::Container::unmap_dma) turns it into ENOENT). The rules
    /// for ranges that split a mapping are in the table of
    /// [`unmap_dma`](vfio_core::Container::unmap_dma). In a no-IOMMU container, unpins the
    /// ranges pinned at IOVAs inside the range.
    #[inline]
    pub fn unmap_range(&self, iova: u64, size: u64) -> Result<u64> {
        if self.noiommu {
            return Ok(self.unpin(iova, size));
        }
        self.unmap(iova, size, 0)
    }

    #[inline]
    fn unmap(&self, iova: u64, size: u64, flags: u32) -> Result<u64> {
        let mut unmap = sys::vfio_iommu_type1_dma_unmap {
            argsz: ioctl::argsz::<sys::vfio_iommu_type1_dma_unmap>(),
            flags,
            iova,
            size,
            ..Default::default()
        };
        // SAFETY: a vfio_iommu_type1_dma_unmap without trailing data (no GET_DIRTY_BITMAP flag),
        // on a container fd.
        unsafe { ioctl::with_mut(self.fd.as_fd(), sys::VFIO_IOMMU_UNMAP_DMA, &mut unmap) }
            .map_err(|e| self.dma_error("VFIO_IOMMU_UNMAP_DMA", iova, size, e))?;
        Ok(unmap.size)
    }

    fn dma_target(&self, iova: u64, size: u64) -> String {
        format!("{} iova {iova:#x} size {size:#x}", self.target())
    }

    /// The error of a refused map or unmap, built out of line: the fast path stays small.
    #[cold]
    #[inline(never)]
    fn dma_error(&self, op: &'static str, iova: u64, size: u64, errno: vfio_core::Errno) -> Error {
        Error::kernel(op, self.dma_target(iova, size), errno)
    }

    /// No-IOMMU "mapping": locks the memory and returns its physical address. Out of line, so
    /// the IOMMU map path stays small.
    #[inline(never)]
    fn pin(&self, vaddr: *mut u8, size: u64, iova: u64) -> Result<u64> {
        let target = self.dma_target(iova, size);
        let len = usize::try_from(size)
            .map_err(|_| Error::invalid("no-IOMMU DMA pin", &target, "size does not fit in usize"))?;
        if len == 0 {
            return Err(Error::invalid("no-IOMMU DMA pin", &target, "size is zero"));
        }
        let mut state = self.lock();
        if state
            .pinned
            .iter()
            .any(|p| iova < p.iova.saturating_add(p.size) && p.iova < iova.saturating_add(size))
        {
            return Err(Error::invalid(
                "no-IOMMU DMA pin",
                &target,
                "overlaps a range already pinned at that IOVA",
            ));
        }
        // SAFETY: mlock only changes residency of the caller's range; it does not touch contents.
        unsafe { rustix::mm::mlock(vaddr.cast(), len) }.map_err(|e| Error::kernel("mlock", &target, e))?;
        let range = PinnedRange {
            iova,
            vaddr: vaddr as usize,
            size,
        };
        match vfio_core::pagemap::physical_range(vaddr as usize, len) {
            Ok(pa) => {
                state.pinned.push(range);
                Ok(pa)
            }
            Err(e) => {
                unlock(&range);
                Err(e)
            }
        }
    }

    #[inline(never)]
    fn unpin(&self, iova: u64, size: u64) -> u64 {
        let end = iova.saturating_add(size);
        let mut state = self.lock();
        let mut total = 0;
        state.pinned.retain(|p| {
            let inside = p.iova >= iova && p.iova.saturating_add(p.size) <= end;
            if inside {
                unlock(p);
                total += p.size;
            }
            !inside
        });
        total
    }
}

fn unlock(p: &PinnedRange) {
    // SAFETY: munlock only changes residency; the range may even be unmapped by now (ENOMEM).
    let _ = unsafe { rustix::mm::munlock(p.vaddr as *mut std::ffi::c_void, p.size as usize) };
}

impl vfio_core::Container for Container {
    fn mode(&self) -> Mode {
        if self.noiommu { Mode::NoIommu } else { Mode::Group }
    }

    /// `VFIO_IOMMU_GET_INFO` page sizes; without an IOMMU, every multiple of the CPU page size
    /// (there is no translation, so any pinned, physically contiguous range works).
    fn page_sizes(&self) -> Result<u64> {
        if self.noiommu {
            return Ok(!(vfio_core::page_size() as u64 - 1));
        }
        Container::page_sizes(self)
    }

    /// IOVA ranges from the `VFIO_IOMMU_GET_INFO` capability chain (all of 64-bit space when the
    /// kernel gives none). Without an IOMMU there is no IOVA space to restrict: the whole range
    /// (IOVAs only name mappings there; the device gets physical addresses).
    fn iova_ranges(&self) -> Result<Vec<IovaRange>> {
        if self.noiommu {
            return Ok(vec![IovaRange {
                start: 0,
                last: u64::MAX,
            }]);
        }
        Ok(self.info()?.iova_ranges)
    }

    /// The driver is looked at only when a step fails (for the clearer error), so devices on
    /// VFIO variant drivers can be assigned too.
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
    unsafe fn map_dma_raw(&self, vaddr: *mut u8, size: u64, iova: u64, access: DmaAccess) -> Result<u64> {
        if self.noiommu {
            return self.pin(vaddr, size, iova);
        }
        let mut flags = 0;
        if access.contains(DmaAccess::READ) {
            flags |= sys::VFIO_DMA_MAP_FLAG_READ;
        }
        if access.contains(DmaAccess::WRITE) {
            flags |= sys::VFIO_DMA_MAP_FLAG_WRITE;
        }
        let mut map = sys::vfio_iommu_type1_dma_map {
            argsz: ioctl::argsz::<sys::vfio_iommu_type1_dma_map>(),
            flags,
            vaddr: vaddr as u64,
            iova,
            size,
        };
        // SAFETY: a vfio_iommu_type1_dma_map on a container fd; the caller guarantees the memory.
        unsafe { ioctl::with_mut(self.fd.as_fd(), sys::VFIO_IOMMU_MAP_DMA, &mut map) }
            .map_err(|e| self.dma_error("VFIO_IOMMU_MAP_DMA", iova, size, e))?;
        Ok(iova)
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
    fn unmap_dma(&self, iova: u64, size: u64) -> Result<u64> {
        match self.unmap_range(iova, size)? {
            0 if size > 0 => Err(Error::kernel(
                if self.noiommu {
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
