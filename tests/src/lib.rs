//! The vfio-rs integration test harness and device helpers.
//!
//! Integration tests run inside the QEMU guest of `cargo xtask vm test`, or on a real machine
//! when the variables below name devices bound to vfio-pci (as root):
//!
//! - `VFIO_TEST_EDU`: PCI address of a QEMU `edu` device (1234:11e8).
//! - `VFIO_TEST_NVME`: PCI address of an NVMe controller (QEMU 1b36:0010).
//! - `VFIO_TEST_EDU_RESET`, `VFIO_TEST_EDU_NONVIABLE`, `VFIO_TEST_NVME_HOTRESET`,
//!   `VFIO_TEST_TESTDEV`, `VFIO_TEST_VIRTIO`: the devices of the special cases (see README.md).
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
    let boxed: Vec<(String, Box<dyn Fn() -> TestResult>)> = tests
        .iter()
        .map(|&(name, f)| (name.to_string(), Box::new(f) as Box<dyn Fn() -> TestResult>))
        .collect();
    run_named(boxed)
}

/// [`run`] for tests built at run time (e.g. one per mode: `check@mode`).
pub fn run_named(tests: Vec<(String, Box<dyn Fn() -> TestResult>)>) -> ExitCode {
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for (name, f) in &tests {
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

/// Whether the running kernel offers `mode`.
pub fn offered(mode: vfio_core::Mode) -> bool {
    let m = vfio_core::detect();
    match mode {
        vfio_core::Mode::Group => m.group,
        vfio_core::Mode::NoIommu => m.noiommu,
        vfio_core::Mode::Cdev => m.cdev,
    }
}

/// A fresh container of `mode` of its own (not the process-wide default): dropping it releases
/// every group or device assigned to it.
pub fn new_container(mode: vfio_core::Mode) -> vfio_core::Result<std::sync::Arc<dyn vfio_core::Container>> {
    use std::sync::Arc;
    Ok(match mode {
        vfio_core::Mode::Group => Arc::new(vfio_group::Container::open(false)?),
        vfio_core::Mode::NoIommu => Arc::new(vfio_group::Container::open(true)?),
        vfio_core::Mode::Cdev => Arc::new(vfio_cdev::Container::new()?),
    })
}

/// [`new_container`], or why `mode` cannot run here (for [`skip`]).
pub fn container_or_reason(mode: vfio_core::Mode) -> Result<std::sync::Arc<dyn vfio_core::Container>, String> {
    if !offered(mode) {
        return Err(format!(
            "{mode} mode is not offered by this kernel ({:?})",
            vfio_core::detect()
        ));
    }
    new_container(mode).map_err(|e| e.to_string())
}

/// The fds this process has open (from `/proc/self/fd`, without the directory's own fd).
pub fn open_fds() -> std::io::Result<Vec<i32>> {
    let mut fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    fds.sort();
    // The last one opened is read_dir's own.
    fds.retain(|&fd| std::fs::read_link(format!("/proc/self/fd/{fd}")).is_ok());
    Ok(fds)
}

/// How many memory mappings this process has (`/proc/self/maps` lines).
pub fn mapping_count() -> std::io::Result<usize> {
    Ok(std::fs::read_to_string("/proc/self/maps")?.lines().count())
}

/// A `/proc/self/status` field in kB (e.g. `VmLck`, `VmPin`).
pub fn status_kb(field: &str) -> std::io::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    Ok(status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap_or(0))
}

/// Forks a child that runs `f` and leaves with `_exit`: status 0 when `f` succeeded, 1 when it
/// failed or panicked (saying why on stdout). The child never returns into the test harness, so
/// a failing child cannot go on to run the parent's remaining tests. Returns the child's pid.
///
/// # Safety
/// The calling process must have no other threads (fork(2) copies only the caller's), and `f`
/// must not rely on state another thread would have held a lock on.
pub unsafe fn fork_child(f: impl FnOnce() -> Result<(), Box<dyn std::error::Error>>) -> Result<i32, String> {
    // SAFETY: the caller guarantees a single-threaded process; the child ends in _exit below.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        let code = match catch_unwind(AssertUnwindSafe(f)) {
            Ok(Ok(())) => 0,
            Ok(Err(e)) => {
                println!("    child: {e}");
                1
            }
            Err(_) => {
                println!("    child: panicked");
                1
            }
        };
        use std::io::Write;
        let _ = std::io::stdout().flush();
        // SAFETY: ends the forked child without running the parent's destructors or atexit
        // handlers, as fork(2) requires.
        unsafe { libc::_exit(code) };
    }
    Ok(pid)
}

/// Waits for child `pid`; an error unless it exited with status 0.
pub fn wait_child(pid: i32) -> Result<(), String> {
    let mut status = 0;
    // SAFETY: waits for a child of this process; `status` is a valid out-pointer.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    if waited != pid {
        return Err(format!("waitpid({pid}): {}", std::io::Error::last_os_error()));
    }
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        Ok(())
    } else {
        Err(format!("child {pid} failed (wait status {status:#x})"))
    }
}
