//! [`VarBuf`]: a uapi header struct followed by trailing data, in one 8-byte-aligned buffer.

use std::ffi::c_void;
use std::marker::PhantomData;

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// A variable-length ioctl argument: a header `H` (a uapi struct that starts with `argsz`)
/// followed by trailing data (capability chains, arrays of vectors, group fds, feature payloads),
/// in one 8-byte-aligned allocation whose length becomes the argsz.
pub struct VarBuf<H> {
    words: Vec<u64>,
    len: usize,
    _header: PhantomData<H>,
}

impl<H> std::fmt::Debug for VarBuf<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VarBuf").field("len", &self.len).finish()
    }
}

impl<H: IntoBytes + FromBytes + Immutable + KnownLayout> VarBuf<H> {
    /// A zeroed header followed by `tail` zeroed bytes.
    pub fn zeroed(tail: usize) -> Self {
        let len = size_of::<H>() + tail;
        const { assert!(align_of::<H>() <= 8) };
        VarBuf {
            words: vec![0; len.div_ceil(8)],
            len,
            _header: PhantomData,
        }
    }

    /// `header` followed by `tail` zeroed bytes.
    pub fn with_header(header: &H, tail: usize) -> Self {
        let mut b = Self::zeroed(tail);
        b.bytes_mut()[..size_of::<H>()].copy_from_slice(header.as_bytes());
        b
    }

    /// `header` followed by `tail`.
    pub fn with_tail(header: &H, tail: &[u8]) -> Self {
        let mut b = Self::with_header(header, tail.len());
        b.tail_mut().copy_from_slice(tail);
        b
    }

    /// The header.
    pub fn header(&self) -> &H {
        // The buffer is at least size_of::<H>() bytes, 8-byte aligned, and H is FromBytes.
        H::ref_from_prefix(self.bytes())
            .map(|(h, _)| h)
            .expect("VarBuf holds a whole header")
    }

    /// The header, to fill in.
    pub fn header_mut(&mut self) -> &mut H {
        H::mut_from_prefix(self.bytes_mut())
            .map(|(h, _)| h)
            .expect("VarBuf holds a whole header")
    }

    /// The trailing data.
    pub fn tail(&self) -> &[u8] {
        &self.bytes()[size_of::<H>()..]
    }

    /// The trailing data, to fill in.
    pub fn tail_mut(&mut self) -> &mut [u8] {
        &mut self.bytes_mut()[size_of::<H>()..]
    }
}

impl<H> VarBuf<H> {
    /// The whole buffer: header, then trailing data.
    pub fn bytes(&self) -> &[u8] {
        &self.words.as_bytes()[..self.len]
    }

    /// The whole buffer, to fill in.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        let len = self.len;
        &mut self.words.as_mut_bytes()[..len]
    }

    /// The buffer's length in bytes (the argsz it is issued with).
    #[allow(clippy::len_without_is_empty)] // never empty: it holds a header
    pub fn len(&self) -> usize {
        self.len
    }

    /// The argsz the kernel left in the first four bytes (raised above [`VarBuf::len`] when it
    /// has more to return).
    pub fn reply_argsz(&self) -> u32 {
        u32::from_ne_bytes(self.bytes()[..4].try_into().expect("four bytes"))
    }

    pub(crate) fn set_argsz(&mut self) {
        let len = self.len as u32;
        self.bytes_mut()[..4].copy_from_slice(&len.to_ne_bytes());
    }

    pub(super) fn as_mut_ptr(&mut self) -> *mut c_void {
        self.words.as_mut_ptr().cast()
    }

    /// The whole buffer as an owned byte vector.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_tail_and_argsz() {
        let h = vfio_sys::vfio_irq_set {
            index: 2,
            count: 3,
            ..Default::default()
        };
        let mut b = VarBuf::with_tail(&h, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        assert_eq!(b.len(), 20 + 12);
        assert_eq!(b.header().index, 2);
        assert_eq!(b.tail()[11], 12);
        b.set_argsz();
        assert_eq!(b.reply_argsz(), 32);
        assert_eq!(b.header().argsz, 32);
        b.header_mut().count = 1;
        assert_eq!(b.bytes()[16..20], 1u32.to_ne_bytes());
    }
}
