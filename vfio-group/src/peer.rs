//! Peer-to-peer DMA in group mode: making a peer device's BAR reachable by the devices of a
//! container, one way per backend.
//!
//! - The type1 driver maps a BAR's mmap like any memory (`VFIO_IOMMU_MAP_DMA`): pinning fails on
//!   the `VM_IO | VM_PFNMAP` vma, so the driver faults the BAR in and takes its PFNs, which have
//!   no struct page and need no pin (`vaddr_get_pfns` -> `follow_fault_pfn`). Nothing revokes
//!   such a mapping: it stays through resets, memory-decode changes and even `munmap`, until
//!   it is unmapped. It cannot import a dma-buf.
//! - iommufd's compat container imports a dma-buf (`IOMMU_IOAS_MAP_FILE` on its compat IOAS),
//!   which the exporter revokes; it refuses a BAR's mmap (pinning it fails: EFAULT), so that is
//!   refused here without asking.
//! - A no-IOMMU container translates nothing: the device is given the BAR's physical address,
//!   read from sysfs (`resource`; bus address = CPU physical address on x86). Nothing is
//!   mapped or pinned (MMIO does not move); an unmap finds nothing (ENOENT).

use std::os::fd::{AsFd, AsRawFd};

use iommufd_sys as iosys;
use vfio_core::ioctl::{self, requests as req};
use vfio_core::{DmaAccess, DmaBuf, Error, MappedRegion, PciAddress, Result};

use crate::Container;
use crate::dma::SafePath;

impl Container {
    /// [`vfio_core::Container::map_dma_buf`] in group mode: `IOMMU_IOAS_MAP_FILE` of the dma-buf
    /// into iommufd's compat IOAS; Unsupported on the type1 driver and without an IOMMU.
    pub(crate) fn import_dma_buf(&self, buf: &DmaBuf, iova: u64, access: DmaAccess) -> Result<u64> {
        let len = buf.len();
        if self.pins().is_some() {
            return Err(Error::unsupported(
                "dma-buf import",
                self.dma_target(iova, len),
                "a no-IOMMU group container maps nothing: give the device the BAR's physical address \
                 (map_mmio_raw, or PeerMapping, which picks that route)",
            ));
        }
        let ioas = match self.safe_path()? {
            SafePath::Compat(ioas) => ioas,
            SafePath::Type1 => {
                return Err(Error::unsupported(
                    "dma-buf import",
                    self.dma_target(iova, len),
                    "the type1 driver cannot import a dma-buf: map the BAR's mmap (map_mmio_raw, or \
                     PeerMapping, which picks that route)",
                ));
            }
        };
        let mut flags = iosys::IOMMU_IOAS_MAP_FIXED_IOVA;
        if access.contains(DmaAccess::READ) {
            flags |= iosys::IOMMU_IOAS_MAP_READABLE;
        }
        if access.contains(DmaAccess::WRITE) {
            flags |= iosys::IOMMU_IOAS_MAP_WRITEABLE;
        }
        let mut m = iosys::iommu_ioas_map_file {
            flags,
            ioas_id: ioas,
            fd: buf.as_fd().as_raw_fd(),
            start: 0,
            length: len,
            iova,
            ..Default::default()
        };
        // SAFETY: the argument holds no pointer and makes no process memory reachable: the IOAS
        // takes its own reference on the dma-buf, which reaches only the exporter's BAR and is
        // revoked when that goes. The fd is the compat container's iommufd (safe_path said so).
        let res = unsafe { ioctl::call_unchecked::<req::IoasMapFile>(self.iommufd_fd(), &mut m) };
        match res {
            Ok(_) => Ok(iova),
            Err(e) => Err(buf.import_error(self.dma_target(iova, len), e)),
        }
    }

    /// [`vfio_core::Container::map_mmio_raw`] in group mode.
    ///
    /// # Safety
    /// As the trait method: the region's device stays open until the range is unmapped.
    pub(crate) unsafe fn map_peer_mmio(
        &self,
        region: &MappedRegion,
        offset: u64,
        len: u64,
        iova: u64,
        access: DmaAccess,
    ) -> Result<u64> {
        let target = || {
            format!(
                "{} region {} offset {offset:#x} length {len:#x}",
                region.device().name(),
                region.region()
            )
        };
        let page = vfio_core::page_size() as u64;
        if len == 0 || offset % page != 0 || len % page != 0 {
            return Err(Error::invalid(
                "BAR mapping for peer-to-peer DMA",
                target(),
                format!("the range must be non-empty and aligned to the {page:#x}-byte page size"),
            ));
        }
        if offset.checked_add(len).is_none_or(|end| end > region.len() as u64) {
            return Err(Error::invalid(
                "BAR mapping for peer-to-peer DMA",
                target(),
                format!("the range is outside the {:#x}-byte mapping", region.len()),
            ));
        }
        if self.pins().is_some() {
            return self.bar_physical(region, offset).map_err(|e| match e {
                Error::InvalidArgument { op, reason, .. } => Error::InvalidArgument {
                    op,
                    target: target(),
                    reason,
                },
                e => e,
            });
        }
        match self.safe_path()? {
            // SAFETY: `offset + len` is inside the mapping (checked above); the kernel resolves
            // the BAR's PFNs now and maps them until the unmap, and the caller keeps the
            // device open meanwhile, so the addresses stay that BAR's. The mapping is device
            // memory that no Rust reference reaches.
            SafePath::Type1 => unsafe { self.map_type1(region.as_ptr().add(offset as usize), len, iova, access) },
            SafePath::Compat(_) => Err(Error::unsupported(
                "BAR mapping for peer-to-peer DMA",
                target(),
                "iommufd's compat container cannot map PFNMAP memory such as a BAR's mmap (it pins \
                 pages; the kernel answers EFAULT): export a dma-buf of the BAR and import it \
                 (map_dma_buf, or PeerMapping, which picks that route)",
            )),
        }
    }

    /// The physical address of `offset` in the mapped BAR, from sysfs `resource` (no-IOMMU).
    fn bar_physical(&self, region: &MappedRegion, offset: u64) -> Result<u64> {
        let name = region.device().name();
        let addr: PciAddress = name.parse().map_err(|_| {
            Error::invalid(
                "BAR physical address",
                name,
                "the device is not named by a PCI address, so sysfs cannot say where its BAR is",
            )
        })?;
        let path = self.sysfs.pci_device_dir(&addr).join("resource");
        let text = std::fs::read_to_string(&path).map_err(|e| Error::path("read", &path, e))?;
        let start = resource_start(&text, region.region()).ok_or_else(|| {
            Error::malformed(
                "read BAR physical address",
                path.display(),
                format!("no address for BAR {} in {text:?}", region.region()),
            )
        })?;
        Ok(start + region.region_offset() + offset)
    }
}

/// The start address of resource `index` in a sysfs `resource` file (one `start end flags` line
/// of hex numbers per resource); `None` when absent, unassigned (0) or unreadable.
fn resource_start(text: &str, index: u32) -> Option<u64> {
    let line = text.lines().nth(index as usize)?;
    let start = line.split_whitespace().next()?;
    let start = u64::from_str_radix(start.trim_start_matches("0x"), 16).ok()?;
    (start != 0).then_some(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bar_addresses_come_from_the_resource_file() {
        let text = "0x00000000fea00000 0x00000000fea03fff 0x0000000000140204\n\
                    0x0000000000000000 0x0000000000000000 0x0000000000000000\n\
                    0x0000000800000000 0x00000008001fffff 0x000000000014220c\n";
        assert_eq!(resource_start(text, 0), Some(0xfea0_0000));
        assert_eq!(resource_start(text, 1), None, "unassigned");
        assert_eq!(resource_start(text, 2), Some(0x8_0000_0000));
        assert_eq!(resource_start(text, 9), None, "absent");
    }
}
