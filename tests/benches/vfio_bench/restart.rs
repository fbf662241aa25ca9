//! R1 (issue #16): a restart, timed from the successor's receipt of the fds to its first
//! verified edu DMA (adopt the iommufd or container, move the accounting with
//! `IOMMU_IOAS_CHANGE_PROCESS` or type1's `VFIO_DMA_MAP_FLAG_VADDR`, mmap the memfd, adopt the
//! device, MSI on, one DMA checked), vs a fresh open of the same device to the same point (open,
//! assign, map the memfd, MSI on, one DMA checked). The successor is a forked process that
//! serves every round; the primary sets up (untimed) before each send and takes the mappings
//! back after. Both sides wait for one edu DMA (QEMU's edu completes it on a timer, ~100 ms
//! under TCG), which dominates both: the ratio is of whole restarts, not of the ioctls.

use std::os::fd::{AsFd, BorrowedFd};
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags};
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};
use vfio_core::{Addressing, Container as _, DmaAccess, DmaBuffer, EventFd, FdKind, Mode, PciAddress};
use vfio_pci::PciDevice;
use vfio_tests::edu::{Direction, Edu};

use crate::Ctx;
use crate::measure::{BenchResult, Record, Side, interleave};

const IOVA: u64 = 0x40_0000;
const LEN: usize = 16 << 10;
/// Where the checked DMA lands in the buffer, and its length.
const AT: usize = LEN / 2;
const CHUNK: usize = 256;

fn pattern() -> Vec<u8> {
    (0..CHUNK as u32).map(|i| (i * 7 + 3) as u8).collect()
}

/// What holds the mappings of a primary or fresh open.
enum Holder {
    Cdev(Arc<vfio_cdev::Iommufd>, vfio_cdev::Container),
    Group(vfio_group::Container),
}

/// An opened edu with the memfd buffer mapped at IOVA and MSI on.
struct Open {
    edu: Edu,
    irq: EventFd,
    buf: DmaBuffer,
    holder: Holder,
}

fn open(mode: Mode, addr: &PciAddress) -> BenchResult<Open> {
    let buf = DmaBuffer::new(LEN)?;
    let memfd = buf.memfd().ok_or("the buffer has no memfd")?;
    let (holder, pci) = if mode == Mode::CDEV {
        let iommufd = vfio_cdev::Iommufd::open()?;
        let ioas = Arc::new(iommufd.alloc_ioas()?);
        let c = vfio_cdev::Container::from_ioas(ioas.clone(), Addressing::Iova)?;
        let pci = PciDevice::open_in(&c, addr)?;
        ioas.map_file(
            memfd,
            0,
            LEN as u64,
            vfio_cdev::IovaPlacement::Fixed(IOVA),
            DmaAccess::READ_WRITE,
        )?;
        (Holder::Cdev(iommufd, c), pci)
    } else {
        let c = vfio_group::Container::open(Addressing::Iova)?;
        let pci = PciDevice::open_in(&c, addr)?;
        c.map_dma(&buf, IOVA, DmaAccess::READ_WRITE)?;
        (Holder::Group(c), pci)
    };
    let edu = Edu::new(pci)?;
    edu.pci.enable_bus_master()?;
    let irq = EventFd::new()?;
    edu.pci.enable_msi([&irq])?;
    Ok(Open { edu, irq, buf, holder })
}

impl Open {
    fn close(self) -> BenchResult {
        self.edu.pci.disable_irq(vfio_pci::MSI_IRQ)?;
        match &self.holder {
            Holder::Cdev(_, c) => c.ioas().unmap(IOVA, LEN as u64).map(drop)?,
            Holder::Group(c) => c.unmap_dma(IOVA, LEN as u64).map(drop)?,
        }
        Ok(())
    }
}

/// One DMA from the device's buffer (which holds `pattern()`) to `IOVA + AT`, checked in `mem`.
fn first_dma(edu: &Edu, irq: &EventFd, mem: &mut [u8]) -> BenchResult {
    mem[AT..AT + CHUNK].fill(0);
    edu.dma(Direction::FromDevice, IOVA + AT as u64, CHUNK as u64, irq)?;
    if mem[AT..AT + CHUNK] != pattern()[..] {
        return Err("the first DMA did not bring the device's bytes".into());
    }
    Ok(())
}

/// The forked successor: for each handover, takes everything over, does the first DMA, reports
/// the time since the fds arrived, gives the mappings back and lets everything go.
fn successor(sock: BorrowedFd<'_>, addr: PciAddress, mode: Mode) -> BenchResult {
    loop {
        let mut fds = [PollFd::new(&sock, PollFlags::IN)];
        rustix::event::poll(&mut fds, None)?;
        let t = Instant::now();
        let Ok(got) = vfio_core::recv_fds(sock) else {
            return Ok(()); // the primary is done
        };
        let (mut iommufd, mut container, mut group, mut device, mut memfd) = (None, None, None, None, None);
        for item in got {
            match item.kind {
                FdKind::Iommufd => iommufd = Some(vfio_cdev::Iommufd::from_fd(item.fd)),
                FdKind::Container => container = Some(vfio_group::Container::from_fd(item.fd, Addressing::Iova)?),
                FdKind::Group => group = Some(item.fd),
                FdKind::Device => device = Some(item.fd),
                _ => memfd = Some(item.fd),
            }
        }
        let memfd = memfd.ok_or("no memfd")?;
        if let Some(i) = &iommufd {
            i.change_process()?;
        }
        // SAFETY: a fresh shared mapping of the memfd aliases no Rust object.
        let p = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                LEN,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::SHARED,
                memfd.as_fd(),
                0,
            )
        }?;
        let mem = NonNull::new(p.cast::<u8>()).ok_or("mmap gave null")?;
        if let Some(c) = &container {
            // SAFETY: `mem` maps the memfd mapped at IOVA from offset 0 for LEN bytes, until
            // the address is invalidated again below, before the munmap.
            unsafe { c.update_vaddr(IOVA, LEN as u64, mem.as_ptr()) }?;
        }
        let dev = vfio_core::Device::from_fd(device.ok_or("no device fd")?, addr.to_string(), None);
        let edu = Edu::new(PciDevice::from_device(dev, addr, mode)?)?;
        let irq = EventFd::new()?;
        edu.pci.enable_msi([&irq])?;
        let ready = t.elapsed();
        {
            // SAFETY: our own mapping of LEN bytes; the device writes the checked range only
            // before its completion interrupt.
            let slice = unsafe { std::slice::from_raw_parts_mut(mem.as_ptr(), LEN) };
            first_dma(&edu, &irq, slice)?;
        }
        let took = t.elapsed();
        edu.pci.disable_irq(vfio_pci::MSI_IRQ)?;
        if let Some(c) = &container {
            c.invalidate_vaddr(IOVA, LEN as u64)?;
        }
        let mut msg = [0u8; 16];
        msg[..8].copy_from_slice(&(ready.as_nanos() as u64).to_ne_bytes());
        msg[8..].copy_from_slice(&(took.as_nanos() as u64).to_ne_bytes());
        rustix::net::send(sock, &msg, SendFlags::NOSIGNAL)?;
        // Wait until the primary took the mappings back (our mm must exist to be uncharged).
        let mut b = [0u8; 8];
        rustix::net::recv(sock, &mut b, RecvFlags::empty())?;
        // SAFETY: our own mapping, no reference into it left.
        unsafe { rustix::mm::munmap(mem.as_ptr().cast(), LEN) }?;
        drop((edu, irq, container, group, iommufd, memfd));
        rustix::net::send(sock, b"closed", SendFlags::NOSIGNAL)?;
    }
}

/// One timed handover: the primary opens (untimed), hands over, gets the successor's time,
/// takes the mappings back, closes.
fn handover(sock: BorrowedFd<'_>, mode: Mode, addr: &PciAddress) -> BenchResult<(Duration, Duration)> {
    let o = open(mode, addr)?;
    o.edu.pci.disable_irq(vfio_pci::MSI_IRQ)?;
    let memfd = o.buf.memfd().ok_or("no memfd")?;
    let bdf = addr.to_string();
    match &o.holder {
        Holder::Cdev(i, _) => vfio_core::send_fds(
            sock,
            &[
                (FdKind::Iommufd, "iommufd", i.as_fd()),
                (FdKind::Device, &bdf, o.edu.pci.device().as_fd()),
                (FdKind::Other, "memfd", memfd),
            ],
        )?,
        Holder::Group(c) => {
            c.invalidate_vaddr(IOVA, LEN as u64)?;
            let id = *c.group_ids().first().ok_or("no group")?;
            let g = c.group(id).ok_or("no group")?;
            vfio_core::send_fds(
                sock,
                &[
                    (FdKind::Container, "iommu", c.as_fd()),
                    (FdKind::Group, &id.to_string(), g.as_fd()),
                    (FdKind::Device, &bdf, o.edu.pci.device().as_fd()),
                    (FdKind::Other, "memfd", memfd),
                ],
            )?
        }
    }
    let mut b = [0u8; 16];
    let (n, _) = rustix::net::recv(sock, &mut b, RecvFlags::empty())?;
    if n != 16 {
        return Err("the successor stopped".into());
    }
    match &o.holder {
        Holder::Cdev(i, _) => i.change_process()?,
        // SAFETY: the primary's buffer is the memory mapped at IOVA and outlives the mapping.
        Holder::Group(c) => unsafe { c.update_vaddr(IOVA, LEN as u64, o.buf.as_ptr()) }?,
    }
    rustix::net::send(sock, b"back", SendFlags::NOSIGNAL)?;
    let mut c = [0u8; 8];
    rustix::net::recv(sock, &mut c, RecvFlags::empty())?;
    o.edu.pci.enable_msi([&o.irq])?;
    o.close()?;
    let at = |i: usize| Duration::from_nanos(u64::from_ne_bytes(b[i..i + 8].try_into().unwrap_or_default()));
    Ok((at(0), at(8)))
}

/// One timed fresh open to the first verified DMA.
fn fresh(mode: Mode, addr: &PciAddress) -> BenchResult<(Duration, Duration)> {
    let t = Instant::now();
    let o = open(mode, addr)?;
    let mut mem = vec![0u8; LEN];
    o.buf.write(AT, &mem[AT..AT + CHUNK])?;
    let ready = t.elapsed();
    o.edu
        .dma(Direction::FromDevice, IOVA + AT as u64, CHUNK as u64, &o.irq)?;
    o.buf.read(0, &mut mem)?;
    if mem[AT..AT + CHUNK] != pattern()[..] {
        return Err("the first DMA did not bring the device's bytes".into());
    }
    let took = t.elapsed();
    o.close()?;
    Ok((ready, took))
}

/// Per-round totals of both sides, and their times to ready (restart, fresh).
type Times = (Vec<Vec<f64>>, [Vec<f64>; 2]);

/// The interleaved rounds: a handover to the successor, a fresh open.
fn rounds(plan: crate::measure::Plan, sock: BorrowedFd<'_>, mode: Mode, addr: &PciAddress) -> BenchResult<Times> {
    let (mut ready_r, mut ready_f) = (Vec::new(), Vec::new());
    let mut sides = [
        Side::new("restart", 1, |n| {
            let mut total = Duration::ZERO;
            for _ in 0..n {
                let (ready, took) = handover(sock, mode, addr)?;
                ready_r.push(ready.as_nanos() as f64);
                total += took;
            }
            Ok(total)
        }),
        Side::new("fresh open", 1, |n| {
            let mut total = Duration::ZERO;
            for _ in 0..n {
                let (ready, took) = fresh(mode, addr)?;
                ready_f.push(ready.as_nanos() as f64);
                total += took;
            }
            Ok(total)
        }),
    ];
    let t = interleave(plan, &mut sides)?;
    drop(sides);
    // One entry per operation, the warm-up ones first.
    let w = plan.warmup as usize;
    Ok((t, [ready_r.split_off(w), ready_f.split_off(w)]))
}

/// R1 in `mode`.
pub fn r1(ctx: &mut Ctx, mode: Mode, addr: &PciAddress) -> BenchResult {
    // The device's buffer holds the pattern every first DMA checks.
    {
        let o = open(mode, addr)?;
        if let Holder::Group(c) = &o.holder
            && !c.supports_update_vaddr()?
        {
            o.close()?;
            ctx.emit(
                Record::new("R1", "restart to first verified DMA vs fresh open", mode.to_string())
                    .skip("no VFIO_UPDATE_VADDR here (iommufd's compat container): use cdev mode"),
            );
            return Ok(());
        }
        o.buf.write(0, &pattern())?;
        o.edu.dma(Direction::ToDevice, IOVA, CHUNK as u64, &o.irq)?;
        o.close()?;
    }
    let (primary_sock, child_sock) =
        rustix::net::socketpair(AddressFamily::UNIX, SocketType::SEQPACKET, SocketFlags::CLOEXEC, None)?;
    let a = *addr;
    // SAFETY: the benchmark is single-threaded; the child only uses its socket and what it
    // receives, and leaves with _exit without running the parent's destructors.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()).into());
    }
    if pid == 0 {
        drop(primary_sock);
        let code = match successor(child_sock.as_fd(), a, mode) {
            Ok(()) => 0,
            Err(e) => {
                println!("    successor: {e}");
                1
            }
        };
        // SAFETY: ends the forked child at once.
        unsafe { libc::_exit(code) };
    }
    drop(child_sock);
    let sock = primary_sock.as_fd();
    let plan = ctx.plan(21, 1);
    let result = rounds(plan, sock, mode, addr);
    drop(primary_sock);
    let mut status = 0;
    // SAFETY: waits for the child forked above.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    let (t, ready) = result?;
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        return Err(format!("the successor process failed (status {status:#x})").into());
    }
    ctx.emit(
        Record::new(
            "R1",
            "restart: successor's fds to first verified DMA vs fresh open, map, MSI, DMA",
            mode.to_string(),
        )
        .compare(plan, ("restart", &t[0]), ("fresh open", &t[1]), 1)
        .note("both wait for one edu DMA (a QEMU timer), which dominates"),
    );
    ctx.emit(
        Record::new(
            "R1",
            "restart: successor's fds to ready to DMA vs fresh open, map, MSI (the DMA left out)",
            mode.to_string(),
        )
        .compare(plan, ("restart", &ready[0]), ("fresh open", &ready[1]), 1),
    );
    Ok(())
}
