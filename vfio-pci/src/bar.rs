//! BARs: what each one is (decoded from config space and region info) and a handle that reaches
//! all of it: mmapped where the kernel allows (honouring sparse areas such as the MSI-X table
//! hole), `pread`/`pwrite` on the device fd elsewhere and for I/O-port BARs.

use vfio_core::{Error, MappedRegion, RegionFlags, RegionInfo, Result};

use crate::PciDevice;

/// The kind of a BAR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarKind {
    /// 32-bit memory.
    Memory32,
    /// 64-bit memory (takes this BAR and the next).
    Memory64,
    /// I/O ports.
    Io,
}

/// A decoded BAR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BarInfo {
    /// BAR number, 0-5.
    pub index: u32,
    /// Memory or I/O, 32 or 64 bit.
    pub kind: BarKind,
    /// Prefetchable memory.
    pub prefetchable: bool,
    /// Size in bytes (from the region info).
    pub size: u64,
    /// The VFIO region behind it.
    pub region: RegionInfo,
}

/// A BAR reachable as a whole: mmapped areas plus pread/pwrite for the rest.
#[derive(Debug)]
pub struct Bar {
    info: BarInfo,
    maps: Vec<MappedRegion>,
    device: vfio_core::Device,
}

impl PciDevice {
    /// Decodes BAR `index`: `None` for an unimplemented BAR or the upper half of a 64-bit one.
    pub fn bar_info(&self, index: u32) -> Result<Option<BarInfo>> {
        if index > 5 {
            return Err(Error::invalid(
                "decode BAR",
                self.address(),
                format!("BAR {index} does not exist (0-5)"),
            ));
        }
        let region = self.device().region_info(index)?;
        if region.size == 0 {
            return Ok(None);
        }
        let raw = self.config_read32(0x10 + 4 * index as u16)?;
        let (kind, prefetchable) = if raw & 1 != 0 {
            (BarKind::Io, false)
        } else if (raw >> 1) & 3 == 2 {
            (BarKind::Memory64, raw & 8 != 0)
        } else {
            (BarKind::Memory32, raw & 8 != 0)
        };
        Ok(Some(BarInfo {
            index,
            kind,
            prefetchable,
            size: region.size,
            region,
        }))
    }

    /// Every implemented BAR.
    pub fn bars(&self) -> Result<Vec<BarInfo>> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < 6 {
            if let Some(b) = self.bar_info(i)? {
                i += if b.kind == BarKind::Memory64 { 2 } else { 1 };
                out.push(b);
            } else {
                i += 1;
            }
        }
        Ok(out)
    }

    /// Opens BAR `index` for access: every mmappable area is mapped, the rest goes through the
    /// device fd. Errors: Unsupported for an unimplemented BAR.
    pub fn bar(&self, index: u32) -> Result<Bar> {
        let info = self.bar_info(index)?.ok_or_else(|| {
            Error::unsupported(
                "BAR access",
                format!("{} BAR {index}", self.address()),
                "the BAR is not implemented",
            )
        })?;
        let maps = if info.region.flags.contains(RegionFlags::MMAP) {
            self.device().map_region_areas(&info.region)?
        } else {
            Vec::new()
        };
        Ok(Bar {
            info,
            maps,
            device: self.device().clone(),
        })
    }
}

impl Bar {
    /// What the BAR is.
    pub fn info(&self) -> &BarInfo {
        &self.info
    }

    /// The mmapped areas.
    pub fn mappings(&self) -> &[MappedRegion] {
        &self.maps
    }

    /// Whether `[offset, offset + len)` is inside one mmapped area.
    pub fn is_mapped(&self, offset: u64, len: u64) -> bool {
        self.area(offset, len).is_some()
    }

    fn area(&self, offset: u64, len: u64) -> Option<(&MappedRegion, usize)> {
        self.maps.iter().find_map(|m| {
            let start = m.region_offset();
            (offset >= start && offset + len <= start + m.len() as u64).then(|| (m, (offset - start) as usize))
        })
    }

    fn check(&self, offset: u64, len: u64) -> Result<()> {
        if offset.checked_add(len).is_none_or(|e| e > self.info.size) || offset % len != 0 {
            return Err(Error::invalid(
                "BAR access",
                format!("{} BAR {}", self.device.name(), self.info.index),
                format!(
                    "{len}-byte access at {offset:#x}: outside the {:#x}-byte BAR or misaligned",
                    self.info.size
                ),
            ));
        }
        Ok(())
    }

    /// 32-bit read (volatile MMIO where mapped, pread otherwise).
    pub fn read32(&self, offset: u64) -> Result<u32> {
        self.check(offset, 4)?;
        if let Some((m, at)) = self.area(offset, 4) {
            return m.read32(at);
        }
        let mut b = [0u8; 4];
        self.device.read_region(&self.info.region, offset, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// 32-bit write (volatile MMIO where mapped, pwrite otherwise).
    pub fn write32(&self, offset: u64, value: u32) -> Result<()> {
        self.check(offset, 4)?;
        if let Some((m, at)) = self.area(offset, 4) {
            return m.write32(at, value);
        }
        self.device
            .write_region(&self.info.region, offset, &value.to_le_bytes())
    }

    /// 64-bit read.
    pub fn read64(&self, offset: u64) -> Result<u64> {
        self.check(offset, 8)?;
        if let Some((m, at)) = self.area(offset, 8) {
            return m.read64(at);
        }
        let mut b = [0u8; 8];
        self.device.read_region(&self.info.region, offset, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// 64-bit write.
    pub fn write64(&self, offset: u64, value: u64) -> Result<()> {
        self.check(offset, 8)?;
        if let Some((m, at)) = self.area(offset, 8) {
            return m.write64(at, value);
        }
        self.device
            .write_region(&self.info.region, offset, &value.to_le_bytes())
    }

    /// Copies BAR bytes at `offset` into `out` through the device fd (works for any part).
    pub fn read_bytes(&self, offset: u64, out: &mut [u8]) -> Result<()> {
        self.device.read_region(&self.info.region, offset, out)
    }
}
