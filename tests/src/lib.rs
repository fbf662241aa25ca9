//! The vfio-rs integration test harness and device helpers.
//!
//! Integration tests run inside the QEMU guest of `cargo xtask vm test`, or on a real machine
//! when the variables below name devices bound to vfio-pci (as root):
//!
//! - `VFIO_TEST_EDU`: PCI address of a QEMU `edu` device (1234:11e8).
//! - `VFIO_TEST_NVME`: PCI address of an NVMe controller (QEMU 1b36:0010).
//!
//! A test that cannot run (no device, a mode the kernel lacks) reports `skipped: <reason>`; it
//! never passes silently. Each test binary prints `test <name> ... ok|FAILED|skipped: <reason>`
//! and ends with the line `N passed, N failed, N skipped`.

pub mod edu;
pub mod iommufd_mock;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::ExitCode;

/// How a test ended when it did not fail.
#[derive(Debug)]
pub enum Outcome {
    /// It ran and every check held.
    Pass,
    /// It could not run here, and why.
    Skip(String),
}

/// What a test returns.
pub type TestResult = Result<Outcome, Box<dyn std::error::Error>>;

/// A named test.
pub type Test = (&'static str, fn() -> TestResult);

/// Skips with a reason.
pub fn skip(reason: impl Into<String>) -> TestResult {
    Ok(Outcome::Skip(reason.into()))
}

/// Fails with a message unless `cond` holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+).into());
        }
    };
}

/// The PCI address in `var`, or the reason to skip.
pub fn device_from_env(var: &str) -> Result<vfio_core::PciAddress, String> {
    match std::env::var(var) {
        Ok(s) if !s.is_empty() => s.parse().map_err(|e| format!("{var}: {e}")),
        _ => Err(format!(
            "{var} is not set (no device; run `cargo xtask vm test`, or set it to a device bound to vfio-pci)"
        )),
    }
}

/// Runs `tests` (those whose name contains the first non-flag argument, if any), prints one line
/// each and the summary, and exits non-zero if any failed.
pub fn run(tests: &[Test]) -> ExitCode {
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for (name, f) in tests {
        if filter.as_deref().is_some_and(|flt| !name.contains(flt)) {
            continue;
        }
        let res = catch_unwind(AssertUnwindSafe(f));
        match res {
            Ok(Ok(Outcome::Pass)) => {
                passed += 1;
                println!("test {name} ... ok");
            }
            Ok(Ok(Outcome::Skip(why))) => {
                skipped += 1;
                println!("test {name} ... skipped: {why}");
            }
            Ok(Err(e)) => {
                failed += 1;
                println!("test {name} ... FAILED\n    error: {e}");
            }
            Err(_) => {
                failed += 1;
                println!("test {name} ... FAILED (panicked)");
            }
        }
    }
    println!("{passed} passed, {failed} failed, {skipped} skipped");
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
