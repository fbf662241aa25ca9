use std::fs;

use super::*;
use crate::{Error, Uuid};

/// A fake sysfs with parent `mtty`, types mtty-1 (no description) and mtty-2.
fn tree(tag: &str) -> (std::path::PathBuf, Sysfs) {
    let root = std::env::temp_dir().join(format!("vfio-core-mdev-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    let parent = root.join("sys/class/mdev_bus/mtty");
    for (id, name, n) in [
        ("mtty-1", "Single port serial", "24"),
        ("mtty-2", "Dual port serial", "12"),
    ] {
        let t = parent.join("mdev_supported_types").join(id);
        fs::create_dir_all(t.join("devices")).unwrap();
        fs::write(t.join("name"), format!("{name}\n")).unwrap();
        fs::write(t.join("device_api"), "vfio-pci\n").unwrap();
        fs::write(t.join("available_instances"), format!("{n}\n")).unwrap();
        fs::write(t.join("create"), "").unwrap();
    }
    (root.clone(), Sysfs::at(root.join("sys"), root.join("dev")))
}

#[test]
#[cfg_attr(miri, ignore = "builds a fake sysfs tree")]
fn parents_types_and_attributes() {
    let (root, sysfs) = tree("attrs");
    let parents = mdev_parents(&sysfs).unwrap();
    assert_eq!(parents.len(), 1);
    let p = &parents[0];
    assert_eq!(p.name(), "mtty");
    let types = p.types().unwrap();
    assert_eq!(types.iter().map(|t| t.id()).collect::<Vec<_>>(), ["mtty-1", "mtty-2"]);
    assert_eq!(types[0].name().unwrap(), "Single port serial");
    assert_eq!(types[0].description().unwrap(), None);
    assert_eq!(types[1].device_api().unwrap(), "vfio-pci");
    assert_eq!(types[1].available_instances().unwrap(), 12);
    assert!(types[0].instances().unwrap().is_empty());
    let e = p.mdev_type("mtty-9").unwrap_err();
    assert!(
        matches!(e, Error::Path { .. }) && e.to_string().contains("mtty-9"),
        "{e}"
    );
    assert_eq!(e.errno(), Some(crate::Errno::NOENT));
    assert!(p.mdev_type("../x").is_err());
    let e = MdevParent::open(&sysfs, "nope").unwrap_err();
    assert!(e.to_string().contains("mdev_bus/nope"), "{e}");
    fs::remove_dir_all(root).unwrap();
    assert!(mdev_parents(&sysfs).unwrap().is_empty());
}

#[test]
#[cfg_attr(miri, ignore = "builds a fake sysfs tree")]
fn find_reads_type_and_parent_and_a_found_instance_is_not_removed() {
    let (root, sysfs) = tree("find");
    let u: Uuid = "83b8f4f2-509f-382f-3c1e-e6bfe0fa1001".parse().unwrap();
    let real = root.join("sys/devices/virtual/mtty/mtty").join(u.to_string());
    fs::create_dir_all(&real).unwrap();
    fs::create_dir_all(root.join("sys/devices/virtual/mtty/mtty/mdev_supported_types/mtty-2")).unwrap();
    std::os::unix::fs::symlink("../mdev_supported_types/mtty-2", real.join("mdev_type")).unwrap();
    fs::create_dir_all(root.join("sys/bus/mdev/devices")).unwrap();
    std::os::unix::fs::symlink(&real, root.join("sys/bus/mdev/devices").join(u.to_string())).unwrap();
    let m = Mdev::find(&sysfs, u).unwrap();
    assert_eq!((m.type_id(), m.parent(), m.is_owned()), ("mtty-2", "mtty", false));
    let other = m.clone();
    let e = m.remove().unwrap_err();
    assert!(
        matches!(e, Error::InvalidArgument { .. }) && e.to_string().contains(&u.to_string()),
        "{e}"
    );
    drop(other);
    assert!(!real.join("remove").exists(), "a found instance is not removed on drop");
    let e = Mdev::find(&sysfs, Uuid::from_bytes([2; 16])).unwrap_err();
    assert!(e.to_string().contains("removed?"), "{e}");
    fs::remove_dir_all(root).unwrap();
}
