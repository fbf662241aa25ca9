//! P7 (issue #17): 1 MiB from an NVMe namespace into a peer device's BAR, the CMB of a second
//! nvme (`VFIO_TEST_NVME_CMB`, BAR2), two ways, wall clock:
//!
//! - A, "p2p": `VFIO_TEST_NVME` reads the 1 MiB (NVMe Read commands with PRP lists, polled,
//!   `nvme_io`) straight to the CMB's IOVA, a [`vfio_core::PeerMapping`] (dma-buf import on
//!   iommufd, the BAR's mmap on type1);
//! - B, "ram+copy": the same reads into a RAM `DmaBuffer`, then the CPU copies the 1 MiB into
//!   the CMB's mmap (`Bar::write_bytes`, after a `DmaBuffer::read` into a heap buffer).
//!
//! - and, to split B, the read into RAM alone (its time is in the note).
//!
//! Before each operation the CMB (and for B the RAM buffer) is cleared, after it the CMB is read
//! back and compared with what was written to the namespace, so neither side measures a no-op;
//! neither clearing nor checking is timed. Informational (no goal): under QEMU, device DMA into
//! MMIO goes through a one-page bounce buffer, so the numbers describe the emulator.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vfio_core::{Addressing, Container, DmaAccess, DmaBuffer, DmaMapping, Mode, PciAddress, SharedContainer};
use vfio_pci::{Command, PciDevice};

use crate::Ctx;
use crate::fixtures::mode_unavailable;
use crate::measure::{BenchResult, Record, Side, Stat, fmt_ns, interleave};
use crate::nvme_io::{Nvme, OPC_READ, OPC_WRITE};

/// Bytes moved per operation.
const LEN: usize = 1 << 20;
/// Where the data sits in the namespace and in the CMB.
const NS_OFFSET: u64 = 0;
const CMB_OFFSET: u64 = 0;
const IOVA_QUEUES: u64 = 0x10_0000;
const IOVA_RAM: u64 = 0x100_0000;
const IOVA_PEER: u64 = 0x200_0000;

/// FNV-1a.
fn checksum(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Runs P7 in group and cdev mode (each skipped where it cannot run).
pub fn all(ctx: &mut Ctx) {
    const IDS: &[&str] = &["P7"];
    if !ctx.wants("P7") {
        return;
    }
    let nvme = crate::device("VFIO_TEST_NVME");
    let cmb = crate::device("VFIO_TEST_NVME_CMB");
    for mode in [Mode::GROUP, Mode::CDEV] {
        let m = mode.to_string();
        if let Some(why) = mode_unavailable(mode) {
            ctx.skip_all(IDS, &m, &why);
            continue;
        }
        let (nvme, cmb) = match (&nvme, &cmb) {
            (Ok(n), Ok(c)) => (*n, *c),
            (Err(why), _) | (_, Err(why)) => {
                ctx.skip_all(IDS, &m, &format!("needs an nvme and an nvme with a CMB: {why}"));
                continue;
            }
        };
        println!(
            "==> {m} mode, P2P: nvme {nvme} -> CMB of nvme {cmb}, pinned to CPU {}",
            ctx.cpu
        );
        ctx.section(IDS, &m, |c| p7(c, mode, &nvme, &cmb));
    }
}

/// P7 in one mode, in a fresh container holding both devices.
pub fn p7(ctx: &mut Ctx, mode: Mode, nvme_addr: &PciAddress, cmb_addr: &PciAddress) -> BenchResult {
    let container: Arc<dyn Container> = match mode {
        Mode::GROUP => Arc::new(vfio_group::Container::open(Addressing::Iova)?),
        Mode::CDEV => Arc::new(vfio_cdev::Container::new()?),
        _ => return Err(format!("{mode} mode is not benchmarked").into()),
    };
    let dev = PciDevice::open_in(&*container, nvme_addr)?;
    let peer = PciDevice::open_in(&*container, cmb_addr)?;
    peer.set_command(peer.command()? | Command::MEMORY_SPACE)?;
    let cmb = peer.bar(2)?;
    if !cmb.is_mapped(CMB_OFFSET, LEN as u64) {
        return Err(format!("{cmb_addr} BAR2 does not map {LEN:#x} bytes at {CMB_OFFSET:#x}: {cmb:?}").into());
    }

    let queues = DmaBuffer::new(Nvme::MEM_BYTES)?;
    let queues_map = DmaMapping::new(&*container, &queues, IOVA_QUEUES, DmaAccess::READ_WRITE)?;
    let ram = DmaBuffer::new(LEN)?;
    let ram_map = DmaMapping::new(&*container, &ram, IOVA_RAM, DmaAccess::READ_WRITE)?;
    let peer_map = peer.map_peer_bar(
        SharedContainer::Shared(container.clone()),
        &cmb,
        CMB_OFFSET,
        LEN as u64,
        IOVA_PEER,
        DmaAccess::READ_WRITE,
    )?;
    let route = peer_map.route();
    let (ram_addr, peer_addr) = (ram_map.device_addr(), peer_map.device_addr());

    let result = (|| -> BenchResult<Record> {
        let nvme = RefCell::new(Nvme::start(&dev, &queues, queues_map.device_addr())?);
        // What the reads must bring back: a pattern no earlier run left anywhere.
        let seed = std::process::id() as u8 ^ (mode == Mode::CDEV) as u8;
        let pattern: Vec<u8> = (0..LEN)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761).rotate_right(13) as u8 ^ seed)
            .collect();
        ram.write(0, &pattern)?;
        nvme.borrow_mut().transfer(OPC_WRITE, NS_OFFSET, ram_addr, LEN)?;
        let sum = checksum(&pattern);
        let zeros = vec![0u8; LEN];
        let checks = std::cell::Cell::new(0u32);
        let verify = |side: &str| -> BenchResult {
            let mut got = vec![0u8; LEN];
            cmb.read_bytes(CMB_OFFSET, &mut got)?;
            if got != pattern {
                return Err(format!(
                    "{side}: the CMB's checksum {:#018x} is not the namespace data's {sum:#018x}",
                    checksum(&got)
                )
                .into());
            }
            checks.set(checks.get() + 1);
            Ok(())
        };
        let mut copy = vec![0u8; LEN];
        let plan = ctx.plan(31, 1);
        let mut sides = [
            Side::new("p2p", 1, |n| {
                let mut spent = Duration::ZERO;
                for _ in 0..n {
                    cmb.write_bytes(CMB_OFFSET, &zeros)?;
                    let t = Instant::now();
                    nvme.borrow_mut().transfer(OPC_READ, NS_OFFSET, peer_addr, LEN)?;
                    spent += t.elapsed();
                    verify("p2p")?;
                }
                Ok(spent)
            }),
            Side::new("ram+copy", 1, |n| {
                let mut spent = Duration::ZERO;
                for _ in 0..n {
                    cmb.write_bytes(CMB_OFFSET, &zeros)?;
                    ram.fill(0);
                    let t = Instant::now();
                    nvme.borrow_mut().transfer(OPC_READ, NS_OFFSET, ram_addr, LEN)?;
                    ram.read(0, &mut copy)?;
                    cmb.write_bytes(CMB_OFFSET, &copy)?;
                    spent += t.elapsed();
                    verify("ram+copy")?;
                }
                Ok(spent)
            }),
            // B's first half alone (the RAM checked instead of the CMB), to split B's time.
            Side::new("ram only", 1, |n| {
                let mut spent = Duration::ZERO;
                let mut got = vec![0u8; LEN];
                for _ in 0..n {
                    ram.fill(0);
                    let t = Instant::now();
                    nvme.borrow_mut().transfer(OPC_READ, NS_OFFSET, ram_addr, LEN)?;
                    spent += t.elapsed();
                    ram.read(0, &mut got)?;
                    if got != pattern {
                        return Err("ram only: RAM does not hold the namespace data".into());
                    }
                }
                Ok(spent)
            }),
        ];
        let t = interleave(plan, &mut sides)?;
        drop(sides);
        let max = nvme.borrow().max_transfer;
        let ram_only = Stat::of("ram only", &t[2]);
        nvme.borrow_mut().shutdown()?;
        Ok(Record::new(
            "P7",
            "1 MiB nvme read into a peer's CMB: direct (P2P) vs into RAM + CPU copy",
            mode.to_string(),
        )
        .compare(plan, ("p2p", &t[0]), ("ram+copy", &t[1]), 1)
        .note(format!(
            "{route:?} route; nvme -> RAM alone {}, so B's CPU copy ~{}; {} reads of <= {} KiB per MiB; CMB checked against the namespace data \
             (FNV-1a {sum:#018x}) after each of its {} transfers; wall clock, no goal: QEMU bounces \
             device DMA into MMIO through one page, so this measures the emulator",
            fmt_ns(ram_only.median),
            fmt_ns(Stat::of("ram+copy", &t[1]).median - ram_only.median),
            LEN.div_ceil(max),
            max >> 10,
            checks.get()
        )))
    })();
    // The controller is stopped (shutdown or its drop) before any mapping goes.
    drop(peer_map);
    drop(ram_map);
    drop(queues_map);
    ctx.emit(result?);
    Ok(())
}
