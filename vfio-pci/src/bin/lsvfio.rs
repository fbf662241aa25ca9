//! `lsvfio`: the PCI functions of this machine as VFIO sees them.
//!
//! ```text
//! lsvfio [-v] [--json] [ADDRESS...]   list functions: ids, class, driver, IOMMU group, nodes,
//!                                      and the modes that could open each one now
//!                                      (-v: open each vfio-pci device and show its regions,
//!                                      IRQ indexes and capabilities); an SR-IOV VF
//!                                      gets a line `physfn ADDRESS`, a PF one
//!                                      `sriov numvfs N/totalvfs M` (JSON: `physfn`, `sriov`)
//! lsvfio bind ADDRESS                 bind to vfio-pci (driver_override), print the old driver
//! lsvfio unbind ADDRESS [DRIVER]      leave vfio-pci; bind DRIVER, or let the kernel choose
//! lsvfio mdev create TYPE [UUID]      create a mediated device of TYPE (e.g. mtty-1; any
//!                                      parent that has the type), print its UUID; it stays
//! lsvfio mdev remove UUID             remove a mediated device
//! lsvfio doctor [--json] [ADDRESS...]  whether and how this machine can use VFIO, device by
//!                                      device (exit status 1 when an ADDRESS is blocked)
//! ```
//!
//! After the PCI functions, the text listing shows the mediated-device parents, their types
//! (with the instances still available) and their instances; `-v` opens each instance too.
//!
//! `bind` and `unbind` print the driver the function ends on and exit non-zero when it is not
//! the one asked for (vfio-pci; DRIVER; for `unbind` without DRIVER, anything but vfio-pci).

use std::fmt::Write as _;
use std::process::ExitCode;

use vfio_core::{IrqFlags, Mode, PciAddress, RegionCap, RegionFlags, Sysfs};
use vfio_pci::{DeviceSummary, PciDevice, inventory};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

const USAGE: &str = "usage: lsvfio [-v] [--json] [ADDRESS...]
       lsvfio bind ADDRESS
       lsvfio unbind ADDRESS [DRIVER]
       lsvfio mdev create TYPE [UUID]
       lsvfio mdev remove UUID
       lsvfio doctor [--json] [ADDRESS...]";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lsvfio: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let sysfs = Sysfs::default();
    match args.first().map(String::as_str) {
        Some("-h" | "--help") => {
            println!("{USAGE}");
            Ok(())
        }
        Some("bind") => {
            let addr: PciAddress = args.get(1).ok_or(USAGE)?.parse()?;
            let old = sysfs.bind_vfio_pci(&addr)?;
            println!(
                "{addr}: bound to vfio-pci (was {})",
                old.as_deref().unwrap_or("unbound")
            );
            Ok(())
        }
        Some("unbind") => {
            let addr: PciAddress = args.get(1).ok_or(USAGE)?.parse()?;
            let driver = args.get(2).map(String::as_str);
            sysfs.restore_driver(&addr, driver)?;
            if driver.is_none() {
                // No driver named: let the PCI core pick one, now that driver_override is clear.
                let probe = "/sys/bus/pci/drivers_probe";
                std::fs::write(probe, addr.to_string()).map_err(|e| vfio_core::Error::path("write", probe, e))?;
            }
            let now = sysfs.driver(&addr)?;
            println!("{addr}: left vfio-pci, now {}", now.as_deref().unwrap_or("unbound"));
            match (driver, now.as_deref()) {
                (Some(want), got) if got != Some(want) => {
                    Err(format!("{addr} is on {} after binding {want}", got.unwrap_or("no driver")).into())
                }
                (_, Some("vfio-pci")) => Err(format!("{addr} is still on vfio-pci").into()),
                _ => Ok(()),
            }
        }
        Some("mdev") => mdev_command(&sysfs, &args[1..]),
        Some("doctor") => doctor_command(&sysfs, &args[1..]),
        _ => list(&sysfs, &args),
    }
}

/// `lsvfio mdev create TYPE [UUID]` and `lsvfio mdev remove UUID`.
fn mdev_command(sysfs: &Sysfs, args: &[String]) -> Res<()> {
    match (args.first().map(String::as_str), args.get(1)) {
        (Some("create"), Some(ty)) => {
            let uuid = match args.get(2) {
                Some(u) => u.parse()?,
                None => vfio_core::Uuid::random()?,
            };
            let t = vfio_core::mdev_parents(sysfs)?
                .into_iter()
                .find_map(|p| p.mdev_type(ty).ok())
                .ok_or_else(|| format!("no mdev parent has a type {ty:?}"))?;
            let m = t.create(uuid)?;
            println!("{}: created, type {} on {}", m.uuid(), t.id(), t.parent());
            m.into_kept();
            Ok(())
        }
        (Some("remove"), Some(u)) => {
            let uuid: vfio_core::Uuid = u.parse()?;
            vfio_core::Mdev::find(sysfs, uuid)?.remove()?;
            println!("{uuid}: removed");
            Ok(())
        }
        _ => Err(USAGE.into()),
    }
}

/// `lsvfio doctor [--json] [ADDRESS...]` (vfio_pci::doctor): fails when an ADDRESS is blocked.
fn doctor_command(sysfs: &Sysfs, args: &[String]) -> Res<()> {
    let json = args.iter().any(|a| a == "--json");
    let addrs = args
        .iter()
        .filter(|a| *a != "--json")
        .map(|a| a.parse::<PciAddress>())
        .collect::<vfio_core::Result<Vec<_>>>()?;
    let report = vfio_pci::doctor::diagnose(sysfs, &addrs)?;
    let render = if json {
        vfio_pci::doctor::render::json
    } else {
        vfio_pci::doctor::render::text
    };
    print!("{}", render(&report));
    if report.blocked() {
        return Err("something blocks VFIO here (see the findings above)".into());
    }
    Ok(())
}

/// The mediated-device section of the text listing (nothing without mdev parents).
fn render_mdevs(sysfs: &Sysfs, verbose: bool) -> Res<String> {
    let mut out = String::new();
    let parents = inventory::mdev_parents(sysfs)?;
    if parents.is_empty() {
        return Ok(out);
    }
    let _ = writeln!(out, "mediated devices:");
    for p in &parents {
        let _ = writeln!(out, "  parent {}", p.name);
        for t in &p.types {
            let _ = writeln!(
                out,
                "    type {:<14} {:<8} {:>3} available  {:?}{}",
                t.id,
                t.device_api,
                t.available,
                t.name,
                t.description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default()
            );
        }
        for m in &p.instances {
            let modes: Vec<String> = m.modes.iter().map(|m| m.to_string()).collect();
            let _ = writeln!(
                out,
                "    {} {:<14} driver {:<8} group {:<4} cdev {:<8} {}",
                m.uuid,
                m.type_id,
                m.driver.as_deref().unwrap_or("-"),
                m.iommu_group.map_or("-".into(), |g| g.to_string()),
                m.cdev.as_ref().map_or("-", |c| c.name.as_str()),
                if modes.is_empty() { "-".into() } else { modes.join(",") }
            );
            if verbose && !m.modes.is_empty() {
                match open_mdev(sysfs, m) {
                    Ok(text) => out.push_str(&text),
                    Err(e) => {
                        let _ = writeln!(out, "      cannot open: {e}");
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Opens an instance in its first mode (cdev first) and describes its regions and IRQs.
fn open_mdev(sysfs: &Sysfs, m: &inventory::MdevSummary) -> Res<String> {
    let mode = m.modes[0];
    let c: Box<dyn vfio_core::Container> = match mode.interface() {
        vfio_core::Interface::Cdev => Box::new(vfio_cdev::Container::new()?),
        vfio_core::Interface::Group => Box::new(vfio_group::Container::open(vfio_core::Addressing::Iova)?),
    };
    let dev = vfio_core::Mdev::find(sysfs, m.uuid)?.open_in(c.as_ref())?;
    let info = dev.info()?;
    let mut out = String::new();
    let _ = writeln!(out, "      opened in {mode} mode: {:?}", info.flags);
    for i in 0..info.num_regions {
        match dev.region_info(i) {
            Ok(r) if r.size > 0 => {
                let _ = writeln!(
                    out,
                    "      {:<7} {:>#12x} bytes {}",
                    region_name(i),
                    r.size,
                    region_flags(&r)
                );
            }
            Ok(_) => {}
            Err(e) if e.errno() == Some(vfio_core::Errno::INVAL) => {}
            Err(e) => return Err(e.into()),
        }
    }
    for i in 0..info.num_irqs {
        match dev.irq_info(i) {
            Ok(q) if q.count > 0 => {
                let _ = writeln!(
                    out,
                    "      {:<7} {:>3} vector(s) {}",
                    irq_name(i),
                    q.count,
                    irq_flags(q.flags)
                );
            }
            Ok(_) => {}
            Err(e) if e.errno() == Some(vfio_core::Errno::INVAL) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

fn list(sysfs: &Sysfs, args: &[String]) -> Res<()> {
    let (mut verbose, mut json, mut only) = (false, false, Vec::new());
    for a in args {
        match a.as_str() {
            "-v" | "--verbose" => verbose = true,
            "--json" => json = true,
            a if a.starts_with('-') => return Err(format!("unknown option {a}\n{USAGE}").into()),
            a => only.push(a.parse::<PciAddress>()?),
        }
    }
    let devices = if only.is_empty() {
        inventory::list(sysfs)?
    } else {
        only.iter()
            .map(|a| inventory::describe(sysfs, a))
            .collect::<vfio_core::Result<_>>()?
    };
    let details: Vec<Option<Res<Details>>> = devices
        .iter()
        .map(|d| (verbose && !d.modes.is_empty()).then(|| Details::read(d)))
        .collect();
    let sriov: Vec<Sriov> = devices.iter().map(|d| Sriov::read(sysfs, &d.address)).collect();
    let mut out = if json {
        render_json(&devices, &details, &sriov)
    } else {
        render_text(&devices, &details, &sriov)
    };
    if !json && only.is_empty() {
        out.push_str(&render_mdevs(sysfs, verbose)?);
    }
    print!("{out}");
    Ok(())
}

/// SR-IOV from sysfs: a VF's PF, a PF's `sriov_numvfs`/`sriov_totalvfs`.
#[derive(Default)]
struct Sriov {
    physfn: Option<PciAddress>,
    counts: Option<(u16, u16)>,
}

impl Sriov {
    fn read(sysfs: &Sysfs, addr: &PciAddress) -> Self {
        let total = sysfs.sriov_totalvfs(addr).ok().flatten();
        Sriov {
            physfn: sysfs.physfn(addr).ok().flatten(),
            counts: total.map(|t| (sysfs.sriov_numvfs(addr).ok().flatten().unwrap_or(0), t)),
        }
    }
}

/// What opening a device reveals.
struct Details {
    mode: Mode,
    flags: String,
    regions: Vec<vfio_core::RegionInfo>,
    irqs: Vec<vfio_core::IrqInfo>,
    caps: Vec<vfio_pci::Capability>,
    /// What `IOMMU_GET_HW_INFO` says about the device's IOMMU (cdev devices only).
    iommu: Option<String>,
}

/// The device's IOMMU as `IOMMU_GET_HW_INFO` reports it, asked through a fresh iommufd the
/// device's cdev is bound to for the query; None without a cdev.
fn iommu_hw_info(d: &DeviceSummary) -> Option<String> {
    d.cdev.as_ref()?;
    let info = vfio_cdev::Iommufd::open().and_then(|iommufd| {
        let bound = vfio_cdev::UnboundDevice::open(&Sysfs::default(), &d.address)?.bind(&iommufd)?;
        if bound.is_noiommu() {
            return Ok("none (no-IOMMU)".to_string());
        }
        bound.hw_info().map(|i| i.to_string())
    });
    Some(info.unwrap_or_else(|e| format!("unknown ({e})")))
}

impl Details {
    /// Opens the device in the first mode it can be opened in (cdev first).
    fn read(d: &DeviceSummary) -> Res<Self> {
        let mode = Mode::ALL
            .into_iter()
            .find(|m| d.modes.contains(m))
            .ok_or("no mode can open it")?;
        let dev = PciDevice::open(&d.address, Some(mode))?;
        let info = dev.device().info()?;
        // Indexes the device does not implement (e.g. VGA on a non-VGA device) are EINVAL.
        let regions = (0..info.num_regions)
            .map(|i| dev.device().region_info(i))
            .filter(|r| !matches!(r, Err(e) if e.errno() == Some(vfio_core::Errno::INVAL)))
            .collect::<vfio_core::Result<Vec<_>>>()?;
        // Likewise IRQ indexes: older kernels (Linux 6.1) refuse the ERR index of a
        // conventional PCI device with EINVAL instead of reporting 0 vectors.
        let irqs = (0..info.num_irqs)
            .map(|i| dev.device().irq_info(i))
            .filter(|r| !matches!(r, Err(e) if e.errno() == Some(vfio_core::Errno::INVAL)))
            .collect::<vfio_core::Result<Vec<_>>>()?;
        let caps = dev.capabilities()?;
        // The cdev is bound anew for the query: close this open first.
        drop(dev);
        Ok(Details {
            mode,
            flags: format!("{:?}", info.flags),
            regions: regions.into_iter().filter(|r| r.size > 0).collect(),
            irqs,
            caps,
            iommu: iommu_hw_info(d),
        })
    }
}

fn region_name(i: u32) -> String {
    match i {
        0..=5 => format!("BAR{i}"),
        6 => "ROM".into(),
        7 => "config".into(),
        8 => "VGA".into(),
        _ => format!("region {i}"),
    }
}

fn irq_name(i: u32) -> &'static str {
    ["INTx", "MSI", "MSI-X", "ERR", "REQ"]
        .get(i as usize)
        .copied()
        .unwrap_or("other")
}

fn cap_name(c: &vfio_pci::Capability) -> &'static str {
    match (c.extended, c.id) {
        (false, 0x01) => "PM",
        (false, 0x05) => "MSI",
        (false, 0x09) => "vendor",
        (false, 0x10) => "PCIe",
        (false, 0x11) => "MSI-X",
        (true, 0x01) => "AER",
        (true, 0x0d) => "ACS",
        (true, 0x0e) => "ARI",
        (true, 0x10) => "SR-IOV",
        _ => "other",
    }
}

fn region_flags(r: &vfio_core::RegionInfo) -> String {
    let mut s = String::new();
    for (f, c) in [
        (RegionFlags::READ, 'r'),
        (RegionFlags::WRITE, 'w'),
        (RegionFlags::MMAP, 'm'),
    ] {
        s.push(if r.flags.contains(f) { c } else { '-' });
    }
    s
}

fn sparse(r: &vfio_core::RegionInfo) -> Vec<(u64, u64)> {
    r.caps
        .iter()
        .flat_map(|c| match c {
            RegionCap::SparseMmap(areas) => areas.iter().map(|a| (a.offset, a.size)).collect(),
            _ => Vec::new(),
        })
        .collect()
}

fn modes_text(d: &DeviceSummary) -> String {
    if d.modes.is_empty() {
        return match (d.driver.as_deref(), d.group_viable) {
            (Some("vfio-pci"), false) => format!(
                "- (group not viable: {})",
                d.blockers
                    .iter()
                    .map(|(a, drv)| format!("{a} on {drv}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            (Some("vfio-pci"), true) => "- (no VFIO nodes)".into(),
            _ => "- (not bound to vfio-pci)".into(),
        };
    }
    d.modes.iter().map(|m| m.to_string()).collect::<Vec<_>>().join(",")
}

fn render_text(devices: &[DeviceSummary], details: &[Option<Res<Details>>], sriov: &[Sriov]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<13} {:<9} {:<6} {:<12} {:<5} {:<16} MODES",
        "ADDRESS", "ID", "CLASS", "DRIVER", "GROUP", "CDEV"
    );
    for ((d, det), sr) in devices.iter().zip(details).zip(sriov) {
        let _ = writeln!(
            out,
            "{:<13} {:04x}:{:04x} {:06x} {:<12} {:<5} {:<16} {}",
            d.address.to_string(),
            d.vendor,
            d.device,
            d.class,
            d.driver.as_deref().unwrap_or("-"),
            d.iommu_group.map_or("-".into(), |g| g.to_string()),
            d.cdev.as_ref().map_or("-", |c| c.name.as_str()),
            modes_text(d)
        );
        if let Some(pf) = sr.physfn {
            let _ = writeln!(out, "    physfn {pf}");
        }
        if let Some((num, total)) = sr.counts {
            let _ = writeln!(out, "    sriov numvfs {num}/totalvfs {total}");
        }
        match det {
            None => {}
            Some(Err(e)) => {
                let _ = writeln!(out, "    cannot open: {e}");
            }
            Some(Ok(x)) => {
                let _ = writeln!(out, "    opened in {} mode: {}", x.mode, x.flags);
                if let Some(iommu) = &x.iommu {
                    let _ = writeln!(out, "    IOMMU   {iommu}");
                }
                for r in &x.regions {
                    let _ = write!(
                        out,
                        "    {:<7} {:>#12x} bytes {}",
                        region_name(r.index),
                        r.size,
                        region_flags(r)
                    );
                    for (off, len) in sparse(r) {
                        let _ = write!(out, " mmap[{off:#x}+{len:#x}]");
                    }
                    if r.caps.iter().any(|c| matches!(c, RegionCap::MsixMappable)) {
                        let _ = write!(out, " msix-mappable");
                    }
                    out.push('\n');
                }
                for i in x.irqs.iter().filter(|i| i.count > 0) {
                    let _ = writeln!(
                        out,
                        "    {:<7} {:>3} vector(s) {}",
                        irq_name(i.index),
                        i.count,
                        irq_flags(i.flags)
                    );
                }
                let caps: Vec<String> = x
                    .caps
                    .iter()
                    .map(|c| format!("{}@{:#x}", cap_name(c), c.offset))
                    .collect();
                let caps = if caps.is_empty() {
                    "-".to_string()
                } else {
                    caps.join(" ")
                };
                let _ = writeln!(out, "    caps    {caps}");
            }
        }
    }
    let usable = devices.iter().filter(|d| !d.modes.is_empty()).count();
    let _ = writeln!(
        out,
        "lsvfio: {} PCI function(s), {usable} usable through VFIO now",
        devices.len()
    );
    // Interface (group, cdev) x addressing (IOVA, physical = "-noiommu").
    let offered = vfio_core::detect().offered();
    let offered: Vec<String> = offered.iter().map(|m| m.to_string()).collect();
    let _ = writeln!(
        out,
        "lsvfio: this kernel offers {}",
        if offered.is_empty() {
            "no VFIO mode".to_string()
        } else {
            offered.join(", ")
        }
    );
    out
}

fn irq_flags(f: IrqFlags) -> String {
    let mut v = Vec::new();
    for (flag, name) in [
        (IrqFlags::EVENTFD, "eventfd"),
        (IrqFlags::MASKABLE, "maskable"),
        (IrqFlags::AUTOMASKED, "automasked"),
        (IrqFlags::NORESIZE, "noresize"),
    ] {
        if f.contains(flag) {
            v.push(name);
        }
    }
    v.join(",")
}

/// A JSON string literal.
fn js(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or("null".into(), |v| v.to_string())
}

fn render_json(devices: &[DeviceSummary], details: &[Option<Res<Details>>], sriov: &[Sriov]) -> String {
    let items: Vec<String> = devices
        .iter()
        .zip(details)
        .zip(sriov)
        .map(|((d, det), sr)| {
            let modes: Vec<String> = d.modes.iter().map(|m| js(&m.to_string())).collect();
            let mut o = format!(
                "{{\"address\":{},\"vendor\":{},\"device\":{},\"class\":{},\"driver\":{},\"iommu_group\":{},\"group_node\":{},\"group_viable\":{},\"cdev\":{},\"modes\":[{}]",
                js(&d.address.to_string()),
                d.vendor,
                d.device,
                d.class,
                opt(d.driver.as_deref().map(js)),
                opt(d.iommu_group),
                opt(d.group_node.as_ref().map(|p| js(&p.display().to_string()))),
                d.group_viable,
                opt(d.cdev.as_ref().map(|c| js(&c.path.display().to_string()))),
                modes.join(",")
            );
            let _ = write!(
                o,
                ",\"physfn\":{},\"sriov\":{}",
                opt(sr.physfn.map(|a| js(&a.to_string()))),
                opt(sr
                    .counts
                    .map(|(n, t)| format!("{{\"numvfs\":{n},\"totalvfs\":{t}}}")))
            );
            match det {
                None => {}
                Some(Err(e)) => {
                    let _ = write!(o, ",\"error\":{}", js(&e.to_string()));
                }
                Some(Ok(x)) => {
                    let regions: Vec<String> = x
                        .regions
                        .iter()
                        .map(|r| {
                            let areas: Vec<String> =
                                sparse(r).iter().map(|(o, l)| format!("[{o},{l}]")).collect();
                            format!(
                                "{{\"index\":{},\"name\":{},\"size\":{},\"flags\":{},\"sparse_mmap\":[{}]}}",
                                r.index,
                                js(&region_name(r.index)),
                                r.size,
                                js(&region_flags(r)),
                                areas.join(",")
                            )
                        })
                        .collect();
                    let irqs: Vec<String> = x
                        .irqs
                        .iter()
                        .map(|i| {
                            format!(
                                "{{\"index\":{},\"name\":{},\"count\":{},\"flags\":{}}}",
                                i.index,
                                js(irq_name(i.index)),
                                i.count,
                                js(&irq_flags(i.flags))
                            )
                        })
                        .collect();
                    let caps: Vec<String> = x
                        .caps
                        .iter()
                        .map(|c| {
                            format!(
                                "{{\"id\":{},\"extended\":{},\"offset\":{},\"name\":{}}}",
                                c.id,
                                c.extended,
                                c.offset,
                                js(cap_name(c))
                            )
                        })
                        .collect();
                    let _ = write!(
                        o,
                        ",\"opened_in\":{},\"regions\":[{}],\"irqs\":[{}],\"capabilities\":[{}]",
                        js(&x.mode.to_string()),
                        regions.join(","),
                        irqs.join(","),
                        caps.join(",")
                    );
                    let _ = write!(o, ",\"iommu_hw_info\":{}", opt(x.iommu.as_deref().map(js)));
                }
            }
            o.push('}');
            o
        })
        .collect();
    format!("[{}]\n", items.join(",\n "))
}
