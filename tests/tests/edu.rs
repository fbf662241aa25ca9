//! The QEMU edu device driven through every mode: ID and liveness registers, and a DMA round
//! trip RAM -> device -> RAM verified byte for byte, with the completion MSI.

use std::process::ExitCode;
use std::sync::Arc;

use vfio_core::{Container, DmaAccess, DmaBuffer, DmaMapping, EventFd, Mode};
use vfio_pci::PciDevice;
use vfio_tests::edu::{Direction, EDU_MAX_DMA, Edu};
use vfio_tests::{Outcome, TestResult, device_from_env, ensure, skip};

/// The edu device's address and a fresh container of `mode`, or why the test cannot run.
fn edu_and_container(mode: Mode) -> Result<(vfio_core::PciAddress, Arc<dyn Container>), String> {
    Ok((
        device_from_env("VFIO_TEST_EDU")?,
        vfio_tests::container_or_reason(mode)?,
    ))
}

fn id_and_liveness(mode: Mode) -> TestResult {
    let (addr, c) = match edu_and_container(mode) {
        Ok(v) => v,
        Err(why) => return skip(why),
    };
    let pci = PciDevice::open_in(c.as_ref(), &addr)?;
    ensure!(pci.ids()? == (0x1234, 0x11e8), "config space ids are {:x?}", pci.ids()?);
    let edu = Edu::new(pci)?;
    for v in [0, 0x1234_5678, u32::MAX] {
        edu.check_liveness(v)?;
    }
    println!("    {mode}: {addr} id {:#x}, liveness ok", edu.bar0.read32(0)?);
    Ok(Outcome::Pass)
}

fn dma_round_trip(mode: Mode) -> TestResult {
    let (addr, c) = match edu_and_container(mode) {
        Ok(v) => v,
        Err(why) => return skip(why),
    };
    let pci = PciDevice::open_in(c.as_ref(), &addr)?;
    pci.enable_bus_master()?;
    let irq = EventFd::new()?;
    pci.enable_msi([&irq])?;
    let edu = Edu::new(pci)?;

    let src = DmaBuffer::new(4096)?;
    let dst = DmaBuffer::new(4096)?;
    let pattern: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
    src.write(0, &pattern)?;
    dst.fill(0);
    // edu's DMA mask is 28 bits: keep IOVAs below 256 MiB.
    let src_map = DmaMapping::new(c.as_ref(), &src, 0x10_0000, DmaAccess::READ)?;
    let dst_map = DmaMapping::new(c.as_ref(), &dst, 0x20_0000, DmaAccess::WRITE)?;

    let len = EDU_MAX_DMA as usize;
    let t1 = edu.dma(Direction::ToDevice, src_map.device_addr(), len as u64, &irq)?;
    let t2 = edu.dma(Direction::FromDevice, dst_map.device_addr(), len as u64, &irq)?;
    let mut out = vec![0u8; 4096];
    dst.read(0, &mut out)?;
    ensure!(
        out[len] == 0,
        "byte {len}, past the DMA's end, was written: {:#x}",
        out[len]
    );
    if let Some(i) = out[..len].iter().zip(&pattern).position(|(a, b)| a != b) {
        return Err(format!("byte {i} differs: read {:#x}, wrote {:#x}", out[i], pattern[i]).into());
    }
    println!("    {mode}: {len} bytes RAM -> device -> RAM verified byte for byte; 2 MSIs received ({t1:?}, {t2:?})");
    drop(dst_map);
    drop(src_map);
    edu.pci.disable_irq(vfio_pci::MSI_IRQ)?;
    Ok(Outcome::Pass)
}

fn main() -> ExitCode {
    vfio_tests::run(&[
        ("edu_id_and_liveness_group", || id_and_liveness(Mode::GROUP)),
        ("edu_id_and_liveness_cdev", || id_and_liveness(Mode::CDEV)),
        ("edu_id_and_liveness_group_noiommu", || {
            id_and_liveness(Mode::GROUP_NOIOMMU)
        }),
        ("edu_id_and_liveness_cdev_noiommu", || {
            id_and_liveness(Mode::CDEV_NOIOMMU)
        }),
        ("edu_dma_round_trip_with_msi_group", || dma_round_trip(Mode::GROUP)),
        ("edu_dma_round_trip_with_msi_cdev", || dma_round_trip(Mode::CDEV)),
        ("edu_dma_round_trip_with_msi_group_noiommu", || {
            dma_round_trip(Mode::GROUP_NOIOMMU)
        }),
        ("edu_dma_round_trip_with_msi_cdev_noiommu", || {
            dma_round_trip(Mode::CDEV_NOIOMMU)
        }),
    ])
}
