//! The three ways a process can own a VFIO device, and which ones the running kernel offers.

use std::fmt;
use std::str::FromStr;

use crate::{Error, Result, Sysfs};

/// The environment variable that forces a mode: `group`, `noiommu` or `cdev`.
pub const MODE_ENV: &str = "VFIO_RS_MODE";

/// A VFIO mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Legacy group/container API with an IOMMU (`/dev/vfio/vfio`, `/dev/vfio/<group>`).
    Group,
    /// Legacy API without IOMMU translation (`/dev/vfio/noiommu-<group>`): DMA uses physical addresses.
    NoIommu,
    /// Device cdev + iommufd (`/dev/vfio/devices/vfioN`, `/dev/iommu`).
    Cdev,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Group => "group",
            Mode::NoIommu => "noiommu",
            Mode::Cdev => "cdev",
        })
    }
}

impl FromStr for Mode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "group" => Ok(Mode::Group),
            "noiommu" | "no-iommu" => Ok(Mode::NoIommu),
            "cdev" | "iommufd" => Ok(Mode::Cdev),
            _ => Err(Error::invalid(
                "parse mode",
                format!("{s:?}"),
                "expected group, noiommu or cdev",
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
    /// `/dev/vfio/vfio` exists and `vfio.enable_unsafe_noiommu_mode` is on.
    pub noiommu: bool,
    /// `/dev/iommu` and `/dev/vfio/devices` exist.
    pub cdev: bool,
}

/// Looks at `/dev` and `/sys` to see which modes are available.
pub fn detect() -> Modes {
    detect_in(&Sysfs::default())
}

/// [`detect`] with `/sys` and `/dev` taken from `sysfs` (e.g. a fake tree in tests, or a
/// container's mounts): its device nodes, `class/iommu` and the `vfio` module parameters.
pub fn detect_in(sysfs: &Sysfs) -> Modes {
    let iommu_class = sysfs.root().join("class/iommu");
    let dev = sysfs.dev_dir();
    let container = dev.join("vfio/vfio").exists();
    // Group nodes tell best: `/dev/vfio/<N>` are IOMMU groups, `/dev/vfio/noiommu-<N>` are not.
    // Before any device is bound, fall back to whether an IOMMU is registered at all.
    let (mut iommu_groups, mut noiommu_groups) = (false, false);
    if let Ok(dir) = std::fs::read_dir(dev.join("vfio")) {
        for e in dir.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            iommu_groups |= name.bytes().all(|b| b.is_ascii_digit());
            noiommu_groups |= name.starts_with("noiommu-");
        }
    }
    let has_iommu = std::fs::read_dir(&iommu_class)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false);
    let noiommu = sysfs.module_param_enabled("vfio", "enable_unsafe_noiommu_mode");
    Modes {
        group: container && (iommu_groups || (!noiommu_groups && has_iommu)),
        noiommu: container && noiommu,
        cdev: dev.join("iommu").exists() && dev.join("vfio/devices").is_dir(),
    }
}

impl Modes {
    /// Whether `mode` is among the modes offered.
    pub fn offers(&self, mode: Mode) -> bool {
        match mode {
            Mode::Group => self.group,
            Mode::NoIommu => self.noiommu,
            Mode::Cdev => self.cdev,
        }
    }

    /// The mode [`preferred`] picks among these: `forced` (the value of `VFIO_RS_MODE`) if given,
    /// else cdev, group, then no-IOMMU. Errors: as for [`preferred`].
    pub fn choose(&self, forced: Option<&str>) -> Result<Mode> {
        let modes = *self;
        if let Some(forced) = forced {
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
        if modes.cdev {
            Ok(Mode::Cdev)
        } else if modes.group {
            Ok(Mode::Group)
        } else if modes.noiommu {
            Ok(Mode::NoIommu)
        } else {
            Err(Error::unsupported(
                "VFIO",
                "this kernel",
                "no /dev/vfio/vfio and no /dev/iommu (is vfio-pci loaded?)",
            ))
        }
    }
}

/// The mode to use: the one named by `VFIO_RS_MODE` if set, else cdev, group, then no-IOMMU,
/// whichever the kernel offers first. Errors: Unsupported when the forced mode or every mode is
/// unavailable; InvalidArgument when `VFIO_RS_MODE` names no mode.
pub fn preferred() -> Result<Mode> {
    detect().choose(std::env::var(MODE_ENV).ok().as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display() {
        for m in [Mode::Group, Mode::NoIommu, Mode::Cdev] {
            assert_eq!(m.to_string().parse::<Mode>().unwrap(), m);
        }
        assert!("type1".parse::<Mode>().is_err());
    }

    #[test]
    fn detect_in_empty_tree_finds_nothing() {
        let m = detect_in(&Sysfs::at("/nonexistent/sys", "/nonexistent/dev"));
        assert_eq!(m, Modes::default());
        assert!(matches!(m.choose(None), Err(Error::Unsupported { .. })));
    }

    #[test]
    fn choose_prefers_cdev_then_group_then_noiommu_unless_forced() {
        let all = Modes {
            group: true,
            noiommu: true,
            cdev: true,
        };
        assert_eq!(all.choose(None).unwrap(), Mode::Cdev);
        let legacy = Modes { cdev: false, ..all };
        assert_eq!(legacy.choose(None).unwrap(), Mode::Group);
        let unsafe_only = Modes {
            noiommu: true,
            ..Modes::default()
        };
        assert_eq!(unsafe_only.choose(None).unwrap(), Mode::NoIommu);
        // VFIO_RS_MODE wins when the kernel offers that mode, and is refused when it does not.
        assert_eq!(all.choose(Some("group")).unwrap(), Mode::Group);
        assert_eq!(all.choose(Some("noiommu")).unwrap(), Mode::NoIommu);
        let e = legacy.choose(Some("cdev")).unwrap_err();
        assert!(
            matches!(e, Error::Unsupported { .. }) && e.to_string().contains(MODE_ENV),
            "{e}"
        );
        let e = all.choose(Some("type1")).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    }

    #[test]
    fn noiommu_groups_do_not_count_as_group_mode() {
        let root = std::env::temp_dir().join(format!("vfio-core-mode-{}", std::process::id()));
        let dev = root.join("dev");
        std::fs::create_dir_all(dev.join("vfio/devices")).unwrap();
        std::fs::create_dir_all(root.join("sys/module/vfio/parameters")).unwrap();
        std::fs::create_dir_all(root.join("sys/class/iommu/mock")).unwrap();
        std::fs::write(
            root.join("sys/module/vfio/parameters/enable_unsafe_noiommu_mode"),
            "Y\n",
        )
        .unwrap();
        for n in ["vfio/vfio", "vfio/noiommu-0", "iommu"] {
            std::fs::write(dev.join(n), "").unwrap();
        }
        let sysfs = Sysfs::at(root.join("sys"), &dev);
        let m = detect_in(&sysfs);
        assert_eq!(
            m,
            Modes {
                group: false,
                noiommu: true,
                cdev: true
            }
        );
        assert!(m.offers(Mode::Cdev) && m.offers(Mode::NoIommu) && !m.offers(Mode::Group));
        std::fs::write(dev.join("vfio/3"), "").unwrap();
        assert!(detect_in(&sysfs).group);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
