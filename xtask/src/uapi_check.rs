//! Which headers `cargo xtask regen-uapi --check` compares the checked-in bindings against.
//!
//! The bindings record the Linux version they were generated from (`UAPI_VERSION` in
//! `vfio-sys/src/version.rs` and `iommufd-sys/src/version.rs`) and, in the crate docs, the Debian
//! package version of those headers (e.g. `linux-libc-dev` `7.3.4-1~bpo13+1`). A check is only
//! meaningful against exactly that version, so `--check --from-cache`:
//!
//! 1. uses headers of the recorded version already in the harness cache: `linux-libc-dev`
//!    fetched by an earlier check (`<cache>/uapi/linux-libc-dev_<version>/`), else the harness's
//!    unpacked kernel source tree if it is that version;
//! 2. else downloads that exact `linux-libc-dev` from Debian's normal mirror (a private apt
//!    setup in `<cache>/uapi/apt`, never the host's), and keeps it for the next check;
//! 3. else fails, saying what the bindings record, what the cache and the archive have, and what
//!    to do. It never passes on a version it did not compare.
//!
//! `--check --from DIR` fails the same way when DIR's version is not the recorded one. The
//! decisions are pure functions, unit-tested below; [`headers_for_check`] does the I/O.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::vm::kernel;

/// The Debian package the uapi headers come from.
pub const HEADERS_PACKAGE: &str = "linux-libc-dev";

/// The crates whose bindings record a version (their directories).
const CRATES: &[&str] = &["vfio-sys", "iommufd-sys"];

/// The version the checked-in bindings were generated from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// The Linux version, `UAPI_VERSION` (e.g. `7.3.4`).
    pub upstream: String,
    /// The Debian package version of the headers, when the crate docs name one
    /// (e.g. `7.3.4-1~bpo13+1`).
    pub debian: Option<String>,
}

impl std::fmt::Display for Recorded {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match &self.debian {
            Some(d) => write!(f, "Linux {} (Debian {HEADERS_PACKAGE} {d})", self.upstream),
            None => write!(f, "Linux {}", self.upstream),
        }
    }
}

/// `UAPI_VERSION`'s value in a generated `version.rs`.
fn uapi_version(version_rs: &str) -> Option<String> {
    let line = version_rs.lines().find(|l| l.contains("UAPI_VERSION"))?;
    Some(line.split('"').nth(1)?.to_owned())
}

/// The Debian version the crate docs give for `upstream`: the first backquoted word that starts
/// with `<upstream>-` (as in "Debian `linux-libc-dev` `7.3.4-1~bpo13+1`").
fn debian_version_in_docs(text: &str, upstream: &str) -> Option<String> {
    let prefix = format!("{upstream}-");
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(str::trim)
        .find(|w| w.starts_with(&prefix) && !w.contains(char::is_whitespace))
        .map(str::to_owned)
}

/// What the crates record, from each crate's (`version.rs`, `lib.rs`) text. Errors when a
/// version is unreadable or the crates disagree.
pub fn recorded_from(crates: &[(&str, &str, &str)]) -> Result<Recorded, String> {
    let mut found: Option<(String, Recorded)> = None;
    for (name, version_rs, lib_rs) in crates {
        let upstream =
            uapi_version(version_rs).ok_or_else(|| format!("{name}/src/version.rs has no UAPI_VERSION \"...\""))?;
        let debian = debian_version_in_docs(lib_rs, &upstream);
        let this = Recorded { upstream, debian };
        match &mut found {
            None => found = Some((name.to_string(), this)),
            Some((first, rec)) => {
                if rec.upstream != this.upstream {
                    return Err(format!(
                        "{first} records Linux {} but {name} records {}: regenerate both",
                        rec.upstream, this.upstream
                    ));
                }
                match (&rec.debian, this.debian) {
                    (Some(a), Some(b)) if *a != b => {
                        return Err(format!(
                            "{first}'s docs name Debian version {a} but {name}'s name {b}: make them agree"
                        ));
                    }
                    (None, Some(b)) => rec.debian = Some(b),
                    _ => {}
                }
            }
        }
    }
    found.map(|(_, r)| r).ok_or_else(|| "no crates to read".to_owned())
}

/// Reads what the checked-in crates under `root` record.
pub fn recorded(root: &Path) -> crate::Result<Recorded> {
    let mut texts = Vec::new();
    for name in CRATES {
        let read = |file: &str| {
            let p = root.join(name).join("src").join(file);
            std::fs::read_to_string(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))
        };
        texts.push((*name, read("version.rs")?, read("lib.rs")?));
    }
    let borrowed: Vec<(&str, &str, &str)> = texts.iter().map(|(n, v, l)| (*n, v.as_str(), l.as_str())).collect();
    Ok(recorded_from(&borrowed)?)
}

/// The upstream part of a Debian version: no epoch, no Debian revision
/// (`1:7.3.4-1~bpo13+1` -> `7.3.4`).
pub fn upstream_of(debian: &str) -> &str {
    let no_epoch = debian.split_once(':').map_or(debian, |(_, v)| v);
    no_epoch.rsplit_once('-').map_or(no_epoch, |(u, _)| u)
}

/// Whether headers of Debian version `candidate` are the recorded ones: that exact Debian
/// version when the docs name one, else the same Linux version.
pub fn matches(rec: &Recorded, candidate: &str) -> bool {
    match &rec.debian {
        Some(d) => candidate == d,
        None => upstream_of(candidate) == rec.upstream,
    }
}

/// Where the headers for the check come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// A headers directory (`.../usr/include`) of the recorded version, fetched earlier.
    Headers { include: PathBuf, version: String },
    /// The harness's kernel source tree, which is the recorded version.
    Tree { tree: PathBuf, version: String },
    /// Nothing in the cache is the recorded version: download it.
    Fetch,
}

/// Picks what to compare against: fetched headers of the recorded version, else the cached
/// source tree if it is that version, else a download. `tree` is (path, Debian version, Linux
/// version from its Makefile); `headers` are (include dir, Debian version).
pub fn plan(rec: &Recorded, tree: Option<(PathBuf, String, Option<String>)>, headers: &[(PathBuf, String)]) -> Plan {
    if let Some((include, version)) = headers.iter().find(|(_, v)| matches(rec, v)) {
        return Plan::Headers {
            include: include.clone(),
            version: version.clone(),
        };
    }
    match tree {
        // The Makefile must agree too: a tree unpacked by hand may not be what its marker says.
        Some((tree, version, makefile)) if matches(rec, &version) && makefile.as_deref() == Some(&rec.upstream) => {
            Plan::Tree { tree, version }
        }
        _ => Plan::Fetch,
    }
}

/// Which version of [`HEADERS_PACKAGE`] to download, given the versions the archive offers;
/// the error says why none will do.
pub fn pick_download(rec: &Recorded, available: &[String], suite: &str) -> Result<String, String> {
    // Several Debian revisions of the same Linux version (no recorded revision): the archive
    // lists the newest first.
    if let Some(v) = available.iter().find(|v| matches(rec, v)) {
        return Ok(v.clone());
    }
    let offered = if available.is_empty() {
        "none".to_owned()
    } else {
        available.join(", ")
    };
    Err(format!(
        "{suite} offers {HEADERS_PACKAGE} only in: {offered} (Debian's mirrors keep only recent versions; \
         snapshot.debian.org is not used)"
    ))
}

/// The Debian suite that has `rec`'s headers: the backports suite a `~bpoNN` version names, else
/// `default` (the harness's kernel suite).
pub fn suite_for(rec: &Recorded, default: &str) -> String {
    let release = rec
        .debian
        .as_deref()
        .and_then(|d| d.split_once("~bpo"))
        .and_then(|(_, rest)| rest.get(..2))
        .and_then(|n| n.parse::<u32>().ok());
    let codename = match release {
        Some(11) => "bullseye",
        Some(12) => "bookworm",
        Some(13) => "trixie",
        Some(14) => "forky",
        Some(15) => "duke",
        _ => return default.to_owned(),
    };
    format!("{codename}-backports")
}

/// `--check --from DIR`: DIR's headers must be the recorded version.
pub fn explicit_check(rec: &Recorded, version: &str) -> Result<(), String> {
    if version == rec.upstream {
        Ok(())
    } else {
        Err(format!(
            "not compared: the headers are Linux {version} but the checked-in bindings are {rec}. \
             Pass headers of {} (or regenerate without --check to move the bindings to {version})",
            rec.upstream
        ))
    }
}

/// The headers to check against and a description of them, for `--check --from-cache`:
/// `(directory for regen-uapi's --from, description)`. See the module docs for the order.
pub fn headers_for_check(cache: &Path, rec: &Recorded) -> crate::Result<(PathBuf, String)> {
    let package = kernel::package();
    let tree_dir = cache.join("src").join(&package);
    let tree = kernel::unpacked_version(cache, &package).map(|v| {
        let makefile = crate::regen_uapi::kernel_version(&tree_dir);
        (tree_dir.clone(), v, makefile)
    });
    let tree_desc = match &tree {
        Some((_, v, m)) => format!("{package} {v} (Linux {})", m.as_deref().unwrap_or("of unknown version")),
        None => format!("no {package} tree"),
    };
    let store = cache.join("uapi");
    let headers = fetched_headers(&store);
    match plan(rec, tree, &headers) {
        Plan::Headers { include, version } => {
            let desc = format!("{HEADERS_PACKAGE} {version} fetched earlier into {}", include.display());
            Ok((include, desc))
        }
        Plan::Tree { tree, version } => {
            let desc = format!("the harness's {package} {version} source tree ({})", tree.display());
            Ok((tree, desc))
        }
        Plan::Fetch => {
            println!("the harness cache has {tree_desc}, not the bindings' {rec}: fetching {HEADERS_PACKAGE}");
            let default_suite = std::env::var("VFIO_KERNEL_SUITE").unwrap_or_else(|_| kernel::DEFAULT_SUITE.to_owned());
            let suite = suite_for(rec, &default_suite);
            match fetch(&store, rec, &suite) {
                Ok((include, version)) => {
                    let desc = format!("{HEADERS_PACKAGE} {version} from {suite} ({})", include.display());
                    Ok((include, desc))
                }
                Err(why) => Err(format!(
                    "uapi check FAILED, nothing compared: the checked-in bindings are {rec}; the harness \
                     cache has {tree_desc}; {why}. Either move the bindings to the new version \
                     (`cargo xtask regen-uapi --from-cache`, then update the version the vfio-sys and \
                     iommufd-sys docs name), or check against headers of {} you have: \
                     `cargo xtask regen-uapi --check --from DIR --version {}`",
                    rec.upstream, rec.upstream
                )
                .into()),
            }
        }
    }
}

/// Headers fetched by earlier checks: `<store>/linux-libc-dev_<version>/usr/include` with the
/// `version` marker written after a complete unpack.
fn fetched_headers(store: &Path) -> Vec<(PathBuf, String)> {
    let Ok(dir) = std::fs::read_dir(store) else {
        return Vec::new();
    };
    let mut found: Vec<(PathBuf, String)> = dir
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{HEADERS_PACKAGE}_")))
        })
        .filter_map(|p| {
            let version = std::fs::read_to_string(p.join("version")).ok()?.trim().to_owned();
            let include = p.join("usr/include");
            include.join("linux/vfio.h").is_file().then_some((include, version))
        })
        .collect();
    found.sort();
    found
}

/// Downloads the recorded version of [`HEADERS_PACKAGE`] from `suite` into `store` and unpacks
/// it; returns (include dir, Debian version). The error says what the archive offers.
fn fetch(store: &Path, rec: &Recorded, suite: &str) -> Result<(PathBuf, String), String> {
    let apt = store.join("apt");
    let sources = format!("deb [signed-by={}] {} {suite} main\n", kernel::KEYRING, kernel::MIRROR);
    let mut opts =
        kernel::apt_options_in(&apt, &sources).map_err(|e| format!("cannot set up apt in {}: {e}", apt.display()))?;
    for o in [
        "Acquire::Languages=none",
        "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false",
        "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false",
        "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false",
        "Acquire::IndexTargets::deb::DEP-11-icons-hidpi::DefaultEnabled=false",
    ] {
        opts.extend(["-o".to_owned(), o.to_owned()]);
    }
    let out = Command::new("apt-get")
        .args(&opts)
        .args(["-q", "update"])
        .output()
        .map_err(|e| format!("cannot run apt-get: {e}"))?;
    // apt-get update exits 0 when it could not fetch a list, warning on stderr.
    let update_said = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    if !out.status.success() {
        return Err(format!("asking {} for {suite} failed: {update_said}", kernel::MIRROR));
    }
    let out = Command::new("apt-cache")
        .args(&opts)
        .args(["madison", HEADERS_PACKAGE])
        .output()
        .map_err(|e| format!("cannot run apt-cache: {e}"))?;
    // "linux-libc-dev | 7.3.4-1~bpo13+1 | http://deb.debian.org/debian trixie-backports/main amd64 Packages"
    let mut available: Vec<String> = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut fields = line.split('|').map(str::trim);
        if fields.next() != Some(HEADERS_PACKAGE) {
            continue;
        }
        if let Some(v) = fields.next().filter(|v| !available.iter().any(|a| a == v)) {
            available.push(v.to_owned());
        }
    }
    if available.is_empty() && !update_said.is_empty() {
        return Err(format!(
            "could not read {suite}'s package list from {} (apt-get update: {})",
            kernel::MIRROR,
            update_said.lines().take(3).collect::<Vec<_>>().join(" / ")
        ));
    }
    let version = pick_download(rec, &available, suite)?;
    let archives = apt.join("archives");
    // apt_download returns the first linux-libc-dev_*.deb it finds: leave only the new one.
    clear_debs(&archives);
    let deb = kernel::apt_download(&opts, &archives, HEADERS_PACKAGE, &version).map_err(|e| e.to_string())?;
    let got = Command::new("dpkg-deb")
        .arg("-f")
        .arg(&deb)
        .arg("Version")
        .output()
        .map_err(|e| format!("cannot run dpkg-deb: {e}"))?;
    let got = String::from_utf8_lossy(&got.stdout).trim().to_owned();
    if got != version {
        return Err(format!(
            "{} is version `{got}`, not the {version} asked for",
            deb.display()
        ));
    }
    let dest = store.join(format!("{HEADERS_PACKAGE}_{version}"));
    let tmp = store.join(format!("tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let unpacked = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&tmp)
        .status()
        .map_err(|e| format!("cannot run dpkg-deb: {e}"))?;
    let _ = std::fs::remove_file(&deb);
    if !unpacked.success() || !tmp.join("usr/include/linux/vfio.h").is_file() {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(format!(
            "unpacking {HEADERS_PACKAGE} {version} gave no usr/include/linux/vfio.h"
        ));
    }
    // The marker last: a directory without it is never used.
    std::fs::write(tmp.join("version"), &version).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::rename(&tmp, &dest).map_err(|e| format!("cannot move {} to {}: {e}", tmp.display(), dest.display()))?;
    println!("    fetched {HEADERS_PACKAGE} {version} into {}", dest.display());
    Ok((dest.join("usr/include"), version))
}

/// Removes the `linux-libc-dev_*.deb` files in `archives`.
fn clear_debs(archives: &Path) {
    let Ok(dir) = std::fs::read_dir(archives) else {
        return;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(&format!("{HEADERS_PACKAGE}_")) && name.ends_with(".deb") {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VERSION_RS: &str = "// Generated.\n/// Version.\npub const UAPI_VERSION: &str = \"7.3.4\";\n";
    const LIB_RS: &str = "//! Generated by bindgen from the uapi headers of Linux 7.3.4 (Debian\n\
                          //! `linux-libc-dev` `7.3.4-1~bpo13+1`) and checked in; regenerate with\n\
                          //! `cargo xtask regen-uapi`.\n";

    fn rec(upstream: &str, debian: Option<&str>) -> Recorded {
        Recorded {
            upstream: upstream.into(),
            debian: debian.map(Into::into),
        }
    }

    #[test]
    fn reads_what_the_crates_record() {
        let r = recorded_from(&[("vfio-sys", VERSION_RS, LIB_RS), ("iommufd-sys", VERSION_RS, LIB_RS)]).unwrap();
        assert_eq!(r, rec("7.3.4", Some("7.3.4-1~bpo13+1")));
        assert_eq!(r.to_string(), "Linux 7.3.4 (Debian linux-libc-dev 7.3.4-1~bpo13+1)");
        // Docs that name no Debian version (or one of another Linux version): upstream only.
        let other = "//! from `linux-libc-dev` `7.2.1-1` once\n";
        let r = recorded_from(&[("vfio-sys", VERSION_RS, other)]).unwrap();
        assert_eq!(r, rec("7.3.4", None));
        // One crate's docs name it: that is the record.
        let r = recorded_from(&[("vfio-sys", VERSION_RS, other), ("iommufd-sys", VERSION_RS, LIB_RS)]).unwrap();
        assert_eq!(r.debian.as_deref(), Some("7.3.4-1~bpo13+1"));
    }

    #[test]
    fn disagreeing_crates_are_an_error() {
        let v735 = VERSION_RS.replace("7.3.4", "7.3.5");
        let e = recorded_from(&[("vfio-sys", VERSION_RS, LIB_RS), ("iommufd-sys", &v735, LIB_RS)]).unwrap_err();
        assert!(e.contains("7.3.4") && e.contains("7.3.5"), "{e}");
        let lib2 = LIB_RS.replace("-1~bpo13+1", "-2~bpo13+1");
        let e = recorded_from(&[("vfio-sys", VERSION_RS, LIB_RS), ("iommufd-sys", VERSION_RS, &lib2)]).unwrap_err();
        assert!(e.contains("7.3.4-2~bpo13+1"), "{e}");
        assert!(recorded_from(&[("vfio-sys", "nothing", LIB_RS)]).is_err());
    }

    #[test]
    fn the_checked_in_crates_record_a_version() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let r = recorded(root).expect("vfio-sys and iommufd-sys record a version");
        assert!(!r.upstream.is_empty());
        if let Some(d) = &r.debian {
            assert_eq!(upstream_of(d), r.upstream);
        }
    }

    #[test]
    fn upstream_and_matching() {
        assert_eq!(upstream_of("7.3.4-1~bpo13+1"), "7.3.4");
        assert_eq!(upstream_of("1:7.3.4-1"), "7.3.4");
        assert_eq!(upstream_of("7.3.4"), "7.3.4");
        let exact = rec("7.3.4", Some("7.3.4-1~bpo13+1"));
        assert!(matches(&exact, "7.3.4-1~bpo13+1"));
        // Same Linux version, other Debian revision: not what the bindings record.
        assert!(!matches(&exact, "7.3.4-2~bpo13+1"));
        assert!(!matches(&exact, "7.3.5-1~bpo13+1"));
        let loose = rec("7.3.4", None);
        assert!(matches(&loose, "7.3.4-2~bpo13+1"));
        assert!(!matches(&loose, "7.3.5-1~bpo13+1"));
    }

    #[test]
    fn plan_prefers_fetched_headers_then_the_tree_then_a_download() {
        let r = rec("7.3.4", Some("7.3.4-1~bpo13+1"));
        let tree = |deb: &str, mk: &str| {
            Some((
                PathBuf::from("/c/src/linux-source-7.3"),
                deb.to_owned(),
                Some(mk.to_owned()),
            ))
        };
        let hdr = |deb: &str| {
            (
                PathBuf::from(format!("/c/uapi/linux-libc-dev_{deb}/usr/include")),
                deb.to_owned(),
            )
        };
        // Today's case: the harness's tree is the recorded version.
        assert_eq!(
            plan(&r, tree("7.3.4-1~bpo13+1", "7.3.4"), &[]),
            Plan::Tree {
                tree: "/c/src/linux-source-7.3".into(),
                version: "7.3.4-1~bpo13+1".into()
            }
        );
        // The archive moved on: the tree is newer, nothing fetched yet -> download.
        assert_eq!(plan(&r, tree("7.3.5-1~bpo13+1", "7.3.5"), &[]), Plan::Fetch);
        assert_eq!(plan(&r, None, &[]), Plan::Fetch);
        // Fetched earlier: used, whatever the tree is.
        assert_eq!(
            plan(
                &r,
                tree("7.3.5-1~bpo13+1", "7.3.5"),
                &[hdr("7.3.5-1~bpo13+1"), hdr("7.3.4-1~bpo13+1")]
            ),
            Plan::Headers {
                include: "/c/uapi/linux-libc-dev_7.3.4-1~bpo13+1/usr/include".into(),
                version: "7.3.4-1~bpo13+1".into()
            }
        );
        // A marker saying 7.3.4 on a tree whose Makefile says otherwise is not trusted.
        assert_eq!(plan(&r, tree("7.3.4-1~bpo13+1", "7.3.5"), &[]), Plan::Fetch);
        // Same Linux version, other Debian revision: download the recorded one.
        assert_eq!(plan(&r, tree("7.3.4-2~bpo13+1", "7.3.4"), &[]), Plan::Fetch);
    }

    #[test]
    fn download_choice_or_why_not() {
        let r = rec("7.3.4", Some("7.3.4-1~bpo13+1"));
        let avail = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            pick_download(&r, &avail(&["7.3.5-1~bpo13+1", "7.3.4-1~bpo13+1"]), "trixie-backports").unwrap(),
            "7.3.4-1~bpo13+1"
        );
        let e = pick_download(&r, &avail(&["7.3.5-1~bpo13+1", "7.2.12-1~bpo13+1"]), "trixie-backports").unwrap_err();
        assert!(
            e.contains("trixie-backports") && e.contains("7.3.5-1~bpo13+1, 7.2.12-1~bpo13+1"),
            "{e}"
        );
        let e = pick_download(&r, &[], "trixie-backports").unwrap_err();
        assert!(e.contains("only in: none"), "{e}");
        // Without a recorded revision, the first (newest) of that Linux version.
        let loose = rec("7.3.4", None);
        assert_eq!(
            pick_download(&loose, &avail(&["7.3.5-1", "7.3.4-3", "7.3.4-1"]), "sid").unwrap(),
            "7.3.4-3"
        );
    }

    #[test]
    fn suite_from_the_backports_tag() {
        assert_eq!(
            suite_for(&rec("7.3.4", Some("7.3.4-1~bpo13+1")), "x"),
            "trixie-backports"
        );
        assert_eq!(
            suite_for(&rec("6.1.1", Some("6.1.1-1~bpo12+1")), "x"),
            "bookworm-backports"
        );
        assert_eq!(suite_for(&rec("7.3.4", Some("7.3.4-1")), "sid"), "sid");
        assert_eq!(suite_for(&rec("7.3.4", None), "trixie-backports"), "trixie-backports");
    }

    #[test]
    fn explicit_headers_of_another_version_are_not_compared() {
        let r = rec("7.3.4", Some("7.3.4-1~bpo13+1"));
        assert!(explicit_check(&r, "7.3.4").is_ok());
        let e = explicit_check(&r, "7.3.5").unwrap_err();
        assert!(
            e.contains("not compared") && e.contains("7.3.5") && e.contains("7.3.4"),
            "{e}"
        );
    }

    #[test]
    fn finds_complete_fetched_headers_only() {
        let store = std::env::temp_dir().join(format!("xtask-uapi-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&store);
        let complete = store.join("linux-libc-dev_7.3.4-1~bpo13+1");
        std::fs::create_dir_all(complete.join("usr/include/linux")).unwrap();
        std::fs::write(complete.join("usr/include/linux/vfio.h"), "").unwrap();
        std::fs::write(complete.join("version"), "7.3.4-1~bpo13+1\n").unwrap();
        // No marker: an interrupted unpack.
        let partial = store.join("linux-libc-dev_7.3.5-1~bpo13+1");
        std::fs::create_dir_all(partial.join("usr/include/linux")).unwrap();
        std::fs::write(partial.join("usr/include/linux/vfio.h"), "").unwrap();
        let found = fetched_headers(&store);
        std::fs::remove_dir_all(&store).unwrap();
        assert_eq!(found, [(complete.join("usr/include"), "7.3.4-1~bpo13+1".to_owned())]);
    }
}
