//! The doctor's report as text for people and as JSON for programs (`lsvfio doctor [--json]`).

use std::fmt::Write as _;

use super::acs::Acs;
use super::{DeviceReport, Finding, MachineReport, Report, Severity};

fn yes_no(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "yes",
        Some(false) => "no",
        None => "unknown",
    }
}

fn limit(v: u64) -> String {
    if v == u64::MAX {
        "unlimited".into()
    } else {
        format!("{} KiB", v / 1024)
    }
}

fn finding_line(out: &mut String, indent: &str, f: &Finding) {
    let _ = writeln!(out, "{indent}{:<7} {f}", f.severity());
    let _ = writeln!(out, "{indent}        fix: {}", f.fix());
}

fn machine_text(out: &mut String, m: &MachineReport) {
    let _ = writeln!(out, "kernel       {}", m.kernel_release.as_deref().unwrap_or("unknown"));
    let units: Vec<String> = m
        .iommus
        .iter()
        .map(|u| {
            let ir = match u.remap_capable {
                Some(true) => ", IR capable",
                Some(false) => ", no IR",
                None => "",
            };
            format!("{} ({}{ir})", u.name, u.kind)
        })
        .collect();
    let _ = writeln!(
        out,
        "iommu        {}",
        if units.is_empty() {
            "none".into()
        } else {
            units.join(", ")
        }
    );
    let _ = writeln!(
        out,
        "intremap     {} (allow_unsafe_interrupts: type1 {}, iommufd {})",
        yes_no(m.interrupt_remapping),
        m.unsafe_interrupts.type1.map_or("-", |v| if v { "Y" } else { "N" }),
        m.unsafe_interrupts.iommufd.map_or("-", |v| if v { "Y" } else { "N" })
    );
    let _ = writeln!(out, "noiommu      {}", if m.noiommu_mode { "enabled" } else { "off" });
    let offered: Vec<String> = m.modes.offered().iter().map(|m| m.to_string()).collect();
    let _ = writeln!(
        out,
        "modes        {}",
        if offered.is_empty() {
            "none".into()
        } else {
            offered.join(", ")
        }
    );
    for n in &m.nodes {
        let _ = writeln!(out, "node         {} {}", n.path.display(), access_text(&n.access));
    }
    let _ = writeln!(
        out,
        "memlock      {} (hard {}){}",
        limit(m.memlock.0),
        limit(m.memlock.1),
        if m.cap_ipc_lock { ", CAP_IPC_LOCK" } else { "" }
    );
    if let Some(l) = m.dma_entry_limit {
        let _ = writeln!(out, "type1        dma_entry_limit {l}");
    }
    let pools: Vec<String> = m
        .hugepages
        .iter()
        .map(|p| format!("{} kB: {} reserved, {} free", p.size_kb, p.total, p.free))
        .collect();
    let _ = writeln!(
        out,
        "hugepages    {}",
        if pools.is_empty() {
            "none".into()
        } else {
            pools.join("; ")
        }
    );
    let missing: Vec<String> = m
        .features
        .iter()
        .filter(|(_, on)| *on == Some(false))
        .map(|(f, _)| format!("{} (>= {})", f.name, f.since))
        .collect();
    let _ = writeln!(
        out,
        "features     {}",
        match (m.kernel, missing.is_empty()) {
            (None, _) => "unknown kernel version".into(),
            (Some(_), true) => "all of the feature table".into(),
            (Some(_), false) => format!("missing {}", missing.join(", ")),
        }
    );
    // Too-old features are listed above already.
    for f in m.findings.iter().filter(|f| !matches!(f, Finding::KernelTooOld { .. })) {
        finding_line(out, "  ", f);
    }
}

fn access_text(a: &Result<(), vfio_core::Errno>) -> String {
    match a {
        Ok(()) => "read-write".into(),
        Err(vfio_core::Errno::NOENT) => "missing".into(),
        Err(e) => format!("not accessible ({})", vfio_core::errno_name(*e).unwrap_or("error")),
    }
}

fn acs_text(a: &Acs) -> String {
    match a {
        Acs::Present { control, .. } => format!(
            "ACS ctrl {control:#06x} ({})",
            if a.isolates() == Some(true) {
                "isolating"
            } else {
                "not isolating"
            }
        ),
        Acs::Absent => "no ACS".into(),
        Acs::Unknown => "ACS unknown".into(),
    }
}

fn device_text(out: &mut String, d: &DeviceReport, m: &MachineReport) {
    let s = &d.summary;
    let verdict = if d.blocked(m) {
        "BLOCKED".to_string()
    } else {
        let modes: Vec<String> = d.usable_modes(m).iter().map(|m| m.to_string()).collect();
        format!("usable: {}", modes.join(", "))
    };
    let _ = writeln!(
        out,
        "{} {:04x}:{:04x} driver {}  {verdict}",
        s.address,
        s.vendor,
        s.device,
        s.driver.as_deref().unwrap_or("-")
    );
    match s.iommu_group {
        Some(g) => {
            let _ = writeln!(
                out,
                "  group {g} ({}{}), {}",
                d.domain.as_ref().map_or("no type".into(), |t| t.to_string()),
                if d.noiommu_group { ", no-IOMMU" } else { "" },
                if s.group_viable { "viable" } else { "not viable" }
            );
        }
        None => {
            let _ = writeln!(out, "  no IOMMU group");
        }
    }
    for h in &d.acs_path {
        let _ = writeln!(out, "  upstream {} {}", h.bridge, acs_text(&h.acs));
    }
    for n in &d.nodes {
        let _ = writeln!(out, "  node {} {}", n.path.display(), access_text(&n.access));
    }
    for f in &d.findings {
        finding_line(out, "  ", f);
    }
}

/// The report for people.
pub fn text(r: &Report) -> String {
    let mut out = String::new();
    machine_text(&mut out, &r.machine);
    for d in &r.devices {
        out.push('\n');
        device_text(&mut out, d, &r.machine);
    }
    if r.devices.is_empty() {
        let _ = writeln!(out, "\nno device bound to vfio-pci (name one: lsvfio doctor ADDRESS)");
    }
    let blocked = r.devices.iter().filter(|d| d.blocked(&r.machine)).count();
    let _ = writeln!(
        out,
        "\nlsvfio doctor: {} device(s), {} blocked{}",
        r.devices.len(),
        blocked,
        match r.machine.worst() {
            Some(Severity::Blocker) => "; the machine has a blocker",
            _ => "",
        }
    );
    out
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

fn opt_bool(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "true",
        Some(false) => "false",
        None => "null",
    }
}

fn findings_json(fs: &[Finding]) -> String {
    let items: Vec<String> = fs
        .iter()
        .map(|f| {
            format!(
                "{{\"code\":{},\"severity\":{},\"message\":{},\"fix\":{}}}",
                js(f.code()),
                js(&f.severity().to_string()),
                js(&f.to_string()),
                js(&f.fix())
            )
        })
        .collect();
    format!("[{}]", items.join(","))
}

fn nodes_json(ns: &[super::NodeAccess]) -> String {
    let items: Vec<String> = ns
        .iter()
        .map(|n| {
            format!(
                "{{\"path\":{},\"accessible\":{},\"errno\":{}}}",
                js(&n.path.display().to_string()),
                n.access.is_ok(),
                n.access.err().and_then(vfio_core::errno_name).map_or("null".into(), js)
            )
        })
        .collect();
    format!("[{}]", items.join(","))
}

/// The report as one JSON object: `machine` (facts and findings), `devices` (each with its
/// findings, `blocked` and `usable_modes`) and `blocked`. Each finding has a stable `code`
/// ([`Finding::code`]), `severity`, `message` and `fix`.
pub fn json(r: &Report) -> String {
    let m = &r.machine;
    let iommus: Vec<String> = m
        .iommus
        .iter()
        .map(|u| {
            format!(
                "{{\"name\":{},\"kind\":{},\"remap_capable\":{}}}",
                js(&u.name),
                js(&u.kind.to_string()),
                opt_bool(u.remap_capable)
            )
        })
        .collect();
    let modes: Vec<String> = m.modes.offered().iter().map(|x| js(&x.to_string())).collect();
    let pools: Vec<String> = m
        .hugepages
        .iter()
        .map(|p| {
            format!(
                "{{\"size_kb\":{},\"total\":{},\"free\":{}}}",
                p.size_kb, p.total, p.free
            )
        })
        .collect();
    let features: Vec<String> = m
        .features
        .iter()
        .map(|(f, on)| {
            format!(
                "{{\"name\":{},\"since\":{},\"available\":{}}}",
                js(f.name),
                js(&f.since.to_string()),
                opt_bool(*on)
            )
        })
        .collect();
    let lim = |v: u64| {
        if v == u64::MAX {
            "null".to_string()
        } else {
            v.to_string()
        }
    };
    let machine = format!(
        "{{\"kernel\":{},\"iommus\":[{}],\"has_iommu\":{},\"interrupt_remapping\":{},\"allow_unsafe_interrupts\":{{\"type1\":{},\"iommufd\":{}}},\"noiommu_mode\":{},\"modes\":[{}],\"nodes\":{},\"memlock\":{{\"soft\":{},\"hard\":{},\"cap_ipc_lock\":{}}},\"dma_entry_limit\":{},\"hugepages\":[{}],\"features\":[{}],\"findings\":{}}}",
        m.kernel_release.as_deref().map_or("null".into(), js),
        iommus.join(","),
        m.has_iommu(),
        opt_bool(m.interrupt_remapping),
        opt_bool(m.unsafe_interrupts.type1),
        opt_bool(m.unsafe_interrupts.iommufd),
        m.noiommu_mode,
        modes.join(","),
        nodes_json(&m.nodes),
        lim(m.memlock.0),
        lim(m.memlock.1),
        m.cap_ipc_lock,
        m.dma_entry_limit.map_or("null".into(), |l| l.to_string()),
        pools.join(","),
        features.join(","),
        findings_json(&m.findings)
    );
    let devices: Vec<String> = r
        .devices
        .iter()
        .map(|d| {
            let s = &d.summary;
            let acs: Vec<String> = d
                .acs_path
                .iter()
                .map(|h| {
                    let (present, control) = match h.acs {
                        Acs::Present { control, .. } => ("true", control.to_string()),
                        Acs::Absent => ("false", "null".into()),
                        Acs::Unknown => ("null", "null".into()),
                    };
                    format!(
                        "{{\"bridge\":{},\"acs\":{present},\"control\":{control},\"isolates\":{}}}",
                        js(&h.bridge.to_string()),
                        opt_bool(h.acs.isolates())
                    )
                })
                .collect();
            let usable: Vec<String> = d.usable_modes(m).iter().map(|x| js(&x.to_string())).collect();
            format!(
                "{{\"address\":{},\"vendor\":{},\"device\":{},\"driver\":{},\"iommu_group\":{},\"domain_type\":{},\"noiommu_group\":{},\"group_viable\":{},\"acs_path\":[{}],\"nodes\":{},\"usable_modes\":[{}],\"blocked\":{},\"findings\":{}}}",
                js(&s.address.to_string()),
                s.vendor,
                s.device,
                s.driver.as_deref().map_or("null".into(), js),
                s.iommu_group.map_or("null".into(), |g| g.to_string()),
                d.domain.as_ref().map_or("null".into(), |t| js(&t.to_string())),
                d.noiommu_group,
                s.group_viable,
                acs.join(","),
                nodes_json(&d.nodes),
                usable.join(","),
                d.blocked(m),
                findings_json(&d.findings)
            )
        })
        .collect();
    format!(
        "{{\"machine\":{machine},\n \"devices\":[{}],\n \"blocked\":{}}}\n",
        devices.join(",\n  "),
        r.blocked()
    )
}
