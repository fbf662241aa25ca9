//! Peer-to-peer DMA between two devices: QEMU's `edu` copies a pattern into the controller
//! memory buffer (CMB, BAR2) of an nvme and back, without the data passing through RAM on the
//! way between the two devices; each side's bytes are checked and their checksums printed.
//!
//! Usage: `p2p_copy [--mode group|cdev|noiommu|auto] [EDU_ADDR CMB_NVME_ADDR]`. The addresses
//! default to `$VFIO_TEST_EDU` and `$VFIO_TEST_NVME_CMB` (an nvme with `cmb_size_mb=2`).
//! Asking for `group` or `cdev` on a machine without an IOMMU uses that interface's no-IOMMU
//! form; a mode the kernel does not offer exits with status 77, skipped.
//!
//! The route depends on the container (`PeerMapping` (vfio-core)): iommufd (cdev mode, the
//! compat container, no-IOMMU cdev) imports a dma-buf of the CMB range (Linux 6.19); the type1
//! driver maps the BAR's mmap; a no-IOMMU group gives the device the BAR's physical address.

use std::process::ExitCode;
use std::time::{Duration, Instant};
use vfio_pci::{Command, DmaAccess, DmaBuffer, DmaMapping, EventFd, Mode, PciAddress, PciDevice, SharedContainer};

mod common;

use common::{ModeMissing, Res};

/// Where the copy goes in the CMB, how much (edu moves at most 4095 bytes per DMA), and the
/// IOVAs (edu's DMA mask is 28 bits).
const CMB_OFFSET: u64 = 0x10_0000;
const PAGE: u64 = 0x1000;
const LEN: usize = 4095;
const RAM_IOVA: u64 = 0x10_0000;
const PEER_IOVA: u64 = 0x80_0000;

fn main() -> ExitCode {
    common::finish("p2p_copy", run())
}

fn parse_args() -> Res<(Option<Mode>, PciAddress, PciAddress)> {
    let mut mode = None;
    let mut addrs = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--mode" => {
                let m = args.next().ok_or("--mode needs a value")?;
                mode = if m == "auto" { None } else { Some(m.parse()?) };
            }
            _ => addrs.push(a),
        }
    }
    let mut addrs = addrs.into_iter();
    let edu = addrs
        .next()
        .or_else(|| std::env::var("VFIO_TEST_EDU").ok())
        .ok_or("no edu: pass its PCI address or set VFIO_TEST_EDU")?
        .parse()?;
    let cmb = addrs
        .next()
        .or_else(|| std::env::var("VFIO_TEST_NVME_CMB").ok())
        .ok_or("no nvme with a CMB: pass its PCI address or set VFIO_TEST_NVME_CMB")?
        .parse()?;
    let modes = vfio_pci::detect();
    if let Some(m) = mode.filter(|m| !modes.offers(*m)) {
        let physical = Mode::new(m.interface(), vfio_pci::Addressing::Physical);
        if modes.offers(physical) {
            mode = Some(physical);
        }
    }
    Ok((mode, edu, cmb))
}

/// FNV-1a, the checksum printed for each side.
fn checksum(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x100_0000_01b3)
    })
}

/// One edu DMA of LEN bytes between `from` and `to` (one of them the device buffer 0x40000),
/// waiting for its completion MSI.
fn edu_dma(bar0: &vfio_pci::Bar, irq: &EventFd, from: u64, to: u64, cmd: u64) -> Res<()> {
    bar0.write64(0x80, from)?;
    bar0.write64(0x88, to)?;
    bar0.write64(0x90, LEN as u64)?;
    bar0.write64(0x98, cmd)?;
    irq.wait_timeout(Duration::from_secs(20))?
        .ok_or("no DMA interrupt within 20 s")?;
    let status = bar0.read32(0x24)?;
    bar0.write32(0x64, status)?;
    Ok(())
}

fn run() -> Res<String> {
    let (mode, edu_addr, cmb_addr) = parse_args()?;
    let edu = match PciDevice::open(&edu_addr, mode) {
        Err(e @ vfio_pci::Error::Unsupported { .. }) if mode.is_some_and(|m| !vfio_pci::detect().offers(m)) => {
            return Err(ModeMissing(e).into());
        }
        r => r?,
    };
    let mode = edu.mode();
    let cmb = PciDevice::open(&cmb_addr, Some(mode))?;
    let container = vfio_pci::default_container(mode)?;
    println!("p2p_copy: edu {edu_addr} and nvme {cmb_addr} opened in {mode} mode");

    let bar0 = edu.bar(0)?;
    if bar0.read32(0)? != 0x010000ed {
        return Err(format!("{edu_addr} is not an edu (ID {:#x})", bar0.read32(0)?).into());
    }
    edu.enable_bus_master()?;
    let irq = EventFd::new()?;
    edu.enable_msi([&irq])?;
    cmb.set_command(cmb.command()? | Command::MEMORY_SPACE)?;
    let cmb_bar = cmb.bar(2)?;

    let ram = DmaBuffer::new(PAGE as usize)?;
    let ram_map = DmaMapping::new(&*container, &ram, RAM_IOVA, DmaAccess::READ_WRITE)?;
    let peer = cmb.map_peer_bar(
        SharedContainer::from(container.clone()),
        &cmb_bar,
        CMB_OFFSET,
        PAGE,
        PEER_IOVA,
        DmaAccess::READ_WRITE,
    )?;
    println!(
        "p2p_copy: CMB {cmb_addr} BAR2 {:#x}+{PAGE:#x} mapped for edu at device address {:#x} ({:?} route)",
        CMB_OFFSET,
        peer.device_addr(),
        peer.route()
    );

    // RAM -> edu's buffer -> the CMB (the second DMA is the peer-to-peer one).
    let pattern: Vec<u8> = (0..LEN as u32).map(|i| (i * 13 + 7) as u8).collect();
    ram.write(0, &pattern)?;
    cmb_bar.write_bytes(CMB_OFFSET, &vec![0u8; LEN])?;
    let t = Instant::now();
    edu_dma(&bar0, &irq, ram_map.device_addr(), 0x40000, 0b101)?;
    edu_dma(&bar0, &irq, 0x40000, peer.device_addr(), 0b111)?;
    let mut in_cmb = vec![0u8; LEN];
    cmb_bar.read_bytes(CMB_OFFSET, &mut in_cmb)?;
    if in_cmb != pattern {
        return Err("edu -> CMB: the CMB does not hold the pattern".into());
    }
    println!(
        "p2p_copy: edu -> CMB: {LEN} bytes in {:?}; checksum sent {:#018x}, read from the CMB {:#018x}",
        t.elapsed(),
        checksum(&pattern),
        checksum(&in_cmb)
    );

    // The CMB (written by the CPU) -> edu -> RAM.
    let back: Vec<u8> = pattern.iter().map(|b| !b).collect();
    cmb_bar.write_bytes(CMB_OFFSET, &back)?;
    ram.fill(0);
    let t = Instant::now();
    edu_dma(&bar0, &irq, peer.device_addr(), 0x40000, 0b101)?;
    edu_dma(&bar0, &irq, 0x40000, ram_map.device_addr(), 0b111)?;
    let mut in_ram = vec![0u8; LEN];
    ram.read(0, &mut in_ram)?;
    if in_ram != back {
        return Err("CMB -> edu: RAM does not hold the CMB's bytes".into());
    }
    println!(
        "p2p_copy: CMB -> edu: {LEN} bytes in {:?}; checksum in the CMB {:#018x}, received {:#018x}",
        t.elapsed(),
        checksum(&back),
        checksum(&in_ram)
    );
    drop(peer);
    drop(ram_map);
    edu.disable_irq(vfio_pci::MSI_IRQ)?;
    Ok(format!(
        "{mode} mode: {LEN} bytes edu -> CMB -> edu, checksums {:#018x} / {:#018x} match on both sides",
        checksum(&pattern),
        checksum(&back)
    ))
}
