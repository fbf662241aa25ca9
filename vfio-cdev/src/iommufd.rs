//! An iommufd (`/dev/iommu`): the context that owns IOAS and HWPT objects and that device cdevs
//! bind to.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use iommufd_sys as sys;
use vfio_core::{Error, Result, ioctl};

use crate::Ioas;

/// An open iommufd.
#[derive(Debug)]
pub struct Iommufd {
    fd: OwnedFd,
    path: PathBuf,
}

impl AsFd for Iommufd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Iommufd {
    /// Opens `/dev/iommu`. Errors: Unsupported when the node does not exist: the kernel has no
    /// iommufd (`CONFIG_IOMMUFD`, Linux >= 6.2; e.g. Debian 12's 6.1), or it is a module that is
    /// not loaded. The message says so, e.g. `cdev mode (iommufd) is not supported on this
    /// kernel: /dev/iommu does not exist (...)`.
    pub fn open() -> Result<Arc<Self>> {
        Self::open_path(Path::new("/dev/iommu"))
    }

    /// Opens the iommufd node at `path`. Errors: as [`Iommufd::open`] when it does not exist.
    pub fn open_path(path: &Path) -> Result<Arc<Self>> {
        match vfio_core::open_node(path) {
            Ok(fd) => Ok(Arc::new(Iommufd {
                fd,
                path: path.to_owned(),
            })),
            Err(e) if e.errno() == Some(vfio_core::Errno::NOENT) => Err(Error::unsupported(
                "cdev mode (iommufd)",
                "this kernel",
                format!(
                    "{} does not exist: the kernel has no iommufd (CONFIG_IOMMUFD, Linux >= 6.2; cdev \
                     mode also needs CONFIG_VFIO_DEVICE_CDEV, Linux >= 6.6), or the iommufd module \
                     is not loaded; use group mode",
                    path.display()
                ),
            )),
            Err(e) => Err(e),
        }
    }

    /// Adopts an open iommufd (for example one received from another process).
    pub fn from_fd(fd: OwnedFd) -> Arc<Self> {
        Arc::new(Iommufd {
            fd,
            path: PathBuf::from("iommufd"),
        })
    }

    pub(crate) fn target(&self) -> String {
        self.path.display().to_string()
    }

    /// Issues an iommufd ioctl whose argument starts with a `size` field.
    ///
    /// # Safety
    /// `request` must be an iommufd ioctl taking a `T`, and pointers inside `T` must be valid.
    #[inline]
    pub(crate) unsafe fn call<T>(
        &self,
        op: &'static str,
        what: impl FnOnce() -> String,
        request: u32,
        arg: &mut T,
    ) -> Result<()> {
        // SAFETY: forwarded to the caller.
        match unsafe { ioctl::with_mut(self.as_fd(), request, arg) } {
            Ok(_) => Ok(()),
            Err(e) => Err(call_error(op, what, e)),
        }
    }

    /// `IOMMU_OPTION`: gets (`value` None) or sets an option of object `object_id` (0 for the
    /// global options); returns the value (the one set, for a set).
    pub(crate) fn option(&self, option_id: u32, object_id: u32, value: Option<u64>) -> Result<u64> {
        let mut o = sys::iommu_option {
            size: ioctl::argsz::<sys::iommu_option>(),
            option_id,
            op: if value.is_some() {
                sys::IOMMU_OPTION_OP_SET
            } else {
                sys::IOMMU_OPTION_OP_GET
            } as u16,
            object_id,
            val64: value.unwrap_or(0),
            ..Default::default()
        };
        // SAFETY: IOMMU_OPTION takes an iommu_option; it holds no pointers.
        unsafe {
            self.call(
                "IOMMU_OPTION",
                || format!("{} option {option_id} object {object_id}", self.target()),
                sys::IOMMU_OPTION,
                &mut o,
            )?
        };
        Ok(o.val64)
    }

    /// `IOMMU_OPTION` `IOMMU_OPTION_RLIMIT_MODE` (global, Linux >= 6.2): whether pinned memory is charged to
    /// the process (`true`) or to the user (`false`, the default) against `RLIMIT_MEMLOCK`.
    /// Errors: EPERM without `CAP_SYS_RESOURCE`; EBUSY once this iommufd has pinned memory.
    pub fn set_rlimit_per_process(&self, per_process: bool) -> Result<()> {
        self.option(sys::IOMMU_OPTION_RLIMIT_MODE, 0, Some(u64::from(per_process)))
            .map(|_| ())
    }

    /// `IOMMU_OPTION` `IOMMU_OPTION_RLIMIT_MODE` read back: true for per-process accounting.
    /// Errors: the kernel's errno.
    pub fn rlimit_per_process(&self) -> Result<bool> {
        Ok(self.option(sys::IOMMU_OPTION_RLIMIT_MODE, 0, None)? != 0)
    }

    fn vfio_ioas(&self, op: u32, ioas_id: u32) -> Result<sys::iommu_vfio_ioas> {
        let mut v = sys::iommu_vfio_ioas {
            size: ioctl::argsz::<sys::iommu_vfio_ioas>(),
            ioas_id,
            op: op as u16,
            ..Default::default()
        };
        // SAFETY: IOMMU_VFIO_IOAS takes an iommu_vfio_ioas; it holds no pointers.
        unsafe {
            self.call(
                "IOMMU_VFIO_IOAS",
                || format!("{} op {op} ioas {ioas_id}", self.target()),
                sys::IOMMU_VFIO_IOAS,
                &mut v,
            )?
        };
        Ok(v)
    }

    /// `IOMMU_VFIO_IOAS` `IOMMU_VFIO_IOAS_GET` (Linux >= 6.2): the IOAS that VFIO-compatibility
    /// users of this iommufd (the type1 container API on `/dev/iommu` or `/dev/vfio/vfio`
    /// provided by iommufd) work in; `None` when none is set or auto-created yet (the kernel
    /// answers ENODEV).
    pub fn vfio_compat_ioas(&self) -> Result<Option<u32>> {
        match self.vfio_ioas(sys::IOMMU_VFIO_IOAS_GET, 0) {
            Ok(v) => Ok(Some(v.ioas_id)),
            Err(e) if e.errno() == Some(vfio_core::Errno::NODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `IOMMU_VFIO_IOAS` `IOMMU_VFIO_IOAS_SET`: makes `ioas` the VFIO-compatibility IOAS.
    /// Errors: ENOENT for an IOAS of another iommufd (InvalidArgument, checked first).
    pub fn set_vfio_compat_ioas(self: &Arc<Self>, ioas: &Ioas) -> Result<()> {
        if !Arc::ptr_eq(self, ioas.iommufd()) {
            return Err(Error::invalid(
                "IOMMU_VFIO_IOAS",
                format!("{} ioas {}", self.target(), ioas.id()),
                "the IOAS belongs to another iommufd",
            ));
        }
        self.vfio_ioas(sys::IOMMU_VFIO_IOAS_SET, ioas.id()).map(|_| ())
    }

    /// `IOMMU_VFIO_IOAS` `IOMMU_VFIO_IOAS_CLEAR`: disables VFIO compatibility on this iommufd
    /// (no IOAS is destroyed). Errors: the kernel's errno.
    pub fn clear_vfio_compat_ioas(&self) -> Result<()> {
        self.vfio_ioas(sys::IOMMU_VFIO_IOAS_CLEAR, 0).map(|_| ())
    }

    /// `IOMMU_IOAS_ALLOC`: a new, empty I/O address space, destroyed when dropped. Errors: the
    /// kernel's errno (ENOMEM).
    pub fn alloc_ioas(self: &Arc<Self>) -> Result<Ioas> {
        let mut a = sys::iommu_ioas_alloc {
            size: ioctl::argsz::<sys::iommu_ioas_alloc>(),
            ..Default::default()
        };
        // SAFETY: IOMMU_IOAS_ALLOC takes an iommu_ioas_alloc.
        unsafe { self.call("IOMMU_IOAS_ALLOC", || self.target(), sys::IOMMU_IOAS_ALLOC, &mut a)? };
        Ok(Ioas::from_id(self.clone(), a.out_ioas_id))
    }

    /// `IOMMU_DESTROY` of object `id`. Errors: EBUSY while the object is in use (an IOAS with
    /// attached devices), ENOENT for an unknown id.
    pub fn destroy(&self, id: u32) -> Result<()> {
        let mut d = sys::iommu_destroy {
            size: ioctl::argsz::<sys::iommu_destroy>(),
            id,
        };
        // SAFETY: IOMMU_DESTROY takes an iommu_destroy.
        unsafe {
            self.call(
                "IOMMU_DESTROY",
                || format!("{} object {id}", self.target()),
                sys::IOMMU_DESTROY,
                &mut d,
            )
        }
    }
}

/// The error of a refused iommufd ioctl, built out of line: the fast path stays small.
#[cold]
#[inline(never)]
fn call_error(op: &'static str, what: impl FnOnce() -> String, errno: vfio_core::Errno) -> Error {
    Error::kernel(op, what(), errno)
}
