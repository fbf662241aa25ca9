//! What sysfs says about a PCI device: its IOMMU group, its VFIO cdev, its driver.
//!
//! Every lookup is rooted at a [`Sysfs`] so that unit tests can point it at a fake tree.

use std::fs;
use std::path::{Path, PathBuf};

use crate::{Error, PciAddress, Result};

/// A sysfs mount (normally `/sys`) and the `/dev` directory that goes with it.
#[derive(Debug, Clone)]
pub struct Sysfs {
    root: PathBuf,
    dev: PathBuf,
}

impl Default for Sysfs {
    fn default() -> Self {
        Sysfs {
            root: PathBuf::from("/sys"),
            dev: PathBuf::from("/dev"),
        }
    }
}

/// The VFIO character device of a PCI function (`/dev/vfio/devices/vfioN`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CdevNode {
    /// The node's name under `/dev/vfio/devices`, e.g. `vfio0` or `noiommu-vfio0`.
    pub name: String,
    /// Its full path.
    pub path: PathBuf,
    /// Major number sysfs gives for it.
    pub major: u32,
    /// Minor number sysfs gives for it.
    pub minor: u32,
}

impl Sysfs {
    /// A sysfs tree at `root` with device nodes under `dev` (for tests: a fake tree).
    pub fn at(root: impl Into<PathBuf>, dev: impl Into<PathBuf>) -> Self {
        Sysfs {
            root: root.into(),
            dev: dev.into(),
        }
    }

    /// `/sys/bus/pci/devices/<addr>`.
    pub fn pci_device_dir(&self, addr: &PciAddress) -> PathBuf {
        self.root.join("bus/pci/devices").join(addr.to_string())
    }

    /// The sysfs root (`/sys` unless built with [`Sysfs::at`]).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The `/dev` directory that goes with this sysfs.
    pub fn dev_dir(&self) -> &Path {
        &self.dev
    }

    /// Checks that the PCI function exists (a stat of its sysfs directory); returns that
    /// directory. Errors: Path (ENOENT) naming the directory when it does not.
    pub fn require_device(&self, addr: &PciAddress) -> Result<PathBuf> {
        let dir = self.pci_device_dir(addr);
        match fs::metadata(&dir) {
            Ok(_) => Ok(dir),
            Err(e) => Err(Error::path("find PCI device", dir, e)),
        }
    }

    /// The IOMMU group number of a device (the target of its `iommu_group` link). One readlink
    /// when all is well; only when it fails is the device directory looked at, so that the
    /// error says whether the device or its group is missing. Errors: Path (ENOENT) naming
    /// the device directory or the missing link (no IOMMU, or no-IOMMU mode off); Malformed
    /// for a link that does not end in a number.
    pub fn iommu_group(&self, addr: &PciAddress) -> Result<u32> {
        let link = self.pci_device_dir(addr).join("iommu_group");
        let target = match fs::read_link(&link) {
            Ok(t) => t,
            Err(e) => {
                self.require_device(addr)?;
                return Err(Error::path("read IOMMU group link", &link, e));
            }
        };
        let name = target.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        name.parse().map_err(|_| {
            Error::malformed(
                "read IOMMU group link",
                link.display(),
                format!("{name:?} is not a group number"),
            )
        })
    }

    /// The driver the device is bound to now, or `None`. One readlink when the device has a
    /// driver (the device directory is checked only when it has none). Errors: Path naming
    /// the device directory (ENOENT) or the link.
    pub fn driver(&self, addr: &PciAddress) -> Result<Option<String>> {
        let link = self.pci_device_dir(addr).join("driver");
        match fs::read_link(&link) {
            Ok(t) => Ok(t.file_name().map(|n| n.to_string_lossy().into_owned())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.require_device(addr)?;
                Ok(None)
            }
            Err(e) => Err(Error::path("read driver link", link, e)),
        }
    }

    /// For an open that already failed: a clearer error when the cause is the device's driver
    /// (missing, or not a VFIO one), else `None` and the original error stands. Drivers whose
    /// name contains `vfio` (vfio-pci and the variant drivers such as mlx5_vfio_pci) pass: the
    /// open path does not check the driver up front, so variant drivers work.
    pub fn explain_open_failure(&self, addr: &PciAddress) -> Option<Error> {
        match self.driver(addr) {
            Err(e) => Some(e),
            Ok(Some(d)) if d.contains("vfio") => None,
            Ok(_) => self.require_vfio_pci(addr).err(),
        }
    }

    /// Fails with a message naming the driver unless the device is bound to `vfio-pci`.
    /// Errors: InvalidArgument naming the driver (or saying there is none); those of
    /// [`Sysfs::driver`].
    pub fn require_vfio_pci(&self, addr: &PciAddress) -> Result<()> {
        match self.driver(addr)?.as_deref() {
            Some("vfio-pci") => Ok(()),
            Some(other) => Err(Error::invalid(
                "open VFIO device",
                addr,
                format!("bound to driver {other:?}, not vfio-pci"),
            )),
            None => Err(Error::invalid(
                "open VFIO device",
                addr,
                "not bound to any driver (bind it to vfio-pci)",
            )),
        }
    }

    /// The device's VFIO cdev from `<device>/vfio-dev/<name>/dev` (`major:minor`).
    ///
    /// Errors: Unsupported when the device is bound to vfio-pci but has no cdev, which means
    /// the kernel lacks `CONFIG_VFIO_DEVICE_CDEV` (Linux >= 6.6): before 6.1 there is no
    /// `vfio-dev` directory, from 6.1 its entry has no `dev` attribute. Otherwise a Path error
    /// (most likely the device is not bound to vfio-pci). The device directory is checked only
    /// when `vfio-dev` cannot be listed.
    pub fn vfio_cdev(&self, addr: &PciAddress) -> Result<CdevNode> {
        let dir = self.pci_device_dir(addr).join("vfio-dev");
        let no_cdev = |what: String| {
            Error::unsupported(
                "cdev mode (VFIO device cdev)",
                "this kernel",
                format!(
                    "{addr} is bound to vfio-pci but {what}: the kernel has no VFIO device cdev \
                     (CONFIG_VFIO_DEVICE_CDEV, Linux >= 6.6); use group mode"
                ),
            )
        };
        let on_vfio_pci = || self.driver(addr).ok().flatten().as_deref() == Some("vfio-pci");
        // The directory stays open so that its entry's `dev` is opened relative to it: one
        // short lookup instead of a second walk of the whole sysfs path (and its symlink).
        use rustix::fs::{Dir, Mode, OFlags};
        let opened = rustix::fs::open(
            &dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        );
        log::debug!(target: "vfio", "open({}, O_DIRECTORY) = {opened:?}", dir.display());
        let dirfd = match opened {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) if on_vfio_pci() => {
                return Err(no_cdev(format!("{} does not exist", dir.display())));
            }
            Err(e) => {
                self.require_device(addr)?;
                return Err(Error::path(
                    "list vfio-dev (kernel without VFIO_DEVICE_CDEV, or device not bound to vfio-pci?)",
                    &dir,
                    e.into(),
                ));
            }
        };
        let mut entries = Dir::new(dirfd).map_err(|e| Error::path("list", &dir, e.into()))?;
        let name = loop {
            match entries.read() {
                None => {
                    return Err(Error::unsupported(
                        "VFIO device cdev",
                        addr,
                        format!("{} is empty", dir.display()),
                    ));
                }
                Some(Err(e)) => return Err(Error::path("list", &dir, e.into())),
                Some(Ok(entry)) => match entry.file_name().to_bytes() {
                    b"." | b".." => continue,
                    name => break String::from_utf8_lossy(name).into_owned(),
                },
            }
        };
        let devfile = dir.join(&name).join("dev");
        let dirfd = entries.fd().map_err(|e| Error::path("list", &dir, e.into()))?;
        let opened = rustix::fs::openat(
            dirfd,
            format!("{name}/dev"),
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        );
        let mut buf = [0u8; 32];
        let read = opened.and_then(|fd| rustix::io::read(&fd, &mut buf));
        log::debug!(target: "vfio", "read({}) = {read:?}", devfile.display());
        let n = match read {
            Ok(n) => n,
            // Linux 6.1 to 6.5 list the VFIO device here without a character device.
            Err(rustix::io::Errno::NOENT) => {
                return Err(no_cdev(format!("{} does not exist", devfile.display())));
            }
            Err(e) => return Err(Error::path("read", &devfile, e.into())),
        };
        let text = String::from_utf8_lossy(&buf[..n]);
        let (major, minor) = parse_major_minor(text.trim())
            .ok_or_else(|| Error::malformed("read", devfile.display(), format!("{text:?} is not major:minor")))?;
        let path = self.dev.join("vfio/devices").join(&name);
        Ok(CdevNode {
            name,
            path,
            major,
            minor,
        })
    }

    /// The name of the PCI function's cdev (`vfioN` or `noiommu-vfioN`, the first entry of its
    /// `vfio-dev/` directory) and its path under `/dev/vfio/devices`, without reading its
    /// major:minor; `None` when it cannot be listed. [`Sysfs::vfio_cdev`] is the checked lookup
    /// that says why not.
    pub fn vfio_cdev_name(&self, addr: &PciAddress) -> Option<(String, PathBuf)> {
        use rustix::fs::{Dir, Mode, OFlags};
        let dir = self.pci_device_dir(addr).join("vfio-dev");
        let fd = rustix::fs::open(
            &dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ok()?;
        let mut entries = Dir::new(fd).ok()?;
        let name = loop {
            match entries.read()?.ok()?.file_name().to_bytes() {
                b"." | b".." => continue,
                name => break String::from_utf8_lossy(name).into_owned(),
            }
        };
        let path = self.dev.join("vfio/devices").join(&name);
        Some((name, path))
    }

    /// Whether a module parameter file reads `Y` (e.g. `vfio`, `enable_unsafe_noiommu_mode`).
    pub fn module_param_enabled(&self, module: &str, param: &str) -> bool {
        let p = self.root.join("module").join(module).join("parameters").join(param);
        fs::read_to_string(p)
            .map(|s| s.trim() == "Y" || s.trim() == "1")
            .unwrap_or(false)
    }
}

/// Who a PCI function is, from its sysfs attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PciIdentity {
    /// Vendor id.
    pub vendor: u16,
    /// Device id.
    pub device: u16,
    /// Class code (base class, subclass, programming interface).
    pub class: u32,
}

impl Sysfs {
    fn read_hex(&self, path: &Path) -> Result<u32> {
        let text = fs::read_to_string(path).map_err(|e| Error::path("read", path, e))?;
        let t = text.trim();
        u32::from_str_radix(t.trim_start_matches("0x"), 16)
            .map_err(|_| Error::malformed("read", path.display(), format!("{t:?} is not a hex number")))
    }

    /// Vendor, device and class of the function, from its sysfs `vendor`, `device` and `class`
    /// files. Errors: Path (ENOENT) when the function does not exist; Malformed for a file
    /// that is not a hex number.
    pub fn identity(&self, addr: &PciAddress) -> Result<PciIdentity> {
        let dir = self.require_device(addr)?;
        Ok(PciIdentity {
            vendor: self.read_hex(&dir.join("vendor"))? as u16,
            device: self.read_hex(&dir.join("device"))? as u16,
            class: self.read_hex(&dir.join("class"))?,
        })
    }

    /// Every PCI function the kernel knows (`/sys/bus/pci/devices`), sorted. Errors: Path when
    /// the directory cannot be read (no sysfs, or no PCI in the kernel).
    pub fn pci_devices(&self) -> Result<Vec<PciAddress>> {
        let dir = self.root.join("bus/pci/devices");
        let mut out: Vec<PciAddress> = fs::read_dir(&dir)
            .map_err(|e| Error::path("list PCI devices", &dir, e))?
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect();
        out.sort();
        Ok(out)
    }

    /// The PCI functions in IOMMU group `group` (`/sys/kernel/iommu_groups/<group>/devices`),
    /// sorted. Non-PCI members are left out. Errors: Path (ENOENT) for a group that does not
    /// exist.
    pub fn group_devices(&self, group: u32) -> Result<Vec<PciAddress>> {
        let dir = self
            .root
            .join("kernel/iommu_groups")
            .join(group.to_string())
            .join("devices");
        let mut out: Vec<PciAddress> = fs::read_dir(&dir)
            .map_err(|e| Error::path("list IOMMU group", &dir, e))?
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect();
        out.sort();
        Ok(out)
    }

    fn write_attr(&self, path: &Path, value: &str) -> Result<()> {
        let res = fs::write(path, value);
        log::debug!(target: "vfio", "write {value:?} to {} = {res:?}", path.display());
        res.map_err(|e| Error::path("write", path, e))
    }

    /// Binds the function to vfio-pci through `driver_override`: unbinds it from its current
    /// driver and asks the PCI core to probe it again. Returns the driver it had, to give it
    /// back later with [`Sysfs::restore_driver`]. Needs root; errors name the sysfs file and
    /// errno, or (InvalidArgument) the driver the function has after the probe when vfio-pci
    /// would not take it (vfio-pci refuses bridges and other functions without a normal
    /// header). A failed bind is undone: `driver_override` gets its old value back and the
    /// function its old driver (an undo that fails too is logged, warn, target `vfio`).
    pub fn bind_vfio_pci(&self, addr: &PciAddress) -> Result<Option<String>> {
        let previous = self.driver(addr)?;
        if previous.as_deref() == Some("vfio-pci") {
            return Ok(previous);
        }
        let old_override = self.driver_override(addr)?;
        let dir = self.pci_device_dir(addr);
        self.write_attr(&dir.join("driver_override"), "vfio-pci")?;
        let bind = || -> Result<()> {
            if previous.is_some() {
                self.write_attr(&dir.join("driver/unbind"), &addr.to_string())?;
            }
            self.write_attr(&self.root.join("bus/pci/drivers_probe"), &addr.to_string())?;
            match self.driver(addr)?.as_deref() {
                Some("vfio-pci") => Ok(()),
                other => Err(self.bind_refused(addr, other)),
            }
        };
        match bind() {
            Ok(()) => Ok(previous),
            Err(e) => Err(self.undo_bind(addr, old_override.as_deref(), previous.as_deref(), e)),
        }
    }

    /// Why vfio-pci did not take the function (it has driver `driver` after the probe): with no
    /// IOMMU group and no-IOMMU mode off, vfio-pci's probe fails (EINVAL; the write to
    /// `drivers_probe` succeeds all the same): a Path error (ENOENT) naming the missing
    /// `iommu_group` link, with the cause ([`crate::host::doctor::diagnose::groupless`]).
    /// Otherwise InvalidArgument naming the driver.
    #[cold]
    #[inline(never)]
    fn bind_refused(&self, addr: &PciAddress, driver: Option<&str>) -> Error {
        use crate::host::doctor::{Finding, diagnose};
        match diagnose::groupless(self, addr) {
            Some(cause @ (Finding::NoIommu | Finding::NoIommuGroup { .. })) => Error::path(
                "bind to vfio-pci (its probe fails without an IOMMU group)",
                self.pci_device_dir(addr).join("iommu_group"),
                crate::Errno::NOENT.into(),
            )
            .with_cause(cause),
            _ => Error::invalid(
                "bind to vfio-pci",
                addr,
                format!("after probing, the driver is {driver:?} (vfio-pci did not take the function)"),
            ),
        }
    }

    /// Undoes a failed [`Sysfs::bind_vfio_pci`]: unbinds whatever driver took the function
    /// meanwhile, writes back the old `driver_override` and binds the old driver. Returns `err`.
    #[cold]
    #[inline(never)]
    fn undo_bind(&self, addr: &PciAddress, old_override: Option<&str>, previous: Option<&str>, err: Error) -> Error {
        let dir = self.pci_device_dir(addr);
        let undo = || -> Result<()> {
            let now = self.driver(addr)?;
            if now.is_some() && now.as_deref() != previous {
                self.write_attr(&dir.join("driver/unbind"), &addr.to_string())?;
            }
            self.write_attr(&dir.join("driver_override"), old_override.unwrap_or("\n"))?;
            if let Some(prev) = previous {
                if self.driver(addr)?.as_deref() != Some(prev) {
                    self.write_attr(
                        &self.root.join("bus/pci/drivers").join(prev).join("bind"),
                        &addr.to_string(),
                    )?;
                }
            }
            Ok(())
        };
        if let Err(u) = undo() {
            log::warn!(target: "vfio", "{addr}: undoing the failed bind to vfio-pci failed too, sysfs is left changed: {u}");
        }
        err
    }

    /// The function's `driver_override` (the one driver the PCI core lets bind it), or `None`
    /// when none is set (the kernel shows `(null)`). Errors: Path naming the file (ENOENT on
    /// kernels before 3.16, which have none).
    pub fn driver_override(&self, addr: &PciAddress) -> Result<Option<String>> {
        let path = self.pci_device_dir(addr).join("driver_override");
        let text = fs::read_to_string(&path).map_err(|e| Error::path("read", path, e))?;
        let t = text.trim();
        Ok((!t.is_empty() && t != "(null)").then(|| t.to_owned()))
    }

    /// Gives the function back: unbinds it from its driver, clears `driver_override` and binds
    /// it to `previous` through that driver's `bind` file (`None` leaves it unbound; to let the
    /// kernel choose, write the address to `/sys/bus/pci/drivers_probe` afterwards). Errors:
    /// Path with the errno of the write (EACCES without root, ENODEV when `previous` does not
    /// take the device); unbinding from vfio-pci blocks until every VFIO fd of the device is
    /// closed.
    pub fn restore_driver(&self, addr: &PciAddress, previous: Option<&str>) -> Result<()> {
        let dir = self.pci_device_dir(addr);
        if self.driver(addr)?.is_some() {
            self.write_attr(&dir.join("driver/unbind"), &addr.to_string())?;
        }
        self.write_attr(&dir.join("driver_override"), "\n")?;
        if let Some(prev) = previous {
            self.write_attr(
                &self.root.join("bus/pci/drivers").join(prev).join("bind"),
                &addr.to_string(),
            )?;
        }
        Ok(())
    }
}

fn parse_major_minor(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake() -> (tempdir::Dir, Sysfs) {
        let t = tempdir::Dir::new();
        let dev = t.0.join("sys/bus/pci/devices/0000:00:03.0");
        fs::create_dir_all(dev.join("vfio-dev/vfio0")).unwrap();
        fs::create_dir_all(t.0.join("sys/kernel/iommu_groups/5")).unwrap();
        fs::create_dir_all(t.0.join("sys/bus/pci/drivers/vfio-pci")).unwrap();
        std::os::unix::fs::symlink("../../../kernel/iommu_groups/5", dev.join("iommu_group")).unwrap();
        std::os::unix::fs::symlink("../../../bus/pci/drivers/vfio-pci", dev.join("driver")).unwrap();
        fs::write(dev.join("vfio-dev/vfio0/dev"), "511:0\n").unwrap();
        fs::write(dev.join("vendor"), "0x1234\n").unwrap();
        fs::write(dev.join("device"), "0x11e8\n").unwrap();
        fs::write(dev.join("class"), "0x00ff00\n").unwrap();
        let members = t.0.join("sys/kernel/iommu_groups/5/devices");
        fs::create_dir_all(&members).unwrap();
        for m in ["0000:00:03.1", "0000:00:03.0", "not-pci"] {
            fs::create_dir_all(members.join(m)).unwrap();
        }
        let s = Sysfs::at(t.0.join("sys"), t.0.join("dev"));
        (t, s)
    }

    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Self {
                use std::sync::atomic::{AtomicU32, Ordering};
                static N: AtomicU32 = AtomicU32::new(0);
                let p = std::env::temp_dir().join(format!(
                    "vfio-core-sysfs-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "Sysfs::vfio_cdev opens directories with O_DIRECTORY and openat, which Miri cannot run"
    )]
    fn reads_group_driver_and_cdev() {
        let (_t, s) = fake();
        let a: PciAddress = "00:03.0".parse().unwrap();
        assert_eq!(s.iommu_group(&a).unwrap(), 5);
        assert_eq!(s.driver(&a).unwrap().as_deref(), Some("vfio-pci"));
        s.require_vfio_pci(&a).unwrap();
        let c = s.vfio_cdev(&a).unwrap();
        assert_eq!((c.name.as_str(), c.major, c.minor), ("vfio0", 511, 0));
        assert!(c.path.ends_with("dev/vfio/devices/vfio0"));
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "Sysfs::vfio_cdev opens directories with O_DIRECTORY and openat, which Miri cannot run"
    )]
    fn kernel_without_vfio_cdev_is_unsupported() {
        let (t, s) = fake();
        let a: PciAddress = "00:03.0".parse().unwrap();
        let dev = t.0.join("sys/bus/pci/devices/0000:00:03.0");
        // Linux 6.1-6.5: the VFIO device is listed, without a character device.
        fs::remove_file(dev.join("vfio-dev/vfio0/dev")).unwrap();
        let e = s.vfio_cdev(&a).unwrap_err();
        assert!(matches!(e, Error::Unsupported { .. }), "{e}");
        assert!(e.to_string().contains("CONFIG_VFIO_DEVICE_CDEV"), "{e}");
        // Older kernels: no vfio-dev directory at all.
        fs::remove_dir_all(dev.join("vfio-dev")).unwrap();
        let e = s.vfio_cdev(&a).unwrap_err();
        assert!(matches!(e, Error::Unsupported { .. }), "{e}");
        // Not on vfio-pci: that is the likelier reason, and not a kernel limitation.
        fs::remove_file(dev.join("driver")).unwrap();
        let e = s.vfio_cdev(&a).unwrap_err();
        assert!(matches!(e, Error::Path { .. }), "{e}");
    }

    #[test]
    fn identity_and_group_members() {
        let (_t, s) = fake();
        let a: PciAddress = "00:03.0".parse().unwrap();
        assert_eq!(
            s.identity(&a).unwrap(),
            PciIdentity {
                vendor: 0x1234,
                device: 0x11e8,
                class: 0xff00
            }
        );
        let g = s.group_devices(5).unwrap();
        assert_eq!(g, vec!["00:03.0".parse().unwrap(), "00:03.1".parse().unwrap()]);
        assert!(s.group_devices(6).is_err());
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "Sysfs::vfio_cdev opens directories with O_DIRECTORY and openat, which Miri cannot run"
    )]
    fn missing_device_names_the_path() {
        let (_t, s) = fake();
        let a: PciAddress = "00:04.0".parse().unwrap();
        for e in [
            s.iommu_group(&a).unwrap_err(),
            s.driver(&a).unwrap_err(),
            s.vfio_cdev(&a).unwrap_err(),
        ] {
            assert!(e.to_string().contains("0000:00:04.0"), "{e}");
            assert!(e.to_string().starts_with("find PCI device"), "{e}");
            assert_eq!(e.errno(), Some(crate::Errno::NOENT));
        }
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "Sysfs::vfio_cdev opens directories with O_DIRECTORY and openat, which Miri cannot run"
    )]
    fn present_device_without_driver_group_or_cdev() {
        let (t, s) = fake();
        let a: PciAddress = "00:03.1".parse().unwrap();
        fs::create_dir_all(t.0.join("sys/bus/pci/devices/0000:00:03.1")).unwrap();
        assert_eq!(s.driver(&a).unwrap(), None);
        let e = s.iommu_group(&a).unwrap_err();
        assert!(e.to_string().starts_with("read IOMMU group link"), "{e}");
        let e = s.vfio_cdev(&a).unwrap_err();
        assert!(e.to_string().starts_with("list vfio-dev"), "{e}");
    }
}

/// SR-IOV: the PF's VF count (`sriov_totalvfs`, `sriov_numvfs`) and the links between a PF and
/// its VFs (`virtfnN`, `physfn`). The kernel creates these attributes (Linux 3.8) on every
/// function with an SR-IOV capability; they are absent on any other function.
impl Sysfs {
    fn read_u16_attr(&self, addr: &PciAddress, attr: &str) -> Result<Option<u16>> {
        let path = self.pci_device_dir(addr).join(attr);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.require_device(addr)?;
                return Ok(None);
            }
            Err(e) => return Err(Error::path("read", path, e)),
        };
        let t = text.trim();
        t.parse()
            .map(Some)
            .map_err(|_| Error::malformed("read", path.display(), format!("{t:?} is not a VF count")))
    }

    /// How many VFs the SR-IOV PF at `addr` can have (`sriov_totalvfs`), or `None` when the
    /// function is not a PF (no SR-IOV capability). Errors: Path (ENOENT) naming the device
    /// directory when the function does not exist; Malformed for a file that is not a number.
    pub fn sriov_totalvfs(&self, addr: &PciAddress) -> Result<Option<u16>> {
        self.read_u16_attr(addr, "sriov_totalvfs")
    }

    /// How many VFs the PF at `addr` has enabled now (`sriov_numvfs`), or `None` when the
    /// function is not a PF. Errors: as [`Sysfs::sriov_totalvfs`].
    pub fn sriov_numvfs(&self, addr: &PciAddress) -> Result<Option<u16>> {
        self.read_u16_attr(addr, "sriov_numvfs")
    }

    /// Writes `count` to the PF's `sriov_numvfs`: the PCI core asks the PF's driver
    /// (`sriov_configure`) to enable that many VFs, or to disable them all for 0. The raw write;
    /// [`SriovVfs`](crate::SriovVfs) is the owner that checks first and undoes it. Errors:
    /// Path with the kernel's errno: ERANGE above `sriov_totalvfs`; EBUSY when VFs are enabled
    /// already and `count` is not 0; ENOENT when the driver does not configure SR-IOV (vfio-pci
    /// without its module parameter `enable_sriov=1`); EACCES without root. Disabling blocks
    /// until every VFIO fd of every VF is closed (the VFs' driver unbinds).
    pub fn set_sriov_numvfs(&self, addr: &PciAddress, count: u16) -> Result<()> {
        self.write_attr(&self.pci_device_dir(addr).join("sriov_numvfs"), &count.to_string())
    }

    /// The PF of the SR-IOV VF at `addr` (the target of its `physfn` link), or `None` when the
    /// function is not a VF. Errors: Path (ENOENT) naming the device directory when the
    /// function does not exist; Malformed for a link that does not end in a PCI address.
    pub fn physfn(&self, addr: &PciAddress) -> Result<Option<PciAddress>> {
        let link = self.pci_device_dir(addr).join("physfn");
        match fs::read_link(&link) {
            Ok(t) => parse_link_address(&link, &t).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.require_device(addr)?;
                Ok(None)
            }
            Err(e) => Err(Error::path("read physfn link", link, e)),
        }
    }

    /// The VFs the PF at `pf` has enabled now, from its `virtfn0`, `virtfn1`... links, in VF
    /// order (empty for a function that is not a PF or has none enabled). Errors: Path naming
    /// the device directory when it cannot be listed (ENOENT: no such function); Malformed
    /// for a link that does not end in a PCI address.
    pub fn virtfns(&self, pf: &PciAddress) -> Result<Vec<PciAddress>> {
        let dir = self.pci_device_dir(pf);
        let entries = fs::read_dir(&dir).map_err(|e| Error::path("find PCI device", &dir, e))?;
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(n) = name
                .to_str()
                .and_then(|n| n.strip_prefix("virtfn")?.parse::<u32>().ok())
            else {
                continue;
            };
            let link = entry.path();
            let target = fs::read_link(&link).map_err(|e| Error::path("read virtfn link", &link, e))?;
            out.push((n, parse_link_address(&link, &target)?));
        }
        out.sort();
        Ok(out.into_iter().map(|(_, a)| a).collect())
    }
}

fn parse_link_address(link: &Path, target: &Path) -> Result<PciAddress> {
    let name = target.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    name.parse()
        .map_err(|_| Error::malformed("read link", link.display(), format!("{name:?} is not a PCI address")))
}

#[cfg(test)]
mod sriov_tests {
    use super::*;

    #[test]
    fn sriov_counts_and_links() {
        let root = std::env::temp_dir().join(format!("vfio-core-sysfs-sriov-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let devs = root.join("sys/bus/pci/devices");
        let real = root.join("sys/devices/pci0000:00");
        for a in ["0000:00:0c.0", "0000:00:0c.1", "0000:00:0c.2", "0000:00:03.0"] {
            fs::create_dir_all(real.join(a)).unwrap();
            fs::create_dir_all(&devs).unwrap();
            std::os::unix::fs::symlink(real.join(a), devs.join(a)).unwrap();
        }
        let pf = real.join("0000:00:0c.0");
        fs::write(pf.join("sriov_totalvfs"), "2\n").unwrap();
        fs::write(pf.join("sriov_numvfs"), "2\n").unwrap();
        // Listed in VF order whatever order the directory gives.
        std::os::unix::fs::symlink("../0000:00:0c.2", pf.join("virtfn1")).unwrap();
        std::os::unix::fs::symlink("../0000:00:0c.1", pf.join("virtfn0")).unwrap();
        std::os::unix::fs::symlink("../0000:00:0c.0", real.join("0000:00:0c.1/physfn")).unwrap();
        let s = Sysfs::at(root.join("sys"), root.join("dev"));
        let a = |t: &str| t.parse::<PciAddress>().unwrap();
        assert_eq!(s.sriov_totalvfs(&a("00:0c.0")).unwrap(), Some(2));
        assert_eq!(s.sriov_numvfs(&a("00:0c.0")).unwrap(), Some(2));
        assert_eq!(s.sriov_totalvfs(&a("00:03.0")).unwrap(), None);
        assert_eq!(s.virtfns(&a("00:0c.0")).unwrap(), vec![a("00:0c.1"), a("00:0c.2")]);
        assert!(s.virtfns(&a("00:03.0")).unwrap().is_empty());
        assert_eq!(s.physfn(&a("00:0c.1")).unwrap(), Some(a("00:0c.0")));
        assert_eq!(s.physfn(&a("00:0c.0")).unwrap(), None);
        let e = s.physfn(&a("00:0d.0")).unwrap_err();
        assert_eq!(e.errno(), Some(crate::Errno::NOENT), "{e}");
        assert!(s.sriov_totalvfs(&a("00:0d.0")).is_err());
        fs::write(pf.join("sriov_numvfs"), "two\n").unwrap();
        let e = s.sriov_numvfs(&a("00:0c.0")).unwrap_err();
        assert!(matches!(e, Error::Malformed { .. }), "{e}");
        fs::remove_dir_all(&root).unwrap();
    }
}
