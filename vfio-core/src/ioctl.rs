//! Typed access to `ioctl(2)` for the VFIO and iommufd request numbers of the `-sys` crates.
//!
//! Every call goes through [`rustix::ioctl::ioctl`]; these helpers only add the two shapes VFIO
//! uses (a pointer to a `#[repr(C)]` struct, or a plain integer) and keep the ioctl's return value,
//! which VFIO uses for file descriptors (`VFIO_GROUP_GET_DEVICE_FD`) and booleans
//! (`VFIO_CHECK_EXTENSION`).
//!
//! Every call is logged at debug level (target `vfio`) through the `log` facade: request name,
//! fd and result. Nothing is printed unless the program installs a logger.

use std::ffi::c_void;
use std::os::fd::{AsRawFd, BorrowedFd};

use rustix::ioctl::{Ioctl, IoctlOutput, Opcode};

pub use rustix::io::Errno;

/// One ioctl call with a runtime request number and an untyped argument.
struct Call {
    op: Opcode,
    arg: *mut c_void,
}

// SAFETY: `opcode` and `as_ptr` return what the caller of the `unsafe` helpers below vouched for;
// the output is the raw return value and reads no memory. IS_MUTATING is true, the conservative
// choice, since most VFIO ioctls write back into their argument.
unsafe impl Ioctl for Call {
    type Output = IoctlOutput;
    const IS_MUTATING: bool = true;

    fn opcode(&self) -> Opcode {
        self.op
    }

    fn as_ptr(&mut self) -> *mut c_void {
        self.arg
    }

    unsafe fn output_from_ptr(out: IoctlOutput, _: *mut c_void) -> rustix::io::Result<IoctlOutput> {
        Ok(out)
    }
}

/// Issues `ioctl(fd, request, arg)` where `arg` points at a struct the kernel reads and may update.
///
/// # Safety
/// `request` must be an ioctl whose argument is a `T` (or a `T` followed by the trailing data the
/// struct's `argsz`/`size` field announces, all inside `*arg`'s allocation), on an fd of the kind
/// that ioctl is defined for; and any pointer stored inside `T` must be valid for what the kernel
/// does with it.
#[inline]
pub unsafe fn with_mut<T>(fd: BorrowedFd<'_>, request: u32, arg: &mut T) -> Result<i32, Errno> {
    let call = Call {
        op: request as Opcode,
        arg: (arg as *mut T).cast(),
    };
    // SAFETY: forwarded to the caller's contract.
    let res = unsafe { rustix::ioctl::ioctl(fd, call) };
    if log::max_level() >= log::LevelFilter::Debug {
        log_call(fd, request, None, res);
    }
    res
}

/// The debug line of one ioctl, kept out of line: the fast path pays one level check.
#[cold]
#[inline(never)]
fn log_call(fd: BorrowedFd<'_>, request: u32, int_arg: Option<usize>, res: Result<i32, Errno>) {
    let (name, fd) = (request_name(request), fd.as_raw_fd());
    match int_arg {
        None => log::debug!(target: "vfio", "ioctl {name}(fd {fd}, struct) = {res:?}"),
        Some(arg) => log::debug!(target: "vfio", "ioctl {name}(fd {fd}, {arg:#x}) = {res:?}"),
    }
}

/// Issues `ioctl(fd, request, arg)` where `arg` is a plain integer (an fd, an IOMMU type, ...).
///
/// # Safety
/// `request` must take an integer argument (or none) on this kind of fd.
#[inline]
pub unsafe fn with_int(fd: BorrowedFd<'_>, request: u32, arg: usize) -> Result<i32, Errno> {
    let call = Call {
        op: request as Opcode,
        arg: arg as *mut c_void,
    };
    // SAFETY: forwarded to the caller's contract; the kernel does not dereference the integer.
    let res = unsafe { rustix::ioctl::ioctl(fd, call) };
    if log::max_level() >= log::LevelFilter::Debug {
        log_call(fd, request, Some(arg), res);
    }
    res
}

/// The uapi name of a VFIO or iommufd request number (`"?"` for others).
pub fn request_name(request: u32) -> &'static str {
    vfio_sys::IOCTL_NAMES
        .iter()
        .chain(iommufd_sys::IOCTL_NAMES)
        .find(|(n, _)| *n == request)
        .map_or("?", |(_, name)| name)
}

/// The `argsz`/`size` value of a fixed-size uapi struct.
pub const fn argsz<T>() -> u32 {
    std::mem::size_of::<T>() as u32
}

/// Issues a VFIO `GET_INFO`-style ioctl with the two-call argsz protocol: the struct starts with
/// `argsz`, and when the kernel has more to say (a capability chain) it raises `argsz` in its
/// reply, and the call is repeated with a buffer that large. `prefill` is the input struct (its
/// argsz is set here). Returns the whole reply, `argsz` bytes long.
///
/// # Safety
/// `request` must take an argsz-prefixed struct that the kernel reads and writes only within
/// `argsz` bytes, on this kind of fd.
pub unsafe fn with_argsz(fd: BorrowedFd<'_>, request: u32, prefill: &[u8]) -> Result<Vec<u8>, Errno> {
    let mut argsz = prefill.len().max(4);
    for _ in 0..4 {
        let mut words = vec![0u64; argsz.div_ceil(8)];
        let bytes = words.as_mut_ptr().cast::<u8>();
        // SAFETY: `words` holds at least argsz >= prefill.len() bytes.
        unsafe { std::ptr::copy_nonoverlapping(prefill.as_ptr(), bytes, prefill.len()) };
        // SAFETY: as above, argsz >= 4.
        unsafe { std::ptr::copy_nonoverlapping((argsz as u32).to_ne_bytes().as_ptr(), bytes, 4) };
        // SAFETY: forwarded to the caller; the buffer is argsz bytes, 8-byte aligned.
        unsafe { with_mut(fd, request, &mut words[0])? };
        let reply = &zerocopy::IntoBytes::as_bytes(&words[..])[..argsz];
        let wanted = u32::from_ne_bytes([reply[0], reply[1], reply[2], reply[3]]) as usize;
        if wanted <= argsz {
            return Ok(reply.to_vec());
        }
        argsz = wanted;
    }
    Err(Errno::OVERFLOW)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

    struct Capture;
    impl log::Log for Capture {
        fn enabled(&self, m: &log::Metadata) -> bool {
            m.target() == "vfio"
        }
        fn log(&self, r: &log::Record) {
            if self.enabled(r.metadata()) {
                LINES.lock().unwrap().push(r.args().to_string());
            }
        }
        fn flush(&self) {}
    }

    #[test]
    #[cfg_attr(miri, ignore)] // calls eventfd(2) and ioctl(2)
    fn names_requests_and_logs_kernel_calls() {
        assert_eq!(request_name(vfio_sys::VFIO_GET_API_VERSION), "VFIO_GET_API_VERSION");
        assert_eq!(request_name(iommufd_sys::IOMMU_IOAS_MAP), "IOMMU_IOAS_MAP");
        assert_eq!(request_name(0), "?");
        log::set_logger(&Capture).unwrap();
        log::set_max_level(log::LevelFilter::Debug);
        let e = crate::EventFd::new().unwrap();
        // An ioctl the eventfd does not know: logged with its name and the errno.
        // SAFETY: VFIO_GET_API_VERSION takes no argument; on an eventfd it fails with ENOTTY.
        let r = unsafe { with_int(std::os::fd::AsFd::as_fd(&e), vfio_sys::VFIO_GET_API_VERSION, 0) };
        assert_eq!(r, Err(Errno::NOTTY));
        let lines = LINES.lock().unwrap();
        assert!(
            lines.iter().any(|l| l.starts_with("eventfd(0, EFD_CLOEXEC) = Ok")),
            "{lines:?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("ioctl VFIO_GET_API_VERSION(fd ") && l.contains("Err")),
            "{lines:?}"
        );
    }
}
