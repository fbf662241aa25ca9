//! VFIO capability chains: the `vfio_info_cap_header` lists the kernel appends to GET_INFO
//! replies. The reply buffer is input, not trust: every offset is checked against it.

use crate::{Error, Result};

/// One capability: its id, version and bytes (header included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capability<'a> {
    /// `vfio_info_cap_header.id`.
    pub id: u16,
    /// `vfio_info_cap_header.version`.
    pub version: u16,
    /// The capability's bytes from its header to the next capability (or the buffer's end).
    pub bytes: &'a [u8],
}

const HEADER: usize = 8;

/// Walks the chain in `buf` starting at `first` (0 = no capabilities). Errors (Malformed, naming
/// `op`/`target`) for an offset outside the buffer, one that overlaps the fixed part, or a loop.
pub fn parse<'a>(
    buf: &'a [u8],
    fixed_len: usize,
    first: u32,
    op: &'static str,
    target: &str,
) -> Result<Vec<Capability<'a>>> {
    let mut caps = Vec::new();
    let mut off = first as usize;
    let mut last = 0usize;
    while off != 0 {
        if off < fixed_len || off <= last && !caps.is_empty() || off.checked_add(HEADER).is_none_or(|e| e > buf.len()) {
            return Err(Error::malformed(
                op,
                target,
                format!(
                    "capability offset {off:#x} is outside the {}-byte reply or goes backwards",
                    buf.len()
                ),
            ));
        }
        let h = &buf[off..off + HEADER];
        let id = u16::from_ne_bytes([h[0], h[1]]);
        let version = u16::from_ne_bytes([h[2], h[3]]);
        let next = u32::from_ne_bytes([h[4], h[5], h[6], h[7]]) as usize;
        let end = if next == 0 { buf.len() } else { next.min(buf.len()) };
        if end < off + HEADER {
            return Err(Error::malformed(
                op,
                target,
                format!("capability {id} at {off:#x} has next {next:#x} inside itself"),
            ));
        }
        caps.push(Capability {
            id,
            version,
            bytes: &buf[off..end],
        });
        last = off;
        off = next;
    }
    Ok(caps)
}

/// Reads a native-endian `u32` at `at` in `bytes`, or Malformed.
pub fn u32_at(bytes: &[u8], at: usize, op: &'static str, target: &str) -> Result<u32> {
    bytes
        .get(at..at + 4)
        .map(|b| u32::from_ne_bytes(b.try_into().expect("4 bytes")))
        .ok_or_else(|| Error::malformed(op, target, format!("capability too short for a u32 at {at}")))
}

/// Reads a native-endian `u64` at `at` in `bytes`, or Malformed.
pub fn u64_at(bytes: &[u8], at: usize, op: &'static str, target: &str) -> Result<u64> {
    bytes
        .get(at..at + 8)
        .map(|b| u64::from_ne_bytes(b.try_into().expect("8 bytes")))
        .ok_or_else(|| Error::malformed(op, target, format!("capability too short for a u64 at {at}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(id: u16, next: u32, extra: &[u8]) -> Vec<u8> {
        let mut v = id.to_ne_bytes().to_vec();
        v.extend(1u16.to_ne_bytes());
        v.extend(next.to_ne_bytes());
        v.extend(extra);
        v
    }

    #[test]
    fn walks_a_chain() {
        let mut buf = vec![0u8; 16];
        buf.extend(cap(1, 28, &[1, 2, 3, 4]));
        buf.extend(cap(2, 0, &[5; 8]));
        let caps = parse(&buf, 16, 16, "t", "dev").unwrap();
        assert_eq!(caps.len(), 2);
        assert_eq!((caps[0].id, caps[0].bytes.len()), (1, 12));
        assert_eq!((caps[1].id, caps[1].bytes.len()), (2, 16));
    }

    #[test]
    fn rejects_bad_offsets() {
        let mut buf = vec![0u8; 16];
        buf.extend(cap(1, 16, &[]));
        assert!(parse(&buf, 16, 16, "t", "dev").is_err(), "loop");
        assert!(parse(&buf, 16, 8, "t", "dev").is_err(), "inside fixed part");
        assert!(parse(&buf, 16, 100, "t", "dev").is_err(), "past the end");
        assert!(parse(&buf, 16, u32::MAX, "t", "dev").is_err(), "overflow");
        assert!(parse(&buf, 16, 0, "t", "dev").unwrap().is_empty());
    }
}
