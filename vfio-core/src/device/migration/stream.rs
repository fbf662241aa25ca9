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
    /// The data fd `fd` of the session `epoch` of `clock`, opened by the arc into `to`.
    #[inline]
    pub(crate) fn new(kind: SessionKind, fd: OwnedFd, clock: Arc<Clock>, epoch: u64, to: MigState) -> Self {
        let s = Session {
            fd: ManuallyDrop::new(fd),
            clock,
            epoch,
            stop_copy: to == MigState::StopCopy,
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
    /// Opened by STOP -> STOP_COPY: a read of 0 bytes is the end (the kernel refuses the fd
    /// once the session is over), without looking at the state machine.
    stop_copy: bool,
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

    /// The state the session is in, or the typed error naming what ended it.
    fn check(&self, op: &'static str) -> Result<MigState> {
        let c = self.clock.lock();
        if c.epoch != self.epoch {
            return Err(Error::invalid(
                op,
                self.device(),
                format!("the data stream's session ended at {}", c.ended_by),
            ));
        }
        Ok(c.state)
    }

    /// What a read of 0 bytes (or ENOMSG) means in the session's state: the end in
    /// STOP_COPY, no data for now elsewhere; the typed error once the session is over.
    #[cold]
    #[inline(never)]
    fn nothing_read(&self, op: &'static str, asked: usize) -> Result<Chunk> {
        let state = self.check(op)?;
        Ok(match asked {
            0 => Chunk::Data(0),
            _ if state == MigState::StopCopy => Chunk::End,
            _ => Chunk::NotYet,
        })
    }

    /// A write the kernel took no byte of.
    #[cold]
    #[inline(never)]
    fn took_nothing(&self, op: &'static str) -> Error {
        Error::malformed(op, self.device(), "the data fd took 0 bytes")
    }

    /// A refused read or write, typed: the session's end when the state machine left it
    /// through this handle (the kernel's ENODEV, named with the arc or reset that ended it),
    /// the kernel's ENODEV for a session that ended behind this handle's back (a reset through
    /// another handle, the device closed), else the kernel's errno.
    #[cold]
    #[inline(never)]
    fn refused(&self, op: &'static str, e: Errno) -> Error {
        if let Err(ended) = self.check(op) {
            return ended;
        }
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

/// The read-only data fd of a save session. Reads are a stream (no offsets). Once its
/// [`super::Migration`] left PRE_COPY, PRE_COPY_P2P and STOP_COPY the kernel refuses the fd
/// (ENODEV) and so does this type (InvalidArgument naming the arc); the check is made on the
/// kernel's refusal, so a read costs what `read(2)` costs.
#[derive(Debug)]
pub struct SaveStream(Session);

impl SaveStream {
    /// `read(2)` on the data fd. In PRE_COPY(_P2P) a 0-byte read or ENOMSG means no data for
    /// now ([`Chunk::NotYet`]); in STOP_COPY 0 bytes is [`Chunk::End`]. Errors: InvalidArgument
    /// once the session ended (the kernel refuses the fd with ENODEV; the error names the arc
    /// or reset that ended it when it went through this handle's [`super::Migration`]); the
    /// kernel's errno (EFAULT, EINVAL).
    #[inline]
    pub fn read_chunk(&mut self, buf: &mut [u8]) -> Result<Chunk> {
        const OP: &str = "read migration data";
        let asked = buf.len();
        match rustix::io::read(self.0.fd.as_fd(), buf) {
            Ok(n) if n > 0 => Ok(Chunk::Data(n)),
            Ok(_) if self.0.stop_copy && asked > 0 => Ok(Chunk::End),
            Ok(_) | Err(Errno::NOMSG) => self.0.nothing_read(OP, asked),
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

/// The write-only data fd of a resume session. Once its [`super::Migration`] left RESUMING
/// the kernel refuses the fd (ENODEV) and so does this type (InvalidArgument naming the arc).
#[derive(Debug)]
pub struct ResumeStream(Session);

impl ResumeStream {
    /// Writes all of `data` with `write(2)`. Errors: InvalidArgument once the session ended
    /// (the kernel refuses the fd with ENODEV; named as [`SaveStream::read_chunk`] names it);
    /// the driver's errno (mtty: EFAULT for a header that is not its own, ENOMEM past its
    /// state's size); Malformed when the kernel takes 0 bytes.
    #[inline]
    pub fn write_all(&mut self, mut data: &[u8]) -> Result<()> {
        const OP: &str = "write migration data";
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
