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

    /// The `/dev` directory that goes with this sysfs.
    pub fn dev_dir(&self) -> &Path {
        &self.dev
    }

    /// Checks that the PCI function exists.
    pub fn require_device(&self, addr: &PciAddress) -> Result<PathBuf> {
        let dir = self.pci_device_dir(addr);
        match fs::metadata(&dir) {
            Ok(_) => Ok(dir),
            Err(e) => Err(Error::path("find PCI device", dir, e)),
        }
    }

    /// The IOMMU group number of a device (the target of its `iommu_group` link).
    pub fn iommu_group(&self, addr: &PciAddress) -> Result<u32> {
        let dir = self.require_device(addr)?;
        let link = dir.join("iommu_group");
        let target = fs::read_link(&link).map_err(|e| Error::path("read IOMMU group link", &link, e))?;
        let name = target.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        name.parse().map_err(|_| {
            Error::malformed(
                "read IOMMU group link",
                link.display(),
                format!("{name:?} is not a group number"),
            )
        })
    }

    /// The driver the device is bound to now, or `None`.
    pub fn driver(&self, addr: &PciAddress) -> Result<Option<String>> {
        let dir = self.require_device(addr)?;
        let link = dir.join("driver");
        match fs::read_link(&link) {
            Ok(t) => Ok(t.file_name().map(|n| n.to_string_lossy().into_owned())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::path("read driver link", link, e)),
        }
    }

    /// Fails with a message naming the driver unless the device is bound to `vfio-pci`.
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
    pub fn vfio_cdev(&self, addr: &PciAddress) -> Result<CdevNode> {
        let dir = self.require_device(addr)?.join("vfio-dev");
        let entries = fs::read_dir(&dir).map_err(|e| {
            Error::path(
                "list vfio-dev (kernel without VFIO_DEVICE_CDEV, or device not bound to vfio-pci?)",
                &dir,
                e,
            )
        })?;
        if let Some(entry) = entries.into_iter().next() {
            let entry = entry.map_err(|e| Error::path("list", &dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let devfile = entry.path().join("dev");
            let text = fs::read_to_string(&devfile).map_err(|e| Error::path("read", &devfile, e))?;
            let (major, minor) = parse_major_minor(text.trim())
                .ok_or_else(|| Error::malformed("read", devfile.display(), format!("{text:?} is not major:minor")))?;
            let path = self.dev.join("vfio/devices").join(&name);
            return Ok(CdevNode {
                name,
                path,
                major,
                minor,
            });
        }
        Err(Error::unsupported(
            "VFIO device cdev",
            addr,
            format!("{} is empty", dir.display()),
        ))
    }

    /// Whether a module parameter file reads `Y` (e.g. `vfio`, `enable_unsafe_noiommu_mode`).
    pub fn module_param_enabled(&self, module: &str, param: &str) -> bool {
        let p = self.root.join("module").join(module).join("parameters").join(param);
        fs::read_to_string(p)
            .map(|s| s.trim() == "Y" || s.trim() == "1")
            .unwrap_or(false)
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
    fn missing_device_names_the_path() {
        let (_t, s) = fake();
        let a: PciAddress = "00:04.0".parse().unwrap();
        let e = s.iommu_group(&a).unwrap_err();
        assert!(e.to_string().contains("0000:00:04.0"), "{e}");
        assert_eq!(e.errno(), Some(crate::Errno::NOENT));
    }
}
