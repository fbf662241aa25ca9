//! The driver-facing API of issue #19, against the real kernel: software-triggered vectors,
//! the interrupt mode the library records (vs config space), eventfds borrowed only for the
//! call, the default container's lifecycle, group viability before opening, and the IOVA rules
//! `DmaMapping::new` names when it refuses. Everything goes through `vfio_pci` re-exports.

use std::os::fd::AsFd;
use std::process::ExitCode;
use std::time::Duration;

use vfio_pci::{
    DefaultContainer, DmaAccess, DmaBuffer, DmaMapping, Error, EventFd, Interface, IrqFlags, IrqMode, Mode, PciAddress,
    PciDevice, Viability,
};
use vfio_tests::{FdSnapshot, Outcome, TestResult, device_from_env, ensure, open_fds, skip};

const EDU_ID: u32 = 0x010000ed;

/// The offered mode of `interface` (with an IOMMU when there is one), if any.
fn offered(interface: Interface) -> Option<Mode> {
    let modes = vfio_core::detect();
    let (iova, physical) = match interface {
        Interface::Group => (Mode::GROUP, Mode::GROUP_NOIOMMU),
        Interface::Cdev => (Mode::CDEV, Mode::CDEV_NOIOMMU),
    };
    [iova, physical].into_iter().find(|&m| modes.offers(m))
}

/// Every mode offered here.
fn offered_modes() -> Vec<Mode> {
    [Interface::Cdev, Interface::Group]
        .into_iter()
        .filter_map(offered)
        .collect()
}

fn fired(e: &EventFd, timeout: Duration) -> Result<bool, Box<dyn std::error::Error>> {
    Ok(e.wait_timeout(timeout)?.is_some())
}

/// MSI-X vectors fired from software (`trigger_msix`) signal exactly their eventfd; the
/// vectors were enabled from a `Vec<EventFd>` as the driver holds it; the MSI-X enable bit
/// reads set and `irq_mode` agrees; a vector past the enabled ones and a trigger after the
/// disable are refused.
fn msix_vector_fires_from_software() -> TestResult {
    let addr = match device_from_env("VFIO_TEST_NVME") {
        Err(why) => return skip(why),
        Ok(a) => a,
    };
    let dev = PciDevice::open(&addr, None)?;
    ensure!(dev.irq_mode() == IrqMode::None, "after open: {:?}", dev.irq_mode());
    let fds: Vec<EventFd> = (0..4).map(|_| EventFd::new()).collect::<Result<_, _>>()?;
    dev.enable_msix(&fds)?;
    ensure!(
        dev.irq_mode() == IrqMode::Msix { vectors: 4 },
        "after enable_msix: {:?}",
        dev.irq_mode()
    );
    let cap = dev.msix_cap()?.ok_or("nvme without MSI-X")?;
    ensure!(cap.enabled, "the MSI-X enable bit reads clear after enable_msix");
    dev.trigger_msix(2)?;
    ensure!(fired(&fds[2], Duration::from_secs(5))?, "vector 2 did not fire");
    for i in [0, 1, 3] {
        ensure!(!fired(&fds[i], Duration::from_millis(20))?, "vector {i} fired too");
    }
    // MSI-X grows without a disable where the kernel allows it (no NORESIZE).
    let info = dev.device().irq_info(vfio_pci::MSIX_IRQ)?;
    let extra = EventFd::new()?;
    if !info.flags.contains(IrqFlags::NORESIZE) {
        dev.set_msix_vectors(4, [extra.as_fd()])?;
        ensure!(dev.irq_mode() == IrqMode::Msix { vectors: 5 }, "{:?}", dev.irq_mode());
        dev.trigger_msix(4)?;
        ensure!(fired(&extra, Duration::from_secs(5))?, "added vector 4 did not fire");
    } else {
        println!("    MSI-X is NORESIZE here: no vectors added while enabled");
    }
    let past = dev.trigger_msix(info.count);
    ensure!(
        past.is_err(),
        "trigger of vector {} of {} accepted",
        info.count,
        info.count
    );
    dev.disable_irq(vfio_pci::MSIX_IRQ)?;
    ensure!(dev.irq_mode() == IrqMode::None, "after disable: {:?}", dev.irq_mode());
    ensure!(
        !dev.msix_cap()?.ok_or("no MSI-X")?.enabled,
        "MSI-X enable bit after disable"
    );
    ensure!(dev.trigger_msix(0).is_err(), "trigger accepted after the disable");
    Ok(Outcome::Pass)
}

/// MSI under VFIO: config space's enable bit reads clear while MSI is on (vfio-pci virtualizes
/// it), `irq_mode` says what was enabled, shared by clones; a software trigger fires the MSI
/// eventfd; INTx after the disable is recorded too.
fn irq_mode_follows_enable_and_disable() -> TestResult {
    let addr = match device_from_env("VFIO_TEST_EDU") {
        Err(why) => return skip(why),
        Ok(a) => a,
    };
    let dev = PciDevice::open(&addr, None)?;
    let clone = dev.clone();
    let irq = EventFd::new()?;
    dev.enable_msi([&irq])?;
    ensure!(dev.irq_mode() == IrqMode::Msi { vectors: 1 }, "{:?}", dev.irq_mode());
    ensure!(
        clone.irq_mode() == IrqMode::Msi { vectors: 1 },
        "clone: {:?}",
        clone.irq_mode()
    );
    let cap = dev.msi_cap()?.ok_or("edu without MSI")?;
    println!("    MSI enable bit in config space with MSI on: {}", cap.enabled);
    ensure!(
        !cap.enabled,
        "the MSI enable bit reads set: vfio-pci no longer virtualizes it, fix MsiCap::enabled's docs"
    );
    clone.trigger_msi(0)?;
    ensure!(fired(&irq, Duration::from_secs(5))?, "MSI vector 0 did not fire");
    // INTx cannot be enabled while MSI is: refused, and the record keeps MSI.
    ensure!(dev.enable_intx(&irq).is_err(), "INTx accepted while MSI is on");
    ensure!(
        dev.irq_mode().index() == Some(vfio_pci::MSI_IRQ),
        "{:?}",
        dev.irq_mode()
    );
    clone.disable_irq(vfio_pci::MSI_IRQ)?;
    ensure!(dev.irq_mode() == IrqMode::None, "after disable: {:?}", dev.irq_mode());
    dev.enable_intx(&irq)?;
    ensure!(dev.irq_mode() == IrqMode::Intx, "{:?}", dev.irq_mode());
    dev.trigger_irq(vfio_pci::INTX_IRQ, 0)?;
    ensure!(fired(&irq, Duration::from_secs(5))?, "INTx trigger did not fire");
    dev.disable_irq(vfio_pci::INTX_IRQ)?;
    ensure!(
        dev.irq_mode() == IrqMode::None,
        "after INTx disable: {:?}",
        dev.irq_mode()
    );
    Ok(Outcome::Pass)
}

/// The eventfds are borrowed for the call only: the kernel holds its own reference, so a
/// vector keeps signalling its eventfd after the fd passed to `enable_msi` was closed (here a
/// duplicate of it: the eventfd object is still reachable through the original).
fn eventfds_are_borrowed_for_the_call_only() -> TestResult {
    let addr = match device_from_env("VFIO_TEST_EDU") {
        Err(why) => return skip(why),
        Ok(a) => a,
    };
    let dev = PciDevice::open(&addr, None)?;
    let irq = EventFd::new()?;
    let dup = irq.as_fd().try_clone_to_owned()?;
    dev.enable_msi([dup.as_fd()])?;
    drop(dup);
    dev.trigger_msi(0)?;
    ensure!(
        fired(&irq, Duration::from_secs(5))?,
        "the vector stopped signalling when the fd passed in was closed"
    );
    dev.disable_irq(vfio_pci::MSI_IRQ)?;
    Ok(Outcome::Pass)
}

/// The default container is an ordinary handle: shared while held (by a handle or a device
/// opened through it), closed with its last holder, so the process is back to the fds it had
/// before without any warm-up of it; the group is free again (a container of its own can
/// take it) and the device opens through a new default container. In group mode the handle
/// reaches the concrete container and shows the group leaving with its device.
fn default_container_closes_with_its_last_holder(interface: Interface) -> TestResult {
    let addr = match device_from_env("VFIO_TEST_EDU") {
        Err(why) => return skip(why),
        Ok(a) => a,
    };
    let Some(mode) = offered(interface) else {
        return skip(format!("no {interface:?} mode here ({:?})", vfio_core::detect()));
    };
    let before = FdSnapshot::take()?;
    {
        let dev = PciDevice::open(&addr, Some(mode))?;
        let c = vfio_pci::default_container(mode)?;
        ensure!(
            DefaultContainer::ptr_eq(&c, &vfio_pci::default_container(mode)?),
            "two default containers at once"
        );
        ensure!(open_fds()?.len() > before.len(), "nothing open while the device is");
        match interface {
            Interface::Group => {
                let g = c
                    .group()
                    .ok_or("a group-mode default container without the group type")?;
                let id = vfio_core::Sysfs::default().iommu_group(&addr)?;
                ensure!(g.group_ids() == vec![id], "groups {:?}, expected [{id}]", g.group_ids());
                ensure!(c.cdev().is_none(), "both concrete types");
            }
            Interface::Cdev => ensure!(c.cdev().is_some() && c.group().is_none(), "not a cdev container"),
        }
        let buf = DmaBuffer::new(4096)?;
        let map = DmaMapping::new(&*c, &buf, 0x10_0000, DmaAccess::READ_WRITE)?;
        ensure!(dev.bar(0)?.read32(0)? == EDU_ID, "edu ID");
        drop(map);
        drop(dev);
        // The handle keeps the container (the same one), not the device's group.
        ensure!(
            DefaultContainer::ptr_eq(&c, &vfio_pci::default_container(mode)?),
            "a new default container while a handle is held"
        );
        if let Some(g) = c.group() {
            ensure!(
                g.group_ids().is_empty(),
                "groups {:?} after the device closed",
                g.group_ids()
            );
            // The concrete container takes a group in and out by hand.
            let id = vfio_core::Sysfs::default().iommu_group(&addr)?;
            drop(g.add_group(id)?);
            ensure!(g.group_ids() == vec![id], "groups {:?} after add_group", g.group_ids());
            g.remove_group(id)?;
            ensure!(
                g.group_ids().is_empty(),
                "groups {:?} after remove_group",
                g.group_ids()
            );
        }
    }
    before.check("fds after the last holder went")?;
    // Nothing holds the group: a container of our own takes it, then the default again.
    let own = vfio_tests::new_container(mode)?;
    let dev = PciDevice::open_in(own.as_ref(), &addr)?;
    ensure!(dev.bar(0)?.read32(0)? == EDU_ID, "edu ID in a container of its own");
    drop(dev);
    drop(own);
    let dev = PciDevice::open(&addr, Some(mode))?;
    ensure!(dev.bar(0)?.read32(0)? == EDU_ID, "edu ID after reopening");
    drop(dev);
    before.check("fds after reopening")?;
    println!(
        "    {mode}: default container closed with its last holder, fds back to {}",
        before.len()
    );
    Ok(Outcome::Pass)
}

fn default_container_closes_with_its_last_holder_group() -> TestResult {
    default_container_closes_with_its_last_holder(Interface::Group)
}

fn default_container_closes_with_its_last_holder_cdev() -> TestResult {
    default_container_closes_with_its_last_holder(Interface::Cdev)
}

/// The edu behind the PCIe-to-PCI bridge shares its group with a virtio device on its host
/// driver (intel boots): `PciDevice::viability` says NotViable and names it, before anything
/// is opened; opening it then fails.
fn viability_names_the_blockers() -> TestResult {
    let addr = match device_from_env("VFIO_TEST_EDU_NONVIABLE") {
        Err(why) => return skip(why),
        Ok(a) => a,
    };
    let v = PciDevice::viability(&addr)?;
    println!("    {addr}: {v}");
    ensure!(!v.is_viable(), "{v:?}");
    let Viability::NotViable { group, blockers } = &v else {
        return Err(format!("{v:?}").into());
    };
    let sysfs = vfio_core::Sysfs::default();
    ensure!(sysfs.iommu_group(&addr)? == *group, "group {group}");
    ensure!(
        blockers
            .iter()
            .any(|(dev, driver)| driver == "virtio-pci" && sysfs.identity(dev).is_ok_and(|i| i.vendor == 0x1af4)),
        "no virtio device among the blockers {blockers:?}"
    );
    ensure!(
        vfio_pci::inventory::viability(&sysfs, &addr)? == v,
        "inventory::viability disagrees"
    );
    ensure!(v.to_string().contains("virtio-pci"), "{v}");
    ensure!(PciDevice::open(&addr, None).is_err(), "the non-viable edu opened");
    Ok(Outcome::Pass)
}

/// The root-bus edu's group is viable on every boot (its noiommu group without an IOMMU), and
/// a function that does not exist is an error, not an answer.
fn viability_of_a_usable_group() -> TestResult {
    let addr = match device_from_env("VFIO_TEST_EDU") {
        Err(why) => return skip(why),
        Ok(a) => a,
    };
    let v = PciDevice::viability(&addr)?;
    println!("    {addr}: {v}");
    let group = vfio_core::Sysfs::default().iommu_group(&addr)?;
    ensure!(v == Viability::Viable { group }, "{v:?}");
    ensure!(v.blockers().is_empty(), "{v:?}");
    let nowhere: PciAddress = "0000:7f:1f.7".parse()?;
    ensure!(PciDevice::viability(&nowhere).is_err(), "an answer for {nowhere}");
    Ok(Outcome::Pass)
}

/// `DmaMapping::new` refuses a misaligned IOVA and one outside the container's IOVA ranges (or
/// wrapping past 2^64 where the ranges cover everything) with InvalidArgument naming the rule,
/// in every mode offered here; a valid IOVA maps afterwards.
fn dma_mapping_names_the_broken_iova_rule() -> TestResult {
    let addr = match device_from_env("VFIO_TEST_EDU") {
        Err(why) => return skip(why),
        Ok(a) => a,
    };
    let modes = offered_modes();
    ensure!(!modes.is_empty(), "no mode offered");
    for mode in modes {
        let dev = PciDevice::open(&addr, Some(mode))?;
        let c = vfio_pci::default_container(mode)?;
        let buf = DmaBuffer::new(4096)?;
        let refusal = |iova: u64| -> Result<String, Box<dyn std::error::Error>> {
            match DmaMapping::new(&*c, &buf, iova, DmaAccess::READ_WRITE) {
                Ok(m) => Err(format!("{mode}: iova {iova:#x} mapped at {:#x}", m.device_addr()).into()),
                Err(e @ Error::InvalidArgument { .. }) => Ok(e.to_string()),
                Err(e) => Err(format!("{mode}: iova {iova:#x}: not InvalidArgument: {e}").into()),
            }
        };
        let e = refusal(0x10_0800)?;
        println!("    {mode}: {e}");
        ensure!(
            e.contains("iova is not a multiple of the page size") && e.contains("0x100800"),
            "{e}"
        );
        let ranges = c.iova_ranges()?;
        let last = ranges.last().ok_or("no IOVA range")?;
        // An IOVA in the first gap between ranges, past the last one, or wrapping past 2^64.
        let (iova, rule) = if ranges.len() >= 2 {
            (ranges[0].last + 1, "IOVA ranges")
        } else if last.last < u64::MAX - 0xfff {
            (last.last + 1, "IOVA ranges")
        } else {
            (!0xfff, "passes the end of the 64-bit IOVA space")
        };
        // Two pages, so that the last page of the space wraps.
        let two = DmaBuffer::new(8192)?;
        let e = match DmaMapping::new(&*c, &two, iova, DmaAccess::READ_WRITE) {
            Ok(m) => return Err(format!("{mode}: iova {iova:#x} mapped at {:#x}", m.device_addr()).into()),
            Err(e @ Error::InvalidArgument { .. }) => e.to_string(),
            Err(e) => return Err(format!("{mode}: iova {iova:#x}: not InvalidArgument: {e}").into()),
        };
        println!("    {mode}: {e}");
        ensure!(e.contains(rule) && e.contains(&format!("{iova:#x}")), "{e}");
        let ok = DmaMapping::new(&*c, &buf, 0x10_0000, DmaAccess::READ_WRITE)?;
        drop(ok);
        drop(dev);
    }
    Ok(Outcome::Pass)
}

/// `PciDevice::open_vf` assigns the VF to the default container and the VF holds it: with no
/// handle left, the container (the one holding the VF's group) lives on until the VF closes,
/// and then goes with it.
fn open_vf_holds_the_default_container() -> TestResult {
    let addr = match device_from_env("VFIO_TEST_NVME_SRIOV") {
        Err(why) => return skip(why),
        Ok(a) => a,
    };
    let Some(mode) = offered(Interface::Group) else {
        return skip(format!("no group mode here ({:?})", vfio_core::detect()));
    };
    let sysfs = vfio_core::Sysfs::default();
    // The PF in a container of its own, so that only the VF can hold the default one.
    let own = vfio_tests::new_container(mode)?;
    let pf = PciDevice::open_in(own.as_ref(), &addr)?;
    let vfs = vfio_pci::SriovVfs::enable(&sysfs, pf.device(), &addr, 1, &vfio_core::Uuid::random()?)?;
    let vf = PciDevice::open_vf(&vfs, 0, Some(mode))?;
    ensure!(vf.ids()?.0 == pf.ids()?.0, "VF vendor {:04x}", vf.ids()?.0);
    let vf_group = sysfs.iommu_group(&vf.address())?;
    let groups = || -> Result<Vec<u32>, Box<dyn std::error::Error>> {
        let c = vfio_pci::default_container(mode)?;
        Ok(c.group().ok_or("not a group container")?.group_ids())
    };
    ensure!(groups()? == vec![vf_group], "default container groups {:?}", groups()?);
    // No handle was kept between the two calls: the VF kept the container.
    ensure!(
        groups()? == vec![vf_group],
        "the default container did not outlive its handle"
    );
    drop(vf);
    ensure!(groups()?.is_empty(), "groups {:?} after the VF closed", groups()?);
    drop(vfs);
    drop(pf);
    drop(own);
    ensure!(sysfs.sriov_numvfs(&addr)? == Some(0), "VFs left enabled");
    Ok(Outcome::Pass)
}

fn main() -> ExitCode {
    vfio_tests::run(&[
        // First: it counts the process's fds without any warm-up.
        (
            "default_container_closes_with_its_last_holder_group",
            default_container_closes_with_its_last_holder_group,
        ),
        (
            "default_container_closes_with_its_last_holder_cdev",
            default_container_closes_with_its_last_holder_cdev,
        ),
        ("msix_vector_fires_from_software", msix_vector_fires_from_software),
        (
            "irq_mode_follows_enable_and_disable",
            irq_mode_follows_enable_and_disable,
        ),
        (
            "eventfds_are_borrowed_for_the_call_only",
            eventfds_are_borrowed_for_the_call_only,
        ),
        ("viability_names_the_blockers", viability_names_the_blockers),
        ("viability_of_a_usable_group", viability_of_a_usable_group),
        (
            "dma_mapping_names_the_broken_iova_rule",
            dma_mapping_names_the_broken_iova_rule,
        ),
        (
            "open_vf_holds_the_default_container",
            open_vf_holds_the_default_container,
        ),
    ])
}
