//! Fault queues (`IOMMU_FAULT_QUEUE_ALLOC`, Linux >= 6.11): I/O page faults (PRI page requests)
//! of devices attached to a HWPT allocated with the queue, read as [`Fault`] records from the
//! queue's fd and answered with page responses written to it.
//!
//! The fd never blocks: a read with nothing queued returns nothing. [`FaultQueue::wait`] polls
//! for `POLLIN`. A read returns whole fault groups only (all faults up to the one flagged last
//! page, sharing a cookie); answer each group once, with its cookie.

use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use iommufd_sys as sys;
use rustix::event::{PollFd, PollFlags};
use vfio_core::ioctl::{self, Request, requests as req};
use vfio_core::{Errno, Error, NamedFd, Result};
use zerocopy::{FromBytes, IntoBytes};

use crate::{DeviceId, FaultId, Iommufd, refused};

/// Size of one fault record (`struct iommu_hwpt_pgfault`).
pub const FAULT_RECORD_LEN: usize = size_of::<sys::iommu_hwpt_pgfault>();

/// The cookie of a fault group: what its page response names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FaultCookie(pub u32);

impl FaultCookie {
    /// The cookie as the kernel has it.
    pub fn get(self) -> u32 {
        self.0
    }
}

/// The access a faulting request asked for (`enum iommu_hwpt_pgfault_perm` bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FaultPerm(pub u32);

impl FaultPerm {
    /// `IOMMU_PGFAULT_PERM_READ`.
    pub const READ: FaultPerm = FaultPerm(sys::IOMMU_PGFAULT_PERM_READ);
    /// `IOMMU_PGFAULT_PERM_WRITE`.
    pub const WRITE: FaultPerm = FaultPerm(sys::IOMMU_PGFAULT_PERM_WRITE);
    /// `IOMMU_PGFAULT_PERM_EXEC`.
    pub const EXEC: FaultPerm = FaultPerm(sys::IOMMU_PGFAULT_PERM_EXEC);
    /// `IOMMU_PGFAULT_PERM_PRIV`.
    pub const PRIV: FaultPerm = FaultPerm(sys::IOMMU_PGFAULT_PERM_PRIV);

    /// Whether every bit of `other` is set.
    pub fn contains(self, other: FaultPerm) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for FaultPerm {
    type Output = FaultPerm;
    fn bitor(self, rhs: FaultPerm) -> FaultPerm {
        FaultPerm(self.0 | rhs.0)
    }
}

/// The answer to a fault group (`enum iommufd_page_response_code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum PageResponseCode {
    /// `IOMMUFD_PAGE_RESP_SUCCESS`: the page tables now map the addresses; the device retries.
    Success = sys::IOMMUFD_PAGE_RESP_SUCCESS,
    /// `IOMMUFD_PAGE_RESP_INVALID`: the fault cannot be handled; the device does not retry.
    Invalid = sys::IOMMUFD_PAGE_RESP_INVALID,
}

/// One I/O page fault (`struct iommu_hwpt_pgfault`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// The faulting device (its bound id).
    pub dev: DeviceId,
    /// The PASID of the request, when it carried one (`IOMMU_PGFAULT_FLAGS_PASID_VALID`).
    pub pasid: Option<u32>,
    /// The page request group index.
    pub grpid: u32,
    /// The access asked for.
    pub perm: FaultPerm,
    /// The faulting address (an IOVA of the HWPT).
    pub addr: u64,
    /// A hint of the access length; 0 when the device gave none.
    pub length: u32,
    /// The group's cookie, for [`FaultQueue::respond`].
    pub cookie: FaultCookie,
    /// The last fault of its group (`IOMMU_PGFAULT_FLAGS_LAST_PAGE`).
    pub last_page: bool,
    /// The raw `flags`.
    pub flags: u32,
}

impl Fault {
    #[inline]
    fn from_record(r: &sys::iommu_hwpt_pgfault) -> Self {
        Fault {
            dev: DeviceId::from(r.dev_id),
            pasid: (r.flags & sys::IOMMU_PGFAULT_FLAGS_PASID_VALID != 0).then_some(r.pasid),
            grpid: r.grpid,
            perm: FaultPerm(r.perm),
            addr: r.addr,
            length: r.length,
            cookie: FaultCookie(r.cookie),
            last_page: r.flags & sys::IOMMU_PGFAULT_FLAGS_LAST_PAGE != 0,
            flags: r.flags,
        }
    }
}

/// The most records a read takes into a buffer on the stack (no allocation): 160 bytes.
pub const STACK_RECORDS: usize = 4;

/// The most records one read asks for after growing its buffer for a large fault group.
const MAX_READ_RECORDS: usize = 1 << 16;

/// A fault queue, from [`Iommufd::alloc_fault_queue`]: its object id (what a HWPT allocation's
/// `fault_id` takes) and its fd (`O_CLOEXEC`). Dropping it closes the fd, then destroys the
/// object (the kernel refuses to destroy it, EBUSY, while the fd is open or a HWPT uses it: keep
/// it in an `Arc` held by those HWPTs, as the allocation APIs do); a failure is logged.
#[derive(Debug)]
pub struct FaultQueue {
    // Fields drop in declaration order: the fd (a failed close is logged by `NamedFd`) before
    // `obj` destroys the object.
    fd: NamedFd,
    obj: FaultObject,
}

/// A fault queue's object id and iommufd: destroys the object when dropped (after the fd
/// closed).
#[derive(Debug)]
struct FaultObject {
    id: FaultId,
    iommufd: Arc<Iommufd>,
}

impl Drop for FaultObject {
    fn drop(&mut self) {
        if let Err(e) = self.iommufd.destroy(self.id) {
            log::warn!(target: "vfio", "dropping fault queue {} of {}: {e}", self.id, self.iommufd.target());
        }
    }
}

impl AsFd for FaultQueue {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Iommufd {
    /// `IOMMU_FAULT_QUEUE_ALLOC` (Linux >= 6.11): a new fault queue. Attach it with
    /// [`Iommufd::alloc_hwpt_with`] or a nested allocation's `fault`. Errors: Unsupported on
    /// kernels without it (ENOTTY); the kernel's errno (ENOMEM, EMFILE).
    #[doc(alias = "IOMMU_FAULT_QUEUE_ALLOC")]
    pub fn alloc_fault_queue(self: &Arc<Self>) -> Result<Arc<FaultQueue>> {
        let mut a = sys::iommu_fault_alloc::default();
        let res = ioctl::call::<req::FaultQueueAlloc>(self.ioctl_fd(), &mut a);
        match res {
            Ok(_) => {}
            Err(e @ Errno::NOTTY) => return Err(Error::unsupported(req::FaultQueueAlloc::NAME, self.target(), e)),
            Err(e) => return Err(refused::<req::FaultQueueAlloc>(|| self.target(), e)),
        }
        // SAFETY: out_fault_fd is a new fd the kernel just installed in our table (O_CLOEXEC),
        // owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(a.out_fault_fd as i32) };
        Ok(Arc::new(FaultQueue {
            fd: NamedFd::new(fd, format!("fault queue {} of {}", a.out_fault_id, self.target())),
            obj: FaultObject {
                id: FaultId::from(a.out_fault_id),
                iommufd: self.clone(),
            },
        }))
    }
}

impl FaultQueue {
    /// The object id.
    pub fn id(&self) -> FaultId {
        self.obj.id
    }

    /// The iommufd the queue lives in.
    pub fn iommufd(&self) -> &Arc<Iommufd> {
        &self.obj.iommufd
    }

    fn name(&self) -> &str {
        self.fd.name()
    }

    /// `poll(2)` for `POLLIN` for up to `timeout` (forever with `None`): true when a fault is
    /// queued. Interrupted polls are retried. Errors: poll's errno (Kernel).
    pub fn wait(&self, timeout: Option<Duration>) -> Result<bool> {
        poll_in(&self.fd, timeout)
    }

    /// `read(2)` of the queued faults, whole groups only, up to `max` records (more when the
    /// first group is larger: the buffer grows until it fits). Never blocks: empty when nothing
    /// is queued. Errors: InvalidArgument for `max` 0; read's errno (Kernel).
    pub fn read(&self, max: usize) -> Result<Vec<Fault>> {
        let mut out = Vec::new();
        self.read_into(&mut out, max)?;
        Ok(out)
    }

    /// [`FaultQueue::read`] appending to `out` (reusing its allocation); returns how many faults
    /// were appended. A read of up to [`STACK_RECORDS`] records allocates nothing beyond `out`.
    pub fn read_into(&self, out: &mut Vec<Fault>, max: usize) -> Result<usize> {
        if max == 0 {
            return Err(Error::invalid("read", self.name(), "max is 0 records"));
        }
        let mut records = max.min(MAX_READ_RECORDS);
        if records <= STACK_RECORDS {
            let mut buf = [0u8; STACK_RECORDS * FAULT_RECORD_LEN];
            match self.read_raw(&mut buf[..records * FAULT_RECORD_LEN]) {
                Ok(n) => return self.parse_into(&buf[..n], out),
                // The first group does not fit: the growing read below.
                Err(e) if e.errno() == Some(Errno::INVAL) => records = STACK_RECORDS * 2,
                Err(e) => return Err(e),
            }
        }
        loop {
            let mut buf = vec![0u8; records * FAULT_RECORD_LEN];
            match self.read_raw(&mut buf) {
                Ok(n) => return self.parse_into(&buf[..n], out),
                // The first group does not fit: read a larger buffer.
                Err(e) if e.errno() == Some(Errno::INVAL) && records < MAX_READ_RECORDS => {
                    records = (records * 2).min(MAX_READ_RECORDS);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads the first queued fault into a record on the stack: no vector, no allocation;
    /// `None` when nothing is queued. Never blocks. For groups of one fault (a single page
    /// request, as with PRI's last-page requests); Errors: EINVAL (Kernel) when the first
    /// queued group holds more faults (read it with [`FaultQueue::read_into`]); read's errno
    /// (Kernel); Malformed for a partial record.
    #[inline]
    pub fn read_one(&self) -> Result<Option<Fault>> {
        let mut buf = [MaybeUninit::<u8>::uninit(); FAULT_RECORD_LEN];
        let filled = match rustix::io::read(&self.fd, &mut buf) {
            Ok((filled, _)) => &*filled,
            // The errors come boxed from their cold functions and are moved out here: built in
            // place instead, they would share the caller's `Result` slot with the fault, and the
            // hot path would pass the fault through memory.
            Err(e) => return Err(*self.read_one_failed(e)),
        };
        log_io("read", &self.fd, FAULT_RECORD_LEN, Ok(filled.len()));
        match sys::iommu_hwpt_pgfault::read_from_bytes(filled) {
            Ok(r) => Ok(Some(Fault::from_record(&r))),
            Err(_) => self.read_one_rare(filled.len()).map_err(|e| *e),
        }
    }

    /// [`FaultQueue::read_one`] of anything but one whole record: nothing queued, or a part.
    #[cold]
    #[inline(never)]
    fn read_one_rare(&self, n: usize) -> std::result::Result<Option<Fault>, Box<Error>> {
        match n {
            0 => Ok(None),
            n => Err(Box::new(self.partial(n))),
        }
    }

    /// A refused read of [`FaultQueue::read_one`], logged as the fd layer logs.
    #[cold]
    #[inline(never)]
    fn read_one_failed(&self, e: Errno) -> Box<Error> {
        log_io("read", &self.fd, FAULT_RECORD_LEN, Err(e));
        Box::new(self.read_failed(e))
    }

    /// A refused read.
    #[cold]
    #[inline(never)]
    fn read_failed(&self, e: Errno) -> Error {
        Error::kernel("read", self.name(), e)
    }

    /// A refused write.
    #[cold]
    #[inline(never)]
    fn write_failed(&self, e: Errno) -> Error {
        Error::kernel("write", self.name(), e)
    }

    /// A read that returned part of a record.
    #[cold]
    #[inline(never)]
    fn partial(&self, n: usize) -> Error {
        Error::malformed(
            "read",
            self.name(),
            format!("{n} bytes are not whole {FAULT_RECORD_LEN}-byte fault records"),
        )
    }

    #[inline]
    fn parse_into(&self, bytes: &[u8], out: &mut Vec<Fault>) -> Result<usize> {
        if bytes.len() % FAULT_RECORD_LEN != 0 {
            return Err(Error::malformed(
                "read",
                self.name(),
                format!(
                    "{} bytes are not whole {FAULT_RECORD_LEN}-byte fault records",
                    bytes.len()
                ),
            ));
        }
        out.extend(bytes.chunks_exact(FAULT_RECORD_LEN).map(|c| {
            let r = sys::iommu_hwpt_pgfault::read_from_bytes(c).expect("a chunk is one record long");
            Fault::from_record(&r)
        }));
        Ok(bytes.len() / FAULT_RECORD_LEN)
    }

    /// [`FaultQueue::wait`] for up to `timeout`, then [`FaultQueue::read`]: empty when nothing
    /// came in time.
    pub fn read_timeout(&self, max: usize, timeout: Duration) -> Result<Vec<Fault>> {
        let deadline = Instant::now() + timeout;
        loop {
            let faults = self.read(max)?;
            let left = deadline.saturating_duration_since(Instant::now());
            if !faults.is_empty() || left.is_zero() || !self.wait(Some(left))? {
                return Ok(faults);
            }
        }
    }

    /// Writes the page response `code` for the group of `cookie`. Errors: EINVAL (Kernel) for a
    /// cookie that is not outstanding (never read, already answered, unknown); Malformed when
    /// the kernel takes part of the response.
    #[inline(always)]
    pub fn respond(&self, cookie: FaultCookie, code: PageResponseCode) -> Result<()> {
        const LEN: usize = size_of::<sys::iommu_hwpt_page_response>();
        let r = sys::iommu_hwpt_page_response {
            cookie: cookie.0,
            code: code as u32,
        };
        match rustix::io::write(&self.fd, r.as_bytes()) {
            Ok(LEN) => {
                log_io("write", &self.fd, LEN, Ok(LEN));
                Ok(())
            }
            // Boxed for the reason of `read_one`'s errors; the arguments are scalars (a
            // `Result` would be stored for the call on the hot path).
            Ok(n) => Err(*self.respond_failed(None, n)),
            Err(e) => Err(*self.respond_failed(Some(e), 0)),
        }
    }

    /// A refused (`e`) or partial (`n` bytes taken) write of [`FaultQueue::respond`], logged as
    /// the fd layer logs.
    #[cold]
    #[inline(never)]
    fn respond_failed(&self, e: Option<Errno>, n: usize) -> Box<Error> {
        const LEN: usize = size_of::<sys::iommu_hwpt_page_response>();
        log_io("write", &self.fd, LEN, e.map_or(Ok(n), Err));
        Box::new(match e {
            None => Error::malformed(
                "write",
                self.name(),
                format!("the kernel took {n} of the {LEN} bytes of one page response"),
            ),
            Some(e) => self.write_failed(e),
        })
    }

    /// Writes page responses in one `write(2)`; returns how many the kernel accepted. The kernel
    /// stops at the first it refuses: when that is the first, the error is returned; when a
    /// later one, the count of those before it (the refused one's errno is lost).
    pub fn respond_all(&self, responses: &[(FaultCookie, PageResponseCode)]) -> Result<usize> {
        let raw: Vec<sys::iommu_hwpt_page_response> = responses
            .iter()
            .map(|&(cookie, code)| sys::iommu_hwpt_page_response {
                cookie: cookie.0,
                code: code as u32,
            })
            .collect();
        let n = self.write_raw(raw.as_bytes())?;
        Ok(n / size_of::<sys::iommu_hwpt_page_response>())
    }

    /// `read(2)` of the fd into `buf` as is. Errors: the kernel's errno: ESPIPE for a length
    /// that is not a multiple of 40, EINVAL when the first group does not fit.
    #[inline]
    pub fn read_raw(&self, buf: &mut [u8]) -> Result<usize> {
        let len = buf.len();
        let res = rustix::io::read(&self.fd, buf);
        log_io("read", &self.fd, len, res);
        res.map_err(|e| self.read_failed(e))
    }

    /// `write(2)` of `bytes` to the fd as is (page responses, 8 bytes each). Errors: the kernel's
    /// errno: ESPIPE for a length not a multiple of 8, EINVAL for a bad first response.
    #[inline]
    pub fn write_raw(&self, bytes: &[u8]) -> Result<usize> {
        let res = rustix::io::write(&self.fd, bytes);
        log_io("write", &self.fd, bytes.len(), res);
        res.map_err(|e| self.write_failed(e))
    }
}

/// Logs a queue fd's `read`/`write` at debug level. The formatting lives out of line, so the
/// read and write paths (a few records per event) carry only the level check.
#[inline]
pub(crate) fn log_io(op: &str, fd: &NamedFd, len: usize, res: rustix::io::Result<usize>) {
    /// `ret` is the syscall's: a count or a negated errno (scalars: passing the `Result`
    /// would store it for the call ahead of the level check, on the hot path).
    #[cold]
    #[inline(never)]
    fn emit(op: &str, fd: &NamedFd, len: usize, ret: isize) {
        let res = match ret {
            0.. => Ok(ret as usize),
            _ => Err(Errno::from_raw_os_error(-ret as i32)),
        };
        log::debug!(target: "vfio", "{op}({}, {len}) = {res:?}", fd.name());
    }
    if log::log_enabled!(target: "vfio", log::Level::Debug) {
        let ret = match res {
            Ok(n) => n as isize,
            Err(e) => -(e.raw_os_error() as isize),
        };
        emit(op, fd, len, ret);
    }
}

/// `poll(2)` of `fd` for `POLLIN`, retried on EINTR; true when readable.
pub(crate) fn poll_in(fd: &NamedFd, timeout: Option<Duration>) -> Result<bool> {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let ts = left.map(|l| {
            rustix::event::Timespec::try_from(l).unwrap_or(rustix::event::Timespec {
                tv_sec: i64::MAX,
                tv_nsec: 0,
            })
        });
        let mut fds = [PollFd::new(fd, PollFlags::IN)];
        match rustix::event::poll(&mut fds, ts.as_ref()) {
            Ok(0) => return Ok(false),
            Ok(_) => return Ok(fds[0].revents().contains(PollFlags::IN)),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(Error::kernel("poll", fd.name(), e)),
        }
    }
}
