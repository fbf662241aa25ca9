//! `lsvfio doctor` (vfio_pci::doctor, issue #18): its verdicts against what each boot is.
//!
//! The boot is told by `VFIO_TEST_IOMMU` (intel: VT-d with interrupt remapping, strict DMA
//! domains; virtio: virtio-iommu, no remapping, both `allow_unsafe_interrupts` set; none: no
//! IOMMU, no-IOMMU mode on) and `VFIO_TEST_VARIANT` (a: type1 driver; b: iommufd's compat
//! container; debian61: Linux 6.1, group mode only).

use std::process::ExitCode;

use vfio_core::Sysfs;
use vfio_core::host::doctor::{self as core_doctor, IommuKind, KernelVersion};
use vfio_pci::doctor::{self, DomainType, Finding, Severity, acs::Acs};
use vfio_tests::{TestResult, device_from_env, ensure, skip};

fn iommu() -> String {
    std::env::var("VFIO_TEST_IOMMU").unwrap_or_default()
}

fn variant() -> String {
    std::env::var("VFIO_TEST_VARIANT").unwrap_or_default()
}

fn has<F: Fn(&Finding) -> bool>(fs: &[Finding], f: F) -> bool {
    fs.iter().any(f)
}

/// The machine facts and findings match the boot.
fn machine_matches_the_boot() -> TestResult {
    let (iommu, variant) = (iommu(), variant());
    if iommu.is_empty() {
        return skip("VFIO_TEST_IOMMU is not set (only the guest harness knows what the boot is)");
    }
    let m = core_doctor::examine(&Sysfs::default());
    println!("    {m:?}");
    let want_kernel = if variant == "debian61" {
        KernelVersion::new(6, 1)
    } else {
        KernelVersion::new(7, 3)
    };
    ensure!(
        m.kernel == Some(want_kernel),
        "kernel {:?}, want {want_kernel}",
        m.kernel
    );
    let f = &m.findings;
    match iommu.as_str() {
        "intel" => {
            ensure!(m.has_iommu(), "no IOMMU found: {:?}", m.iommus);
            let unit = m
                .iommus
                .iter()
                .find(|u| u.kind == IommuKind::Intel)
                .ok_or("no VT-d unit")?;
            ensure!(unit.remap_capable == Some(true), "VT-d ecap says no IR: {unit:?}");
            ensure!(
                m.interrupt_remapping == Some(true),
                "interrupt remapping {:?}",
                m.interrupt_remapping
            );
            ensure!(
                !has(f, |x| matches!(
                    x,
                    Finding::NoInterruptRemapping { .. } | Finding::NoIommu | Finding::NoIommuMode
                )),
                "{f:?}"
            );
        }
        "virtio" => {
            ensure!(
                m.iommus.iter().any(|u| u.kind == IommuKind::Virtio),
                "no virtio-iommu: {:?}",
                m.iommus
            );
            ensure!(
                m.interrupt_remapping == Some(false),
                "interrupt remapping {:?}",
                m.interrupt_remapping
            );
            // Both parameters are on the command line; type1 exists on variant a only.
            let want_type1 = (variant == "a").then_some(true);
            let want = Finding::NoInterruptRemapping {
                type1_allowed: want_type1,
                iommufd_allowed: Some(true),
            };
            ensure!(f.contains(&want), "want {want:?} in {f:?}");
            ensure!(want.severity() == Severity::Warning, "{want:?}");
            ensure!(
                !has(f, |x| matches!(x, Finding::NoIommu | Finding::NoIommuMode)),
                "{f:?}"
            );
        }
        "none" => {
            ensure!(!m.has_iommu(), "an IOMMU found: {:?}", m.iommus);
            ensure!(m.noiommu_mode, "no-IOMMU mode off");
            ensure!(
                f.contains(&Finding::NoIommuMode) && !f.contains(&Finding::NoIommu),
                "{f:?}"
            );
            ensure!(!has(f, |x| matches!(x, Finding::NoInterruptRemapping { .. })), "{f:?}");
        }
        other => return Err(format!("unknown VFIO_TEST_IOMMU {other:?}").into()),
    }
    // Modes: what detect() says, and cdev exactly on the 7.3 kernels.
    ensure!(m.modes == vfio_core::detect(), "{:?}", m.modes);
    let cdev = m.modes.cdev || m.modes.cdev_noiommu;
    ensure!(cdev == (variant != "debian61"), "cdev offered: {cdev} on {variant}");
    ensure!(
        has(f, |x| matches!(x, Finding::NoCdev { .. })) != cdev,
        "NoCdev finding vs cdev {cdev}: {f:?}"
    );
    let cdev_feature = m
        .features
        .iter()
        .find(|(x, _)| x.name == "device cdev (cdev mode)")
        .ok_or("no cdev row in the feature table")?;
    ensure!(cdev_feature.1 == Some(variant != "debian61"), "{cdev_feature:?}");
    ensure!(
        has(f, |x| matches!(
            x,
            Finding::KernelTooOld {
                feature: "device cdev (cdev mode)",
                ..
            }
        )) == (variant == "debian61"),
        "{f:?}"
    );
    // type1's mapping limit where the type1 driver is loaded (a, debian61), its default.
    let want_limit = (variant != "b").then_some(65535);
    ensure!(
        m.dma_entry_limit == want_limit,
        "dma_entry_limit {:?} on {variant}",
        m.dma_entry_limit
    );
    // /init reserves 2 MiB pages; the pool agrees with /proc.
    let nr: u64 = std::fs::read_to_string("/proc/sys/vm/nr_hugepages")?.trim().parse()?;
    let pool = m.hugepages.iter().find(|p| p.size_kb == 2048).ok_or("no 2 MiB pool")?;
    ensure!(pool.total == nr, "{pool:?} vs nr_hugepages {nr}");
    // Root in the guest: every node opens, CAP_IPC_LOCK exempts from the memlock limit.
    ensure!(m.nodes.iter().all(|n| n.access.is_ok()), "{:?}", m.nodes);
    ensure!(m.cap_ipc_lock, "root without CAP_IPC_LOCK");
    ensure!(m.worst() != Some(Severity::Blocker), "{f:?}");
    Ok(vfio_tests::Outcome::Pass)
}

/// The edu: not blocked, usable in exactly the modes the kernel offers, with the domain type
/// of its boot.
fn edu_is_usable_in_the_offered_modes() -> TestResult {
    let addr = match device_from_env("VFIO_TEST_EDU") {
        Err(why) => return skip(why),
        Ok(a) => a,
    };
    let r = doctor::diagnose(&Sysfs::default(), &[addr])?;
    let d = r.device(&addr).ok_or("edu not in the report")?;
    print!("{}", doctor::render::text(&r));
    ensure!(!r.blocked() && !d.blocked(&r.machine), "{:?}", d.findings);
    ensure!(
        !has(&d.findings, |f| f.severity() == Severity::Blocker),
        "{:?}",
        d.findings
    );
    let mut offered = vfio_core::detect().offered();
    let mut usable = d.usable_modes(&r.machine);
    offered.sort();
    usable.sort();
    ensure!(usable == offered, "usable {usable:?}, offered {offered:?}");
    match iommu().as_str() {
        // iommu.strict=1: translated, strict invalidation.
        "intel" => ensure!(d.domain == Some(DomainType::Dma), "{:?}", d.domain),
        "virtio" => ensure!(
            matches!(d.domain, Some(DomainType::Dma | DomainType::DmaFq)),
            "{:?}",
            d.domain
        ),
        "none" => ensure!(d.noiommu_group, "the edu's group is not a no-IOMMU one"),
        _ => {}
    }
    ensure!(
        d.noiommu_group == (iommu() == "none"),
        "noiommu group {}",
        d.noiommu_group
    );
    Ok(vfio_tests::Outcome::Pass)
}

/// The non-viable group (intel boots): the doctor names the virtio device and its driver, says
/// the edu is blocked, and which bridge shares the group.
fn non_viable_group_names_the_blocker() -> TestResult {
    let addr = match device_from_env("VFIO_TEST_EDU_NONVIABLE") {
        Err(why) => return skip(why),
        Ok(a) => a,
    };
    let r = doctor::diagnose(&Sysfs::default(), &[addr])?;
    print!("{}", doctor::render::text(&r));
    let d = r.device(&addr).ok_or("not in the report")?;
    ensure!(r.blocked() && d.blocked(&r.machine), "not blocked: {:?}", d.findings);
    let (group, blockers) = d
        .findings
        .iter()
        .find_map(|f| match f {
            Finding::GroupNotViable { group, blockers } => Some((*group, blockers.clone())),
            _ => None,
        })
        .ok_or_else(|| format!("no GroupNotViable in {:?}", d.findings))?;
    ensure!(d.summary.iommu_group == Some(group), "group {group}");
    let sysfs = Sysfs::default();
    let virtio = blockers
        .iter()
        .find(|(dev, _)| {
            dev.parse()
                .ok()
                .and_then(|a| sysfs.identity(&a).ok())
                .is_some_and(|i| i.vendor == 0x1af4)
        })
        .ok_or_else(|| format!("no virtio device among the blockers {blockers:?}"))?;
    ensure!(virtio.1 == "virtio-pci", "blocker {virtio:?}");
    ensure!(
        d.usable_modes(&r.machine).is_empty(),
        "{:?}",
        d.usable_modes(&r.machine)
    );
    // The bridge above both has no isolating ACS (that is why they share a group).
    let hop = d.acs_path.first().ok_or("no bridge above the edu")?;
    ensure!(hop.acs.isolates() == Some(false), "{hop:?}");
    ensure!(
        d.findings.contains(&Finding::AcsMissing {
            bridge: hop.bridge.to_string()
        }),
        "{:?}",
        d.findings
    );
    let json = doctor::render::json(&r);
    ensure!(
        json.contains("\"code\":\"group-not-viable\"") && json.contains(&virtio.0),
        "{json}"
    );
    Ok(vfio_tests::Outcome::Pass)
}

/// ACS along the path of the edu behind a PCIe root port: one hop, the root port, whose
/// extended config space is read (root reads all 4 KiB of sysfs `config`).
fn acs_along_the_path() -> TestResult {
    let addr = match device_from_env("VFIO_TEST_EDU_RESET") {
        Err(why) => return skip(why),
        Ok(a) => a,
    };
    let sysfs = Sysfs::default();
    let hops = vfio_pci::doctor::acs::path_to_root(&sysfs, &addr);
    println!("    {addr}: {hops:?}");
    ensure!(hops.len() == 1, "{hops:?}");
    let port = sysfs.identity(&hops[0].bridge)?;
    ensure!((port.vendor, port.device) == (0x1b36, 0x000c), "{port:?}");
    ensure!(hops[0].acs != Acs::Unknown, "{hops:?}");
    // A root-bus device has no bridge above it.
    if let Ok(edu) = device_from_env("VFIO_TEST_EDU") {
        ensure!(
            vfio_pci::doctor::acs::path_to_root(&sysfs, &edu).is_empty(),
            "root-bus edu"
        );
    }
    Ok(vfio_tests::Outcome::Pass)
}

/// A process with a small RLIMIT_MEMLOCK is told so, with the limit.
fn small_memlock_is_reported() -> TestResult {
    // SAFETY: the test binary is single-threaded; the child only examines sysfs.
    let pid = unsafe {
        vfio_tests::fork_child(|| {
            let limit = rustix::process::Rlimit {
                current: Some(64 << 10),
                maximum: Some(64 << 10),
            };
            rustix::process::setrlimit(rustix::process::Resource::Memlock, limit)?;
            let m = core_doctor::examine(&Sysfs::default());
            let f = m
                .findings
                .iter()
                .find(|f| matches!(f, Finding::MemlockLow { .. }))
                .ok_or_else(|| format!("no MemlockLow in {:?}", m.findings))?;
            ensure_child(
                *f == Finding::MemlockLow {
                    limit: 64 << 10,
                    exempt: m.cap_ipc_lock,
                },
                format!("{f:?}"),
            )?;
            ensure_child(f.to_string().contains("64 KiB"), f.to_string())?;
            ensure_child(m.memlock == (64 << 10, 64 << 10), format!("{:?}", m.memlock))?;
            println!("    child: {f} ({})", f.severity());
            Ok(())
        })
    }?;
    vfio_tests::wait_child(pid)?;
    Ok(vfio_tests::Outcome::Pass)
}

fn ensure_child(cond: bool, what: String) -> Result<(), Box<dyn std::error::Error>> {
    if cond { Ok(()) } else { Err(what.into()) }
}

/// User nobody is told which nodes it may not open, and the edu is blocked for it; root sees
/// no such finding.
fn nobody_is_told_about_node_permissions() -> TestResult {
    let addr = match device_from_env("VFIO_TEST_EDU") {
        Err(why) => return skip(why),
        Ok(a) => a,
    };
    let root = doctor::diagnose(&Sysfs::default(), &[addr])?;
    ensure!(
        !has(&root.devices[0].findings, |f| matches!(
            f,
            Finding::NodeNotAccessible { .. }
        )),
        "{:?}",
        root.devices[0].findings
    );
    let child = move || -> Result<(), Box<dyn std::error::Error>> {
        let r = doctor::diagnose(&Sysfs::default(), &[addr])?;
        let d = &r.devices[0];
        let denied: Vec<&Finding> = d
            .findings
            .iter()
            .filter(|f| matches!(f, Finding::NodeNotAccessible { .. }))
            .collect();
        println!("    child: {denied:?}");
        ensure_child(!denied.is_empty(), format!("no NodeNotAccessible: {:?}", d.findings))?;
        // The group node (/dev/vfio/<N> or noiommu-<N>) is root's alone.
        let group_node = d.summary.group_node.clone().ok_or("no group node")?;
        ensure_child(
            denied.iter().any(|f| {
                matches!(f, Finding::NodeNotAccessible { path, errno }
                    if *path == group_node && *errno == rustix::io::Errno::ACCESS)
            }),
            format!("{group_node:?} not named: {denied:?}"),
        )?;
        ensure_child(d.blocked(&r.machine) && r.blocked(), "not blocked for nobody".into())?;
        ensure_child(
            d.usable_modes(&r.machine).is_empty(),
            format!("{:?}", d.usable_modes(&r.machine)),
        )?;
        let fix = denied[0].fix();
        ensure_child(fix.contains("udev") && fix.contains("root"), fix)?;
        Ok(())
    };
    // SAFETY: the test binary is single-threaded; the child drops to nobody and reads sysfs.
    unsafe { vfio_tests::as_nobody(child) }?;
    Ok(vfio_tests::Outcome::Pass)
}

/// The JSON names each finding by code and gives the verdicts; the text ends with the summary.
fn json_and_text_carry_the_verdicts() -> TestResult {
    let addr = match device_from_env("VFIO_TEST_EDU") {
        Err(why) => return skip(why),
        Ok(a) => a,
    };
    let r = doctor::diagnose(&Sysfs::default(), &[addr])?;
    let json = doctor::render::json(&r);
    ensure!(
        json.starts_with("{\"machine\":") && json.trim_end().ends_with('}'),
        "{json}"
    );
    ensure!(json.contains(&format!("\"address\":\"{addr}\"")), "{json}");
    ensure!(json.contains("\"blocked\":false"), "{json}");
    for f in r.machine.findings.iter().chain(&r.devices[0].findings) {
        ensure!(
            json.contains(&format!("\"code\":\"{}\"", f.code())),
            "{} missing: {json}",
            f.code()
        );
    }
    let text = doctor::render::text(&r);
    ensure!(text.contains("lsvfio doctor: 1 device(s), 0 blocked"), "{text}");
    // Without addresses: every vfio-pci device, the edu among them.
    let all = doctor::diagnose(&Sysfs::default(), &[])?;
    ensure!(
        !all.asked && all.device(&addr).is_some(),
        "edu not among {}",
        all.devices.len()
    );
    Ok(vfio_tests::Outcome::Pass)
}

/// Without interrupt remapping (virtio-iommu) and with both `allow_unsafe_interrupts` turned
/// off at run time, the doctor calls it a blocker, names both parameters in the fix and
/// blocks the edu; turned back on, a warning again.
fn no_remapping_without_unsafe_interrupts_blocks() -> TestResult {
    if iommu() != "virtio" {
        return skip("only virtio-iommu boots lack interrupt remapping and turn allow_unsafe_interrupts on");
    }
    let addr = match device_from_env("VFIO_TEST_EDU") {
        Err(why) => return skip(why),
        Ok(a) => a,
    };
    // Both off until `off` drops (also when the test fails), then given back.
    let mut off = vfio_tests::ParamGuard::new();
    for m in ["vfio_iommu_type1", "iommufd"] {
        let p = vfio_tests::module_param::path(m, "allow_unsafe_interrupts");
        if p.exists() {
            off.set(p, "0")?;
        }
    }
    let r = doctor::diagnose(&Sysfs::default(), &[addr]);
    // The refusal the kernel gives now (EPERM at SET_IOMMU, GET_DEVICE_FD or BIND_IOMMUFD),
    // and the doctor's explanation of it.
    let refused = vfio_tests::new_container(vfio_core::preferred()?)
        .and_then(|c| vfio_pci::PciDevice::open_in(c.as_ref(), &addr).map(|_| ()));
    let explained = refused
        .as_ref()
        .err()
        .map(|e| doctor::explain(&Sysfs::default(), &addr, e));
    drop(off);
    let r = r?;
    let e = refused
        .err()
        .ok_or("the edu opened without interrupt remapping or allow_unsafe_interrupts")?;
    ensure!(e.errno() == Some(rustix::io::Errno::PERM), "{e}");
    let explained = explained.ok_or("no explanation")??;
    println!("    refused: {e}\n    explained: {explained:?}");
    ensure!(
        matches!(explained.as_slice(), [Finding::NoInterruptRemapping { .. }]),
        "{explained:?}"
    );
    print!("{}", doctor::render::text(&r));
    let f = r
        .machine
        .findings
        .iter()
        .find(|f| matches!(f, Finding::NoInterruptRemapping { .. }))
        .ok_or("no NoInterruptRemapping")?;
    ensure!(f.severity() == Severity::Blocker, "{f:?}");
    ensure!(f.fix().contains("iommufd.allow_unsafe_interrupts=1"), "{}", f.fix());
    ensure!(
        (variant() == "a") == f.fix().contains("vfio_iommu_type1.allow_unsafe_interrupts=1"),
        "{}",
        f.fix()
    );
    ensure!(r.blocked() && r.devices[0].blocked(&r.machine), "edu not blocked");
    let again = core_doctor::examine(&Sysfs::default());
    ensure!(again.worst() != Some(Severity::Blocker), "{:?}", again.findings);
    Ok(vfio_tests::Outcome::Pass)
}

/// The refusal of a non-viable group (cdev mode: `VFIO_DEVICE_BIND_IOMMUFD` EPERM; group mode
/// where cdev is not offered) is explained by the member that blocks it.
fn explains_the_refusal_of_a_non_viable_group() -> TestResult {
    let addr = match device_from_env("VFIO_TEST_EDU_NONVIABLE") {
        Err(why) => return skip(why),
        Ok(a) => a,
    };
    let mode = if vfio_tests::offered(vfio_core::Mode::CDEV) {
        vfio_core::Mode::CDEV
    } else {
        vfio_core::Mode::GROUP
    };
    let c = vfio_tests::new_container(mode)?;
    let e = match vfio_pci::PciDevice::open_in(c.as_ref(), &addr) {
        Ok(_) => return Err("the non-viable edu opened".into()),
        Err(e) => e,
    };
    let explained = doctor::explain(&Sysfs::default(), &addr, &e)?;
    println!("    {mode}: {e}\n    explained: {explained:?}");
    if mode == vfio_core::Mode::CDEV {
        ensure!(e.errno() == Some(rustix::io::Errno::PERM), "{e}");
    }
    if e.errno().is_some() {
        ensure!(
            explained
                .iter()
                .any(|f| matches!(f, Finding::GroupNotViable { blockers, .. } if blockers.iter().any(|(_, d)| d == "virtio-pci"))),
            "{explained:?}"
        );
    }
    Ok(vfio_tests::Outcome::Pass)
}

/// The `lsvfio` binary (in the initramfs under /examples when the run builds the examples):
/// `lsvfio doctor --json ADDR` exits 0 for the edu and 1 for the non-viable edu (intel boots),
/// and its JSON says so.
fn lsvfio_doctor_exit_status() -> TestResult {
    const LSVFIO: &str = "/examples/lsvfio";
    let addr = match device_from_env("VFIO_TEST_EDU") {
        Err(why) => return skip(why),
        Ok(a) => a,
    };
    if !std::path::Path::new(LSVFIO).exists() {
        return skip(format!("{LSVFIO} is not in this initramfs (the run built no examples)"));
    }
    let run = |args: &[&str]| std::process::Command::new(LSVFIO).arg("doctor").args(args).output();
    let out = run(&["--json", &addr.to_string()])?;
    let json = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "exit {:?}: {json}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        json.contains(&format!("\"address\":\"{addr}\"")) && json.contains("\"blocked\":false"),
        "{json}"
    );
    let text = run(&[&addr.to_string()])?;
    ensure!(text.status.success(), "{:?}", text.status);
    ensure!(
        String::from_utf8_lossy(&text.stdout).contains("lsvfio doctor: 1 device(s), 0 blocked"),
        "{}",
        String::from_utf8_lossy(&text.stdout)
    );
    if let Ok(nv) = device_from_env("VFIO_TEST_EDU_NONVIABLE") {
        let out = run(&["--json", &nv.to_string()])?;
        let json = String::from_utf8_lossy(&out.stdout);
        ensure!(
            out.status.code() == Some(1),
            "exit {:?} for the non-viable edu",
            out.status
        );
        ensure!(
            json.contains("\"code\":\"group-not-viable\"") && json.contains("\"blocked\":true"),
            "{json}"
        );
    }
    let bad = run(&["0000:0f:1f.7"])?;
    ensure!(!bad.status.success(), "a missing device passed");
    Ok(vfio_tests::Outcome::Pass)
}

fn main() -> ExitCode {
    vfio_tests::run(&[
        ("machine_matches_the_boot", machine_matches_the_boot),
        ("edu_is_usable_in_the_offered_modes", edu_is_usable_in_the_offered_modes),
        ("non_viable_group_names_the_blocker", non_viable_group_names_the_blocker),
        ("acs_along_the_path", acs_along_the_path),
        ("small_memlock_is_reported", small_memlock_is_reported),
        (
            "nobody_is_told_about_node_permissions",
            nobody_is_told_about_node_permissions,
        ),
        ("json_and_text_carry_the_verdicts", json_and_text_carry_the_verdicts),
        ("lsvfio_doctor_exit_status", lsvfio_doctor_exit_status),
        (
            "explains_the_refusal_of_a_non_viable_group",
            explains_the_refusal_of_a_non_viable_group,
        ),
        (
            "no_remapping_without_unsafe_interrupts_blocks",
            no_remapping_without_unsafe_interrupts_blocks,
        ),
    ])
}
