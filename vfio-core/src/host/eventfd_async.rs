//! Waiting for interrupts from a tokio runtime (feature `tokio`): the eventfd is registered with
//! the runtime's reactor (epoll), so a driver task sleeps until the kernel signals the vector.

use std::os::fd::{AsFd, BorrowedFd};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::{Error, EventFd, Result};

/// An [`EventFd`] in non-blocking mode, registered with the current tokio runtime.
#[derive(Debug)]
pub struct AsyncEventFd {
    inner: AsyncFd<EventFd>,
}

impl AsyncEventFd {
    /// Switches `eventfd` to `O_NONBLOCK` and registers it with the runtime of the calling task.
    /// The kernel keeps signalling the same eventfd, so it can be passed to `SET_IRQS` before or
    /// after. Errors: not inside a tokio runtime with I/O enabled; fcntl's errno.
    pub fn new(eventfd: EventFd) -> Result<Self> {
        let flags = rustix::fs::fcntl_getfl(&eventfd).map_err(|e| Error::kernel("fcntl F_GETFL", "eventfd", e))?;
        rustix::fs::fcntl_setfl(&eventfd, flags | rustix::fs::OFlags::NONBLOCK)
            .map_err(|e| Error::kernel("fcntl F_SETFL O_NONBLOCK", "eventfd", e))?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::unsupported(
                "async eventfd",
                "eventfd",
                "not called from inside a tokio runtime",
            ));
        }
        // SAFETY: EventFd owns its fd and never closes or replaces it while alive, so the raw fd
        // stays the same open file for as long as the AsyncFd holds it.
        let inner = unsafe { AsyncFd::register_with_interest(eventfd, Interest::READABLE) }.map_err(|e| {
            Error::unsupported(
                "async eventfd",
                "eventfd",
                format!("cannot register with the tokio reactor: {e}"),
            )
        })?;
        Ok(AsyncEventFd { inner })
    }

    /// Waits until the counter is non-zero and returns (and clears) it: the number of interrupts
    /// since the last wait.
    pub async fn wait(&self) -> Result<u64> {
        loop {
            let mut guard = self
                .inner
                .readable()
                .await
                .map_err(|e| Error::unsupported("async eventfd", "eventfd", e.to_string()))?;
            let mut buf = [0u8; 8];
            match rustix::io::read(self.inner.get_ref(), &mut buf) {
                Ok(_) => return Ok(u64::from_ne_bytes(buf)),
                Err(rustix::io::Errno::AGAIN) => guard.clear_ready(),
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(Error::kernel("read", "eventfd", e)),
            }
        }
    }

    /// The eventfd, e.g. to pass to [`IrqSet::eventfds`](crate::IrqSet::eventfds).
    pub fn eventfd(&self) -> &EventFd {
        self.inner.get_ref()
    }

    /// Deregisters from the runtime and gives the (still non-blocking) eventfd back.
    pub fn into_inner(self) -> EventFd {
        self.inner.into_inner()
    }
}

impl AsFd for AsyncEventFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.get_ref().as_fd()
    }
}
