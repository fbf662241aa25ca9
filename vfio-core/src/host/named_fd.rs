//! [`NamedFd`]: an owned fd that knows what it is, and closes with `close(2)`'s answer checked.

use std::mem::ManuallyDrop;
use std::os::fd::{AsFd, BorrowedFd, IntoRawFd, OwnedFd};

use crate::{Errno, Error, Result};

/// An owned fd and the name errors give it, closed with `close(2)`'s answer checked (the
/// standard `OwnedFd` throws it away): [`NamedFd::close`] returns a failure, dropping logs it
/// (warn, target `vfio`, naming the object and the errno). Used for containers, groups,
/// iommufds and device cdevs.
#[derive(Debug)]
pub struct NamedFd {
    fd: ManuallyDrop<OwnedFd>,
    name: String,
}

impl AsFd for NamedFd {
    #[inline]
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl NamedFd {
    /// Owns `fd`, named `name` in errors and logs.
    pub fn new(fd: OwnedFd, name: String) -> Self {
        NamedFd {
            fd: ManuallyDrop::new(fd),
            name,
        }
    }

    /// How errors and logs name the fd (its node or device, or what it was adopted as).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The fd and the name, no longer closed here.
    pub fn into_parts(self) -> (OwnedFd, String) {
        let mut this = ManuallyDrop::new(self);
        // SAFETY: `this` is never dropped, so its fd is taken exactly once, here (Drop, the only
        // other place that takes it, does not run); the name is moved out, leaving an empty
        // string that owns no memory.
        let fd = unsafe { ManuallyDrop::take(&mut this.fd) };
        (fd, std::mem::take(&mut this.name))
    }

    /// Closes the fd. Errors: the errno of close (Kernel, naming the object).
    pub fn close(self) -> Result<()> {
        let (fd, name) = self.into_parts();
        close_fd(fd, &name)
    }
}

impl Drop for NamedFd {
    fn drop(&mut self) {
        // SAFETY: drop runs at most once, and `into_parts`, the only other place that takes
        // the fd, keeps it from running; the fd is not used afterwards.
        let fd = unsafe { ManuallyDrop::take(&mut self.fd) };
        if let Err(e) = close_fd(fd, &self.name) {
            log::warn!(target: "vfio", "dropping {}: {e}", self.name);
        }
    }
}

/// `close(2)` of `fd`, with its answer: the fd is closed even when close fails (Linux releases
/// the descriptor first), so the error is only reported. Logged at debug level like every
/// kernel call.
fn close_fd(fd: OwnedFd, name: &str) -> Result<()> {
    let raw = fd.into_raw_fd();
    // SAFETY: `raw` was an OwnedFd given up just above: open, and closed by nothing else.
    let res = match unsafe { libc::close(raw) } {
        0 => Ok(()),
        _ => Err(Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::IO)),
    };
    log::debug!(target: "vfio", "close({name}, fd {raw}) = {res:?}");
    res.map_err(|e| Error::kernel("close", name, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg_attr(miri, ignore = "closes a real fd, which Miri cannot")]
    fn a_named_fd_closes_with_its_answer() {
        let fd = rustix::io::dup(std::io::stdin().as_fd()).unwrap();
        NamedFd::new(fd, "a dup of stdin".into()).close().unwrap();
        let fd = rustix::io::dup(std::io::stdin().as_fd()).unwrap();
        let (fd, name) = NamedFd::new(fd, "kept".into()).into_parts();
        assert_eq!(name, "kept");
        assert!(rustix::io::fcntl_getfd(&fd).is_ok(), "into_parts closed the fd");
    }
}
