//! VFIO migration v2 (Linux 5.18 and later; DMA logging 6.1; PRE_COPY and `MIG_DATA_SIZE` 6.2;
//! `MIG_PRECOPY_INFOv2` 7.1): what a device offers, its state machine walked arc by arc, and
//! the data fds that carry its state out (saving) and in (resuming).
//!
//! ```text
//! Device::migration() -> Migration --set_state(to)--> walks the kernel's arcs one SET each
//!                                                     \-> Some(DataStream::Save | ::Resume)
//! transfer::send(&src, writer) / transfer::receive(&dst, reader): a framed stream between them
//! ```
//!
//! A device in [`MigState::Error`] (a driver failed an arc) takes no state but through
//! [`Migration::reset`]; the library never resets on its own.

use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard};

use vfio_sys as sys;
use zerocopy::IntoBytes;

use crate::ioctl::{self, requests as req};
use crate::{Device, Errno, Error, Result};

mod state;
mod stream;
pub mod transfer;

pub use state::{ALL_STATES, MigFlags, MigState, SessionKind};
pub use stream::{Chunk, DataStream, PrecopyInfo, ResumeStream, SaveStream};

use state::{ARCS, ENDS, OPENS_RESUME, OPENS_SAVE, Walk, flag_names};

/// What the streams of one [`Migration`] share with it: the device (for their errors' names),
/// and what they look at when the kernel refuses them or a read comes back empty: whether the
/// session they belong to is still the current one, and the state it is in.
#[derive(Debug)]
pub(crate) struct Clock {
    /// The device: errors name it, and a stream keeps the handle's state machine reachable.
    pub(crate) device: Device,
    inner: Mutex<ClockState>,
}

#[derive(Debug, Clone)]
pub(crate) struct ClockState {
    /// Bumped whenever a session ends or starts.
    pub(crate) epoch: u64,
    /// The last state this handle set or read.
    pub(crate) state: MigState,
    /// What ended the last session, for errors.
    pub(crate) ended_by: EndedBy,
    /// Whether `MIG_PRECOPY_INFOv2` was enabled through this handle.
    pub(crate) v2: bool,
}

/// What ended a session: kept as states and formatted only when an error names it, so that
/// leaving a session costs no allocation.
#[derive(Debug, Clone, Copy)]
pub(crate) enum EndedBy {
    /// No session has ended.
    Nothing,
    /// A state change, seen as this arc.
    Arc(MigState, MigState),
    /// `VFIO_DEVICE_RESET`.
    Reset,
}

impl std::fmt::Display for EndedBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EndedBy::Nothing => f.write_str("(nothing)"),
            EndedBy::Arc(from, to) => write!(f, "{from} -> {to}"),
            EndedBy::Reset => f.write_str("VFIO_DEVICE_RESET"),
        }
    }
}

impl Clock {
    pub(crate) fn new(device: Device, state: ClockState) -> Self {
        Clock {
            device,
            inner: Mutex::new(state),
        }
    }

    /// The state, under the lock (a walk holds it from its GET to its last arc).
    pub(crate) fn lock(&self) -> ClockGuard<'_> {
        ClockGuard(self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// The locked [`ClockState`].
pub(crate) struct ClockGuard<'a>(MutexGuard<'a, ClockState>);

impl ClockGuard<'_> {
    /// Records a state read from the kernel: leaving a session this handle knew of ends it.
    #[inline]
    fn observe(&mut self, now: MigState) {
        let before = self.state;
        if ARCS[before as usize][now as usize] & ENDS != 0 {
            self.epoch += 1;
            self.ended_by = EndedBy::Arc(before, now);
        }
        self.state = now;
    }
}

impl std::ops::Deref for ClockGuard<'_> {
    type Target = ClockState;
    fn deref(&self) -> &ClockState {
        &self.0
    }
}

impl std::ops::DerefMut for ClockGuard<'_> {
    fn deref_mut(&mut self) -> &mut ClockState {
        &mut self.0
    }
}

/// The migration interface of a device (`VFIO_DEVICE_FEATURE_MIGRATION` answered). Data
/// streams it hands out refuse to be used once the state machine left their session through
/// this handle (a typed InvalidArgument naming the arc); use one handle per device.
#[derive(Debug)]
pub struct Migration {
    flags: MigFlags,
    clock: Arc<Clock>,
}

impl Device {
    /// `VFIO_DEVICE_FEATURE_MIGRATION` GET (Linux 5.18): the device's migration flags, as a
    /// handle to drive its state machine. Errors: Unsupported, naming the device, when it has
    /// no migration driver (the kernel's ENOTTY: vfio-pci without a variant driver, edu, mdpy)
    /// or the kernel has no device features.
    #[doc(alias = "VFIO_DEVICE_FEATURE_MIGRATION")]
    pub fn migration(&self) -> Result<Migration> {
        let mut payload = sys::vfio_device_feature_migration::default();
        // SAFETY: the payload is a u64 the kernel fills, no pointer.
        match unsafe { self.feature_get(sys::VFIO_DEVICE_FEATURE_MIGRATION, payload.as_mut_bytes()) } {
            Ok(_) => {}
            Err(e) if e.errno() == Some(crate::Errno::NOTTY) => {
                return Err(Error::unsupported(
                    "VFIO migration v2",
                    self.name(),
                    "the device has no migration driver (VFIO_DEVICE_FEATURE_MIGRATION: ENOTTY)",
                ));
            }
            Err(e) => return Err(e),
        }
        let flags = MigFlags::from_bits_retain(payload.flags);
        let m = Migration {
            flags,
            clock: Arc::new(Clock::new(
                self.clone(),
                ClockState {
                    epoch: 0,
                    state: MigState::Running,
                    ended_by: EndedBy::Nothing,
                    v2: false,
                },
            )),
        };
        let now = m.state()?;
        m.clock.lock().state = now;
        Ok(m)
    }
}

impl Migration {
    /// The device.
    pub fn device(&self) -> &Device {
        &self.clock.device
    }

    /// What the device offers.
    pub fn flags(&self) -> MigFlags {
        self.flags
    }

    /// `VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE` GET: the state the device is in. Errors: the
    /// kernel's errno; Malformed for a state number outside the uapi.
    #[doc(alias = "VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE")]
    #[inline]
    pub fn state(&self) -> Result<MigState> {
        self.get().map_err(|e| self.get_failed(e))
    }

    /// [`Migration::state`] with its error kept small (built by [`Migration::get_failed`]).
    #[inline(always)]
    fn get(&self) -> std::result::Result<MigState, GetError> {
        let raw = self
            .mig_state_call(sys::VFIO_DEVICE_FEATURE_GET, 0)
            .map_err(GetError::Kernel)?
            .device_state;
        MigState::from_raw(raw).ok_or(GetError::NotAState(raw))
    }

    /// Moves the device to `to`, one `VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE` SET per arc of the
    /// kernel's path ([`MigState::path`]: e.g. RUNNING -> STOP_COPY is RUNNING_P2P, STOP,
    /// STOP_COPY on a P2P device). Returns the data stream the last arc opens: a
    /// [`SaveStream`] for RUNNING -> PRE_COPY, RUNNING_P2P -> PRE_COPY_P2P and STOP ->
    /// STOP_COPY, a [`ResumeStream`] for STOP -> RESUMING; `None` elsewhere, also for
    /// PRE_COPY -> STOP_COPY, whose data goes on on the pre-copy stream. Leaving a session
    /// (the saving states, or RESUMING) ends its stream.
    ///
    /// Errors, before any SET: InvalidArgument for [`MigState::Error`] (never a target), for
    /// a device in ERROR (call [`Migration::reset`]), and where the kernel has no path
    /// (STOP_COPY to PRE_COPY); Unsupported for a state the device does not offer (PRE_COPY
    /// without [`MigFlags::PRE_COPY`]). A refused arc is a Kernel error naming the whole move,
    /// the arc and the state the device is in afterwards (it may be at any step of the path,
    /// or in ERROR).
    #[doc(alias = "VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE")]
    pub fn set_state(&self, to: MigState) -> Result<Option<DataStream>> {
        if to == MigState::Error || !to.offered_by(self.flags) {
            return Err(self.bad_target(to));
        }
        // Held for the whole walk: walks through one handle do not interleave, and a stream
        // that asks where its session is waits for the walk's end.
        let mut c = self.clock.lock();
        let from = self.get().map_err(|e| self.get_failed(e))?;
        c.observe(from);
        let Some(walk) = Walk::new(self.flags, from, to) else {
            return Err(self.no_path(from, to));
        };
        let mut cur = from;
        let mut opened = None;
        for step in walk {
            let mig = match self.mig_state_call(sys::VFIO_DEVICE_FEATURE_SET, step.raw()) {
                Ok(mig) => mig,
                Err(errno) => return Err(self.arc_refused(&mut c, from, to, cur, step, errno)),
            };
            let arc = ARCS[cur as usize][step as usize];
            if arc & ENDS != 0 {
                c.epoch += 1;
                c.ended_by = EndedBy::Arc(cur, step);
            }
            c.state = step;
            let opens = arc & (OPENS_SAVE | OPENS_RESUME) != 0;
            if opens != (mig.data_fd >= 0) {
                return Err(self.fd_mismatch(cur, step, opens, mig.data_fd));
            }
            if opens {
                // SAFETY: the kernel installed this fd for this process on this call
                // (vfio_ioct_mig_return_fd, O_CLOEXEC) and nothing else owns it.
                let fd = unsafe { OwnedFd::from_raw_fd(mig.data_fd) };
                let kind = if arc & OPENS_SAVE != 0 {
                    SessionKind::Save
                } else {
                    SessionKind::Resume
                };
                c.epoch += 1;
                opened = Some(DataStream::new(kind, fd, self.clock.clone(), c.epoch, step));
            }
            cur = step;
        }
        Ok(opened)
    }

    /// The refusal of a target state, before any ioctl.
    #[cold]
    #[inline(never)]
    fn bad_target(&self, to: MigState) -> Error {
        const OP: &str = "VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE";
        let dev = self.clock.device.name();
        if to == MigState::Error {
            return Error::invalid(
                OP,
                dev,
                "ERROR is not a state to ask for: the driver enters it when an arc fails",
            );
        }
        Error::unsupported(
            "migration state",
            dev,
            format!(
                "{to} needs {} and the device offers {}",
                flag_names(to.needs()),
                flag_names(self.flags)
            ),
        )
    }

    /// No path from `from` (the device's state) to `to`: ERROR, or a move the kernel lacks.
    #[cold]
    #[inline(never)]
    fn no_path(&self, from: MigState, to: MigState) -> Error {
        const OP: &str = "VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE";
        let dev = self.clock.device.name();
        if from == MigState::Error {
            return Error::invalid(
                OP,
                dev,
                format!("the device is in ERROR: reset() it (VFIO_DEVICE_RESET) before asking for {to}"),
            );
        }
        Error::invalid(OP, dev, format!("the kernel has no path from {from} to {to}"))
    }

    /// A refused arc: the device's state is read again (and recorded) to say where it is now.
    #[cold]
    #[inline(never)]
    fn arc_refused(
        &self,
        c: &mut ClockGuard<'_>,
        from: MigState,
        to: MigState,
        cur: MigState,
        step: MigState,
        errno: Errno,
    ) -> Error {
        let now = self.state().ok();
        if let Some(now) = now {
            c.observe(now);
        }
        Error::kernel(
            "VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE",
            format!(
                "{} ({from} -> {to}, refused at arc {cur} -> {step}; the device is now in {})",
                self.clock.device.name(),
                now.map_or("an unknown state".to_string(), |s| s.to_string())
            ),
            errno,
        )
    }

    /// An arc that returned a data fd where the uapi says none (closed here), or none where it
    /// says one.
    #[cold]
    #[inline(never)]
    fn fd_mismatch(&self, cur: MigState, step: MigState, opens: bool, data_fd: i32) -> Error {
        let returned = data_fd >= 0;
        if returned {
            // SAFETY: as in set_state: the kernel's new fd, owned by nothing else; closed here.
            drop(unsafe { OwnedFd::from_raw_fd(data_fd) });
        }
        Error::malformed(
            "VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE",
            self.clock.device.name(),
            format!(
                "arc {cur} -> {step} {} a data fd, the uapi says it {}",
                if returned { "returned" } else { "did not return" },
                if opens { "opens one" } else { "opens none" }
            ),
        )
    }

    /// The error of a failed `MIG_DEVICE_STATE` GET.
    #[cold]
    #[inline(never)]
    fn get_failed(&self, e: GetError) -> Error {
        match e {
            GetError::Kernel(e) => Error::kernel(
                "VFIO_DEVICE_FEATURE get",
                format!(
                    "{} feature {}",
                    self.clock.device.name(),
                    sys::VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE
                ),
                e,
            ),
            GetError::NotAState(raw) => Error::malformed(
                "VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE",
                self.clock.device.name(),
                format!("state {raw} is not a uapi migration state"),
            ),
        }
    }

    /// `VFIO_DEVICE_FEATURE_MIG_DATA_SIZE` GET (Linux 6.2): how many bytes the device
    /// estimates its STOP_COPY data to be (any state). Errors: ENOTTY (Kernel) on kernels
    /// before 6.2.
    #[doc(alias = "VFIO_DEVICE_FEATURE_MIG_DATA_SIZE")]
    pub fn stop_copy_size(&self) -> Result<u64> {
        let mut size = sys::vfio_device_feature_mig_data_size::default();
        // SAFETY: the payload is a u64 the kernel fills, no pointer.
        unsafe {
            self.clock
                .device
                .feature_get(sys::VFIO_DEVICE_FEATURE_MIG_DATA_SIZE, size.as_mut_bytes())
        }?;
        Ok(size.stop_copy_length)
    }

    /// `VFIO_DEVICE_FEATURE_MIG_PRECOPY_INFOv2` SET (Linux 7.1): makes the `flags` of
    /// `VFIO_MIG_GET_PRECOPY_INFO` an output, so [`PrecopyInfo::reinit`] reports
    /// `VFIO_PRECOPY_INFO_REINIT` (the device restarted its initial data). Lasts until the
    /// device fd closes. Errors: Unsupported without PRE_COPY (the kernel's EINVAL) and on
    /// kernels before 7.1 (ENOTTY).
    #[doc(alias = "VFIO_DEVICE_FEATURE_MIG_PRECOPY_INFOv2")]
    pub fn enable_precopy_info_v2(&self) -> Result<()> {
        if !self.flags.contains(MigFlags::PRE_COPY) {
            return Err(Error::unsupported(
                "MIG_PRECOPY_INFOv2",
                self.clock.device.name(),
                format!("the device offers no PRE_COPY (flags {})", flag_names(self.flags)),
            ));
        }
        // SAFETY: the feature has no payload.
        match unsafe {
            self.clock
                .device
                .feature_set(sys::VFIO_DEVICE_FEATURE_MIG_PRECOPY_INFOv2, &mut [])
        } {
            Ok(_) => {
                self.clock.lock().v2 = true;
                Ok(())
            }
            Err(e) if e.errno() == Some(crate::Errno::NOTTY) => Err(Error::unsupported(
                "MIG_PRECOPY_INFOv2",
                self.clock.device.name(),
                "the kernel predates Linux 7.1 (ENOTTY)",
            )),
            Err(e) => Err(e),
        }
    }

    /// `VFIO_DEVICE_RESET`, the kernel's way out of ERROR (and out of any session): the device
    /// is RUNNING afterwards, and every data stream of this handle is ended. Errors: the
    /// reset's errno; Malformed when the device is not RUNNING after it.
    #[doc(alias = "VFIO_DEVICE_RESET")]
    pub fn reset(&self) -> Result<()> {
        let mut c = self.clock.lock();
        self.clock.device.reset()?;
        c.epoch += 1;
        c.ended_by = EndedBy::Reset;
        c.state = MigState::Running;
        let now = self.state()?;
        c.observe(now);
        drop(c);
        if now != MigState::Running {
            return Err(Error::malformed(
                "VFIO_DEVICE_RESET",
                self.clock.device.name(),
                format!("the device is in {now} after a reset, the uapi says RUNNING"),
            ));
        }
        Ok(())
    }

    /// `VFIO_DEVICE_FEATURE` (`flags`: GET or SET) of `MIG_DEVICE_STATE` with `state`: the
    /// payload as the kernel left it. A SET's data fd in it is the caller's.
    #[inline]
    fn mig_state_call(&self, flags: u32, state: u32) -> std::result::Result<sys::vfio_device_feature_mig_state, Errno> {
        let mut arg = req::FeatureMigState {
            argsz: 0,
            flags: flags | sys::VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE,
            state: sys::vfio_device_feature_mig_state {
                device_state: state,
                data_fd: -1,
            },
        };
        ioctl::call::<req::DeviceFeatureMigState>(self.clock.device.ioctl_fd(), &mut arg)?;
        Ok(arg.state)
    }
}

/// How a `MIG_DEVICE_STATE` GET failed, before it becomes an [`Error`].
#[derive(Debug, Clone, Copy)]
enum GetError {
    /// The kernel's errno.
    Kernel(Errno),
    /// A state number outside the uapi.
    NotAState(u32),
}

/// The kernel's `VFIO_PRECOPY_INFO_REINIT`.
pub(crate) const PRECOPY_REINIT: u32 = sys::VFIO_PRECOPY_INFO_REINIT;

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(flags: MigFlags) -> Migration {
        let fd = rustix::fs::memfd_create("dev", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        Migration {
            flags,
            clock: Arc::new(Clock::new(
                Device::from_fd(fd, "mdev-x", None),
                ClockState {
                    epoch: 0,
                    state: MigState::Running,
                    ended_by: EndedBy::Nothing,
                    v2: false,
                },
            )),
        }
    }

    /// States the device lacks and ERROR are refused before any ioctl (a memfd would answer
    /// ENOTTY to one), typed and naming the device and the flags.
    #[test]
    #[cfg_attr(miri, ignore = "memfd_create, which Miri cannot run")]
    fn states_not_offered_are_refused_before_the_kernel() {
        let m = fake(MigFlags::STOP_COPY | MigFlags::P2P);
        let e = m.set_state(MigState::PreCopy).unwrap_err();
        assert!(matches!(e, Error::Unsupported { .. }), "{e:?}");
        let text = e.to_string();
        assert!(
            text.contains("PRE_COPY needs STOP_COPY|PRE_COPY and the device offers STOP_COPY|P2P"),
            "{text}"
        );
        assert!(text.contains("mdev-x"), "{text}");
        let e = m.set_state(MigState::Error).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { .. }), "{e:?}");
        let e = fake(MigFlags::STOP_COPY).set_state(MigState::RunningP2p).unwrap_err();
        assert!(matches!(e, Error::Unsupported { .. }), "{e:?}");
        let e = m.enable_precopy_info_v2().unwrap_err();
        assert!(matches!(e, Error::Unsupported { .. }), "{e:?}");
    }
}
