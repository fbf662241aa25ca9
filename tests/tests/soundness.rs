//! Issue #14: the safe DMA API may never let a device reach memory that Rust has freed and
//! reused. Each test leaks a guard (`mem::forget`, which is safe), frees the buffer, puts memory
//! with a different pattern where it was, and then has the edu device read the old DMA address:
//! it must find the old buffer's bytes (the pages the mapping holds, leaked) or have been refused
//! up front, never the new pattern. Plus the no-IOMMU holes: a physical address that is really
//! one, and stays the buffer's.
//!
//! - hole 1, [`Ioas::copy_of`]: `safe_copy_outlives_its_source` (cdev);
//! - hole 2, lazy pinning by address: `forgotten_guard_before_first_attach_cdev`,
//!   `forgotten_guard_after_last_detach_cdev` (cdev), `forgotten_guard_before_device_open_group`,
//!   `forgotten_guard_after_device_closed_group` (group mode: the type1 driver pins at map
//!   time, iommufd's compat container by file);
//! - hole 3, no-IOMMU cdev addresses: `noiommu_cdev_map_before_attach_is_refused`,
//!   `noiommu_ioas_adopted_as_iova_is_refused`;
//! - hole 4, no-IOMMU group pins: `noiommu_group_forgotten_guard_page_is_not_reused`,
//!   `noiommu_group_mapping_survives_fork`.

use std::process::ExitCode;
use std::sync::Arc;

use vfio_cdev::{Ioas, IovaPlacement};
use vfio_core::{
    Addressing, Backing, Container, DmaAccess, DmaBuffer, DmaMapping, Errno, Error, EventFd, Mode, PciAddress,
};
use vfio_pci::PciDevice;
use vfio_tests::edu::{Direction, EDU_MAX_DMA, Edu};
use vfio_tests::{Outcome, TestResult, ensure, skip};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Where the leaked mapping lives, and where the device writes what it read.
const IOVA_OLD: u64 = 0x10_0000;
const IOVA_OUT: u64 = 0x20_0000;
const IOVA_COPY: u64 = 0x30_0000;
const LEN: usize = EDU_MAX_DMA as usize;

/// The leaked buffer's bytes.
fn old_pattern() -> Vec<u8> {
    (0..LEN as u32)
        .map(|i| (i as u8).wrapping_mul(5).wrapping_add(0x11))
        .collect()
}

/// What the process puts where the leaked buffer was.
const NEW_BYTE: u8 = 0xee;

macro_rules! edu_or_skip {
    ($mode:expr) => {
        match vfio_tests::device_in("VFIO_TEST_EDU", $mode) {
            Ok(a) => a,
            Err(why) => return skip(why),
        }
    };
}

/// The edu assigned to `c`, bus mastering, its DMA-completion MSI on `irq`.
fn edu_in(c: &dyn Container, addr: PciAddress, irq: &EventFd) -> Res<Edu> {
    let pci = PciDevice::open_in(c, &addr)?;
    pci.enable_bus_master()?;
    pci.enable_msi([irq])?;
    Edu::new(pci)
}

/// Anonymous memory put exactly where a freed buffer was (`MAP_FIXED_NOREPLACE`), filled with
/// [`NEW_BYTE`]; unmapped on drop. `None` when something else took the address first.
struct Reused {
    ptr: *mut libc::c_void,
    len: usize,
}

impl Reused {
    fn at(addr: usize, len: usize) -> Option<Self> {
        // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping (EEXIST instead): the
        // new anonymous mapping aliases nothing.
        let p = unsafe {
            libc::mmap(
                addr as *mut libc::c_void,
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED || p as usize != addr {
            if p != libc::MAP_FAILED {
                // SAFETY: the mapping just made, at another address (old kernels ignore the flag).
                unsafe { libc::munmap(p, len) };
            }
            return None;
        }
        // SAFETY: `len` bytes just mapped read-write.
        unsafe { std::ptr::write_bytes(p.cast::<u8>(), NEW_BYTE, len) };
        Some(Reused { ptr: p, len })
    }
}

impl Drop for Reused {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `at`, into which no reference was handed out.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

/// Leaks a guard mapping a buffer of [`old_pattern`] at [`IOVA_OLD`] in `c`, runs `meanwhile`
/// (e.g. closes a device), frees the buffer and puts [`NEW_BYTE`]s where it was. `Ok(None)`:
/// the map was refused up front (Unsupported, said why). Returns the new memory (keep it until
/// the device has read) and the device address of the leaked mapping.
fn leak_and_reuse(
    c: &dyn Container,
    buffer: DmaBuffer,
    meanwhile: impl FnOnce(),
) -> Res<Option<(Option<Reused>, u64)>> {
    buffer.write(0, &old_pattern())?;
    let (vaddr, len) = (buffer.as_ptr() as usize, buffer.len());
    let map = match DmaMapping::new(c, &buffer, IOVA_OLD, DmaAccess::READ) {
        Ok(m) => m,
        Err(e @ Error::Unsupported { .. }) => {
            println!("    the safe map was refused up front: {e}");
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    };
    let device_addr = map.device_addr();
    std::mem::forget(map);
    meanwhile();
    drop(buffer);
    let reused = Reused::at(vaddr, len);
    if reused.is_none() {
        println!("    (the freed address {vaddr:#x} was taken by something else first)");
    }
    Ok(Some((reused, device_addr)))
}

/// Has the edu read [`LEN`] bytes at device address `from` and write them to a fresh buffer
/// mapped in `c` at [`IOVA_OUT`]; returns them.
fn device_reads(edu: &Edu, irq: &EventFd, c: &dyn Container, from: u64) -> Res<Vec<u8>> {
    let out = DmaBuffer::new(4096)?;
    out.fill(0);
    let map = DmaMapping::new(c, &out, IOVA_OUT, DmaAccess::WRITE)?;
    edu.dma(Direction::ToDevice, from, LEN as u64, irq)?;
    edu.dma(Direction::FromDevice, map.device_addr(), LEN as u64, irq)?;
    drop(map);
    let mut got = vec![0u8; LEN];
    out.read(0, &mut got)?;
    Ok(got)
}

/// Passes when the device read [`old_pattern`] (the buffer's own pages), fails (saying what it
/// read) otherwise.
fn judge(got: &[u8], what: &str) -> TestResult {
    if got == old_pattern().as_slice() {
        println!("    {what}: the device read the buffer's own pages");
        return Ok(Outcome::Pass);
    }
    let new = got.iter().filter(|&&b| b == NEW_BYTE).count();
    Err(format!(
        "{what}: the device did not read the buffer's bytes: {new} of {LEN} bytes are the process's \
         new memory ({NEW_BYTE:#x}), first bytes {:02x?}",
        &got[..8]
    )
    .into())
}

// ---- hole 2: lazy pinning by address --------------------------------------------------------

/// cdev: a fresh IOAS has no domain, so a mapping by address would only be pinned at the first
/// attach, by address.
fn forgotten_guard_before_first_attach_cdev() -> TestResult {
    let addr = edu_or_skip!(Mode::CDEV);
    let c = vfio_cdev::Container::new()?;
    let Some((_reused, device_addr)) = leak_and_reuse(&c, DmaBuffer::new(4096)?, || ())? else {
        return Ok(Outcome::Pass);
    };
    let irq = EventFd::new()?;
    let edu = edu_in(&c, addr, &irq)?;
    let got = device_reads(&edu, &irq, &c, device_addr)?;
    c.unmap_dma(IOVA_OLD, 4096)?;
    judge(
        &got,
        "mapped before the first attach, attached after the buffer was freed",
    )
}

/// cdev: once the last device detaches, iommufd unpins and holds the address again; the next
/// attach pins whatever is there then.
fn forgotten_guard_after_last_detach_cdev() -> TestResult {
    let addr = edu_or_skip!(Mode::CDEV);
    let c = vfio_cdev::Container::new()?;
    let irq = EventFd::new()?;
    let first = edu_in(&c, addr, &irq)?;
    // The device closes meanwhile: it detaches, and the IOAS has no domain left.
    let Some((_reused, device_addr)) = leak_and_reuse(&c, DmaBuffer::new(4096)?, move || drop(first))? else {
        return Ok(Outcome::Pass);
    };
    let edu = edu_in(&c, addr, &irq)?;
    let got = device_reads(&edu, &irq, &c, device_addr)?;
    c.unmap_dma(IOVA_OLD, 4096)?;
    judge(
        &got,
        "mapped while attached, freed after the last detach, attached again",
    )
}

/// The backend behind a group container, for the log line.
fn backend(c: &vfio_group::Container) -> String {
    c.backend().map_or_else(|e| e.to_string(), |b| format!("{b:?}"))
}

/// Group mode: between the first group's VFIO_SET_IOMMU and the first device fd. The type1
/// driver pins at map time (the container has a domain then); iommufd's compat container has
/// no domain until a device fd opens.
fn forgotten_guard_before_device_open_group() -> TestResult {
    let addr = edu_or_skip!(Mode::GROUP);
    let c = vfio_group::Container::open(Addressing::Iova)?;
    let group = vfio_core::Sysfs::default().iommu_group(&addr)?;
    c.add_group(group)?;
    println!("    backend: {}", backend(&c));
    let Some((_reused, device_addr)) = leak_and_reuse(&c, DmaBuffer::new(4096)?, || ())? else {
        return Ok(Outcome::Pass);
    };
    let irq = EventFd::new()?;
    let edu = edu_in(&c, addr, &irq)?;
    let got = device_reads(&edu, &irq, &c, device_addr)?;
    c.unmap_dma(IOVA_OLD, 4096)?;
    judge(&got, "mapped before the device fd opened")
}

/// Group mode: the device fd closes (iommufd's compat container detaches it and unpins), the
/// group stays (add_group), the device opens again.
fn forgotten_guard_after_device_closed_group() -> TestResult {
    let addr = edu_or_skip!(Mode::GROUP);
    let c = vfio_group::Container::open(Addressing::Iova)?;
    let group = vfio_core::Sysfs::default().iommu_group(&addr)?;
    c.add_group(group)?;
    println!("    backend: {}", backend(&c));
    let irq = EventFd::new()?;
    let first = edu_in(&c, addr, &irq)?;
    // The device closes meanwhile; the group stays.
    let Some((_reused, device_addr)) = leak_and_reuse(&c, DmaBuffer::new(4096)?, move || drop(first))? else {
        return Ok(Outcome::Pass);
    };
    let edu = edu_in(&c, addr, &irq)?;
    let got = device_reads(&edu, &irq, &c, device_addr)?;
    c.unmap_dma(IOVA_OLD, 4096)?;
    judge(
        &got,
        "mapped while the device was open, freed after it closed, opened again",
    )
}

// ---- hole 1: a safe IOAS copy ----------------------------------------------------------------

/// A copy into another IOAS (no device attached there yet) outlives its source: the source
/// mapping goes, the buffer is freed, the copy's guard was leaked.
fn safe_copy_outlives_its_source() -> TestResult {
    let addr = edu_or_skip!(Mode::CDEV);
    let iommufd = vfio_cdev::Iommufd::open()?;
    let src = vfio_cdev::Container::with_iommufd(&iommufd, Addressing::Iova)?;
    let dst = vfio_cdev::Container::with_iommufd(&iommufd, Addressing::Iova)?;
    let buffer = DmaBuffer::new(4096)?;
    buffer.write(0, &old_pattern())?;
    let (vaddr, len) = (buffer.as_ptr() as usize, buffer.len());
    let src_map = DmaMapping::new(&src, &buffer, IOVA_OLD, DmaAccess::READ)?;
    let copy = dst
        .ioas()
        .copy_of(&src_map, IovaPlacement::Fixed(IOVA_COPY), DmaAccess::READ)?;
    ensure!(copy.iova() == IOVA_COPY, "copy at {:#x}", copy.iova());
    // Safe code throughout: the copy's guard leaks, the source is unmapped and freed.
    std::mem::forget(copy);
    drop(src_map);
    drop(buffer);
    let _reused = Reused::at(vaddr, len);
    let irq = EventFd::new()?;
    let edu = edu_in(&dst, addr, &irq)?;
    let got = device_reads(&edu, &irq, &dst, IOVA_COPY)?;
    dst.unmap_dma(IOVA_COPY, 4096)?;
    judge(&got, "a copy whose source was unmapped and freed")
}

// ---- hole 3: no-IOMMU cdev addresses ---------------------------------------------------------

/// Before a no-IOMMU device is attached the kernel has no physical address to give: the map is
/// refused, and leaves nothing mapped behind.
fn noiommu_cdev_map_before_attach_is_refused() -> TestResult {
    let addr = edu_or_skip!(Mode::CDEV_NOIOMMU);
    let c = vfio_cdev::Container::new_noiommu()?;
    let buffer = DmaBuffer::new(4096)?;
    match DmaMapping::new(&c, &buffer, IOVA_OLD, DmaAccess::READ_WRITE) {
        Ok(m) => {
            let a = m.device_addr();
            ensure!(
                a != IOVA_OLD,
                "the map before attach returned the IOVA {a:#x} as the physical address"
            );
            return Err(format!("the map before attach succeeded with device address {a:#x}").into());
        }
        Err(e) => println!("    refused before attach: {e}"),
    }
    match c.unmap_dma(IOVA_OLD, 4096) {
        Err(e) if e.errno() == Some(Errno::NOENT) => {}
        other => {
            return Err(format!(
                "the refused mapping stayed in the IOAS (unmap gave {other:?}): it would be pinned, by \
                 address, when a device attaches"
            )
            .into());
        }
    }
    // Attached, the same map gives the physical address, which the device really reaches.
    let irq = EventFd::new()?;
    let edu = edu_in(&c, addr, &irq)?;
    buffer.write(0, &old_pattern())?;
    let map = DmaMapping::new(&c, &buffer, IOVA_OLD, DmaAccess::READ_WRITE)?;
    ensure!(
        map.device_addr() != IOVA_OLD,
        "device address {:#x} is the IOVA",
        map.device_addr()
    );
    let (pa, _) = c.ioas().noiommu_phys(IOVA_OLD, 4096)?;
    ensure!(
        pa == map.device_addr(),
        "GET_PA says {pa:#x}, the map {:#x}",
        map.device_addr()
    );
    let got = device_reads(&edu, &irq, &c, map.device_addr())?;
    ensure!(
        got == old_pattern(),
        "the device did not read the buffer at its physical address"
    );
    println!("    after attach: physical address {pa:#x}, read back by DMA");
    Ok(Outcome::Pass)
}

/// An IOAS serving a no-IOMMU device, adopted as if it translated IOVAs: refused, because the
/// kernel says it gives physical addresses.
fn noiommu_ioas_adopted_as_iova_is_refused() -> TestResult {
    let addr = edu_or_skip!(Mode::CDEV_NOIOMMU);
    let c = vfio_cdev::Container::new_noiommu()?;
    let irq = EventFd::new()?;
    let _edu = edu_in(&c, addr, &irq)?;
    let adopt = || Ioas::adopt(c.ioas().iommufd().clone(), c.ioas().id()).map(Arc::new);
    match vfio_cdev::Container::from_ioas(adopt()?, Addressing::Iova) {
        Err(e) => println!("    adopting it with IOVA addressing: {e}"),
        Ok(wrong) => {
            let buffer = DmaBuffer::new(4096)?;
            let m = DmaMapping::new(&wrong, &buffer, IOVA_OLD, DmaAccess::READ)?;
            let a = m.device_addr();
            return Err(format!(
                "adopted as IOVA addressing, a map returned {a:#x}{}",
                if a == IOVA_OLD {
                    " (the IOVA, which the device would take for a physical address)"
                } else {
                    ""
                }
            )
            .into());
        }
    }
    let right = vfio_cdev::Container::from_ioas(adopt()?, Addressing::Physical)?;
    let buffer = DmaBuffer::new(4096)?;
    let m = DmaMapping::new(&right, &buffer, IOVA_OLD, DmaAccess::READ)?;
    ensure!(m.device_addr() != IOVA_OLD, "physical adoption returned the IOVA");
    Ok(Outcome::Pass)
}

// ---- hole 4: no-IOMMU group pins -------------------------------------------------------------

/// Without an IOMMU the device gets a physical address; an mlock alone lets the page go back to
/// the allocator when the buffer is freed (and the next allocation on this CPU likely gets it).
fn noiommu_group_forgotten_guard_page_is_not_reused() -> TestResult {
    let addr = edu_or_skip!(Mode::GROUP_NOIOMMU);
    let c = vfio_group::Container::open(Addressing::Physical)?;
    let irq = EventFd::new()?;
    let edu = edu_in(&c, addr, &irq)?;
    let buffer = DmaBuffer::with_backing(4096, Backing::Anonymous)?;
    buffer.write(0, &old_pattern())?;
    let map = DmaMapping::new(&c, &buffer, IOVA_OLD, DmaAccess::READ)?;
    let pa = map.device_addr();
    std::mem::forget(map);
    drop(buffer);
    // Fresh pages, as the process would allocate them next.
    let fresh: Vec<DmaBuffer> = (0..64)
        .map(|_| {
            let b = DmaBuffer::with_backing(4096, Backing::Anonymous)?;
            b.fill(NEW_BYTE);
            Ok(b)
        })
        .collect::<vfio_core::Result<_>>()?;
    let reused = fresh
        .iter()
        .filter(|b| vfio_core::dma::pagemap::physical_address(b.as_ptr() as usize).ok() == Some(pa))
        .count();
    let got = device_reads(&edu, &irq, &c, pa)?;
    c.unmap_dma(IOVA_OLD, 4096)?;
    drop(fresh);
    ensure!(reused == 0, "the leaked mapping's page {pa:#x} was handed out again");
    judge(&got, "no-IOMMU page of a leaked guard")
}

/// A fork makes the parent's private pages copy-on-write: its next write would move the buffer
/// to a new page while the device keeps the old one.
fn noiommu_group_mapping_survives_fork() -> TestResult {
    let addr = edu_or_skip!(Mode::GROUP_NOIOMMU);
    let c = vfio_group::Container::open(Addressing::Physical)?;
    let irq = EventFd::new()?;
    let edu = edu_in(&c, addr, &irq)?;
    let buffer = DmaBuffer::with_backing(4096, Backing::Anonymous)?;
    buffer.fill(0x33);
    let map = DmaMapping::new(&c, &buffer, IOVA_OLD, DmaAccess::READ)?;
    let pa = map.device_addr();
    // SAFETY: the test binary runs one test at a time on its main thread.
    let child = unsafe {
        vfio_tests::fork_child(|| {
            std::thread::sleep(std::time::Duration::from_secs(2));
            Ok(())
        })
    }?;
    // The parent writes while the child is alive (and would share the page copy-on-write).
    buffer.write(0, &old_pattern())?;
    let now = vfio_core::dma::pagemap::physical_address(buffer.as_ptr() as usize)?;
    let got = device_reads(&edu, &irq, &c, pa)?;
    vfio_tests::wait_child(child)?;
    drop(map);
    ensure!(
        now == pa,
        "after fork and a write the buffer is at physical {now:#x}, the device was given {pa:#x}"
    );
    judge(&got, "a mapped buffer written after a fork")
}

fn main() -> ExitCode {
    vfio_tests::run(&[
        (
            "forgotten_guard_before_first_attach_cdev",
            forgotten_guard_before_first_attach_cdev,
        ),
        (
            "forgotten_guard_after_last_detach_cdev",
            forgotten_guard_after_last_detach_cdev,
        ),
        (
            "forgotten_guard_before_device_open_group",
            forgotten_guard_before_device_open_group,
        ),
        (
            "forgotten_guard_after_device_closed_group",
            forgotten_guard_after_device_closed_group,
        ),
        ("safe_copy_outlives_its_source", safe_copy_outlives_its_source),
        (
            "noiommu_cdev_map_before_attach_is_refused",
            noiommu_cdev_map_before_attach_is_refused,
        ),
        (
            "noiommu_ioas_adopted_as_iova_is_refused",
            noiommu_ioas_adopted_as_iova_is_refused,
        ),
        (
            "noiommu_group_forgotten_guard_page_is_not_reused",
            noiommu_group_forgotten_guard_page_is_not_reused,
        ),
        (
            "noiommu_group_mapping_survives_fork",
            noiommu_group_mapping_survives_fork,
        ),
    ])
}
