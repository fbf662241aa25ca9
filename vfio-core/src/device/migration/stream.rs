//! The data fds of migration v2: a save session's read-only stream, a resume session's
//! write-only stream, and `VFIO_MIG_GET_PRECOPY_INFO` on the former.

use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::{AsFd, IntoRawFd, OwnedFd};
use std::sync::Arc;

use vfio_sys as sys;

use super::{Clock, MigState, PRECOPY_REINIT, SessionKind};
use crate::ioctl::{self, requests as req};
use crate::{Errno, Error, Result};

/// The data fd a state change opened.
#[derive(Debug)]
pub enum DataStream {
    /// A save session (PRE_COPY or STOP_COPY): read the device's state.
    Save(SaveStream),
    /// A resume session (RESUMING): write a saved state.
    Resume(ResumeStream),
}

impl DataStream {
    /// The data fd `fd` of the session `epoch` of `clock`.
    #[inline]
    pub(crate) fn new(kind: SessionKind, fd: OwnedFd, clock: Arc<Clock>, epoch: u64) -> Self {
        let s = Session {
            fd: ManuallyDrop::new(fd),
            clock,
            epoch,
        };
        match kind {
            SessionKind::Save => DataStream::Save(SaveStream(s)),
            SessionKind::Resume => DataStream::Resume(ResumeStream(s)),
        }
    }

    /// The save stream. Errors: InvalidArgument when this is a resume stream.
    pub fn into_save(self) -> Result<SaveStream> {
        match self {
            DataStream::Save(s) => Ok(s),
            DataStream::Resume(r) => Err(Error::invalid(
                "migration data stream",
                r.0.device(),
                "a resume stream is not a save stream",
            )),
        }
    }

    /// The resume stream. Errors: InvalidArgument when this is a save stream.
    pub fn into_resume(self) -> Result<ResumeStream> {
        match self {
            DataStream::Resume(r) => Ok(r),
            DataStream::Save(s) => Err(Error::invalid(
                "migration data stream",
                s.0.device(),
                "a save stream is not a resume stream",
            )),
        }
    }
}

/// A data fd and the session it belongs to. Errors and logs name it "DEVICE migration data",
/// formatted only when they are made: a session costs no allocation.
#[derive(Debug)]
struct Session {
    /// Closed (and a failed close logged) by the drop.
    fd: ManuallyDrop<OwnedFd>,
    /// The handle's clock, which also holds the device.
    clock: Arc<Clock>,
    epoch: u64,
}

impl Drop for Session {
    fn drop(&mut self) {
        // SAFETY: drop runs once and nothing else takes the fd, which is not used afterwards.
        let raw = unsafe { ManuallyDrop::take(&mut self.fd) }.into_raw_fd();
        // SAFETY: `raw` was an OwnedFd given up just above: open, and closed by nothing else.
        let rc = unsafe { libc::close(raw) };
        if rc != 0 || log::max_level() >= log::LevelFilter::Debug {
            self.log_close(raw, rc);
        }
    }
}

impl Session {
    /// The device's name.
    fn device(&self) -> &str {
        self.clock.device.name()
    }

    /// What errors call the data fd.
    fn name(&self) -> String {
        format!("{} migration data", self.device())
    }

    /// The close's debug line, as every kernel call has, and a warning when it failed (the fd
    /// is closed anyway: Linux releases it first).
    #[cold]
    #[inline(never)]
    fn log_close(&self, raw: i32, rc: i32) {
        let res = match rc {
            0 => Ok(()),
            _ => Err(Errno::from_io_error(&io::Error::last_os_error()).unwrap_or(Errno::IO)),
        };
        let name = self.name();
        log::debug!(target: "vfio", "close({name}, fd {raw}) = {res:?}");
        if let Err(e) = res {
            log::warn!(target: "vfio", "dropping {name}: {}", Error::kernel("close", &name, e));
        }
    }

    /// The state the session is in, or the typed error when the state machine left it.
    #[inline]
    fn check(&self, op: &'static str) -> Result<MigState> {
        match self.clock.current(self.epoch) {
            Some(state) => Ok(state),
            None => Err(self.ended(op)),
        }
    }

    /// The error of a check that found the session over (or the epoch moving under it).
    #[cold]
    #[inline(never)]
    fn ended(&self, op: &'static str) -> Error {
        let c = self.clock.lock();
        if c.epoch != self.epoch {
            return Error::invalid(
                op,
                self.device(),
                format!("the data stream's session ended at {}", c.ended_by),
            );
        }
        // Published and locked state agree once the writer's guard dropped: a reader that saw
        // a stale epoch races a change still under way, which ends a session as well.
        Error::invalid(
            op,
            self.device(),
            "the data stream's session is ending (a state change is under way)",
        )
    }

    /// A write the kernel took no byte of.
    #[cold]
    #[inline(never)]
    fn took_nothing(&self, op: &'static str) -> Error {
        Error::malformed(op, self.device(), "the data fd took 0 bytes")
    }

    /// The kernel's ENODEV for a data fd whose session ended behind this handle's back (a
    /// reset through another handle, the device closed), typed like [`Session::check`].
    #[cold]
    #[inline(never)]
    fn refused(&self, op: &'static str, e: Errno) -> Error {
        if e == Errno::NODEV {
            Error::invalid(
                op,
                self.device(),
                "the data stream's session ended (ENODEV: the device left the session's states or was reset)",
            )
        } else {
            Error::kernel(op, self.name(), e)
        }
    }
}

/// What [`SaveStream::read_chunk`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// This many bytes.
    Data(usize),
    /// Nothing more for now (PRE_COPY: the device may produce more while it runs, or in
    /// STOP_COPY).
    NotYet,
    /// The end of the device's state (STOP_COPY).
    End,
}

/// `VFIO_MIG_GET_PRECOPY_INFO`'s answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrecopyInfo {
    /// Bytes of initial data still to read; the kernel says to read them before STOP_COPY.
    pub initial_bytes: u64,
    /// Bytes of data that changed since, as far as the device knows now.
    pub dirty_bytes: u64,
    /// `VFIO_PRECOPY_INFO_REINIT`: the device restarted its initial data. `None` unless
    /// [`super::Migration::enable_precopy_info_v2`] made the flags an output (Linux 7.1).
    pub reinit: Option<bool>,
}

/// The read-only data fd of a save session. Reads are a stream (no offsets). It refuses use
/// (InvalidArgument naming the arc) after its [`super::Migration`] left PRE_COPY,
/// PRE_COPY_P2P and STOP_COPY, before asking the kernel (which would answer ENODEV).
#[derive(Debug)]
pub struct SaveStream(Session);

impl SaveStream {
    /// `read(2)` on the data fd. In PRE_COPY(_P2P) a 0-byte read or ENOMSG means no data for
    /// now ([`Chunk::NotYet`]); in STOP_COPY 0 bytes is [`Chunk::End`]. Errors: InvalidArgument
    /// after the session ended; the kernel's errno (EFAULT, EINVAL).
    #[inline]
    pub fn read_chunk(&mut self, buf: &mut [u8]) -> Result<Chunk> {
        const OP: &str = "read migration data";
        let state = self.0.check(OP)?;
        match rustix::io::read(self.0.fd.as_fd(), &mut *buf) {
            Ok(0) if buf.is_empty() => Ok(Chunk::Data(0)),
            Ok(0) if state == MigState::StopCopy => Ok(Chunk::End),
            Ok(0) => Ok(Chunk::NotYet),
            Ok(n) => Ok(Chunk::Data(n)),
            Err(Errno::NOMSG) => Ok(Chunk::NotYet),
            Err(e) => Err(self.0.refused(OP, e)),
        }
    }

    /// `VFIO_MIG_GET_PRECOPY_INFO` (Linux 6.2) on the data fd, with `flags` 0: how much
    /// initial and dirty data is left. Only in PRE_COPY or PRE_COPY_P2P. Errors:
    /// InvalidArgument after the session ended; EINVAL (Kernel) in another state (STOP_COPY).
    #[doc(alias = "VFIO_MIG_GET_PRECOPY_INFO")]
    pub fn precopy_info(&self) -> Result<PrecopyInfo> {
        const OP: &str = "VFIO_MIG_GET_PRECOPY_INFO";
        self.0.check(OP)?;
        let v2 = self.0.clock.lock().v2;
        let mut info = sys::vfio_precopy_info::default();
        // SAFETY: the fd is the data fd the kernel returned for a save session.
        let fd = unsafe { ioctl::Fd::<ioctl::kind::MigrationData>::new_unchecked(self.0.fd.as_fd()) };
        ioctl::call::<req::MigGetPrecopyInfo>(fd, &mut info).map_err(|e| self.0.refused(OP, e))?;
        Ok(PrecopyInfo {
            initial_bytes: info.initial_bytes,
            dirty_bytes: info.dirty_bytes,
            reinit: v2.then_some(info.flags & PRECOPY_REINIT != 0),
        })
    }
}

impl io::Read for SaveStream {
    /// As [`SaveStream::read_chunk`], with no data for now and the end both 0.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.read_chunk(buf) {
            Ok(Chunk::Data(n)) => Ok(n),
            Ok(_) => Ok(0),
            Err(e) => Err(to_io(e)),
        }
    }
}

/// The write-only data fd of a resume session. It refuses use (InvalidArgument naming the
/// arc) after its [`super::Migration`] left RESUMING.
#[derive(Debug)]
pub struct ResumeStream(Session);

impl ResumeStream {
    /// Writes all of `data` with `write(2)`. Errors: InvalidArgument after the session ended;
    /// the driver's errno (mtty: EFAULT for a header that is not its own, ENOMEM past its
    /// state's size); Malformed when the kernel takes 0 bytes.
    #[inline]
    pub fn write_all(&mut self, mut data: &[u8]) -> Result<()> {
        const OP: &str = "write migration data";
        self.0.check(OP)?;
        while !data.is_empty() {
            match rustix::io::write(self.0.fd.as_fd(), data) {
                Ok(0) => return Err(self.0.took_nothing(OP)),
                Ok(n) => data = &data[n..],
                Err(Errno::INTR) => {}
                Err(e) => return Err(self.0.refused(OP, e)),
            }
        }
        Ok(())
    }
}

impl io::Write for ResumeStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf).map(|()| buf.len()).map_err(to_io)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn to_io(e: Error) -> io::Error {
    match e.errno() {
        Some(errno) => io::Error::new(io::Error::from_raw_os_error(errno.raw_os_error()).kind(), e),
        None => io::Error::new(io::ErrorKind::InvalidInput, e),
    }
}
