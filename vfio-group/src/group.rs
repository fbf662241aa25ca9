//! A VFIO group (`/dev/vfio/<N>` or `/dev/vfio/noiommu-<N>`): the unit of ownership in the
//! legacy API. A group joins one container, and its devices' fds are fetched from it.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;

#[cfg(doc)]
use vfio_core::host::doctor::Finding;
use vfio_core::host::doctor::diagnose;
use vfio_core::ioctl::{self, requests as req};
use vfio_core::{Errno, Error, NamedFd, Result, Sysfs};
use vfio_sys as sys;

use crate::container::ContainerFd;

/// What `VFIO_GROUP_GET_STATUS` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupStatus {
    /// Every device of the group is bound to a VFIO driver (or none at all).
    pub viable: bool,
    /// The group has joined a container.
    pub container_set: bool,
}

/// An open VFIO group. Dropping it closes the group fd, which takes the group out of its
/// container once no device fd of it is open (the kernel holds the group for them); a failed
/// close is logged (warn, target `vfio`). [`Group::close`] returns that failure instead.
#[derive(Debug)]
pub struct Group {
    // Field order is drop order: the group fd closes before the container it joined.
    fd: NamedFd,
    id: u32,
    container: Option<Arc<ContainerFd>>,
}

impl AsFd for Group {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Group {
    /// Opens group `id`: `/dev/vfio/<id>`, or `/dev/vfio/noiommu-<id>` when `noiommu`.
    /// Errors (Path, with a typed [`Error::cause`]): ENOENT when the node is missing (no device
    /// of the group on vfio-pci: [`Finding::NodeMissing`]); EACCES or EPERM when this user may
    /// not open it ([`Finding::NodeNotAccessible`]); EBUSY when the group is already open (a
    /// group has one opener: another container or process holds it, or a device of it is
    /// bound through its cdev): [`Finding::Busy`] names the process holding the node where
    /// `/proc` shows it (the `/proc` next to `dev`).
    pub fn open(dev: &std::path::Path, id: u32, noiommu: bool) -> Result<Self> {
        let name = if noiommu {
            format!("noiommu-{id}")
        } else {
            id.to_string()
        };
        let path = dev.join("vfio").join(name);
        let fd = vfio_core::open_node(&path).map_err(|e| open_refused(dev, e))?;
        Ok(Group {
            fd: NamedFd::new(
                fd,
                path.into_os_string()
                    .into_string()
                    .unwrap_or_else(|p| p.to_string_lossy().into_owned()),
            ),
            id,
            container: None,
        })
    }

    /// Adopts an open group fd.
    pub fn from_fd(fd: OwnedFd, id: u32) -> Self {
        Group {
            fd: NamedFd::new(fd, format!("group fd {id}")),
            id,
            container: None,
        }
    }

    /// Closes the group fd (`close(2)`), returning its errno where dropping the group would only
    /// log it. The kernel takes the group out of its container when the fd closes, unless a
    /// device fd of the group is still open: the group then stays, held by that device, until
    /// it closes (use [`Container::remove_group`](crate::Container::remove_group) to be told
    /// EBUSY instead). Errors: the errno of close (Kernel, naming the group node).
    pub fn close(self) -> Result<()> {
        self.fd.close()
    }

    /// The group number.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// A close-on-exec duplicate of the group fd (`F_DUPFD_CLOEXEC`).
    pub fn try_clone_fd(&self) -> Result<OwnedFd> {
        self.fd
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| Error::path("duplicate group fd", self.path(), e))
    }

    /// The node it was opened from (or `group fd <id>` for an adopted fd).
    pub fn path(&self) -> &Path {
        Path::new(self.fd.name())
    }

    fn target(&self) -> String {
        self.fd.name().to_string()
    }

    /// The group fd, typed for group requests (see [`vfio_core::ioctl`]), e.g. to issue a
    /// request this crate does not wrap.
    #[inline]
    pub fn ioctl_fd(&self) -> ioctl::Fd<'_, ioctl::kind::Group> {
        // SAFETY: a Group holds a VFIO group fd (or, when adopted with `from_fd`, an fd the
        // caller named a group). The group requests' numbers (VFIO_BASE + 3 to 6) are defined
        // on no other kind of VFIO or iommufd fd, and the ioctl magic ';' is VFIO's: any other
        // fd answers them with ENOTTY.
        unsafe { ioctl::Fd::new_unchecked(self.fd.as_fd()) }
    }

    /// `VFIO_GROUP_GET_STATUS`: whether the group is viable (all its devices on VFIO drivers
    /// or none) and whether it is in a container. Errors: the kernel's errno (Kernel).
    #[doc(alias = "VFIO_GROUP_GET_STATUS")]
    pub fn status(&self) -> Result<GroupStatus> {
        let mut st = sys::vfio_group_status::default();
        ioctl::call::<req::GroupGetStatus>(self.ioctl_fd(), &mut st)
            .map_err(|e| ioctl::kernel_error::<req::GroupGetStatus>(self.target(), e))?;
        Ok(GroupStatus {
            viable: st.flags & sys::VFIO_GROUP_FLAGS_VIABLE != 0,
            container_set: st.flags & sys::VFIO_GROUP_FLAGS_CONTAINER_SET != 0,
        })
    }

    /// `VFIO_GROUP_SET_CONTAINER`: joins `container`. Errors: EINVAL when the group already has a
    /// container; EPERM when a member of the group is on a host driver (Linux >= 5.19 claims DMA
    /// ownership here: [`Finding::GroupNotViable`]) or the group's IOMMU lacks interrupt
    /// isolation and unsafe interrupts are not allowed (type1, when the container already has
    /// an IOMMU type: [`Finding::NoInterruptRemapping`]), as the error's cause; a cause is looked
    /// for in `sysfs`. `purpose` follows the group's name in errors (e.g. the device it is
    /// joined for).
    #[doc(alias = "VFIO_GROUP_SET_CONTAINER")]
    pub(crate) fn set_container(
        &mut self,
        container: &Arc<ContainerFd>,
        purpose: Purpose<'_>,
        sysfs: &Sysfs,
    ) -> Result<()> {
        let mut fd: i32 = container.as_fd().as_raw_fd();
        ioctl::call::<req::GroupSetContainer>(self.ioctl_fd(), &mut fd).map_err(|e| {
            explained::<req::GroupSetContainer>(sysfs, self.id, e, |hint| format!("{}{purpose}{hint}", self.target()))
        })?;
        self.container = Some(container.clone());
        Ok(())
    }

    /// `VFIO_GROUP_UNSET_CONTAINER`: leaves the container. Errors: EBUSY while a device fd of
    /// the group is open, EINVAL when the group has no container.
    #[doc(alias = "VFIO_GROUP_UNSET_CONTAINER")]
    pub(crate) fn unset_container(&self) -> Result<()> {
        ioctl::call_int::<req::GroupUnsetContainer>(self.ioctl_fd(), 0)
            .map_err(|e| ioctl::kernel_error::<req::GroupUnsetContainer>(self.target(), e))?;
        Ok(())
    }

    /// `VFIO_GROUP_GET_DEVICE_FD` for the device named `name` (its PCI address). The kernel
    /// returns the fd close-on-exec. Errors: EINVAL/ENODEV for a device not in this group;
    /// EPERM from iommufd's compatibility container when a member of the group is on a host
    /// driver ([`Finding::GroupNotViable`]) or the IOMMU cannot isolate the device's MSIs
    /// ([`Finding::NoInterruptRemapping`]): there the refusal comes only now, after
    /// `VFIO_GROUP_SET_CONTAINER` and `VFIO_SET_IOMMU` succeeded. The cause is looked for in
    /// the default sysfs (`/sys`).
    #[doc(alias = "VFIO_GROUP_GET_DEVICE_FD")]
    pub fn device_fd(&self, name: &str) -> Result<OwnedFd> {
        self.get_device_fd(&Sysfs::default(), name, name)
    }

    /// `VFIO_GROUP_GET_DEVICE_FD` with the string `request`; errors show `shown` instead (a VF
    /// token is a secret: it stays out of error messages and logs). A refusal's cause is looked
    /// for in `sysfs`.
    pub(crate) fn get_device_fd(&self, sysfs: &Sysfs, request: &str, name: &str) -> Result<OwnedFd> {
        let cname = CString::new(request)
            .map_err(|_| Error::invalid("VFIO_GROUP_GET_DEVICE_FD", self.target(), "device name has a NUL byte"))?;
        // SAFETY: VFIO_GROUP_GET_DEVICE_FD reads a NUL-terminated string; `cname` is one and
        // outlives the call.
        let raw = unsafe { ioctl::call_ptr::<req::GroupGetDeviceFd>(self.ioctl_fd(), cname.as_ptr().cast()) }.map_err(
            |e| {
                explained::<req::GroupGetDeviceFd>(sysfs, self.id, e, |hint| {
                    format!("{} device {name}{hint}", self.target())
                })
            },
        )?;
        // SAFETY: on success the ioctl returns a new fd that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(raw) })
    }

    /// `VFIO_GROUP_GET_DEVICE_FD` for the device named `name`, presenting the SR-IOV VF token
    /// `token` (Linux 5.7): the kernel is sent `"<name> vf_token=<uuid>"`. Needed for a VF whose
    /// PF is on vfio-pci, and for that PF while any of its VFs is open. Errors: EACCES (Kernel)
    /// when the token is wrong; EINVAL when the device is neither a VF of a vfio-pci PF nor a
    /// PF (vfio-pci refuses a token there), or for a device not in this group; otherwise those
    /// of [`Group::device_fd`]. The token never appears in errors.
    #[doc(alias = "VFIO_GROUP_GET_DEVICE_FD")]
    pub fn device_fd_with_token(&self, name: &str, token: &vfio_core::Uuid) -> Result<OwnedFd> {
        self.get_device_fd(
            &Sysfs::default(),
            &format!("{name} vf_token={token}"),
            &format!("{name} vf_token=<the token>"),
        )
    }
}

/// Why a group joins a container, for errors: `" (opening 0000:00:01.0)"`, or nothing. Written
/// only when an error is built, so that a successful join formats nothing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Purpose<'a>(pub Option<&'a str>);

impl std::fmt::Display for Purpose<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(device) => write!(f, " (opening {device})"),
            None => Ok(()),
        }
    }
}

/// The error for a refused `R` on group `group`, with its cause where `sysfs` shows one (else,
/// for EPERM, the [`eperm_hint`] in the target, which `target` is given to place).
#[cold]
pub(crate) fn explained<R: ioctl::Request>(
    sysfs: &Sysfs,
    group: u32,
    errno: Errno,
    target: impl FnOnce(&str) -> String,
) -> Error {
    match diagnose::group_refusal(sysfs, group, errno, diagnose::Backend::Group) {
        Some(cause) => ioctl::kernel_error::<R>(target(""), errno).with_cause(cause),
        None => ioctl::kernel_error::<R>(target(eperm_hint(errno)), errno),
    }
}

/// A refused open of a group node, with its cause (the holder of a busy group is looked for in
/// the `/proc` next to `dev`).
#[cold]
fn open_refused(dev: &Path, e: Error) -> Error {
    let Error::Path {
        path, source, cause, ..
    } = e
    else {
        return e;
    };
    let errno = source.raw_os_error().map(Errno::from_raw_os_error);
    let proc_ = dev
        .parent()
        .map_or_else(|| Path::new("/").join("proc"), |p| p.join("proc"));
    let found = errno.and_then(|e| diagnose::node_refusal(&proc_, &path, e));
    let op = if errno == Some(Errno::BUSY) {
        "open (the group is already open in another container or process, or a device of it is \
         open through its cdev)"
    } else {
        "open"
    };
    let e = Error::Path {
        op,
        path,
        source,
        cause,
    };
    match found {
        Some(f) => e.with_cause(f),
        None => e,
    }
}

/// What an EPERM from joining a container, setting its IOMMU or getting a device fd means, to
/// append to the error's target (empty for any other errno): the kernel says why only in dmesg.
pub(crate) fn eperm_hint(errno: Errno) -> &'static str {
    if errno != Errno::PERM {
        return "";
    }
    " (EPERM: the IOMMU cannot isolate the device's MSIs (no interrupt remapping; dmesg says so); \
     the kernel allows it only with the module parameter allow_unsafe_interrupts=1 of \
     vfio_iommu_type1 (a type1 container) or iommufd (its compatibility container), which gives \
     up that isolation)"
}

/// The devices of IOMMU group `id` that make it non-viable, each as `<address> (driver <name>)`:
/// those bound to a driver other than a VFIO one (`vfio-pci`, `vfio-pci-*`, or `pci-stub` and
/// `pcieport`, which the kernel tolerates, are left out). Read from
/// `<sysfs>/kernel/iommu_groups/<id>/devices`; empty if that cannot be read.
pub(crate) fn non_viable_devices(sysfs: &Sysfs, id: u32) -> Vec<String> {
    diagnose::group_blockers(sysfs, id)
        .into_iter()
        .map(|(addr, driver)| format!("{addr} (driver {driver})"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_devices_that_break_viability() {
        let tmp = std::env::temp_dir().join(format!("vfio-group-viable-{}", std::process::id()));
        let devs = tmp.join("sys/kernel/iommu_groups/7/devices");
        let drivers = tmp.join("sys/bus/pci/drivers");
        std::fs::create_dir_all(&devs).unwrap();
        for (addr, driver) in [
            ("0000:00:03.0", Some("vfio-pci")),
            ("0000:00:03.1", Some("e1000e")),
            ("0000:00:03.2", None),
        ] {
            let d = tmp.join("sys/devices/pci0000:00").join(addr);
            std::fs::create_dir_all(&d).unwrap();
            if let Some(drv) = driver {
                std::fs::create_dir_all(drivers.join(drv)).unwrap();
                std::os::unix::fs::symlink(drivers.join(drv), d.join("driver")).unwrap();
            }
            std::os::unix::fs::symlink(&d, devs.join(addr)).unwrap();
            let bus = tmp.join("sys/bus/pci/devices");
            std::fs::create_dir_all(&bus).unwrap();
            std::os::unix::fs::symlink(&d, bus.join(addr)).unwrap();
        }
        let sysfs = Sysfs::at(tmp.join("sys"), tmp.join("dev"));
        assert_eq!(
            non_viable_devices(&sysfs, 7),
            vec!["0000:00:03.1 (driver e1000e)".to_string()]
        );
        assert!(non_viable_devices(&sysfs, 8).is_empty());
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
