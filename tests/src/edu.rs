//! A minimal driver for QEMU's `edu` device, used by the integration tests.

use std::time::{Duration, Instant};

use vfio_core::EventFd;
use vfio_pci::{Bar, PciDevice};

/// Register offsets in BAR0.
pub mod reg {
    /// Identification, 0x010000ed.
    pub const ID: u64 = 0x00;
    /// Liveness check: reads back the bitwise NOT of what was written.
    pub const LIVENESS: u64 = 0x04;
    /// Interrupt status.
    pub const IRQ_STATUS: u64 = 0x24;
    /// Interrupt raise: ORs the written value into the status and raises the interrupt.
    pub const IRQ_RAISE: u64 = 0x60;
    /// Interrupt acknowledge.
    pub const IRQ_ACK: u64 = 0x64;
    /// DMA source address.
    pub const DMA_SRC: u64 = 0x80;
    /// DMA destination address.
    pub const DMA_DST: u64 = 0x88;
    /// DMA byte count.
    pub const DMA_COUNT: u64 = 0x90;
    /// DMA command: bit 0 start, bit 1 device->RAM, bit 2 interrupt when done.
    pub const DMA_CMD: u64 = 0x98;
}

/// The edu identification register value.
pub const EDU_ID: u32 = 0x010000ed;
/// The device-side DMA buffer address.
pub const EDU_BUF: u64 = 0x40000;
/// The device-side DMA buffer size.
pub const EDU_BUF_LEN: u64 = 4096;
/// The longest DMA to issue: QEMU 7.2's range check wrongly rejects (and aborts QEMU on) a
/// transfer that ends exactly at the end of the device buffer.
pub const EDU_MAX_DMA: u64 = EDU_BUF_LEN - 1;
/// The interrupt status bit of a finished DMA.
pub const IRQ_DMA: u32 = 0x100;

/// An opened edu device with BAR0 mapped.
pub struct Edu {
    /// The PCI device.
    pub pci: PciDevice,
    /// BAR0.
    pub bar0: Bar,
}

/// Direction of an edu DMA.
#[derive(Debug, Clone, Copy)]
pub enum Direction {
    /// RAM (at a device address) -> the device buffer.
    ToDevice,
    /// The device buffer -> RAM.
    FromDevice,
}

impl Edu {
    /// Maps BAR0 and checks the ID register.
    pub fn new(pci: PciDevice) -> Result<Self, Box<dyn std::error::Error>> {
        let bar0 = pci.bar(0)?;
        let id = bar0.read32(reg::ID)?;
        if id != EDU_ID {
            return Err(format!("{}: ID register is {id:#x}, not {EDU_ID:#x}", pci.address()).into());
        }
        Ok(Edu { pci, bar0 })
    }

    /// Waits until no DMA is running (the command register's start bit is clear): what a driver
    /// taking over from a process that died mid-DMA must do before programming a new one, with
    /// bus mastering still off so the old transfer cannot reach memory. Acknowledges whatever
    /// interrupt status the old transfer left.
    pub fn wait_idle(&self, timeout: Duration) -> Result<(), Box<dyn std::error::Error>> {
        let deadline = Instant::now() + timeout;
        while self.bar0.read64(reg::DMA_CMD)? & 1 != 0 {
            if Instant::now() > deadline {
                return Err(format!("DMA still running after {timeout:?}").into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let status = self.bar0.read32(reg::IRQ_STATUS)?;
        self.bar0.write32(reg::IRQ_ACK, status)?;
        Ok(())
    }

    /// Writes `value` to the liveness register and checks the device inverts it.
    pub fn check_liveness(&self, value: u32) -> Result<(), Box<dyn std::error::Error>> {
        self.bar0.write32(reg::LIVENESS, value)?;
        let back = self.bar0.read32(reg::LIVENESS)?;
        if back != !value {
            return Err(format!("liveness: wrote {value:#x}, read {back:#x}, expected {:#x}", !value).into());
        }
        Ok(())
    }

    /// Runs one DMA of `len` bytes between device address `addr` and the device buffer, with the
    /// completion interrupt, and waits for it on `irq` (the MSI eventfd). Returns the time taken.
    pub fn dma(
        &self,
        dir: Direction,
        addr: u64,
        len: u64,
        irq: &EventFd,
    ) -> Result<Duration, Box<dyn std::error::Error>> {
        if len == 0 || len > EDU_MAX_DMA {
            return Err(format!("edu DMA of {len} bytes: at most {EDU_MAX_DMA} are safe").into());
        }
        let (src, dst, cmd) = match dir {
            Direction::ToDevice => (addr, EDU_BUF, 0b101),
            Direction::FromDevice => (EDU_BUF, addr, 0b111),
        };
        let start = Instant::now();
        self.bar0.write64(reg::DMA_SRC, src)?;
        self.bar0.write64(reg::DMA_DST, dst)?;
        self.bar0.write64(reg::DMA_COUNT, len)?;
        self.bar0.write64(reg::DMA_CMD, cmd)?;
        match irq.wait_timeout(Duration::from_secs(20))? {
            Some(_) => {}
            None => {
                return Err(format!(
                    "no DMA completion MSI within 20 s (cmd register {:#x})",
                    self.bar0.read64(reg::DMA_CMD)?
                )
                .into());
            }
        }
        let status = self.bar0.read32(reg::IRQ_STATUS)?;
        self.bar0.write32(reg::IRQ_ACK, status)?;
        if status & IRQ_DMA == 0 {
            return Err(format!("MSI arrived but IRQ status is {status:#x}, without the DMA bit {IRQ_DMA:#x}").into());
        }
        let cmd_after = self.bar0.read64(reg::DMA_CMD)?;
        if cmd_after & 1 != 0 {
            return Err(format!("DMA still running after its interrupt (cmd {cmd_after:#x})").into());
        }
        Ok(start.elapsed())
    }
}
