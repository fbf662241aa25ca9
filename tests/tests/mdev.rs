//! Mediated devices through the kernel's sample drivers (mtty, mdpy, mbochs; built into the 7.3
//! test kernels): sysfs types and instances, opening an instance in group and cdev mode, mtty's
//! UART driven through region read/write, and the bad input around them.
//!
//! Kernel hazards (docs/design/issue-15.md §0) these tests obey: mtty's UART is only ever
//! accessed 1 byte at a time (H3) and at most 15 chars are queued (H11); mtty regions 2-5 are
//! never touched (H1); an instance is removed only after its last fd closed (H10).

use std::process::ExitCode;
use std::sync::Arc;

use vfio_core::{
    Addressing, Container, Device, DeviceFlags, DeviceRef, DmabufId, DrmPlaneType, Errno, Error, Interface, IrqFlags,
    MappedRegion, Mdev, MdevParent, PlaneKind, PlaneSource, RegionFlags, Sysfs, Uuid,
};
use vfio_tests::{Outcome, TestResult, ensure, skip};

/// The mdev parent `name`, or why the test cannot run here.
fn parent(name: &str) -> Result<MdevParent, String> {
    MdevParent::open(&Sysfs::default(), name).map_err(|e| {
        format!(
            "no mdev parent {name} ({e}): this kernel has no sample mediated-device driver {name} \
             (CONFIG_SAMPLE_VFIO_MDEV_*; Debian's packaged 6.1 kernel builds none)"
        )
    })
}

/// A fresh IOVA container of `iface`: mediated devices open through one on every boot, with or
/// without an IOMMU.
fn container(iface: Interface) -> vfio_core::Result<Arc<dyn Container>> {
    Ok(match iface {
        Interface::Group => Arc::new(vfio_group::Container::open(Addressing::Iova)?),
        Interface::Cdev => Arc::new(vfio_cdev::Container::new()?),
    })
}

macro_rules! need {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(why) => return skip(why),
        }
    };
}

/// A new mtty-1 instance with a random UUID.
fn new_mtty() -> Result<Result<Mdev, String>, Box<dyn std::error::Error>> {
    let p = match parent("mtty") {
        Ok(p) => p,
        Err(why) => return Ok(Err(why)),
    };
    Ok(Ok(p.mdev_type("mtty-1")?.create(Uuid::random()?)?))
}

fn parents_types_and_counts() -> TestResult {
    let mtty = need!(parent("mtty"));
    let parents = vfio_core::mdev_parents(&Sysfs::default())?;
    let names: Vec<&str> = parents.iter().map(|p| p.name()).collect();
    for want in ["mtty", "mdpy", "mbochs"] {
        ensure!(names.contains(&want), "parents {names:?} lack {want}");
    }
    let types = mtty.types()?;
    let ids: Vec<&str> = types.iter().map(|t| t.id()).collect();
    ensure!(ids == ["mtty-1", "mtty-2"], "mtty types {ids:?}");
    ensure!(
        types[0].name()? == "Single port serial",
        "mtty-1 name {:?}",
        types[0].name()?
    );
    ensure!(
        types[1].name()? == "Dual port serial",
        "mtty-2 name {:?}",
        types[1].name()?
    );
    ensure!(types[0].description()?.is_none(), "mtty-1 has a description");
    for t in &types {
        ensure!(
            t.device_api()? == "vfio-pci",
            "{} device_api {:?}",
            t.id(),
            t.device_api()?
        );
    }
    let (a1, a2) = (types[0].available_instances()?, types[1].available_instances()?);
    ensure!(a2 == a1 / 2, "available: mtty-1 {a1}, mtty-2 {a2}");
    let mdpy = parent("mdpy")?;
    let vga = mdpy.mdev_type("mdpy-vga")?;
    ensure!(vga.name()? == "mdpy-vga", "mdpy-vga name {:?}", vga.name()?);
    ensure!(
        vga.description()?.as_deref() == Some("virtual display, 640x480 framebuffer"),
        "mdpy-vga description {:?}",
        vga.description()?
    );
    let mbochs = parent("mbochs")?;
    let small = mbochs.mdev_type("mbochs-small")?;
    ensure!(
        small.description()?.is_some_and(|d| d.contains("MB video memory")),
        "mbochs-small description {:?}",
        small.description()?
    );
    for p in &parents {
        for t in p.types()? {
            println!(
                "    {}/{}: {:?}, {}, {} available",
                p.name(),
                t.id(),
                t.name()?,
                t.device_api()?,
                t.available_instances()?
            );
        }
    }
    Ok(Outcome::Pass)
}

fn create_lists_and_drop_removes() -> TestResult {
    let p = need!(parent("mtty"));
    let t = p.mdev_type("mtty-1")?;
    let before = t.available_instances()?;
    let m = t.create(Uuid::random()?)?;
    let u = m.uuid();
    ensure!(m.is_owned(), "a created instance is not owned");
    ensure!(
        t.available_instances()? == before - 1,
        "available {} after create, {before} before",
        t.available_instances()?
    );
    ensure!(t.instances()?.contains(&u), "{u} not in {:?}", t.instances()?);
    ensure!((m.type_id(), m.parent()) == ("mtty-1", "mtty"), "{m:?}");
    ensure!(m.driver()?.as_deref() == Some("mtty"), "driver {:?}", m.driver()?);
    let sysfs = Sysfs::default();
    let group = sysfs.device_iommu_group(&m.device_ref())?;
    ensure!(sysfs.is_emulated_group(group), "group {group} of {u} is not emulated");
    let found = Mdev::find(&sysfs, u)?;
    ensure!(
        !found.is_owned() && found.type_id() == "mtty-1" && found.parent() == "mtty",
        "{found:?}"
    );
    drop(found);
    ensure!(m.exists(), "dropping a found handle removed the instance");
    let dir = m.dir().to_path_buf();
    drop(m);
    ensure!(!dir.exists(), "{} still exists after the drop", dir.display());
    ensure!(
        t.available_instances()? == before,
        "available {} after the drop, {before} before",
        t.available_instances()?
    );
    // A kept instance survives its handle.
    let kept = t.create(Uuid::random()?)?.into_kept();
    ensure!(
        DeviceRef::Mdev(kept).sysfs_dir(&sysfs).exists(),
        "a kept instance was removed"
    );
    Mdev::find(&sysfs, kept)?.remove()?;
    ensure!(t.available_instances()? == before, "kept instance not removed");
    println!(
        "    mtty-1 {u}: group {group} (emulated), available {before} -> {} -> {before}",
        before - 1
    );
    Ok(Outcome::Pass)
}

fn mtty_info_regions_irqs(iface: Interface) -> TestResult {
    let m = need!(new_mtty()?);
    let fds = vfio_tests::FdSnapshot::take()?;
    let c = container(iface)?;
    let dev = m.open_in(c.as_ref())?;
    let info = dev.info()?;
    ensure!(info.flags.contains(DeviceFlags::PCI), "flags {:?}", info.flags);
    ensure!((info.num_regions, info.num_irqs) == (9, 5), "{info:?}");
    let cfg = dev.region_info(7)?;
    ensure!(cfg.size == 0xff, "config size {:#x}", cfg.size);
    let bar0 = dev.region_info(0)?;
    ensure!(bar0.size == 8, "BAR0 size {}", bar0.size);
    ensure!(
        bar0.flags.contains(RegionFlags::READ | RegionFlags::WRITE) && !bar0.flags.contains(RegionFlags::MMAP),
        "BAR0 flags {:?}",
        bar0.flags
    );
    ensure!(dev.region_info(1)?.size == 0, "BAR1 of mtty-1 is not empty");
    let e = dev.region_info(9).unwrap_err();
    ensure!(e.errno() == Some(Errno::INVAL), "region 9: {e}");
    let intx = dev.irq_info(0)?;
    ensure!(
        intx.flags.contains(IrqFlags::MASKABLE | IrqFlags::AUTOMASKED),
        "INTx {intx:?}"
    );
    let msi = dev.irq_info(1)?;
    ensure!(msi.flags.contains(IrqFlags::NORESIZE), "MSI {msi:?}");
    let e = dev.irq_info(2).unwrap_err();
    ensure!(e.errno() == Some(Errno::INVAL), "MSI-X: {e}");
    let mut b = [0u8; 4];
    dev.read_region(&cfg, 0, &mut b)?;
    ensure!(b == [0x48, 0x43, 0x53, 0x32], "ids {b:x?}");
    dev.read_region(&cfg, 8, &mut b)?;
    let class = u32::from(b[1]) | u32::from(b[2]) << 8 | u32::from(b[3]) << 16;
    ensure!(class == 0x070002, "class {class:#x}");
    ensure!(dev.name() == m.uuid().to_string(), "device name {}", dev.name());
    drop(dev);
    drop(c);
    drop(m);
    fds.check("fds leaked")?;
    println!("    {iface}: 9 regions, 5 IRQs, config 4348:3253 class 0x070002");
    Ok(Outcome::Pass)
}

const UART_RX_TX: u64 = 0;
const UART_LSR: u64 = 5;

/// One byte of mtty's BAR0 (1-byte accesses only: H3).
fn uart_read(dev: &Device, bar0: &vfio_core::RegionInfo, reg: u64) -> vfio_core::Result<u8> {
    let mut b = [0u8];
    dev.read_region(bar0, reg, &mut b)?;
    Ok(b[0])
}

fn mtty_uart_loopback(iface: Interface) -> TestResult {
    let m = need!(new_mtty()?);
    let fds = vfio_tests::FdSnapshot::take()?;
    let c = container(iface)?;
    let dev = m.open_in(c.as_ref())?;
    let bar0 = dev.region_info(0)?;
    let lsr = uart_read(&dev, &bar0, UART_LSR)?;
    ensure!(lsr == 0x60, "LSR {lsr:#x} before any char");
    let text = b"hello, mtty!!"; // 13 chars: at most 15 (H11)
    for &ch in text {
        dev.write_region(&bar0, UART_RX_TX, &[ch])?;
    }
    let lsr = uart_read(&dev, &bar0, UART_LSR)?;
    ensure!(lsr & 1 == 1, "LSR {lsr:#x}: no data ready after {} chars", text.len());
    let mut back = Vec::new();
    for _ in text {
        back.push(uart_read(&dev, &bar0, UART_RX_TX)?);
    }
    ensure!(back == text, "read back {:?}", String::from_utf8_lossy(&back));
    let lsr = uart_read(&dev, &bar0, UART_LSR)?;
    ensure!(lsr == 0x60, "LSR {lsr:#x} after reading everything back");
    drop(dev);
    drop(c);
    drop(m);
    fds.check("fds leaked")?;
    println!("    {iface}: {:?} looped back TX -> RX", String::from_utf8_lossy(text));
    Ok(Outcome::Pass)
}

fn instance_outlives_its_open_device() -> TestResult {
    let m = need!(new_mtty()?);
    let dir = m.dir().to_path_buf();
    let c = container(Interface::Cdev)?;
    let dev = m.open_in(c.as_ref())?;
    // remove() refuses while a device holds the instance (the write would block: H10).
    let e = m.clone().remove().unwrap_err();
    ensure!(
        matches!(e, Error::InvalidArgument { .. }) && e.to_string().contains(&m.uuid().to_string()),
        "{e}"
    );
    drop(m);
    ensure!(dir.exists(), "the instance went while its device was open");
    dev.info()?;
    drop(dev);
    ensure!(!dir.exists(), "the instance stayed after its device closed");
    Ok(Outcome::Pass)
}

fn emulated_devices_do_not_change_detected_modes() -> TestResult {
    let _ = need!(parent("mtty"));
    let before = vfio_core::detect();
    let a = need!(new_mtty()?);
    let b = parent("mdpy")?.mdev_type("mdpy-vga")?.create(Uuid::random()?)?;
    let during = vfio_core::detect();
    ensure!(during == before, "modes {during:?} with mdevs alive, {before:?} before");
    drop((a, b));
    println!("    {before:?}");
    Ok(Outcome::Pass)
}

fn physical_container_refuses_an_mdev() -> TestResult {
    let m = need!(new_mtty()?);
    let fds = vfio_tests::FdSnapshot::take()?;
    let c = vfio_group::Container::open(Addressing::Physical)?;
    let group = Sysfs::default().device_iommu_group(&m.device_ref())?;
    let e = m.open_in(&c).unwrap_err();
    ensure!(
        matches!(e, Error::InvalidArgument { .. }) && e.to_string().contains(&format!("IOMMU group {group}")),
        "{e}"
    );
    drop(c);
    fds.check("fds leaked")?;
    Ok(Outcome::Pass)
}

fn mdev_unknown_type() -> TestResult {
    let p = need!(parent("mtty"));
    let e = p.mdev_type("mtty-9").unwrap_err();
    ensure!(
        e.errno() == Some(Errno::NOENT) && e.to_string().contains("mdev_supported_types/mtty-9"),
        "{e}"
    );
    Ok(Outcome::Pass)
}

fn mdev_past_available_instances() -> TestResult {
    let p = need!(parent("mdpy"));
    let t = p.mdev_type("mdpy-vga")?;
    let n = t.available_instances()?;
    let mut all = Vec::new();
    for _ in 0..n {
        all.push(t.create(Uuid::random()?)?);
    }
    ensure!(
        t.available_instances()? == 0,
        "available {} when full",
        t.available_instances()?
    );
    let u = Uuid::random()?;
    let e = t.create(u).unwrap_err();
    let text = e.to_string();
    ensure!(
        e.errno() == Some(Errno::USERS)
            && text.contains(&u.to_string())
            && text.contains("mdpy-vga")
            && text.contains("mdpy"),
        "{e}"
    );
    drop(all);
    ensure!(
        t.available_instances()? == n,
        "available {} after cleanup, {n} before",
        t.available_instances()?
    );
    println!("    {n} instances, then: {e}");
    Ok(Outcome::Pass)
}

fn mdev_malformed_uuid() -> TestResult {
    let p = need!(parent("mtty"));
    let t = p.mdev_type("mtty-1")?;
    let e = "not-a-uuid".parse::<Uuid>().unwrap_err();
    ensure!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    let before = t.available_instances()?;
    let raw = std::fs::write(t.dir().join("create"), "not-a-uuid").unwrap_err();
    ensure!(raw.raw_os_error() == Some(libc::EINVAL), "raw write: {raw}");
    ensure!(t.available_instances()? == before, "something was created");
    Ok(Outcome::Pass)
}

fn mdev_duplicate_uuid() -> TestResult {
    let m = need!(new_mtty()?);
    let t = parent("mtty")?.mdev_type("mtty-1")?;
    let e = t.create(m.uuid()).unwrap_err();
    ensure!(
        e.errno() == Some(Errno::EXIST) && e.to_string().contains(&m.uuid().to_string()),
        "{e}"
    );
    let e = parent("mdpy")?.mdev_type("mdpy-vga")?.create(m.uuid()).unwrap_err();
    ensure!(
        e.errno() == Some(Errno::EXIST) && e.to_string().contains("mdpy-vga"),
        "{e}"
    );
    ensure!(m.exists(), "the first instance went");
    Ok(Outcome::Pass)
}

fn mdev_removed_instance() -> TestResult {
    let m = need!(new_mtty()?);
    let (u, dir) = (m.uuid(), m.dir().to_path_buf());
    m.remove()?;
    let sysfs = Sysfs::default();
    let e = Mdev::find(&sysfs, u).unwrap_err();
    ensure!(
        e.errno() == Some(Errno::NOENT) && e.to_string().contains(&u.to_string()),
        "{e}"
    );
    for iface in [Interface::Group, Interface::Cdev] {
        let c = container(iface)?;
        let fds = vfio_tests::FdSnapshot::take()?;
        let e = c.assign(&DeviceRef::Mdev(u)).unwrap_err();
        ensure!(
            e.errno() == Some(Errno::NOENT) && e.to_string().contains(&u.to_string()),
            "{iface}: {e}"
        );
        fds.check(format!("{iface}: fds leaked"))?;
    }
    let raw = std::fs::write(dir.join("remove"), "1").unwrap_err();
    ensure!(raw.raw_os_error() == Some(libc::ENOENT), "raw second remove: {raw}");
    Ok(Outcome::Pass)
}

const XR24: u32 = 0x3432_5258;

fn mdpy_region_plane(iface: Interface) -> TestResult {
    let p = need!(parent("mdpy"));
    let m = p.mdev_type("mdpy-vga")?.create(Uuid::random()?)?;
    let (fds, maps) = (vfio_tests::FdSnapshot::take()?, vfio_tests::mapping_count()?);
    let c = container(iface)?;
    let dev = m.open_in(c.as_ref())?;
    ensure!(
        dev.gfx_plane_supported(PlaneKind::Region)?,
        "Region planes not supported"
    );
    ensure!(!dev.gfx_plane_supported(PlaneKind::Dmabuf)?, "Dmabuf planes supported");
    let plane = dev
        .query_gfx_plane(PlaneKind::Region, DrmPlaneType::Primary)?
        .ok_or("no plane")?;
    ensure!(
        (plane.drm_format, plane.width, plane.height, plane.stride, plane.size) == (XR24, 640, 480, 2560, 0x20_0000)
            && plane.source == PlaneSource::Region(16),
        "{plane:?}"
    );
    let r16 = dev.region_info(16)?;
    ensure!(
        r16.size == 0x20_0000 && r16.flags.contains(RegionFlags::MMAP),
        "region 16 {r16:?}"
    );
    // The framebuffer only through mmap (H6).
    let fb = dev.map_region(&r16)?;
    let gradient_ok = |fb: &vfio_core::MappedRegion| -> vfio_core::Result<bool> {
        for y in [0usize, 1, 240, 479] {
            let mut row = [0u8; 16];
            fb.read_bytes(y as u64 * 2560, &mut row)?;
            if row != [(y * 255 / 480) as u8; 16] {
                return Ok(false);
            }
        }
        Ok(true)
    };
    ensure!(gradient_ok(&fb)?, "the framebuffer does not hold the gray gradient");
    let pattern: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 1) as u8).collect();
    fb.write_bytes(0, &pattern)?;
    let bar0 = dev.map_region(&dev.region_info(0)?)?;
    let mut back = vec![0u8; pattern.len()];
    bar0.read_bytes(0, &mut back)?;
    ensure!(back == pattern, "BAR0 does not show what region 16 was written");
    dev.reset()?;
    ensure!(gradient_ok(&fb)?, "reset did not restore the gradient");
    let e = dev.gfx_dmabuf(DmabufId(std::num::NonZeroU32::MIN)).unwrap_err();
    ensure!(e.errno() == Some(Errno::NOTTY), "mdpy dma-buf: {e}");
    drop((fb, bar0, dev, c, m));
    fds.check("fds leaked")?;
    ensure!(vfio_tests::mapping_count()? == maps, "mappings leaked");
    println!(
        "    {iface}: {}x{} XR24 in region 16, gradient, BAR0 alias, reset",
        plane.width, plane.height
    );
    Ok(Outcome::Pass)
}

fn mmio16(dev: &Device, r: &vfio_core::RegionInfo, at: u64, v: u16) -> vfio_core::Result<()> {
    dev.write_region(r, at, &v.to_le_bytes())
}

fn mbochs_dmabuf_plane(iface: Interface) -> TestResult {
    let p = need!(parent("mbochs"));
    let m = p.mdev_type("mbochs-small")?.create(Uuid::random()?)?;
    let (fds, maps) = (vfio_tests::FdSnapshot::take()?, vfio_tests::mapping_count()?);
    let c = container(iface)?;
    let dev = m.open_in(c.as_ref())?;
    ensure!(
        dev.gfx_plane_supported(PlaneKind::Dmabuf)?,
        "Dmabuf planes not supported"
    );
    ensure!(!dev.gfx_plane_supported(PlaneKind::Region)?, "Region planes supported");
    // No mode set yet: no plane.
    let none = dev.query_gfx_plane(PlaneKind::Dmabuf, DrmPlaneType::Primary)?;
    ensure!(none.is_none(), "a plane before any mode: {none:?}");
    let mmio = dev.region_info(2)?;
    let mut id = [0u8; 2];
    dev.read_region(&mmio, 0x500, &mut id)?;
    ensure!(
        u16::from_le_bytes(id) == 0xB0C5,
        "bochs ID {:#x}",
        u16::from_le_bytes(id)
    );
    for (reg, v) in [(0x502, 64), (0x504, 64), (0x506, 32), (0x508, 0x41)] {
        mmio16(&dev, &mmio, reg, v)?;
    }
    // VRAM only through mmap (H5).
    let vram = MappedRegion::new(dev.clone(), &dev.region_info(0)?, 0, 0x4000)?;
    let pattern: Vec<u8> = (0..4096u32)
        .flat_map(|i| i.wrapping_mul(0x0001_0203).to_le_bytes())
        .collect();
    vram.write_bytes(0, &pattern)?;
    let plane = dev
        .query_gfx_plane(PlaneKind::Dmabuf, DrmPlaneType::Primary)?
        .ok_or("no plane after ENABLE")?;
    ensure!(
        (plane.drm_format, plane.width, plane.height, plane.stride, plane.size) == (XR24, 64, 64, 256, 0x4000),
        "{plane:?}"
    );
    let cursor = dev.query_gfx_plane(PlaneKind::Dmabuf, DrmPlaneType::Cursor)?;
    ensure!(cursor.is_none(), "a cursor plane: {cursor:?}");
    let PlaneSource::Dmabuf(bufid) = plane.source else {
        return Err(format!("source {:?}", plane.source).into());
    };
    let buf = dev.gfx_dmabuf(bufid)?;
    let fdflags = rustix::io::fcntl_getfd(&buf)?;
    ensure!(
        fdflags.contains(rustix::io::FdFlags::CLOEXEC),
        "the dma-buf fd is not close-on-exec"
    );
    ensure!(buf.len() == 0x4000, "dma-buf size {:#x}", buf.len());
    // mbochs exports a read-only fd (dma_buf_fd(buf, 0)); the kernel makes a shared
    // mapping of a read-only file private, and mbochs maps shared mappings only: no CPU
    // mapping of its dma-bufs exists. The typed error says so.
    ensure!(!buf.is_writable()?, "mbochs' dma-buf fd is writable");
    let e = buf.map().unwrap_err();
    ensure!(matches!(e, Error::Unsupported { .. }), "map of mbochs' dma-buf: {e}");
    // A second export of the same plane is the same buffer.
    let again = dev.gfx_dmabuf(bufid)?;
    let (a, b) = (rustix::fs::fstat(&buf)?, rustix::fs::fstat(&again)?);
    ensure!(a.st_ino == b.st_ino, "two exports of one plane are different buffers");
    drop(again);
    // The pattern stays in VRAM, read back through its mapping.
    let mut back = vec![0u8; pattern.len()];
    vram.read_bytes(0, &mut back)?;
    ensure!(back == pattern, "VRAM does not hold the pattern");
    let e = dev
        .gfx_dmabuf(DmabufId(std::num::NonZeroU32::new(99).unwrap()))
        .unwrap_err();
    ensure!(e.errno() == Some(Errno::NOENT), "unknown dma-buf id: {e}");
    drop((buf, vram, dev, c, m));
    fds.check("fds leaked")?;
    ensure!(vfio_tests::mapping_count()? == maps, "mappings leaked");
    println!(
        "    {iface}: 64x64 XR24 plane, read-only dma-buf {} (cloexec, {:#x} bytes; no CPU mapping: Unsupported)",
        bufid.0, 0x4000
    );
    Ok(Outcome::Pass)
}

fn inventory_lists_mdevs() -> TestResult {
    let m = need!(new_mtty()?);
    let sysfs = Sysfs::default();
    let parents = vfio_pci::inventory::mdev_parents(&sysfs)?;
    let p = parents
        .iter()
        .find(|p| p.name == "mtty")
        .ok_or("no mtty parent listed")?;
    let t = p.types.iter().find(|t| t.id == "mtty-1").ok_or("no mtty-1 listed")?;
    let avail = parent("mtty")?.mdev_type("mtty-1")?.available_instances()?;
    ensure!(
        t.available == avail && t.name == "Single port serial" && t.device_api == "vfio-pci" && t.description.is_none(),
        "{t:?}"
    );
    let i = p
        .instances
        .iter()
        .find(|i| i.uuid == m.uuid())
        .ok_or("the instance is not listed")?;
    let group = sysfs.device_iommu_group(&m.device_ref())?;
    ensure!(
        i.type_id == "mtty-1"
            && i.driver.as_deref() == Some("mtty")
            && i.iommu_group == Some(group)
            && i.cdev.is_some(),
        "{i:?}"
    );
    ensure!(
        i.modes.contains(&vfio_core::Mode::CDEV) && i.modes.contains(&vfio_core::Mode::GROUP),
        "modes {:?}",
        i.modes
    );
    println!(
        "    {} group {group} cdev {} modes {:?}",
        i.uuid,
        i.cdev.as_ref().map_or("-", |c| c.name.as_str()),
        i.modes
    );
    Ok(Outcome::Pass)
}

fn mtty_rx_interrupt_on_intx() -> TestResult {
    use std::os::fd::AsFd;
    use std::time::Duration;
    use vfio_core::{EventFd, IrqSet};
    let m = need!(new_mtty()?);
    let fds = vfio_tests::FdSnapshot::take()?;
    let c = container(Interface::Cdev)?;
    // open_in asked GET_INFO first: without it mtty refuses every IRQ request (H9).
    let dev = m.open_in(c.as_ref())?;
    let bar0 = dev.region_info(0)?;
    let irq = EventFd::new()?;
    dev.set_irqs(&IrqSet::eventfds(0, 0, [Some(irq.as_fd())]))?;
    // FCR: enable and clear the FIFO; this sets the trigger level to 1 (it is 0, so never
    // reached, until FCR is written).
    dev.write_region(&bar0, 2, &[0x07])?;
    dev.write_region(&bar0, 1, &[0x01])?; // IER: receive-data interrupt
    let short = Duration::from_millis(200);
    dev.write_region(&bar0, UART_RX_TX, b"a")?;
    ensure!(
        irq.wait_timeout(Duration::from_secs(2))?.is_some(),
        "no INTx for the first char"
    );
    ensure!(uart_read(&dev, &bar0, UART_RX_TX)? == b'a', "RX");
    // INTx is automasked now: the next char that reaches the trigger level does not signal.
    dev.write_region(&bar0, UART_RX_TX, b"b")?;
    ensure!(irq.wait_timeout(short)?.is_none(), "INTx signalled while masked");
    ensure!(uart_read(&dev, &bar0, UART_RX_TX)? == b'b', "RX");
    dev.set_irqs(&IrqSet::unmask(0, 0, 1))?;
    dev.write_region(&bar0, UART_RX_TX, b"c")?;
    ensure!(
        irq.wait_timeout(Duration::from_secs(2))?.is_some(),
        "no INTx after unmask"
    );
    ensure!(uart_read(&dev, &bar0, UART_RX_TX)? == b'c', "RX");
    dev.set_irqs(&IrqSet::disable(0))?;
    drop((dev, c, m, irq));
    fds.check("fds leaked")?;
    Ok(Outcome::Pass)
}

fn cdev_bind_gives_an_access() -> TestResult {
    let m = need!(new_mtty()?);
    let fds = vfio_tests::FdSnapshot::take()?;
    let c = vfio_cdev::Container::new()?;
    let dev = c.bind_device_ref(&m.device_ref())?;
    ensure!(
        dev.is_emulated() && !dev.is_noiommu(),
        "emulated {} noiommu {}",
        dev.is_emulated(),
        dev.is_noiommu()
    );
    // The bind id names an iommufd access: the typed call refuses, the kernel says ENOENT.
    let e = dev.hw_info().unwrap_err();
    ensure!(matches!(e, Error::Unsupported { .. }), "hw_info: {e}");
    let raw = dev.iommufd().hw_info(dev.devid()).unwrap_err();
    ensure!(raw.errno() == Some(Errno::NOENT), "raw IOMMU_GET_HW_INFO: {raw}");
    // An id that is no IOAS: ENOENT. A second IOAS replaces the first; detach works.
    let e = dev.attach(vfio_cdev::IoasId::from(0xdead)).unwrap_err();
    ensure!(e.errno() == Some(Errno::NOENT), "attach to no object: {e}");
    let c2 = vfio_cdev::Container::with_iommufd(dev.iommufd(), Addressing::Iova)?;
    let pt = c2.attach(&dev)?;
    ensure!(
        pt.get() == c2.ioas().id().get(),
        "attach answered {pt}, IOAS is {}",
        c2.ioas().id()
    );
    dev.detach()?;
    c.attach(&dev)?;
    let d = dev.device(None)?;
    ensure!(d.info()?.num_irqs == 5, "GET_INFO after re-attach");
    drop((d, dev, c2, c, m));
    fds.check("fds leaked")?;
    Ok(Outcome::Pass)
}

fn main() -> ExitCode {
    vfio_tests::run(&[
        ("parents_types_and_counts", parents_types_and_counts),
        ("create_lists_and_drop_removes", create_lists_and_drop_removes),
        ("mtty_info_regions_irqs_group", || {
            mtty_info_regions_irqs(Interface::Group)
        }),
        ("mtty_info_regions_irqs_cdev", || {
            mtty_info_regions_irqs(Interface::Cdev)
        }),
        ("mtty_uart_loopback_group", || mtty_uart_loopback(Interface::Group)),
        ("mtty_uart_loopback_cdev", || mtty_uart_loopback(Interface::Cdev)),
        ("mtty_rx_interrupt_on_intx", mtty_rx_interrupt_on_intx),
        ("cdev_bind_gives_an_access", cdev_bind_gives_an_access),
        ("instance_outlives_its_open_device", instance_outlives_its_open_device),
        (
            "emulated_devices_do_not_change_detected_modes",
            emulated_devices_do_not_change_detected_modes,
        ),
        ("physical_container_refuses_an_mdev", physical_container_refuses_an_mdev),
        ("mdev_unknown_type", mdev_unknown_type),
        ("mdev_past_available_instances", mdev_past_available_instances),
        ("mdev_malformed_uuid", mdev_malformed_uuid),
        ("mdev_duplicate_uuid", mdev_duplicate_uuid),
        ("mdev_removed_instance", mdev_removed_instance),
        ("inventory_lists_mdevs", inventory_lists_mdevs),
        ("mdpy_region_plane_group", || mdpy_region_plane(Interface::Group)),
        ("mdpy_region_plane_cdev", || mdpy_region_plane(Interface::Cdev)),
        ("mbochs_dmabuf_plane_group", || mbochs_dmabuf_plane(Interface::Group)),
        ("mbochs_dmabuf_plane_cdev", || mbochs_dmabuf_plane(Interface::Cdev)),
    ])
}
