//! Boots one guest in QEMU (TCG only: the KVM here is paravirtual and >100x slower), streams its
//! serial console to the terminal while capturing it, and parses the `/init` markers and the
//! test binaries' result lines.

use super::{Iommu, Variant};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Everything that differs between boots.
pub struct BootSpec {
    pub variant: Variant,
    pub iommu: Iommu,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// Backing file of the emulated NVMe namespace; recreated (zeroed) for every boot.
    pub nvme_img: PathBuf,
    pub timeout: Duration,
    /// Extra kernel command line from `--append`.
    pub append: String,
    /// Guest memory (QEMU `-m`), [`DEFAULT_MEMORY`] unless a run needs more.
    pub memory: String,
    /// Count instructions instead of time: QEMU `-icount shift=0,sleep=off` makes the guest's
    /// clock advance one nanosecond per emulated instruction (and jump over idle time), so a
    /// guest-measured duration is an instruction count, whatever the host's load.
    pub icount: bool,
    /// Run the two vCPUs on two host threads (QEMU's multi-threaded TCG, its default), for the
    /// wall-clock benchmarks, whose rows about interrupts and processes on the other vCPU need
    /// real parallelism. Test boots run both vCPUs on one thread (`-accel tcg,thread=single`):
    /// QEMU 7.2's multi-threaded TCG can hand a vCPU a new memory map before flushing its TLB
    /// (`tcg_commit`, fixed upstream in 0d58c660689f, not in Debian's 7.2), and an MMIO access in
    /// that window, while the other vCPU remaps a BAR (every device reset, open and close does),
    /// dispatches to a NULL region: QEMU crashes with SIGSEGV or the write goes astray.
    pub parallel_vcpus: bool,
}

/// Guest memory of a test boot.
pub const DEFAULT_MEMORY: &str = "1G";

impl BootSpec {
    pub fn label(&self) -> String {
        format!("{}/{}", self.variant, self.iommu)
    }

    /// The edu option ROM file, next to the NVMe disk image of the run.
    fn rom_path(&self) -> PathBuf {
        self.nvme_img.with_file_name("edu-rom.bin")
    }

    /// The QEMU command line (see /work/shared/GUEST-HARNESS.md for why each flag is there).
    fn command(&self) -> Command {
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args([
            "-machine",
            "q35,kernel-irqchip=split",
            "-accel",
            if self.parallel_vcpus {
                "tcg"
            } else {
                "tcg,thread=single"
            },
            "-cpu",
            "max",
            "-m",
            &self.memory,
        ]);
        if self.icount {
            cmd.args(["-icount", "shift=0,sleep=off"]);
        }
        cmd.args([
            "-smp",
            "2",
            "-nographic",
            "-no-reboot",
            "-vga",
            "none",
            "-nic",
            "none",
            "-d",
            "guest_errors",
        ]);
        cmd.arg("-kernel").arg(&self.kernel).arg("-initrd").arg(&self.initrd);
        let mut append = format!(
            "console=ttyS0 panic=-1 loglevel=4 VFIO_TEST_VARIANT={} VFIO_TEST_IOMMU={}",
            self.variant, self.iommu
        );
        // The IOMMU goes first: intel-iommu must exist before the devices it translates for.
        let (iommu_dev, edu, iommu_append) = match self.iommu {
            Iommu::Intel => (
                Some("intel-iommu,intremap=on,caching-mode=on"),
                "edu",
                "intel_iommu=on iommu.strict=1",
            ),
            // virtio-iommu on x86 has no MSI isolation: without these, SET_IOMMU and
            // BIND_IOMMUFD fail with EPERM.
            Iommu::Virtio => (
                Some("virtio-iommu-pci"),
                "edu",
                "vfio_iommu_type1.allow_unsafe_interrupts=1 iommufd.allow_unsafe_interrupts=1",
            ),
            // No IOMMU: DMA uses physical addresses, which may be above edu's default 28-bit mask.
            Iommu::None => (
                None,
                "edu,dma_mask=0xffffffffffffffff",
                "intel_iommu=off vfio.enable_unsafe_noiommu_mode=1",
            ),
        };
        if let Some(dev) = iommu_dev {
            cmd.args(["-device", dev]);
        }
        // An option ROM for edu, so the ROM BAR is there to read.
        let edu = format!("{edu},romfile={}", self.rom_path().display());
        cmd.args(["-device", &edu]);
        // A second edu alone behind a PCIe root port: a root-bus edu has no reset method, this
        // one has a bus reset, so VFIO_DEVICE_RESET works on it (the fault test resets it after
        // killing a process mid-DMA). 5 GT/s: see the hot-reset nvme below.
        cmd.args(["-device", "pcie-root-port,id=rp2,chassis=2,addr=0xa,x-speed=5"]);
        cmd.args(["-device", &format!("{edu},bus=rp2")]);
        // pci-testdev (1b36:0005): the one QEMU device here with an I/O-port BAR.
        cmd.args(["-device", "pci-testdev"]);
        // A virtio device on the root bus, given to vfio-pci: vendor-specific capabilities.
        cmd.args(["-device", "virtio-rng-pci,addr=0x7"]);
        if self.iommu == Iommu::Intel {
            // A second edu behind a PCIe-to-PCI bridge shares its IOMMU group with a virtio
            // device that a kernel driver (virtio-pci) owns: a non-viable group to test against.
            // Intel only: with the bridge present, virtio-iommu leaves every device without an
            // IOMMU group (QEMU 7.2), so vfio-pci cannot bind at all.
            cmd.args(["-device", "pcie-pci-bridge,id=pbr,addr=0x8"]);
            cmd.args(["-device", "edu,bus=pbr,addr=0x1"]);
            cmd.args(["-device", "virtio-rng-pci,bus=pbr,addr=0x2"]);
        }
        let drive = format!("file={},if=none,id=nvm,format=raw", self.nvme_img.display());
        cmd.args(["-drive", &drive, "-device", "nvme,serial=deadbeef,drive=nvm"]);
        if self.iommu == Iommu::Intel {
            // A second nvme alone behind a PCIe root port: the one device a secondary bus reset
            // reaches, so a hot reset can succeed (root-bus devices only give ENODEV). Its
            // namespace is a RAM-backed null device. The port claims a 5 GT/s link: at higher
            // speeds Linux waits for a Data Link Layer Link Active report after the reset, which
            // QEMU 7.2's port never gives, and the reset fails with ENOTTY.
            cmd.args(["-device", "pcie-root-port,id=rp1,chassis=1,addr=0x9,x-speed=5"]);
            cmd.args(["-drive", "driver=null-co,if=none,id=nvm2,size=16M,read-zeroes=on"]);
            cmd.args(["-device", "nvme,serial=c0ffee,drive=nvm2,bus=rp1"]);
        }
        // A controller memory buffer, the peer-to-peer DMA target: BAR2, 2 MiB, 64-bit
        // prefetchable, readable and writable by the host without any register setup. No
        // namespace. (docs/design/issue-17.md 3.1)
        cmd.args(["-device", "nvme,serial=cmb0,cmb_size_mb=2,addr=0xb"]);
        // An SR-IOV PF with two VFs (QEMU needs a subsystem for it and refuses a CMB on the same
        // controller). Intel ids (8086:5845, the VFs too) tell it apart from the other nvmes in
        // /init; its VFs appear at 0c.1 and 0c.2 once sriov_numvfs is written, which needs
        // vfio_pci.enable_sriov=1 (issue-17.md 3.2).
        cmd.args(["-device", "nvme-subsys,id=sriov0"]);
        cmd.args([
            "-device",
            "nvme,serial=5r10v,subsys=sriov0,sriov_max_vfs=2,sriov_vq_flexible=4,sriov_vi_flexible=2,use-intel-id=on,addr=0xc",
        ]);
        append.push_str(" vfio_pci.enable_sriov=1 ");
        append.push_str(iommu_append);
        if !self.append.is_empty() {
            append.push(' ');
            append.push_str(&self.append);
        }
        cmd.arg("-append").arg(append);
        cmd
    }
}

/// The result of one test as printed by a test binary.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Pass,
    Fail,
    Skip(String),
}

#[derive(Debug, Clone)]
pub struct TestResult {
    /// The test binary (`/tests/<binary>`).
    pub binary: String,
    pub name: String,
    pub outcome: Outcome,
}

/// One program run framed by `@@VFIO-BEGIN` / `@@VFIO-END`.
#[derive(Debug, Clone)]
pub struct Run {
    pub kind: String,
    pub name: String,
    /// `None` if the END marker never came (crash, hang, panic).
    pub rc: Option<i32>,
    /// The program's output lines.
    pub lines: Vec<String>,
}

impl Run {
    /// The run's summary: its last line starting with `<program>:` (the examples print one),
    /// else its last non-empty line.
    pub fn summary(&self) -> &str {
        let program = self.name.split_whitespace().next().unwrap_or("");
        let prefix = format!("{program}:");
        let lines = || self.lines.iter().rev().map(|l| l.trim());
        lines()
            .find(|l| l.starts_with(&prefix))
            .or_else(|| lines().find(|l| !l.is_empty()))
            .unwrap_or("")
    }
}

/// Everything learned from one boot.
#[derive(Debug, Default)]
pub struct Boot {
    pub label: String,
    pub tests: Vec<TestResult>,
    pub runs: Vec<Run>,
    pub done: bool,
    pub panic: bool,
    /// The kernel could not unpack the whole initramfs (out of memory): files after that point
    /// are missing, so tests and examples silently do not run.
    pub initramfs_failed: bool,
    pub timed_out: bool,
    /// QEMU's exit status, if it exited by itself.
    pub exit: Option<String>,
    /// The `@@VFIO-DMESG` blocks printed after failing runs.
    pub dmesg: Vec<String>,
    /// The guest console, for the tail shown on failure.
    pub console: Vec<String>,
    /// QEMU's own error messages (its register dumps left out).
    pub qemu_errors: Vec<String>,
    pub duration: Duration,
    current: Option<Run>,
    in_dmesg: bool,
}

impl Boot {
    /// Why this boot as a whole failed (empty if it did not): panic, timeout, no `@@VFIO-DONE`.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.panic {
            p.push("guest kernel panic".to_owned());
        }
        if self.initramfs_failed {
            p.push("the kernel could not unpack the whole initramfs (guest memory too small for it)".to_owned());
        }
        if self.timed_out {
            p.push("timed out (QEMU killed)".to_owned());
        }
        if !self.done {
            p.push(format!(
                "no @@VFIO-DONE (QEMU {})",
                self.exit.as_deref().unwrap_or("killed")
            ));
        }
        if let Some(run) = &self.current {
            p.push(format!("{} {} never finished", run.kind, run.name));
        }
        p
    }

    /// Feeds one console line to the marker and result parser.
    fn line(&mut self, line: &str) {
        self.console.push(line.to_owned());
        if line.contains("Kernel panic") {
            self.panic = true;
        }
        if line.contains("Initramfs unpacking failed") {
            self.initramfs_failed = true;
        }
        let t = line.trim();
        if self.in_dmesg {
            if t == "@@VFIO-DMESG-END" {
                self.in_dmesg = false;
            } else {
                self.dmesg.push(line.to_owned());
            }
            return;
        }
        if let Some(rest) = t.strip_prefix("@@VFIO-BEGIN ") {
            let (kind, name) = rest.split_once(' ').unwrap_or((rest, ""));
            self.current = Some(Run {
                kind: kind.to_owned(),
                name: name.to_owned(),
                rc: None,
                lines: Vec::new(),
            });
        } else if let Some(rest) = t.strip_prefix("@@VFIO-END ") {
            let (head, rc) = rest.rsplit_once(" rc=").unwrap_or((rest, ""));
            let (kind, name) = head.split_once(' ').unwrap_or((head, ""));
            let mut run = match self.current.take() {
                Some(run) if run.kind == kind && run.name == name => run,
                other => {
                    self.current = other;
                    Run {
                        kind: kind.to_owned(),
                        name: name.to_owned(),
                        rc: None,
                        lines: Vec::new(),
                    }
                }
            };
            run.rc = Some(rc.trim().parse().unwrap_or(-1));
            self.runs.push(run);
        } else if t == "@@VFIO-DMESG-BEGIN" {
            self.in_dmesg = true;
        } else if t == "@@VFIO-DONE" {
            self.done = true;
        } else if let Some(run) = &mut self.current {
            run.lines.push(line.to_owned());
            if run.kind == "test" {
                self.tests.extend(parse_test_line(t, &run.name));
            }
        }
    }
}

/// The boots of a saved harness output: each console line was printed as `[label] line` (QEMU's
/// own messages as `[label] qemu: ...`, left out here), in boot order.
pub fn replay(text: &str) -> Vec<Boot> {
    let mut boots: Vec<Boot> = Vec::new();
    for line in text.lines() {
        let Some((label, rest)) = line.strip_prefix('[').and_then(|l| l.split_once("] ")) else {
            continue;
        };
        // Boot labels are `variant/iommu`; other bracketed lines are not console output.
        if !label.contains('/') || label.contains(' ') || rest.starts_with("qemu: ") {
            continue;
        }
        if boots.last().is_none_or(|b| b.label != label) {
            boots.push(Boot {
                label: label.to_owned(),
                exit: Some("replayed".to_owned()),
                ..Boot::default()
            });
        }
        if let Some(boot) = boots.last_mut() {
            boot.line(rest);
        }
    }
    boots
}

/// Parses `test <name> ... ok`, `test <name> ... FAILED` and `test <name> ... skipped: <reason>`.
fn parse_test_line(line: &str, binary: &str) -> Option<TestResult> {
    let rest = line.strip_prefix("test ")?;
    let (name, result) = rest.split_once(" ... ")?;
    let result = result.trim();
    let outcome = if result == "ok" {
        Outcome::Pass
    } else if result.starts_with("FAILED") {
        Outcome::Fail
    } else if let Some(reason) = result.strip_prefix("skipped") {
        Outcome::Skip(reason.trim_start_matches(':').trim().to_owned())
    } else {
        return None;
    };
    Some(TestResult {
        binary: binary.to_owned(),
        name: name.trim().to_owned(),
        outcome,
    })
}

enum Event {
    Console(String),
    Qemu(String),
}

/// Boots the guest described by `spec`, streaming its console prefixed with the boot label.
pub fn boot(spec: &BootSpec) -> crate::Result<Boot> {
    create_nvme_img(&spec.nvme_img)?;
    create_rom(&spec.rom_path())?;
    let label = spec.label();
    let start = Instant::now();
    println!("==> boot {label}: kernel {}", spec.kernel.display());
    let mut child = spec
        .command()
        // A pipe that stays open: QEMU neither sees EOF nor puts a terminal into raw mode.
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run qemu-system-x86_64: {e} (install qemu-system-x86)"))?;
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().ok_or("qemu stdout missing")?;
    let err = child.stderr.take().ok_or("qemu stderr missing")?;
    let tx2 = tx.clone();
    let readers = [
        std::thread::spawn(move || read_lines(out, |l| tx.send(Event::Console(l)).is_ok())),
        std::thread::spawn(move || read_lines(err, |l| tx2.send(Event::Qemu(l)).is_ok())),
    ];

    let mut boot = Boot {
        label: label.clone(),
        ..Boot::default()
    };
    let deadline = start + spec.timeout;
    let mut done_at: Option<Instant> = None;
    let stdout = std::io::stdout();
    loop {
        let now = Instant::now();
        // After @@VFIO-DONE QEMU should exit within moments; don't wait the full timeout if not.
        let limit = done_at.map_or(deadline, |d| (d + Duration::from_secs(20)).min(deadline));
        if now >= limit {
            if done_at.is_some() {
                println!("[{label}] warning: QEMU did not exit after @@VFIO-DONE; killing it");
            } else {
                println!("[{label}] timeout after {}s: killing QEMU", spec.timeout.as_secs());
                boot.timed_out = true;
            }
            let _ = child.kill();
            break;
        }
        match rx.recv_timeout(limit - now) {
            Ok(Event::Console(line)) => {
                let _ = writeln!(stdout.lock(), "[{label}] {line}");
                boot.line(&line);
                if boot.done && done_at.is_none() {
                    done_at = Some(Instant::now());
                }
            }
            Ok(Event::Qemu(line)) => {
                let _ = writeln!(stdout.lock(), "[{label}] qemu: {line}");
                if line.contains("error") || line.contains("rror:") {
                    boot.qemu_errors.push(line);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let status = child.wait()?;
    if !boot.timed_out {
        boot.exit = Some(status.to_string());
    }
    for r in readers {
        let _ = r.join();
    }
    // Lines still queued after a kill.
    while let Ok(ev) = rx.try_recv() {
        if let Event::Console(line) = ev {
            boot.line(&line);
        }
    }
    boot.duration = start.elapsed();
    println!("==> boot {label}: finished in {:.1}s", boot.duration.as_secs_f64());
    Ok(boot)
}

/// Reads `stream` as lines (lossy UTF-8, `\r` dropped) and hands each to `sink` until it says stop.
fn read_lines(mut stream: impl Read, mut sink: impl FnMut(String) -> bool) {
    let mut buf = [0u8; 4096];
    let mut pending = Vec::new();
    let mut emit = |bytes: &[u8]| sink(clean(&String::from_utf8_lossy(bytes)));
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        while let Some(pos) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=pos).collect();
            if !emit(&line[..line.len() - 1]) {
                return;
            }
        }
    }
    if !pending.is_empty() {
        emit(&pending);
    }
}

/// Drops terminal escape sequences (SeaBIOS clears the screen) and control characters but tab.
fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                if chars.peek() == Some(&'[') {
                    // CSI: parameters up to a final byte in '@'..='~'.
                    chars.next();
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// The edu option ROM, one 4 KiB image: the 0x55 0xAA header with its size in 512-byte blocks
/// and a pointer (0x18) to the "PCIR" data structure at 0x20 (edu's ids, EFI code type so
/// SeaBIOS does not run it, last image), the text `vfio-rs test option ROM` at 0x40, and from
/// 0x80 on byte i = i % 251. The `pci_io` guest tests check exactly this.
fn create_rom(path: &Path) -> crate::Result {
    const LEN: usize = 4096;
    let mut rom: Vec<u8> = (0..LEN as u32).map(|i| (i % 251) as u8).collect();
    rom[..0x80].fill(0);
    rom[..3].copy_from_slice(&[0x55, 0xaa, (LEN / 512) as u8]);
    rom[0x18..0x1a].copy_from_slice(&0x20u16.to_le_bytes());
    let mut pcir = Vec::new();
    pcir.extend(b"PCIR");
    pcir.extend(0x1234u16.to_le_bytes()); // vendor
    pcir.extend(0x11e8u16.to_le_bytes()); // device
    pcir.extend([0, 0]); // vital product data
    pcir.extend(0x18u16.to_le_bytes()); // structure length
    pcir.extend([3, 0, 0, 0xff]); // revision, class code
    pcir.extend(((LEN / 512) as u16).to_le_bytes()); // image length
    pcir.extend([0, 0]); // code revision
    pcir.extend([3, 0x80]); // code type EFI, last image
    rom[0x20..0x20 + pcir.len()].copy_from_slice(&pcir);
    let text = b"vfio-rs test option ROM";
    rom[0x40..0x40 + text.len()].copy_from_slice(text);
    std::fs::write(path, rom).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(())
}

/// A fresh, zeroed 16 MiB raw disk for the emulated NVMe controller (sparse, so instant).
fn create_nvme_img(path: &Path) -> crate::Result {
    let file = std::fs::File::create(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    file.set_len(16 << 20)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_escapes() {
        assert_eq!(clean("\u{1b}c\u{1b}[?7l\u{1b}[2J@@VFIO-DONE\r"), "@@VFIO-DONE");
        assert_eq!(clean("a\tb"), "a\tb");
    }

    #[test]
    fn parses_markers_and_results() {
        let mut b = Boot::default();
        for l in [
            "@@VFIO-BEGIN test container",
            "test open ... ok",
            "[   1.0] some kernel line",
            "test map ... FAILED",
            "test noiommu ... skipped: no IOMMU here",
            "1 passed, 1 failed, 1 skipped",
            "@@VFIO-END test container rc=1",
            "@@VFIO-DMESG-BEGIN",
            "dmesg line",
            "@@VFIO-DMESG-END",
            "@@VFIO-BEGIN example edu --mode group",
            "edu: 3 DMAs ok",
            "@@VFIO-END example edu --mode group rc=0",
            "@@VFIO-DONE",
        ] {
            b.line(l);
        }
        assert_eq!(b.tests.len(), 3);
        assert_eq!(b.tests[2].outcome, Outcome::Skip("no IOMMU here".into()));
        assert_eq!(b.runs.len(), 2);
        assert_eq!(b.runs[0].rc, Some(1));
        assert_eq!(b.runs[1].name, "edu --mode group");
        assert_eq!(b.runs[1].summary(), "edu: 3 DMAs ok");
        assert_eq!(b.dmesg, vec!["dmesg line".to_owned()]);
        assert!(b.done && b.problems().is_empty());
    }

    #[test]
    fn replays_a_saved_output() {
        let log = "==> boot a/none: kernel k\n\
                   [a/none] @@VFIO-BEGIN test core\n\
                   [a/none] qemu: test fake ... ok\n\
                   [a/none] test open ... ok\n\
                   [a/none] test map ... skipped: no IOMMU\n\
                   [a/none] @@VFIO-END test core rc=0\n\
                   [a/none] @@VFIO-DONE\n\
                   [a/none] warning: something\n\
                   [b/intel] @@VFIO-BEGIN test core\n\
                   [b/intel] test open ... FAILED\n";
        let boots = replay(log);
        assert_eq!(boots.len(), 2);
        assert_eq!(boots[0].label, "a/none");
        assert_eq!(boots[0].tests.len(), 2);
        assert_eq!(boots[0].tests[1].outcome, Outcome::Skip("no IOMMU".into()));
        assert!(boots[0].problems().is_empty());
        assert_eq!(boots[1].tests[0].outcome, Outcome::Fail);
        assert!(!boots[1].problems().is_empty());
    }
}
