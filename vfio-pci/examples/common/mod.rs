//! What the example drivers share: how a run ends (ok, skipped, FAILED), as the `cargo xtask vm`
//! harness reads it.

use std::process::ExitCode;

/// The examples' result type.
pub type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// The exit status when the kernel does not offer the mode asked for with `--mode` (the
/// "skipped" status of automake's test drivers; `cargo xtask vm` reports the run as skipped).
const SKIPPED: u8 = 77;

/// The open in the mode asked for failed with Unsupported: the kernel does not offer that mode
/// (e.g. `--mode cdev` on Linux 6.1, which has no iommufd).
#[derive(Debug)]
pub struct ModeMissing(pub vfio_pci::Error);

impl std::fmt::Display for ModeMissing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for ModeMissing {}

/// Prints `<tag>: ok: <summary>`, `<tag>: skipped: ...` or `<tag>: FAILED: ...` and returns the
/// matching exit status.
pub fn finish(tag: &str, result: Res<String>) -> ExitCode {
    match result {
        Ok(summary) => {
            println!("{tag}: ok: {summary}");
            ExitCode::SUCCESS
        }
        Err(e) => match e.downcast_ref::<ModeMissing>() {
            Some(ModeMissing(e)) => {
                println!("{tag}: skipped: {e}");
                ExitCode::from(SKIPPED)
            }
            None => {
                println!("{tag}: FAILED: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
