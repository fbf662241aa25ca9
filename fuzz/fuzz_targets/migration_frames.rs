//! `migration::transfer::check_stream`: a migration stream from an untrusted peer or file
//! (magic, frames with kind, length and CRC, the end frame's total).
//!
//! Invariants: no panic; a stream accepted carries at most its own length in data bytes;
//! deterministic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vfio_core::migration::transfer::check_stream;

fuzz_target!(|stream: &[u8]| {
    let first = check_stream(&mut &stream[..], "fuzz");
    if let Ok(bytes) = first {
        assert!(
            bytes <= stream.len() as u64,
            "{bytes} data bytes in a {}-byte stream",
            stream.len()
        );
    }
    assert_eq!(check_stream(&mut &stream[..], "fuzz").ok(), first.ok());
});
