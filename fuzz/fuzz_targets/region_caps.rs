//! `RegionInfo::parse`: a `VFIO_DEVICE_GET_REGION_INFO` reply (`vfio_region_info` and its
//! capability chain: sparse mmap areas, region type, MSI-X mappable, unknown capabilities).
//!
//! Invariants: no panic; the capabilities fit, without overlapping, in the bytes after the fixed
//! part; an unknown capability keeps its own header; the region fits in the fd's 64-bit offset
//! space and every mmappable area lies inside the region; parsing is deterministic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vfio_core::{RegionCap, RegionFlags, RegionInfo};

fuzz_target!(|reply: &[u8]| {
    let Ok(info) = RegionInfo::parse(reply, "fuzz") else {
        return;
    };
    let fixed = std::mem::size_of::<vfio_sys::vfio_region_info>();
    assert!(reply.len() >= fixed, "parsed a {}-byte reply", reply.len());
    if !info.flags.contains(RegionFlags::CAPS) {
        assert!(info.caps.is_empty(), "capabilities without VFIO_REGION_INFO_FLAG_CAPS");
    }
    // The fewest bytes each decoded capability can have come from.
    let used: usize = info
        .caps
        .iter()
        .map(|cap| match cap {
            RegionCap::SparseMmap(areas) if areas.is_empty() => 12,
            RegionCap::SparseMmap(areas) => 16 + 16 * areas.len(),
            RegionCap::Type { .. } => 16,
            RegionCap::MsixMappable => 8,
            RegionCap::Unknown { id, version, bytes } => {
                assert!(bytes.len() >= 8, "unknown capability of {} bytes", bytes.len());
                assert_eq!(u16::from_ne_bytes([bytes[0], bytes[1]]), *id);
                assert_eq!(u16::from_ne_bytes([bytes[2], bytes[3]]), *version);
                bytes.len()
            }
            // A capability this target does not know yet: at least its 8-byte header.
            _ => 8,
        })
        .sum();
    assert!(
        used <= reply.len() - fixed,
        "{used} bytes of capabilities in a {}-byte reply",
        reply.len()
    );
    assert!(
        info.offset.checked_add(info.size).is_some(),
        "region {:#x}+{:#x} overflows the device fd's offsets",
        info.offset,
        info.size
    );
    for area in info.mmap_areas() {
        assert!(area.size > 0, "empty mmap area {area:?}");
        assert!(
            area.offset.checked_add(area.size).is_some_and(|end| end <= info.size),
            "mmap area {area:?} is outside the region of {:#x} bytes",
            info.size
        );
    }
    assert_eq!(RegionInfo::parse(reply, "fuzz").ok(), Some(info));
});
