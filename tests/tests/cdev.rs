//! cdev mode (device cdev + iommufd) with the QEMU edu device: DMA through `vfio_cdev::Container`,
//! moving a device between IOASes, and the setup contracts the kernel enforces (no device access
//! before bind, no second bind, no bind to something that is not an iommufd, ...).

use std::os::fd::OwnedFd;
use std::process::ExitCode;

use vfio_cdev::{BoundDevice, Container, HwptFlags, IoasId, Iommufd, IovaPlacement, UnboundDevice};
use vfio_core::ioctl::{self, requests as req};
use vfio_core::{
    Addressing, Container as _, DmaAccess, DmaBuffer, DmaMapping, Errno, Error, EventFd, IovaRange, Mode, PciAddress,
    Sysfs,
};
use vfio_pci::PciDevice;
use vfio_tests::edu::{Direction, EDU_MAX_DMA, Edu};
use vfio_tests::{Outcome, TestResult, device_from_env, ensure, skip};

/// The edu address and the addressing the kernel's cdev interface offers it with (IOVAs, or
/// physical addresses on a no-IOMMU machine), or why the test cannot run.
fn edu_addr() -> Result<(PciAddress, Addressing), String> {
    let addr = device_from_env("VFIO_TEST_EDU")?;
    let modes = vfio_core::detect();
    if modes.cdev {
        Ok((addr, Addressing::Iova))
    } else if modes.cdev_noiommu {
        Ok((addr, Addressing::Physical))
    } else {
        Err(format!("the cdev interface is not offered by this kernel ({modes:?})"))
    }
}

macro_rules! edu_or_skip {
    () => {
        match edu_addr() {
            Ok(a) => a,
            Err(why) => return skip(why),
        }
    };
}

/// A fresh container of the cdev interface with this addressing.
fn cdev_container(addressing: Addressing) -> vfio_core::Result<Container> {
    Container::with_iommufd(&Iommufd::open()?, addressing)
}

/// An edu with bus mastering and its DMA-completion MSI on `irq`.
fn edu_with_msi(device: vfio_core::Device, addr: PciAddress, irq: &EventFd) -> Result<Edu, Box<dyn std::error::Error>> {
    let addressing = if vfio_core::detect().cdev {
        Addressing::Iova
    } else {
        Addressing::Physical
    };
    let pci = PciDevice::from_device(device, addr, Mode::new(vfio_core::Interface::Cdev, addressing))?;
    pci.enable_bus_master()?;
    pci.enable_msi([irq])?;
    Edu::new(pci)
}

fn pattern(seed: u8) -> Vec<u8> {
    (0..4096u32)
        .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed))
        .collect()
}

/// RAM -> device -> RAM through `c`, at IOVAs `base` and `base + 1 MiB`, checked byte for byte.
fn round_trip(edu: &Edu, irq: &EventFd, c: &dyn vfio_core::Container, base: u64, seed: u8) -> TestResult {
    let (src, dst) = (DmaBuffer::new(4096)?, DmaBuffer::new(4096)?);
    let data = pattern(seed);
    src.write(0, &data)?;
    dst.fill(0);
    let src_map = DmaMapping::new(c, &src, base, DmaAccess::READ)?;
    let dst_map = DmaMapping::new(c, &dst, base + 0x10_0000, DmaAccess::WRITE)?;
    edu.dma(Direction::ToDevice, src_map.device_addr(), EDU_MAX_DMA, irq)?;
    edu.dma(Direction::FromDevice, dst_map.device_addr(), EDU_MAX_DMA, irq)?;
    drop((src_map, dst_map));
    let mut out = vec![0u8; 4096];
    dst.read(0, &mut out)?;
    let len = EDU_MAX_DMA as usize;
    ensure!(out[len] == 0, "byte {len}, past the DMA, was written");
    if let Some(i) = out[..len].iter().zip(&data).position(|(a, b)| a != b) {
        return Err(format!("byte {i} differs: read {:#x}, wrote {:#x}", out[i], data[i]).into());
    }
    Ok(Outcome::Pass)
}

/// Fails unless `res` is a kernel error with one of `want`.
fn expect_errno<T: std::fmt::Debug>(res: vfio_core::Result<T>, want: &[Errno], what: &str) -> TestResult {
    match res {
        Ok(v) => Err(format!("{what}: succeeded ({v:?}), expected {want:?}").into()),
        Err(e) if e.errno().is_some_and(|n| want.contains(&n)) => {
            println!("    {what}: refused as expected: {e}");
            Ok(Outcome::Pass)
        }
        Err(e) => Err(format!("{what}: failed with {e}, expected {want:?}").into()),
    }
}

fn dma_round_trip_through_container() -> TestResult {
    let (addr, addressing) = edu_or_skip!();
    let c = cdev_container(addressing)?;
    let irq = EventFd::new()?;
    let edu = edu_with_msi(c.assign_device(&addr)?, addr, &irq)?;
    round_trip(&edu, &irq, &c, 0x10_0000, 3)
}

fn device_moved_between_two_ioases() -> TestResult {
    let (addr, addressing) = edu_or_skip!();
    let iommufd = Iommufd::open()?;
    let (c1, c2) = (
        Container::with_iommufd(&iommufd, addressing)?,
        Container::with_iommufd(&iommufd, addressing)?,
    );
    ensure!(
        c1.ioas().id() != c2.ioas().id(),
        "both containers got IOAS {}",
        c1.ioas().id()
    );
    let bound = c1.bind_device(&addr)?;
    let irq = EventFd::new()?;
    let edu = edu_with_msi(bound.device(Some(iommufd.clone()))?, addr, &irq)?;
    round_trip(&edu, &irq, &c1, 0x10_0000, 1)?;
    bound.detach()?;
    c2.attach(&bound)?;
    round_trip(&edu, &irq, &c2, 0x40_0000, 2)?;
    println!(
        "    DMA verified in IOAS {} then, after detach + attach, in IOAS {}",
        c1.ioas().id(),
        c2.ioas().id()
    );
    Ok(Outcome::Pass)
}

fn replace_attached_ioas_while_mapped() -> TestResult {
    let (addr, addressing) = edu_or_skip!();
    let iommufd = Iommufd::open()?;
    let (c1, c2) = (
        Container::with_iommufd(&iommufd, addressing)?,
        Container::with_iommufd(&iommufd, addressing)?,
    );
    let bound = c1.bind_device(&addr)?;
    if bound.is_noiommu() {
        return skip("no-IOMMU cdev: IOVAs are physical addresses, an IOAS does not translate");
    }
    let irq = EventFd::new()?;
    let edu = edu_with_msi(bound.device(Some(iommufd.clone()))?, addr, &irq)?;
    // Same IOVA, different memory in each IOAS.
    let iova = 0x80_0000;
    let (old, new) = (DmaBuffer::new(4096)?, DmaBuffer::new(4096)?);
    old.fill(0x11);
    new.fill(0x22);
    let old_map = DmaMapping::new(&c1, &old, iova, DmaAccess::READ_WRITE)?;
    let new_map = DmaMapping::new(&c2, &new, iova, DmaAccess::READ_WRITE)?;
    // Put a known pattern in the device buffer through the old IOAS.
    edu.dma(Direction::ToDevice, old_map.device_addr(), EDU_MAX_DMA, &irq)?;
    // Replace (no detach) while both are mapped; the next DMA must land in the new IOAS's memory.
    c2.attach(&bound)?;
    edu.dma(Direction::FromDevice, new_map.device_addr(), EDU_MAX_DMA, &irq)?;
    drop((old_map, new_map));
    let (mut o, mut n) = (vec![0u8; 4096], vec![0u8; 4096]);
    old.read(0, &mut o)?;
    new.read(0, &mut n)?;
    ensure!(
        o.iter().all(|&b| b == 0x11),
        "the old IOAS's buffer was written after the replace"
    );
    ensure!(
        n[..EDU_MAX_DMA as usize].iter().all(|&b| b == 0x11) && n[EDU_MAX_DMA as usize] == 0x22,
        "the new IOAS's buffer does not hold the DMA's data"
    );
    println!(
        "    replaced IOAS {} by {} while mapped; DMA went to the new one",
        c1.ioas().id(),
        c2.ioas().id()
    );
    Ok(Outcome::Pass)
}

fn get_info_before_bind_fails() -> TestResult {
    let (addr, _) = edu_or_skip!();
    let dev = UnboundDevice::open(&Sysfs::default(), &addr)?;
    let mut info = vfio_sys::vfio_device_info::default();
    let res = ioctl::call::<req::DeviceGetInfo>(dev.ioctl_fd(), &mut info);
    expect_errno(
        res.map_err(|e| ioctl::kernel_error::<req::DeviceGetInfo>(addr, e)),
        &[Errno::INVAL],
        "GET_INFO on an unbound cdev",
    )
}

fn bind_to_non_iommufd_fails() -> TestResult {
    let (addr, _) = edu_or_skip!();
    let dev = UnboundDevice::open(&Sysfs::default(), &addr)?;
    let not_iommufd: OwnedFd = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC)?;
    let fake = Iommufd::from_fd(not_iommufd);
    expect_errno(
        dev.bind(&fake),
        &[Errno::BADFD, Errno::BADF],
        "bind with an eventfd as iommufd",
    )
}

fn repeated_bind_fails() -> TestResult {
    let (addr, _) = edu_or_skip!();
    let iommufd = Iommufd::open()?;
    let bound: BoundDevice = UnboundDevice::open(&Sysfs::default(), &addr)?.bind(&iommufd)?;
    // The typestate forbids binding a BoundDevice; go around it with a second handle on the file.
    let again = UnboundDevice::from_fd(rustix::io::fcntl_dupfd_cloexec(&bound, 0)?, "edu (dup)", false);
    expect_errno(again.bind(&iommufd), &[Errno::INVAL], "second bind")
}

fn attach_to_invalid_id_fails() -> TestResult {
    let (addr, _) = edu_or_skip!();
    let iommufd = Iommufd::open()?;
    let bound = UnboundDevice::open(&Sysfs::default(), &addr)?.bind(&iommufd)?;
    expect_errno(
        bound.attach(IoasId::from(0xdead)),
        &[Errno::NOENT, Errno::INVAL],
        "attach to id 0xdead",
    )
}

fn ioas_destroy_while_attached_is_busy() -> TestResult {
    let (addr, addressing) = edu_or_skip!();
    let iommufd = Iommufd::open()?;
    let c = Container::with_iommufd(&iommufd, addressing)?;
    let bound = c.bind_device(&addr)?;
    expect_errno(
        iommufd.destroy(c.ioas().id()),
        &[Errno::BUSY],
        "IOMMU_DESTROY of the attached IOAS",
    )?;
    bound.detach()?;
    drop(bound);
    Ok(Outcome::Pass)
}

fn assign_twice_to_same_container_fails() -> TestResult {
    let (addr, addressing) = edu_or_skip!();
    let c = cdev_container(addressing)?;
    let _dev = c.assign_device(&addr)?;
    match c.assign_device(&addr) {
        Ok(_) => Err("second assign_device of the same device succeeded".into()),
        Err(e @ Error::InvalidArgument { .. }) => {
            println!("    refused as expected: {e}");
            Ok(Outcome::Pass)
        }
        Err(e) => Err(format!("second assign_device: {e}, expected InvalidArgument").into()),
    }
}

fn pasid_attach_unsupported_on_edu() -> TestResult {
    let (addr, addressing) = edu_or_skip!();
    let c = cdev_container(addressing)?;
    let bound = c.bind_device(&addr)?;
    match bound.attach_pasid(1, c.ioas().id()) {
        Err(e @ Error::Unsupported { .. }) => {
            println!("    refused cleanly: {e}");
            Ok(Outcome::Pass)
        }
        r => Err(format!("PASID attach on edu (no PASID capability): {r:?}, expected Unsupported").into()),
    }
}

fn vf_token_on_non_vf_is_refused() -> TestResult {
    let (addr, _) = edu_or_skip!();
    let iommufd = Iommufd::open()?;
    let dev = UnboundDevice::open(&Sysfs::default(), &addr)?;
    let token = vfio_core::Uuid::from_bytes(*b"vfio-rs-vf-token");
    expect_errno(
        dev.bind_with_vf_token(&iommufd, &token),
        &[Errno::INVAL],
        "bind of a non-VF with a VF token",
    )?;
    // The refusal left the device unbound: a plain bind still works.
    UnboundDevice::open(&Sysfs::default(), &addr)?.bind(&iommufd)?;
    Ok(Outcome::Pass)
}

fn dma_through_hwpt_at_kernel_chosen_iova() -> TestResult {
    let (addr, _) = edu_or_skip!();
    // Declared first so they drop last, after every IOMMU object that maps them.
    let (src, dst) = (DmaBuffer::new(4096)?, DmaBuffer::new(4096)?);
    let iommufd = Iommufd::open()?;
    let ioas = iommufd.alloc_ioas()?;
    // edu's DMA mask is 28 bits: let the kernel choose, but only below 256 MiB.
    let allowed = IovaRange {
        start: 0x10_0000,
        last: 0x0fff_ffff,
    };
    ioas.allow_iovas(&[allowed])?;
    let bound = UnboundDevice::open(&Sysfs::default(), &addr)?.bind(&iommufd)?;
    if bound.is_noiommu() {
        return skip("no-IOMMU cdev: no IOMMU to allocate a HWPT on");
    }
    let info = bound.hw_info()?;
    println!(
        "    IOMMU hw info: type {}, capabilities {:#x}, PASID bits {}",
        info.data_type, info.capabilities, info.max_pasid_log2
    );
    let hwpt = match iommufd.alloc_hwpt(bound.devid(), ioas.id(), HwptFlags::default()) {
        Ok(h) => h,
        Err(e @ Error::Unsupported { .. }) => return skip(e.to_string()),
        Err(e) => return Err(e.into()),
    };
    let attached = bound.attach(hwpt.id())?;
    ensure!(
        attached == hwpt.id(),
        "attached HWPT {attached}, asked for {}",
        hwpt.id()
    );
    let irq = EventFd::new()?;
    let edu = edu_with_msi(bound.device(Some(iommufd.clone()))?, addr, &irq)?;

    let data = pattern(9);
    src.write(0, &data)?;
    dst.fill(0);
    let mut iovas = [0u64; 2];
    for (slot, (buf, access)) in iovas
        .iter_mut()
        .zip([(&src, DmaAccess::READ), (&dst, DmaAccess::WRITE)])
    {
        // SAFETY: the buffers outlive the mappings (unmapped below, or torn down with the
        // iommufd, which drops before them), and are only read through DmaBuffer's copying
        // accessors while the device may access them.
        *slot = unsafe { ioas.map_raw(buf.as_ptr(), buf.len() as u64, IovaPlacement::Any, access)? };
        ensure!(
            *slot >= allowed.start && *slot + 4095 <= allowed.last,
            "kernel chose {:#x}, outside {allowed:x?}",
            *slot
        );
    }
    edu.dma(Direction::ToDevice, iovas[0], EDU_MAX_DMA, &irq)?;
    edu.dma(Direction::FromDevice, iovas[1], EDU_MAX_DMA, &irq)?;
    let unmapped = ioas.unmap_all()?;
    ensure!(unmapped == 2 * 4096, "unmap_all returned {unmapped:#x}");
    let mut out = vec![0u8; 4096];
    dst.read(0, &mut out)?;
    let len = EDU_MAX_DMA as usize;
    if let Some(i) = out[..len].iter().zip(&data).position(|(a, b)| a != b) {
        return Err(format!("byte {i} differs: read {:#x}, wrote {:#x}", out[i], data[i]).into());
    }
    println!(
        "    DMA through HWPT {} of IOAS {} at kernel-chosen IOVAs {:#x}, {:#x}",
        hwpt.id(),
        ioas.id(),
        iovas[0],
        iovas[1]
    );
    Ok(Outcome::Pass)
}

fn attach_across_iommufds_is_refused() -> TestResult {
    let (addr, addressing) = edu_or_skip!();
    let (c1, c2) = (cdev_container(addressing)?, cdev_container(addressing)?);
    let bound = c1.bind_device(&addr)?;
    match c2.attach(&bound) {
        Err(e @ Error::InvalidArgument { .. }) => {
            println!("    refused as expected: {e}");
            Ok(Outcome::Pass)
        }
        r => Err(format!("attach to an IOAS of another iommufd: {r:?}, expected InvalidArgument").into()),
    }
}

fn dirty_tracking_sees_device_writes() -> TestResult {
    let (addr, _) = edu_or_skip!();
    let (src, dst) = (DmaBuffer::new(4096)?, DmaBuffer::new(4096)?);
    let iommufd = Iommufd::open()?;
    let ioas = iommufd.alloc_ioas()?;
    let bound = UnboundDevice::open(&Sysfs::default(), &addr)?.bind(&iommufd)?;
    if bound.is_noiommu() {
        return skip("no-IOMMU cdev: no IOMMU to track dirty pages");
    }
    let info = bound.hw_info()?;
    if !info.dirty_tracking() {
        return skip(format!(
            "the device's IOMMU reports no dirty tracking (IOMMU_GET_HW_INFO capabilities {:#x}); \
             the HWPT dirty API is covered on the iommufd mock",
            info.capabilities
        ));
    }
    let hwpt = iommufd.alloc_hwpt(
        bound.devid(),
        ioas.id(),
        HwptFlags {
            dirty_tracking: true,
            ..Default::default()
        },
    )?;
    bound.attach(hwpt.id())?;
    let irq = EventFd::new()?;
    let edu = edu_with_msi(bound.device(Some(iommufd.clone()))?, addr, &irq)?;
    let (src_iova, dst_iova) = (0x10_0000u64, 0x20_0000u64);
    for (buf, iova) in [(&src, src_iova), (&dst, dst_iova)] {
        // SAFETY: the buffers outlive the mappings (declared before the iommufd, so dropped
        // after it) and are only accessed through DmaBuffer's copying accessors.
        unsafe { ioas.map_raw(buf.as_ptr(), 4096, IovaPlacement::Fixed(iova), DmaAccess::READ_WRITE)? };
    }
    hwpt.set_dirty_tracking(true)?;
    hwpt.dirty_bitmap(src_iova, 0x20_0000, 4096, true)?;
    edu.dma(Direction::ToDevice, src_iova, EDU_MAX_DMA, &irq)?;
    edu.dma(Direction::FromDevice, dst_iova, EDU_MAX_DMA, &irq)?;
    let bits = hwpt.dirty_bitmap(src_iova, 0x20_0000, 4096, true)?;
    let dirty = |iova: u64| {
        let i = ((iova - src_iova) / 4096) as usize;
        bits[i / 64] & (1 << (i % 64)) != 0
    };
    ensure!(dirty(dst_iova), "the page the device wrote is not dirty");
    ensure!(!dirty(src_iova), "the page the device only read is dirty");
    hwpt.set_dirty_tracking(false)?;
    ioas.unmap_all()?;
    Ok(Outcome::Pass)
}

/// On a kernel without cdev mode (no iommufd, no VFIO device cdev: Debian 12's 6.1, the
/// harness's `debian61` boot) every cdev entry point fails with Unsupported saying what the
/// kernel lacks, and the device still opens in group mode, which `preferred()` picks.
fn cdev_refused_clearly_without_kernel_support() -> TestResult {
    let addr = match device_from_env("VFIO_TEST_EDU") {
        Ok(a) => a,
        Err(why) => return skip(why),
    };
    let modes = vfio_core::detect();
    if modes.cdev || modes.cdev_noiommu {
        return skip(format!(
            "this kernel offers the cdev interface ({modes:?}); the refusal is checked on kernels without it \
             (`cargo xtask vm test --variant debian61`)"
        ));
    }
    let iommufd = std::path::Path::new("/dev/iommu").exists();
    let unsupported = |what: &str, r: Result<(), Error>, names: &[&str]| -> Result<String, String> {
        match r {
            Err(e @ Error::Unsupported { .. }) => {
                let msg = e.to_string();
                for n in names {
                    if !msg.contains(n) {
                        return Err(format!("{what}: the error does not name {n}: {msg}"));
                    }
                }
                if !msg.contains("not supported on this kernel") {
                    return Err(format!("{what}: the error does not blame the kernel: {msg}"));
                }
                println!("    {what}: {msg}");
                Ok(msg)
            }
            Err(e) => Err(format!("{what}: expected Unsupported, got {e:?}")),
            Ok(()) => Err(format!("{what}: succeeded on a kernel without cdev mode ({modes:?})")),
        }
    };
    if !iommufd {
        unsupported(
            "Iommufd::open",
            Iommufd::open().map(drop),
            &["/dev/iommu", "CONFIG_IOMMUFD"],
        )?;
        unsupported("vfio_cdev::Container::new", Container::new().map(drop), &["/dev/iommu"])?;
    }
    // Without /dev/iommu the container cannot be made; with it (Linux 6.2 to 6.5) the device's
    // cdev is what is missing.
    let missing = if iommufd {
        "CONFIG_VFIO_DEVICE_CDEV"
    } else {
        "/dev/iommu"
    };
    unsupported(
        "PciDevice::open(.., Some(Mode::CDEV))",
        PciDevice::open(&addr, Some(Mode::CDEV)).map(drop),
        &[missing],
    )?;
    // The device's own cdev is missing too, whatever /dev/iommu says.
    unsupported(
        "UnboundDevice::open",
        UnboundDevice::open(&Sysfs::default(), &addr).map(drop),
        &["CONFIG_VFIO_DEVICE_CDEV", &addr.to_string()],
    )?;
    // Group mode is there instead, and is what a caller without a preference gets.
    ensure!(modes.group, "neither cdev nor group mode: {modes:?}");
    ensure!(
        vfio_core::preferred()? == Mode::GROUP,
        "preferred mode is not group on a kernel without cdev"
    );
    let dev = PciDevice::open(&addr, None)?;
    ensure!(dev.mode() == Mode::GROUP, "opened in {} mode", dev.mode());
    ensure!(dev.ids()? == (0x1234, 0x11e8), "ids {:x?}", dev.ids()?);
    println!("    {addr} opened in group mode instead");
    Ok(Outcome::Pass)
}

fn main() -> ExitCode {
    vfio_tests::run(&[
        (
            "cdev_refused_clearly_without_kernel_support",
            cdev_refused_clearly_without_kernel_support,
        ),
        (
            "cdev_dma_round_trip_through_container",
            dma_round_trip_through_container,
        ),
        ("cdev_device_moved_between_two_ioases", device_moved_between_two_ioases),
        (
            "cdev_replace_attached_ioas_while_mapped",
            replace_attached_ioas_while_mapped,
        ),
        ("cdev_get_info_before_bind_fails", get_info_before_bind_fails),
        ("cdev_bind_to_non_iommufd_fails", bind_to_non_iommufd_fails),
        ("cdev_repeated_bind_fails", repeated_bind_fails),
        ("cdev_attach_to_invalid_id_fails", attach_to_invalid_id_fails),
        (
            "cdev_ioas_destroy_while_attached_is_busy",
            ioas_destroy_while_attached_is_busy,
        ),
        (
            "cdev_assign_twice_to_same_container_fails",
            assign_twice_to_same_container_fails,
        ),
        ("cdev_pasid_attach_unsupported_on_edu", pasid_attach_unsupported_on_edu),
        ("cdev_vf_token_on_non_vf_is_refused", vf_token_on_non_vf_is_refused),
        (
            "cdev_dma_through_hwpt_at_kernel_chosen_iova",
            dma_through_hwpt_at_kernel_chosen_iova,
        ),
        (
            "cdev_attach_across_iommufds_is_refused",
            attach_across_iommufds_is_refused,
        ),
        (
            "cdev_dirty_tracking_sees_device_writes",
            dirty_tracking_sees_device_writes,
        ),
    ])
}
