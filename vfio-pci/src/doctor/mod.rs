//! `lsvfio doctor`: whether and how this machine can use VFIO, device by device.
//!
//! [`diagnose`] combines the machine facts of [`vfio_core::host::doctor::examine`] (IOMMU,
//! interrupt remapping, nodes, limits, kernel features) with what each PCI function needs: its
//! driver, IOMMU group, the group's default domain and viability (which member blocks it, on
//! which driver), ACS along its path, its nodes for this user, and the modes that open it.
//! Every problem is a typed [`Finding`] with its fix; [`Report::blocked`] says whether a device
//! asked about cannot be used. [`render`] prints it for people and as JSON.
//!
//! ```no_run
//! let addr = "0000:00:03.0".parse()?;
//! let report = vfio_pci::doctor::diagnose(&vfio_core::Sysfs::default(), &[addr])?;
//! print!("{}", vfio_pci::doctor::render::text(&report));
//! if report.blocked() {
//!     std::process::exit(1);
//! }
//! # Ok::<(), vfio_core::Error>(())
//! ```

pub mod acs;
pub mod render;

use vfio_core::host::doctor::diagnose as causes;
pub use vfio_core::host::doctor::{
    DomainType, Finding, Holder, KernelVersion, MachineReport, NodeAccess, Severity, group_domain_type,
    group_is_noiommu,
};

use vfio_core::{Mode, PciAddress, Result, Sysfs};

use crate::inventory::{self, DeviceSummary};
use acs::AcsHop;

/// What the doctor found for one PCI function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceReport {
    /// What the inventory says (ids, driver, group, nodes, modes).
    pub summary: DeviceSummary,
    /// The group's default domain type.
    pub domain: Option<DomainType>,
    /// The group is a no-IOMMU one (physical addresses).
    pub noiommu_group: bool,
    /// The bridges above it, nearest first, with their ACS.
    pub acs_path: Vec<AcsHop>,
    /// Its group node and cdev, for this user.
    pub nodes: Vec<NodeAccess>,
    /// What is wrong or worth knowing for this device (machine-wide findings are in
    /// [`MachineReport::findings`]).
    pub findings: Vec<Finding>,
}

impl DeviceReport {
    /// Whether something blocks the device: a device finding, or a machine finding that
    /// blocks every device, of severity [`Severity::Blocker`], or no mode to open it.
    pub fn blocked(&self, machine: &MachineReport) -> bool {
        self.findings.iter().any(|f| f.severity() == Severity::Blocker)
            || machine
                .findings
                .iter()
                .any(|f| f.severity() == Severity::Blocker && !matches!(f, Finding::NodeNotAccessible { .. }))
    }

    /// The modes that open it now for this user: the inventory's, less those whose nodes
    /// this user may not open.
    pub fn usable_modes(&self, machine: &MachineReport) -> Vec<Mode> {
        let ok = |p: &std::path::Path| {
            self.nodes
                .iter()
                .chain(&machine.nodes)
                .find(|n| n.path == p)
                .is_none_or(|n| n.access.is_ok())
        };
        let s = &self.summary;
        let container = machine.nodes.first().map(|n| n.path.clone());
        s.modes
            .iter()
            .copied()
            .filter(|m| match m.interface() {
                vfio_core::Interface::Group => {
                    s.group_node.as_deref().is_some_and(ok) && container.as_deref().is_some_and(ok)
                }
                vfio_core::Interface::Cdev => {
                    s.cdev.as_ref().is_some_and(|c| ok(&c.path))
                        && machine
                            .nodes
                            .iter()
                            .any(|n| n.path.ends_with("iommu") && n.access.is_ok())
                }
            })
            .collect()
    }
}

/// The machine and the devices asked about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Machine-wide facts and findings.
    pub machine: MachineReport,
    /// One report per device.
    pub devices: Vec<DeviceReport>,
    /// The devices were named by the caller (not every vfio-pci device of the machine).
    pub asked: bool,
}

impl Report {
    /// Whether a device that was asked about cannot be used (what `lsvfio doctor`'s exit
    /// status says). Without devices asked about, only a machine-wide blocker counts.
    pub fn blocked(&self) -> bool {
        if self.asked {
            self.devices.iter().any(|d| d.blocked(&self.machine))
        } else {
            self.machine.findings.iter().any(|f| f.severity() == Severity::Blocker)
        }
    }

    /// The report for `addr`.
    pub fn device(&self, addr: &PciAddress) -> Option<&DeviceReport> {
        self.devices.iter().find(|d| d.summary.address == *addr)
    }
}

/// Examines one PCI function (`machine` from [`vfio_core::host::doctor::examine`]). Errors:
/// Path (ENOENT) naming the sysfs directory when the function does not exist.
pub fn diagnose_device(sysfs: &Sysfs, machine: &MachineReport, addr: &PciAddress) -> Result<DeviceReport> {
    let summary = inventory::describe(sysfs, addr)?;
    let device = addr.to_string();
    let mut findings = Vec::new();
    let on_vfio = summary.driver.as_deref().is_some_and(|d| d.contains("vfio"));
    if !on_vfio {
        findings.push(Finding::NotOnVfioPci {
            device: device.clone(),
            driver: summary.driver.clone(),
        });
    }
    let domain = summary.iommu_group.and_then(|g| group_domain_type(sysfs, g));
    let noiommu_group = summary.iommu_group.is_some_and(|g| group_is_noiommu(sysfs, g));
    let acs_path = acs::path_to_root(sysfs, addr);
    match summary.iommu_group {
        None => findings.push(Finding::NoIommuGroup { device: device.clone() }),
        Some(group) => {
            if domain == Some(DomainType::Identity) {
                findings.push(Finding::IommuPassthrough { group });
            }
            // The device itself on a host driver is NotOnVfioPci, not a blocker of its group.
            let blockers: Vec<(String, String)> = summary
                .blockers
                .iter()
                .filter(|(a, _)| a != addr)
                .map(|(a, d)| (a.to_string(), d.clone()))
                .collect();
            if !blockers.is_empty() {
                findings.push(Finding::GroupNotViable { group, blockers });
                // Why the group is shared: the nearest bridge that does not isolate.
                if let Some(h) = acs_path.iter().find(|h| h.acs.isolates() == Some(false)) {
                    findings.push(Finding::AcsMissing {
                        bridge: h.bridge.to_string(),
                    });
                }
            }
        }
    }
    let mut nodes = Vec::new();
    if let Some(g) = &summary.group_node {
        nodes.push(NodeAccess::check(g));
    }
    if let Some(c) = &summary.cdev {
        nodes.push(NodeAccess::check(&c.path));
    }
    for n in &nodes {
        if let Some(f @ Finding::NodeNotAccessible { .. }) = n.finding() {
            findings.push(f);
        }
    }
    // A group node or cdev another process holds: name it (this process holding it is no
    // obstacle to itself).
    let proc_ = vfio_core::host::doctor::proc_dir(sysfs);
    for n in nodes.iter().filter(|n| n.access.is_ok()) {
        let me = std::process::id();
        if let Some(h) = causes::holders(&proc_, &n.path, None).into_iter().find(|h| h.pid != me) {
            findings.push(Finding::Busy {
                path: n.path.clone(),
                holder: Some(h),
            });
        }
    }
    // The machine's own nodes, for the modes this device would use.
    let report = DeviceReport {
        summary,
        domain,
        noiommu_group,
        acs_path,
        nodes,
        findings,
    };
    let mut report = report;
    if on_vfio && report.summary.group_viable {
        if report.summary.modes.is_empty() {
            report.findings.push(Finding::NoModeOffered { device: device.clone() });
        } else if report.usable_modes(machine).is_empty() {
            // Every mode needs a machine node this user cannot open: name them here.
            for n in &machine.nodes {
                if let Some(f @ Finding::NodeNotAccessible { .. }) = n.finding() {
                    report.findings.push(f);
                }
            }
            if !report.findings.iter().any(|f| f.severity() == Severity::Blocker) {
                report.findings.push(Finding::NoModeOffered { device });
            }
        }
    }
    Ok(report)
}

/// The doctor's report for `addrs`, or, when `addrs` is empty, for every function bound to a
/// VFIO driver. Errors: Path (ENOENT) naming a function that does not exist; Path when
/// `/sys/bus/pci/devices` cannot be listed.
pub fn diagnose(sysfs: &Sysfs, addrs: &[PciAddress]) -> Result<Report> {
    let machine = vfio_core::host::doctor::examine(sysfs);
    let asked = !addrs.is_empty();
    let list: Vec<PciAddress> = if asked {
        addrs.to_vec()
    } else {
        sysfs
            .pci_devices()?
            .into_iter()
            .filter(|a| sysfs.driver(a).ok().flatten().is_some_and(|d| d.contains("vfio")))
            .collect()
    };
    let devices = list
        .iter()
        .map(|a| diagnose_device(sysfs, &machine, a))
        .collect::<Result<_>>()?;
    Ok(Report {
        machine,
        devices,
        asked,
    })
}

/// The findings that explain a refused open of `addr` (`err` from `PciDevice::open`,
/// `Container::assign` and the like), by its errno: EPERM from `VFIO_SET_IOMMU`,
/// `VFIO_GROUP_GET_DEVICE_FD` or `VFIO_DEVICE_BIND_IOMMUFD` (a group member on a host driver;
/// no interrupt remapping without `allow_unsafe_interrupts`), EACCES (a node this user may not
/// open), ENOENT (a missing node or group, the wrong driver), ENOMEM (`RLIMIT_MEMLOCK`), ENOSPC
/// (type1's `dma_entry_limit`), EBUSY or EINVAL (another process holds the group or device:
/// `Busy`). The error's own [`vfio_core::Error::cause`] comes first. Empty when the error has no
/// cause nor errno and the doctor finds no such cause. Errors: those of [`diagnose`] (the device
/// does not exist).
pub fn explain(sysfs: &Sysfs, addr: &PciAddress, err: &vfio_core::Error) -> Result<Vec<Finding>> {
    use vfio_core::Errno;
    // The cause the library found when it was refused comes first; the doctor adds what else
    // fits the errno.
    let mut found: Vec<Finding> = err.cause().cloned().into_iter().collect();
    let Some(errno) = err.errno() else {
        return Ok(found);
    };
    let machine = vfio_core::host::doctor::examine(sysfs);
    let device = diagnose_device(sysfs, &machine, addr)?;
    let fits = |f: &Finding| match errno {
        Errno::PERM => {
            matches!(
                f,
                Finding::GroupNotViable { .. } | Finding::NotOnVfioPci { .. } | Finding::NoIommu
            ) || (matches!(f, Finding::NoInterruptRemapping { .. }) && f.severity() == Severity::Blocker)
        }
        Errno::ACCESS => matches!(f, Finding::NodeNotAccessible { .. }),
        Errno::NOENT | Errno::NODEV => matches!(
            f,
            Finding::NodeMissing { .. }
                | Finding::NoIommuGroup { .. }
                | Finding::NotOnVfioPci { .. }
                | Finding::NoModeOffered { .. }
                | Finding::NoIommu
        ),
        Errno::NOMEM => matches!(f, Finding::MemlockLow { exempt: false, .. }),
        Errno::NOSPC => matches!(f, Finding::DmaEntryLimit { .. }),
        Errno::BUSY | Errno::INVAL => matches!(f, Finding::Busy { .. }),
        _ => false,
    };
    for f in device.findings.iter().chain(&machine.findings).filter(|f| fits(f)) {
        if !found.contains(f) {
            found.push(f.clone());
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;
    use std::path::{Path, PathBuf};

    /// A scratch directory removed on drop.
    struct Scratch(PathBuf);

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// A function at `pci0000:00/<parent>/<addr>` (or on the root bus) in group `group`.
    fn add_fn(root: &Path, parent: Option<&str>, addr: &str, class: &str, driver: Option<&str>, group: u32) {
        let mut real = root.join("sys/devices/pci0000:00");
        if let Some(p) = parent {
            real = real.join(p);
        }
        let dir = real.join(addr);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("vendor"), "0x1234").unwrap();
        fs::write(dir.join("device"), "0x11e8").unwrap();
        fs::write(dir.join("class"), class).unwrap();
        fs::create_dir_all(root.join("sys/bus/pci/devices")).unwrap();
        symlink(&dir, root.join("sys/bus/pci/devices").join(addr)).unwrap();
        let g = root.join(format!("sys/kernel/iommu_groups/{group}"));
        fs::create_dir_all(g.join("devices").join(addr)).unwrap();
        fs::write(g.join("type"), "DMA-FQ\n").unwrap();
        symlink(&g, dir.join("iommu_group")).unwrap();
        if let Some(d) = driver {
            let drv = root.join("sys/bus/pci/drivers").join(d);
            fs::create_dir_all(&drv).unwrap();
            symlink(drv, dir.join("driver")).unwrap();
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "access(2), getrlimit and /proc reads are not supported by Miri")]
    #[cfg_attr(
        miri,
        ignore = "Sysfs::vfio_cdev opens directories with O_DIRECTORY and openat, which Miri cannot run"
    )]
    fn findings_for_viable_blocked_and_foreign_devices() {
        let root = std::env::temp_dir().join(format!("vfio-pci-doctor-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let _scratch = Scratch(root.clone());
        // A bridge without ACS (a 4 KiB config space with no extended capability) above an edu
        // on vfio-pci and a function on a host driver, in one group.
        add_fn(&root, None, "0000:00:08.0", "0x060400", Some("pcieport"), 4);
        fs::write(root.join("sys/devices/pci0000:00/0000:00:08.0/config"), vec![0u8; 4096]).unwrap();
        add_fn(
            &root,
            Some("0000:00:08.0"),
            "0000:01:01.0",
            "0x00ff00",
            Some("vfio-pci"),
            4,
        );
        add_fn(
            &root,
            Some("0000:00:08.0"),
            "0000:01:02.0",
            "0x00ff00",
            Some("virtio-pci"),
            4,
        );
        // An edu alone in group 3 with its node; an nvme on its host driver.
        add_fn(&root, None, "0000:00:03.0", "0x00ff00", Some("vfio-pci"), 3);
        add_fn(&root, None, "0000:00:04.0", "0x010802", Some("nvme"), 5);
        fs::create_dir_all(root.join("dev/vfio")).unwrap();
        for n in ["dev/vfio/vfio", "dev/vfio/3", "dev/vfio/4"] {
            fs::write(root.join(n), "").unwrap();
        }
        fs::create_dir_all(root.join("sys/class/iommu/dmar0/intel-iommu")).unwrap();
        let s = Sysfs::at(root.join("sys"), root.join("dev"));
        let addrs: Vec<PciAddress> = ["0000:00:03.0", "0000:01:01.0", "0000:00:04.0"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let r = diagnose(&s, &addrs).unwrap();
        assert!(r.asked && r.blocked());
        let ok = r.device(&addrs[0]).unwrap();
        assert_eq!(ok.domain, Some(DomainType::DmaFq));
        assert!(ok.findings.is_empty(), "{:?}", ok.findings);
        assert!(!ok.blocked(&r.machine));
        assert_eq!(ok.usable_modes(&r.machine), vec![Mode::GROUP]);
        let shared = r.device(&addrs[1]).unwrap();
        assert_eq!(shared.acs_path.len(), 1);
        assert_eq!(shared.acs_path[0].acs, acs::Acs::Absent);
        assert_eq!(
            shared.findings,
            vec![
                Finding::GroupNotViable {
                    group: 4,
                    blockers: vec![("0000:01:02.0".into(), "virtio-pci".into())]
                },
                Finding::AcsMissing {
                    bridge: "0000:00:08.0".into()
                }
            ]
        );
        assert!(shared.blocked(&r.machine));
        let nvme = r.device(&addrs[2]).unwrap();
        assert_eq!(
            nvme.findings,
            vec![Finding::NotOnVfioPci {
                device: "0000:00:04.0".into(),
                driver: Some("nvme".into())
            }]
        );
        let text = render::text(&r);
        assert!(text.contains("lsvfio doctor: 3 device(s), 2 blocked"), "{text}");
        assert!(text.contains("0000:01:02.0 on virtio-pci"), "{text}");
        let json = render::json(&r);
        assert!(
            json.contains("\"code\":\"acs-missing\"") && json.contains("\"blocked\":true"),
            "{json}"
        );
        // Without addresses: the two vfio-pci functions, and only a machine blocker counts.
        let all = diagnose(&s, &[]).unwrap();
        assert_eq!(all.devices.len(), 2);
        assert!(!all.asked && !all.blocked());
        assert!(diagnose(&s, &["0000:09:00.0".parse().unwrap()]).is_err());
    }
}
