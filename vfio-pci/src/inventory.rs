//! What the machine offers: every PCI function with its identity, driver, IOMMU group and
//! VFIO nodes, and which modes could open it right now. Read from sysfs and `/dev` only (no
//! device is opened), so it works unprivileged; `lsvfio` prints it.

use std::path::PathBuf;

use vfio_core::{CdevNode, Mode, PciAddress, Result, Sysfs};

/// One PCI function as sysfs and `/dev` describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSummary {
    /// Its address.
    pub address: PciAddress,
    /// Vendor id.
    pub vendor: u16,
    /// Device id.
    pub device: u16,
    /// Class code (base class, subclass, programming interface).
    pub class: u32,
    /// The driver bound now.
    pub driver: Option<String>,
    /// Its IOMMU group (none without an IOMMU, unless no-IOMMU mode made one).
    pub iommu_group: Option<u32>,
    /// The group's node: `/dev/vfio/<group>` or `/dev/vfio/noiommu-<group>`, if it exists.
    pub group_node: Option<PathBuf>,
    /// Every function of the group is bound to vfio-pci, unbound, or a bridge: the group can
    /// be used, in group mode and in cdev mode alike (both take DMA ownership of the whole
    /// group). `false` names the reason in [`DeviceSummary::blockers`].
    pub group_viable: bool,
    /// Group members that make the group unusable, with their drivers.
    pub blockers: Vec<(PciAddress, String)>,
    /// The device cdev (`/dev/vfio/devices/vfioN`), when the kernel has VFIO_DEVICE_CDEV.
    pub cdev: Option<CdevNode>,
    /// The modes that could open it now.
    pub modes: Vec<Mode>,
}

/// A bridge (class 0x0604xx) may keep its driver: the kernel lets it share a group.
fn is_bridge(class: u32) -> bool {
    class >> 8 == 0x0604
}

/// Describes every PCI function under `sysfs`.
pub fn list(sysfs: &Sysfs) -> Result<Vec<DeviceSummary>> {
    sysfs.pci_devices()?.iter().map(|a| describe(sysfs, a)).collect()
}

/// Describes one PCI function. Errors: the function does not exist (naming the sysfs path).
pub fn describe(sysfs: &Sysfs, address: &PciAddress) -> Result<DeviceSummary> {
    let id = sysfs.identity(address)?;
    let driver = sysfs.driver(address)?;
    let iommu_group = sysfs.iommu_group(address).ok();
    let vfio = driver.as_deref() == Some("vfio-pci");
    let dev = sysfs.dev_dir().join("vfio");
    let group_node = iommu_group.and_then(|g| {
        [dev.join(g.to_string()), dev.join(format!("noiommu-{g}"))]
            .into_iter()
            .find(|p| p.exists())
    });
    let mut blockers = Vec::new();
    if let Some(g) = iommu_group {
        for member in sysfs.group_devices(g).unwrap_or_default() {
            let drv = sysfs.driver(&member).ok().flatten();
            let class = sysfs.identity(&member).map(|i| i.class).unwrap_or(0);
            match drv {
                Some(d) if d != "vfio-pci" && d != "pci-stub" && !is_bridge(class) => blockers.push((member, d)),
                _ => {}
            }
        }
    }
    let group_viable = iommu_group.is_some() && blockers.is_empty();
    let cdev = sysfs.vfio_cdev(address).ok().filter(|c| c.path.exists());
    let mut modes = Vec::new();
    // Both modes claim DMA ownership of the whole group: a member on a kernel driver blocks both.
    if vfio && group_viable {
        if let Some(node) = &group_node {
            let noiommu = node
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("noiommu-"));
            modes.push(if noiommu { Mode::GROUP_NOIOMMU } else { Mode::GROUP });
        }
        if let Some(c) = &cdev {
            if sysfs.dev_dir().join("iommu").exists() {
                modes.push(if c.name.starts_with("noiommu-") {
                    Mode::CDEV_NOIOMMU
                } else {
                    Mode::CDEV
                });
            }
        }
    }
    Ok(DeviceSummary {
        address: *address,
        vendor: id.vendor,
        device: id.device,
        class: id.class,
        driver,
        iommu_group,
        group_node,
        group_viable,
        blockers,
        cdev,
        modes,
    })
}

/// Whether a device's IOMMU group can be opened through VFIO: both modes take DMA ownership
/// of the whole group, which the kernel refuses while any member is on a host driver (group
/// mode: `VFIO_GROUP_SET_CONTAINER` EPERM; cdev mode: `VFIO_DEVICE_BIND_IOMMUFD` EPERM).
/// Answered by [`viability`] from sysfs alone, before anything is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Viability {
    /// Every member of the group is on vfio-pci or pci-stub, unbound, or a bridge.
    Viable {
        /// The IOMMU group.
        group: u32,
    },
    /// Members on host drivers block the group: bind them to vfio-pci (or unbind them) first.
    NotViable {
        /// The IOMMU group.
        group: u32,
        /// The members that block it, with their drivers.
        blockers: Vec<(PciAddress, String)>,
    },
    /// The device has no IOMMU group (no IOMMU, and no-IOMMU mode is off or the device is not
    /// on vfio-pci): VFIO cannot open it at all.
    NoGroup,
}

impl Viability {
    /// Whether the group can be opened.
    pub fn is_viable(&self) -> bool {
        matches!(self, Viability::Viable { .. })
    }

    /// The members that block the group (empty when it is viable or there is none).
    pub fn blockers(&self) -> &[(PciAddress, String)] {
        match self {
            Viability::NotViable { blockers, .. } => blockers,
            _ => &[],
        }
    }
}

impl std::fmt::Display for Viability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Viability::Viable { group } => write!(f, "IOMMU group {group} is viable"),
            Viability::NotViable { group, blockers } => {
                write!(f, "IOMMU group {group} is not viable: ")?;
                for (i, (dev, driver)) in blockers.iter().enumerate() {
                    let sep = if i == 0 { "" } else { ", " };
                    write!(f, "{sep}{dev} is bound to {driver}")?;
                }
                Ok(())
            }
            Viability::NoGroup => write!(f, "no IOMMU group"),
        }
    }
}

/// Whether the IOMMU group of the device at `address` can be opened now, with the members that
/// block it ([`describe`]'s `group_viable` and `blockers`). Reads sysfs only: unprivileged, and
/// nothing is opened. Errors: the device does not exist (naming its sysfs path).
pub fn viability(sysfs: &Sysfs, address: &PciAddress) -> Result<Viability> {
    let d = describe(sysfs, address)?;
    Ok(match d.iommu_group {
        None => Viability::NoGroup,
        Some(group) if d.blockers.is_empty() => Viability::Viable { group },
        Some(group) => Viability::NotViable {
            group,
            blockers: d.blockers,
        },
    })
}

/// One type of mediated device a parent offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdevTypeSummary {
    /// Its id (`mtty-1`).
    pub id: String,
    /// Its `name`.
    pub name: String,
    /// Its `description`, if the driver gives one.
    pub description: Option<String>,
    /// Its `device_api` (`vfio-pci`).
    pub device_api: String,
    /// `available_instances` now.
    pub available: u32,
}

/// One mediated device instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdevSummary {
    /// Its UUID.
    pub uuid: vfio_core::Uuid,
    /// Its type id.
    pub type_id: String,
    /// The driver bound (the parent's mdev driver, e.g. `mtty`).
    pub driver: Option<String>,
    /// Its (emulated) IOMMU group.
    pub iommu_group: Option<u32>,
    /// Its VFIO cdev.
    pub cdev: Option<CdevNode>,
    /// The modes that could open it now: always IOVA ones (a mediated device needs no IOMMU:
    /// it opens through an IOVA container on machines without one too).
    pub modes: Vec<Mode>,
}

/// A mediated-device parent with its types and instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdevParentSummary {
    /// Its name (`mtty`, or a PCI address).
    pub name: String,
    /// Its types.
    pub types: Vec<MdevTypeSummary>,
    /// The instances of all its types, sorted by type then UUID.
    pub instances: Vec<MdevSummary>,
}

/// Every mediated-device parent with its types and instances (empty without
/// `CONFIG_VFIO_MDEV`). Errors: Path or Malformed from a sysfs file that cannot be read.
pub fn mdev_parents(sysfs: &Sysfs) -> Result<Vec<MdevParentSummary>> {
    let dev = sysfs.dev_dir();
    vfio_core::mdev_parents(sysfs)?
        .into_iter()
        .map(|p| {
            let mut types = Vec::new();
            let mut instances = Vec::new();
            for t in p.types()? {
                types.push(MdevTypeSummary {
                    id: t.id().to_owned(),
                    name: t.name()?,
                    description: t.description()?,
                    device_api: t.device_api()?,
                    available: t.available_instances()?,
                });
                for uuid in t.instances()? {
                    let r = vfio_core::DeviceRef::Mdev(uuid);
                    let iommu_group = sysfs.device_iommu_group(&r).ok();
                    let cdev = sysfs.device_vfio_cdev(&r).ok().filter(|c| c.path.exists());
                    let mut modes = Vec::new();
                    if cdev.is_some() && dev.join("iommu").exists() {
                        modes.push(Mode::CDEV);
                    }
                    if iommu_group.is_some_and(|g| dev.join("vfio").join(g.to_string()).exists())
                        && dev.join("vfio/vfio").exists()
                    {
                        modes.push(Mode::GROUP);
                    }
                    let driver = std::fs::read_link(r.sysfs_dir(sysfs).join("driver"))
                        .ok()
                        .and_then(|l| l.file_name().map(|n| n.to_string_lossy().into_owned()));
                    instances.push(MdevSummary {
                        uuid,
                        type_id: t.id().to_owned(),
                        driver,
                        iommu_group,
                        cdev,
                        modes,
                    });
                }
            }
            Ok(MdevParentSummary {
                name: p.name().to_owned(),
                types,
                instances,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;
    use std::path::Path;

    /// A scratch directory removed on drop.
    struct Scratch(PathBuf);

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn add_fn(root: &Path, addr: &str, ids: (&str, &str, &str), driver: Option<&str>, group: u32) {
        let dir = root.join("sys/bus/pci/devices").join(addr);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("vendor"), ids.0).unwrap();
        fs::write(dir.join("device"), ids.1).unwrap();
        fs::write(dir.join("class"), ids.2).unwrap();
        let members = root.join(format!("sys/kernel/iommu_groups/{group}/devices"));
        fs::create_dir_all(members.join(addr)).unwrap();
        symlink(
            root.join(format!("sys/kernel/iommu_groups/{group}")),
            dir.join("iommu_group"),
        )
        .unwrap();
        if let Some(d) = driver {
            let drv = root.join("sys/bus/pci/drivers").join(d);
            fs::create_dir_all(&drv).unwrap();
            symlink(drv, dir.join("driver")).unwrap();
        }
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "Sysfs::vfio_cdev opens directories with O_DIRECTORY and openat, which Miri cannot run"
    )]
    fn modes_follow_driver_nodes_and_group_members() {
        let root = std::env::temp_dir().join(format!("vfio-pci-inventory-{}", std::process::id()));
        let _scratch = Scratch(root.clone());
        // edu alone in group 3, bound to vfio-pci, with group node and cdev.
        add_fn(
            &root,
            "0000:00:03.0",
            ("0x1234", "0x11e8", "0x00ff00"),
            Some("vfio-pci"),
            3,
        );
        let cdev = root.join("sys/bus/pci/devices/0000:00:03.0/vfio-dev/vfio0");
        fs::create_dir_all(&cdev).unwrap();
        fs::write(cdev.join("dev"), "511:0\n").unwrap();
        fs::create_dir_all(root.join("dev/vfio/devices")).unwrap();
        fs::write(root.join("dev/vfio/3"), "").unwrap();
        fs::write(root.join("dev/vfio/devices/vfio0"), "").unwrap();
        fs::write(root.join("dev/iommu"), "").unwrap();
        // A second edu sharing group 4 with a virtio device its driver holds; a bridge there is fine.
        add_fn(
            &root,
            "0000:01:01.0",
            ("0x1234", "0x11e8", "0x00ff00"),
            Some("vfio-pci"),
            4,
        );
        add_fn(
            &root,
            "0000:01:02.0",
            ("0x1af4", "0x1005", "0x00ff00"),
            Some("virtio-pci"),
            4,
        );
        add_fn(
            &root,
            "0000:00:08.0",
            ("0x1b36", "0x000e", "0x060400"),
            Some("pcieport"),
            4,
        );
        fs::write(root.join("dev/vfio/4"), "").unwrap();
        // nvme still on its kernel driver.
        add_fn(&root, "0000:00:04.0", ("0x1b36", "0x0010", "0x010802"), Some("nvme"), 5);

        let s = Sysfs::at(root.join("sys"), root.join("dev"));
        let all = list(&s).unwrap();
        assert_eq!(all.len(), 5);
        let get = |a: &str| all.iter().find(|d| d.address == a.parse().unwrap()).unwrap();
        let edu = get("0000:00:03.0");
        assert_eq!(edu.modes, vec![Mode::GROUP, Mode::CDEV]);
        assert_eq!(edu.cdev.as_ref().unwrap().name, "vfio0");
        assert_eq!(edu.iommu_group, Some(3));
        let shared = get("0000:01:01.0");
        assert!(!shared.group_viable);
        assert_eq!(
            shared.blockers,
            vec![("0000:01:02.0".parse().unwrap(), "virtio-pci".to_string())]
        );
        assert!(shared.modes.is_empty(), "no cdev, group not viable: {:?}", shared.modes);
        let nvme = get("0000:00:04.0");
        assert_eq!((nvme.driver.as_deref(), nvme.class), (Some("nvme"), 0x010802));
        assert!(nvme.modes.is_empty());
        assert!(describe(&s, &"0000:09:00.0".parse().unwrap()).is_err());

        // The same answers through `viability`, typed.
        let v = |a: &str| viability(&s, &a.parse().unwrap()).unwrap();
        assert_eq!(v("0000:00:03.0"), Viability::Viable { group: 3 });
        let blocked = v("0000:01:01.0");
        assert!(!blocked.is_viable());
        assert_eq!(
            blocked,
            Viability::NotViable {
                group: 4,
                blockers: vec![("0000:01:02.0".parse().unwrap(), "virtio-pci".to_string())],
            }
        );
        assert_eq!(
            blocked.to_string(),
            "IOMMU group 4 is not viable: 0000:01:02.0 is bound to virtio-pci"
        );
        assert!(viability(&s, &"0000:09:00.0".parse().unwrap()).is_err());
    }
}
