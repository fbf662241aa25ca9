//! A live IOAS (cdev) or container (group, type1) handed to a new process, proven on edu: a
//! primary maps a memfd buffer and sets the device up, then hands the fds over to a successor
//! (this binary exec'd again, with `VFIO_RS_RESTART` set and the socket as stdin), which adopts
//! them without resetting or re-opening the device, maps the same memfd at an address of its
//! own, takes over the pinned-memory accounting (`IOMMU_IOAS_CHANGE_PROCESS`, or type1's
//! `VFIO_DMA_MAP_FLAG_VADDR`) and verifies edu DMAs byte for byte. Both processes' `VmPin` and
//! `VmLck` (`/proc/PID/status`) are checked before and after. Plus the refusals: a mapping by
//! address cannot change process, a VADDR update must match the mapping, iommufd's compat
//! container has no `VFIO_UPDATE_VADDR`.

use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::process::{Child, Command, ExitCode, Stdio};
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::Instant;

use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};
use vfio_cdev::{Iommufd, IovaPlacement};
use vfio_core::ioctl::{self, requests as req};
use vfio_core::{
    Addressing, Backing, Container as _, DmaAccess, DmaBuffer, Errno, Error, EventFd, FdKind, Mode, PciAddress,
    SharedFd,
};
use vfio_pci::PciDevice;
use vfio_tests::caps::set_ipc_lock;
use vfio_tests::edu::{Direction, Edu};
use vfio_tests::{Outcome, TestResult, device_in, ensure, skip};

/// Set in the successor's environment: which restart it continues ("cdev" or "type1").
const ROLE_ENV: &str = "VFIO_RS_RESTART";
/// Where the shared buffer is mapped (below edu's 28-bit DMA mask).
const IOVA: u64 = 0x40_0000;
/// The shared buffer: 16 KiB of a memfd.
const LEN: usize = 16 << 10;
/// Bytes per edu DMA (at most `EDU_MAX_DMA`).
const CHUNK: usize = 2000;

fn pattern(seed: u32) -> Vec<u8> {
    (0..CHUNK as u32)
        .map(|i| (i.wrapping_mul(seed) ^ (seed >> 3)) as u8)
        .collect()
}

// ---- /proc/PID/status and CAP_IPC_LOCK ------------------------------------------------------

/// `VmPin` and `VmLck` of process `pid` ("self" for this one), in kB.
fn pin_lck(pid: &str) -> Result<(u64, u64), Box<dyn std::error::Error>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = |field: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches(" kB").parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok((kb("VmPin"), kb("VmLck")))
}

/// Without `CAP_IPC_LOCK` while alive: iommufd does not account pages pinned by a process that
/// has it (so nothing would move). Restores it on drop.
struct NoIpcLock(bool);

impl NoIpcLock {
    fn new() -> std::io::Result<Self> {
        Ok(NoIpcLock(set_ipc_lock(false)?))
    }
}

impl Drop for NoIpcLock {
    fn drop(&mut self) {
        if self.0
            && let Err(e) = set_ipc_lock(true)
        {
            eprintln!("restoring CAP_IPC_LOCK: {e}");
        }
    }
}

// ---- the handover ---------------------------------------------------------------------------

/// The successor's end of the handover: a child process running this binary again.
struct Successor {
    child: Child,
    sock: OwnedFd,
}

impl Successor {
    /// Starts the successor for `role` and sends it `fds`.
    fn spawn(role: &str, addr: &PciAddress, fds: &[(FdKind, &str, BorrowedFd<'_>)]) -> R<Successor> {
        let (mine, theirs) =
            rustix::net::socketpair(AddressFamily::UNIX, SocketType::SEQPACKET, SocketFlags::CLOEXEC, None)?;
        // One statement: the Command (and its copy of `theirs`) is gone once the child runs,
        // so the child's exit shows here as end of file.
        let child = Command::new(std::env::current_exe()?)
            .env(ROLE_ENV, role)
            .env("VFIO_TEST_EDU", addr.to_string())
            .stdin(Stdio::from(theirs))
            .spawn()?;
        let s = Successor { child, sock: mine };
        vfio_core::send_fds(s.sock.as_fd(), fds)?;
        Ok(s)
    }

    /// The successor's next message (its "moved" report); an error when it exited instead.
    fn recv(&mut self) -> Result<String, Box<dyn std::error::Error>> {
        let mut buf = [0u8; 256];
        let (n, _) = rustix::net::recv(self.sock.as_fd(), &mut buf, RecvFlags::empty())?;
        if n == 0 {
            let status = self.child.wait()?;
            return Err(format!("the successor exited before reporting ({status})").into());
        }
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// Tells the successor to leave, and waits for its exit status 0.
    fn finish(mut self) -> Result<(), Box<dyn std::error::Error>> {
        rustix::net::send(self.sock.as_fd(), b"back", SendFlags::empty())?;
        let status = self.child.wait()?;
        ensure!(status.success(), "the successor failed ({status})");
        Ok(())
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }
}

type R<T> = Result<T, Box<dyn std::error::Error>>;

/// The numbers of a "moved a b c d" report.
fn numbers(msg: &str) -> R<Vec<u64>> {
    let mut words = msg.split_whitespace();
    ensure!(words.next() == Some("moved"), "the successor said {msg:?}");
    Ok(words.map(str::parse).collect::<Result<_, _>>()?)
}

/// The DMA checks run on either side: the primary's pattern A is in the device's buffer (the
/// device kept its state: never reset), copied into the second half of `mem`; then pattern
/// `seed` written at offset 0 makes a round trip through the device to offset `LEN / 4 * 3`.
/// `mem` is the caller's mapping of the shared memfd.
fn check_dma(edu: &Edu, irq: &EventFd, mem: NonNull<u8>, expect_in_device: u32, seed: u32) -> R<()> {
    // SAFETY: `mem` maps LEN bytes of the memfd for the whole call; the device writes only the
    // ranges read here after its completion interrupt.
    let mem = unsafe { std::slice::from_raw_parts_mut(mem.as_ptr(), LEN) };
    edu.dma(Direction::FromDevice, IOVA + (LEN / 2) as u64, CHUNK as u64, irq)?;
    ensure!(
        mem[LEN / 2..LEN / 2 + CHUNK] == pattern(expect_in_device)[..],
        "the device's buffer did not hold pattern {expect_in_device} (reset, or a wrong mapping)"
    );
    let b = pattern(seed);
    mem[..CHUNK].copy_from_slice(&b);
    edu.dma(Direction::ToDevice, IOVA, CHUNK as u64, irq)?;
    edu.dma(Direction::FromDevice, IOVA + (LEN / 4 * 3) as u64, CHUNK as u64, irq)?;
    ensure!(
        mem[LEN / 4 * 3..LEN / 4 * 3 + CHUNK] == b[..],
        "pattern {seed} did not come back"
    );
    Ok(())
}

/// The successor's own mapping of the memfd (shared, at an address the kernel picks).
struct Mapped(NonNull<u8>);

impl Mapped {
    fn new(memfd: BorrowedFd<'_>) -> R<Self> {
        // SAFETY: a fresh shared mapping of the memfd aliases no Rust object.
        let p = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                LEN,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::SHARED,
                memfd,
                0,
            )
        }?;
        Ok(Mapped(NonNull::new(p.cast()).ok_or("mmap gave null")?))
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: our own mapping of LEN bytes; no reference into it outlives `check_dma`.
        if let Err(e) = unsafe { rustix::mm::munmap(self.0.as_ptr().cast(), LEN) } {
            eprintln!("munmap: {e}");
        }
    }
}

fn take(got: &mut Vec<SharedFd>, kind: FdKind) -> R<SharedFd> {
    let i = got
        .iter()
        .position(|s| s.kind == kind)
        .ok_or(format!("no {kind:?} fd passed"))?;
    Ok(got.swap_remove(i))
}

/// The successor: runs in a new process (exec'd), with the socket as stdin.
fn successor(role: &str) -> ExitCode {
    let res = (|| -> R<()> {
        // SAFETY: stdin is the socket the primary passed, open for the whole process.
        let sock = unsafe { BorrowedFd::borrow_raw(0) };
        let start = Instant::now();
        let mut got = vfio_core::recv_fds(sock)?;
        let addr: PciAddress = std::env::var("VFIO_TEST_EDU")?.parse()?;
        let device = take(&mut got, FdKind::Device)?;
        let memfd = take(&mut got, FdKind::Other)?;
        let before = pin_lck("self")?;
        // Keep what is adopted alive until the end.
        let mut _keep: Vec<Box<dyn std::any::Any>> = Vec::new();
        let mem = Mapped::new(memfd.fd.as_fd())?;
        let (mode, report) = match role {
            "cdev" => {
                let i = take(&mut got, FdKind::Iommufd)?;
                let id: u32 = i.name.strip_prefix("ioas ").ok_or("no IOAS id")?.parse()?;
                let iommufd = Iommufd::from_fd(i.fd);
                let ioas = vfio_cdev::Ioas::adopt(iommufd.clone(), vfio_cdev::IoasId::from(id))?;
                iommufd.change_process()?;
                let after = pin_lck("self")?;
                _keep.push(Box::new(ioas));
                _keep.push(Box::new(iommufd));
                (
                    Mode::CDEV,
                    format!("moved {} {} {} {}", before.0, before.1, after.0, after.1),
                )
            }
            "type1" => {
                let c = take(&mut got, FdKind::Container)?;
                let g = take(&mut got, FdKind::Group)?;
                let container = vfio_group::Container::from_fd(c.fd, Addressing::Iova)?;
                // SAFETY: `mem` maps the memfd the primary mapped at IOVA, from offset 0, for
                // LEN bytes, until it is invalidated again below (before `mem` is unmapped).
                unsafe { container.update_vaddr(IOVA, LEN as u64, mem.0.as_ptr()) }?;
                let after = pin_lck("self")?;
                _keep.push(Box::new(g));
                _keep.push(Box::new(container));
                (
                    Mode::GROUP,
                    format!("moved {} {} {} {}", before.0, before.1, after.0, after.1),
                )
            }
            other => return Err(format!("unknown role {other:?}").into()),
        };
        let dev = vfio_core::Device::from_fd(device.fd, addr.to_string(), None);
        let edu = Edu::new(PciDevice::from_device(dev, addr, mode)?)?;
        let irq = EventFd::new()?;
        edu.pci.enable_msi([&irq])?;
        check_dma(&edu, &irq, mem.0, 1, 2)?;
        let took = start.elapsed();
        edu.pci.disable_irq(vfio_pci::MSI_IRQ)?;
        if role == "type1" {
            let container = _keep
                .last()
                .and_then(|c| c.downcast_ref::<vfio_group::Container>())
                .ok_or("lost the container")?;
            ensure!(
                container.invalidate_vaddr(IOVA, LEN as u64)? == LEN as u64,
                "invalidated a different size"
            );
        }
        rustix::net::send(
            sock,
            format!("{report} {}", took.as_micros()).as_bytes(),
            SendFlags::empty(),
        )?;
        let mut buf = [0u8; 16];
        let (n, _) = rustix::net::recv(sock, &mut buf, RecvFlags::empty())?;
        ensure!(&buf[..n] == b"back", "the primary said {:?}", &buf[..n]);
        drop(mem);
        Ok(())
    })();
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            println!("    successor ({role}): {e}");
            let _ = std::io::stdout().flush();
            ExitCode::FAILURE
        }
    }
}

/// Checks the report of a successor against the primary's numbers: the successor gained `kb`
/// of `VmPin` (when `pin`) and of `VmLck`, the primary is back at `base`.
fn check_moved(nums: &[u64], me: (u64, u64), base: (u64, u64), kb: u64, pin: bool) -> R<()> {
    ensure!(nums.len() == 5, "report {nums:?}");
    let (b, a) = ((nums[0], nums[1]), (nums[2], nums[3]));
    if pin {
        ensure!(a.0 == b.0 + kb, "successor VmPin {} -> {} kB, expected +{kb}", b.0, a.0);
        ensure!(
            me.0 == base.0,
            "primary VmPin {} kB after the handover, expected {}",
            me.0,
            base.0
        );
    }
    ensure!(a.1 == b.1 + kb, "successor VmLck {} -> {} kB, expected +{kb}", b.1, a.1);
    ensure!(
        me.1 == base.1,
        "primary VmLck {} kB after the handover, expected {}",
        me.1,
        base.1
    );
    Ok(())
}

// ---- the tests ------------------------------------------------------------------------------

fn restart_cdev_change_process() -> TestResult {
    let addr = match device_in("VFIO_TEST_EDU", Mode::CDEV) {
        Err(why) => return skip(why),
        Ok(a) => a,
    };
    let caps = NoIpcLock::new()?;
    let iommufd = Iommufd::open()?;
    // Per process (MM mode): VmLck moves too, not only VmPin.
    iommufd.set_rlimit_per_process(true)?;
    let ioas = Arc::new(iommufd.alloc_ioas()?);
    let container = vfio_cdev::Container::from_ioas(ioas.clone(), Addressing::Iova)?;
    let edu = Edu::new(PciDevice::open_in(&container, &addr)?)?;
    edu.pci.enable_bus_master()?;
    let buf = DmaBuffer::with_backing(LEN, Backing::Memfd)?;
    let memfd = buf.memfd().ok_or("the buffer has no memfd")?;
    let base = pin_lck("self")?;
    ioas.map_file(memfd, 0, LEN as u64, IovaPlacement::Fixed(IOVA), DmaAccess::READ_WRITE)?;
    let kb = (LEN / 1024) as u64;
    let mapped = pin_lck("self")?;
    ensure!(
        mapped == (base.0 + kb, base.1 + kb),
        "VmPin/VmLck {base:?} -> {mapped:?} kB after mapping {kb} kB"
    );
    // The owner changing to itself: a no-op.
    iommufd.change_process()?;
    ensure!(
        pin_lck("self")? == mapped,
        "change_process in the owner moved something"
    );
    // Pattern 1 is left in the device's buffer for the successor.
    let irq = EventFd::new()?;
    edu.pci.enable_msi([&irq])?;
    buf.write(0, &pattern(1))?;
    edu.dma(Direction::ToDevice, IOVA, CHUNK as u64, &irq)?;
    edu.pci.disable_irq(vfio_pci::MSI_IRQ)?;

    let name = format!("ioas {}", ioas.id());
    let bdf = addr.to_string();
    let mut succ = Successor::spawn(
        "cdev",
        &addr,
        &[
            (FdKind::Iommufd, &name, iommufd.as_fd()),
            (FdKind::Device, &bdf, edu.pci.device().as_fd()),
            (FdKind::Other, "memfd", memfd),
        ],
    )?;
    let nums = numbers(&succ.recv()?)?;
    let theirs = pin_lck(&succ.pid())?;
    check_moved(&nums, pin_lck("self")?, base, kb, true)?;
    // Take it back while the successor lives (its mm must exist to be uncharged).
    iommufd.change_process()?;
    ensure!(
        pin_lck("self")? == mapped,
        "taking the accounting back: {:?}",
        pin_lck("self")?
    );
    let left = pin_lck(&succ.pid())?;
    ensure!(
        left == (theirs.0 - kb, theirs.1 - kb),
        "successor {theirs:?} -> {left:?} kB after the primary took the pages back"
    );
    succ.finish()?;
    // The successor's pattern 2 is in the shared memfd and in the device.
    let mut back = vec![0u8; CHUNK];
    buf.read(0, &mut back)?;
    ensure!(
        back == pattern(2),
        "the successor's writes are not in the primary's buffer"
    );
    edu.pci.enable_msi([&irq])?;
    edu.dma(Direction::FromDevice, IOVA + (LEN / 4) as u64, CHUNK as u64, &irq)?;
    buf.read(LEN / 4, &mut back)?;
    ensure!(back == pattern(2), "the device lost the successor's bytes");
    edu.pci.disable_irq(vfio_pci::MSI_IRQ)?;
    ioas.unmap(IOVA, LEN as u64)?;
    ensure!(
        pin_lck("self")? == base,
        "after unmap: {:?}, expected {base:?}",
        pin_lck("self")?
    );
    drop(caps);
    println!(
        "    successor took {kb} kB of VmPin and VmLck ({}us from its start to the verified DMA) and gave them back",
        nums[4]
    );
    Ok(Outcome::Pass)
}

fn restart_type1_update_vaddr() -> TestResult {
    let addr = match device_in("VFIO_TEST_EDU", Mode::GROUP) {
        Err(why) => return skip(why),
        Ok(a) => a,
    };
    let container = vfio_group::Container::open(Addressing::Iova)?;
    let edu = Edu::new(PciDevice::open_in(&container, &addr)?)?;
    edu.pci.enable_bus_master()?;
    if !container.supports_update_vaddr()? {
        if container.backend()? == vfio_group::Backend::IommufdCompat {
            return skip(
                "iommufd's compat container has no VFIO_UPDATE_VADDR (update_vaddr_refused_where_not_offered checks the refusal)",
            );
        }
        return Err("the type1 container does not offer VFIO_UPDATE_VADDR".into());
    }
    let group = vfio_core::Sysfs::default().iommu_group(&addr)?;
    let buf = DmaBuffer::with_backing(LEN, Backing::Memfd)?;
    let memfd = buf.memfd().ok_or("the buffer has no memfd")?;
    let base = pin_lck("self")?;
    container.map_dma(&buf, IOVA, DmaAccess::READ_WRITE)?;
    let kb = (LEN / 1024) as u64;
    let mapped = pin_lck("self")?;
    ensure!(
        mapped.1 == base.1 + kb,
        "VmLck {} -> {} kB after mapping {kb} kB",
        base.1,
        mapped.1
    );
    let irq = EventFd::new()?;
    edu.pci.enable_msi([&irq])?;
    let len = LEN as u64;
    // Bad input: nothing is invalidated yet; then twice; then of another size or IOVA.
    let ptr = buf.as_ptr();
    let expect = |res: vfio_core::Result<()>, errno: Errno, what: &str| -> R<()> {
        match res {
            Err(e @ Error::Kernel { .. }) if e.errno() == Some(errno) => Ok(()),
            other => Err(format!("{what}: {other:?}, expected {errno}").into()),
        }
    };
    expect(
        // SAFETY: `ptr` maps the buffer mapped at IOVA, which outlives the mapping (unmapped
        // below before `buf` drops).
        unsafe { container.update_vaddr(IOVA, len, ptr) },
        Errno::INVAL,
        "update before invalidation",
    )?;
    ensure!(
        container.invalidate_vaddr(IOVA, len)? == len,
        "invalidated another size"
    );
    expect(
        container.invalidate_vaddr(IOVA, len).map(drop),
        Errno::INVAL,
        "second invalidation",
    )?;
    expect(
        // SAFETY: `ptr` maps the buffer mapped at IOVA, which outlives the mapping (unmapped
        // below before `buf` drops).
        unsafe { container.update_vaddr(IOVA, len / 2, ptr) },
        Errno::INVAL,
        "update of half the size",
    )?;
    expect(
        // SAFETY: `ptr` maps the buffer mapped at IOVA, which outlives the mapping (unmapped
        // below before `buf` drops).
        unsafe { container.update_vaddr(IOVA + 0x100_0000, len, ptr) },
        Errno::NOENT,
        "update of an unmapped IOVA",
    )?;
    // DMA goes on while the address is invalid: pattern 1 goes into the device for the successor.
    buf.write(0, &pattern(1))?;
    edu.dma(Direction::ToDevice, IOVA, CHUNK as u64, &irq)?;
    edu.pci.disable_irq(vfio_pci::MSI_IRQ)?;
    let gname = group.to_string();
    let bdf = addr.to_string();
    let g = container.group(group).ok_or("the container lost the group")?;
    let mut succ = Successor::spawn(
        "type1",
        &addr,
        &[
            (FdKind::Container, "iommu", container.as_fd()),
            (FdKind::Group, &gname, g.as_fd()),
            (FdKind::Device, &bdf, edu.pci.device().as_fd()),
            (FdKind::Other, "memfd", memfd),
        ],
    )?;
    let nums = numbers(&succ.recv()?)?;
    let theirs = pin_lck(&succ.pid())?;
    let me = pin_lck("self")?;
    // Debian's 6.1 moves it too (vfio_change_dma_owner, mainline 6.2, backported).
    check_moved(&nums, me, base, kb, false)?;
    // The successor invalidated its address again: take the mapping back.
    // SAFETY: as above.
    unsafe { container.update_vaddr(IOVA, len, ptr) }?;
    let left = pin_lck(&succ.pid())?;
    ensure!(
        pin_lck("self")?.1 == mapped.1,
        "taking the mapping back: {:?}",
        pin_lck("self")?
    );
    ensure!(
        left.1 == theirs.1 - kb,
        "successor VmLck {} -> {} kB after the take-back",
        theirs.1,
        left.1
    );
    succ.finish()?;
    let mut back = vec![0u8; CHUNK];
    buf.read(0, &mut back)?;
    ensure!(
        back == pattern(2),
        "the successor's writes are not in the primary's buffer"
    );
    edu.pci.enable_msi([&irq])?;
    edu.dma(Direction::FromDevice, IOVA + (LEN / 4) as u64, CHUNK as u64, &irq)?;
    buf.read(LEN / 4, &mut back)?;
    ensure!(back == pattern(2), "the device lost the successor's bytes");
    edu.pci.disable_irq(vfio_pci::MSI_IRQ)?;
    container.unmap_dma(IOVA, len)?;
    ensure!(
        pin_lck("self")?.1 == base.1,
        "after unmap: {:?}, expected {base:?}",
        pin_lck("self")?
    );
    println!(
        "    successor took {kb} kB of VmLck ({}us from its start to the verified DMA) and gave it back; bad updates refused",
        nums[4]
    );
    Ok(Outcome::Pass)
}

fn change_process_with_a_non_file_mapping() -> TestResult {
    if !std::path::Path::new("/dev/iommu").exists() {
        return skip("no /dev/iommu (iommufd) on this kernel");
    }
    let iommufd = Iommufd::open()?;
    let ioas = iommufd.alloc_ioas()?;
    iommufd.change_process()?; // nothing mapped: nothing to move
    let anon = DmaBuffer::with_backing(4096, Backing::Anonymous)?;
    let memfd = DmaBuffer::new(4096)?;
    for (buf, what) in [(&anon, "anonymous memory"), (&memfd, "a memfd mapped by address")] {
        // SAFETY: the buffer outlives the mapping (unmapped below); nothing here reads it.
        let iova = unsafe { ioas.map_raw(buf.as_ptr(), 4096, IovaPlacement::Any, DmaAccess::READ_WRITE) }?;
        let res = iommufd.change_process();
        ioas.unmap(iova, 4096)?;
        match res {
            Err(e @ Error::Kernel { .. })
                if e.errno() == Some(Errno::INVAL)
                    && e.to_string().contains("not file-backed")
                    && e.to_string().contains("DmaBuffer::new")
                    && e.to_string().contains("IOMMU_IOAS_CHANGE_PROCESS") => {}
            other => return Err(format!("change_process with {what} mapped: {other:?}").into()),
        }
    }
    ioas.map_file(
        memfd.memfd().ok_or("no memfd")?,
        0,
        4096,
        IovaPlacement::Fixed(IOVA),
        DmaAccess::READ_WRITE,
    )?;
    iommufd.change_process()?;
    ioas.unmap(IOVA, 4096)?;
    Ok(Outcome::Pass)
}

fn update_vaddr_refused_where_not_offered() -> TestResult {
    let addr = match vfio_tests::group_mode().and_then(|m| device_in("VFIO_TEST_EDU", m).map(|a| (a, m))) {
        Err(why) => return skip(why),
        Ok(a) => a,
    };
    let (addr, mode) = addr;
    let container = vfio_group::Container::open(mode.addressing())?;
    let unsupported = |res: vfio_core::Result<()>, needle: &str, what: &str| -> R<()> {
        match res {
            Err(Error::Unsupported { reason, .. }) if reason.contains(needle) => Ok(()),
            other => Err(format!("{what}: {other:?}, expected Unsupported saying {needle:?}").into()),
        }
    };
    let buf = DmaBuffer::new(4096)?;
    let no_group = if mode == Mode::GROUP {
        "once a group joined"
    } else {
        "no-IOMMU"
    };
    unsupported(
        container.invalidate_vaddr(IOVA, 4096).map(drop),
        no_group,
        "invalidate before a group",
    )?;
    let _edu = Edu::new(PciDevice::open_in(&container, &addr)?)?;
    if container.supports_update_vaddr()? {
        return skip("VFIO_UPDATE_VADDR is offered here (type1): restart_type1_update_vaddr uses it");
    }
    let needle = if mode == Mode::GROUP { "compat" } else { "no-IOMMU" };
    container.map_dma(&buf, IOVA, DmaAccess::READ_WRITE)?;
    unsupported(container.invalidate_vaddr(IOVA, 4096).map(drop), needle, "invalidate")?;
    // SAFETY: refused before the kernel sees it (and `buf` is the memory mapped at IOVA).
    let update = unsafe { container.update_vaddr(IOVA, 4096, buf.as_ptr()) };
    unsupported(update, needle, "update")?;
    if mode == Mode::GROUP {
        // The kernel's own answer to the flag, under the typed refusal: EINVAL.
        let mut u = vfio_sys::vfio_iommu_type1_dma_unmap {
            flags: vfio_sys::VFIO_DMA_UNMAP_FLAG_VADDR,
            iova: IOVA,
            size: 4096,
            ..Default::default()
        };
        let raw = ioctl::call::<req::IommuUnmapDma>(container.ioctl_fd(), &mut u);
        ensure!(raw == Err(Errno::INVAL), "raw UNMAP_DMA|VADDR on compat: {raw:?}");
        ensure!(
            !container.check_extension_raw(vfio_sys::VFIO_UPDATE_VADDR)?,
            "compat says it has VFIO_UPDATE_VADDR"
        );
    }
    container.unmap_dma(IOVA, 4096)?;
    println!("    {mode}: Unsupported, the mapping untouched");
    Ok(Outcome::Pass)
}

fn main() -> ExitCode {
    if let Ok(role) = std::env::var(ROLE_ENV) {
        return successor(&role);
    }
    vfio_tests::run(&[
        ("restart_cdev_change_process", restart_cdev_change_process),
        ("restart_type1_update_vaddr", restart_type1_update_vaddr),
        (
            "change_process_with_a_non_file_mapping",
            change_process_with_a_non_file_mapping,
        ),
        (
            "update_vaddr_refused_where_not_offered",
            update_vaddr_refused_where_not_offered,
        ),
    ])
}
