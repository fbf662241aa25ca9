//! vEVENTQs (`IOMMU_VEVENTQ_ALLOC`, Linux >= 6.15): events a vIOMMU's hardware raises for the
//! guest (e.g. SMMUv3 event records with virtual stream ids), read as typed records from the
//! queue's fd.
//!
//! Each record is a header `{flags, sequence}` followed by the data of the queue's type, whose
//! size the reader must know ([`VeventData`]): records carry no length. Sequence numbers count
//! from 0 and wrap at `i32::MAX`. When more events arrive than the queue's depth holds, the
//! kernel drops them and queues one `LOST_EVENTS` header (no data) stamped with the newest
//! dropped sequence; [`Vevent`] reports the gaps. The fd never blocks: an empty read returns
//! nothing; [`Veventq::wait`] polls.

use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use iommufd_sys as sys;
use vfio_core::ioctl::{self, Request, requests as req};
use vfio_core::{Errno, Error, NamedFd, Result};
use zerocopy::{FromBytes, Immutable, KnownLayout};

use crate::fault::{log_io, poll_in};
use crate::{VeventqId, Viommu, refused};

/// The data of a vEVENTQ type (`enum iommu_veventq_type`): the fixed-size struct following each
/// record's header.
pub trait VeventData: FromBytes + KnownLayout + Immutable + Sized {
    /// The vEVENTQ `type`.
    const TYPE: u32;
}

impl VeventData for sys::iommu_vevent_arm_smmuv3 {
    const TYPE: u32 = sys::IOMMU_VEVENTQ_TYPE_ARM_SMMUV3;
}

impl VeventData for sys::iommu_vevent_tegra241_cmdqv {
    const TYPE: u32 = sys::IOMMU_VEVENTQ_TYPE_TEGRA241_CMDQV;
}

/// The largest depth the kernel takes (`1 << 19`).
pub const MAX_VEVENTQ_DEPTH: u32 = 1 << 19;

const HEADER_LEN: usize = size_of::<sys::iommufd_vevent_header>();
const SEQ_MASK: u32 = i32::MAX as u32;

/// One record read from a vEVENTQ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vevent<T> {
    /// An event.
    Event {
        /// Its sequence number.
        sequence: u32,
        /// How many sequence numbers were skipped before it since the previous record this
        /// reader saw (0 normally; non-zero after events were lost without a marker, e.g. when
        /// another reader took them).
        lost_before: u32,
        /// The type's data.
        data: T,
    },
    /// A `LOST_EVENTS` marker: the queue was full and events were dropped.
    Lost {
        /// The sequence number of the newest dropped event.
        sequence: u32,
        /// How many events were dropped (since the previous record this reader saw).
        lost: u32,
    },
}

/// A vEVENTQ of data type `T`, from [`Viommu::alloc_veventq`]: its id and fd (`O_CLOEXEC`).
/// Dropping it closes the fd, then destroys the object (the kernel refuses to destroy it, EBUSY,
/// while the fd is open); a failure is logged. It holds its vIOMMU.
#[derive(Debug)]
pub struct Veventq<T: VeventData> {
    // Fields drop in declaration order: the fd (a failed close is logged by `NamedFd`) before
    // `obj` destroys the object.
    fd: NamedFd,
    /// The sequence number expected next.
    next: u32,
    buf: Vec<u8>,
    obj: VeventqObject,
    _data: PhantomData<fn() -> T>,
}

/// A vEVENTQ's object id and vIOMMU: destroys the object when dropped (after the fd closed).
#[derive(Debug)]
struct VeventqObject {
    id: VeventqId,
    viommu: Arc<Viommu>,
}

impl Drop for VeventqObject {
    fn drop(&mut self) {
        if let Err(e) = self.viommu.iommufd().destroy(self.id) {
            log::warn!(target: "vfio", "dropping veventq {}: {e}", self.id);
        }
    }
}

impl<T: VeventData> AsFd for Veventq<T> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Viommu {
    /// `IOMMU_VEVENTQ_ALLOC` (Linux >= 6.15) of the vIOMMU's event queue of type `T::TYPE`,
    /// holding up to `depth` events. Errors: InvalidArgument for a depth of 0 or above
    /// [`MAX_VEVENTQ_DEPTH`] (checked first); EEXIST (Kernel) when the vIOMMU has a queue of
    /// that type already; Unsupported when the vIOMMU does not report events of that type
    /// (EOPNOTSUPP) or the kernel lacks the ioctl (ENOTTY).
    #[doc(alias = "IOMMU_VEVENTQ_ALLOC")]
    pub fn alloc_veventq<T: VeventData>(self: &Arc<Self>, depth: u32) -> Result<Veventq<T>> {
        let iommufd = self.iommufd();
        let target = || {
            format!(
                "{} viommu {} type {:#x} depth {depth}",
                iommufd.target(),
                self.id(),
                T::TYPE
            )
        };
        if depth == 0 || depth > MAX_VEVENTQ_DEPTH {
            return Err(Error::invalid(
                req::VeventqAlloc::NAME,
                target(),
                format!("the depth must be 1 to {MAX_VEVENTQ_DEPTH}"),
            ));
        }
        let mut a = sys::iommu_veventq_alloc {
            viommu_id: self.id().get(),
            type_: T::TYPE,
            veventq_depth: depth,
            ..Default::default()
        };
        match ioctl::call::<req::VeventqAlloc>(iommufd.ioctl_fd(), &mut a) {
            Ok(_) => {}
            Err(e @ (Errno::NOTTY | Errno::OPNOTSUPP)) => {
                return Err(Error::unsupported(req::VeventqAlloc::NAME, target(), e));
            }
            Err(e) => return Err(refused::<req::VeventqAlloc>(target, e)),
        }
        // SAFETY: out_veventq_fd is a new fd the kernel just installed in our table
        // (O_CLOEXEC), owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(a.out_veventq_fd as i32) };
        Ok(Veventq {
            fd: NamedFd::new(
                fd,
                format!(
                    "veventq {} of viommu {} of {}",
                    a.out_veventq_id,
                    self.id(),
                    iommufd.target()
                ),
            ),
            next: 0,
            buf: Vec::new(),
            obj: VeventqObject {
                id: VeventqId::from(a.out_veventq_id),
                viommu: self.clone(),
            },
            _data: PhantomData,
        })
    }
}

impl<T: VeventData> Veventq<T> {
    /// Size of one event record (header and data).
    pub const RECORD_LEN: usize = HEADER_LEN + size_of::<T>();

    /// The object id.
    pub fn id(&self) -> VeventqId {
        self.obj.id
    }

    /// The vIOMMU it belongs to.
    pub fn viommu(&self) -> &Arc<Viommu> {
        &self.obj.viommu
    }

    /// `poll(2)` for `POLLIN` for up to `timeout` (forever with `None`): true when an event is
    /// queued. Errors: poll's errno (Kernel).
    pub fn wait(&self, timeout: Option<Duration>) -> Result<bool> {
        poll_in(&self.fd, timeout)
    }

    /// Reads up to `max` queued records (events and a lost-events marker). Never blocks: empty
    /// when nothing is queued. Errors: InvalidArgument for `max` 0; read's errno (Kernel);
    /// Malformed when the kernel returns a partial record.
    pub fn read(&mut self, max: usize) -> Result<Vec<Vevent<T>>> {
        let mut out = Vec::new();
        self.read_into(&mut out, max)?;
        Ok(out)
    }

    /// [`Veventq::read`] appending to `out` (reusing its allocation); returns how many records
    /// were appended.
    pub fn read_into(&mut self, out: &mut Vec<Vevent<T>>, max: usize) -> Result<usize> {
        if max == 0 {
            return Err(Error::invalid("read", self.fd.name(), "max is 0 records"));
        }
        let len = max.saturating_mul(Self::RECORD_LEN).min(1 << 24);
        if self.buf.len() < len {
            self.buf.resize(len, 0);
        }
        // Field by field: the fd, the reused buffer and the sequence tracking are borrowed apart.
        let fd = &self.fd;
        let res = rustix::io::read(fd, &mut self.buf[..len]);
        log_io("read", fd, len, res);
        let n = res.map_err(|e| read_failed(fd, e))?;
        parse_records(&mut self.next, &self.buf[..n], out).map_err(|why| one_malformed(fd, why))
    }

    /// Reads one queued record (an event or a lost-events marker) into a record on the stack:
    /// no vector, no allocation; `None` when nothing is queued. Never blocks. The sequence
    /// tracking is [`Veventq::read`]'s. Errors: read's errno (Kernel); Malformed when the
    /// kernel returns a partial record.
    #[inline]
    pub fn read_one(&mut self) -> Result<Option<Vevent<T>>> {
        let mut rec = MaybeUninit::<OneRecord<T>>::uninit();
        // SAFETY: `rec` is at least RECORD_LEN writable bytes (repr(C): the data follows the
        // header), and any content is valid for MaybeUninit<u8>.
        let buf =
            unsafe { std::slice::from_raw_parts_mut(rec.as_mut_ptr().cast::<MaybeUninit<u8>>(), Self::RECORD_LEN) };
        let filled = match rustix::io::read(&self.fd, buf) {
            Ok((filled, _)) => &*filled,
            // The errors come boxed from their cold functions and are moved out here: built in
            // place instead, they would share the caller's `Result` slot with the event, and
            // the hot path would pass the event through memory.
            Err(e) => return Err(*self.read_one_failed(e)),
        };
        log_io("read", &self.fd, Self::RECORD_LEN, Ok(filled.len()));
        // The common case inline: one whole event, no flags (one length compare, one flags
        // compare, the sequence arithmetic). The empty queue, the lost-events marker, unknown
        // flags and partial records are `read_one_rare`'s.
        // (Nested, not a let chain: the crates build with Rust 1.85.)
        if filled.len() == Self::RECORD_LEN {
            if let Ok((header, data)) = sys::iommufd_vevent_header::read_from_prefix(filled) {
                if header.flags == 0 {
                    if let Ok(data) = T::read_from_bytes(data) {
                        let sequence = header.sequence & SEQ_MASK;
                        let lost_before = sequence.wrapping_sub(self.next) & SEQ_MASK;
                        self.next = sequence.wrapping_add(1) & SEQ_MASK;
                        return Ok(Some(Vevent::Event {
                            sequence,
                            lost_before,
                            data,
                        }));
                    }
                }
            }
        }
        self.read_one_rare(filled).map_err(|e| *e)
    }

    /// [`Veventq::read_one`] of anything but one whole event without flags.
    #[cold]
    #[inline(never)]
    fn read_one_rare(&mut self, filled: &[u8]) -> std::result::Result<Option<Vevent<T>>, Box<Error>> {
        if filled.is_empty() {
            return Ok(None);
        }
        match parse_record(&mut self.next, filled) {
            Ok((ev, [])) => Ok(Some(ev)),
            Ok((_, rest)) => Err(Box::new(one_malformed(
                &self.fd,
                format!("{} bytes after one record", rest.len()),
            ))),
            Err(why) => Err(Box::new(one_malformed(&self.fd, why))),
        }
    }

    /// A refused read of [`Veventq::read_one`], logged as the fd layer logs.
    #[cold]
    #[inline(never)]
    fn read_one_failed(&self, e: Errno) -> Box<Error> {
        log_io("read", &self.fd, Self::RECORD_LEN, Err(e));
        Box::new(read_failed(&self.fd, e))
    }

    /// [`Veventq::wait`] for up to `timeout`, then [`Veventq::read`]: empty when nothing came.
    pub fn read_timeout(&mut self, max: usize, timeout: Duration) -> Result<Vec<Vevent<T>>> {
        let deadline = Instant::now() + timeout;
        loop {
            let events = self.read(max)?;
            let left = deadline.saturating_duration_since(Instant::now());
            if !events.is_empty() || left.is_zero() || !self.wait(Some(left))? {
                return Ok(events);
            }
        }
    }

    /// `read(2)` of the fd into `buf` as is (the records are not parsed, and the sequence
    /// tracking of [`Veventq::read`] does not see them). Errors: the kernel's errno: EINVAL for
    /// a buffer shorter than a header, or too short for the first queued record.
    #[inline]
    pub fn read_raw(&self, buf: &mut [u8]) -> Result<usize> {
        let len = buf.len();
        let res = rustix::io::read(&self.fd, buf);
        log_io("read", &self.fd, len, res);
        res.map_err(|e| read_failed(&self.fd, e))
    }
}

/// One record as the kernel writes it, for [`Veventq::read_one`]'s stack buffer.
#[repr(C)]
struct OneRecord<T> {
    header: sys::iommufd_vevent_header,
    data: T,
}

/// A refused read of a vEVENTQ fd.
#[cold]
#[inline(never)]
fn read_failed(fd: &NamedFd, e: Errno) -> Error {
    Error::kernel("read", fd.name(), e)
}

/// A malformed record.
#[cold]
#[inline(never)]
fn one_malformed(fd: &NamedFd, why: String) -> Error {
    Error::malformed("read", fd.name(), why)
}

/// Parses the first record of `bytes`, tracking the sequence expected next in `next`; returns
/// it and the bytes after it, or what was malformed.
#[inline]
fn parse_record<'a, T: VeventData>(
    next: &mut u32,
    bytes: &'a [u8],
) -> std::result::Result<(Vevent<T>, &'a [u8]), String> {
    let Ok((h, rest)) = sys::iommufd_vevent_header::read_from_prefix(bytes) else {
        return Err(format!("{} bytes left, less than a header", bytes.len()));
    };
    let seq = h.sequence & SEQ_MASK;
    let (ev, rest) = if h.flags & sys::IOMMU_VEVENTQ_FLAG_LOST_EVENTS != 0 {
        // The marker carries the sequence of the newest dropped event.
        let lost = seq.wrapping_sub(*next).wrapping_add(1) & SEQ_MASK;
        (Vevent::Lost { sequence: seq, lost }, rest)
    } else {
        let Ok((data, rest)) = T::read_from_prefix(rest) else {
            return Err(format!(
                "event {seq} has {} data bytes, less than {}",
                rest.len(),
                size_of::<T>()
            ));
        };
        let lost_before = seq.wrapping_sub(*next) & SEQ_MASK;
        (
            Vevent::Event {
                sequence: seq,
                lost_before,
                data,
            },
            rest,
        )
    };
    *next = seq.wrapping_add(1) & SEQ_MASK;
    Ok((ev, rest))
}

/// Parses the records of one read, tracking the sequence expected next in `next`; Err says
/// what was malformed (records before it are in `out`).
#[inline]
fn parse_records<T: VeventData>(
    next: &mut u32,
    mut bytes: &[u8],
    out: &mut Vec<Vevent<T>>,
) -> std::result::Result<usize, String> {
    let mut count = 0;
    while !bytes.is_empty() {
        let (ev, rest) = parse_record(next, bytes)?;
        out.push(ev);
        bytes = rest;
        count += 1;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use zerocopy::IntoBytes;

    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, KnownLayout, Immutable)]
    #[repr(C)]
    struct Data(u32);

    impl VeventData for Data {
        const TYPE: u32 = 0xbeefbeef;
    }

    fn record(flags: u32, sequence: u32, data: Option<u32>) -> Vec<u8> {
        let mut v = sys::iommufd_vevent_header { flags, sequence }.as_bytes().to_vec();
        if let Some(d) = data {
            v.extend_from_slice(&d.to_ne_bytes());
        }
        v
    }

    #[test]
    fn gaps_and_lost_markers_are_counted_and_sequences_wrap() {
        let lost = sys::IOMMU_VEVENTQ_FLAG_LOST_EVENTS;
        let mut bytes = record(0, 0, Some(7));
        bytes.extend(record(0, 3, Some(8)));
        bytes.extend(record(lost, 6, None));
        let (mut next, mut out) = (0, Vec::new());
        assert_eq!(parse_records::<Data>(&mut next, &bytes, &mut out), Ok(3));
        assert_eq!(
            out,
            [
                Vevent::Event {
                    sequence: 0,
                    lost_before: 0,
                    data: Data(7)
                },
                Vevent::Event {
                    sequence: 3,
                    lost_before: 2,
                    data: Data(8)
                },
                Vevent::Lost { sequence: 6, lost: 3 },
            ]
        );
        assert_eq!(next, 7);
        // The kernel masks sequences with INT_MAX: after i32::MAX comes 0, with no gap.
        let (mut next, mut out) = (SEQ_MASK, Vec::new());
        let mut bytes = record(0, SEQ_MASK, Some(1));
        bytes.extend(record(0, 0, Some(2)));
        assert_eq!(parse_records::<Data>(&mut next, &bytes, &mut out), Ok(2));
        assert!(
            matches!(
                out[1],
                Vevent::Event {
                    sequence: 0,
                    lost_before: 0,
                    ..
                }
            ),
            "{out:?}"
        );
    }

    #[test]
    fn a_truncated_record_is_malformed() {
        let mut bytes = record(0, 0, Some(7));
        bytes.extend(record(0, 1, None));
        let (mut next, mut out) = (0, Vec::new());
        let e = parse_records::<Data>(&mut next, &bytes, &mut out).unwrap_err();
        assert!(e.contains("event 1 has 0 data bytes"), "{e}");
        assert_eq!(out.len(), 1);
        let e = parse_records::<Data>(&mut 0, &[0u8; 5], &mut Vec::new()).unwrap_err();
        assert!(e.contains("less than a header"), "{e}");
    }
}
