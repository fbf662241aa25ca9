//! The seed's group-only API, kept for callers that manage groups by number. Everything here is
//! a thin wrapper over [`Container`]; new code should use it directly.

#![allow(deprecated)]

use std::os::fd::OwnedFd;

use vfio_core::{Error, PciAddress, Result, Sysfs};

use crate::Container;

/// Binds IOMMU group `group` to `container` (opening the group, `VFIO_GROUP_SET_CONTAINER`,
/// and `VFIO_SET_IOMMU` for the first group). The group stays bound, whether or not a device of
/// it is open, until [`group_unbind`] or the container closes. Errors as
/// [`Container::add_group`].
#[deprecated(note = "use the Container API: Container::add_group")]
#[doc(alias = "VFIO_GROUP_SET_CONTAINER", alias = "VFIO_SET_IOMMU")]
pub fn group_bind(container: &Container, group: u32) -> Result<()> {
    container.add_group(group).map(drop)
}

/// Unbinds group `group` from `container` (`VFIO_GROUP_UNSET_CONTAINER`). Errors as
/// [`Container::remove_group`]: EBUSY while one of its devices is open.
#[deprecated(note = "use the Container API: Container::remove_group")]
#[doc(alias = "VFIO_GROUP_UNSET_CONTAINER")]
pub fn group_unbind(container: &Container, group: u32) -> Result<()> {
    container.remove_group(group)
}

/// A duplicate (close-on-exec) of the fd of group `group`, which must be bound to `container`:
/// this never opens a group. Errors: InvalidArgument when the group is not bound; the errno of
/// `fcntl(F_DUPFD_CLOEXEC)`.
#[deprecated(note = "use the Container API: Container::group")]
pub fn group_fd(container: &Container, group: u32) -> Result<OwnedFd> {
    let g = container.group(group).ok_or_else(|| {
        Error::invalid(
            "get group fd",
            format!("group {group}"),
            "the group is not bound to this container",
        )
    })?;
    g.try_clone_fd()
}

/// The IOMMU group number of a PCI device, from sysfs. Errors: Path when the device or its
/// `iommu_group` link is missing (no IOMMU and no no-IOMMU group).
#[deprecated(note = "use the Container API: Container::assign_device (or Sysfs::iommu_group)")]
pub fn device_group(addr: &PciAddress) -> Result<u32> {
    Sysfs::default().iommu_group(addr)
}
