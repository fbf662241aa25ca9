//! Live migration of a device between two processes: the kernel's sample mediated device
//! `mtty` (a virtual serial card with VFIO migration v2) carries the characters waiting in its
//! UART's receive FIFO from one instance to another.
//!
//! Usage: `migrate_mtty [--mode group|cdev]` (default cdev). It creates two `mtty-1` instances
//! (`/sys/class/mdev_bus/mtty`; exits 77, skipped, when the kernel has no mtty), makes a unix
//! socket pair and forks: the child opens instance B and restores into it with
//! `transfer::receive`; the parent opens instance A, writes "hello, mtty" into its UART (mtty
//! loops the characters back into its receive FIFO) and saves it with `transfer::send` (pre-copy
//! rounds while A runs, then STOP_COPY). The child succeeds only when B's UART reads the same
//! characters. Both instances (`vfio_core::Mdev`) are removed at the end, after every fd of them
//! closed.

use std::os::unix::net::UnixStream;
use std::process::ExitCode;

use vfio_core::migration::transfer::{self, PrecopyPolicy};
use vfio_core::{Addressing, Device, Mdev, MdevParent, MigState, Sysfs, Uuid};

mod common;

use common::Res;

const PARENT: &str = "/sys/class/mdev_bus/mtty";
const MESSAGE: &[u8] = b"hello, mtty";

fn main() -> ExitCode {
    if !std::path::Path::new(PARENT).exists() {
        println!("migrate_mtty: skipped: {PARENT} is missing (no SAMPLE_VFIO_MDEV_MTTY in this kernel)");
        return ExitCode::from(77);
    }
    common::finish("migrate_mtty", run())
}

/// Creates an `mtty-1` instance; it is removed when the last handle (and the last device
/// opened from it) is gone.
fn create() -> Res<Mdev> {
    let parent = MdevParent::open(&Sysfs::default(), "mtty")?;
    Ok(parent.mdev_type("mtty-1")?.create(Uuid::random()?)?)
}

/// Opens `instance` in a container of its own, group or cdev mode (`Mdev::open_in` reads its
/// info first: mtty answers IRQ requests only after `VFIO_DEVICE_GET_INFO`). The device keeps
/// the instance and the container alive.
fn open(instance: &Mdev, cdev: bool) -> Res<Device> {
    Ok(if cdev {
        instance.open_in(&vfio_cdev::Container::new()?)?
    } else {
        instance.open_in(&vfio_group::Container::open(Addressing::Iova)?)?
    })
}

/// Writes `chars` one byte at a time at BAR0 offset 0 (the UART's TX).
fn uart_write(dev: &Device, chars: &[u8]) -> Res<()> {
    let bar0 = dev.region_info(0)?;
    for &c in chars {
        dev.write_region(&bar0, 0, &[c])?;
    }
    Ok(())
}

/// Reads every character waiting (LSR bit 0, offset 5), one byte at a time.
fn uart_read(dev: &Device) -> Res<Vec<u8>> {
    let bar0 = dev.region_info(0)?;
    let mut out = Vec::new();
    let mut b = [0u8];
    loop {
        dev.read_region(&bar0, 5, &mut b)?;
        if b[0] & 1 == 0 || out.len() >= 16 {
            return Ok(out);
        }
        dev.read_region(&bar0, 0, &mut b)?;
        out.push(b[0]);
    }
}

fn destination(b: &Mdev, cdev: bool, mut rx: UnixStream) -> Res<String> {
    let dev = open(b, cdev)?;
    let m = dev.migration()?;
    let got = transfer::receive(&m, &mut rx)?;
    let state = m.state()?;
    let back = uart_read(&dev)?;
    if state != MigState::Running || back != MESSAGE {
        return Err(format!("B is {state} and reads {:?}", String::from_utf8_lossy(&back)).into());
    }
    Ok(format!(
        "received {} bytes in {} frames; B is RUNNING and reads {:?}",
        got.bytes,
        got.frames,
        String::from_utf8_lossy(&back)
    ))
}

fn run() -> Res<String> {
    let mut cdev = true;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next().as_deref()) {
            ("--mode", Some("cdev")) => cdev = true,
            ("--mode", Some("group")) => cdev = false,
            _ => return Err("usage: migrate_mtty [--mode group|cdev]".into()),
        }
    }
    let (a, b) = (create()?, create()?);
    let (mut tx, rx) = UnixStream::pair()?;
    let tx_fd = std::os::fd::AsRawFd::as_raw_fd(&tx);
    // SAFETY: the process has one thread; the child ends in _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    if pid == 0 {
        // SAFETY: the child's copy of the sending end, unused here: closed so that a parent
        // that stops early reads as the end of the stream.
        unsafe { libc::close(tx_fd) };
        let code = match destination(&b, cdev, rx) {
            Ok(s) => {
                println!("  child: {s}");
                0
            }
            Err(e) => {
                println!("  child: {e}");
                1
            }
        };
        // SAFETY: ends the child without running the parent's destructors (the instances
        // are the parent's to remove).
        unsafe { libc::_exit(code) };
    }
    drop(rx);
    let sent = (|| -> Res<transfer::SendReport> {
        let dev = open(&a, cdev)?;
        uart_write(&dev, MESSAGE)?;
        let m = dev.migration()?;
        println!(
            "  A: {} offers {:?}, {}-byte state",
            a.uuid(),
            m.flags(),
            m.stop_copy_size()?
        );
        let policy = PrecopyPolicy {
            max_rounds: 2,
            min_bytes: 0,
        };
        let sent = transfer::send(&m, &mut tx, &policy)?;
        if m.state()? != MigState::Stop {
            return Err(format!("A is {} after the save", m.state()?).into());
        }
        Ok(sent)
    })();
    drop(tx);
    let mut status = 0;
    // SAFETY: waits for our child; `status` is a valid out-pointer.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    let sent = sent?;
    if waited != pid || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        return Err(format!("the destination process failed (wait status {status:#x})").into());
    }
    Ok(format!(
        "{} mode: {:?} moved A -> B across processes: {} pre-copy bytes in {} round(s) while A ran, {} stop-copy bytes; A is STOP",
        if cdev { "cdev" } else { "group" },
        String::from_utf8_lossy(MESSAGE),
        sent.precopy_bytes,
        sent.rounds.len(),
        sent.stop_copy_bytes
    ))
}
