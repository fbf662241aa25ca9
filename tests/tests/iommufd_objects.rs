//! The iommufd object model of issue #16 (nested HWPTs, cache invalidation, fault queues,
//! vIOMMU, vDEVICE, vEVENTQ, hardware queues, PASID, typed hw info) against the kernel's
//! selftest mock (`IOMMU_TEST_CMD`, `CONFIG_IOMMUFD_TEST`), mirroring the contracts of the
//! kernel's own selftest (`tools/testing/selftests/iommu/iommufd.c`). Each test skips with the
//! reason when `/dev/iommu` or the selftest interface is missing.

use std::fmt::Debug;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use vfio_cdev::{
    DeviceId, FaultPerm, HwInfoKind, Hwpt, HwptFlags, Invalidation, Iommufd, IovaPlacement, NestedFlags, NestedHwpt,
    ObjectId, PageResponseCode, Vevent, Viommu,
};
use vfio_core::{DmaAccess, DmaBuffer, Errno, Error, Result};
use vfio_tests::iommufd_mock::{self as mock, MockDomain};
use vfio_tests::iommufd_mock_ops::{self as ops, *};
use vfio_tests::{Outcome, TestResult, ensure, skip};

type Check = std::result::Result<(), String>;

macro_rules! mock_or_skip {
    () => {
        match mock::open() {
            Ok(fd) => fd,
            Err(why) => return skip(why),
        }
    };
}

/// `res` failed with the kernel's `want`.
fn refused<T: Debug>(res: Result<T>, want: Errno, what: &str) -> Check {
    match res {
        Ok(v) => Err(format!("{what}: succeeded ({v:?}), expected {want:?}")),
        Err(e) if e.errno() == Some(want) => {
            println!("    {what}: refused as expected: {e}");
            Ok(())
        }
        Err(e) => Err(format!("{what}: failed with {e}, expected {want:?}")),
    }
}

/// `res` failed with Unsupported.
fn unsupported<T: Debug>(res: Result<T>, what: &str) -> Check {
    match res {
        Err(e @ Error::Unsupported { .. }) => {
            println!("    {what}: unsupported as expected: {e}");
            Ok(())
        }
        r => Err(format!("{what}: {r:?}, expected Unsupported")),
    }
}

/// `res` failed with InvalidArgument (refused before the kernel was asked).
fn invalid<T: Debug>(res: Result<T>, what: &str) -> Check {
    match res {
        Err(e @ Error::InvalidArgument { .. }) => {
            println!("    {what}: invalid as expected: {e}");
            Ok(())
        }
        r => Err(format!("{what}: {r:?}, expected InvalidArgument")),
    }
}

/// An invalidation handled `handled` entries and then ended with `want` (None: success).
fn handled(inv: Invalidation, want_handled: u32, want: Option<Errno>, what: &str) -> Check {
    println!("    {what}: {inv}");
    if inv.handled != want_handled {
        return Err(format!("{what}: {inv}, expected {want_handled} handled"));
    }
    match (&inv.result, want) {
        (Ok(()), None) => Ok(()),
        (Err(e), Some(w)) if e.errno() == Some(w) => Ok(()),
        _ => Err(format!("{what}: {inv}, expected {want:?}")),
    }
}

fn selftest_data() -> HwptSelftest {
    HwptSelftest {
        iotlb: IOTLB_DEFAULT,
        pagetable_type: 0,
    }
}

fn inv(flags: u32, iotlb_id: u32) -> HwptInvalidateSelftest {
    HwptInvalidateSelftest { flags, iotlb_id }
}

fn vinv(flags: u32, vdev_id: u32, cache_id: u32) -> ViommuInvalidateSelftest {
    ViommuInvalidateSelftest {
        flags,
        vdev_id,
        cache_id,
    }
}

/// The selftest fixture: an IOAS with one mock device on it.
struct Fixture {
    iommufd: Arc<Iommufd>,
    ioas: vfio_cdev::Ioas,
    md: MockDomain,
}

impl Fixture {
    fn new(iommufd: Arc<Iommufd>, dev_flags: u32) -> Result<Self> {
        let ioas = iommufd.alloc_ioas()?;
        let md = mock::mock_domain(&iommufd, ioas.id(), dev_flags)?;
        Ok(Fixture { iommufd, ioas, md })
    }

    fn idev(&self) -> DeviceId {
        self.md.idev_id
    }

    fn replace(&self, pt: impl Into<vfio_cdev::PtId>) -> Result<vfio_cdev::HwptId> {
        ops::mock_domain_replace(&self.iommufd, self.md.stdev_id, pt)
    }

    fn parent(&self) -> Result<Arc<Hwpt>> {
        Ok(Arc::new(self.iommufd.alloc_hwpt(
            self.idev(),
            self.ioas.id(),
            HwptFlags {
                nest_parent: true,
                ..Default::default()
            },
        )?))
    }

    /// Back on the IOAS, then unplugged, so every object the test made can be destroyed.
    fn unplug(&self) -> Result<()> {
        self.replace(self.ioas.id())?;
        self.iommufd.destroy(self.md.stdev_id)
    }
}

fn hwpt_nested_over_nest_parent() -> TestResult {
    let f = Fixture::new(mock_or_skip!(), 0)?;
    let (iommufd, idev) = (&f.iommufd, f.idev());
    let data = selftest_data();
    refused(
        iommufd.alloc_hwpt_raw(
            DeviceId::from(f.ioas.id().get()),
            ObjectId::from(idev.get()),
            0,
            None,
            0,
            &[],
        ),
        Errno::NOENT,
        "HWPT_ALLOC with an IOAS as the device",
    )?;
    refused(
        iommufd.alloc_hwpt_raw(idev, ObjectId::from(idev.get()), 0, None, 0, &[]),
        Errno::INVAL,
        "HWPT_ALLOC over a device",
    )?;
    let fault = iommufd.alloc_fault_queue()?;
    unsupported(
        iommufd.alloc_hwpt_with::<HwptSelftest>(
            idev,
            f.ioas.id(),
            HwptFlags {
                nest_parent: true,
                ..Default::default()
            },
            Some(&fault),
            None,
        ),
        "NEST_PARENT with a fault queue",
    )?;
    let parent = f.parent()?;
    let plain = Arc::new(iommufd.alloc_hwpt(idev, f.ioas.id(), HwptFlags::default())?);
    let none = NestedFlags::default();
    refused(
        parent.alloc_nested_raw(idev, none, None, 0, zerocopy::IntoBytes::as_bytes(&data)),
        Errno::INVAL,
        "nested with type NONE and data",
    )?;
    unsupported(
        parent.alloc_nested_raw(
            idev,
            none,
            None,
            HWPT_DATA_SELFTEST + 1,
            zerocopy::IntoBytes::as_bytes(&data),
        ),
        "nested with an unknown data type",
    )?;
    refused(
        parent.alloc_nested_raw(
            idev,
            none,
            None,
            HWPT_DATA_SELFTEST,
            &zerocopy::IntoBytes::as_bytes(&data)[..3],
        ),
        Errno::INVAL,
        "nested with 3 bytes of data",
    )?;
    unsupported(
        iommufd.alloc_hwpt_raw(
            idev,
            parent.id(),
            iommufd_sys::IOMMU_HWPT_ALLOC_NEST_PARENT,
            None,
            HWPT_DATA_SELFTEST,
            zerocopy::IntoBytes::as_bytes(&data),
        ),
        "nested with NEST_PARENT",
    )?;
    refused(
        plain.alloc_nested(idev, none, None, &data),
        Errno::INVAL,
        "nested over a HWPT that is not a nest parent",
    )?;
    let n0 = parent.alloc_nested(idev, none, None, &data)?;
    let n1 = parent.alloc_nested(idev, none, None, &data)?;
    for n in [&n0, &n1] {
        check_iotlb_all(iommufd, n.id(), [IOTLB_DEFAULT; 4])?;
    }
    refused(
        iommufd.alloc_hwpt_raw(
            idev,
            n0.id(),
            0,
            None,
            HWPT_DATA_SELFTEST,
            zerocopy::IntoBytes::as_bytes(&data),
        ),
        Errno::INVAL,
        "nested over a nested HWPT",
    )?;
    refused(
        iommufd.destroy(parent.id()),
        Errno::BUSY,
        "destroy of a parent with nested HWPTs",
    )?;
    ensure!(f.replace(n0.id())? == n0.id(), "mock device not on n0");
    refused(
        iommufd.destroy(n0.id()),
        Errno::BUSY,
        "destroy of an attached nested HWPT",
    )?;
    f.replace(n1.id())?;
    n0.destroy()?;
    f.replace(parent.id())?;
    n1.destroy()?;
    f.unplug()?;
    Ok(Outcome::Pass)
}

/// A fixture with a nest parent and one nested HWPT over it.
fn nested_fixture(iommufd: Arc<Iommufd>) -> Result<(Fixture, Arc<Hwpt>, NestedHwpt)> {
    let f = Fixture::new(iommufd, 0)?;
    let parent = f.parent()?;
    let n = parent.alloc_nested(f.idev(), NestedFlags::default(), None, &selftest_data())?;
    Ok((f, parent, n))
}

fn hwpt_invalidate_changes_the_mock_iotlb() -> TestResult {
    let (f, parent, n0) = nested_fixture(mock_or_skip!())?;
    let iommufd = &f.iommufd;
    let d = IOTLB_DEFAULT;
    handled(
        n0.invalidate::<HwptInvalidateSelftest>(&[]),
        0,
        None,
        "no entries (type probe)",
    )?;
    check_iotlb_all(iommufd, n0.id(), [d; 4])?;
    handled(n0.invalidate(&[inv(0, 0)]), 1, None, "slot 0")?;
    check_iotlb_all(iommufd, n0.id(), [0, d, d, d])?;
    handled(n0.invalidate(&[inv(0, 1)]), 1, None, "slot 1")?;
    check_iotlb_all(iommufd, n0.id(), [0, 0, d, d])?;
    handled(n0.invalidate(&[inv(0, 2), inv(0, 3)]), 2, None, "slots 2 and 3")?;
    check_iotlb_all(iommufd, n0.id(), [0; 4])?;
    let n1 = parent.alloc_nested(f.idev(), NestedFlags::default(), None, &selftest_data())?;
    check_iotlb_all(iommufd, n1.id(), [d; 4])?;
    handled(n1.invalidate(&[inv(INVALIDATE_FLAG_ALL, 0)]), 1, None, "all slots")?;
    check_iotlb_all(iommufd, n1.id(), [0; 4])?;
    f.unplug()?;
    Ok(Outcome::Pass)
}

fn hwpt_invalidate_reports_entries_handled() -> TestResult {
    let (f, _parent, n0) = nested_fixture(mock_or_skip!())?;
    let d = IOTLB_DEFAULT;
    handled(
        n0.invalidate(&[inv(0, 0), inv(0xffff_ffff, 1)]),
        1,
        Some(Errno::OPNOTSUPP),
        "second entry with unknown flags",
    )?;
    check_iotlb_all(&f.iommufd, n0.id(), [0, d, d, d])?;
    handled(
        n0.invalidate(&[inv(0, 1), inv(0, 4)]),
        1,
        Some(Errno::INVAL),
        "second entry with slot 4",
    )?;
    check_iotlb_all(&f.iommufd, n0.id(), [0, 0, d, d])?;
    // The typed answer: ok() drops the count of a failure and keeps it of a success.
    ensure!(n0.invalidate(&[inv(0, 2)]).ok()? == 1, "one entry handled");
    ensure!(n0.invalidate(&[inv(0, 9)]).ok().is_err(), "slot 9 accepted");
    f.unplug()?;
    Ok(Outcome::Pass)
}

fn hwpt_invalidate_bounds() -> TestResult {
    let (f, parent, n0) = nested_fixture(mock_or_skip!())?;
    let iommufd = &f.iommufd;
    let one = zerocopy::IntoBytes::as_bytes(&inv(0, 0)).to_vec();
    let big = vec![0u8; 8 * ((1 << 19) + 1)];
    let page = vec![0u8; 4097];
    let t = INVALIDATE_DATA_SELFTEST;
    handled(
        iommufd.invalidate_raw(parent.id(), t, 8, 1, &one),
        0,
        Some(Errno::INVAL),
        "a paging HWPT",
    )?;
    handled(
        iommufd.invalidate_raw(n0.id(), INVALIDATE_DATA_SELFTEST_INVALID, 8, 1, &one),
        0,
        Some(Errno::INVAL),
        "an invalid data type",
    )?;
    for len in [9, 1, 4097] {
        handled(
            iommufd.invalidate_raw(n0.id(), t, len, 1, &page),
            0,
            Some(Errno::INVAL),
            &format!("entry length {len}"),
        )?;
    }
    handled(
        iommufd.invalidate_raw(n0.id(), t, 0, 1, &one),
        0,
        Some(Errno::INVAL),
        "entry length 0",
    )?;
    handled(
        iommufd.invalidate_raw(n0.id(), t, 8, (1 << 19) + 1, &big),
        0,
        Some(Errno::INVAL),
        "2^19 + 1 entries",
    )?;
    handled(
        n0.invalidate(&[inv(0xffff_ffff, 0)]),
        0,
        Some(Errno::OPNOTSUPP),
        "unknown flags",
    )?;
    handled(n0.invalidate(&[inv(0, 4)]), 0, Some(Errno::INVAL), "slot 4")?;
    // The library refuses an array shorter than entry_len * entry_num before the kernel reads it.
    invalid(
        iommufd.invalidate_raw(n0.id(), t, 8, 2, &one).result,
        "2 entries of 8 bytes in 8 bytes",
    )?;
    check_iotlb_all(iommufd, n0.id(), [IOTLB_DEFAULT; 4])?;
    f.unplug()?;
    Ok(Outcome::Pass)
}

fn fault_queue_iopf_round_trip() -> TestResult {
    let f = Fixture::new(mock_or_skip!(), 0)?;
    let (iommufd, idev) = (&f.iommufd, f.idev());
    let fault = iommufd.alloc_fault_queue()?;
    // The fd is close-on-exec.
    let fdflags = rustix::io::fcntl_getfd(&*fault)?;
    ensure!(
        fdflags.contains(rustix::io::FdFlags::CLOEXEC),
        "fault fd without O_CLOEXEC"
    );
    let parent = f.parent()?;
    let iopf = parent.alloc_nested(idev, NestedFlags::default(), Some(&fault), &selftest_data())?;
    ensure!(iopf.fault_queue().is_some(), "nested HWPT forgot its fault queue");
    f.replace(iopf.id())?;
    refused(
        iommufd.destroy(iopf.id()),
        Errno::BUSY,
        "destroy of the attached IOPF HWPT",
    )?;
    ensure!(fault.read(4)?.is_empty(), "faults before any was raised");
    ensure!(
        !fault.wait(Some(Duration::from_millis(50)))?,
        "readable before any fault"
    );
    let rw = (FaultPerm::READ | FaultPerm::WRITE).0;
    trigger_iopf(iommufd, idev, 1, 2, rw, 0xdead_beaf)?;
    let faults = fault.read_timeout(4, Duration::from_secs(2))?;
    ensure!(faults.len() == 1, "{} faults: {faults:?}", faults.len());
    let flt = faults[0];
    println!("    fault: {flt:?}");
    ensure!(flt.dev == idev, "dev {} != {idev}", flt.dev);
    ensure!(flt.pasid == Some(1), "pasid {:?}", flt.pasid);
    ensure!(flt.grpid == 2 && flt.addr == 0xdead_beaf && flt.length == 0, "{flt:?}");
    ensure!(
        flt.perm.contains(FaultPerm::READ | FaultPerm::WRITE) && flt.perm.0 == 3,
        "perm {:?}",
        flt.perm
    );
    ensure!(flt.last_page && flt.flags == 3, "flags {:#x}", flt.flags);
    ensure!(flt.cookie.get() >= 1, "cookie {:?}", flt.cookie);
    ensure!(fault.read(4)?.is_empty(), "the fault was read twice");
    refused(
        fault.respond(
            vfio_cdev::FaultCookie(flt.cookie.get() + 100),
            PageResponseCode::Success,
        ),
        Errno::INVAL,
        "response to an unknown fault",
    )?;
    fault.respond(flt.cookie, PageResponseCode::Success)?;
    refused(
        fault.respond(flt.cookie, PageResponseCode::Success),
        Errno::INVAL,
        "second response to the same fault",
    )?;
    // read_one: a second fault through a record on the stack, then nothing left.
    trigger_iopf(iommufd, idev, 1, 2, rw, 0xdead_beaf)?;
    ensure!(fault.wait(Some(Duration::from_secs(2)))?, "no second fault within 2 s");
    let one = fault.read_one()?.ok_or("read_one found no fault")?;
    ensure!(
        one.dev == idev && one.pasid == Some(1) && one.grpid == 2 && one.addr == 0xdead_beaf && one.last_page,
        "read_one: {one:?}"
    );
    ensure!(fault.read_one()?.is_none(), "read_one read the fault twice");
    fault.respond(one.cookie, PageResponseCode::Success)?;
    refused(fault.write_raw(&[0u8; 7]), Errno::SPIPE, "write of 7 bytes")?;
    let mut small = [0u8; 39];
    refused(fault.read_raw(&mut small), Errno::SPIPE, "read of 39 bytes")?;
    refused(
        iommufd.destroy(fault.id()),
        Errno::BUSY,
        "destroy of the fault queue with its fd open",
    )?;
    f.replace(parent.id())?;
    iopf.destroy()?;
    f.unplug()?;
    // Dropping the queue closes its fd, then destroys it: no warning, nothing left.
    drop(fault);
    Ok(Outcome::Pass)
}

/// A fixture with a nest parent, a selftest vIOMMU over it and a nested HWPT of the vIOMMU.
fn viommu_fixture(iommufd: Arc<Iommufd>) -> Result<(Fixture, Arc<Hwpt>, Arc<Viommu>, NestedHwpt)> {
    let f = Fixture::new(iommufd, 0)?;
    let parent = f.parent()?;
    let viommu = Arc::new(parent.alloc_viommu(f.idev(), VIOMMU_TYPE_SELFTEST)?);
    let nested = viommu.alloc_nested(f.idev(), NestedFlags::default(), None, &selftest_data())?;
    Ok((f, parent, viommu, nested))
}

fn viommu_alloc_and_errors() -> TestResult {
    let f = Fixture::new(mock_or_skip!(), 0)?;
    let (iommufd, idev) = (&f.iommufd, f.idev());
    let parent = f.parent()?;
    let plain = Arc::new(iommufd.alloc_hwpt(idev, f.ioas.id(), HwptFlags::default())?);
    refused(
        plain.alloc_viommu(idev, VIOMMU_TYPE_SELFTEST),
        Errno::INVAL,
        "vIOMMU over a HWPT that is not a nest parent",
    )?;
    unsupported(parent.alloc_viommu(idev, 0xdead), "vIOMMU of an unknown type")?;
    unsupported(parent.alloc_viommu(idev, 0), "vIOMMU of type 0")?;
    refused(
        parent.alloc_viommu(DeviceId::from(0xdead), VIOMMU_TYPE_SELFTEST),
        Errno::NOENT,
        "vIOMMU for an unknown device",
    )?;
    let viommu = Arc::new(parent.alloc_viommu(idev, VIOMMU_TYPE_SELFTEST)?);
    ensure!(viommu.viommu_type() == VIOMMU_TYPE_SELFTEST, "type");
    refused(
        iommufd.destroy(parent.id()),
        Errno::BUSY,
        "destroy of the vIOMMU's parent",
    )?;
    let nested = viommu.alloc_nested(idev, NestedFlags::default(), None, &selftest_data())?;
    check_iotlb_all(iommufd, nested.id(), [IOTLB_DEFAULT; 4])?;
    refused(
        iommufd.destroy(viommu.id()),
        Errno::BUSY,
        "destroy of a vIOMMU with a nested HWPT",
    )?;
    let mut data = ViommuSelftest {
        in_data: 0xbeef,
        ..Default::default()
    };
    let v2 = parent.alloc_viommu_with(idev, &mut data)?;
    println!("    vIOMMU data written back: {data:?}");
    ensure!(
        data.out_data == 0xbeef,
        "out_data {:#x}, expected the in_data 0xbeef",
        data.out_data
    );
    // The mock's mmap window: only the exact range maps, and it reads in_data.
    let v2 = Arc::new(v2);
    let (off, len) = (data.out_mmap_offset, data.out_mmap_length);
    for (o, l, what) in [
        (off + 4096, len, "window + 4096"),
        (off + 8192, len, "window + 8192"),
        (off, len / 2, "half the window"),
        (off, len * 2, "twice the window"),
    ] {
        refused(v2.mmap(o, l), Errno::NXIO, &format!("mmap of {what}"))?;
    }
    let window = v2.mmap(off, len)?;
    ensure!(window.read32(0)? == 0xbeef, "window reads {:#x}", window.read32(0)?);
    invalid(window.read32(len as usize), "read past the window")?;
    refused(
        iommufd.destroy(v2.id()),
        Errno::BUSY,
        "destroy of a vIOMMU while mapped",
    )?;
    drop(window);
    Arc::into_inner(v2).ok_or("the vIOMMU is still shared")?.destroy()?;
    // Children hold their parents: drop order cannot hit the kernel's EBUSY.
    drop(viommu);
    drop(parent);
    drop(nested);
    f.unplug()?;
    Ok(Outcome::Pass)
}

fn vdevice_alloc_and_errors() -> TestResult {
    let (f, _parent, viommu, nested) = viommu_fixture(mock_or_skip!())?;
    let (iommufd, idev) = (&f.iommufd, f.idev());
    refused(
        f.replace(nested.id()),
        Errno::NOENT,
        "attach to a vIOMMU nested HWPT without a vDEVICE",
    )?;
    let vd = viommu.alloc_vdevice(idev, 0x99)?;
    ensure!(vd.virt_id() == 0x99 && vd.device() == idev, "{vd:?}");
    f.replace(nested.id())?;
    refused(
        viommu.alloc_vdevice(idev, 0x99),
        Errno::EXIST,
        "second vDEVICE, same virt id",
    )?;
    refused(
        viommu.alloc_vdevice(idev, 0x88),
        Errno::EXIST,
        "second vDEVICE for the device",
    )?;
    refused(
        viommu.alloc_vdevice(DeviceId::from(f.ioas.id().get()), 0x77),
        Errno::NOENT,
        "vDEVICE of an IOAS id",
    )?;
    f.replace(f.ioas.id())?;
    let md2 = mock::mock_domain(iommufd, f.ioas.id(), 0)?;
    refused(
        viommu.alloc_vdevice(md2.idev_id, 0x99),
        Errno::EXIST,
        "vDEVICE of another device with a taken virt id",
    )?;
    refused(
        iommufd.destroy(viommu.id()),
        Errno::BUSY,
        "destroy of a vIOMMU with vDEVICEs",
    )?;
    // Unplugging a device removes its vDEVICE: the later destroy is ENOENT (drop logs it at debug).
    let vd2 = viommu.alloc_vdevice(md2.idev_id, 0x88)?;
    iommufd.destroy(md2.stdev_id)?;
    refused(
        vd2.destroy(),
        Errno::NOENT,
        "destroy of a vDEVICE whose device was unplugged",
    )?;
    vd.destroy()?;
    let again = viommu.alloc_vdevice(idev, 0x99)?;
    drop(again);
    f.unplug()?;
    Ok(Outcome::Pass)
}

fn viommu_invalidate_dev_cache() -> TestResult {
    let (f, _parent, viommu, _nested) = viommu_fixture(mock_or_skip!())?;
    let (iommufd, idev) = (&f.iommufd, f.idev());
    let vd = viommu.alloc_vdevice(idev, 0x99)?;
    let d = DEV_CACHE_DEFAULT;
    check_dev_cache_all(iommufd, idev, [d; 4])?;
    handled(
        viommu.invalidate::<ViommuInvalidateSelftest>(&[]),
        0,
        None,
        "no entries",
    )?;
    let one = zerocopy::IntoBytes::as_bytes(&vinv(0, 0x99, 0)).to_vec();
    let page = vec![0u8; 64];
    handled(
        iommufd.invalidate_raw(viommu.id(), INVALIDATE_DATA_SELFTEST_INVALID, 12, 1, &one),
        0,
        Some(Errno::INVAL),
        "invalid data type",
    )?;
    for len in [13, 1, 0] {
        handled(
            iommufd.invalidate_raw(viommu.id(), INVALIDATE_DATA_SELFTEST, len, 1, &page),
            0,
            Some(Errno::INVAL),
            &format!("entry length {len}"),
        )?;
    }
    handled(
        viommu.invalidate(&[vinv(!0, 0x99, 0)]),
        0,
        Some(Errno::OPNOTSUPP),
        "unknown flags",
    )?;
    handled(viommu.invalidate(&[vinv(0, 0x99, 4)]), 0, Some(Errno::INVAL), "cache 4")?;
    handled(
        viommu.invalidate(&[vinv(0, 9, 0)]),
        0,
        Some(Errno::INVAL),
        "unknown vDEVICE",
    )?;
    check_dev_cache_all(iommufd, idev, [d; 4])?;
    handled(
        viommu.invalidate(&[vinv(0, 0x99, 0), vinv(!0, 0x99, 1)]),
        1,
        Some(Errno::OPNOTSUPP),
        "second entry with unknown flags",
    )?;
    check_dev_cache_all(iommufd, idev, [0, d, d, d])?;
    handled(
        viommu.invalidate(&[vinv(0, 0x99, 0), vinv(0, 0x99, 4)]),
        1,
        Some(Errno::INVAL),
        "second entry with cache 4",
    )?;
    handled(viommu.invalidate(&[vinv(0, 0x99, 1)]), 1, None, "cache 1")?;
    check_dev_cache_all(iommufd, idev, [0, 0, d, d])?;
    handled(
        viommu.invalidate(&[vinv(0, 0x99, 2), vinv(0, 0x99, 3)]),
        2,
        None,
        "caches 2 and 3",
    )?;
    check_dev_cache_all(iommufd, idev, [0; 4])?;
    handled(
        viommu.invalidate(&[vinv(INVALIDATE_FLAG_ALL, 0x99, 0)]),
        1,
        None,
        "all caches",
    )?;
    drop(vd);
    f.unplug()?;
    Ok(Outcome::Pass)
}

fn veventq_sequence_and_overflow() -> TestResult {
    let (f, _parent, viommu, nested) = viommu_fixture(mock_or_skip!())?;
    let (iommufd, idev) = (&f.iommufd, f.idev());
    invalid(viommu.alloc_veventq::<VeventSelftest>(0), "depth 0")?;
    invalid(viommu.alloc_veventq::<VeventSelftest>((1 << 19) + 1), "depth 2^19 + 1")?;
    drop(viommu.alloc_veventq::<VeventSelftest>(1 << 19)?);
    let mut q = viommu.alloc_veventq::<VeventSelftest>(2)?;
    let fdflags = rustix::io::fcntl_getfd(&q)?;
    ensure!(
        fdflags.contains(rustix::io::FdFlags::CLOEXEC),
        "vEVENTQ fd without O_CLOEXEC"
    );
    refused(
        viommu.alloc_veventq::<VeventSelftest>(2),
        Errno::EXIST,
        "second vEVENTQ of the type",
    )?;
    refused(q.read_raw(&mut []), Errno::INVAL, "read of 0 bytes")?;
    refused(q.read_raw(&mut [0u8; 7]), Errno::INVAL, "read of 7 bytes")?;
    ensure!(q.read(4)?.is_empty(), "events before any was raised");
    ensure!(!q.wait(Some(Duration::from_millis(50)))?, "readable before any event");
    let vd = viommu.alloc_vdevice(idev, 0x99)?;
    f.replace(nested.id())?;
    trigger_vevent(iommufd, idev)?;
    ensure!(q.wait(Some(Duration::from_secs(2)))?, "no event within 2 s");
    refused(
        q.read_raw(&mut [0u8; 8]),
        Errno::INVAL,
        "read of a header without room for its data",
    )?;
    let ev = q.read(4)?;
    println!("    read: {ev:?}");
    ensure!(
        ev == [Vevent::Event {
            sequence: 0,
            lost_before: 0,
            data: VeventSelftest { virt_id: 0x99 }
        }],
        "first event: {ev:?}"
    );
    ensure!(
        q.read_one()?.is_none(),
        "read_one found an event after the queue was read"
    );
    f.replace(f.ioas.id())?;
    vd.destroy()?;
    let vd = viommu.alloc_vdevice(idev, 0x88)?;
    f.replace(nested.id())?;
    for _ in 0..3 {
        trigger_vevent(iommufd, idev)?;
    }
    let ev = q.read_timeout(8, Duration::from_secs(2))?;
    println!("    read after 3 events into a depth-2 queue: {ev:?}");
    let data = VeventSelftest { virt_id: 0x88 };
    // The mock's event for vDEVICE 0x88, nothing lost before it.
    let event = |sequence| Vevent::Event {
        sequence,
        lost_before: 0,
        data,
    };
    ensure!(
        ev == [event(1), event(2), Vevent::Lost { sequence: 3, lost: 1 }],
        "overflow: {ev:?}"
    );
    trigger_vevent(iommufd, idev)?;
    let ev = q.read_timeout(8, Duration::from_secs(2))?;
    ensure!(ev == [event(4)], "after the overflow: {ev:?}");
    // read_one: one event through a record on the stack, sequence tracked as read's.
    trigger_vevent(iommufd, idev)?;
    ensure!(q.wait(Some(Duration::from_secs(2)))?, "no event within 2 s");
    let one = q.read_one()?;
    ensure!(one == Some(event(5)), "read_one: {one:?}");
    ensure!(q.read_one()?.is_none(), "read_one read the event twice");
    // read_one through an overflow: the events, then the lost-events marker (its cold path).
    for _ in 0..3 {
        trigger_vevent(iommufd, idev)?;
    }
    ensure!(q.wait(Some(Duration::from_secs(2)))?, "no event within 2 s");
    let got = [q.read_one()?, q.read_one()?, q.read_one()?, q.read_one()?];
    println!("    read_one after 3 events into a depth-2 queue: {got:?}");
    ensure!(
        got == [
            Some(event(6)),
            Some(event(7)),
            Some(Vevent::Lost { sequence: 8, lost: 1 }),
            None,
        ],
        "read_one through an overflow: {got:?}"
    );
    trigger_vevent(iommufd, idev)?;
    ensure!(q.wait(Some(Duration::from_secs(2)))?, "no event within 2 s");
    let one = q.read_one()?;
    ensure!(one == Some(event(9)), "read_one after the overflow: {one:?}");
    refused(
        iommufd.destroy(q.id()),
        Errno::BUSY,
        "destroy of the vEVENTQ with its fd open",
    )?;
    f.replace(f.ioas.id())?;
    drop(vd);
    drop(q);
    f.unplug()?;
    Ok(Outcome::Pass)
}

fn hw_queue_alloc_and_ordering() -> TestResult {
    let (a, b) = (DmaBuffer::new(4096)?, DmaBuffer::new(4096)?);
    let (f, _parent, viommu, _nested) = viommu_fixture(mock_or_skip!())?;
    let ioas = &f.ioas;
    // SAFETY: the buffers are declared before the fixture, so they outlive every mapping; only
    // the mock, which does no DMA, is attached.
    let iova = unsafe { ioas.map_raw(a.as_ptr(), 4096, IovaPlacement::Any, DmaAccess::READ_WRITE)? };
    // SAFETY: as above.
    let iova2 = unsafe { ioas.map_raw(b.as_ptr(), 4096, IovaPlacement::Any, DmaAccess::READ_WRITE)? };
    unsupported(viommu.alloc_hw_queue_raw(0, 0, iova, 4096), "HW queue of type 0")?;
    invalid(viommu.alloc_hw_queue::<HwQueueSelftest>(0, iova, 0), "length 0")?;
    invalid(
        viommu.alloc_hw_queue::<HwQueueSelftest>(0, !0, 4096),
        "range past the end",
    )?;
    let unmapped = if iova.max(iova2) < (1 << 30) { 1 << 30 } else { 1 << 25 };
    refused(
        viommu.alloc_hw_queue::<HwQueueSelftest>(0, unmapped, 4096),
        Errno::NOENT,
        "unmapped IOVA",
    )?;
    refused(
        viommu.alloc_hw_queue::<HwQueueSelftest>(1, iova, 4096),
        Errno::IO,
        "index 1 before 0",
    )?;
    refused(
        viommu.alloc_hw_queue::<HwQueueSelftest>(HW_QUEUE_MAX, iova, 4096),
        Errno::INVAL,
        "index past the mock's",
    )?;
    let q0 = viommu.alloc_hw_queue::<HwQueueSelftest>(0, iova, 4096)?;
    refused(
        viommu.alloc_hw_queue::<HwQueueSelftest>(0, iova, 4096),
        Errno::EXIST,
        "index 0 again",
    )?;
    refused(ioas.unmap(iova, 4096), Errno::BUSY, "unmap of a queue's memory")?;
    ioas.unmap(iova2, 4096)?;
    let q1 = viommu.alloc_hw_queue::<HwQueueSelftest>(1, iova + 2048, 2048)?;
    refused(
        f.iommufd.destroy(q0.id()),
        Errno::BUSY,
        "destroy of queue 0 before queue 1",
    )?;
    q1.destroy()?;
    q0.destroy()?;
    ioas.unmap(iova, 4096)?;
    f.unplug()?;
    Ok(Outcome::Pass)
}

fn pasid_attach_replace_detach() -> TestResult {
    let f = Fixture::new(mock_or_skip!(), MOCK_FLAGS_DEVICE_PASID)?;
    let (iommufd, idev, st) = (&f.iommufd, f.idev(), f.md.stdev_id);
    let np = mock::mock_domain(iommufd, f.ioas.id(), 0)?;
    ensure!(
        iommufd.hw_info(idev)?.max_pasid_log2 == MOCK_PASID_WIDTH,
        "PASID mock device without a 20-bit PASID width"
    );
    pasid_detach(iommufd, st, 100)?;
    let parent = f.parent()?;
    let pasid = NestedFlags { pasid: true };
    let data = selftest_data();
    let n0 = parent.alloc_nested(idev, pasid, None, &data)?;
    let n1 = parent.alloc_nested(idev, pasid, None, &data)?;
    let fault = iommufd.alloc_fault_queue()?;
    let iopf = parent.alloc_nested(idev, pasid, Some(&fault), &data)?;
    let s2 = iommufd.alloc_hwpt(
        idev,
        f.ioas.id(),
        HwptFlags {
            pasid: true,
            ..Default::default()
        },
    )?;
    // The RID on a non-PASID HWPT: no PASID attach.
    f.replace(parent.id())?;
    refused(
        pasid_attach(iommufd, st, 100, s2.id()),
        Errno::INVAL,
        "PASID attach with the RID on a non-PASID HWPT",
    )?;
    f.replace(s2.id())?;
    pasid_attach(iommufd, st, 100, n0.id())?;
    refused(
        f.replace(parent.id()),
        Errno::INVAL,
        "RID to a non-PASID HWPT while a PASID is attached",
    )?;
    pasid_detach(iommufd, st, 100)?;
    pasid_check(iommufd, st, 100, 0)?;
    // A device without PASID support.
    ops::mock_domain_replace(iommufd, np.stdev_id, n0.id())?;
    ops::mock_domain_replace(iommufd, np.stdev_id, f.ioas.id())?;
    refused(
        pasid_attach(iommufd, np.stdev_id, 100, s2.id()),
        Errno::INVAL,
        "PASID attach on a device without PASIDs",
    )?;
    // Attach and detach.
    refused(
        pasid_attach(iommufd, st, 100, parent.id()),
        Errno::INVAL,
        "PASID attach to a non-PASID HWPT",
    )?;
    pasid_check(iommufd, st, 100, 0)?;
    refused(
        pasid_attach(iommufd, st, 100, f.ioas.id()),
        Errno::INVAL,
        "PASID attach to an IOAS",
    )?;
    pasid_check(iommufd, st, 100, 0)?;
    pasid_attach(iommufd, st, 100, s2.id())?;
    pasid_check(iommufd, st, 100, s2.id().get())?;
    refused(
        pasid_attach(iommufd, st, 100, n0.id()),
        Errno::BUSY,
        "second attach of PASID 100",
    )?;
    pasid_detach(iommufd, st, 100)?;
    pasid_check(iommufd, st, 100, 0)?;
    pasid_attach(iommufd, st, 100, n0.id())?;
    pasid_check(iommufd, st, 100, n0.id().get())?;
    pasid_detach(iommufd, st, 100)?;
    // Replace.
    refused(
        pasid_replace(iommufd, st, 200, s2.id()),
        Errno::INVAL,
        "replace of a detached PASID",
    )?;
    pasid_attach(iommufd, st, 200, s2.id())?;
    refused(
        pasid_replace(iommufd, st, 200, f.ioas.id()),
        Errno::INVAL,
        "replace to an IOAS",
    )?;
    pasid_check(iommufd, st, 200, s2.id().get())?;
    pasid_replace(iommufd, st, 200, n0.id())?;
    pasid_check(iommufd, st, 200, n0.id().get())?;
    pasid_replace(iommufd, st, 200, n1.id())?;
    pasid_check(iommufd, st, 200, n1.id().get())?;
    pasid_detach(iommufd, st, 200)?;
    // A failed replace leaves the old HWPT in place.
    pasid_attach(iommufd, st, IOMMU_TEST_PASID_RESERVED, s2.id())?;
    refused(
        pasid_replace(iommufd, st, IOMMU_TEST_PASID_RESERVED, n0.id()),
        Errno::NOMEM,
        "replace of the rigged PASID",
    )?;
    pasid_check(iommufd, st, IOMMU_TEST_PASID_RESERVED, s2.id().get())?;
    pasid_detach(iommufd, st, IOMMU_TEST_PASID_RESERVED)?;
    // A fault on a PASID reaches the PASID's HWPT's fault queue.
    pasid_attach(iommufd, st, 2048, iopf.id())?;
    pasid_check(iommufd, st, 2048, iopf.id().get())?;
    trigger_iopf(
        iommufd,
        idev,
        2048,
        2,
        (FaultPerm::READ | FaultPerm::WRITE).0,
        0xdead_beaf,
    )?;
    let faults = fault.read_timeout(4, Duration::from_secs(2))?;
    ensure!(
        faults.len() == 1 && faults[0].pasid == Some(2048) && faults[0].flags == 3,
        "PASID fault: {faults:?}"
    );
    fault.respond(faults[0].cookie, PageResponseCode::Success)?;
    pasid_replace(iommufd, st, 2048, s2.id())?;
    pasid_detach(iommufd, st, 2048)?;
    iommufd.destroy(np.stdev_id)?;
    f.unplug()?;
    Ok(Outcome::Pass)
}

fn hw_info_typed() -> TestResult {
    let f = Fixture::new(mock_or_skip!(), 0)?;
    let iommufd = &f.iommufd;
    let info = iommufd.hw_info(f.idev())?;
    println!("    mock hw info: {info} (capabilities {:#x})", info.capabilities);
    let data = info
        .get::<HwInfoSelftest>()
        .ok_or_else(|| format!("not the selftest type: {info:?}"))?;
    ensure!(
        data.test_reg == HW_INFO_SELFTEST_REGVAL,
        "test_reg {:#x}",
        data.test_reg
    );
    ensure!(
        matches!(info.kind(), HwInfoKind::Other(HW_INFO_TYPE_SELFTEST)),
        "kind {:?}",
        info.kind()
    );
    ensure!(
        info.get::<iommufd_sys::iommu_hw_info_vtd>().is_none(),
        "the mock reads as VT-d"
    );
    ensure!(
        info.dirty_tracking() && info.max_pasid_log2 == 0 && !info.pasid(),
        "{info:?}"
    );
    let (_, typed) = iommufd.hw_info_as::<HwInfoSelftest>(f.idev())?;
    ensure!(typed.test_reg == HW_INFO_SELFTEST_REGVAL, "input-type reply {typed:?}");
    unsupported(
        iommufd.hw_info_of_type(f.idev(), HW_INFO_TYPE_SELFTEST + 1),
        "hw info of a type the mock does not have",
    )?;
    let p = mock::mock_domain(iommufd, f.ioas.id(), MOCK_FLAGS_DEVICE_PASID)?;
    let pinfo = iommufd.hw_info(p.idev_id)?;
    println!("    PASID mock hw info: {pinfo}");
    ensure!(pinfo.max_pasid_log2 == MOCK_PASID_WIDTH && pinfo.pasid(), "{pinfo:?}");
    iommufd.destroy(p.stdev_id)?;
    f.unplug()?;
    Ok(Outcome::Pass)
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()
}

fn fault_queue_async_under_tokio() -> TestResult {
    let f = Fixture::new(mock_or_skip!(), 0)?;
    let (iommufd, idev) = (f.iommufd.clone(), f.idev());
    let fault = iommufd.alloc_fault_queue()?;
    let parent = f.parent()?;
    let iopf = parent.alloc_nested(idev, NestedFlags::default(), Some(&fault), &selftest_data())?;
    f.replace(iopf.id())?;
    let rt = runtime()?;
    let got = rt.block_on(async {
        let q = vfio_cdev::AsyncFaultQueue::new(fault.clone())?;
        let early = tokio::time::timeout(Duration::from_millis(50), q.read(4)).await;
        ensure!(early.is_err(), "a fault before any was raised: {early:?}");
        trigger_iopf(&iommufd, idev, 0, 7, FaultPerm::READ.0, 0x1000)?;
        let faults = tokio::time::timeout(Duration::from_secs(2), q.read(4))
            .await
            .map_err(|_| "no fault within 2 s")??;
        Ok::<_, Box<dyn std::error::Error>>(faults)
    })?;
    println!("    awaited: {got:?}");
    ensure!(
        got.len() == 1 && got[0].grpid == 7 && got[0].pasid.is_none() && got[0].addr == 0x1000,
        "{got:?}"
    );
    fault.respond(got[0].cookie, PageResponseCode::Invalid)?;
    f.replace(parent.id())?;
    drop(iopf);
    f.unplug()?;
    Ok(Outcome::Pass)
}

fn veventq_async_under_tokio() -> TestResult {
    let (f, _parent, viommu, nested) = viommu_fixture(mock_or_skip!())?;
    let (iommufd, idev) = (f.iommufd.clone(), f.idev());
    let vd = viommu.alloc_vdevice(idev, 0x55)?;
    f.replace(nested.id())?;
    let q = viommu.alloc_veventq::<VeventSelftest>(8)?;
    let rt = runtime()?;
    let (q, got) = rt.block_on(async {
        let mut q = vfio_cdev::AsyncVeventq::new(q)?;
        let early = tokio::time::timeout(Duration::from_millis(50), q.read(4)).await;
        ensure!(early.is_err(), "an event before any was raised: {early:?}");
        trigger_vevent(&iommufd, idev)?;
        trigger_vevent(&iommufd, idev)?;
        let mut got = Vec::new();
        while got.len() < 2 {
            let ev = tokio::time::timeout(Duration::from_secs(2), q.read(4))
                .await
                .map_err(|_| "no event within 2 s")??;
            got.extend(ev);
        }
        Ok::<_, Box<dyn std::error::Error>>((q.into_inner(), got))
    })?;
    println!("    awaited: {got:?}");
    let data = VeventSelftest { virt_id: 0x55 };
    ensure!(
        got == [
            Vevent::Event {
                sequence: 0,
                lost_before: 0,
                data
            },
            Vevent::Event {
                sequence: 1,
                lost_before: 0,
                data
            }
        ],
        "{got:?}"
    );
    f.replace(f.ioas.id())?;
    drop(q);
    drop(vd);
    f.unplug()?;
    Ok(Outcome::Pass)
}

/// The edu device bound by cdev to `iommufd`, or why not.
fn bind_edu(iommufd: &Arc<Iommufd>) -> std::result::Result<vfio_cdev::BoundDevice, String> {
    let addr = vfio_tests::device_from_env("VFIO_TEST_EDU")?;
    let modes = vfio_core::detect();
    if !modes.cdev && !modes.cdev_noiommu {
        return Err(format!("the cdev interface is not offered by this kernel ({modes:?})"));
    }
    vfio_cdev::UnboundDevice::open(&vfio_core::Sysfs::default(), &addr)
        .and_then(|d| d.bind(iommufd))
        .map_err(|e| format!("cannot bind edu by cdev: {e}"))
}

/// Whether the intel-iommu driver runs (`/sys/class/iommu/dmar*`).
fn intel_iommu() -> bool {
    std::fs::read_dir("/sys/class/iommu")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .any(|e| e.file_name().to_string_lossy().starts_with("dmar"))
        })
        .unwrap_or(false)
}

fn hw_info_of_a_real_device() -> TestResult {
    let iommufd = match Iommufd::open() {
        Ok(i) => i,
        Err(e) => return skip(format!("no iommufd: {e}")),
    };
    let edu = match bind_edu(&iommufd) {
        Ok(d) => d,
        Err(why) => return skip(why),
    };
    if edu.is_noiommu() {
        // No IOMMU behind the device: the kernel has nothing to report.
        unsupported(edu.hw_info(), "hw info of a no-IOMMU device")?;
        return Ok(Outcome::Pass);
    }
    let info = edu.hw_info()?;
    println!("    edu hw info: {info} (capabilities {:#x})", info.capabilities);
    match info.kind() {
        HwInfoKind::IntelVtd(v) => {
            ensure!(v.cap_reg != 0 && v.ecap_reg != 0, "VT-d registers zero: {v:?}");
            let (_, typed) = iommufd.hw_info_as::<iommufd_sys::iommu_hw_info_vtd>(edu.devid())?;
            ensure!(
                typed.cap_reg == v.cap_reg,
                "input-type reply {typed:?} differs from {v:?}"
            );
            unsupported(
                iommufd.hw_info_as::<HwInfoSelftest>(edu.devid()),
                "hw info of the mock's type from VT-d",
            )?;
        }
        HwInfoKind::None => {
            ensure!(!intel_iommu(), "intel-iommu runs, but the device reports no VT-d info");
            ensure!(info.data.is_empty(), "type NONE with {} bytes of data", info.data.len());
        }
        other => return Err(format!("unexpected IOMMU kind on a QEMU guest: {other:?}").into()),
    }
    ensure!(
        intel_iommu() == matches!(info.kind(), HwInfoKind::IntelVtd(_)),
        "IOMMU kind {:?} does not match /sys/class/iommu",
        info.kind()
    );
    Ok(Outcome::Pass)
}

fn viommu_unsupported_on_a_real_iommu() -> TestResult {
    let iommufd = match Iommufd::open() {
        Ok(i) => i,
        Err(e) => return skip(format!("no iommufd: {e}")),
    };
    let edu = match bind_edu(&iommufd) {
        Ok(d) => d,
        Err(why) => return skip(why),
    };
    if edu.is_noiommu() {
        return skip("no-IOMMU device: no IOMMU driver to ask for a vIOMMU");
    }
    let ioas = iommufd.alloc_ioas()?;
    // A nest parent where the IOMMU offers one, else a plain HWPT: the driver is asked for its
    // vIOMMU ops before the HWPT is looked at.
    let nest = HwptFlags {
        nest_parent: true,
        ..Default::default()
    };
    let hwpt = match iommufd.alloc_hwpt(edu.devid(), ioas.id(), nest) {
        Ok(h) => h,
        Err(e) => {
            println!("    no nest parent on this IOMMU ({e}); asking over a plain HWPT");
            iommufd.alloc_hwpt(edu.devid(), ioas.id(), HwptFlags::default())?
        }
    };
    let hwpt = Arc::new(hwpt);
    unsupported(
        hwpt.alloc_viommu(edu.devid(), iommufd_sys::IOMMU_VIOMMU_TYPE_ARM_SMMUV3),
        "SMMUv3 vIOMMU",
    )?;
    unsupported(
        hwpt.alloc_viommu(edu.devid(), VIOMMU_TYPE_SELFTEST),
        "the mock's vIOMMU type",
    )?;
    drop(hwpt);
    drop(ioas);
    Ok(Outcome::Pass)
}

fn vdevice_of_a_device_behind_another_iommu() -> TestResult {
    let (f, _parent, viommu, _nested) = viommu_fixture(mock_or_skip!())?;
    let edu = match bind_edu(&f.iommufd) {
        Ok(d) => d,
        Err(why) => return skip(why),
    };
    refused(
        viommu.alloc_vdevice(edu.devid(), 0x42),
        Errno::INVAL,
        "vDEVICE of edu on the mock's vIOMMU",
    )?;
    drop(edu);
    f.unplug()?;
    Ok(Outcome::Pass)
}

/// Counts (and prints) the warnings vfio-rs logs: every failed destroy or close on drop is one.
struct WarnCounter;

static WARNINGS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl log::Log for WarnCounter {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::Level::Warn
    }

    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            WARNINGS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            println!("    logged {} ({}): {}", r.level(), r.target(), r.args());
        }
    }

    fn flush(&self) {}
}

/// Runs last: no test above logged a warning, i.e. every object was destroyed on drop without
/// the kernel refusing (children hold their parents, queues close their fd before the destroy).
fn drops_logged_no_warnings() -> TestResult {
    let n = WARNINGS.load(std::sync::atomic::Ordering::Relaxed);
    ensure!(
        n == 0,
        "{n} warnings logged by the tests above (printed where they happened)"
    );
    Ok(Outcome::Pass)
}

fn main() -> ExitCode {
    if log::set_logger(&WarnCounter).is_ok() {
        log::set_max_level(log::LevelFilter::Warn);
    }
    vfio_tests::run(&[
        ("hwpt_nested_over_nest_parent", hwpt_nested_over_nest_parent),
        (
            "hwpt_invalidate_changes_the_mock_iotlb",
            hwpt_invalidate_changes_the_mock_iotlb,
        ),
        (
            "hwpt_invalidate_reports_entries_handled",
            hwpt_invalidate_reports_entries_handled,
        ),
        ("hwpt_invalidate_bounds", hwpt_invalidate_bounds),
        ("fault_queue_iopf_round_trip", fault_queue_iopf_round_trip),
        ("fault_queue_async_under_tokio", fault_queue_async_under_tokio),
        ("viommu_alloc_and_errors", viommu_alloc_and_errors),
        ("vdevice_alloc_and_errors", vdevice_alloc_and_errors),
        ("viommu_invalidate_dev_cache", viommu_invalidate_dev_cache),
        ("veventq_sequence_and_overflow", veventq_sequence_and_overflow),
        ("veventq_async_under_tokio", veventq_async_under_tokio),
        ("hw_queue_alloc_and_ordering", hw_queue_alloc_and_ordering),
        ("pasid_attach_replace_detach", pasid_attach_replace_detach),
        ("hw_info_typed", hw_info_typed),
        ("hw_info_of_a_real_device", hw_info_of_a_real_device),
        ("viommu_unsupported_on_a_real_iommu", viommu_unsupported_on_a_real_iommu),
        (
            "vdevice_of_a_device_behind_another_iommu",
            vdevice_of_a_device_behind_another_iommu,
        ),
        ("drops_logged_no_warnings", drops_logged_no_warnings),
    ])
}
