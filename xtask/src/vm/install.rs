//! Host prerequisites: finds what is missing and installs it with apt when running as root,
//! or says exactly what to install otherwise.

use std::path::Path;
use std::process::Command;

/// (program looked up on PATH, Debian package providing it).
const PROGRAMS: &[(&str, &str)] = &[
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("flex", "flex"),
    ("bison", "bison"),
    ("bc", "bc"),
    ("rsync", "rsync"),
    ("cpio", "cpio"),
    ("xz", "xz-utils"),
    ("gzip", "gzip"),
    ("make", "make"),
    ("gcc", "gcc"),
    ("dpkg-deb", "dpkg"),
    ("apt-get", "apt"),
];

/// Packages checked with dpkg (libraries and files that are not programs on PATH).
const PACKAGES: &[&str] = &["busybox-static", "libelf-dev", "libssl-dev", "debian-archive-keyring"];

/// Where busybox-static installs the binary the initramfs needs.
pub const BUSYBOX: &str = "/bin/busybox";

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

fn dpkg_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).ends_with("install ok installed"))
}

/// Makes sure every tool the harness runs is present, installing the missing packages as root.
pub fn ensure() -> crate::Result {
    let mut missing: Vec<&str> = PROGRAMS
        .iter()
        .filter(|(p, _)| !on_path(p))
        .map(|(_, pkg)| *pkg)
        .collect();
    missing.extend(PACKAGES.iter().filter(|p| !dpkg_installed(p)));
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.join(" ");
    if !is_root() {
        return Err(format!(
            "missing host packages: {list}. Install them with:\n  sudo apt-get update && sudo apt-get install -y {list}"
        )
        .into());
    }
    println!("==> installing missing host packages: {list}");
    super::run_checked(Command::new("apt-get").args(["-q", "update"]), "apt-get update")?;
    super::run_checked(
        Command::new("apt-get")
            .args(["-q", "install", "-y"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
        "install the host packages",
    )?;
    if !Path::new(BUSYBOX).exists() {
        return Err(format!("{BUSYBOX} is still missing after installing busybox-static").into());
    }
    Ok(())
}
