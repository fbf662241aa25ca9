//! A legacy VFIO container (`/dev/vfio/vfio`): an IOMMU context holding groups, with its IOMMU
//! type. DMA through it is in two other files, one per backend: type1 map/unmap in `dma.rs`
//! (dirty-page tracking in `dirty.rs`), the no-IOMMU pin table in `noiommu.rs`; this file holds
//! the fd, the groups, the IOMMU type and the [`vfio_core::Container`] implementation that
//! dispatches to them.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use vfio_core::ioctl::{self, requests as req};
use vfio_core::{Addressing, DmaAccess, Errno, Error, IovaRange, Mode, PciAddress, Result, Sysfs};
use vfio_sys as sys;

use crate::group::Group;
use crate::info::IommuInfo;
use crate::noiommu::{self, PinTable};
use vfio_core::NamedFd;

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

/// The container fd, shared by the container and every group that joined it. Dropping the last
/// handle closes it, logging a failed close (warn, target `vfio`).
#[derive(Debug)]
pub(crate) struct ContainerFd {
    fd: NamedFd,
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

/// A group in the container.
#[derive(Debug)]
struct Member {
    id: u32,
    group: Arc<Group>,
    /// Joined through [`Container::add_group`]: stays until [`Container::remove_group`] or the
    /// container closes. Otherwise the group joined to open a device, and leaves when the last
    /// device opened through it closes.
    kept: bool,
    /// The lease the devices opened through this container share, while one is open.
    lease: Option<(u64, Weak<GroupLease>)>,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    groups: Vec<Member>,
    iommu: Option<IommuType>,
    wanted: Option<IommuType>,
    /// The number of the next lease (leases are told apart by it, not by address).
    next_lease: u64,
    /// The last group left (or the kernel took it out) since the IOMMU type was last set: the
    /// kernel released the IOMMU, and the type1 driver every mapping with it.
    emptied: bool,
}

impl State {
    fn position(&self, id: u32) -> Option<usize> {
        self.groups.iter().position(|m| m.id == id)
    }

    /// The groups in the container.
    pub(crate) fn group_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.groups.iter().map(|m| m.id)
    }
}

/// The no-IOMMU pin table, unpinning whatever is still pinned when the container goes.
#[derive(Debug, Default)]
struct Pins(PinTable);

impl Drop for Pins {
    fn drop(&mut self) {
        let bytes = self.0.unpin_all();
        if bytes > 0 {
            log::debug!(target: "vfio", "no-IOMMU container closed: unpinned {bytes:#x} bytes still pinned");
        }
    }
}

/// An open `/dev/vfio/vfio` container.
///
/// Dropping it closes the container fd and the fds of its groups (the kernel then takes each
/// group out), unpins what a no-IOMMU container still has pinned, and logs any failure (warn,
/// target `vfio`); a group with a device still open stays open, in the kernel's container,
/// until that device closes. [`Container::close`] does the same and returns the failures.
///
/// A group that joined to open a device ([`vfio_core::Container::assign_device`]) leaves the
/// container again when the last device opened through it closes (every clone of its
/// [`vfio_core::Device`] and every mapping of its regions dropped), so that another process can
/// open it; with the type1 driver, the last group out takes the IOMMU, and with it every DMA
/// mapping, along. A group that joined through [`Container::add_group`] stays.
#[derive(Debug)]
pub struct Container {
    fd: Arc<ContainerFd>,
    pub(crate) sysfs: Sysfs,
    /// The memory pinned for DMA: `Some` exactly in a no-IOMMU container.
    pins: Option<Pins>,
    /// What the safe map learned about the backend (`dma.rs`).
    pub(crate) dma: crate::dma::DmaGate,
    /// Shared (weakly) with the leases of the groups' open devices.
    state: Arc<Mutex<State>>,
}

/// Owned by the devices a container opened from one group (kept alive until each device fd
/// closes, see [`vfio_core::Device::from_fd`]): when the last of them closes, the group leaves
/// the container, unless it joined through [`Container::add_group`]. It holds the group, so a
/// group outlives a container dropped before its devices.
#[derive(Debug)]
struct GroupLease {
    id: u64,
    group: Arc<Group>,
    state: Weak<Mutex<State>>,
}

impl Drop for GroupLease {
    fn drop(&mut self) {
        // The container went first: its handle on the group is gone, and the group fd closes
        // with this lease's (the kernel takes the group out of the container then).
        let Some(state) = self.state.upgrade() else {
            return;
        };
        let mut state = lock(&state);
        let Some(pos) = state
            .groups
            .iter()
            .position(|m| m.lease.as_ref().is_some_and(|(id, _)| *id == self.id))
        else {
            // Removed already, or a newer lease took over while this one was being dropped.
            return;
        };
        state.groups[pos].lease = None;
        if state.groups[pos].kept {
            return;
        }
        // Pins are not tied to groups: they stay until their mappings go.
        if let Err(e) = Container::release_locked(&mut state, pos, None) {
            log::warn!(
                target: "vfio",
                "group {} stays in its container after its last device closed: {e}",
                self.group.path().display()
            );
        }
    }
}

/// An errno by its name (`EPERM`), or as the OS describes it when it has none here.
fn errno_text(e: Errno) -> String {
    vfio_core::errno_name(e).map_or_else(|| e.to_string(), str::to_string)
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// Keeps the first failure of a teardown to return it, and logs the others (warn).
#[derive(Default)]
struct FirstError(Option<Error>);

impl FirstError {
    fn note(&mut self, r: Result<()>) {
        match (r, &self.0) {
            (Ok(()), _) => {}
            (Err(e), None) => self.0 = Some(e),
            (Err(e), Some(_)) => log::warn!(target: "vfio", "{e} (a further failure of one teardown)"),
        }
    }

    fn into_result(self) -> Result<()> {
        self.0.map_or(Ok(()), Err)
    }
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
        let fd = vfio_core::open_node(&path).map_err(|e| {
            let proc_ = vfio_core::host::doctor::proc_dir(&sysfs);
            match e
                .errno()
                .and_then(|errno| vfio_core::host::doctor::diagnose::node_refusal(&proc_, &path, errno))
            {
                Some(cause) => e.with_cause(cause),
                None => e,
            }
        })?;
        let name = path
            .into_os_string()
            .into_string()
            .unwrap_or_else(|p| p.to_string_lossy().into_owned());
        Self::adopt(fd, name, sysfs, addressing)
    }

    /// Adopts an open container fd (for example one received from another process or opened
    /// by a launcher), checking `VFIO_GET_API_VERSION` on it. The fd should have no group yet:
    /// groups that joined it elsewhere are unknown to this value. Errors: ENOTTY (Kernel) when
    /// the fd is not a VFIO container, Unsupported for another API version.
    #[doc(alias = "VFIO_GET_API_VERSION")]
    pub fn from_fd(fd: OwnedFd, addressing: Addressing) -> Result<Self> {
        let name = format!("container fd {}", fd.as_raw_fd());
        let c = Self::adopt(fd, name, Sysfs::default(), addressing)?;
        c.dma.adopted();
        Ok(c)
    }

    fn adopt(fd: OwnedFd, name: String, sysfs: Sysfs, addressing: Addressing) -> Result<Self> {
        let c = Container {
            fd: Arc::new(ContainerFd {
                fd: NamedFd::new(fd, name),
            }),
            sysfs,
            pins: (addressing == Addressing::Physical).then(Pins::default),
            dma: Default::default(),
            state: Arc::default(),
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
        self.fd.fd.name().to_string()
    }

    /// The pin table of a no-IOMMU container; `None` for an IOMMU (type1) container.
    #[inline]
    pub(crate) fn pins(&self) -> Option<&PinTable> {
        self.pins.as_ref().map(|p| &p.0)
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

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Opens group `id` (unless already held), checks it is viable and adds it to the container
    /// (`VFIO_GROUP_SET_CONTAINER`), setting the IOMMU type when it is the first group: the one
    /// chosen with [`Container::set_iommu`], else type1v2 if supported, else type1, or no-IOMMU
    /// for a no-IOMMU container. The group then stays in the container until
    /// [`Container::remove_group`] or the container closes, even when it joined to open a device
    /// and that device closes (it would leave then otherwise: see [`Container`]). Errors:
    /// InvalidArgument naming the devices that make the group non-viable; the kernel's errno
    /// from `VFIO_GROUP_SET_CONTAINER` / `VFIO_SET_IOMMU` (EINVAL for an IOMMU type the group's
    /// IOMMU cannot share with the container's other groups; EPERM when it cannot isolate
    /// MSIs, with [`vfio_core::host::doctor::Finding::NoInterruptRemapping`] as the error's
    /// [`Error::cause`]). When neither type1v2 nor type1 is accepted, the error carries both
    /// answers. A failed step undoes the steps before it: the group is left out and closed.
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
        if let Some(pos) = state.position(id) {
            state.groups[pos].kept = true;
            return Ok(state.groups[pos].group.clone());
        }
        let group = self.join(&mut state, id, None)?;
        state.groups.push(Member {
            id,
            group: group.clone(),
            kept: true,
            lease: None,
        });
        Ok(group)
    }

    /// Opens group `id`, checks it is viable, adds it to the container and sets the IOMMU type
    /// when none is set; `device` names the device it is opened for, in errors. Each failing
    /// step undoes the ones before (the group leaves the container and closes). The caller
    /// records the group in `state`.
    fn join(&self, state: &mut State, id: u32, device: Option<&str>) -> Result<Arc<Group>> {
        let mut group = Group::open(self.sysfs.dev_dir(), id, self.is_noiommu())?;
        // Opening a device, the kernel's own refusal (EPERM from VFIO_GROUP_SET_CONTAINER, or
        // from VFIO_GROUP_GET_DEVICE_FD in iommufd's compatibility container) says it, with the
        // members that block it as its cause; a group joining on its own is checked first, as
        // the compatibility container would take it.
        if device.is_none() && !group.status()?.viable {
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
        let purpose = crate::group::Purpose(device);
        group.set_container(&self.fd, purpose, &self.sysfs)?;
        if state.iommu.is_none() {
            match self.set_iommu_for(state, &group, purpose) {
                Ok(ty) => {
                    state.iommu = Some(ty);
                    state.emptied = false;
                }
                Err(e) => {
                    // Leave the container as it was: without this group.
                    let mut undo = FirstError::default();
                    undo.note(group.unset_container());
                    undo.note(group.close());
                    if let Err(u) = undo.into_result() {
                        log::warn!(target: "vfio", "undoing a refused VFIO_SET_IOMMU: {u}");
                    }
                    return Err(e);
                }
            }
        }
        self.dma.group_joined(&self.sysfs, id);
        Ok(Arc::new(group))
    }

    /// `VFIO_SET_IOMMU` for the first group: the type asked for, else type1v2, falling back to
    /// type1 when the kernel refuses it (one ioctl on the common path, no CHECK_EXTENSION first).
    #[cold]
    fn set_iommu_for(&self, state: &State, group: &Group, purpose: crate::group::Purpose<'_>) -> Result<IommuType> {
        let set = |ty: IommuType| {
            ioctl::call_int::<req::SetIommu>(self.ioctl_fd(), ty.raw() as usize)
                .map(|_| ty)
                .map_err(|e| (ty, e))
        };
        let refused = |tried: String, e: Errno| {
            crate::group::explained::<req::SetIommu>(&self.sysfs, group.id(), e, |hint| {
                format!("{} for group {}{purpose}: {tried}{hint}", self.target(), group.id())
            })
        };
        match state.wanted {
            Some(t) => set(t).map_err(|(_, e)| refused(format!("{t:?} refused"), e)),
            None if self.is_noiommu() => {
                set(IommuType::NoIommu).map_err(|(_, e)| refused("no-IOMMU refused".into(), e))
            }
            None => match set(IommuType::Type1v2) {
                Ok(ty) => Ok(ty),
                Err((_, v2)) => match set(IommuType::Type1) {
                    Ok(ty) => {
                        log::debug!(
                            target: "vfio",
                            "{}: VFIO_SET_IOMMU type1v2 refused for group {} ({}), type1 set instead",
                            self.target(),
                            group.id(),
                            errno_text(v2)
                        );
                        Ok(ty)
                    }
                    // Both answers: type1v2's is often the telling one (type1 may just be absent).
                    Err((_, v1)) => Err(refused(
                        format!("type1v2 refused with {}, then type1", errno_text(v2)),
                        v1,
                    )),
                },
            },
        }
    }

    /// Takes group `pos` out of the container (`VFIO_GROUP_UNSET_CONTAINER`) and drops the
    /// container's handle on it, closing its fd when that was the last (a failed close is
    /// returned). On the last group out, the IOMMU type is unset (the kernel released it) and,
    /// with `pins`, everything pinned is unpinned. When the kernel refuses the UNSET the group
    /// stays, unless it is out of the container already (its device was unbound meanwhile).
    fn release_locked(state: &mut State, pos: usize, pins: Option<&PinTable>) -> Result<()> {
        let group = &state.groups[pos].group;
        if let Err(e) = group.unset_container() {
            if group.status().is_ok_and(|s| s.container_set) {
                return Err(e);
            }
            log::debug!(target: "vfio", "{e}: the kernel took the group out already");
        }
        let member = state.groups.remove(pos);
        if state.groups.is_empty() {
            state.iommu = None;
            state.emptied = true;
            if let Some(pins) = pins {
                let bytes = pins.unpin_all();
                if bytes > 0 {
                    log::debug!(target: "vfio", "the last group left: unpinned {bytes:#x} bytes");
                }
            }
        }
        match Arc::try_unwrap(member.group) {
            Ok(group) => group.close(),
            // Held elsewhere too (a lease, or a caller of `group`): it closes with that handle.
            Err(_) => Ok(()),
        }
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
        state.groups.retain(|m| {
            let attached = m.group.status().is_ok_and(|s| s.container_set);
            if !attached {
                gone.push(m.id);
            }
            attached
        });
        if !gone.is_empty() && state.groups.is_empty() {
            state.iommu = None;
            state.emptied = true;
        }
        gone
    }

    /// Removes group `id` from the container (`VFIO_GROUP_UNSET_CONTAINER`) and drops the
    /// container's handle on it (closing the group fd, unless a device of it still holds it).
    /// The last group out also unsets the IOMMU (the kernel does so, and removes every DMA
    /// mapping) and, in a no-IOMMU container, unpins everything pinned. Errors:
    /// InvalidArgument when the group is not in this container; EBUSY (Kernel) while a device
    /// of the group is open, from the type1 driver (iommufd's compatibility container lets the
    /// group go even then), and the group then stays; the errno of closing the group fd.
    #[doc(alias = "VFIO_GROUP_UNSET_CONTAINER")]
    pub fn remove_group(&self, id: u32) -> Result<()> {
        let mut state = self.lock();
        let Some(pos) = state.position(id) else {
            return Err(Error::invalid(
                "VFIO_GROUP_UNSET_CONTAINER",
                self.target(),
                format!("group {id} is not in this container"),
            ));
        };
        Self::release_locked(&mut state, pos, self.pins())
    }

    /// Closes the container: takes every group out (`VFIO_GROUP_UNSET_CONTAINER`) and closes
    /// its fd, unpins what a no-IOMMU container has pinned, and closes the container fd.
    /// Dropping the container does the same but only logs failures; this returns the first
    /// (and logs the others, warn). A group with a device still open, through this container
    /// or not, stays, with the container fd, until that device closes: an error says so
    /// (InvalidArgument for a device this container opened, EBUSY from the type1 driver for
    /// one it did not; iommufd's compatibility container lets the latter's group go). Errors:
    /// those, and the errno of each close.
    #[doc(alias = "VFIO_GROUP_UNSET_CONTAINER")]
    pub fn close(self) -> Result<()> {
        let target = self.target();
        let Container {
            fd,
            sysfs: _,
            pins,
            dma: _,
            state,
        } = self;
        let mut result = FirstError::default();
        let groups = std::mem::take(&mut lock(&state).groups);
        for member in groups {
            if member.lease.as_ref().is_some_and(|(_, l)| l.strong_count() > 0) {
                result.note(Err(Error::invalid(
                    "close container",
                    &target,
                    format!(
                        "a device of group {} is still open: the group stays in the container until it closes",
                        member.group.path().display()
                    ),
                )));
                continue;
            }
            result.note(member.group.unset_container());
            // Held elsewhere too (by a caller of `group`), it closes with that handle.
            if let Ok(group) = Arc::try_unwrap(member.group) {
                result.note(group.close());
            }
        }
        drop(state);
        drop(pins);
        if let Ok(fd) = Arc::try_unwrap(fd) {
            result.note(fd.fd.close());
        }
        result.into_result()
    }

    /// The group `id` if it is in this container (never opens one).
    pub fn group(&self, id: u32) -> Option<Arc<Group>> {
        let state = self.lock();
        state.position(id).map(|pos| state.groups[pos].group.clone())
    }

    /// The numbers of the groups in this container.
    pub fn group_ids(&self) -> Vec<u32> {
        self.lock().groups.iter().map(|m| m.id).collect()
    }

    /// Opens the device at `addr` through its group, joining the group first unless it is in
    /// the container already; a group that joined here leaves again if the device fd is refused.
    fn open_device(&self, addr: &PciAddress, opts: &vfio_core::AssignOptions) -> Result<vfio_core::Device> {
        let id = self.sysfs.iommu_group(addr).map_err(|e| {
            match vfio_core::host::doctor::diagnose::groupless(&self.sysfs, addr) {
                Some(cause) if e.errno() == Some(Errno::NOENT) => e.with_cause(cause),
                _ => e,
            }
        })?;
        self.open_device_in(addr.to_string(), id, opts)
    }

    /// Opens device `name` (its `dev_name`) through group `id`, as [`Container::open_device`].
    fn open_device_in(&self, name: String, id: u32, opts: &vfio_core::AssignOptions) -> Result<vfio_core::Device> {
        let mut state = self.lock();
        Self::forget_detached_locked(&mut state);
        let (pos, joined) = match state.position(id) {
            Some(pos) => (pos, false),
            None => {
                let group = self.join(&mut state, id, Some(&name))?;
                state.groups.push(Member {
                    id,
                    group,
                    kept: false,
                    lease: None,
                });
                (state.groups.len() - 1, true)
            }
        };
        let fetched = match &opts.vf_token {
            None => state.groups[pos].group.get_device_fd(&self.sysfs, &name, &name),
            Some(token) => state.groups[pos].group.device_fd_with_token(&name, token),
        };
        let fd = match fetched {
            Ok(fd) => fd,
            Err(e) => {
                // Undo the join: a refused open must not keep the group (another process
                // could not open it until this one exits).
                if joined {
                    if let Err(u) = Self::release_locked(&mut state, pos, None) {
                        log::warn!(target: "vfio", "undoing the join of a group whose device was refused: {u}");
                    }
                }
                return Err(e);
            }
        };
        let lease = self.lease_locked(&mut state, pos);
        drop(state);
        let owner: vfio_core::Owner = match &opts.hold {
            None => lease,
            // Tuple fields drop in order: the group's lease, then what the caller holds.
            Some(hold) => Arc::new((lease, hold.clone())),
        };
        Ok(vfio_core::Device::from_fd(fd, name, Some(owner)))
    }

    /// The lease of group `pos`'s open devices: the live one, or a new one.
    fn lease_locked(&self, state: &mut State, pos: usize) -> Arc<GroupLease> {
        if let Some(lease) = state.groups[pos].lease.as_ref().and_then(|(_, l)| l.upgrade()) {
            return lease;
        }
        state.next_lease += 1;
        let lease = Arc::new(GroupLease {
            id: state.next_lease,
            group: state.groups[pos].group.clone(),
            state: Arc::downgrade(&self.state),
        });
        state.groups[pos].lease = Some((lease.id, Arc::downgrade(&lease)));
        lease
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

    /// Opens the device's group unless it is in the container already, adds it to the
    /// container (`VFIO_GROUP_SET_CONTAINER`, `VFIO_SET_IOMMU` for the first group) and gets
    /// the device fd (`VFIO_GROUP_GET_DEVICE_FD`). Every step that fails undoes the steps
    /// before it: a group that joined for this open leaves the container and closes again (on
    /// iommufd's compatibility container the MSI-isolation refusal, EPERM, comes only at
    /// `VFIO_GROUP_GET_DEVICE_FD`), so a refused open holds nothing another process needs. The
    /// group leaves again when the last device opened through it closes, unless it joined
    /// through [`Container::add_group`]. The driver is looked at only when a step fails (for
    /// the clearer error), so devices on VFIO variant drivers can be assigned too.
    ///
    /// A refusal the library can explain carries its typed cause ([`Error::cause`], the
    /// doctor's `Finding`): a member of the group on a host driver (`GroupNotViable`, EPERM
    /// from `VFIO_GROUP_SET_CONTAINER`, or from `VFIO_GROUP_GET_DEVICE_FD` in the compatibility
    /// container), no interrupt remapping (`NoInterruptRemapping`, EPERM), a group node this
    /// user may not open (`NodeNotAccessible`), a group open elsewhere (`Busy`, EBUSY, naming the
    /// process), a device without an IOMMU group (`NoIommu`, `NoIommuGroup`).
    #[doc(
        alias = "VFIO_GROUP_SET_CONTAINER",
        alias = "VFIO_SET_IOMMU",
        alias = "VFIO_GROUP_GET_DEVICE_FD"
    )]
    fn assign_device(&self, addr: &PciAddress) -> Result<vfio_core::Device> {
        self.assign_device_with(addr, &vfio_core::AssignOptions::default())
    }

    /// `VFIO_GROUP_GET_DEVICE_FD` with the name `"<addr> vf_token=<uuid>"` when a VF token is
    /// given (Linux 5.7); EACCES and EINVAL refusals are explained (naming the PF) by
    /// [`vfio_core::explain_vf_token_refusal`].
    #[doc(alias = "VFIO_GROUP_GET_DEVICE_FD")]
    fn assign_device_with(&self, addr: &PciAddress, opts: &vfio_core::AssignOptions) -> Result<vfio_core::Device> {
        self.open_device(addr, opts).map_err(|e| {
            // No IOMMU group and no-IOMMU mode off: vfio-pci cannot take the device, whatever
            // its driver; that cause says more than the driver does.
            use vfio_core::host::doctor::Finding;
            // A device on another driver is told so first (as in cdev mode).
            let on_other_driver = matches!(self.sysfs.driver(addr), Ok(Some(d)) if !d.contains("vfio"));
            if matches!(e.cause(), Some(Finding::NoIommu | Finding::NoIommuGroup { .. })) && !on_other_driver {
                return e;
            }
            match self.sysfs.explain_open_failure(addr) {
                Some(better) => better,
                None => vfio_core::explain_vf_token_refusal(&self.sysfs, addr, opts.vf_token.is_some(), e),
            }
        })
    }

    /// As [`vfio_core::Container::assign_device`], for any device: its group from its
    /// `iommu_group` link, its name (a mediated device's lowercase UUID) for
    /// `VFIO_GROUP_GET_DEVICE_FD`. An emulated-IOMMU group (a mediated device's) joins only an
    /// IOVA container: a no-IOMMU container refuses it, before opening anything, with
    /// InvalidArgument naming the group.
    #[doc(alias = "VFIO_GROUP_GET_DEVICE_FD")]
    fn assign(&self, device: &vfio_core::DeviceRef) -> Result<vfio_core::Device> {
        if let vfio_core::DeviceRef::Pci(a) = device {
            return vfio_core::Container::assign_device(self, a);
        }
        let id = self.sysfs.device_iommu_group(device)?;
        if self.is_noiommu() && self.sysfs.is_emulated_group(id) {
            return Err(Error::invalid(
                "assign device",
                format!("IOMMU group {id} of {device}"),
                "an emulated-IOMMU group (a mediated device's) joins only an IOVA container \
                 (type1 or iommufd's compatibility container), never a no-IOMMU one: open the \
                 container with Addressing::Iova, which works without an IOMMU too",
            ));
        }
        self.open_device_in(device.vfio_name(), id, &vfio_core::AssignOptions::default())
            .map_err(|e| match self.sysfs.require_device_ref(device) {
                Err(gone) => gone,
                Ok(_) => e,
            })
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

    /// The type1 driver: `VFIO_IOMMU_MAP_DMA`, pinned at map time; iommufd's compat container:
    /// `IOMMU_IOAS_MAP_FILE` of the buffer's memfd into its compat IOAS; no IOMMU: pinned in
    /// place (see `map_dma_raw` below and the crate's `dma.rs` and `noiommu.rs`).
    #[doc(alias = "VFIO_IOMMU_MAP_DMA", alias = "IOMMU_IOAS_MAP_FILE")]
    #[inline]
    fn map_dma(&self, buffer: &vfio_core::DmaBuffer, iova: u64, access: DmaAccess) -> Result<u64> {
        self.map_buffer(buffer, iova, access)
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
        if let Some(pins) = self.pins() {
            return self.pin_raw(pins, vaddr, size, iova);
        }
        // SAFETY: the caller's contract is this method's: the memory stays valid and
        // unreferenced while mapped.
        unsafe { self.map_type1(vaddr, size, iova, access) }
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
        // Two separate paths, so that the common one keeps its result in registers.
        if self.is_noiommu() {
            return self.unpin_dma(iova, size);
        }
        match self.unmap(iova, size, 0) {
            Ok(0) if size > 0 => Err(self.unmapped_nothing(iova, size)),
            Ok(n) => Ok(n),
            Err(e) => Err(self.unmap_refused(e, iova, size)),
        }
    }

    /// iommufd's compat container: `IOMMU_IOAS_MAP_FILE` of the dma-buf into its compat IOAS
    /// (Linux >= 6.19). The type1 driver and no-IOMMU containers: Unsupported (use
    /// `map_mmio_raw`). See the crate's `peer.rs`.
    #[doc(alias = "IOMMU_IOAS_MAP_FILE")]
    fn map_dma_buf(&self, buf: &vfio_core::DmaBuf, iova: u64, access: DmaAccess) -> Result<u64> {
        self.import_dma_buf(buf, iova, access)
    }

    /// The type1 driver: `VFIO_IOMMU_MAP_DMA` of the mmap (never revoked); no IOMMU: the BAR's
    /// physical address from sysfs `resource` (nothing mapped); iommufd's compat container:
    /// Unsupported (use `map_dma_buf`). See the crate's `peer.rs`.
    #[doc(alias = "VFIO_IOMMU_MAP_DMA")]
    unsafe fn map_mmio_raw(
        &self,
        region: &vfio_core::MappedRegion,
        offset: u64,
        len: u64,
        iova: u64,
        access: DmaAccess,
    ) -> Result<u64> {
        // SAFETY: forwarded to the caller.
        unsafe { self.map_peer_mmio(region, offset, len, iova, access) }
    }

    /// [`IommuInfo::dma_avail`] (`VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL`, type1 driver, Linux >=
    /// 5.10); `None` without an IOMMU, and on iommufd's compat container, which has no mapping
    /// limit and reports `u32::MAX` (`iommufd_fill_cap_dma_avail`; a type1 `dma_entry_limit` of
    /// `u32::MAX` is no limit either).
    #[doc(alias = "VFIO_IOMMU_GET_INFO", alias = "VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL")]
    fn dma_avail(&self) -> Result<Option<u32>> {
        if self.is_noiommu() {
            return Ok(None);
        }
        Ok(self.info()?.dma_avail.filter(|&a| a != u32::MAX))
    }
}

impl Container {
    /// The no-IOMMU side of `map_dma_raw`: pins in place (see `noiommu.rs`).
    #[cold]
    #[inline(never)]
    fn pin_raw(&self, pins: &PinTable, vaddr: *mut u8, size: u64, iova: u64) -> Result<u64> {
        pins.pin(vaddr, size, iova, crate::noiommu::PinHow::raw(), || {
            self.dma_target(iova, size)
        })
    }

    /// The no-IOMMU side of `unmap_dma`.
    #[cold]
    #[inline(never)]
    fn unpin_dma(&self, iova: u64, size: u64) -> Result<u64> {
        match self.unmap_range(iova, size) {
            Ok(0) if size > 0 => Err(self.unmapped_nothing(iova, size)),
            other => other,
        }
    }

    /// ENOENT for an unmap that found nothing in its range.
    #[cold]
    #[inline(never)]
    fn unmapped_nothing(&self, iova: u64, size: u64) -> Error {
        Error::kernel(
            if self.is_noiommu() {
                "no-IOMMU unpin found nothing pinned"
            } else {
                "VFIO_IOMMU_UNMAP_DMA unmapped nothing"
            },
            self.dma_target(iova, size),
            Errno::NOENT,
        )
    }

    /// A refused unmap, as the `Container` trait reports it. After the last group left, the
    /// type1 driver is gone from the container, with every mapping, and the kernel answers
    /// EINVAL to every DMA request: that is ENOENT here, as for any range where nothing is
    /// mapped, so that a mapping's guard knows its memory is free.
    #[cold]
    #[inline(never)]
    fn unmap_refused(&self, e: Error, iova: u64, size: u64) -> Error {
        let emptied = {
            let state = self.lock();
            state.emptied && state.iommu.is_none()
        };
        if e.errno() != Some(Errno::INVAL) || !emptied {
            return e;
        }
        Error::kernel(
            "VFIO_IOMMU_UNMAP_DMA unmapped nothing",
            format!(
                "{} (no group in the container: the last one took every mapping along)",
                self.dma_target(iova, size)
            ),
            Errno::NOENT,
        )
    }
}

/// The path of the container node under a /dev directory.
pub fn container_path(dev: &Path) -> PathBuf {
    dev.join("vfio/vfio")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_teardown_returns_its_first_failure() {
        let mut r = FirstError::default();
        r.note(Ok(()));
        r.note(Err(Error::kernel(
            "VFIO_GROUP_UNSET_CONTAINER",
            "/dev/vfio/7",
            Errno::BUSY,
        )));
        // Logged, not returned.
        r.note(Err(Error::kernel("close", "/dev/vfio/7", Errno::BADF)));
        let e = r.into_result().unwrap_err();
        assert_eq!(e.errno(), Some(Errno::BUSY), "{e}");
        assert!(FirstError::default().into_result().is_ok());
    }

    #[test]
    fn an_eperm_names_its_likely_cause_and_the_way_past_it() {
        use crate::group::eperm_hint;
        let hint = eperm_hint(Errno::PERM);
        assert!(
            hint.contains("MSI") && hint.contains("allow_unsafe_interrupts"),
            "{hint}"
        );
        assert_eq!(eperm_hint(Errno::INVAL), "");
        assert_eq!(errno_text(Errno::PERM), "EPERM");
    }
}
