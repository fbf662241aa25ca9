//! The one error type of vfio-rs: every failure names the operation, the object it was done on
//! (a device, a path, a container) and, where the kernel refused, its errno.

use std::path::PathBuf;

pub use rustix::io::Errno;

use crate::host::doctor::Finding;

/// A failed VFIO or iommufd operation. Its `Debug` form shows every field, with errnos by
/// name (`errno: EPERM`, `source: EBUSY (os error 16)`).
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The kernel refused a syscall or ioctl.
    #[error("{op} on {target}: {}{}", ErrnoName(*errno), CauseText(cause))]
    Kernel {
        /// The ioctl or syscall, e.g. `VFIO_DEVICE_GET_INFO`.
        op: &'static str,
        /// The device, group, container or path it was issued on.
        target: String,
        /// What the kernel answered.
        errno: Errno,
        /// Why, where the library could find it out (see [`Error::cause`]).
        cause: Option<Box<Finding>>,
    },
    /// A file under sysfs or /dev could not be read, written or opened.
    #[error("{op} {path}: {}{}", IoErrorName(source), CauseText(cause))]
    Path {
        /// What was being done, e.g. `open` or `read`.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying I/O error (carries the errno).
        source: std::io::Error,
        /// Why, where the library could find it out (see [`Error::cause`]).
        cause: Option<Box<Finding>>,
    },
    /// The caller asked for something that cannot be right, detected before any kernel call.
    #[error("{op} on {target}: {reason}")]
    InvalidArgument {
        /// The operation that was refused.
        op: &'static str,
        /// The object it was asked of.
        target: String,
        /// Why it was refused.
        reason: String,
    },
    /// The running kernel or device does not offer the feature.
    #[error("{feature} is not supported on {target}: {reason}")]
    Unsupported {
        /// The feature, e.g. `cdev mode` or `MSI-X`.
        feature: &'static str,
        /// Where it was looked for.
        target: String,
        /// What was missing.
        reason: String,
    },
    /// The kernel gave back data that does not follow its own uapi contract.
    #[error("{op} on {target}: malformed reply from the kernel: {reason}")]
    Malformed {
        /// The ioctl whose reply was malformed.
        op: &'static str,
        /// The object it was issued on.
        target: String,
        /// What was wrong with it.
        reason: String,
    },
}

impl Error {
    /// The kernel's errno, where the kernel (or a file operation) failed.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Error::Kernel { errno, .. } => Some(*errno),
            Error::Path { source, .. } => source.raw_os_error().map(Errno::from_raw_os_error),
            _ => None,
        }
    }

    /// Why the kernel refused, where the library could find it out: the same typed
    /// [`Finding`] `lsvfio doctor` reports (a group that is not viable and the members that block
    /// it, no interrupt remapping, type1's mapping limit, `RLIMIT_MEMLOCK`, a node the user may
    /// not open, another process holding the group, ...). [`Finding::fix`] says what to do.
    pub fn cause(&self) -> Option<&Finding> {
        match self {
            Error::Kernel { cause, .. } | Error::Path { cause, .. } => cause.as_deref(),
            _ => None,
        }
    }

    /// Attaches the cause of a kernel or file refusal (kept by [`Error::Kernel`] and
    /// [`Error::Path`]; other kinds already say why and are returned unchanged).
    #[cold]
    pub fn with_cause(mut self, finding: Finding) -> Self {
        if let Error::Kernel { cause, .. } | Error::Path { cause, .. } = &mut self {
            *cause = Some(Box::new(finding));
        }
        self
    }

    /// Builds [`Error::Kernel`].
    pub fn kernel(op: &'static str, target: impl ToString, errno: Errno) -> Self {
        Error::Kernel {
            op,
            target: target.to_string(),
            errno,
            cause: None,
        }
    }

    /// Builds [`Error::Path`].
    pub fn path(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Path {
            op,
            path: path.into(),
            source,
            cause: None,
        }
    }

    /// Builds [`Error::InvalidArgument`].
    pub fn invalid(op: &'static str, target: impl ToString, reason: impl ToString) -> Self {
        Error::InvalidArgument {
            op,
            target: target.to_string(),
            reason: reason.to_string(),
        }
    }

    /// Builds [`Error::Unsupported`].
    pub fn unsupported(feature: &'static str, target: impl ToString, reason: impl ToString) -> Self {
        Error::Unsupported {
            feature,
            target: target.to_string(),
            reason: reason.to_string(),
        }
    }

    /// Builds [`Error::Malformed`].
    pub fn malformed(op: &'static str, target: impl ToString, reason: impl ToString) -> Self {
        Error::Malformed {
            op,
            target: target.to_string(),
            reason: reason.to_string(),
        }
    }
}

impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Kernel {
                op,
                target,
                errno,
                cause,
            } => f
                .debug_struct("Kernel")
                .field("op", op)
                .field("target", target)
                .field("errno", &DebugErrno(*errno))
                .field("cause", cause)
                .finish(),
            Error::Path {
                op,
                path,
                source,
                cause,
            } => {
                let mut d = f.debug_struct("Path");
                d.field("op", op).field("path", path);
                match source.raw_os_error() {
                    Some(raw) => d.field("source", &DebugIoErrno(raw)),
                    None => d.field("source", source),
                };
                d.field("cause", cause).finish()
            }
            Error::InvalidArgument { op, target, reason } => f
                .debug_struct("InvalidArgument")
                .field("op", op)
                .field("target", target)
                .field("reason", reason)
                .finish(),
            Error::Unsupported {
                feature,
                target,
                reason,
            } => f
                .debug_struct("Unsupported")
                .field("feature", feature)
                .field("target", target)
                .field("reason", reason)
                .finish(),
            Error::Malformed { op, target, reason } => f
                .debug_struct("Malformed")
                .field("op", op)
                .field("target", target)
                .field("reason", reason)
                .finish(),
        }
    }
}

/// An errno in `Debug` form: its name (`EPERM`), or its number where it has no name here.
struct DebugErrno(Errno);

impl std::fmt::Debug for DebugErrno {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match errno_name(self.0) {
            Some(name) => f.write_str(name),
            None => write!(f, "errno {}", self.0.raw_os_error()),
        }
    }
}

/// An I/O error's errno in `Debug` form: `EBUSY (os error 16)`.
struct DebugIoErrno(i32);

impl std::fmt::Debug for DebugIoErrno {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match errno_name(Errno::from_raw_os_error(self.0)) {
            Some(name) => write!(f, "{name} (os error {})", self.0),
            None => write!(f, "os error {}", self.0),
        }
    }
}

/// The C name of an errno (`"EINVAL"`), for the common ones VFIO and iommufd answer with.
pub fn errno_name(errno: Errno) -> Option<&'static str> {
    const NAMES: &[(Errno, &str)] = &[
        (Errno::PERM, "EPERM"),
        (Errno::NOENT, "ENOENT"),
        (Errno::SRCH, "ESRCH"),
        (Errno::INTR, "EINTR"),
        (Errno::IO, "EIO"),
        (Errno::NXIO, "ENXIO"),
        (Errno::TOOBIG, "E2BIG"),
        (Errno::BADF, "EBADF"),
        (Errno::CHILD, "ECHILD"),
        (Errno::AGAIN, "EAGAIN"),
        (Errno::NOMEM, "ENOMEM"),
        (Errno::ACCESS, "EACCES"),
        (Errno::FAULT, "EFAULT"),
        (Errno::BUSY, "EBUSY"),
        (Errno::EXIST, "EEXIST"),
        (Errno::XDEV, "EXDEV"),
        (Errno::NODEV, "ENODEV"),
        (Errno::NOTDIR, "ENOTDIR"),
        (Errno::ISDIR, "EISDIR"),
        (Errno::INVAL, "EINVAL"),
        (Errno::NFILE, "ENFILE"),
        (Errno::MFILE, "EMFILE"),
        (Errno::NOTTY, "ENOTTY"),
        (Errno::FBIG, "EFBIG"),
        (Errno::NOSPC, "ENOSPC"),
        (Errno::SPIPE, "ESPIPE"),
        (Errno::ROFS, "EROFS"),
        (Errno::PIPE, "EPIPE"),
        (Errno::RANGE, "ERANGE"),
        (Errno::DEADLK, "EDEADLK"),
        (Errno::NAMETOOLONG, "ENAMETOOLONG"),
        (Errno::NOSYS, "ENOSYS"),
        (Errno::NOTEMPTY, "ENOTEMPTY"),
        (Errno::LOOP, "ELOOP"),
        (Errno::NODATA, "ENODATA"),
        (Errno::OVERFLOW, "EOVERFLOW"),
        (Errno::BADFD, "EBADFD"),
        (Errno::OPNOTSUPP, "EOPNOTSUPP"),
        (Errno::ADDRINUSE, "EADDRINUSE"),
        (Errno::CONNREFUSED, "ECONNREFUSED"),
        (Errno::TIMEDOUT, "ETIMEDOUT"),
        (Errno::ALREADY, "EALREADY"),
        (Errno::INPROGRESS, "EINPROGRESS"),
        (Errno::STALE, "ESTALE"),
        (Errno::CANCELED, "ECANCELED"),
        (Errno::OWNERDEAD, "EOWNERDEAD"),
        (Errno::HWPOISON, "EHWPOISON"),
    ];
    NAMES.iter().find(|(e, _)| *e == errno).map(|(_, n)| *n)
}

/// Displays an errno as `EINVAL: Invalid argument (os error 22)`.
struct ErrnoName(Errno);

impl std::fmt::Display for ErrnoName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match errno_name(self.0) {
            Some(name) => write!(f, "{name}: {}", self.0),
            None => write!(f, "{}", self.0),
        }
    }
}

/// Displays a cause and its fix after the errno: `: <cause>; fix: <fix>`.
struct CauseText<'a>(&'a Option<Box<Finding>>);

impl std::fmt::Display for CauseText<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(c) => write!(f, ": {c}; fix: {}", c.fix()),
            None => Ok(()),
        }
    }
}

/// Displays an I/O error with its errno's name where it has one.
struct IoErrorName<'a>(&'a std::io::Error);

impl std::fmt::Display for IoErrorName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self
            .0
            .raw_os_error()
            .and_then(|e| errno_name(Errno::from_raw_os_error(e)))
        {
            Some(name) => write!(f, "{name}: {}", self.0),
            None => write!(f, "{}", self.0),
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errnos_print_by_name() {
        let e = Error::kernel("VFIO_DEVICE_GET_INFO", "0000:00:03.0", Errno::INVAL);
        let text = e.to_string();
        assert!(
            text.starts_with("VFIO_DEVICE_GET_INFO on 0000:00:03.0: EINVAL: "),
            "{text}"
        );
        let p = Error::path("open", "/dev/vfio/7", std::io::Error::from_raw_os_error(16));
        assert!(p.to_string().contains("/dev/vfio/7: EBUSY: "), "{p}");
        assert_eq!(errno_name(Errno::NOTTY), Some("ENOTTY"));
    }

    #[test]
    fn a_cause_is_kept_typed_and_printed_with_its_fix() {
        let e = Error::kernel("VFIO_SET_IOMMU", "/dev/vfio/vfio", Errno::NOSPC)
            .with_cause(Finding::DmaEntryLimit { limit: 64 });
        assert_eq!(e.cause(), Some(&Finding::DmaEntryLimit { limit: 64 }));
        assert_eq!(e.errno(), Some(Errno::NOSPC));
        let text = e.to_string();
        assert!(
            text.contains("ENOSPC") && text.contains("64") && text.contains("fix: "),
            "{text}"
        );
        assert!(
            Error::invalid("x", "y", "z")
                .with_cause(Finding::NoIommu)
                .cause()
                .is_none()
        );
    }

    #[test]
    fn debug_names_errnos() {
        let e = Error::kernel("VFIO_SET_IOMMU", "/dev/vfio/vfio", Errno::PERM).with_cause(Finding::NoIommu);
        let d = format!("{e:?}");
        assert!(d.contains("errno: EPERM") && d.contains("cause: Some(NoIommu)"), "{d}");
        let p = Error::path("open", "/dev/vfio/7", std::io::Error::from_raw_os_error(22));
        let d = format!("{p:?}");
        assert!(d.contains("source: EINVAL (os error 22)") && !d.contains("Os {"), "{d}");
        let n = Error::path("open", "/dev/vfio/7", std::io::Error::from_raw_os_error(13)).with_cause(
            Finding::NodeNotAccessible {
                path: "/dev/vfio/7".into(),
                errno: Errno::ACCESS,
            },
        );
        let d = format!("{n:?}");
        assert!(d.contains("errno: EACCES") && !d.contains("Os {"), "{d}");
        let other = Error::path("read", "/x", std::io::Error::other("short"));
        assert!(format!("{other:?}").contains("short"));
    }

    #[test]
    fn result_stays_small() {
        // The hot paths return `Result<(), Error>`; a cause must not make it bigger.
        assert!(std::mem::size_of::<Result<()>>() <= 80);
    }
}
