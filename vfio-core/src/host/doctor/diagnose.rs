//! Why the kernel refused to open a VFIO node, join a container, set its IOMMU, hand out a
//! device fd or bind a cdev: maps the errno and what was being done to the doctor's typed
//! [`Finding`], from sysfs and `/proc` reads. Called on error paths only (a refusal costs a few
//! file reads; a success nothing), by vfio-group and vfio-cdev, which attach the finding with
//! [`crate::Error::with_cause`].

use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};

use super::{Finding, Holder, interrupt_remapping, proc_dir, unsafe_interrupts};
use crate::{Errno, PciAddress, Sysfs};

/// Which backend's `allow_unsafe_interrupts` matters for a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backend {
    /// Group mode: a type1 container or iommufd's compatibility container (not known before
    /// `VFIO_SET_IOMMU` succeeds): either parameter being off can be the cause.
    Group,
    /// cdev mode: `iommufd.allow_unsafe_interrupts`.
    Iommufd,
}

/// The cause of a refused `open(2)` of a VFIO node (`/dev/vfio/<N>`, a device cdev,
/// `/dev/vfio/vfio`, `/dev/iommu`): EACCES or EPERM, the node's permissions
/// ([`Finding::NodeNotAccessible`]); EBUSY, the process that holds it ([`Finding::Busy`]);
/// ENOENT, [`Finding::NodeMissing`]. `None` for any other errno. `proc_` is the `/proc` to
/// look for holders in ([`proc_dir`] of the sysfs in use).
#[cold]
pub fn node_refusal(proc_: &Path, path: &Path, errno: Errno) -> Option<Finding> {
    match errno {
        Errno::ACCESS | Errno::PERM => Some(Finding::NodeNotAccessible {
            path: path.to_owned(),
            errno,
        }),
        Errno::BUSY => Some(Finding::Busy {
            path: path.to_owned(),
            holder: holders(proc_, path, None).into_iter().next(),
        }),
        Errno::NOENT => Some(Finding::NodeMissing { path: path.to_owned() }),
        _ => None,
    }
}

/// The cause of a refused `VFIO_GROUP_SET_CONTAINER`, `VFIO_SET_IOMMU` or
/// `VFIO_GROUP_GET_DEVICE_FD` on IOMMU group `group` (or of `VFIO_DEVICE_BIND_IOMMUFD` of a
/// device in it): EPERM (or EINVAL from `VFIO_GROUP_GET_DEVICE_FD` before Linux 5.19) is
/// [`Finding::GroupNotViable`] when a member is on a host driver, else
/// [`Finding::NoInterruptRemapping`] when interrupts are not remapped and the `backend`'s
/// `allow_unsafe_interrupts` is off; EBUSY is [`Finding::Busy`] naming who holds the group
/// node. `None` when none of these is found.
#[cold]
pub fn group_refusal(sysfs: &Sysfs, group: u32, errno: Errno, backend: Backend) -> Option<Finding> {
    match errno {
        Errno::PERM | Errno::INVAL => {
            let blockers = group_blockers(sysfs, group);
            if !blockers.is_empty() {
                return Some(Finding::GroupNotViable { group, blockers });
            }
            if errno != Errno::PERM || interrupt_remapping(sysfs) != Some(false) {
                return None;
            }
            let u = unsafe_interrupts(sysfs);
            let off = match backend {
                Backend::Group => u.type1 == Some(false) || u.iommufd == Some(false),
                Backend::Iommufd => u.iommufd == Some(false),
            };
            off.then_some(Finding::NoInterruptRemapping {
                type1_allowed: u.type1,
                iommufd_allowed: u.iommufd,
            })
        }
        Errno::BUSY => {
            let dev = sysfs.dev_dir().join("vfio");
            let nodes = [dev.join(group.to_string()), dev.join(format!("noiommu-{group}"))];
            let path = nodes.iter().find(|p| p.exists()).unwrap_or(&nodes[0]).clone();
            let holder = holders(&proc_dir(sysfs), &path, None).into_iter().next();
            Some(Finding::Busy { path, holder })
        }
        _ => None,
    }
}

/// The cause of a refused `VFIO_DEVICE_BIND_IOMMUFD` on the open cdev `cdev`: its device and
/// group are found from the fd (`fstat`, `<sysfs>/dev/char/<major>:<minor>/device`). EPERM and
/// EBUSY as [`group_refusal`] (EBUSY: the group is open in group mode); EINVAL is
/// [`Finding::Busy`] when another fd holds the same cdev (a cdev binds once: the device is
/// bound elsewhere).
#[cold]
pub fn bind_refusal(sysfs: &Sysfs, cdev: BorrowedFd<'_>, errno: Errno) -> Option<Finding> {
    if errno == Errno::INVAL {
        let link = PathBuf::from(format!("/proc/self/fd/{}", cdev.as_raw_fd()));
        let path = std::fs::read_link(link).ok()?;
        let holder = holders(&proc_dir(sysfs), &path, Some(cdev.as_raw_fd()))
            .into_iter()
            .next()?;
        return Some(Finding::Busy {
            path,
            holder: Some(holder),
        });
    }
    let st = rustix::fs::fstat(cdev).ok()?;
    let (major, minor) = (rustix::fs::major(st.st_rdev), rustix::fs::minor(st.st_rdev));
    let group_link = sysfs
        .root()
        .join("dev/char")
        .join(format!("{major}:{minor}"))
        .join("device/iommu_group");
    let group = std::fs::read_link(group_link)
        .ok()?
        .file_name()?
        .to_str()?
        .parse()
        .ok()?;
    group_refusal(sysfs, group, errno, Backend::Iommufd)
}

/// The cause of a device that has no IOMMU group: [`Finding::NoIommu`] when no IOMMU is
/// registered and no-IOMMU mode is off, else [`Finding::NoIommuGroup`].
#[cold]
pub fn no_group(sysfs: &Sysfs, device: &str) -> Finding {
    let real = super::iommu_units(sysfs)
        .iter()
        .any(|u| u.kind != super::IommuKind::Mock);
    if !real && !sysfs.module_param_enabled("vfio", "enable_unsafe_noiommu_mode") {
        Finding::NoIommu
    } else {
        Finding::NoIommuGroup {
            device: device.to_owned(),
        }
    }
}

/// The cause of a PCI function that vfio-pci cannot take (or that has no VFIO group or cdev)
/// because it has no IOMMU group: `<device>/iommu_group` is missing. With no-IOMMU mode off,
/// vfio-pci's probe fails for such a device (EINVAL, `vfio_group_find_or_alloc`): [`no_group`]
/// ([`Finding::NoIommu`] when no IOMMU is registered). With it on, vfio-pci makes a no-IOMMU
/// group when it binds, so a missing group is no cause, and a device on another driver (or
/// none) is [`Finding::NotOnVfioPci`]. `None` when the device does not exist or has a group.
#[cold]
pub fn groupless(sysfs: &Sysfs, addr: &PciAddress) -> Option<Finding> {
    let dir = sysfs.pci_device_dir(addr);
    if !dir.exists() || std::fs::symlink_metadata(dir.join("iommu_group")).is_ok() {
        return None;
    }
    let device = addr.to_string();
    if !sysfs.module_param_enabled("vfio", "enable_unsafe_noiommu_mode") {
        return Some(no_group(sysfs, &device));
    }
    match sysfs.driver(addr).ok()? {
        Some(d) if d.contains("vfio") => Some(no_group(sysfs, &device)),
        driver => Some(Finding::NotOnVfioPci { device, driver }),
    }
}

/// The members of IOMMU group `group` that make it non-viable, each with its driver: those on a
/// driver that does not leave DMA to VFIO (anything but `vfio*`, `pci-stub` and `pcieport`,
/// which the kernel tolerates). Empty when the group cannot be read.
pub fn group_blockers(sysfs: &Sysfs, group: u32) -> Vec<(String, String)> {
    sysfs
        .group_devices(group)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|addr| {
            let driver = sysfs.driver(&addr).ok()??;
            let tolerated = driver.starts_with("vfio") || driver == "pci-stub" || driver == "pcieport";
            (!tolerated).then(|| (addr.to_string(), driver))
        })
        .collect()
}

/// The processes that hold `path` open, found by reading every `<proc_>/<pid>/fd/*` link the
/// caller may read (all, for root; its own processes otherwise), other processes first, this one
/// last; `except` leaves out one fd of this process (the one being refused).
pub fn holders(proc_: &Path, path: &Path, except: Option<i32>) -> Vec<Holder> {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir(proc_) else {
        return Vec::new();
    };
    let mut found: Vec<Holder> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            let Ok(fds) = std::fs::read_dir(proc_.join(pid.to_string()).join("fd")) else {
                return false;
            };
            fds.flatten().any(|fd| {
                let own_excepted = pid == me
                    && except.is_some_and(|x| fd.file_name().to_str().and_then(|n| n.parse().ok()) == Some(x));
                !own_excepted && std::fs::read_link(fd.path()).is_ok_and(|t| t == path)
            })
        })
        .map(|pid| Holder {
            pid,
            comm: std::fs::read_to_string(proc_.join(pid.to_string()).join("comm"))
                .map(|c| c.trim().to_owned())
                .unwrap_or_default(),
        })
        .collect();
    found.sort_by_key(|h| (h.pid == me, h.pid));
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg_attr(miri, ignore = "reads /proc")]
    fn finds_this_process_holding_a_file() {
        let p = std::env::temp_dir().join(format!("vfio-diagnose-holder-{}", std::process::id()));
        std::fs::write(&p, "").unwrap();
        let f = std::fs::File::open(&p).unwrap();
        let s = Path::new("/proc");
        let h = holders(s, &p, None);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h[0].pid, std::process::id());
        assert!(!h[0].comm.is_empty());
        assert!(holders(s, &p, Some(f.as_raw_fd())).is_empty());
        let busy = node_refusal(s, &p, Errno::BUSY).unwrap();
        assert!(busy.to_string().contains("this process"), "{busy}");
        assert_eq!(busy.code(), "busy");
        drop(f);
        assert!(holders(s, &p, None).is_empty());
        std::fs::remove_file(&p).unwrap();
        assert!(matches!(
            node_refusal(s, &p, Errno::ACCESS),
            Some(Finding::NodeNotAccessible { .. })
        ));
        assert_eq!(node_refusal(s, &p, Errno::NOTTY), None);
    }

    #[test]
    #[cfg_attr(miri, ignore = "reads a fake sysfs tree")]
    fn a_refused_attach_names_the_members_on_host_drivers() {
        let tmp = std::env::temp_dir().join(format!("vfio-diagnose-group-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let devs = tmp.join("sys/kernel/iommu_groups/7/devices");
        std::fs::create_dir_all(&devs).unwrap();
        for (addr, driver) in [
            ("0000:00:03.0", Some("vfio-pci")),
            ("0000:00:03.1", Some("e1000e")),
            ("0000:00:03.2", Some("pcieport")),
            ("0000:00:03.3", None),
        ] {
            let d = tmp.join("sys/devices/pci0000:00").join(addr);
            std::fs::create_dir_all(&d).unwrap();
            if let Some(drv) = driver {
                let dd = tmp.join("sys/bus/pci/drivers").join(drv);
                std::fs::create_dir_all(&dd).unwrap();
                std::os::unix::fs::symlink(dd, d.join("driver")).unwrap();
            }
            std::os::unix::fs::symlink(&d, devs.join(addr)).unwrap();
            let bus = tmp.join("sys/bus/pci/devices");
            std::fs::create_dir_all(&bus).unwrap();
            std::os::unix::fs::symlink(&d, bus.join(addr)).unwrap();
        }
        let sysfs = Sysfs::at(tmp.join("sys"), tmp.join("dev"));
        let want = Finding::GroupNotViable {
            group: 7,
            blockers: vec![("0000:00:03.1".into(), "e1000e".into())],
        };
        assert_eq!(
            group_refusal(&sysfs, 7, Errno::PERM, Backend::Group),
            Some(want.clone())
        );
        assert_eq!(group_refusal(&sysfs, 7, Errno::INVAL, Backend::Iommufd), Some(want));
        // A viable group and no IOMMU at all: nothing to name for EPERM.
        assert_eq!(group_refusal(&sysfs, 8, Errno::PERM, Backend::Group), None);
        assert_eq!(group_refusal(&sysfs, 7, Errno::NOTTY, Backend::Group), None);
        assert_eq!(no_group(&sysfs, "0000:00:03.0"), Finding::NoIommu);
        std::fs::create_dir_all(tmp.join("sys/class/iommu/dmar0/intel-iommu")).unwrap();
        assert_eq!(
            no_group(&sysfs, "0000:00:03.0"),
            Finding::NoIommuGroup {
                device: "0000:00:03.0".into()
            }
        );
        std::fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    #[cfg_attr(miri, ignore = "reads a fake sysfs tree")]
    fn a_device_without_a_group_is_no_iommu_unless_the_mode_is_on() {
        let tmp = std::env::temp_dir().join(format!("vfio-diagnose-groupless-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let sysfs = Sysfs::at(tmp.join("sys"), tmp.join("dev"));
        let addr: PciAddress = "0000:00:05.0".parse().unwrap();
        assert_eq!(groupless(&sysfs, &addr), None, "no such device");
        let dir = tmp.join("sys/bus/pci/devices/0000:00:05.0");
        std::fs::create_dir_all(&dir).unwrap();
        // Off vfio-pci, no IOMMU, no-IOMMU mode off (or vfio not loaded).
        assert_eq!(groupless(&sysfs, &addr), Some(Finding::NoIommu));
        let params = tmp.join("sys/module/vfio/parameters");
        std::fs::create_dir_all(&params).unwrap();
        std::fs::write(params.join("enable_unsafe_noiommu_mode"), "N\n").unwrap();
        assert_eq!(groupless(&sysfs, &addr), Some(Finding::NoIommu));
        // The mode on: vfio-pci would make a group; what is missing is the driver.
        std::fs::write(params.join("enable_unsafe_noiommu_mode"), "Y\n").unwrap();
        assert_eq!(
            groupless(&sysfs, &addr),
            Some(Finding::NotOnVfioPci {
                device: "0000:00:05.0".into(),
                driver: None
            })
        );
        std::os::unix::fs::symlink("../../../kernel/iommu_groups/3", dir.join("iommu_group")).unwrap();
        assert_eq!(groupless(&sysfs, &addr), None, "a group (even a dangling link)");
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
