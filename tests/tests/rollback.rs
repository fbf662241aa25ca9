//! Every sysfs change is rolled back when the operation it belongs to fails (issue #18): a
//! failed `Sysfs::bind_vfio_pci` of a function vfio-pci will not take (a bridge) leaves its
//! `driver_override` and its driver as they were; a refused `sriov_numvfs` (beyond
//! `sriov_totalvfs`) leaves no VF; a refused mediated-device create leaves no instance.

use std::process::ExitCode;

use vfio_core::{Errno, MdevParent, PciAddress, Sysfs, Uuid};
use vfio_tests::{Outcome, TestResult, device_from_env, ensure, skip};

/// The PCI bridges (class 0x0604) of the machine.
fn bridges(sysfs: &Sysfs) -> Result<Vec<PciAddress>, Box<dyn std::error::Error>> {
    let mut out = Vec::new();
    for addr in sysfs.pci_devices()? {
        let class = std::fs::read_to_string(sysfs.pci_device_dir(&addr).join("class"))?;
        if class.trim().starts_with("0x0604") {
            out.push(addr);
        }
    }
    Ok(out)
}

fn failed_bind_of_a_bridge_changes_nothing() -> TestResult {
    let sysfs = Sysfs::default();
    let bridges = bridges(&sysfs)?;
    if bridges.is_empty() {
        return skip("no PCI bridge on this machine");
    }
    for b in &bridges {
        let before = (sysfs.driver_override(b)?, sysfs.driver(b)?);
        let res = sysfs.bind_vfio_pci(b);
        let after = (sysfs.driver_override(b)?, sysfs.driver(b)?);
        let e = match res {
            Ok(prev) => return Err(format!("vfio-pci took the bridge {b} (it had {prev:?})").into()),
            Err(e) => e,
        };
        ensure!(
            before == after,
            "{b}: (driver_override, driver) was {before:?} before the failed bind, {after:?} after ({e})"
        );
        ensure!(
            e.to_string().contains(&b.to_string()),
            "the error does not name {b}: {e}"
        );
        println!("    {b} (driver {:?}): {e}", before.1);
    }
    Ok(Outcome::Pass)
}

fn numvfs_beyond_totalvfs_changes_nothing() -> TestResult {
    let pf = match device_from_env("VFIO_TEST_NVME_SRIOV") {
        Ok(a) => a,
        Err(why) => return skip(why),
    };
    let sysfs = Sysfs::default();
    let total = sysfs
        .sriov_totalvfs(&pf)?
        .ok_or("the SR-IOV nvme has no sriov_totalvfs")?;
    let before = (sysfs.sriov_numvfs(&pf)?, sysfs.virtfns(&pf)?, sysfs.driver(&pf)?);
    ensure!(before.0 == Some(0), "{pf}: VFs enabled before the test: {before:?}");
    let e = sysfs
        .set_sriov_numvfs(&pf, total + 1)
        .err()
        .ok_or("numvfs beyond totalvfs was taken")?;
    ensure!(e.errno() == Some(Errno::RANGE), "numvfs {}: {e}", total + 1);
    let after = (sysfs.sriov_numvfs(&pf)?, sysfs.virtfns(&pf)?, sysfs.driver(&pf)?);
    ensure!(
        before == after,
        "{pf}: {before:?} before the refused write, {after:?} after"
    );
    Ok(Outcome::Pass)
}

fn refused_mdev_create_changes_nothing() -> TestResult {
    let sysfs = Sysfs::default();
    let parent = match MdevParent::open(&sysfs, "mtty") {
        Ok(p) => p,
        Err(e) => {
            return skip(format!(
                "no mdev parent mtty ({e}): no sample mediated-device driver in this kernel"
            ));
        }
    };
    let ty = parent.mdev_type("mtty-1")?;
    let count = |t: &vfio_core::MdevType| -> vfio_core::Result<(Vec<Uuid>, u32)> {
        Ok((t.instances()?, t.available_instances()?))
    };
    let before = count(&ty)?;
    // A type the parent does not have: nothing is written.
    let bad = parent.mdev_type("mtty-no-such-type");
    ensure!(bad.is_err(), "a type that does not exist was found");
    ensure!(count(&ty)? == before, "looking up a bad type changed the instances");
    // A UUID taken already: the kernel refuses (EEXIST) and the first instance stays alone.
    let first = ty.create(Uuid::random()?)?;
    let with_first = count(&ty)?;
    let e = ty
        .create(first.uuid())
        .err()
        .ok_or("a second instance with the same UUID was created")?;
    ensure!(e.errno() == Some(Errno::EXIST), "duplicate UUID: {e}");
    ensure!(
        count(&ty)? == with_first,
        "the refused create changed the instances: {:?} -> {:?}",
        with_first,
        count(&ty)?
    );
    ensure!(first.exists(), "the refused create removed the first instance");
    first.remove()?;
    ensure!(count(&ty)? == before, "instances not back to {before:?}");
    Ok(Outcome::Pass)
}

fn main() -> ExitCode {
    vfio_tests::run(&[
        (
            "failed_bind_of_a_bridge_changes_nothing",
            failed_bind_of_a_bridge_changes_nothing,
        ),
        (
            "numvfs_beyond_totalvfs_changes_nothing",
            numvfs_beyond_totalvfs_changes_nothing,
        ),
        (
            "refused_mdev_create_changes_nothing",
            refused_mdev_create_changes_nothing,
        ),
    ])
}
