//! P3 (edu register access through vfio-rs's MMIO handles vs a raw volatile pointer, both at
//! constant offsets as a driver's register accesses are), the
//! interrupt round trip of P6 (raise an edu MSI, wait on its eventfd, acknowledge) and P8 (a
//! register write through an ioeventfd vs a user-space MMIO store).

use std::hint::black_box;
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use vfio_core::{EventFd, Mode, PciAddress};

use crate::Ctx;
use crate::fixtures::Ours;
use crate::measure::{BenchResult, Goal, Record, Side, interleave};

/// edu BAR0 registers.
const ID: usize = 0x00;
const LIVENESS: usize = 0x04;
const IRQ_STATUS: usize = 0x24;
const IRQ_RAISE: usize = 0x60;
const IRQ_ACK: usize = 0x64;
const EDU_ID: u32 = 0x010000ed;

/// P3 in `mode`: read32 of the ID register and write32 of the liveness register through
/// `MappedRegion` (what `PciDevice::map_bar` returns), a `Register` taken from it (checked once)
/// and `vfio_pci::Bar` (the handle with a pread/pwrite fallback), each against a volatile access
/// through the raw pointer.
pub fn p3(ctx: &mut Ctx, mode: Mode, addr: &PciAddress) -> BenchResult {
    let f = Ours::open(mode, addr)?;
    let region = f.pci.map_bar(0)?;
    let bar = f.pci.bar(0)?;
    let base = region.as_ptr();
    if region.read32(ID)? != EDU_ID || bar.read32(ID as u64)? != EDU_ID {
        return Err(format!("{addr} is not an edu device").into());
    }
    let plan = ctx.plan(501, 1000);
    let iters = 100;
    let (id_reg, liveness_reg) = (region.register::<u32>(ID)?, region.register::<u32>(LIVENESS)?);
    let (region, bar) = (&region, &bar);
    {
        let mut sides = [
            Side::new("MappedRegion", iters, move |n| {
                let mut acc = 0u32;
                let t = Instant::now();
                for _ in 0..n {
                    acc ^= region.read32(ID)?;
                }
                black_box(acc);
                Ok(t.elapsed())
            }),
            Side::new("Register", iters, move |n| {
                let mut acc = 0u32;
                let t = Instant::now();
                for _ in 0..n {
                    acc ^= id_reg.read();
                }
                black_box(acc);
                Ok(t.elapsed())
            }),
            Side::new("Bar", iters, move |n| {
                let mut acc = 0u32;
                let t = Instant::now();
                for _ in 0..n {
                    acc ^= bar.read32(ID as u64)?;
                }
                black_box(acc);
                Ok(t.elapsed())
            }),
            Side::new("raw pointer", iters, move |n| {
                let mut acc = 0u32;
                let t = Instant::now();
                for _ in 0..n {
                    let p = base.wrapping_add(ID).cast::<u32>();
                    // SAFETY: `region` (alive for this closure) maps BAR0 at `base`; ID is inside
                    // it and 4-byte aligned.
                    acc ^= unsafe { p.read_volatile() };
                }
                black_box(acc);
                Ok(t.elapsed())
            }),
        ];
        let t = interleave(plan, &mut sides)?;
        drop(sides);
        for (i, name) in [(0, "MappedRegion::read32"), (1, "Register::read"), (2, "Bar::read32")] {
            ctx.emit(
                Record::new("P3", format!("MMIO read32 (edu ID): {name}"), mode.to_string())
                    .goal(Goal::AtMost(1.01))
                    .compare(plan, (name, &t[i]), ("raw pointer", &t[3]), iters),
            );
        }
    }
    {
        let mut sides = [
            Side::new("MappedRegion", iters, move |n| {
                let t = Instant::now();
                for i in 0..n {
                    region.write32(LIVENESS, i as u32)?;
                }
                Ok(t.elapsed())
            }),
            Side::new("Register", iters, move |n| {
                let t = Instant::now();
                for i in 0..n {
                    liveness_reg.write(i as u32);
                }
                Ok(t.elapsed())
            }),
            Side::new("Bar", iters, move |n| {
                let t = Instant::now();
                for i in 0..n {
                    bar.write32(LIVENESS as u64, i as u32)?;
                }
                Ok(t.elapsed())
            }),
            Side::new("raw pointer", iters, move |n| {
                let t = Instant::now();
                for i in 0..n {
                    let p = base.wrapping_add(LIVENESS).cast::<u32>();
                    // SAFETY: as for the read: inside the live BAR0 mapping, aligned.
                    unsafe { p.write_volatile(i as u32) };
                }
                Ok(t.elapsed())
            }),
        ];
        let t = interleave(plan, &mut sides)?;
        drop(sides);
        for (i, name) in [
            (0, "MappedRegion::write32"),
            (1, "Register::write"),
            (2, "Bar::write32"),
        ] {
            ctx.emit(
                Record::new("P3", format!("MMIO write32 (edu liveness): {name}"), mode.to_string())
                    .goal(Goal::AtMost(1.01))
                    .compare(plan, (name, &t[i]), ("raw pointer", &t[3]), iters),
            );
        }
    }
    Ok(())
}

/// The Linux IRQ number of vector 0 of the device's MSI (`vfio-msi[0](<addr>)` in
/// /proc/interrupts).
fn msi_irq(addr: &PciAddress) -> Option<u32> {
    let text = std::fs::read_to_string("/proc/interrupts").ok()?;
    let tag = format!("vfio-msi[0]({addr})");
    text.lines()
        .find(|l| l.contains(&tag))
        .and_then(|l| l.split(':').next())
        .and_then(|n| n.trim().parse().ok())
}

/// How many times IRQ `irq` fired on each CPU.
fn irq_counts(irq: u32) -> Vec<u64> {
    let text = std::fs::read_to_string("/proc/interrupts").unwrap_or_default();
    let prefix = format!("{irq}:");
    text.lines()
        .map(str::trim_start)
        .find(|l| l.starts_with(&prefix))
        .map(|l| {
            l[prefix.len()..]
                .split_whitespace()
                .map_while(|w| w.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Steers IRQ `irq` to `cpu` (`/proc/irq/N/smp_affinity_list`).
fn steer(irq: u32, cpu: usize) -> BenchResult {
    let path = format!("/proc/irq/{irq}/smp_affinity_list");
    std::fs::write(&path, cpu.to_string()).map_err(|e| format!("cannot write {path}: {e}"))?;
    Ok(())
}

/// One MSI round trip through vfio-rs: raise (MMIO write), wait on the eventfd, read and
/// acknowledge the status.
fn round_trip_ours(region: &vfio_core::MappedRegion, irq: &EventFd, poll: bool) -> BenchResult {
    region.write32(IRQ_RAISE, 1)?;
    if poll {
        irq.wait_timeout(Duration::from_secs(5))?.ok_or("no MSI within 5 s")?;
    } else {
        irq.read()?;
    }
    let s = region.read32(IRQ_STATUS)?;
    region.write32(IRQ_ACK, s)?;
    Ok(())
}

/// P6 interrupt round trip in `mode`: vfio-rs (`MappedRegion` + `EventFd::read`) vs the same
/// through a raw pointer and `read(2)` with libc, with the MSI steered to the benchmark's vCPU;
/// then `EventFd::wait_timeout` (poll + read), and the MSI steered to another vCPU.
pub fn p6_irq(ctx: &mut Ctx, mode: Mode, addr: &PciAddress) -> BenchResult {
    let f = Ours::open(mode, addr)?;
    f.pci.enable_bus_master()?;
    let irq = EventFd::new()?;
    f.pci.enable_msi([&irq])?;
    let region = f.pci.map_bar(0)?;
    let base = region.as_ptr();
    let efd = irq.as_fd().as_raw_fd();
    let irq_no = msi_irq(addr).ok_or("the edu MSI is not in /proc/interrupts")?;
    steer(irq_no, ctx.cpu)?;
    let plan = ctx.plan(301, 50);
    let iters = 10;
    let (region_ref, irq_ref) = (&region, &irq);
    let before = irq_counts(irq_no);
    let mut sides = [
        Side::new("vfio-rs", iters, move |n| {
            let t = Instant::now();
            for _ in 0..n {
                round_trip_ours(region_ref, irq_ref, false)?;
            }
            Ok(t.elapsed())
        }),
        Side::new("raw", iters, move |n| {
            let t = Instant::now();
            for _ in 0..n {
                let reg = |off: usize| base.wrapping_add(off).cast::<u32>();
                // SAFETY: `region` maps BAR0 at `base` for this whole function; the offsets are
                // edu registers, 4-byte aligned.
                unsafe { reg(IRQ_RAISE).write_volatile(1) };
                let mut v = 0u64;
                // SAFETY: reads 8 bytes into `v` from the eventfd, which `irq` keeps open.
                let r = unsafe { libc::read(efd, (&mut v as *mut u64).cast(), 8) };
                if r != 8 {
                    return Err(format!("eventfd read: {}", std::io::Error::last_os_error()).into());
                }
                // SAFETY: as above.
                unsafe {
                    let s = reg(IRQ_STATUS).read_volatile();
                    reg(IRQ_ACK).write_volatile(s);
                }
            }
            Ok(t.elapsed())
        }),
        Side::new("vfio-rs wait_timeout", iters, move |n| {
            let t = Instant::now();
            for _ in 0..n {
                round_trip_ours(region_ref, irq_ref, true)?;
            }
            Ok(t.elapsed())
        }),
    ];
    let t = interleave(plan, &mut sides)?;
    drop(sides);
    let after = irq_counts(irq_no);
    let on_cpu = after.get(ctx.cpu).copied().unwrap_or(0) - before.get(ctx.cpu).copied().unwrap_or(0);
    let total: u64 = after.iter().sum::<u64>() - before.iter().sum::<u64>();
    let landed = format!("{on_cpu} of {total} MSIs handled on CPU {}", ctx.cpu);
    ctx.emit(
        Record::new("P6", "MSI round trip, same vCPU: EventFd::read", mode.to_string())
            .compare(plan, ("vfio-rs", &t[0]), ("raw read(2)", &t[1]), iters)
            .note(landed.clone()),
    );
    ctx.emit(
        Record::new(
            "P6",
            "MSI round trip, same vCPU: wait_timeout vs read",
            mode.to_string(),
        )
        .compare(plan, ("wait_timeout", &t[2]), ("read", &t[0]), iters)
        .note("EventFd::wait_timeout is poll(2) + read(2)"),
    );
    if let Some(other) = ctx.other_cpu {
        let plan = ctx.plan(61, 20);
        let iters = 10;
        let mut sides = [
            Side::new("other vCPU", iters, |n| {
                steer(irq_no, other)?;
                // x86 moves an MSI's vector when it next fires: settle first.
                for _ in 0..10 {
                    round_trip_ours(&region, &irq, false)?;
                }
                let t = Instant::now();
                for _ in 0..n {
                    round_trip_ours(&region, &irq, false)?;
                }
                Ok(t.elapsed())
            }),
            Side::new("same vCPU", iters, |n| {
                steer(irq_no, ctx.cpu)?;
                for _ in 0..10 {
                    round_trip_ours(&region, &irq, false)?;
                }
                let t = Instant::now();
                for _ in 0..n {
                    round_trip_ours(&region, &irq, false)?;
                }
                Ok(t.elapsed())
            }),
        ];
        let t = interleave(plan, &mut sides)?;
        drop(sides);
        ctx.emit(
            Record::new(
                "P6",
                "MSI round trip: MSI on another vCPU vs the same",
                mode.to_string(),
            )
            .compare(plan, ("other vCPU", &t[0]), ("same vCPU", &t[1]), iters)
            .note(format!("process on CPU {}, MSI steered to CPU {other}", ctx.cpu)),
        );
    }
    f.pci.disable_irq(vfio_pci::MSI_IRQ)?;
    Ok(())
}

/// P8 in `mode`: one write of the edu liveness register through an ioeventfd (signal the
/// eventfd; the kernel writes the value from the eventfd's wakeup, `vfio_pci_ioeventfd_handler`,
/// or from a thread when the device's memory lock is taken) vs the same 32-bit store through
/// the BAR0 mmap. Informational: a VMM takes the ioeventfd path to skip a round trip through
/// its own process (the guest's store traps to KVM, which signals the eventfd), not to beat a
/// store it could do itself.
pub fn p8_ioeventfd(ctx: &mut Ctx, mode: Mode, addr: &PciAddress) -> BenchResult {
    const VALUE: u32 = 0x1234_5678;
    let f = Ours::open(mode, addr)?;
    let region = f.pci.map_bar(0)?;
    let info = f.pci.device().region_info(0)?;
    let efd = EventFd::new()?;
    let io = f
        .pci
        .device()
        .add_ioeventfd(&info, LIVENESS as u64, vfio_core::IoValue::U32(VALUE), efd.as_fd())?;
    // The kernel's write lands: edu answers the liveness register with the inverse.
    region.write32(LIVENESS, 0)?;
    efd.signal(1)?;
    let deadline = Instant::now() + Duration::from_secs(1);
    while region.read32(LIVENESS)? != !VALUE {
        if Instant::now() > deadline {
            return Err("the ioeventfd's write did not reach the edu liveness register".into());
        }
        std::thread::yield_now();
    }
    let base = region.as_ptr();
    let plan = ctx.plan(301, 100);
    let iters = 100;
    let efd_ref = &efd;
    let mut sides = [
        Side::new("ioeventfd signal", iters, move |n| {
            let t = Instant::now();
            for _ in 0..n {
                efd_ref.signal(1)?;
            }
            Ok(t.elapsed())
        }),
        Side::new("MMIO store", iters, move |n| {
            let t = Instant::now();
            for _ in 0..n {
                let p = base.wrapping_add(LIVENESS).cast::<u32>();
                // SAFETY: inside the live BAR0 mapping, 4-byte aligned.
                unsafe { p.write_volatile(VALUE) };
            }
            Ok(t.elapsed())
        }),
    ];
    let t = interleave(plan, &mut sides)?;
    drop(sides);
    ctx.emit(
        Record::new(
            "P8",
            "register write: ioeventfd vs MMIO store (edu liveness)",
            mode.to_string(),
        )
        .compare(plan, ("ioeventfd signal", &t[0]), ("MMIO store", &t[1]), iters)
        .note("per write; the ioeventfd side is an eventfd write(2) whose wakeup makes the kernel's store"),
    );
    io.remove()?;
    Ok(())
}
