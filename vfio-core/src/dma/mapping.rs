//! [`DmaMapping`]: the guard that keeps a [`DmaBuffer`] mapped at an IOVA of a container.

use crate::{Container, DmaBuffer, Error, Result};

bitflags::bitflags! {
    /// What the device may do with a DMA mapping.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct DmaAccess: u32 {
        /// The device may read the memory.
        const READ = 1;
        /// The device may write the memory.
        const WRITE = 2;
        /// Both.
        const READ_WRITE = 3;
    }
}

/// A live IOVA mapping of a [`DmaBuffer`] in a container; unmapped on drop. Leaking it is sound
/// (the buffer's pages then stay reachable by the device, and leak; see the [`dma`](crate::dma)
/// module).
#[must_use = "the mapping is removed when this guard is dropped"]
pub struct DmaMapping<'a> {
    container: &'a dyn Container,
    buffer: &'a DmaBuffer,
    iova: u64,
    device_addr: u64,
}

impl std::fmt::Debug for DmaMapping<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DmaMapping")
            .field("iova", &format_args!("{:#x}", self.iova))
            .field("len", &self.buffer.len())
            .finish()
    }
}

impl<'a> DmaMapping<'a> {
    /// Maps the whole `buffer` at `iova` in `container` with the given access
    /// ([`Container::map_dma`]: `VFIO_IOMMU_MAP_DMA` on the type1 driver, `IOMMU_IOAS_MAP_FILE`
    /// of the buffer's memfd on iommufd (cdev mode and the compat container), pinning and a
    /// physical address without an IOMMU). The guard borrows both, so neither can go while the
    /// device can reach the memory, and unmaps on drop. Leaking the guard (`mem::forget`) is
    /// sound: the buffer's pages then stay with the device, never memory reused later (see the
    /// [`dma`](crate::dma) module).
    ///
    /// The IOVA rules are checked so that a refusal says which one was broken, instead of the
    /// kernel's bare EINVAL: before the kernel is asked, `iova` must be a multiple of the CPU
    /// page size (every backend maps whole pages; a no-IOMMU group container would otherwise
    /// accept it) and the last byte's IOVA must not pass 2^64 - 1; when the kernel refuses, the container's
    /// IOMMU page sizes ([`Container::page_sizes`]) and IOVA ranges
    /// ([`Container::iova_ranges`]) are asked, and a broken rule is reported as
    /// InvalidArgument naming the IOVA, the size and the page size or the ranges. The success
    /// path costs two compares.
    ///
    /// Errors: InvalidArgument as above; those of the container's map (EEXIST for an overlap,
    /// ENOMEM past the locked-memory limit), and Unsupported where the backend would pin the
    /// buffer lazily by address (an anonymous buffer on iommufd: use [`DmaBuffer::new`], or an
    /// [`OwnedDmaMapping`](crate::OwnedDmaMapping)).
    #[inline]
    pub fn new(container: &'a dyn Container, buffer: &'a DmaBuffer, iova: u64, access: DmaAccess) -> Result<Self> {
        let len = buffer.len() as u64;
        if iova & (crate::page_size() as u64 - 1) != 0 || iova.checked_add(len.saturating_sub(1)).is_none() {
            return Err(refused_iova(container, iova, len, None));
        }
        let device_addr = match container.map_dma(buffer, iova, access) {
            Ok(a) => a,
            Err(e) => return Err(refused_iova(container, iova, len, Some(e))),
        };
        Ok(DmaMapping {
            container,
            buffer,
            iova,
            device_addr,
        })
    }

    /// The IOVA the device uses for the first byte.
    pub fn iova(&self) -> u64 {
        self.iova
    }

    /// The address to program into the device: the IOVA, or in no-IOMMU mode the physical address.
    pub fn device_addr(&self) -> u64 {
        self.device_addr
    }

    /// The buffer behind the mapping.
    pub fn buffer(&self) -> &DmaBuffer {
        self.buffer
    }
}

impl AsRef<DmaBuffer> for DmaMapping<'_> {
    fn as_ref(&self) -> &DmaBuffer {
        self.buffer
    }
}

impl Drop for DmaMapping<'_> {
    #[inline]
    fn drop(&mut self) {
        unmap_on_drop(self.container, self.iova, self.buffer.len() as u64);
    }
}

/// The IOVA rule that `[iova, iova + len)` breaks in `container`, if any: CPU-page alignment
/// and wrap past 2^64 (checked without the kernel), then the container's IOMMU page sizes and
/// IOVA ranges (asked now: this runs only on refusal).
pub(crate) fn broken_iova_rule(container: &dyn Container, iova: u64, len: u64) -> Option<String> {
    let cpu_page = crate::page_size() as u64;
    let Some(last) = iova.checked_add(len.saturating_sub(1)) else {
        return Some(format!(
            "iova {iova:#x} + size {len:#x} passes the end of the 64-bit IOVA space"
        ));
    };
    let page = container.page_sizes().ok().map_or(cpu_page, |p| {
        // The lowest set bit is the smallest IOMMU page; every backend maps whole CPU pages.
        (1u64 << p.trailing_zeros().min(63)).max(cpu_page)
    });
    if iova % page != 0 || len % page != 0 {
        let what = if iova % page != 0 { "iova" } else { "size" };
        return Some(format!(
            "{what} is not a multiple of the page size {page:#x} (iova {iova:#x}, size {len:#x}): \
             mappings start and end on the container's smallest IOMMU page (and the CPU page)"
        ));
    }
    let ranges = container.iova_ranges().ok()?;
    if len > 0 && !ranges.iter().any(|r| r.start <= iova && last <= r.last) {
        let shown: Vec<String> = ranges
            .iter()
            .take(8)
            .map(|r| format!("{:#x}..={:#x}", r.start, r.last))
            .collect();
        let more = if ranges.len() > 8 { ", ..." } else { "" };
        return Some(format!(
            "iova {iova:#x}..={last:#x} (size {len:#x}) is not inside one of the container's IOVA ranges [{}{more}]",
            shown.join(", ")
        ));
    }
    None
}

/// The error for a refused map: InvalidArgument naming the broken IOVA rule, else the kernel's
/// error `e` as it is (a pre-check failure always breaks a rule).
#[cold]
#[inline(never)]
fn refused_iova(container: &dyn Container, iova: u64, len: u64, e: Option<Error>) -> Error {
    match (broken_iova_rule(container, iova, len), e) {
        (Some(rule), Some(e)) => Error::invalid(
            "DMA map",
            format!("{} container", container.mode()),
            format!("{rule} (the kernel said: {e})"),
        ),
        (Some(rule), None) => Error::invalid("DMA map", format!("{} container", container.mode()), rule),
        (None, Some(e)) => e,
        (None, None) => Error::invalid(
            "DMA map",
            format!("{} container", container.mode()),
            format!(
                "iova {iova:#x} is not a multiple of the CPU page size {:#x}",
                crate::page_size()
            ),
        ),
    }
}

/// Unmaps a guard's range; true when the device can no longer reach the memory: unmapped now,
/// or nothing mapped there any more (ENOENT: e.g. an unmap-all came first). Any other failure
/// is logged (target `vfio`) and answers false, and the memory must then not be freed.
#[inline]
pub(crate) fn unmap_on_drop(container: &dyn Container, iova: u64, size: u64) -> bool {
    match container.unmap_dma(iova, size) {
        Ok(_) => true,
        Err(e) => unmapped_anyway(e, iova),
    }
}

#[cold]
#[inline(never)]
fn unmapped_anyway(e: Error, iova: u64) -> bool {
    if e.errno() == Some(crate::Errno::NOENT) {
        return true;
    }
    log::warn!(target: "vfio", "DMA mapping at iova {iova:#x} could not be unmapped on drop: {e}");
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Device, HotResetInfo, IovaRange, Mode, PciAddress};

    /// A container with 4 KiB and 2 MiB IOMMU pages and one IOVA range, refusing with EINVAL what
    /// breaks its rules, as the kernel does.
    struct Fake;

    impl Container for Fake {
        fn mode(&self) -> Mode {
            Mode::CDEV
        }
        fn iova_ranges(&self) -> Result<Vec<IovaRange>> {
            Ok(vec![IovaRange {
                start: 0x10_0000,
                last: 0xfee0_0000 - 1,
            }])
        }
        fn page_sizes(&self) -> Result<u64> {
            Ok(0x1000 | 0x20_0000)
        }
        fn assign_device(&self, addr: &PciAddress) -> Result<Device> {
            Err(Error::unsupported("assign", addr, "fake"))
        }
        fn map_dma(&self, buffer: &DmaBuffer, iova: u64, _: DmaAccess) -> Result<u64> {
            let last = iova + (buffer.len() as u64 - 1);
            if iova % 0x1000 != 0 || iova < 0x10_0000 || last >= 0xfee0_0000 {
                return Err(Error::kernel("IOMMU_IOAS_MAP_FILE", "fake", crate::Errno::INVAL));
            }
            Ok(iova)
        }
        unsafe fn map_dma_raw(&self, _: *mut u8, _: u64, iova: u64, _: DmaAccess) -> Result<u64> {
            Ok(iova)
        }
        fn unmap_dma(&self, _: u64, size: u64) -> Result<u64> {
            Ok(size)
        }
        fn hot_reset(&self, device: &Device) -> Result<HotResetInfo> {
            Err(Error::unsupported("hot reset", device.name(), "fake"))
        }
    }

    fn refusal(iova: u64) -> String {
        let buf = DmaBuffer::new(0x2000).unwrap();
        match DmaMapping::new(&Fake, &buf, iova, DmaAccess::READ) {
            Ok(_) => panic!("iova {iova:#x} was mapped"),
            Err(e) => {
                assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
                e.to_string()
            }
        }
    }

    /// Each broken rule is named, with the IOVA, the size and the page size or the ranges.
    #[test]
    #[cfg_attr(miri, ignore = "memfd, which Miri cannot run")]
    fn refused_iovas_name_the_rule() {
        let e = refusal(0x10_0800);
        assert!(
            e.contains("iova is not a multiple of the page size 0x1000") && e.contains("0x100800"),
            "{e}"
        );
        let e = refusal(0x1000);
        assert!(
            e.contains("not inside one of the container's IOVA ranges [0x100000..=0xfedfffff]"),
            "{e}"
        );
        assert!(
            e.contains("iova 0x1000..=0x2fff (size 0x2000)") && e.contains("EINVAL"),
            "{e}"
        );
        let e = refusal(0xfedf_f000);
        assert!(e.contains("IOVA ranges"), "{e}");
        let e = refusal(u64::MAX - 0xfff);
        assert!(e.contains("passes the end of the 64-bit IOVA space"), "{e}");
        // The last page of the space is not a wrap: its refusal names the ranges.
        let e = refusal(u64::MAX - 0x1fff);
        assert!(e.contains("IOVA ranges"), "{e}");
        let buf = DmaBuffer::new(0x2000).unwrap();
        let m = DmaMapping::new(&Fake, &buf, 0x20_0000, DmaAccess::READ).unwrap();
        assert_eq!(m.device_addr(), 0x20_0000);
    }
}
