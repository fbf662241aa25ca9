//! Developer tasks for vfio-rs, run as `cargo xtask <task>`.
//!
//! - `regen-uapi (--from <kernel tree | headers dir> | --from-cache) [--check]`: regenerate `vfio-sys` and
//!   `iommufd-sys`, or (`--check`) compare them with headers of the version they record.
//! - `vm [test] [options]`: build the test kernel and initramfs, boot QEMU, run the guest tests,
//!   and check the results cover what `xtask/coverage.txt` requires (`vm replay LOG` judges a
//!   saved run again).
//! - `demo`: boot the guest and run the example drivers in every mode.
//! - `bench [options]`: run the benchmarks in a guest and write `target/bench/results.{json,md}`.

mod regen_uapi;
mod uapi_check;
mod vm;

use std::process::ExitCode;

/// What every task returns: a message for the user on failure.
pub type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let task = args.next().unwrap_or_default();
    let rest: Vec<String> = args.collect();
    let result = match task.as_str() {
        "regen-uapi" => regen_uapi::main(&rest),
        "vm" => vm::main(&rest),
        "demo" => vm::demo(&rest),
        "bench" => vm::bench::main(&rest),
        _ => {
            eprintln!(
                "usage: cargo xtask <task>\n\n\
                 tasks:\n  \
                 regen-uapi (--from <kernel tree | headers dir> | --from-cache) [--check] [--version V]\n  \
                 vm [test|kernel|replay LOG] [--variant a|b|debian61] [--iommu intel|virtio|none] [--example NAME[:ARGS]]\n     \
                    [--timeout SECS] [--no-tests] [--no-coverage] [--append ARGS]\n  \
                 demo [same options as vm]\n  \
                 bench [--variant a|b] [--iommu intel|virtio|none] [--quick] [--only IDS] [--timeout SECS]"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask {task}: error: {e}");
            ExitCode::FAILURE
        }
    }
}
