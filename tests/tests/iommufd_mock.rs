//! IOAS semantics on `/dev/iommu` without a device: the kernel's selftest mock domain
//! (`IOMMU_TEST_CMD`, `CONFIG_IOMMUFD_TEST`) stands in for an IOMMU where a domain matters.
//! Each test skips with the reason when `/dev/iommu` or the selftest interface is missing.

use std::os::fd::AsFd;
use std::process::ExitCode;
use std::sync::Arc;

use vfio_cdev::{DeviceId, HwptFlags, Ioas, IoasId, Iommufd, IovaPlacement, ObjectId};
use vfio_core::{DmaAccess, DmaBuffer, Errno, Error, IovaRange, Result};
use vfio_tests::iommufd_mock::{self as mock, MOCK_APERTURE_LAST, MOCK_APERTURE_START};
use vfio_tests::{Outcome, TestResult, ensure, skip};

const PAGE: u64 = 4096;

macro_rules! mock_or_skip {
    () => {
        match mock::open() {
            Ok(fd) => fd,
            Err(why) => return skip(why),
        }
    };
}

/// Maps `buf` (whole) in `ioas`.
fn map(ioas: &Ioas, buf: &DmaBuffer, at: IovaPlacement) -> Result<u64> {
    // SAFETY: every test keeps `buf` alive until its IOAS is gone (buffers are declared before
    // the iommufd, so they drop after it), and nothing but the mock domain, which does no DMA,
    // is attached.
    unsafe { ioas.map_raw(buf.as_ptr(), buf.len() as u64, at, DmaAccess::READ_WRITE) }
}

fn bytes(buf: &DmaBuffer) -> &[u8] {
    // SAFETY: the buffer is only read by the kernel's CHECK_MAP (no DMA writes it), so a shared
    // view of its initialized bytes for the call is sound.
    unsafe { std::slice::from_raw_parts(buf.as_ptr(), buf.len()) }
}

fn expect_errno<T: std::fmt::Debug>(res: Result<T>, want: Errno, what: &str) -> TestResult {
    match res {
        Ok(v) => Err(format!("{what}: succeeded ({v:?}), expected {want:?}").into()),
        Err(e) if e.errno() == Some(want) => {
            println!("    {what}: refused as expected: {e}");
            Ok(Outcome::Pass)
        }
        Err(e) => Err(format!("{what}: failed with {e}, expected {want:?}").into()),
    }
}

fn ioas_with_domain(iommufd: &Arc<Iommufd>) -> Result<(Ioas, mock::MockDomain)> {
    let ioas = iommufd.alloc_ioas()?;
    let md = mock::mock_domain(iommufd, ioas.id(), 0)?;
    Ok((ioas, md))
}

fn overlap_is_eexist() -> TestResult {
    let (a, b) = (DmaBuffer::new(2 * PAGE as usize)?, DmaBuffer::new(2 * PAGE as usize)?);
    let iommufd = mock_or_skip!();
    let (ioas, _md) = ioas_with_domain(&iommufd)?;
    let x = MOCK_APERTURE_START;
    map(&ioas, &a, IovaPlacement::Fixed(x))?;
    expect_errno(
        map(&ioas, &b, IovaPlacement::Fixed(x + PAGE)),
        Errno::EXIST,
        "overlapping fixed map",
    )
}

fn unmap_hole_is_enoent() -> TestResult {
    let a = DmaBuffer::new(PAGE as usize)?;
    let iommufd = mock_or_skip!();
    let (ioas, _md) = ioas_with_domain(&iommufd)?;
    map(&ioas, &a, IovaPlacement::Fixed(MOCK_APERTURE_START))?;
    expect_errno(
        ioas.unmap(MOCK_APERTURE_START + 0x10_0000, PAGE),
        Errno::NOENT,
        "unmap of a hole",
    )
}

fn splitting_a_mapping_is_refused() -> TestResult {
    let a = DmaBuffer::new(2 * PAGE as usize)?;
    let iommufd = mock_or_skip!();
    let (ioas, _md) = ioas_with_domain(&iommufd)?;
    let x = MOCK_APERTURE_START;
    map(&ioas, &a, IovaPlacement::Fixed(x))?;
    expect_errno(ioas.unmap(x, PAGE), Errno::NOENT, "unmap of half a mapping")?;
    expect_errno(ioas.unmap(x + PAGE, PAGE), Errno::NOENT, "unmap of the other half")?;
    let n = ioas.unmap(x, 2 * PAGE)?;
    ensure!(n == 2 * PAGE, "whole unmap returned {n:#x}");
    Ok(Outcome::Pass)
}

fn unmap_all() -> TestResult {
    let (a, b) = (DmaBuffer::new(PAGE as usize)?, DmaBuffer::new(2 * PAGE as usize)?);
    let iommufd = mock_or_skip!();
    let (ioas, _md) = ioas_with_domain(&iommufd)?;
    let n = ioas.unmap_all()?;
    ensure!(n == 0, "unmap_all of an empty IOAS returned {n:#x}");
    map(&ioas, &a, IovaPlacement::Any)?;
    map(&ioas, &b, IovaPlacement::Any)?;
    let n = ioas.unmap_all()?;
    ensure!(n == 3 * PAGE, "unmap_all returned {n:#x}, expected {:#x}", 3 * PAGE);
    ensure!(ioas.unmap_all()? == 0, "second unmap_all found mappings");
    Ok(Outcome::Pass)
}

fn auto_iova_inside_allowed_ranges() -> TestResult {
    let bufs = [
        DmaBuffer::new(PAGE as usize)?,
        DmaBuffer::new(4 * PAGE as usize)?,
        DmaBuffer::new(PAGE as usize)?,
    ];
    let iommufd = mock_or_skip!();
    let (ioas, md) = ioas_with_domain(&iommufd)?;
    let allowed = IovaRange {
        start: MOCK_APERTURE_START + 0x100_0000,
        last: MOCK_APERTURE_START + 0x100_0000 + 16 * PAGE - 1,
    };
    ensure!(
        allowed.last <= MOCK_APERTURE_LAST,
        "test range outside the mock aperture"
    );
    ioas.allow_iovas(&[allowed])?;
    for buf in &bufs {
        let iova = map(&ioas, buf, IovaPlacement::Any)?;
        let end = iova + buf.len() as u64 - 1;
        ensure!(
            iova >= allowed.start && end <= allowed.last,
            "kernel placed {iova:#x}..={end:#x} outside {allowed:x?}"
        );
        mock::check_map(&iommufd, md.hwpt_id, iova, bytes(buf))?;
    }
    // 6 of the 16 allowed pages are taken: 12 more do not fit.
    let big = DmaBuffer::new(12 * PAGE as usize)?;
    expect_errno(
        map(&ioas, &big, IovaPlacement::Any),
        Errno::NOSPC,
        "auto map larger than the room left",
    )?;
    ioas.unmap_all()?;
    Ok(Outcome::Pass)
}

fn copy_between_ioases() -> TestResult {
    let buf = DmaBuffer::new(2 * PAGE as usize)?;
    buf.fill(0x5a);
    let iommufd = mock_or_skip!();
    let src = iommufd.alloc_ioas()?;
    let (dst, md) = ioas_with_domain(&iommufd)?;
    let src_iova = map(&src, &buf, IovaPlacement::Any)?;
    // SAFETY: as for `map`: `buf` outlives both IOASes, and only the mock domain is attached.
    let dst_iova = unsafe {
        dst.copy_from(
            &src,
            src_iova,
            buf.len() as u64,
            IovaPlacement::Any,
            DmaAccess::READ_WRITE,
        )?
    };
    mock::check_map(&iommufd, md.hwpt_id, dst_iova, bytes(&buf))?;
    // The copy outlives the source mapping.
    src.unmap_all()?;
    mock::check_map(&iommufd, md.hwpt_id, dst_iova, bytes(&buf))?;
    expect_errno(
        // SAFETY: nothing is mapped at the source any more: the kernel copies nothing.
        unsafe { dst.copy_from(&src, src_iova, buf.len() as u64, IovaPlacement::Any, DmaAccess::READ) },
        Errno::NOENT,
        "copy of an unmapped source",
    )?;
    let other = Iommufd::open()?.alloc_ioas()?;
    // SAFETY: refused before any ioctl (the IOASes live in different iommufds).
    match unsafe { dst.copy_from(&other, 0, PAGE, IovaPlacement::Any, DmaAccess::READ) } {
        Err(Error::InvalidArgument { .. }) => {}
        r => return Err(format!("copy across iommufds: {r:?}, expected InvalidArgument").into()),
    }
    println!(
        "    copied ioas {} iova {src_iova:#x} -> ioas {} iova {dst_iova:#x}",
        src.id(),
        dst.id()
    );
    Ok(Outcome::Pass)
}

fn options() -> TestResult {
    let buf = DmaBuffer::new(PAGE as usize)?;
    let iommufd = match Iommufd::open() {
        Ok(fd) => fd,
        Err(e) => return skip(format!("no iommufd: {e}")),
    };
    ensure!(
        !iommufd.rlimit_per_process()?,
        "fresh iommufd does not account per user"
    );
    match iommufd.set_rlimit_per_process(true) {
        Err(e) if e.errno() == Some(Errno::PERM) => return skip(format!("no CAP_SYS_RESOURCE: {e}")),
        r => r?,
    }
    ensure!(
        iommufd.rlimit_per_process()?,
        "RLIMIT mode did not switch to per process"
    );
    let ioas = iommufd.alloc_ioas()?;
    ensure!(ioas.huge_pages()?, "huge pages are not on by default");
    ioas.set_huge_pages(false)?;
    ensure!(!ioas.huge_pages()?, "huge pages still on after set_huge_pages(false)");
    map(&ioas, &buf, IovaPlacement::Any)?;
    expect_errno(
        iommufd.set_rlimit_per_process(false),
        Errno::BUSY,
        "RLIMIT mode change with objects allocated",
    )?;
    ioas.unmap_all()?;
    Ok(Outcome::Pass)
}

fn map_file_from_memfd() -> TestResult {
    let iommufd = mock_or_skip!();
    let (ioas, _md) = ioas_with_domain(&iommufd)?;
    let memfd = rustix::fs::memfd_create("vfio-rs-map-file", rustix::fs::MemfdFlags::CLOEXEC)?;
    rustix::fs::ftruncate(&memfd, 4 * PAGE)?;
    let iova = match ioas.map_file(memfd.as_fd(), PAGE, 2 * PAGE, IovaPlacement::Any, DmaAccess::READ_WRITE) {
        Ok(iova) => iova,
        Err(e @ Error::Unsupported { .. }) => return skip(e.to_string()),
        Err(e) => return Err(e.into()),
    };
    let n = ioas.unmap(iova, 2 * PAGE)?;
    ensure!(n == 2 * PAGE, "unmap of the file mapping returned {n:#x}");
    match ioas.map_file(memfd.as_fd(), 0, 8 * PAGE, IovaPlacement::Any, DmaAccess::READ) {
        Ok(iova) => Err(format!("map_file past the end of the memfd succeeded at {iova:#x}").into()),
        Err(e) => {
            println!("    map_file past the end of the memfd refused: {e}");
            Ok(Outcome::Pass)
        }
    }
}

/// `IOMMU_HW_INFO_TYPE_SELFTEST` and the register value the mock reports.
const HW_INFO_TYPE_SELFTEST: u32 = 0xfeed_beef;
const HW_INFO_SELFTEST_REGVAL: u32 = 0xdead_beef;
/// `MOCK_FLAGS_DEVICE_NO_DIRTY`: a mock device whose IOMMU cannot track dirty pages.
const MOCK_DEVICE_NO_DIRTY: u32 = 1;

fn hw_info_of_mock_device() -> TestResult {
    let iommufd = mock_or_skip!();
    let ioas = iommufd.alloc_ioas()?;
    let md = mock::mock_domain(&iommufd, ioas.id(), 0)?;
    let info = iommufd.hw_info(md.idev_id)?;
    ensure!(
        info.data_type == HW_INFO_TYPE_SELFTEST,
        "data type {:#x}",
        info.data_type
    );
    ensure!(
        info.data.len() == 8,
        "{} bytes of info data, expected 8",
        info.data.len()
    );
    let reg = u32::from_ne_bytes([info.data[4], info.data[5], info.data[6], info.data[7]]);
    ensure!(reg == HW_INFO_SELFTEST_REGVAL, "test_reg {reg:#x}");
    ensure!(
        info.dirty_tracking(),
        "mock IOMMU does not report dirty tracking: {info:?}"
    );
    let nodirty = mock::mock_domain(&iommufd, ioas.id(), MOCK_DEVICE_NO_DIRTY)?;
    ensure!(
        !iommufd.hw_info(nodirty.idev_id)?.dirty_tracking(),
        "NO_DIRTY mock device reports dirty tracking"
    );
    expect_errno(
        iommufd.hw_info(DeviceId::from(0xdead)),
        Errno::NOENT,
        "hw_info of an unknown device",
    )
}

fn hwpt_alloc_flags() -> TestResult {
    let iommufd = mock_or_skip!();
    let ioas = iommufd.alloc_ioas()?;
    let md = mock::mock_domain(&iommufd, ioas.id(), 0)?;
    for flags in [
        HwptFlags::default(),
        HwptFlags {
            nest_parent: true,
            ..Default::default()
        },
        HwptFlags {
            dirty_tracking: true,
            ..Default::default()
        },
    ] {
        let hwpt = iommufd.alloc_hwpt(md.idev_id, ioas.id(), flags)?;
        // A second mock device can be attached to it.
        let other = mock::mock_domain(&iommufd, hwpt.id(), 0)?;
        ensure!(
            other.hwpt_id == hwpt.id(),
            "mock device attached to {} not {}",
            other.hwpt_id,
            hwpt.id()
        );
        iommufd.destroy(other.stdev_id)?;
    }
    // Dirty tracking on an IOMMU without it is a clean Unsupported.
    let nodirty = mock::mock_domain(&iommufd, ioas.id(), MOCK_DEVICE_NO_DIRTY)?;
    match iommufd.alloc_hwpt(
        nodirty.idev_id,
        ioas.id(),
        HwptFlags {
            dirty_tracking: true,
            ..Default::default()
        },
    ) {
        Err(e @ Error::Unsupported { .. }) => println!("    refused as expected: {e}"),
        r => return Err(format!("dirty-tracking HWPT for a NO_DIRTY device: {r:?}").into()),
    }
    // A plain HWPT refuses dirty tracking.
    let plain = iommufd.alloc_hwpt(md.idev_id, ioas.id(), HwptFlags::default())?;
    match plain.set_dirty_tracking(true) {
        Err(Error::Unsupported { .. })
        | Err(Error::Kernel {
            errno: Errno::INVAL, ..
        }) => {}
        r => return Err(format!("set_dirty_tracking on a plain HWPT: {r:?}").into()),
    }
    expect_errno(
        iommufd.alloc_hwpt(md.idev_id, IoasId::from(0xdead), HwptFlags::default()),
        Errno::INVAL,
        "HWPT from an unknown IOAS",
    )?;
    Ok(Outcome::Pass)
}

fn dirty_tracking_reports_written_pages() -> TestResult {
    const PAGES: u64 = 128;
    let buf = DmaBuffer::new((PAGES * PAGE) as usize)?;
    let iommufd = mock_or_skip!();
    let ioas = iommufd.alloc_ioas()?;
    // One dirty bit per 4 KiB PTE, even where the buffer happens to be physically contiguous
    // (the mock domain tracks dirtiness per PTE, and maps 4 KiB PTEs without huge pages).
    ioas.set_huge_pages(false)?;
    let md = mock::mock_domain(&iommufd, ioas.id(), 0)?;
    let iova = map(&ioas, &buf, IovaPlacement::Fixed(MOCK_APERTURE_START))?;
    let len = PAGES * PAGE;
    let hwpt = iommufd.alloc_hwpt(
        md.idev_id,
        ioas.id(),
        HwptFlags {
            dirty_tracking: true,
            ..Default::default()
        },
    )?;
    let dev = mock::mock_domain(&iommufd, hwpt.id(), 0)?;
    hwpt.set_dirty_tracking(true)?;
    let clean = hwpt.dirty_bitmap(iova, len, PAGE, true)?;
    ensure!(clean.iter().all(|&w| w == 0), "dirty bits before any write: {clean:x?}");

    // The "device" writes pages 0, 5, 63, 64 and 127.
    let written = [0u64, 5, 63, 64, 127];
    let mut want = vec![0u64; (PAGES as usize).div_ceil(64)];
    for p in written {
        want[(p / 64) as usize] |= 1 << (p % 64);
    }
    let n = mock::set_dirty(&iommufd, hwpt.id(), iova, len, PAGE, &want)?;
    ensure!(n == written.len() as u64, "mock marked {n} pages");
    let kept = hwpt.dirty_bitmap(iova, len, PAGE, false)?;
    ensure!(kept == want, "dirty bitmap {kept:x?}, expected {want:x?}");
    let read = hwpt.dirty_bitmap(iova, len, PAGE, true)?;
    ensure!(
        read == want,
        "NO_CLEAR read cleared the bits: {read:x?}, expected {want:x?}"
    );
    let after = hwpt.dirty_bitmap(iova, len, PAGE, true)?;
    ensure!(
        after.iter().all(|&w| w == 0),
        "bits survived a clearing read: {after:x?}"
    );
    match hwpt.dirty_bitmap(iova + 1, len, 3, true) {
        Err(Error::InvalidArgument { .. }) => {}
        r => return Err(format!("bitmap with page size 3: {r:?}").into()),
    }
    hwpt.set_dirty_tracking(false)?;
    iommufd.destroy(dev.stdev_id)?;
    println!("    dirty pages {written:?} of {PAGES} reported exactly, then cleared");
    drop(hwpt);
    ioas.unmap_all()?;
    Ok(Outcome::Pass)
}

fn vfio_compat_ioas_get_set_clear() -> TestResult {
    let iommufd = match Iommufd::open() {
        Ok(fd) => fd,
        Err(e) => return skip(format!("no iommufd: {e}")),
    };
    ensure!(iommufd.vfio_compat_ioas()?.is_none(), "fresh iommufd has a compat IOAS");
    let (a, b) = (iommufd.alloc_ioas()?, iommufd.alloc_ioas()?);
    iommufd.set_vfio_compat_ioas(&a)?;
    ensure!(
        iommufd.vfio_compat_ioas()? == Some(a.id()),
        "compat IOAS is not {}",
        a.id()
    );
    iommufd.set_vfio_compat_ioas(&b)?;
    ensure!(
        iommufd.vfio_compat_ioas()? == Some(b.id()),
        "compat IOAS is not {}",
        b.id()
    );
    iommufd.clear_vfio_compat_ioas()?;
    ensure!(iommufd.vfio_compat_ioas()?.is_none(), "compat IOAS survived CLEAR");
    let other = Iommufd::open()?.alloc_ioas()?;
    match iommufd.set_vfio_compat_ioas(&other) {
        Err(Error::InvalidArgument { .. }) => Ok(Outcome::Pass),
        r => Err(format!("compat IOAS from another iommufd: {r:?}").into()),
    }
}

fn iommufd_adopted_from_fd() -> TestResult {
    let buf = DmaBuffer::new(PAGE as usize)?;
    let iommufd = mock_or_skip!();
    let ioas = iommufd.alloc_ioas()?;
    let _md = mock::mock_domain(&iommufd, ioas.id(), 0)?;
    let iova = map(&ioas, &buf, IovaPlacement::Any)?;
    // Another handle on the same open file (as received over a socket) sees the same objects.
    let adopted = Iommufd::from_fd(rustix::io::fcntl_dupfd_cloexec(&*iommufd, 0)?);
    let flags = rustix::io::fcntl_getfd(&*adopted)?;
    ensure!(
        flags.contains(rustix::io::FdFlags::CLOEXEC),
        "adopted fd is not close-on-exec"
    );
    let n = adopted.destroy(ObjectId::from(0xdead));
    ensure!(n.is_err(), "destroy of an unknown id succeeded");
    let adopted_ioas = adopted.alloc_ioas()?;
    adopted.set_vfio_compat_ioas(&adopted_ioas)?;
    ensure!(
        iommufd.vfio_compat_ioas()? == Some(adopted_ioas.id()),
        "the compat IOAS set through the adopted fd is not visible through the original"
    );
    ensure!(ioas.unmap(iova, PAGE)? == PAGE, "mapping not found");
    Ok(Outcome::Pass)
}

fn main() -> ExitCode {
    vfio_tests::run(&[
        ("ioas_overlap_is_eexist", overlap_is_eexist),
        ("ioas_unmap_hole_is_enoent", unmap_hole_is_enoent),
        ("ioas_splitting_a_mapping_is_refused", splitting_a_mapping_is_refused),
        ("ioas_unmap_all", unmap_all),
        ("ioas_auto_iova_inside_allowed_ranges", auto_iova_inside_allowed_ranges),
        ("ioas_copy_between_ioases", copy_between_ioases),
        ("ioas_options", options),
        ("ioas_map_file_from_memfd", map_file_from_memfd),
        ("hw_info_of_mock_device", hw_info_of_mock_device),
        ("hwpt_alloc_flags", hwpt_alloc_flags),
        (
            "hwpt_dirty_tracking_reports_written_pages",
            dirty_tracking_reports_written_pages,
        ),
        ("vfio_compat_ioas_get_set_clear", vfio_compat_ioas_get_set_clear),
        ("iommufd_adopted_from_fd", iommufd_adopted_from_fd),
    ])
}
