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

/// Part of a bulk copy: its start relative to the copy, its length, and the mapped area (with
/// the offset in it) that holds it, if any.
type Piece<'a> = (u64, u64, Option<(&'a MappedRegion, usize)>);

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

/// One naturally aligned access per call (little-endian, as PCI is): a volatile load or store
/// where the BAR is mapped, one pread/pwrite elsewhere (unmapped areas, I/O ports).
macro_rules! bar_access {
    ($($read:ident $write:ident $t:ty),*) => {$(
        #[doc = concat!("`", stringify!($t), "` read at `offset` (volatile MMIO where mapped, pread otherwise).")]
        #[inline]
        pub fn $read(&self, offset: u64) -> Result<$t> {
            const N: usize = size_of::<$t>();
            self.check(offset, N as u64)?;
            if let Some((m, at)) = self.area(offset, N as u64) {
                return m.$read(at);
            }
            Ok(<$t>::from_le_bytes(self.pread::<N>(offset)?))
        }

        #[doc = concat!("`", stringify!($t), "` write at `offset` (volatile MMIO where mapped, pwrite otherwise).")]
        #[inline]
        pub fn $write(&self, offset: u64, value: $t) -> Result<()> {
            const N: usize = size_of::<$t>();
            self.check(offset, N as u64)?;
            if let Some((m, at)) = self.area(offset, N as u64) {
                return m.$write(at, value);
            }
            self.pwrite(offset, &value.to_le_bytes())
        }
    )*};
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

    #[inline]
    fn area(&self, offset: u64, len: u64) -> Option<(&MappedRegion, usize)> {
        self.maps.iter().find_map(|m| {
            let start = m.region_offset();
            (offset >= start && offset + len <= start + m.len() as u64).then(|| (m, (offset - start) as usize))
        })
    }

    #[inline]
    fn check(&self, offset: u64, len: u64) -> Result<()> {
        if offset.checked_add(len).is_none_or(|e| e > self.info.size) || offset % len != 0 {
            return Err(self.access_error(offset, len));
        }
        Ok(())
    }

    #[cold]
    #[inline(never)]
    fn access_error(&self, offset: u64, len: u64) -> Error {
        Error::invalid(
            "BAR access",
            format!("{} BAR {}", self.device.name(), self.info.index),
            format!(
                "{len}-byte access at {offset:#x}: outside the {:#x}-byte BAR or misaligned",
                self.info.size
            ),
        )
    }

    /// pread of `N` bytes at `offset`, for the parts of the BAR that are not mmapped (the
    /// kernel turns an aligned 1/2/4/8-byte pread into one access of that size).
    #[inline(never)]
    fn pread<const N: usize>(&self, offset: u64) -> Result<[u8; N]> {
        let mut b = [0u8; N];
        self.device.read_region(&self.info.region, offset, &mut b)?;
        Ok(b)
    }

    /// pwrite of `bytes` at `offset`, for the parts of the BAR that are not mmapped.
    #[inline(never)]
    fn pwrite(&self, offset: u64, bytes: &[u8]) -> Result<()> {
        self.device.write_region(&self.info.region, offset, bytes)
    }

    bar_access!(read8 write8 u8, read16 write16 u16, read32 write32 u32, read64 write64 u64);

    /// Splits `[offset, offset + len)` into pieces that are each inside one mapped area
    /// (`Some(area, offset in it)`) or in no area (`None`: the device fd serves them).
    fn pieces(&self, offset: u64, len: u64) -> Result<Vec<Piece<'_>>> {
        if offset.checked_add(len).is_none_or(|e| e > self.info.size) {
            return Err(Error::invalid(
                "BAR copy",
                format!("{} BAR {}", self.device.name(), self.info.index),
                format!("{len} bytes at {offset:#x} exceed the {:#x}-byte BAR", self.info.size),
            ));
        }
        let mut out = Vec::new();
        let (mut at, end) = (offset, offset + len);
        while at < end {
            let inside = self.maps.iter().find(|m| {
                let s = m.region_offset();
                at >= s && at < s + m.len() as u64
            });
            let (n, area) = match inside {
                Some(m) => {
                    let s = m.region_offset();
                    ((s + m.len() as u64).min(end) - at, Some((m, (at - s) as usize)))
                }
                None => {
                    let next = self
                        .maps
                        .iter()
                        .map(|m| m.region_offset())
                        .filter(|&s| s > at)
                        .min()
                        .unwrap_or(end);
                    (next.min(end) - at, None)
                }
            };
            out.push((at - offset, n, area));
            at += n;
        }
        Ok(out)
    }

    /// Copies BAR bytes at `offset` into `out`: volatile loads (widest aligned first) where the
    /// BAR is mapped, pread on the device fd elsewhere (unmapped areas, I/O ports).
    pub fn read_bytes(&self, offset: u64, out: &mut [u8]) -> Result<()> {
        for (rel, n, area) in self.pieces(offset, out.len() as u64)? {
            let dst = &mut out[rel as usize..(rel + n) as usize];
            match area {
                Some((m, at)) => m.read_bytes(at, dst)?,
                None => self.device.read_region(&self.info.region, offset + rel, dst)?,
            }
        }
        Ok(())
    }

    /// Copies `data` into the BAR at `offset` (volatile stores where mapped, pwrite elsewhere).
    pub fn write_bytes(&self, offset: u64, data: &[u8]) -> Result<()> {
        for (rel, n, area) in self.pieces(offset, data.len() as u64)? {
            let src = &data[rel as usize..(rel + n) as usize];
            match area {
                Some((m, at)) => m.write_bytes(at, src)?,
                None => self.device.write_region(&self.info.region, offset + rel, src)?,
            }
        }
        Ok(())
    }
}
