//! [`Mdev`]: one mediated device instance, and who removes it.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::read_attr;
use crate::{Container, Device, DeviceRef, Errno, Error, Result, Sysfs, Uuid};

#[derive(Debug)]
struct Inner {
    uuid: Uuid,
    type_id: String,
    parent: String,
    dir: PathBuf,
    /// Removed when the last handle goes.
    owned: AtomicBool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if !self.owned.load(Ordering::Relaxed) {
            return;
        }
        if let Err(e) = write_remove(&self.dir, self.uuid) {
            log::warn!(target: "vfio", "removing mediated device {} (type {} on {}): {e}", self.uuid, self.type_id, self.parent);
        }
    }
}

fn write_remove(dir: &std::path::Path, uuid: Uuid) -> Result<()> {
    let file = dir.join("remove");
    let res = std::fs::write(&file, "1");
    log::debug!(target: "vfio", "write 1 to {} = {res:?}", file.display());
    res.map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            Error::path("remove mediated device (no such instance: removed already?)", file, e)
        }
        _ => match e.raw_os_error() {
            Some(n) => Error::kernel("remove mediated device", uuid, Errno::from_raw_os_error(n)),
            None => Error::path("remove mediated device", file, e),
        },
    })
}

/// A mediated device instance (`/sys/bus/mdev/devices/<uuid>`). Cloning shares it. One made
/// by [`MdevType::create`](super::MdevType::create) is owned: the drop of its last handle
/// removes it (a failure is logged, warn, target `vfio`), unless [`Mdev::into_kept`] kept it.
/// One found with [`Mdev::find`] is not owned and stays.
///
/// The kernel makes a write to `remove` wait, uninterruptibly once signalled, until every VFIO
/// fd of the instance is closed. So devices opened with [`Mdev::open_in`] hold a handle, and
/// the instance goes only after the last of them closed; [`Mdev::remove`] refuses while one is
/// open. A device fd obtained some other way (a container's `assign` of its UUID) must be
/// closed before the last handle drops.
#[derive(Debug, Clone)]
pub struct Mdev(Arc<Inner>);

impl Mdev {
    pub(crate) fn created(sysfs: &Sysfs, uuid: Uuid, type_id: String, parent: String) -> Self {
        Mdev(Arc::new(Inner {
            dir: DeviceRef::Mdev(uuid).sysfs_dir(sysfs),
            uuid,
            type_id,
            parent,
            owned: AtomicBool::new(true),
        }))
    }

    /// The existing instance `uuid`, not owned (dropping it removes nothing). Its type and
    /// parent come from its `mdev_type` link. Errors: Path (ENOENT) naming the UUID's
    /// directory when there is no such instance (removed?).
    pub fn find(sysfs: &Sysfs, uuid: Uuid) -> Result<Self> {
        let dev = DeviceRef::Mdev(uuid);
        let dir = sysfs.require_device_ref(&dev)?;
        let link = dir.join("mdev_type");
        // Resolved: the link is relative (`../mdev_supported_types/<type>` in the parent).
        let target = std::fs::canonicalize(&link).map_err(|e| Error::path("read mdev type link", &link, e))?;
        let type_id = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // .../<parent>/mdev_supported_types/<type>
        let parent = target
            .parent()
            .and_then(|p| p.parent())
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Mdev(Arc::new(Inner {
            uuid,
            type_id,
            parent,
            dir,
            owned: AtomicBool::new(false),
        })))
    }

    /// Its UUID (the kernel's device name, lowercase).
    pub fn uuid(&self) -> Uuid {
        self.0.uuid
    }

    /// Its type id (`mtty-1`).
    pub fn type_id(&self) -> &str {
        &self.0.type_id
    }

    /// Its parent's name (`mtty`).
    pub fn parent(&self) -> &str {
        &self.0.parent
    }

    /// Its sysfs directory (`/sys/bus/mdev/devices/<uuid>`).
    pub fn dir(&self) -> &std::path::Path {
        &self.0.dir
    }

    /// What VFIO opens it by.
    pub fn device_ref(&self) -> DeviceRef {
        DeviceRef::Mdev(self.0.uuid)
    }

    /// Whether the drop of the last handle removes it.
    pub fn is_owned(&self) -> bool {
        self.0.owned.load(Ordering::Relaxed)
    }

    /// The driver it is bound to (e.g. `mtty`), `None` when it has none. Errors: Path naming
    /// the link when the instance is gone.
    pub fn driver(&self) -> Result<Option<String>> {
        let link = self.0.dir.join("driver");
        match std::fs::read_link(&link) {
            Ok(t) => Ok(t.file_name().map(|n| n.to_string_lossy().into_owned())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && self.0.dir.exists() => Ok(None),
            Err(e) => Err(Error::path("read driver link", link, e)),
        }
    }

    /// Whether the instance still exists in sysfs.
    pub fn exists(&self) -> bool {
        self.0.dir.exists()
    }

    /// The `name` of its type, read from the instance (`mdev_type/name`). Errors: Path.
    pub fn type_name(&self) -> Result<String> {
        read_attr(&self.0.dir.join("mdev_type/name"))
    }

    /// Keeps the instance: dropping the handles no longer removes it. Returns its UUID.
    pub fn into_kept(self) -> Uuid {
        self.0.owned.store(false, Ordering::Relaxed);
        self.0.uuid
    }

    /// Removes the instance now (writes `1` to its `remove`), owned or not. Errors:
    /// InvalidArgument, before anything is written, while another handle exists (a device
    /// opened with [`Mdev::open_in`] holds one: the kernel would make the write wait until it
    /// closes); Path (ENOENT) naming the UUID when the instance is gone already; the kernel's
    /// errno otherwise.
    pub fn remove(self) -> Result<()> {
        let n = Arc::strong_count(&self.0);
        if n > 1 {
            return Err(Error::invalid(
                "remove mediated device",
                self.0.uuid,
                format!(
                    "{} other handle(s) exist (an open device holds one): the kernel would block the \
                     removal until every VFIO fd of the instance is closed",
                    n - 1
                ),
            ));
        }
        self.0.owned.store(false, Ordering::Relaxed);
        write_remove(&self.0.dir, self.0.uuid)
    }

    /// Opens the instance through `container` ([`Container::assign`]: in group mode its
    /// emulated IOMMU group joins the container and `VFIO_GROUP_GET_DEVICE_FD` takes the UUID;
    /// in cdev mode its `vfio-dev/vfioN` is bound to the iommufd), then asks
    /// `VFIO_DEVICE_GET_INFO` once: mtty and mdpy answer IRQ requests only after it. The device
    /// holds a handle to this instance, so the instance outlives the device fd. Errors: Path
    /// (ENOENT) naming the UUID when the instance is gone; InvalidArgument from a no-IOMMU
    /// group container (an emulated group joins only an IOVA container); those of
    /// [`Container::assign`] and [`Device::info`].
    pub fn open_in(&self, container: &dyn Container) -> Result<Device> {
        let dev = DeviceRef::Mdev(self.0.uuid);
        let mut device = container.assign(&dev).map_err(|e| match self.exists() {
            true => e,
            false => self.gone(),
        })?;
        device.info()?;
        device.keep_alive(Arc::new(self.clone()))?;
        Ok(device)
    }

    fn gone(&self) -> Error {
        Error::path(
            "find mediated device (no such instance: removed?)",
            &self.0.dir,
            std::io::Error::from_raw_os_error(Errno::NOENT.raw_os_error()),
        )
    }
}
