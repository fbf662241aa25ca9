//! An IOVA allocator over a container's allowed ranges, and a vaddr -> IOVA translation cache,
//! so a driver maps its buffers once and translates per I/O instead of mapping per I/O.

use std::collections::BTreeMap;

use crate::{Error, IovaRange, Result};

/// Hands out aligned IOVA ranges from a set of allowed ranges; freed ranges are reused.
///
/// Each range handed out usually becomes one mapping, and the type1 driver caps a container's
/// mappings (`vfio_iommu_type1.dma_entry_limit`, 65,535 by default; what is left is
/// [`Container::dma_avail`](crate::Container::dma_avail)): [`IovaAllocator::set_max_allocations`]
/// makes the allocator refuse past such a count, before the kernel would (ENOSPC).
#[derive(Debug, Clone)]
pub struct IovaAllocator {
    /// Free ranges: start -> last (inclusive), never overlapping or adjacent.
    free: BTreeMap<u64, u64>,
    /// Ranges handed out and not freed (one per `alloc`, less one per `free`).
    allocations: usize,
    /// At most this many live allocations, when set.
    max_allocations: Option<usize>,
}

impl IovaAllocator {
    /// An allocator over `ranges` (as [`crate::Container::iova_ranges`] reports them), skipping
    /// IOVA 0 so that a zero address never reaches a device. The ranges may come in any order
    /// and may overlap (they come from the kernel): they are merged first.
    pub fn new(ranges: &[IovaRange]) -> Self {
        let mut sorted: Vec<(u64, u64)> = ranges
            .iter()
            .map(|r| (r.start.max(1), r.last))
            .filter(|(start, last)| start <= last)
            .collect();
        sorted.sort_unstable();
        let mut a = IovaAllocator {
            free: BTreeMap::new(),
            allocations: 0,
            max_allocations: None,
        };
        for (start, last) in sorted {
            // Sorted by start: a range overlapping or adjacent to one already in extends it.
            match a.free.last_key_value().map(|(&s, &l)| (s, l)) {
                Some((s, l)) if start <= l.saturating_add(1) => {
                    a.free.insert(s, l.max(last));
                }
                _ => {
                    a.free.insert(start, last);
                }
            }
        }
        a
    }

    /// Caps the live allocations at `max` (`None`: no cap), e.g. at the mappings a type1
    /// container has left ([`Container::dma_avail`](crate::Container::dma_avail)) plus those
    /// already counted here, when every range becomes one mapping. Lowering it below the live
    /// count frees nothing; it only refuses further allocations.
    pub fn set_max_allocations(&mut self, max: Option<usize>) {
        self.max_allocations = max;
    }

    /// The cap set by [`IovaAllocator::set_max_allocations`].
    pub fn max_allocations(&self) -> Option<usize> {
        self.max_allocations
    }

    /// How many ranges are handed out and not freed.
    pub fn allocations(&self) -> usize {
        self.allocations
    }

    /// Allocates `size` bytes aligned to `align` (a power of two), lowest address first.
    /// Errors: InvalidArgument for a zero size or a bad alignment, when no free range fits
    /// (naming the size), and when [`IovaAllocator::max_allocations`] ranges are live already
    /// (naming the cap and type1's `dma_entry_limit`).
    pub fn alloc(&mut self, size: u64, align: u64) -> Result<u64> {
        if size == 0 || !align.is_power_of_two() {
            return Err(Error::invalid(
                "allocate IOVA",
                "IOVA allocator",
                format!("size {size:#x}, alignment {align:#x}"),
            ));
        }
        if self.max_allocations.is_some_and(|max| self.allocations >= max) {
            return Err(self.cap_reached());
        }
        let found = self.free.iter().find_map(|(&start, &last)| {
            let base = start.checked_add(align - 1)? & !(align - 1);
            let end = base.checked_add(size - 1)?;
            (end <= last).then_some((start, last, base, end))
        });
        let (start, last, base, end) = found.ok_or_else(|| {
            Error::invalid(
                "allocate IOVA",
                "IOVA allocator",
                format!("exhausted: no free range fits {size:#x} bytes aligned to {align:#x}"),
            )
        })?;
        self.free.remove(&start);
        if start < base {
            self.free.insert(start, base - 1);
        }
        if end < last {
            self.free.insert(end + 1, last);
        }
        self.allocations += 1;
        Ok(base)
    }

    #[cold]
    #[inline(never)]
    fn cap_reached(&self) -> Error {
        Error::invalid(
            "allocate IOVA",
            "IOVA allocator",
            format!(
                "{} ranges are live, the most the container has mappings for (type1's \
                 vfio_iommu_type1.dma_entry_limit caps a container's mappings): free some, \
                 coalesce buffers into fewer mappings (DmaPool), or raise the limit",
                self.allocations
            ),
        )
    }

    /// Returns `[iova, iova + size)` to the free set. Errors: InvalidArgument when any of it is
    /// already free (a double free or a range never allocated).
    pub fn free(&mut self, iova: u64, size: u64) -> Result<()> {
        let last = size.checked_sub(1).and_then(|s| iova.checked_add(s));
        let Some(last) = last else {
            return Err(Error::invalid(
                "free IOVA",
                "IOVA allocator",
                format!("bad range {iova:#x}+{size:#x}"),
            ));
        };
        let overlaps = self.free.range(..=last).next_back().is_some_and(|(_, &l)| l >= iova);
        if overlaps {
            return Err(Error::invalid(
                "free IOVA",
                "IOVA allocator",
                format!("{iova:#x}+{size:#x} is (partly) free already"),
            ));
        }
        self.insert_free(iova, last);
        self.allocations = self.allocations.saturating_sub(1);
        Ok(())
    }

    fn insert_free(&mut self, mut start: u64, mut last: u64) {
        if let Some((&s, &l)) = self.free.range(..start).next_back() {
            if l.checked_add(1) == Some(start) {
                self.free.remove(&s);
                start = s;
            }
        }
        if let Some(next) = last.checked_add(1) {
            if let Some(l) = self.free.remove(&next) {
                last = l;
            }
        }
        self.free.insert(start, last);
    }

    /// Total free bytes (saturating).
    pub fn free_bytes(&self) -> u64 {
        self.free
            .iter()
            .fold(0u64, |acc, (&s, &l)| acc.saturating_add((l - s).saturating_add(1)))
    }
}

/// vaddr -> IOVA lookups for buffers that stay mapped: `translate` is a tree lookup, no syscall.
#[derive(Debug, Default, Clone)]
pub struct IovaCache {
    /// vaddr start -> (len, iova)
    map: BTreeMap<usize, (usize, u64)>,
}

impl IovaCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `[vaddr, vaddr + len)` is mapped at `iova`.
    pub fn insert(&mut self, vaddr: *const u8, len: usize, iova: u64) {
        self.map.insert(vaddr as usize, (len, iova));
    }

    /// Forgets the mapping that starts at `vaddr`.
    pub fn remove(&mut self, vaddr: *const u8) -> Option<u64> {
        self.map.remove(&(vaddr as usize)).map(|(_, iova)| iova)
    }

    /// The IOVA of `[ptr, ptr + len)`, if one recorded mapping covers all of it.
    pub fn translate(&self, ptr: *const u8, len: usize) -> Option<u64> {
        let addr = ptr as usize;
        let (&start, &(mlen, iova)) = self.map.range(..=addr).next_back()?;
        let off = addr - start;
        (off.checked_add(len)? <= mlen).then(|| iova + off as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges() -> Vec<IovaRange> {
        vec![
            IovaRange {
                start: 0,
                last: 0xfee0_0000 - 1,
            },
            IovaRange {
                start: 0xfef0_0000,
                last: u64::MAX,
            },
        ]
    }

    #[test]
    fn allocates_aligned_skips_zero_and_reuses() {
        let mut a = IovaAllocator::new(&ranges());
        let x = a.alloc(0x1000, 0x1000).unwrap();
        assert_eq!(x, 0x1000);
        let y = a.alloc(0x20_0000, 0x20_0000).unwrap();
        assert_eq!(y, 0x20_0000);
        let z = a.alloc(0x1000, 0x1000).unwrap();
        assert_eq!(z, 0x2000);
        a.free(x, 0x1000).unwrap();
        assert_eq!(a.alloc(0x1000, 0x1000).unwrap(), 0x1000);
        assert!(a.free(0x5000, 0x1000).is_err(), "freeing a free range");
        a.free(y, 0x20_0000).unwrap();
        a.free(z, 0x1000).unwrap();
        a.free(0x1000, 0x1000).unwrap();
        assert_eq!(a.free_bytes(), IovaAllocator::new(&ranges()).free_bytes());
    }

    #[test]
    fn honours_holes_and_exhaustion() {
        let mut a = IovaAllocator::new(&[IovaRange {
            start: 0x1000,
            last: 0x3fff,
        }]);
        assert!(a.alloc(0x4000, 0x1000).is_err());
        assert_eq!(a.alloc(0x3000, 0x1000).unwrap(), 0x1000);
        assert!(a.alloc(1, 1).is_err());
        assert!(a.alloc(0, 1).is_err());
        assert!(a.alloc(1, 3).is_err());
        let mut b = IovaAllocator::new(&ranges());
        let big = b.alloc(0xfee0_0000, 0x1000).unwrap();
        assert!(big >= 0xfef0_0000, "must skip the MSI hole, got {big:#x}");
    }

    #[test]
    fn overlapping_ranges_never_give_an_iova_twice() {
        // Found by the iommu_info fuzz target: overlapping ranges from the kernel used to become
        // overlapping free ranges, and the same IOVA was handed out twice.
        let mut a = IovaAllocator::new(&[
            IovaRange {
                start: 0x20_0000,
                last: 0x3f_ffff,
            },
            IovaRange {
                start: 0x1000,
                last: 0x1_0000_1fff_ffff,
            },
            IovaRange { start: 0, last: 0xfff },
        ]);
        assert_eq!(a.free_bytes(), 0x1_0000_1fff_ffff);
        let x = a.alloc(0x20_0000, 0x20_0000).unwrap();
        let y = a.alloc(0x20_0000, 0x20_0000).unwrap();
        assert!(x + 0x20_0000 <= y, "{x:#x} and {y:#x} overlap");
        let full = IovaAllocator::new(&[
            IovaRange {
                start: 0,
                last: u64::MAX,
            },
            IovaRange { start: 5, last: 9 },
        ]);
        assert_eq!(full.free_bytes(), u64::MAX);
    }

    #[test]
    fn counts_allocations_and_honours_the_mapping_cap() {
        let mut a = IovaAllocator::new(&ranges());
        a.set_max_allocations(Some(2));
        let x = a.alloc(0x1000, 0x1000).unwrap();
        let _y = a.alloc(0x1000, 0x1000).unwrap();
        assert_eq!(a.allocations(), 2);
        let e = a.alloc(0x1000, 0x1000).unwrap_err().to_string();
        assert!(e.contains("dma_entry_limit") && e.contains("2 ranges"), "{e}");
        a.free(x, 0x1000).unwrap();
        assert_eq!(a.allocations(), 1);
        assert_eq!(a.alloc(0x1000, 0x1000).unwrap(), x);
        a.set_max_allocations(None);
        a.alloc(0x1000, 0x1000).unwrap();
        assert_eq!(a.allocations(), 3);
    }

    /// A pointer that is only an address (the cache never dereferences), without an
    /// integer-to-pointer cast that Miri's provenance checks would flag.
    fn addr(a: usize) -> *const u8 {
        std::ptr::without_provenance(a)
    }

    #[test]
    fn translates_inside_mappings_only() {
        let mut c = IovaCache::new();
        c.insert(addr(0x10_0000), 0x2000, 0x8000);
        assert_eq!(c.translate(addr(0x10_0010), 16), Some(0x8010));
        assert_eq!(c.translate(addr(0x10_1ff0), 16), Some(0x9ff0));
        assert_eq!(c.translate(addr(0x10_1ff0), 17), None);
        assert_eq!(c.translate(addr(0xf_fff0), 1), None);
        assert_eq!(c.remove(addr(0x10_0000)), Some(0x8000));
        assert_eq!(c.translate(addr(0x10_0010), 1), None);
    }
}
