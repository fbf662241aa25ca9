//! Mediated devices (mdev): virtual devices a parent driver carves out of itself, created and
//! removed through sysfs (`Documentation/driver-api/vfio-mediated-device.rst`), then opened
//! through VFIO like any device ([`DeviceRef::Mdev`](crate::DeviceRef)).
//!
//! - [`MdevParent`]: a device that can create them (`/sys/class/mdev_bus/<parent>`);
//! - [`MdevType`]: one of its `mdev_supported_types`, with its `name`, `description`,
//!   `device_api` and `available_instances`, and `create`;
//! - [`Mdev`]: an instance, which removes itself when the last handle to it goes, unless kept.
//!
//! The kernel's sample drivers (`CONFIG_SAMPLE_VFIO_MDEV_MTTY`, `_MDPY`, `_MBOCHS`) register
//! parents `mtty`, `mdpy` and `mbochs`.

mod instance;
mod mdev_type;
mod parent;

pub use instance::Mdev;
pub use mdev_type::MdevType;
pub use parent::MdevParent;

use crate::{Error, Result, Sysfs};

/// Every mdev parent the kernel has (`/sys/class/mdev_bus/*`), sorted by name; empty when the
/// kernel has no mdev support (`CONFIG_VFIO_MDEV`) or no parent registered. Errors: Path when
/// the class directory exists but cannot be listed.
pub fn mdev_parents(sysfs: &Sysfs) -> Result<Vec<MdevParent>> {
    let dir = sysfs.root().join("class/mdev_bus");
    let entries = match std::fs::read_dir(&dir) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::path("list mdev parents", dir, e)),
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .collect();
    names.sort();
    names.into_iter().map(|n| MdevParent::open(sysfs, &n)).collect()
}

/// Reads a sysfs attribute, trimmed. Errors: Path naming the file.
pub(crate) fn read_attr(path: &std::path::Path) -> Result<String> {
    std::fs::read_to_string(path)
        .map(|s| s.trim_end().to_owned())
        .map_err(|e| Error::path("read", path, e))
}

#[cfg(test)]
mod tests;
