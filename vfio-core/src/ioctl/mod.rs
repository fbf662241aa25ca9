//! The typed request layer: every VFIO and iommufd ioctl vfio-rs issues is declared once, in
//! [`requests`], as a type that names its request number, its uapi name, the kind of fd it is
//! defined on, its argument type, and which errnos mean "this kernel or device does not offer it".
//!
//! ```text
//!   request!(DeviceGetIrqInfo = VFIO_DEVICE_GET_IRQ_INFO on Device, vfio_irq_info, size argsz, plain)
//!        |
//!   call::<DeviceGetIrqInfo>(device.ioctl_fd(), &mut info)   one path: sets argsz, issues the
//!        |                                                   ioctl through rustix, logs it by fd
//!   rustix::ioctl::ioctl                                     kind and name, keeps the errno
//! ```
//!
//! Three ways in, by what the kernel does with the argument:
//! - [`call`] and [`call_int`]: safe, for requests whose argument carries no user pointer (the
//!   kernel reads and writes only the argument itself) or is a plain integer;
//! - [`call_var`]: safe, for argsz-bounded requests with trailing data, in a [`VarBuf`];
//! - [`call_unchecked`] / [`call_var_unchecked`]: `unsafe`, for requests whose argument holds
//!   pointers (DMA map, dirty bitmaps) or whose trailing data the kernel sizes by a count.
//!
//! Fds are typed by kind ([`Fd`]): VFIO reuses request numbers between containers, groups and
//! devices (0x3b71 is `VFIO_IOMMU_MAP_DMA` on a container and `VFIO_DEVICE_PCI_HOT_RESET` on a
//! device), so a request can only be issued on an fd of the kind it was declared for, and logs
//! name the request that was meant.
//!
//! Every call is logged at debug level (target `vfio`) through the `log` facade: fd kind, request
//! name, fd and result. Nothing is printed unless the program installs a logger.

mod buf;
pub mod caps;
pub mod requests;

use std::ffi::c_void;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, BorrowedFd};

use rustix::ioctl::{Ioctl, IoctlOutput, Opcode};

pub use buf::VarBuf;
pub use rustix::io::Errno;

use crate::{Error, Result};

/// The kinds of fd VFIO and iommufd requests are defined on (marker types for [`Fd`]).
pub mod kind {
    /// A kind of fd that requests are declared on.
    pub trait Kind {
        /// How logs name it.
        const NAME: &'static str;
    }
    macro_rules! kinds {
        ($($(#[$m:meta])* $name:ident = $text:literal;)*) => {$(
            $(#[$m])*
            #[derive(Debug, Clone, Copy)]
            pub enum $name {}
            impl Kind for $name {
                const NAME: &'static str = $text;
            }
        )*};
    }
    kinds! {
        /// A VFIO container: `/dev/vfio/vfio` (type1, no-IOMMU, or iommufd's compat container).
        Container = "container";
        /// A VFIO group: `/dev/vfio/<group>` or `/dev/vfio/noiommu-<group>`.
        Group = "group";
        /// A VFIO device: from `VFIO_GROUP_GET_DEVICE_FD` or `/dev/vfio/devices/vfioN`.
        Device = "device";
        /// An iommufd: `/dev/iommu`.
        Iommufd = "iommufd";
        /// A migration data fd (from `VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE`).
        MigrationData = "migration data";
    }
}

/// A borrowed fd known to be of kind `K`: what a request of that kind is issued on.
#[derive(Debug)]
pub struct Fd<'a, K> {
    fd: BorrowedFd<'a>,
    _kind: PhantomData<K>,
}

impl<K> Clone for Fd<'_, K> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<K> Copy for Fd<'_, K> {}

impl<'a, K: kind::Kind> Fd<'a, K> {
    /// Tags `fd` as an fd of kind `K`.
    ///
    /// # Safety
    /// `fd` is an fd of kind `K`, or one on which the VFIO/iommufd request numbers (ioctl magic
    /// `';'`, reserved for VFIO) are not defined, so that they fail with ENOTTY. (An fd of another
    /// VFIO kind is not enough: numbers are reused between kinds.)
    #[inline]
    pub const unsafe fn new_unchecked(fd: BorrowedFd<'a>) -> Self {
        Fd { fd, _kind: PhantomData }
    }

    /// The fd itself.
    #[inline]
    pub fn borrow(self) -> BorrowedFd<'a> {
        self.fd
    }
}

/// One ioctl: its number, uapi name, fd kind and argument type. Declared with [`request!`](crate::request!).
///
/// # Safety
/// `CODE` issued on an fd of kind `Fd` takes a pointer to an `Arg` (or, where `Arg` is
/// [`IntArg`], an integer), and the kernel accesses nothing beyond the `Arg` except through
/// pointers stored inside it (or, for [`Argsz`] requests, the trailing data its argsz announces).
pub unsafe trait Request {
    /// The request number.
    const CODE: u32;
    /// The uapi name, e.g. `"VFIO_DEVICE_GET_INFO"`.
    const NAME: &'static str;
    /// The errnos by which the kernel says it does not offer the request at all (as opposed to
    /// refusing this particular argument): ENOTTY from kernels or fds that lack it.
    const UNSUPPORTED: &'static [Errno] = &[Errno::NOTTY];
    /// The kind of fd the request is defined on.
    type Fd: kind::Kind;
    /// What the ioctl takes.
    type Arg;
    /// Sets the argument's `argsz`/`size` field to `size` (no-op for arguments without one).
    fn set_size(arg: &mut Self::Arg, size: u32);
}

/// A request whose argument holds no user pointer: the kernel reads and writes only the argument
/// itself, so issuing it cannot touch the caller's other memory. Issued with [`call`].
///
/// # Safety
/// As stated: no pointer inside `Arg` is followed by the kernel.
pub unsafe trait Plain: Request {}

/// A request whose argument starts with a `u32` argsz (VFIO's variable-length requests), and
/// whose kernel handler reads and writes only within argsz bytes. Issued with [`call_var`].
///
/// # Safety
/// As stated, and `Arg`'s first four bytes are the argsz.
pub unsafe trait Argsz: Plain {}

/// The argument type of requests that take an integer (or nothing) instead of a pointer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IntArg;

/// The argument type of requests that take a bare pointer (a string, an array) instead of a
/// struct: issued with [`call_ptr`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PtrArg;

/// Declares ioctl requests: one line each, as the uapi defines them.
///
/// ```ignore
/// request! {
///     /// `VFIO_DEVICE_GET_IRQ_INFO`
///     pub DeviceGetIrqInfo = vfio_sys::VFIO_DEVICE_GET_IRQ_INFO on Device, vfio_sys::vfio_irq_info, size argsz, plain;
///     pub DeviceReset = vfio_sys::VFIO_DEVICE_RESET on Device, int;
/// }
/// ```
/// `plain` marks pointer-free arguments ([`Plain`]), `argsz` argsz-bounded variable-length ones
/// ([`Argsz`]), `unchecked` those the caller must vouch for (the kernel follows pointers inside,
/// sizes trailing data by a count, or makes memory reachable by a device); `int` requests take an
/// integer, `ptr` requests a bare pointer; `size none` declares an argument without a size field.
#[macro_export]
macro_rules! request {
    () => {};
    // Integer and bare-pointer requests: the general form with a marker argument type.
    ($(#[$m:meta])* $vis:vis $name:ident = $code:ident on $kind:ident, int $($tail:tt)*) => {
        $crate::request!($(#[$m])* $vis $name = $code on $kind, $crate::ioctl::IntArg, size none, unchecked $($tail)*);
    };
    ($(#[$m:meta])* $vis:vis $name:ident = $code:ident on $kind:ident, ptr $($tail:tt)*) => {
        $crate::request!($(#[$m])* $vis $name = $code on $kind, $crate::ioctl::PtrArg, size none, unchecked $($tail)*);
    };
    (@size $arg:ident, $sz:ident, none) => {{ let _ = ($arg, $sz); }};
    (@size $arg:ident, $sz:ident, $($field:ident).+) => { $arg.$($field).+ = $sz };
    (@safety $name:ident plain) => {
        // SAFETY: declared from the uapi: the argument holds no pointer the kernel follows.
        unsafe impl $crate::ioctl::Plain for $name {}
    };
    (@safety $name:ident argsz) => {
        // SAFETY: declared from the uapi: no pointer in the argument; the handler stays within argsz.
        unsafe impl $crate::ioctl::Plain for $name {}
        // SAFETY: as above; the argument starts with argsz.
        unsafe impl $crate::ioctl::Argsz for $name {}
    };
    (@safety $name:ident unchecked) => {};
    ($(#[$m:meta])* $vis:vis $name:ident = $code:ident on $kind:ident, $arg:ty, size $($field:ident).+, $safety:ident $(, unsupported [$($u:ident),*])?; $($rest:tt)*) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy)]
        $vis enum $name {}
        // SAFETY: declared from the uapi: the request takes a pointer to this argument type (or,
        // for IntArg and PtrArg, an integer or a bare pointer, issued by call_int / call_ptr).
        unsafe impl $crate::ioctl::Request for $name {
            const CODE: u32 = $code;
            const NAME: &'static str = stringify!($code);
            $(const UNSUPPORTED: &'static [$crate::Errno] = &[$($crate::Errno::$u),*];)?
            type Fd = $crate::ioctl::kind::$kind;
            type Arg = $arg;
            #[inline(always)]
            fn set_size(arg: &mut Self::Arg, size: u32) {
                $crate::request!(@size arg, size, $($field).+);
            }
        }
        $crate::request!(@safety $name $safety);
        $crate::request!($($rest)*);
    };
}

/// One ioctl call with an untyped argument; the typing lives in the functions below.
struct Raw {
    op: Opcode,
    arg: *mut c_void,
}

// SAFETY: `opcode` and `as_ptr` return what the typed callers below vouched for; the output is
// the raw return value and reads no memory. IS_MUTATING is true: most VFIO ioctls write back.
unsafe impl Ioctl for Raw {
    type Output = IoctlOutput;
    const IS_MUTATING: bool = true;

    #[inline(always)]
    fn opcode(&self) -> Opcode {
        self.op
    }

    #[inline(always)]
    fn as_ptr(&mut self) -> *mut c_void {
        self.arg
    }

    #[inline(always)]
    unsafe fn output_from_ptr(out: IoctlOutput, _: *mut c_void) -> rustix::io::Result<IoctlOutput> {
        Ok(out)
    }
}

/// The one place an ioctl is issued.
///
/// # Safety
/// `R::CODE` on `fd` with `arg` as its argument is what the caller's contract allows.
#[inline(always)]
unsafe fn issue<R: Request>(fd: Fd<'_, R::Fd>, arg: *mut c_void, int: Option<usize>) -> Result<i32, Errno> {
    let raw = Raw {
        op: R::CODE as Opcode,
        arg,
    };
    // SAFETY: forwarded to the caller.
    let res = unsafe { rustix::ioctl::ioctl(fd.fd, raw) };
    if log::max_level() >= log::LevelFilter::Debug {
        log_call(<R::Fd as kind::Kind>::NAME, R::NAME, fd.fd, int, res);
    }
    res
}

/// The debug line of one ioctl, kept out of line: the fast path pays one level check.
#[cold]
#[inline(never)]
fn log_call(kind: &str, name: &str, fd: BorrowedFd<'_>, int: Option<usize>, res: Result<i32, Errno>) {
    let fd = fd.as_raw_fd();
    match int {
        None => log::debug!(target: "vfio", "ioctl {name}({kind} fd {fd}, struct) = {res:?}"),
        Some(arg) => log::debug!(target: "vfio", "ioctl {name}({kind} fd {fd}, {arg:#x}) = {res:?}"),
    }
}

/// Issues a pointer-free request: sets the argument's argsz/size to its size, calls the kernel,
/// and returns the ioctl's return value (an fd or a boolean for some requests) or its errno.
#[inline(always)]
pub fn call<R: Plain>(fd: Fd<'_, R::Fd>, arg: &mut R::Arg) -> Result<i32, Errno> {
    R::set_size(arg, size_of::<R::Arg>() as u32);
    // SAFETY: `R: Plain` (the kernel touches only `*arg`, which is exclusively borrowed), and
    // `fd` is of the kind `R` is declared on.
    unsafe { issue::<R>(fd, (arg as *mut R::Arg).cast(), None) }
}

/// Issues a request whose argument holds pointers the kernel follows.
///
/// # Safety
/// Every pointer inside `arg` is valid for what the kernel does with it under this request
/// (reads, writes, or a mapping it keeps), and trailing data it sizes by a count is in place.
#[inline(always)]
pub unsafe fn call_unchecked<R: Request>(fd: Fd<'_, R::Fd>, arg: &mut R::Arg) -> Result<i32, Errno> {
    R::set_size(arg, size_of::<R::Arg>() as u32);
    // SAFETY: forwarded to the caller; `fd` is of the request's kind.
    unsafe { issue::<R>(fd, (arg as *mut R::Arg).cast(), None) }
}

/// Issues a request that takes an integer (an fd number, an IOMMU type, an extension) or nothing
/// (pass 0).
#[inline(always)]
pub fn call_int<R: Request<Arg = IntArg>>(fd: Fd<'_, R::Fd>, value: usize) -> Result<i32, Errno> {
    // SAFETY: the request takes an integer, which the kernel does not dereference.
    unsafe { issue::<R>(fd, value as *mut c_void, Some(value)) }
}

/// Issues a request that takes a bare pointer (`VFIO_GROUP_GET_DEVICE_FD`'s device name).
///
/// # Safety
/// `ptr` is valid for what the kernel does with it under this request.
#[inline]
pub unsafe fn call_ptr<R: Request<Arg = PtrArg>>(fd: Fd<'_, R::Fd>, ptr: *const c_void) -> Result<i32, Errno> {
    // SAFETY: forwarded to the caller.
    unsafe { issue::<R>(fd, ptr.cast_mut(), None) }
}

/// Issues an argsz-bounded variable-length request on `buf` (argsz set to the buffer's length).
#[inline]
pub fn call_var<R: Argsz>(fd: Fd<'_, R::Fd>, buf: &mut VarBuf<R::Arg>) -> Result<i32, Errno> {
    buf.set_argsz();
    // SAFETY: `R: Argsz`: the kernel stays within argsz bytes, which is `buf`'s whole length.
    unsafe { issue::<R>(fd, buf.as_mut_ptr(), None) }
}

/// Issues a variable-length request whose trailing data holds pointers, or which the kernel
/// sizes by a count instead of argsz (argsz is set to the buffer's length).
///
/// # Safety
/// As [`call_unchecked`], for the header and the trailing data.
#[inline]
pub unsafe fn call_var_unchecked<R: Request>(fd: Fd<'_, R::Fd>, buf: &mut VarBuf<R::Arg>) -> Result<i32, Errno> {
    buf.set_argsz();
    // SAFETY: forwarded to the caller.
    unsafe { issue::<R>(fd, buf.as_mut_ptr(), None) }
}

/// The largest reply the two-call argsz protocol accepts (1 MiB): a kernel asking for more is
/// reported as a malformed reply instead of sizing an allocation.
pub const MAX_REPLY: usize = 1 << 20;

/// The two-call argsz protocol of VFIO's `GET_INFO`-style requests: issues `R` with `header`
/// (its argsz set), and when the kernel raises argsz in its reply (it has a capability chain or
/// an array to return), issues it again with a buffer that large. Returns the whole reply,
/// argsz bytes long. Errors: the kernel's errno (Kernel); Malformed when the kernel asks for more
/// than [`MAX_REPLY`] bytes or keeps raising argsz.
pub fn query<R: Argsz>(fd: Fd<'_, R::Fd>, header: &R::Arg, target: impl Fn() -> String) -> Result<VarBuf<R::Arg>>
where
    R::Arg: zerocopy::IntoBytes + zerocopy::FromBytes + zerocopy::Immutable + zerocopy::KnownLayout,
{
    let mut len = size_of::<R::Arg>();
    for _ in 0..4 {
        let mut buf = VarBuf::with_header(header, len - size_of::<R::Arg>());
        call_var::<R>(fd, &mut buf).map_err(|e| kernel_error::<R>(target(), e))?;
        let wanted = buf.reply_argsz() as usize;
        if wanted <= len {
            return Ok(buf);
        }
        if wanted > MAX_REPLY {
            return Err(Error::malformed(
                R::NAME,
                target(),
                format!("the kernel asks for a {wanted}-byte reply, above the {MAX_REPLY}-byte limit"),
            ));
        }
        len = wanted;
    }
    Err(Error::malformed(
        R::NAME,
        target(),
        "argsz kept growing over four calls",
    ))
}

/// The [`Error::Kernel`] of a refused request, built out of line: the fast path stays small.
#[cold]
#[inline(never)]
pub fn kernel_error<R: Request>(target: impl ToString, errno: Errno) -> Error {
    Error::kernel(R::NAME, target, errno)
}

/// Whether `errno` is one by which the kernel says it does not offer `R` at all.
#[inline]
pub fn is_unsupported<R: Request>(errno: Errno) -> bool {
    R::UNSUPPORTED.contains(&errno)
}

/// The `argsz`/`size` value of a fixed-size uapi struct.
pub const fn argsz<T>() -> u32 {
    size_of::<T>() as u32
}

#[cfg(test)]
mod tests {
    use super::requests::*;
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
    fn declarations_carry_the_uapi_numbers_and_names() {
        assert_eq!(GetApiVersion::CODE, vfio_sys::VFIO_GET_API_VERSION);
        assert_eq!(GetApiVersion::NAME, "VFIO_GET_API_VERSION");
        assert_eq!(IoasMap::NAME, "IOMMU_IOAS_MAP");
        // The same number on two kinds of fd: two requests, two names.
        assert_eq!(IommuMapDma::CODE, DevicePciHotReset::CODE);
        assert_ne!(IommuMapDma::NAME, DevicePciHotReset::NAME);
        let mut info = vfio_sys::vfio_irq_info::default();
        DeviceGetIrqInfo::set_size(&mut info, 16);
        assert_eq!(info.argsz, 16);
    }

    #[test]
    #[cfg_attr(miri, ignore)] // calls eventfd(2) and ioctl(2)
    fn logs_kernel_calls_by_fd_kind_and_name() {
        log::set_logger(&Capture).unwrap();
        log::set_max_level(log::LevelFilter::Debug);
        let e = crate::EventFd::new().unwrap();
        // SAFETY: an eventfd answers ENOTTY to VFIO's request numbers.
        let fd = unsafe { Fd::<kind::Container>::new_unchecked(std::os::fd::AsFd::as_fd(&e)) };
        let r = call_int::<GetApiVersion>(fd, 0);
        assert_eq!(r, Err(Errno::NOTTY));
        assert!(is_unsupported::<GetApiVersion>(Errno::NOTTY));
        let lines = LINES.lock().unwrap();
        assert!(
            lines.iter().any(|l| l.starts_with("eventfd(0, EFD_CLOEXEC) = Ok")),
            "{lines:?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("ioctl VFIO_GET_API_VERSION(container fd ") && l.contains("Err")),
            "{lines:?}"
        );
    }
}
