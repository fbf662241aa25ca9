//! `HotResetInfo::parse`: a `VFIO_DEVICE_GET_PCI_HOT_RESET_INFO` reply (a header and `count`
//! `vfio_pci_dependent_device` entries).
//!
//! Invariants: no panic, even for counts far beyond the buffer; every entry decoded lies inside
//! the reply and says what its bytes say; the flags are the header's; deterministic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vfio_core::HotResetInfo;

fuzz_target!(|reply: &[u8]| {
    let Ok(info) = HotResetInfo::parse(reply, "fuzz") else {
        return;
    };
    let u32_at = |at: usize| u32::from_ne_bytes(reply[at..at + 4].try_into().unwrap());
    assert!(reply.len() >= 12, "parsed a {}-byte reply", reply.len());
    assert_eq!(info.devices.len(), u32_at(8) as usize, "entries vs count");
    assert!(12 + 8 * info.devices.len() <= reply.len(), "entries past the reply");
    let flags = u32_at(4);
    assert_eq!(info.dev_ids, flags & vfio_sys::VFIO_PCI_HOT_RESET_FLAG_DEV_ID != 0);
    assert_eq!(
        info.all_owned,
        flags & vfio_sys::VFIO_PCI_HOT_RESET_FLAG_DEV_ID_OWNED != 0
    );
    for (i, dev) in info.devices.iter().enumerate() {
        let at = 12 + 8 * i;
        assert_eq!(dev.id, u32_at(at));
        let a = dev.address;
        assert_eq!(a.domain, u16::from_ne_bytes([reply[at + 4], reply[at + 5]]) as u32);
        assert_eq!(a.bus, reply[at + 6]);
        assert_eq!((a.device << 3) | a.function, reply[at + 7]);
        assert!(a.device <= 31 && a.function <= 7, "{a:?}");
    }
    assert_eq!(HotResetInfo::parse(reply, "fuzz").ok(), Some(info));
});
