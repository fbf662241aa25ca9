//! [`SriovVfs`]: the SR-IOV VFs of a PF owned through vfio-pci, enabled with a VF token and
//! disabled again when the last user is gone.
//!
//! The kernel's rules (Linux 5.7, vfio-pci with its module parameter `enable_sriov=1`): writing
//! the PF's `sriov_numvfs` makes vfio-pci enable that many VFs, each bound to vfio-pci at once;
//! a VF opens only for whoever presents the PF's VF token (`VFIO_DEVICE_FEATURE_PCI_VF_TOKEN`,
//! set through the open PF), and while any VF is open the PF itself opens again only with the
//! token. Two orderings break things, and the ownership chain here rules both out: a VF `Device`
//! opened through [`SriovVfs::open_vf`] holds the `SriovVfs`, which holds the PF `Device`. So
//! - VFs are disabled (numvfs 0) only after every VF fd is closed: disabling them earlier blocks
//!   the writer until the VF fds close, which in a single-threaded program is forever;
//! - the PF closes only after its VFs are gone: vfio-pci resets the PF when its last fd closes,
//!   and a PF reset takes the VFs away under Linux on some devices (QEMU 7.2's nvme drops them
//!   while Linux still lists them).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::{AssignOptions, Container, Device, Errno, Error, PciAddress, Result, Sysfs, Uuid};

/// The VFs of an SR-IOV PF owned through vfio-pci, enabled by [`SriovVfs::enable`]. Holds the
/// PF's [`Device`] (so the PF is not closed, and so not reset, while the VFs exist); when the
/// last `Arc` goes it writes 0 to the PF's `sriov_numvfs` (unless [`SriovVfs::keep`] was
/// called; a failure is logged at warn level, target `vfio`), then releases the PF. Every VF
/// opened with [`SriovVfs::open_vf`] holds an `Arc`, so this happens only after the VF fds
/// are closed. A VF opened another way (e.g. [`Container::assign_device_with`] without
/// [`AssignOptions::hold`]) must be closed before the last `Arc` goes: the kernel blocks the
/// write of 0 until every VF fd is closed.
#[derive(Debug)]
pub struct SriovVfs {
    sysfs: Sysfs,
    pf_addr: PciAddress,
    vfs: Vec<PciAddress>,
    token: Uuid,
    keep: AtomicBool,
    // Dropped after `Drop::drop` disabled the VFs.
    pf: Device,
}

impl SriovVfs {
    /// Enables `count` VFs of the PF at `pf_addr`, opened as `pf`: checks its
    /// `sriov_totalvfs` and that no VF is enabled, sets the VF token `token` on the PF
    /// (`VFIO_DEVICE_FEATURE_PCI_VF_TOKEN`), writes `count` to `sriov_numvfs`, and checks that
    /// every VF appeared and is bound to vfio-pci (which vfio-pci arranges itself). Anything
    /// that fails after the write disables the VFs again. Needs root, and vfio-pci loaded with
    /// `enable_sriov=1` (Linux 5.7).
    ///
    /// Errors, each naming the PF: InvalidArgument when it is not an SR-IOV PF (no
    /// `sriov_totalvfs`), for a `count` of 0 or above `sriov_totalvfs`, and when VFs are
    /// enabled already; Unsupported, naming `vfio_pci.enable_sriov=1`, when vfio-pci refuses to
    /// configure SR-IOV (ENOENT from the write); ENOTTY (Kernel) from setting the token when
    /// `pf` is not that PF's vfio-pci device; InvalidArgument when a VF is on another driver;
    /// Path errors of the sysfs files otherwise (EACCES without root).
    pub fn enable(sysfs: &Sysfs, pf: &Device, pf_addr: &PciAddress, count: u16, token: &Uuid) -> Result<Arc<Self>> {
        const OP: &str = "enable SR-IOV VFs";
        let total = sysfs
            .sriov_totalvfs(pf_addr)?
            .ok_or_else(|| Error::invalid(OP, pf_addr, "not an SR-IOV PF (no sriov_totalvfs in sysfs)"))?;
        if count == 0 || count > total {
            return Err(Error::invalid(
                OP,
                pf_addr,
                format!("numvfs {count} is not within 1..=sriov_totalvfs {total}"),
            ));
        }
        let now = sysfs.sriov_numvfs(pf_addr)?.unwrap_or(0);
        if now != 0 {
            return Err(Error::invalid(
                OP,
                pf_addr,
                format!("{now} VFs are enabled already (someone else owns them; sriov_numvfs must be 0 first)"),
            ));
        }
        pf.set_vf_token(token)?;
        sysfs
            .set_sriov_numvfs(pf_addr, count)
            .inspect_err(|_| {
                // A refused write should leave no VF behind (the PCI core disables what the driver
                // enabled); make sure of it.
                if sysfs.sriov_numvfs(pf_addr).is_ok_and(|n| n.is_some_and(|n| n != 0)) {
                    if let Err(u) = sysfs.set_sriov_numvfs(pf_addr, 0) {
                        log::warn!(target: "vfio", "{pf_addr}: disabling the VFs of a failed enable failed too: {u}");
                    }
                }
            })
            .map_err(|e| match e.errno() {
                Some(Errno::NOENT) => Error::unsupported(
                    "SR-IOV through vfio-pci",
                    pf_addr,
                    "vfio-pci refuses to enable VFs (ENOENT from sriov_numvfs) unless its module parameter \
                 enable_sriov is set: boot with vfio_pci.enable_sriov=1, or write 1 to \
                 /sys/module/vfio_pci/parameters/enable_sriov",
                ),
                _ => e,
            })?;
        let mut vfs = Self {
            sysfs: sysfs.clone(),
            pf_addr: *pf_addr,
            vfs: Vec::new(),
            token: *token,
            keep: AtomicBool::new(false),
            pf: pf.clone(),
        };
        // From here on, dropping `vfs` disables the VFs again.
        vfs.vfs = vfs.check_vfs(count)?;
        Ok(Arc::new(vfs))
    }

    fn check_vfs(&self, count: u16) -> Result<Vec<PciAddress>> {
        const OP: &str = "enable SR-IOV VFs";
        let vfs = self.sysfs.virtfns(&self.pf_addr)?;
        if vfs.len() != usize::from(count) {
            return Err(Error::invalid(
                OP,
                self.pf_addr,
                format!("wrote sriov_numvfs {count} but sysfs lists {} VFs", vfs.len()),
            ));
        }
        // vfio-pci gives its VFs driver_override=vfio-pci and they probe as they are added;
        // allow a moment in case the probe runs late.
        let deadline = Instant::now() + Duration::from_secs(2);
        for vf in &vfs {
            loop {
                match self.sysfs.driver(vf)?.as_deref() {
                    Some("vfio-pci") => break,
                    other if Instant::now() >= deadline => {
                        return Err(Error::invalid(
                            OP,
                            self.pf_addr,
                            format!("its VF {vf} is bound to {other:?}, not vfio-pci"),
                        ));
                    }
                    _ => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        }
        Ok(vfs)
    }

    /// The PF's address.
    pub fn pf_address(&self) -> PciAddress {
        self.pf_addr
    }

    /// The PF's device. Do not reset it (`VFIO_DEVICE_RESET`) while the VFs exist: a PF reset
    /// may take them away.
    pub fn pf(&self) -> &Device {
        &self.pf
    }

    /// The VFs' addresses, in VF order (`virtfn0` first).
    pub fn vfs(&self) -> &[PciAddress] {
        &self.vfs
    }

    /// The VF token set on the PF.
    pub fn token(&self) -> &Uuid {
        &self.token
    }

    /// Leaves the VFs enabled when the last user goes (the PF still closes).
    pub fn keep(&self) {
        self.keep.store(true, Ordering::Relaxed);
    }

    /// Opens VF `index` (in [`SriovVfs::vfs`] order) in `container`, presenting the token
    /// ([`Container::assign_device_with`]); the device holds this `SriovVfs` until its fd
    /// closes. Errors: InvalidArgument for an index past the VFs; those of
    /// `assign_device_with` (Unsupported in cdev mode before Linux 6.17).
    pub fn open_vf(self: &Arc<Self>, container: &dyn Container, index: usize) -> Result<Device> {
        let vf = self.vfs.get(index).ok_or_else(|| {
            Error::invalid(
                "open SR-IOV VF",
                self.pf_addr,
                format!("VF index {index}, but the PF has {} VFs enabled", self.vfs.len()),
            )
        })?;
        let opts = AssignOptions::new().vf_token(self.token).hold(self.clone());
        container.assign_device_with(vf, &opts)
    }
}

impl Drop for SriovVfs {
    fn drop(&mut self) {
        if self.keep.load(Ordering::Relaxed) {
            return;
        }
        if let Err(e) = self.sysfs.set_sriov_numvfs(&self.pf_addr, 0) {
            log::warn!(target: "vfio", "SR-IOV VFs of {} not disabled: {e}", self.pf_addr);
        }
    }
}

/// For a container implementation: a clearer error for an open of `addr` that the kernel
/// refused, when SR-IOV's VF token is the cause (the kernel says which only in dmesg). An
/// EACCES names the function's PF and says that the token is missing or wrong (for a VF), or
/// that VFs of the PF are open and their token must be presented (for a PF); an EINVAL when
/// `token_given` says the function is neither a VF nor a PF. Any other error is returned as
/// it is.
pub fn explain_vf_token_refusal(sysfs: &Sysfs, addr: &PciAddress, token_given: bool, err: Error) -> Error {
    let Error::Kernel {
        op,
        target,
        errno,
        cause,
    } = err
    else {
        return err;
    };
    let hint = match errno {
        Errno::ACCESS => match sysfs.physfn(addr) {
            Ok(Some(pf)) => {
                let driver = sysfs.driver(&pf).ok().flatten().unwrap_or_else(|| "no driver".into());
                format!(
                    " (EACCES: {addr} is an SR-IOV VF of {pf} (on {driver}): the VF token is {}; \
                     present the one set on the PF)",
                    if token_given { "wrong" } else { "missing" }
                )
            }
            _ if sysfs.sriov_numvfs(addr).ok().flatten().is_some_and(|n| n > 0) => format!(
                " (EACCES: {addr} is an SR-IOV PF with VFs open: present the VF token set on it{})",
                if token_given { "; the one given is wrong" } else { "" }
            ),
            _ => String::new(),
        },
        Errno::INVAL if token_given => match (sysfs.physfn(addr), sysfs.sriov_totalvfs(addr)) {
            (Ok(None), Ok(None)) => {
                format!(" (EINVAL: a VF token was given, but {addr} is neither an SR-IOV VF nor a PF)")
            }
            (Ok(Some(pf)), _) => {
                format!(" (EINVAL: a VF token was given for {addr}, a VF of {pf}, whose PF is not on vfio-pci)")
            }
            (Ok(None), Ok(Some(_))) => format!(
                " (EINVAL: {addr} is an SR-IOV PF, which takes a VF token: the kernel refused something \
                 else, e.g. the device is open through its cdev already, and a cdev binds once)"
            ),
            _ => String::new(),
        },
        _ => String::new(),
    };
    Error::Kernel {
        op,
        target: format!("{target}{hint}"),
        errno,
        cause,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// A fake sysfs: PF 00:0c.0 on vfio-pci with VF 00:0c.1 enabled, and edu 00:03.0.
    fn tree(name: &str) -> (std::path::PathBuf, Sysfs) {
        let root = std::env::temp_dir().join(format!("vfio-core-sriov-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let devs = root.join("sys/bus/pci/devices");
        let real = root.join("sys/devices/pci0000:00");
        let drv = root.join("sys/bus/pci/drivers/vfio-pci");
        fs::create_dir_all(&devs).unwrap();
        fs::create_dir_all(&drv).unwrap();
        for a in ["0000:00:0c.0", "0000:00:0c.1", "0000:00:03.0"] {
            fs::create_dir_all(real.join(a)).unwrap();
            std::os::unix::fs::symlink(real.join(a), devs.join(a)).unwrap();
            std::os::unix::fs::symlink(&drv, real.join(a).join("driver")).unwrap();
        }
        fs::write(real.join("0000:00:0c.0/sriov_totalvfs"), "2\n").unwrap();
        fs::write(real.join("0000:00:0c.0/sriov_numvfs"), "1\n").unwrap();
        std::os::unix::fs::symlink("../0000:00:0c.1", real.join("0000:00:0c.0/virtfn0")).unwrap();
        std::os::unix::fs::symlink("../0000:00:0c.0", real.join("0000:00:0c.1/physfn")).unwrap();
        let sysfs = Sysfs::at(root.join("sys"), root.join("dev"));
        (root, sysfs)
    }

    #[test]
    #[cfg_attr(miri, ignore = "builds a directory tree with symlinks, which Miri isolates")]
    fn token_refusals_name_the_pf() {
        let (root, sysfs) = tree("refusal");
        let a = |t: &str| t.parse::<PciAddress>().unwrap();
        let eacces = || Error::kernel("VFIO_GROUP_GET_DEVICE_FD", "dev", Errno::ACCESS);
        let e = explain_vf_token_refusal(&sysfs, &a("00:0c.1"), false, eacces()).to_string();
        assert!(
            e.contains("0000:00:0c.1 is an SR-IOV VF of 0000:00:0c.0 (on vfio-pci)") && e.contains("missing"),
            "{e}"
        );
        let e = explain_vf_token_refusal(&sysfs, &a("00:0c.1"), true, eacces()).to_string();
        assert!(e.contains("token is wrong"), "{e}");
        let e = explain_vf_token_refusal(&sysfs, &a("00:0c.0"), false, eacces()).to_string();
        assert!(e.contains("SR-IOV PF with VFs open"), "{e}");
        let einval = || Error::kernel("VFIO_GROUP_GET_DEVICE_FD", "dev", Errno::INVAL);
        let e = explain_vf_token_refusal(&sysfs, &a("00:03.0"), true, einval()).to_string();
        assert!(e.contains("neither an SR-IOV VF nor a PF"), "{e}");
        // Without a token, EINVAL has nothing to do with one; other errors stay as they were.
        let e = explain_vf_token_refusal(&sysfs, &a("00:03.0"), false, einval()).to_string();
        assert!(!e.contains("token"), "{e}");
        let other = Error::invalid("open", "x", "y");
        let e = explain_vf_token_refusal(&sysfs, &a("00:0c.1"), true, other);
        assert!(matches!(e, Error::InvalidArgument { .. }), "{e:?}");
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    #[cfg_attr(miri, ignore = "builds a directory tree with symlinks, which Miri isolates")]
    fn enable_checks_before_touching_anything() {
        let (root, sysfs) = tree("enable");
        let a = |t: &str| t.parse::<PciAddress>().unwrap();
        let fd = rustix::fs::memfd_create("pf", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        let pf = Device::from_fd(fd, "0000:00:0c.0", None);
        let token = Uuid::from_bytes([7; 16]);
        let e = SriovVfs::enable(&sysfs, &pf, &a("00:0c.0"), 3, &token).unwrap_err();
        assert!(
            e.to_string().contains("numvfs 3 is not within 1..=sriov_totalvfs 2"),
            "{e}"
        );
        let e = SriovVfs::enable(&sysfs, &pf, &a("00:0c.0"), 1, &token).unwrap_err();
        assert!(e.to_string().contains("1 VFs are enabled already"), "{e}");
        let e = SriovVfs::enable(&sysfs, &pf, &a("00:03.0"), 1, &token).unwrap_err();
        assert!(e.to_string().contains("not an SR-IOV PF"), "{e}");
        fs::remove_dir_all(root).unwrap();
    }
}
