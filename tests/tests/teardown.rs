//! Teardown in every order: a container handle, a device, a BAR mapping, a DMA mapping and an
//! MSI eventfd are dropped in all 120 orders, in every mode the kernel offers; each order must
//! leave nothing busy, so the device opens again in a fresh container; no fd, memory mapping or
//! locked page may outlive an order; a BAR mapping dropped last still reads the device (it keeps
//! the device open); and at the end a DMA round trip proves the device still works.

use std::any::Any;
use std::process::ExitCode;

use vfio_core::{DmaAccess, DmaBuffer, EventFd, MappedRegion, Mode, OwnedDmaMapping, PciAddress, SharedContainer};
use vfio_pci::PciDevice;
use vfio_tests::edu::{Direction, EDU_ID, Edu};
use vfio_tests::{Outcome, TestResult, device_from_env, ensure, mapping_count, open_fds, skip, status_kb};

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
    let bar0 = dev.map_bar(0)?;
    ensure!(bar0.read32(0)? == EDU_ID, "edu ID through the fresh mapping");
    let irq = EventFd::new()?;
    dev.enable_bus_master()?;
    dev.enable_msi(&[&irq])?;
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
            let bar = items[i].as_ref().and_then(|b| b.downcast_ref::<MappedRegion>());
            let id = bar.ok_or("the BAR mapping is not a MappedRegion")?.read32(0)?;
            ensure!(id == EDU_ID, "edu ID {id:#x} through a mapping outliving its device");
        }
        drop(items[i].take());
    }
    Ok(())
}

/// What an order must give back: open fds, memory mappings, locked and pinned memory (kB).
type Resources = (Vec<i32>, usize, u64, u64);

fn resources() -> Result<Resources, Box<dyn std::error::Error>> {
    Ok((open_fds()?, mapping_count()?, status_kb("VmLck")?, status_kb("VmPin")?))
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
    let before = resources()?;
    for order in &orders {
        let names = || order.iter().map(|&i| ITEMS[i]).collect::<Vec<_>>();
        open_and_drop(mode, &addr, order).map_err(|e| format!("after dropping in the order {:?}: {e}", names()))?;
        let after = resources()?;
        ensure!(
            after == before,
            "dropping in the order {:?} left (fds, mappings, VmLck kB, VmPin kB) {before:?} -> {after:?}",
            names()
        );
    }
    // Still usable: a DMA round trip in a fresh container.
    let container = vfio_tests::new_container(mode)?;
    let edu = Edu::new(PciDevice::open_in(container.as_ref(), &addr)?)?;
    edu.pci.enable_bus_master()?;
    let irq = EventFd::new()?;
    edu.pci.enable_msi(&[&irq])?;
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
    ])
}
