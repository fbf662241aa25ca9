//! PCI configuration space through the VFIO config region (index 7): typed, range-checked
//! accesses, and the standard header registers drivers need first.

use bitflags::bitflags;

/// Standard header offsets.
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
