//! No-IOMMU DMA: nothing is translated, so a "mapping" is memory locked in place (`mlock`) and
//! given to the device by its physical address (`/proc/self/pagemap`, `CAP_SYS_ADMIN`). The pin
//! table remembers what was locked under which IOVA, so that an unmap can unlock it; and what a
//! no-IOMMU container answers about its (absent) IOMMU.

use std::sync::{Mutex, MutexGuard};

use vfio_core::{Error, IovaRange, Result};

/// The page sizes of a no-IOMMU container: every multiple of the CPU page size (there is no
/// translation, so any pinned, physically contiguous range works).
pub(crate) fn page_sizes() -> u64 {
    !(vfio_core::page_size() as u64 - 1)
}

/// The IOVA ranges of a no-IOMMU container: all of 64-bit space (IOVAs only name mappings
/// there; the device gets physical addresses).
pub(crate) fn iova_ranges() -> Vec<IovaRange> {
    vec![IovaRange {
        start: 0,
        last: u64::MAX,
    }]
}

/// A no-IOMMU "mapping": memory locked in place, given to the device by physical address.
#[derive(Debug)]
struct PinnedRange {
    iova: u64,
    vaddr: usize,
    size: u64,
}

/// The ranges a no-IOMMU container has pinned, by the IOVA that names each.
#[derive(Debug, Default)]
pub(crate) struct PinTable {
    pinned: Mutex<Vec<PinnedRange>>,
}

impl PinTable {
    fn lock(&self) -> MutexGuard<'_, Vec<PinnedRange>> {
        self.pinned.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Locks `[vaddr, vaddr + size)` and returns its physical address, remembering it under
    /// `iova`; `target` names the range in errors. Out of line, so the IOMMU map path stays
    /// small. Errors: InvalidArgument for a zero size or an IOVA range overlapping one already
    /// pinned; the errno of mlock; those of [`vfio_core::dma::pagemap::physical_range`]
    /// (Unsupported for memory that is not physically contiguous).
    #[inline(never)]
    pub(crate) fn pin(&self, vaddr: *mut u8, size: u64, iova: u64, target: impl FnOnce() -> String) -> Result<u64> {
        let target = target();
        let len = usize::try_from(size)
            .map_err(|_| Error::invalid("no-IOMMU DMA pin", &target, "size does not fit in usize"))?;
        if len == 0 {
            return Err(Error::invalid("no-IOMMU DMA pin", &target, "size is zero"));
        }
        let mut pinned = self.lock();
        if pinned
            .iter()
            .any(|p| iova < p.iova.saturating_add(p.size) && p.iova < iova.saturating_add(size))
        {
            return Err(Error::invalid(
                "no-IOMMU DMA pin",
                &target,
                "overlaps a range already pinned at that IOVA",
            ));
        }
        // SAFETY: mlock only changes residency of the caller's range; it does not touch contents.
        unsafe { rustix::mm::mlock(vaddr.cast(), len) }.map_err(|e| Error::kernel("mlock", &target, e))?;
        let range = PinnedRange {
            iova,
            vaddr: vaddr as usize,
            size,
        };
        match vfio_core::dma::pagemap::physical_range(vaddr as usize, len) {
            Ok(pa) => {
                pinned.push(range);
                Ok(pa)
            }
            Err(e) => {
                unlock(&range);
                Err(e)
            }
        }
    }

    /// Unlocks the ranges pinned at IOVAs inside `[iova, iova + size)`; returns their bytes.
    #[inline(never)]
    pub(crate) fn unpin(&self, iova: u64, size: u64) -> u64 {
        let end = iova.saturating_add(size);
        let mut total = 0;
        self.lock().retain(|p| {
            let inside = p.iova >= iova && p.iova.saturating_add(p.size) <= end;
            if inside {
                unlock(p);
                total += p.size;
            }
            !inside
        });
        total
    }

    /// Unlocks every pinned range; returns their bytes.
    pub(crate) fn unpin_all(&self) -> u64 {
        let mut pinned = self.lock();
        let total = pinned.iter().map(|p| p.size).sum();
        for p in pinned.drain(..) {
            unlock(&p);
        }
        total
    }

    /// Forgets every pinned range without unlocking it (the last group left the container).
    pub(crate) fn forget_all(&self) {
        self.lock().clear();
    }
}

fn unlock(p: &PinnedRange) {
    // SAFETY: munlock only changes residency; the range may even be unmapped by now (ENOMEM).
    let _ = unsafe { rustix::mm::munlock(p.vaddr as *mut std::ffi::c_void, p.size as usize) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_every_page_multiple_and_the_whole_space() {
        let page = vfio_core::page_size() as u64;
        let sizes = page_sizes();
        assert_eq!(sizes.trailing_zeros(), page.trailing_zeros());
        assert_eq!(sizes.count_ones(), 64 - page.trailing_zeros());
        assert_eq!(
            iova_ranges(),
            [IovaRange {
                start: 0,
                last: u64::MAX
            }]
        );
    }

    #[test]
    fn refuses_empty_and_overlapping_pins_and_unpins_by_iova() {
        let t = PinTable::default();
        let target = || "c iova".to_string();
        assert!(matches!(
            t.pin(std::ptr::null_mut(), 0, 0x1000, target),
            Err(Error::InvalidArgument { .. })
        ));
        // A range recorded by hand (pinning for real needs CAP_SYS_ADMIN for the pagemap).
        t.lock().push(PinnedRange {
            iova: 0x10_0000,
            vaddr: 0,
            size: 0x2000,
        });
        assert!(matches!(
            t.pin(std::ptr::null_mut(), 0x1000, 0x10_1000, target),
            Err(Error::InvalidArgument { .. })
        ));
        assert_eq!(
            t.unpin(0x10_1000, 0x1000),
            0,
            "a range that does not hold the whole pin"
        );
        assert_eq!(t.unpin(0x10_0000, 0x2000), 0x2000);
        assert_eq!(t.unpin_all(), 0);
    }
}
