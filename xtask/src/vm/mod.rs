//! `cargo xtask vm` and `cargo xtask demo`: run the integration tests and example drivers inside
//! QEMU guests, over a matrix of kernel variants and IOMMUs.
//!
//! Steps of a run:
//! 1. [`install`]: check (and as root, install) the host packages;
//! 2. [`guest`]: build the static test binaries and examples (`target/guest`);
//! 3. [`initramfs`]: pack them with busybox and `xtask/guest/init.sh` into an initramfs;
//! 4. [`kernel`]: build or fetch from the cache the kernel of each variant ([`packaged_kernel`]:
//!    download Debian's packaged 6.1 kernel and its VFIO modules for `debian61`);
//! 5. [`qemu`]: boot each (variant, IOMMU) pair the kernel can run, stream and parse the console;
//! 6. print the result matrix, judge it against the expected coverage ([`coverage`]:
//!    `xtask/coverage.txt`; a required result that skipped or is missing fails the run) and
//!    print the totals line.

pub mod bench;
mod coverage;
mod guest;
mod initramfs;
mod install;
mod json;
pub mod kernel;
mod mode_matrix;
mod packaged_kernel;
mod qemu;

use qemu::{Boot, BootSpec, Outcome};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const USAGE: &str = "\
usage: cargo xtask vm [test] [OPTIONS]    run the vfio-tests binaries (and examples) in QEMU guests
       cargo xtask vm kernel [--variant V] build (or find cached) the guest kernels only
       cargo xtask vm replay LOG           judge the saved output of an earlier `vm test` again
                                           (result matrix and coverage), without booting
       cargo xtask demo [OPTIONS]         run the vfio-pci demo examples (edu, nvme_identify, migrate_mtty, p2p_copy)

options:
  --variant a|b|debian61     kernel variant(s), repeatable or comma separated
                               (default: a,b,debian61 for vm test; a,b for demo)
                               a: 7.3 with VFIO_CONTAINER + VFIO_IOMMU_TYPE1;
                               b: 7.3 with IOMMUFD_VFIO_CONTAINER;
                               debian61: Debian 12's packaged 6.1 kernel, modular VFIO, no
                               iommufd and no VFIO cdev (intel-iommu boots only)
  --iommu intel|virtio|none  guest IOMMU(s), repeatable or comma separated
                               (default: intel,virtio,none for vm test; intel,none for demo)
  --example NAME[:ARGS]      build vfio-pci's example NAME and run it in the guest with ARGS
                               (repeatable, e.g. --example 'edu:--mode cdev'); without any,
                               the demo examples run in group and cdev mode
  --test BIN                 run only this vfio-tests binary (tests/tests/BIN.rs; repeatable or
                               comma separated); coverage then judges only its rows
  --no-tests                 do not build or run the vfio-tests binaries
  --no-coverage              report skips against xtask/coverage.txt but do not fail on
                               required results that skipped or are missing (vm test)
  --timeout SECS             per-boot timeout, QEMU is killed after it (default: 600)
  --append ARGS              extra kernel command line

environment:
  VFIO_RS_CACHE              cache directory (default: $XDG_CACHE_HOME/vfio-rs or ~/.cache/vfio-rs)
  VFIO_KERNEL_PACKAGE        Debian kernel source package (default: linux-source-7.3)
  VFIO_KERNEL_SUITE          Debian suite to take it from (default: trixie-backports)";

/// Kernel variant: which kernel, and which implementation serves `/dev/vfio/vfio`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Variant {
    /// 7.3, built here: the real type1 container beside the iommufd cdev.
    A,
    /// 7.3, built here: iommufd's compat container.
    B,
    /// Debian 12's packaged 6.1 kernel: modular VFIO with the type1 container, no iommufd and
    /// no VFIO device cdev.
    Debian61,
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Variant::A => "a",
            Variant::B => "b",
            Variant::Debian61 => "debian61",
        })
    }
}

/// A kernel ready to boot.
pub struct GuestKernel {
    /// The bzImage (vmlinuz).
    pub image: PathBuf,
    /// For a modular kernel: a gzip cpio of its modules, appended to the initramfs.
    pub modules: Option<PathBuf>,
    /// The IOMMUs this kernel cannot work with, and why.
    pub unsupported: Vec<(Iommu, String)>,
}

impl GuestKernel {
    /// Why this kernel cannot boot with `iommu`, if it cannot.
    fn why_not(&self, iommu: Iommu) -> Option<&str> {
        self.unsupported
            .iter()
            .find(|(i, _)| *i == iommu)
            .map(|(_, why)| why.as_str())
    }
}

/// The kernel of `variant`, built or fetched (or found in the cache). `source` is the 7.3
/// source, resolved on first need (a run of `debian61` alone never asks for it).
fn guest_kernel(cache: &Path, source: &mut Option<kernel::Source>, variant: Variant) -> crate::Result<GuestKernel> {
    if variant == Variant::Debian61 {
        return packaged_kernel::ensure(cache);
    }
    let source = match source {
        Some(s) => s,
        None => source.insert(kernel::resolve(cache)?),
    };
    Ok(GuestKernel {
        image: kernel::ensure(cache, source, variant)?,
        modules: None,
        unsupported: Vec::new(),
    })
}

/// The IOMMU the guest machine has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Iommu {
    Intel,
    Virtio,
    None,
}

impl fmt::Display for Iommu {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Iommu::Intel => "intel",
            Iommu::Virtio => "virtio",
            Iommu::None => "none",
        })
    }
}

/// Parsed command line.
struct Options {
    variants: Vec<Variant>,
    iommus: Vec<Iommu>,
    /// Example runs: (example name, argument string).
    runs: Vec<(String, String)>,
    tests: bool,
    /// `--test`: run only these test binaries (empty: all).
    only: Vec<String>,
    /// Fail when the results do not cover what `xtask/coverage.txt` requires.
    coverage: bool,
    timeout: Duration,
    append: String,
}

fn parse_options(args: &[String], default_variants: &[Variant], default_iommus: &[Iommu]) -> crate::Result<Options> {
    let mut o = Options {
        variants: Vec::new(),
        iommus: Vec::new(),
        runs: Vec::new(),
        tests: true,
        only: Vec::new(),
        coverage: true,
        timeout: Duration::from_secs(600),
        append: String::new(),
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = split_flag(arg);
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| format!("{flag} needs a value\n\n{USAGE}"))
        };
        match flag {
            "--variant" => {
                for v in value()?.split(',').filter(|v| !v.is_empty()) {
                    o.variants.push(match v.to_ascii_lowercase().as_str() {
                        "a" => Variant::A,
                        "b" => Variant::B,
                        "debian61" => Variant::Debian61,
                        _ => return Err(format!("unknown variant `{v}`: use a, b or debian61").into()),
                    });
                }
            }
            "--iommu" => {
                for v in value()?.split(',').filter(|v| !v.is_empty()) {
                    o.iommus.push(match v {
                        "intel" => Iommu::Intel,
                        "virtio" => Iommu::Virtio,
                        "none" => Iommu::None,
                        _ => return Err(format!("unknown IOMMU `{v}`: use intel, virtio or none").into()),
                    });
                }
            }
            "--example" => {
                let v = value()?;
                let (name, args) = v.split_once(':').unwrap_or((&v, ""));
                if name.is_empty() || name.contains(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-')) {
                    return Err(format!("bad example name `{name}` in --example {v}").into());
                }
                o.runs.push((name.to_owned(), args.trim().to_owned()));
            }
            "--no-tests" => o.tests = false,
            "--test" => o
                .only
                .extend(value()?.split(',').filter(|v| !v.is_empty()).map(str::to_owned)),
            "--no-coverage" => o.coverage = false,
            "--timeout" => {
                let v = value()?;
                let secs: u64 = v.parse().map_err(|_| format!("--timeout wants seconds, got `{v}`"))?;
                o.timeout = Duration::from_secs(secs);
            }
            "--append" => o.append = value()?,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => return Err(format!("unknown argument `{arg}`\n\n{USAGE}").into()),
        }
    }
    if o.variants.is_empty() {
        o.variants = default_variants.to_vec();
    }
    if o.iommus.is_empty() {
        o.iommus = default_iommus.to_vec();
    }
    o.variants.sort();
    o.variants.dedup();
    o.iommus.dedup();
    Ok(o)
}

/// `--flag=value` as (`--flag`, Some(value)); anything else as (it, None).
fn split_flag(arg: &str) -> (&str, Option<String>) {
    match arg.split_once('=') {
        Some((f, v)) if f.starts_with("--") => (f, Some(v.to_owned())),
        _ => (arg, None),
    }
}

/// `cargo xtask vm ...`
pub fn main(args: &[String]) -> crate::Result {
    let (sub, rest) = match args.first().map(String::as_str) {
        Some("test") => ("test", &args[1..]),
        Some("kernel") => ("kernel", &args[1..]),
        Some("replay") => return replay(&args[1..]),
        Some("help") => {
            println!("{USAGE}");
            return Ok(());
        }
        _ => ("test", args),
    };
    let mut opts = parse_options(
        rest,
        &[Variant::A, Variant::B, Variant::Debian61],
        &[Iommu::Intel, Iommu::Virtio, Iommu::None],
    )?;
    // The example drivers are tests too: each checks what the harness's devices must answer
    // (e.g. the NVMe serial number) and exits non-zero otherwise.
    if opts.runs.is_empty() {
        opts.runs = demo_runs();
    }
    if sub == "kernel" {
        install::ensure()?;
        let cache = cache_dir()?;
        let mut source = None;
        for &v in &opts.variants {
            guest_kernel(&cache, &mut source, v)?;
        }
        return Ok(());
    }
    // Read before the long run: a malformed table fails at once.
    let table = coverage::Table::load(&coverage::default_path())?;
    let start = Instant::now();
    let (boots, not_booted) = run_matrix(&opts)?;
    let report = report_tests(&boots);
    report_not_booted(&not_booted);
    let asked = coverage::Asked {
        boots: opts
            .variants
            .iter()
            .flat_map(|v| opts.iommus.iter().map(move |i| format!("{v}/{i}")))
            .collect(),
        not_booted,
        tests: opts.tests,
        only: opts.only.clone(),
        examples: opts.runs.iter().map(|(n, a)| example_row(n, a)).collect(),
    };
    let result = judge_and_total(&table, &asked, &report, opts.coverage);
    println!("(total time {:.0}s)", start.elapsed().as_secs_f64());
    result
}

/// `cargo xtask vm replay LOG`: the boots of a saved `vm test` output (its `[label] ` console
/// lines), reported and judged against `xtask/coverage.txt` as if they had just run, with the
/// default test and example runs as what was asked for.
fn replay(args: &[String]) -> crate::Result {
    let [path] = args else {
        return Err(format!("replay wants one file, the saved output of `cargo xtask vm test`\n\n{USAGE}").into());
    };
    let table = coverage::Table::load(&coverage::default_path())?;
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let boots = qemu::replay(&text);
    if boots.is_empty() {
        return Err(format!("{path} has no `[variant/iommu] ` console lines").into());
    }
    let report = report_tests(&boots);
    let asked = coverage::Asked {
        boots: boots.iter().map(|b| b.label.clone()).collect(),
        not_booted: Vec::new(),
        tests: true,
        only: Vec::new(),
        examples: demo_runs().iter().map(|(n, a)| example_row(n, a)).collect(),
    };
    judge_and_total(&table, &asked, &report, true)
}

/// Judges `report` against `table`, prints the coverage verdict and the totals line, and
/// returns the run's result: an error for failed results, or for coverage problems when
/// `enforce` (else they are only reported).
fn judge_and_total(table: &coverage::Table, asked: &coverage::Asked, report: &Report, enforce: bool) -> crate::Result {
    let verdict = coverage::judge(table, asked, &report.rows);
    coverage::print(table, &verdict);
    let hardware = verdict.count(coverage::Class::HardwareOnly);
    println!(
        "\n{} passed, {} failed, {} skipped ({} allowed, {hardware} hardware-only, not covered here, {} not allowed)",
        report.passed,
        report.failed,
        report.skipped,
        verdict.count(coverage::Class::Allowed),
        verdict.count(coverage::Class::Required) + verdict.count(coverage::Class::NotAllowed),
    );
    let mut uncovered = verdict.problems.len();
    if uncovered > 0 && !enforce {
        println!("warning: {uncovered} coverage problem(s) ignored (--no-coverage)");
        uncovered = 0;
    }
    match (report.failed, uncovered) {
        (0, 0) => Ok(()),
        (0, n) => Err(format!(
            "{n} coverage problem(s): required results skipped or missing, or skips {} does not allow; see above",
            table.origin
        )
        .into()),
        (f, 0) => Err(format!("{f} failure(s) in the guest runs; see above").into()),
        (f, n) => Err(format!("{f} failure(s) in the guest runs and {n} coverage problem(s); see above").into()),
    }
}

/// The result-matrix row of the example run `name` with `args`.
fn example_row(name: &str, args: &str) -> String {
    if args.is_empty() {
        format!("example {name}")
    } else {
        format!("example {name} {args}")
    }
}

/// The examples `cargo xtask demo` runs, each in group and in cdev mode on every boot.
const DEMO_EXAMPLES: &[&str] = &["edu", "nvme_identify", "migrate_mtty", "p2p_copy"];

/// `lsvfio` first (what the guest offers), then `lsvfio unbind` and `bind` moving a function off
/// vfio-pci and back (and listing it, openable again), then every demo example in group and in
/// cdev mode.
fn demo_runs() -> Vec<(String, String)> {
    // The virtio-rng function on the root bus: qemu.rs puts it at slot 7 (`virtio-rng-pci,
    // addr=0x7`) on every boot and /init binds it to vfio-pci (VFIO_TEST_VIRTIO). Only tests
    // use it, and they have run: it is safe to move. Named by address because run.list lines
    // are not expanded, and its id (1af4:1005 or 1044) also matches the virtio-rng behind the
    // bridge on intel boots, which must stay on virtio-pci (it makes the non-viable group).
    const MOVABLE: &str = "0000:00:07.0";
    let mut runs = vec![
        ("lsvfio".to_string(), "-v".to_string()),
        ("lsvfio".to_string(), "-v --json".to_string()),
        ("lsvfio".to_string(), format!("unbind {MOVABLE} virtio-pci")),
        ("lsvfio".to_string(), format!("bind {MOVABLE}")),
        ("lsvfio".to_string(), format!("-v {MOVABLE}")),
    ];
    runs.extend(
        DEMO_EXAMPLES
            .iter()
            .flat_map(|name| ["group", "cdev"].map(|m| (name.to_string(), format!("--mode {m}")))),
    );
    runs
}

/// `cargo xtask demo`: the `edu`, `nvme_identify`, `migrate_mtty` and `p2p_copy` examples in group and cdev mode on every
/// boot.
pub fn demo(args: &[String]) -> crate::Result {
    let mut opts = parse_options(args, &[Variant::A, Variant::B], &[Iommu::Intel, Iommu::None])?;
    opts.tests = false;
    if opts.runs.is_empty() {
        opts.runs = demo_runs();
    }
    let (boots, not_booted) = run_matrix(&opts)?;
    println!("\n==> demo results");
    let mut failed = 0;
    let width = opts.runs.iter().map(|(n, a)| n.len() + a.len() + 1).max().unwrap_or(0);
    for boot in &boots {
        for (name, args) in &opts.runs {
            let full = if args.is_empty() {
                name.clone()
            } else {
                format!("{name} {args}")
            };
            let run = boot.runs.iter().find(|r| r.kind == "example" && r.name == full);
            let (status, line) = match run {
                Some(r) if r.rc == Some(0) => ("ok", demo_summary(r)),
                Some(r) if r.rc == Some(SKIPPED_RC) => ("skip", demo_summary(r)),
                Some(r) => ("FAILED", format!("rc={} {}", r.rc.unwrap_or(-1), demo_summary(r))),
                None => ("FAILED", format!("did not run: {}", boot.problems().join("; "))),
            };
            if status != "ok" {
                failed += 1;
            }
            println!("{:<9} {full:<width$}  {status:<6}  {line}", boot.label);
        }
    }
    report_boot_problems(&boots);
    report_not_booted(&not_booted);
    if failed > 0 {
        return Err(format!("{failed} demo run(s) failed").into());
    }
    Ok(())
}

/// A demo run's result line: the last one tagged with the program's name up to its first `_`
/// (`edu:` for edu, `nvme:` for nvme_identify), else the run's own summary.
fn demo_summary(run: &qemu::Run) -> String {
    // A JSON run prints no summary line of its own: count what it listed.
    if run.name.contains("--json") {
        let all = json::Json::parse(&run.lines.join("\n"));
        let items = all.as_ref().map(|j| j.as_array()).unwrap_or_default();
        let usable = items
            .iter()
            .filter(|d| d.get("modes").is_some_and(|m| !m.as_array().is_empty()))
            .count();
        return format!(
            "JSON: {} PCI function(s), {usable} usable through VFIO now",
            items.len()
        );
    }
    let program = run.name.split_whitespace().next().unwrap_or("");
    let tag = format!("{}:", program.split('_').next().unwrap_or(program));
    run.lines
        .iter()
        .rev()
        .map(|l| l.trim())
        .find(|l| l.starts_with(&tag))
        .unwrap_or_else(|| run.summary())
        .to_owned()
}

/// The exit status with which an example says it was skipped: the kernel does not offer the
/// mode it was asked to use (the "skipped" code of automake's test drivers).
pub const SKIPPED_RC: i32 = 77;

/// Prints the (variant, IOMMU) pairs that were asked for but not booted, and why.
fn report_not_booted(not_booted: &[(String, String)]) {
    if !not_booted.is_empty() {
        println!("\nnot booted (the kernel cannot run that IOMMU):");
        for (label, why) in not_booted {
            println!("  {label}: {why}");
        }
    }
}

/// The (variant, IOMMU) pairs asked for but not booted: (label, why).
type NotBooted = Vec<(String, String)>;

/// Steps 1-5: prepare everything, then boot every (variant, IOMMU) pair in order whose kernel
/// supports that IOMMU. Returns the boots and, for the pairs skipped, (label, why).
fn run_matrix(opts: &Options) -> crate::Result<(Vec<Boot>, NotBooted)> {
    install::ensure()?;
    let workspace = workspace_dir();
    let cache = cache_dir()?;

    let tests = if opts.tests {
        let mut all = guest::build_tests(&workspace)?;
        for name in &opts.only {
            if !all.iter().any(|b| &b.name == name) {
                return Err(format!("--test {name}: vfio-tests has no test binary `{name}`").into());
            }
        }
        all.retain(|b| opts.only.is_empty() || opts.only.contains(&b.name));
        all
    } else {
        Vec::new()
    };
    if opts.tests && tests.is_empty() {
        println!("warning: vfio-tests has no test binaries yet; the guests will only boot");
    }
    let mut names: Vec<String> = opts.runs.iter().map(|(n, _)| n.clone()).collect();
    names.sort();
    names.dedup();
    let examples = guest::build_examples(&workspace, &names)?;
    for b in tests.iter().chain(&examples) {
        guest::check_static(&b.path)?;
    }

    let guest_dir = workspace.join("target/guest");
    std::fs::create_dir_all(&guest_dir)?;
    // Per run: several runs may share a checkout (and QEMU locks the nvme image).
    let run_dir = guest_dir.join(format!("run-{}", std::process::id()));
    std::fs::create_dir_all(&run_dir)?;
    let _cleanup = RemoveOnDrop(run_dir.clone());
    let initrd = run_dir.join("initramfs.cpio.gz");
    let contents = initramfs::Contents {
        tests: &tests,
        examples: &examples,
        runs: &opts.runs,
    };
    initramfs::build(&initrd, Path::new(install::BUSYBOX), &contents)?;
    println!(
        "==> initramfs {} ({} test binaries, {} examples, {:.1} MB)",
        initrd.display(),
        tests.len(),
        examples.len(),
        std::fs::metadata(&initrd)?.len() as f64 / 1e6
    );

    let mut source = None;
    let mut boots = Vec::new();
    let mut not_booted = Vec::new();
    for &variant in &opts.variants {
        let kernel = guest_kernel(&cache, &mut source, variant)?;
        let initrd = match &kernel.modules {
            None => initrd.clone(),
            // The kernel unpacks concatenated (separately compressed) cpio archives in turn.
            Some(modules) => {
                let both = run_dir.join(format!("initramfs-{variant}.cpio.gz"));
                let mut data = std::fs::read(&initrd)?;
                data.extend(std::fs::read(modules).map_err(|e| format!("cannot read {}: {e}", modules.display()))?);
                std::fs::write(&both, data)?;
                both
            }
        };
        for &iommu in &opts.iommus {
            if let Some(why) = kernel.why_not(iommu) {
                println!("==> not booting {variant}/{iommu}: {why}");
                not_booted.push((format!("{variant}/{iommu}"), why.to_owned()));
                continue;
            }
            let spec = BootSpec {
                variant,
                iommu,
                kernel: kernel.image.clone(),
                initrd: initrd.clone(),
                nvme_img: run_dir.join("nvme.img"),
                timeout: opts.timeout,
                append: opts.append.clone(),
                memory: qemu::DEFAULT_MEMORY.to_owned(),
                icount: false,
                parallel_vcpus: false,
            };
            boots.push(qemu::boot(&spec)?);
        }
    }
    if boots.is_empty() {
        let why: Vec<String> = not_booted.iter().map(|(l, w)| format!("{l}: {w}")).collect();
        return Err(format!("nothing to boot: {}", why.join("; ")).into());
    }
    Ok((boots, not_booted))
}

/// What [`report_tests`] counted, and each boot's rows for the coverage check.
struct Report {
    passed: usize,
    /// Failed tests and examples, crashed runs, failed boots.
    failed: usize,
    skipped: usize,
    rows: Vec<coverage::BootRows>,
}

/// Prints the matrix (rows: tests, columns: boots), the mode matrix and the failed boots'
/// details; returns the counts and every boot's rows (the coverage check prints the skips).
fn report_tests(boots: &[Boot]) -> Report {
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    let mut seen: Vec<coverage::BootRows> = boots
        .iter()
        .map(|b| coverage::BootRows {
            label: b.label.clone(),
            rows: Vec::new(),
        })
        .collect();
    // Row name -> cell per boot, in first-seen order.
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let mut cell = |row: String, col: usize, value: String| {
        let idx = match rows.iter().position(|(r, _)| *r == row) {
            Some(i) => i,
            None => {
                rows.push((row, vec!["-".to_owned(); boots.len()]));
                rows.len() - 1
            }
        };
        rows[idx].1[col] = value;
    };
    for (col, boot) in boots.iter().enumerate() {
        let mut record = |row: &str, s: coverage::Seen| seen[col].rows.push((row.to_owned(), s));
        for t in &boot.tests {
            let row = format!("{}::{}", t.binary, t.name);
            let value = match &t.outcome {
                Outcome::Pass => {
                    passed += 1;
                    record(&row, coverage::Seen::Pass);
                    "pass"
                }
                Outcome::Fail => {
                    failed += 1;
                    record(&row, coverage::Seen::Fail);
                    "FAIL"
                }
                Outcome::Skip(reason) => {
                    skipped += 1;
                    record(&row, coverage::Seen::Skip(reason.clone()));
                    "skip"
                }
            };
            cell(row, col, value.to_owned());
        }
        for run in &boot.runs {
            // Examples are rows of their own.
            if run.kind == "example" {
                // `lsvfio --json` must also print one JSON array with an entry per function.
                let bad_json = run.name.starts_with("lsvfio")
                    && run.name.contains("--json")
                    && json::Json::parse(&run.lines.join("\n")).is_none_or(|j| j.as_array().is_empty());
                if bad_json {
                    println!("[{}] lsvfio --json printed no valid JSON array", boot.label);
                }
                // `lsvfio -v` opens every device it lists as openable; it must manage.
                let unopened = run.name.starts_with("lsvfio")
                    && run.lines.iter().any(|l| l.trim_start().starts_with("cannot open:"));
                if unopened {
                    println!(
                        "[{}] {} could not open a device it lists as openable",
                        boot.label, run.name
                    );
                }
                // `lsvfio unbind ADDR DRIVER` / `bind ADDR` must say the function ended where it
                // was sent, and a listing of given addresses must find each usable.
                let words: Vec<&str> = run.name.split_whitespace().collect();
                let want = match words.as_slice() {
                    ["lsvfio", "unbind", addr] => Some(format!("{addr}: left vfio-pci, now ")),
                    ["lsvfio", "unbind", addr, driver] => Some(format!("{addr}: left vfio-pci, now {driver}")),
                    ["lsvfio", "bind", addr] => Some(format!("{addr}: bound to vfio-pci (was ")),
                    ["lsvfio", "bind" | "unbind", ..] => None,
                    ["lsvfio", "mdev", ..] => None,
                    ["lsvfio", args @ ..] if !args.contains(&"--json") && args.iter().any(|a| !a.starts_with('-')) => {
                        let n = args.iter().filter(|a| !a.starts_with('-')).count();
                        Some(format!("lsvfio: {n} PCI function(s), {n} usable through VFIO now"))
                    }
                    _ => None,
                };
                let missing = want
                    .as_ref()
                    .filter(|w| !run.lines.iter().any(|l| l.trim().starts_with(w.as_str())));
                if let Some(w) = missing {
                    println!("[{}] {} did not print `{w}`", boot.label, run.name);
                }
                let bad_output = bad_json || unopened || missing.is_some();
                let row = format!("example {}", run.name);
                if run.rc == Some(SKIPPED_RC) {
                    skipped += 1;
                    let summary = run.summary();
                    let reason = summary.split_once("skipped: ").map_or(summary, |(_, r)| r);
                    record(&row, coverage::Seen::Skip(reason.to_owned()));
                    cell(row, col, "skip".to_owned());
                    continue;
                }
                let value = if run.rc == Some(0) && !bad_output {
                    passed += 1;
                    record(&row, coverage::Seen::Pass);
                    "pass".to_owned()
                } else {
                    failed += 1;
                    record(&row, coverage::Seen::Fail);
                    format!("FAIL rc={}", run.rc.unwrap_or(-1))
                };
                cell(row, col, value);
                continue;
            }
            // A test binary that exited non-zero without reporting a failed test crashed or errored.
            let reported = boot
                .tests
                .iter()
                .any(|t| t.binary == run.name && t.outcome == Outcome::Fail);
            if run.rc != Some(0) && !reported {
                failed += 1;
                cell(
                    format!("{} {} (exit)", run.kind, run.name),
                    col,
                    format!("FAIL rc={}", run.rc.unwrap_or(-1)),
                );
            }
        }
        if !boot.problems().is_empty() {
            failed += 1;
            cell("(boot)".to_owned(), col, "FAIL".to_owned());
        }
    }

    println!("\n==> results");
    let width = rows.iter().map(|(r, _)| r.len()).max().unwrap_or(4).max(4);
    let mut header = format!("{:<width$}", "test");
    for b in boots {
        header.push_str(&format!("  {:<8}", b.label));
    }
    println!("{}", header.trim_end());
    for (row, cells) in &rows {
        let mut line = format!("{row:<width$}");
        for (c, b) in cells.iter().zip(boots) {
            line.push_str(&format!("  {c:<w$}", w = b.label.len().max(8)));
        }
        println!("{}", line.trim_end());
    }
    if rows.is_empty() {
        println!("(no test results)");
    }
    mode_matrix::print(boots);
    report_boot_problems(boots);
    Report {
        passed,
        failed,
        skipped,
        rows: seen,
    }
}

/// For every boot that failed or had failing runs: what went wrong and the guest's kernel log tail.
fn report_boot_problems(boots: &[Boot]) {
    for boot in boots {
        let problems = boot.problems();
        let bad_runs = boot.runs.iter().any(|r| r.rc != Some(0) && r.rc != Some(SKIPPED_RC));
        if problems.is_empty() && !bad_runs {
            continue;
        }
        println!(
            "\n---- {}: {} ----",
            boot.label,
            if problems.is_empty() {
                "failing runs".to_owned()
            } else {
                problems.join("; ")
            }
        );
        for l in &boot.qemu_errors {
            println!("qemu: {l}");
        }
        if !boot.dmesg.is_empty() {
            println!("guest dmesg tail (after the first failing run):");
            // Each failing run printed its own tail; the last one is the most complete.
            let start = boot.dmesg.len().saturating_sub(40);
            for l in &boot.dmesg[start..] {
                println!("  {l}");
            }
        } else {
            println!("last console lines:");
            let start = boot.console.len().saturating_sub(40);
            for l in &boot.console[start..] {
                println!("  {l}");
            }
        }
    }
}

/// The workspace root (xtask's parent directory).
fn workspace_dir() -> PathBuf {
    let xtask = Path::new(env!("CARGO_MANIFEST_DIR"));
    xtask.parent().unwrap_or(xtask).to_path_buf()
}

/// `$VFIO_RS_CACHE`, else `$XDG_CACHE_HOME/vfio-rs`, else `~/.cache/vfio-rs`. Outside the checkout
/// on purpose: CI clones afresh each time but keeps this directory.
/// The harness cache: `$VFIO_RS_CACHE`, `$XDG_CACHE_HOME/vfio-rs` or `~/.cache/vfio-rs`.
pub fn cache_dir() -> crate::Result<PathBuf> {
    let dir = if let Some(d) = std::env::var_os("VFIO_RS_CACHE").filter(|d| !d.is_empty()) {
        PathBuf::from(d)
    } else if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        PathBuf::from(d).join("vfio-rs")
    } else if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        PathBuf::from(home).join(".cache/vfio-rs")
    } else {
        return Err("cannot find a cache directory: set VFIO_RS_CACHE, XDG_CACHE_HOME or HOME".into());
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create cache directory {}: {e}", dir.display()))?;
    Ok(dir)
}

/// Runs `cmd` with inherited output; an error names `what` and the exit status.
fn run_checked(cmd: &mut Command, what: &str) -> crate::Result {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let status = cmd
        .status()
        .map_err(|e| format!("cannot {what}: running {program} failed: {e}"))?;
    if !status.success() {
        return Err(format!("cannot {what}: {program} failed ({status})").into());
    }
    Ok(())
}

/// Removes a directory (recursively) when dropped.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
