//! Teardown in every order: a container handle, a device, a BAR mapping, a DMA mapping and an
//! MSI eventfd are dropped in all 120 orders, in every mode the kernel offers; each order must
//! leave nothing busy, so the device opens again in a fresh container; no fd, memory mapping or
//! locked page may outlive an order; a BAR mapping dropped last still reads the device (it keeps
//! the device open); and at the end a DMA round trip proves the device still works.
//!
//! Release to other processes: a device opened through the process-wide default container is
//! held exactly as long as a handle of it lives (a clone, a BAR mapping), and another process
//! opens it once the last goes; a group joined by hand (`add_group`) stays until it is
//! removed; and the explicit `close` of a container or an iommufd reports what stays held.

use std::any::Any;
use std::process::ExitCode;

use vfio_core::{DmaAccess, DmaBuffer, DmaMapping, EventFd, Mode, OwnedDmaMapping, PciAddress, SharedContainer, Sysfs};
use vfio_pci::PciDevice;
use vfio_tests::edu::{Direction, EDU_ID, Edu};
use vfio_tests::{Outcome, Resources, TestResult, device_from_env, ensure, skip};

const ITEMS: [&str; 5] = ["container", "device", "BAR mapping", "DMA mapping", "eventfd"];

/// Every permutation of `0..n`, in lexicographic order.
fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![Vec::new()];
    }
    let mut out = Vec::new();
    for first in 0..n {
        for rest in permutations(n - 1) {
            let mut p = vec![first];
            p.extend(rest.into_iter().map(|i| if i >= first { i + 1 } else { i }));
            out.push(p);
        }
    }
    out
}

/// Opens everything, then drops it in `order`.
fn open_and_drop(mode: Mode, addr: &PciAddress, order: &[usize]) -> Result<(), Box<dyn std::error::Error>> {
    let container = vfio_tests::new_container(mode)?;
    let dev = PciDevice::open_in(container.as_ref(), addr)?;
    let bar0 = dev.bar(0)?;
    ensure!(bar0.read32(0)? == EDU_ID, "edu ID through the fresh mapping");
    let irq = EventFd::new()?;
    dev.enable_bus_master()?;
    dev.enable_msi([&irq])?;
    let dma = OwnedDmaMapping::new(
        SharedContainer::Shared(container.clone()),
        DmaBuffer::new(4096)?,
        0x20_0000,
        DmaAccess::READ_WRITE,
    )?;
    let mut items: Vec<Option<Box<dyn Any>>> = vec![
        Some(Box::new(container)),
        Some(Box::new(dev)),
        Some(Box::new(bar0)),
        Some(Box::new(dma)),
        Some(Box::new(irq)),
    ];
    for &i in order {
        // The BAR mapping holds the device open: with device and container gone it still reads.
        if ITEMS[i] == "BAR mapping" && items[0].is_none() && items[1].is_none() {
            let bar = items[i].as_ref().and_then(|b| b.downcast_ref::<vfio_pci::Bar>());
            let id = bar.ok_or("the BAR mapping is not a Bar")?.read32(0)?;
            ensure!(id == EDU_ID, "edu ID {id:#x} through a mapping outliving its device");
        }
        drop(items[i].take());
    }
    Ok(())
}

fn every_drop_order(mode: Mode) -> TestResult {
    let addr = match device_from_env("VFIO_TEST_EDU") {
        Err(why) => return skip(why),
        Ok(a) => a,
    };
    if !vfio_tests::offered(mode) {
        return skip(format!(
            "{mode:?} mode is not offered by this kernel ({:?})",
            vfio_core::detect()
        ));
    }
    let orders = permutations(ITEMS.len());
    // Warm-up: lazily created process-wide state is not a leak.
    open_and_drop(mode, &addr, &orders[0])?;
    let before = Resources::now()?;
    for order in &orders {
        let names = || order.iter().map(|&i| ITEMS[i]).collect::<Vec<_>>();
        open_and_drop(mode, &addr, order).map_err(|e| format!("after dropping in the order {:?}: {e}", names()))?;
        before.check(format!("dropping in the order {:?} left", names()))?;
    }
    // Still usable: a DMA round trip in a fresh container.
    let container = vfio_tests::new_container(mode)?;
    let edu = Edu::new(PciDevice::open_in(container.as_ref(), &addr)?)?;
    edu.pci.enable_bus_master()?;
    let irq = EventFd::new()?;
    edu.pci.enable_msi([&irq])?;
    let buf = DmaBuffer::new(4096)?;
    let pattern: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8).collect();
    buf.write(0, &pattern)?;
    let map = vfio_core::DmaMapping::new(container.as_ref(), &buf, 0x20_0000, DmaAccess::READ_WRITE)?;
    edu.dma(Direction::ToDevice, map.device_addr(), 1000, &irq)?;
    edu.dma(Direction::FromDevice, map.device_addr() + 2048, 1000, &irq)?;
    let mut back = vec![0u8; 1000];
    buf.read(2048, &mut back)?;
    ensure!(back == pattern, "DMA after the teardowns returned other bytes");
    println!(
        "    {mode:?}: {} drop orders of {{{}}}; the device reopened each time and DMAs afterwards",
        orders.len(),
        ITEMS.join(", ")
    );
    Ok(Outcome::Pass)
}

fn every_drop_order_group() -> TestResult {
    every_drop_order(Mode::GROUP)
}

fn every_drop_order_cdev() -> TestResult {
    every_drop_order(Mode::CDEV)
}

fn every_drop_order_group_noiommu() -> TestResult {
    every_drop_order(Mode::GROUP_NOIOMMU)
}

fn every_drop_order_cdev_noiommu() -> TestResult {
    every_drop_order(Mode::CDEV_NOIOMMU)
}

/// Whether another process can open the device at `addr` in `mode` now: a forked child opens
/// it in a fresh container of its own (not the default one it inherits) and reads its ID
/// register. A group or device cdev this process still holds makes that fail: a group node has
/// one opener (EBUSY), a cdev one binding.
fn another_process_opens(addr: PciAddress, mode: Mode) -> Result<(), String> {
    let child = move || -> Result<(), Box<dyn std::error::Error>> {
        let c = vfio_tests::new_container(mode)?;
        let dev = PciDevice::open_in(c.as_ref(), &addr)?;
        ensure!(dev.bar(0)?.read32(0)? == EDU_ID, "edu ID in the other process");
        Ok(())
    };
    // SAFETY: the test binary runs one test at a time on its main thread.
    let pid = unsafe { vfio_tests::fork_child(child) }?;
    vfio_tests::wait_child(pid).map_err(|e| format!("another process could not open {addr} in {mode} mode: {e}"))
}

/// Through the default container (`PciDevice::open`): the device stays held while a clone or a
/// BAR mapping of it lives, and is released for another process when the last goes; a DMA
/// mapping of the default container dropped after that is released quietly (with the type1
/// driver the last group out took it along); nothing is left behind, and the device opens
/// through the default container again.
fn default_container_lets_go(mode: Mode) -> TestResult {
    let addr = match vfio_tests::device_in("VFIO_TEST_EDU", mode) {
        Err(why) => return skip(why),
        Ok(a) => a,
    };
    // Warm-up: process-wide state opened once (the default container is not: it closes with
    // its last holder, see driver_api::default_container_is_dropped_with_its_last_holder).
    drop(PciDevice::open(&addr, Some(mode))?);
    let before = Resources::now()?;
    let dev = PciDevice::open(&addr, Some(mode))?;
    let bar0 = dev.bar(0)?;
    let clone = dev.clone();
    let buf = DmaBuffer::new(4096)?;
    let container = vfio_pci::default_container(mode)?;
    let map = DmaMapping::new(&*container, &buf, 0x30_0000, DmaAccess::READ_WRITE)?;
    drop(dev);
    ensure!(
        another_process_opens(addr, mode).is_err(),
        "another process opened {addr} while a clone and a BAR mapping of it were open here"
    );
    drop(clone);
    ensure!(
        another_process_opens(addr, mode).is_err(),
        "another process opened {addr} while a BAR mapping of it was open here"
    );
    ensure!(bar0.read32(0)? == EDU_ID, "edu ID through the last handle");
    drop(bar0);
    another_process_opens(addr, mode).map_err(|e| format!("after the last handle went: {e}"))?;
    drop(map);
    drop(buf);
    drop(container);
    before.check("left")?;
    let again = PciDevice::open(&addr, Some(mode))?;
    ensure!(again.bar(0)?.read32(0)? == EDU_ID, "edu ID after reopening");
    drop(again);
    another_process_opens(addr, mode).map_err(|e| format!("after the reopened device went: {e}"))?;
    println!("    {mode}: held while a handle lived, released with the last");
    Ok(Outcome::Pass)
}

fn default_container_lets_go_group() -> TestResult {
    default_container_lets_go(Mode::GROUP)
}

fn default_container_lets_go_cdev() -> TestResult {
    default_container_lets_go(Mode::CDEV)
}

fn default_container_lets_go_group_noiommu() -> TestResult {
    default_container_lets_go(Mode::GROUP_NOIOMMU)
}

fn default_container_lets_go_cdev_noiommu() -> TestResult {
    default_container_lets_go(Mode::CDEV_NOIOMMU)
}

/// A group joined with `add_group` stays in the container when its device closes (another
/// process cannot open the device), until `remove_group`.
fn added_group_stays_until_removed() -> TestResult {
    let Ok(mode) = vfio_tests::group_mode() else {
        return skip("group mode is not offered by this kernel");
    };
    let addr = match vfio_tests::device_in("VFIO_TEST_EDU", mode) {
        Err(why) => return skip(why),
        Ok(a) => a,
    };
    let before = Resources::now()?;
    let c = vfio_group::Container::open(mode.addressing())?;
    let id = Sysfs::default().iommu_group(&addr)?;
    c.add_group(id)?;
    drop(PciDevice::open_in(&c, &addr)?);
    ensure!(
        c.group_ids() == [id],
        "groups {:?} after the device closed",
        c.group_ids()
    );
    ensure!(
        another_process_opens(addr, mode).is_err(),
        "another process opened {addr} while its group was kept in a container here"
    );
    c.remove_group(id)?;
    another_process_opens(addr, mode).map_err(|e| format!("after remove_group: {e}"))?;
    // Joined to open a device, the group leaves with it.
    drop(PciDevice::open_in(&c, &addr)?);
    ensure!(
        c.group_ids().is_empty(),
        "groups {:?} after the device closed",
        c.group_ids()
    );
    c.close()?;
    before.check("left")?;
    Ok(Outcome::Pass)
}

/// `close` returns what dropping only logs: a group container closed with a device open says
/// the group stays (and it does, until the device closes, then goes); an iommufd closed while
/// an IOAS holds it says so; closed when nothing holds them, both return Ok. The cdev of a bound
/// device closes explicitly too, unbinding it.
fn explicit_close_reports_what_stays() -> TestResult {
    let addr = match device_from_env("VFIO_TEST_EDU") {
        Err(why) => return skip(why),
        Ok(a) => a,
    };
    let mut done = Vec::new();
    let before = Resources::now()?;
    if let Ok(mode) = vfio_tests::group_mode() {
        let c = vfio_group::Container::open(mode.addressing())?;
        let dev = PciDevice::open_in(&c, &addr)?;
        let id = Sysfs::default().iommu_group(&addr)?;
        let e = c.close().err().ok_or("closed a container whose device is open")?;
        ensure!(
            matches!(e, vfio_core::Error::InvalidArgument { .. }) && e.to_string().contains("still open"),
            "{e}"
        );
        ensure!(
            another_process_opens(addr, mode).is_err(),
            "another process opened {addr} while it was open here"
        );
        ensure!(dev.bar(0)?.read32(0)? == EDU_ID, "edu ID with its container closed");
        drop(dev);
        another_process_opens(addr, mode).map_err(|e| format!("after the device of a closed container went: {e}"))?;
        let c = vfio_group::Container::open(mode.addressing())?;
        c.add_group(id)?;
        c.close()?;
        another_process_opens(addr, mode).map_err(|e| format!("after close: {e}"))?;
        done.push(format!("{mode}"));
    }
    if vfio_tests::offered(Mode::CDEV) {
        let iommufd = vfio_cdev::Iommufd::open()?;
        let ioas = iommufd.alloc_ioas()?;
        let e = iommufd.clone().close().err().ok_or("closed an iommufd an IOAS holds")?;
        ensure!(
            matches!(e, vfio_core::Error::InvalidArgument { .. }) && e.to_string().contains("still hold"),
            "{e}"
        );
        let dev = vfio_cdev::UnboundDevice::open(&Sysfs::default(), &addr)?.bind(&iommufd)?;
        dev.attach(ioas.id())?;
        ensure!(
            another_process_opens(addr, Mode::CDEV).is_err(),
            "another process opened {addr} while bound here"
        );
        dev.close()?;
        another_process_opens(addr, Mode::CDEV).map_err(|e| format!("after the bound cdev closed: {e}"))?;
        vfio_cdev::UnboundDevice::open(&Sysfs::default(), &addr)?.close()?;
        drop(ioas);
        iommufd.close()?;
        done.push("cdev".to_string());
    }
    if done.is_empty() {
        return skip("neither group nor cdev mode is offered by this kernel");
    }
    before.check("left")?;
    println!("    {}", done.join(", "));
    Ok(Outcome::Pass)
}

fn permutations_are_complete() -> TestResult {
    let p = permutations(5);
    let mut sorted = p.clone();
    sorted.sort();
    sorted.dedup();
    ensure!(p.len() == 120 && sorted.len() == 120, "{} permutations", p.len());
    Ok(Outcome::Pass)
}

fn main() -> ExitCode {
    vfio_tests::run(&[
        ("permutations_are_complete", permutations_are_complete),
        ("every_drop_order_group", every_drop_order_group),
        ("every_drop_order_cdev", every_drop_order_cdev),
        ("every_drop_order_group_noiommu", every_drop_order_group_noiommu),
        ("every_drop_order_cdev_noiommu", every_drop_order_cdev_noiommu),
        ("default_container_lets_go_group", default_container_lets_go_group),
        ("default_container_lets_go_cdev", default_container_lets_go_cdev),
        (
            "default_container_lets_go_group_noiommu",
            default_container_lets_go_group_noiommu,
        ),
        (
            "default_container_lets_go_cdev_noiommu",
            default_container_lets_go_cdev_noiommu,
        ),
        ("added_group_stays_until_removed", added_group_stays_until_removed),
        ("explicit_close_reports_what_stays", explicit_close_reports_what_stays),
    ])
}
