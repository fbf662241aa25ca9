//! A minimal user-space NVMe driver: resets and enables the controller with one admin queue pair
//! in DMA memory, takes completions by MSI-X vector 0, and sends IDENTIFY for the controller and
//! for namespace 1. Written against QEMU's `nvme` (1b36:0010) but only uses what the NVMe base
//! specification promises, so it also runs on real controllers.
//!
//! Usage: `nvme_identify [--mode group|cdev|noiommu|auto] [PCI address]`. The address defaults to
//! `$VFIO_TEST_NVME`. Asking for `group` on a machine without an IOMMU uses no-IOMMU groups;
//! a mode the kernel does not offer (`cdev` before Linux 6.6) exits with status 77, skipped.

use std::process::ExitCode;
use std::sync::atomic::{Ordering, fence};
use std::time::{Duration, Instant};
use vfio_pci::{Bar, Container, DmaAccess, DmaHandle, DmaPool, EventFd, IovaRange, Mode, PciAddress, PciDevice};

mod common;

use common::{ModeMissing, Res};

// Controller registers (BAR0).
const REG_CAP: u64 = 0x00;
const REG_VS: u64 = 0x08;
const REG_INTMC: u64 = 0x10;
const REG_CC: u64 = 0x14;
const REG_CSTS: u64 = 0x1c;
const REG_AQA: u64 = 0x24;
const REG_ASQ: u64 = 0x28;
const REG_ACQ: u64 = 0x30;
const DOORBELLS: u64 = 0x1000;

const CC_EN: u32 = 1;
const CC_IOSQES: u32 = 6 << 16;
const CC_IOCQES: u32 = 4 << 20;
const CSTS_RDY: u32 = 1;
const CSTS_CFS: u32 = 1 << 1;

const SQE_SIZE: usize = 64;
const CQE_SIZE: usize = 16;
/// Admin queue entries wanted (fewer if CAP.MQES allows fewer).
const ADMIN_ENTRIES: u32 = 32;
/// The controller memory page size programmed in CC.MPS (0: 4 KiB) and each buffer's size.
const PAGE: usize = 4096;

const OPC_IDENTIFY: u8 = 0x06;
const CNS_NAMESPACE: u32 = 0;
const CNS_CONTROLLER: u32 = 1;

const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// What the xtask harness backs its nvme device with.
const HARNESS_IMAGE_BYTES: u64 = 16 << 20;
const HARNESS_SERIAL: &str = "deadbeef";

fn main() -> ExitCode {
    common::finish("nvme", run())
}

struct Args {
    mode: Option<Mode>,
    addr: PciAddress,
    /// The address came from `$VFIO_TEST_NVME` inside the xtask harness: the device is known.
    harness: bool,
}

fn parse_args() -> Res<Args> {
    let mut mode = None;
    let mut addr = None;
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
    let from_env = addr.is_none();
    let addr = addr
        .or_else(|| std::env::var("VFIO_TEST_NVME").ok().filter(|s| !s.is_empty()))
        .ok_or("no device: pass a PCI address or set VFIO_TEST_NVME")?
        .parse()?;
    let harness = from_env && std::env::var_os("VFIO_TEST_IOMMU").is_some();
    let modes = vfio_pci::detect();
    // Without an IOMMU the interface asked for still serves, with physical addresses.
    if let Some(m) = mode.filter(|m| !modes.offers(*m)) {
        let physical = Mode::new(m.interface(), vfio_pci::Addressing::Physical);
        if modes.offers(physical) {
            mode = Some(physical);
        }
    }
    Ok(Args { mode, addr, harness })
}

/// Opens BAR0 through [`PciDevice::bar`]: every area the kernel lets us mmap is mapped, the
/// rest (a hole around the MSI-X table on some controllers) goes through pread/pwrite, and each
/// access is bounds- and alignment-checked.
fn open_bar0(dev: &PciDevice) -> Res<Bar> {
    let bar = dev.bar(0)?;
    if bar.size() < DOORBELLS + 8 {
        return Err(format!(
            "BAR0 is {:#x} bytes: too small for the NVMe registers and doorbells",
            bar.size()
        )
        .into());
    }
    Ok(bar)
}

/// A 64-bit register as two 32-bit reads (low dword first), which every controller accepts.
fn read64(regs: &Bar, offset: u64) -> Res<u64> {
    let lo = regs.read32(offset)?;
    let hi = regs.read32(offset + 4)?;
    Ok(u64::from(hi) << 32 | u64::from(lo))
}

/// A 64-bit register as two 32-bit writes (low dword first).
fn write64(regs: &Bar, offset: u64, value: u64) -> Res<()> {
    regs.write32(offset, value as u32)?;
    Ok(regs.write32(offset + 4, (value >> 32) as u32)?)
}

/// What CAP says, validated.
struct Cap {
    /// Largest queue size, in entries (MQES + 1).
    max_entries: u32,
    /// Doorbell stride in bytes.
    stride: u64,
    /// CAP.TO: worst-case time for CSTS.RDY to follow CC.EN.
    ready_timeout: Duration,
}

impl Cap {
    fn parse(cap: u64, bar_size: u64) -> Res<Self> {
        if cap == u64::MAX {
            return Err("CAP reads all ones: the controller does not respond".into());
        }
        let mqes = (cap & 0xffff) as u32;
        if mqes < 1 {
            return Err("CAP.MQES is 0: queues of one entry are invalid".into());
        }
        let dstrd = (cap >> 32) & 0xf;
        let stride = 4u64 << dstrd;
        // The admin queue pair's two doorbells must be inside BAR0.
        if DOORBELLS + 2 * stride > bar_size {
            return Err(
                format!("CAP.DSTRD {dstrd}: the admin doorbells lie outside BAR0 ({bar_size:#x} bytes)").into(),
            );
        }
        let css = (cap >> 37) & 0xff;
        if css & 1 == 0 {
            return Err(format!("CAP.CSS {css:#x}: the NVM command set is not supported").into());
        }
        let (mpsmin, mpsmax) = ((cap >> 48) & 0xf, (cap >> 52) & 0xf);
        if mpsmin > 0 || mpsmax < mpsmin {
            return Err(format!("CAP.MPSMIN {mpsmin} / MPSMAX {mpsmax}: 4 KiB pages are not supported").into());
        }
        let to = (cap >> 24) & 0xff;
        Ok(Cap {
            max_entries: mqes + 1,
            stride,
            ready_timeout: Duration::from_millis(500 * to.max(1)),
        })
    }
}

fn wait_ready(regs: &Bar, want: bool, timeout: Duration) -> Res<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let csts = regs.read32(REG_CSTS)?;
        if csts == u32::MAX {
            return Err("CSTS reads all ones: the controller went away".into());
        }
        if want && csts & CSTS_CFS != 0 {
            return Err(format!("controller fatal status (CSTS {csts:#x}) while enabling").into());
        }
        if (csts & CSTS_RDY != 0) == want {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "CSTS.RDY did not become {} within {timeout:?} (CSTS {csts:#x})",
                want as u8
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Clears CC.EN and waits for CSTS.RDY to follow.
fn disable(regs: &Bar, timeout: Duration) -> Res<()> {
    let cc = regs.read32(REG_CC)?;
    if cc & CC_EN != 0 {
        regs.write32(REG_CC, cc & !CC_EN)?;
    }
    wait_ready(regs, false, timeout)
}

/// The admin queue pair.
struct Admin<'r> {
    regs: &'r Bar,
    irq: &'r EventFd,
    sq: DmaHandle,
    cq: DmaHandle,
    entries: u32,
    stride: u64,
    sq_tail: u32,
    cq_head: u32,
    phase: bool,
    next_cid: u16,
    interrupts: u64,
}

impl Admin<'_> {
    /// Submits `sqe` (its CID is filled in) and waits for its completion; returns DW0.
    fn submit(&mut self, pool: &DmaPool, mut sqe: [u8; SQE_SIZE], what: &str) -> Res<u32> {
        let cid = self.next_cid;
        self.next_cid = self.next_cid.wrapping_add(1);
        sqe[2..4].copy_from_slice(&cid.to_le_bytes());
        pool.buffer(self.sq)?.write(self.sq_tail as usize * SQE_SIZE, &sqe)?;
        self.sq_tail = (self.sq_tail + 1) % self.entries;
        // The entry must be in memory before the doorbell tells the controller about it.
        fence(Ordering::SeqCst);
        self.regs.write32(DOORBELLS, self.sq_tail)?;

        let deadline = Instant::now() + COMMAND_TIMEOUT;
        let cq = pool.buffer(self.cq)?;
        let entry = self.cq_head as usize * CQE_SIZE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.irq.wait_timeout(left)? {
                Some(n) => self.interrupts += n,
                None => return Err(format!("{what}: no MSI-X completion interrupt within {COMMAND_TIMEOUT:?}").into()),
            }
            // The phase bit is the controller's "this entry is new": a volatile load each time.
            let dw3 = u32::from_le(cq.read32(entry + 12)?);
            if (dw3 >> 16 & 1 != 0) == self.phase {
                break;
            }
            // An interrupt without a new entry (e.g. left over): wait for the next one.
        }
        // Read the rest of the entry only after its phase bit said it is complete.
        fence(Ordering::Acquire);
        let dw = |i: usize| cq.read32(entry + 4 * i).map(u32::from_le);
        let (dw0, dw2, dw3) = (dw(0)?, dw(2)?, dw(3)?);
        self.cq_head = (self.cq_head + 1) % self.entries;
        if self.cq_head == 0 {
            self.phase = !self.phase;
        }
        self.regs.write32(DOORBELLS + self.stride, self.cq_head)?;

        let (sqhd, sqid, got_cid) = (dw2 & 0xffff, dw2 >> 16, (dw3 & 0xffff) as u16);
        if sqid != 0 || sqhd >= self.entries {
            return Err(format!("{what}: completion names SQ {sqid} head {sqhd}, not the admin queue").into());
        }
        if got_cid != cid {
            return Err(format!("{what}: completion for command {got_cid}, expected {cid}").into());
        }
        let status = dw3 >> 17;
        if status != 0 {
            let (sct, sc) = (status >> 8 & 7, status & 0xff);
            return Err(format!("{what}: status {status:#x} (type {sct:#x}, code {sc:#x})").into());
        }
        Ok(dw0)
    }

    fn identify(&mut self, pool: &DmaPool, data: DmaHandle, cns: u32, nsid: u32, what: &str) -> Res<[u8; PAGE]> {
        pool.buffer(data)?.fill(0);
        let mut sqe = [0u8; SQE_SIZE];
        sqe[0] = OPC_IDENTIFY;
        sqe[4..8].copy_from_slice(&nsid.to_le_bytes());
        sqe[24..32].copy_from_slice(&pool.device_addr(data, 0)?.to_le_bytes());
        sqe[40..44].copy_from_slice(&cns.to_le_bytes());
        self.submit(pool, sqe, what)?;
        let mut out = [0u8; PAGE];
        pool.buffer(data)?.read(0, &mut out)?;
        Ok(out)
    }
}

fn ascii(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '?'
            }
        })
        .collect::<String>()
        .trim()
        .to_owned()
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from(le32(b, at + 4)) << 32 | u64::from(le32(b, at))
}

fn run() -> Res<String> {
    let args = parse_args()?;
    let t0 = Instant::now();
    let dev = match PciDevice::open(&args.addr, args.mode) {
        // Only a mode the kernel does not offer is a skip; any other refusal is a failure.
        Err(e @ vfio_pci::Error::Unsupported { .. }) if args.mode.is_some_and(|m| !vfio_pci::detect().offers(m)) => {
            return Err(ModeMissing(e).into());
        }
        r => r?,
    };
    let mode = dev.mode();
    let (vendor, device) = dev.ids()?;
    println!(
        "nvme: {} ({vendor:04x}:{device:04x}) opened in {mode} mode in {:?}",
        args.addr,
        t0.elapsed()
    );
    let container = vfio_pci::default_container(mode)?;
    // Start from a clean function: a function-level reset (VFIO_DEVICE_RESET), with the command
    // register put back. Whatever a previous user left behind is gone.
    if dev.device().info()?.flags.contains(vfio_pci::DeviceFlags::RESET) {
        let t = Instant::now();
        dev.reset()?;
        println!("nvme: function reset in {:?}", t.elapsed());
    }

    let regs = open_bar0(&dev)?;
    let cap = Cap::parse(read64(&regs, REG_CAP)?, regs.size())?;
    let vs = regs.read32(REG_VS)?;
    let doorbell_access = if regs.is_mapped(DOORBELLS, 4) && regs.is_mapped(DOORBELLS + cap.stride, 4) {
        "mmap"
    } else {
        "pwrite"
    };
    println!(
        "nvme: NVMe {}.{}.{}, MQES {}, doorbell stride {} B ({doorbell_access}), ready timeout {:?}, BAR0 {:#x} B in {} mmapped area(s)",
        vs >> 16,
        vs >> 8 & 0xff,
        vs & 0xff,
        cap.max_entries - 1,
        cap.stride,
        cap.ready_timeout,
        regs.size(),
        regs.mappings().len()
    );

    let msix = dev.device().irq_info(vfio_pci::MSIX_IRQ)?;
    if msix.count < 1 {
        return Err("the device has no MSI-X vectors".into());
    }

    let mut pool = dma_pool(&*container, mode)?;
    let result = identify_all(&dev, &regs, &cap, &mut pool, &args);
    // Stop the controller before its queues and buffers are unmapped, whatever happened.
    let irq_off = dev.disable_irq(vfio_pci::MSIX_IRQ);
    let stopped = disable(&regs, cap.ready_timeout);
    drop(pool);
    let summary = result?;
    irq_off?;
    stopped.map_err(|e| format!("shutdown: {e}"))?;
    Ok(format!("{mode} mode: {summary}"))
}

/// A pool over the container's IOVA ranges. A no-IOMMU group container has no IOVA space (its
/// "IOVAs" only name pinned ranges), so any range will do there.
fn dma_pool(container: &dyn Container, mode: Mode) -> Res<DmaPool<'_>> {
    match DmaPool::new(container) {
        Ok(p) => Ok(p),
        Err(_) if mode == Mode::GROUP_NOIOMMU => Ok(DmaPool::with_ranges(
            container,
            &[IovaRange {
                start: 1 << 20,
                last: (1 << 32) - 1,
            }],
        )),
        Err(e) => Err(e.into()),
    }
}

fn identify_all(dev: &PciDevice, regs: &Bar, cap: &Cap, pool: &mut DmaPool, args: &Args) -> Res<String> {
    // Reset: the controller must be idle before its queues are replaced.
    disable(regs, cap.ready_timeout).map_err(|e| format!("reset: {e}"))?;
    // Interrupt mask bits only apply to pin/MSI interrupts and may not be touched with MSI-X on:
    // clear them now so nothing masks vector 0.
    regs.write32(REG_INTMC, u32::MAX)?;

    // One 4 KiB page per buffer: physically contiguous even without an IOMMU.
    let entries = ADMIN_ENTRIES.min(cap.max_entries);
    if entries < 2 {
        return Err(format!("admin queues of {entries} entries are too small").into());
    }
    let sq = pool.alloc(PAGE, DmaAccess::READ)?;
    let cq = pool.alloc(PAGE, DmaAccess::WRITE)?;
    let data = pool.alloc(PAGE, DmaAccess::WRITE)?;
    let (sq_addr, cq_addr) = (pool.device_addr(sq, 0)?, pool.device_addr(cq, 0)?);
    for (name, addr) in [("SQ", sq_addr), ("CQ", cq_addr), ("data", pool.device_addr(data, 0)?)] {
        if addr % PAGE as u64 != 0 {
            return Err(format!("admin {name} at device address {addr:#x} is not 4 KiB aligned").into());
        }
    }

    let irq = EventFd::new()?;
    dev.enable_bus_master()?;
    dev.enable_msix([&irq])?;

    regs.write32(REG_AQA, (entries - 1) << 16 | (entries - 1))?;
    write64(regs, REG_ASQ, sq_addr)?;
    write64(regs, REG_ACQ, cq_addr)?;
    regs.write32(REG_CC, CC_EN | CC_IOSQES | CC_IOCQES)?;
    let t = Instant::now();
    wait_ready(regs, true, cap.ready_timeout).map_err(|e| format!("enable: {e}"))?;
    println!(
        "nvme: enabled in {:?}: admin queues of {entries} entries, SQ at {sq_addr:#x}, CQ at {cq_addr:#x}",
        t.elapsed()
    );

    let mut admin = Admin {
        regs,
        irq: &irq,
        sq,
        cq,
        entries,
        stride: cap.stride,
        sq_tail: 0,
        cq_head: 0,
        phase: true,
        next_cid: 1,
        interrupts: 0,
    };

    let ctrl = admin.identify(pool, data, CNS_CONTROLLER, 0, "identify controller")?;
    let serial = ascii(&ctrl[4..24]);
    let model = ascii(&ctrl[24..64]);
    let firmware = ascii(&ctrl[64..72]);
    let nn = le32(&ctrl, 516);
    println!("nvme: model '{model}', serial '{serial}', firmware '{firmware}', {nn} namespace(s)");
    if args.harness && serial != HARNESS_SERIAL {
        return Err(format!("serial '{serial}': the harness device has '{HARNESS_SERIAL}'").into());
    }

    let ns = if nn == 0 {
        if args.harness {
            return Err("the harness device reports no namespaces".into());
        }
        "no namespaces".to_owned()
    } else {
        let id = admin.identify(pool, data, CNS_NAMESPACE, 1, "identify namespace 1")?;
        let nsze = le64(&id, 0);
        if nsze == 0 {
            if args.harness {
                return Err("namespace 1 is inactive on the harness device".into());
            }
            "namespace 1 inactive".to_owned()
        } else {
            let nlbaf = u32::from(id[25]);
            let format = u32::from(id[26] & 0xf);
            if format > nlbaf {
                return Err(format!("namespace 1: FLBAS selects format {format}, only {} exist", nlbaf + 1).into());
            }
            let lbaf = le32(&id, 128 + 4 * format as usize);
            let lbads = lbaf >> 16 & 0xff;
            if !(9..=31).contains(&lbads) {
                return Err(
                    format!("namespace 1: LBA format {format} has LBADS {lbads} (blocks of 2^{lbads} bytes?)").into(),
                );
            }
            let block = 1u64 << lbads;
            let bytes = nsze
                .checked_mul(block)
                .ok_or_else(|| format!("namespace 1: {nsze} blocks of {block} bytes overflow"))?;
            println!("nvme: namespace 1: {nsze} blocks of {block} bytes = {bytes} bytes");
            if args.harness && bytes != HARNESS_IMAGE_BYTES {
                return Err(format!("namespace 1 has {bytes} bytes, the harness image {HARNESS_IMAGE_BYTES}").into());
            }
            format!("ns1 {} MiB ({nsze} x {block} B)", bytes >> 20)
        }
    };
    let interrupts = admin.interrupts;
    Ok(format!(
        "'{model}' serial {serial} fw {firmware}, {nn} ns, {ns}, {interrupts} MSI-X"
    ))
}
