//! A user-space driver for QEMU's `edu` device (1234:11e8): ID and liveness registers, a
//! factorial with its completion interrupt, and a DMA round trip RAM -> device -> RAM with the
//! completion MSI, verified byte for byte.
//!
//! Usage: `edu [--mode group|cdev|noiommu|auto] [PCI address]`. The address defaults to
//! `$VFIO_TEST_EDU`. Asking for `group` on a machine without an IOMMU uses no-IOMMU groups;
//! a mode the kernel does not offer (`cdev` before Linux 6.6) exits with status 77, skipped.

use std::process::ExitCode;
use std::time::{Duration, Instant};
use vfio_pci::{DmaAccess, DmaBuffer, DmaMapping, EventFd, Mode, PciAddress, PciDevice};

mod common;

use common::{ModeMissing, Res};

fn main() -> ExitCode {
    common::finish("edu", run())
}

fn parse_args() -> Res<(Option<Mode>, PciAddress)> {
    let mut mode = None;
    let mut addr = std::env::var("VFIO_TEST_EDU").ok();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--mode" => {
                let m = args.next().ok_or("--mode needs a value")?;
                mode = if m == "auto" { None } else { Some(m.parse()?) };
            }
            _ => addr = Some(a),
        }
    }
    let addr = addr
        .ok_or("no device: pass a PCI address or set VFIO_TEST_EDU")?
        .parse()?;
    let modes = vfio_pci::detect();
    // Without an IOMMU the interface asked for still serves, with physical addresses.
    if let Some(m) = mode.filter(|m| !modes.offers(*m)) {
        let physical = Mode::new(m.interface(), vfio_pci::Addressing::Physical);
        if modes.offers(physical) {
            mode = Some(physical);
        }
    }
    Ok((mode, addr))
}

fn run() -> Res<String> {
    let (mode, addr) = parse_args()?;
    let t0 = Instant::now();
    let dev = match PciDevice::open(&addr, mode) {
        // Only a mode the kernel does not offer is a skip; any other refusal is a failure.
        Err(e @ vfio_pci::Error::Unsupported { .. }) if mode.is_some_and(|m| !vfio_pci::detect().offers(m)) => {
            return Err(ModeMissing(e).into());
        }
        r => r?,
    };
    let opened = t0.elapsed();
    let mode = dev.mode();
    println!("edu: {addr} opened in {mode} mode in {opened:?}");

    let bar0 = dev.bar(0)?;
    let id = bar0.read32(0x00)?;
    if id != 0x010000ed {
        return Err(format!("ID register {id:#x} is not 0x010000ed").into());
    }
    bar0.write32(0x04, 0xdead_beef)?;
    let live = bar0.read32(0x04)?;
    if live != !0xdead_beef {
        return Err(format!("liveness: read {live:#x}").into());
    }
    println!("edu: id {id:#x}, liveness ok");

    dev.enable_bus_master()?;
    let irq = EventFd::new()?;
    dev.enable_msi([&irq])?;

    // Factorial of 10 with the "interrupt when done" status bit.
    bar0.write32(0x20, 0x80)?;
    let t = Instant::now();
    bar0.write32(0x08, 10)?;
    irq.wait_timeout(Duration::from_secs(10))?
        .ok_or("no factorial interrupt within 10 s")?;
    let status = bar0.read32(0x24)?;
    bar0.write32(0x64, status)?;
    let fact = bar0.read32(0x08)?;
    if fact != 3_628_800 {
        return Err(format!("10! read back as {fact}").into());
    }
    println!("edu: 10! = {fact}, MSI received after {:?}", t.elapsed());
    bar0.write32(0x20, 0)?;

    let dma = {
        let container = vfio_pci::default_container(mode)?;
        let src = DmaBuffer::new(4096)?;
        let dst = DmaBuffer::new(4096)?;
        let pattern: Vec<u8> = (0..4096u32).map(|i| (i ^ (i >> 8)) as u8).collect();
        src.write(0, &pattern)?;
        let src_map = DmaMapping::new(&*container, &src, 0x10_0000, DmaAccess::READ)?;
        let dst_map = DmaMapping::new(&*container, &dst, 0x20_0000, DmaAccess::WRITE)?;
        // QEMU 7.2 aborts on a DMA that ends exactly at the device buffer's end: stop one short.
        let len = 4095;
        let t = Instant::now();
        for (from, to, cmd) in [
            (src_map.device_addr(), 0x40000, 0b101u64),
            (0x40000, dst_map.device_addr(), 0b111),
        ] {
            bar0.write64(0x80, from)?;
            bar0.write64(0x88, to)?;
            bar0.write64(0x90, len as u64)?;
            bar0.write64(0x98, cmd)?;
            irq.wait_timeout(Duration::from_secs(20))?
                .ok_or("no DMA interrupt within 20 s")?;
            let status = bar0.read32(0x24)?;
            bar0.write32(0x64, status)?;
        }
        let mut out = vec![0u8; 4096];
        dst.read(0, &mut out)?;
        if out[..len] != pattern[..len] {
            return Err("DMA round trip: the bytes differ".into());
        }
        println!(
            "edu: DMA {len} bytes RAM -> device -> RAM verified byte for byte in {:?}, 2 MSIs",
            t.elapsed()
        );
        "DMA round trip verified".to_string()
    };
    dev.disable_irq(vfio_pci::MSI_IRQ)?;
    Ok(format!("{mode} mode: id, liveness, factorial+MSI, {dma}"))
}
