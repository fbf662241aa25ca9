//! `DeviceInfo::parse`: a `VFIO_DEVICE_GET_INFO` reply (`vfio_device_info` and its capability
//! chain, kept as raw capabilities).
//!
//! Invariants: no panic; capabilities only with `VFIO_DEVICE_FLAGS_CAPS`; each keeps its own
//! header; together they fit, without overlapping, after the fixed part; deterministic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vfio_core::{DeviceFlags, DeviceInfo};

fuzz_target!(|reply: &[u8]| {
    let Ok(info) = DeviceInfo::parse(reply, "fuzz") else {
        return;
    };
    let fixed = std::mem::size_of::<vfio_sys::vfio_device_info>();
    assert!(reply.len() >= fixed, "parsed a {}-byte reply", reply.len());
    if !info.flags.contains(DeviceFlags::CAPS) {
        assert!(info.caps.is_empty(), "capabilities without VFIO_DEVICE_FLAGS_CAPS");
    }
    let mut used = 0;
    for (id, version, bytes) in &info.caps {
        assert!(bytes.len() >= 8, "capability of {} bytes", bytes.len());
        assert_eq!(u16::from_ne_bytes([bytes[0], bytes[1]]), *id);
        assert_eq!(u16::from_ne_bytes([bytes[2], bytes[3]]), *version);
        used += bytes.len();
    }
    assert!(
        used <= reply.len() - fixed,
        "{used} bytes of capabilities in a {}-byte reply",
        reply.len()
    );
    assert_eq!(DeviceInfo::parse(reply, "fuzz").ok(), Some(info));
});
