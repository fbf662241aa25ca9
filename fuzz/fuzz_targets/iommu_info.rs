//! `IommuInfo::parse`: a `VFIO_IOMMU_GET_INFO` reply (`vfio_iommu_type1_info` and its capability
//! chain: IOVA ranges, DMA mappings available, migration/dirty tracking), and what the IOVA
//! allocator makes of the ranges it reports.
//!
//! Invariants: no panic; page sizes only with `VFIO_IOMMU_INFO_PGSIZES`; every IOVA range is
//! ordered (start <= last); the decoded capabilities fit in the bytes after the fixed part; an
//! `IovaAllocator` over the ranges hands out only IOVAs inside them, never twice; deterministic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vfio_core::IovaAllocator;
use vfio_group::IommuInfo;

fuzz_target!(|reply: &[u8]| {
    let Ok(info) = IommuInfo::parse(reply, "fuzz") else {
        return;
    };
    let fixed = std::mem::size_of::<vfio_sys::vfio_iommu_type1_info>();
    assert!(reply.len() >= 8, "parsed a {}-byte reply", reply.len());
    if info.flags & vfio_sys::VFIO_IOMMU_INFO_PGSIZES == 0 {
        assert_eq!(info.page_sizes, 0, "page sizes without VFIO_IOMMU_INFO_PGSIZES");
    }
    for r in &info.iova_ranges {
        assert!(r.start <= r.last, "{r:?}");
    }
    let whole_space =
        info.iova_ranges.len() == 1 && info.iova_ranges[0].start == 0 && info.iova_ranges[0].last == u64::MAX;
    let mut used = 0;
    if !whole_space {
        used += 16 + 16 * info.iova_ranges.len();
    }
    if info.dma_avail.is_some() {
        used += 12;
    }
    if info.migration.is_some() {
        used += 32;
    }
    if used > 0 {
        assert!(
            reply.len() >= fixed && used <= reply.len() - fixed,
            "{used} bytes of capabilities in a {}-byte reply",
            reply.len()
        );
    }

    // The allocator is what drivers build on these ranges: what it hands out must be inside
    // their union (the kernel's ranges may overlap or touch) and must never be handed out twice.
    let mut union: Vec<(u64, u64)> = info.iova_ranges.iter().map(|r| (r.start, r.last)).collect();
    union.sort_unstable();
    union.dedup_by(|next, prev| {
        let merge = next.0 <= prev.1.saturating_add(1);
        if merge {
            prev.1 = prev.1.max(next.1);
        }
        merge
    });
    let mut alloc = IovaAllocator::new(&info.iova_ranges);
    let mut got: Vec<(u64, u64)> = Vec::new();
    for (i, size) in [0x1000u64, 0x20_0000, 0x1000, 1 << 40, 0x3000, 0x1000]
        .into_iter()
        .enumerate()
    {
        let align = if i % 2 == 0 { 0x1000 } else { size.min(0x20_0000) };
        let Ok(base) = alloc.alloc(size, align) else {
            continue;
        };
        let last = base + (size - 1);
        assert!(base != 0 && base % align == 0, "IOVA {base:#x} for align {align:#x}");
        assert!(
            union.iter().any(|&(start, end)| start <= base && last <= end),
            "{base:#x}..={last:#x} is outside the ranges {:x?}",
            info.iova_ranges
        );
        for &(b, l) in &got {
            assert!(last < b || base > l, "{base:#x}..={last:#x} overlaps {b:#x}..={l:#x}");
        }
        got.push((base, last));
    }
    assert_eq!(IommuInfo::parse(reply, "fuzz").ok(), Some(info));
});
