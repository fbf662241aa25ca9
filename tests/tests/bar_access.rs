//! The one BAR handle (`vfio_pci::Bar`, issue #19): its mmapped fast path against the kernel's
//! pread, its pread/pwrite path on a region without the MMAP flag (an I/O-port BAR), the 64-bit
//! I/O-port access it refuses, `Register`s it hands out, and the MSI-X table reached with the
//! capability's offset as it is (`u64`, no conversion).

use std::process::ExitCode;

use vfio_core::{Error, RegionFlags};
use vfio_pci::{Bar, BarKind, PciDevice};
use vfio_tests::edu::{EDU_ID, reg};
use vfio_tests::{Outcome, TestResult, device_from_env, ensure, skip};

macro_rules! open_or_skip {
    ($var:expr) => {
        match device_from_env($var) {
            Err(why) => return skip(why),
            Ok(addr) => PciDevice::open(&addr, None)?,
        }
    };
}

/// `len` bytes of `bar` at `offset` through the kernel's pread of the region (no mmap).
fn pread(dev: &PciDevice, bar: &Bar, offset: u64, len: usize) -> vfio_core::Result<Vec<u8>> {
    let mut b = vec![0u8; len];
    dev.device().read_region(bar.region(), offset, &mut b)?;
    Ok(b)
}

/// Whether the kernel's 8-byte pread at `offset` agrees with `v`. Newer vfio-pci passes an
/// 8-byte region read on as one access; older kernels (Debian 12's 6.1) split it into dwords,
/// and edu answers ~0 to a dword read of the upper half of its 64-bit registers: then only the
/// low halves can agree.
fn pread64_agrees(dev: &PciDevice, bar: &Bar, offset: u64, v: u64) -> vfio_core::Result<bool> {
    let b = pread(dev, bar, offset, 8)?;
    let want = v.to_le_bytes();
    Ok(b == want || (b[4..] == [0xff; 4] && b[..4] == want[..4]))
}

/// edu's BAR0 is one mmapped area covering the whole BAR: every access takes the mapping, and
/// what it reads and writes is what the kernel's pread/pwrite of the region see.
fn edu_bar_mmapped_whole_agrees_with_pread() -> TestResult {
    let dev = open_or_skip!("VFIO_TEST_EDU");
    let bar = dev.bar(0)?;
    // Decoded from config space on first use, the same as PciDevice::bar_info says.
    let info = bar.info()?;
    ensure!(info.kind == BarKind::Memory32, "edu BAR0 is {:?}", info.kind);
    ensure!(
        Some(info) == dev.bar_info(0)?.as_ref(),
        "Bar::info {info:?} vs bar_info {:?}",
        dev.bar_info(0)?
    );
    ensure!(
        bar.mappings().len() == 1 && bar.mappings()[0].region_offset() == 0,
        "edu BAR0 is not one mapping at 0: {bar:?}"
    );
    ensure!(bar.is_mapped(0, bar.size()), "edu BAR0 is not mapped whole");
    ensure!(bar.read32(reg::ID)? == EDU_ID, "ID");
    ensure!(
        pread(&dev, &bar, reg::ID, 4)? == EDU_ID.to_le_bytes(),
        "pread of ID disagrees"
    );
    // 32-bit: the liveness register inverts what it is given.
    bar.write32(reg::LIVENESS, 0x1234_5678)?;
    ensure!(bar.read32(reg::LIVENESS)? == !0x1234_5678u32, "liveness via mmap");
    ensure!(
        pread(&dev, &bar, reg::LIVENESS, 4)? == (!0x1234_5678u32).to_le_bytes(),
        "liveness via pread"
    );
    // 64-bit: the DMA source register (no command is written, so no DMA starts).
    for v in [0x0011_2233_4455_6677u64, 0x8000_0000_0000_0001] {
        bar.write64(reg::DMA_SRC, v)?;
        ensure!(bar.read64(reg::DMA_SRC)? == v, "read64 after write64 {v:#x}");
        ensure!(
            pread64_agrees(&dev, &bar, reg::DMA_SRC, v)?,
            "pread of DMA source after write64 {v:#x}"
        );
    }
    dev.device()
        .write_region(bar.region(), reg::DMA_SRC, &0x0abc_def0u64.to_le_bytes())?;
    ensure!(bar.read64(reg::DMA_SRC)? == 0x0abc_def0, "read64 after a pwrite");
    // Registers taken from the Bar reach the same bytes.
    let liveness = bar.register::<u32>(reg::LIVENESS)?;
    liveness.write(0x0f0f_0f0f);
    ensure!(
        bar.read32(reg::LIVENESS)? == 0xf0f0_f0f0,
        "Register::write then Bar::read32"
    );
    let src = bar.register::<u64>(reg::DMA_SRC)?;
    src.write(0x55);
    ensure!(
        bar.read64(reg::DMA_SRC)? == 0x55,
        "Register<u64>::write then Bar::read64"
    );
    bar.write64(reg::DMA_SRC, 0)?;
    // Checked: past the end, misaligned, for accesses and for registers alike.
    for (e, what) in [
        (bar.read32(bar.size()).unwrap_err(), "past the end"),
        (bar.write64(bar.size() - 4, 0).unwrap_err(), "past the end"),
        (bar.read32(2).unwrap_err(), "aligned"),
        (bar.register::<u64>(reg::DMA_SRC + 4).unwrap_err(), "aligned"),
        (bar.register::<u32>(bar.size()).unwrap_err(), "past the end"),
    ] {
        ensure!(
            matches!(e, Error::InvalidArgument { .. }) && e.to_string().contains(what),
            "{what}: {e}"
        );
        ensure!(e.to_string().contains("BAR 0"), "the error names no BAR: {e}");
    }
    println!(
        "    edu BAR0: {:#x} bytes in one mapping; 32/64-bit accesses and Registers agree with pread/pwrite",
        bar.size()
    );
    Ok(Outcome::Pass)
}

/// NVMe's BAR0 at its widths (CAP is 64-bit, VS 32-bit), and its MSI-X table reached with the
/// capability's `u64` offset: through the mapping where the kernel maps the table
/// (`VFIO_REGION_INFO_CAP_MSIX_MAPPABLE`), through pread where it leaves a hole.
fn nvme_bar_widths_and_msix_table() -> TestResult {
    let dev = open_or_skip!("VFIO_TEST_NVME");
    let cap = dev.msix_cap()?.ok_or("nvme has no MSI-X")?;
    let bar = dev.bar(cap.table_bar)?;
    ensure!(bar.is_mapped(0, 0x40), "NVMe registers are not mapped");
    let caps = bar.read64(0)?;
    ensure!(pread(&dev, &bar, 0, 8)? == caps.to_le_bytes(), "CAP: mmap vs pread");
    // NVMe registers take 32- and 64-bit accesses only (QEMU logs smaller ones as undefined).
    let vs = bar.read32(0x08)?;
    ensure!(vs >> 16 >= 1, "NVMe version {vs:#x}");
    ensure!(caps as u32 == bar.read32(0)?, "CAP's low half through read32");
    // Vector 0's control word (table + 12): masked until MSI-X is enabled.
    let ctrl_at = cap.table_offset + 12;
    let mapped = bar.is_mapped(cap.table_offset, 16 * u64::from(cap.table_size));
    let ctrl = bar.read32(ctrl_at)?;
    ensure!(ctrl & 1 == 1, "MSI-X vector 0 control word {ctrl:#x}: not masked");
    if mapped {
        // The kernel's pread of the table area returns all ones and drops writes (vfio-pci
        // excludes it from region reads), so only the mapping shows the table.
        let via_pread = pread(&dev, &bar, ctrl_at, 4)?;
        ensure!(
            via_pread == [0xff; 4],
            "pread of the MSI-X table read {via_pread:02x?}, not the kernel's all-ones fill"
        );
        let r = bar.register::<u32>(ctrl_at)?;
        ensure!(r.read() == ctrl, "Register of the MSI-X control word");
    } else {
        ensure!(
            matches!(bar.register::<u32>(ctrl_at), Err(Error::Unsupported { .. })),
            "a Register inside the BAR's hole was handed out"
        );
    }
    println!(
        "    nvme BAR{}: CAP {caps:#x}, VS {vs:#x}; MSI-X table at {:#x} ({} vectors) {}",
        cap.table_bar,
        cap.table_offset,
        cap.table_size,
        if mapped {
            "mapped (pread sees the kernel's all-ones fill)"
        } else {
            "in a hole: read through pread"
        }
    );
    Ok(Outcome::Pass)
}

/// pci-testdev's memory BAR (mmapped whole; the device takes any width): the selected test's
/// header read at 8, 16, 32 and 64 bits through the mapping agrees with itself and with pread.
fn testdev_mmio_bar_at_every_width() -> TestResult {
    let dev = open_or_skip!("VFIO_TEST_TESTDEV");
    let info = dev
        .bars()?
        .into_iter()
        .find(|b| b.kind != BarKind::Io)
        .ok_or("pci-testdev has no memory BAR")?;
    let bar = dev.bar(info.index)?;
    ensure!(
        bar.is_mapped(0, bar.size()),
        "pci-testdev's memory BAR is not mapped whole: {bar:?}"
    );
    bar.write8(0, 0)?; // select test 0: an 8-bit store through the mapping
    let mut hdr = [0u8; 32];
    bar.read_bytes(0, &mut hdr)?;
    ensure!(
        hdr[16..].iter().any(|&b| b != 0),
        "no test name in the header {hdr:02x?}"
    );
    ensure!(
        pread(&dev, &bar, 0, 32)? == hdr,
        "pread of the header disagrees with the mapping"
    );
    for at in 0..32u64 {
        let i = at as usize;
        ensure!(bar.read8(at)? == hdr[i], "read8 at {at:#x}");
        if at % 2 == 0 {
            ensure!(
                bar.read16(at)? == u16::from_le_bytes(hdr[i..i + 2].try_into()?),
                "read16 at {at:#x}"
            );
        }
        if at % 4 == 0 {
            ensure!(
                bar.read32(at)? == u32::from_le_bytes(hdr[i..i + 4].try_into()?),
                "read32 at {at:#x}"
            );
        }
        if at % 8 == 0 {
            ensure!(
                bar.read64(at)? == u64::from_le_bytes(hdr[i..i + 8].try_into()?),
                "read64 at {at:#x}"
            );
        }
    }
    ensure!(
        bar.read16(1).is_err() && bar.read64(4).is_err(),
        "misaligned reads accepted"
    );
    println!(
        "    pci-testdev BAR{} ({} bytes, mapped): header read at 8/16/32/64 bits agrees with pread",
        info.index,
        bar.size()
    );
    Ok(Outcome::Pass)
}

/// pci-testdev's I/O-port BAR has no MMAP flag: the same `Bar` methods reach it through
/// pread/pwrite (the device counts the writes of its selected test), 64-bit accesses are
/// refused (the kernel would make them two 32-bit port accesses), and no `Register` is handed
/// out.
fn io_port_bar_through_pread_and_read64_refused() -> TestResult {
    let dev = open_or_skip!("VFIO_TEST_TESTDEV");
    let info = dev
        .bars()?
        .into_iter()
        .find(|b| b.kind == BarKind::Io)
        .ok_or("pci-testdev has no I/O BAR")?;
    ensure!(
        !info.region.flags.contains(RegionFlags::MMAP),
        "the I/O BAR claims to be mmappable"
    );
    let bar = dev.bar(info.index)?;
    ensure!(
        bar.mappings().is_empty() && !bar.is_mapped(0, 4),
        "the I/O BAR has mappings"
    );
    bar.write8(0, 0)?; // select test 0
    let (width, offset) = (bar.read8(1)?, u64::from(bar.read32(4)?));
    let data = bar.read32(8)?;
    let count = bar.read32(12)?;
    ensure!(
        bar.read16(12)? == count as u16,
        "read16 and read32 of the count disagree"
    );
    match width {
        1 => bar.write8(offset, data as u8)?,
        2 => bar.write16(offset, data as u16)?,
        4 => bar.write32(offset, data)?,
        w => return Err(format!("test 0 has width {w}").into()),
    }
    ensure!(bar.read32(12)? == count + 1, "the write through pwrite was not counted");
    // 64-bit: refused, naming the BAR, before the kernel is asked.
    for e in [bar.read64(8).unwrap_err(), bar.write64(8, 0).unwrap_err()] {
        ensure!(
            matches!(e, Error::Unsupported { .. })
                && e.to_string().contains("I/O-port")
                && e.to_string().contains(&format!("BAR {}", info.index)),
            "64-bit I/O access: {e}"
        );
    }
    ensure!(bar.read32(12)? == count + 1, "the refused write64 reached the device");
    // What the refusal avoids: the kernel's 8-byte pread of ports is two 32-bit port reads.
    let two = u64::from(bar.read32(8)?) | u64::from(bar.read32(12)?) << 32;
    ensure!(
        pread(&dev, &bar, 8, 8)? == two.to_le_bytes(),
        "an 8-byte pread is not the two 32-bit port reads"
    );
    ensure!(
        matches!(bar.register::<u32>(0), Err(Error::Unsupported { .. })),
        "a Register of an I/O BAR was handed out"
    );
    ensure!(
        matches!(bar.read32(info.size), Err(Error::InvalidArgument { .. })),
        "a read past the I/O BAR was accepted"
    );
    println!(
        "    I/O BAR{} ({} ports): pread/pwrite at 8/16/32 bits, read64/write64 refused",
        info.index, info.size
    );
    Ok(Outcome::Pass)
}

fn main() -> ExitCode {
    vfio_tests::run(&[
        (
            "edu_bar_mmapped_whole_agrees_with_pread",
            edu_bar_mmapped_whole_agrees_with_pread,
        ),
        ("nvme_bar_widths_and_msix_table", nvme_bar_widths_and_msix_table),
        ("testdev_mmio_bar_at_every_width", testdev_mmio_bar_at_every_width),
        (
            "io_port_bar_through_pread_and_read64_refused",
            io_port_bar_through_pread_and_read64_refused,
        ),
    ])
}
