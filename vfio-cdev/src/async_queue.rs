//! Reading fault queues and vEVENTQs from a tokio runtime (feature `tokio`): the queue's fd is
//! registered with the runtime's reactor (epoll) for readability, so a task sleeps until the
//! kernel queues a record. The fds never block (an empty read returns nothing), so they are used
//! as they are; only `READABLE` is registered (a fault fd is always writable).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::Arc;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use vfio_core::{Error, Result};

use crate::{Fault, FaultQueue, Vevent, VeventData, Veventq};

/// An `Arc<FaultQueue>` as the reactor sees it: its fd.
#[derive(Debug)]
struct FaultFd(Arc<FaultQueue>);

impl AsRawFd for FaultFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

fn register<T: AsRawFd>(inner: T, what: &str) -> Result<AsyncFd<T>> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(Error::unsupported(
            "async queue",
            what,
            "not called from inside a tokio runtime",
        ));
    }
    // SAFETY: `inner` (a FaultQueue behind an Arc the AsyncFd holds, or a Veventq it owns) keeps
    // its fd open, unchanged, until it is dropped, and closes it only in its own Drop, which runs
    // after the AsyncFd deregisters it (or never, when the AsyncFd is forgotten).
    unsafe { AsyncFd::register_with_interest(inner, Interest::READABLE) }.map_err(|e| {
        Error::unsupported(
            "async queue",
            what,
            format!("cannot register with the tokio reactor: {e}"),
        )
    })
}

/// A [`FaultQueue`] read from a tokio runtime.
#[derive(Debug)]
pub struct AsyncFaultQueue {
    inner: AsyncFd<FaultFd>,
}

impl AsyncFaultQueue {
    /// Registers `queue` with the runtime of the calling task. Errors: Unsupported outside a
    /// tokio runtime with I/O enabled.
    pub fn new(queue: Arc<FaultQueue>) -> Result<Self> {
        let what = format!("fault queue {}", queue.id());
        Ok(AsyncFaultQueue {
            inner: register(FaultFd(queue), &what)?,
        })
    }

    /// The queue, for [`FaultQueue::respond`] and its synchronous reads.
    pub fn queue(&self) -> &Arc<FaultQueue> {
        &self.inner.get_ref().0
    }

    /// Waits until faults are queued and reads them (whole groups, up to `max` records or the
    /// first group). Errors: as [`FaultQueue::read`]; Unsupported when the reactor fails.
    pub async fn read(&self, max: usize) -> Result<Vec<Fault>> {
        loop {
            let mut guard = self
                .inner
                .readable()
                .await
                .map_err(|e| Error::unsupported("async fault queue", self.queue().id(), e.to_string()))?;
            let faults = self.queue().read(max)?;
            if !faults.is_empty() {
                return Ok(faults);
            }
            guard.clear_ready();
        }
    }
}

impl AsFd for AsyncFaultQueue {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.queue().as_fd()
    }
}

impl<T: VeventData> AsRawFd for Veventq<T> {
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

/// A [`Veventq`] read from a tokio runtime.
#[derive(Debug)]
pub struct AsyncVeventq<T: VeventData> {
    inner: AsyncFd<Veventq<T>>,
}

impl<T: VeventData> AsyncVeventq<T> {
    /// Registers `queue` with the runtime of the calling task. Errors: Unsupported outside a
    /// tokio runtime with I/O enabled.
    pub fn new(queue: Veventq<T>) -> Result<Self> {
        let what = format!("veventq {}", queue.id());
        Ok(AsyncVeventq {
            inner: register(queue, &what)?,
        })
    }

    /// The queue.
    pub fn queue(&self) -> &Veventq<T> {
        self.inner.get_ref()
    }

    /// Waits until events are queued and reads up to `max` records. Errors: as
    /// [`Veventq::read`]; Unsupported when the reactor fails.
    pub async fn read(&mut self, max: usize) -> Result<Vec<Vevent<T>>> {
        loop {
            let id = self.inner.get_ref().id();
            let mut guard = self
                .inner
                .readable_mut()
                .await
                .map_err(|e| Error::unsupported("async veventq", id, e.to_string()))?;
            let events = guard.get_inner_mut().read(max)?;
            if !events.is_empty() {
                return Ok(events);
            }
            guard.clear_ready();
        }
    }

    /// Deregisters from the runtime and gives the queue back.
    pub fn into_inner(self) -> Veventq<T> {
        self.inner.into_inner()
    }
}
