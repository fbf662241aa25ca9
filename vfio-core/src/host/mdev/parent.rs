//! [`MdevParent`]: a device whose driver creates mediated devices.

use std::path::{Path, PathBuf};

use super::MdevType;
use crate::{Error, Result, Sysfs};

/// A mediated-device parent: `/sys/class/mdev_bus/<name>`, whose `mdev_supported_types`
/// directory lists the types of instance it can create.
#[derive(Debug, Clone)]
pub struct MdevParent {
    name: String,
    dir: PathBuf,
    sysfs: Sysfs,
}

impl MdevParent {
    /// The parent named `name` (its `dev_name`: `mtty`, or a PCI address for a GPU).
    /// Errors: Path (ENOENT) naming `/sys/class/mdev_bus/<name>` when there is no such parent
    /// (the driver is not loaded, or the kernel has no `CONFIG_VFIO_MDEV`).
    pub fn open(sysfs: &Sysfs, name: &str) -> Result<Self> {
        let dir = sysfs.root().join("class/mdev_bus").join(name);
        std::fs::metadata(dir.join("mdev_supported_types")).map_err(|e| Error::path("find mdev parent", &dir, e))?;
        Ok(MdevParent {
            name: name.to_owned(),
            dir,
            sysfs: sysfs.clone(),
        })
    }

    /// Its name (`dev_name` of the parent device).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its sysfs directory (`/sys/class/mdev_bus/<name>`, a link to the device).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The types it supports, sorted by id. Errors: Path when `mdev_supported_types` cannot be
    /// listed.
    pub fn types(&self) -> Result<Vec<MdevType>> {
        let dir = self.dir.join("mdev_supported_types");
        let mut ids: Vec<String> = std::fs::read_dir(&dir)
            .map_err(|e| Error::path("list mdev types", &dir, e))?
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .collect();
        ids.sort();
        Ok(ids.into_iter().map(|id| MdevType::new(self, id)).collect())
    }

    /// The type `id` (e.g. `mtty-1`: the driver's name, a dash, the type's sysfs name).
    /// Errors: Path (ENOENT) naming `.../mdev_supported_types/<id>` for a type the parent
    /// does not have.
    pub fn mdev_type(&self, id: &str) -> Result<MdevType> {
        let dir = self.dir.join("mdev_supported_types").join(id);
        if id.is_empty() || id.contains('/') || id.starts_with('.') {
            return Err(Error::invalid("find mdev type", dir.display(), "not a type name"));
        }
        std::fs::metadata(dir.join("create")).map_err(|_| {
            Error::path(
                "find mdev type (no such type on this parent)",
                &dir,
                std::io::Error::from_raw_os_error(crate::Errno::NOENT.raw_os_error()),
            )
        })?;
        Ok(MdevType::new(self, id.to_owned()))
    }

    pub(crate) fn sysfs(&self) -> &Sysfs {
        &self.sysfs
    }
}
