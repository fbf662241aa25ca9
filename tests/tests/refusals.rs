//! Refusals while opening, attaching and binding (issues #18 and #19): each is provoked for
//! real, and the error must keep the kernel's errno, carry the typed cause (`Error::cause`, the
//! doctor's `Finding`) and print its fix.
//!
//! The boots: intel ones have an edu behind a PCIe-to-PCI bridge next to a virtio device on its
//! host driver (`VFIO_TEST_EDU_NONVIABLE`, a non-viable group); virtio ones have no interrupt
//! remapping and turn `allow_unsafe_interrupts` on, which the tests turn off for a moment.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;

use vfio_core::{Errno, Error, Mode, PciAddress, Sysfs};
use vfio_pci::doctor::{self, Finding};
use vfio_tests::module_param::UnsafeInterruptsOff;
use vfio_tests::{Outcome, TestResult, device_from_env, ensure, skip};

fn variant() -> String {
    std::env::var("VFIO_TEST_VARIANT").unwrap_or_default()
}

/// Opens `addr` in a fresh container of `mode`, expecting a refusal.
fn refused(mode: Mode, addr: &PciAddress) -> Result<Error, String> {
    let c = vfio_tests::new_container(mode).map_err(|e| format!("{mode} container: {e}"))?;
    match c.assign_device(addr) {
        Ok(_) => Err(format!("{mode}: {addr} opened")),
        Err(e) => Ok(e),
    }
}

/// The error keeps `errno` (if given), has a cause `want` accepts, and its text names the
/// cause's fix.
fn check(e: &Error, errno: Option<Errno>, want: impl Fn(&Finding) -> bool) -> Result<Finding, String> {
    let text = e.to_string();
    println!("    {text}");
    if e.errno() != errno {
        return Err(format!("errno {:?}, expected {errno:?}: {e:?}", e.errno()));
    }
    let cause = e.cause().ok_or_else(|| format!("no cause: {e:?}"))?;
    if !want(cause) {
        return Err(format!("unexpected cause {cause:?}"));
    }
    if !text.contains(&format!("fix: {}", cause.fix())) {
        return Err(format!("the fix is not in the text: {text}"));
    }
    if format!("{e:?}").contains("Os {") {
        return Err(format!("Debug shows a raw os error: {e:?}"));
    }
    Ok(cause.clone())
}

/// The cdev mode with the addressing of `group` (cdev for group, cdev-noiommu for
/// group-noiommu), when offered.
fn cdev_like(group: Mode) -> Option<Mode> {
    let m = if group == Mode::GROUP {
        Mode::CDEV
    } else {
        Mode::CDEV_NOIOMMU
    };
    vfio_tests::offered(m).then_some(m)
}

fn nonviable() -> Result<(PciAddress, u32), String> {
    let addr = device_from_env("VFIO_TEST_EDU_NONVIABLE").map_err(|why| {
        format!("{why}: the non-viable group (an edu next to a virtio device on its host driver) exists only on intel-iommu boots")
    })?;
    let group = Sysfs::default().iommu_group(&addr).map_err(|e| e.to_string())?;
    Ok((addr, group))
}

fn names_the_virtio_blocker(group: u32) -> impl Fn(&Finding) -> bool {
    move |f| {
        matches!(f, Finding::GroupNotViable { group: g, blockers }
            if *g == group && blockers.iter().any(|(_, d)| d == "virtio-pci"))
    }
}

/// Group mode on the non-viable group: EPERM (from `VFIO_GROUP_SET_CONTAINER` on type1, from
/// `VFIO_GROUP_GET_DEVICE_FD` in iommufd's compatibility container) with `GroupNotViable`
/// naming the virtio device and its driver.
fn not_viable_group_mode() -> TestResult {
    let (addr, group) = match nonviable() {
        Ok(v) => v,
        Err(why) => return skip(why),
    };
    let e = refused(Mode::GROUP, &addr)?;
    check(&e, Some(Errno::PERM), names_the_virtio_blocker(group))?;
    ensure!(e.to_string().contains("lsvfio bind"), "{e}");
    // Nothing is held: the group node opens again.
    drop(vfio_group::Group::open(Sysfs::default().dev_dir(), group, false)?);
    Ok(Outcome::Pass)
}

/// cdev mode on the non-viable group: `VFIO_DEVICE_BIND_IOMMUFD` EPERM, with the same cause
/// group mode gives.
fn not_viable_cdev_mode() -> TestResult {
    let (addr, group) = match nonviable() {
        Ok(v) => v,
        Err(why) => return skip(why),
    };
    if !vfio_tests::offered(Mode::CDEV) {
        return skip("cdev mode is not offered by this kernel");
    }
    let e = refused(Mode::CDEV, &addr)?;
    check(&e, Some(Errno::PERM), names_the_virtio_blocker(group))?;
    Ok(Outcome::Pass)
}

/// Without interrupt remapping and with `allow_unsafe_interrupts` off: EPERM with
/// `NoInterruptRemapping`, whose fix names the parameter of the backend in use.
fn no_remapping(mode: Mode) -> TestResult {
    let addr = match device_from_env("VFIO_TEST_EDU") {
        Ok(a) => a,
        Err(why) => return skip(why),
    };
    if !vfio_tests::offered(mode) {
        return skip(format!("{mode} mode is not offered by this kernel"));
    }
    let off = match UnsafeInterruptsOff::new(
        "the IOMMU remaps interrupts, or there is none (only the virtio-iommu boots lack remapping and allow them)",
    ) {
        Ok(o) => o,
        Err(why) => return skip(why),
    };
    let e = refused(mode, &addr);
    drop(off);
    let e = e?;
    let f = check(&e, Some(Errno::PERM), |f| {
        matches!(
            f,
            Finding::NoInterruptRemapping {
                iommufd_allowed: Some(false),
                ..
            }
        )
    })?;
    let param = if mode == Mode::GROUP && variant() != "b" {
        "vfio_iommu_type1.allow_unsafe_interrupts=1"
    } else {
        "iommufd.allow_unsafe_interrupts=1"
    };
    ensure!(f.fix().contains(param), "{param} not in {}", f.fix());
    // Back on: the open works again.
    drop(vfio_tests::new_container(mode)?.assign_device(&addr)?);
    Ok(Outcome::Pass)
}

fn no_remapping_group_mode() -> TestResult {
    no_remapping(Mode::GROUP)
}

fn no_remapping_cdev_mode() -> TestResult {
    no_remapping(Mode::CDEV)
}

/// A forked child opens `addr` in a fresh container of `mode` and keeps both until `check`
/// (run in this process with the child's pid) returns; then the child exits and is waited for.
fn while_child_holds(mode: Mode, addr: PciAddress, check: impl FnOnce(u32) -> TestResult) -> TestResult {
    let hold = move || -> Result<_, Box<dyn std::error::Error>> {
        let c = vfio_tests::new_container(mode)?;
        let d = c.assign_device(&addr)?;
        Ok((d, c))
    };
    let (mut parent, mut child) = UnixStream::pair()?;
    let in_child = move || -> Result<(), Box<dyn std::error::Error>> {
        let held = hold();
        let ok = held.is_ok();
        let _ = child.write_all(if ok { b"1" } else { b"0" });
        let held = held?;
        let mut b = [0u8; 1];
        let _ = child.read(&mut b);
        drop(held);
        Ok(())
    };
    // SAFETY: the test binary is single-threaded; the child opens a device and waits.
    let pid = unsafe { vfio_tests::fork_child(in_child) }?;
    let mut b = [0u8; 1];
    parent.read_exact(&mut b)?;
    let r = if b[0] == b'1' {
        check(pid as u32)
    } else {
        Err("the child could not open the device".into())
    };
    parent.write_all(b"x")?;
    drop(parent);
    vfio_tests::wait_child(pid)?;
    r
}

/// `Busy` naming the child.
fn busy_by(pid: u32) -> impl Fn(&Finding) -> bool {
    move |f| matches!(f, Finding::Busy { holder: Some(h), .. } if h.pid == pid)
}

/// A group held by another process: opening it in group mode fails with EBUSY naming that
/// process, binding the device's cdev fails with EBUSY naming it too, and the doctor (library
/// and `lsvfio doctor`) names it.
fn busy_group_names_the_holder() -> TestResult {
    let addr = match device_from_env("VFIO_TEST_EDU") {
        Ok(a) => a,
        Err(why) => return skip(why),
    };
    let mode = match vfio_tests::group_mode() {
        Ok(m) => m,
        Err(why) => return skip(why),
    };
    while_child_holds(mode, addr, |pid| {
        let e = refused(mode, &addr)?;
        let f = check(&e, Some(Errno::BUSY), busy_by(pid))?;
        ensure!(e.to_string().contains(&pid.to_string()), "{e}");
        println!("    cause: {f:?}");
        if let Some(cdev) = cdev_like(mode) {
            let e = refused(cdev, &addr)?;
            check(&e, Some(Errno::BUSY), busy_by(pid))?;
        }
        // The doctor names the holder too, and says the device is blocked.
        let r = doctor::diagnose(&Sysfs::default(), &[addr])?;
        let d = r.device(&addr).ok_or("not in the report")?;
        ensure!(d.findings.iter().any(busy_by(pid)), "{:?}", d.findings);
        ensure!(d.blocked(&r.machine), "not blocked: {:?}", d.findings);
        let explained = doctor::explain(&Sysfs::default(), &addr, &e)?;
        ensure!(explained.iter().any(busy_by(pid)), "{explained:?}");
        let lsvfio = std::path::Path::new("/examples/lsvfio");
        if lsvfio.exists() {
            let out = std::process::Command::new(lsvfio)
                .args(["doctor", &addr.to_string()])
                .output()?;
            let text = String::from_utf8_lossy(&out.stdout);
            ensure!(
                out.status.code() == Some(1) && text.contains(&format!("process {pid}")),
                "lsvfio doctor ({:?}) does not name {pid}: {text}",
                out.status
            );
        }
        Ok(Outcome::Pass)
    })
}

/// A device bound through its cdev in another process: the bind here fails (EINVAL: a cdev
/// binds once) with `Busy` naming that process.
fn busy_cdev_names_the_holder() -> TestResult {
    let addr = match device_from_env("VFIO_TEST_EDU") {
        Ok(a) => a,
        Err(why) => return skip(why),
    };
    let mode = match [Mode::CDEV, Mode::CDEV_NOIOMMU]
        .into_iter()
        .find(|m| vfio_tests::offered(*m))
    {
        Some(m) => m,
        None => return skip("cdev mode is not offered by this kernel"),
    };
    while_child_holds(mode, addr, |pid| {
        let e = refused(mode, &addr)?;
        let errno = e.errno();
        ensure!(
            matches!(errno, Some(Errno::INVAL | Errno::BUSY)),
            "errno {errno:?}: {e}"
        );
        check(&e, errno, busy_by(pid))?;
        Ok(Outcome::Pass)
    })
}

/// User nobody: the group node (group mode) and the cdev or `/dev/iommu` (cdev mode) are root's
/// alone: EACCES (or EPERM) with `NodeNotAccessible` naming the node, whose fix says how to
/// give access.
fn node_not_accessible_as_nobody() -> TestResult {
    let addr = match device_from_env("VFIO_TEST_EDU") {
        Ok(a) => a,
        Err(why) => return skip(why),
    };
    let mut modes = Vec::new();
    if let Ok(m) = vfio_tests::group_mode() {
        modes.push(m);
        modes.extend(cdev_like(m));
    }
    if modes.is_empty() {
        return skip("no mode is offered");
    }
    let child = move || -> Result<(), Box<dyn std::error::Error>> {
        for mode in modes {
            let e = match vfio_tests::new_container(mode) {
                // /dev/iommu (or /dev/vfio/vfio) itself may be root's.
                Err(e) => e,
                Ok(c) => match c.assign_device(&addr) {
                    Ok(_) => return Err(format!("{mode}: nobody opened {addr}").into()),
                    Err(e) => e,
                },
            };
            let errno = e.errno();
            let f = check(
                &e,
                errno,
                |f| matches!(f, Finding::NodeNotAccessible { errno: en, .. } if Some(*en) == errno),
            )?;
            if !matches!(errno, Some(Errno::ACCESS | Errno::PERM)) {
                return Err(format!("{mode}: errno {errno:?}").into());
            }
            if !f.fix().contains("udev") {
                return Err(f.fix().into());
            }
        }
        Ok(())
    };
    // SAFETY: the test binary is single-threaded; the child drops to nobody and opens nodes.
    unsafe { vfio_tests::as_nobody(child) }?;
    Ok(Outcome::Pass)
}

/// A cdev node that is not the device sysfs names (a stale or hand-made node: here a /dev tree
/// whose `vfio/devices/vfioN` is `/dev/null`'s 1:3): refused before use with `CdevMismatch`.
fn cdev_node_that_does_not_match_sysfs() -> TestResult {
    let addr = match device_from_env("VFIO_TEST_EDU") {
        Ok(a) => a,
        Err(why) => return skip(why),
    };
    let real = Sysfs::default();
    let node = match real.vfio_cdev(&addr) {
        Ok(n) => n,
        Err(e) => return skip(format!("no VFIO cdev here: {e}")),
    };
    let dev = std::env::temp_dir().join(format!("refusals-dev-{}", std::process::id()));
    let rel = node.path.strip_prefix(real.dev_dir()).map_err(|e| e.to_string())?;
    let fake = dev.join(rel);
    std::fs::create_dir_all(fake.parent().ok_or("no parent")?)?;
    let c = std::ffi::CString::new(fake.as_os_str().as_encoded_bytes())?;
    // SAFETY: mknod with a NUL-terminated path that outlives the call.
    let made = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, 3)) };
    let r = if made != 0 {
        Err(format!("mknod {}: {}", fake.display(), std::io::Error::last_os_error()))
    } else {
        let sysfs = Sysfs::at(real.root(), &dev);
        match vfio_cdev::UnboundDevice::open(&sysfs, &addr) {
            Ok(_) => Err("a node that is /dev/null opened as the device".to_string()),
            Err(e) => check(&e, None, |f| {
                matches!(f, Finding::CdevMismatch { path, expected, found: Some((1, 3)) }
                    if *path == fake && *expected == (node.major, node.minor))
            })
            .map(|_| ()),
        }
    };
    let _ = std::fs::remove_dir_all(&dev);
    r?;
    Ok(Outcome::Pass)
}

/// `vfio.enable_unsafe_noiommu_mode` turned off with `addr` taken off vfio-pci, until dropped:
/// then the mode is on again and `addr` back on vfio-pci (with a new no-IOMMU group).
struct NoIommuModeOff {
    addr: PciAddress,
}

const NOIOMMU_PARAM: &str = "/sys/module/vfio/parameters/enable_unsafe_noiommu_mode";

impl NoIommuModeOff {
    fn new(addr: PciAddress) -> Result<Self, String> {
        let off = NoIommuModeOff { addr };
        Sysfs::default()
            .restore_driver(&addr, None)
            .map_err(|e| format!("unbind {addr}: {e}"))?;
        std::fs::write(NOIOMMU_PARAM, "0").map_err(|e| format!("write 0 to {NOIOMMU_PARAM}: {e}"))?;
        Ok(off)
    }
}

impl Drop for NoIommuModeOff {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(NOIOMMU_PARAM, "1") {
            println!("    could not write 1 to {NOIOMMU_PARAM}: {e}");
        }
        if let Err(e) = Sysfs::default().bind_vfio_pci(&self.addr) {
            println!("    could not give {} back to vfio-pci: {e}", self.addr);
        }
    }
}

/// No IOMMU and no-IOMMU mode off (`vfio.enable_unsafe_noiommu_mode` written 0 at run time):
/// a function newly bound to vfio-pci gets no group and vfio-pci's probe fails
/// (`vfio_group_find_or_alloc`, EINVAL). Binding it (`Sysfs::bind_vfio_pci`) and opening it
/// (`PciDevice::open` in group-noiommu and cdev-noiommu mode) fail with the
/// cause `NoIommu`, whose fix names the IOMMU and the parameter. The bind is undone; with the
/// mode on again it binds and opens. With no mode asked for, `PciDevice::open` says that
/// the kernel offers none and why. Uses pci-testdev, which no other test here needs.
fn no_iommu_mode_off() -> TestResult {
    let addr = match device_from_env("VFIO_TEST_TESTDEV") {
        Ok(a) => a,
        Err(why) => return skip(why),
    };
    let modes = vfio_core::detect();
    if modes.group || modes.cdev || !modes.group_noiommu {
        return skip(format!(
            "an IOMMU is registered, or no-IOMMU mode is off ({modes:?}): only the no-IOMMU boots \
             can provoke the refusal by turning no-IOMMU mode off"
        ));
    }
    let cdev = modes.cdev_noiommu;
    let sysfs = Sysfs::default();
    ensure!(
        sysfs.driver(&addr)?.as_deref() == Some("vfio-pci"),
        "{addr} is not on vfio-pci"
    );
    let is_no_iommu = |f: &Finding| *f == Finding::NoIommu;
    let off = NoIommuModeOff::new(addr)?;
    let r = || -> TestResult {
        ensure!(sysfs.iommu_group(&addr).is_err(), "{addr} kept its group off vfio-pci");
        let e = match sysfs.bind_vfio_pci(&addr) {
            Ok(_) => return Err(format!("{addr} bound to vfio-pci with no-IOMMU mode off").into()),
            Err(e) => e,
        };
        let f = check(&e, Some(Errno::NOENT), is_no_iommu)?;
        for want in ["enable_unsafe_noiommu_mode", "intel_iommu=on"] {
            ensure!(f.fix().contains(want), "{want} not in {}", f.fix());
        }
        // The failed bind is undone.
        ensure!(
            sysfs.driver(&addr)?.is_none(),
            "{addr} is on {:?}",
            sysfs.driver(&addr)?
        );
        ensure!(sysfs.driver_override(&addr)?.is_none(), "driver_override left set");
        let mut tries = vec![Mode::GROUP_NOIOMMU];
        if cdev {
            tries.push(Mode::CDEV_NOIOMMU);
        }
        for mode in tries {
            println!("    open in {mode}:");
            match vfio_pci::PciDevice::open(&addr, Some(mode)) {
                Ok(_) => return Err(format!("{mode}: {addr} opened with no-IOMMU mode off").into()),
                Err(e) => {
                    check(&e, Some(Errno::NOENT), is_no_iommu)?;
                }
            }
        }
        // No mode asked for: the kernel offers none now, and the refusal says why and what
        // to turn back on (the other devices still have their no-IOMMU groups).
        let offered = vfio_core::detect();
        ensure!(
            offered == vfio_core::Modes::default(),
            "modes still offered: {offered:?}"
        );
        // edu is still on vfio-pci (pci-testdev is off it, which its open would report first).
        let edu = match (std::env::var_os("VFIO_RS_MODE"), device_from_env("VFIO_TEST_EDU")) {
            (None, Ok(edu)) => Some(edu),
            (Some(m), _) => {
                println!("    not opening with no mode asked for: VFIO_RS_MODE={m:?} forces one");
                None
            }
            (None, Err(why)) => {
                println!("    not opening with no mode asked for: {why}");
                None
            }
        };
        if let Some(edu) = edu {
            println!("    open {edu} with no mode asked for:");
            match vfio_pci::PciDevice::open(&edu, None) {
                Ok(_) => return Err(format!("{edu} opened with no mode offered").into()),
                Err(e) => {
                    println!("    {e}");
                    ensure!(
                        matches!(e, Error::Unsupported { .. }) && e.to_string().contains("enable_unsafe_noiommu_mode"),
                        "{e:?}"
                    );
                }
            }
        }
        Ok(Outcome::Pass)
    };
    let res = r();
    drop(off);
    res?;
    // The mode on again: the function binds and opens (a new no-IOMMU group).
    ensure!(
        sysfs.driver(&addr)?.as_deref() == Some("vfio-pci"),
        "{addr} not back on vfio-pci"
    );
    drop(vfio_pci::PciDevice::open(&addr, Some(Mode::GROUP_NOIOMMU))?);
    if cdev {
        drop(vfio_pci::PciDevice::open(&addr, Some(Mode::CDEV_NOIOMMU))?);
    }
    Ok(Outcome::Pass)
}

fn main() -> ExitCode {
    vfio_tests::run(&[
        ("not_viable_group_mode", not_viable_group_mode),
        ("not_viable_cdev_mode", not_viable_cdev_mode),
        ("no_remapping_group_mode", no_remapping_group_mode),
        ("no_remapping_cdev_mode", no_remapping_cdev_mode),
        ("busy_group_names_the_holder", busy_group_names_the_holder),
        ("busy_cdev_names_the_holder", busy_cdev_names_the_holder),
        ("node_not_accessible_as_nobody", node_not_accessible_as_nobody),
        (
            "cdev_node_that_does_not_match_sysfs",
            cdev_node_that_does_not_match_sysfs,
        ),
        ("no_iommu_mode_off", no_iommu_mode_off),
    ])
}
