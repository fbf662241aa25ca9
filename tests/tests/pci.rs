//! vfio-pci against edu and nvme: capability walks and typed views, BAR decoding, BAR access
//! with the pread/pwrite fallback, MSI-X vectors in any range, and reset keeping the command
//! register.

use std::os::fd::AsFd;
use std::process::ExitCode;
use std::time::Duration;

use vfio_core::{EventFd, IrqAction, IrqData, IrqSet};
use vfio_pci::{BarKind, Command, PciDevice};
use vfio_tests::{Outcome, TestResult, device_from_env, ensure, skip};

macro_rules! open_or_skip {
    ($var:expr) => {
        match device_from_env($var) {
            Err(why) => return skip(why),
            Ok(addr) => PciDevice::open(&addr, None)?,
        }
    };
}

fn edu_capabilities_and_bars() -> TestResult {
    let dev = open_or_skip!("VFIO_TEST_EDU");
    let msi = dev.msi_cap()?.ok_or("edu has no MSI capability")?;
    ensure!(msi.max_vectors == 1 && msi.is_64bit, "edu MSI {msi:?}");
    ensure!(dev.msix_cap()?.is_none(), "edu has no MSI-X");
    let bars = dev.bars()?;
    ensure!(bars.len() == 1, "edu has one BAR, got {bars:?}");
    ensure!(
        bars[0].index == 0 && bars[0].size == 1 << 20 && bars[0].kind == BarKind::Memory32,
        "BAR0 {:?}",
        bars[0]
    );
    ensure!(dev.bar_info(1)?.is_none(), "BAR1 should be unimplemented");
    ensure!(dev.bar_info(6).is_err(), "BAR6 must be refused");
    Ok(Outcome::Pass)
}

fn nvme_capabilities_msix_pcie() -> TestResult {
    let dev = open_or_skip!("VFIO_TEST_NVME");
    let caps = dev.capabilities()?;
    ensure!(!caps.is_empty(), "no capabilities");
    let msix = dev.msix_cap()?.ok_or("nvme has no MSI-X")?;
    ensure!(msix.table_size == 65 && msix.table_bar == 0, "MSI-X {msix:?}");
    let pcie = dev.pcie_cap()?.ok_or("nvme has no PCIe capability")?;
    ensure!(
        dev.config_size() == 4096,
        "PCIe config space is {} bytes",
        dev.config_size()
    );
    let bar0 = dev.bar_info(0)?.ok_or("no BAR0")?;
    ensure!(bar0.kind == BarKind::Memory64, "nvme BAR0 is {:?}", bar0.kind);
    println!(
        "    caps {:?}; MSI-X {msix:?}; PCIe {pcie:?}",
        caps.iter().map(|c| (c.id, c.offset)).collect::<Vec<_>>()
    );
    Ok(Outcome::Pass)
}

fn bar_access_checks_bounds_and_matches_pread() -> TestResult {
    let dev = open_or_skip!("VFIO_TEST_NVME");
    let bar = dev.bar(0)?;
    ensure!(bar.is_mapped(0, 8), "NVMe registers are not mapped");
    let cap = bar.read64(0)?;
    let mut raw = [0u8; 8];
    bar.read_bytes(0, &mut raw)?;
    ensure!(u64::from_le_bytes(raw) == cap, "mmap and pread disagree on CAP");
    let size = bar.info().size;
    ensure!(bar.read32(size).is_err(), "read past the BAR's end accepted");
    ensure!(bar.read32(2).is_err(), "misaligned read accepted");
    // The MSI-X table: through mmap when mappable, else through pread.
    let table = dev.msix_cap()?.ok_or("no MSI-X")?.table_offset as u64;
    let ctrl = bar.read32(table + 12)?;
    ensure!(
        ctrl & 1 == 1,
        "MSI-X vector 0 should start masked, control word {ctrl:#x}"
    );
    println!("    MSI-X table mapped: {}", bar.is_mapped(table, 16));
    Ok(Outcome::Pass)
}

fn msix_vectors_in_any_range() -> TestResult {
    let dev = open_or_skip!("VFIO_TEST_NVME");
    let fds = [EventFd::new()?, EventFd::new()?, EventFd::new()?];
    // Vectors 3..6 only, not starting from 0.
    let set = IrqSet::eventfds(
        vfio_pci::MSIX_IRQ,
        3,
        &fds.iter().map(|e| Some(e.as_fd())).collect::<Vec<_>>(),
    );
    dev.device().set_irqs(&set)?;
    let fire = IrqSet {
        index: vfio_pci::MSIX_IRQ,
        start: 4,
        action: IrqAction::Trigger,
        data: IrqData::None { count: 1 },
    };
    dev.device().set_irqs(&fire)?;
    ensure!(
        fds[1].wait_timeout(Duration::from_secs(5))?.is_some(),
        "vector 4 did not fire"
    );
    ensure!(
        fds[0].wait_timeout(Duration::from_millis(50))?.is_none(),
        "vector 3 fired too"
    );
    let beyond = IrqSet::eventfds(vfio_pci::MSIX_IRQ, 64, &[Some(fds[0].as_fd()), Some(fds[1].as_fd())]);
    ensure!(dev.device().set_irqs(&beyond).is_err(), "vectors 64..66 of 65 accepted");
    dev.disable_irq(vfio_pci::MSIX_IRQ)?;
    Ok(Outcome::Pass)
}

fn reset_keeps_the_command_register() -> TestResult {
    let dev = open_or_skip!("VFIO_TEST_NVME");
    dev.enable_bus_master()?;
    dev.reset()?;
    let cmd = dev.command()?;
    ensure!(
        cmd.contains(Command::BUS_MASTER | Command::MEMORY_SPACE),
        "command after reset {cmd:?}"
    );
    Ok(Outcome::Pass)
}

fn binding_helper_binds_and_gives_back() -> TestResult {
    let addr = match device_from_env("VFIO_TEST_NVME") {
        Ok(a) => a,
        Err(why) => return skip(why),
    };
    let sysfs = vfio_core::Sysfs::default();
    sysfs.restore_driver(&addr, None)?;
    {
        let binding = vfio_pci::VfioPciBinding::bind(addr, true)?;
        ensure!(
            binding.previous_driver().is_none(),
            "previous driver {:?}",
            binding.previous_driver()
        );
        let dev = PciDevice::open(&addr, None)?;
        ensure!(dev.ids()?.0 == 0x1b36, "ids");
    }
    ensure!(sysfs.driver(&addr)?.is_none(), "not given back on drop");
    // Leave it as the harness had it.
    let again = vfio_pci::VfioPciBinding::bind(addr, false)?;
    drop(again);
    ensure!(sysfs.driver(&addr)?.as_deref() == Some("vfio-pci"), "rebinding failed");
    Ok(Outcome::Pass)
}

fn edu_intx_through_pci_device() -> TestResult {
    let dev = open_or_skip!("VFIO_TEST_EDU");
    let bar0 = dev.map_bar(0)?;
    let irq = EventFd::new()?;
    dev.enable_intx(&irq)?;
    for round in 1..=3u32 {
        bar0.write32(0x60, round)?;
        ensure!(
            irq.wait_timeout(Duration::from_secs(10))?.is_some(),
            "INTx {round} did not arrive"
        );
        bar0.write32(0x64, round)?;
        dev.unmask_intx()?;
    }
    dev.disable_irq(vfio_pci::INTX_IRQ)?;
    Ok(Outcome::Pass)
}

fn main() -> ExitCode {
    vfio_tests::run(&[
        (
            "binding_helper_binds_and_gives_back",
            binding_helper_binds_and_gives_back,
        ),
        ("edu_intx_through_pci_device", edu_intx_through_pci_device),
        ("edu_capabilities_and_bars", edu_capabilities_and_bars),
        ("nvme_capabilities_msix_pcie", nvme_capabilities_msix_pcie),
        (
            "bar_access_checks_bounds_and_matches_pread",
            bar_access_checks_bounds_and_matches_pread,
        ),
        ("msix_vectors_in_any_range", msix_vectors_in_any_range),
        ("reset_keeps_the_command_register", reset_keeps_the_command_register),
    ])
}
