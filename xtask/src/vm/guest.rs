//! Builds the programs that run inside the guest: the `vfio-tests` test binaries and the
//! requested `vfio-pci` examples.
//!
//! The guest has no libc, so everything is linked statically (`-C target-feature=+crt-static`
//! with the gnu target; no musl target is available here). The guest build uses its own target
//! directory (`target/guest`) so that switching RUSTFLAGS does not invalidate host builds.
//! `--target` is always given so that RUSTFLAGS does not reach build scripts and proc macros.

use super::json::Json;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const TARGET: &str = "x86_64-unknown-linux-gnu";

/// One program to copy into the initramfs.
#[derive(Debug, Clone)]
pub struct Binary {
    /// Name inside the guest (`/tests/<name>` or `/examples/<name>`).
    pub name: String,
    pub path: PathBuf,
}

/// `cargo test -p vfio-tests --no-run`: every test executable of the crate (integration tests
/// and the library's unit tests), named after their cargo target.
pub fn build_tests(workspace: &Path) -> crate::Result<Vec<Binary>> {
    let args = ["test", "-p", "vfio-tests", "--no-run"];
    let mut bins = Vec::new();
    for artifact in cargo_json(workspace, &args)? {
        let profile_test = artifact
            .get("profile")
            .and_then(|p| p.get("test"))
            .and_then(Json::as_bool);
        let (Some(true), Some(exe)) = (profile_test, artifact.get("executable").and_then(Json::as_str)) else {
            continue;
        };
        let target = artifact.get("target");
        let name = target
            .and_then(|t| t.get("name"))
            .and_then(Json::as_str)
            .unwrap_or("test");
        let kinds: Vec<&str> = target
            .map(|t| t.get("kind").map(Json::as_array).unwrap_or_default())
            .unwrap_or_default()
            .iter()
            .filter_map(Json::as_str)
            .collect();
        let mut name = name.to_owned();
        // The library's unit tests share the crate name; keep the integration tests' names clean.
        if !kinds.contains(&"test") {
            name = format!("{name}-{}", kinds.first().copied().unwrap_or("unit"));
        }
        bins.push(Binary {
            name,
            path: PathBuf::from(exe),
        });
    }
    bins.sort_by(|a, b| a.name.cmp(&b.name));
    bins.dedup_by(|a, b| a.name == b.name);
    Ok(bins)
}

/// `cargo build -p vfio-pci --release --example NAME...`: the named examples, and the named
/// binaries of vfio-pci (`vfio-pci/src/bin/NAME.rs`, e.g. `lsvfio`) with `--bin`.
pub fn build_examples(workspace: &Path, names: &[String]) -> crate::Result<Vec<Binary>> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let mut args: Vec<&str> = vec!["build", "-p", "vfio-pci", "--release"];
    for name in names {
        let is_bin = workspace.join("vfio-pci/src/bin").join(format!("{name}.rs")).exists();
        args.extend([if is_bin { "--bin" } else { "--example" }, name]);
    }
    let mut bins = Vec::new();
    for artifact in cargo_json(workspace, &args)? {
        let target = artifact.get("target");
        let is_example = target.and_then(|t| t.get("kind")).is_some_and(|k| {
            k.as_array()
                .iter()
                .any(|k| matches!(k.as_str(), Some("example" | "bin")))
        });
        let name = target.and_then(|t| t.get("name")).and_then(Json::as_str);
        let exe = artifact.get("executable").and_then(Json::as_str);
        if let (true, Some(name), Some(exe)) = (is_example, name, exe) {
            bins.push(Binary {
                name: name.to_owned(),
                path: PathBuf::from(exe),
            });
        }
    }
    for name in names {
        if !bins.iter().any(|b| &b.name == name) {
            return Err(format!(
                "cargo built no executable for example `{name}` of vfio-pci (is there a vfio-pci/examples/{name}.rs?)"
            )
            .into());
        }
    }
    Ok(bins)
}

/// `cargo bench -p vfio-tests --bench vfio_bench --no-run`: the benchmark program, optimized
/// (bench profile), named `vfio_bench`.
pub fn build_bench(workspace: &Path) -> crate::Result<Binary> {
    let args = ["bench", "-p", "vfio-tests", "--bench", "vfio_bench", "--no-run"];
    for artifact in cargo_json(workspace, &args)? {
        let target = artifact.get("target");
        let is_bench = target
            .and_then(|t| t.get("kind"))
            .is_some_and(|k| k.as_array().iter().any(|k| k.as_str() == Some("bench")));
        let name = target.and_then(|t| t.get("name")).and_then(Json::as_str);
        let exe = artifact.get("executable").and_then(Json::as_str);
        if let (true, Some("vfio_bench"), Some(exe)) = (is_bench, name, exe) {
            return Ok(Binary {
                name: "vfio_bench".to_owned(),
                path: PathBuf::from(exe),
            });
        }
    }
    Err("cargo built no executable for the vfio_bench benchmark of vfio-tests".into())
}

/// Runs cargo with JSON messages and the static guest settings; returns the
/// `compiler-artifact` messages. Compiler diagnostics are printed as cargo would print them.
fn cargo_json(workspace: &Path, args: &[&str]) -> crate::Result<Vec<Json>> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target_dir = workspace.join("target/guest");
    println!(
        "==> cargo {} (static, target dir {})",
        args.join(" "),
        target_dir.display()
    );
    let mut child = Command::new(&cargo)
        .args(args)
        .args(["--message-format=json", "--target", TARGET])
        .current_dir(workspace)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        // No debuginfo in the guest's binaries: with it (even line tables only, since std's
        // own debuginfo is linked in) each test binary was ~22 MB, and 20 of them no longer
        // unpacked into a 1 GiB guest ("Initramfs unpacking failed: write error", and every
        // file after that point silently missing). Panics still name file and line (those are
        // compiled in); backtraces keep the symbol names.
        .env("CARGO_PROFILE_DEV_DEBUG", "line-tables-only")
        .env("CARGO_PROFILE_TEST_DEBUG", "line-tables-only")
        .env("CARGO_PROFILE_DEV_STRIP", "debuginfo")
        .env("CARGO_PROFILE_TEST_STRIP", "debuginfo")
        .env("CARGO_TARGET_DIR", &target_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    let mut artifacts = Vec::new();
    let stdout = child.stdout.take().ok_or("cargo stdout missing")?;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        let Some(msg) = Json::parse(&line) else {
            println!("{line}");
            continue;
        };
        match msg.get("reason").and_then(Json::as_str) {
            Some("compiler-artifact") => artifacts.push(msg),
            Some("compiler-message") => {
                if let Some(text) = msg
                    .get("message")
                    .and_then(|m| m.get("rendered"))
                    .and_then(Json::as_str)
                {
                    eprint!("{text}");
                }
            }
            _ => {}
        }
    }
    let status = child.wait()?;
    if !status.success() {
        return Err(format!(
            "`cargo {}` for the guest failed ({status}); see the errors above",
            args.join(" ")
        )
        .into());
    }
    Ok(artifacts)
}

/// Fails unless `path` is a statically linked ELF (no PT_INTERP): a dynamic binary would die in
/// the guest with a confusing "not found".
pub fn check_static(path: &Path) -> crate::Result {
    let data = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let bad = || format!("{} is not a 64-bit ELF executable", path.display());
    if data.len() < 64 || &data[..4] != b"\x7fELF" || data[4] != 2 {
        return Err(bad().into());
    }
    let u16_at = |o: usize| u16::from_le_bytes([data[o], data[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(data[0x20..0x28].try_into()?) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    for i in 0..phnum {
        let off = phoff + i * phentsize;
        let p_type = data.get(off..off + 4).ok_or_else(bad)?;
        if u32::from_le_bytes(p_type.try_into()?) == 3 {
            return Err(format!(
                "{} is dynamically linked (has an ELF interpreter); the guest needs static binaries \
                 (RUSTFLAGS='-C target-feature=+crt-static')",
                path.display()
            )
            .into());
        }
    }
    Ok(())
}
