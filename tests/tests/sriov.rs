//! SR-IOV through vfio-pci: the `SriovVfs` owner enables VFs on the QEMU nvme PF
//! (`VFIO_TEST_NVME_SRIOV`, 8086:5845, two VFs at PF.1 and PF.2) with a VF token and disables
//! them on drop; VFs open only with that token, in group mode (`vf_token=` in the device name)
//! and cdev mode (`VFIO_DEVICE_BIND_FLAG_TOKEN`); without it or with a wrong one the kernel says
//! EACCES, named with the PF; and the bad-input cases of SR-IOV, VF tokens and ioeventfds.
//!
//! No test resets or closes the PF while VFs exist (QEMU 7.2's nvme drops its VFs on a PF
//! reset, docs/design/issue-17.md 3.3): VFs are opened through `SriovVfs`, which the VF devices
//! hold, and which holds the PF.

use std::process::ExitCode;
use std::sync::Arc;

use vfio_core::{
    AssignOptions, Container, DmaAccess, DmaBuffer, DmaMapping, Errno, Error, EventFd, IoValue, Mode, PciAddress,
    SriovVfs, Sysfs, Uuid,
};
use vfio_pci::PciDevice;
use vfio_tests::{FdSnapshot, Outcome, TestResult, device_from_env, ensure, skip};

const PF: &str = "VFIO_TEST_NVME_SRIOV";
const EDU: &str = "VFIO_TEST_EDU";

/// The interface's IOMMU mode when offered, else its no-IOMMU mode.
fn interface_mode(iommu: Mode, noiommu: Mode) -> Result<Mode, String> {
    if vfio_tests::offered(iommu) {
        Ok(iommu)
    } else if vfio_tests::offered(noiommu) {
        Ok(noiommu)
    } else {
        Err(format!(
            "neither {iommu} nor {noiommu} mode is offered ({:?})",
            vfio_core::detect()
        ))
    }
}

fn group_mode() -> Result<Mode, String> {
    interface_mode(Mode::GROUP, Mode::GROUP_NOIOMMU)
}

fn cdev_mode() -> Result<Mode, String> {
    interface_mode(Mode::CDEV, Mode::CDEV_NOIOMMU)
}

fn any_mode() -> Result<Mode, String> {
    group_mode().or_else(|_| cdev_mode())
}

/// The PF open in a fresh container of `mode`, with no VF enabled.
struct Pf {
    c: Arc<dyn Container>,
    addr: PciAddress,
    dev: PciDevice,
    sysfs: Sysfs,
}

fn open_pf(mode: Result<Mode, String>) -> Result<Pf, String> {
    let mode = mode?;
    let addr = device_from_env(PF)?;
    let c = vfio_tests::container_or_reason(mode)?;
    let sysfs = Sysfs::default();
    let numvfs = sysfs.sriov_numvfs(&addr).map_err(|e| e.to_string())?;
    if numvfs != Some(0) {
        return Err(format!(
            "{addr}: sriov_numvfs is {numvfs:?}, not 0: left enabled by an earlier test?"
        ));
    }
    let dev = PciDevice::open_in(c.as_ref(), &addr).map_err(|e| format!("open the PF: {e}"))?;
    Ok(Pf { c, addr, dev, sysfs })
}

impl Pf {
    fn enable(&self, token: &Uuid) -> vfio_core::Result<Arc<SriovVfs>> {
        SriovVfs::enable(&self.sysfs, self.dev.device(), &self.addr, 2, token)
    }
}

fn numvfs_owner_enables_and_restores() -> TestResult {
    let pf = match open_pf(any_mode()) {
        Ok(p) => p,
        Err(why) => return skip(why),
    };
    ensure!(
        pf.sysfs.sriov_totalvfs(&pf.addr)? == Some(2),
        "sriov_totalvfs {:?}",
        pf.sysfs.sriov_totalvfs(&pf.addr)?
    );
    let token = Uuid::random()?;
    let vfs = pf.enable(&token)?;
    ensure!(pf.sysfs.sriov_numvfs(&pf.addr)? == Some(2), "numvfs not 2 after enable");
    let want: Vec<PciAddress> = (1..=2)
        .map(|f| PciAddress::new(pf.addr.domain, pf.addr.bus, pf.addr.device, pf.addr.function + f))
        .collect::<Result<_, _>>()?;
    ensure!(vfs.vfs() == want.as_slice(), "VFs {:?}, expected {want:?}", vfs.vfs());
    ensure!(
        pf.sysfs.virtfns(&pf.addr)? == want,
        "virtfns differ from the owner's list"
    );
    ensure!(
        vfs.token() == &token && vfs.pf_address() == pf.addr,
        "token or PF address differ"
    );
    for vf in &want {
        ensure!(pf.sysfs.physfn(vf)? == Some(pf.addr), "{vf}: physfn is not {}", pf.addr);
        ensure!(
            pf.sysfs.driver(vf)?.as_deref() == Some("vfio-pci"),
            "{vf}: not on vfio-pci"
        );
        let id = pf.sysfs.identity(vf)?;
        ensure!(
            (id.vendor, id.device, id.class) == (0x8086, 0x5845, 0x010802),
            "{vf}: identity {id:x?}"
        );
        ensure!(pf.sysfs.sriov_totalvfs(vf)?.is_none(), "{vf}: a VF with sriov_totalvfs");
        pf.sysfs.iommu_group(vf)?;
    }
    ensure!(pf.sysfs.physfn(&pf.addr)?.is_none(), "the PF has a physfn link");
    lsvfio_shows_sriov(&pf.addr, &want[0])?;
    drop(vfs);
    ensure!(
        pf.sysfs.sriov_numvfs(&pf.addr)? == Some(0),
        "numvfs not 0 after the owner dropped"
    );
    for vf in &want {
        ensure!(
            pf.sysfs.require_device(vf).is_err(),
            "{vf} still exists after the owner dropped"
        );
    }
    // keep(): the VFs outlive the owner; put them away by hand, the PF still open.
    let vfs = pf.enable(&token)?;
    vfs.keep();
    drop(vfs);
    let kept = pf.sysfs.sriov_numvfs(&pf.addr)?;
    pf.sysfs.set_sriov_numvfs(&pf.addr, 0)?;
    ensure!(kept == Some(2), "numvfs {kept:?} after a kept owner dropped");
    let names: Vec<String> = want.iter().map(|a| a.to_string()).collect();
    println!(
        "    {}: VFs {} on vfio-pci, 8086:5845 class 010802; numvfs back to 0 on drop, kept with keep()",
        pf.addr,
        names.join(" ")
    );
    Ok(Outcome::Pass)
}

/// `lsvfio PF VF` (the guest's `/examples/lsvfio`, when there) prints the PF's VF counts and the
/// VF's PF, in text and JSON.
fn lsvfio_shows_sriov(pf: &PciAddress, vf: &PciAddress) -> Result<(), String> {
    let bin = std::path::Path::new("/examples/lsvfio");
    if !bin.exists() {
        println!("    (no /examples/lsvfio here: its SR-IOV lines are not checked)");
        return Ok(());
    }
    let run = |json: bool| -> Result<String, String> {
        let mut cmd = std::process::Command::new(bin);
        if json {
            cmd.arg("--json");
        }
        let out = cmd
            .args([pf.to_string(), vf.to_string()])
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("lsvfio failed: {}", String::from_utf8_lossy(&out.stderr)));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let text = run(false)?;
    for want in [format!("physfn {pf}"), "sriov numvfs 2/totalvfs 2".to_string()] {
        if !text.lines().any(|l| l.trim() == want) {
            return Err(format!("lsvfio did not print `{want}`:\n{text}"));
        }
    }
    let json = run(true)?;
    for want in [
        format!("\"physfn\":\"{pf}\""),
        "\"sriov\":{\"numvfs\":2,\"totalvfs\":2}".to_string(),
    ] {
        if !json.contains(&want) {
            return Err(format!("lsvfio --json has no `{want}`:\n{json}"));
        }
    }
    println!("    lsvfio: `physfn {pf}` for {vf}, `sriov numvfs 2/totalvfs 2` for {pf} (text and JSON)");
    Ok(())
}

fn vf_open_with_token(mode: Result<Mode, String>) -> TestResult {
    let pf = match open_pf(mode) {
        Ok(p) => p,
        Err(why) => return skip(why),
    };
    let vfs = pf.enable(&Uuid::random()?)?;
    if pf.c.mode().interface() == vfio_core::Interface::Cdev {
        // The probe behind the Unsupported answer of older kernels: 7.3 knows the flag.
        let unbound = vfio_cdev::UnboundDevice::open(&pf.sysfs, &vfs.vfs()[0])?;
        ensure!(
            unbound.vf_token_bind_supported()?,
            "the bind-with-token probe says no on this kernel"
        );
        unbound.close()?;
    }
    let vf = PciDevice::open_vf_in(pf.c.as_ref(), &vfs, 0)?;
    ensure!(vf.ids()? == (0x8086, 0x5845), "VF config ids {:x?}", vf.ids()?);
    ensure!(vf.address() == vfs.vfs()[0], "VF address {}", vf.address());
    ensure!(
        vf.is_virtfn()? && vf.physfn()? == Some(pf.addr),
        "VF physfn {:?}",
        vf.physfn()?
    );
    ensure!(!pf.dev.is_virtfn()?, "the PF says it is a VF");
    let bar0 = vf.device().region_info(0)?;
    ensure!(bar0.size == 16 * 1024, "VF BAR0 is {:#x} bytes, not 16 KiB", bar0.size);
    vf.enable_bus_master()?;
    let regs = vf.bar(0)?;
    let (cap_lo, cap_hi, csts) = (regs.read32(0)?, regs.read32(4)?, regs.read32(0x1c)?);
    // An offline secondary controller (no virtualization management): CAP reads 0, CSTS.CFS.
    ensure!(
        (cap_lo, cap_hi, csts) == (0, 0, 0x2),
        "VF CAP {cap_hi:#x}:{cap_lo:#x} CSTS {csts:#x}"
    );
    let buf = DmaBuffer::new(4096)?;
    let map = DmaMapping::new(pf.c.as_ref(), &buf, 0x10_0000, DmaAccess::READ | DmaAccess::WRITE)?;
    let dma = map.device_addr();
    drop(map);
    drop(regs);
    vf.reset()?;
    ensure!(vf.ids()? == (0x8086, 0x5845), "VF ids after reset {:x?}", vf.ids()?);
    println!(
        "    {}: VF {} ids 8086:5845, BAR0 16 KiB, CAP 0, CSTS {csts:#x}; DMA buffer mapped at {dma:#x}; VF reset ok",
        pf.c.mode(),
        vf.address()
    );
    drop(vf);
    ensure!(
        pf.sysfs.sriov_numvfs(&pf.addr)? == Some(2),
        "the owner went with the VF, not with the test's Arc"
    );
    drop(vfs);
    ensure!(
        pf.sysfs.sriov_numvfs(&pf.addr)? == Some(0),
        "numvfs not 0 once VF and owner are gone"
    );
    Ok(Outcome::Pass)
}

/// Opens VF 0 with `opts` (no token, or a wrong one) and expects EACCES naming the VF, its PF and
/// `word` (`missing` or `wrong`), with no fd left behind; then opens it with the right token.
fn vf_open_refused(mode: Result<Mode, String>, wrong_token: bool) -> TestResult {
    let pf = match open_pf(mode) {
        Ok(p) => p,
        Err(why) => return skip(why),
    };
    let vfs = pf.enable(&Uuid::random()?)?;
    let vf = vfs.vfs()[0];
    let opts = if wrong_token {
        AssignOptions::new().vf_token(Uuid::random()?)
    } else {
        AssignOptions::new()
    };
    let fds = FdSnapshot::take()?;
    let err = match pf.c.assign_device_with(&vf, &opts) {
        Ok(_) => return Err(format!("{vf} opened without the right VF token").into()),
        Err(e) => e,
    };
    let text = err.to_string();
    let word = if wrong_token { "wrong" } else { "missing" };
    if let Some(t) = &opts.vf_token {
        ensure!(!text.contains(&t.to_string()), "the error shows the token: {text}");
    }
    ensure!(
        matches!(
            err,
            Error::Kernel {
                errno: Errno::ACCESS,
                ..
            }
        ),
        "expected Kernel EACCES, got {err:?}"
    );
    ensure!(
        text.contains(&vf.to_string()) && text.contains(&pf.addr.to_string()) && text.contains(word),
        "the error does not name VF, PF and '{word}': {text}"
    );
    fds.check("fds leaked by the refusal")?;
    // Nothing of the refused open stays: the same container opens it with the token.
    let dev = vfs.open_vf(pf.c.as_ref(), 0)?;
    drop(dev);
    println!("    {text}");
    Ok(Outcome::Pass)
}

fn pf_reopen_needs_the_token(mode: Result<Mode, String>) -> TestResult {
    let pf = match open_pf(mode) {
        Ok(p) => p,
        Err(why) => return skip(why),
    };
    let vfs = pf.enable(&Uuid::random()?)?;
    let vf = vfs.open_vf(pf.c.as_ref(), 0)?;
    // Group mode opens the device again through its group, which is in `c` already; a cdev
    // binds once per container, so cdev mode tries in a second container.
    let c2 = match pf.c.mode().interface() {
        vfio_core::Interface::Group => pf.c.clone(),
        vfio_core::Interface::Cdev => vfio_tests::new_container(pf.c.mode())?,
    };
    let fds = FdSnapshot::take()?;
    let err = match c2.assign_device(&pf.addr) {
        Ok(_) => return Err("the PF opened again without the token while a VF is open".into()),
        Err(e) => e,
    };
    ensure!(err.errno() == Some(Errno::ACCESS), "without token: {err:?}");
    ensure!(
        err.to_string().contains("PF with VFs open") && err.to_string().contains(&pf.addr.to_string()),
        "{err}"
    );
    fds.check("fds leaked by the refusal")?;
    println!("    without token: {err}");
    let with = c2.assign_device_with(&pf.addr, &AssignOptions::new().vf_token(*vfs.token()));
    match pf.c.mode().interface() {
        vfio_core::Interface::Group => {
            let dev = with?;
            dev.info()?;
            drop(dev);
            println!("    with the token: opened a second PF fd");
        }
        vfio_core::Interface::Cdev => {
            // The token passes; then the kernel's single open of a cdev device refuses.
            let e = match with {
                Ok(_) => return Err("the PF's cdev was bound twice".into()),
                Err(e) => e,
            };
            ensure!(e.errno() == Some(Errno::INVAL), "with the token: {e:?}");
            ensure!(e.to_string().contains("a cdev binds once"), "{e}");
            println!("    with the token: {e}");
        }
    }
    fds.check("fds leaked by the second PF open")?;
    drop(vf);
    Ok(Outcome::Pass)
}

/// Runs `f` and checks that it returns an error and leaves the fds as they were.
fn refused<T>(what: &str, f: impl FnOnce() -> vfio_core::Result<T>) -> Result<Error, String> {
    let fds = FdSnapshot::take().map_err(|e| e.to_string())?;
    let e = match f() {
        Ok(_) => return Err(format!("{what}: accepted")),
        Err(e) => e,
    };
    fds.check(format!("{what}: fds leaked ({e})"))?;
    println!("    {e}");
    Ok(e)
}

fn bad_numvfs_above_totalvfs() -> TestResult {
    let pf = match open_pf(any_mode()) {
        Ok(p) => p,
        Err(why) => return skip(why),
    };
    let token = Uuid::random()?;
    let e = refused("enable 3 VFs", || {
        SriovVfs::enable(&pf.sysfs, pf.dev.device(), &pf.addr, 3, &token)
    })?;
    ensure!(matches!(e, Error::InvalidArgument { .. }), "{e:?}");
    let text = e.to_string();
    ensure!(
        text.contains("numvfs 3") && text.contains("sriov_totalvfs 2") && text.contains(&pf.addr.to_string()),
        "{text}"
    );
    // What the kernel itself answers to the raw write.
    let raw = refused("write 3 to sriov_numvfs", || pf.sysfs.set_sriov_numvfs(&pf.addr, 3))?;
    ensure!(raw.errno() == Some(Errno::RANGE), "raw write: {raw:?}");
    ensure!(pf.sysfs.sriov_numvfs(&pf.addr)? == Some(0), "numvfs changed");
    Ok(Outcome::Pass)
}

fn bad_sriov_without_enable_sriov() -> TestResult {
    let pf = match open_pf(any_mode()) {
        Ok(p) => p,
        Err(why) => return skip(why),
    };
    // Given back when dropped, also when the test fails.
    let mut param = vfio_tests::ParamGuard::new();
    param.set(vfio_tests::module_param::path("vfio_pci", "enable_sriov"), "0")?;
    let token = Uuid::random()?;
    let e = refused("enable VFs with enable_sriov=0", || {
        SriovVfs::enable(&pf.sysfs, pf.dev.device(), &pf.addr, 2, &token)
    })?;
    drop(param);
    ensure!(matches!(e, Error::Unsupported { .. }), "{e:?}");
    ensure!(
        e.to_string().contains("vfio_pci.enable_sriov=1") && e.to_string().contains(&pf.addr.to_string()),
        "{e}"
    );
    ensure!(pf.sysfs.sriov_numvfs(&pf.addr)? == Some(0), "numvfs changed");
    ensure!(
        pf.sysfs.module_param_enabled("vfio_pci", "enable_sriov"),
        "enable_sriov not restored"
    );
    Ok(Outcome::Pass)
}

fn bad_vf_token_on_a_non_vf_group() -> TestResult {
    let (mode, addr) = match group_mode().and_then(|m| Ok((m, device_from_env(EDU)?))) {
        Ok(v) => v,
        Err(why) => return skip(why),
    };
    let c = vfio_tests::new_container(mode)?;
    let token = Uuid::random()?;
    let e = refused("open edu with a VF token", || {
        c.assign_device_with(&addr, &AssignOptions::new().vf_token(token))
    })?;
    ensure!(
        matches!(
            e,
            Error::Kernel {
                errno: Errno::INVAL,
                ..
            }
        ),
        "{e:?}"
    );
    ensure!(
        e.to_string().contains(&addr.to_string()) && e.to_string().contains("neither an SR-IOV VF nor a PF"),
        "{e}"
    );
    // The refused open left the group out: the edu opens without a token.
    drop(c.assign_device(&addr)?);
    Ok(Outcome::Pass)
}

fn bad_set_vf_token_on_a_non_pf() -> TestResult {
    let (mode, addr) = match any_mode().and_then(|m| Ok((m, device_from_env(EDU)?))) {
        Ok(v) => v,
        Err(why) => return skip(why),
    };
    let c = vfio_tests::new_container(mode)?;
    let edu = PciDevice::open_in(c.as_ref(), &addr)?;
    let token = Uuid::random()?;
    let e = refused("set a VF token on edu", || edu.device().set_vf_token(&token))?;
    ensure!(
        matches!(
            e,
            Error::Kernel {
                errno: Errno::NOTTY,
                ..
            }
        ),
        "{e:?}"
    );
    ensure!(
        e.to_string().contains(&addr.to_string()) && e.to_string().contains("not an SR-IOV PF"),
        "{e}"
    );
    Ok(Outcome::Pass)
}

fn bad_ioeventfd_registered_twice() -> TestResult {
    let (mode, addr) = match any_mode().and_then(|m| Ok((m, device_from_env(EDU)?))) {
        Ok(v) => v,
        Err(why) => return skip(why),
    };
    let c = vfio_tests::new_container(mode)?;
    let edu = PciDevice::open_in(c.as_ref(), &addr)?;
    let bar0 = edu.device().region_info(0)?;
    let (ev1, ev2) = (EventFd::new()?, EventFd::new()?);
    use std::os::fd::AsFd;
    let first = edu
        .device()
        .add_ioeventfd(&bar0, 4, IoValue::U32(0x1234), ev1.as_fd())?;
    let e = refused("the same ioeventfd again", || {
        edu.device().add_ioeventfd(&bar0, 4, IoValue::U32(0x1234), ev2.as_fd())
    })?;
    ensure!(
        matches!(
            e,
            Error::Kernel {
                errno: Errno::EXIST,
                ..
            }
        ),
        "{e:?}"
    );
    ensure!(
        e.to_string().contains(&addr.to_string()) && e.to_string().contains("registered on the device already"),
        "{e}"
    );
    // Another value at the same offset and width is a separate ioeventfd: the kernel takes it.
    let other = edu
        .device()
        .add_ioeventfd(&bar0, 4, IoValue::U32(0x5678), ev2.as_fd())?;
    other.remove()?;
    first.remove()?;
    println!("    the same offset and width with another value: accepted (a second ioeventfd)");
    Ok(Outcome::Pass)
}

fn main() -> ExitCode {
    vfio_tests::run(&[
        ("numvfs_owner_enables_and_restores", numvfs_owner_enables_and_restores),
        ("vf_open_with_token_group", || vf_open_with_token(group_mode())),
        ("vf_open_with_token_cdev", || vf_open_with_token(cdev_mode())),
        ("vf_open_without_token_is_eacces_group", || {
            vf_open_refused(group_mode(), false)
        }),
        ("vf_open_without_token_is_eacces_cdev", || {
            vf_open_refused(cdev_mode(), false)
        }),
        ("vf_open_with_wrong_token_is_eacces_group", || {
            vf_open_refused(group_mode(), true)
        }),
        ("vf_open_with_wrong_token_is_eacces_cdev", || {
            vf_open_refused(cdev_mode(), true)
        }),
        ("pf_reopen_while_a_vf_is_open_needs_the_token_group", || {
            pf_reopen_needs_the_token(group_mode())
        }),
        ("pf_reopen_while_a_vf_is_open_needs_the_token_cdev", || {
            pf_reopen_needs_the_token(cdev_mode())
        }),
        ("bad_numvfs_above_totalvfs", bad_numvfs_above_totalvfs),
        ("bad_sriov_without_enable_sriov", bad_sriov_without_enable_sriov),
        ("bad_vf_token_on_a_non_vf_group", bad_vf_token_on_a_non_vf_group),
        ("bad_set_vf_token_on_a_non_pf", bad_set_vf_token_on_a_non_pf),
        ("bad_ioeventfd_registered_twice", bad_ioeventfd_registered_twice),
    ])
}
