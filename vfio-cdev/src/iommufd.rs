//! An iommufd (`/dev/iommu`): the context that owns IOAS and HWPT objects (it allocates both)
//! and that device cdevs bind to.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;

use iommufd_sys as sys;
use vfio_core::ioctl::{self, Request, kind, requests as req};
use vfio_core::{Errno, Error, NamedFd, Result};

use crate::{DeviceId, HwInfo, Hwpt, HwptFlags, Ioas, IoasId, ObjectId, refused};

/// An open iommufd. It closes when the last handle goes (the IOAS, HWPTs, bound devices and
/// containers made from it hold one): the kernel then destroys every object left in it. A
/// failed close is logged (warn, target `vfio`); [`Iommufd::close`] returns it instead.
#[derive(Debug)]
pub struct Iommufd {
    fd: NamedFd,
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

    /// Opens the iommufd node at `path`. Errors: as [`Iommufd::open`] when it does not exist;
    /// Path (EACCES, EPERM) with the cause `NodeNotAccessible` when this user may not open it.
    pub fn open_path(path: &Path) -> Result<Arc<Self>> {
        match vfio_core::open_node(path) {
            Ok(fd) => Ok(Arc::new(Iommufd {
                fd: NamedFd::new(fd, path.display().to_string()),
            })),
            Err(e) if e.errno() == Some(Errno::NOENT) => Err(Error::unsupported(
                "cdev mode (iommufd)",
                "this kernel",
                format!(
                    "{} does not exist: the kernel has no iommufd (CONFIG_IOMMUFD, Linux >= 6.2; cdev \
                     mode also needs CONFIG_VFIO_DEVICE_CDEV, Linux >= 6.6), or the iommufd module \
                     is not loaded; use group mode",
                    path.display()
                ),
            )),
            // EACCES / EPERM: the node's permissions, as the error's cause.
            Err(e) => match e
                .errno()
                .and_then(|errno| vfio_core::host::doctor::diagnose::node_refusal(Path::new("/proc"), path, errno))
            {
                Some(cause) => Err(e.with_cause(cause)),
                None => Err(e),
            },
        }
    }

    /// Adopts an open iommufd (for example one received from another process).
    pub fn from_fd(fd: OwnedFd) -> Arc<Self> {
        Arc::new(Iommufd {
            fd: NamedFd::new(fd, "iommufd".into()),
        })
    }

    /// Closes the iommufd now, returning the errno of `close(2)` where dropping the last handle
    /// would only log it; the kernel destroys every object left in it (IOAS, HWPT, ...).
    /// Errors: InvalidArgument when other handles still hold it (an [`Ioas`], a [`Hwpt`], a
    /// [`crate::BoundDevice`], a container, or a clone of the `Arc`): it then closes with the
    /// last of them, and the message says how many there are; the errno of close (Kernel).
    pub fn close(self: Arc<Self>) -> Result<()> {
        let target = self.target();
        match Arc::try_unwrap(self) {
            Ok(iommufd) => iommufd.fd.close(),
            Err(shared) => Err(Error::invalid(
                "close iommufd",
                target,
                format!(
                    "{} other handles (IOAS, HWPT, bound devices, containers or clones) still hold it: it \
                     closes with the last of them",
                    Arc::strong_count(&shared) - 1
                ),
            )),
        }
    }

    /// The fd, typed for iommufd requests (see [`vfio_core::ioctl`]).
    #[inline]
    pub fn ioctl_fd(&self) -> ioctl::Fd<'_, kind::Iommufd> {
        // SAFETY: an Iommufd holds `/dev/iommu`, or (from_fd) an fd its caller named an iommufd.
        // The iommufd request numbers (';' 0x80 and up) are defined on no VFIO fd, so any other
        // fd answers them with ENOTTY.
        unsafe { ioctl::Fd::new_unchecked(self.fd.as_fd()) }
    }

    pub(crate) fn target(&self) -> String {
        self.fd.name().to_string()
    }

    /// `IOMMU_OPTION`: gets (`value` None) or sets an option of object `object_id` (0 for the
    /// global options); returns the value (the one set, for a set).
    pub(crate) fn option(&self, option_id: u32, object_id: u32, value: Option<u64>) -> Result<u64> {
        let mut o = sys::iommu_option {
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
        ioctl::call::<req::IommuOption>(self.ioctl_fd(), &mut o).map_err(|e| {
            refused::<req::IommuOption>(|| format!("{} option {option_id} object {object_id}", self.target()), e)
        })?;
        Ok(o.val64)
    }

    /// `IOMMU_OPTION` `IOMMU_OPTION_RLIMIT_MODE` (global, Linux >= 6.2): whether pinned memory is
    /// charged to the process (`true`) or to the user (`false`, the default) against
    /// `RLIMIT_MEMLOCK`. Errors: EPERM without `CAP_SYS_RESOURCE`; EBUSY once this iommufd has
    /// pinned memory.
    #[doc(alias = "IOMMU_OPTION", alias = "IOMMU_OPTION_RLIMIT_MODE")]
    pub fn set_rlimit_per_process(&self, per_process: bool) -> Result<()> {
        self.option(sys::IOMMU_OPTION_RLIMIT_MODE, 0, Some(u64::from(per_process)))
            .map(|_| ())
    }

    /// `IOMMU_OPTION` `IOMMU_OPTION_RLIMIT_MODE` read back: true for per-process accounting.
    /// Errors: the kernel's errno.
    #[doc(alias = "IOMMU_OPTION", alias = "IOMMU_OPTION_RLIMIT_MODE")]
    pub fn rlimit_per_process(&self) -> Result<bool> {
        Ok(self.option(sys::IOMMU_OPTION_RLIMIT_MODE, 0, None)? != 0)
    }

    fn vfio_ioas(&self, op: u32, ioas_id: u32) -> Result<sys::iommu_vfio_ioas> {
        let mut v = sys::iommu_vfio_ioas {
            ioas_id,
            op: op as u16,
            ..Default::default()
        };
        ioctl::call::<req::VfioIoas>(self.ioctl_fd(), &mut v)
            .map_err(|e| refused::<req::VfioIoas>(|| format!("{} op {op} ioas {ioas_id}", self.target()), e))?;
        Ok(v)
    }

    /// `IOMMU_VFIO_IOAS` `IOMMU_VFIO_IOAS_GET` (Linux >= 6.2): the IOAS that VFIO-compatibility
    /// users of this iommufd (the type1 container API on `/dev/iommu` or `/dev/vfio/vfio`
    /// provided by iommufd) work in; `None` when none is set or auto-created yet (the kernel
    /// answers ENODEV).
    #[doc(alias = "IOMMU_VFIO_IOAS", alias = "IOMMU_VFIO_IOAS_GET")]
    pub fn vfio_compat_ioas(&self) -> Result<Option<IoasId>> {
        match self.vfio_ioas(sys::IOMMU_VFIO_IOAS_GET, 0) {
            Ok(v) => Ok(Some(IoasId::from(v.ioas_id))),
            Err(e) if e.errno() == Some(Errno::NODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `IOMMU_VFIO_IOAS` `IOMMU_VFIO_IOAS_SET`: makes `ioas` the VFIO-compatibility IOAS.
    /// Errors: ENOENT for an IOAS of another iommufd (InvalidArgument, checked first).
    #[doc(alias = "IOMMU_VFIO_IOAS", alias = "IOMMU_VFIO_IOAS_SET")]
    pub fn set_vfio_compat_ioas(self: &Arc<Self>, ioas: &Ioas) -> Result<()> {
        if !Arc::ptr_eq(self, ioas.iommufd()) {
            return Err(Error::invalid(
                req::VfioIoas::NAME,
                format!("{} ioas {}", self.target(), ioas.id()),
                "the IOAS belongs to another iommufd",
            ));
        }
        self.vfio_ioas(sys::IOMMU_VFIO_IOAS_SET, ioas.id().get()).map(|_| ())
    }

    /// `IOMMU_VFIO_IOAS` `IOMMU_VFIO_IOAS_CLEAR`: disables VFIO compatibility on this iommufd
    /// (no IOAS is destroyed). Errors: the kernel's errno.
    #[doc(alias = "IOMMU_VFIO_IOAS", alias = "IOMMU_VFIO_IOAS_CLEAR")]
    pub fn clear_vfio_compat_ioas(&self) -> Result<()> {
        self.vfio_ioas(sys::IOMMU_VFIO_IOAS_CLEAR, 0).map(|_| ())
    }

    /// `IOMMU_IOAS_ALLOC`: a new, empty I/O address space, destroyed when dropped. Errors: the
    /// kernel's errno (ENOMEM).
    #[doc(alias = "IOMMU_IOAS_ALLOC")]
    pub fn alloc_ioas(self: &Arc<Self>) -> Result<Ioas> {
        let mut a = sys::iommu_ioas_alloc::default();
        ioctl::call::<req::IoasAlloc>(self.ioctl_fd(), &mut a)
            .map_err(|e| refused::<req::IoasAlloc>(|| self.target(), e))?;
        Ok(Ioas::from_id(self.clone(), IoasId::from(a.out_ioas_id)))
    }

    /// `IOMMU_HWPT_ALLOC` (Linux >= 6.7; dirty tracking >= 6.7, nest parent >= 6.7): a paging
    /// domain for device `dev`'s IOMMU holding the mappings of IOAS `ioas` (kept in sync with
    /// it), destroyed when dropped (drop it before the IOAS). Attach devices to [`Hwpt::id`].
    /// Errors: Unsupported when the IOMMU cannot honour the flags (EOPNOTSUPP) or the kernel
    /// lacks the ioctl (ENOTTY); ENOENT for an unknown device, EINVAL for an id that is not an
    /// IOAS of this iommufd.
    #[doc(alias = "IOMMU_HWPT_ALLOC")]
    pub fn alloc_hwpt(self: &Arc<Self>, dev: DeviceId, ioas: IoasId, flags: HwptFlags) -> Result<Hwpt> {
        let (dev_id, pt_id) = (dev.get(), ioas.get());
        let mut a = sys::iommu_hwpt_alloc {
            flags: flags.raw(),
            dev_id,
            pt_id,
            ..Default::default()
        };
        // SAFETY: no driver data: data_uptr is 0 and data_len 0, so the kernel follows no
        // pointer; the domain maps only what the IOAS maps, which its callers vouched for.
        let res = unsafe { ioctl::call_unchecked::<req::HwptAlloc>(self.ioctl_fd(), &mut a) };
        let target = || format!("{} device {dev_id} pt {pt_id} {flags:?}", self.target());
        match res {
            Ok(_) => Ok(Hwpt::from_id(self.clone(), a.out_hwpt_id.into())),
            Err(e @ (Errno::NOTTY | Errno::OPNOTSUPP)) => Err(Error::unsupported(req::HwptAlloc::NAME, target(), e)),
            Err(e) => Err(refused::<req::HwptAlloc>(target, e)),
        }
    }

    /// `IOMMU_GET_HW_INFO` (Linux >= 6.7) for device `dev` (a [`crate::BoundDevice::devid`]),
    /// with up to 256 bytes of driver-specific data, typed by [`HwInfo::kind`] and
    /// [`HwInfo::get`]. A driver without driver data (virtio-iommu) answers type NONE with no
    /// data. Errors: ENOENT for an unknown device; Unsupported on kernels without the ioctl
    /// (ENOTTY) or for a device without an IOMMU (no-IOMMU cdev, EOPNOTSUPP).
    #[doc(alias = "IOMMU_GET_HW_INFO")]
    pub fn hw_info(&self, dev: DeviceId) -> Result<HwInfo> {
        self.hw_info_request(dev, None)
    }

    /// `IOMMU_GET_HW_INFO` with `IOMMU_HW_INFO_FLAG_INPUT_TYPE` (Linux >= 6.17): the info of
    /// type `T` for device `dev` (for IOMMUs that can report more than one type, e.g. SMMUv3
    /// with a Tegra241 CMDQV), with its typed data. Errors: Unsupported when the driver does not
    /// report `T` (EOPNOTSUPP) or the kernel lacks the flag; otherwise as [`Iommufd::hw_info`].
    #[doc(alias = "IOMMU_GET_HW_INFO", alias = "IOMMU_HW_INFO_FLAG_INPUT_TYPE")]
    pub fn hw_info_as<T: crate::hw_info::HwInfoType>(&self, dev: DeviceId) -> Result<(HwInfo, T)> {
        let info = self.hw_info_request(dev, Some(T::TYPE))?;
        match info.get::<T>() {
            Some(t) => Ok((info, t)),
            None => Err(Error::malformed(
                req::GetHwInfo::NAME,
                format!("{} device {dev}", self.target()),
                format!("asked for type {:#x}, got type {:#x}", T::TYPE, info.data_type),
            )),
        }
    }

    /// `IOMMU_GET_HW_INFO` with `in_type` as the input type when given (the caller names the
    /// type's number: for types without a Rust type and for the bad-input tests).
    #[doc(alias = "IOMMU_GET_HW_INFO")]
    pub fn hw_info_of_type(&self, dev: DeviceId, in_type: u32) -> Result<HwInfo> {
        self.hw_info_request(dev, Some(in_type))
    }

    fn hw_info_request(&self, dev: DeviceId, in_type: Option<u32>) -> Result<HwInfo> {
        let dev_id = dev.get();
        let mut data = vec![0u8; 256];
        let mut h = sys::iommu_hw_info {
            dev_id,
            data_len: data.len() as u32,
            data_uptr: data.as_mut_ptr() as u64,
            flags: if in_type.is_some() {
                sys::IOMMU_HW_INFO_FLAG_INPUT_TYPE
            } else {
                0
            },
            ..Default::default()
        };
        h.__bindgen_anon_1.in_data_type = in_type.unwrap_or(0);
        // SAFETY: data_uptr points at data_len writable bytes, alive for the call; the kernel
        // writes at most data_len bytes there.
        let res = unsafe { ioctl::call_unchecked::<req::GetHwInfo>(self.ioctl_fd(), &mut h) };
        let target = || format!("{} device {dev_id}", self.target());
        match res {
            Ok(_) => Ok(HwInfo::from_reply(&h, data)),
            Err(e @ (Errno::NOTTY | Errno::OPNOTSUPP)) => Err(Error::unsupported(req::GetHwInfo::NAME, target(), e)),
            Err(e) => Err(refused::<req::GetHwInfo>(target, e)),
        }
    }

    /// `IOMMU_DESTROY` of object `id` (an IOAS, a HWPT, ...). Errors: EBUSY while the object is
    /// in use (an IOAS with attached devices), ENOENT for an unknown id.
    #[doc(alias = "IOMMU_DESTROY")]
    pub fn destroy(&self, id: impl Into<ObjectId>) -> Result<()> {
        let id = id.into().get();
        let mut d = sys::iommu_destroy {
            id,
            ..Default::default()
        };
        ioctl::call::<req::Destroy>(self.ioctl_fd(), &mut d)
            .map_err(|e| refused::<req::Destroy>(|| format!("{} object {id}", self.target()), e))?;
        Ok(())
    }
}
