//! vfio-pci against edu and nvme: capability walks and typed views (checked against the raw
//! config space sysfs shows), the status register and header ids, BAR decoding, BAR access with
//! the pread/pwrite fallback, MSI-X vectors in any range, INTx masking, and reset keeping the
//! command register.

use std::os::fd::AsFd;
use std::process::ExitCode;
use std::time::Duration;

use vfio_core::{EventFd, Interface, IrqSet, Mode, PciAddress};
use vfio_pci::{BarKind, Capability, Command, PciDevice, Status};
use vfio_tests::edu::reg;
use vfio_tests::{Outcome, TestResult, device_from_env, ensure, skip};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// The devices a test runs on, from `vars`; skips when none is set.
fn devices(vars: &[&str]) -> Vec<(&'static str, PciAddress)> {
    let names = [
        ("VFIO_TEST_EDU", "edu"),
        ("VFIO_TEST_NVME", "nvme"),
        ("VFIO_TEST_VIRTIO", "virtio"),
    ];
    names
        .into_iter()
        .filter(|(var, _)| vars.contains(var))
        .filter_map(|(var, name)| device_from_env(var).ok().map(|a| (name, a)))
        .collect()
}

/// A hex sysfs attribute of the device (`revision`, `subsystem_vendor`, ...).
fn sysfs_hex(addr: &PciAddress, attr: &str) -> Res<u32> {
    let path = vfio_core::Sysfs::default().pci_device_dir(addr).join(attr);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let t = text.trim();
    Ok(u32::from_str_radix(t.trim_start_matches("0x"), 16).map_err(|e| format!("{}: {t:?}: {e}", path.display()))?)
}

/// The device's config space as the kernel's PCI core reads it (sysfs `config`, as root: all of
/// it), bypassing vfio-pci's virtualization.
fn sysfs_config(addr: &PciAddress) -> Res<Vec<u8>> {
    let path = vfio_core::Sysfs::default().pci_device_dir(addr).join("config");
    let raw = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    ensure!(
        raw.len() >= 256,
        "{}: only {} bytes (not root?)",
        path.display(),
        raw.len()
    );
    Ok(raw)
}

macro_rules! open_or_skip {
    ($var:expr) => {
        match device_from_env($var) {
            Err(why) => return skip(why),
            Ok(addr) => PciDevice::open(&addr, None)?,
        }
    };
}

fn edu_capabilities_and_bars() -> TestResult {
    let dev = open_or_skip!("VFIO_TEST_EDU");
    let msi = dev.msi_cap()?.ok_or("edu has no MSI capability")?;
    ensure!(msi.max_vectors == 1 && msi.is_64bit, "edu MSI {msi:?}");
    ensure!(dev.msix_cap()?.is_none(), "edu has no MSI-X");
    let bars = dev.bars()?;
    ensure!(bars.len() == 1, "edu has one BAR, got {bars:?}");
    ensure!(
        bars[0].index == 0 && bars[0].size == 1 << 20 && bars[0].kind == BarKind::Memory32,
        "BAR0 {:?}",
        bars[0]
    );
    ensure!(dev.bar_info(1)?.is_none(), "BAR1 should be unimplemented");
    ensure!(dev.bar_info(6).is_err(), "BAR6 must be refused");
    Ok(Outcome::Pass)
}

fn nvme_capabilities_msix_pcie() -> TestResult {
    let dev = open_or_skip!("VFIO_TEST_NVME");
    let caps = dev.capabilities()?;
    ensure!(!caps.is_empty(), "no capabilities");
    let msix = dev.msix_cap()?.ok_or("nvme has no MSI-X")?;
    ensure!(msix.table_size == 65 && msix.table_bar == 0, "MSI-X {msix:?}");
    let pcie = dev.pcie_cap()?.ok_or("nvme has no PCIe capability")?;
    ensure!(
        dev.config_size()? == 4096,
        "PCIe config space is {} bytes",
        dev.config_size()?
    );
    let bar0 = dev.bar_info(0)?.ok_or("no BAR0")?;
    ensure!(bar0.kind == BarKind::Memory64, "nvme BAR0 is {:?}", bar0.kind);
    println!(
        "    caps {:?}; MSI-X {msix:?}; PCIe {pcie:?}",
        caps.iter().map(|c| (c.id, c.offset)).collect::<Vec<_>>()
    );
    Ok(Outcome::Pass)
}

fn bar_access_checks_bounds_and_matches_pread() -> TestResult {
    let dev = open_or_skip!("VFIO_TEST_NVME");
    let bar = dev.bar(0)?;
    ensure!(bar.is_mapped(0, 8), "NVMe registers are not mapped");
    let cap = bar.read64(0)?;
    let mut raw = [0u8; 8];
    dev.device().read_region(bar.region(), 0, &mut raw)?;
    ensure!(u64::from_le_bytes(raw) == cap, "mmap and pread disagree on CAP");
    let size = bar.size();
    ensure!(bar.read32(size).is_err(), "read past the BAR's end accepted");
    ensure!(bar.read32(2).is_err(), "misaligned read accepted");
    // The MSI-X table: through mmap when mappable, else through pread.
    let table = dev.msix_cap()?.ok_or("no MSI-X")?.table_offset as u64;
    let ctrl = bar.read32(table + 12)?;
    ensure!(
        ctrl & 1 == 1,
        "MSI-X vector 0 should start masked, control word {ctrl:#x}"
    );
    println!("    MSI-X table mapped: {}", bar.is_mapped(table, 16));
    Ok(Outcome::Pass)
}

fn msix_vectors_in_any_range() -> TestResult {
    let dev = open_or_skip!("VFIO_TEST_NVME");
    let fds = [EventFd::new()?, EventFd::new()?, EventFd::new()?];
    // Vectors 3..6 only, not starting from 0.
    let set = IrqSet::eventfds(vfio_pci::MSIX_IRQ, 3, fds.iter().map(|e| e.as_fd()));
    dev.device().set_irqs(&set)?;
    let fire = IrqSet::trigger(vfio_pci::MSIX_IRQ, 4, 1);
    dev.device().set_irqs(&fire)?;
    ensure!(
        fds[1].wait_timeout(Duration::from_secs(5))?.is_some(),
        "vector 4 did not fire"
    );
    ensure!(
        fds[0].wait_timeout(Duration::from_millis(50))?.is_none(),
        "vector 3 fired too"
    );
    let beyond = IrqSet::eventfds(vfio_pci::MSIX_IRQ, 64, [fds[0].as_fd(), fds[1].as_fd()]);
    ensure!(dev.device().set_irqs(&beyond).is_err(), "vectors 64..66 of 65 accepted");
    dev.disable_irq(vfio_pci::MSIX_IRQ)?;
    Ok(Outcome::Pass)
}

fn reset_keeps_the_command_register() -> TestResult {
    let dev = open_or_skip!("VFIO_TEST_NVME");
    dev.enable_bus_master()?;
    dev.reset()?;
    let cmd = dev.command()?;
    ensure!(
        cmd.contains(Command::BUS_MASTER | Command::MEMORY_SPACE),
        "command after reset {cmd:?}"
    );
    Ok(Outcome::Pass)
}

fn binding_helper_binds_and_gives_back() -> TestResult {
    let addr = match device_from_env("VFIO_TEST_NVME") {
        Ok(a) => a,
        Err(why) => return skip(why),
    };
    let sysfs = vfio_core::Sysfs::default();
    sysfs.restore_driver(&addr, None)?;
    {
        let binding = vfio_pci::VfioPciBinding::bind(addr, true)?;
        ensure!(
            binding.previous_driver().is_none(),
            "previous driver {:?}",
            binding.previous_driver()
        );
        let dev = PciDevice::open(&addr, None)?;
        ensure!(dev.ids()?.0 == 0x1b36, "ids");
    }
    ensure!(sysfs.driver(&addr)?.is_none(), "not given back on drop");
    // Leave it as the harness had it.
    let again = vfio_pci::VfioPciBinding::bind(addr, false)?;
    drop(again);
    ensure!(sysfs.driver(&addr)?.as_deref() == Some("vfio-pci"), "rebinding failed");
    Ok(Outcome::Pass)
}

fn edu_intx_through_pci_device() -> TestResult {
    let dev = open_or_skip!("VFIO_TEST_EDU");
    let bar0 = dev.bar(0)?;
    let irq = EventFd::new()?;
    dev.enable_intx(&irq)?;
    for round in 1..=3u32 {
        bar0.write32(0x60, round)?;
        ensure!(
            irq.wait_timeout(Duration::from_secs(10))?.is_some(),
            "INTx {round} did not arrive"
        );
        bar0.write32(0x64, round)?;
        dev.unmask_intx()?;
    }
    dev.disable_irq(vfio_pci::INTX_IRQ)?;
    Ok(Outcome::Pass)
}

/// The status register and the header ids: CAPABILITIES_LIST is set exactly when the standard
/// walk finds capabilities, the bits vfio-pci does not virtualize equal the device's own (sysfs
/// `config`), and revision and subsystem ids equal sysfs `revision`, `subsystem_vendor` and
/// `subsystem_device`.
fn status_and_header_ids_match_sysfs() -> TestResult {
    let devs = devices(&["VFIO_TEST_EDU", "VFIO_TEST_NVME"]);
    if devs.is_empty() {
        return skip("neither VFIO_TEST_EDU nor VFIO_TEST_NVME is set");
    }
    let mut seen = Vec::new();
    for (name, addr) in devs {
        let dev = PciDevice::open(&addr, None)?;
        let raw = sysfs_config(&addr)?;
        let status = dev.status()?;
        let std_caps = dev.standard_capabilities()?;
        let found = !std_caps.is_empty();
        ensure!(
            status.contains(Status::CAPABILITIES_LIST) == found,
            "{name}: status {status:?} but the standard walk found {std_caps:?}"
        );
        ensure!(
            !std_caps.is_empty(),
            "{name}: the QEMU device has capabilities, none seen"
        );
        let raw_status = Status::from_bits_retain(u16::from_le_bytes([raw[6], raw[7]]));
        // The capability-list bit is vfio-pci's; the interrupt bit moves with the device.
        let device_bits = !(Status::CAPABILITIES_LIST | Status::INTERRUPT_STATUS);
        ensure!(
            status & device_bits == raw_status & device_bits,
            "{name}: status {status:?} through VFIO, {raw_status:?} in sysfs config"
        );
        let rev = dev.revision_id()?;
        ensure!(
            u32::from(rev) == sysfs_hex(&addr, "revision")?,
            "{name}: revision {rev:#x}"
        );
        let sub = dev.subsystem_ids()?;
        let want = (
            sysfs_hex(&addr, "subsystem_vendor")? as u16,
            sysfs_hex(&addr, "subsystem_device")? as u16,
        );
        ensure!(sub == want, "{name}: subsystem ids {sub:04x?}, sysfs {want:04x?}");
        let header = dev.header_type()?;
        ensure!(
            header == raw[0x0e] && header & 0x7f == 0,
            "{name}: header type {header:#x}"
        );
        seen.push(format!(
            "{name} rev {rev:#x} subsystem {:04x}:{:04x} status {:#06x}",
            sub.0,
            sub.1,
            status.bits()
        ));
    }
    println!("    {}", seen.join("; "));
    Ok(Outcome::Pass)
}

/// 8-bit config writes land (cache line size goes to the device, interrupt line is vfio-pci's
/// virtual copy) and read back at 8, 16 and 32 bits; writes to the status register are dropped.
fn config_write8_and_status_writes_dropped() -> TestResult {
    let dev = open_or_skip!("VFIO_TEST_EDU");
    for (at, value) in [(0x0cu16, 0x10u8), (0x3c, 0x5a)] {
        let old = dev.config_read8(at)?;
        dev.config_write8(at, value)?;
        let back = dev.config_read8(at)?;
        let word = dev.config_read32(at & !3)?;
        dev.config_write8(at, old)?;
        ensure!(back == value, "config_write8({at:#x}, {value:#x}) read back {back:#x}");
        ensure!(
            (word >> (8 * (at % 4))) as u8 == value,
            "32-bit read at {:#x} is {word:#x}, without the byte written at {at:#x}",
            at & !3
        );
        ensure!(dev.config_read8(at)? == old, "{at:#x} not restored");
    }
    let status = dev.status()?;
    dev.config_write16(vfio_pci::config::offset::STATUS, !status.bits())?;
    ensure!(
        dev.status()? == status,
        "a status write changed {status:?} to {:?}",
        dev.status()?
    );
    Ok(Outcome::Pass)
}

/// The typed and raw capability walks against the device's real config space (sysfs `config`):
/// every standard capability VFIO shows is there at the same offset; the PM capability (where
/// the device has one) is in D0 and its PMC version is the device's; and on the PCIe nvme the
/// extended walk ends, each entry dword-aligned inside config space with the id and version
/// the device has there (or vfio-pci's id-0 placeholder for a hidden one).
fn capability_walks_match_sysfs_config() -> TestResult {
    let devs = devices(&["VFIO_TEST_EDU", "VFIO_TEST_NVME", "VFIO_TEST_VIRTIO"]);
    if devs.is_empty() {
        return skip("none of VFIO_TEST_EDU, VFIO_TEST_NVME, VFIO_TEST_VIRTIO is set");
    }
    let mut seen = Vec::new();
    let mut walked_extended = false;
    for (name, addr) in devs {
        let dev = PciDevice::open(&addr, None)?;
        let raw = sysfs_config(&addr)?;
        let raw_caps = vfio_pci::capability::parse(&raw, name)?;
        let std_caps = dev.standard_capabilities()?;
        let ext_caps = dev.extended_capabilities()?;
        ensure!(
            dev.capabilities()? == [std_caps.clone(), ext_caps.clone()].concat(),
            "{name}: capabilities() is not standard then extended"
        );
        for c in &std_caps {
            ensure!(
                raw_caps
                    .iter()
                    .any(|r| !r.extended && r.id == c.id && r.offset == c.offset),
                "{name}: capability {:#x} at {:#x} is not in the device's list",
                c.id,
                c.offset
            );
        }
        let pm = match dev.pm_cap()? {
            None => "no PM".to_owned(),
            Some(pm) => {
                let off = usize::from(pm.offset);
                let raw_version = raw[off + 2] & 7;
                ensure!(pm.power_state == 0, "{name}: open but in D{}", pm.power_state);
                ensure!(
                    (1..=3).contains(&pm.version) && pm.version == raw_version,
                    "{name}: PM version {} through VFIO, {raw_version} in sysfs",
                    pm.version
                );
                format!("PM v{} @{:#x}", pm.version, pm.offset)
            }
        };
        if dev.config_size()? <= 256 {
            ensure!(
                ext_caps.is_empty(),
                "{name}: extended capabilities in 256 bytes: {ext_caps:?}"
            );
        } else {
            walked_extended = true;
            check_extended(name, &dev, &ext_caps, &raw)?;
        }
        let ext: Vec<String> = ext_caps
            .iter()
            .map(|c| format!("{:#x}v{}@{:#x}", c.id, c.version, c.offset))
            .collect();
        let raw_ext: Vec<String> = raw_caps
            .iter()
            .filter(|c| c.extended)
            .map(|c| format!("{:#x}@{:#x}", c.id, c.offset))
            .collect();
        seen.push(format!(
            "{name}: {} std, {pm}, ext [{}] (device: [{}])",
            std_caps.len(),
            ext.join(" "),
            raw_ext.join(" ")
        ));
    }
    if !walked_extended {
        println!("    (no PCIe device: the extended walk was not exercised)");
    }
    println!("    {}", seen.join("; "));
    Ok(Outcome::Pass)
}

fn check_extended(name: &str, dev: &PciDevice, ext: &[Capability], raw: &[u8]) -> Res<()> {
    let size = dev.config_size()?;
    ensure!(ext.len() <= 64, "{name}: {} extended capabilities", ext.len());
    for (i, c) in ext.iter().enumerate() {
        let at = usize::from(c.offset);
        ensure!(
            c.extended && at >= 0x100 && at % 4 == 0 && at as u64 + 4 <= size,
            "{name}: extended capability {c:?} outside [0x100, {size:#x}) or misaligned"
        );
        ensure!(
            ext[..i].iter().all(|p| p.offset != c.offset),
            "{name}: {:#x} listed twice",
            c.offset
        );
        let hdr = u32::from_le_bytes(raw[at..at + 4].try_into()?);
        let (id, version) = ((hdr & 0xffff) as u16, ((hdr >> 16) & 0xf) as u8);
        let placeholder = c.id == 0 && c.version == 0 && i == 0;
        ensure!(
            placeholder || (c.id, c.version) == (id, version),
            "{name}: {:#x}: id {:#x} v{} through VFIO, {id:#x} v{version} on the device",
            c.offset,
            c.id,
            c.version
        );
    }
    if ext.is_empty() {
        let hdr = dev.config_read32(0x100)?;
        ensure!(
            hdr == 0 || hdr == u32::MAX,
            "{name}: no extended list but {hdr:#x} at 0x100"
        );
    }
    Ok(())
}

/// INTx raised while masked by `mask_intx` is held: the eventfd stays quiet, the status
/// register shows the device asserting it, and `unmask_intx` delivers it.
fn edu_intx_masked_is_held_until_unmask() -> TestResult {
    let dev = open_or_skip!("VFIO_TEST_EDU");
    let bar0 = dev.bar(0)?;
    // Nothing left pending by an earlier test.
    let stale = bar0.read32(reg::IRQ_STATUS)?;
    bar0.write32(reg::IRQ_ACK, stale)?;
    let irq = EventFd::new()?;
    dev.enable_intx(&irq)?;
    dev.mask_intx()?;
    bar0.write32(reg::IRQ_RAISE, 1)?;
    ensure!(
        dev.status()?.contains(Status::INTERRUPT_STATUS),
        "edu raised INTx but status is {:?}",
        dev.status()?
    );
    ensure!(
        irq.wait_timeout(Duration::from_millis(200))?.is_none(),
        "INTx arrived while masked"
    );
    dev.unmask_intx()?;
    ensure!(
        irq.wait_timeout(Duration::from_secs(10))?.is_some(),
        "the INTx raised while masked was not delivered on unmask"
    );
    bar0.write32(reg::IRQ_ACK, 1)?;
    ensure!(
        !dev.status()?.contains(Status::INTERRUPT_STATUS),
        "INTx still asserted after the ack"
    );
    // Delivered on unmask, the line stayed masked (automask): unmask again, and it works.
    dev.unmask_intx()?;
    bar0.write32(reg::IRQ_RAISE, 2)?;
    ensure!(
        irq.wait_timeout(Duration::from_secs(10))?.is_some(),
        "INTx after the final unmask did not arrive"
    );
    bar0.write32(reg::IRQ_ACK, 2)?;
    dev.unmask_intx()?;
    dev.disable_irq(vfio_pci::INTX_IRQ)?;
    Ok(Outcome::Pass)
}

/// A PCIe nvme alone behind a root port: the hot reset succeeds in cdev mode (zero-length form)
/// and in group mode (group fds), clears the controller's registers, keeps the command register
/// and reports the one device reset; a container that does not own the device is refused first.
fn hot_reset_behind_a_root_port() -> TestResult {
    let addr = match device_from_env("VFIO_TEST_NVME_HOTRESET") {
        Err(why) => return skip(why),
        Ok(a) => a,
    };
    let modes = vfio_core::detect();
    // cdev first: a group left open by the group-mode pass would block the cdev open.
    let mut done = Vec::new();
    for (mode, available) in [(Mode::CDEV, modes.cdev), (Mode::GROUP, modes.group)] {
        if !available {
            continue;
        }
        let dev = PciDevice::open(&addr, Some(mode))?;
        let container = vfio_pci::default_container(mode)?;
        let bar0 = dev.bar(0)?;
        dev.enable_bus_master()?;
        bar0.write32(0x14, 0x0046_0000)?;
        ensure!(bar0.read32(0x14)? == 0x0046_0000, "CC did not take the write");
        let before = dev.command()?;
        let reset = dev.hot_reset(&*container)?;
        ensure!(reset == vec![addr], "{mode:?}: reset reported {reset:?}");
        let cc = bar0.read32(0x14)?;
        ensure!(cc == 0, "{mode:?}: CC is {cc:#x} after the hot reset");
        ensure!(dev.command()? == before, "{mode:?}: command register not restored");
        // Another container does not own the device: refused before any reset, naming it.
        let other = vfio_tests::new_container(mode)?;
        bar0.write32(0x14, 0x0046_0000)?;
        let e = dev
            .hot_reset(other.as_ref())
            .err()
            .ok_or("a foreign container reset the device")?;
        ensure!(
            matches!(e, vfio_core::Error::InvalidArgument { .. }) && e.to_string().contains(&addr.to_string()),
            "{mode:?}: {e}"
        );
        ensure!(
            bar0.read32(0x14)? == 0x0046_0000,
            "{mode:?}: the refused reset touched the device"
        );
        done.push(format!("{mode:?}"));
    }
    if done.is_empty() {
        return skip("neither cdev nor group mode is available");
    }
    println!("    hot reset of {addr} in {}", done.join(" and "));
    Ok(Outcome::Pass)
}

/// A root-bus device: no bus or slot reset reaches it, and the error says ENODEV.
fn hot_reset_on_the_root_bus_is_enodev() -> TestResult {
    let dev = open_or_skip!("VFIO_TEST_NVME");
    if dev.address().bus != 0 {
        return skip("the nvme is not on a root bus here");
    }
    let e = dev
        .hot_reset(&*vfio_pci::default_container(dev.mode())?)
        .err()
        .ok_or("hot reset on the root bus succeeded")?;
    ensure!(e.errno() == Some(rustix::io::Errno::NODEV), "{e}");
    Ok(Outcome::Pass)
}

/// For every device the harness gave: config-space ids and class match sysfs, bus mastering
/// toggles both ways, and every implemented BAR can be read (mmap or pread, I/O ports too).
fn config_matches_sysfs_and_every_bar_reads() -> TestResult {
    let sysfs = vfio_core::Sysfs::default();
    let mut seen = Vec::new();
    for var in [
        "VFIO_TEST_EDU",
        "VFIO_TEST_NVME",
        "VFIO_TEST_TESTDEV",
        "VFIO_TEST_VIRTIO",
    ] {
        let Ok(addr) = device_from_env(var) else { continue };
        let dev = PciDevice::open(&addr, None)?;
        let id = sysfs.identity(&addr)?;
        ensure!(
            dev.ids()? == (id.vendor, id.device),
            "{addr}: ids {:?} vs sysfs {id:?}",
            dev.ids()?
        );
        ensure!(
            dev.class()? == id.class,
            "{addr}: class {:#x} vs sysfs {:#x}",
            dev.class()?,
            id.class
        );
        dev.enable_bus_master()?;
        ensure!(
            dev.command()?.contains(Command::BUS_MASTER),
            "{addr}: bus master not set"
        );
        dev.disable_bus_master()?;
        ensure!(
            !dev.command()?.contains(Command::BUS_MASTER),
            "{addr}: bus master not cleared"
        );
        ensure!(
            dev.command()?.contains(Command::MEMORY_SPACE),
            "{addr}: memory decoding lost"
        );
        let mut bars = Vec::new();
        for info in dev.bars()? {
            let bar = dev.bar(info.index)?;
            bar.read32(0)?;
            bars.push(format!(
                "BAR{} {:?} {:#x} {}",
                info.index,
                info.kind,
                info.size,
                if bar.is_mapped(0, 4) { "mmap" } else { "pread" }
            ));
        }
        ensure!(!bars.is_empty(), "{addr}: no BARs");
        seen.push(format!("{addr} [{}]", bars.join(", ")));
    }
    if seen.is_empty() {
        return skip("no VFIO_TEST_EDU, VFIO_TEST_NVME or VFIO_TEST_TESTDEV device");
    }
    println!("    {}", seen.join("; "));
    Ok(Outcome::Pass)
}

/// The inventory (what `lsvfio` prints) agrees with the harness: its devices are on vfio-pci
/// and openable in the modes the kernel offers; the non-viable edu names its blocker.
fn inventory_matches_the_machine() -> TestResult {
    let addr = match device_from_env("VFIO_TEST_EDU") {
        Err(why) => return skip(why),
        Ok(a) => a,
    };
    let all = vfio_pci::inventory::list(&vfio_core::Sysfs::default())?;
    let edu = all.iter().find(|d| d.address == addr).ok_or("edu not listed")?;
    ensure!((edu.vendor, edu.device) == (0x1234, 0x11e8), "{edu:?}");
    ensure!(edu.driver.as_deref() == Some("vfio-pci"), "{edu:?}");
    let m = vfio_core::detect();
    let want: Vec<Mode> = [Mode::GROUP, Mode::GROUP_NOIOMMU, Mode::CDEV, Mode::CDEV_NOIOMMU]
        .into_iter()
        .filter(|&mode| m.offers(mode))
        .collect();
    ensure!(edu.modes == want, "edu modes {:?}, kernel offers {want:?}", edu.modes);
    // The modes it claims really open it. The preferred mode through the default container,
    // which the earlier tests of this binary used (in group mode it holds the group, and a
    // group joins one container at a time); the others in containers of their own, closed right
    // after, so no group stays claimed by a default container the later tests do not use.
    let preferred = vfio_core::preferred()?;
    // The preferred mode last: the others' groups or binds must be gone before its default
    // container (which keeps the group in group mode) takes the device.
    let mut order = edu.modes.clone();
    order.sort_by_key(|&m| m == preferred);
    for &mode in &order {
        if mode == preferred {
            PciDevice::open(&addr, Some(mode))?;
            continue;
        }
        let c = vfio_tests::new_container(mode)?;
        match PciDevice::open_in(c.as_ref(), &addr) {
            Ok(_) => {}
            // When group mode is preferred (forced by VFIO_RS_MODE), earlier tests left the
            // group in its default container, and the kernel keeps a device in an open group
            // from binding to an iommufd.
            Err(e)
                if mode.interface() == Interface::Cdev
                    && preferred.interface() != Interface::Cdev
                    && e.errno() == Some(rustix::io::Errno::BUSY) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if let Ok(nv) = device_from_env("VFIO_TEST_EDU_NONVIABLE") {
        let d = all
            .iter()
            .find(|d| d.address == nv)
            .ok_or("non-viable edu not listed")?;
        ensure!(!d.group_viable && !d.blockers.is_empty(), "{d:?}");
        ensure!(d.modes.is_empty(), "a mode offered for a non-viable group: {d:?}");
    }
    println!("    {} functions listed; edu {} in {:?}", all.len(), addr, edu.modes);
    Ok(Outcome::Pass)
}

/// A virtio device describes its register layout in vendor-specific capabilities: each one's
/// first data byte is a virtio structure type (1 common, 2 notify, 3 ISR, 4 device, 5 PCI cfg)
/// and the next its BAR.
fn virtio_vendor_capabilities() -> TestResult {
    let dev = open_or_skip!("VFIO_TEST_VIRTIO");
    let caps = dev.vendor_caps()?;
    ensure!(caps.len() >= 4, "{} vendor capabilities: {caps:?}", caps.len());
    let kinds: Vec<u8> = caps.iter().map(|c| c.data.first().copied().unwrap_or(0)).collect();
    for want in [1u8, 2, 3, 4] {
        ensure!(kinds.contains(&want), "virtio structure type {want} missing: {kinds:?}");
    }
    let bars = dev.bars()?;
    for c in caps.iter().filter(|c| c.data[0] != 5) {
        let bar = u32::from(*c.data.get(1).ok_or("capability without a BAR byte")?);
        ensure!(
            bars.iter().any(|b| b.index == bar),
            "type {} points at absent BAR {bar}",
            c.data[0]
        );
    }
    println!("    virtio structure types {kinds:?}");
    Ok(Outcome::Pass)
}

fn main() -> ExitCode {
    vfio_tests::run(&[
        (
            "binding_helper_binds_and_gives_back",
            binding_helper_binds_and_gives_back,
        ),
        ("edu_intx_through_pci_device", edu_intx_through_pci_device),
        (
            "edu_intx_masked_is_held_until_unmask",
            edu_intx_masked_is_held_until_unmask,
        ),
        ("status_and_header_ids_match_sysfs", status_and_header_ids_match_sysfs),
        (
            "config_write8_and_status_writes_dropped",
            config_write8_and_status_writes_dropped,
        ),
        (
            "capability_walks_match_sysfs_config",
            capability_walks_match_sysfs_config,
        ),
        ("edu_capabilities_and_bars", edu_capabilities_and_bars),
        ("nvme_capabilities_msix_pcie", nvme_capabilities_msix_pcie),
        (
            "bar_access_checks_bounds_and_matches_pread",
            bar_access_checks_bounds_and_matches_pread,
        ),
        ("msix_vectors_in_any_range", msix_vectors_in_any_range),
        ("reset_keeps_the_command_register", reset_keeps_the_command_register),
        ("hot_reset_behind_a_root_port", hot_reset_behind_a_root_port),
        ("inventory_matches_the_machine", inventory_matches_the_machine),
        ("virtio_vendor_capabilities", virtio_vendor_capabilities),
        (
            "config_matches_sysfs_and_every_bar_reads",
            config_matches_sysfs_and_every_bar_reads,
        ),
        (
            "hot_reset_on_the_root_bus_is_enodev",
            hot_reset_on_the_root_bus_is_enodev,
        ),
    ])
}
