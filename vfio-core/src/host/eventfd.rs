//! `eventfd(2)`: how VFIO delivers each interrupt vector to user space.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::Duration;

use rustix::event::{EventfdFlags, PollFd, PollFlags};

use crate::{Error, Result};

/// A close-on-exec eventfd counting interrupts.
#[derive(Debug)]
pub struct EventFd {
    fd: OwnedFd,
}

impl AsFd for EventFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl EventFd {
    /// `eventfd(0, EFD_CLOEXEC)`. Errors: EMFILE/ENFILE (Kernel) when out of fds, ENOMEM.
    pub fn new() -> Result<Self> {
        let res = rustix::event::eventfd(0, EventfdFlags::CLOEXEC);
        log::debug!(target: "vfio", "eventfd(0, EFD_CLOEXEC) = {res:?}");
        let fd = res.map_err(|e| Error::kernel("eventfd", "eventfd", e))?;
        Ok(EventFd { fd })
    }

    /// Adopts an eventfd opened elsewhere: typically an interrupt's eventfd received from the
    /// process that enabled the vector ([`crate::recv_fds`]), so a secondary process waits on the
    /// same interrupts without a `VFIO_DEVICE_SET_IRQS` of its own. Nothing checks that `fd` is
    /// an eventfd: on anything else, reads and waits fail with the kernel's errno.
    pub fn from_fd(fd: OwnedFd) -> Self {
        EventFd { fd }
    }

    /// `poll(2)` for up to `timeout` until the counter is non-zero, then `read(2)`: returns (and
    /// clears) it; `Ok(None)` on timeout. Interrupted polls are retried. Errors: the errno of
    /// poll or read (Kernel).
    pub fn wait_timeout(&self, timeout: Duration) -> Result<Option<u64>> {
        let ts = rustix::event::Timespec::try_from(timeout).unwrap_or(rustix::event::Timespec {
            tv_sec: i64::MAX,
            tv_nsec: 0,
        });
        loop {
            let mut fds = [PollFd::new(&self.fd, PollFlags::IN)];
            match rustix::event::poll(&mut fds, Some(&ts)) {
                Ok(0) => return Ok(None),
                Ok(_) => return self.read().map(Some),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(Error::kernel("poll", "eventfd", e)),
            }
        }
    }

    /// `read(2)` of the counter: returns and clears it, blocking until it is non-zero.
    /// Errors: the errno of read (Kernel), e.g. EINVAL when the fd is not an eventfd.
    pub fn read(&self) -> Result<u64> {
        let mut buf = [0u8; 8];
        let res = rustix::io::read(&self.fd, &mut buf);
        log::debug!(target: "vfio", "read(eventfd {}) = {res:?}", self.fd.as_raw_fd());
        res.map_err(|e| Error::kernel("read", "eventfd", e))?;
        Ok(u64::from_ne_bytes(buf))
    }

    /// `write(2)` of `n` to the counter (to simulate an interrupt). Errors: the errno of write
    /// (Kernel): EINVAL for `u64::MAX`, EAGAIN never (the fd blocks) but the call then waits
    /// while the counter would overflow.
    pub fn signal(&self, n: u64) -> Result<()> {
        let res = rustix::io::write(&self.fd, &n.to_ne_bytes());
        log::debug!(target: "vfio", "write(eventfd {}, {n}) = {res:?}", self.fd.as_raw_fd());
        res.map_err(|e| Error::kernel("write", "eventfd", e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg_attr(miri, ignore = "an eventfd and poll(2), which Miri cannot run")]
    fn signal_then_wait() {
        let e = EventFd::new().unwrap();
        assert_eq!(e.wait_timeout(Duration::from_millis(1)).unwrap(), None);
        e.signal(2).unwrap();
        assert_eq!(e.wait_timeout(Duration::from_secs(1)).unwrap(), Some(2));
    }

    #[test]
    #[cfg_attr(miri, ignore = "an eventfd and poll(2), which Miri cannot run")]
    fn adopted_fd_sees_the_same_counter() {
        let e = EventFd::new().unwrap();
        let other = EventFd::from_fd(e.as_fd().try_clone_to_owned().unwrap());
        e.signal(3).unwrap();
        assert_eq!(other.wait_timeout(Duration::from_secs(1)).unwrap(), Some(3));
    }
}
