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

pub use vfio_core::host::doctor::{
    DomainType, Finding, KernelVersion, MachineReport, NodeAccess, Severity, group_domain_type, group_is_noiommu,
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
            if !summary.blockers.is_empty() {
                findings.push(Finding::GroupNotViable {
                    group,
                    blockers: summary
                        .blockers
                        .iter()
                        .map(|(a, d)| (a.to_string(), d.clone()))
                        .collect(),
                });
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
