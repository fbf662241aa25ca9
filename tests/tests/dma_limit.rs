//! type1's mapping limit and RLIMIT_MEMLOCK (issue #18): the container reports what is left of
//! `vfio_iommu_type1.dma_entry_limit` (`VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL`), a refused map names
//! the limit and the module parameter (ENOSPC) or `RLIMIT_MEMLOCK` (ENOMEM) as a typed cause,
//! and a `DmaPool` serves more buffers than the limit allows mappings, each one reachable by the
//! device (edu DMA into some, translations of all).
//!
//! `dma_entry_limit` is a 0644 module parameter the type1 driver reads when a container gets its
//! IOMMU (`VFIO_SET_IOMMU`): the tests write a small limit, open a fresh container, and write
//! the old value back when they end, failed or not.

use std::process::ExitCode;
use std::sync::Arc;

use vfio_core::host::doctor::Finding;
use vfio_core::{
    Backing, Container, DmaAccess, DmaBuffer, DmaHandle, DmaPool, Errno, EventFd, IovaRange, Mode, PciAddress,
};
use vfio_pci::PciDevice;
use vfio_tests::edu::{Direction, Edu};
use vfio_tests::{Outcome, ParamGuard, TestResult, device_from_env, ensure, skip};

const EDU: &str = "VFIO_TEST_EDU";
const PARAM: &str = "/sys/module/vfio_iommu_type1/parameters/dma_entry_limit";
const LIMIT: u32 = 64;
const PAGE: usize = 4096;
/// Two pools' IOVA ranges, below the edu's 28-bit DMA mask.
const FIRST_RANGE: IovaRange = IovaRange {
    start: 0x10_0000,
    last: 0x07ff_ffff,
};
const SECOND_RANGE: IovaRange = IovaRange {
    start: 0x0800_0000,
    last: 0x0fff_ffff,
};

/// Writes a `dma_entry_limit`; the guard writes the old one back on drop (also when a test
/// fails or panics: the harness unwinds).
fn set_limit(limit: u32) -> Result<ParamGuard, String> {
    let mut guard = ParamGuard::new();
    guard.set(PARAM, &limit.to_string())?;
    Ok(guard)
}

/// The edu open in a fresh container of `mode`.
fn open_edu(mode: Mode) -> Result<(Arc<dyn Container>, PciDevice), String> {
    let addr: PciAddress = device_from_env(EDU)?;
    let c = vfio_tests::container_or_reason(mode)?;
    let dev = PciDevice::open_in(c.as_ref(), &addr).map_err(|e| format!("open {addr}: {e}"))?;
    Ok((c, dev))
}

/// Whether the group container here is the type1 driver's (its module parameter exists once a
/// container had an IOMMU; iommufd's compat container has none).
fn type1_here() -> Result<bool, String> {
    if !vfio_tests::offered(Mode::GROUP) {
        return Ok(false);
    }
    if std::path::Path::new(PARAM).exists() {
        return Ok(true);
    }
    // A modular kernel loads vfio_iommu_type1 at the first VFIO_SET_IOMMU.
    drop(open_edu(Mode::GROUP)?);
    Ok(std::path::Path::new(PARAM).exists())
}

fn type1_dma_avail_is_the_limit_and_enospc_names_it() -> TestResult {
    match type1_here() {
        Ok(true) => {}
        Ok(false) => return skip("no type1 driver behind /dev/vfio/vfio (iommufd compat, or no IOMMU)"),
        Err(why) => return skip(why),
    }
    let _guard = set_limit(LIMIT)?;
    let (c, _dev) = open_edu(Mode::GROUP)?;
    ensure!(
        c.dma_avail()? == Some(LIMIT),
        "DMA_AVAIL of a fresh container with dma_entry_limit {LIMIT} is {:?}",
        c.dma_avail()
    );
    let pages = LIMIT as usize + 8;
    let buf = DmaBuffer::with_backing(pages * PAGE, Backing::Anonymous)?;
    let base = 0x100_0000u64;
    let mut mapped = 0usize;
    let mut refusal = None;
    for i in 0..pages {
        // SAFETY: `buf` outlives every mapping (all are unmapped below, before it drops) and is
        // only accessed through raw copies.
        let r = unsafe {
            c.map_dma_raw(
                buf.as_ptr().add(i * PAGE),
                PAGE as u64,
                base + (i * PAGE) as u64,
                DmaAccess::READ_WRITE,
            )
        };
        match r {
            Ok(_) => mapped += 1,
            Err(e) => {
                refusal = Some(e);
                break;
            }
        }
    }
    let after = c.dma_avail();
    let unmapped = c.unmap_dma(base, (pages * PAGE) as u64)?;
    ensure!(
        unmapped == (mapped * PAGE) as u64,
        "unmapped {unmapped:#x} bytes of {mapped} pages"
    );
    ensure!(mapped == LIMIT as usize, "{mapped} mappings made, the limit is {LIMIT}");
    let e = refusal.ok_or("no refusal past the limit")?;
    ensure!(e.errno() == Some(Errno::NOSPC), "refusal past the limit: {e}");
    ensure!(
        e.cause() == Some(&Finding::DmaEntryLimit { limit: LIMIT }),
        "cause of the refusal: {:?} ({e})",
        e.cause()
    );
    let text = e.to_string();
    ensure!(
        text.contains("dma_entry_limit") && text.contains("fix:") && text.contains("DmaPool"),
        "the refusal does not name the parameter and the fix: {text}"
    );
    ensure!(after? == Some(0), "DMA_AVAIL at the limit is not 0");
    ensure!(
        c.dma_avail()? == Some(LIMIT),
        "DMA_AVAIL after unmapping all is not back to {LIMIT}"
    );
    println!("    refusal: {text}");
    Ok(Outcome::Pass)
}

/// A pattern unique to buffer `i`.
fn pattern(i: usize) -> [u8; 16] {
    let mut p = [0u8; 16];
    for (k, b) in p.iter_mut().enumerate() {
        *b = (i.wrapping_mul(31).wrapping_add(k * 7) % 251) as u8;
    }
    p
}

fn pool_serves_more_buffers_than_the_limit() -> TestResult {
    if !vfio_tests::offered(Mode::GROUP) {
        return skip("group mode with an IOMMU is not offered (no-IOMMU pools map page by page)");
    }
    let type1 = type1_here().map_err(|e| e.to_string())?;
    let _guard = if type1 { Some(set_limit(LIMIT)?) } else { None };
    let (c, dev) = open_edu(Mode::GROUP)?;
    let avail = c.dma_avail()?;
    ensure!(
        avail == type1.then_some(LIMIT),
        "DMA_AVAIL is {avail:?} (type1 driver: {type1})"
    );
    const N: usize = 1000;
    let mut pool = DmaPool::with_ranges(c.as_ref(), &[FIRST_RANGE]);
    let mut handles: Vec<DmaHandle> = Vec::with_capacity(N);
    for i in 0..N {
        let h = pool.alloc(PAGE, DmaAccess::READ_WRITE)?;
        pool.buffer(h)?.write(0x100, &pattern(i))?;
        handles.push(h);
    }
    ensure!(
        pool.buffers() == N && pool.mappings() <= 2,
        "{} buffers in {} mappings (chunks of {:#x})",
        pool.buffers(),
        pool.mappings(),
        pool.chunk_size()
    );
    ensure!(
        pool.dma_avail() == avail,
        "the pool read DMA_AVAIL {:?}, the container says {avail:?}",
        pool.dma_avail()
    );
    // Every buffer has its own device address, which translate agrees with.
    let mut addrs = std::collections::BTreeSet::new();
    for &h in &handles {
        let b = pool.buffer(h)?;
        let a = pool.device_addr(h, 0)?;
        ensure!(
            pool.translate(b.as_ptr(), PAGE) == Some(a),
            "translate disagrees for {h:?}"
        );
        ensure!(
            pool.translate(b.as_ptr(), PAGE + 1).is_none(),
            "translate crosses the end of {h:?}"
        );
        ensure!(
            (FIRST_RANGE.start..=FIRST_RANGE.last).contains(&a),
            "{a:#x} is outside the pool's range"
        );
        addrs.insert(a);
    }
    ensure!(addrs.len() == N, "only {} distinct device addresses", addrs.len());
    // The device reaches them: copy buffer 7's pattern to the device and back into buffer 993.
    dev.enable_bus_master()?;
    let irq = EventFd::new()?;
    dev.enable_msi([&irq])?;
    let edu = Edu::new(dev)?;
    let (src, dst) = (handles[7], handles[N - 7]);
    edu.dma(Direction::ToDevice, pool.device_addr(src, 0x100)?, 16, &irq)?;
    edu.dma(Direction::FromDevice, pool.device_addr(dst, 0x800)?, 16, &irq)?;
    let mut out = [0u8; 16];
    pool.buffer(dst)?.read(0x800, &mut out)?;
    ensure!(out == pattern(7), "DMA through pool buffers: {out:?}");
    pool.buffer(dst)?.read(0x100, &mut out)?;
    ensure!(out == pattern(N - 7), "buffer {} lost its own bytes", N - 7);
    edu.pci.disable_irq(vfio_pci::MSI_IRQ)?;
    // Freed memory comes back zeroed; an emptied chunk is unmapped.
    for &h in &handles[..N / 2] {
        pool.free(h)?;
    }
    let again = pool.alloc(PAGE, DmaAccess::READ_WRITE)?;
    pool.buffer(again)?.read(0x100, &mut out)?;
    ensure!(out == [0; 16], "a reused buffer is not zeroed: {out:?}");
    ensure!(pool.buffer(handles[0]).is_err(), "a freed handle still reaches memory");
    if type1 {
        // One mapping per buffer: the pool refuses past what the container has left, naming
        // the limit, before the kernel would.
        // IOVAs of its own: both pools map into the same container.
        let mut small = DmaPool::with_ranges(c.as_ref(), &[SECOND_RANGE]);
        small.set_chunk_size(PAGE);
        let left = LIMIT as usize - pool.mappings();
        let mut n = 0;
        let e = loop {
            match small.alloc(PAGE, DmaAccess::READ) {
                Ok(_) => n += 1,
                Err(e) => break e,
            }
            ensure!(n <= left, "{n} single-buffer mappings, only {left} were left");
        };
        ensure!(
            n == left,
            "{n} single-buffer mappings before the refusal ({e}), {left} were left"
        );
        ensure!(
            e.errno() == Some(Errno::NOSPC) && e.cause() == Some(&Finding::DmaEntryLimit { limit: LIMIT }),
            "the pool's refusal at the limit: {e}"
        );
        ensure!(c.dma_avail()? == Some(0), "DMA_AVAIL is not 0 with the pools full");
        drop(small);
        println!("    pool refusal: {e}");
    }
    drop(pool);
    if type1 {
        ensure!(
            c.dma_avail()? == Some(LIMIT),
            "DMA_AVAIL is not back to {LIMIT} once the pools are gone"
        );
    }
    Ok(Outcome::Pass)
}

fn no_mapping_limit_without_type1() -> TestResult {
    let mut checked = Vec::new();
    for mode in [Mode::GROUP, Mode::CDEV, Mode::GROUP_NOIOMMU, Mode::CDEV_NOIOMMU] {
        if !vfio_tests::offered(mode) {
            continue;
        }
        if mode == Mode::GROUP && type1_here()? {
            continue;
        }
        let (c, _dev) = open_edu(mode)?;
        let avail = c.dma_avail()?;
        ensure!(
            avail.is_none(),
            "{mode}: DMA_AVAIL {avail:?}, but nothing caps its mappings"
        );
        checked.push(mode.to_string());
    }
    if checked.is_empty() {
        return skip("only the type1 container is offered here, which has the limit");
    }
    println!("    no limit in: {}", checked.join(", "));
    Ok(Outcome::Pass)
}

// ---- RLIMIT_MEMLOCK --------------------------------------------------------------------------

/// In a child: opens the edu in `mode`, then drops `CAP_IPC_LOCK`, lowers `RLIMIT_MEMLOCK` to
/// 64 KiB and maps 1 MiB: the kernel refuses (ENOMEM) and the error names the limit.
fn memlock_refusal(mode: Mode) -> TestResult {
    if !vfio_tests::offered(mode) {
        return skip(format!(
            "{mode} mode is not offered by this kernel ({:?})",
            vfio_core::detect()
        ));
    }
    device_from_env(EDU)?;
    const LIMIT: u64 = 64 << 10;
    let child = move || -> Result<(), Box<dyn std::error::Error>> {
        let (c, _dev) = open_edu(mode)?;
        vfio_tests::caps::drop_ipc_lock()?;
        let lim = libc::rlimit {
            rlim_cur: LIMIT,
            rlim_max: LIMIT,
        };
        // SAFETY: setrlimit reads one rlimit struct.
        if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) } != 0 {
            return Err(format!("setrlimit: {}", std::io::Error::last_os_error()).into());
        }
        let buf = DmaBuffer::with_backing(1 << 20, Backing::Anonymous)?;
        // SAFETY: `buf` outlives the mapping (unmapped below if the map succeeds) and is only
        // accessed through raw copies.
        let r = unsafe { c.map_dma_raw(buf.as_ptr(), 1 << 20, 0x100_0000, DmaAccess::READ_WRITE) };
        let e = match r {
            Ok(_) => {
                c.unmap_dma(0x100_0000, 1 << 20)?;
                return Err("mapping 1 MiB past a 64 KiB RLIMIT_MEMLOCK succeeded".into());
            }
            Err(e) => e,
        };
        let want = Finding::MemlockLow {
            limit: LIMIT,
            exempt: false,
        };
        if e.errno() != Some(Errno::NOMEM) || e.cause() != Some(&want) {
            return Err(format!("refusal past RLIMIT_MEMLOCK: {e} (cause {:?})", e.cause()).into());
        }
        let text = e.to_string();
        if !(text.contains("RLIMIT_MEMLOCK") && text.contains("0x100000") && text.contains("fix:")) {
            return Err(format!("the refusal does not name the limit, the size and the fix: {text}").into());
        }
        println!("    refusal: {text}");
        Ok(())
    };
    // SAFETY: the test harness runs tests one after another on this one thread.
    let pid = unsafe { vfio_tests::fork_child(child) }?;
    vfio_tests::wait_child(pid)?;
    Ok(Outcome::Pass)
}

fn memlock_refusal_names_the_limit_group() -> TestResult {
    memlock_refusal(Mode::GROUP)
}

fn memlock_refusal_names_the_limit_cdev() -> TestResult {
    memlock_refusal(Mode::CDEV)
}

fn main() -> ExitCode {
    vfio_tests::run(&[
        (
            "type1_dma_avail_is_the_limit_and_enospc_names_it",
            type1_dma_avail_is_the_limit_and_enospc_names_it,
        ),
        (
            "pool_serves_more_buffers_than_the_limit",
            pool_serves_more_buffers_than_the_limit,
        ),
        ("no_mapping_limit_without_type1", no_mapping_limit_without_type1),
        (
            "memlock_refusal_names_the_limit_group",
            memlock_refusal_names_the_limit_group,
        ),
        (
            "memlock_refusal_names_the_limit_cdev",
            memlock_refusal_names_the_limit_cdev,
        ),
    ])
}
