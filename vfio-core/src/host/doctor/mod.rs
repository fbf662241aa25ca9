//! What the machine offers VFIO: its IOMMUs and interrupt remapping, the VFIO nodes and whether
//! this user may open them, the limits DMA runs into, and the kernel against the feature table.
//! Each problem is a typed [`Finding`] with its fix; `lsvfio doctor` prints them, and errors can
//! name the same causes.
//!
//! Everything is read from sysfs, `/proc` and `/dev` (no device is opened), so it works
//! unprivileged. The `/proc` read is the sibling of the sysfs root (`/proc` for `/sys`, so a
//! fake tree `T/sys` has its `T/proc`).
//!
//! ```no_run
//! let m = vfio_core::host::doctor::examine(&vfio_core::Sysfs::default());
//! for f in &m.findings {
//!     println!("{}: {f} (fix: {})", f.severity(), f.fix());
//! }
//! ```

pub mod diagnose;
mod finding;
mod kernel;

use std::fmt;
use std::path::{Path, PathBuf};

pub use finding::{Finding, Holder, Severity};
pub use kernel::{KERNEL_FEATURES, KernelFeature, KernelVersion, kernel_feature};

use crate::{Errno, Modes, Sysfs};

/// Below this `RLIMIT_MEMLOCK` (64 MiB) the doctor reports [`Finding::MemlockLow`]: the 8 MiB
/// most distributions default to holds 2,048 pinned pages.
pub const MEMLOCK_LOW: u64 = 64 << 20;

/// Which driver an IOMMU belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IommuKind {
    /// Intel VT-d (`intel-iommu` attributes).
    Intel,
    /// AMD-Vi (`amd-iommu` attributes).
    Amd,
    /// virtio-iommu (paravirtual; no interrupt remapping).
    Virtio,
    /// iommufd's selftest mock (`CONFIG_IOMMUFD_TEST`): translates nothing real.
    Mock,
    /// Another driver (ARM SMMU, ...), named by its device's driver where sysfs shows one.
    Other(String),
}

impl fmt::Display for IommuKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IommuKind::Intel => f.write_str("intel"),
            IommuKind::Amd => f.write_str("amd"),
            IommuKind::Virtio => f.write_str("virtio"),
            IommuKind::Mock => f.write_str("mock"),
            IommuKind::Other(s) => f.write_str(s),
        }
    }
}

/// One IOMMU unit (`/sys/class/iommu/<name>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IommuUnit {
    /// Its name in `/sys/class/iommu` (`dmar0`, `ivhd0`, `virtio0`...).
    pub name: String,
    /// Its driver.
    pub kind: IommuKind,
    /// Whether the hardware can remap interrupts: VT-d's extended capability register
    /// (`intel-iommu/ecap`) bit 3 (IR); `None` where sysfs does not say.
    pub remap_capable: Option<bool>,
}

/// An IOMMU group's default domain (`/sys/kernel/iommu_groups/<N>/type`): what the IOMMU does
/// for the device while a host driver has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainType {
    /// `DMA`: translated, strict invalidation.
    Dma,
    /// `DMA-FQ`: translated, lazy (flush-queue) invalidation.
    DmaFq,
    /// `identity`: passthrough, no translation (`iommu=pt`).
    Identity,
    /// `blocked`: no DMA at all.
    Blocked,
    /// `unmanaged`: a domain a driver owns.
    Unmanaged,
    /// `unknown` (no default domain, e.g. a no-IOMMU group) or a name this crate does not know.
    Unknown(String),
}

impl DomainType {
    /// Parses the `type` file's text.
    pub fn parse(s: &str) -> Self {
        match s.trim() {
            "DMA" => DomainType::Dma,
            "DMA-FQ" => DomainType::DmaFq,
            "identity" => DomainType::Identity,
            "blocked" => DomainType::Blocked,
            "unmanaged" => DomainType::Unmanaged,
            other => DomainType::Unknown(other.to_owned()),
        }
    }
}

impl fmt::Display for DomainType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DomainType::Dma => "DMA",
            DomainType::DmaFq => "DMA-FQ",
            DomainType::Identity => "identity",
            DomainType::Blocked => "blocked",
            DomainType::Unmanaged => "unmanaged",
            DomainType::Unknown(s) => s,
        })
    }
}

/// The default domain type of IOMMU group `group`; `None` when the group or its `type` file
/// does not exist.
pub fn group_domain_type(sysfs: &Sysfs, group: u32) -> Option<DomainType> {
    let p = sysfs
        .root()
        .join("kernel/iommu_groups")
        .join(group.to_string())
        .join("type");
    std::fs::read_to_string(p).ok().map(|s| DomainType::parse(&s))
}

/// Whether IOMMU group `group` is a no-IOMMU one made by VFIO (its `name` is `vfio-noiommu`).
pub fn group_is_noiommu(sysfs: &Sysfs, group: u32) -> bool {
    std::fs::read_to_string(
        sysfs
            .root()
            .join("kernel/iommu_groups")
            .join(group.to_string())
            .join("name"),
    )
    .is_ok_and(|n| n.trim() == "vfio-noiommu")
}

/// A `/dev` node and whether this user may open it read-write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAccess {
    /// The node.
    pub path: PathBuf,
    /// `Ok` when `access(path, R_OK | W_OK)` passed; else its errno (ENOENT: missing).
    pub access: Result<(), Errno>,
}

impl NodeAccess {
    /// Checks `path` with `access(2)` (the real user and group ids: the user who ran the
    /// program).
    pub fn check(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let access = rustix::fs::access(&path, rustix::fs::Access::READ_OK | rustix::fs::Access::WRITE_OK);
        NodeAccess { path, access }
    }

    /// The finding for a node that cannot be used, if any.
    pub fn finding(&self) -> Option<Finding> {
        match self.access {
            Ok(()) => None,
            Err(Errno::NOENT) => Some(Finding::NodeMissing {
                path: self.path.clone(),
            }),
            Err(errno) => Some(Finding::NodeNotAccessible {
                path: self.path.clone(),
                errno,
            }),
        }
    }
}

/// A pool of huge pages (`/sys/kernel/mm/hugepages/hugepages-<size>kB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HugePagePool {
    /// Page size in KiB (2048, 1048576).
    pub size_kb: u64,
    /// Pages reserved (`nr_hugepages`).
    pub total: u64,
    /// Of those, free now (`free_hugepages`).
    pub free: u64,
}

/// The `allow_unsafe_interrupts` module parameters (`None`: that module is not loaded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UnsafeInterrupts {
    /// `vfio_iommu_type1.allow_unsafe_interrupts`.
    pub type1: Option<bool>,
    /// `iommufd.allow_unsafe_interrupts`.
    pub iommufd: Option<bool>,
}

/// What the machine offers VFIO, independent of any device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineReport {
    /// The kernel release (`/proc/sys/kernel/osrelease`), if readable.
    pub kernel_release: Option<String>,
    /// Its version.
    pub kernel: Option<KernelVersion>,
    /// Every IOMMU unit, the selftest mock included.
    pub iommus: Vec<IommuUnit>,
    /// Whether interrupts are remapped (MSIs isolated): `Some(true)` when `/proc/interrupts`
    /// shows a remapping domain (`IR-` chips), `Some(false)` when a VT-d, AMD-Vi or
    /// virtio-iommu is there without one, `None` without an IOMMU or where it cannot be told.
    pub interrupt_remapping: Option<bool>,
    /// The `allow_unsafe_interrupts` parameters.
    pub unsafe_interrupts: UnsafeInterrupts,
    /// `vfio.enable_unsafe_noiommu_mode`.
    pub noiommu_mode: bool,
    /// The modes the kernel offers ([`crate::detect_in`]).
    pub modes: Modes,
    /// `/dev/vfio/vfio` and `/dev/iommu` for this user.
    pub nodes: Vec<NodeAccess>,
    /// `RLIMIT_MEMLOCK` (soft, hard) in bytes; `u64::MAX` is unlimited.
    pub memlock: (u64, u64),
    /// The process has `CAP_IPC_LOCK` (pinned memory is not charged against the limit).
    pub cap_ipc_lock: bool,
    /// type1's `dma_entry_limit`, when the type1 driver is loaded.
    pub dma_entry_limit: Option<u32>,
    /// The huge page pools.
    pub hugepages: Vec<HugePagePool>,
    /// The feature table against the running kernel: each feature with whether it is there
    /// (`None`: kernel version unknown).
    pub features: Vec<(&'static KernelFeature, Option<bool>)>,
    /// What is wrong or worth knowing, machine-wide.
    pub findings: Vec<Finding>,
}

impl MachineReport {
    /// Whether a real IOMMU (not the selftest mock) is registered.
    pub fn has_iommu(&self) -> bool {
        self.iommus.iter().any(|u| u.kind != IommuKind::Mock)
    }

    /// The most severe finding's severity (`None`: nothing found).
    pub fn worst(&self) -> Option<Severity> {
        self.findings.iter().map(Finding::severity).max()
    }
}

/// The `/proc` that goes with `sysfs` (its root's sibling).
pub fn proc_dir(sysfs: &Sysfs) -> PathBuf {
    sysfs
        .root()
        .parent()
        .map_or_else(|| PathBuf::from("/proc"), |p| p.join("proc"))
}

fn read_trim(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok().map(|s| s.trim().to_owned())
}

fn module_param(sysfs: &Sysfs, module: &str, param: &str) -> Option<String> {
    read_trim(&sysfs.root().join("module").join(module).join("parameters").join(param))
}

fn param_bool(sysfs: &Sysfs, module: &str, param: &str) -> Option<bool> {
    module_param(sysfs, module, param).map(|v| v == "Y" || v == "1")
}

/// The IOMMU units under `class/iommu`, sorted by name.
pub fn iommu_units(sysfs: &Sysfs) -> Vec<IommuUnit> {
    let dir = sysfs.root().join("class/iommu");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let unit = dir.join(&name);
            let driver = std::fs::read_link(unit.join("device/driver"))
                .ok()
                .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()));
            let (kind, remap_capable) = if unit.join("intel-iommu").is_dir() {
                let ecap = read_trim(&unit.join("intel-iommu/ecap"))
                    .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok());
                (IommuKind::Intel, ecap.map(|e| e & (1 << 3) != 0))
            } else if unit.join("amd-iommu").is_dir() {
                (IommuKind::Amd, None)
            } else if name.starts_with("iommufd_selftest") {
                (IommuKind::Mock, Some(false))
            } else if driver.as_deref() == Some("virtio_iommu") || name.starts_with("virtio") {
                (IommuKind::Virtio, Some(false))
            } else {
                (IommuKind::Other(driver.unwrap_or_else(|| name.clone())), None)
            };
            IommuUnit {
                name,
                kind,
                remap_capable,
            }
        })
        .collect()
}

/// Whether `/proc/interrupts` text shows an interrupt-remapping domain (chips named `IR-...`:
/// `IR-IO-APIC`, `IR-PCI-MSI-...`, the VT-d and AMD-Vi remapping prefixes).
pub fn interrupts_show_remapping(interrupts: &str) -> bool {
    interrupts
        .lines()
        .skip(1)
        .any(|l| l.split_whitespace().any(|w| w.starts_with("IR-")))
}

/// The huge page pools under `kernel/mm/hugepages`, by size.
pub fn hugepage_pools(sysfs: &Sysfs) -> Vec<HugePagePool> {
    let dir = sysfs.root().join("kernel/mm/hugepages");
    let mut pools: Vec<HugePagePool> = std::fs::read_dir(&dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let size_kb = name.strip_prefix("hugepages-")?.strip_suffix("kB")?.parse().ok()?;
                    let num = |f: &str| read_trim(&e.path().join(f)).and_then(|s| s.parse().ok()).unwrap_or(0);
                    Some(HugePagePool {
                        size_kb,
                        total: num("nr_hugepages"),
                        free: num("free_hugepages"),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    pools.sort_by_key(|p| p.size_kb);
    pools
}

/// `RLIMIT_MEMLOCK` of this process, (soft, hard) in bytes (`u64::MAX`: unlimited).
pub fn memlock_limit() -> (u64, u64) {
    let l = rustix::process::getrlimit(rustix::process::Resource::Memlock);
    (l.current.unwrap_or(u64::MAX), l.maximum.unwrap_or(u64::MAX))
}

/// Whether `status` (the text of `/proc/<pid>/status`) has `CAP_IPC_LOCK` (bit 14) in `CapEff`.
pub fn status_has_ipc_lock(status: &str) -> bool {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << 14) != 0)
}

/// Whether interrupts are remapped, as [`MachineReport::interrupt_remapping`] (reads the IOMMU
/// units and `/proc/interrupts`).
pub fn interrupt_remapping(sysfs: &Sysfs) -> Option<bool> {
    remapping_of(sysfs, &iommu_units(sysfs))
}

fn remapping_of(sysfs: &Sysfs, iommus: &[IommuUnit]) -> Option<bool> {
    let interrupts = std::fs::read_to_string(proc_dir(sysfs).join("interrupts")).ok();
    if interrupts.as_deref().is_some_and(interrupts_show_remapping) {
        Some(true)
    } else if iommus
        .iter()
        .any(|u| matches!(u.kind, IommuKind::Intel | IommuKind::Amd | IommuKind::Virtio))
        && interrupts.is_some()
    {
        Some(false)
    } else {
        None
    }
}

/// The `allow_unsafe_interrupts` parameters of `vfio_iommu_type1` and `iommufd`.
pub fn unsafe_interrupts(sysfs: &Sysfs) -> UnsafeInterrupts {
    UnsafeInterrupts {
        type1: param_bool(sysfs, "vfio_iommu_type1", "allow_unsafe_interrupts"),
        iommufd: param_bool(sysfs, "iommufd", "allow_unsafe_interrupts"),
    }
}

/// Looks at the machine through `sysfs` (and its `/proc` and `/dev`): see [`MachineReport`].
/// Never fails: what cannot be read is reported as unknown.
pub fn examine(sysfs: &Sysfs) -> MachineReport {
    let proc_ = proc_dir(sysfs);
    let kernel_release = read_trim(&proc_.join("sys/kernel/osrelease"));
    let kernel = kernel_release.as_deref().and_then(KernelVersion::parse_release);
    let iommus = iommu_units(sysfs);
    let real: Vec<&IommuUnit> = iommus.iter().filter(|u| u.kind != IommuKind::Mock).collect();
    let interrupt_remapping = remapping_of(sysfs, &iommus);
    let unsafe_interrupts = unsafe_interrupts(sysfs);
    let noiommu_mode = sysfs.module_param_enabled("vfio", "enable_unsafe_noiommu_mode");
    let modes = crate::detect_in(sysfs);
    let dev = sysfs.dev_dir();
    let mut nodes = vec![NodeAccess::check(dev.join("vfio/vfio"))];
    if modes.cdev || modes.cdev_noiommu || dev.join("iommu").exists() {
        nodes.push(NodeAccess::check(dev.join("iommu")));
    }
    let memlock = memlock_limit();
    let cap_ipc_lock = std::fs::read_to_string(proc_.join("self/status")).is_ok_and(|s| status_has_ipc_lock(&s));
    let dma_entry_limit = module_param(sysfs, "vfio_iommu_type1", "dma_entry_limit").and_then(|s| s.parse().ok());
    let hugepages = hugepage_pools(sysfs);
    let features = KERNEL_FEATURES
        .iter()
        .map(|f| (f, kernel.map(|k| k >= f.since)))
        .collect();

    let mut findings = Vec::new();
    if real.is_empty() {
        findings.push(if noiommu_mode {
            Finding::NoIommuMode
        } else {
            Finding::NoIommu
        });
    }
    if interrupt_remapping == Some(false) && !real.is_empty() {
        findings.push(Finding::NoInterruptRemapping {
            type1_allowed: unsafe_interrupts.type1,
            iommufd_allowed: unsafe_interrupts.iommufd,
        });
    }
    // Only the nodes of modes in use: a missing /dev/iommu on a kernel without iommufd is the
    // NoCdev finding, not a broken node.
    for n in &nodes {
        if let Some(f) = n.finding() {
            if !matches!(f, Finding::NodeMissing { .. }) {
                findings.push(f);
            }
        }
    }
    if !(modes.cdev || modes.cdev_noiommu) {
        findings.push(Finding::NoCdev { kernel });
    }
    if memlock.0 < MEMLOCK_LOW {
        findings.push(Finding::MemlockLow {
            limit: memlock.0,
            exempt: cap_ipc_lock,
        });
    }
    if let Some(limit) = dma_entry_limit {
        findings.push(Finding::DmaEntryLimit { limit });
    }
    if let Some(running) = kernel {
        for f in KERNEL_FEATURES.iter().filter(|f| f.since > running) {
            findings.push(Finding::KernelTooOld {
                feature: f.name,
                needs: f.since,
                running,
            });
        }
    }
    MachineReport {
        kernel_release,
        kernel,
        iommus,
        interrupt_remapping,
        unsafe_interrupts,
        noiommu_mode,
        modes,
        nodes,
        memlock,
        cap_ipc_lock,
        dma_entry_limit,
        hugepages,
        features,
        findings,
    }
}

#[cfg(test)]
mod tests;
