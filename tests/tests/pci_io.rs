//! vfio-pci I/O paths: the expansion ROM, an I/O-port BAR, bulk BAR copies, the error and
//! request interrupts, MSI-X growth, and waiting for vectors with epoll and with tokio.

use std::os::fd::AsFd;
use std::process::ExitCode;
use std::time::Duration;

use vfio_core::{EventFd, IrqFlags, IrqSet};
use vfio_pci::PciDevice;
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

/// Fires `vector` of `index` from user space (DATA_NONE trigger: the kernel signals the eventfd).
fn fire(dev: &PciDevice, index: u32, vector: u32) -> vfio_core::Result<()> {
    dev.device().set_irqs(&IrqSet::trigger(index, vector, 1))
}

/// The harness gives edu an option ROM (see xtask `create_rom`): signature, size, text, pattern.
fn rom_is_read_whole() -> TestResult {
    let dev = open_or_skip!("VFIO_TEST_EDU");
    let rom = match dev.read_rom() {
        Err(vfio_core::Error::Unsupported { reason, .. }) => {
            return skip(format!(
                "this edu has no option ROM ({reason}); the guest harness gives it one"
            ));
        }
        r => r?,
    };
    ensure!(rom.len() >= 4096, "ROM is {} bytes", rom.len());
    ensure!(
        rom[0] == 0x55 && rom[1] == 0xaa,
        "no 55 AA signature: {:02x?}",
        &rom[..4]
    );
    ensure!(
        &rom[0x20..0x24] == b"PCIR",
        "no PCI data structure: {:02x?}",
        &rom[0x20..0x24]
    );
    ensure!(
        &rom[0x40..0x57] == b"vfio-rs test option ROM",
        "ROM text {:?}",
        &rom[0x40..0x57]
    );
    let bad = (0x80..4096).find(|&i| rom[i] != (i % 251) as u8);
    ensure!(bad.is_none(), "ROM byte {bad:?} differs from the image");
    println!("    {} ROM bytes, image verified", rom.len());
    // edu has no ROM of its own beyond this; nvme has none at all.
    if let Ok(addr) = device_from_env("VFIO_TEST_NVME") {
        let nvme = PciDevice::open(&addr, None)?;
        let e = nvme.read_rom().err().ok_or("nvme ROM read succeeded")?;
        ensure!(matches!(e, vfio_core::Error::Unsupported { .. }), "nvme ROM: {e}");
    }
    Ok(Outcome::Pass)
}

/// pci-testdev's BAR1 is I/O ports: never mmapped, served by pread/pwrite. Its header names a
/// test, the width, offset and data to write, and counts the writes it saw.
fn io_port_bar_reads_and_writes() -> TestResult {
    let dev = open_or_skip!("VFIO_TEST_TESTDEV");
    let io = dev
        .bars()?
        .into_iter()
        .find(|b| b.kind == vfio_pci::BarKind::Io)
        .ok_or("pci-testdev has no I/O BAR")?;
    ensure!(
        !io.region.flags.contains(vfio_core::RegionFlags::MMAP),
        "an I/O BAR claims to be mmappable"
    );
    let bar = dev.bar(io.index)?;
    ensure!(bar.mappings().is_empty(), "I/O BAR has mappings");
    ensure!(bar.register::<u32>(0).is_err(), "a Register of an I/O BAR accepted");
    // Select test 0 (the header reads as zeros until a test is selected).
    bar.write8(0, 0)?;
    let mut hdr = [0u8; 48];
    bar.read_bytes(0, &mut hdr)?;
    let width = hdr[1];
    let offset = u32::from_le_bytes(hdr[4..8].try_into()?) as u64;
    let data = u32::from_le_bytes(hdr[8..12].try_into()?);
    let name: String = hdr[16..].iter().take_while(|&&b| b != 0).map(|&b| b as char).collect();
    ensure!(
        !name.is_empty() && name.is_ascii(),
        "test name {name:?} in header {hdr:02x?}"
    );
    ensure!(
        bar.read32(12)? == u32::from_le_bytes(hdr[12..16].try_into()?),
        "read32 and the bulk copy disagree"
    );
    let count = bar.read32(12)?;
    match width {
        1 => bar.write8(offset, data as u8)?,
        2 => bar.write16(offset, data as u16)?,
        4 => bar.write32(offset, data)?,
        w => return Err(format!("test {name:?} has width {w}").into()),
    }
    let after = bar.read32(12)?;
    ensure!(after == count + 1, "write count {count} -> {after}");
    ensure!(bar.read32(io.size).is_err(), "I/O read past the BAR accepted");
    ensure!(bar.read16(1).is_err(), "misaligned I/O read accepted");
    println!(
        "    I/O BAR {} ({} ports): test {name:?}, {width}-byte write at {offset:#x} counted",
        io.index, io.size
    );
    Ok(Outcome::Pass)
}

/// Bulk copies through the mapping agree with pread, and land in the device's registers.
fn bar_bulk_copy_reaches_registers() -> TestResult {
    let dev = open_or_skip!("VFIO_TEST_EDU");
    let bar = dev.bar(0)?;
    ensure!(bar.is_mapped(0, 4), "edu BAR0 not mapped");
    // DMA source, destination and count: three 64-bit registers, written in one copy (no
    // command, so no DMA starts).
    let mut regs = Vec::new();
    for v in [0x1122_3344_5566_7788u64, 0x40000, 0x10] {
        regs.extend(v.to_le_bytes());
    }
    bar.write_bytes(reg::DMA_SRC, &regs)?;
    let mut back = vec![0u8; regs.len()];
    bar.read_bytes(reg::DMA_SRC, &mut back)?;
    ensure!(back == regs, "bulk read {back:02x?}");
    let mut pread = vec![0u8; regs.len()];
    let info = bar.region().clone();
    dev.device().read_region(&info, reg::DMA_SRC, &mut pread)?;
    // Newer vfio-pci passes 8-byte region reads on as such; older kernels (Debian 12's 6.1)
    // split them into dwords, and edu answers ~0 to a dword read of the upper half of its 64-bit
    // registers. Then only the lower halves can agree.
    let dwords_only = (0..3).all(|i| pread[i * 8 + 4..i * 8 + 8] == [0xff; 4]);
    if dwords_only {
        for i in 0..3 {
            ensure!(
                pread[i * 8..i * 8 + 4] == regs[i * 8..i * 8 + 4],
                "pread disagrees with the mapping in the low dword of register {i}: {pread:02x?}"
            );
        }
        println!("    this kernel splits region reads into dwords: compared the registers' low halves");
    } else {
        ensure!(pread == regs, "pread disagrees with the mapping: {pread:02x?}");
    }
    ensure!(bar.read64(reg::DMA_DST)? == 0x40000, "read64 of the destination");
    let mut id = [0u8; 4];
    bar.read_bytes(0, &mut id)?;
    ensure!(u32::from_le_bytes(id) == EDU_ID, "ID through a bulk copy");
    ensure!(
        bar.read_bytes(bar.size() - 4, &mut [0u8; 8]).is_err(),
        "copy past the end accepted"
    );
    bar.write_bytes(reg::DMA_SRC, &[0u8; 24])?;
    Ok(Outcome::Pass)
}

/// ERR and REQ accept an eventfd and fire on a user-space trigger; neither fires by itself.
fn err_and_req_irqs() -> TestResult {
    let nvme = open_or_skip!("VFIO_TEST_NVME");
    let err_info = nvme.device().irq_info(vfio_pci::ERR_IRQ)?;
    ensure!(err_info.count == 1, "nvme ERR count {}", err_info.count);
    let err = EventFd::new()?;
    nvme.enable_err_irq(&err)?;
    ensure!(
        err.wait_timeout(Duration::from_millis(20))?.is_none(),
        "ERR fired by itself"
    );
    fire(&nvme, vfio_pci::ERR_IRQ, 0)?;
    ensure!(
        err.wait_timeout(Duration::from_secs(5))?.is_some(),
        "ERR trigger not delivered"
    );
    nvme.disable_irq(vfio_pci::ERR_IRQ)?;
    let edu = open_or_skip!("VFIO_TEST_EDU");
    // edu is a conventional PCI device. Newer kernels answer GET_IRQ_INFO for ERR on every
    // device (count 0 on these); older ones (6.1) refuse the index with EINVAL unless the
    // device is PCIe. Either way the ERR eventfd is refused.
    match edu.device().irq_info(vfio_pci::ERR_IRQ) {
        Ok(info) if info.count > 0 => {}
        Ok(_) => {
            let e = edu
                .enable_err_irq(&err)
                .err()
                .ok_or("ERR eventfd accepted with count 0")?;
            ensure!(e.errno() == Some(rustix::io::Errno::INVAL), "{e}");
        }
        Err(e) if e.errno() == Some(rustix::io::Errno::INVAL) && edu.pcie_cap()?.is_none() => {
            println!("    ERR index refused on a conventional PCI device: {e}");
            ensure!(
                edu.enable_err_irq(&err).is_err(),
                "ERR eventfd accepted on a refused index"
            );
        }
        Err(e) => return Err(e.into()),
    }
    let req = EventFd::new()?;
    edu.enable_req_irq(&req)?;
    fire(&edu, vfio_pci::REQ_IRQ, 0)?;
    ensure!(
        req.wait_timeout(Duration::from_secs(5))?.is_some(),
        "REQ trigger not delivered"
    );
    edu.disable_irq(vfio_pci::REQ_IRQ)?;
    Ok(Outcome::Pass)
}

/// MSI-X vectors added while the index is enabled: allowed when the kernel can allocate them
/// dynamically (no NORESIZE), refused with EINVAL otherwise.
fn msix_grows_while_enabled() -> TestResult {
    let dev = open_or_skip!("VFIO_TEST_NVME");
    let info = dev.device().irq_info(vfio_pci::MSIX_IRQ)?;
    let fds = [EventFd::new()?, EventFd::new()?, EventFd::new()?];
    dev.enable_msix([&fds[0], &fds[1]])?;
    let grown = dev.set_msix_vectors(5, [&fds[2]]);
    if info.flags.contains(IrqFlags::NORESIZE) {
        let e = grown.err().ok_or("NORESIZE, yet vector 5 was added")?;
        ensure!(e.errno() == Some(rustix::io::Errno::INVAL), "{e}");
        dev.disable_irq(vfio_pci::MSIX_IRQ)?;
        return skip("MSI-X is NORESIZE on this kernel/IOMMU: adding vectors is refused, as checked");
    }
    grown?;
    fire(&dev, vfio_pci::MSIX_IRQ, 5)?;
    ensure!(
        fds[2].wait_timeout(Duration::from_secs(5))?.is_some(),
        "added vector 5 did not fire"
    );
    fire(&dev, vfio_pci::MSIX_IRQ, 1)?;
    ensure!(
        fds[1].wait_timeout(Duration::from_secs(5))?.is_some(),
        "vector 1 lost after growing"
    );
    ensure!(
        fds[0].wait_timeout(Duration::from_millis(20))?.is_none(),
        "vector 0 fired"
    );
    dev.disable_irq(vfio_pci::MSIX_IRQ)?;
    Ok(Outcome::Pass)
}

/// One epoll set over several MSI-X eventfds reports exactly the vector that fired.
fn epoll_reports_the_vector_that_fired() -> TestResult {
    use rustix::event::epoll;
    let dev = open_or_skip!("VFIO_TEST_NVME");
    let fds = [EventFd::new()?, EventFd::new()?, EventFd::new()?];
    dev.enable_msix(&fds)?;
    let ep = epoll::create(epoll::CreateFlags::CLOEXEC)?;
    for (i, fd) in fds.iter().enumerate() {
        epoll::add(
            &ep,
            fd.as_fd(),
            epoll::EventData::new_u64(i as u64),
            epoll::EventFlags::IN,
        )?;
    }
    let mut events: Vec<epoll::Event> = Vec::with_capacity(4);
    let zero = rustix::event::Timespec { tv_sec: 0, tv_nsec: 0 };
    epoll::wait(&ep, rustix::buffer::spare_capacity(&mut events), Some(&zero))?;
    ensure!(events.is_empty(), "readable before any vector fired");
    fire(&dev, vfio_pci::MSIX_IRQ, 2)?;
    let five = rustix::event::Timespec { tv_sec: 5, tv_nsec: 0 };
    epoll::wait(&ep, rustix::buffer::spare_capacity(&mut events), Some(&five))?;
    let ready: Vec<u64> = events.iter().map(|e| e.data.u64()).collect();
    ensure!(ready == vec![2], "epoll reported vectors {ready:?}");
    ensure!(fds[2].read()? == 1, "vector 2 counted once");
    dev.disable_irq(vfio_pci::MSIX_IRQ)?;
    Ok(Outcome::Pass)
}

/// A tokio task waits for edu's MSI (raised through its interrupt register) without blocking
/// the runtime.
fn tokio_task_awaits_an_msi() -> TestResult {
    let dev = open_or_skip!("VFIO_TEST_EDU");
    let bar0 = dev.bar(0)?;
    dev.enable_bus_master()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let irq = vfio_core::AsyncEventFd::new(EventFd::new()?)?;
        dev.enable_msi([irq.eventfd()])?;
        let early = tokio::time::timeout(Duration::from_millis(50), irq.wait()).await;
        ensure!(early.is_err(), "an MSI arrived before edu raised one");
        bar0.write32(reg::IRQ_RAISE, 0x42)?;
        let n = tokio::time::timeout(Duration::from_secs(10), irq.wait())
            .await
            .map_err(|_| "no MSI within 10 s")??;
        ensure!(n >= 1, "counter {n}");
        ensure!(
            bar0.read32(reg::IRQ_STATUS)? & 0x42 == 0x42,
            "edu status lacks the raised bits"
        );
        bar0.write32(reg::IRQ_ACK, 0x42)?;
        dev.disable_irq(vfio_pci::MSI_IRQ)?;
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    let e = vfio_core::AsyncEventFd::new(EventFd::new()?)
        .err()
        .ok_or("registered outside a runtime")?;
    ensure!(matches!(e, vfio_core::Error::Unsupported { .. }), "{e}");
    Ok(Outcome::Pass)
}

/// Unbinding a device in use from vfio-pci makes the kernel signal REQ and wait; once the
/// driver releases the device the unbind completes. The device is bound back afterwards.
fn req_irq_asks_for_the_device_back() -> TestResult {
    let addr = match device_from_env("VFIO_TEST_EDU") {
        Err(why) => return skip(why),
        Ok(a) => a,
    };
    let mode = vfio_core::preferred()?;
    // Through the default container, which the earlier tests used: in group mode it holds the
    // group (a group joins one container at a time). The unbind only waits for the device fd;
    // in group mode the kernel then takes the group out of the container, and the reopen below
    // finds it afresh.
    let dev = PciDevice::open(&addr, Some(mode))?;
    let req = EventFd::new()?;
    dev.enable_req_irq(&req)?;
    let sysfs = vfio_core::Sysfs::default();
    let unbind = sysfs.pci_device_dir(&addr).join("driver/unbind");
    let name = addr.to_string();
    let unbinder = std::thread::spawn(move || std::fs::write(&unbind, name));
    let asked = req.wait_timeout(Duration::from_secs(10))?;
    // Release the device, asked or not, so the unbind can finish.
    drop(dev);
    let unbound = unbinder.join().map_err(|_| "unbind thread panicked")?;
    let rebound = sysfs.bind_vfio_pci(&addr);
    ensure!(asked.is_some(), "no REQ interrupt within 10 s of the unbind");
    unbound.map_err(|e| format!("unbind: {e}"))?;
    rebound?;
    let again = PciDevice::open(&addr, Some(mode))?;
    ensure!(again.bar(0)?.read32(0)? == EDU_ID, "edu after rebinding");
    Ok(Outcome::Pass)
}

fn main() -> ExitCode {
    vfio_tests::run(&[
        ("rom_is_read_whole", rom_is_read_whole),
        ("io_port_bar_reads_and_writes", io_port_bar_reads_and_writes),
        ("bar_bulk_copy_reaches_registers", bar_bulk_copy_reaches_registers),
        ("err_and_req_irqs", err_and_req_irqs),
        ("msix_grows_while_enabled", msix_grows_while_enabled),
        (
            "epoll_reports_the_vector_that_fired",
            epoll_reports_the_vector_that_fired,
        ),
        ("tokio_task_awaits_an_msi", tokio_task_awaits_an_msi),
        // Last: it unbinds and rebinds edu.
        ("req_irq_asks_for_the_device_back", req_irq_asks_for_the_device_back),
    ])
}
