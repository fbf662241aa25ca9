//! [`DeviceRef`]: any device VFIO can hand out, named the way the kernel names it: a PCI
//! function by address, a mediated device by UUID, or any other device by its sysfs directory.
//! The lookups that find its IOMMU group and its VFIO cdev from sysfs are here too.

use std::fmt;
use std::fs;
use std::path::PathBuf;
use std::str::FromStr;

use crate::{CdevNode, Error, PciAddress, Result, Sysfs, Uuid};

/// A device to open through VFIO.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DeviceRef {
    /// A PCI function (`/sys/bus/pci/devices/<address>`).
    Pci(PciAddress),
    /// A mediated device instance (`/sys/bus/mdev/devices/<uuid>`).
    Mdev(Uuid),
    /// Any device, by its sysfs directory (e.g. `/sys/devices/virtual/mtty/mtty/<uuid>`); its
    /// last component is the name the kernel gives it (`dev_name`).
    Sysfs(PathBuf),
}

impl DeviceRef {
    /// The device's sysfs directory: `bus/pci/devices/<address>`, `bus/mdev/devices/<uuid>`,
    /// or the path itself.
    pub fn sysfs_dir(&self, sysfs: &Sysfs) -> PathBuf {
        match self {
            DeviceRef::Pci(a) => sysfs.pci_device_dir(a),
            DeviceRef::Mdev(u) => sysfs.root().join("bus/mdev/devices").join(u.to_string()),
            DeviceRef::Sysfs(p) => p.clone(),
        }
    }

    /// The name `VFIO_GROUP_GET_DEVICE_FD` takes: the kernel's `dev_name` (a PCI address with
    /// its domain, a lowercase UUID, or the sysfs directory's last component).
    pub fn vfio_name(&self) -> String {
        match self {
            DeviceRef::Sysfs(p) => p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            other => other.to_string(),
        }
    }

    /// The PCI address, for a PCI function.
    pub fn pci_address(&self) -> Option<PciAddress> {
        match self {
            DeviceRef::Pci(a) => Some(*a),
            _ => None,
        }
    }
}

impl fmt::Display for DeviceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceRef::Pci(a) => a.fmt(f),
            DeviceRef::Mdev(u) => u.fmt(f),
            DeviceRef::Sysfs(p) => p.display().fmt(f),
        }
    }
}

impl From<PciAddress> for DeviceRef {
    fn from(a: PciAddress) -> Self {
        DeviceRef::Pci(a)
    }
}

impl From<&PciAddress> for DeviceRef {
    fn from(a: &PciAddress) -> Self {
        DeviceRef::Pci(*a)
    }
}

impl From<Uuid> for DeviceRef {
    fn from(u: Uuid) -> Self {
        DeviceRef::Mdev(u)
    }
}

impl FromStr for DeviceRef {
    type Err = Error;
    /// A path (starting with `/`), a UUID or a PCI address. Errors: InvalidArgument for
    /// anything else.
    fn from_str(s: &str) -> Result<Self> {
        if s.starts_with('/') {
            return Ok(DeviceRef::Sysfs(PathBuf::from(s)));
        }
        if let Ok(u) = s.parse::<Uuid>() {
            return Ok(DeviceRef::Mdev(u));
        }
        s.parse::<PciAddress>().map(DeviceRef::Pci).map_err(|_| {
            Error::invalid(
                "parse device",
                format!("{s:?}"),
                "expected a PCI address (0000:00:03.0), a mediated device UUID or a sysfs path",
            )
        })
    }
}

impl Sysfs {
    /// Checks that the device exists (a stat of its sysfs directory); returns that directory.
    /// Errors: Path (ENOENT) naming the directory; for a mediated device the error says it may
    /// have been removed.
    pub fn require_device_ref(&self, dev: &DeviceRef) -> Result<PathBuf> {
        if let DeviceRef::Pci(a) = dev {
            return self.require_device(a);
        }
        let dir = dev.sysfs_dir(self);
        match fs::metadata(&dir) {
            Ok(_) => Ok(dir),
            Err(e) if matches!(dev, DeviceRef::Mdev(_)) => {
                Err(Error::path("find mediated device (no such instance: removed?)", dir, e))
            }
            Err(e) => Err(Error::path("find device", dir, e)),
        }
    }

    /// The IOMMU group number of any device (its `iommu_group` link). Errors: as
    /// [`Sysfs::iommu_group`], naming the device's directory.
    pub fn device_iommu_group(&self, dev: &DeviceRef) -> Result<u32> {
        if let DeviceRef::Pci(a) = dev {
            return self.iommu_group(a);
        }
        let link = dev.sysfs_dir(self).join("iommu_group");
        let target = match fs::read_link(&link) {
            Ok(t) => t,
            Err(e) => {
                self.require_device_ref(dev)?;
                return Err(Error::path(
                    "read IOMMU group link (is the device on a VFIO driver?)",
                    &link,
                    e,
                ));
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

    /// Whether IOMMU group `id` is an emulated one, a mediated device's: VFIO names it
    /// `vfio-noiommu` (as no-IOMMU groups) but serves it at `/dev/vfio/<id>`, and it has no
    /// IOMMU behind it. Such a group joins only an IOVA container (type1, or iommufd's
    /// compatibility container), never a no-IOMMU one.
    pub fn is_emulated_group(&self, id: u32) -> bool {
        let name = self.root().join(format!("kernel/iommu_groups/{id}/name"));
        fs::read_to_string(name).is_ok_and(|n| n.trim() == "vfio-noiommu")
            && self.dev_dir().join("vfio").join(id.to_string()).exists()
    }

    /// The VFIO cdev of any device, from `<device>/vfio-dev/<name>/dev`. Errors: as
    /// [`Sysfs::vfio_cdev`]: Path naming the device or its `vfio-dev` directory, Unsupported
    /// when the kernel lists no cdev (no `CONFIG_VFIO_DEVICE_CDEV`, Linux < 6.6).
    pub fn device_vfio_cdev(&self, dev: &DeviceRef) -> Result<CdevNode> {
        if let DeviceRef::Pci(a) = dev {
            return self.vfio_cdev(a);
        }
        let dir = self.require_device_ref(dev)?.join("vfio-dev");
        let name = match fs::read_dir(&dir) {
            Ok(d) => d.flatten().find_map(|e| e.file_name().to_str().map(str::to_owned)),
            Err(e) => return Err(Error::path("list vfio-dev (is the device on a VFIO driver?)", &dir, e)),
        };
        let name =
            name.ok_or_else(|| Error::unsupported("VFIO device cdev", dev, format!("{} is empty", dir.display())))?;
        let devfile = dir.join(&name).join("dev");
        let text = match fs::read_to_string(&devfile) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::unsupported(
                    "cdev mode (VFIO device cdev)",
                    dev,
                    format!(
                        "{} does not exist: the kernel has no VFIO device cdev (CONFIG_VFIO_DEVICE_CDEV, \
                         Linux >= 6.6); use group mode",
                        devfile.display()
                    ),
                ));
            }
            Err(e) => return Err(Error::path("read", devfile, e)),
        };
        let (major, minor) = text
            .trim()
            .split_once(':')
            .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
            .ok_or_else(|| Error::malformed("read", devfile.display(), format!("{text:?} is not major:minor")))?;
        let path = self.dev_dir().join("vfio/devices").join(&name);
        Ok(CdevNode {
            name,
            path,
            major,
            minor,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn parse_display_and_names() {
        let u: DeviceRef = "83B8F4F2-509F-382F-3C1E-E6BFE0FA1001".parse().unwrap();
        assert_eq!(u.vfio_name(), "83b8f4f2-509f-382f-3c1e-e6bfe0fa1001");
        let p: DeviceRef = "00:03.0".parse().unwrap();
        assert_eq!(p.vfio_name(), "0000:00:03.0");
        assert!(p.pci_address().is_some());
        let s: DeviceRef = "/sys/devices/virtual/mtty/mtty/abc".parse().unwrap();
        assert_eq!(s.vfio_name(), "abc");
        assert_eq!(s.to_string(), "/sys/devices/virtual/mtty/mtty/abc");
        assert!(matches!(
            "nope".parse::<DeviceRef>(),
            Err(Error::InvalidArgument { .. })
        ));
        let sysfs = Sysfs::at("/s", "/d");
        assert_eq!(
            u.sysfs_dir(&sysfs),
            Path::new("/s/bus/mdev/devices/83b8f4f2-509f-382f-3c1e-e6bfe0fa1001")
        );
    }

    #[test]
    #[cfg_attr(miri, ignore = "builds a fake sysfs tree")]
    fn mdev_group_and_cdev_from_a_fake_tree() {
        let root = std::env::temp_dir().join(format!("vfio-core-devref-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let u: Uuid = "83b8f4f2-509f-382f-3c1e-e6bfe0fa1001".parse().unwrap();
        let dir = root.join("sys/bus/mdev/devices").join(u.to_string());
        fs::create_dir_all(dir.join("vfio-dev/vfio3")).unwrap();
        fs::write(dir.join("vfio-dev/vfio3/dev"), "511:3\n").unwrap();
        fs::create_dir_all(root.join("sys/kernel/iommu_groups/7")).unwrap();
        fs::write(root.join("sys/kernel/iommu_groups/7/name"), "vfio-noiommu\n").unwrap();
        std::os::unix::fs::symlink("../../../../kernel/iommu_groups/7", dir.join("iommu_group")).unwrap();
        fs::create_dir_all(root.join("dev/vfio")).unwrap();
        fs::write(root.join("dev/vfio/7"), "").unwrap();
        let sysfs = Sysfs::at(root.join("sys"), root.join("dev"));
        let d = DeviceRef::Mdev(u);
        assert_eq!(sysfs.device_iommu_group(&d).unwrap(), 7);
        assert!(sysfs.is_emulated_group(7));
        let n = sysfs.device_vfio_cdev(&d).unwrap();
        assert_eq!((n.name.as_str(), n.major, n.minor), ("vfio3", 511, 3));
        let gone = DeviceRef::Mdev(Uuid::from_bytes([1; 16]));
        let e = sysfs.device_iommu_group(&gone).unwrap_err();
        assert!(
            e.to_string().contains("removed?") && e.to_string().contains("01010101-"),
            "{e}"
        );
        fs::remove_dir_all(root).unwrap();
    }
}
