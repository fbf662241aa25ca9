//! PCI configuration space through the VFIO config region (index 7): typed, range-checked
//! accesses, and the standard header registers drivers need first.
//!
//! Reads and writes are `pread`/`pwrite` on the device fd at the config region's offset. The
//! kernel's vfio-pci does not pass them straight to the device: it splits each access into
//! aligned pieces of at most 4 bytes, answers some fields from a virtual copy (the BARs, the
//! capability pointers, INTx disable, the capability-list status bit) and drops writes to fields
//! user space may not change (the ids, the status register, most capability fields).

use bitflags::bitflags;

/// Standard header offsets (type 0 header: an endpoint, the only kind vfio-pci binds).
pub mod offset {
    /// Vendor ID (16 bit).
    pub const VENDOR_ID: u16 = 0x00;
    /// Device ID (16 bit).
    pub const DEVICE_ID: u16 = 0x02;
    /// Command register (16 bit).
    pub const COMMAND: u16 = 0x04;
    /// Status register (16 bit).
    pub const STATUS: u16 = 0x06;
    /// Revision ID (8 bit).
    pub const REVISION: u16 = 0x08;
    /// Class code (24 bit at 0x09).
    pub const CLASS: u16 = 0x09;
    /// Header type (8 bit): layout in bits 0-6, multi-function device in bit 7.
    pub const HEADER_TYPE: u16 = 0x0e;
    /// Subsystem vendor ID (16 bit, type 0 header).
    pub const SUBSYSTEM_VENDOR_ID: u16 = 0x2c;
    /// Subsystem ID (16 bit, type 0 header).
    pub const SUBSYSTEM_ID: u16 = 0x2e;
    /// Capabilities pointer (8 bit).
    pub const CAPABILITIES: u16 = 0x34;
}

bitflags! {
    /// The PCI command register.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Command: u16 {
        /// Respond to I/O space accesses.
        const IO_SPACE = 1 << 0;
        /// Respond to memory space accesses.
        const MEMORY_SPACE = 1 << 1;
        /// May master the bus (needed for DMA and MSI).
        const BUS_MASTER = 1 << 2;
        /// Parity error response.
        const PARITY_ERROR_RESPONSE = 1 << 6;
        /// SERR# enable.
        const SERR = 1 << 8;
        /// INTx assertion disabled.
        const INTX_DISABLE = 1 << 10;
        const _ = !0;
    }
}

bitflags! {
    /// The PCI status register (config offset 0x06).
    ///
    /// Through VFIO every bit reads from the device except [`Status::CAPABILITIES_LIST`], which
    /// vfio-pci virtualizes: it is clear when the kernel hid every standard capability. The
    /// error bits are write-1-to-clear on the device, but vfio-pci drops writes to the status
    /// register, so user space cannot clear them.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Status: u16 {
        /// The function asserts INTx (set even while INTx is masked or disabled).
        const INTERRUPT_STATUS = 1 << 3;
        /// A capability list starts at the pointer at 0x34.
        const CAPABILITIES_LIST = 1 << 4;
        /// 66 MHz capable (conventional PCI).
        const CAPABLE_66MHZ = 1 << 5;
        /// Fast back-to-back transactions capable (conventional PCI).
        const FAST_BACK_TO_BACK = 1 << 7;
        /// Master data parity error: a parity error was seen on a transaction this function
        /// mastered.
        const MASTER_DATA_PARITY_ERROR = 1 << 8;
        /// DEVSEL timing (2-bit field: 0 fast, 1 medium, 2 slow; conventional PCI).
        const DEVSEL_TIMING = 0b11 << 9;
        /// The function, as a target, ended a transaction with a target abort.
        const SIGNALED_TARGET_ABORT = 1 << 11;
        /// A transaction this function mastered ended in a target abort.
        const RECEIVED_TARGET_ABORT = 1 << 12;
        /// A transaction this function mastered ended in a master abort (PCIe: an Unsupported
        /// Request completion).
        const RECEIVED_MASTER_ABORT = 1 << 13;
        /// The function signalled SERR# (PCIe: sent ERR_FATAL or ERR_NONFATAL).
        const SIGNALED_SYSTEM_ERROR = 1 << 14;
        /// The function detected a parity error (PCIe: received a poisoned TLP).
        const DETECTED_PARITY_ERROR = 1 << 15;
        const _ = !0;
    }
}

impl Status {
    /// The DEVSEL timing field: 0 fast, 1 medium, 2 slow.
    pub fn devsel_timing(self) -> u8 {
        ((self & Status::DEVSEL_TIMING).bits() >> 9) as u8
    }

    /// The error bits (parity, aborts, system error) that are set.
    pub fn errors(self) -> Status {
        self & (Status::MASTER_DATA_PARITY_ERROR
            | Status::SIGNALED_TARGET_ABORT
            | Status::RECEIVED_TARGET_ABORT
            | Status::RECEIVED_MASTER_ABORT
            | Status::SIGNALED_SYSTEM_ERROR
            | Status::DETECTED_PARITY_ERROR)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields() {
        let s = Status::from_bits_retain(0x0210 | 1 << 13);
        assert!(s.contains(Status::CAPABILITIES_LIST));
        assert_eq!(s.devsel_timing(), 1);
        assert_eq!(s.errors(), Status::RECEIVED_MASTER_ABORT);
        assert_eq!(Status::DEVSEL_TIMING.bits(), 0x0600);
    }
}
