//! [`MdevType`]: one kind of mediated device a parent can create.

use std::path::{Path, PathBuf};

use super::{Mdev, MdevParent, read_attr};
use crate::{Errno, Error, Result, Sysfs, Uuid};

/// A type of mediated device (`<parent>/mdev_supported_types/<id>`): what `name`,
/// `description`, `device_api` and `available_instances` say, and `create`.
#[derive(Debug, Clone)]
pub struct MdevType {
    id: String,
    parent: String,
    dir: PathBuf,
    sysfs: Sysfs,
}

impl MdevType {
    pub(crate) fn new(parent: &MdevParent, id: String) -> Self {
        MdevType {
            dir: parent.dir().join("mdev_supported_types").join(&id),
            id,
            parent: parent.name().to_owned(),
            sysfs: parent.sysfs().clone(),
        }
    }

    /// Its id, the directory name (`mtty-1`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The name of its parent.
    pub fn parent(&self) -> &str {
        &self.parent
    }

    /// Its sysfs directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its `name` attribute (a human-readable name; the kernel falls back to the type's sysfs
    /// name). Errors: Path naming the file.
    pub fn name(&self) -> Result<String> {
        read_attr(&self.dir.join("name"))
    }

    /// Its `description`, `None` when the driver gives none (mtty does not). Errors: Path for
    /// a file that exists but cannot be read.
    pub fn description(&self) -> Result<Option<String>> {
        let p = self.dir.join("description");
        match std::fs::read_to_string(&p) {
            Ok(s) => Ok(Some(s.trim_end().to_owned())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::path("read", p, e)),
        }
    }

    /// Its `device_api`: the VFIO device API instances speak (`vfio-pci` for the samples).
    /// Errors: Path naming the file.
    pub fn device_api(&self) -> Result<String> {
        read_attr(&self.dir.join("device_api"))
    }

    /// How many more instances can be created now (`available_instances`). For some parents
    /// the count is shared by all its types (mdpy) or by a memory pool (mbochs). Errors: Path
    /// naming the file; Malformed when it is not a number.
    pub fn available_instances(&self) -> Result<u32> {
        let p = self.dir.join("available_instances");
        let t = read_attr(&p)?;
        t.trim()
            .parse()
            .map_err(|_| Error::malformed("read", p.display(), format!("{t:?} is not a number")))
    }

    /// The UUIDs of its instances (`devices/`), sorted. Errors: Path when the directory
    /// cannot be listed.
    pub fn instances(&self) -> Result<Vec<Uuid>> {
        let dir = self.dir.join("devices");
        let mut out: Vec<Uuid> = std::fs::read_dir(&dir)
            .map_err(|e| Error::path("list mdev instances", &dir, e))?
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect();
        out.sort();
        Ok(out)
    }

    /// Creates an instance named `uuid` (writes it to `create`) and returns its owner, which
    /// removes it when the last handle goes unless [`Mdev::into_kept`] keeps it. Errors, each
    /// a Kernel error naming the UUID, the type and the parent: EEXIST when an instance with
    /// this UUID exists (on any parent: the list is global); ENOSPC or EUSERS when the type or
    /// parent is full (the message gives `available_instances`); the driver's errno otherwise.
    /// Path (ENOENT) when the type's `create` is gone.
    pub fn create(&self, uuid: Uuid) -> Result<Mdev> {
        let file = self.dir.join("create");
        let res = std::fs::write(&file, uuid.to_string());
        log::debug!(target: "vfio", "write {uuid} to {} = {res:?}", file.display());
        if let Err(e) = res {
            let Some(errno) = e.raw_os_error().map(Errno::from_raw_os_error) else {
                return Err(Error::path("create mediated device", file, e));
            };
            if errno == Errno::NOENT {
                return Err(Error::path("create mediated device", file, e));
            }
            let why = match errno {
                Errno::EXIST => " (a mediated device with this UUID exists already, on some parent)".to_owned(),
                Errno::NOSPC | Errno::USERS => format!(
                    " (full: available_instances is {})",
                    self.available_instances()
                        .map_or("unreadable".into(), |n| n.to_string())
                ),
                _ => String::new(),
            };
            return Err(Error::kernel(
                "create mediated device",
                format!("{uuid} of type {} on parent {}{why}", self.id, self.parent),
                errno,
            ));
        }
        Ok(Mdev::created(&self.sysfs, uuid, self.id.clone(), self.parent.clone()))
    }
}
