//! P6 open-to-ready: a device from nothing to "BAR0 mapped, MSI enabled" through vfio-rs vs the
//! bare ioctl sequence, and a secondary process made ready from fds a primary passed vs a fresh
//! open.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags};
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};
use vfio_core::{EventFd, FdKind, Mode, PciAddress};
use vfio_pci::PciDevice;
use vfio_sys as sys;

use crate::Ctx;
use crate::fixtures::{ioctl, ioctl_int, raw_open};
use crate::measure::{BenchResult, Goal, Record, Side, fmt_ns, interleave};

/// What a ready device holds; dropping it closes everything.
struct Ready {
    // Drop order: mapping, device, container, eventfd.
    _bar: vfio_pci::Bar,
    _pci: PciDevice,
    _container: Option<Box<dyn vfio_core::Container>>,
    _irq: EventFd,
}

/// The steps of open-to-ready, timed separately: container, device assigned to it, BAR0
/// mapped, MSI enabled.
type Steps = [Duration; 4];

/// The names of [`Steps`].
const STEPS: [&str; 4] = ["container", "assign", "BAR0 mmap", "MSI"];

/// Times the steps between the instants in `marks`.
fn steps(marks: [Instant; 5]) -> Steps {
    std::array::from_fn(|i| marks[i + 1] - marks[i])
}

/// vfio-rs: a fresh container, the device assigned to it, BAR0 mapped, MSI enabled.
fn ours_ready(mode: Mode, addr: &PciAddress) -> BenchResult<(Steps, Ready)> {
    let t0 = Instant::now();
    let container: Box<dyn vfio_core::Container> = match mode {
        Mode::GROUP => Box::new(vfio_group::Container::open(vfio_core::Addressing::Iova)?),
        Mode::CDEV => Box::new(vfio_cdev::Container::new()?),
        _ => return Err(format!("{mode} mode is not benchmarked").into()),
    };
    let t1 = Instant::now();
    let pci = PciDevice::open_in(container.as_ref(), addr)?;
    let t2 = Instant::now();
    let bar = pci.bar(0)?;
    let t3 = Instant::now();
    let irq = EventFd::new()?;
    pci.enable_msi([&irq])?;
    let t4 = Instant::now();
    Ok((
        steps([t0, t1, t2, t3, t4]),
        Ready {
            _bar: bar,
            _pci: pci,
            _container: Some(container),
            _irq: irq,
        },
    ))
}

/// The bare ioctl sequence's objects; dropping it unmaps and closes everything.
struct RawReady {
    map: (*mut libc::c_void, usize),
    // Drop order (after the unmap in Drop): device, group, container/iommufd, eventfd.
    _device: OwnedFd,
    _group: Option<OwnedFd>,
    _container: OwnedFd,
    _irq: OwnedFd,
}

impl Drop for RawReady {
    fn drop(&mut self) {
        // SAFETY: exactly the BAR mapping made by `raw_ready`, used by nobody else.
        unsafe { libc::munmap(self.map.0, self.map.1) };
    }
}

/// `VFIO_DEVICE_GET_REGION_INFO` of BAR0, mmap of it, an eventfd and `VFIO_DEVICE_SET_IRQS`
/// for MSI vector 0: the part both modes share.
fn raw_bar_and_msi(
    device: BorrowedFd<'_>,
    marks: &mut [Instant; 5],
) -> BenchResult<((*mut libc::c_void, usize), OwnedFd)> {
    let dev = device.as_raw_fd();
    let mut info = sys::vfio_region_info {
        argsz: std::mem::size_of::<sys::vfio_region_info>() as u32,
        index: sys::VFIO_PCI_BAR0_REGION_INDEX,
        ..Default::default()
    };
    // SAFETY: VFIO_DEVICE_GET_REGION_INFO takes a vfio_region_info with argsz set.
    unsafe { ioctl(dev, sys::VFIO_DEVICE_GET_REGION_INFO, &mut info)? };
    let len = info.size as usize;
    // SAFETY: a fresh shared mapping of the device fd at a kernel-chosen address.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            dev,
            info.offset as libc::off_t,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(format!("mmap BAR0: {}", std::io::Error::last_os_error()).into());
    }
    marks[3] = Instant::now();
    // SAFETY: eventfd takes no pointers.
    let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if efd < 0 {
        // SAFETY: the mapping made above.
        unsafe { libc::munmap(p, len) };
        return Err(format!("eventfd: {}", std::io::Error::last_os_error()).into());
    }
    // SAFETY: a new fd that nothing else owns.
    let efd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(efd) };
    // vfio_irq_set (20 bytes) + one s32 eventfd, in u32 words for alignment.
    let mut set = [0u32; 6];
    set[0] = 24;
    set[1] = sys::VFIO_IRQ_SET_DATA_EVENTFD | sys::VFIO_IRQ_SET_ACTION_TRIGGER;
    set[2] = sys::VFIO_PCI_MSI_IRQ_INDEX;
    set[3] = 0;
    set[4] = 1;
    set[5] = efd.as_raw_fd() as u32;
    // SAFETY: a vfio_irq_set header followed by exactly the one eventfd its count announces.
    if let Err(e) = unsafe { ioctl(dev, sys::VFIO_DEVICE_SET_IRQS, &mut set) } {
        // SAFETY: the mapping made above.
        unsafe { libc::munmap(p, len) };
        return Err(format!("VFIO_DEVICE_SET_IRQS: {e}").into());
    }
    marks[4] = Instant::now();
    Ok(((p, len), efd))
}

/// The bare sequence in group mode: container, group number from sysfs, group, type1v2, device
/// fd, then BAR0 and MSI.
fn raw_ready_group(addr: &PciAddress) -> BenchResult<(Steps, RawReady)> {
    let mut marks = [Instant::now(); 5];
    let container = raw_open("/dev/vfio/vfio")?;
    let c = container.as_raw_fd();
    // SAFETY: VFIO_GET_API_VERSION takes no argument.
    if unsafe { ioctl_int(c, sys::VFIO_GET_API_VERSION, 0)? } != sys::VFIO_API_VERSION as i32 {
        return Err("unexpected VFIO API version".into());
    }
    marks[1] = Instant::now();
    let link = std::fs::read_link(format!("/sys/bus/pci/devices/{addr}/iommu_group"))?;
    let group_no = link
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or("bad iommu_group link")?
        .to_owned();
    let group = raw_open(&format!("/dev/vfio/{group_no}"))?;
    let g = group.as_raw_fd();
    let mut status = sys::vfio_group_status {
        argsz: std::mem::size_of::<sys::vfio_group_status>() as u32,
        flags: 0,
    };
    // SAFETY: VFIO_GROUP_GET_STATUS takes a vfio_group_status with argsz set.
    unsafe { ioctl(g, sys::VFIO_GROUP_GET_STATUS, &mut status)? };
    if status.flags & sys::VFIO_GROUP_FLAGS_VIABLE == 0 {
        return Err("group not viable".into());
    }
    let mut cfd = c;
    // SAFETY: VFIO_GROUP_SET_CONTAINER takes a pointer to the container fd.
    unsafe { ioctl(g, sys::VFIO_GROUP_SET_CONTAINER, &mut cfd)? };
    // SAFETY: VFIO_SET_IOMMU takes the IOMMU type as an integer argument.
    unsafe { ioctl_int(c, sys::VFIO_SET_IOMMU, sys::VFIO_TYPE1v2_IOMMU as libc::c_ulong)? };
    let name = CString::new(addr.to_string())?;
    // SAFETY: VFIO_GROUP_GET_DEVICE_FD takes a NUL-terminated device name, alive for the call.
    let d = unsafe { ioctl_int(g, sys::VFIO_GROUP_GET_DEVICE_FD, name.as_ptr() as libc::c_ulong)? };
    // SAFETY: a new fd that nothing else owns.
    let device = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(d) };
    marks[2] = Instant::now();
    let (map, irq) = raw_bar_and_msi(device.as_fd(), &mut marks)?;
    Ok((
        steps(marks),
        RawReady {
            map,
            _device: device,
            _group: Some(group),
            _container: container,
            _irq: irq,
        },
    ))
}

/// The bare sequence in cdev mode: iommufd, IOAS, cdev name from sysfs, cdev, bind, attach, then
/// BAR0 and MSI.
fn raw_ready_cdev(addr: &PciAddress) -> BenchResult<(Steps, RawReady)> {
    let mut marks = [Instant::now(); 5];
    let iommufd = raw_open("/dev/iommu")?;
    let mut alloc = iommufd_sys::iommu_ioas_alloc {
        size: std::mem::size_of::<iommufd_sys::iommu_ioas_alloc>() as u32,
        ..Default::default()
    };
    // SAFETY: IOMMU_IOAS_ALLOC takes an iommu_ioas_alloc.
    unsafe { ioctl(iommufd.as_raw_fd(), iommufd_sys::IOMMU_IOAS_ALLOC, &mut alloc)? };
    marks[1] = Instant::now();
    let dir = format!("/sys/bus/pci/devices/{addr}/vfio-dev");
    let name = std::fs::read_dir(&dir)?.next().ok_or("no vfio-dev entry")??.file_name();
    let device = raw_open(&format!("/dev/vfio/devices/{}", name.to_string_lossy()))?;
    let mut bind = sys::vfio_device_bind_iommufd {
        argsz: std::mem::size_of::<sys::vfio_device_bind_iommufd>() as u32,
        iommufd: iommufd.as_raw_fd(),
        ..Default::default()
    };
    // SAFETY: VFIO_DEVICE_BIND_IOMMUFD takes a vfio_device_bind_iommufd (no token pointer).
    unsafe { ioctl(device.as_raw_fd(), sys::VFIO_DEVICE_BIND_IOMMUFD, &mut bind)? };
    let mut attach = sys::vfio_device_attach_iommufd_pt {
        argsz: std::mem::size_of::<sys::vfio_device_attach_iommufd_pt>() as u32,
        pt_id: alloc.out_ioas_id,
        ..Default::default()
    };
    // SAFETY: VFIO_DEVICE_ATTACH_IOMMUFD_PT takes a vfio_device_attach_iommufd_pt.
    unsafe { ioctl(device.as_raw_fd(), sys::VFIO_DEVICE_ATTACH_IOMMUFD_PT, &mut attach)? };
    marks[2] = Instant::now();
    let (map, irq) = raw_bar_and_msi(device.as_fd(), &mut marks)?;
    Ok((
        steps(marks),
        RawReady {
            map,
            _device: device,
            _group: None,
            _container: iommufd,
            _irq: irq,
        },
    ))
}

/// Median of each step over the operations recorded in `all`.
fn step_medians(all: &[Steps]) -> [f64; 4] {
    std::array::from_fn(|i| {
        let mut v: Vec<f64> = all.iter().map(|s| s[i].as_nanos() as f64).collect();
        v.sort_by(f64::total_cmp);
        crate::measure::quantile(&v, 0.5)
    })
}

/// P6 open-to-ready in `mode`, vfio-rs vs the bare ioctl sequence, with the median of each step
/// in the note.
pub fn p6_open(ctx: &mut Ctx, mode: Mode, addr: &PciAddress) -> BenchResult {
    let plan = ctx.plan(101, 2);
    let iters = 1;
    let (mut ours_steps, mut raw_steps) = (Vec::new(), Vec::new());
    let mut sides = [
        Side::new("vfio-rs", iters, |n| {
            let mut total = Duration::ZERO;
            for _ in 0..n {
                let (t, ready) = ours_ready(mode, addr)?;
                total += t.iter().sum::<Duration>();
                ours_steps.push(t);
                drop(ready);
            }
            Ok(total)
        }),
        Side::new("raw ioctl", iters, |n| {
            let mut total = Duration::ZERO;
            for _ in 0..n {
                let (t, ready) = match mode {
                    Mode::GROUP => raw_ready_group(addr)?,
                    _ => raw_ready_cdev(addr)?,
                };
                total += t.iter().sum::<Duration>();
                raw_steps.push(t);
                drop(ready);
            }
            Ok(total)
        }),
    ];
    let t = interleave(plan, &mut sides)?;
    drop(sides);
    let (o, r) = (step_medians(&ours_steps), step_medians(&raw_steps));
    let breakdown: Vec<String> = (0..4)
        .map(|i| format!("{} {} vs {}", STEPS[i], fmt_ns(o[i]), fmt_ns(r[i])))
        .collect();
    ctx.emit(
        Record::new("P6", "open to ready (assign, BAR0 mmap, MSI on)", mode.to_string())
            .goal(Goal::AtMost(1.02))
            .compare(plan, ("vfio-rs", &t[0]), ("raw ioctl", &t[1]), iters)
            .note(format!("median steps, vfio-rs vs raw: {}", breakdown.join(", "))),
    );
    Ok(())
}

/// The secondary process: for each message of fds from the primary, becomes ready (adopts the
/// container and device, maps BAR0, and either adopts the MSI eventfd it was sent or points the
/// MSI at an eventfd of its own), reports the time from the message's arrival to ready, then
/// lets everything go. Returns when the primary closes the socket.
fn secondary(sock: BorrowedFd<'_>, addr: PciAddress, mode: Mode) -> BenchResult {
    loop {
        let mut fds = [PollFd::new(&sock, PollFlags::IN)];
        rustix::event::poll(&mut fds, None)?;
        let t = Instant::now();
        let Ok(got) = vfio_core::recv_fds(sock) else {
            return Ok(()); // the primary is done
        };
        let t_recv = t.elapsed();
        let mut container: Option<vfio_core::Owner> = None;
        let (mut device, mut irq) = (None, None);
        for item in got {
            match item.kind {
                FdKind::Container => {
                    container = Some(std::sync::Arc::new(vfio_group::Container::from_fd(
                        item.fd,
                        vfio_core::Addressing::Iova,
                    )?));
                }
                FdKind::Iommufd => container = Some(vfio_cdev::Iommufd::from_fd(item.fd)),
                FdKind::Device => device = Some(item.fd),
                FdKind::Other => irq = Some(EventFd::from_fd(item.fd)),
                _ => {}
            }
        }
        let device = vfio_core::Device::from_fd(device.ok_or("no device fd")?, addr.to_string(), container);
        let pci = PciDevice::from_device(device, addr, mode)?;
        let t_device = t.elapsed();
        let bar = pci.bar(0)?;
        let t_bar = t.elapsed();
        let irq = match irq {
            Some(passed) => passed,
            None => {
                let own = EventFd::new()?;
                pci.enable_msi([&own])?;
                own
            }
        };
        let marks = [t_recv, t_device, t_bar, t.elapsed()];
        drop((bar, pci, irq));
        let mut msg = [0u8; 32];
        for (i, m) in marks.iter().enumerate() {
            msg[i * 8..i * 8 + 8].copy_from_slice(&(m.as_nanos() as u64).to_ne_bytes());
        }
        rustix::net::send(sock, &msg, SendFlags::NOSIGNAL)?;
    }
}

/// P6 secondary process in `mode`: a fresh open-to-ready vs a forked secondary becoming ready
/// from the fds the primary sends it. The primary opens the device and enables MSI (untimed)
/// before each send; the secondary gets the container and device fds, and either the MSI
/// eventfd too or not (then it points the MSI at its own eventfd).
pub fn p6_secondary(ctx: &mut Ctx, mode: Mode, addr: &PciAddress) -> BenchResult {
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
        let code = match secondary(child_sock.as_fd(), a, mode) {
            Ok(()) => 0,
            Err(e) => {
                println!("    secondary: {e}");
                1
            }
        };
        // SAFETY: ends the forked child at once.
        unsafe { libc::_exit(code) };
    }
    drop(child_sock);
    let result = p6_secondary_primary(ctx, mode, addr, primary_sock.as_fd());
    drop(primary_sock);
    let mut status = 0;
    // SAFETY: waits for the child forked above.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    result?;
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        return Err(format!("the secondary process failed (status {status:#x})").into());
    }
    Ok(())
}

/// The secondary's steps: fds received, device adopted (`PciDevice::from_device`), BAR0
/// mapped, ready (MSI eventfd adopted or pointed at).
const SECONDARY_STEPS: [&str; 4] = ["recvmsg", "adopt device", "BAR0 mmap", "MSI"];

/// `n` rounds of: the primary opens (untimed), sends, and collects the secondary's step times.
fn secondary_rounds(
    sock: BorrowedFd<'_>,
    mode: Mode,
    addr: &PciAddress,
    pass_irq: bool,
    n: u64,
    steps_out: &mut Vec<Steps>,
) -> BenchResult<Duration> {
    let mut total = Duration::ZERO;
    for _ in 0..n {
        let primary = primary_open(mode, addr)?;
        send_ready(sock, mode, &primary, pass_irq)?;
        let mut buf = [0u8; 32];
        let (got, _) = rustix::net::recv(sock, &mut buf, RecvFlags::empty())?;
        if got != 32 {
            return Err("the secondary process stopped".into());
        }
        let at =
            |i: usize| Duration::from_nanos(u64::from_ne_bytes(buf[i * 8..i * 8 + 8].try_into().unwrap_or_default()));
        let marks = [Duration::ZERO, at(0), at(1), at(2), at(3)];
        steps_out.push(std::array::from_fn(|i| marks[i + 1].saturating_sub(marks[i])));
        total += at(3);
        drop(primary);
    }
    Ok(total)
}

fn p6_secondary_primary(ctx: &mut Ctx, mode: Mode, addr: &PciAddress, sock: BorrowedFd<'_>) -> BenchResult {
    let plan = ctx.plan(101, 2);
    let iters = 1;
    let (mut passed_steps, mut own_steps) = (Vec::new(), Vec::new());
    let mut sides = [
        Side::new("fresh open", iters, |n| {
            let mut total = Duration::ZERO;
            for _ in 0..n {
                let (t, ready) = ours_ready(mode, addr)?;
                total += t.iter().sum::<Duration>();
                drop(ready);
            }
            Ok(total)
        }),
        Side::new("secondary, MSI eventfd passed", iters, |n| {
            secondary_rounds(sock, mode, addr, true, n, &mut passed_steps)
        }),
        Side::new("secondary, own MSI eventfd", iters, |n| {
            secondary_rounds(sock, mode, addr, false, n, &mut own_steps)
        }),
    ];
    let t = interleave(plan, &mut sides)?;
    drop(sides);
    let breakdown = |all: &[Steps]| {
        let m = step_medians(all);
        (0..4)
            .map(|i| format!("{} {}", SECONDARY_STEPS[i], fmt_ns(m[i])))
            .collect::<Vec<_>>()
            .join(", ")
    };
    ctx.emit(
        Record::new("P6", "fresh open vs secondary ready from passed fds", mode.to_string())
            .goal(Goal::AtLeast(10.0))
            .compare(plan, ("fresh open", &t[0]), ("secondary", &t[1]), iters)
            .note(format!(
                "secondary: from the fds' arrival (container, device, MSI eventfd) to BAR0 mapped, waiting on the MSI; median steps: {}",
                breakdown(&passed_steps)
            )),
    );
    ctx.emit(
        Record::new(
            "P6",
            "fresh open vs secondary pointing the MSI at its own eventfd",
            mode.to_string(),
        )
        .compare(plan, ("fresh open", &t[0]), ("secondary", &t[2]), iters)
        .note(format!(
            "as above, plus a VFIO_DEVICE_SET_IRQS replacing the primary's eventfd; median steps: {}",
            breakdown(&own_steps)
        )),
    );
    Ok(())
}

/// What the primary holds while a secondary uses the device.
struct Primary {
    pci: PciDevice,
    _container: Box<dyn vfio_core::Container>,
    /// The fd the secondary adopts as its container: the `/dev/vfio/vfio` fd (group) or the
    /// iommufd (cdev).
    container_fd: OwnedFd,
    irq: EventFd,
}

/// The primary's open: container, device and MSI (no BAR mapping: the secondary makes its own).
fn primary_open(mode: Mode, addr: &PciAddress) -> BenchResult<Primary> {
    let (container, container_fd): (Box<dyn vfio_core::Container>, OwnedFd) = match mode {
        Mode::GROUP => {
            let fd = vfio_core::open_node(std::path::Path::new("/dev/vfio/vfio"))?;
            (
                Box::new(vfio_group::Container::from_fd(
                    fd.try_clone()?,
                    vfio_core::Addressing::Iova,
                )?),
                fd,
            )
        }
        _ => {
            let c = vfio_cdev::Container::new()?;
            let fd = c.ioas().iommufd().as_fd().try_clone_to_owned()?;
            (Box::new(c), fd)
        }
    };
    let pci = PciDevice::open_in(container.as_ref(), addr)?;
    let irq = EventFd::new()?;
    pci.enable_msi([&irq])?;
    Ok(Primary {
        pci,
        _container: container,
        container_fd,
        irq,
    })
}

fn send_ready(sock: BorrowedFd<'_>, mode: Mode, p: &Primary, pass_irq: bool) -> BenchResult {
    let name = p.pci.address().to_string();
    let kind = if mode == Mode::GROUP {
        FdKind::Container
    } else {
        FdKind::Iommufd
    };
    let mut items = vec![
        (kind, "container", p.container_fd.as_fd()),
        (FdKind::Device, name.as_str(), p.pci.device().as_fd()),
    ];
    if pass_irq {
        items.push((FdKind::Other, "msi0", p.irq.as_fd()));
    }
    vfio_core::send_fds(sock, &items)?;
    Ok(())
}

/// What single steps of an open cost here: the sysfs lookups and the info ioctls vfio-rs does
/// on top of the bare sequence (informational rows, one operation each).
pub fn p6_step_costs(ctx: &mut Ctx, mode: Mode, addr: &PciAddress) -> BenchResult {
    let f = crate::fixtures::Ours::open(mode, addr)?;
    let dir = std::path::PathBuf::from(format!("/sys/bus/pci/devices/{addr}"));
    let sysfs = vfio_core::Sysfs::default();
    let device = f.pci.device();
    let plan = ctx.plan(61, 5);
    let iters = 4;
    type Op<'a> = Box<dyn Fn() -> BenchResult + 'a>;
    let ops: Vec<(&'static str, Op<'_>)> = vec![
        (
            "stat of the device's sysfs directory",
            Box::new(|| Ok(std::fs::metadata(&dir).map(drop)?)),
        ),
        (
            "readlink of its driver",
            Box::new(|| Ok(std::fs::read_link(dir.join("driver")).map(drop)?)),
        ),
        (
            "readlink of its iommu_group",
            Box::new(|| Ok(std::fs::read_link(dir.join("iommu_group")).map(drop)?)),
        ),
        (
            "readdir of vfio-dev (the bare sequence's lookup)",
            Box::new(|| {
                Ok(std::fs::read_dir(dir.join("vfio-dev"))?
                    .next()
                    .ok_or("empty vfio-dev")?
                    .map(drop)?)
            }),
        ),
        (
            "Sysfs::vfio_cdev (readdir, read dev)",
            Box::new(|| Ok(sysfs.vfio_cdev(addr).map(drop)?)),
        ),
        ("VFIO_DEVICE_GET_INFO", Box::new(|| Ok(device.info().map(drop)?))),
        (
            "VFIO_DEVICE_GET_REGION_INFO (config)",
            Box::new(|| Ok(device.region_info(vfio_pci::CONFIG_REGION).map(drop)?)),
        ),
    ];
    let mut sides: Vec<Side<'_>> = ops
        .iter()
        .map(|(name, op)| {
            Side::new(name, iters, move |n| {
                let t = Instant::now();
                for _ in 0..n {
                    op()?;
                }
                Ok(t.elapsed())
            })
        })
        .collect();
    let t = interleave(plan, &mut sides)?;
    drop(sides);
    for (i, (name, _)) in ops.iter().enumerate() {
        ctx.emit(Record::new("P6", format!("one step: {name}"), mode.to_string()).single(plan, (name, &t[i]), iters));
    }
    Ok(())
}
