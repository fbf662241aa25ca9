//! The device-agnostic suite (issue #18): checks that are safe on any PCI function bound to
//! vfio-pci, whatever it is (a NIC, an NVMe drive, a GPU), run on every function named in
//! `VFIO_TEST_DEVICE=<address>[,<address>...]`, in every mode the machine offers.
//!
//! What it touches: VFIO's own ioctls (device, region and IRQ info, DMA map and unmap of memory
//! no device is told about, MSI/MSI-X eventfds, `VFIO_DEVICE_RESET` where the device offers
//! it), config space reads (and the command register write that `PciDevice::reset` puts back),
//! mmaps of the BARs the kernel allows to be mmapped, and reads of the MSI-X table and PBA where
//! the MSI-X capability places them. It never writes a BAR, never reads any other BAR byte,
//! never sets bus mastering and never starts device activity: an unknown device's registers can
//! have side effects when read.
//!
//! Each test goes over every device and names the device (and mode) in its failure; without
//! `VFIO_TEST_DEVICE` every test skips, saying so. In the guest (`cargo xtask vm test`) `/init`
//! sets it to every function it bound to vfio-pci whose IOMMU group is viable.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use vfio_core::{
    Addressing, Backing, Container, DeviceFlags, DmaAccess, DmaBuffer, DmaMapping, DmaPool, Error, EventFd,
    IovaAllocator, IrqFlags, IrqSet, Mode, OwnedDmaMapping, PciAddress, RegionFlags, SharedContainer, Sysfs,
};
use vfio_pci::{BarKind, Capability, Command, PciDevice, Status};
use vfio_tests::{Outcome, Resources, TestResult, ensure, open_fds, skip};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// The variable naming the devices.
const VAR: &str = "VFIO_TEST_DEVICE";

/// The devices in `VFIO_TEST_DEVICE` (comma or space separated), or why there are none.
fn devices() -> Result<Vec<PciAddress>, String> {
    let text = std::env::var(VAR).unwrap_or_default();
    let addrs: Vec<&str> = text
        .split([',', ' '])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if addrs.is_empty() {
        return Err(format!(
            "{VAR} is not set (set it to one or more PCI addresses bound to vfio-pci, comma separated; \
             see docs/hardware-runner.md)"
        ));
    }
    addrs
        .into_iter()
        .map(|a| a.parse().map_err(|e| format!("{VAR}: {a:?}: {e}")))
        .collect()
}

/// The modes this machine offers, or why none (the missing devices first: that is what a
/// user must fix first).
fn modes() -> Result<Vec<Mode>, String> {
    devices()?;
    let offered = vfio_core::detect().offered();
    if offered.is_empty() {
        return Err(format!("this kernel offers no VFIO mode ({:?})", vfio_core::detect()));
    }
    Ok(offered)
}

/// Runs `check` once per device (prefixing its error with the address) and prints what each
/// returned; skips without devices.
fn per_device(check: impl Fn(&PciAddress) -> Res<String>) -> TestResult {
    let devs = match devices() {
        Ok(d) => d,
        Err(why) => return skip(why),
    };
    let start = std::time::Instant::now();
    for addr in &devs {
        let said = check(addr).map_err(|e| format!("{addr}: {e}"))?;
        println!("    {addr}: {said}");
    }
    println!("    ({} device(s) in {:.1?})", devs.len(), start.elapsed());
    Ok(Outcome::Pass)
}

/// Runs `check` for every device in every offered mode, each time on the device opened in a
/// fresh container of that mode (dropped before the next), with errors naming device and mode.
fn per_device_and_mode(check: impl Fn(&PciDevice, &Arc<dyn Container>) -> Res<String>) -> TestResult {
    let modes = match modes() {
        Ok(m) => m,
        Err(why) => return skip(why),
    };
    per_device(|addr| {
        let mut said = Vec::new();
        for &mode in &modes {
            let run = || -> Res<String> {
                let container = vfio_tests::new_container(mode)?;
                let dev = PciDevice::open_in(container.as_ref(), addr)?;
                check(&dev, &container)
            };
            let s = run().map_err(|e| format!("({mode}): {e}"))?;
            said.push(format!("[{mode}] {s}"));
        }
        Ok(said.join(" "))
    })
}

// ---- sysfs: the kernel's own view, to hold VFIO's against ----

fn device_dir(addr: &PciAddress) -> std::path::PathBuf {
    Sysfs::default().pci_device_dir(addr)
}

/// The function's config space as the PCI core reads it (sysfs `config`; all of it as root,
/// the first 64 bytes otherwise), bypassing vfio-pci's virtualization.
fn sysfs_config(addr: &PciAddress) -> Res<Vec<u8>> {
    let path = device_dir(addr).join("config");
    let raw = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    ensure!(raw.len() >= 64, "{}: only {} bytes", path.display(), raw.len());
    Ok(raw)
}

/// A hex sysfs attribute (`vendor`, `class`, ...).
fn sysfs_hex(addr: &PciAddress, attr: &str) -> Res<u64> {
    let path = device_dir(addr).join(attr);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let t = text.trim();
    Ok(u64::from_str_radix(t.trim_start_matches("0x"), 16).map_err(|e| format!("{}: {t:?}: {e}", path.display()))?)
}

/// sysfs `resource`: (start, end, flags) of each resource line (BARs 0-5, then the ROM).
fn sysfs_resources(addr: &PciAddress) -> Res<Vec<(u64, u64, u64)>> {
    let path = device_dir(addr).join("resource");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16);
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f.as_slice() {
                [a, b, c, ..] => Ok((hex(a)?, hex(b)?, hex(c)?)),
                _ => Err(format!("{}: line {l:?}", path.display()).into()),
            }
        })
        .collect()
}

/// Size of a sysfs resource line (0 when unassigned).
fn resource_len(r: (u64, u64, u64)) -> u64 {
    if r.1 == 0 { 0 } else { r.1 - r.0 + 1 }
}

/// vfio-pci's region index of the legacy VGA ranges.
const VGA_REGION: u32 = vfio_sys::VFIO_PCI_VGA_REGION_INDEX;

const IORESOURCE_IO: u64 = 0x100;
const IORESOURCE_MEM: u64 = 0x200;

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

// ---- the tests ----

/// `vfio_pci::doctor` finds nothing that blocks the device, and the modes it calls usable are
/// exactly those the machine offers. Runs first, while this process holds nothing.
fn doctor_says_usable() -> TestResult {
    let devs = match devices() {
        Ok(d) => d,
        Err(why) => return skip(why),
    };
    // Not `modes()`: on a machine that offers no mode, the doctor's findings say why.
    let offered = vfio_core::detect().offered();
    let report = vfio_pci::doctor::diagnose(&Sysfs::default(), &devs)?;
    for addr in &devs {
        let d = report
            .device(addr)
            .ok_or_else(|| format!("{addr}: not in the doctor's report"))?;
        if d.blocked(&report.machine) {
            // What `lsvfio doctor` would say: each finding with its fix.
            let said: Vec<String> = report
                .machine
                .findings
                .iter()
                .chain(&d.findings)
                .map(|f| format!("[{:?}] {f} (fix: {})", f.severity(), f.fix()))
                .collect();
            return Err(format!("{addr}: the doctor says blocked:\n      {}", said.join("\n      ")).into());
        }
        let mut usable = d.usable_modes(&report.machine);
        let mut want = offered.clone();
        usable.sort();
        want.sort();
        ensure!(
            usable == want,
            "{addr}: usable in {usable:?}, the machine offers {want:?}"
        );
        let codes: Vec<&str> = d.findings.iter().map(|f| f.code()).collect();
        let modes: Vec<String> = usable.iter().map(|m| m.to_string()).collect();
        println!(
            "    {addr}: usable in {}; findings: [{}]",
            modes.join(", "),
            codes.join(", ")
        );
    }
    ensure!(!report.blocked(), "the report is blocked");
    Ok(Outcome::Pass)
}

/// `VFIO_DEVICE_GET_INFO`, every region's and every IRQ index's info, in every mode: a PCI
/// device with at least the 9 vfio-pci regions and 5 IRQ indexes; each index answers for
/// itself; BAR sizes and kinds are sysfs `resource`'s; config space is as long as sysfs
/// `config`; every mmappable area is page aligned inside its region; MSI and MSI-X counts are
/// the capabilities' and INTx has at most one line, only with an interrupt pin.
fn info_regions_and_irqs_in_every_mode() -> TestResult {
    per_device_and_mode(|dev, _| {
        let addr = dev.address();
        let info = dev.device().info()?;
        ensure!(
            info.flags.contains(DeviceFlags::PCI),
            "not a PCI device: {:?}",
            info.flags
        );
        ensure!(info.num_regions >= 9, "{} regions", info.num_regions);
        ensure!(info.num_irqs >= 5, "{} IRQ indexes", info.num_irqs);
        let res = sysfs_resources(&addr)?;
        let page = vfio_core::page_size() as u64;
        let mut offsets = Vec::new();
        for i in 0..info.num_regions {
            let r = match dev.device().region_info(i) {
                // vfio-pci answers the VGA region only for a VGA device, and not even then
                // with its `disable_vga` parameter set.
                Err(e) if i == VGA_REGION && e.errno() == Some(rustix::io::Errno::INVAL) => {
                    continue;
                }
                r => r?,
            };
            ensure!(r.index == i, "region {i} answered as {}", r.index);
            for a in r.mmap_areas() {
                ensure!(
                    a.offset % page == 0 && a.offset.checked_add(a.size).is_some_and(|e| e <= r.size),
                    "region {i}: mmap area {a:?} outside {:#x} bytes or misaligned",
                    r.size
                );
            }
            if r.size > 0 {
                ensure!(!offsets.contains(&r.offset), "region {i} shares offset {:#x}", r.offset);
                offsets.push(r.offset);
            }
            if i < 6 {
                let want = res.get(i as usize).copied().map(resource_len).unwrap_or(0);
                ensure!(
                    r.size == want,
                    "BAR{i}: {:#x} bytes through VFIO, sysfs {want:#x}",
                    r.size
                );
                if let Some(bar) = dev.bar_info(i)? {
                    let flags = res[i as usize].2;
                    let io = bar.kind == BarKind::Io;
                    ensure!(
                        (io && flags & IORESOURCE_IO != 0) || (!io && flags & IORESOURCE_MEM != 0),
                        "BAR{i} is {:?}, sysfs flags {flags:#x}",
                        bar.kind
                    );
                    ensure!(
                        r.flags.contains(RegionFlags::READ),
                        "BAR{i} is not readable: {:?}",
                        r.flags
                    );
                }
            }
            if i == vfio_pci::ROM_REGION {
                let want = res.get(6).copied().map(resource_len).unwrap_or(0);
                // vfio-pci reports 0 for a ROM BAR without a valid image (no 55 AA), and
                // 128 KiB for a shadowed VGA ROM that has no BAR.
                ensure!(
                    r.size == want || r.size == 0 || (want == 0 && r.size == 0x20000),
                    "ROM: {:#x} bytes, sysfs {want:#x}",
                    r.size
                );
            }
            if i == vfio_pci::CONFIG_REGION {
                let len = std::fs::metadata(device_dir(&addr).join("config"))?.len();
                ensure!(r.size == len, "config space {:#x} bytes, sysfs config {len:#x}", r.size);
            }
        }
        let mut counts = Vec::new();
        let pcie = dev.pcie_cap()?.is_some();
        for i in 0..info.num_irqs {
            let irq = match dev.device().irq_info(i) {
                // vfio-pci has the error interrupt for PCIe functions only, and some kernels
                // refuse its index on the others.
                Err(e) if i == vfio_pci::ERR_IRQ && !pcie && e.errno() == Some(rustix::io::Errno::INVAL) => {
                    counts.push(0);
                    continue;
                }
                r => r?,
            };
            ensure!(irq.index == i, "IRQ index {i} answered as {}", irq.index);
            ensure!(
                irq.count == 0 || irq.flags.contains(IrqFlags::EVENTFD),
                "IRQ index {i}: {} vectors without eventfd signalling",
                irq.count
            );
            counts.push(irq.count);
        }
        let raw = sysfs_config(&addr)?;
        ensure!(counts[0] <= 1, "{} INTx lines", counts[0]);
        ensure!(
            counts[0] == 0 || raw[0x3d] != 0,
            "INTx offered without an interrupt pin"
        );
        let msi = dev.msi_cap()?.map_or(0, |m| m.max_vectors);
        ensure!(
            counts[1] == msi,
            "MSI: {} vectors, the capability says {msi}",
            counts[1]
        );
        let msix = dev.msix_cap()?.map_or(0, |m| m.table_size);
        ensure!(
            counts[2] == msix,
            "MSI-X: {} vectors, the capability says {msix}",
            counts[2]
        );
        Ok(format!(
            "{} regions, IRQ counts {counts:?}, reset {}",
            info.num_regions,
            info.flags.contains(DeviceFlags::RESET)
        ))
    })
}

/// What must agree between VFIO's config space and the device's own (sysfs `config`):
/// vendor and device ids, revision, class, header type, subsystem ids (type 0 header), and
/// sysfs `vendor`, `device`, `class`; the status register's capability-list bit matches the
/// standard walk. (vfio-pci virtualizes BARs, the command register, MSI enable bits and hides
/// some capabilities: those are not compared.)
fn config_space_matches_sysfs() -> TestResult {
    per_device_and_mode(|dev, _| {
        let addr = dev.address();
        let raw = sysfs_config(&addr)?;
        let ids = dev.ids()?;
        ensure!(
            ids == (u16_at(&raw, 0), u16_at(&raw, 2)),
            "ids {ids:04x?} through VFIO, {:04x}:{:04x} on the device",
            u16_at(&raw, 0),
            u16_at(&raw, 2)
        );
        ensure!(
            (u64::from(ids.0), u64::from(ids.1)) == (sysfs_hex(&addr, "vendor")?, sysfs_hex(&addr, "device")?),
            "ids {ids:04x?} differ from sysfs vendor/device"
        );
        let class = dev.class()?;
        ensure!(
            class == u32_at(&raw, 8) >> 8 && u64::from(class) == sysfs_hex(&addr, "class")?,
            "class {class:#08x} through VFIO, {:#08x} on the device",
            u32_at(&raw, 8) >> 8
        );
        ensure!(
            dev.revision_id()? == raw[8],
            "revision {:#x} vs {:#x}",
            dev.revision_id()?,
            raw[8]
        );
        let header = dev.header_type()?;
        ensure!(header == raw[0x0e], "header type {header:#x} vs {:#x}", raw[0x0e]);
        if header & 0x7f == 0 {
            let sub = dev.subsystem_ids()?;
            let want = (u16_at(&raw, 0x2c), u16_at(&raw, 0x2e));
            ensure!(sub == want, "subsystem ids {sub:04x?}, device {want:04x?}");
        }
        let caps = dev.standard_capabilities()?;
        let status = dev.status()?;
        ensure!(
            status.contains(Status::CAPABILITIES_LIST) != caps.is_empty(),
            "status {status:?} but the standard walk found {} capabilities",
            caps.len()
        );
        Ok(format!(
            "{:04x}:{:04x} class {class:06x} header {header:#x}",
            ids.0, ids.1
        ))
    })
}

/// The shortest a capability can be, by id (0: unknown, only its header is checked).
fn min_cap_len(dev: &PciDevice, c: &Capability) -> Res<u16> {
    use vfio_pci::capability::id;
    Ok(match c.id as u8 {
        _ if c.extended => 4,
        id::PM => 8,
        id::MSI => {
            let ctrl = dev.config_read16(c.offset + 2)?;
            let base = if ctrl & 0x80 != 0 { 14 } else { 10 };
            base + if ctrl & 0x100 != 0 { 10 } else { 0 }
        }
        id::MSIX => 12,
        id::PCIE => {
            if dev.config_read16(c.offset + 2)? & 0xf >= 2 {
                0x3c
            } else {
                0x14
            }
        }
        id::VENDOR => u16::from(dev.config_read8(c.offset + 2)?).max(3),
        _ => 2,
    })
}

/// Standard and extended capability walks: every capability lies inside config space
/// (standard ones from 0x40, extended ones from 0x100, dword aligned, at least as long as its
/// kind needs), none is listed twice, each is in the device's own list at the same offset
/// (vfio-pci may hide some, and puts an id-0 placeholder at 0x100 when it hides the first
/// extended one), its bytes read through VFIO; the MSI-X capability's table and PBA (read from
/// the device's own config space) lie inside an implemented memory BAR.
fn capability_walks_stay_inside_config_space() -> TestResult {
    per_device_and_mode(|dev, _| {
        let addr = dev.address();
        let size = dev.config_size()?;
        let raw = sysfs_config(&addr)?;
        let full = raw.len() as u64 >= size;
        let raw_caps = if full {
            vfio_pci::capability::parse(&raw[..size as usize], &addr.to_string())?
        } else {
            Vec::new()
        };
        let std_caps = dev.standard_capabilities()?;
        let ext_caps = dev.extended_capabilities()?;
        ensure!(
            dev.capabilities()? == [std_caps.clone(), ext_caps.clone()].concat(),
            "capabilities() is not the standard then the extended walk"
        );
        ensure!(size > 256 || ext_caps.is_empty(), "extended capabilities in 256 bytes");
        let all: Vec<&Capability> = std_caps.iter().chain(&ext_caps).collect();
        for (i, c) in all.iter().enumerate() {
            let len = min_cap_len(dev, c)?;
            let (lo, hi) = if c.extended { (0x100, size) } else { (0x40, 256) };
            ensure!(
                c.offset % 4 == 0 && u64::from(c.offset) >= lo && u64::from(c.offset) + u64::from(len) <= hi,
                "capability {c:?} of {len} bytes is outside [{lo:#x}, {hi:#x}) or misaligned"
            );
            ensure!(
                all[..i].iter().all(|p| p.offset != c.offset),
                "{:#x} listed twice",
                c.offset
            );
            let placeholder = c.extended && c.id == 0 && c.offset == 0x100;
            ensure!(
                !full
                    || placeholder
                    || raw_caps
                        .iter()
                        .any(|r| r.extended == c.extended && r.id == c.id && r.offset == c.offset),
                "capability {c:?} is not in the device's own list"
            );
            dev.capability_bytes(c, len)?;
        }
        if let Some(m) = dev.msix_cap()? {
            let at = usize::from(m.offset);
            if full {
                let ctrl = u16_at(&raw, at + 2);
                let (table, pba) = (u32_at(&raw, at + 4), u32_at(&raw, at + 8));
                ensure!(
                    (
                        u32::from(ctrl & 0x7ff) + 1,
                        table & 7,
                        u64::from(table & !7),
                        pba & 7,
                        u64::from(pba & !7),
                    ) == (m.table_size, m.table_bar, m.table_offset, m.pba_bar, m.pba_offset),
                    "MSI-X through VFIO {m:?}, device ctrl {ctrl:#x} table {table:#x} PBA {pba:#x}"
                );
            }
            for (what, bar, start, len) in [
                ("table", m.table_bar, m.table_offset, 16 * u64::from(m.table_size)),
                ("PBA", m.pba_bar, m.pba_offset, 8 * u64::from(m.table_size.div_ceil(64))),
            ] {
                let info = dev
                    .bar_info(bar)?
                    .ok_or_else(|| format!("MSI-X {what} in unimplemented BAR{bar}"))?;
                ensure!(info.kind != BarKind::Io, "MSI-X {what} in I/O BAR{bar}");
                ensure!(
                    start + len <= info.size,
                    "MSI-X {what} [{start:#x}, +{len:#x}) past BAR{bar}'s {:#x} bytes",
                    info.size
                );
            }
        }
        let ids = |caps: &[Capability]| {
            caps.iter()
                .map(|c| format!("{:#x}@{:#x}", c.id, c.offset))
                .collect::<Vec<_>>()
        };
        Ok(format!(
            "std [{}] ext [{}]{}",
            ids(&std_caps).join(" "),
            ids(&ext_caps).join(" "),
            if full {
                ""
            } else {
                " (sysfs config cut short: not compared)"
            }
        ))
    })
}

/// Every BAR the kernel lets user space mmap maps (its mmappable areas, as many as the region
/// info lists, none past the BAR), the others open for pread only; and the only BAR bytes read
/// are the MSI-X table's vector control words and the PBA, where the MSI-X capability puts
/// them, with memory decoding on.
fn bar_mmap_and_msix_table_reads() -> TestResult {
    per_device_and_mode(|dev, _| {
        let mut said = Vec::new();
        for info in dev.bars()? {
            let bar = dev.bar(info.index)?;
            let areas = info.region.mmap_areas();
            ensure!(
                bar.mappings().len() == areas.len(),
                "BAR{}: {} mappings for {} mmappable areas",
                info.index,
                bar.mappings().len(),
                areas.len()
            );
            let mapped: u64 = bar.mappings().iter().map(|m| m.len() as u64).sum();
            let want: u64 = areas.iter().map(|a| a.size).sum();
            ensure!(
                mapped == want && mapped <= info.size,
                "BAR{}: {mapped:#x} bytes mapped of {want:#x}",
                info.index
            );
            said.push(format!(
                "BAR{} {:?} {:#x} {} area(s)",
                info.index,
                info.kind,
                info.size,
                areas.len()
            ));
        }
        if let Some(m) = dev.msix_cap()? {
            if !dev.command()?.contains(Command::MEMORY_SPACE) {
                said.push("memory decoding off: MSI-X table not read".to_owned());
                return Ok(said.join(", "));
            }
            let table = dev.bar(m.table_bar)?;
            for v in 0..u64::from(m.table_size) {
                table.read32(m.table_offset + 16 * v + 12)?;
            }
            let pba = dev.bar(m.pba_bar)?;
            for q in 0..u64::from(m.table_size.div_ceil(64)) {
                pba.read32(m.pba_offset + 8 * q)?;
                pba.read32(m.pba_offset + 8 * q + 4)?;
            }
            said.push(format!(
                "MSI-X table ({} vectors, {}) and PBA read",
                m.table_size,
                if table.is_mapped(m.table_offset, 16) {
                    "mmap"
                } else {
                    "pread"
                }
            ));
        }
        Ok(said.join(", "))
    })
}

/// Maps `buf` through a borrowing [`DmaMapping`] at a fresh IOVA aligned to its page size,
/// checks the device address, drops the mapping and checks the range is gone.
fn map_borrowed(c: &dyn Container, iovas: &mut IovaAllocator, buf: &DmaBuffer, access: DmaAccess) -> Res<()> {
    let size = buf.len() as u64;
    let iova = iovas.alloc(size, buf.backing().page() as u64)?;
    {
        let map = DmaMapping::new(c, buf, iova, access)?;
        check_device_addr(c, iova, map.device_addr())?;
    }
    check_unmapped(c, iova, size)?;
    iovas.free(iova, size)?;
    Ok(())
}

/// With an IOMMU the device address is the IOVA; without one it is a physical address.
fn check_device_addr(c: &dyn Container, iova: u64, addr: u64) -> Res<()> {
    match c.addressing() {
        Addressing::Iova => ensure!(addr == iova, "device address {addr:#x} for IOVA {iova:#x}"),
        Addressing::Physical => ensure!(addr != 0, "physical address 0 for IOVA {iova:#x}"),
    }
    Ok(())
}

/// After the guard went, nothing is mapped there any more: unmapping again is ENOENT (IOVA
/// containers; without an IOMMU there is no translation to ask).
fn check_unmapped(c: &dyn Container, iova: u64, size: u64) -> Res<()> {
    if c.addressing() == Addressing::Iova {
        let e = c
            .unmap_dma(iova, size)
            .err()
            .ok_or_else(|| format!("IOVA {iova:#x} still mapped after its guard was dropped"))?;
        ensure!(
            e.errno() == Some(rustix::io::Errno::NOENT),
            "unmap of a dropped mapping: {e}"
        );
    }
    Ok(())
}

/// A huge-page buffer of `backing`, or None when none are reserved (the reason noted).
fn huge(backing: Backing, notes: &mut Vec<String>) -> Res<Option<DmaBuffer>> {
    match DmaBuffer::with_backing(backing.page(), backing) {
        Ok(b) => Ok(Some(b)),
        Err(e @ Error::Unsupported { .. }) => {
            notes.push(format!("no {backing:?} ({e})"));
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// DMA map and unmap, in every mode, of every kind of buffer the library offers, with the
/// device attached and never told about it: a memfd buffer (read-write and read-only), an
/// anonymous one (owned mapping), 2 MiB and 1 GiB huge pages where reserved, and a `DmaPool`
/// (anonymous, memfd and huge buffers) whose translations agree with its device addresses.
fn dma_map_unmap_every_buffer_kind() -> TestResult {
    per_device_and_mode(|_dev, c| {
        let mut notes = Vec::new();
        let mut done = Vec::new();
        let mut iovas = IovaAllocator::new(&c.iova_ranges()?);
        let page = vfio_core::page_size();
        let memfd = DmaBuffer::with_backing(page, Backing::Memfd)?;
        map_borrowed(c.as_ref(), &mut iovas, &memfd, DmaAccess::READ_WRITE)?;
        map_borrowed(c.as_ref(), &mut iovas, &memfd, DmaAccess::READ)?;
        done.push("memfd rw+ro");
        // Anonymous memory: owned (a borrowing map refuses it where pinning is lazy).
        let iova = iovas.alloc(page as u64, page as u64)?;
        let anon = DmaBuffer::with_backing(page, Backing::Anonymous)?;
        let owned = OwnedDmaMapping::new(SharedContainer::Shared(c.clone()), anon, iova, DmaAccess::READ_WRITE)?;
        check_device_addr(c.as_ref(), iova, owned.device_addr())?;
        let back = owned.into_buffer()?;
        ensure!(
            back.backing() == Backing::Anonymous,
            "into_buffer gave {:?}",
            back.backing()
        );
        check_unmapped(c.as_ref(), iova, page as u64)?;
        iovas.free(iova, page as u64)?;
        done.push("anonymous (owned)");
        let mut huge_kinds = Vec::new();
        for backing in [Backing::Huge2M, Backing::Huge1G] {
            if let Some(buf) = huge(backing, &mut notes)? {
                map_borrowed(c.as_ref(), &mut iovas, &buf, DmaAccess::READ_WRITE)?;
                huge_kinds.push(backing);
                done.push(if backing == Backing::Huge2M { "2M" } else { "1G" });
            }
        }
        // The pool: one buffer of each kind, translated without a syscall, then freed.
        let mut pool = DmaPool::new(c.as_ref())?;
        let mut handles = Vec::new();
        // Several pages where an IOMMU translates; without one a mapping must be physically
        // contiguous, which only a single page (or a huge page) surely is.
        let pages = if c.addressing() == Addressing::Iova { 3 } else { 1 };
        for (backing, len) in [(Backing::Anonymous, page), (Backing::Memfd, pages * page)]
            .into_iter()
            .chain(huge_kinds.iter().map(|&b| (b, b.page())))
        {
            let h = pool.alloc_with(len, backing, DmaAccess::READ_WRITE)?;
            let buf = pool.buffer(h)?;
            let at = pool.device_addr(h, 0)?;
            ensure!(
                pool.translate(buf.as_ptr(), buf.len()) == Some(at),
                "pool {backing:?}: translate disagrees with device_addr {at:#x}"
            );
            let last = buf.len() - 1;
            ensure!(
                pool.translate(buf.as_ptr().wrapping_add(last), 1) == Some(at + last as u64),
                "pool {backing:?}: the last byte does not translate to {:#x}",
                at + last as u64
            );
            handles.push(h);
        }
        for h in handles {
            pool.free(h)?;
        }
        drop(pool);
        done.push("pool");
        if !notes.is_empty() {
            notes.insert(0, String::new());
        }
        Ok(format!("{}{}", done.join(", "), notes.join("; skipped ")))
    })
}

/// MSI and MSI-X, where the device has them: enable with eventfds (MSI: one vector; MSI-X: up
/// to four), a trigger from user space (`VFIO_DEVICE_SET_IRQS` with no data: the kernel signals
/// the eventfd, the device does nothing) reaches the last vector's eventfd, MSI-X's enable bit
/// reads set (vfio-pci virtualizes MSI's), and after disabling both enable bits read clear.
fn msi_and_msix_enable_and_disable() -> TestResult {
    per_device_and_mode(|dev, _| {
        let mut said = Vec::new();
        let wait = Duration::from_secs(5);
        let msi = dev.device().irq_info(vfio_pci::MSI_IRQ)?.count;
        if msi > 0 {
            let fd = EventFd::new()?;
            dev.enable_msi([&fd])?;
            dev.device().set_irqs(&IrqSet::trigger(vfio_pci::MSI_IRQ, 0, 1))?;
            ensure!(
                fd.wait_timeout(wait)?.is_some(),
                "the MSI trigger did not reach the eventfd"
            );
            dev.disable_irq(vfio_pci::MSI_IRQ)?;
            ensure!(
                !dev.msi_cap()?.ok_or("MSI vectors without an MSI capability")?.enabled,
                "MSI reads enabled after the disable"
            );
            said.push(format!("MSI 1/{msi}"));
        }
        let msix = dev.device().irq_info(vfio_pci::MSIX_IRQ)?.count;
        if msix > 0 {
            let n = msix.min(4);
            let fds: Vec<EventFd> = (0..n).map(|_| EventFd::new()).collect::<Result<_, _>>()?;
            dev.enable_msix(fds.iter().collect::<Vec<_>>())?;
            let cap = dev.msix_cap()?.ok_or("MSI-X vectors without an MSI-X capability")?;
            ensure!(cap.enabled, "MSI-X reads disabled after enabling {n} vectors");
            dev.device().set_irqs(&IrqSet::trigger(vfio_pci::MSIX_IRQ, n - 1, 1))?;
            ensure!(
                fds[n as usize - 1].wait_timeout(wait)?.is_some(),
                "the trigger of MSI-X vector {} did not reach its eventfd",
                n - 1
            );
            dev.disable_irq(vfio_pci::MSIX_IRQ)?;
            ensure!(
                !dev.msix_cap()?.is_some_and(|c| c.enabled),
                "MSI-X reads enabled after the disable"
            );
            said.push(format!("MSI-X {n}/{msix}"));
        }
        if said.is_empty() {
            said.push("no MSI or MSI-X".to_owned());
        }
        Ok(said.join(", "))
    })
}

/// `VFIO_DEVICE_RESET` where the device offers it (`VFIO_DEVICE_FLAGS_RESET`), in every mode:
/// afterwards config space still reads sane (ids, class, header type equal sysfs's, the same
/// capabilities) and the command register is as before (`PciDevice::reset` restores it).
fn reset_leaves_config_space_sane() -> TestResult {
    per_device_and_mode(|dev, _| {
        if !dev.device().info()?.flags.contains(DeviceFlags::RESET) {
            return Ok("no reset offered".to_owned());
        }
        let addr = dev.address();
        let caps = dev.capabilities()?;
        let cmd = dev.command()?;
        dev.reset()?;
        let raw = sysfs_config(&addr)?;
        ensure!(
            dev.ids()? == (u16_at(&raw, 0), u16_at(&raw, 2)) && dev.ids()?.0 != 0xffff,
            "ids {:04x?} after the reset",
            dev.ids()?
        );
        ensure!(
            dev.class()? == u32_at(&raw, 8) >> 8,
            "class {:#x} after the reset",
            dev.class()?
        );
        ensure!(
            dev.header_type()? == raw[0x0e],
            "header type {:#x} after the reset",
            dev.header_type()?
        );
        ensure!(
            dev.capabilities()? == caps,
            "capabilities {caps:?} became {:?}",
            dev.capabilities()?
        );
        ensure!(dev.command()? == cmd, "command {cmd:?} became {:?}", dev.command()?);
        Ok("reset".to_owned())
    })
}

/// Opens the device in a fresh container of `mode` and holds everything this suite uses (every
/// BAR opened, MSI-X or MSI on eventfds, a borrowed and an owned DMA mapping, a pool buffer),
/// then drops it all, the container first when `container_first`, else last.
fn hold_and_drop(addr: &PciAddress, mode: Mode, container_first: bool) -> Res<()> {
    let container = vfio_tests::new_container(mode)?;
    let dev = PciDevice::open_in(container.as_ref(), addr)?;
    let bars = dev
        .bars()?
        .iter()
        .map(|b| dev.bar(b.index))
        .collect::<Result<Vec<_>, _>>()?;
    let irq = EventFd::new()?;
    if dev.device().irq_info(vfio_pci::MSIX_IRQ)?.count > 0 {
        dev.enable_msix([&irq])?;
    } else if dev.device().irq_info(vfio_pci::MSI_IRQ)?.count > 0 {
        dev.enable_msi([&irq])?;
    }
    let mut iovas = IovaAllocator::new(&container.iova_ranges()?);
    let page = vfio_core::page_size() as u64;
    let (a, b) = (iovas.alloc(page, page)?, iovas.alloc(page, page)?);
    let owned = OwnedDmaMapping::new(
        SharedContainer::Shared(container.clone()),
        DmaBuffer::with_backing(page as usize, Backing::Anonymous)?,
        a,
        DmaAccess::READ_WRITE,
    )?;
    let buf = DmaBuffer::new(page as usize)?;
    let borrowed = DmaMapping::new(container.as_ref(), &buf, b, DmaAccess::READ_WRITE)?;
    let mut pool = DmaPool::with_ranges(
        container.as_ref(),
        &[vfio_core::IovaRange {
            start: b + page,
            last: b + 64 * page - 1,
        }],
    );
    pool.alloc(page as usize, DmaAccess::READ_WRITE)?;
    if container_first {
        // The shared handle goes first; the owned mapping keeps the container until it goes.
        drop(pool);
        drop(borrowed);
        drop(container);
        drop(dev);
        drop(owned);
        drop(bars);
        drop(irq);
    } else {
        drop(bars);
        drop(irq);
        drop(dev);
        drop(pool);
        drop(borrowed);
        drop(owned);
        drop(container);
    }
    Ok(())
}

/// The fds of this process that point at VFIO or iommufd objects.
fn vfio_fds() -> Res<Vec<String>> {
    Ok(open_fds()?
        .into_iter()
        .filter_map(|fd| std::fs::read_link(format!("/proc/self/fd/{fd}")).ok())
        .map(|p| p.display().to_string())
        .filter(|p| p.contains("vfio") || p.contains("iommu"))
        .collect())
}

/// Leaks and teardown, in every mode: holding everything the suite uses and dropping it (the
/// container first, or last) leaves no fd, memory mapping, locked or pinned page behind and
/// no fd on a VFIO or iommufd object, and the device is free again: it opens in every mode
/// right after (so no group stayed in a container, no cdev stayed bound).
fn nothing_left_after_drop() -> TestResult {
    let modes = match modes() {
        Ok(m) => m,
        Err(why) => return skip(why),
    };
    let warm = std::cell::RefCell::new(Vec::new());
    per_device(|addr| {
        for &mode in &modes {
            // Warm-up, once per mode: state created once per process (the no-IOMMU pagemap,
            // ...) is no leak.
            if !warm.borrow().contains(&mode) {
                hold_and_drop(addr, mode, false).map_err(|e| format!("({mode}): {e}"))?;
                warm.borrow_mut().push(mode);
            }
            let before = Resources::now()?;
            let held = vfio_fds()?;
            for container_first in [false, true] {
                hold_and_drop(addr, mode, container_first).map_err(|e| format!("({mode}): {e}"))?;
                before.check(format!(
                    "({mode}, container dropped {})",
                    if container_first { "first" } else { "last" }
                ))?;
            }
            let left = vfio_fds()?;
            ensure!(left == held, "({mode}): VFIO fds {held:?} -> {left:?}");
            for &other in &modes {
                let c = vfio_tests::new_container(other)?;
                PciDevice::open_in(c.as_ref(), addr)
                    .map_err(|e| format!("({mode}): not free for {other} after the drop: {e}"))?;
            }
        }
        Ok(format!("{} mode(s), nothing left", modes.len()))
    })
}

fn main() -> ExitCode {
    vfio_tests::run(&[
        ("doctor_says_usable", doctor_says_usable),
        (
            "info_regions_and_irqs_in_every_mode",
            info_regions_and_irqs_in_every_mode,
        ),
        ("config_space_matches_sysfs", config_space_matches_sysfs),
        (
            "capability_walks_stay_inside_config_space",
            capability_walks_stay_inside_config_space,
        ),
        ("bar_mmap_and_msix_table_reads", bar_mmap_and_msix_table_reads),
        ("dma_map_unmap_every_buffer_kind", dma_map_unmap_every_buffer_kind),
        ("msi_and_msix_enable_and_disable", msi_and_msix_enable_and_disable),
        ("reset_leaves_config_space_sane", reset_leaves_config_space_sane),
        ("nothing_left_after_drop", nothing_left_after_drop),
    ])
}
