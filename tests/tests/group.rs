//! The legacy group/container API: containers (adopted fds, chosen IOMMU type, GET_INFO,
//! backend), the type1 DMA errno contracts for type1 and type1v2 on both the type1 driver
//! (variant a) and iommufd's compatibility container (variant b), device-enforced read-only
//! mappings, several groups and containers, the deprecated group-only API, and no-IOMMU DMA by
//! physical address.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use vfio_core::{Container as _, DmaAccess, DmaBuffer, DmaMapping, Errno, EventFd, PciAddress, Sysfs};
use vfio_group::{Backend, Container, IommuType};
use vfio_pci::PciDevice;
use vfio_tests::edu::{Direction, EDU_BUF, EDU_MAX_DMA, Edu, reg};
use vfio_tests::{Outcome, TestResult, device_from_env, ensure, skip};

const PAGE: u64 = 0x1000;

/// The edu address and an IOMMU container set to `ty`, or why not.
fn setup(ty: IommuType) -> Result<(PciAddress, Container), String> {
    let addr = device_from_env("VFIO_TEST_EDU")?;
    let modes = vfio_core::detect();
    if !modes.group {
        return Err(format!(
            "group mode with an IOMMU is not offered by this kernel ({modes:?})"
        ));
    }
    let c = Container::open(vfio_core::Addressing::Iova).map_err(|e| e.to_string())?;
    match c.set_iommu(ty) {
        Ok(()) => Ok((addr, c)),
        Err(e @ vfio_core::Error::Unsupported { .. }) => Err(e.to_string()),
        Err(e) => Err(format!("unexpected set_iommu error: {e}")),
    }
}

macro_rules! setup_or_skip {
    ($ty:expr) => {
        match setup($ty) {
            Ok(x) => x,
            Err(why) => return skip(why),
        }
    };
}

/// The errno of a failed call, or a description of the unexpected success.
fn errno_of<T: std::fmt::Debug>(r: vfio_core::Result<T>) -> Result<Errno, String> {
    match r {
        Ok(v) => Err(format!("succeeded with {v:?}")),
        Err(e) => e.errno().ok_or_else(|| format!("failed without an errno: {e}")),
    }
}

fn expect_errno<T: std::fmt::Debug>(what: &str, r: vfio_core::Result<T>, want: Errno) -> Result<(), String> {
    match errno_of(r) {
        Ok(e) if e == want => Ok(()),
        Ok(e) => Err(format!("{what}: errno {e:?}, expected {want:?}")),
        Err(s) => Err(format!("{what}: {s}, expected {want:?}")),
    }
}

/// Maps `buf` raw (no guard) at `iova`.
fn map(c: &Container, buf: &DmaBuffer, iova: u64, len: u64, access: DmaAccess) -> vfio_core::Result<u64> {
    // SAFETY: every test unmaps (or the container closes) before `buf` is dropped, and no Rust
    // reference into the buffer exists.
    unsafe { c.map_dma_raw(buf.as_ptr(), len, iova, access) }
}

fn container_info(ty: IommuType) -> TestResult {
    let (addr, c) = setup_or_skip!(ty);
    ensure!(
        c.info().is_err() && c.backend().is_err(),
        "GET_INFO answered before any group joined"
    );
    let group = Sysfs::default().iommu_group(&addr)?;
    c.add_group(group)?;
    ensure!(
        c.iommu_type() == Some(ty),
        "iommu type {:?}, asked for {ty:?}",
        c.iommu_type()
    );
    let info = c.info()?;
    ensure!(
        info.flags & vfio_sys::VFIO_IOMMU_INFO_PGSIZES != 0,
        "no PGSIZES flag: {:#x}",
        info.flags
    );
    ensure!(
        info.page_sizes & PAGE != 0,
        "4 KiB pages missing from {:#x}",
        info.page_sizes
    );
    ensure!(!info.iova_ranges.is_empty(), "no IOVA ranges");
    ensure!(
        info.iova_ranges.windows(2).all(|w| w[0].last < w[1].start),
        "IOVA ranges unsorted or overlapping: {:x?}",
        info.iova_ranges
    );
    ensure!(info.dma_avail.is_some_and(|n| n > 0), "DMA avail {:?}", info.dma_avail);
    // The inherent and the trait method answer alike: GET_INFO's page sizes.
    let (inherent, via_trait) = (c.page_sizes()?, vfio_core::Container::page_sizes(&c)?);
    ensure!(
        inherent == info.page_sizes && via_trait == info.page_sizes,
        "page sizes {inherent:#x} (inherent) and {via_trait:#x} (trait), GET_INFO says {:#x}",
        info.page_sizes
    );
    let backend = c.backend()?;
    // The type1 driver has module parameters, so it shows in /sys/module when present.
    let type1_driver = std::path::Path::new("/sys/module/vfio_iommu_type1").exists();
    ensure!(
        (backend == Backend::Type1) == type1_driver,
        "backend {backend:?} but /sys/module/vfio_iommu_type1 exists={type1_driver}"
    );
    if backend == Backend::Type1 {
        let m = info.migration.ok_or("no migration cap")?;
        ensure!(m.pgsize_bitmap & PAGE != 0, "dirty page sizes {:#x}", m.pgsize_bitmap);
    }
    ensure!(
        c.set_iommu(other(ty)).is_err(),
        "set_iommu accepted a second, different type"
    );
    println!(
        "    {ty:?} on {backend:?}: flags {:#x} pgsizes {:#x} ranges {:x?} dma_avail {:?} migration {:?}",
        info.flags, info.page_sizes, info.iova_ranges, info.dma_avail, info.migration
    );
    Ok(Outcome::Pass)
}

fn other(ty: IommuType) -> IommuType {
    if ty == IommuType::Type1 {
        IommuType::Type1v2
    } else {
        IommuType::Type1
    }
}

fn container_from_fd() -> TestResult {
    let (addr, _) = setup_or_skip!(IommuType::Type1v2);
    let fd = vfio_core::open_node(std::path::Path::new("/dev/vfio/vfio"))?;
    let c = Container::from_fd(fd, vfio_core::Addressing::Iova)?;
    ensure!(
        c.check_extension(IommuType::Type1v2)?,
        "adopted container lacks type1v2"
    );
    let pci = PciDevice::open_in(&c, &addr)?;
    ensure!(pci.ids()? == (0x1234, 0x11e8), "ids {:x?}", pci.ids()?);
    let null = vfio_core::open_node(std::path::Path::new("/dev/null"))?;
    let e = Container::from_fd(null, vfio_core::Addressing::Iova).expect_err("/dev/null adopted as a container");
    ensure!(e.errno() == Some(Errno::NOTTY), "adopting /dev/null: {e}");
    Ok(Outcome::Pass)
}

/// The map/unmap errno contracts, asserted per backend and type as the kernel source says
/// (drivers/vfio/vfio_iommu_type1.c, drivers/iommu/iommufd/vfio_compat.c + io_pagetable.c).
fn dma_contract(ty: IommuType) -> TestResult {
    let (addr, c) = setup_or_skip!(ty);
    c.add_group(Sysfs::default().iommu_group(&addr)?)?;
    let backend = c.backend()?;
    let v2 = ty == IommuType::Type1v2;
    let buf = DmaBuffer::new(4 * PAGE as usize)?;
    let a = 0x10_0000;

    // A 2-page mapping; an overlapping one is EEXIST on every backend.
    ensure!(
        map(&c, &buf, a, 2 * PAGE, DmaAccess::READ_WRITE)? == a,
        "map returned another address"
    );
    expect_errno(
        "overlapping map",
        map(&c, &buf, a + PAGE, 2 * PAGE, DmaAccess::READ),
        Errno::EXIST,
    )?;
    // Unmapping a hole succeeds with 0 bytes everywhere (type1: "only return success and a size
    // of zero if there were no mappings within the range"; iommufd: no areas, rc 0).
    let hole = c.unmap_range(0x40_0000, PAGE)?;
    ensure!(hole == 0, "unmapping a hole returned {hole:#x}");
    // The mode-independent API makes that ENOENT, as cdev mode's IOMMU_IOAS_UNMAP says.
    expect_errno(
        "Container::unmap_dma of a hole",
        vfio_core::Container::unmap_dma(&c, 0x40_0000, PAGE),
        Errno::NOENT,
    )?;

    // Unmapping the second page only (a range starting inside the mapping).
    let partial = c.unmap_range(a + PAGE, PAGE);
    let rest = match (backend, v2) {
        (Backend::Type1, false) => {
            // v1: success, 0 bytes, the mapping stays whole.
            ensure!(matches!(partial, Ok(0)), "type1 v1 tail unmap: {partial:?}");
            2 * PAGE
        }
        (Backend::Type1, true) => {
            expect_errno("type1v2 tail unmap", partial, Errno::INVAL)?;
            2 * PAGE
        }
        (Backend::IommufdCompat, false) => {
            // iommufd emulates v1 with small pages and cuts the area: the page is unmapped.
            ensure!(matches!(partial, Ok(PAGE)), "iommufd type1 tail unmap: {partial:?}");
            PAGE
        }
        (Backend::IommufdCompat, true) => {
            expect_errno("iommufd type1v2 tail unmap", partial, Errno::NOENT)?;
            2 * PAGE
        }
        (Backend::NoIommu, _) => return Err("no-IOMMU backend in an IOMMU container".into()),
        (other, _) => return Err(format!("unknown backend {other:?}").into()),
    };
    // Unmapping the first page: type1 v1 removes the whole mapping it starts; v2 refuses to split.
    let head = c.unmap_range(a, PAGE);
    let left = match (backend, v2) {
        (Backend::Type1, false) => {
            ensure!(
                head.as_ref().ok() == Some(&rest),
                "type1 v1 head unmap: {head:?}, expected {rest:#x}"
            );
            0
        }
        (_, false) => {
            ensure!(matches!(head, Ok(PAGE)), "iommufd type1 head unmap: {head:?}");
            rest - PAGE
        }
        (Backend::Type1, true) => {
            expect_errno("type1v2 head unmap", head, Errno::INVAL)?;
            rest
        }
        (_, true) => {
            expect_errno("iommufd type1v2 head unmap", head, Errno::NOENT)?;
            rest
        }
    };
    let whole = c.unmap_range(a, 2 * PAGE)?;
    ensure!(whole == left, "final unmap returned {whole:#x}, expected {left:#x}");

    // Overflow of iova + size: EOVERFLOW from iommufd and from newer type1 drivers
    // (check_add_overflow); older type1 drivers (Debian 12's 6.1) refuse the range with EINVAL.
    // Map and unmap must agree on which.
    let top = u64::MAX - PAGE + 1;
    let wrap =
        errno_of(map(&c, &buf, top, 2 * PAGE, DmaAccess::READ)).map_err(|s| format!("map wrapping 2^64: {s}"))?;
    let old_type1 = backend == Backend::Type1 && wrap == Errno::INVAL;
    ensure!(
        wrap == Errno::OVERFLOW || old_type1,
        "map wrapping 2^64 on {backend:?}: errno {wrap:?}, expected EOVERFLOW"
    );
    expect_errno("unmap wrapping 2^64", c.unmap_range(top, 2 * PAGE), wrap)?;

    // The last page of the IOVA space maps; the page after it does not.
    let last = *c.info()?.iova_ranges.last().ok_or("no ranges")?;
    // The highest page whose last byte is still inside the range.
    let end_page = last
        .last
        .checked_sub(PAGE - 1)
        .ok_or("last IOVA range below one page")?
        & !(PAGE - 1);
    ensure!(end_page >= last.start, "last IOVA range {last:x?} holds no page");
    map(&c, &buf, end_page, PAGE, DmaAccess::READ)?;
    let n = c.unmap_range(end_page, PAGE)?;
    ensure!(n == PAGE, "unmapping the last page returned {n:#x}");
    if let Some(past) = last.last.checked_add(1) {
        expect_errno(
            "map past the IOVA space",
            map(&c, &buf, past, PAGE, DmaAccess::READ),
            Errno::INVAL,
        )?;
    }

    // Unmap-all removes everything and reports the total.
    map(&c, &buf, a, 2 * PAGE, DmaAccess::READ_WRITE)?;
    map(&c, &buf, 0x30_0000, PAGE, DmaAccess::READ)?;
    let all = c.unmap_all()?;
    ensure!(all == 3 * PAGE, "unmap-all returned {all:#x}, expected {:#x}", 3 * PAGE);
    ensure!(c.unmap_range(a, 2 * PAGE)? == 0, "mapping survived unmap-all");
    println!(
        "    {ty:?} on {backend:?}: EEXIST overlap, hole 0, wrap {wrap:?}, partial/end-of-space/unmap-all as documented"
    );
    Ok(Outcome::Pass)
}

/// Starts an edu DMA and waits for it to end (DMA_CMD bit 0 clear), up to `timeout`; the IRQ
/// is consumed if it comes but not required.
fn edu_dma_no_irq(edu: &Edu, dir: Direction, addr: u64, len: u64, irq: &EventFd) -> Result<bool, String> {
    let e = |e: vfio_core::Error| e.to_string();
    let (src, dst, cmd) = match dir {
        Direction::ToDevice => (addr, EDU_BUF, 0b101),
        Direction::FromDevice => (EDU_BUF, addr, 0b111),
    };
    edu.bar0.write64(reg::DMA_SRC, src).map_err(e)?;
    edu.bar0.write64(reg::DMA_DST, dst).map_err(e)?;
    edu.bar0.write64(reg::DMA_COUNT, len).map_err(e)?;
    edu.bar0.write64(reg::DMA_CMD, cmd).map_err(e)?;
    let start = Instant::now();
    while edu.bar0.read64(reg::DMA_CMD).map_err(e)? & 1 != 0 {
        if start.elapsed() > Duration::from_secs(10) {
            return Err("edu DMA still running after 10 s".into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let got_irq = irq.wait_timeout(Duration::from_millis(500)).map_err(e)?.is_some();
    let status = edu.bar0.read32(reg::IRQ_STATUS).map_err(e)?;
    edu.bar0.write32(reg::IRQ_ACK, status).map_err(e)?;
    Ok(got_irq)
}

fn open_edu(c: &dyn vfio_core::Container, addr: &PciAddress) -> Result<(Edu, EventFd), Box<dyn std::error::Error>> {
    let pci = PciDevice::open_in(c, addr)?;
    pci.enable_bus_master()?;
    let irq = EventFd::new()?;
    pci.enable_msi([&irq])?;
    Ok((Edu::new(pci)?, irq))
}

/// RAM -> device -> RAM through `c` at IOVAs `base` and `base + 1 MiB`, verified; `tag` varies
/// the pattern.
fn round_trip(edu: &Edu, irq: &EventFd, c: &dyn vfio_core::Container, base: u64, tag: u8) -> TestResult {
    let src = DmaBuffer::new(PAGE as usize)?;
    let dst = DmaBuffer::new(PAGE as usize)?;
    let pattern: Vec<u8> = (0..PAGE as u32).map(|i| (i as u8).wrapping_mul(13) ^ tag).collect();
    src.write(0, &pattern)?;
    dst.fill(0);
    let sm = DmaMapping::new(c, &src, base, DmaAccess::READ)?;
    let dm = DmaMapping::new(c, &dst, base + 0x10_0000, DmaAccess::WRITE)?;
    edu.dma(Direction::ToDevice, sm.device_addr(), EDU_MAX_DMA, irq)?;
    edu.dma(Direction::FromDevice, dm.device_addr(), EDU_MAX_DMA, irq)?;
    let mut out = vec![0u8; PAGE as usize];
    dst.read(0, &mut out)?;
    let n = EDU_MAX_DMA as usize;
    ensure!(out[..n] == pattern[..n], "DMA data differs");
    ensure!(out[n] == 0, "byte past the DMA written");
    Ok(Outcome::Pass)
}

fn read_only_mapping_blocks_device_writes(ty: IommuType) -> TestResult {
    let (addr, c) = setup_or_skip!(ty);
    let (edu, irq) = open_edu(&c, &addr)?;
    let backend = c.backend()?;
    let src = DmaBuffer::new(PAGE as usize)?;
    src.fill(0x5a);
    let ro = DmaBuffer::new(PAGE as usize)?;
    ro.fill(0xaa);
    let sm = DmaMapping::new(&c, &src, 0x10_0000, DmaAccess::READ)?;
    let rm = DmaMapping::new(&c, &ro, 0x20_0000, DmaAccess::READ)?;
    edu.dma(Direction::ToDevice, sm.device_addr(), EDU_MAX_DMA, &irq)?;
    let irq_came = edu_dma_no_irq(&edu, Direction::FromDevice, rm.device_addr(), EDU_MAX_DMA, &irq)?;
    let mut out = vec![0u8; PAGE as usize];
    ro.read(0, &mut out)?;
    if let Some(i) = out.iter().position(|&b| b != 0xaa) {
        return Err(format!("device wrote byte {i} ({:#x}) of a read-only mapping", out[i]).into());
    }
    drop(rm);
    // The device still works afterwards.
    round_trip(&edu, &irq, &c, 0x80_0000, 1)?;
    drop(sm);
    println!("    {ty:?} on {backend:?}: write into READ-only mapping blocked (IRQ raised anyway: {irq_came})");
    Ok(Outcome::Pass)
}

fn nvme() -> Result<PciAddress, String> {
    device_from_env("VFIO_TEST_NVME")
}

fn two_groups_one_container() -> TestResult {
    let (addr, c) = setup_or_skip!(IommuType::Type1v2);
    let nv = match nvme() {
        Ok(a) => a,
        Err(why) => return skip(why),
    };
    let sysfs = Sysfs::default();
    let (g1, g2) = (sysfs.iommu_group(&addr)?, sysfs.iommu_group(&nv)?);
    if g1 == g2 {
        return skip(format!("edu and nvme share IOMMU group {g1}"));
    }
    let (edu, irq) = open_edu(&c, &addr)?;
    let nvme = PciDevice::open_in(&c, &nv)?;
    let mut ids = c.group_ids();
    ids.sort();
    let mut want = vec![g1, g2];
    want.sort();
    ensure!(ids == want, "groups {ids:?}, expected {want:?}");
    for g in [g1, g2] {
        let st = c.group(g).ok_or("group missing")?.status()?;
        ensure!(st.viable && st.container_set, "group {g} status {st:?}");
    }
    round_trip(&edu, &irq, &c, 0x10_0000, 2)?;
    drop(nvme);
    Ok(Outcome::Pass)
}

fn two_containers() -> TestResult {
    let (addr, c1) = setup_or_skip!(IommuType::Type1v2);
    let nv = match nvme() {
        Ok(a) => a,
        Err(why) => return skip(why),
    };
    let sysfs = Sysfs::default();
    if sysfs.iommu_group(&addr)? == sysfs.iommu_group(&nv)? {
        return skip("edu and nvme share an IOMMU group");
    }
    let c2 = Container::open(vfio_core::Addressing::Iova)?;
    let (edu, irq) = open_edu(&c1, &addr)?;
    let nvme = PciDevice::open_in(&c2, &nv)?;
    // The same IOVA in both: separate address spaces.
    let b1 = DmaBuffer::new(PAGE as usize)?;
    let b2 = DmaBuffer::new(PAGE as usize)?;
    let m2 = DmaMapping::new(&c2, &b2, 0x10_0000, DmaAccess::READ_WRITE)?;
    let m1 = DmaMapping::new(&c1, &b1, 0x30_0000, DmaAccess::READ_WRITE)?;
    // edu DMA through c1 uses 0x10_0000 too (round_trip maps it again): no EEXIST across containers.
    round_trip(&edu, &irq, &c1, 0x10_0000, 3)?;
    ensure!(
        c2.group_ids().len() == 1 && c1.group_ids().len() == 1,
        "groups leaked across containers"
    );
    drop((m1, m2, nvme));
    Ok(Outcome::Pass)
}

fn group_status_and_remove() -> TestResult {
    let (addr, c) = setup_or_skip!(IommuType::Type1v2);
    let id = Sysfs::default().iommu_group(&addr)?;
    {
        let g = vfio_group::Group::open(std::path::Path::new("/dev"), id, false)?;
        let st = g.status()?;
        ensure!(st.viable && !st.container_set, "fresh group status {st:?}");
    }
    // Joined by hand, the group stays when its device closes (else it would leave then).
    c.add_group(id)?;
    let pci = PciDevice::open_in(&c, &addr)?;
    let st = c.group(id).ok_or("group not held")?.status()?;
    ensure!(st.viable && st.container_set, "status after joining {st:?}");
    let backend = c.backend()?;
    let r = c.remove_group(id);
    if backend == Backend::Type1 {
        // The type1 container refuses while the device is open (container_users != 1).
        expect_errno("remove group with an open device", r, Errno::BUSY)?;
        drop(pci);
        c.remove_group(id)?;
    } else {
        // iommufd's compat container lets the group go even with the device open.
        ensure!(r.is_ok(), "iommufd compat: remove group with an open device: {r:?}");
        drop(pci);
    }
    ensure!(
        c.group(id).is_none() && c.iommu_type().is_none(),
        "group or IOMMU type left behind"
    );
    ensure!(c.remove_group(id).is_err(), "removed a group twice");
    // The group can join again and the IOMMU type is set again.
    let pci = PciDevice::open_in(&c, &addr)?;
    ensure!(
        c.iommu_type() == Some(IommuType::Type1v2),
        "type after rejoin {:?}",
        c.iommu_type()
    );
    drop(pci);
    Ok(Outcome::Pass)
}

fn non_viable_group() -> TestResult {
    let addr = match device_from_env("VFIO_TEST_EDU_NONVIABLE") {
        Ok(a) => a,
        Err(why) => {
            return skip(format!(
                "{why}: the harness adds a device sharing an IOMMU group with a kernel-driven one only in intel-iommu boots"
            ));
        }
    };
    let sysfs = Sysfs::default();
    let group = sysfs.iommu_group(&addr)?;
    let members = sysfs.group_devices(group)?;
    let other = members
        .iter()
        .find(|m| sysfs.driver(m).ok().flatten().is_some_and(|d| !d.starts_with("vfio")))
        .ok_or(format!("group {group} ({members:?}) has no device on a host driver"))?;
    let c = Container::open(vfio_core::Addressing::Iova)?;
    let e = vfio_core::Container::assign_device(&c, &addr)
        .err()
        .ok_or("assigned a device of a non-viable group")?;
    let msg = e.to_string();
    ensure!(
        msg.contains("not viable") && msg.contains(&other.to_string()),
        "error does not name {other}: {msg}"
    );
    println!("    group mode: {msg}");
    if vfio_core::detect().cdev {
        let cdev = vfio_cdev::Container::new()?;
        let e = vfio_core::Container::assign_device(&cdev, &addr)
            .err()
            .ok_or("cdev bind in a non-viable group succeeded")?;
        ensure!(e.errno().is_some(), "cdev: expected a kernel errno, got {e}");
        println!("    cdev mode: {e}");
    }
    Ok(Outcome::Pass)
}

#[allow(deprecated)]
fn legacy_group_api() -> TestResult {
    use vfio_group::legacy;
    let (addr, c) = setup_or_skip!(IommuType::Type1v2);
    let id = legacy::device_group(&addr)?;
    ensure!(
        id == Sysfs::default().iommu_group(&addr)?,
        "device_group disagrees with sysfs"
    );
    ensure!(
        legacy::group_fd(&c, id).is_err(),
        "group_fd of an unbound group succeeded"
    );
    legacy::group_bind(&c, id)?;
    let fd = legacy::group_fd(&c, id)?;
    // The fd is the bound group itself: its status says so.
    let g = vfio_group::Group::from_fd(fd, id);
    ensure!(g.status()?.container_set, "group_fd's group has no container");
    drop(g);
    legacy::group_unbind(&c, id)?;
    ensure!(legacy::group_fd(&c, id).is_err(), "group_fd after unbind succeeded");
    legacy::group_bind(&c, id)?;
    legacy::group_unbind(&c, id)?;
    Ok(Outcome::Pass)
}

fn noiommu_dma_round_trip() -> TestResult {
    let addr = match device_from_env("VFIO_TEST_EDU") {
        Ok(a) => a,
        Err(why) => return skip(why),
    };
    let modes = vfio_core::detect();
    if !modes.group_noiommu {
        return skip(format!("no-IOMMU mode is not offered by this kernel ({modes:?})"));
    }
    let c = Container::open(vfio_core::Addressing::Physical)?;
    ensure!(c.backend()? == Backend::NoIommu, "backend {:?}", c.backend()?);
    ensure!(
        matches!(
            c.set_iommu(IommuType::Type1v2),
            Err(vfio_core::Error::InvalidArgument { .. })
        ),
        "type1v2 accepted for a no-IOMMU container"
    );
    let (edu, irq) = open_edu(&c, &addr)?;
    ensure!(c.iommu_type() == Some(IommuType::NoIommu), "type {:?}", c.iommu_type());
    ensure!(
        matches!(c.info(), Err(vfio_core::Error::Unsupported { .. })),
        "GET_INFO in a no-IOMMU container"
    );
    // No translation: every multiple of the CPU page size, from the inherent and the trait
    // method alike (no GET_INFO asked).
    let every_page = !(vfio_core::page_size() as u64 - 1);
    let (inherent, via_trait) = (c.page_sizes()?, vfio_core::Container::page_sizes(&c)?);
    ensure!(
        inherent == every_page && via_trait == every_page,
        "no-IOMMU page sizes {inherent:#x} (inherent) and {via_trait:#x} (trait), expected {every_page:#x}"
    );
    round_trip(&edu, &irq, &c, 0x10_0000, 4)?;
    // A multi-page buffer maps only if physically contiguous; otherwise a clear Unsupported.
    let big = DmaBuffer::new(64 * PAGE as usize)?;
    match DmaMapping::new(&c, &big, 0x100_0000, DmaAccess::READ) {
        Ok(m) => println!("    256 KiB buffer is physically contiguous at {:#x}", m.device_addr()),
        Err(e @ vfio_core::Error::Unsupported { .. }) => println!("    256 KiB buffer: {e}"),
        Err(e) => return Err(format!("256 KiB buffer: unexpected {e}").into()),
    }
    ensure!(c.unmap_all()? == 0, "pins left after every mapping was dropped");
    Ok(Outcome::Pass)
}

/// Dirty-page tracking: type1v2 on the type1 driver reports every mapped page dirty (the edu
/// does not report its own writes, so type1 counts all pinned pages); type1 (v1) gets EACCES;
/// the iommufd compatibility container has no such ioctl (Unsupported, then skipped).
fn dirty_pages(ty: IommuType) -> TestResult {
    let (addr, c) = setup_or_skip!(ty);
    c.add_group(Sysfs::default().iommu_group(&addr)?)?;
    let backend = c.backend()?;
    if backend != Backend::Type1 {
        let e = c
            .dirty_tracking_start()
            .expect_err("dirty tracking started on iommufd compat");
        ensure!(matches!(e, vfio_core::Error::Unsupported { .. }), "iommufd compat: {e}");
        return skip(format!("{backend:?}: {e}"));
    }
    if ty == IommuType::Type1 {
        expect_errno(
            "dirty tracking on a type1 (v1) container",
            c.dirty_tracking_start(),
            Errno::ACCESS,
        )?;
        return Ok(Outcome::Pass);
    }
    let buf = DmaBuffer::new(4 * PAGE as usize)?;
    let m = DmaMapping::new(&c, &buf, 0x10_0000, DmaAccess::READ_WRITE)?;
    expect_errno("bitmap before start", c.dirty_bitmap(0x10_0000, 4 * PAGE), Errno::INVAL)?;
    c.dirty_tracking_start()?;
    let bits = c.dirty_bitmap(0x10_0000, 4 * PAGE)?;
    ensure!(bits == vec![0xf], "bitmap {bits:x?}, expected all 4 pages dirty");
    expect_errno(
        "bitmap splitting a mapping",
        c.dirty_bitmap(0x10_1000, PAGE),
        Errno::INVAL,
    )?;
    ensure!(
        matches!(
            c.dirty_bitmap(0x10_0000, PAGE / 2),
            Err(vfio_core::Error::InvalidArgument { .. })
        ),
        "half-page bitmap accepted"
    );
    // Unmap with the bitmap: a fresh 2-page mapping is reported dirty as it goes.
    let buf2 = DmaBuffer::new(2 * PAGE as usize)?;
    // SAFETY: `buf2` outlives the mapping, which the unmap below removes; nothing references it.
    unsafe { vfio_core::Container::map_dma_raw(&c, buf2.as_ptr(), 2 * PAGE, 0x20_0000, DmaAccess::READ_WRITE)? };
    let (unmapped, bits) = c.unmap_dma_with_dirty_bitmap(0x20_0000, 2 * PAGE)?;
    ensure!(
        unmapped == 2 * PAGE && bits == vec![0x3],
        "unmap with bitmap gave {unmapped:#x} bytes, {bits:x?}"
    );
    c.dirty_tracking_stop()?;
    expect_errno("bitmap after stop", c.dirty_bitmap(0x10_0000, 4 * PAGE), Errno::INVAL)?;
    drop(m);
    Ok(Outcome::Pass)
}

/// When the last device of a group leaves vfio-pci, the kernel takes the group out of its
/// container: the container forgets it (and its IOMMU type, the container being empty now), and
/// opens it afresh once the device is back on vfio-pci.
fn unbound_group_is_forgotten_and_reopened() -> TestResult {
    let (_, c) = setup_or_skip!(IommuType::Type1v2);
    let nv = match nvme() {
        Ok(a) => a,
        Err(why) => return skip(why),
    };
    let sysfs = Sysfs::default();
    let group = sysfs.iommu_group(&nv)?;
    let members = sysfs.group_devices(group)?;
    if members != [nv] {
        return skip(format!("the nvme shares IOMMU group {group} with {members:?}"));
    }
    // Joined by hand, the group stays in the container with its device closed.
    c.add_group(group)?;
    drop(PciDevice::open_in(&c, &nv)?);
    ensure!(c.group_ids() == [group], "groups {:?}", c.group_ids());
    ensure!(c.forget_detached().is_empty(), "a group forgotten while still attached");
    sysfs.restore_driver(&nv, None)?;
    let rebound = sysfs.bind_vfio_pci(&nv);
    let gone = c.forget_detached();
    rebound?;
    ensure!(gone == [group], "forgot groups {gone:?}, expected [{group}]");
    ensure!(
        c.group_ids().is_empty() && c.iommu_type().is_none(),
        "left behind: groups {:?}, IOMMU type {:?}",
        c.group_ids(),
        c.iommu_type()
    );
    let dev = PciDevice::open_in(&c, &nv)?;
    ensure!(dev.ids()? == (0x1b36, 0x0010), "ids {:x?}", dev.ids()?);
    ensure!(
        c.iommu_type() == Some(IommuType::Type1v2),
        "IOMMU type after reopening: {:?}",
        c.iommu_type()
    );
    let buf = DmaBuffer::new(PAGE as usize)?;
    drop(DmaMapping::new(&c, &buf, 0x10_0000, DmaAccess::READ_WRITE)?);
    println!("    group {group}: forgotten after the unbind, reopened after the rebind, IOMMU set again");
    Ok(Outcome::Pass)
}

fn main() -> ExitCode {
    vfio_tests::run(&[
        ("container_info_type1", || container_info(IommuType::Type1)),
        ("container_info_type1v2", || container_info(IommuType::Type1v2)),
        ("container_from_fd", container_from_fd),
        ("dma_contract_type1", || dma_contract(IommuType::Type1)),
        ("dma_contract_type1v2", || dma_contract(IommuType::Type1v2)),
        ("read_only_mapping_blocks_device_writes_type1", || {
            read_only_mapping_blocks_device_writes(IommuType::Type1)
        }),
        ("read_only_mapping_blocks_device_writes_type1v2", || {
            read_only_mapping_blocks_device_writes(IommuType::Type1v2)
        }),
        ("two_groups_one_container", two_groups_one_container),
        ("two_containers", two_containers),
        ("group_status_and_remove", group_status_and_remove),
        ("non_viable_group", non_viable_group),
        ("legacy_group_api", legacy_group_api),
        ("noiommu_dma_round_trip", noiommu_dma_round_trip),
        ("dirty_pages_type1", || dirty_pages(IommuType::Type1)),
        ("dirty_pages_type1v2", || dirty_pages(IommuType::Type1v2)),
        (
            "group_unbound_is_forgotten_and_reopened",
            unbound_group_is_forgotten_and_reopened,
        ),
    ])
}
