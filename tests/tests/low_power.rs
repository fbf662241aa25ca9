//! Low power (`VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY`, `_WITH_WAKEUP`, `_EXIT`, Linux 6.0) on the
//! edu device, in the preferred mode: config space stays readable in low power, the BAR works
//! again after the exit, a second entry is EINVAL, the wakeup eventfd is taken (and refused when
//! it is no eventfd), and entry is refused while a BAR mapping is live. What low power does to a
//! dma-buf import is in `p2p::low_power_revokes_the_import_cdev`.

use std::os::fd::AsFd;
use std::process::ExitCode;
use std::time::Duration;

use vfio_core::{Errno, Error, EventFd};
use vfio_pci::PciDevice;
use vfio_tests::edu::{EDU_ID, Edu};
use vfio_tests::{Outcome, TestResult, device_from_env, ensure, skip};

fn edu() -> Result<PciDevice, TestResult> {
    let addr = device_from_env("VFIO_TEST_EDU").map_err(skip)?;
    PciDevice::open(&addr, None).map_err(|e| Err(e.into()))
}

macro_rules! edu {
    () => {
        match edu() {
            Ok(d) => d,
            Err(outcome) => return outcome,
        }
    };
}

/// Whether the kernel has runtime PM for the device (`CONFIG_PM`): its `power/runtime_status`.
fn runtime_pm(dev: &PciDevice) -> bool {
    vfio_core::Sysfs::default()
        .pci_device_dir(&dev.address())
        .join("power/runtime_status")
        .exists()
}

/// After the exit: the BAR maps, the ID register and liveness answer.
fn bar_works(dev: &PciDevice) -> Result<(), Box<dyn std::error::Error>> {
    let edu = Edu::new(dev.clone())?;
    edu.check_liveness(0x5a5a_0f0f)?;
    Ok(())
}

fn enter_and_exit() -> TestResult {
    let dev = edu!();
    ensure!(dev.device().live_mappings() == 0, "mappings live at the start");
    dev.device().low_power_enter()?;
    let ids = dev.ids()?;
    ensure!(ids == (0x1234, 0x11e8), "config ids in low power: {ids:x?}");
    let again = dev.device().low_power_enter().unwrap_err();
    ensure!(again.errno() == Some(Errno::INVAL), "a second entry: {again}");
    dev.device().low_power_exit()?;
    bar_works(&dev)?;
    // Leaving when not in low power is fine.
    dev.device().low_power_exit()?;
    println!(
        "    {}: entered (config ids {ids:x?} readable), second entry {}, exit, BAR0 ID {EDU_ID:#x} and liveness ok (runtime PM: {})",
        dev.address(),
        vfio_core::errno_name(Errno::INVAL).unwrap_or("EINVAL"),
        runtime_pm(&dev)
    );
    Ok(Outcome::Pass)
}

fn enter_with_wakeup_eventfd() -> TestResult {
    let dev = edu!();
    // Not an eventfd: refused by the kernel, and nothing entered.
    let memfd = rustix::fs::memfd_create("not-an-eventfd", rustix::fs::MemfdFlags::CLOEXEC)?;
    let e = dev.device().low_power_enter_with_wakeup(memfd.as_fd()).unwrap_err();
    ensure!(
        e.errno() == Some(Errno::INVAL) && e.to_string().contains(&dev.address().to_string()),
        "a memfd as the wakeup eventfd: {e}"
    );
    let wake = EventFd::new()?;
    dev.device().low_power_enter_with_wakeup(wake.as_fd())?;
    let ids = dev.ids()?;
    ensure!(ids == (0x1234, 0x11e8), "config ids in low power: {ids:x?}");
    dev.device().low_power_exit()?;
    let signalled = wake.wait_timeout(Duration::from_millis(200))?;
    if !runtime_pm(&dev) {
        ensure!(
            signalled.is_none(),
            "without runtime PM the device never suspends, yet the wakeup eventfd was signalled"
        );
    }
    bar_works(&dev)?;
    println!(
        "    {}: a memfd is {}; with an eventfd entered and left, eventfd {} (runtime PM: {}); BAR0 works",
        dev.address(),
        vfio_core::errno_name(Errno::INVAL).unwrap_or("EINVAL"),
        if signalled.is_some() {
            "signalled (the device resumed)"
        } else {
            "not signalled"
        },
        runtime_pm(&dev)
    );
    Ok(Outcome::Pass)
}

fn entry_refused_while_mmapped() -> TestResult {
    let dev = edu!();
    let edu = Edu::new(dev.clone())?;
    let wake = EventFd::new()?;
    for e in [
        dev.device().low_power_enter().unwrap_err(),
        dev.device().low_power_enter_with_wakeup(wake.as_fd()).unwrap_err(),
    ] {
        let text = e.to_string();
        ensure!(
            matches!(e, Error::InvalidArgument { .. })
                && text.contains("1 BAR mapping")
                && text.contains(&dev.address().to_string()),
            "{e:?}"
        );
        println!("    {text}");
    }
    // Nothing entered: the mapping still works.
    ensure!(edu.bar0.read32(0)? == EDU_ID, "BAR0 after the refusal");
    edu.check_liveness(1)?;
    drop(edu);
    ensure!(dev.device().live_mappings() == 0, "mappings live after the drop");
    dev.device().low_power_enter()?;
    dev.device().low_power_exit()?;
    bar_works(&dev)?;
    Ok(Outcome::Pass)
}

fn main() -> ExitCode {
    vfio_tests::run(&[
        ("enter_and_exit", enter_and_exit),
        ("enter_with_wakeup_eventfd", enter_with_wakeup_eventfd),
        ("entry_refused_while_mmapped", entry_refused_while_mmapped),
    ])
}
