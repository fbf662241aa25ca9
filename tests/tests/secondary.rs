//! A secondary process works with what a primary opened: the primary serves fd requests on a
//! unix socket (`vfio_core::fdpass`), a forked child asks for the edu device and receives the
//! container and group fds (group and no-IOMMU modes) or the iommufd and IOAS id (cdev mode)
//! with the device fd, adopts them, maps memory of its own and has the device copy it by DMA.
//! Run in every mode the kernel offers.

use std::os::fd::AsFd;
use std::process::ExitCode;
use std::sync::Arc;

use rustix::net::{AddressFamily, SocketFlags, SocketType};
use vfio_core::{
    Addressing, DmaAccess, DmaBuffer, DmaMapping, Errno, EventFd, FdKind, FdRequest, Interface, Mode, PciAddress,
    SharedFd, Sysfs,
};
use vfio_pci::PciDevice;
use vfio_tests::edu::{Direction, Edu};
use vfio_tests::{Outcome, TestResult, device_from_env, ensure, skip};

/// Where the child maps its buffer (below edu's 28-bit DMA mask).
const CHILD_IOVA: u64 = 0x60_0000;
const LEN: usize = 2000;

/// What the primary opened: a concrete container of the mode (its fds are what it passes).
enum Primary {
    Group(vfio_group::Container),
    Cdev(vfio_cdev::Container),
}

impl Primary {
    fn open(mode: Mode) -> vfio_core::Result<Self> {
        Ok(match (mode.interface(), mode.addressing()) {
            (Interface::Group, addressing) => Primary::Group(vfio_group::Container::open(addressing)?),
            (Interface::Cdev, Addressing::Iova) => Primary::Cdev(vfio_cdev::Container::new()?),
            (Interface::Cdev, Addressing::Physical) => Primary::Cdev(vfio_cdev::Container::new_noiommu()?),
        })
    }

    fn container(&self) -> &dyn vfio_core::Container {
        match self {
            Primary::Group(c) => c,
            Primary::Cdev(c) => c,
        }
    }
}

/// The child: asks for the device, adopts the container it comes with, maps its own memory,
/// DMAs through it and unmaps.
fn secondary(
    sock: std::os::fd::BorrowedFd<'_>,
    addr: PciAddress,
    mode: Mode,
) -> Result<(), Box<dyn std::error::Error>> {
    // Something the primary does not have: a refusal that names it, not a hang.
    let missing = FdRequest {
        kind: FdKind::Group,
        name: "4242".into(),
    };
    match vfio_core::request(sock, &missing) {
        Err(vfio_core::Error::InvalidArgument { reason, .. }) if reason.contains("4242") => {}
        other => return Err(format!("request for a missing group gave {other:?}").into()),
    }
    let got = vfio_core::request(
        sock,
        &FdRequest {
            kind: FdKind::Device,
            name: addr.to_string(),
        },
    )?;
    let mut got: Vec<Option<SharedFd>> = got.into_iter().map(Some).collect();
    let mut take = |kind: FdKind| {
        got.iter_mut()
            .find(|s| s.as_ref().is_some_and(|s| s.kind == kind))
            .and_then(Option::take)
    };
    let device = take(FdKind::Device).ok_or("no device fd in the answer")?;
    // The group fd comes with a container: it keeps the group in the container even if the
    // primary closes its own, and it is what a hot reset would be given. Held until the end.
    let mut _group = None;
    let container: Arc<dyn vfio_core::Container> = if let Some(c) = take(FdKind::Container) {
        let group = take(FdKind::Group).ok_or("a container came without its group")?;
        ensure!(group.name.parse::<u32>().is_ok(), "group fd named {:?}", group.name);
        _group = Some(group);
        let addressing = if c.name == "noiommu" {
            Addressing::Physical
        } else {
            Addressing::Iova
        };
        Arc::new(vfio_group::Container::from_fd(c.fd, addressing)?)
    } else if let Some(i) = take(FdKind::Iommufd) {
        let mut words = i.name.split_whitespace();
        ensure!(words.next() == Some("ioas"), "iommufd named {:?}", i.name);
        let id: u32 = words.next().ok_or("no IOAS id")?.parse()?;
        let (id, other) = (vfio_cdev::IoasId::from(id), vfio_cdev::IoasId::from(id + 1000));
        let addressing = if words.next() == Some("noiommu") {
            Addressing::Physical
        } else {
            Addressing::Iova
        };
        let iommufd = vfio_cdev::Iommufd::from_fd(i.fd);
        // An id that is not an IOAS of this iommufd is refused by the kernel.
        match vfio_cdev::Ioas::adopt(iommufd.clone(), other) {
            Err(e) if e.errno() == Some(Errno::NOENT) => {}
            res => return Err(format!("adopting IOAS {other} gave {res:?}, expected ENOENT").into()),
        }
        let ioas = vfio_cdev::Ioas::adopt(iommufd, id)?;
        Arc::new(vfio_cdev::Container::from_ioas(Arc::new(ioas), addressing)?)
    } else {
        return Err("neither a container nor an iommufd in the answer".into());
    };
    ensure!(
        container.mode() == mode,
        "adopted a {} container, primary is {mode}",
        container.mode()
    );
    let dev = vfio_core::Device::from_fd(device.fd, addr.to_string(), None);
    let edu = Edu::new(PciDevice::from_device(dev, addr, mode)?)?;
    edu.pci.enable_bus_master()?;
    let irq = EventFd::new()?;
    edu.pci.enable_msi([&irq])?;
    // Memory only this process has: the primary never saw it.
    let buf = DmaBuffer::new(4096)?;
    let pattern: Vec<u8> = (0..LEN as u32).map(|i| (i * 13 + 5) as u8).collect();
    buf.write(0, &pattern)?;
    let map = DmaMapping::new(container.as_ref(), &buf, CHILD_IOVA, DmaAccess::READ_WRITE)?;
    edu.dma(Direction::ToDevice, map.device_addr(), LEN as u64, &irq)?;
    edu.dma(Direction::FromDevice, map.device_addr() + 2048, LEN as u64, &irq)?;
    let mut back = vec![0u8; LEN];
    buf.read(2048, &mut back)?;
    ensure!(back == pattern, "the device did not copy the child's bytes");
    edu.pci.disable_irq(vfio_pci::MSI_IRQ)?;
    drop(map);
    Ok(())
}

fn secondary_adopts_passed_fds_and_dmas_its_own_memory() -> TestResult {
    let addr = match device_from_env("VFIO_TEST_EDU") {
        Err(why) => return skip(why),
        Ok(a) => a,
    };
    let modes: Vec<Mode> = Mode::ALL.into_iter().filter(|&m| vfio_tests::offered(m)).collect();
    if modes.is_empty() {
        return skip("no VFIO mode is offered by this kernel");
    }
    let mut report = Vec::new();
    for mode in modes {
        let primary = Primary::open(mode)?;
        let dev = PciDevice::open_in(primary.container(), &addr)?;
        let group_id = Sysfs::default().iommu_group(&addr)?;
        let (parent_sock, child_sock) =
            rustix::net::socketpair(AddressFamily::UNIX, SocketType::SEQPACKET, SocketFlags::CLOEXEC, None)?;
        // SAFETY: the test binary runs one test at a time on its main thread.
        let pid = unsafe { vfio_tests::fork_child(|| secondary(child_sock.as_fd(), addr, mode)) }?;
        // The child holds the only other end now: its exit ends the request loop.
        drop(child_sock);
        let mut served = Vec::new();
        while let Some(req) = vfio_core::recv_request(parent_sock.as_fd())? {
            if req.kind != FdKind::Device || req.name != addr.to_string() {
                vfio_core::send_refusal(parent_sock.as_fd(), &format!("no {:?} named {}", req.kind, req.name))?;
                continue;
            }
            let name = addr.to_string();
            match &primary {
                Primary::Group(c) => {
                    let group = c.group(group_id).ok_or("the primary's container lost the group")?;
                    let gname = group_id.to_string();
                    let kind = if mode == Mode::GROUP_NOIOMMU {
                        "noiommu"
                    } else {
                        "iommu"
                    };
                    vfio_core::send_fds(
                        parent_sock.as_fd(),
                        &[
                            (FdKind::Container, kind, c.as_fd()),
                            (FdKind::Group, &gname, group.as_fd()),
                            (FdKind::Device, &name, dev.device().as_fd()),
                        ],
                    )?;
                    served.push("container, group and device fds");
                }
                Primary::Cdev(c) => {
                    let ioas = format!("ioas {}{}", c.ioas().id(), if c.is_noiommu() { " noiommu" } else { "" });
                    vfio_core::send_fds(
                        parent_sock.as_fd(),
                        &[
                            (FdKind::Iommufd, &ioas, c.ioas().iommufd().as_fd()),
                            (FdKind::Device, &name, dev.device().as_fd()),
                        ],
                    )?;
                    served.push("iommufd (with the IOAS id) and device fds");
                }
            }
        }
        vfio_tests::wait_child(pid).map_err(|e| format!("{mode}: {e}"))?;
        ensure!(served.len() == 1, "{mode}: served {} device requests", served.len());
        // The child unmapped before it left: its IOVA is free in the shared container again.
        let buf = DmaBuffer::new(4096)?;
        let again = DmaMapping::new(primary.container(), &buf, CHILD_IOVA, DmaAccess::READ_WRITE)
            .map_err(|e| format!("{mode}: the child's IOVA {CHILD_IOVA:#x} is still taken: {e}"))?;
        drop(again);
        ensure!(
            dev.bar(0)?.read32(0)? == vfio_tests::edu::EDU_ID,
            "{mode}: edu ID changed after the child"
        );
        report.push(format!("{mode}: child got {}", served[0]));
    }
    println!(
        "    {}; each child mapped its own buffer and verified a DMA round trip",
        report.join("; ")
    );
    Ok(Outcome::Pass)
}

fn main() -> ExitCode {
    vfio_tests::run(&[(
        "secondary_adopts_passed_fds_and_dmas_its_own_memory",
        secondary_adopts_passed_fds_and_dmas_its_own_memory,
    )])
}
