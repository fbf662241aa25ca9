//! Why a machine or a device cannot use VFIO (or can, with a caveat), and what to do about it:
//! one typed cause each, so that errors and `lsvfio doctor` say the same thing.

use std::fmt;
use std::path::PathBuf;

use crate::Errno;

use super::KernelVersion;

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Worth knowing; nothing fails because of it.
    Info,
    /// Works, with a caveat (no isolation, a low limit).
    Warning,
    /// Something that is asked for fails until it is fixed.
    Blocker,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Blocker => "blocker",
        })
    }
}

/// One cause, with the facts that name it. [`Finding::severity`] says how much it matters,
/// [`Finding::fix`] what to do; `Display` says what is wrong. `Debug` shows the fields, errnos
/// by name.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Finding {
    /// No IOMMU is registered (`/sys/class/iommu` is empty) and no-IOMMU mode is off: VFIO
    /// offers no mode at all.
    NoIommu,
    /// No IOMMU, and `vfio.enable_unsafe_noiommu_mode` is on: devices DMA to physical
    /// addresses, with nothing confining them (and the kernel is tainted when one opens).
    NoIommuMode,
    /// The group's default domain is `identity` (`iommu=pt` or `iommu.passthrough=1`): the
    /// IOMMU translates nothing for the host driver. VFIO still gives the group a DMA domain
    /// of its own when it takes it, so this is no obstacle; it is a hint when host DMA is
    /// trusted less than expected.
    IommuPassthrough {
        /// The IOMMU group.
        group: u32,
    },
    /// The IOMMU does not remap (isolate) MSIs: a device could raise any interrupt. VFIO
    /// refuses such a group (`VFIO_SET_IOMMU`, `VFIO_GROUP_GET_DEVICE_FD` or
    /// `VFIO_DEVICE_BIND_IOMMUFD` fail with EPERM) unless `allow_unsafe_interrupts` is set.
    NoInterruptRemapping {
        /// `vfio_iommu_type1.allow_unsafe_interrupts` (group mode on the type1 driver), `None`
        /// when that module is not loaded.
        type1_allowed: Option<bool>,
        /// `iommufd.allow_unsafe_interrupts` (cdev mode and iommufd's compat container),
        /// `None` when iommufd is not loaded.
        iommufd_allowed: Option<bool>,
    },
    /// A member of the device's IOMMU group is bound to a host driver: both group and cdev
    /// mode take DMA ownership of the whole group, and the kernel refuses (EPERM).
    GroupNotViable {
        /// The IOMMU group.
        group: u32,
        /// The members that block it, with their drivers.
        blockers: Vec<(String, String)>,
    },
    /// An upstream bridge of the device has no ACS (Access Control Services) capability, or
    /// has it with request redirection off: functions below it can reach each other without
    /// the IOMMU, so the kernel puts them in one group.
    AcsMissing {
        /// The bridge.
        bridge: String,
    },
    /// The device is not bound to vfio-pci (or a vfio variant driver).
    NotOnVfioPci {
        /// The device.
        device: String,
        /// Its driver, `None` when it has none.
        driver: Option<String>,
    },
    /// The device has no IOMMU group (no IOMMU translates for it, and no-IOMMU mode is off).
    NoIommuGroup {
        /// The device.
        device: String,
    },
    /// A VFIO node the device needs does not exist.
    NodeMissing {
        /// The node.
        path: PathBuf,
    },
    /// The invoking user may not open a node read-write (`access(2)` refused it).
    NodeNotAccessible {
        /// The node.
        path: PathBuf,
        /// What `access(2)` answered (EACCES, EPERM).
        errno: Errno,
    },
    /// `RLIMIT_MEMLOCK` is below what DMA buffers usually need; every page mapped for DMA is
    /// pinned and charged against it (type1: `locked_vm`; iommufd: per user or per process).
    MemlockLow {
        /// The soft limit in bytes.
        limit: u64,
        /// The process has `CAP_IPC_LOCK`, which exempts it from the limit.
        exempt: bool,
    },
    /// type1's `dma_entry_limit` caps the mappings of one container (65,535 by default).
    DmaEntryLimit {
        /// `/sys/module/vfio_iommu_type1/parameters/dma_entry_limit`.
        limit: u32,
    },
    /// The kernel has no VFIO device cdev: cdev mode is not offered.
    NoCdev {
        /// The running kernel, when known.
        kernel: Option<KernelVersion>,
    },
    /// The running kernel is older than a feature of the feature table needs.
    KernelTooOld {
        /// The feature, as [`super::KERNEL_FEATURES`] names it.
        feature: &'static str,
        /// The first release that has it.
        needs: KernelVersion,
        /// The running kernel.
        running: KernelVersion,
    },
    /// The device is ready, but no mode the kernel offers can open it (no group node and no
    /// cdev for it).
    NoModeOffered {
        /// The device.
        device: String,
    },
    /// Another process (or another handle of this one) holds the group node or the device:
    /// a group has one opener at a time (EBUSY), a device cdev binds once (EINVAL), and a
    /// device whose group is open in group mode cannot bind through its cdev (EBUSY).
    Busy {
        /// The node that is held: `/dev/vfio/<N>`, or the device's cdev.
        path: PathBuf,
        /// Who holds it, found by reading the `/proc/<pid>/fd` links; `None` where `/proc`
        /// does not show it (another user's processes, for an unprivileged caller).
        holder: Option<Holder>,
    },
    /// A device cdev node is not the character device sysfs names for the device (a stale
    /// or hand-made node): it is not used.
    CdevMismatch {
        /// The node.
        path: PathBuf,
        /// `major:minor` sysfs gives for the device (`vfio-dev/vfioN/dev`).
        expected: (u32, u32),
        /// What the node is (`None`: not a character device).
        found: Option<(u32, u32)>,
    },
}

impl fmt::Debug for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::NoIommu => f.write_str("NoIommu"),
            Finding::NoIommuMode => f.write_str("NoIommuMode"),
            Finding::IommuPassthrough { group } => f.debug_struct("IommuPassthrough").field("group", group).finish(),
            Finding::NoInterruptRemapping {
                type1_allowed,
                iommufd_allowed,
            } => f
                .debug_struct("NoInterruptRemapping")
                .field("type1_allowed", type1_allowed)
                .field("iommufd_allowed", iommufd_allowed)
                .finish(),
            Finding::GroupNotViable { group, blockers } => f
                .debug_struct("GroupNotViable")
                .field("group", group)
                .field("blockers", blockers)
                .finish(),
            Finding::AcsMissing { bridge } => f.debug_struct("AcsMissing").field("bridge", bridge).finish(),
            Finding::NotOnVfioPci { device, driver } => f
                .debug_struct("NotOnVfioPci")
                .field("device", device)
                .field("driver", driver)
                .finish(),
            Finding::NoIommuGroup { device } => f.debug_struct("NoIommuGroup").field("device", device).finish(),
            Finding::NodeMissing { path } => f.debug_struct("NodeMissing").field("path", path).finish(),
            Finding::NodeNotAccessible { path, errno } => f
                .debug_struct("NodeNotAccessible")
                .field("path", path)
                .field("errno", &ErrnoDebug(*errno))
                .finish(),
            Finding::MemlockLow { limit, exempt } => f
                .debug_struct("MemlockLow")
                .field("limit", limit)
                .field("exempt", exempt)
                .finish(),
            Finding::DmaEntryLimit { limit } => f.debug_struct("DmaEntryLimit").field("limit", limit).finish(),
            Finding::NoCdev { kernel } => f.debug_struct("NoCdev").field("kernel", kernel).finish(),
            Finding::KernelTooOld {
                feature,
                needs,
                running,
            } => f
                .debug_struct("KernelTooOld")
                .field("feature", feature)
                .field("needs", needs)
                .field("running", running)
                .finish(),
            Finding::NoModeOffered { device } => f.debug_struct("NoModeOffered").field("device", device).finish(),
            Finding::Busy { path, holder } => f
                .debug_struct("Busy")
                .field("path", path)
                .field("holder", holder)
                .finish(),
            Finding::CdevMismatch { path, expected, found } => f
                .debug_struct("CdevMismatch")
                .field("path", path)
                .field("expected", expected)
                .field("found", found)
                .finish(),
        }
    }
}

/// An errno by name in `Debug` output.
struct ErrnoDebug(Errno);

impl fmt::Debug for ErrnoDebug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match crate::errno_name(self.0) {
            Some(n) => f.write_str(n),
            None => write!(f, "errno {}", self.0.raw_os_error()),
        }
    }
}

/// A process that holds a VFIO node open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Its pid.
    pub pid: u32,
    /// Its name (`/proc/<pid>/comm`), empty when it cannot be read.
    pub comm: String,
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.pid == std::process::id() {
            write!(f, "this process ({}, pid {})", self.comm, self.pid)
        } else {
            write!(f, "process {} ({})", self.pid, self.comm)
        }
    }
}

impl Finding {
    /// How much it matters. [`Finding::NoInterruptRemapping`] blocks unless a loaded backend
    /// allows unsafe interrupts; [`Finding::MemlockLow`] is a warning unless `CAP_IPC_LOCK`
    /// exempts the process.
    pub fn severity(&self) -> Severity {
        match self {
            Finding::NoIommu
            | Finding::GroupNotViable { .. }
            | Finding::NotOnVfioPci { .. }
            | Finding::NoIommuGroup { .. }
            | Finding::NodeMissing { .. }
            | Finding::NodeNotAccessible { .. }
            | Finding::NoModeOffered { .. }
            | Finding::Busy { .. }
            | Finding::CdevMismatch { .. } => Severity::Blocker,
            Finding::NoInterruptRemapping {
                type1_allowed,
                iommufd_allowed,
            } => {
                if *type1_allowed == Some(true) || *iommufd_allowed == Some(true) {
                    Severity::Warning
                } else {
                    Severity::Blocker
                }
            }
            Finding::NoIommuMode => Severity::Warning,
            Finding::MemlockLow { exempt, .. } => {
                if *exempt {
                    Severity::Info
                } else {
                    Severity::Warning
                }
            }
            Finding::IommuPassthrough { .. }
            | Finding::AcsMissing { .. }
            | Finding::DmaEntryLimit { .. }
            | Finding::NoCdev { .. }
            | Finding::KernelTooOld { .. } => Severity::Info,
        }
    }

    /// A short stable name for programs (`lsvfio doctor --json`): `no-iommu`,
    /// `group-not-viable`, ...
    pub fn code(&self) -> &'static str {
        match self {
            Finding::NoIommu => "no-iommu",
            Finding::NoIommuMode => "noiommu-mode",
            Finding::IommuPassthrough { .. } => "iommu-passthrough",
            Finding::NoInterruptRemapping { .. } => "no-interrupt-remapping",
            Finding::GroupNotViable { .. } => "group-not-viable",
            Finding::AcsMissing { .. } => "acs-missing",
            Finding::NotOnVfioPci { .. } => "not-on-vfio-pci",
            Finding::NoIommuGroup { .. } => "no-iommu-group",
            Finding::NodeMissing { .. } => "node-missing",
            Finding::NodeNotAccessible { .. } => "node-not-accessible",
            Finding::MemlockLow { .. } => "memlock-low",
            Finding::DmaEntryLimit { .. } => "dma-entry-limit",
            Finding::NoCdev { .. } => "no-cdev",
            Finding::KernelTooOld { .. } => "kernel-too-old",
            Finding::NoModeOffered { .. } => "no-mode-offered",
            Finding::Busy { .. } => "busy",
            Finding::CdevMismatch { .. } => "cdev-mismatch",
        }
    }

    /// What to do about it.
    pub fn fix(&self) -> String {
        match self {
            Finding::NoIommu => "enable the IOMMU in firmware (VT-d / AMD-Vi) and on the kernel command line \
                 (intel_iommu=on or amd_iommu=on); without one, only the unsafe no-IOMMU mode works \
                 (vfio.enable_unsafe_noiommu_mode=1)"
                .into(),
            Finding::NoIommuMode => "only for trusted devices: nothing stops a device's DMA; enable an IOMMU \
                 (intel_iommu=on or amd_iommu=on) for isolation"
                .into(),
            Finding::IommuPassthrough { .. } => {
                "nothing for VFIO; for translated host DMA boot with iommu.passthrough=0 \
                 (or without iommu=pt)"
                    .into()
            }
            Finding::NoInterruptRemapping {
                type1_allowed,
                iommufd_allowed,
            } => {
                let mut off = Vec::new();
                if *type1_allowed == Some(false) {
                    off.push("vfio_iommu_type1.allow_unsafe_interrupts=1");
                }
                if *iommufd_allowed == Some(false) {
                    off.push("iommufd.allow_unsafe_interrupts=1");
                }
                let mut s = String::from(
                    "enable interrupt remapping (intremap=on, x2APIC; on VMs an IOMMU that remaps: \
                     intel-iommu,intremap=on)",
                );
                if !off.is_empty() {
                    s.push_str(&format!(
                        ", or, if devices are trusted, set {} (kernel command line, or write 1 to \
                         /sys/module/<module>/parameters/allow_unsafe_interrupts)",
                        off.join(" and ")
                    ));
                }
                s
            }
            Finding::GroupNotViable { blockers, .. } => {
                let names: Vec<String> = blockers.iter().map(|(d, _)| d.clone()).collect();
                format!(
                    "bind every member of the group to vfio-pci (lsvfio bind {}), or unbind it from \
                     its driver",
                    names.join(" ")
                )
            }
            Finding::AcsMissing { .. } => "put the device in a slot whose path has ACS (a root port with ACS), \
                 or give every function behind that bridge to VFIO"
                .into(),
            Finding::NotOnVfioPci { device, .. } => format!("lsvfio bind {device}"),
            Finding::NoIommuGroup { .. } => "enable the IOMMU (intel_iommu=on or amd_iommu=on), or, for trusted \
                 devices, vfio.enable_unsafe_noiommu_mode=1"
                .into(),
            Finding::NodeMissing { path } => format!(
                "load the VFIO modules (vfio-pci, vfio_iommu_type1 or iommufd) and bind the device to \
                 vfio-pci; then {} appears",
                path.display()
            ),
            Finding::NodeNotAccessible { path, .. } => format!(
                "run as root, or give the user read-write access to {} (a udev rule: \
                 SUBSYSTEM==\"vfio\", GROUP=\"vfio\", MODE=\"0660\")",
                path.display()
            ),
            Finding::MemlockLow { exempt: true, .. } => {
                "nothing while the process keeps CAP_IPC_LOCK; without it raise the limit".into()
            }
            Finding::MemlockLow { .. } => "raise RLIMIT_MEMLOCK to at least the memory mapped for DMA \
                 (ulimit -l, limits.conf memlock, systemd LimitMEMLOCK=), or grant CAP_IPC_LOCK"
                .into(),
            Finding::DmaEntryLimit { .. } => "coalesce mappings (DmaPool), or raise \
                 vfio_iommu_type1.dma_entry_limit; iommufd has no such limit"
                .into(),
            Finding::NoCdev { .. } => "use group mode; cdev mode needs Linux >= 6.6 built with \
                 CONFIG_IOMMUFD and CONFIG_VFIO_DEVICE_CDEV"
                .into(),
            Finding::KernelTooOld { needs, .. } => format!("run Linux >= {needs} for it"),
            Finding::NoModeOffered { .. } => {
                "check that /dev/vfio and /dev/iommu exist (devtmpfs, udev) and the VFIO modules are loaded".into()
            }
            Finding::Busy { path, holder } => {
                let who = match holder {
                    Some(h) if h.pid == std::process::id() => {
                        "close the other handle this process holds (drop its container or device), or share \
                         that container instead of opening the group twice"
                            .to_string()
                    }
                    Some(h) => format!("stop process {} ({}) or let it close {}", h.pid, h.comm, path.display()),
                    None => format!(
                        "find the process that holds {} (fuser -v {}) and stop it",
                        path.display(),
                        path.display()
                    ),
                };
                format!(
                    "{who}; one process owns a group or device at a time (a second process takes \
                     it over by fd passing: send_fds / Container::from_fd)"
                )
            }
            Finding::CdevMismatch { path, .. } => format!(
                "remove {} and let devtmpfs/udev create it (or open the node sysfs names under \
                 /sys/bus/pci/devices/<address>/vfio-dev)",
                path.display()
            ),
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::NoIommu => write!(f, "no IOMMU is registered and no-IOMMU mode is off"),
            Finding::NoIommuMode => write!(
                f,
                "no IOMMU: devices use physical addresses (vfio.enable_unsafe_noiommu_mode is on)"
            ),
            Finding::IommuPassthrough { group } => {
                write!(f, "IOMMU group {group} has an identity (passthrough) default domain")
            }
            Finding::NoInterruptRemapping {
                type1_allowed,
                iommufd_allowed,
            } => {
                write!(f, "the IOMMU does not remap interrupts (no MSI isolation)")?;
                let on: Vec<&str> = [(type1_allowed, "vfio_iommu_type1"), (iommufd_allowed, "iommufd")]
                    .into_iter()
                    .filter(|(v, _)| **v == Some(true))
                    .map(|(_, n)| n)
                    .collect();
                if on.is_empty() {
                    write!(f, ": VFIO refuses devices (EPERM)")
                } else {
                    write!(f, "; allowed by allow_unsafe_interrupts of {}", on.join(" and "))
                }
            }
            Finding::GroupNotViable { group, blockers } => {
                let b: Vec<String> = blockers.iter().map(|(d, drv)| format!("{d} on {drv}")).collect();
                write!(f, "IOMMU group {group} is not viable: {}", b.join(", "))
            }
            Finding::AcsMissing { bridge } => {
                write!(
                    f,
                    "bridge {bridge} has no ACS isolation: functions below it share an IOMMU group"
                )
            }
            Finding::NotOnVfioPci { device, driver } => match driver {
                Some(d) => write!(f, "{device} is bound to {d}, not vfio-pci"),
                None => write!(f, "{device} is not bound to any driver"),
            },
            Finding::NoIommuGroup { device } => write!(f, "{device} has no IOMMU group"),
            Finding::NodeMissing { path } => write!(f, "{} does not exist", path.display()),
            Finding::NodeNotAccessible { path, errno } => write!(
                f,
                "{} is not readable and writable for this user ({})",
                path.display(),
                crate::errno_name(*errno).unwrap_or("error")
            ),
            Finding::MemlockLow { limit, exempt } => write!(
                f,
                "RLIMIT_MEMLOCK is {} KiB{}",
                limit / 1024,
                if *exempt {
                    " (CAP_IPC_LOCK exempts this process)"
                } else {
                    ""
                }
            ),
            Finding::DmaEntryLimit { limit } => {
                write!(f, "type1 allows {limit} DMA mappings per container (dma_entry_limit)")
            }
            Finding::NoCdev { kernel } => match kernel {
                Some(k) => write!(
                    f,
                    "cdev mode is not offered (Linux {k}: no VFIO device cdev, or iommufd not loaded)"
                ),
                None => write!(f, "cdev mode is not offered (no VFIO device cdev)"),
            },
            Finding::KernelTooOld {
                feature,
                needs,
                running,
            } => write!(f, "{feature} needs Linux >= {needs}; this is {running}"),
            Finding::NoModeOffered { device } => write!(f, "no VFIO mode can open {device} now"),
            Finding::Busy { path, holder } => match holder {
                Some(h) => write!(f, "{} is held by {h}", path.display()),
                None => write!(f, "{} is held by another process", path.display()),
            },
            Finding::CdevMismatch { path, expected, found } => {
                write!(f, "{} is ", path.display())?;
                match found {
                    Some((ma, mi)) => write!(f, "character device {ma}:{mi}")?,
                    None => write!(f, "not a character device")?,
                }
                write!(f, " but sysfs says the device's cdev is {}:{}", expected.0, expected.1)
            }
        }
    }
}
