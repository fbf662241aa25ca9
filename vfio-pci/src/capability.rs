//! PCI capabilities in config space: the standard list (from the pointer at 0x34) and the
//! extended list (from 0x100, PCIe), walked with a bound on the number of steps so a malformed or
//! looping list ends in an error, never a hang. Common capabilities get typed views.

use vfio_core::{Error, Result};

use crate::PciDevice;

/// Standard capability ids.
pub mod id {
    /// Power management.
    pub const PM: u8 = 0x01;
    /// MSI.
    pub const MSI: u8 = 0x05;
    /// Vendor specific.
    pub const VENDOR: u8 = 0x09;
    /// PCI Express.
    pub const PCIE: u8 = 0x10;
    /// MSI-X.
    pub const MSIX: u8 = 0x11;
}

/// One capability: its id and where it sits in config space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capability {
    /// Capability id (standard: 8 bits; extended: 16 bits).
    pub id: u16,
    /// Capability version (extended capabilities only; 0 for standard ones).
    pub version: u8,
    /// Offset in config space.
    pub offset: u16,
    /// Whether it is in the extended (PCIe, >= 0x100) list.
    pub extended: bool,
}

/// The MSI capability, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsiCap {
    /// Offset in config space.
    pub offset: u16,
    /// Vectors the function can use (1, 2, 4 ... 32).
    pub max_vectors: u32,
    /// 64-bit message address.
    pub is_64bit: bool,
    /// Per-vector masking.
    pub per_vector_masking: bool,
    /// MSI enabled now.
    pub enabled: bool,
}

/// The MSI-X capability, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsixCap {
    /// Offset in config space.
    pub offset: u16,
    /// Number of table entries (vectors).
    pub table_size: u32,
    /// BAR holding the table.
    pub table_bar: u32,
    /// Offset of the table in that BAR.
    pub table_offset: u32,
    /// BAR holding the pending-bit array.
    pub pba_bar: u32,
    /// Offset of the PBA in that BAR.
    pub pba_offset: u32,
    /// MSI-X enabled now.
    pub enabled: bool,
}

/// The PCI Express capability, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PcieCap {
    /// Offset in config space.
    pub offset: u16,
    /// Device/port type (0 = endpoint, 9 = root complex integrated endpoint, ...).
    pub device_type: u8,
    /// Function-level reset supported (Device Capabilities bit 28).
    pub flr: bool,
}

/// The power-management capability, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PmCap {
    /// Offset in config space.
    pub offset: u16,
    /// Current power state (0 = D0 ... 3 = D3hot).
    pub power_state: u8,
    /// No_Soft_Reset: D3hot -> D0 keeps the function's state.
    pub no_soft_reset: bool,
}

const MAX_STEPS: usize = 64;

impl PciDevice {
    /// Every capability, standard then extended.
    /// Errors: Malformed when a list loops or points outside config space.
    pub fn capabilities(&self) -> Result<Vec<Capability>> {
        let mut out = Vec::new();
        let status = self.config_read16(crate::config::offset::STATUS)?;
        if status & 0x10 != 0 {
            let mut ptr = self.config_read8(crate::config::offset::CAPABILITIES)? & !3;
            let mut steps = 0;
            while ptr != 0 {
                steps += 1;
                if steps > MAX_STEPS || ptr < 0x40 {
                    return Err(self.bad_list(format!("standard capability pointer {ptr:#x}")));
                }
                let id = self.config_read8(ptr as u16)?;
                out.push(Capability {
                    id: id as u16,
                    version: 0,
                    offset: ptr as u16,
                    extended: false,
                });
                ptr = self.config_read8(ptr as u16 + 1)? & !3;
            }
        }
        if self.config_size() > 0x100 {
            let mut off = 0x100u16;
            let mut steps = 0;
            loop {
                steps += 1;
                if steps > MAX_STEPS {
                    return Err(self.bad_list("the extended capability list loops".into()));
                }
                let hdr = self.config_read32(off)?;
                if hdr == 0 || hdr == u32::MAX {
                    break;
                }
                out.push(Capability {
                    id: (hdr & 0xffff) as u16,
                    version: ((hdr >> 16) & 0xf) as u8,
                    offset: off,
                    extended: true,
                });
                let next = ((hdr >> 20) & 0xffc) as u16;
                if next == 0 {
                    break;
                }
                if next < 0x100 {
                    return Err(self.bad_list(format!("extended capability pointer {next:#x}")));
                }
                off = next;
            }
        }
        Ok(out)
    }

    fn bad_list(&self, why: String) -> Error {
        Error::malformed("walk PCI capabilities", self.address(), why)
    }

    fn find(&self, cap_id: u8) -> Result<Option<u16>> {
        Ok(self
            .capabilities()?
            .into_iter()
            .find(|c| !c.extended && c.id == cap_id as u16)
            .map(|c| c.offset))
    }

    /// The MSI capability, if the function has one.
    pub fn msi_cap(&self) -> Result<Option<MsiCap>> {
        let Some(off) = self.find(id::MSI)? else {
            return Ok(None);
        };
        let ctrl = self.config_read16(off + 2)?;
        Ok(Some(MsiCap {
            offset: off,
            max_vectors: 1 << ((ctrl >> 1) & 7).min(5),
            is_64bit: ctrl & (1 << 7) != 0,
            per_vector_masking: ctrl & (1 << 8) != 0,
            enabled: ctrl & 1 != 0,
        }))
    }

    /// The MSI-X capability, if the function has one.
    pub fn msix_cap(&self) -> Result<Option<MsixCap>> {
        let Some(off) = self.find(id::MSIX)? else {
            return Ok(None);
        };
        let ctrl = self.config_read16(off + 2)?;
        let table = self.config_read32(off + 4)?;
        let pba = self.config_read32(off + 8)?;
        Ok(Some(MsixCap {
            offset: off,
            table_size: (ctrl & 0x7ff) as u32 + 1,
            table_bar: table & 7,
            table_offset: table & !7,
            pba_bar: pba & 7,
            pba_offset: pba & !7,
            enabled: ctrl & (1 << 15) != 0,
        }))
    }

    /// The PCI Express capability, if the function has one.
    pub fn pcie_cap(&self) -> Result<Option<PcieCap>> {
        let Some(off) = self.find(id::PCIE)? else {
            return Ok(None);
        };
        let caps = self.config_read16(off + 2)?;
        let devcap = self.config_read32(off + 4)?;
        Ok(Some(PcieCap {
            offset: off,
            device_type: ((caps >> 4) & 0xf) as u8,
            flr: devcap & (1 << 28) != 0,
        }))
    }

    /// The power-management capability, if the function has one.
    pub fn pm_cap(&self) -> Result<Option<PmCap>> {
        let Some(off) = self.find(id::PM)? else { return Ok(None) };
        let pmcsr = self.config_read16(off + 4)?;
        Ok(Some(PmCap {
            offset: off,
            power_state: (pmcsr & 3) as u8,
            no_soft_reset: pmcsr & (1 << 3) != 0,
        }))
    }

    /// The raw bytes of a capability (e.g. a vendor-specific one), `len` bytes from its offset.
    pub fn capability_bytes(&self, cap: &Capability, len: u16) -> Result<Vec<u8>> {
        let mut b = vec![0u8; len as usize];
        self.device()
            .read_region(&self.config_region(), cap.offset as u64, &mut b)?;
        Ok(b)
    }
}
