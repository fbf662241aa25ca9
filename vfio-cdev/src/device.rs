//! Opening a VFIO device through its cdev (`/dev/vfio/devices/vfioN`) and binding it to an
//! iommufd. The typestate makes operations that need a bound device unreachable before bind.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use vfio_core::host::doctor::{Finding, diagnose, proc_dir};
use vfio_core::ioctl::{self, kind, requests as req};
use vfio_core::{CdevNode, Errno, Error, PciAddress, Result, Sysfs};
use vfio_sys as sys;

use crate::{DeviceId, HwptId, Iommufd, PtId, refused};
use vfio_core::NamedFd;

/// The device fd of a cdev, typed for device requests.
#[inline]
fn device_fd(fd: &NamedFd) -> ioctl::Fd<'_, kind::Device> {
    // SAFETY: UnboundDevice and BoundDevice hold a VFIO device cdev (opened from sysfs with its
    // major:minor checked, or adopted with from_fd, whose caller names it a device cdev).
    unsafe { ioctl::Fd::new_unchecked(fd.as_fd()) }
}

/// A device cdev that is open but not yet bound: the kernel refuses everything but bind.
/// Dropping it closes the fd, logging a failure (warn, target `vfio`); [`UnboundDevice::close`]
/// returns it.
#[derive(Debug)]
pub struct UnboundDevice {
    fd: NamedFd,
    noiommu: bool,
    /// In an emulated-IOMMU group (a mediated device): its bind makes an iommufd access.
    emulated: bool,
}

impl AsFd for UnboundDevice {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl UnboundDevice {
    /// Opens the cdev of the PCI function at `addr`: finds it in sysfs (`vfio-dev/`), opens the
    /// node close-on-exec and checks its major:minor against sysfs, so a stale or forged node is
    /// never used (after the first such check in the process, against VFIO's cdev major and the
    /// name's index with one `fstat`; any difference falls back to sysfs's `dev`). Errors: the device is not bound to vfio-pci (naming its driver; checked only
    /// when the cdev cannot be found, so VFIO variant drivers work); Unsupported on kernels
    /// without `CONFIG_VFIO_DEVICE_CDEV`; Path with the cause [`Finding::CdevMismatch`] (and no
    /// errno) when the node is not the device sysfs names; Path (EACCES, EPERM) with the cause
    /// [`Finding::NodeNotAccessible`] when this user may not open it.
    pub fn open(sysfs: &Sysfs, addr: &PciAddress) -> Result<Self> {
        if let Some(opened) = Self::open_known(sysfs, addr) {
            return Ok(opened);
        }
        let node = sysfs.vfio_cdev(addr).map_err(|e| no_cdev_why(sysfs, addr, e))?;
        let fd = NamedFd::new(open_cdev(sysfs, &node)?, addr.to_string());
        check_node(&fd, &node)?;
        node_major::learn(&node);
        Ok(UnboundDevice {
            fd,
            noiommu: node.name.starts_with("noiommu-"),
            emulated: false,
        })
    }

    /// The open of a process that has checked a cdev against sysfs before: the node named by
    /// `vfio-dev/` is opened and taken when it is the character device (VFIO's cdev major, the
    /// name's index), one `fstat` instead of reading sysfs's `dev`. `None` (the node closed)
    /// on anything else: the checked open then runs and says what is wrong.
    fn open_known(sysfs: &Sysfs, addr: &PciAddress) -> Option<Self> {
        let major = node_major::known()?;
        let (name, path) = sysfs.vfio_cdev_name(addr)?;
        let index = node_major::index(&name)?;
        let fd = vfio_core::open_node(&path).ok()?;
        if char_device(&fd).ok()? != Some((major, index)) {
            return None;
        }
        Some(UnboundDevice {
            fd: NamedFd::new(fd, addr.to_string()),
            noiommu: name.starts_with("noiommu-"),
            emulated: false,
        })
    }

    /// Opens the cdev of any device ([`vfio_core::DeviceRef`]): a PCI function as
    /// [`UnboundDevice::open`], a mediated device by UUID, any device by its sysfs directory,
    /// from its `vfio-dev/vfioN`, with the same major:minor check. A mediated device's bind
    /// creates an iommufd access, not a device object: it needs no IOMMU, and `hw_info` on it
    /// gives ENOENT. Errors: Path (ENOENT) naming the device's directory when it does not
    /// exist (for a mediated device: removed?); Unsupported on kernels without
    /// `CONFIG_VFIO_DEVICE_CDEV`; as [`UnboundDevice::open`] when the node does not match or may
    /// not be opened.
    pub fn open_ref(sysfs: &Sysfs, device: &vfio_core::DeviceRef) -> Result<Self> {
        if let vfio_core::DeviceRef::Pci(a) = device {
            return Self::open(sysfs, a);
        }
        let node = sysfs.device_vfio_cdev(device)?;
        let fd = NamedFd::new(open_cdev(sysfs, &node)?, device.vfio_name());
        check_node(&fd, &node)?;
        let emulated = sysfs
            .device_iommu_group(device)
            .is_ok_and(|g| sysfs.is_emulated_group(g));
        Ok(UnboundDevice {
            fd,
            noiommu: node.name.starts_with("noiommu-"),
            emulated,
        })
    }

    /// Adopts an open, unbound cdev fd.
    pub fn from_fd(fd: OwnedFd, name: impl Into<String>, noiommu: bool) -> Self {
        UnboundDevice {
            fd: NamedFd::new(fd, name.into()),
            noiommu,
            emulated: false,
        }
    }

    /// Closes the cdev fd, returning the errno of `close(2)` where dropping would only log it.
    /// Errors: that errno (Kernel, naming the device).
    pub fn close(self) -> Result<()> {
        self.fd.close()
    }

    /// Whether this is a no-IOMMU cdev (`noiommu-vfioN`).
    pub fn is_noiommu(&self) -> bool {
        self.noiommu
    }

    /// The device fd, typed for device requests (see [`vfio_core::ioctl`]). Before bind the
    /// kernel refuses every request but `VFIO_DEVICE_BIND_IOMMUFD`.
    #[inline]
    pub fn ioctl_fd(&self) -> ioctl::Fd<'_, kind::Device> {
        device_fd(&self.fd)
    }

    /// `VFIO_DEVICE_BIND_IOMMUFD`: binds the device to `iommufd` and returns it with its device
    /// id. Errors: EBADF for a bad fd, EBADFD for an fd that is not an iommufd, EINVAL when
    /// already bound (or bound through another fd of the cdev: the cause [`Finding::Busy`] names
    /// the process holding it), EBUSY while the device's group is open in group mode
    /// ([`Finding::Busy`] naming the process holding the group node), EPERM when the device's
    /// IOMMU group is not viable (a device of it is on a host driver:
    /// [`Finding::GroupNotViable`] names the member and its driver) or its IOMMU cannot isolate
    /// MSIs (unless `iommufd.allow_unsafe_interrupts=1`: [`Finding::NoInterruptRemapping`]), as
    /// the error's typed [`Error::cause`] (looked for in `/sys` and `/proc`). The device is
    /// consumed even on error, its fd closed (nothing of the refused bind stays): reopen it.
    #[doc(alias = "VFIO_DEVICE_BIND_IOMMUFD")]
    pub fn bind(self, iommufd: &Arc<Iommufd>) -> Result<BoundDevice> {
        self.bind_inner(iommufd, None)
    }

    /// `VFIO_DEVICE_BIND_IOMMUFD` with `VFIO_DEVICE_BIND_FLAG_TOKEN` (Linux >= 6.17): binds an
    /// SR-IOV VF whose PF is on vfio-pci (or that PF while any of its VFs is open), presenting
    /// the VF token `token` set on the PF. The kernel checks the token before anything else of
    /// the bind. Errors: Unsupported, before the bind, when the kernel does not know the flag
    /// (see [`UnboundDevice::vf_token_bind_supported`]; the device is closed then too); EACCES
    /// (Kernel) for a wrong token (a plain [`UnboundDevice::bind`] of such a VF is EACCES as
    /// well; the kernel names no PF: [`vfio_core::explain_vf_token_refusal`] does); EINVAL for
    /// a device that is neither a VF of a vfio-pci PF nor a PF, and for a PF that is bound
    /// already (a cdev binds once); otherwise those of [`UnboundDevice::bind`].
    #[doc(alias = "VFIO_DEVICE_BIND_IOMMUFD", alias = "VFIO_DEVICE_BIND_FLAG_TOKEN")]
    pub fn bind_with_vf_token(self, iommufd: &Arc<Iommufd>, token: &vfio_core::Uuid) -> Result<BoundDevice> {
        // A probe that cannot tell (e.g. EBUSY) leaves the answer to the bind itself.
        if !self.vf_token_bind_supported().unwrap_or(true) {
            return Err(Error::unsupported(
                "VFIO_DEVICE_BIND_FLAG_TOKEN (cdev bind with a VF token)",
                self.fd.name(),
                "the kernel does not know the flag (added in Linux 6.17); open the VF in group mode, \
                 which takes the token from Linux 5.7 on",
            ));
        }
        self.bind_inner(iommufd, Some(token.as_bytes()))
    }

    /// Whether the kernel takes `VFIO_DEVICE_BIND_FLAG_TOKEN` (Linux >= 6.17), probed without
    /// binding: `VFIO_DEVICE_BIND_IOMMUFD` with the flag and a null token pointer. A kernel that
    /// knows the flag reads the token first and fails with EFAULT (it blocks the device's group
    /// for the moment of the call, nothing stays); 6.6 to 6.16 refuse any flag with EINVAL. A
    /// VFIO driver without VF tokens (not vfio-pci) answers EINVAL too: it takes no token.
    /// Errors: any other errno (Kernel), e.g. EBUSY while the device's group is open in group
    /// mode.
    #[doc(alias = "VFIO_DEVICE_BIND_IOMMUFD", alias = "VFIO_DEVICE_BIND_FLAG_TOKEN")]
    pub fn vf_token_bind_supported(&self) -> Result<bool> {
        let mut b = sys::vfio_device_bind_iommufd {
            flags: sys::VFIO_DEVICE_BIND_FLAG_TOKEN,
            // Any open fd: the token is read, and fails, before the iommufd is looked at.
            iommufd: self.fd.as_fd().as_raw_fd(),
            token_uuid_ptr: 0,
            ..Default::default()
        };
        // SAFETY: a null token pointer makes the kernel's copy_from_user fail (EFAULT) before it
        // binds anything; the argument holds no other pointer.
        match unsafe { ioctl::call_unchecked::<req::DeviceBindIommufd>(self.ioctl_fd(), &mut b) } {
            Err(Errno::FAULT) => Ok(true),
            Err(Errno::INVAL) => Ok(false),
            Ok(_) => Err(Error::malformed(
                "VFIO_DEVICE_BIND_IOMMUFD (token probe)",
                self.fd.name(),
                "the kernel accepted a null VF token pointer",
            )),
            Err(e) => Err(refused::<req::DeviceBindIommufd>(
                || format!("{} (VF token probe)", self.fd.name()),
                e,
            )),
        }
    }

    fn bind_inner(self, iommufd: &Arc<Iommufd>, token: Option<&[u8; 16]>) -> Result<BoundDevice> {
        let mut b = sys::vfio_device_bind_iommufd {
            iommufd: iommufd.as_fd().as_raw_fd(),
            ..Default::default()
        };
        if let Some(uuid) = token {
            b.flags = sys::VFIO_DEVICE_BIND_FLAG_TOKEN;
            b.token_uuid_ptr = uuid.as_ptr() as u64;
        }
        // SAFETY: token_uuid_ptr is 0 or points at the 16-byte uuid, alive for the call, which
        // the kernel only reads; the argument holds no other pointer.
        unsafe { ioctl::call_unchecked::<req::DeviceBindIommufd>(self.ioctl_fd(), &mut b) }
            .map_err(|e| bind_refused(&self.fd, e))?;
        Ok(BoundDevice {
            fd: self.fd,
            devid: DeviceId::from(b.out_devid),
            noiommu: self.noiommu,
            emulated: self.emulated,
            iommufd: iommufd.clone(),
        })
    }
}

/// What an EPERM from `VFIO_DEVICE_BIND_IOMMUFD` means, to append to the error's target (empty
/// for any other errno): the kernel says which only in dmesg.
fn bind_hint(errno: Errno) -> &'static str {
    if errno != Errno::PERM {
        return "";
    }
    " (EPERM: either its IOMMU group is not viable, a device of the group being on a non-VFIO \
     driver, or the IOMMU cannot isolate its MSIs (no interrupt remapping; dmesg says so), which \
     the kernel allows only with the module parameter iommufd.allow_unsafe_interrupts=1, giving \
     up that isolation)"
}

/// A refused `VFIO_DEVICE_BIND_IOMMUFD`, with its cause where `/sys` and `/proc` show one (else,
/// for EPERM, the [`bind_hint`] in the target).
#[cold]
fn bind_refused(fd: &NamedFd, errno: Errno) -> Error {
    match diagnose::bind_refusal(&Sysfs::default(), fd.as_fd(), errno) {
        Some(cause) => refused::<req::DeviceBindIommufd>(|| fd.name().to_string(), errno).with_cause(cause),
        None => refused::<req::DeviceBindIommufd>(|| format!("{}{}", fd.name(), bind_hint(errno)), errno),
    }
}

/// Why a PCI function has no cdev to open: its driver, when that is not a VFIO one; else no
/// IOMMU group (no IOMMU, no-IOMMU mode off: vfio-pci could not take it), the cause attached to
/// `e`; else no driver at all; else `e` as it is.
#[cold]
fn no_cdev_why(sysfs: &Sysfs, addr: &PciAddress, e: Error) -> Error {
    // A device on another driver is told so first: that is what the user changes next (and a
    // device without a group there, e.g. the virtio-iommu itself, was never meant for VFIO).
    let on_other_driver = matches!(sysfs.driver(addr), Ok(Some(d)) if !d.contains("vfio"));
    match diagnose::groupless(sysfs, addr) {
        Some(cause @ (Finding::NoIommu | Finding::NoIommuGroup { .. })) if !on_other_driver => e.with_cause(cause),
        _ => sysfs.explain_open_failure(addr).unwrap_or(e),
    }
}

/// Opens a cdev node; a refusal carries its cause (the node's permissions, who holds it).
fn open_cdev(sysfs: &Sysfs, node: &CdevNode) -> Result<OwnedFd> {
    vfio_core::open_node(&node.path).map_err(|e| match e.errno() {
        Some(errno) => match diagnose::node_refusal(&proc_dir(sysfs), &node.path, errno) {
            Some(cause) => e.with_cause(cause),
            None => e,
        },
        None => e,
    })
}

/// The major number of VFIO's device cdevs, learned from the first node checked against sysfs.
/// Linux (6.6 and later) gives a device cdev the minor of its index, the `N` of `vfioN` and
/// `noiommu-vfioN` (`vfio_init_device_cdev`); the number is learned only from a node that
/// shows that, so a later node is checked against sysfs's own numbers whenever it does not.
mod node_major {
    use std::sync::atomic::{AtomicU32, Ordering};

    use vfio_core::CdevNode;

    /// 0 until learned (no cdev major is 0).
    static MAJOR: AtomicU32 = AtomicU32::new(0);

    pub(super) fn known() -> Option<u32> {
        Some(MAJOR.load(Ordering::Relaxed)).filter(|&m| m != 0)
    }

    /// The index in a cdev's name.
    pub(super) fn index(name: &str) -> Option<u32> {
        name.strip_prefix("noiommu-")
            .unwrap_or(name)
            .strip_prefix("vfio")?
            .parse()
            .ok()
    }

    /// Records the major of a node sysfs vouched for, when its minor is its name's index.
    pub(super) fn learn(node: &CdevNode) {
        if node.major != 0 && index(&node.name) == Some(node.minor) {
            MAJOR.store(node.major, Ordering::Relaxed);
        }
    }
}

/// The major:minor of the character device `fd` is open on (`fstat`); `None` when it is not
/// a character device.
fn char_device(fd: impl AsFd) -> rustix::io::Result<Option<(u32, u32)>> {
    let st = rustix::fs::fstat(fd)?;
    let is_chr = rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::CharacterDevice;
    Ok(is_chr.then(|| (rustix::fs::major(st.st_rdev), rustix::fs::minor(st.st_rdev))))
}

fn check_node(fd: &NamedFd, node: &CdevNode) -> Result<()> {
    let found = char_device(fd).map_err(|e| Error::kernel("fstat", node.path.display(), e))?;
    if found != Some((node.major, node.minor)) {
        let cause = Finding::CdevMismatch {
            path: node.path.clone(),
            expected: (node.major, node.minor),
            found,
        };
        let what = found.map_or("not a character device".to_string(), |(ma, mi)| format!("{ma}:{mi}"));
        return Err(Error::path(
            "open VFIO cdev",
            &node.path,
            std::io::Error::other(format!("node is {what} but sysfs says {}:{}", node.major, node.minor)),
        )
        .with_cause(cause));
    }
    Ok(())
}

/// A device cdev bound to an iommufd. Dropping it closes the fd, which unbinds the device (and
/// detaches it from its IOAS or HWPT), logging a failed close (warn, target `vfio`);
/// [`BoundDevice::close`] returns it.
#[derive(Debug)]
pub struct BoundDevice {
    fd: NamedFd,
    devid: DeviceId,
    noiommu: bool,
    emulated: bool,
    iommufd: Arc<Iommufd>,
}

impl AsFd for BoundDevice {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl BoundDevice {
    /// The device id the iommufd knows it by.
    pub fn devid(&self) -> DeviceId {
        self.devid
    }

    /// Whether this is a no-IOMMU cdev.
    pub fn is_noiommu(&self) -> bool {
        self.noiommu
    }

    /// Whether the device sits in an emulated-IOMMU group (a mediated device, opened with
    /// [`UnboundDevice::open_ref`]): its bind made an iommufd *access*, not a device object,
    /// so calls that take a device id (`IOMMU_GET_HW_INFO`, PASID attach) do not
    /// apply; it attaches to an IOAS only (the kernel answers ENOENT for a HWPT) and reaches
    /// memory through the access, without an IOMMU.
    pub fn is_emulated(&self) -> bool {
        self.emulated
    }

    /// The device fd, typed for device requests (see [`vfio_core::ioctl`]).
    #[inline]
    pub fn ioctl_fd(&self) -> ioctl::Fd<'_, kind::Device> {
        device_fd(&self.fd)
    }

    /// `VFIO_DEVICE_ATTACH_IOMMUFD_PT`: attaches (or, when attached, replaces) the device's page
    /// table with IOAS or HWPT `pt` (an [`crate::IoasId`] or a [`HwptId`]); returns the HWPT the
    /// kernel attached (for an IOAS, the one it allocated or reused). Errors: ENOENT or EINVAL
    /// for an id that is not an IOAS/HWPT of this iommufd.
    #[doc(alias = "VFIO_DEVICE_ATTACH_IOMMUFD_PT")]
    pub fn attach(&self, pt: impl Into<PtId>) -> Result<HwptId> {
        let pt_id = pt.into().get();
        let mut a = sys::vfio_device_attach_iommufd_pt {
            pt_id,
            ..Default::default()
        };
        ioctl::call::<req::DeviceAttachIommufdPt>(self.ioctl_fd(), &mut a)
            .map_err(|e| refused::<req::DeviceAttachIommufdPt>(|| format!("{} pt {pt_id}", self.name()), e))?;
        Ok(HwptId::from(a.pt_id))
    }

    /// `VFIO_DEVICE_DETACH_IOMMUFD_PT`: leaves the device blocking all DMA.
    #[doc(alias = "VFIO_DEVICE_DETACH_IOMMUFD_PT")]
    pub fn detach(&self) -> Result<()> {
        let mut d = sys::vfio_device_detach_iommufd_pt::default();
        ioctl::call::<req::DeviceDetachIommufdPt>(self.ioctl_fd(), &mut d)
            .map_err(|e| refused::<req::DeviceDetachIommufdPt>(|| self.name().to_string(), e))?;
        Ok(())
    }

    /// The device's name in errors (its PCI address, or what it was adopted as).
    pub fn name(&self) -> &str {
        self.fd.name()
    }

    /// Closes the cdev fd, which unbinds the device from its iommufd (detaching it), returning
    /// the errno of `close(2)` where dropping would only log it. A [`vfio_core::Device`] made
    /// with [`BoundDevice::device`] holds a duplicate fd: the device stays bound until that
    /// closes too. Errors: that errno (Kernel, naming the device).
    pub fn close(self) -> Result<()> {
        self.fd.close()
    }

    /// The iommufd the device is bound to.
    pub fn iommufd(&self) -> &Arc<Iommufd> {
        &self.iommufd
    }

    /// `IOMMU_GET_HW_INFO` for this device: what its IOMMU can do (Linux >= 6.7). A driver
    /// without driver data (virtio-iommu) answers with type NONE and no data, capabilities
    /// still set. Errors: Unsupported for a no-IOMMU device (EOPNOTSUPP) or on kernels without
    /// the ioctl (ENOTTY).
    #[doc(alias = "IOMMU_GET_HW_INFO")]
    pub fn hw_info(&self) -> Result<crate::HwInfo> {
        if self.emulated {
            return Err(Error::unsupported(
                "IOMMU_GET_HW_INFO",
                self.name(),
                "an emulated-IOMMU (mediated) device has no IOMMU: its bind id names an iommufd access",
            ));
        }
        self.iommufd.hw_info(self.devid)
    }

    /// `VFIO_DEVICE_ATTACH_IOMMUFD_PT` with `VFIO_DEVICE_ATTACH_PASID` (Linux >= 6.15): attaches
    /// (or replaces) the page table that DMA tagged with `pasid` goes through; returns the HWPT id
    /// attached. Unsupported, before any attach is tried, when the device's IOMMU reports no
    /// PASID support (`IOMMU_GET_HW_INFO` max_pasid_log2 0), when `pasid` is wider than it
    /// allows, or when the kernel refuses with EOPNOTSUPP; EINVAL from the kernel otherwise
    /// (e.g. the device has PASID disabled).
    #[doc(alias = "VFIO_DEVICE_ATTACH_IOMMUFD_PT", alias = "VFIO_DEVICE_ATTACH_PASID")]
    pub fn attach_pasid(&self, pasid: u32, pt: impl Into<PtId>) -> Result<HwptId> {
        let pt_id = pt.into().get();
        self.check_pasid(pasid)?;
        let mut a = sys::vfio_device_attach_iommufd_pt {
            flags: sys::VFIO_DEVICE_ATTACH_PASID,
            pt_id,
            pasid,
            ..Default::default()
        };
        let target = || format!("{} pasid {pasid} pt {pt_id}", self.name());
        match ioctl::call::<req::DeviceAttachIommufdPt>(self.ioctl_fd(), &mut a) {
            Ok(_) => Ok(HwptId::from(a.pt_id)),
            Err(e @ Errno::OPNOTSUPP) => Err(Error::unsupported("PASID attach", target(), e)),
            Err(e) => Err(refused::<req::DeviceAttachIommufdPt>(target, e)),
        }
    }

    /// `VFIO_DEVICE_DETACH_IOMMUFD_PT` with `VFIO_DEVICE_DETACH_PASID`: DMA tagged with `pasid`
    /// is blocked again. Errors: as [`BoundDevice::attach_pasid`].
    #[doc(alias = "VFIO_DEVICE_DETACH_IOMMUFD_PT", alias = "VFIO_DEVICE_DETACH_PASID")]
    pub fn detach_pasid(&self, pasid: u32) -> Result<()> {
        self.check_pasid(pasid)?;
        let mut d = sys::vfio_device_detach_iommufd_pt {
            flags: sys::VFIO_DEVICE_DETACH_PASID,
            pasid,
            ..Default::default()
        };
        let target = || format!("{} pasid {pasid}", self.name());
        match ioctl::call::<req::DeviceDetachIommufdPt>(self.ioctl_fd(), &mut d) {
            Ok(_) => Ok(()),
            Err(e @ Errno::OPNOTSUPP) => Err(Error::unsupported("PASID detach", target(), e)),
            Err(e) => Err(refused::<req::DeviceDetachIommufdPt>(target, e)),
        }
    }

    fn check_pasid(&self, pasid: u32) -> Result<()> {
        let target = || format!("{} pasid {pasid}", self.name());
        if self.noiommu {
            return Err(Error::unsupported("PASID", target(), "no-IOMMU device"));
        }
        let bits = self.hw_info()?.max_pasid_log2;
        if bits == 0 {
            return Err(Error::unsupported(
                "PASID",
                target(),
                "the device's IOMMU reports no PASID support",
            ));
        }
        if bits < 32 && pasid >> bits != 0 {
            return Err(Error::unsupported(
                "PASID",
                target(),
                format!("PASIDs are {bits} bits wide here"),
            ));
        }
        Ok(())
    }

    /// The general device interface on a duplicate (close-on-exec) of the fd, keeping `owner`
    /// alive until it closes, while this `BoundDevice` stays usable to re-attach (move the
    /// device to another IOAS or HWPT) or detach. Errors: the `fcntl(F_DUPFD_CLOEXEC)` errno.
    pub fn device(&self, owner: Option<vfio_core::Owner>) -> Result<vfio_core::Device> {
        let fd = rustix::io::fcntl_dupfd_cloexec(&self.fd, 0)
            .map_err(|e| Error::kernel("fcntl(F_DUPFD_CLOEXEC)", self.name(), e))?;
        Ok(vfio_core::Device::from_fd(fd, self.name(), owner))
    }

    /// The general device interface, keeping `owner` (the IOAS) alive until the fd closes.
    pub fn into_device(self, owner: Option<vfio_core::Owner>) -> vfio_core::Device {
        let (fd, name) = self.fd.into_parts();
        vfio_core::Device::from_fd(fd, name, owner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// The index is the number after `vfio`, with or without the no-IOMMU prefix; a major is
    /// learned only from a node whose minor is that index.
    #[test]
    fn cdev_index_and_learned_major() {
        assert_eq!(node_major::index("vfio0"), Some(0));
        assert_eq!(node_major::index("noiommu-vfio12"), Some(12));
        assert_eq!(node_major::index("vfio"), None);
        assert_eq!(node_major::index("mdev0"), None);
        let node = |name: &str, minor| CdevNode {
            name: name.into(),
            path: "/dev/vfio/devices/x".into(),
            major: 511,
            minor,
        };
        node_major::learn(&node("vfio3", 4));
        assert_eq!(node_major::known(), None);
        node_major::learn(&node("vfio3", 3));
        assert_eq!(node_major::known(), Some(511));
    }

    /// A fake sysfs and /dev where the device's cdev node is `node` and sysfs says `dev`.
    fn tree(name: &str, dev: &str, node: impl FnOnce(&std::path::Path)) -> (std::path::PathBuf, Sysfs) {
        let root = std::env::temp_dir().join(format!("vfio-cdev-node-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let vfio_dev = root.join("sys/bus/pci/devices/0000:00:03.0/vfio-dev/vfio0");
        fs::create_dir_all(&vfio_dev).unwrap();
        fs::write(vfio_dev.join("dev"), format!("{dev}\n")).unwrap();
        fs::create_dir_all(root.join("dev/vfio/devices")).unwrap();
        node(&root.join("dev/vfio/devices/vfio0"));
        let sysfs = Sysfs::at(root.join("sys"), root.join("dev"));
        (root, sysfs)
    }

    #[test]
    #[cfg_attr(miri, ignore = "opens and fstats files, which Miri isolates")]
    fn a_node_that_sysfs_does_not_vouch_for_is_refused() {
        let addr: PciAddress = "00:03.0".parse().unwrap();
        // A regular file where the character device should be.
        let (root, sysfs) = tree("file", "511:0", |p| fs::write(p, "").unwrap());
        let e = UnboundDevice::open(&sysfs, &addr).unwrap_err();
        assert!(matches!(e, Error::Path { .. }) && e.errno().is_none(), "{e:?}");
        assert!(
            matches!(
                e.cause(),
                Some(Finding::CdevMismatch {
                    found: None,
                    expected: (511, 0),
                    ..
                })
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("not a character device"), "{e}");
        assert!(e.to_string().contains("vfio/devices/vfio0"), "{e}");
        fs::remove_dir_all(root).unwrap();
        // A character device with other numbers (/dev/null is 1:3).
        let null = |p: &std::path::Path| std::os::unix::fs::symlink("/dev/null", p).unwrap();
        let (root, sysfs) = tree("other", "511:0", null);
        let e = UnboundDevice::open(&sysfs, &addr).unwrap_err();
        assert!(
            e.to_string().contains("node is 1:3") && e.to_string().contains("511:0"),
            "{e}"
        );
        assert!(
            matches!(
                e.cause(),
                Some(Finding::CdevMismatch {
                    found: Some((1, 3)),
                    ..
                })
            ),
            "{e:?}"
        );
        fs::remove_dir_all(root).unwrap();
        // Numbers that match are accepted.
        let (root, sysfs) = tree("match", "1:3", null);
        let dev = UnboundDevice::open(&sysfs, &addr).unwrap();
        assert!(!dev.is_noiommu());
        fs::remove_dir_all(root).unwrap();
    }
}
