//! Bad input, case by case: each must come back as a typed error that names what was wrong
//! (the device, path or object) and, where the kernel refused, carries its errno; none may panic,
//! and none may leave an fd or a memory mapping behind (both are counted around every case), nor
//! hold a device: after each case that touched one, another process (a forked child, with a
//! container of its own) must be able to open it in the same mode.

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use vfio_core::{Container, DmaAccess, DmaBuffer, Errno, Error, EventFd, IrqSet, Mode, PciAddress};
use vfio_pci::PciDevice;
use vfio_tests::module_param::UnsafeInterruptsOff;
use vfio_tests::{FdSnapshot, Outcome, TestResult, device_from_env, mapping_count, skip};

/// What a case expects.
enum Want {
    /// `Error::InvalidArgument` whose message contains the text.
    Invalid(&'static str),
    /// `Error::Unsupported` whose message contains the text.
    Unsupported(&'static str),
    /// A kernel refusal (Kernel or Path) with this errno, the message containing the text.
    Errno(Errno, &'static str),
    /// Any kernel refusal (the errno differs between kernels or modes), naming the text.
    AnyErrno(&'static str),
    /// Any kernel refusal naming one of the texts (what is named differs between modes).
    AnyErrnoNaming(&'static [&'static str]),
}

type Case = Box<dyn Fn() -> Result<Result<(), Error>, String>>;

/// The device a case touched, which another process must be able to open afterwards.
#[derive(Clone, Copy)]
enum After {
    /// No device (or none that can be opened: a missing one, one on another driver).
    Nothing,
    /// The device in this variable, in this mode (`None`: the preferred one).
    Reopen(&'static str, Option<Mode>),
    /// The IOMMU group of the device in this variable, whose device cannot be opened (a
    /// non-viable group): another process must be able to open the group node.
    GroupNode(&'static str),
}

const EDU: &str = "VFIO_TEST_EDU";
const NVME: &str = "VFIO_TEST_NVME";
const PREFERRED_EDU: After = After::Reopen(EDU, None);
const PREFERRED_NVME: After = After::Reopen(NVME, None);

/// Runs `case` (Ok(Err(e)): the error to judge; Err(why): the case cannot run here) and checks
/// the error against `want`, that no fd or mapping was left behind, and that another process
/// can open the device the case touched (`after`).
fn judge(want: &Want, after: After, case: &Case) -> TestResult {
    // Warm-up: lazily opened process-wide state (default containers) is not a leak.
    let _ = case();
    let (fds, maps) = (FdSnapshot::take()?, mapping_count()?);
    let got = match case() {
        Err(why) => return skip(why),
        Ok(Ok(())) => return Err("accepted".into()),
        Ok(Err(e)) => e,
    };
    let text = got.to_string();
    let ok = match (want, &got) {
        (Want::Invalid(t), Error::InvalidArgument { .. }) => text.contains(t),
        (Want::Unsupported(t), Error::Unsupported { .. }) => text.contains(t),
        (Want::Errno(n, t), _) => got.errno() == Some(*n) && text.contains(t),
        (Want::AnyErrno(t), _) => got.errno().is_some() && text.contains(t),
        (Want::AnyErrnoNaming(ts), _) => got.errno().is_some() && ts.iter().any(|t| text.contains(t)),
        _ => false,
    };
    if !ok {
        let what = match want {
            Want::Invalid(t) => format!("InvalidArgument naming {t:?}"),
            Want::Unsupported(t) => format!("Unsupported naming {t:?}"),
            Want::Errno(n, t) => format!("errno {n:?} naming {t:?}"),
            Want::AnyErrno(t) => format!("a kernel errno naming {t:?}"),
            Want::AnyErrnoNaming(ts) => format!("a kernel errno naming one of {ts:?}"),
        };
        return Err(format!("expected {what}, got {got:?} ({text})").into());
    }
    fds.check(format!("fds leaked ({text})"))?;
    let maps_after = mapping_count()?;
    if maps_after != maps {
        return Err(format!("mappings leaked: {maps} -> {maps_after} ({text})").into());
    }
    println!("    {text}");
    match after {
        After::Nothing => {}
        After::Reopen(var, mode) => {
            if let (Ok(addr), Ok(mode)) = (env(var), mode.map_or_else(vfio_core::preferred, Ok)) {
                another_process_opens(addr, mode).map_err(|e| format!("after the refusal: {e}"))?;
            }
        }
        After::GroupNode(var) => {
            if let Ok(addr) = env(var) {
                another_process_opens_group(addr).map_err(|e| format!("after the refusal: {e}"))?;
            }
        }
    }
    Ok(Outcome::Pass)
}

/// Whether another process can open the device at `addr` in `mode` now: a forked child opens
/// it in a fresh container of its own (not the default one it inherits) and reads its vendor
/// id. A group or device cdev that this process still holds makes that fail: the group node
/// has one opener (EBUSY; the child inherits this process's fds too), a cdev one binding.
fn another_process_opens(addr: PciAddress, mode: Mode) -> Result<(), String> {
    let child = move || -> Result<(), Box<dyn std::error::Error>> {
        let c = vfio_tests::new_container(mode)?;
        let dev = PciDevice::open_in(c.as_ref(), &addr)?;
        dev.config_read16(0)?;
        Ok(())
    };
    // SAFETY: the test binary runs one case at a time on its main thread.
    let pid = unsafe { vfio_tests::fork_child(child) }?;
    vfio_tests::wait_child(pid).map_err(|e| format!("another process could not open {addr} in {mode} mode: {e}"))
}

/// Whether another process can open the IOMMU group node of the device at `addr` now.
fn another_process_opens_group(addr: PciAddress) -> Result<(), String> {
    let sysfs = vfio_core::Sysfs::default();
    let id = sysfs.iommu_group(&addr).map_err(|e| e.to_string())?;
    let child = move || -> Result<(), Box<dyn std::error::Error>> {
        vfio_group::Group::open(sysfs.dev_dir(), id, false)?.close()?;
        Ok(())
    };
    // SAFETY: the test binary runs one case at a time on its main thread.
    let pid = unsafe { vfio_tests::fork_child(child) }?;
    vfio_tests::wait_child(pid).map_err(|e| format!("another process could not open IOMMU group {id}: {e}"))
}

/// A failed check inside a case, as an error that matches no [`Want`] (so the case fails,
/// saying why).
fn broken(what: impl ToString) -> Error {
    Error::malformed("test", "the case", what)
}

/// Opens the edu in `mode` through the default container with unsafe interrupts off: the
/// kernel refuses (EPERM), and the refusal must leave nothing held.
fn open_without_msi_isolation(mode: Mode) -> Result<Result<(), Error>, String> {
    let a = env(EDU)?;
    if !vfio_tests::offered(mode) {
        return Err(format!("{mode} mode is not offered"));
    }
    let off =
        UnsafeInterruptsOff::new("the IOMMU isolates MSIs (or there is none), so no open is refused for want of it")?;
    let r = PciDevice::open(&a, Some(mode));
    drop(off);
    match r {
        Ok(_) => Err("the open succeeded with allow_unsafe_interrupts off: this IOMMU isolates MSIs".into()),
        Err(e) => Ok(Err(e)),
    }
}

/// A fake sysfs (devices under a temporary directory, /dev the real one) in which a device that
/// does not exist sits in a real IOMMU group: a container opens that group, joins it and sets
/// its IOMMU, and then the kernel refuses the device fd for the unknown name. Removed on drop.
struct GhostDevice {
    root: PathBuf,
    addr: PciAddress,
}

impl GhostDevice {
    fn new(group: u32) -> Result<Self, String> {
        let addr: PciAddress = "0000:7f:1f.7".parse().map_err(|e: Error| e.to_string())?;
        let root = std::env::temp_dir().join(format!("vfio-bad-input-ghost-{}", std::process::id()));
        let ghost = GhostDevice { root, addr };
        let dir = ghost.root.join("sys/bus/pci/devices").join(addr.to_string());
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let link =
            |target: String, name: &str| std::os::unix::fs::symlink(target, dir.join(name)).map_err(|e| e.to_string());
        link(format!("../../../../kernel/iommu_groups/{group}"), "iommu_group")?;
        link("../../../../bus/pci/drivers/vfio-pci".into(), "driver")?;
        Ok(ghost)
    }

    fn sysfs(&self) -> vfio_core::Sysfs {
        vfio_core::Sysfs::at(self.root.join("sys"), "/dev")
    }
}

impl Drop for GhostDevice {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn env(var: &str) -> Result<PciAddress, String> {
    device_from_env(var)
}

fn edu() -> Result<PciDevice, String> {
    PciDevice::open(&env("VFIO_TEST_EDU")?, None).map_err(|e| format!("cannot open edu: {e}"))
}

fn nvme() -> Result<PciDevice, String> {
    PciDevice::open(&env("VFIO_TEST_NVME")?, None).map_err(|e| format!("cannot open nvme: {e}"))
}

/// A fresh container of the preferred mode, with edu assigned, for map cases.
fn edu_container() -> Result<(Arc<dyn Container>, PciDevice), String> {
    let addr = env("VFIO_TEST_EDU")?;
    let mode = vfio_core::preferred().map_err(|e| e.to_string())?;
    if mode.is_noiommu() {
        return Err("no IOMMU: IOVAs are not checked by the kernel".into());
    }
    let c: Arc<dyn Container> = vfio_tests::new_container(mode).map_err(|e| e.to_string())?;
    let dev = PciDevice::open_in(c.as_ref(), &addr).map_err(|e| e.to_string())?;
    Ok((c, dev))
}

/// A raw map that the kernel is expected to refuse; unmapped again if it is not.
fn try_map(c: &dyn Container, buf: &DmaBuffer, len: u64, iova: u64) -> Result<(), Error> {
    // SAFETY: `buf` outlives the call, and a mapping that was made is removed before returning.
    let r = unsafe { c.map_dma_raw(buf.as_ptr(), len, iova, DmaAccess::READ_WRITE) };
    if r.is_ok() {
        let _ = c.unmap_dma(iova, len);
    }
    r.map(|_| ())
}

/// A map of `len` bytes of a fresh page at `iova` in a fresh container holding edu.
fn map_one_page(len: u64, iova: u64) -> Result<Result<(), Error>, String> {
    let (c, _dev) = edu_container()?;
    let buf = DmaBuffer::new(4096).map_err(|e| e.to_string())?;
    Ok(try_map(c.as_ref(), &buf, len, iova))
}

/// A PCI function that exists but is not on vfio-pci: on another driver (`Some(driver)`) or
/// on none (the host bridge, usually).
fn not_on_vfio(with_driver: bool) -> Result<(PciAddress, Option<String>), String> {
    let sysfs = vfio_core::Sysfs::default();
    vfio_pci::inventory::list(&sysfs)
        .map_err(|e| e.to_string())?
        .into_iter()
        .find(|d| d.driver.as_deref() != Some("vfio-pci") && d.driver.is_some() == with_driver)
        .map(|d| (d.address, d.driver))
        .ok_or_else(|| {
            if with_driver {
                "no function is bound to a driver other than vfio-pci".into()
            } else {
                "every function has a driver".into()
            }
        })
}

/// A fresh iommufd with edu's cdev bound to it, or why cdev mode cannot run here.
fn bound_edu() -> Result<(Arc<vfio_cdev::Iommufd>, vfio_cdev::BoundDevice), String> {
    if !vfio_core::detect().cdev {
        return Err("cdev mode is not offered".into());
    }
    let a = env("VFIO_TEST_EDU")?;
    let fd = vfio_cdev::Iommufd::open().map_err(|e| e.to_string())?;
    let dev = vfio_cdev::UnboundDevice::open(&vfio_core::Sysfs::default(), &a)
        .and_then(|d| d.bind(&fd))
        .map_err(|e| e.to_string())?;
    Ok((fd, dev))
}

fn cases() -> Vec<(&'static str, Want, After, Case)> {
    vec![
        (
            "address_with_bad_hex",
            Want::Invalid("0000:00:zz.0"),
            After::Nothing,
            Box::new(|| Ok("0000:00:zz.0".parse::<PciAddress>().map(|_| ()))),
        ),
        (
            "address_with_function_8",
            Want::Invalid("00:1f.8"),
            After::Nothing,
            Box::new(|| Ok("00:1f.8".parse::<PciAddress>().map(|_| ()))),
        ),
        (
            "address_with_too_many_parts",
            Want::Invalid("1:2:3:4.5"),
            After::Nothing,
            Box::new(|| Ok("1:2:3:4.5".parse::<PciAddress>().map(|_| ()))),
        ),
        (
            "nonexistent_device",
            Want::Errno(Errno::NOENT, "0000:7f:1f.7"),
            PREFERRED_EDU,
            Box::new(|| Ok(PciDevice::open(&"7f:1f.7".parse().map_err(|e: Error| e.to_string())?, None).map(|_| ()))),
        ),
        (
            "device_on_another_driver",
            Want::Invalid("not vfio-pci"),
            After::Nothing,
            Box::new(|| {
                let (a, driver) = not_on_vfio(true)?;
                let driver = driver.unwrap_or_default();
                // The error must name the driver that has the device, so the user knows what
                // to unbind.
                Ok(PciDevice::open(&a, None).map(|_| ()).map_err(|e| match e {
                    Error::InvalidArgument { reason, .. } if !reason.contains(&driver) => {
                        Error::malformed("test", a, format!("does not name driver {driver:?}: {reason}"))
                    }
                    e => e,
                }))
            }),
        ),
        (
            "device_on_no_driver",
            Want::Invalid("not bound to any driver"),
            After::Nothing,
            Box::new(|| Ok(PciDevice::open(&not_on_vfio(false)?.0, None).map(|_| ()))),
        ),
        (
            "non_viable_group",
            // The kernel's EPERM, with the member that blocks the group as its cause.
            Want::Errno(Errno::PERM, "not viable"),
            After::GroupNode("VFIO_TEST_EDU_NONVIABLE"),
            Box::new(|| {
                let a = env("VFIO_TEST_EDU_NONVIABLE")?;
                if !vfio_core::detect().group {
                    return Err("group mode is not offered".into());
                }
                Ok(PciDevice::open(&a, Some(vfio_core::Mode::GROUP)).map(|_| ()))
            }),
        ),
        (
            "device_already_assigned_elsewhere",
            // cdev names the device; group mode its group node, which has one opener.
            Want::AnyErrnoNaming(&["0000:", "already open"]),
            PREFERRED_EDU,
            Box::new(|| {
                let (_c, dev) = edu_container()?;
                let mode = dev.mode();
                let other = vfio_tests::new_container(mode).map_err(|e| e.to_string())?;
                Ok(PciDevice::open_in(other.as_ref(), &dev.address()).map(|_| ()))
            }),
        ),
        (
            "no_permission_as_nobody",
            Want::Errno(Errno::ACCESS, "/dev/"),
            PREFERRED_EDU,
            Box::new(|| {
                let a = env("VFIO_TEST_EDU")?;
                as_nobody(move || PciDevice::open(&a, None).map(|_| ()))
            }),
        ),
        (
            "zero_length_map",
            Want::AnyErrno("iova"),
            PREFERRED_EDU,
            Box::new(|| map_one_page(0, 0x40_0000)),
        ),
        (
            "unaligned_iova",
            Want::AnyErrno("iova"),
            PREFERRED_EDU,
            Box::new(|| map_one_page(4096, 0x40_0200)),
        ),
        (
            "unaligned_length",
            Want::AnyErrno("iova"),
            PREFERRED_EDU,
            Box::new(|| map_one_page(100, 0x40_0000)),
        ),
        (
            "overlapping_map",
            Want::Errno(Errno::EXIST, "iova"),
            PREFERRED_EDU,
            Box::new(|| {
                let (c, _dev) = edu_container()?;
                let a = DmaBuffer::new(8192).map_err(|e| e.to_string())?;
                let b = DmaBuffer::new(4096).map_err(|e| e.to_string())?;
                let _held = vfio_core::DmaMapping::new(c.as_ref(), &a, 0x40_0000, DmaAccess::READ_WRITE)
                    .map_err(|e| e.to_string())?;
                Ok(try_map(c.as_ref(), &b, 4096, 0x40_1000))
            }),
        ),
        (
            "iova_beyond_the_allowed_ranges",
            Want::AnyErrno("iova"),
            PREFERRED_EDU,
            Box::new(|| {
                let (c, _dev) = edu_container()?;
                let last = c.iova_ranges().map_err(|e| e.to_string())?.iter().map(|r| r.last).max();
                let last = last.ok_or("no IOVA ranges")?;
                if last >= u64::MAX - 0x2000 {
                    return Err("the allowed IOVA space reaches 2^64".into());
                }
                let buf = DmaBuffer::new(4096).map_err(|e| e.to_string())?;
                Ok(try_map(c.as_ref(), &buf, 4096, (last + 1).next_multiple_of(4096)))
            }),
        ),
        (
            "dma_buffer_of_zero_bytes",
            Want::Invalid("DMA buffer"),
            After::Nothing,
            Box::new(|| Ok(DmaBuffer::new(0).map(|_| ()))),
        ),
        (
            "hugetlb_1g_without_reservation",
            Want::Unsupported("huge"),
            After::Nothing,
            Box::new(|| Ok(DmaBuffer::with_backing(1 << 30, vfio_core::Backing::Huge1G).map(|_| ()))),
        ),
        (
            "mmio_past_the_bar_end",
            Want::Invalid("past the end"),
            PREFERRED_EDU,
            Box::new(|| {
                let d = edu()?;
                let bar = d.bar(0).map_err(|e| e.to_string())?;
                Ok(bar.read32(bar.size()).map(|_| ()))
            }),
        ),
        (
            "misaligned_mmio",
            Want::Invalid("aligned"),
            PREFERRED_EDU,
            Box::new(|| {
                let d = edu()?;
                let bar = d.bar(0).map_err(|e| e.to_string())?;
                Ok(bar.read32(2).map(|_| ()))
            }),
        ),
        (
            "bulk_bar_copy_past_the_end",
            Want::Invalid("BAR 0"),
            PREFERRED_EDU,
            Box::new(|| {
                let d = edu()?;
                let bar = d.bar(0).map_err(|e| e.to_string())?;
                Ok(bar.read_bytes(bar.size() - 4, &mut [0u8; 8]))
            }),
        ),
        (
            "config_access_past_4k",
            Want::Invalid("region 7"),
            PREFERRED_NVME,
            Box::new(|| Ok(nvme()?.config_read32(0x1000).map(|_| ()))),
        ),
        (
            "config_access_past_256_on_pci",
            Want::Invalid("region 7"),
            PREFERRED_EDU,
            Box::new(|| Ok(edu()?.config_read16(0x100).map(|_| ()))),
        ),
        (
            "bar_index_7",
            Want::Invalid("BAR 7"),
            PREFERRED_EDU,
            Box::new(|| Ok(edu()?.bar(7).map(|_| ()))),
        ),
        (
            "absent_bar",
            Want::Unsupported("BAR 1"),
            PREFERRED_EDU,
            Box::new(|| Ok(edu()?.bar(1).map(|_| ()))),
        ),
        (
            "rom_of_a_device_without_one",
            Want::Unsupported("ROM"),
            PREFERRED_NVME,
            Box::new(|| Ok(nvme()?.read_rom().map(|_| ()))),
        ),
        (
            "region_info_for_index_42",
            Want::Errno(Errno::INVAL, "0000:"),
            PREFERRED_EDU,
            Box::new(|| Ok(edu()?.device().region_info(42).map(|_| ()))),
        ),
        (
            "msix_vectors_beyond_the_count",
            Want::Errno(Errno::INVAL, "0000:"),
            PREFERRED_NVME,
            Box::new(|| {
                let d = nvme()?;
                let e = EventFd::new().map_err(|e| e.to_string())?;
                Ok(d.set_msix_vectors(200, [&e]))
            }),
        ),
        (
            "msi_with_more_vectors_than_the_device",
            Want::Errno(Errno::INVAL, "0000:"),
            PREFERRED_EDU,
            Box::new(|| {
                let d = edu()?;
                let (a, b) = (
                    EventFd::new().map_err(|e| e.to_string())?,
                    EventFd::new().map_err(|e| e.to_string())?,
                );
                Ok(d.enable_msi([&a, &b]))
            }),
        ),
        (
            "eventfd_for_an_index_without_vectors",
            Want::Errno(Errno::INVAL, "0000:"),
            PREFERRED_EDU,
            Box::new(|| {
                let d = edu()?;
                let e = EventFd::new().map_err(|e| e.to_string())?;
                Ok(d.enable_msix([&e]))
            }),
        ),
        (
            "two_intx_eventfds",
            Want::Errno(Errno::INVAL, "0000:"),
            PREFERRED_EDU,
            Box::new(|| {
                let d = edu()?;
                let (a, b) = (
                    EventFd::new().map_err(|e| e.to_string())?,
                    EventFd::new().map_err(|e| e.to_string())?,
                );
                let set = IrqSet::eventfds(vfio_pci::INTX_IRQ, 0, [a.as_fd(), b.as_fd()]);
                Ok(d.device().set_irqs(&set))
            }),
        ),
        (
            "irq_index_9",
            Want::Errno(Errno::INVAL, "0000:"),
            PREFERRED_EDU,
            Box::new(|| Ok(edu()?.device().irq_info(9).map(|_| ()))),
        ),
        (
            "feature_number_above_16_bits",
            Want::Invalid("feature"),
            PREFERRED_EDU,
            Box::new(|| {
                Ok(edu()?
                    .device()
                    .feature_probe(0x1_0000, vfio_core::FeatureAccess::GET)
                    .map(|_| ()))
            }),
        ),
        (
            "hot_reset_without_owning_the_device",
            Want::Invalid("not"),
            After::Reopen("VFIO_TEST_NVME_HOTRESET", None),
            Box::new(|| {
                let d = env("VFIO_TEST_NVME_HOTRESET")?;
                let dev = PciDevice::open(&d, None).map_err(|e| e.to_string())?;
                let other = vfio_tests::new_container(dev.mode()).map_err(|e| e.to_string())?;
                Ok(dev.hot_reset(other.as_ref()).map(|_| ()))
            }),
        ),
        (
            "hot_reset_on_the_root_bus",
            Want::Errno(Errno::NODEV, "0000:"),
            PREFERRED_NVME,
            Box::new(|| {
                let d = nvme()?;
                let c = vfio_pci::default_container(d.mode()).map_err(|e| e.to_string())?;
                Ok(d.hot_reset(&*c).map(|_| ()))
            }),
        ),
        (
            "bind_a_cdev_twice",
            Want::AnyErrno("0000:"),
            After::Reopen(EDU, Some(Mode::CDEV)),
            Box::new(|| {
                if !vfio_core::detect().cdev {
                    return Err("cdev mode is not offered".into());
                }
                let a = env("VFIO_TEST_EDU")?;
                let sysfs = vfio_core::Sysfs::default();
                let fd = Arc::new(vfio_cdev::Iommufd::open().map_err(|e| e.to_string())?);
                let first = vfio_cdev::UnboundDevice::open(&sysfs, &a).map_err(|e| e.to_string())?;
                let _bound = first.bind(&fd).map_err(|e| e.to_string())?;
                let second = vfio_cdev::UnboundDevice::open(&sysfs, &a).map_err(|e| e.to_string())?;
                Ok(second.bind(&fd).map(|_| ()))
            }),
        ),
        (
            "remove_a_group_with_its_device_open",
            Want::Errno(Errno::BUSY, "/dev/vfio/"),
            After::Reopen(EDU, Some(Mode::GROUP)),
            Box::new(|| {
                if !vfio_core::detect().group {
                    return Err("group mode is not offered".into());
                }
                let a = env("VFIO_TEST_EDU")?;
                let c = vfio_group::Container::open(vfio_core::Addressing::Iova).map_err(|e| e.to_string())?;
                let _dev = PciDevice::open_in(&c, &a).map_err(|e| e.to_string())?;
                if c.backend().map_err(|e| e.to_string())? != vfio_group::Backend::Type1 {
                    return Err("iommufd's compat container lets a group go with its device open \
                                (group_status_and_remove checks that)"
                        .into());
                }
                let g = vfio_core::Sysfs::default().iommu_group(&a).map_err(|e| e.to_string())?;
                Ok(c.remove_group(g))
            }),
        ),
        (
            "nonexistent_group_node",
            Want::Errno(Errno::NOENT, "/dev/vfio/4242"),
            After::Nothing,
            Box::new(|| Ok(vfio_core::open_node(std::path::Path::new("/dev/vfio/4242")).map(|_| ()))),
        ),
        (
            "fake_sysfs_without_the_device",
            Want::Errno(Errno::NOENT, "/nonexistent/sys"),
            After::Nothing,
            Box::new(|| {
                let s = vfio_core::Sysfs::at("/nonexistent/sys", "/nonexistent/dev");
                Ok(s.iommu_group(&"00:03.0".parse().map_err(|e: Error| e.to_string())?)
                    .map(|_| ()))
            }),
        ),
        (
            "fd_message_with_no_fds",
            Want::Invalid("fds"),
            After::Nothing,
            Box::new(|| {
                use rustix::net::{AddressFamily, SocketFlags, SocketType};
                let (a, _b) =
                    rustix::net::socketpair(AddressFamily::UNIX, SocketType::SEQPACKET, SocketFlags::CLOEXEC, None)
                        .map_err(|e| e.to_string())?;
                Ok(vfio_core::send_fds(a.as_fd(), &[]))
            }),
        ),
        (
            "iova_allocator_exhausted",
            Want::Invalid("exhausted"),
            After::Nothing,
            Box::new(|| {
                let mut alloc = vfio_core::IovaAllocator::new(&[vfio_core::IovaRange {
                    start: 0x1000,
                    last: 0x1fff,
                }]);
                Ok(alloc.alloc(0x2000, 0x1000).map(|_| ()))
            }),
        ),
        (
            "msi_trigger_after_disable",
            Want::Errno(Errno::INVAL, "0000:"),
            PREFERRED_EDU,
            Box::new(|| {
                let d = edu()?;
                let e = EventFd::new().map_err(|e| e.to_string())?;
                d.enable_msi([&e]).map_err(|e| e.to_string())?;
                d.disable_irq(vfio_pci::MSI_IRQ).map_err(|e| e.to_string())?;
                let trigger = IrqSet::trigger(vfio_pci::MSI_IRQ, 0, 1);
                Ok(d.device().set_irqs(&trigger))
            }),
        ),
        (
            "bar_pread_with_memory_decode_off",
            // vfio-pci refuses BAR reads and writes while the command register disables memory
            // decoding (as a reset leaves it, until PciDevice::reset restores it).
            Want::Errno(Errno::IO, "0000:"),
            PREFERRED_EDU,
            Box::new(|| {
                let d = edu()?;
                let cmd = d.command().map_err(|e| e.to_string())?;
                d.set_command(cmd - vfio_pci::Command::MEMORY_SPACE)
                    .map_err(|e| e.to_string())?;
                let region = d.device().region_info(0).map_err(|e| e.to_string())?;
                let r = d.device().read_region(&region, 0, &mut [0u8; 4]);
                d.set_command(cmd).map_err(|e| e.to_string())?;
                Ok(r)
            }),
        ),
        (
            "adopt_a_destroyed_ioas",
            Want::Errno(Errno::NOENT, "ioas"),
            After::Nothing,
            Box::new(|| {
                if !vfio_core::detect().cdev {
                    return Err("cdev mode is not offered".into());
                }
                let fd = vfio_cdev::Iommufd::open().map_err(|e| e.to_string())?;
                let id = fd.alloc_ioas().map_err(|e| e.to_string())?.id();
                // Dropped above: destroyed.
                Ok(vfio_cdev::Ioas::adopt(fd, id).map(|_| ()))
            }),
        ),
        (
            "attach_to_a_destroyed_ioas",
            Want::Errno(Errno::NOENT, "0000:"),
            After::Reopen(EDU, Some(Mode::CDEV)),
            Box::new(|| {
                let (fd, dev) = bound_edu()?;
                let id = fd.alloc_ioas().map_err(|e| e.to_string())?.id();
                Ok(dev.attach(id).map(|_| ()))
            }),
        ),
        (
            "map_after_the_last_group_left",
            Want::AnyErrno("/dev/vfio/vfio"),
            After::Reopen(EDU, Some(Mode::GROUP)),
            Box::new(|| {
                if !vfio_core::detect().group {
                    return Err("group mode is not offered".into());
                }
                let a = env("VFIO_TEST_EDU")?;
                let c = vfio_group::Container::open(vfio_core::Addressing::Iova).map_err(|e| e.to_string())?;
                let g = vfio_core::Sysfs::default().iommu_group(&a).map_err(|e| e.to_string())?;
                c.add_group(g).map_err(|e| e.to_string())?;
                if c.backend().map_err(|e| e.to_string())? != vfio_group::Backend::Type1 {
                    return Err("iommufd's compat container keeps its IOAS after the last group leaves".into());
                }
                c.remove_group(g).map_err(|e| e.to_string())?;
                let buf = DmaBuffer::new(4096).map_err(|e| e.to_string())?;
                Ok(try_map(&c, &buf, 4096, 0x40_0000))
            }),
        ),
        (
            "unmap_of_a_never_mapped_range",
            Want::Errno(Errno::NOENT, "iova"),
            PREFERRED_EDU,
            Box::new(|| {
                let (c, _dev) = edu_container()?;
                Ok(c.unmap_dma(0x70_0000, 4096).map(|_| ()))
            }),
        ),
        (
            "unknown_mode_name",
            Want::Invalid("bogus"),
            After::Nothing,
            Box::new(|| Ok("bogus".parse::<vfio_core::Mode>().map(|_| ()))),
        ),
        // Refused opens undo every step before the refusal. The default container outlives
        // the case, so anything a refusal left in it (a group, a bound cdev) would show in the
        // fd count and stop the other process's open.
        (
            "refused_open_without_msi_isolation_group",
            // Variant A: VFIO_SET_IOMMU refuses both type1v2 and type1; variant B: SET_CONTAINER
            // and SET_IOMMU succeed, VFIO_GROUP_GET_DEVICE_FD refuses. The error says why.
            Want::Errno(Errno::PERM, "allow_unsafe_interrupts"),
            After::Reopen(EDU, Some(Mode::GROUP)),
            Box::new(|| open_without_msi_isolation(Mode::GROUP)),
        ),
        (
            "refused_open_without_msi_isolation_cdev",
            // VFIO_DEVICE_BIND_IOMMUFD refuses.
            Want::Errno(Errno::PERM, "allow_unsafe_interrupts"),
            After::Reopen(EDU, Some(Mode::CDEV)),
            Box::new(|| open_without_msi_isolation(Mode::CDEV)),
        ),
        (
            "wrong_device_name_after_set_container",
            // The group joined and the IOMMU is set before VFIO_GROUP_GET_DEVICE_FD refuses the
            // name: the group must leave the container again, at once (checked while the
            // container is still open).
            Want::AnyErrno("0000:7f:1f.7"),
            After::Nothing,
            Box::new(|| {
                let mode = vfio_tests::group_mode()?;
                let a = env(EDU)?;
                let group = vfio_core::Sysfs::default().iommu_group(&a).map_err(|e| e.to_string())?;
                let ghost = GhostDevice::new(group)?;
                let c = vfio_group::Container::open_in(ghost.sysfs(), mode.addressing()).map_err(|e| e.to_string())?;
                let r = vfio_core::Container::assign_device(&c, &ghost.addr).map(|_| ());
                if r.is_ok() {
                    return Ok(Err(broken("the kernel gave a device fd for a name not in the group")));
                }
                if !c.group_ids().is_empty() || c.iommu_type().is_some() {
                    return Ok(Err(broken(format!(
                        "the container kept groups {:?} (IOMMU type {:?}) after the refusal",
                        c.group_ids(),
                        c.iommu_type()
                    ))));
                }
                if let Err(e) = another_process_opens(a, mode) {
                    return Ok(Err(broken(format!("with the container still open: {e}"))));
                }
                Ok(r)
            }),
        ),
    ]
}

/// Runs `f` in a child process that dropped to uid/gid 65534 (nobody) and returns its error,
/// carried back as text (errno and message) through a pipe-like socket.
fn as_nobody(f: impl FnOnce() -> Result<(), Error>) -> Result<Result<(), Error>, String> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    let (parent, child) =
        rustix::net::socketpair(AddressFamily::UNIX, SocketType::SEQPACKET, SocketFlags::CLOEXEC, None)
            .map_err(|e| e.to_string())?;
    let in_child = || {
        let msg = match vfio_tests::child::become_nobody() {
            Err(e) => format!("setup: {e}"),
            Ok(()) => match f() {
                Ok(()) => "ok".to_string(),
                Err(e) => format!("{}|{e}", e.errno().map_or(0, |n| n.raw_os_error())),
            },
        };
        rustix::net::send(&child, msg.as_bytes(), rustix::net::SendFlags::empty())?;
        Ok(())
    };
    // SAFETY: the test binary is single-threaded here; the child only runs `in_child`.
    let pid = unsafe { vfio_tests::fork_child(in_child) }?;
    drop(child);
    let mut buf = vec![0u8; 4096];
    let n = rustix::net::recv(&parent, &mut buf, rustix::net::RecvFlags::empty())
        .map_err(|e| e.to_string())?
        .0;
    vfio_tests::wait_child(pid)?;
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    if msg == "ok" {
        return Ok(Ok(()));
    }
    let (errno, text) = msg.split_once('|').ok_or(msg.clone())?;
    let errno: i32 = errno.parse().map_err(|_| msg.clone())?;
    Ok(Err(Error::path(
        "as nobody",
        text,
        std::io::Error::from_raw_os_error(errno),
    )))
}

fn main() -> ExitCode {
    let tests: Vec<(String, Box<dyn Fn() -> TestResult>)> = cases()
        .into_iter()
        .map(|(name, want, after, case)| {
            (
                name.to_string(),
                Box::new(move || judge(&want, after, &case)) as Box<dyn Fn() -> TestResult>,
            )
        })
        .collect();
    println!("{} bad-input cases", tests.len());
    vfio_tests::run_named(tests)
}
