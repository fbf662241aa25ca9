//! Prints the kernel's raw replies for PCI devices bound to vfio-pci, as hex: the buffers
//! vfio-rs parses (device info, every region's info with its capability chain, the hot-reset
//! info, config space, and the type1 container's `VFIO_IOMMU_GET_INFO`). Useful to see what a
//! device really reports, and the source of the fuzzers' seed corpora (see `fuzz/README.md`).
//!
//! Usage: `dump_replies [PCI address...]`; the addresses default to `$VFIO_TEST_EDU`,
//! `$VFIO_TEST_NVME` and `$VFIO_TEST_NVME_HOTRESET` (behind a root port: a real hot-reset
//! reply). Group mode only (the IOMMU info is a type1 container's), as root.
//!
//! Each buffer is printed as
//!
//! ```text
//! @@SEED-BEGIN <fuzz target> <name> <length in bytes>
//! <hex, 32 bytes a line>
//! @@SEED-END
//! ```
//!
//! and a buffer the kernel would not give as `@@SEED-NONE <fuzz target> <name> <why>`.

use std::os::fd::AsFd;
use std::path::Path;
use std::process::ExitCode;

use vfio_core::ioctl::{self, requests as req};
use vfio_core::{Container as _, Errno, PciAddress, Sysfs};
use vfio_sys as sys;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> ExitCode {
    match run() {
        Ok(n) => {
            println!("dump: ok: {n} buffers");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("dump: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Res<usize> {
    let mut addrs: Vec<String> = std::env::args().skip(1).collect();
    if addrs.is_empty() {
        addrs = [
            "VFIO_TEST_EDU",
            "VFIO_TEST_NVME",
            "VFIO_TEST_NVME_HOTRESET",
            "VFIO_TEST_EDU_RESET",
        ]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .filter(|a| !a.is_empty())
        .collect();
    }
    if addrs.is_empty() {
        return Err("no device: pass PCI addresses or set VFIO_TEST_EDU / VFIO_TEST_NVME".into());
    }
    let mut n = 0;
    for a in addrs {
        n += dump_device(&a.parse()?)?;
    }
    Ok(n)
}

/// A short name for the device: `edu`, `nvme`, or its address.
fn short_name(addr: &PciAddress) -> String {
    match Sysfs::default().identity(addr).map(|i| (i.vendor, i.device)) {
        Ok((0x1234, 0x11e8)) => "edu".into(),
        Ok((0x1b36, 0x0010)) => "nvme".into(),
        _ => addr.to_string().replace([':', '.'], "_"),
    }
}

fn print_seed(target: &str, name: &str, bytes: &[u8]) {
    println!("@@SEED-BEGIN {target} {name} {}", bytes.len());
    for line in bytes.chunks(32) {
        let hex: String = line.iter().map(|b| format!("{b:02x}")).collect();
        println!("{hex}");
    }
    println!("@@SEED-END");
}

fn dump_device(addr: &PciAddress) -> Res<usize> {
    let name = short_name(addr);
    let mut n = 0;
    // A container of our own, with a second fd to ask VFIO_IOMMU_GET_INFO for the raw reply.
    let fd = vfio_core::open_node(Path::new("/dev/vfio/vfio"))?;
    let raw_container = fd.try_clone()?;
    let container = vfio_group::Container::from_fd(fd, vfio_core::Addressing::Iova)?;
    let device = container.assign_device(addr)?;

    // SAFETY: a VFIO container fd.
    let container_fd = unsafe { ioctl::Fd::<ioctl::kind::Container>::new_unchecked(raw_container.as_fd()) };
    // A container that has a group and an IOMMU type (assign_device set both).
    match ioctl::query::<req::IommuGetInfo>(container_fd, &Default::default(), || name.clone()) {
        Ok(reply) => {
            print_seed("iommu_info", &name, reply.bytes());
            n += 1;
        }
        Err(e) => println!("@@SEED-NONE iommu_info {name} {e}"),
    }

    let info = ioctl::query::<req::DeviceGetInfo>(device.ioctl_fd(), &Default::default(), || name.clone())?;
    print_seed("device_info_caps", &name, info.bytes());
    n += 1;

    let num_regions = vfio_core::DeviceInfo::parse(info.bytes(), &name)?.num_regions;
    for index in 0..num_regions {
        let header = sys::vfio_region_info {
            index,
            ..Default::default()
        };
        match ioctl::query::<req::DeviceGetRegionInfo>(device.ioctl_fd(), &header, || name.clone()) {
            Ok(reply) => {
                print_seed("region_caps", &format!("{name}-region{index}"), reply.bytes());
                n += 1;
            }
            Err(e) => println!("@@SEED-NONE region_caps {name}-region{index} {e}"),
        }
    }

    // The hot-reset info: the kernel says how many entries it needs with ENOSPC.
    let entry = std::mem::size_of::<sys::vfio_pci_dependent_device>();
    let mut count = 0usize;
    for _ in 0..4 {
        let mut buf = ioctl::VarBuf::<req::HotResetInfoHeader>::zeroed(entry * count);
        match ioctl::call_var::<req::DeviceGetPciHotResetInfo>(device.ioctl_fd(), &mut buf) {
            Err(Errno::NOSPC) if buf.header().count as usize > count => count = buf.header().count as usize,
            Err(e) => {
                println!("@@SEED-NONE hot_reset_info {name} {e}");
                break;
            }
            Ok(_) => {
                print_seed("hot_reset_info", &name, buf.bytes());
                n += 1;
                break;
            }
        }
    }

    let config = device.region_info(sys::VFIO_PCI_CONFIG_REGION_INDEX)?;
    let mut bytes = vec![0u8; config.size as usize];
    device.read_region(&config, 0, &mut bytes)?;
    print_seed("pci_capabilities", &format!("{name}-config"), &bytes);
    n += 1;
    Ok(n)
}
