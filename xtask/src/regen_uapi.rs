//! `cargo xtask regen-uapi --from <kernel tree | headers dir> [--check] [--version V]`
//!
//! Regenerates the checked-in bindings of `vfio-sys` (`linux/vfio.h`) and
//! `iommufd-sys` (`linux/iommufd.h`):
//!
//! - `src/bindings.rs`: bindgen output (items of that header only, comments kept,
//!   constified enums without the enum name prepended, zerocopy derives where they apply);
//! - `src/ioctls.rs`: every `_IO`/`_IOR`/`_IOW`/`_IOWR` request number of the header,
//!   computed by compiling a small C program against the same headers;
//! - `src/version.rs`: `UAPI_VERSION`.
//!
//! With `--check`, the files are generated into a temporary directory and compared
//! with the checked-in ones, from headers of exactly the version the bindings record (see
//! [`crate::uapi_check`]): `--check --from-cache` finds or fetches them, and fails, comparing
//! nothing, when it cannot; `--check --from DIR` fails when DIR is another version.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use bindgen::callbacks::{DeriveInfo, ParseCallbacks, TypeKind};

/// The zerocopy traits derived on plain-data structs.
const ZEROCOPY_ALL: &[&str] = &[
    "zerocopy::FromBytes",
    "zerocopy::IntoBytes",
    "zerocopy::Immutable",
    "zerocopy::KnownLayout",
];

/// The zerocopy traits derived on unions and on structs containing a union
/// (`IntoBytes` on unions needs an unstable zerocopy cfg).
const ZEROCOPY_NO_INTO_BYTES: &[&str] = &["zerocopy::FromBytes", "zerocopy::Immutable", "zerocopy::KnownLayout"];

/// Structs that have implicit padding, so `IntoBytes` cannot be derived
/// (found by compiling; keep sorted).
const PADDED: &[&str] = &["vfio_iommu_type1_info_cap_migration"];

/// What to generate for one crate.
struct Target {
    krate: &'static str,
    header: &'static str,
}

const TARGETS: &[Target] = &[
    Target {
        krate: "vfio-sys",
        header: "linux/vfio.h",
    },
    Target {
        krate: "iommufd-sys",
        header: "linux/iommufd.h",
    },
];

struct Args {
    /// `None`: `--from-cache`, the guest harness's cache: its kernel source (the newest in
    /// Debian's archive) to regenerate; with `--check`, headers of the version the bindings record.
    from: Option<PathBuf>,
    check: bool,
    version: Option<String>,
}

fn parse_args(args: &[String]) -> crate::Result<Args> {
    let mut from = None;
    let mut check = false;
    let mut version = None;
    let mut from_cache = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--from" => from = Some(PathBuf::from(it.next().ok_or("--from needs a directory")?)),
            "--from-cache" => from_cache = true,
            "--check" => check = true,
            "--version" => version = Some(it.next().ok_or("--version needs a value")?.clone()),
            s if s.starts_with("--from=") => from = Some(PathBuf::from(&s["--from=".len()..])),
            s if s.starts_with("--version=") => version = Some(s["--version=".len()..].to_string()),
            "-h" | "--help" => {
                return Err(
                    "usage: cargo xtask regen-uapi --from <kernel tree | headers dir> | --from-cache [--check] [--version V]".into(),
                );
            }
            other => return Err(format!("unknown argument `{other}`").into()),
        }
    }
    match (&from, from_cache) {
        (Some(_), true) => return Err("give --from or --from-cache, not both".into()),
        (None, false) => return Err("missing --from <kernel tree | headers dir> (or --from-cache)".into()),
        _ => {}
    }
    if from_cache && check && version.is_some() {
        return Err(
            "--version does not go with --check --from-cache: the check uses the version the bindings record".into(),
        );
    }
    Ok(Args { from, check, version })
}

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> crate::Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let p = std::env::temp_dir().join(format!("xtask-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p)?;
        Ok(Self(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Reads `VERSION`, `PATCHLEVEL`, `SUBLEVEL` from a kernel tree's Makefile.
pub(crate) fn kernel_version(tree: &Path) -> Option<String> {
    let text = std::fs::read_to_string(tree.join("Makefile")).ok()?;
    let get = |key: &str| {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == key).then(|| v.trim().to_string())
        })
    };
    let (v, p, s) = (get("VERSION")?, get("PATCHLEVEL")?, get("SUBLEVEL")?);
    if v.is_empty() || p.is_empty() {
        return None;
    }
    let s = if s.is_empty() { "0".to_string() } else { s };
    Some(format!("{v}.{p}.{s}"))
}

pub fn main(args: &[String]) -> crate::Result {
    let args = parse_args(args)?;
    let root = workspace_root();
    // What a check compares against: the recorded version, and (from the cache) which headers.
    let recorded = if args.check {
        Some(crate::uapi_check::recorded(&root)?)
    } else {
        None
    };
    let (from, forced_version, compared) = match (&args.from, &recorded) {
        (Some(from), _) => (from.clone(), args.version.clone(), None),
        (None, Some(rec)) => {
            let (dir, desc) = crate::uapi_check::headers_for_check(&crate::vm::cache_dir()?, rec)?;
            (dir, Some(rec.upstream.clone()), Some(desc))
        }
        (None, None) => (
            crate::vm::kernel::source_tree(&crate::vm::cache_dir()?)?,
            args.version.clone(),
            None,
        ),
    };
    let from = &from;

    // Keeps the headers_install output alive while generating.
    let mut _hdr_tmp = None;
    let (include, tree_version) = if from.join("include/uapi/linux/vfio.h").is_file() {
        let tmp = TempDir::new("uapi-hdrs")?;
        let install = tmp.0.join("install");
        eprintln!("running headers_install on kernel tree {}", from.display());
        let status = Command::new("make")
            .arg("-C")
            .arg(from)
            .arg(format!("O={}", tmp.0.join("build").display()))
            .arg(format!("INSTALL_HDR_PATH={}", install.display()))
            .arg("headers_install")
            .stdout(std::process::Stdio::null())
            .status()
            .map_err(|e| format!("cannot run make: {e}"))?;
        if !status.success() {
            return Err(format!(
                "`make headers_install` failed in {} (needs make, gcc and rsync)",
                from.display()
            )
            .into());
        }
        let inc = install.join("include");
        _hdr_tmp = Some(tmp);
        (inc, kernel_version(from))
    } else if from.join("linux/vfio.h").is_file() {
        (from.clone(), None)
    } else if from.join("usr/include/linux/vfio.h").is_file() {
        (from.join("usr/include"), None)
    } else {
        return Err(format!(
            "{}: neither a kernel tree (include/uapi/linux/vfio.h) nor a headers dir (linux/vfio.h or usr/include/linux/vfio.h)",
            from.display()
        )
        .into());
    };
    if let (true, Some(forced), Some(tree)) = (args.check, &forced_version, &tree_version) {
        if forced != tree {
            return Err(format!(
                "not compared: {} is Linux {tree}, not the {forced} given",
                from.display()
            )
            .into());
        }
    }
    let version = forced_version
        .or(tree_version)
        .ok_or("cannot tell the kernel version of these headers: pass --version <x.y.z>")?;
    // Never compare (and so never pass) on headers of another version than the bindings'.
    if let Some(rec) = &recorded {
        crate::uapi_check::explicit_check(rec, &version)?;
    }
    check_libclang()?;

    let out_tmp = TempDir::new("uapi-out")?;
    let mut stale = false;
    for t in TARGETS {
        let files = generate(t, &include, &version)?;
        let crate_src = root.join(t.krate).join("src");
        for (name, contents) in files {
            let contents = rustfmt(&contents, &root)?;
            let dest = crate_src.join(name);
            if args.check {
                let current = std::fs::read_to_string(&dest).unwrap_or_default();
                if current != contents {
                    stale = true;
                    let new = out_tmp.0.join(format!("{}-{name}", t.krate));
                    std::fs::write(&new, &contents)?;
                    show_diff(&dest, &new);
                }
            } else {
                std::fs::create_dir_all(&crate_src)?;
                std::fs::write(&dest, contents)?;
                eprintln!("wrote {}", dest.display());
            }
        }
    }
    if args.check {
        if stale {
            return Err(format!(
                "uapi bindings are stale: run `cargo xtask regen-uapi --from {} --version {version}`",
                from.display()
            )
            .into());
        }
        let against = compared.unwrap_or_else(|| from.display().to_string());
        println!("uapi bindings are up to date (Linux {version}, compared against {against})");
    }
    Ok(())
}

fn show_diff(old: &Path, new: &Path) {
    let ran = Command::new("diff").arg("-u").arg(old).arg(new).status().is_ok();
    if !ran {
        eprintln!("{} differs from the generated output", old.display());
    }
}

/// bindgen panics when libclang cannot be loaded: turn that into a helpful error.
fn check_libclang() -> crate::Result {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let res = std::panic::catch_unwind(|| {
        bindgen::Builder::default()
            .header_contents("probe.h", "int probe;")
            .generate()
            .is_ok()
    });
    std::panic::set_hook(hook);
    match res {
        Ok(_) => Ok(()),
        Err(_) => Err(
            "libclang is missing: install it with `apt-get install libclang-dev` (Debian/Ubuntu) or set LIBCLANG_PATH"
                .into(),
        ),
    }
}

/// Include directories: the headers dir, plus its multiarch dir (for `asm/`) if present.
fn include_args(include: &Path) -> Vec<String> {
    let mut v = vec![format!("-I{}", include.display())];
    let multiarch = include.join(format!("{}-linux-gnu", std::env::consts::ARCH));
    if multiarch.is_dir() {
        v.push(format!("-I{}", multiarch.display()));
    }
    v
}

fn generate(t: &Target, include: &Path, version: &str) -> crate::Result<Vec<(&'static str, String)>> {
    let header_path = include.join(t.header);
    let header_text = std::fs::read_to_string(&header_path).map_err(|e| format!("{}: {e}", header_path.display()))?;

    // Pass 1: plain bindings, to learn which types are plain data.
    let plain = run_bindgen(t, include, None)?;
    let derives = zerocopy_derives(&plain);
    // Pass 2: with the zerocopy derives.
    let mut bindings = run_bindgen(t, include, Some(derives))?;
    bindings = patch_incomplete_array(&bindings)?;

    let banner = format!(
        "// Generated by `cargo xtask regen-uapi` from the Linux {version} uapi header <{}>.\n\
         // Do not edit by hand.\n\n",
        t.header
    );

    let ioctls = ioctl_numbers(t, include, &header_text)?;
    let mut ioctl_rs = banner.clone();
    let _ = writeln!(
        ioctl_rs,
        "//! ioctl request numbers of `<{}>` (bindgen does not expand `_IO()`).\n",
        t.header
    );
    for (name, value) in &ioctls {
        let _ = writeln!(ioctl_rs, "/// `{name}` ioctl request number.");
        let _ = writeln!(ioctl_rs, "pub const {name}: u32 = {value:#x};");
    }
    let _ = writeln!(
        ioctl_rs,
        "\n/// Every request number above with its name (for logs and error messages).\n\
         pub const IOCTL_NAMES: &[(u32, &str)] = &["
    );
    for (name, _) in &ioctls {
        let _ = writeln!(ioctl_rs, "    ({name}, \"{name}\"),");
    }
    let _ = writeln!(ioctl_rs, "];");

    let version_rs = format!(
        "{banner}/// Version of the Linux uapi headers these bindings were generated from.\n\
         pub const UAPI_VERSION: &str = \"{version}\";\n"
    );

    Ok(vec![
        ("bindings.rs", format!("{banner}{bindings}")),
        ("ioctls.rs", ioctl_rs),
        ("version.rs", version_rs),
    ])
}

#[derive(Debug)]
struct Derives {
    all: BTreeSet<String>,
    no_into_bytes: BTreeSet<String>,
}

impl ParseCallbacks for Derives {
    fn add_derives(&self, info: &DeriveInfo<'_>) -> Vec<String> {
        let list = if matches!(info.kind, TypeKind::Union) {
            self.no_into_bytes.contains(info.name).then_some(ZEROCOPY_NO_INTO_BYTES)
        } else if self.all.contains(info.name) {
            Some(ZEROCOPY_ALL)
        } else if self.no_into_bytes.contains(info.name) {
            Some(ZEROCOPY_NO_INTO_BYTES)
        } else {
            None
        };
        list.map(|l| l.iter().map(|s| s.to_string()).collect())
            .unwrap_or_default()
    }

    fn process_comment(&self, comment: &str) -> Option<String> {
        Some(fence_indented_blocks(comment))
    }
}

/// Header comments use indentation for layout; markdown would turn an indented
/// paragraph into a Rust code block (and a failing doctest): fence those as `text`.
fn fence_indented_blocks(comment: &str) -> String {
    let width = |l: &str| {
        l.chars()
            .take_while(|c| c.is_whitespace())
            .map(|c| if c == '\t' { 4 } else { 1 })
            .sum::<usize>()
    };
    let base = comment
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(width)
        .min()
        .unwrap_or(0);
    let mut out: Vec<String> = Vec::new();
    let mut prev_blank = true;
    let mut in_fence = false; // a fence we opened
    let mut in_user_fence = false; // a fence the header wrote
    for line in comment.lines() {
        let blank = line.trim().is_empty();
        if line.trim_start().starts_with("```") && !in_fence {
            in_user_fence = !in_user_fence;
        } else if !in_user_fence {
            let indented = !blank && width(line) >= base + 4;
            if in_fence && !blank && !indented {
                // Close before the blank lines that ended the block.
                let trailing = out.iter().rev().take_while(|l| l.trim().is_empty()).count();
                let at = out.len() - trailing;
                out.insert(at, " ```".to_string());
                in_fence = false;
            } else if !in_fence && indented && prev_blank {
                out.push(" ```text".to_string());
                in_fence = true;
            }
        }
        out.push(line.to_string());
        prev_blank = blank;
    }
    if in_fence {
        let trailing = out.iter().rev().take_while(|l| l.trim().is_empty()).count();
        let at = out.len() - trailing;
        out.insert(at, " ```".to_string());
    }
    let mut s = out.join("\n");
    if comment.ends_with('\n') {
        s.push('\n');
    }
    s
}

fn run_bindgen(t: &Target, include: &Path, derives: Option<Derives>) -> crate::Result<String> {
    let file_re = format!(".*/{}", t.header.replace('.', "\\."));
    let formatted = derives.is_some();
    let mut b = bindgen::Builder::default()
        .header(include.join(t.header).display().to_string())
        .clang_args(include_args(include))
        .clang_arg("-fparse-all-comments")
        .allowlist_file(file_re)
        .use_core()
        .ctypes_prefix("core::ffi")
        .prepend_enum_name(false)
        .generate_comments(true)
        .layout_tests(true)
        .derive_default(true)
        .derive_debug(true)
        .derive_copy(true)
        .impl_debug(false)
        .formatter(if formatted {
            bindgen::Formatter::Prettyplease
        } else {
            bindgen::Formatter::None
        });
    if let Some(d) = derives {
        b = b.parse_callbacks(Box::new(d));
    }
    let bindings = b
        .generate()
        .map_err(|e| format!("bindgen failed on {}: {e}", t.header))?;
    Ok(bindings.to_string())
}

/// Splits bindgen's (unformatted) output into item definitions:
/// `struct`/`union` name -> list of field type strings.
fn type_fields(code: &str) -> BTreeMap<String, (bool, Vec<String>)> {
    let code = strip_strings(code);
    let mut out = BTreeMap::new();
    for (kw, is_union) in [("pub struct ", false), ("pub union ", true)] {
        let mut rest = code.as_str();
        while let Some(pos) = rest.find(kw) {
            rest = &rest[pos + kw.len()..];
            let name_end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            let name = rest[..name_end].to_string();
            let after = rest[name_end..].trim_start();
            if !after.starts_with('{') {
                continue; // tuple or generic struct (bindgen helpers)
            }
            let body_start = rest.len() - after.len() + 1;
            let mut depth = 1;
            let mut end = body_start;
            for (i, c) in rest[body_start..].char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            end = body_start + i;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let body = &rest[body_start..end];
            // Fields: `pub name : Type ,` (doc attributes stripped by splitting on `pub `).
            let fields = body
                .split("pub ")
                .skip(1)
                .filter_map(|f| {
                    let (_, ty) = f.split_once(':')?;
                    let ty = ty.split(',').next().unwrap_or_default();
                    Some(ty.trim().to_string())
                })
                .collect();
            out.insert(name, (is_union, fields));
        }
    }
    out
}

/// Removes string literals (doc attributes) from token-stream text.
fn strip_strings(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut chars = code.chars();
    while let Some(c) = chars.next() {
        if c == '"' {
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        chars.next();
                    }
                    '"' => break,
                    _ => {}
                }
            }
            out.push_str("\"\"");
        } else {
            out.push(c);
        }
    }
    out
}

/// Decides which types get which zerocopy derives.
fn zerocopy_derives(code: &str) -> Derives {
    let types = type_fields(code);
    // Type aliases to primitives (`__u32`, enums' `c_uint`, ...) are fine: treat every
    // identifier that is not a struct/union as primitive-like, but reject pointers,
    // bitfields and anything generic other than the incomplete array (which is patched to
    // implement the zerocopy traits).
    let bad = |ty: &str| {
        ty.contains('*')
            || ty.contains("__BindgenBitfieldUnit")
            || ty.contains("__BindgenUnionField")
            || ty.contains("Option <")
            || ty.contains("fn (")
    };
    let idents = |ty: &str| -> Vec<String> {
        ty.split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    };
    let mut ok: BTreeMap<String, bool> = types
        .iter()
        .map(|(n, (_, f))| (n.clone(), !f.iter().any(|t| bad(t))))
        .collect();
    // has_union: (transitively) contains a union, or is one.
    let mut has_union: BTreeMap<String, bool> = types.iter().map(|(n, (u, _))| (n.clone(), *u)).collect();
    let padded: BTreeSet<&str> = PADDED.iter().copied().collect();
    loop {
        let mut changed = false;
        for (name, (_, fields)) in &types {
            for f in fields {
                for id in idents(f) {
                    if types.contains_key(&id) {
                        if ok[name] && !ok[&id] {
                            ok.insert(name.clone(), false);
                            changed = true;
                        }
                        if !has_union[name] && (has_union[&id] || padded.contains(id.as_str())) {
                            has_union.insert(name.clone(), true);
                            changed = true;
                        }
                    }
                }
            }
        }
        if !changed {
            break;
        }
    }
    let mut d = Derives {
        all: BTreeSet::new(),
        no_into_bytes: BTreeSet::new(),
    };
    for (name, good) in ok {
        if !good {
            continue;
        }
        if has_union[&name] || padded.contains(name.as_str()) {
            d.no_into_bytes.insert(name);
        } else {
            d.all.insert(name);
        }
    }
    d
}

/// Gives bindgen's (formatted) `__IncompleteArrayField<T>` (flexible array members) the zerocopy
/// traits so that structs ending in `T name[]` stay plain data.
fn patch_incomplete_array(code: &str) -> crate::Result<String> {
    const DEF: &str = "pub struct __IncompleteArrayField<T>(::core::marker::PhantomData<T>, [T; 0]);";
    let compact: String = DEF.split_whitespace().collect();
    let Some(start) = code.find("pub struct __IncompleteArrayField") else {
        return Ok(code.to_string());
    };
    let close = start + code[start..].find(')').ok_or("malformed __IncompleteArrayField")?;
    let end = close + code[close..].find(';').ok_or("malformed __IncompleteArrayField")? + 1;
    let found: String = code[start..end].split_whitespace().collect();
    if found != compact {
        return Err(format!("unexpected __IncompleteArrayField definition: {}", &code[start..end]).into());
    }
    // Replace `#[repr(C)]` just before it by `#[repr(transparent)]` (same layout: the only
    // non-1-ZST field is `[T; 0]`) which lets zerocopy derive `IntoBytes` for generic T.
    let before = &code[..start];
    let repr = before
        .rfind("#[repr(C)]")
        .ok_or("no #[repr(C)] on __IncompleteArrayField")?;
    let between = &before[repr + "#[repr(C)]".len()..];
    let mut out = String::with_capacity(code.len() + 200);
    out.push_str(&before[..repr]);
    out.push_str(
        "#[repr(transparent)]\n#[derive(zerocopy::FromBytes, zerocopy::IntoBytes, zerocopy::Immutable, zerocopy::KnownLayout)]",
    );
    out.push_str(between);
    out.push_str(&code[start..]);
    Ok(out)
}

/// Finds `#define NAME _IO...(` macros (continuation lines joined).
fn ioctl_macros(header: &str) -> Vec<String> {
    let joined = header.replace("\\\n", " ");
    let mut names = Vec::new();
    for line in joined.lines() {
        let Some(rest) = line.trim_start().strip_prefix("#define") else {
            continue;
        };
        let rest = rest.trim_start();
        let name_end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let (name, body) = rest.split_at(name_end);
        if body.starts_with('(') {
            continue; // function-like macro
        }
        let body = body.trim_start();
        if ["_IO(", "_IOR(", "_IOW(", "_IOWR("]
            .iter()
            .any(|p| body.replace(' ', "").starts_with(p))
        {
            names.push(name.to_string());
        }
    }
    names
}

/// Compiles and runs a C program printing every ioctl number of the header.
fn ioctl_numbers(t: &Target, include: &Path, header: &str) -> crate::Result<Vec<(String, u32)>> {
    let names = ioctl_macros(header);
    if names.is_empty() {
        return Err(format!("no ioctl macros found in {}", t.header).into());
    }
    let tmp = TempDir::new("uapi-ioctls")?;
    let mut c = format!("#include <stdio.h>\n#include <{}>\nint main(void) {{\n", t.header);
    for n in &names {
        let _ = writeln!(c, "  printf(\"%s %lu\\n\", \"{n}\", (unsigned long)({n}));");
    }
    c.push_str("  return 0;\n}\n");
    let src = tmp.0.join("ioctls.c");
    let exe = tmp.0.join("ioctls");
    std::fs::write(&src, c)?;
    let out = Command::new("cc")
        .args(include_args(include))
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .output()
        .map_err(|e| format!("cannot run the C compiler `cc`: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "compiling the ioctl number program failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    let out = Command::new(&exe).output()?;
    if !out.status.success() {
        return Err("the ioctl number program failed".into());
    }
    let mut v = Vec::new();
    for line in String::from_utf8(out.stdout)?.lines() {
        let (name, val) = line.split_once(' ').ok_or("bad ioctl program output")?;
        let val: u64 = val.parse()?;
        let val = u32::try_from(val).map_err(|_| format!("{name} = {val} does not fit u32"))?;
        v.push((name.to_string(), val));
    }
    Ok(v)
}

/// Formats Rust source with rustfmt (edition 2024, the workspace's rustfmt.toml if any).
fn rustfmt(code: &str, root: &Path) -> crate::Result<String> {
    use std::io::Write as _;
    let mut cmd = Command::new(std::env::var("RUSTFMT").unwrap_or_else(|_| "rustfmt".into()));
    cmd.args(["--edition", "2024", "--emit", "stdout"]);
    for cfg in ["rustfmt.toml", ".rustfmt.toml"] {
        if root.join(cfg).is_file() {
            cmd.arg("--config-path").arg(root.join(cfg));
        }
    }
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run rustfmt: {e}"))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = code.to_string();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output()?;
    writer.join().map_err(|_| "rustfmt writer panicked")??;
    if !out.status.success() {
        return Err(format!("rustfmt failed:\n{}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(String::from_utf8(out.stdout)?)
}
