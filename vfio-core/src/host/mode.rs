//! How a process can own a VFIO device, and which ways the running kernel offers.
//!
//! Two questions, answered apart (as DPDK 26.11 does): which *interface* opens the device (the
//! legacy group/container API or the device cdev + iommufd), and how the device *addresses*
//! memory (IOVAs translated by an IOMMU, or physical addresses without one: VFIO's "no-IOMMU"
//! mode, which needs `vfio.enable_unsafe_noiommu_mode=1`). All four combinations exist on
//! Linux 7.3; the cdev interface without an IOMMU is new there.

use std::fmt;
use std::str::FromStr;

use crate::{Error, Result, Sysfs};

/// The environment variable that forces a mode: `group`, `cdev`, `group-noiommu`,
/// `cdev-noiommu`, or `noiommu` (physical addressing through whichever interface offers it).
pub const MODE_ENV: &str = "VFIO_RS_MODE";

/// Which VFIO interface a device is opened through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Interface {
    /// The legacy group/container API: `/dev/vfio/vfio`, `/dev/vfio/<group>` (or
    /// `/dev/vfio/noiommu-<group>`), `VFIO_GROUP_GET_DEVICE_FD`.
    Group,
    /// The device cdev + iommufd: `/dev/vfio/devices/vfioN` (or `noiommu-vfioN`), `/dev/iommu`,
    /// `VFIO_DEVICE_BIND_IOMMUFD` (Linux >= 6.6; without an IOMMU, >= 7.3).
    Cdev,
}

/// How a device addresses the memory it reaches by DMA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Addressing {
    /// IOVAs, translated (and confined) by an IOMMU.
    Iova,
    /// Physical addresses: no IOMMU translates or confines the device ("no-IOMMU" mode).
    Physical,
}

/// A way to own a device: an interface and an addressing. The four combinations are
/// [`Mode::GROUP`], [`Mode::CDEV`], [`Mode::GROUP_NOIOMMU`] and [`Mode::CDEV_NOIOMMU`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mode {
    interface: Interface,
    addressing: Addressing,
}

impl Mode {
    /// Group interface, IOVAs through an IOMMU (type1/type1v2, or iommufd's compat container).
    pub const GROUP: Mode = Mode::new(Interface::Group, Addressing::Iova);
    /// Device cdev + iommufd, IOVAs through an IOMMU.
    pub const CDEV: Mode = Mode::new(Interface::Cdev, Addressing::Iova);
    /// Group interface without an IOMMU (`VFIO_NOIOMMU_IOMMU`): physical addresses.
    pub const GROUP_NOIOMMU: Mode = Mode::new(Interface::Group, Addressing::Physical);
    /// Device cdev without an IOMMU (Linux >= 7.3, `IOMMU_IOAS_NOIOMMU_GET_PA`): physical
    /// addresses.
    pub const CDEV_NOIOMMU: Mode = Mode::new(Interface::Cdev, Addressing::Physical);
    /// Every mode, in the order [`preferred`] tries them.
    pub const ALL: [Mode; 4] = [Mode::CDEV, Mode::GROUP, Mode::CDEV_NOIOMMU, Mode::GROUP_NOIOMMU];

    /// The mode of this interface and addressing.
    pub const fn new(interface: Interface, addressing: Addressing) -> Self {
        Mode { interface, addressing }
    }

    /// Which interface opens the device.
    pub const fn interface(self) -> Interface {
        self.interface
    }

    /// How the device addresses memory.
    pub const fn addressing(self) -> Addressing {
        self.addressing
    }

    /// Whether DMA uses physical addresses (no IOMMU).
    pub const fn is_noiommu(self) -> bool {
        matches!(self.addressing, Addressing::Physical)
    }
}

impl fmt::Display for Interface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Interface::Group => "group",
            Interface::Cdev => "cdev",
        })
    }
}

impl fmt::Display for Addressing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Addressing::Iova => "iova",
            Addressing::Physical => "physical",
        })
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addressing {
            Addressing::Iova => write!(f, "{}", self.interface),
            Addressing::Physical => write!(f, "{}-noiommu", self.interface),
        }
    }
}

impl FromStr for Mode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "group" => Ok(Mode::GROUP),
            "cdev" | "iommufd" => Ok(Mode::CDEV),
            "group-noiommu" => Ok(Mode::GROUP_NOIOMMU),
            "cdev-noiommu" => Ok(Mode::CDEV_NOIOMMU),
            _ => Err(Error::invalid(
                "parse mode",
                format!("{s:?}"),
                "expected group, cdev, group-noiommu or cdev-noiommu",
            )),
        }
    }
}

/// Which modes the running kernel offers, from its device nodes and sysfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Modes {
    /// `/dev/vfio/vfio` exists and there are IOMMU groups (`/dev/vfio/<N>`), or, before any
    /// device is bound to VFIO, an IOMMU is registered.
    pub group: bool,
    /// `/dev/iommu` and `/dev/vfio/devices` exist, and an IOMMU is registered (or a device
    /// cdev `vfioN` exists).
    pub cdev: bool,
    /// `/dev/vfio/vfio` exists and `vfio.enable_unsafe_noiommu_mode` is on.
    pub group_noiommu: bool,
    /// `/dev/iommu` and `/dev/vfio/devices` exist, `vfio.enable_unsafe_noiommu_mode` is on,
    /// and either a `noiommu-vfioN` cdev exists or no device is bound without one (a kernel
    /// before 7.3 gives no-IOMMU devices group nodes only).
    pub cdev_noiommu: bool,
}

/// Looks at `/dev` and `/sys` to see which modes are available.
pub fn detect() -> Modes {
    detect_in(&Sysfs::default())
}

/// [`detect`] with `/sys` and `/dev` taken from `sysfs` (e.g. a fake tree in tests, or a
/// container's mounts): its device nodes, `class/iommu` and the `vfio` module parameters.
pub fn detect_in(sysfs: &Sysfs) -> Modes {
    let dev = sysfs.dev_dir();
    let container = dev.join("vfio/vfio").exists();
    // Group nodes tell best: `/dev/vfio/<N>` are IOMMU groups, `/dev/vfio/noiommu-<N>` are not.
    // Before any device is bound, fall back to whether an IOMMU is registered at all.
    // Mediated devices prove nothing: their emulated-IOMMU groups (sysfs name `vfio-noiommu`,
    // node `/dev/vfio/<N>`) and their `vfioN` cdevs exist with or without an IOMMU.
    let (mut iommu_groups, mut noiommu_groups) = (false, false);
    for name in dir_names(&dev.join("vfio")) {
        iommu_groups |= name.bytes().all(|b| b.is_ascii_digit()) && !is_emulated_group(sysfs, &name);
        noiommu_groups |= name.starts_with("noiommu-");
    }
    let (mut iommu_cdevs, mut noiommu_cdevs) = (false, false);
    for name in dir_names(&dev.join("vfio/devices")) {
        iommu_cdevs |= name.starts_with("vfio") && !is_mdev_cdev(sysfs, &name);
        noiommu_cdevs |= name.starts_with("noiommu-vfio");
    }
    let has_iommu = iommu_registered(sysfs);
    let noiommu = sysfs.module_param_enabled("vfio", "enable_unsafe_noiommu_mode");
    let cdev_nodes = dev.join("iommu").exists() && dev.join("vfio/devices").is_dir();
    Modes {
        group: container && (iommu_groups || (!noiommu_groups && has_iommu)),
        // As for groups: without any device bound, an IOMMU registered (the iommufd selftest's
        // mock registers one too, so noiommu cdevs outweigh it).
        cdev: cdev_nodes && (iommu_cdevs || (!noiommu_cdevs && has_iommu)),
        group_noiommu: container && noiommu,
        cdev_noiommu: cdev_nodes && noiommu && (noiommu_cdevs || !noiommu_groups),
    }
}

/// Whether an IOMMU is registered: `class/iommu` has an entry (the iommufd selftest's mock
/// registers one too).
fn iommu_registered(sysfs: &Sysfs) -> bool {
    std::fs::read_dir(sysfs.root().join("class/iommu")).is_ok_and(|mut d| d.next().is_some())
}

/// Whether IOMMU group `name` is an emulated one (a mediated device's: `vfio-noiommu` in its
/// sysfs `name`, drivers/vfio/group.c).
fn is_emulated_group(sysfs: &Sysfs, name: &str) -> bool {
    std::fs::read_to_string(sysfs.root().join("kernel/iommu_groups").join(name).join("name"))
        .is_ok_and(|n| n.trim() == "vfio-noiommu")
}

/// Whether cdev `name` belongs to a mediated device (its device's subsystem is `mdev`).
fn is_mdev_cdev(sysfs: &Sysfs, name: &str) -> bool {
    std::fs::read_link(sysfs.root().join("class/vfio-dev").join(name).join("device/subsystem"))
        .is_ok_and(|t| t.file_name().is_some_and(|n| n == "mdev"))
}

fn dir_names(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

impl Modes {
    /// Whether `mode` is among the modes offered.
    pub fn offers(&self, mode: Mode) -> bool {
        match (mode.interface(), mode.addressing()) {
            (Interface::Group, Addressing::Iova) => self.group,
            (Interface::Cdev, Addressing::Iova) => self.cdev,
            (Interface::Group, Addressing::Physical) => self.group_noiommu,
            (Interface::Cdev, Addressing::Physical) => self.cdev_noiommu,
        }
    }

    /// The modes offered, in the order [`preferred`] tries them.
    pub fn offered(&self) -> Vec<Mode> {
        Mode::ALL.into_iter().filter(|m| self.offers(*m)).collect()
    }

    /// The mode [`preferred`] picks among these: `forced` (the value of `VFIO_RS_MODE`) if given,
    /// else the first offered of cdev, group, cdev-noiommu, group-noiommu (IOVAs before
    /// physical addresses, the cdev before the group interface). `forced` may also be
    /// `noiommu`: physical addressing through whichever interface offers it. Errors: as for
    /// [`preferred`].
    pub fn choose(&self, forced: Option<&str>) -> Result<Mode> {
        let modes = *self;
        if let Some(forced) = forced {
            if forced == "noiommu" || forced == "no-iommu" {
                return [Mode::CDEV_NOIOMMU, Mode::GROUP_NOIOMMU]
                    .into_iter()
                    .find(|m| modes.offers(*m))
                    .ok_or_else(|| {
                        Error::unsupported(
                            "VFIO mode",
                            "noiommu",
                            format!(
                                "forced by {MODE_ENV} but this kernel offers no physical addressing \
                                 (vfio.enable_unsafe_noiommu_mode is off?) ({modes:?})"
                            ),
                        )
                    });
            }
            let m: Mode = forced.parse()?;
            return if modes.offers(m) {
                Ok(m)
            } else {
                Err(Error::unsupported(
                    "VFIO mode",
                    m,
                    format!("forced by {MODE_ENV} but this kernel does not offer it ({modes:?})"),
                ))
            };
        }
        modes.offered().first().copied().ok_or_else(|| {
            Error::unsupported(
                "VFIO",
                "this kernel",
                "no /dev/vfio/vfio and no /dev/iommu (is vfio-pci loaded?)",
            )
        })
    }
}

/// The mode to use: the one named by `VFIO_RS_MODE` if set, else the first the kernel offers of
/// cdev, group, cdev-noiommu, group-noiommu. Errors: Unsupported when the forced mode or every
/// mode is unavailable (for none at all, the reason and its fix: the VFIO modules not loaded, no
/// IOMMU with no-IOMMU mode off, or no-IOMMU devices bound with the mode turned off since);
/// InvalidArgument when `VFIO_RS_MODE` names no mode.
pub fn preferred() -> Result<Mode> {
    let sysfs = Sysfs::default();
    let forced = std::env::var(MODE_ENV).ok();
    let chosen = detect_in(&sysfs).choose(forced.as_deref());
    match chosen {
        Err(Error::Unsupported { .. }) if forced.is_none() => Err(no_mode(&sysfs)),
        other => other,
    }
}

/// Why the kernel seen through `sysfs` offers no mode, and what to change (the doctor's
/// finding and its fix): the error of [`preferred`] when no mode is forced.
pub(crate) fn no_mode(sysfs: &Sysfs) -> Error {
    use crate::host::doctor::Finding;
    let dev = sysfs.dev_dir();
    let container = dev.join("vfio/vfio");
    let has_iommu = iommu_registered(sysfs);
    let noiommu = sysfs.module_param_enabled("vfio", "enable_unsafe_noiommu_mode");
    let finding = if !container.exists() && !dev.join("iommu").exists() {
        Finding::NodeMissing { path: container }
    } else if !has_iommu && !noiommu {
        Finding::NoIommu
    } else if !noiommu {
        return Error::unsupported(
            "VFIO",
            "this kernel",
            "the devices bound to VFIO are no-IOMMU ones (/dev/vfio/noiommu-N) and \
             vfio.enable_unsafe_noiommu_mode is off now; fix: turn it back on, or rebind the \
             devices to vfio-pci",
        );
    } else {
        Finding::NodeMissing { path: container }
    };
    Error::unsupported("VFIO", "this kernel", format!("{finding}; fix: {}", finding.fix()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display() {
        for m in Mode::ALL {
            assert_eq!(m.to_string().parse::<Mode>().unwrap(), m);
        }
        assert_eq!(Mode::CDEV_NOIOMMU.to_string(), "cdev-noiommu");
        assert_eq!(Mode::GROUP_NOIOMMU.interface(), Interface::Group);
        assert!(Mode::GROUP_NOIOMMU.is_noiommu() && !Mode::CDEV.is_noiommu());
        assert!("type1".parse::<Mode>().is_err());
    }

    #[test]
    fn detect_in_empty_tree_finds_nothing() {
        let m = detect_in(&Sysfs::at("/nonexistent/sys", "/nonexistent/dev"));
        assert_eq!(m, Modes::default());
        assert!(matches!(m.choose(None), Err(Error::Unsupported { .. })));
    }

    #[test]
    fn choose_prefers_iova_then_cdev_unless_forced() {
        let all = Modes {
            group: true,
            cdev: true,
            group_noiommu: true,
            cdev_noiommu: true,
        };
        assert_eq!(all.choose(None).unwrap(), Mode::CDEV);
        let legacy = Modes {
            cdev: false,
            cdev_noiommu: false,
            ..all
        };
        assert_eq!(legacy.choose(None).unwrap(), Mode::GROUP);
        let unsafe_only = Modes {
            group_noiommu: true,
            cdev_noiommu: true,
            ..Modes::default()
        };
        assert_eq!(unsafe_only.choose(None).unwrap(), Mode::CDEV_NOIOMMU);
        // VFIO_RS_MODE wins when the kernel offers that mode, and is refused when it does not.
        assert_eq!(all.choose(Some("group")).unwrap(), Mode::GROUP);
        assert_eq!(all.choose(Some("group-noiommu")).unwrap(), Mode::GROUP_NOIOMMU);
        assert_eq!(all.choose(Some("cdev-noiommu")).unwrap(), Mode::CDEV_NOIOMMU);
        // `noiommu` asks for physical addressing, through cdev where the kernel offers it.
        assert_eq!(all.choose(Some("noiommu")).unwrap(), Mode::CDEV_NOIOMMU);
        assert_eq!(legacy.choose(Some("noiommu")).unwrap(), Mode::GROUP_NOIOMMU);
        let e = legacy.choose(Some("cdev")).unwrap_err();
        assert!(
            matches!(e, Error::Unsupported { .. }) && e.to_string().contains(MODE_ENV),
            "{e}"
        );
        let e = Modes {
            group: true,
            ..Modes::default()
        }
        .choose(Some("noiommu"))
        .unwrap_err();
        assert!(matches!(e, Error::Unsupported { .. }), "{e}");
        let e = all.choose(Some("type1")).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    }

    /// A fake `/sys` + `/dev` tree with the no-IOMMU parameter on and the given nodes.
    fn tree(tag: &str, iommu: bool, nodes: &[&str]) -> (std::path::PathBuf, Sysfs) {
        let root = std::env::temp_dir().join(format!("vfio-core-mode-{tag}-{}", std::process::id()));
        let dev = root.join("dev");
        std::fs::create_dir_all(dev.join("vfio/devices")).unwrap();
        std::fs::create_dir_all(root.join("sys/module/vfio/parameters")).unwrap();
        if iommu {
            std::fs::create_dir_all(root.join("sys/class/iommu/mock")).unwrap();
        }
        std::fs::write(
            root.join("sys/module/vfio/parameters/enable_unsafe_noiommu_mode"),
            "Y\n",
        )
        .unwrap();
        for n in nodes {
            std::fs::write(dev.join(n), "").unwrap();
        }
        let sysfs = Sysfs::at(root.join("sys"), &dev);
        (root, sysfs)
    }

    #[test]
    fn noiommu_nodes_count_as_physical_addressing_only() {
        // A no-IOMMU boot of 7.3: the device has a noiommu group and a noiommu cdev (and the
        // iommufd selftest's mock IOMMU is registered, as in the test kernels).
        let (root, sysfs) = tree(
            "none",
            true,
            &["vfio/vfio", "vfio/noiommu-0", "vfio/devices/noiommu-vfio0", "iommu"],
        );
        let m = detect_in(&sysfs);
        assert_eq!(
            m,
            Modes {
                group: false,
                cdev: false,
                group_noiommu: true,
                cdev_noiommu: true,
            }
        );
        assert_eq!(m.choose(None).unwrap(), Mode::CDEV_NOIOMMU);
        std::fs::remove_dir_all(&root).unwrap();
        // An IOMMU and a real group: IOVA modes; a pre-7.3 noiommu group without a cdev.
        let (root, sysfs) = tree(
            "mixed",
            true,
            &["vfio/vfio", "vfio/noiommu-0", "vfio/3", "vfio/devices/vfio0", "iommu"],
        );
        let m = detect_in(&sysfs);
        assert!(m.group && m.cdev && m.group_noiommu && !m.cdev_noiommu, "{m:?}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn no_mode_says_what_is_missing() {
        let reason = |sysfs: &Sysfs| match no_mode(sysfs) {
            Error::Unsupported { reason, .. } => reason,
            e => panic!("{e}"),
        };
        // Nothing: the modules are not loaded.
        let (root, sysfs) = tree("nomode-bare", false, &[]);
        assert!(reason(&sysfs).contains("load the VFIO modules"));
        // The nodes, but no IOMMU and the no-IOMMU parameter off.
        std::fs::write(dev_file(&root, "vfio/vfio"), "").unwrap();
        std::fs::write(dev_file(&root, "iommu"), "").unwrap();
        let param = root.join("sys/module/vfio/parameters/enable_unsafe_noiommu_mode");
        std::fs::write(&param, "N\n").unwrap();
        assert_eq!(detect_in(&sysfs), Modes::default());
        let r = reason(&sysfs);
        assert!(
            r.contains("intel_iommu=on") && r.contains("enable_unsafe_noiommu_mode"),
            "{r}"
        );
        assert!(!r.contains("  "), "{r}");
        // An IOMMU, but the bound devices are no-IOMMU ones and the parameter is off now.
        std::fs::create_dir_all(root.join("sys/class/iommu/dmar0")).unwrap();
        std::fs::write(dev_file(&root, "vfio/noiommu-0"), "").unwrap();
        std::fs::write(dev_file(&root, "vfio/devices/noiommu-vfio0"), "").unwrap();
        assert_eq!(detect_in(&sysfs), Modes::default());
        assert!(reason(&sysfs).contains("no-IOMMU ones"));
        std::fs::remove_dir_all(&root).unwrap();
        // The forced-noiommu refusal reads as one sentence.
        let e = Modes::default().choose(Some("noiommu")).unwrap_err();
        assert!(!e.to_string().contains("  "), "{e}");
    }

    fn dev_file(root: &std::path::Path, name: &str) -> std::path::PathBuf {
        root.join("dev").join(name)
    }

    #[test]
    fn mediated_devices_are_no_evidence_of_an_iommu() {
        // A no-IOMMU boot with one mtty instance: its emulated group is `/dev/vfio/7` and its
        // cdev `vfio1`, but neither says an IOMMU is there.
        let (root, sysfs) = tree(
            "mdev",
            false,
            &[
                "vfio/vfio",
                "vfio/noiommu-0",
                "vfio/7",
                "vfio/devices/noiommu-vfio0",
                "vfio/devices/vfio1",
                "iommu",
            ],
        );
        let group = root.join("sys/kernel/iommu_groups/7");
        std::fs::create_dir_all(&group).unwrap();
        std::fs::write(group.join("name"), "vfio-noiommu\n").unwrap();
        let cdev = root.join("sys/class/vfio-dev/vfio1/device");
        std::fs::create_dir_all(&cdev).unwrap();
        std::os::unix::fs::symlink("../../../../bus/mdev", cdev.join("subsystem")).unwrap();
        let m = detect_in(&sysfs);
        assert!(!m.group && !m.cdev && m.group_noiommu && m.cdev_noiommu, "{m:?}");
        // The same group without the emulated name is a real IOMMU group.
        std::fs::write(group.join("name"), "\n").unwrap();
        assert!(detect_in(&sysfs).group);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
