//! The same device-level checks in every mode the kernel offers: group type1, group type1v2,
//! cdev, and both no-IOMMU forms (group and cdev). Run on kernel variant B, the group modes
//! exercise the iommufd-backed compat container. Each result is `test <check>@<mode>`, which
//! the harness turns into its mode matrix.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use vfio_core::{Addressing, Container, DmaAccess, DmaBuffer, DmaMapping, Errno, EventFd, PciAddress};
use vfio_group::IommuType;
use vfio_pci::PciDevice;
use vfio_tests::edu::{Direction, EDU_ID, EDU_MAX_DMA, Edu, reg};
use vfio_tests::{Outcome, TestResult, device_from_env, ensure, skip};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Type1,
    Type1v2,
    Cdev,
    NoIommuGroup,
    NoIommuCdev,
}

const MODES: [Mode; 5] = [
    Mode::Type1,
    Mode::Type1v2,
    Mode::Cdev,
    Mode::NoIommuGroup,
    Mode::NoIommuCdev,
];

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::Type1 => "type1",
            Mode::Type1v2 => "type1v2",
            Mode::Cdev => "cdev",
            Mode::NoIommuGroup => "noiommu-group",
            Mode::NoIommuCdev => "noiommu-cdev",
        }
    }

    fn noiommu(self) -> bool {
        matches!(self, Mode::NoIommuGroup | Mode::NoIommuCdev)
    }

    /// A fresh container of this mode, or why the kernel does not offer it.
    fn container(self) -> Result<Arc<dyn Container>, String> {
        let m = vfio_core::detect();
        let offered = match self {
            Mode::Type1 | Mode::Type1v2 => m.group,
            Mode::NoIommuGroup => m.group_noiommu,
            Mode::Cdev => m.cdev,
            Mode::NoIommuCdev => m.cdev_noiommu,
        };
        if !offered {
            return Err(format!("{} is not offered by this kernel ({m:?})", self.label()));
        }
        let typed = |ty: IommuType, addressing: Addressing| -> Result<Arc<dyn Container>, String> {
            let c = vfio_group::Container::open(addressing).map_err(|e| e.to_string())?;
            c.set_iommu(ty)
                .map_err(|e| format!("{} unavailable: {e}", self.label()))?;
            Ok(Arc::new(c))
        };
        match self {
            Mode::Type1 => typed(IommuType::Type1, Addressing::Iova),
            Mode::Type1v2 => typed(IommuType::Type1v2, Addressing::Iova),
            Mode::NoIommuGroup => typed(IommuType::NoIommu, Addressing::Physical),
            Mode::Cdev => Ok(Arc::new(vfio_cdev::Container::new().map_err(|e| e.to_string())?)),
            Mode::NoIommuCdev => Ok(Arc::new(
                vfio_cdev::Container::new_noiommu().map_err(|e| e.to_string())?,
            )),
        }
    }
}

/// The device in `var` and a fresh container of `mode`, or the reason to skip.
fn setup(var: &str, mode: Mode) -> Result<(PciAddress, Arc<dyn Container>), String> {
    let addr = device_from_env(var)?;
    Ok((addr, mode.container()?))
}

macro_rules! setup_or_skip {
    ($var:expr, $mode:expr) => {
        match setup($var, $mode) {
            Ok(x) => x,
            Err(why) => return skip(why),
        }
    };
}

fn open_id_liveness(mode: Mode) -> TestResult {
    let (addr, c) = setup_or_skip!("VFIO_TEST_EDU", mode);
    let edu = Edu::new(PciDevice::open_in(c.as_ref(), &addr)?)?;
    edu.check_liveness(0x5a5a_0f0f)?;
    ensure!(edu.bar0.read32(reg::ID)? == EDU_ID, "ID");
    Ok(Outcome::Pass)
}

fn dma_round_trip_msi(mode: Mode) -> TestResult {
    let (addr, c) = setup_or_skip!("VFIO_TEST_EDU", mode);
    let edu = Edu::new(PciDevice::open_in(c.as_ref(), &addr)?)?;
    edu.pci.enable_bus_master()?;
    let irq = EventFd::new()?;
    edu.pci.enable_msi([&irq])?;
    let buf = DmaBuffer::new(4096)?;
    let pattern: Vec<u8> = (0..EDU_MAX_DMA as u32).map(|i| (i * 11 + mode as u32) as u8).collect();
    buf.write(0, &pattern)?;
    let out = DmaBuffer::new(4096)?;
    let src = DmaMapping::new(c.as_ref(), &buf, 0x10_0000, DmaAccess::READ)?;
    let dst = DmaMapping::new(c.as_ref(), &out, 0x20_0000, DmaAccess::WRITE)?;
    edu.dma(Direction::ToDevice, src.device_addr(), EDU_MAX_DMA, &irq)?;
    edu.dma(Direction::FromDevice, dst.device_addr(), EDU_MAX_DMA, &irq)?;
    let mut back = vec![0u8; pattern.len()];
    out.read(0, &mut back)?;
    ensure!(back == pattern, "bytes differ after the round trip");
    Ok(Outcome::Pass)
}

/// A raw map the caller expects the kernel to refuse. If it is accepted anyway, it is unmapped
/// again at once, so `buf` never outlives a mapping.
fn try_map(c: &dyn Container, buf: &DmaBuffer, len: u64, iova: u64) -> vfio_core::Result<u64> {
    // SAFETY: `buf` is alive for the call; any mapping made is removed before returning.
    let r = unsafe { c.map_dma_raw(buf.as_ptr(), len, iova, DmaAccess::READ_WRITE) };
    if r.is_ok() {
        let _ = c.unmap_dma(iova, len.max(1));
    }
    r
}

/// Zero length, a misaligned IOVA, an overlap and an IOVA past the allowed ranges are refused
/// with typed errors; unmapping what was never mapped is ENOENT in every mode.
fn map_errors(mode: Mode) -> TestResult {
    if mode.noiommu() {
        return skip("no IOMMU: there is no IOVA space to misuse (DMA uses physical addresses)");
    }
    let (addr, c) = setup_or_skip!("VFIO_TEST_EDU", mode);
    let _dev = PciDevice::open_in(c.as_ref(), &addr)?;
    let buf = DmaBuffer::new(8192)?;
    let other = DmaBuffer::new(4096)?;
    let refused = |what: &str, r: vfio_core::Result<u64>| -> Result<(), String> {
        match r {
            Ok(v) => Err(format!("{what}: accepted ({v:#x})")),
            Err(e @ (vfio_core::Error::Kernel { .. } | vfio_core::Error::InvalidArgument { .. })) => {
                let _ = e.to_string();
                Ok(())
            }
            Err(e) => Err(format!("{what}: untyped refusal {e}")),
        }
    };
    refused("zero-length map", try_map(c.as_ref(), &buf, 0, 0x30_0000))?;
    refused("map at a misaligned IOVA", try_map(c.as_ref(), &buf, 4096, 0x30_0800))?;
    let held = DmaMapping::new(c.as_ref(), &buf, 0x30_0000, DmaAccess::READ_WRITE)?;
    let overlap = try_map(c.as_ref(), &other, 4096, 0x30_1000);
    ensure!(
        overlap.as_ref().err().and_then(|e| e.errno()) == Some(Errno::EXIST),
        "overlapping map gave {overlap:?}, expected EEXIST"
    );
    let last = c.iova_ranges()?.iter().map(|r| r.last).max().unwrap_or(u64::MAX);
    if last < u64::MAX - 0x2000 {
        let beyond = (last + 1).next_multiple_of(4096);
        refused(
            "map past the last allowed IOVA",
            try_map(c.as_ref(), &other, 4096, beyond),
        )?;
    }
    match c.unmap_dma(0x800_0000, 4096) {
        Err(e) if e.errno() == Some(Errno::NOENT) => {}
        other => return Err(format!("unmap of nothing gave {other:?}, expected ENOENT").into()),
    }
    drop(held);
    Ok(Outcome::Pass)
}

/// INTx: each raise arrives once, the kernel masks it until unmasked.
fn intx_mask_unmask(mode: Mode) -> TestResult {
    let (addr, c) = setup_or_skip!("VFIO_TEST_EDU", mode);
    let dev = PciDevice::open_in(c.as_ref(), &addr)?;
    let bar0 = dev.bar(0)?;
    let irq = EventFd::new()?;
    dev.enable_intx(&irq)?;
    for round in 1..=2u32 {
        bar0.write32(reg::IRQ_RAISE, round)?;
        ensure!(
            irq.wait_timeout(Duration::from_secs(10))?.is_some(),
            "INTx {round} lost"
        );
        bar0.write32(reg::IRQ_ACK, round)?;
        dev.unmask_intx()?;
    }
    dev.disable_irq(vfio_pci::INTX_IRQ)?;
    Ok(Outcome::Pass)
}

/// nvme: a function reset clears the controller configuration; the device stays usable.
fn nvme_reset(mode: Mode) -> TestResult {
    let (addr, c) = setup_or_skip!("VFIO_TEST_NVME", mode);
    let dev = PciDevice::open_in(c.as_ref(), &addr)?;
    let bar0 = dev.bar(0)?;
    bar0.write32(0x14, 0x0046_0000)?;
    dev.reset()?;
    ensure!(bar0.read32(0x14)? == 0, "CC not cleared by the reset");
    ensure!(bar0.read64(0)? != 0, "CAP unreadable after the reset");
    Ok(Outcome::Pass)
}

/// Closing everything releases the device: it opens again in a new container at once.
fn reopen_after_close(mode: Mode) -> TestResult {
    let (addr, c) = setup_or_skip!("VFIO_TEST_EDU", mode);
    for _ in 0..3 {
        let dev = PciDevice::open_in(c.as_ref(), &addr)?;
        ensure!(dev.bar(0)?.read32(0)? == EDU_ID, "ID");
    }
    drop(c);
    let c = mode.container()?;
    PciDevice::open_in(c.as_ref(), &addr)?;
    Ok(Outcome::Pass)
}

type Check = fn(Mode) -> TestResult;

fn main() -> ExitCode {
    let checks: [(&str, Check); 6] = [
        ("open_id_liveness", open_id_liveness),
        ("dma_round_trip_msi", dma_round_trip_msi),
        ("map_errors", map_errors),
        ("intx_mask_unmask", intx_mask_unmask),
        ("nvme_reset", nvme_reset),
        ("reopen_after_close", reopen_after_close),
    ];
    let mut tests: Vec<(String, Box<dyn Fn() -> TestResult>)> = Vec::new();
    for (name, check) in checks {
        for mode in MODES {
            tests.push((format!("{name}@{}", mode.label()), Box::new(move || check(mode))));
        }
    }
    vfio_tests::run_named(tests)
}
