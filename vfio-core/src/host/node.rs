//! Opening `/dev` nodes: always read-write and close-on-exec.

use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{Mode, OFlags};

use crate::{Error, Result};

/// `open(path, O_RDWR | O_CLOEXEC)`. Errors name the path and carry the errno (ENOENT when the
/// node is missing, EACCES without permission, EBUSY when the kernel allows one opener).
pub fn open_node(path: &Path) -> Result<OwnedFd> {
    let res = rustix::fs::open(path, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty());
    log::debug!(target: "vfio", "open({}, O_RDWR|O_CLOEXEC) = {res:?}", path.display());
    res.map_err(|e| Error::path("open", path, std::io::Error::from_raw_os_error(e.raw_os_error())))
}
