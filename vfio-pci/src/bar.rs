//! BARs: what each one is (decoded from config space and region info) and a handle that reaches
//! all of it: mmapped where the kernel allows (honouring sparse areas such as the MSI-X table
//! hole), `pread`/`pwrite` on the device fd elsewhere and for I/O-port BARs.

use std::ptr::NonNull;
use std::sync::OnceLock;

use vfio_core::{Error, MappedRegion, RegionFlags, RegionInfo, Register, RegisterWidth, Result};

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

/// A BAR, the one handle a driver holds for it ([`PciDevice::bar`]): every mmappable area is
/// mapped, and each access goes to the mapping when it falls inside one, through
/// `pread`/`pwrite` on the device fd otherwise (a sparse BAR's holes, a region without
/// `VFIO_REGION_INFO_FLAG_MMAP`, I/O-port BARs). Offsets are `u64` from the start of the BAR,
/// as in [`crate::MsixCap`] and [`vfio_core::RegionInfo`].
///
/// Every access is bounds- and alignment-checked. An access inside the area mapped at BAR
/// offset 0 (the whole BAR on most devices) costs one comparison before the volatile load or
/// store, which the compiler folds for a constant offset; everything else (other areas, holes,
/// errors) takes an out-of-line path. A hot register can be taken once as a [`Register`]
/// ([`Bar::register`]): no check at all per access.
///
/// A value is little-endian on the bus; the accessors return it in host order.
pub struct Bar {
    /// Start of the mmapped area at BAR offset 0 (dangling when there is none).
    base: NonNull<u8>,
    /// Length of that area in bytes; 0 when there is none, so every access takes the slow path.
    base_len: u64,
    index: u32,
    region: RegionInfo,
    /// Decoded from config space on first need.
    info: OnceLock<BarInfo>,
    maps: Vec<MappedRegion>,
    device: vfio_core::Device,
}

// SAFETY: `base` points into one of `maps`, which are Send and Sync (device memory reached only
// through volatile accesses); the rest of the fields are Send and Sync.
unsafe impl Send for Bar {}
// SAFETY: as above: every access through `&Bar` is a single volatile load or store, a pread or
// a pwrite.
unsafe impl Sync for Bar {}

impl std::fmt::Debug for Bar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bar")
            .field("device", &self.device.name())
            .field("index", &self.index)
            .field("info", &self.info.get())
            .field("maps", &self.maps)
            .finish()
    }
}

/// Part of a bulk copy: its start relative to the copy, its length, and the mapped area (with
/// the offset in it) that holds it, if any.
type Piece<'a> = (u64, u64, Option<(&'a MappedRegion, u64)>);

impl PciDevice {
    /// Decodes BAR `index`: `None` for an unimplemented BAR or the upper half of a 64-bit one.
    pub fn bar_info(&self, index: u32) -> Result<Option<BarInfo>> {
        let Some(region) = self.bar_region(index)? else {
            return Ok(None);
        };
        let (kind, prefetchable) = decode(self.config_read32(0x10 + 4 * index as u16)?);
        Ok(Some(BarInfo {
            index,
            kind,
            prefetchable,
            size: region.size,
            region,
        }))
    }

    /// The region of BAR `index` (`VFIO_DEVICE_GET_REGION_INFO`); `None` when it is empty
    /// (unimplemented, or the upper half of a 64-bit BAR).
    fn bar_region(&self, index: u32) -> Result<Option<RegionInfo>> {
        if index > 5 {
            return Err(Error::invalid(
                "decode BAR",
                self.address(),
                format!("BAR {index} does not exist (0-5)"),
            ));
        }
        let region = self.device().region_info(index)?;
        Ok((region.size != 0).then_some(region))
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

    /// Opens BAR `index` (0-5) for access: `VFIO_DEVICE_GET_REGION_INFO`, then `mmap(2)` of
    /// every area the kernel lets user space map (the whole BAR, or its sparse areas); the rest
    /// is reached through the device fd. Each mapping keeps the device open and is unmapped
    /// when the [`Bar`] drops. Config space is not read here: the BAR's kind is decoded on
    /// first need ([`Bar::info`], a 64-bit access outside the mappings). Errors:
    /// InvalidArgument for an index past 5; Unsupported for an unimplemented BAR (or the upper
    /// half of a 64-bit one); the errno of the region query or of mmap.
    #[doc(alias = "map_bar")]
    pub fn bar(&self, index: u32) -> Result<Bar> {
        let region = self.bar_region(index)?.ok_or_else(|| {
            Error::unsupported(
                "BAR access",
                format!("{} BAR {index}", self.address()),
                "the BAR is not implemented (or is the upper half of a 64-bit BAR)",
            )
        })?;
        let maps = if region.flags.contains(RegionFlags::MMAP) {
            self.device().map_region_areas(&region)?
        } else {
            Vec::new()
        };
        Ok(Bar::new(index, region, None, maps, self.device().clone()))
    }
}

/// A BAR register's kind and prefetchable bit.
fn decode(raw: u32) -> (BarKind, bool) {
    if raw & 1 != 0 {
        (BarKind::Io, false)
    } else if (raw >> 1) & 3 == 2 {
        (BarKind::Memory64, raw & 8 != 0)
    } else {
        (BarKind::Memory32, raw & 8 != 0)
    }
}

/// One naturally aligned access per call: a volatile load or store where the BAR is mapped,
/// one pread/pwrite elsewhere.
macro_rules! bar_access {
    ($($read:ident $write:ident $t:ty),*) => {$(
        #[doc = concat!("`", stringify!($t), "` read at `offset` (", stringify!($read),
            "-aligned): one volatile load where the BAR is mapped, one `pread(2)` elsewhere.",
            " Errors: InvalidArgument for an access past the BAR or misaligned; the pread's errno.")]
        #[inline]
        pub fn $read(&self, offset: u64) -> Result<$t> {
            match self.fast::<$t>(offset) {
                // SAFETY: `fast` checked the access lies inside the live base mapping, aligned.
                Some(p) => Ok(<$t>::from_le(unsafe { p.read_volatile() })),
                None => self.read_slow(offset).map(<$t>::from_le_bytes),
            }
        }

        #[doc = concat!("`", stringify!($t), "` write at `offset`: one volatile store where the",
            " BAR is mapped, one `pwrite(2)` elsewhere. Errors: as for [`Bar::", stringify!($read), "`].")]
        #[inline]
        pub fn $write(&self, offset: u64, value: $t) -> Result<()> {
            match self.fast::<$t>(offset) {
                Some(p) => {
                    // SAFETY: `fast` checked the access lies inside the live base mapping, aligned.
                    unsafe { p.write_volatile(value.to_le()) };
                    Ok(())
                }
                None => self.write_slow(offset, value.to_le_bytes()),
            }
        }
    )*};
}

impl Bar {
    fn new(
        index: u32,
        region: RegionInfo,
        info: Option<BarInfo>,
        maps: Vec<MappedRegion>,
        device: vfio_core::Device,
    ) -> Self {
        let (base, base_len) = maps
            .iter()
            .find(|m| m.region_offset() == 0)
            .and_then(|m| Some((NonNull::new(m.as_ptr())?, m.len() as u64)))
            .unwrap_or((NonNull::dangling(), 0));
        Bar {
            base,
            base_len,
            index,
            region,
            info: info.map(OnceLock::from).unwrap_or_default(),
            maps,
            device,
        }
    }

    /// What the BAR is: its kind and prefetchability decoded from the BAR register in config
    /// space (one `VFIO_DEVICE_GET_REGION_INFO` of the config region and one `pread(2)`, the
    /// first time), its size and region from the region info. Errors: those of the config read.
    pub fn info(&self) -> Result<&BarInfo> {
        if let Some(info) = self.info.get() {
            return Ok(info);
        }
        let config = self.device.region_info(crate::CONFIG_REGION)?;
        let mut raw = [0u8; 4];
        self.device
            .read_region(&config, 0x10 + 4 * u64::from(self.index), &mut raw)?;
        let (kind, prefetchable) = decode(u32::from_le_bytes(raw));
        Ok(self.info.get_or_init(|| BarInfo {
            index: self.index,
            kind,
            prefetchable,
            size: self.region.size,
            region: self.region.clone(),
        }))
    }

    /// The BAR's number, 0-5.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The VFIO region behind it.
    pub fn region(&self) -> &RegionInfo {
        &self.region
    }

    /// The BAR's size in bytes.
    pub fn size(&self) -> u64 {
        self.region.size
    }

    /// The mmapped areas (none for an I/O-port BAR or a region without the MMAP flag).
    pub fn mappings(&self) -> &[MappedRegion] {
        &self.maps
    }

    /// The mmapped area holding `[offset, offset + len)`, if one does, with the offset inside
    /// it.
    pub fn mapping_at(&self, offset: u64, len: u64) -> Option<(&MappedRegion, u64)> {
        self.area(offset, len)
    }

    /// Whether `[offset, offset + len)` is inside one mmapped area.
    pub fn is_mapped(&self, offset: u64, len: u64) -> bool {
        self.area(offset, len).is_some()
    }

    /// The `T`-wide register at `offset`, checked once here: its reads and writes are then a
    /// single volatile access each, at a raw pointer's cost, for as long as the BAR is
    /// borrowed. Errors: InvalidArgument for an offset past the BAR or misaligned; Unsupported
    /// when the offset is not inside an mmapped area (an I/O-port BAR, a sparse BAR's hole, a
    /// region without the MMAP flag: use the read/write methods, which reach it by pread/pwrite).
    pub fn register<T: RegisterWidth>(&self, offset: u64) -> Result<Register<'_, T>> {
        let n = size_of::<T>() as u64;
        self.check(offset, n)?;
        match self.area(offset, n) {
            Some((m, at)) => m.register(at),
            None => Err(Error::unsupported(
                "BAR register",
                self.target(),
                format!(
                    "offset {offset:#x} is not in an mmapped area ({}): access it with read/write",
                    if self.info().is_ok_and(|i| i.kind == BarKind::Io) {
                        "an I/O-port BAR"
                    } else if self.maps.is_empty() {
                        "the kernel offers no mmap of this BAR"
                    } else {
                        "a hole of the sparse BAR"
                    }
                ),
            )),
        }
    }

    /// The fast path: a `T` at `offset` inside the area mapped at offset 0.
    #[inline(always)]
    fn fast<T>(&self, offset: u64) -> Option<*mut T> {
        let n = size_of::<T>() as u64;
        if offset.checked_add(n).is_some_and(|end| end <= self.base_len) && offset % n == 0 {
            // SAFETY: offset + n <= base_len: inside the base mapping (so offset fits a usize).
            Some(unsafe { self.base.as_ptr().add(offset as usize) }.cast())
        } else {
            None
        }
    }

    #[inline]
    fn area(&self, offset: u64, len: u64) -> Option<(&MappedRegion, u64)> {
        self.maps.iter().find_map(|m| {
            let start = m.region_offset();
            (offset >= start && offset.checked_add(len)? <= start + m.len() as u64).then(|| (m, offset - start))
        })
    }

    fn check(&self, offset: u64, len: u64) -> Result<()> {
        if offset.checked_add(len).is_none_or(|e| e > self.size()) || offset % len != 0 {
            return Err(self.access_error(offset, len));
        }
        // Mapped areas are memory (vfio-pci maps no I/O BAR): only the fd path asks the kind.
        if len == 8 && self.area(offset, len).is_none() && self.info()?.kind == BarKind::Io {
            return Err(Error::unsupported(
                "BAR access",
                self.target(),
                "an I/O-port BAR has no 64-bit access: vfio-pci would make it two 32-bit port \
                 accesses (low, then high) with no atomicity; make the two 32-bit accesses explicitly",
            ));
        }
        Ok(())
    }

    fn target(&self) -> String {
        format!("{} BAR {}", self.device.name(), self.index)
    }

    #[cold]
    #[inline(never)]
    fn access_error(&self, offset: u64, len: u64) -> Error {
        let reason = if offset.checked_add(len).is_none_or(|e| e > self.size()) {
            format!(
                "{len}-byte access at {offset:#x} is past the end of the {:#x}-byte BAR",
                self.size()
            )
        } else {
            format!("{len}-byte access at {offset:#x} is not {len}-byte aligned")
        };
        Error::invalid("BAR access", self.target(), reason)
    }

    /// The slow path of an `N`-byte read: checks, then another mapped area (one volatile
    /// access of `N` bytes) or a pread (the kernel turns an aligned 1/2/4/8-byte pread into
    /// one access of that size; 8 on an I/O BAR is refused by `check`).
    #[cold]
    #[inline(never)]
    fn read_slow<const N: usize>(&self, offset: u64) -> Result<[u8; N]> {
        self.check(offset, N as u64)?;
        let mut b = [0u8; N];
        match self.area(offset, N as u64) {
            Some((m, at)) => m.read_bytes(at, &mut b)?,
            None => self.device.read_region(&self.region, offset, &mut b)?,
        }
        Ok(b)
    }

    /// The slow path of an `N`-byte write (see [`Bar::read_slow`]).
    #[cold]
    #[inline(never)]
    fn write_slow<const N: usize>(&self, offset: u64, bytes: [u8; N]) -> Result<()> {
        self.check(offset, N as u64)?;
        match self.area(offset, N as u64) {
            Some((m, at)) => m.write_bytes(at, &bytes),
            None => self.device.write_region(&self.region, offset, &bytes),
        }
    }

    bar_access!(read8 write8 u8, read16 write16 u16, read32 write32 u32);

    /// `u64` read at `offset` (8-byte aligned): one volatile load where the BAR is mapped, one
    /// `pread(2)` elsewhere (vfio-pci makes it one 64-bit access on memory BARs). Errors:
    /// InvalidArgument for an access past the BAR or misaligned; Unsupported on an I/O-port
    /// BAR, where the kernel would build the value from two 32-bit port reads; the pread's
    /// errno.
    #[inline]
    pub fn read64(&self, offset: u64) -> Result<u64> {
        match self.fast::<u64>(offset) {
            // SAFETY: `fast` checked the access lies inside the live base mapping, aligned.
            Some(p) => Ok(u64::from_le(unsafe { p.read_volatile() })),
            None => self.read_slow(offset).map(u64::from_le_bytes),
        }
    }

    /// `u64` write at `offset`: one volatile store where the BAR is mapped, one `pwrite(2)`
    /// elsewhere. Errors: as for [`Bar::read64`] (Unsupported on an I/O-port BAR).
    #[inline]
    pub fn write64(&self, offset: u64, value: u64) -> Result<()> {
        match self.fast::<u64>(offset) {
            Some(p) => {
                // SAFETY: `fast` checked the access lies inside the live base mapping, aligned.
                unsafe { p.write_volatile(value.to_le()) };
                Ok(())
            }
            None => self.write_slow(offset, value.to_le_bytes()),
        }
    }

    /// Splits `[offset, offset + len)` into pieces that are each inside one mapped area
    /// (`Some(area, offset in it)`) or in no area (`None`: the device fd serves them).
    fn pieces(&self, offset: u64, len: u64) -> Result<Vec<Piece<'_>>> {
        if offset.checked_add(len).is_none_or(|e| e > self.size()) {
            return Err(Error::invalid(
                "BAR copy",
                self.target(),
                format!("{len} bytes at {offset:#x} exceed the {:#x}-byte BAR", self.size()),
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
                    ((s + m.len() as u64).min(end) - at, Some((m, at - s)))
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
    /// BAR is mapped, pread on the device fd elsewhere (vfio-pci then uses the widest aligned
    /// access too; on an I/O-port BAR an aligned 8-byte run is two 32-bit port reads).
    pub fn read_bytes(&self, offset: u64, out: &mut [u8]) -> Result<()> {
        for (rel, n, area) in self.pieces(offset, out.len() as u64)? {
            let dst = &mut out[rel as usize..(rel + n) as usize];
            match area {
                Some((m, at)) => m.read_bytes(at, dst)?,
                None => self.device.read_region(&self.region, offset + rel, dst)?,
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
                None => self.device.write_region(&self.region, offset + rel, src)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake;
    use vfio_core::SparseArea;

    /// Where the BAR's region starts in the fake device fd: not 0, so a forgotten region offset
    /// shows (the bytes before it are 0xee).
    const REGION_AT: u64 = 0x4000;

    /// A 3-page BAR whose middle page is a hole: only pages 0 and 2 are mmapped (as the kernel
    /// reports a BAR around its MSI-X table), the hole goes through pread/pwrite. `maps_from`
    /// is the fd the mappings are made of (the device fd itself, or another memfd to tell the
    /// two paths apart). Returns the BAR and the page size.
    fn holey_bar(device: vfio_core::Device, maps_from: &vfio_core::Device) -> (Bar, u64) {
        let page = rustix::param::page_size() as u64;
        let areas = [
            SparseArea { offset: 0, size: page },
            SparseArea {
                offset: 2 * page,
                size: page,
            },
        ];
        let region = fake::region(0, REGION_AT, 3 * page, Some(&areas));
        let maps = maps_from.map_region_areas(&region).expect("mmap the sparse areas");
        let info = BarInfo {
            index: 0,
            kind: BarKind::Memory32,
            prefetchable: false,
            size: region.size,
            region,
        };
        (Bar::new(0, info.region.clone(), Some(info), maps, device), page)
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed)).collect()
    }

    /// One memfd behind both paths, as on a real device: every access, mapped or not, single
    /// or bulk, reads and writes the region's bytes at the right fd offset.
    #[test]
    #[cfg_attr(miri, ignore = "memfd, mmap and pread, which Miri cannot run")]
    fn sparse_bar_reaches_every_byte() {
        let page = rustix::param::page_size();
        let dev = fake::device(fake::memfd(REGION_AT as usize + 4 * page, 0xee));
        let mut want = pattern(3 * page, 3);
        fake::write_at(&dev, REGION_AT, &want);
        let (bar, page) = holey_bar(dev.clone(), &dev);
        let pg = page as usize;

        assert_eq!(bar.mappings().len(), 2);
        assert!(bar.is_mapped(0, 8) && bar.is_mapped(2 * page, 8));
        assert!(!bar.is_mapped(page, 4), "the hole is not mapped");
        assert!(
            !bar.is_mapped(page - 4, 8),
            "an access straddling into the hole is not mapped"
        );

        let le32 = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
        for at in [0x10, pg + 0x20, 2 * pg + 0x30, pg - 4, 3 * pg - 4] {
            assert_eq!(bar.read32(at as u64).unwrap(), le32(&want, at), "read32 at {at:#x}");
        }
        for (i, at) in [0x40, pg + 0x44, 2 * pg + 0x48].into_iter().enumerate() {
            let v = 0xa5a5_0000 | i as u32;
            bar.write32(at as u64, v).unwrap();
            want[at..at + 4].copy_from_slice(&v.to_le_bytes());
            assert_eq!(fake::read_at(&dev, REGION_AT + at as u64, 4), v.to_le_bytes());
            assert_eq!(bar.read32(at as u64).unwrap(), v);
        }
        bar.write8(page + 1, 0x5a).unwrap();
        want[pg + 1] = 0x5a;
        bar.write64(page + 8, 0x0102_0304_0506_0708).unwrap();
        want[pg + 8..pg + 16].copy_from_slice(&0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!(bar.read16(page).unwrap(), u16::from_le_bytes([want[pg], want[pg + 1]]));

        // Bulk: mapped -> hole -> mapped, starting and ending off alignment.
        let (start, len) = (pg - 5, pg + 12);
        let mut out = vec![0u8; len];
        bar.read_bytes(start as u64, &mut out).unwrap();
        assert_eq!(out, want[start..start + len]);
        let mut all = vec![0u8; 3 * pg];
        bar.read_bytes(0, &mut all).unwrap();
        assert_eq!(all, want);

        let data = pattern(pg + 9, 101);
        let start = pg - 3;
        bar.write_bytes(start as u64, &data).unwrap();
        want[start..start + data.len()].copy_from_slice(&data);
        assert_eq!(
            fake::read_at(&dev, REGION_AT, 3 * pg),
            want,
            "region bytes after the bulk write"
        );
        let outside = [
            fake::read_at(&dev, 0, REGION_AT as usize),
            fake::read_at(&dev, REGION_AT + 3 * page, pg),
        ];
        assert!(outside.iter().flatten().all(|&b| b == 0xee), "a write left the region");
    }

    /// Mappings of one memfd, pread/pwrite on another: each byte must come from the path its
    /// offset belongs to, so a hole served by mmap (or a mapped page by pread) shows.
    #[test]
    #[cfg_attr(miri, ignore = "memfd, mmap and pread, which Miri cannot run")]
    fn sparse_bar_routes_mapped_and_hole_accesses() {
        let page = rustix::param::page_size();
        let fd_len = REGION_AT as usize + 4 * page;
        let (by_fd, by_map) = (
            fake::device(fake::memfd(fd_len, 0x11)),
            fake::device(fake::memfd(fd_len, 0x22)),
        );
        let (bar, page) = holey_bar(by_fd.clone(), &by_map);
        let pg = page as usize;
        let expect = |at: usize| if (pg..2 * pg).contains(&at) { 0x11 } else { 0x22 };

        assert_eq!(bar.read32(0).unwrap(), 0x2222_2222);
        assert_eq!(bar.read32(page).unwrap(), 0x1111_1111);
        assert_eq!(bar.read64(2 * page).unwrap(), 0x2222_2222_2222_2222);
        let mut out = vec![0u8; 3 * pg - 2];
        bar.read_bytes(1, &mut out).unwrap();
        for (i, b) in out.iter().enumerate() {
            assert_eq!(*b, expect(i + 1), "byte {:#x}", i + 1);
        }

        let start = pg - 7;
        bar.write_bytes(start as u64, &vec![0x33; pg + 14]).unwrap();
        let via_fd = fake::read_at(&by_fd, REGION_AT, 3 * pg);
        let via_map = fake::read_at(&by_map, REGION_AT, 3 * pg);
        for at in 0..3 * pg {
            let written = (start..start + pg + 14).contains(&at);
            let in_hole = (pg..2 * pg).contains(&at);
            assert_eq!(
                via_fd[at],
                if written && in_hole { 0x33 } else { 0x11 },
                "fd byte {at:#x}"
            );
            assert_eq!(
                via_map[at],
                if written && !in_hole { 0x33 } else { 0x22 },
                "mapped byte {at:#x}"
            );
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "memfd and mmap, which Miri cannot run")]
    fn bad_bar_accesses_are_typed_errors() {
        let page = rustix::param::page_size();
        let dev = fake::device(fake::memfd(REGION_AT as usize + 4 * page, 0));
        let (bar, page) = holey_bar(dev.clone(), &dev);
        for e in [
            bar.read32(3 * page).unwrap_err(),
            bar.read32(page + 2).unwrap_err(),
            bar.write16(1, 0).unwrap_err(),
            bar.read_bytes(3 * page - 4, &mut [0u8; 8]).unwrap_err(),
            bar.write_bytes(u64::MAX, &[0u8; 2]).unwrap_err(),
        ] {
            assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
            assert!(e.to_string().contains("fake BAR 0"), "{e}");
        }
    }

    /// An I/O-port BAR (no mappings): 8/16/32-bit accesses go through the fd, 64-bit ones and
    /// registers are refused before the kernel is asked.
    #[test]
    #[cfg_attr(miri, ignore = "memfd and pread, which Miri cannot run")]
    fn io_bar_refuses_64_bit_accesses_and_registers() {
        let dev = fake::device(fake::memfd(REGION_AT as usize + 0x100, 0x5a));
        let region = fake::region(1, REGION_AT, 0x40, None);
        let info = BarInfo {
            index: 1,
            kind: BarKind::Io,
            prefetchable: false,
            size: 0x40,
            region,
        };
        let bar = Bar::new(1, info.region.clone(), Some(info), Vec::new(), dev.clone());
        assert_eq!(bar.read32(4).unwrap(), 0x5a5a_5a5a);
        bar.write16(8, 0x1234).unwrap();
        assert_eq!(fake::read_at(&dev, REGION_AT + 8, 2), [0x34, 0x12]);
        for e in [bar.read64(8).unwrap_err(), bar.write64(8, 0).unwrap_err()] {
            assert!(matches!(e, Error::Unsupported { .. }), "{e}");
            assert!(
                e.to_string().contains("I/O-port") && e.to_string().contains("fake BAR 1"),
                "{e}"
            );
        }
        assert_eq!(
            fake::read_at(&dev, REGION_AT + 8, 8),
            [0x34, 0x12, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a]
        );
        let e = bar.register::<u32>(0).unwrap_err();
        assert!(
            matches!(e, Error::Unsupported { .. }) && e.to_string().contains("I/O-port"),
            "{e}"
        );
        assert!(matches!(bar.read32(0x40), Err(Error::InvalidArgument { .. })));
    }

    /// Registers come from the mapped areas only, checked once.
    #[test]
    #[cfg_attr(miri, ignore = "memfd and mmap, which Miri cannot run")]
    fn registers_come_from_mapped_areas() {
        let page = rustix::param::page_size();
        let dev = fake::device(fake::memfd(REGION_AT as usize + 4 * page, 0));
        let (bar, page) = holey_bar(dev.clone(), &dev);
        let r = bar.register::<u32>(0x10).unwrap();
        r.write(0xcafe_f00d);
        assert_eq!(bar.read32(0x10).unwrap(), 0xcafe_f00d);
        assert_eq!(fake::read_at(&dev, REGION_AT + 0x10, 4), 0xcafe_f00du32.to_le_bytes());
        // The second area (not at offset 0) hands out registers too.
        let far = bar.register::<u64>(2 * page + 8).unwrap();
        far.write(7);
        assert_eq!(bar.read64(2 * page + 8).unwrap(), 7);
        let hole = bar.register::<u32>(page + 4).unwrap_err();
        assert!(
            matches!(hole, Error::Unsupported { .. }) && hole.to_string().contains("hole"),
            "{hole}"
        );
        for e in [
            bar.register::<u32>(2).unwrap_err(),
            bar.register::<u8>(3 * page).unwrap_err(),
        ] {
            assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
        }
    }
}
