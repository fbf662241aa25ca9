//! Builds the guest's initramfs: a gzip-compressed `newc` cpio archive, written here directly
//! (no root needed for the `/dev/console` node) and compressed by piping through `gzip`.
//!
//! Layout: `/init` (xtask/guest/init.sh), `/bin/busybox` (its applet links are made by `/init`),
//! `/dev/console` (the kernel opens it for init's stdio before `/dev` is mounted),
//! `/tests/<name>`, `/examples/<name>` and `/examples/run.list` (one `NAME ARGS...` per run).
//!
//! A modular kernel (the packaged Debian one) gets a second archive appended to this one (the
//! kernel unpacks concatenated archives in turn): `/lib/modules/<name>.ko` and
//! `/lib/modules/load.list`, the module names in load order, which `/init` insmods.

use super::guest::Binary;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// The guest's `/init`, checked into the repository next to this harness.
const INIT: &str = include_str!("../../guest/init.sh");

/// What goes into the initramfs besides busybox and `/init`.
pub struct Contents<'a> {
    pub tests: &'a [Binary],
    pub examples: &'a [Binary],
    /// Example runs in order: (example name, argument string).
    pub runs: &'a [(String, String)],
}

/// Writes `out` (gzip cpio) with busybox from `busybox` and the given programs.
pub fn build(out: &Path, busybox: &Path, contents: &Contents) -> crate::Result {
    let mut cpio = Newc::default();
    for dir in ["bin", "dev", "proc", "sys", "tmp", "root", "etc", "tests", "examples"] {
        cpio.entry(dir, 0o040755, (0, 0), &[]);
    }
    cpio.entry("dev/console", 0o020600, (5, 1), &[]);
    cpio.entry("init", 0o100755, (0, 0), INIT.as_bytes());
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()));
    cpio.entry("bin/busybox", 0o100755, (0, 0), &read(busybox)?);
    for t in contents.tests {
        cpio.entry(&format!("tests/{}", t.name), 0o100755, (0, 0), &read(&t.path)?);
    }
    for e in contents.examples {
        cpio.entry(&format!("examples/{}", e.name), 0o100755, (0, 0), &read(&e.path)?);
    }
    if !contents.runs.is_empty() {
        let list: String = contents.runs.iter().map(|(n, a)| format!("{n} {a}\n")).collect();
        cpio.entry("examples/run.list", 0o100644, (0, 0), list.as_bytes());
    }
    cpio.entry("TRAILER!!!", 0, (0, 0), &[]);
    // gzip -1: the archive is rebuilt on every run, and the kernel unpacks it in well under a second.
    write_gzip(out, &cpio.buf, "-1")
}

/// Writes `out` (gzip cpio), the archive of kernel modules appended to the initramfs for a
/// modular kernel: `/lib/modules/<name>.ko` for each `(name, uncompressed module)` and
/// `/lib/modules/load.list` with the names in the given (load) order.
pub fn build_modules(out: &Path, modules: &[(String, Vec<u8>)]) -> crate::Result {
    let mut cpio = Newc::default();
    for dir in ["lib", "lib/modules"] {
        cpio.entry(dir, 0o040755, (0, 0), &[]);
    }
    let mut list = String::new();
    for (name, data) in modules {
        cpio.entry(&format!("lib/modules/{name}.ko"), 0o100644, (0, 0), data);
        list.push_str(name);
        list.push('\n');
    }
    cpio.entry("lib/modules/load.list", 0o100644, (0, 0), list.as_bytes());
    cpio.entry("TRAILER!!!", 0, (0, 0), &[]);
    // Built once per kernel and cached: compress well.
    write_gzip(out, &cpio.buf, "-9")
}

/// Pipes `data` through `gzip <level> -c` into `out`.
fn write_gzip(out: &Path, data: &[u8], level: &str) -> crate::Result {
    let file = std::fs::File::create(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let mut gzip = Command::new("gzip")
        .args([level, "-c"])
        .stdin(Stdio::piped())
        .stdout(file)
        .spawn()
        .map_err(|e| format!("cannot run gzip: {e} (install gzip)"))?;
    gzip.stdin.take().ok_or("gzip stdin missing")?.write_all(data)?;
    let status = gzip.wait()?;
    if !status.success() {
        return Err(format!("gzip failed ({status}) writing {}", out.display()).into());
    }
    Ok(())
}

/// An in-memory `newc` ("070701") cpio archive.
#[derive(Default)]
struct Newc {
    buf: Vec<u8>,
    ino: u32,
}

impl Newc {
    /// Appends one entry; `rdev` is the (major, minor) of a device node.
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        self.ino += 1;
        let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
        let fields = [
            self.ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime
            data.len() as u32,
            0, // dev major
            0, // dev minor
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0, // check
        ];
        self.buf.extend_from_slice(b"070701");
        for f in fields {
            self.buf.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while self.buf.len() % 4 != 0 {
            self.buf.push(0);
        }
    }
}
