//! A small polled NVMe driver for the P2P benchmark (P7): the admin queue of
//! `vfio-pci/examples/nvme_identify.rs` (same registers, same enable sequence) plus one I/O queue
//! pair, and Read/Write commands of up to MDTS bytes each with PRP lists. No interrupts: the
//! I/O completion queue is created with IEN = 0 and every completion is polled by its phase bit.
//!
//! Memory: the caller maps one `DmaBuffer` of at least [`Nvme::MEM_BYTES`] for the queues, the
//! identify page and the PRP lists, and keeps it mapped until [`Nvme::shutdown`] (or the drop,
//! which disables the controller) returned.

use std::sync::atomic::{Ordering, fence};
use std::time::{Duration, Instant};

use vfio_core::DmaBuffer;
use vfio_pci::{Bar, PciDevice};

use crate::measure::BenchResult;

const REG_CAP: u64 = 0x00;
const REG_INTMS: u64 = 0x0c;
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

const SQE: usize = 64;
const CQE: usize = 16;
const PAGE: usize = 4096;
/// Entries of every queue (fewer if CAP.MQES says so): 64 x 64 B is one page.
const ENTRIES: u32 = 64;
/// Commands one transfer may have in flight, each with its own PRP-list page.
const MAX_CMDS: usize = 8;

const OPC_CREATE_SQ: u8 = 0x01;
const OPC_CREATE_CQ: u8 = 0x05;
const OPC_IDENTIFY: u8 = 0x06;
/// NVM command set: Write and Read.
pub const OPC_WRITE: u8 = 0x01;
/// NVM command set: Read.
pub const OPC_READ: u8 = 0x02;

const TIMEOUT: Duration = Duration::from_secs(30);

// Page layout of the queue memory.
const ADMIN_SQ: usize = 0;
const ADMIN_CQ: usize = PAGE;
const IO_SQ: usize = 2 * PAGE;
const IO_CQ: usize = 3 * PAGE;
const SCRATCH: usize = 4 * PAGE;
const PRP_LISTS: usize = 5 * PAGE;

/// One submission/completion queue pair.
struct Queue {
    qid: u16,
    sq: usize,
    cq: usize,
    entries: u32,
    sq_tail: u32,
    cq_head: u32,
    phase: bool,
}

/// A started controller with namespace 1 and one I/O queue pair.
pub struct Nvme<'m> {
    regs: Bar,
    mem: &'m DmaBuffer,
    /// Device address of `mem`.
    base: u64,
    stride: u64,
    ready_timeout: Duration,
    admin: Queue,
    io: Queue,
    next_cid: u16,
    /// Bytes per logical block of namespace 1.
    pub block: u64,
    /// Blocks in namespace 1.
    pub blocks: u64,
    /// Largest transfer of one command (MDTS, at most what one PRP-list page describes).
    pub max_transfer: usize,
    stopped: bool,
}

fn read64(regs: &Bar, at: u64) -> BenchResult<u64> {
    let lo = regs.read32(at)?;
    let hi = regs.read32(at + 4)?;
    Ok(u64::from(hi) << 32 | u64::from(lo))
}

fn write64(regs: &Bar, at: u64, v: u64) -> BenchResult {
    regs.write32(at, v as u32)?;
    Ok(regs.write32(at + 4, (v >> 32) as u32)?)
}

fn wait_ready(regs: &Bar, want: bool, timeout: Duration) -> BenchResult {
    let deadline = Instant::now() + timeout;
    loop {
        let csts = regs.read32(REG_CSTS)?;
        if csts == u32::MAX {
            return Err("CSTS reads all ones: the controller went away".into());
        }
        if want && csts & CSTS_CFS != 0 {
            return Err(format!("controller fatal status (CSTS {csts:#x})").into());
        }
        if (csts & CSTS_RDY != 0) == want {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("CSTS.RDY did not become {} within {timeout:?}", want as u8).into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl<'m> Nvme<'m> {
    /// Bytes of queue memory [`Nvme::start`] needs.
    pub const MEM_BYTES: usize = PRP_LISTS + MAX_CMDS * PAGE;

    /// Resets and enables the controller of `dev` with its queues in `mem` (mapped for the
    /// device at `base`, 4 KiB aligned), creates one polled I/O queue pair and identifies
    /// namespace 1.
    pub fn start(dev: &PciDevice, mem: &'m DmaBuffer, base: u64) -> BenchResult<Self> {
        if mem.len() < Self::MEM_BYTES || base % PAGE as u64 != 0 {
            return Err(format!("queue memory: {} bytes at {base:#x}", mem.len()).into());
        }
        if dev.device().info()?.flags.contains(vfio_core::DeviceFlags::RESET) {
            dev.reset()?;
        }
        let regs = dev.bar(0)?;
        let cap = read64(&regs, REG_CAP)?;
        if cap == u64::MAX {
            return Err("CAP reads all ones".into());
        }
        let entries = ENTRIES.min((cap & 0xffff) as u32 + 1);
        let stride = 4u64 << ((cap >> 32) & 0xf);
        let ready_timeout = Duration::from_millis(500 * ((cap >> 24) & 0xff).max(1));
        if (cap >> 48) & 0xf != 0 {
            return Err("CAP.MPSMIN: 4 KiB pages are not supported".into());
        }
        if DOORBELLS + 4 * stride > regs.size() {
            return Err("the I/O queue doorbells lie outside BAR0".into());
        }
        let cc = regs.read32(REG_CC)?;
        if cc & CC_EN != 0 {
            regs.write32(REG_CC, cc & !CC_EN)?;
        }
        wait_ready(&regs, false, ready_timeout)?;
        // No interrupts are used: mask the pin/MSI vector (MSI-X stays disabled).
        regs.write32(REG_INTMS, u32::MAX)?;
        mem.fill(0);
        dev.enable_bus_master()?;
        regs.write32(REG_AQA, (entries - 1) << 16 | (entries - 1))?;
        write64(&regs, REG_ASQ, base + ADMIN_SQ as u64)?;
        write64(&regs, REG_ACQ, base + ADMIN_CQ as u64)?;
        regs.write32(REG_CC, CC_EN | CC_IOSQES | CC_IOCQES)?;
        wait_ready(&regs, true, ready_timeout)?;
        let queue = |qid, sq, cq| Queue {
            qid,
            sq,
            cq,
            entries,
            sq_tail: 0,
            cq_head: 0,
            phase: true,
        };
        let mut n = Nvme {
            regs,
            mem,
            base,
            stride,
            ready_timeout,
            admin: queue(0, ADMIN_SQ, ADMIN_CQ),
            io: queue(1, IO_SQ, IO_CQ),
            next_cid: 1,
            block: 0,
            blocks: 0,
            max_transfer: 0,
            stopped: false,
        };
        n.identify_and_create()?;
        Ok(n)
    }

    fn identify_and_create(&mut self) -> BenchResult {
        let scratch = self.base + SCRATCH as u64;
        let mut id = [0u8; PAGE];
        let mut sqe = [0u8; SQE];
        sqe[0] = OPC_IDENTIFY;
        sqe[24..32].copy_from_slice(&scratch.to_le_bytes());
        sqe[40..44].copy_from_slice(&1u32.to_le_bytes());
        self.submit(false, &mut [sqe], "identify controller")?;
        self.mem.read(SCRATCH, &mut id)?;
        // MDTS is in units of the minimum page size (4 KiB here); 0 means no limit.
        let mdts = id[77];
        let limit = (PAGE / 8 + 1) * PAGE;
        self.max_transfer = if mdts == 0 { limit } else { (PAGE << mdts).min(limit) };

        sqe = [0u8; SQE];
        sqe[0] = OPC_IDENTIFY;
        sqe[4..8].copy_from_slice(&1u32.to_le_bytes());
        sqe[24..32].copy_from_slice(&scratch.to_le_bytes());
        self.submit(false, &mut [sqe], "identify namespace 1")?;
        self.mem.read(SCRATCH, &mut id)?;
        self.blocks = u64::from(le32(&id, 0)) | u64::from(le32(&id, 4)) << 32;
        let format = usize::from(id[26] & 0xf);
        let lbads = le32(&id, 128 + 4 * format) >> 16 & 0xff;
        if self.blocks == 0 || !(9..=12).contains(&lbads) {
            return Err(format!("namespace 1: {} blocks, LBADS {lbads}", self.blocks).into());
        }
        self.block = 1 << lbads;

        let size = (self.io.entries - 1) << 16 | u32::from(self.io.qid);
        sqe = [0u8; SQE];
        sqe[0] = OPC_CREATE_CQ;
        sqe[24..32].copy_from_slice(&(self.base + IO_CQ as u64).to_le_bytes());
        sqe[40..44].copy_from_slice(&size.to_le_bytes());
        // Physically contiguous, interrupts off.
        sqe[44..48].copy_from_slice(&1u32.to_le_bytes());
        self.submit(false, &mut [sqe], "create I/O completion queue")?;
        sqe = [0u8; SQE];
        sqe[0] = OPC_CREATE_SQ;
        sqe[24..32].copy_from_slice(&(self.base + IO_SQ as u64).to_le_bytes());
        sqe[40..44].copy_from_slice(&size.to_le_bytes());
        sqe[44..48].copy_from_slice(&(u32::from(self.io.qid) << 16 | 1).to_le_bytes());
        self.submit(false, &mut [sqe], "create I/O submission queue")?;
        Ok(())
    }

    /// Puts `sqes` on the admin (`io == false`) or the I/O queue, rings its doorbell once and
    /// polls until all of them completed; any error status fails.
    fn submit(&mut self, io: bool, sqes: &mut [[u8; SQE]], what: &str) -> BenchResult {
        let (mem, regs, stride) = (self.mem, &self.regs, self.stride);
        let q = if io { &mut self.io } else { &mut self.admin };
        if sqes.len() >= q.entries as usize {
            return Err(format!("{what}: {} commands do not fit a queue of {}", sqes.len(), q.entries).into());
        }
        let first = self.next_cid;
        for (i, sqe) in sqes.iter_mut().enumerate() {
            let cid = first.wrapping_add(i as u16);
            sqe[2..4].copy_from_slice(&cid.to_le_bytes());
            mem.write(q.sq + q.sq_tail as usize * SQE, sqe)?;
            q.sq_tail = (q.sq_tail + 1) % q.entries;
        }
        self.next_cid = first.wrapping_add(sqes.len() as u16);
        // The entries must be in memory before the doorbell tells the controller about them.
        fence(Ordering::SeqCst);
        let sq_doorbell = DOORBELLS + 2 * u64::from(q.qid) * stride;
        regs.write32(sq_doorbell, q.sq_tail)?;

        let deadline = Instant::now() + TIMEOUT;
        for _ in 0..sqes.len() {
            let entry = q.cq + q.cq_head as usize * CQE;
            let mut spins = 0u32;
            loop {
                let dw3 = u32::from_le(mem.read32(entry + 12)?);
                if (dw3 >> 16 & 1 != 0) == q.phase {
                    break;
                }
                spins += 1;
                if spins % 1024 == 0 && Instant::now() >= deadline {
                    return Err(format!("{what}: no completion within {TIMEOUT:?}").into());
                }
                std::hint::spin_loop();
            }
            fence(Ordering::Acquire);
            let dw3 = u32::from_le(mem.read32(entry + 12)?);
            let sqid = u32::from_le(mem.read32(entry + 8)?) >> 16;
            let cid = (dw3 & 0xffff) as u16;
            q.cq_head = (q.cq_head + 1) % q.entries;
            if q.cq_head == 0 {
                q.phase = !q.phase;
            }
            if sqid != u32::from(q.qid) || cid.wrapping_sub(first) as usize >= sqes.len() {
                return Err(format!("{what}: completion for SQ {sqid} command {cid}").into());
            }
            let status = dw3 >> 17;
            if status != 0 {
                return Err(format!("{what}: command {cid} status {status:#x}").into());
            }
        }
        regs.write32(sq_doorbell + stride, q.cq_head)?;
        Ok(())
    }

    /// `opcode` ([`OPC_READ`] or [`OPC_WRITE`]) of `bytes` at byte `offset` of namespace 1, to or
    /// from device address `addr` (contiguous for the device: an IOVA range), as commands of
    /// at most `max_transfer` bytes, all in flight at once.
    pub fn transfer(&mut self, opcode: u8, offset: u64, addr: u64, bytes: usize) -> BenchResult {
        let page = PAGE as u64;
        if addr % page != 0 || bytes % PAGE != 0 || offset % self.block != 0 || bytes == 0 {
            return Err(format!("transfer of {bytes:#x} bytes at {addr:#x}: not page aligned").into());
        }
        if (offset + bytes as u64) / self.block > self.blocks {
            return Err(format!("transfer past the namespace's {} blocks", self.blocks).into());
        }
        let chunks = bytes.div_ceil(self.max_transfer);
        if chunks > MAX_CMDS {
            return Err(format!("{bytes} bytes need {chunks} commands, at most {MAX_CMDS}").into());
        }
        let mut sqes = vec![[0u8; SQE]; chunks];
        for (i, sqe) in sqes.iter_mut().enumerate() {
            let at = (i * self.max_transfer) as u64;
            let len = self.max_transfer.min(bytes - i * self.max_transfer) as u64;
            let dptr = addr + at;
            let prp2 = match len / page {
                1 => 0,
                2 => dptr + page,
                pages => {
                    let list = PRP_LISTS + i * PAGE;
                    for k in 1..pages {
                        self.mem
                            .write64(list + 8 * (k as usize - 1), (dptr + k * page).to_le())?;
                    }
                    self.base + list as u64
                }
            };
            let slba = (offset + at) / self.block;
            let nlb = (len / self.block - 1) as u32;
            sqe[0] = opcode;
            sqe[4..8].copy_from_slice(&1u32.to_le_bytes());
            sqe[24..32].copy_from_slice(&dptr.to_le_bytes());
            sqe[32..40].copy_from_slice(&prp2.to_le_bytes());
            sqe[40..48].copy_from_slice(&slba.to_le_bytes());
            sqe[48..52].copy_from_slice(&nlb.to_le_bytes());
        }
        let what = if opcode == OPC_READ { "read" } else { "write" };
        self.submit(true, &mut sqes, what)
    }

    /// Disables the controller (CC.EN = 0, waits for CSTS.RDY = 0): it touches no memory
    /// afterwards, so the queue memory and the data mappings may go.
    pub fn shutdown(&mut self) -> BenchResult {
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;
        let cc = self.regs.read32(REG_CC)?;
        self.regs.write32(REG_CC, cc & !CC_EN)?;
        wait_ready(&self.regs, false, self.ready_timeout)
    }
}

impl Drop for Nvme<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            eprintln!("vfio_bench: nvme shutdown: {e}");
        }
    }
}
