//! vfio-core against real devices: region capability chains and sparse mmap (nvme BAR0 and its
//! MSI-X table), INTx with automask and unmask (edu), IRQ info, device feature probing, and the
//! errors for indexes the device does not have.

use std::os::fd::AsFd;
use std::process::ExitCode;
use std::time::Duration;

use vfio_core::{
    Backing, DmaAccess, DmaBuffer, DmaPool, Errno, EventFd, FeatureAccess, IovaRange, IrqFlags, IrqSet, Sysfs,
};
use vfio_pci::PciDevice;
use vfio_tests::edu::{Direction, Edu};
use vfio_tests::{Outcome, TestResult, device_from_env, ensure, skip};

fn open(var: &str) -> Result<PciDevice, String> {
    let addr = device_from_env(var)?;
    PciDevice::open(&addr, None).map_err(|e| format!("open {addr}: {e}"))
}

macro_rules! open_or_skip {
    ($var:expr) => {
        match device_from_env($var) {
            Err(why) => return skip(why),
            Ok(_) => open($var)?,
        }
    };
}

/// Where the MSI-X table lives: BAR, offset and size.
struct MsixTable(u32, u64, u64);

/// The MSI-X table from the MSI-X capability in config space.
fn msix_table(dev: &PciDevice) -> Result<Option<MsixTable>, Box<dyn std::error::Error>> {
    let mut ptr = dev.config_read8(0x34)? & !3;
    for _ in 0..48 {
        if ptr == 0 {
            return Ok(None);
        }
        let id = dev.config_read8(ptr as u16)?;
        if id == 0x11 {
            let ctrl = dev.config_read16(ptr as u16 + 2)?;
            let table = dev.config_read32(ptr as u16 + 4)?;
            let entries = (ctrl & 0x7ff) as u64 + 1;
            return Ok(Some(MsixTable(table & 7, (table & !7) as u64, entries * 16)));
        }
        ptr = dev.config_read8(ptr as u16 + 1)? & !3;
    }
    Err("capability list does not end".into())
}

fn nvme_bar0_areas_avoid_the_msix_table() -> TestResult {
    let dev = open_or_skip!("VFIO_TEST_NVME");
    let bar0 = dev.device().region_info(0)?;
    let MsixTable(bir, off, len) = msix_table(&dev)?.ok_or("nvme has no MSI-X capability")?;
    ensure!(bir == 0, "QEMU nvme keeps its MSI-X table in BAR0, found BAR{bir}");
    let areas = bar0.mmap_areas();
    ensure!(!areas.is_empty(), "BAR0 has no mmappable area: {bar0:?}");
    if !bar0.msix_mappable() {
        for a in &areas {
            ensure!(
                a.offset + a.size <= off || a.offset >= off + len,
                "area {a:?} overlaps the MSI-X table at {off:#x}+{len:#x}"
            );
        }
    }
    let maps = dev.device().map_region_areas(&bar0)?;
    let first = &maps[0];
    ensure!(
        first.region_offset() == 0,
        "first area starts at {:#x}",
        first.region_offset()
    );
    // NVMe CAP register: bits 37:44 (CSS) has NVM command set support (bit 37).
    let cap = first.read64(0)?;
    ensure!(cap & (1 << 37) != 0, "NVMe CAP {cap:#x} lacks the NVM command set bit");
    println!(
        "    BAR0 {:#x} bytes, msix table at {off:#x}+{len:#x}, msix_mappable={}, areas {areas:x?}",
        bar0.size,
        bar0.msix_mappable()
    );
    Ok(Outcome::Pass)
}

fn whole_region_map_of_a_sparse_bar_is_refused() -> TestResult {
    let dev = open_or_skip!("VFIO_TEST_NVME");
    let bar0 = dev.device().region_info(0)?;
    let sparse = bar0
        .caps
        .iter()
        .any(|c| matches!(c, vfio_core::RegionCap::SparseMmap(_)));
    if !sparse {
        return skip("BAR0 has no sparse-mmap capability here: this kernel reports its MSI-X table mappable");
    }
    let e = dev
        .device()
        .map_region(&bar0)
        .err()
        .ok_or("mapping a sparse BAR whole succeeded")?;
    ensure!(
        matches!(e, vfio_core::Error::Unsupported { .. }),
        "unexpected error {e}"
    );
    Ok(Outcome::Pass)
}

fn region_info_of_a_missing_index_is_einval() -> TestResult {
    let dev = open_or_skip!("VFIO_TEST_EDU");
    let info = dev.device().info()?;
    let e = dev
        .device()
        .region_info(info.num_regions + 5)
        .err()
        .ok_or("region info past num_regions succeeded")?;
    ensure!(e.errno() == Some(Errno::INVAL), "expected EINVAL, got {e}");
    ensure!(
        e.to_string().contains(&dev.address().to_string()),
        "error does not name the device: {e}"
    );
    Ok(Outcome::Pass)
}

fn edu_irq_info_has_intx_and_one_msi() -> TestResult {
    let dev = open_or_skip!("VFIO_TEST_EDU");
    let intx = dev.device().irq_info(vfio_pci::INTX_IRQ)?;
    ensure!(intx.count == 1, "INTx count {}", intx.count);
    ensure!(
        intx.flags
            .contains(IrqFlags::EVENTFD | IrqFlags::MASKABLE | IrqFlags::AUTOMASKED),
        "INTx flags {:?}",
        intx.flags
    );
    let msi = dev.device().irq_info(vfio_pci::MSI_IRQ)?;
    ensure!(msi.count == 1 && msi.flags.contains(IrqFlags::EVENTFD), "MSI {msi:?}");
    let msix = dev.device().irq_info(vfio_pci::MSIX_IRQ)?;
    ensure!(msix.count == 0, "edu has no MSI-X, got {msix:?}");
    Ok(Outcome::Pass)
}

fn edu_intx_is_automasked_until_unmasked() -> TestResult {
    let dev = open_or_skip!("VFIO_TEST_EDU");
    let bar0 = dev.bar(0)?;
    let irq = EventFd::new()?;
    dev.device()
        .set_irqs(&IrqSet::eventfds(vfio_pci::INTX_IRQ, 0, [irq.as_fd()]))?;
    // Raise, get it, acknowledge at the device: the kernel keeps the line masked.
    bar0.write32(0x60, 1)?;
    ensure!(
        irq.wait_timeout(Duration::from_secs(10))?.is_some(),
        "first INTx did not arrive"
    );
    bar0.write32(0x64, 1)?;
    bar0.write32(0x60, 2)?;
    ensure!(
        irq.wait_timeout(Duration::from_millis(300))?.is_none(),
        "INTx arrived while automasked"
    );
    // Unmasking delivers the pending level interrupt.
    dev.device().set_irqs(&IrqSet::unmask(vfio_pci::INTX_IRQ, 0, 1))?;
    ensure!(
        irq.wait_timeout(Duration::from_secs(10))?.is_some(),
        "INTx did not arrive after unmask"
    );
    bar0.write32(0x64, 2)?;
    dev.device().set_irqs(&IrqSet::unmask(vfio_pci::INTX_IRQ, 0, 1))?;
    dev.disable_irq(vfio_pci::INTX_IRQ)?;
    Ok(Outcome::Pass)
}

fn msi_vectors_beyond_the_count_are_einval() -> TestResult {
    let dev = open_or_skip!("VFIO_TEST_EDU");
    let (a, b) = (EventFd::new()?, EventFd::new()?);
    let e = dev
        .enable_msi([&a, &b])
        .err()
        .ok_or("enabling 2 MSI vectors on a 1-vector device succeeded")?;
    ensure!(e.errno() == Some(Errno::INVAL), "expected EINVAL, got {e}");
    Ok(Outcome::Pass)
}

fn feature_probe_reports_unsupported_as_false() -> TestResult {
    let dev = open_or_skip!("VFIO_TEST_EDU");
    let migration = dev
        .device()
        .feature_probe(vfio_sys::VFIO_DEVICE_FEATURE_MIGRATION, FeatureAccess::GET)?;
    ensure!(!migration, "edu claims migration support");
    ensure!(
        !dev.device()
            .feature_probe(0xfff0, FeatureAccess::GET | FeatureAccess::SET)?,
        "unknown feature probed as supported"
    );
    let e = dev
        .device()
        .feature_probe(0x1_0000, FeatureAccess::GET)
        .err()
        .ok_or("feature above 16 bits accepted")?;
    ensure!(matches!(e, vfio_core::Error::InvalidArgument { .. }), "{e}");
    // The typed features vfio-pci does not offer on a plain function: three-way probe says so,
    // and the typed calls come back with the kernel's ENOTTY (or Unsupported off s390).
    let d = dev.device();
    for f in [
        vfio_sys::VFIO_DEVICE_FEATURE_BUS_MASTER,
        vfio_sys::VFIO_DEVICE_FEATURE_PCI_VF_TOKEN,
    ] {
        let s = d.feature_support(f, FeatureAccess::SET);
        ensure!(matches!(s, vfio_core::FeatureSupport::NotOffered), "feature {f}: {s:?}");
    }
    let s = d.feature_support(vfio_sys::VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY, FeatureAccess::SET);
    ensure!(s.is_supported(), "LOW_POWER_ENTRY: {s:?}");
    let e = d.set_bus_master(true).err().ok_or("BUS_MASTER set on vfio-pci")?;
    ensure!(e.errno() == Some(Errno::NOTTY), "BUS_MASTER gave {e}");
    let token: vfio_core::Uuid = "83b8f4f2-509f-382f-3c1e-e6bfe0fa1001".parse()?;
    let e = d
        .set_vf_token(&token)
        .err()
        .ok_or("VF token set on a function without SR-IOV")?;
    ensure!(e.errno() == Some(Errno::NOTTY), "VF token gave {e}");
    let e = d.zpci_error().err().ok_or("zPCI error report off s390")?;
    ensure!(matches!(e, vfio_core::Error::Unsupported { .. }), "zPCI gave {e}");
    Ok(Outcome::Pass)
}

/// The low-power features of vfio-pci are SET-only: probe says so, GET is EINVAL, entering twice
/// is EINVAL, and after the exit the device (and a BAR mapping the kernel zapped on entry) works.
fn low_power_feature_set_and_get_contracts() -> TestResult {
    use vfio_sys::{
        VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY as ENTRY, VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP as WAKEUP,
    };
    let dev = open_or_skip!("VFIO_TEST_EDU");
    let d = dev.device();
    ensure!(
        d.feature_probe(ENTRY, FeatureAccess::SET)?,
        "LOW_POWER_ENTRY SET not offered"
    );
    ensure!(
        !d.feature_probe(ENTRY, FeatureAccess::GET)?,
        "LOW_POWER_ENTRY GET offered"
    );
    let bar0 = dev.bar(0)?;
    ensure!(bar0.read32(0)? == 0x010000ed, "edu id before low power");
    // SAFETY: LOW_POWER_ENTRY has no payload.
    let e = unsafe { d.feature_get(ENTRY, &mut []) }
        .err()
        .ok_or("GET of a SET-only feature succeeded")?;
    ensure!(e.errno() == Some(rustix::io::Errno::INVAL), "GET gave {e}");
    // Entry is refused while a BAR mapping is live (its accesses would SIGBUS until the exit).
    let e = d.low_power_enter().err().ok_or("entered low power with BAR0 mapped")?;
    ensure!(
        matches!(e, vfio_core::Error::InvalidArgument { .. }),
        "entry while mapped gave {e}"
    );
    drop(bar0);
    d.low_power_enter()?;
    let e = d.low_power_enter().err().ok_or("entered low power twice")?;
    ensure!(e.errno() == Some(rustix::io::Errno::INVAL), "second entry gave {e}");
    d.low_power_exit()?;
    let bar0 = dev.bar(0)?;
    ensure!(
        bar0.read32(0)? == 0x010000ed,
        "edu id through a new mapping after low power"
    );
    drop(bar0);
    // With a wakeup eventfd (borrowed: the typed call takes no raw fd number).
    let wake = EventFd::new()?;
    d.low_power_enter_with_wakeup(wake.as_fd())?;
    d.low_power_exit()?;
    // The raw form with fd -1: the kernel refuses it.
    let mut bad = (-1i32)
        .to_ne_bytes()
        .into_iter()
        .chain(0u32.to_ne_bytes())
        .collect::<Vec<u8>>();
    // SAFETY: the payload is the wakeup struct with no pointer; fd -1 is refused.
    let e = unsafe { d.feature_set(WAKEUP, &mut bad) }
        .err()
        .ok_or("wakeup eventfd -1 accepted")?;
    ensure!(e.errno() == Some(rustix::io::Errno::INVAL), "eventfd -1 gave {e}");
    ensure!(dev.config_read16(0)? == 0x1234, "config space after low power");
    Ok(Outcome::Pass)
}

fn dma_pool_translates_per_io_without_mapping() -> TestResult {
    let dev = open_or_skip!("VFIO_TEST_EDU");
    let container = vfio_pci::default_container(dev.mode())?;
    // edu's DMA mask is 28 bits: only hand out IOVAs below 256 MiB.
    let ranges: Vec<IovaRange> = container
        .iova_ranges()?
        .into_iter()
        .filter(|r| r.start < 0x1000_0000)
        .map(|r| IovaRange {
            start: r.start,
            last: r.last.min(0x0fff_ffff),
        })
        .collect();
    let mut pool = DmaPool::with_ranges(&*container, &ranges);
    let src = pool.alloc(4096, DmaAccess::READ)?;
    // One page each: without an IOMMU a buffer must be physically contiguous.
    let dst = pool.alloc(4096, DmaAccess::WRITE)?;
    let pattern: Vec<u8> = (0..100u32).map(|i| (i * 13) as u8).collect();
    pool.buffer(src)?.write(0x100, &pattern)?;
    dev.enable_bus_master()?;
    let irq = EventFd::new()?;
    dev.enable_msi([&irq])?;
    let edu = Edu::new(dev)?;
    // Per I/O only translations, no map/unmap: the buffers were mapped once by the pool.
    let from = pool
        .translate(pool.buffer(src)?.as_ptr().wrapping_add(0x100), pattern.len())
        .ok_or("no translation")?;
    let to = pool.device_addr(dst, 0x800)?;
    ensure!(
        from == pool.device_addr(src, 0x100)?,
        "translate and device_addr disagree"
    );
    edu.dma(Direction::ToDevice, from, pattern.len() as u64, &irq)?;
    edu.dma(Direction::FromDevice, to, pattern.len() as u64, &irq)?;
    let mut out = vec![0u8; pattern.len()];
    pool.buffer(dst)?.read(0x800, &mut out)?;
    ensure!(out == pattern, "bytes differ after the round trip through pool buffers");
    ensure!(
        pool.translate(pool.buffer(src)?.as_ptr(), 4097).is_none(),
        "translated past a buffer's end"
    );
    pool.free(src)?;
    ensure!(pool.buffer(src).is_err(), "freed buffer still reachable");
    edu.pci.disable_irq(vfio_pci::MSI_IRQ)?;
    Ok(Outcome::Pass)
}

fn sysfs_unbinds_and_rebinds_nvme() -> TestResult {
    let addr = match device_from_env("VFIO_TEST_NVME") {
        Ok(a) => a,
        Err(why) => return skip(why),
    };
    let s = Sysfs::default();
    let id = s.identity(&addr)?;
    ensure!(
        (id.vendor, id.device, id.class) == (0x1b36, 0x0010, 0x010802),
        "identity {id:x?}"
    );
    let group = s.iommu_group(&addr)?;
    ensure!(
        s.group_devices(group)?.contains(&addr),
        "group {group} does not list {addr}"
    );
    ensure!(
        s.driver(&addr)?.as_deref() == Some("vfio-pci"),
        "not bound to vfio-pci at start"
    );
    s.restore_driver(&addr, None)?;
    ensure!(s.driver(&addr)?.is_none(), "still bound after restore_driver(None)");
    let e = PciDevice::open(&addr, None)
        .err()
        .ok_or("opened a device bound to no driver")?;
    ensure!(
        e.to_string().contains("not bound to any driver"),
        "unhelpful error: {e}"
    );
    let previous = s.bind_vfio_pci(&addr)?;
    ensure!(previous.is_none(), "previous driver {previous:?}");
    ensure!(
        s.driver(&addr)?.as_deref() == Some("vfio-pci"),
        "bind_vfio_pci did not bind"
    );
    let dev = PciDevice::open(&addr, None)?;
    ensure!(dev.ids()? == (0x1b36, 0x0010), "ids after rebinding");
    Ok(Outcome::Pass)
}

fn hugetlb_2m_buffer_takes_dma() -> TestResult {
    let dev = open_or_skip!("VFIO_TEST_EDU");
    let container = vfio_pci::default_container(dev.mode())?;
    let mut pool = DmaPool::with_ranges(
        &*container,
        &[IovaRange {
            start: 0,
            last: 0x0fff_ffff,
        }],
    );
    let buf = match pool.alloc_with(2 << 20, Backing::Huge2M, DmaAccess::READ_WRITE) {
        Err(e @ vfio_core::Error::Unsupported { .. }) => return skip(format!("no 2 MiB huge pages: {e}")),
        other => other?,
    };
    let b = pool.buffer(buf)?;
    ensure!(
        b.len() == 2 << 20 && b.as_ptr() as usize % (2 << 20) == 0,
        "not one aligned 2 MiB page"
    );
    let pattern: Vec<u8> = (0..4000u32).map(|i| (i % 251) as u8).collect();
    b.write(0x10_0000, &pattern)?;
    dev.enable_bus_master()?;
    let irq = EventFd::new()?;
    dev.enable_msi([&irq])?;
    let edu = Edu::new(dev)?;
    edu.dma(
        Direction::ToDevice,
        pool.device_addr(buf, 0x10_0000)?,
        pattern.len() as u64,
        &irq,
    )?;
    edu.dma(
        Direction::FromDevice,
        pool.device_addr(buf, 0x1f_0000)?,
        pattern.len() as u64,
        &irq,
    )?;
    let mut out = vec![0u8; pattern.len()];
    pool.buffer(buf)?.read(0x1f_0000, &mut out)?;
    ensure!(out == pattern, "bytes differ in the huge page");
    edu.pci.disable_irq(vfio_pci::MSI_IRQ)?;
    Ok(Outcome::Pass)
}

fn hugetlb_1g_without_reservation_is_a_clear_error() -> TestResult {
    match DmaBuffer::with_backing(1 << 30, Backing::Huge1G) {
        Ok(_) => skip("1 GiB huge pages are reserved on this machine"),
        Err(e @ vfio_core::Error::Unsupported { .. }) => {
            ensure!(
                e.to_string().contains("hugepages-1048576kB"),
                "error does not name the huge page pool: {e}"
            );
            Ok(Outcome::Pass)
        }
        Err(e) => Err(format!("expected Unsupported, got {e}").into()),
    }
}

fn modes_match_the_machine() -> TestResult {
    let Ok(iommu) = std::env::var("VFIO_TEST_IOMMU") else {
        return skip("VFIO_TEST_IOMMU is not set (only the guest harness knows which IOMMU the machine has)");
    };
    let m = vfio_core::detect();
    let no_iommu = iommu == "none";
    // Whether the kernel has cdev mode, from sysfs rather than from the /dev nodes detect()
    // looks at: iommufd registers the misc device `iommu`, and with CONFIG_VFIO_DEVICE_CDEV
    // every VFIO device (the harness binds several) has a character device, a `dev` attribute.
    let iommufd = std::path::Path::new("/sys/class/misc/iommu").exists();
    let vfio_cdevs = std::fs::read_dir("/sys/class/vfio-dev")
        .map(|d| d.flatten().any(|e| e.path().join("dev").exists()))
        .unwrap_or(false);
    let cdev = iommufd && vfio_cdevs;
    // The cdev interface serves IOMMU devices, or (Linux 7.3) no-IOMMU ones as noiommu-vfioN.
    ensure!(
        m.cdev == (cdev && !no_iommu) && m.cdev_noiommu == (cdev && no_iommu),
        "IOMMU {iommu}: detected {m:?}, but sysfs shows iommufd={iommufd} and VFIO device cdevs={vfio_cdevs}"
    );
    ensure!(
        m.group != no_iommu && m.group_noiommu == no_iommu,
        "IOMMU {iommu} but detected {m:?}"
    );
    // VFIO_RS_MODE (e.g. `--append VFIO_RS_MODE=group`) forces the choice.
    let forced = std::env::var(vfio_core::MODE_ENV).ok();
    let interface = if cdev {
        vfio_core::Interface::Cdev
    } else {
        vfio_core::Interface::Group
    };
    let addressing = if no_iommu {
        vfio_core::Addressing::Physical
    } else {
        vfio_core::Addressing::Iova
    };
    let want = match forced.as_deref() {
        Some("noiommu") => vfio_core::Mode::new(interface, vfio_core::Addressing::Physical),
        Some(f) => f.parse::<vfio_core::Mode>()?,
        None => vfio_core::Mode::new(interface, addressing),
    };
    let preferred = vfio_core::preferred()?;
    ensure!(preferred == want, "preferred mode is {preferred}, expected {want}");
    println!("    IOMMU {iommu}: {m:?}, preferred {preferred}");
    Ok(Outcome::Pass)
}

fn irq_trigger_loopback_signals_the_eventfd() -> TestResult {
    let dev = open_or_skip!("VFIO_TEST_EDU");
    let irq = EventFd::new()?;
    dev.enable_msi([&irq])?;
    // DATA_NONE + ACTION_TRIGGER: the kernel fires the vector itself (user-space loopback).
    let fire = vfio_core::IrqSet::trigger(vfio_pci::MSI_IRQ, 0, 1);
    dev.device().set_irqs(&fire)?;
    ensure!(
        irq.wait_timeout(Duration::from_secs(5))?.is_some(),
        "loopback trigger did not signal"
    );
    let fire_bool = vfio_core::IrqSet::trigger_some(vfio_pci::MSI_IRQ, 0, &[true]);
    dev.device().set_irqs(&fire_bool)?;
    ensure!(
        irq.wait_timeout(Duration::from_secs(5))?.is_some(),
        "DATA_BOOL trigger did not signal"
    );
    dev.disable_irq(vfio_pci::MSI_IRQ)?;
    Ok(Outcome::Pass)
}

fn nvme_function_reset_clears_registers() -> TestResult {
    let dev = open_or_skip!("VFIO_TEST_NVME");
    let info = dev.device().info()?;
    ensure!(
        info.flags.contains(vfio_core::DeviceFlags::RESET),
        "nvme does not offer VFIO_DEVICE_RESET: {info:?}"
    );
    let bar0 = dev.bar(0)?;
    // CC (controller configuration) takes queue entry sizes while the controller is disabled;
    // a function reset returns it to 0.
    bar0.write32(0x14, 0x0046_0000)?;
    ensure!(bar0.read32(0x14)? == 0x0046_0000, "CC did not take the write");
    dev.device().reset()?;
    let cc = bar0.read32(0x14)?;
    ensure!(cc == 0, "CC is {cc:#x} after reset, expected 0");
    Ok(Outcome::Pass)
}

fn hot_reset_of_a_root_bus_device_is_enodev() -> TestResult {
    let dev = open_or_skip!("VFIO_TEST_EDU");
    if dev.address().bus != 0 {
        return skip("the device is not on a root bus here");
    }
    let e = dev
        .device()
        .hot_reset_info()
        .err()
        .ok_or("hot reset info on a root-bus device succeeded")?;
    ensure!(e.errno() == Some(Errno::NODEV), "expected ENODEV, got {e}");
    ensure!(
        e.to_string().contains(&dev.address().to_string()),
        "error does not name the device: {e}"
    );
    let e = dev
        .device()
        .hot_reset(&[])
        .err()
        .ok_or("hot reset of a root-bus device succeeded")?;
    ensure!(e.errno().is_some(), "expected a kernel errno, got {e}");
    Ok(Outcome::Pass)
}

fn container_page_sizes_include_4k() -> TestResult {
    let dev = open_or_skip!("VFIO_TEST_EDU");
    let c = vfio_pci::default_container(dev.mode())?;
    let sizes = c.page_sizes()?;
    ensure!(
        sizes & 0xfff == 0 && sizes & 0x1000 != 0,
        "page sizes {sizes:#x}: 4 KiB must be the smallest"
    );
    println!("    {} container page sizes {sizes:#x}", dev.mode());
    Ok(Outcome::Pass)
}

/// VFIO_DEVICE_IOEVENTFD on edu's liveness register (0x04 reads back the complement of what was
/// written): signalling the eventfd makes the kernel write the value; after removal it does not;
/// a second registration of the same offset, width and value is EEXIST, a non-BAR region and an
/// access past the BAR are refused.
fn ioeventfd_writes_the_register_when_signalled() -> TestResult {
    let dev = open_or_skip!("VFIO_TEST_EDU");
    let d = dev.device();
    let bar0_info = d.region_info(0)?;
    let bar0 = dev.bar(0)?;
    let wait_for = |want: u32| -> Result<bool, vfio_core::Error> {
        let t = std::time::Instant::now();
        while t.elapsed() < Duration::from_secs(5) {
            if bar0.read32(4)? == want {
                return Ok(true);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(false)
    };
    bar0.write32(4, 0)?;
    let doorbell = EventFd::new()?;
    let value = vfio_core::IoValue::U32(0x1234_5678);
    let reg = d.add_ioeventfd(&bar0_info, 4, value, doorbell.as_fd())?;
    ensure!(bar0.read32(4)? == !0, "the registration alone wrote the register");
    doorbell.signal(1)?;
    ensure!(
        wait_for(!0x1234_5678)?,
        "signalled ioeventfd did not write: reads {:#x}",
        bar0.read32(4)?
    );
    // The same offset, width and value again: EEXIST; another value at the same offset is fine.
    let again = d.add_ioeventfd(&bar0_info, 4, value, doorbell.as_fd());
    ensure!(
        again.as_ref().err().and_then(|e| e.errno()) == Some(rustix::io::Errno::EXIST),
        "duplicate ioeventfd gave {again:?}"
    );
    let other = d.add_ioeventfd(&bar0_info, 4, vfio_core::IoValue::U32(7), EventFd::new()?.as_fd())?;
    other.remove()?;
    reg.remove()?;
    bar0.write32(4, 0)?;
    doorbell.signal(1)?;
    std::thread::sleep(Duration::from_millis(100));
    ensure!(
        bar0.read32(4)? == !0,
        "removed ioeventfd still wrote: {:#x}",
        bar0.read32(4)?
    );
    // Refusals: the config region is not a BAR (EINVAL from the kernel); past the BAR's end
    // (InvalidArgument before the kernel).
    let config = d.region_info(vfio_pci::CONFIG_REGION)?;
    let e = d
        .add_ioeventfd(&config, 0, vfio_core::IoValue::U16(0), doorbell.as_fd())
        .err()
        .ok_or("ioeventfd on config space accepted")?;
    ensure!(e.errno() == Some(rustix::io::Errno::INVAL), "config region gave {e}");
    let e = d
        .add_ioeventfd(&bar0_info, bar0_info.size - 2, value, doorbell.as_fd())
        .err()
        .ok_or("ioeventfd past the BAR accepted")?;
    ensure!(
        matches!(e, vfio_core::Error::InvalidArgument { .. }),
        "past the BAR gave {e}"
    );
    println!("    a 4-byte ioeventfd wrote 0x12345678 to BAR0+4 when signalled, and stopped after removal");
    Ok(Outcome::Pass)
}

fn main() -> ExitCode {
    vfio_tests::run(&[
        ("container_page_sizes_include_4k", container_page_sizes_include_4k),
        ("modes_match_the_machine", modes_match_the_machine),
        (
            "irq_trigger_loopback_signals_the_eventfd",
            irq_trigger_loopback_signals_the_eventfd,
        ),
        (
            "nvme_function_reset_clears_registers",
            nvme_function_reset_clears_registers,
        ),
        (
            "hot_reset_of_a_root_bus_device_is_enodev",
            hot_reset_of_a_root_bus_device_is_enodev,
        ),
        ("hugetlb_2m_buffer_takes_dma", hugetlb_2m_buffer_takes_dma),
        (
            "hugetlb_1g_without_reservation_is_a_clear_error",
            hugetlb_1g_without_reservation_is_a_clear_error,
        ),
        (
            "nvme_bar0_areas_avoid_the_msix_table",
            nvme_bar0_areas_avoid_the_msix_table,
        ),
        (
            "whole_region_map_of_a_sparse_bar_is_refused",
            whole_region_map_of_a_sparse_bar_is_refused,
        ),
        (
            "region_info_of_a_missing_index_is_einval",
            region_info_of_a_missing_index_is_einval,
        ),
        ("edu_irq_info_has_intx_and_one_msi", edu_irq_info_has_intx_and_one_msi),
        (
            "edu_intx_is_automasked_until_unmasked",
            edu_intx_is_automasked_until_unmasked,
        ),
        (
            "msi_vectors_beyond_the_count_are_einval",
            msi_vectors_beyond_the_count_are_einval,
        ),
        (
            "feature_probe_reports_unsupported_as_false",
            feature_probe_reports_unsupported_as_false,
        ),
        (
            "low_power_feature_set_and_get_contracts",
            low_power_feature_set_and_get_contracts,
        ),
        (
            "dma_pool_translates_per_io_without_mapping",
            dma_pool_translates_per_io_without_mapping,
        ),
        (
            "ioeventfd_writes_the_register_when_signalled",
            ioeventfd_writes_the_register_when_signalled,
        ),
        ("sysfs_unbinds_and_rebinds_nvme", sysfs_unbinds_and_rebinds_nvme),
    ])
}
