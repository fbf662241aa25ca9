//! The guest kernel: fetch Debian's kernel source, configure it from the checked-in fragments,
//! build the bzImage and cache it.
//!
//! Cache layout (under [`super::cache_dir`]):
//! - `apt/`: private apt sources list, lists and archives, so the host's apt setup is never touched;
//! - `src/pkg/` (the unpacked .deb), `src/linux-source-X.Y/` (the source tree) and
//!   `src/linux-source-X.Y.version` (the Debian version of that tree);
//! - `build/`: the one out-of-tree build directory, shared by both variants. Switching variants
//!   in place rebuilds in seconds; a copied build directory would rebuild fully (objtool records
//!   absolute paths), so it is never copied or moved;
//! - `kernels/<version>-<fragment hash>/bzImage` (+ `config`): the finished kernels. A hit here
//!   skips the build entirely.

use super::{Variant, run_checked};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Debian package holding the kernel source; override with `VFIO_KERNEL_PACKAGE`.
const DEFAULT_PACKAGE: &str = "linux-source-7.3";
/// Suite the package comes from; override with `VFIO_KERNEL_SUITE`.
pub(crate) const DEFAULT_SUITE: &str = "trixie-backports";
pub(crate) const MIRROR: &str = "http://deb.debian.org/debian";
pub(crate) const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
/// Bump when the build recipe changes in a way the fragments do not show, to invalidate the cache.
const RECIPE: &str = "allnoconfig+fragment ARCH=x86_64 bzImage v1";

/// The Debian kernel source package, as resolved for this run.
pub struct Source {
    package: String,
    /// Debian version, e.g. `7.3.4-1~bpo13+1`.
    pub version: String,
}

pub(crate) fn package() -> String {
    std::env::var("VFIO_KERNEL_PACKAGE").unwrap_or_else(|_| DEFAULT_PACKAGE.to_owned())
}

/// apt-get/apt-cache options that keep all state in `cache/apt`.
fn apt_options(cache: &Path) -> crate::Result<Vec<String>> {
    let suite = std::env::var("VFIO_KERNEL_SUITE").unwrap_or_else(|_| DEFAULT_SUITE.to_owned());
    apt_options_in(
        &cache.join("apt"),
        &format!("deb [signed-by={KEYRING}] {MIRROR} {suite} main\n"),
    )
}

/// apt-get/apt-cache options that keep all state (sources list, package lists, downloads) in
/// `dir`, with `sources` as the only sources list, so the host's apt setup is never touched.
pub(crate) fn apt_options_in(dir: &Path, sources: &str) -> crate::Result<Vec<String>> {
    std::fs::create_dir_all(dir.join("lists/partial"))?;
    std::fs::create_dir_all(dir.join("archives/partial"))?;
    std::fs::write(dir.join("sources.list"), sources)?;
    let d = dir.display();
    let mut opts = vec![
        format!("Dir::Etc::SourceList={d}/sources.list"),
        "Dir::Etc::SourceParts=-".to_owned(),
        format!("Dir::State::Lists={d}/lists"),
        "Dir::Cache::pkgcache=".to_owned(),
        "Dir::Cache::srcpkgcache=".to_owned(),
        format!("Dir::Cache::archives={d}/archives"),
        "Debug::NoLocking=1".to_owned(),
    ];
    if super::install::is_root() {
        // The sandbox user `_apt` cannot enter root's home directory.
        opts.push("APT::Sandbox::User=root".to_owned());
    }
    Ok(opts.into_iter().flat_map(|o| ["-o".to_owned(), o]).collect())
}

/// `apt-get update` with `opts`, then the candidate version of `package` (`apt-cache policy`).
pub(super) fn apt_candidate(opts: &[String], package: &str) -> crate::Result<String> {
    let out = Command::new("apt-get").args(opts).args(["-q", "update"]).output()?;
    if !out.status.success() {
        return Err(format!("apt-get update failed: {}", String::from_utf8_lossy(&out.stderr).trim()).into());
    }
    apt_policy(opts, package)
}

/// The candidate version of `package` in the package lists `opts` point at (no update).
pub(super) fn apt_policy(opts: &[String], package: &str) -> crate::Result<String> {
    let out = Command::new("apt-cache")
        .args(opts)
        .args(["policy", package])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Candidate:"))
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty() && v != "(none)")
        .ok_or_else(|| format!("the archive has no package {package}").into())
}

/// `apt-get download PACKAGE=VERSION` into `archives` (with `opts`); returns the .deb.
pub(crate) fn apt_download(opts: &[String], archives: &Path, package: &str, version: &str) -> crate::Result<PathBuf> {
    // apt-get download writes into the current directory.
    let mut cmd = Command::new("apt-get");
    cmd.args(opts)
        .args(["-q", "download", &format!("{package}={version}")])
        .current_dir(archives);
    run_checked(&mut cmd, &format!("download {package}"))?;
    std::fs::read_dir(archives)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy().into_owned();
            name.starts_with(&format!("{package}_")) && name.ends_with(".deb")
        })
        .ok_or_else(|| format!("apt-get download of {package} produced no .deb").into())
}

/// Asks the Debian archive for the newest version of the source package. Offline, falls back to
/// the version already unpacked in the cache (with a warning).
pub fn resolve(cache: &Path) -> crate::Result<Source> {
    let package = package();
    let opts = apt_options(cache)?;
    match apt_candidate(&opts, &package) {
        Ok(version) => Ok(Source { package, version }),
        Err(e) => match unpacked_version(cache, &package) {
            Some(version) => {
                println!("warning: cannot ask the Debian archive ({e}); using the cached {package} {version}");
                Ok(Source { package, version })
            }
            None => Err(format!(
                "cannot resolve {package}: {e}. The harness needs network access to {MIRROR} on the first run"
            )
            .into()),
        },
    }
}

/// The Debian version of the source tree unpacked in the cache, if any: from our marker file, or
/// else from the changelog of an unpacked package (a tree unpacked by hand).
pub(crate) fn unpacked_version(cache: &Path, package: &str) -> Option<String> {
    let src = cache.join("src");
    if !src.join(package).join("Makefile").exists() {
        return None;
    }
    if let Ok(v) = std::fs::read_to_string(src.join(format!("{package}.version"))) {
        return Some(v.trim().to_owned());
    }
    let changelog = src.join("pkg/usr/share/doc").join(package).join("changelog.Debian.gz");
    let out = Command::new("zcat")
        .arg(&changelog)
        .stdout(Stdio::piped())
        .spawn()
        .ok()?;
    let mut first = String::new();
    BufReader::new(out.stdout?).read_line(&mut first).ok()?;
    // "linux (7.3.4-1~bpo13+1) trixie-backports; urgency=medium"
    let v = first.split_once('(')?.1.split_once(')')?.0.to_owned();
    std::fs::write(src.join(format!("{package}.version")), &v).ok()?;
    Some(v)
}

/// Returns the path of the cached bzImage for `variant`, building it first if needed.
pub fn ensure(cache: &Path, source: &Source, variant: Variant) -> crate::Result<PathBuf> {
    let fragment = fragment(variant)?;
    let key = format!(
        "{}-{:016x}",
        source.version,
        fnv1a(format!("{RECIPE}\n{fragment}").as_bytes())
    );
    let dir = cache.join("kernels").join(&key);
    let bzimage = dir.join("bzImage");
    if bzimage.exists() {
        println!("==> kernel variant {variant}: cached {}", bzimage.display());
        return Ok(bzimage);
    }
    println!(
        "==> kernel variant {variant}: building {} {} (cache key {key})",
        source.package, source.version
    );
    let tree = unpack(cache, source)?;
    let build = cache.join("build");
    // A build directory from another source version has newer timestamps than the new tree's
    // files, so make would keep stale objects: start over. (A build directory without our stamp
    // was made by hand from the tree that is unpacked now, which unpack() just confirmed.)
    let stamp = build.join(".vfio-rs-source");
    let stamp_version = std::fs::read_to_string(&stamp).ok();
    if build.exists() && stamp_version.is_some_and(|v| v != source.version) {
        println!("    build directory is from another source version; removing it");
        std::fs::remove_dir_all(&build)?;
    }
    std::fs::create_dir_all(&build)?;
    std::fs::write(&stamp, &source.version)?;

    let frag_path = cache.join(format!("fragment-{variant}.config"));
    std::fs::write(&frag_path, &fragment)?;
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
    let make = |args: &[String]| {
        let mut cmd = Command::new("make");
        cmd.arg("-C")
            .arg(&tree)
            .arg(format!("O={}", build.display()))
            .arg("ARCH=x86_64")
            .args(args);
        cmd
    };
    make_with_progress(
        make(&[
            format!("KCONFIG_ALLCONFIG={}", frag_path.display()),
            "allnoconfig".into(),
        ]),
        "allnoconfig",
    )?;
    verify_config(&build.join(".config"), &fragment, variant)?;
    make_with_progress(make(&[format!("-j{jobs}"), "bzImage".into()]), "bzImage")?;

    std::fs::create_dir_all(&dir)?;
    let tmp = dir.join("bzImage.tmp");
    std::fs::copy(build.join("arch/x86/boot/bzImage"), &tmp)?;
    std::fs::copy(build.join(".config"), dir.join("config"))?;
    std::fs::rename(&tmp, &bzimage)?;
    println!("==> kernel variant {variant}: cached as {}", bzimage.display());
    Ok(bzimage)
}

/// base.config followed by the variant's file, from xtask/kernel/.
fn fragment(variant: Variant) -> crate::Result<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("kernel");
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name)).map_err(|e| format!("cannot read {}/{name}: {e}", dir.display()))
    };
    Ok(format!(
        "{}\n{}",
        read("base.config")?,
        read(&format!("variant-{variant}.config"))?
    ))
}

/// The unpacked kernel source tree the harness builds from: the newest version the archive has
/// (downloading and unpacking it if needed, which replaces the tree of an older version).
pub fn source_tree(cache: &Path) -> crate::Result<PathBuf> {
    unpack(cache, &resolve(cache)?)
}

/// Makes sure `src/<package>` holds the wanted version, downloading and unpacking it if not.
fn unpack(cache: &Path, source: &Source) -> crate::Result<PathBuf> {
    let src = cache.join("src");
    let tree = src.join(&source.package);
    if unpacked_version(cache, &source.package).as_deref() == Some(source.version.as_str()) {
        return Ok(tree);
    }
    println!("    downloading {} {}", source.package, source.version);
    let opts = apt_options(cache)?;
    let deb = apt_download(&opts, &cache.join("apt/archives"), &source.package, &source.version)?;

    println!("    unpacking {}", deb.display());
    let _ = std::fs::remove_dir_all(&tree);
    let _ = std::fs::remove_dir_all(cache.join("build"));
    let _ = std::fs::remove_dir_all(src.join("pkg"));
    let _ = std::fs::remove_file(src.join(format!("{}.version", source.package)));
    std::fs::create_dir_all(&src)?;
    run_checked(
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(src.join("pkg")),
        "unpack the .deb",
    )?;
    let tarball = src.join("pkg/usr/src").join(format!("{}.tar.xz", source.package));
    run_checked(
        Command::new("tar").arg("xJf").arg(&tarball).current_dir(&src),
        "unpack the kernel tarball",
    )?;
    if !tree.join("Makefile").exists() {
        return Err(format!("{} did not unpack to {}", tarball.display(), tree.display()).into());
    }
    // The tarball is inside pkg/; keep only the changelog-bearing tree and our marker.
    let _ = std::fs::remove_file(&tarball);
    let _ = std::fs::remove_file(&deb);
    std::fs::write(src.join(format!("{}.version", source.package)), &source.version)?;
    Ok(tree)
}

/// Checks that every option the fragment sets (`CONFIG_X=v`) or unsets (`# CONFIG_X is not set`)
/// came out that way in the final `.config`; names every one that did not.
fn verify_config(config: &Path, fragment: &str, variant: Variant) -> crate::Result {
    let text = std::fs::read_to_string(config).map_err(|e| format!("cannot read {}: {e}", config.display()))?;
    let mut got = std::collections::HashMap::new();
    for line in text.lines() {
        if let Some((k, v)) = line.split_once('=').filter(|_| line.starts_with("CONFIG_")) {
            got.insert(k.to_owned(), v.to_owned());
        } else if let Some(k) = line.strip_prefix("# ").and_then(|l| l.strip_suffix(" is not set")) {
            got.insert(k.to_owned(), "n".to_owned());
        }
    }
    let mut missing = Vec::new();
    for line in fragment.lines().map(str::trim) {
        let (key, want) = if let Some((k, v)) = line.split_once('=').filter(|_| line.starts_with("CONFIG_")) {
            (k, v)
        } else if let Some(k) = line.strip_prefix("# ").and_then(|l| l.strip_suffix(" is not set")) {
            (k, "n")
        } else {
            continue;
        };
        // An option that does not appear at all is off, which is what `is not set` asks for.
        let have = got.get(key).map_or("n", String::as_str);
        if have != want {
            missing.push(format!("{key}={want} (got {have})"));
        }
    }
    if missing.is_empty() {
        println!(
            "    .config has all {} requested options",
            fragment.lines().filter(|l| l.contains("CONFIG_")).count()
        );
        return Ok(());
    }
    Err(format!(
        "kernel variant {variant}: the final {} lacks {} requested option(s): {}. \
         Fix xtask/kernel/*.config (an option's dependencies are probably missing).",
        config.display(),
        missing.len(),
        missing.join(", ")
    )
    .into())
}

/// Runs make, printing its notable stages and a heartbeat with the elapsed time every 30 s
/// instead of every line; on failure prints the last lines of its output.
fn make_with_progress(mut cmd: Command, what: &str) -> crate::Result {
    let start = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run make: {e} (install make and gcc)"))?;
    let (tx, rx) = mpsc::channel::<String>();
    let readers: Vec<_> = [
        child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
        child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|stream| {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        })
    })
    .collect();
    drop(tx);

    let mut tail = std::collections::VecDeque::new();
    let mut steps = 0usize;
    let mut next_beat = Duration::from_secs(30);
    loop {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(line) => {
                steps += 1;
                let t = line.trim_start();
                let stage = t.starts_with("LD      vmlinux")
                    || t.starts_with("BUILD   arch/x86/boot/bzImage")
                    || t.starts_with("Kernel: ")
                    || t.starts_with("SYNC    ")
                    || t.starts_with("HOSTLD  scripts/kconfig/conf")
                    || t.starts_with("LINK    ")
                    || t.contains("error:")
                    || t.starts_with("***");
                if stage {
                    println!("    [{}] {t}", elapsed(start));
                }
                if tail.len() == 60 {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if start.elapsed() >= next_beat {
            let last = tail.back().map_or("", |l| l.trim());
            println!(
                "    [{}] make {what}: {steps} steps so far, last: {last}",
                elapsed(start)
            );
            next_beat += Duration::from_secs(30);
        }
    }
    for r in readers {
        let _ = r.join();
    }
    let status = child.wait()?;
    if !status.success() {
        eprintln!("---- last lines of make {what} ----");
        for l in &tail {
            eprintln!("{l}");
        }
        return Err(format!("make {what} failed ({status}); output above").into());
    }
    println!("    make {what} done in {}", elapsed(start));
    Ok(())
}

fn elapsed(start: Instant) -> String {
    let s = start.elapsed().as_secs();
    format!("{}m{:02}s", s / 60, s % 60)
}

/// FNV-1a 64: a stable hash for cache keys (std's hasher is not stable across releases).
pub(super) fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
