//! PCI capabilities in config space: the standard list (from the pointer at 0x34) and the
//! extended list (from 0x100, PCIe), walked with a bound on the number of steps so a malformed or
//! looping list ends in an error, never a hang. Common capabilities get typed views. [`parse`]
//! does the same walk on a config-space image (a saved dump, a test, a fuzzer's input).

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
    /// The MSI Enable bit (Message Control bit 0) as config space shows it. Under VFIO it does
    /// not say whether MSI is on: vfio-pci virtualizes this bit, so it reads clear even after a
    /// successful [`PciDevice::enable_msi`] (the kernel programs the real capability itself).
    /// What the library enabled is [`PciDevice::irq_mode`].
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
    /// Offset of the table in that BAR (a [`crate::Bar`] offset, as every BAR offset is `u64`).
    pub table_offset: u64,
    /// BAR holding the pending-bit array.
    pub pba_bar: u32,
    /// Offset of the PBA in that BAR (`u64`, as [`MsixCap::table_offset`]).
    pub pba_offset: u64,
    /// The MSI-X Enable bit (Message Control bit 15) as config space shows it: vfio-pci passes
    /// this one through, so it reads set while MSI-X is enabled through
    /// [`PciDevice::enable_msix`]. [`PciDevice::irq_mode`] says the same for every interrupt
    /// type, with the number of vectors, without a config read.
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
    /// The PM specification revision the function follows (PMC bits 0-2: 2 = 1.1, 3 = 1.2).
    pub version: u8,
    /// Current power state (0 = D0 ... 3 = D3hot).
    pub power_state: u8,
    /// No_Soft_Reset: D3hot -> D0 keeps the function's state.
    pub no_soft_reset: bool,
}

/// A vendor-specific capability (id 0x09): its length byte says how long it is; the contents
/// after the 3-byte header are the vendor's (virtio, for one, describes its BAR layout here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VendorCap {
    /// Offset in config space.
    pub offset: u16,
    /// The bytes after the id, next and length bytes (`length - 3` of them).
    pub data: Vec<u8>,
}

impl VendorCap {
    /// Decodes the vendor capability at `offset` of a config-space image. Errors: Malformed
    /// when its length byte is below 3 or runs past `config`.
    pub fn from_config(config: &[u8], offset: u16, target: &str) -> Result<Self> {
        let at = offset as usize;
        let len = *config
            .get(at + 2)
            .ok_or_else(|| Error::malformed(OP, target, format!("vendor capability at {offset:#x} is cut short")))?
            as usize;
        let data = config
            .get(at + 3..at + len.max(3))
            .filter(|_| len >= 3)
            .ok_or_else(|| {
                Error::malformed(
                    OP,
                    target,
                    format!("vendor capability at {offset:#x} claims {len} bytes"),
                )
            })?;
        Ok(VendorCap {
            offset,
            data: data.to_vec(),
        })
    }
}

const MAX_STEPS: usize = 64;

const OP: &str = "walk PCI capabilities";

/// Walks the standard and extended capability lists of a config-space image, as
/// [`PciDevice::capabilities`] does on a device: `config` holds config space from offset 0
/// (256 bytes for PCI, 4 KiB for PCIe; the extended list is walked only when it is longer than
/// 256 bytes). `target` names the device in errors. For saved config dumps, tests and fuzzing.
///
/// Errors: Malformed when a list loops, points into the header, or leads outside `config`.
///
/// ```
/// let mut config = [0u8; 256];
/// config[0x06] = 0x10; // status: capability list present
/// config[0x34] = 0x40; // first capability
/// config[0x40..0x42].copy_from_slice(&[0x05, 0x00]); // MSI, end of list
/// let caps = vfio_pci::capability::parse(&config, "dump").unwrap();
/// assert_eq!((caps[0].id, caps[0].offset), (0x05, 0x40));
/// ```
pub fn parse(config: &[u8], target: &str) -> Result<Vec<Capability>> {
    walk(config.len() as u64, target, |offset, buf| {
        let start = offset as usize;
        let bytes = config.get(start..start + buf.len()).ok_or_else(|| {
            Error::malformed(
                OP,
                target,
                format!(
                    "{}-byte read at {offset:#x} is past the {}-byte config space",
                    buf.len(),
                    config.len()
                ),
            )
        })?;
        buf.copy_from_slice(bytes);
        Ok(())
    })
}

/// Reads `N` bytes of config space at `offset` through `read`.
fn read_n<const N: usize>(read: &mut impl FnMut(u16, &mut [u8]) -> Result<()>, offset: u16) -> Result<[u8; N]> {
    let mut b = [0u8; N];
    read(offset, &mut b)?;
    Ok(b)
}

/// The capability walk over any config-space reader: `size` is the config space's size, `read`
/// fills a buffer from an offset. Every step is bounded, so a looping list ends in an error.
fn walk(
    size: u64,
    target: impl std::fmt::Display,
    mut read: impl FnMut(u16, &mut [u8]) -> Result<()>,
) -> Result<Vec<Capability>> {
    let mut out = walk_standard(&target, &mut read)?;
    out.extend(walk_extended(size, &target, &mut read)?);
    Ok(out)
}

/// The standard list: from the pointer at 0x34 when the status register's capability-list bit
/// is set, each entry in [0x40, 0x100).
fn walk_standard(
    target: &impl std::fmt::Display,
    read: &mut impl FnMut(u16, &mut [u8]) -> Result<()>,
) -> Result<Vec<Capability>> {
    let mut out = Vec::new();
    let status = u16::from_le_bytes(read_n(read, crate::config::offset::STATUS)?);
    if status & crate::config::Status::CAPABILITIES_LIST.bits() == 0 {
        return Ok(out);
    }
    let mut ptr = read_n::<1>(read, crate::config::offset::CAPABILITIES)?[0] & !3;
    let mut steps = 0;
    while ptr != 0 {
        steps += 1;
        if steps > MAX_STEPS || ptr < 0x40 {
            return Err(Error::malformed(
                OP,
                target,
                format!("standard capability pointer {ptr:#x}"),
            ));
        }
        let [id, next] = read_n::<2>(read, ptr as u16)?;
        out.push(Capability {
            id: id as u16,
            version: 0,
            offset: ptr as u16,
            extended: false,
        });
        ptr = next & !3;
    }
    Ok(out)
}

/// The extended list: from 0x100 when config space is larger than 256 bytes, ending at a zero
/// (or all-ones) header or a zero next pointer.
fn walk_extended(
    size: u64,
    target: &impl std::fmt::Display,
    read: &mut impl FnMut(u16, &mut [u8]) -> Result<()>,
) -> Result<Vec<Capability>> {
    let mut out = Vec::new();
    if size <= 0x100 {
        return Ok(out);
    }
    let mut off = 0x100u16;
    let mut steps = 0;
    loop {
        steps += 1;
        if steps > MAX_STEPS {
            return Err(Error::malformed(OP, target, "the extended capability list loops"));
        }
        let hdr = u32::from_le_bytes(read_n(read, off)?);
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
            return Err(Error::malformed(
                OP,
                target,
                format!("extended capability pointer {next:#x}"),
            ));
        }
        off = next;
    }
    Ok(out)
}

impl PciDevice {
    /// Every capability, standard then extended (the walk of [`parse`], on the device's config
    /// region, read with `pread(2)`). What the kernel shows, not all the device has: vfio-pci
    /// leaves out capabilities it does not know. Errors: Malformed when a list loops or points
    /// outside config space; the config reads' errors.
    pub fn capabilities(&self) -> Result<Vec<Capability>> {
        let config = self.config_region()?;
        walk(config.size, self.address(), |offset, buf| {
            self.device().read_region(&config, offset as u64, buf)
        })
    }

    /// The standard capability list alone (pointer at 0x34; empty when the status register has
    /// no [`Status::CAPABILITIES_LIST`](crate::Status::CAPABILITIES_LIST)). Errors as for
    /// [`PciDevice::capabilities`].
    pub fn standard_capabilities(&self) -> Result<Vec<Capability>> {
        let config = self.config_region()?;
        walk_standard(&self.address(), &mut |offset, buf| {
            self.device().read_region(&config, offset as u64, buf)
        })
    }

    /// The extended (PCIe) capability list alone, from 0x100: empty for a 256-byte config
    /// space, and when the kernel shows none (vfio-pci then reads 0 at 0x100). When vfio-pci
    /// hides the first extended capability it keeps its header as a placeholder with id 0 and
    /// version 0 and only its next pointer, which is listed as such. Errors as for
    /// [`PciDevice::capabilities`].
    pub fn extended_capabilities(&self) -> Result<Vec<Capability>> {
        let config = self.config_region()?;
        walk_extended(config.size, &self.address(), &mut |offset, buf| {
            self.device().read_region(&config, offset as u64, buf)
        })
    }

    fn find(&self, cap_id: u8) -> Result<Option<u16>> {
        Ok(self
            .standard_capabilities()?
            .into_iter()
            .find(|c| c.id == cap_id as u16)
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
            table_offset: u64::from(table & !7),
            pba_bar: pba & 7,
            pba_offset: u64::from(pba & !7),
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

    /// The power-management capability, if the function has one. vfio-pci traps writes to
    /// the power state (it changes the state itself) and virtualizes PME enable and status;
    /// the rest reads from the device.
    pub fn pm_cap(&self) -> Result<Option<PmCap>> {
        let Some(off) = self.find(id::PM)? else { return Ok(None) };
        let pmc = self.config_read16(off + 2)?;
        let pmcsr = self.config_read16(off + 4)?;
        Ok(Some(PmCap {
            offset: off,
            version: (pmc & 7) as u8,
            power_state: (pmcsr & 3) as u8,
            no_soft_reset: pmcsr & (1 << 3) != 0,
        }))
    }

    /// Every vendor-specific capability, decoded (read from config space).
    pub fn vendor_caps(&self) -> Result<Vec<VendorCap>> {
        let caps: Vec<Capability> = self
            .standard_capabilities()?
            .into_iter()
            .filter(|c| c.id == u16::from(id::VENDOR))
            .collect();
        if caps.is_empty() {
            return Ok(Vec::new());
        }
        let mut config = vec![0u8; 256];
        self.device().read_region(&self.config_region()?, 0, &mut config)?;
        let target = self.address().to_string();
        caps.iter()
            .map(|c| VendorCap::from_config(&config, c.offset, &target))
            .collect()
    }

    /// The raw bytes of a capability (e.g. a vendor-specific one), `len` bytes from its offset.
    pub fn capability_bytes(&self, cap: &Capability, len: u16) -> Result<Vec<u8>> {
        let mut b = vec![0u8; len as usize];
        self.device()
            .read_region(&self.config_region()?, cap.offset as u64, &mut b)?;
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 4 KiB config space with the capability list bit set and the first pointer at `first`.
    fn config(first: u8) -> Vec<u8> {
        let mut c = vec![0u8; 4096];
        c[0x06] = 0x10;
        c[0x34] = first;
        c
    }

    fn ext(c: &mut [u8], at: usize, id: u16, version: u32, next: u32) {
        let hdr = id as u32 | (version << 16) | (next << 20);
        c[at..at + 4].copy_from_slice(&hdr.to_le_bytes());
    }

    #[test]
    fn vendor_capability_contents() {
        let mut c = config(0x40);
        c[0x40..0x46].copy_from_slice(&[id::VENDOR, 0x00, 6, 0xaa, 0xbb, 0xcc]);
        let caps = parse(&c, "t").unwrap();
        assert_eq!(caps[0].id, u16::from(id::VENDOR));
        let v = VendorCap::from_config(&c, 0x40, "t").unwrap();
        assert_eq!(v.data, vec![0xaa, 0xbb, 0xcc]);
        c[0x42] = 2;
        assert!(
            VendorCap::from_config(&c, 0x40, "t").is_err(),
            "length below the header"
        );
        c[0x42] = 0xff;
        assert!(VendorCap::from_config(&c[..0x80], 0x40, "t").is_err(), "past the end");
    }

    #[test]
    fn walks_standard_then_extended() {
        let mut c = config(0x40);
        c[0x40..0x42].copy_from_slice(&[id::PM, 0x50]);
        // The low two bits of a pointer are reserved and ignored.
        c[0x50..0x52].copy_from_slice(&[id::MSIX, 0x73]);
        c[0x70..0x72].copy_from_slice(&[id::PCIE, 0x00]);
        ext(&mut c, 0x100, 0x0001, 2, 0x148);
        ext(&mut c, 0x148, 0x0018, 1, 0);
        let caps = parse(&c, "t").unwrap();
        let seen: Vec<_> = caps.iter().map(|c| (c.id, c.version, c.offset, c.extended)).collect();
        assert_eq!(
            seen,
            vec![
                (1, 0, 0x40, false),
                (0x11, 0, 0x50, false),
                (0x10, 0, 0x70, false),
                (1, 2, 0x100, true),
                (0x18, 1, 0x148, true)
            ]
        );
        // A 256-byte (conventional PCI) image has no extended list.
        assert_eq!(parse(&c[..256], "t").unwrap().len(), 3);
    }

    #[test]
    fn no_list_bit_no_standard_caps() {
        let mut c = config(0x40);
        c[0x06] = 0;
        c[0x40] = id::MSI;
        assert!(parse(&c[..256], "t").unwrap().is_empty());
        // All-ones (no device) and zero extended headers end the list.
        c[0x100..0x104].fill(0xff);
        assert!(parse(&c, "t").unwrap().is_empty());
    }

    #[test]
    fn loops_and_bad_pointers_are_malformed() {
        let mut c = config(0x40);
        c[0x40..0x42].copy_from_slice(&[id::MSI, 0x40]);
        let e = parse(&c, "t").unwrap_err();
        assert!(matches!(e, Error::Malformed { .. }), "{e}");
        let c = config(0x20);
        assert!(parse(&c, "t").is_err(), "pointer into the header");
        let mut c = config(0);
        ext(&mut c, 0x100, 1, 1, 0x100);
        assert!(parse(&c, "t").is_err(), "extended self loop");
        let mut c = config(0);
        ext(&mut c, 0x100, 1, 1, 0x40);
        assert!(parse(&c, "t").is_err(), "extended pointer below 0x100");
        let mut c = config(0);
        ext(&mut c, 0x100, 1, 1, 0x200);
        let e = parse(&c[..0x180], "t").unwrap_err();
        assert!(e.to_string().contains("past the 384-byte config space"), "{e}");
        assert!(parse(&[0u8; 4], "t").is_err(), "shorter than the header");
    }

    /// On a device (a fake fd holding a 4 KiB config space): the standard and extended walks
    /// are the two halves of `capabilities`, and vfio-pci's placeholder for a hidden first
    /// extended capability (id 0, version 0, next pointer kept) is listed and followed.
    #[test]
    #[cfg_attr(miri, ignore = "memfd and pread, which Miri cannot run")]
    fn device_walks_split_standard_and_extended() {
        let mut c = config(0x40);
        c[0x40..0x42].copy_from_slice(&[id::PM, 0x48]);
        c[0x48..0x4a].copy_from_slice(&[id::PCIE, 0x00]);
        ext(&mut c, 0x100, 0, 0, 0x140);
        ext(&mut c, 0x140, 0x0001, 2, 0);
        let dev = crate::fake::device(crate::fake::memfd(0x3000, 0xff));
        crate::fake::write_at(&dev, 0x1000, &c);
        let pci = PciDevice::fake(dev, 0x1000, 4096);
        let std_caps = pci.standard_capabilities().unwrap();
        let ext_caps = pci.extended_capabilities().unwrap();
        assert_eq!(
            std_caps.iter().map(|c| (c.id, c.offset)).collect::<Vec<_>>(),
            [(1, 0x40), (0x10, 0x48)]
        );
        assert!(std_caps.iter().all(|c| !c.extended) && ext_caps.iter().all(|c| c.extended));
        let seen: Vec<_> = ext_caps.iter().map(|c| (c.id, c.version, c.offset)).collect();
        assert_eq!(seen, [(0, 0, 0x100), (1, 2, 0x140)]);
        assert_eq!(pci.capabilities().unwrap(), [std_caps, ext_caps].concat());
        assert_eq!(pci.pm_cap().unwrap().map(|p| p.offset), Some(0x40));
        // A conventional (256-byte) config space has no extended list.
        let dev = crate::fake::device(crate::fake::memfd(0x3000, 0xff));
        crate::fake::write_at(&dev, 0x1000, &c[..256]);
        assert!(
            PciDevice::fake(dev, 0x1000, 256)
                .extended_capabilities()
                .unwrap()
                .is_empty()
        );
    }
}
