//! The `debian61` guest kernel: Debian 12 (bookworm)'s packaged `linux-image-6.1.0-N-amd64`,
//! fetched rather than built. It stands for the distribution kernels many machines still run:
//! VFIO as modules and the type1 container, but neither iommufd (Linux 6.2) nor the VFIO device
//! cdev (6.6), no `VFIO_NOIOMMU` and no virtio-iommu driver, so it boots with intel-iommu only.
//!
//! Steps, each skipped when its result is cached:
//! 1. resolve: a private apt setup in `debian61/apt/` (bookworm, bookworm-updates and
//!    bookworm-security; the host's apt configuration is never touched) asks which
//!    `linux-image-6.1.0-N-amd64` the `linux-image-amd64` metapackage depends on now, and its
//!    version. Offline, the newest kernel already in the cache is used, with a warning;
//! 2. fetch: `apt-get download` and `dpkg-deb -x` into a scratch directory;
//! 3. keep `vmlinuz`, `config` and `modules.cpio.gz` in
//!    `debian61/<package>_<version>-<recipe hash>/`, then delete the .deb, the scratch tree and
//!    the kernels of other versions. `modules.cpio.gz` holds the modules `/init` loads
//!    ([`ROOTS`] and what their `.modinfo` says they need, dependencies first), decompressed,
//!    since busybox's insmod may not read `.ko.xz` or `.ko.zst`.

use super::{GuestKernel, Iommu, RemoveOnDrop, kernel, run_checked};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The metapackage that names the current kernel image package.
const META: &str = "linux-image-amd64";
const SECURITY_MIRROR: &str = "http://security.debian.org/debian-security";

/// The modules `/init` loads, before their dependencies are added: vfio-pci, the type1 IOMMU
/// driver (only a soft dependency of vfio, which insmod does not follow, and what group mode
/// needs), and virtio-pci, so that the virtio device sharing the second edu's IOMMU group has a
/// host driver, as in the built kernels (the non-viable group test). nvme is not loaded: the
/// built kernels have no nvme driver either, and the tests bind the controllers to vfio-pci.
pub const ROOTS: &[&str] = &["vfio_pci", "vfio_iommu_type1", "virtio_pci"];

/// Options the boot needs, with the values that will do (`m`: the module is in [`ROOTS`] or
/// one of their dependencies).
const REQUIRED: &[(&str, &[&str])] = &[
    ("CONFIG_BLK_DEV_INITRD", &["y"]),
    ("CONFIG_RD_GZIP", &["y"]),
    ("CONFIG_DEVTMPFS", &["y"]),
    ("CONFIG_SERIAL_8250_CONSOLE", &["y"]),
    ("CONFIG_PCI_MSI", &["y"]),
    ("CONFIG_HUGETLBFS", &["y"]),
    ("CONFIG_VFIO", &["y", "m"]),
    ("CONFIG_VFIO_IOMMU_TYPE1", &["y", "m"]),
    ("CONFIG_VFIO_PCI", &["y", "m"]),
    ("CONFIG_VIRTIO_PCI", &["y", "m"]),
];

/// Bump when what is kept from the package changes in a way [`ROOTS`] does not show.
const RECIPE: &str = "vmlinuz+config+modules.cpio.gz v1";

/// The cache directory of this kernel: `<cache>/debian61`.
fn dir(cache: &Path) -> PathBuf {
    cache.join("debian61")
}

/// The kernel image package and its version, as resolved for this run.
struct Image {
    package: String,
    version: String,
}

/// Returns the cached `debian61` kernel, fetching it first if the archive has a newer one.
pub fn ensure(cache: &Path) -> crate::Result<GuestKernel> {
    let base = dir(cache);
    let hash = super::kernel::fnv1a(format!("{RECIPE}\n{}", ROOTS.join(",")).as_bytes());
    let kept = match resolve(&base) {
        Ok(image) => {
            let kept = base.join(format!("{}_{}-{hash:016x}", image.package, image.version));
            if kept.join("vmlinuz").exists() {
                println!("==> kernel variant debian61: cached {}", kept.display());
            } else {
                fetch(&base, &image, &kept)?;
            }
            kept
        }
        Err(e) => match newest_cached(&base, hash) {
            Some(kept) => {
                println!(
                    "warning: cannot ask the Debian archive ({e}); using the cached {}",
                    kept.display()
                );
                kept
            }
            None => {
                return Err(format!(
                    "cannot resolve Debian's {META}: {e}. The harness needs network access to {} on the first run",
                    kernel::MIRROR
                )
                .into());
            }
        },
    };
    let config = std::fs::read_to_string(kept.join("config"))?;
    let options = parse_config(&config);
    let mut unsupported = Vec::new();
    for (iommu, needs) in [
        (Iommu::Intel, ["CONFIG_INTEL_IOMMU", "CONFIG_IRQ_REMAP"].as_slice()),
        // Built in: a virtio-iommu driver loaded after the devices probed would come too late.
        (Iommu::Virtio, &["CONFIG_VIRTIO_IOMMU"]),
        (Iommu::None, &["CONFIG_VFIO_NOIOMMU"]),
    ] {
        let lacking: Vec<&str> = needs
            .iter()
            .copied()
            .filter(|o| options.get(*o).map(String::as_str) != Some("y"))
            .collect();
        if !lacking.is_empty() {
            unsupported.push((iommu, format!("Debian's 6.1 kernel lacks {}=y", lacking.join("=y, "))));
        }
    }
    Ok(GuestKernel {
        image: kept.join("vmlinuz"),
        modules: Some(kept.join("modules.cpio.gz")),
        unsupported,
    })
}

/// apt options for the private bookworm setup in `base/apt`.
fn apt_options(base: &Path) -> crate::Result<Vec<String>> {
    let keyring = kernel::KEYRING;
    let mirror = kernel::MIRROR;
    let sources = format!(
        "deb [signed-by={keyring}] {mirror} bookworm main\n\
         deb [signed-by={keyring}] {mirror} bookworm-updates main\n\
         deb [signed-by={keyring}] {SECURITY_MIRROR} bookworm-security main\n"
    );
    let mut opts = kernel::apt_options_in(&base.join("apt"), &sources)?;
    // Package lists only: no translations, no AppStream metadata.
    for o in [
        "Acquire::Languages=none",
        "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false",
        "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false",
        "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false",
        "Acquire::IndexTargets::deb::DEP-11-icons-hidpi::DefaultEnabled=false",
    ] {
        opts.extend(["-o".to_owned(), o.to_owned()]);
    }
    Ok(opts)
}

/// The image package the metapackage depends on now, and its version.
fn resolve(base: &Path) -> crate::Result<Image> {
    let opts = apt_options(base)?;
    let meta_version = kernel::apt_candidate(&opts, META)?;
    let out = Command::new("apt-cache")
        .args(&opts)
        .args(["depends", &format!("{META}={meta_version}")])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let package = text
        .lines()
        .filter_map(|l| l.trim().trim_start_matches('|').strip_prefix("Depends:"))
        .map(str::trim)
        .find(|p| p.starts_with("linux-image-"))
        .ok_or_else(|| format!("{META} {meta_version} depends on no linux-image package"))?
        .to_owned();
    let version = kernel::apt_policy(&opts, &package)?;
    Ok(Image { package, version })
}

/// The newest complete kernel in the cache made with this recipe (`hash`), if any.
fn newest_cached(base: &Path, hash: u64) -> Option<PathBuf> {
    let suffix = format!("-{hash:016x}");
    std::fs::read_dir(base)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().ends_with(&suffix)))
        .filter(|p| p.join("vmlinuz").exists())
        .max_by_key(|p| std::fs::metadata(p.join("vmlinuz")).and_then(|m| m.modified()).ok())
}

/// Downloads and unpacks `image`, keeps what the boot needs in `kept`, and removes the rest
/// (and the kernels of other versions).
fn fetch(base: &Path, image: &Image, kept: &Path) -> crate::Result {
    println!(
        "==> kernel variant debian61: fetching {} {}",
        image.package, image.version
    );
    let opts = apt_options(base)?;
    let archives = base.join("apt/archives");
    let deb = kernel::apt_download(&opts, &archives, &image.package, &image.version)?;
    println!(
        "    downloaded {} ({:.1} MB)",
        deb.display(),
        std::fs::metadata(&deb)?.len() as f64 / 1e6
    );
    let scratch = base.join(format!("scratch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    let _cleanup = RemoveOnDrop(scratch.clone());
    run_checked(
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&scratch),
        "unpack the kernel image package",
    )?;
    // Written next to the final directory, then renamed: a crash leaves no half-made kernel.
    let tmp = base.join(format!("tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let _cleanup_tmp = RemoveOnDrop(tmp.clone());
    std::fs::create_dir_all(&tmp)?;

    let boot = scratch.join("boot");
    let find_boot = |prefix: &str| -> crate::Result<PathBuf> {
        std::fs::read_dir(&boot)
            .map_err(|e| format!("{}: {e}", boot.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(prefix)))
            .ok_or_else(|| format!("{} has no {prefix}* in /boot", image.package).into())
    };
    let config_text = std::fs::read_to_string(find_boot("config-")?)?;
    check_config(&parse_config(&config_text), &image.package)?;
    std::fs::write(tmp.join("config"), &config_text)?;
    std::fs::copy(find_boot("vmlinuz-")?, tmp.join("vmlinuz"))?;

    let tree = module_tree(&scratch)?;
    let available = index_modules(&tree.join("kernel"))?;
    let builtin = std::fs::read_to_string(tree.join("modules.builtin")).unwrap_or_default();
    let builtin: HashSet<String> = builtin.lines().map(module_name).collect();
    let mut infos = BTreeMap::new();
    let order = load_order(ROOTS, &builtin, |name| {
        let Some(path) = available.get(name) else {
            return Ok(None);
        };
        let data = read_module(path)?;
        let info = modinfo(&data).ok_or_else(|| format!("{}: no .modinfo section", path.display()))?;
        infos.insert(name.to_owned(), data);
        Ok(Some(info))
    })?;
    let modules: Vec<(String, Vec<u8>)> = order
        .iter()
        .map(|name| (name.clone(), infos.remove(name).unwrap_or_default()))
        .collect();
    super::initramfs::build_modules(&tmp.join("modules.cpio.gz"), &modules)?;
    println!(
        "    modules for /init, in load order: {} ({:.1} MB uncompressed)",
        order.join(" "),
        modules.iter().map(|(_, d)| d.len()).sum::<usize>() as f64 / 1e6
    );

    std::fs::rename(&tmp, kept)?;
    let _ = std::fs::remove_file(&deb);
    // Older versions (and older recipes) are never used again.
    for entry in std::fs::read_dir(base)?.flatten() {
        let p = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if p != kept && name.starts_with("linux-image-") {
            let _ = std::fs::remove_dir_all(&p);
        }
    }
    println!("==> kernel variant debian61: cached as {}", kept.display());
    Ok(())
}

/// `lib/modules/<release>` of the unpacked package (or `usr/lib/...` after the /usr merge).
fn module_tree(root: &Path) -> crate::Result<PathBuf> {
    for dir in ["lib/modules", "usr/lib/modules"] {
        let first = std::fs::read_dir(root.join(dir)).ok().and_then(|mut d| d.next());
        if let Some(Ok(e)) = first {
            return Ok(e.path());
        }
    }
    Err(format!("no lib/modules/<release> in {}", root.display()).into())
}

/// Module name -> file, for every `.ko[.xz|.zst|.gz]` under `dir`.
fn index_modules(dir: &Path) -> crate::Result<BTreeMap<String, PathBuf>> {
    let mut found = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).map_err(|e| format!("{}: {e}", d.display()))? {
            let path = entry?.path();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if path.is_dir() {
                stack.push(path);
            } else if [".ko", ".ko.xz", ".ko.zst", ".ko.gz"].iter().any(|s| name.ends_with(s)) {
                found.insert(module_name(&name), path);
            }
        }
    }
    Ok(found)
}

/// The module name of a file name or path (`kernel/drivers/vfio/pci/vfio-pci.ko.xz` ->
/// `vfio_pci`): the kernel treats `-` and `_` alike in module names.
fn module_name(file: &str) -> String {
    let base = file.rsplit('/').next().unwrap_or(file);
    let stem = base.split(".ko").next().unwrap_or(base);
    stem.replace('-', "_")
}

/// A module file, decompressed.
fn read_module(path: &Path) -> crate::Result<Vec<u8>> {
    let name = path.to_string_lossy();
    let tool = [
        (".ko.xz", "xz", "xz-utils"),
        (".ko.zst", "zstd", "zstd"),
        (".ko.gz", "gzip", "gzip"),
    ]
    .into_iter()
    .find(|(suffix, _, _)| name.ends_with(suffix));
    let Some((_, program, package)) = tool else {
        return Ok(std::fs::read(path).map_err(|e| format!("cannot read {name}: {e}"))?);
    };
    let out = Command::new(program)
        .arg("-dc")
        .arg(path)
        .output()
        .map_err(|e| format!("cannot run {program} to decompress {name}: {e} (install {package})"))?;
    if !out.status.success() {
        return Err(format!(
            "{program} -dc {name} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    Ok(out.stdout)
}

/// What a module's `.modinfo` says about loading it.
#[derive(Debug, Default, PartialEq)]
struct ModInfo {
    /// Modules it needs loaded first (`depends=`).
    depends: Vec<String>,
    /// Soft dependencies to load before it (`softdep=pre: ...`).
    pre: Vec<String>,
    /// Soft dependencies to load after it (`softdep=... post: ...`).
    post: Vec<String>,
}

/// Parses the `.modinfo` section of a module (an ELF64 little-endian relocatable object).
fn modinfo(elf: &[u8]) -> Option<ModInfo> {
    let at = |o: usize, n: usize| elf.get(o..o.checked_add(n)?);
    let u16_at = |o| Some(u16::from_le_bytes(at(o, 2)?.try_into().ok()?) as usize);
    let u32_at = |o| Some(u32::from_le_bytes(at(o, 4)?.try_into().ok()?) as usize);
    let u64_at = |o| usize::try_from(u64::from_le_bytes(at(o, 8)?.try_into().ok()?)).ok();
    if at(0, 6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let (shoff, shentsize, shnum, shstrndx) = (u64_at(0x28)?, u16_at(0x3a)?, u16_at(0x3c)?, u16_at(0x3e)?);
    // (name offset, file offset, size) of section `i`.
    let section = |i: usize| {
        let h = shoff.checked_add(i.checked_mul(shentsize)?)?;
        Some((u32_at(h)?, u64_at(h + 24)?, u64_at(h + 32)?))
    };
    let (_, str_off, str_size) = section(shstrndx)?;
    let names = at(str_off, str_size)?;
    let data = (0..shnum).find_map(|i| {
        let (name, off, size) = section(i)?;
        let name = names.get(name..)?;
        let name = &name[..name.iter().position(|&b| b == 0)?];
        (name == b".modinfo").then(|| at(off, size)).flatten()
    })?;
    let mut info = ModInfo::default();
    let names = |list: &str| -> Vec<String> {
        list.split([',', ' '])
            .filter(|n| !n.is_empty())
            .map(module_name)
            .collect()
    };
    for entry in data.split(|&b| b == 0) {
        let Ok(entry) = std::str::from_utf8(entry) else {
            continue;
        };
        if let Some(list) = entry.strip_prefix("depends=") {
            info.depends.extend(names(list));
        } else if let Some(spec) = entry.strip_prefix("softdep=") {
            // "pre: a b post: c": each keyword applies to the names after it.
            let mut into_pre = true;
            for word in spec.split_whitespace() {
                match word {
                    "pre:" => into_pre = true,
                    "post:" => into_pre = false,
                    name if into_pre => info.pre.push(module_name(name)),
                    name => info.post.push(module_name(name)),
                }
            }
        }
    }
    Some(info)
}

/// The modules to insmod for `roots`, each after what it depends on; built-in ones are left
/// out. `info` gives a module's [`ModInfo`] (`None`: the kernel has no such module). Hard
/// dependencies must exist; soft ones are skipped when absent (vfio names the POWER-only
/// `vfio_iommu_spapr_tce`), as modprobe does.
fn load_order(
    roots: &[&str],
    builtin: &HashSet<String>,
    mut info: impl FnMut(&str) -> crate::Result<Option<ModInfo>>,
) -> crate::Result<Vec<String>> {
    fn visit(
        name: &str,
        hard: bool,
        builtin: &HashSet<String>,
        info: &mut dyn FnMut(&str) -> crate::Result<Option<ModInfo>>,
        seen: &mut HashSet<String>,
        order: &mut Vec<String>,
    ) -> crate::Result {
        if builtin.contains(name) || !seen.insert(name.to_owned()) {
            return Ok(());
        }
        let Some(m) = info(name)? else {
            if hard {
                return Err(format!("the kernel has no module {name}, and it is not built in").into());
            }
            return Ok(());
        };
        for d in &m.depends {
            visit(d, true, builtin, info, seen, order)?;
        }
        for d in &m.pre {
            visit(d, false, builtin, info, seen, order)?;
        }
        order.push(name.to_owned());
        for d in &m.post {
            visit(d, false, builtin, info, seen, order)?;
        }
        Ok(())
    }
    let (mut seen, mut order) = (HashSet::new(), Vec::new());
    for root in roots {
        visit(root, true, builtin, &mut info, &mut seen, &mut order)?;
    }
    Ok(order)
}

/// `CONFIG_X` -> value, from a kernel `.config` (`n` for `# CONFIG_X is not set`).
fn parse_config(text: &str) -> BTreeMap<String, String> {
    let mut options = BTreeMap::new();
    for line in text.lines() {
        if let Some((k, v)) = line.split_once('=').filter(|_| line.starts_with("CONFIG_")) {
            options.insert(k.to_owned(), v.to_owned());
        } else if let Some(k) = line.strip_prefix("# ").and_then(|l| l.strip_suffix(" is not set")) {
            options.insert(k.to_owned(), "n".to_owned());
        }
    }
    options
}

/// Fails, naming each one, unless every [`REQUIRED`] option has a usable value.
fn check_config(options: &BTreeMap<String, String>, package: &str) -> crate::Result {
    let missing: Vec<String> = REQUIRED
        .iter()
        .filter_map(|(key, ok)| {
            let have = options.get(*key).map_or("n", String::as_str);
            (!ok.contains(&have)).then(|| format!("{key}={} (got {have})", ok.join("|")))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(format!(
        "{package} cannot boot the tests: its config lacks {}",
        missing.join(", ")
    )
    .into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 LE object with a null section, `.modinfo` and `.shstrtab`.
    fn elf_with_modinfo(modinfo: &[u8]) -> Vec<u8> {
        let shstrtab = b"\0.modinfo\0.shstrtab\0";
        let mut elf = vec![0u8; 64];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        let modinfo_off = elf.len();
        elf.extend_from_slice(modinfo);
        let strtab_off = elf.len();
        elf.extend_from_slice(shstrtab);
        while elf.len() % 8 != 0 {
            elf.push(0);
        }
        let shoff = elf.len();
        let header = |name: u32, off: usize, size: usize| {
            let mut h = vec![0u8; 64];
            h[..4].copy_from_slice(&name.to_le_bytes());
            h[24..32].copy_from_slice(&(off as u64).to_le_bytes());
            h[32..40].copy_from_slice(&(size as u64).to_le_bytes());
            h
        };
        elf.extend(header(0, 0, 0));
        elf.extend(header(1, modinfo_off, modinfo.len()));
        elf.extend(header(10, strtab_off, shstrtab.len()));
        elf[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        elf[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        elf[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        elf[0x3e..0x40].copy_from_slice(&2u16.to_le_bytes());
        elf
    }

    #[test]
    fn reads_depends_and_softdeps_from_modinfo() {
        let elf = elf_with_modinfo(
            b"license=GPL\0softdep=pre: crc32 post: vfio_iommu_type1 vfio-iommu-spapr-tce\0depends=vfio-pci-core,vfio\0name=vfio_pci\0",
        );
        let info = modinfo(&elf).unwrap();
        assert_eq!(info.depends, ["vfio_pci_core", "vfio"]);
        assert_eq!(info.pre, ["crc32"]);
        assert_eq!(info.post, ["vfio_iommu_type1", "vfio_iommu_spapr_tce"]);
        assert!(modinfo(&elf[..40]).is_none());
        assert!(modinfo(b"not an ELF at all, not at all....").is_none());
    }

    #[test]
    fn empty_depends_is_no_dependency() {
        let info = modinfo(&elf_with_modinfo(b"depends=\0name=irqbypass\0")).unwrap();
        assert_eq!(info, ModInfo::default());
    }

    #[test]
    fn load_order_puts_dependencies_first() {
        // The bookworm 6.1 graph.
        let graph: BTreeMap<&str, (&[&str], &[&str])> = BTreeMap::from([
            ("vfio", (&[][..], &["vfio_iommu_type1", "vfio_iommu_spapr_tce"][..])),
            ("vfio_iommu_type1", (&["vfio"][..], &[][..])),
            ("vfio_virqfd", (&[], &[])),
            ("irqbypass", (&[], &[])),
            ("vfio_pci_core", (&["vfio", "vfio_virqfd", "irqbypass"], &[])),
            ("vfio_pci", (&["vfio_pci_core", "vfio"], &[])),
            ("virtio_ring", (&[], &[])),
            ("virtio", (&["virtio_ring"], &[])),
            (
                "virtio_pci",
                (
                    &[
                        "virtio_ring",
                        "virtio_pci_modern_dev",
                        "virtio_pci_legacy_dev",
                        "virtio",
                    ],
                    &[],
                ),
            ),
            ("virtio_pci_modern_dev", (&[], &[])),
            ("virtio_pci_legacy_dev", (&[], &[])),
        ]);
        let info = |name: &str| {
            Ok(graph.get(name).map(|(deps, post)| ModInfo {
                depends: deps.iter().map(|s| s.to_string()).collect(),
                pre: Vec::new(),
                post: post.iter().map(|s| s.to_string()).collect(),
            }))
        };
        let order = load_order(ROOTS, &HashSet::new(), info).unwrap();
        assert_eq!(
            order,
            [
                "vfio",
                "vfio_iommu_type1",
                "vfio_virqfd",
                "irqbypass",
                "vfio_pci_core",
                "vfio_pci",
                "virtio_ring",
                "virtio_pci_modern_dev",
                "virtio_pci_legacy_dev",
                "virtio",
                "virtio_pci",
            ]
        );
        // Built-in modules are not loaded, and a missing hard dependency is an error.
        let builtin = HashSet::from(["virtio".to_owned(), "virtio_ring".to_owned()]);
        let order = load_order(&["virtio_pci"], &builtin, info).unwrap();
        assert_eq!(order, ["virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci"]);
        assert!(load_order(&["nonexistent"], &HashSet::new(), info).is_err());
    }

    #[test]
    fn module_names_from_paths() {
        assert_eq!(
            module_name("kernel/drivers/vfio/pci/vfio-pci-core.ko.zst"),
            "vfio_pci_core"
        );
        assert_eq!(module_name("irqbypass.ko"), "irqbypass");
    }

    #[test]
    fn config_check_names_what_is_missing() {
        let options = parse_config("CONFIG_VFIO=m\n# CONFIG_VFIO_PCI is not set\nCONFIG_HUGETLBFS=y\n");
        assert_eq!(options.get("CONFIG_VFIO_PCI").map(String::as_str), Some("n"));
        let e = check_config(&options, "pkg").unwrap_err().to_string();
        assert!(e.contains("CONFIG_VFIO_PCI=y|m (got n)"), "{e}");
        assert!(!e.contains("CONFIG_VFIO="), "{e}");
    }
}
