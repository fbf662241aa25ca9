//! `vfio_pci::capability::parse`: the standard capability list (pointer at 0x34, entries in the
//! first 256 bytes) and the extended list (from 0x100, up to 4 KiB) of a config-space image, the
//! walk `PciDevice::capabilities` does on a device.
//!
//! Invariants: no panic and no hang on looping lists; standard capabilities sit dword-aligned in
//! [0x40, 0x100) and extended ones dword-aligned in [0x100, len), with their headers inside the
//! image; each capability is the one its predecessor points to; at most 64 of each; standard
//! ones only when the status register says there is a list; deterministic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vfio_pci::capability;

fuzz_target!(|config: &[u8]| {
    let Ok(caps) = capability::parse(config, "fuzz") else {
        return;
    };
    let (std_caps, ext_caps): (Vec<&capability::Capability>, Vec<_>) = caps.iter().partition(|c| !c.extended);
    assert!(
        std_caps.len() <= 64 && ext_caps.len() <= 64,
        "{} capabilities",
        caps.len()
    );
    assert!(
        caps[..std_caps.len()].iter().all(|c| !c.extended),
        "standard ones come first"
    );

    if !std_caps.is_empty() {
        assert!(config[0x06] & 0x10 != 0, "standard capabilities without the status bit");
        assert_eq!(std_caps[0].offset, (config[0x34] & !3) as u16);
    }
    for (i, c) in std_caps.iter().enumerate() {
        let at = c.offset as usize;
        assert!(
            (0x40..0x100).contains(&at) && at.is_multiple_of(4),
            "standard capability at {at:#x}"
        );
        assert!(at + 2 <= config.len());
        assert_eq!((c.id, c.version), (config[at] as u16, 0));
        let next = (config[at + 1] & !3) as u16;
        match std_caps.get(i + 1) {
            Some(n) => assert_eq!(n.offset, next, "standard list order"),
            None => assert_eq!(next, 0, "the standard list ends early"),
        }
    }

    if !ext_caps.is_empty() {
        assert!(config.len() > 0x100);
        assert_eq!(ext_caps[0].offset, 0x100);
    }
    for (i, c) in ext_caps.iter().enumerate() {
        let at = c.offset as usize;
        assert!(
            at >= 0x100 && at.is_multiple_of(4) && at + 4 <= config.len(),
            "extended capability at {at:#x}"
        );
        let hdr = u32::from_le_bytes(config[at..at + 4].try_into().unwrap());
        assert!(hdr != 0 && hdr != u32::MAX);
        assert_eq!((c.id, c.version), ((hdr & 0xffff) as u16, ((hdr >> 16) & 0xf) as u8));
        let next = ((hdr >> 20) & 0xffc) as u16;
        match ext_caps.get(i + 1) {
            Some(n) => assert_eq!(n.offset, next, "extended list order"),
            None => {
                let tail = config.get(next as usize..next as usize + 4);
                assert!(
                    next == 0 || tail.is_some_and(|t| t == [0; 4] || t == [0xff; 4]),
                    "the extended list ends early at {at:#x}"
                );
            }
        }
    }
    assert_eq!(capability::parse(config, "fuzz").ok(), Some(caps));
});
