//! The doctor's parsing on fake sysfs trees.

use super::*;
use std::fs;

/// A scratch tree `T/{sys,proc,dev}`, removed on drop.
struct Tree(PathBuf);

impl Tree {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("vfio-core-doctor-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        for d in ["sys/class/iommu", "proc/sys/kernel", "proc/self", "dev/vfio"] {
            fs::create_dir_all(p.join(d)).unwrap();
        }
        Tree(p)
    }
    fn sysfs(&self) -> Sysfs {
        Sysfs::at(self.0.join("sys"), self.0.join("dev"))
    }
    fn write(&self, rel: &str, text: &str) {
        let p = self.0.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

const INTERRUPTS_IR: &str = "           CPU0       CPU1
  0:         41          0   IR-IO-APIC    2-edge      timer
 24:          0          0  IR-PCI-MSIX-0000:00:04.0    0-edge      nvme0q0
";
const INTERRUPTS_PLAIN: &str = "           CPU0       CPU1
  0:         41          0   IO-APIC    2-edge      timer
 24:          0          0  PCI-MSIX-0000:00:04.0    0-edge      nvme0q0
";

#[test]
#[cfg_attr(miri, ignore = "access(2), getrlimit and /proc reads are not supported by Miri")]
fn intel_with_remapping() {
    let t = Tree::new("intel");
    t.write("proc/sys/kernel/osrelease", "7.3.4\n");
    t.write("proc/interrupts", INTERRUPTS_IR);
    t.write("proc/self/status", "Name:\tx\nCapEff:\t000001ffffffffff\n");
    // QEMU's VT-d with intremap=on: ecap has IR (bit 3).
    t.write("sys/class/iommu/dmar0/intel-iommu/ecap", "f0205b\n");
    t.write("sys/class/iommu/iommufd_selftest_iommu/name", "");
    t.write("sys/module/vfio_iommu_type1/parameters/allow_unsafe_interrupts", "N\n");
    t.write("sys/module/vfio_iommu_type1/parameters/dma_entry_limit", "65535\n");
    t.write("sys/module/iommufd/parameters/allow_unsafe_interrupts", "N\n");
    t.write("sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages", "16\n");
    t.write("sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages", "15\n");
    t.write("sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages", "0\n");
    t.write("sys/kernel/iommu_groups/3/type", "DMA\n");
    t.write("sys/kernel/iommu_groups/4/type", "identity\n");
    let s = t.sysfs();
    let m = examine(&s);
    assert_eq!(m.kernel, Some(KernelVersion::new(7, 3)));
    assert_eq!(m.iommus.len(), 2);
    assert_eq!(
        (&m.iommus[0].kind, m.iommus[0].remap_capable),
        (&IommuKind::Intel, Some(true))
    );
    assert_eq!(m.iommus[1].kind, IommuKind::Mock);
    assert!(m.has_iommu());
    assert_eq!(m.interrupt_remapping, Some(true));
    assert_eq!(m.dma_entry_limit, Some(65535));
    assert!(m.cap_ipc_lock);
    assert_eq!(
        m.hugepages,
        vec![
            HugePagePool {
                size_kb: 2048,
                total: 16,
                free: 15
            },
            HugePagePool {
                size_kb: 1048576,
                total: 0,
                free: 0
            }
        ]
    );
    assert!(!m.findings.iter().any(|f| matches!(
        f,
        Finding::NoIommu | Finding::NoIommuMode | Finding::NoInterruptRemapping { .. }
    )));
    assert!(m.features.iter().all(|(_, on)| *on == Some(true)));
    assert!(m.findings.contains(&Finding::DmaEntryLimit { limit: 65535 }));
    assert_eq!(group_domain_type(&s, 3), Some(DomainType::Dma));
    assert_eq!(group_domain_type(&s, 4), Some(DomainType::Identity));
    assert_eq!(group_domain_type(&s, 5), None);
}

#[test]
#[cfg_attr(miri, ignore = "access(2), getrlimit and /proc reads are not supported by Miri")]
fn virtio_without_remapping_is_a_warning_only_when_allowed() {
    let t = Tree::new("virtio");
    t.write("proc/sys/kernel/osrelease", "6.1.0-28-amd64\n");
    t.write("proc/interrupts", INTERRUPTS_PLAIN);
    t.write("sys/class/iommu/virtio0/name", "");
    t.write("sys/module/vfio_iommu_type1/parameters/allow_unsafe_interrupts", "Y\n");
    let m = examine(&t.sysfs());
    assert_eq!(m.iommus[0].kind, IommuKind::Virtio);
    assert_eq!(m.interrupt_remapping, Some(false));
    let f = m
        .findings
        .iter()
        .find(|f| matches!(f, Finding::NoInterruptRemapping { .. }))
        .unwrap();
    assert_eq!(
        f,
        &Finding::NoInterruptRemapping {
            type1_allowed: Some(true),
            iommufd_allowed: None
        }
    );
    assert_eq!(f.severity(), Severity::Warning);
    // 6.1: no cdev, and the newer features are listed as too new.
    assert!(m.findings.contains(&Finding::NoCdev {
        kernel: Some(KernelVersion::new(6, 1))
    }));
    assert!(m.findings.iter().any(|f| matches!(
        f,
        Finding::KernelTooOld {
            feature: "device cdev (cdev mode)",
            ..
        }
    )));
    // Without the parameter, it blocks, and the fix names the parameter.
    t.write("sys/module/vfio_iommu_type1/parameters/allow_unsafe_interrupts", "N\n");
    let m = examine(&t.sysfs());
    let f = m
        .findings
        .iter()
        .find(|f| matches!(f, Finding::NoInterruptRemapping { .. }))
        .unwrap();
    assert_eq!(f.severity(), Severity::Blocker);
    assert!(
        f.fix().contains("vfio_iommu_type1.allow_unsafe_interrupts=1"),
        "{}",
        f.fix()
    );
}

#[test]
#[cfg_attr(miri, ignore = "access(2), getrlimit and /proc reads are not supported by Miri")]
fn no_iommu_with_and_without_noiommu_mode() {
    let t = Tree::new("none");
    t.write("proc/interrupts", INTERRUPTS_PLAIN);
    // The iommufd selftest mock alone is no IOMMU.
    t.write("sys/class/iommu/iommufd_selftest_iommu/name", "");
    let m = examine(&t.sysfs());
    assert!(!m.has_iommu());
    assert_eq!(m.interrupt_remapping, None);
    assert!(m.findings.contains(&Finding::NoIommu));
    assert_eq!(Finding::NoIommu.severity(), Severity::Blocker);
    t.write("sys/module/vfio/parameters/enable_unsafe_noiommu_mode", "Y\n");
    let m = examine(&t.sysfs());
    assert!(m.noiommu_mode);
    assert!(m.findings.contains(&Finding::NoIommuMode));
    assert!(!m.findings.contains(&Finding::NoIommu));
}

#[test]
#[cfg_attr(miri, ignore = "access(2), getrlimit and /proc reads are not supported by Miri")]
fn interrupts_and_capabilities_parse() {
    assert!(interrupts_show_remapping(INTERRUPTS_IR));
    assert!(!interrupts_show_remapping(INTERRUPTS_PLAIN));
    assert!(!interrupts_show_remapping(""));
    assert!(status_has_ipc_lock("CapEff:\t0000000000004000\n"));
    assert!(!status_has_ipc_lock("CapEff:\t0000000000000000\n"));
    assert!(!status_has_ipc_lock(""));
    assert_eq!(DomainType::parse("DMA-FQ\n"), DomainType::DmaFq);
    assert_eq!(DomainType::parse("unknown").to_string(), "unknown");
}

#[test]
#[cfg_attr(miri, ignore = "access(2), getrlimit and /proc reads are not supported by Miri")]
fn node_access_names_missing_nodes() {
    let t = Tree::new("nodes");
    let n = NodeAccess::check(t.0.join("dev/vfio/vfio"));
    assert_eq!(n.access, Err(Errno::NOENT));
    assert!(matches!(n.finding(), Some(Finding::NodeMissing { .. })));
    t.write("dev/vfio/vfio", "");
    let n = NodeAccess::check(t.0.join("dev/vfio/vfio"));
    assert_eq!(n.access, Ok(()));
    assert_eq!(n.finding(), None);
    let f = Finding::NodeNotAccessible {
        path: "/dev/vfio/3".into(),
        errno: Errno::ACCESS,
    };
    assert!(
        f.to_string().contains("/dev/vfio/3") && f.to_string().contains("EACCES"),
        "{f}"
    );
    assert_eq!(f.severity(), Severity::Blocker);
}

#[test]
#[cfg_attr(miri, ignore = "access(2), getrlimit and /proc reads are not supported by Miri")]
fn every_finding_has_a_code_and_a_fix() {
    let all = [
        Finding::NoIommu,
        Finding::NoIommuMode,
        Finding::IommuPassthrough { group: 1 },
        Finding::NoInterruptRemapping {
            type1_allowed: None,
            iommufd_allowed: Some(false),
        },
        Finding::GroupNotViable {
            group: 4,
            blockers: vec![("0000:01:02.0".into(), "virtio-pci".into())],
        },
        Finding::AcsMissing {
            bridge: "0000:00:08.0".into(),
        },
        Finding::NotOnVfioPci {
            device: "0000:00:04.0".into(),
            driver: Some("nvme".into()),
        },
        Finding::NoIommuGroup {
            device: "0000:00:04.0".into(),
        },
        Finding::MemlockLow {
            limit: 65536,
            exempt: false,
        },
        Finding::DmaEntryLimit { limit: 100 },
        Finding::NoCdev { kernel: None },
        Finding::NoModeOffered {
            device: "0000:00:04.0".into(),
        },
    ];
    for f in &all {
        assert!(
            !f.code().is_empty() && !f.fix().is_empty() && !f.to_string().is_empty(),
            "{f:?}"
        );
    }
    assert!(all[4].to_string().contains("0000:01:02.0 on virtio-pci"), "{}", all[4]);
    assert!(all[4].fix().contains("lsvfio bind 0000:01:02.0"), "{}", all[4].fix());
    assert!(all[8].to_string().contains("64 KiB"), "{}", all[8]);
}
