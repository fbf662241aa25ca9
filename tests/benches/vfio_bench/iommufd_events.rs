//! Q1 (fault round trip: trigger, read the fault record, write its page response) and Q2
//! (vEVENTQ: trigger, read one event), through vfio-cdev's typed queues vs bare `read(2)` /
//! `write(2)` on the same fds (issue #16). Faults and events come from the kernel's iommufd
//! selftest mock (`IOMMU_TEST_OP_TRIGGER_IOPF`, `IOMMU_TEST_OP_TRIGGER_VEVENT`), raised by the
//! same test-op call on both sides, so the sides differ only in how the record is read and
//! answered.

use std::hint::black_box;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;
use std::time::Instant;

use iommufd_sys as isys;
use vfio_cdev::{
    Fault, FaultPerm, FaultQueue, Hwpt, HwptFlags, Iommufd, NestedFlags, PageResponseCode, Vevent, Veventq,
};
use vfio_tests::iommufd_mock::{self as mock, MockDomain};
use vfio_tests::iommufd_mock_ops::{
    self as ops, HwptSelftest, IOTLB_DEFAULT, VIOMMU_TYPE_SELFTEST, VeventSelftest, trigger_iopf, trigger_vevent,
};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

use crate::Ctx;
use crate::measure::{BenchResult, Goal, Record, Side, interleave};

/// The faulting address the mock reports (any IOVA: the mock does not look it up).
const FAULT_ADDR: u64 = 0xdead_b000;
/// The vDEVICE's virtual id, carried by every mock vEVENT.
const VIRT_ID: u32 = 0x99;
/// vEVENTQ depth: one event is queued at a time, so any depth would do.
const VEVENTQ_DEPTH: u32 = 64;

/// An IOAS with one mock device on it and a nest-parent HWPT over the IOAS.
struct MockFixture {
    iommufd: Arc<Iommufd>,
    ioas: vfio_cdev::Ioas,
    md: MockDomain,
    parent: Arc<Hwpt>,
}

impl MockFixture {
    fn new(iommufd: Arc<Iommufd>) -> BenchResult<Self> {
        let ioas = iommufd.alloc_ioas()?;
        let md = mock::mock_domain(&iommufd, ioas.id(), 0)?;
        let parent = Arc::new(iommufd.alloc_hwpt(
            md.idev_id,
            ioas.id(),
            HwptFlags {
                nest_parent: true,
                ..Default::default()
            },
        )?);
        Ok(MockFixture {
            iommufd,
            ioas,
            md,
            parent,
        })
    }

    /// Moves the mock device to `pt`.
    fn replace(&self, pt: impl Into<vfio_cdev::PtId>) -> BenchResult {
        ops::mock_domain_replace(&self.iommufd, self.md.stdev_id, pt)?;
        Ok(())
    }

    /// Back on the IOAS, then unplugged, so the HWPTs and queues can be destroyed.
    fn unplug(&self) -> BenchResult {
        self.replace(self.ioas.id())?;
        self.iommufd.destroy(self.md.stdev_id)?;
        Ok(())
    }
}

fn selftest_data() -> HwptSelftest {
    HwptSelftest {
        iotlb: IOTLB_DEFAULT,
        pagetable_type: 0,
    }
}

/// The mock raises one fault of the device (PASID 1, group 2, read+write), as in the guest test.
#[inline]
fn raise_fault(f: &MockFixture) -> BenchResult {
    let rw = (FaultPerm::READ | FaultPerm::WRITE).0;
    trigger_iopf(&f.iommufd, f.md.idev_id, 1, 2, rw, FAULT_ADDR)?;
    Ok(())
}

/// One round trip through [`FaultQueue`]: the typed read of one record into `out` (reused),
/// its page response.
#[inline]
fn typed_fault(f: &MockFixture, q: &FaultQueue, out: &mut Vec<Fault>) -> BenchResult {
    raise_fault(f)?;
    out.clear();
    q.read_into(out, 1)?;
    check_fault(out.first())?;
    q.respond(out[0].cookie, PageResponseCode::Success)?;
    Ok(())
}

/// One round trip through [`FaultQueue::read_one`] (a record on the stack): the raw side's
/// checks (one whole record, the address, the last-page flag), then its response.
#[inline]
fn typed_fault_one(f: &MockFixture, q: &FaultQueue) -> BenchResult {
    raise_fault(f)?;
    match q.read_one()? {
        Some(flt) if flt.addr == FAULT_ADDR && flt.last_page => q.respond(flt.cookie, PageResponseCode::Success)?,
        // The fields checked, as scalars: a `Fault` passed to the formatting would be stored
        // on every round trip.
        Some(flt) => return Err(unexpected((flt.addr, flt.last_page))),
        None => return Err("no fault queued".into()),
    }
    Ok(())
}

/// The error of a check that failed, formatted out of line (on both sides), so the loop
/// keeps its records in registers.
#[cold]
#[inline(never)]
fn unexpected(what: impl std::fmt::Debug) -> Box<dyn std::error::Error> {
    format!("unexpected record {what:?}").into()
}

/// One round trip through [`FaultQueue::read`] (a new vector per read).
#[inline]
fn typed_fault_alloc(f: &MockFixture, q: &FaultQueue) -> BenchResult {
    raise_fault(f)?;
    let faults = q.read(1)?;
    check_fault(faults.first())?;
    q.respond(faults[0].cookie, PageResponseCode::Success)?;
    Ok(())
}

#[inline]
fn check_fault(flt: Option<&Fault>) -> BenchResult {
    match flt {
        Some(flt) if flt.addr == FAULT_ADDR && flt.last_page => Ok(()),
        other => Err(format!("unexpected fault {other:?}").into()),
    }
}

/// One round trip with bare libc `read(2)` and `write(2)` on the queue's fd: the floor.
#[inline]
fn raw_fault(f: &MockFixture, fd: i32) -> BenchResult {
    raise_fault(f)?;
    let mut rec = isys::iommu_hwpt_pgfault::new_zeroed();
    let len = size_of::<isys::iommu_hwpt_pgfault>();
    // SAFETY: `rec` is `len` writable bytes; any bytes are a valid record.
    let n = unsafe { libc::read(fd, rec.as_mut_bytes().as_mut_ptr().cast(), len) };
    if n != len as isize {
        return Err(format!("read of the fault fd: {n} ({})", std::io::Error::last_os_error()).into());
    }
    if black_box(rec.addr) != FAULT_ADDR || rec.flags & isys::IOMMU_PGFAULT_FLAGS_LAST_PAGE == 0 {
        return Err(unexpected(rec));
    }
    let resp = isys::iommu_hwpt_page_response {
        cookie: rec.cookie,
        code: isys::IOMMUFD_PAGE_RESP_SUCCESS,
    };
    let rlen = size_of::<isys::iommu_hwpt_page_response>();
    // SAFETY: `resp` is `rlen` readable bytes.
    let n = unsafe { libc::write(fd, resp.as_bytes().as_ptr().cast(), rlen) };
    if n != rlen as isize {
        return Err(format!("write of the page response: {n} ({})", std::io::Error::last_os_error()).into());
    }
    Ok(())
}

/// Q1: fault round trip, [`FaultQueue`] vs raw read/write on the same fd.
pub fn q1(ctx: &mut Ctx, iommufd: &Arc<Iommufd>) -> BenchResult {
    let f = MockFixture::new(iommufd.clone())?;
    let fault = iommufd.alloc_fault_queue()?;
    let iopf = f
        .parent
        .alloc_nested(f.md.idev_id, NestedFlags::default(), Some(&fault), &selftest_data())?;
    f.replace(iopf.id())?;
    let plan = ctx.plan(201, 64);
    // The kernel's cookies count up and its xarray takes a new node every 64: 64 round trips
    // per round give every round the same share of that work.
    let iters = 64;
    let fd = fault.as_fd().as_raw_fd();
    let (fr, qr) = (&f, &*fault);
    let raw = move |n: u64| {
        let t = Instant::now();
        for _ in 0..n {
            raw_fault(fr, fd)?;
        }
        Ok(t.elapsed())
    };
    let mut sides = [
        Side::new("FaultQueue::read_one", iters, move |n| {
            let t = Instant::now();
            for _ in 0..n {
                typed_fault_one(fr, qr)?;
            }
            Ok(t.elapsed())
        }),
        Side::new("raw read/write", iters, raw),
    ];
    let res = interleave(plan, &mut sides);
    drop(sides);
    let t = res?;
    ctx.emit(
        Record::new("Q1", "fault round trip: trigger, read record, write response", "cdev")
            .goal(Goal::AtMost(1.01))
            .compare(plan, ("FaultQueue::read_one", &t[0]), ("raw read/write", &t[1]), iters)
            .note("FaultQueue::read_one (a record on the stack) + respond vs libc read/write of one record on the same fd; trigger by the same IOMMU_TEST_OP_TRIGGER_IOPF on both sides"),
    );
    let mut sides = [
        Side::new("FaultQueue::read_into", iters, move |n| {
            let mut out = Vec::with_capacity(1);
            let t = Instant::now();
            for _ in 0..n {
                typed_fault(fr, qr, &mut out)?;
            }
            Ok(t.elapsed())
        }),
        Side::new("raw read/write", iters, raw),
    ];
    let res = interleave(plan, &mut sides);
    drop(sides);
    let t = res?;
    ctx.emit(
        Record::new("Q1", "fault round trip (FaultQueue::read_into, vector reused)", "cdev")
            .compare(plan, ("FaultQueue::read_into", &t[0]), ("raw read/write", &t[1]), iters)
            .note("FaultQueue::read_into(1) + respond"),
    );
    let mut sides = [
        Side::new("FaultQueue::read", iters, move |n| {
            let t = Instant::now();
            for _ in 0..n {
                typed_fault_alloc(fr, qr)?;
            }
            Ok(t.elapsed())
        }),
        Side::new("raw read/write", iters, raw),
    ];
    let res = interleave(plan, &mut sides);
    drop(sides);
    let t = res?;
    ctx.emit(
        Record::new("Q1", "fault round trip (FaultQueue::read, a new Vec each)", "cdev")
            .compare(plan, ("FaultQueue::read", &t[0]), ("raw read/write", &t[1]), iters)
            .note("the allocating convenience read"),
    );
    // Nothing may be left outstanding: a read now finds the queue empty.
    if !fault.read(1)?.is_empty() {
        return Err("a fault was left on the queue".into());
    }
    f.replace(f.parent.id())?;
    iopf.destroy()?;
    f.unplug()?;
    Ok(())
}

/// The mock raises one vEVENT of the device.
#[inline]
fn raise_vevent(f: &MockFixture) -> BenchResult {
    trigger_vevent(&f.iommufd, f.md.idev_id)?;
    Ok(())
}

/// A selftest vEVENT record as the kernel writes it: `iommufd_vevent_header` and the data.
#[derive(Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
struct RawVevent {
    flags: u32,
    sequence: u32,
    virt_id: u32,
}

/// Q2: one vEVENT, [`Veventq`] (typed, `read_into` reusing its vector, and `read`) vs raw read
/// on the same fd.
pub fn q2(ctx: &mut Ctx, iommufd: &Arc<Iommufd>) -> BenchResult {
    let f = MockFixture::new(iommufd.clone())?;
    let viommu = Arc::new(f.parent.alloc_viommu(f.md.idev_id, VIOMMU_TYPE_SELFTEST)?);
    let nested = viommu.alloc_nested(f.md.idev_id, NestedFlags::default(), None, &selftest_data())?;
    let vd = viommu.alloc_vdevice(f.md.idev_id, VIRT_ID as u64)?;
    f.replace(nested.id())?;
    let q = std::cell::RefCell::new(viommu.alloc_veventq::<VeventSelftest>(VEVENTQ_DEPTH)?);
    let record_len = Veventq::<VeventSelftest>::RECORD_LEN;
    let fd = q.borrow().as_fd().as_raw_fd();
    let plan = ctx.plan(201, 50);
    let iters = 16;
    let (fr, qr) = (&f, &q);
    let check = |ev: Option<&Vevent<VeventSelftest>>| -> BenchResult {
        match ev {
            Some(Vevent::Event { data, .. }) if data.virt_id == VIRT_ID => Ok(()),
            other => Err(format!("unexpected vEVENT {other:?}").into()),
        }
    };
    // Both sides of the goal row count the events lost before each one, from the sequence
    // numbers (events the other side read show up as gaps): the raw side tracks the sequence
    // in its header as a careful reader of the fd would, the typed side reads `lost_before`.
    let (raw_lost, typed_lost) = (std::cell::Cell::new(0u64), std::cell::Cell::new(0u64));
    let raw_next = std::cell::Cell::new(0u32);
    let (raw_lost, typed_lost, raw_next) = (&raw_lost, &typed_lost, &raw_next);
    let raw_side = move |n: u64| {
        let (mut next, mut lost) = (raw_next.get(), 0u64);
        let t = Instant::now();
        for _ in 0..n {
            raise_vevent(fr)?;
            let mut rec = RawVevent::new_zeroed();
            // SAFETY: `rec` has `record_len` (12) writable bytes; any bytes are a valid record.
            let got = unsafe { libc::read(fd, rec.as_mut_bytes().as_mut_ptr().cast(), record_len) };
            if got != record_len as isize {
                return Err(format!("read of the vEVENTQ fd: {got} ({})", std::io::Error::last_os_error()).into());
            }
            if black_box(rec.flags) != 0 || rec.virt_id != VIRT_ID {
                return Err(unexpected(rec));
            }
            let seq = rec.sequence & i32::MAX as u32;
            lost += u64::from(seq.wrapping_sub(next) & i32::MAX as u32);
            next = seq.wrapping_add(1) & i32::MAX as u32;
        }
        let t = t.elapsed();
        raw_next.set(next);
        raw_lost.set(raw_lost.get() + lost);
        Ok(t)
    };
    let mut sides = [
        Side::new("Veventq::read_one", iters, move |n| {
            let mut q = qr.borrow_mut();
            let mut lost = 0u64;
            let t = Instant::now();
            for _ in 0..n {
                raise_vevent(fr)?;
                match q.read_one()? {
                    Some(Vevent::Event { data, lost_before, .. }) if data.virt_id == VIRT_ID => {
                        lost += u64::from(lost_before);
                    }
                    other => return Err(unexpected(other)),
                }
            }
            let t = t.elapsed();
            typed_lost.set(typed_lost.get() + lost);
            Ok(t)
        }),
        Side::new("raw read", iters, raw_side),
    ];
    let res = interleave(plan, &mut sides);
    drop(sides);
    let t = res?;
    ctx.emit(
        Record::new("Q2", "vEVENTQ: trigger, read one event", "cdev")
            .goal(Goal::AtMost(1.01))
            .compare(plan, ("Veventq::read_one", &t[0]), ("raw read", &t[1]), iters)
            .note("typed read of one record into the stack vs libc read of 12 bytes on the same fd (length, flags, data checked, sequence tracked, lost events counted on both sides); trigger by the same IOMMU_TEST_OP_TRIGGER_VEVENT on both sides"),
    );
    // The counts are used, so neither side's sequence tracking is optimised away.
    black_box((raw_lost.get(), typed_lost.get()));
    let mut sides = [
        Side::new("Veventq::read_into", iters, move |n| {
            let mut q = qr.borrow_mut();
            let mut out = Vec::with_capacity(1);
            let t = Instant::now();
            for _ in 0..n {
                raise_vevent(fr)?;
                out.clear();
                q.read_into(&mut out, 1)?;
                check(out.first())?;
            }
            Ok(t.elapsed())
        }),
        Side::new("raw read", iters, raw_side),
    ];
    let res = interleave(plan, &mut sides);
    drop(sides);
    let t = res?;
    ctx.emit(
        Record::new("Q2", "vEVENTQ: trigger, read one event (Veventq::read_into, vector reused)", "cdev")
            .compare(plan, ("Veventq::read_into", &t[0]), ("raw read", &t[1]), iters)
            .note("typed read of one record (vector reused) vs libc read of 12 bytes on the same fd; trigger by the same IOMMU_TEST_OP_TRIGGER_VEVENT on both sides"),
    );
    let mut sides = [
        Side::new("Veventq::read", iters, move |n| {
            let mut q = qr.borrow_mut();
            let t = Instant::now();
            for _ in 0..n {
                raise_vevent(fr)?;
                let ev = q.read(1)?;
                check(ev.first())?;
            }
            Ok(t.elapsed())
        }),
        Side::new("raw read", iters, raw_side),
    ];
    let res = interleave(plan, &mut sides);
    drop(sides);
    let t = res?;
    ctx.emit(
        Record::new(
            "Q2",
            "vEVENTQ: trigger, read one event (Veventq::read, a new Vec each)",
            "cdev",
        )
        .compare(plan, ("Veventq::read", &t[0]), ("raw read", &t[1]), iters)
        .note("the allocating convenience read"),
    );
    let mut sides = [
        Side::new("Veventq::read_raw", iters, move |n| {
            let q = qr.borrow();
            let t = Instant::now();
            for _ in 0..n {
                raise_vevent(fr)?;
                let mut buf = [0u8; 16];
                let got = q.read_raw(&mut buf[..record_len])?;
                if black_box(got) != record_len {
                    return Err(format!("read_raw: {got} bytes").into());
                }
            }
            Ok(t.elapsed())
        }),
        Side::new("raw read", iters, raw_side),
    ];
    let res = interleave(plan, &mut sides);
    drop(sides);
    let t = res?;
    ctx.emit(
        Record::new("Q2", "vEVENTQ layer: Veventq::read_raw (rustix read, no parse)", "cdev")
            .compare(plan, ("Veventq::read_raw", &t[0]), ("raw read", &t[1]), iters)
            .note("the fd layer alone: what parsing adds is the headline minus this"),
    );
    if !q.borrow_mut().read(1)?.is_empty() {
        return Err("an event was left on the queue".into());
    }
    f.replace(f.ioas.id())?;
    drop(vd);
    drop(q);
    drop(nested);
    f.unplug()?;
    Ok(())
}
