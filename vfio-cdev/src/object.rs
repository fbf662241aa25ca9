//! The lifetime every iommufd object shares: destroyed (`IOMMU_DESTROY`) once, either by an
//! explicit `destroy` that returns the kernel's answer or on drop, which logs a failure.

use std::sync::Arc;

use vfio_core::{Errno, Result};

use crate::{Iommufd, ObjectId};

/// Owns one iommufd object id. [`Object::destroy`] returns the kernel's answer; dropping it
/// destroys the object and logs a failure (warn, target `vfio`) naming the object's kind. Either
/// way the destroy is tried once: a refused one is not retried. Declare it as the first field of
/// its owner so the object goes before what it holds (a parent, a fault queue).
#[derive(Debug)]
pub(crate) struct Object {
    iommufd: Arc<Iommufd>,
    id: ObjectId,
    kind: &'static str,
    /// ENOENT on drop means the kernel removed the object with something else: debug, not warn.
    gone_ok: bool,
    /// Still to be destroyed on drop (cleared by [`Object::destroy`]).
    live: bool,
}

impl Object {
    /// Owns object `id` of `iommufd`; `kind` names it in the drop's log line ("hwpt", ...).
    pub(crate) fn new(iommufd: Arc<Iommufd>, id: impl Into<ObjectId>, kind: &'static str) -> Self {
        Object {
            iommufd,
            id: id.into(),
            kind,
            gone_ok: false,
            live: true,
        }
    }

    /// A drop that finds the object gone (ENOENT: the kernel removed it with its device) logs at
    /// debug level only.
    pub(crate) fn gone_ok(mut self) -> Self {
        self.gone_ok = true;
        self
    }

    /// The iommufd the object lives in.
    pub(crate) fn iommufd(&self) -> &Arc<Iommufd> {
        &self.iommufd
    }

    /// `IOMMU_DESTROY` now, returning the kernel's answer; nothing is retried on drop.
    pub(crate) fn destroy(mut self) -> Result<()> {
        self.live = false;
        self.iommufd.destroy(self.id)
    }
}

impl Drop for Object {
    fn drop(&mut self) {
        if !self.live {
            return;
        }
        match self.iommufd.destroy(self.id) {
            Ok(()) => {}
            Err(e) if self.gone_ok && e.errno() == Some(Errno::NOENT) => {
                log::debug!(target: "vfio", "dropping {} {}: already gone with its device: {e}", self.kind, self.id)
            }
            Err(e) => log::warn!(
                target: "vfio",
                "dropping {} {} of {}: {e}",
                self.kind,
                self.id,
                self.iommufd.target()
            ),
        }
    }
}
