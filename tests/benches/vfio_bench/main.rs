//! vfio-rs benchmarks (issue #9), run in the QEMU guest by `cargo xtask bench`; see
//! BENCHMARKS.md for what each case measures and the latest results.
//!
//! Every comparison interleaves its sides (A, B, A, B ...) in one process pinned to one vCPU, and
//! reports medians and the median of the per-round ratios: only ratios measured in the same boot mean anything
//! under TCG. Each result is printed twice: a `@@BENCH {json}` line for `cargo xtask bench` and a
//! line for people. A case that cannot run here prints `skipped: <reason>`.
//!
//! Options: `--quick` (a fifth of the rounds), `--only ID[,ID...]` (P1..P9, X1, X2, S1, S2,
//! M1, M2, Q1, Q2, R1),
//! `--reserve-hugepages` (raise the 2 MiB pool as needed, put back afterwards; needs root),
//! `--cpu N` (the vCPU to pin to; default the last one).
//! Devices: `VFIO_TEST_EDU` (QEMU edu, required), `VFIO_TEST_NVME` (a second device, for the runs
//! that need both modes live at once). M1 and M2 create their own mtty instances. P7 also needs
//! `VFIO_TEST_NVME_CMB` (an nvme with a CMB in BAR2).

mod dma;
mod fixtures;
mod iommufd_events;
mod limits;
mod measure;
mod migration;
mod mmio;
mod nvme_io;
mod open;
mod p2p;
mod restart;
mod scale;

use std::process::ExitCode;

use vfio_core::{Mode, PciAddress};

use crate::fixtures::{HugePool, mode_unavailable, online_cpus, pin_to_cpu};
use crate::measure::{BenchResult, Obj, Plan, Record};

/// Options and results of the run.
pub struct Ctx {
    /// Fewer rounds and operations.
    pub quick: bool,
    /// Benchmark ids to run (all when empty).
    pub only: Vec<String>,
    /// May raise the 2 MiB huge-page pool.
    pub reserve_hugepages: bool,
    /// The vCPU the benchmark is pinned to.
    pub cpu: usize,
    /// Another vCPU, for the cross-vCPU interrupt case.
    pub other_cpu: Option<usize>,
    /// Everything emitted so far.
    pub records: Vec<Record>,
}

impl Ctx {
    /// `rounds` rounds (a fifth of them, at least 3, with `--quick`). Rounds are short (a few
    /// operations) and many, so that a round the host preempted QEMU in is an outlier the
    /// median ignores rather than noise in every round.
    pub fn plan(&self, rounds: usize, warmup: u64) -> Plan {
        Plan {
            rounds: if self.quick { (rounds / 5).max(3) } else { rounds },
            warmup,
        }
    }

    /// Whether benchmark `id` was asked for.
    pub fn wants(&self, id: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| o.eq_ignore_ascii_case(id))
    }

    /// Prints a record (JSON and human line) and keeps it.
    pub fn emit(&mut self, r: Record) {
        println!("@@BENCH {}", r.json());
        println!("    {}", r.human());
        self.records.push(r);
    }

    /// Runs one benchmark section; an error becomes a FAILED row.
    fn section(&mut self, ids: &[&'static str], mode: &str, f: impl FnOnce(&mut Ctx) -> BenchResult) {
        if !ids.iter().any(|id| self.wants(id)) {
            return;
        }
        if let Err(e) = f(self) {
            self.emit(Record::new(ids[0], "(benchmark did not complete)", mode).fail(e));
        }
    }

    /// A skipped row for each of `ids` that was asked for.
    fn skip_all(&mut self, ids: &[&'static str], mode: &str, why: &str) {
        for id in ids {
            if self.wants(id) {
                self.emit(Record::new(id, "all cases", mode).skip(why));
            }
        }
    }
}

fn device(var: &str) -> Result<PciAddress, String> {
    match std::env::var(var) {
        Ok(s) if !s.is_empty() => s.parse().map_err(|e| format!("{var}: {e}")),
        _ => Err(format!("{var} is not set (no such device bound to vfio-pci)")),
    }
}

fn parse_args() -> Result<Ctx, String> {
    let cpus = online_cpus();
    let mut ctx = Ctx {
        quick: false,
        only: Vec::new(),
        reserve_hugepages: false,
        cpu: cpus - 1,
        other_cpu: None,
        records: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => ctx.quick = true,
            "--reserve-hugepages" => ctx.reserve_hugepages = true,
            "--only" => {
                let v = args.next().ok_or("--only needs a list of ids")?;
                ctx.only
                    .extend(v.split(',').filter(|s| !s.is_empty()).map(str::to_owned));
            }
            "--cpu" => {
                let v = args.next().ok_or("--cpu needs a number")?;
                ctx.cpu = v.parse().map_err(|_| format!("--cpu: bad number {v}"))?;
            }
            // `cargo bench` passes this to harness = false benches.
            "--bench" => {}
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if ctx.cpu >= cpus {
        return Err(format!("--cpu {}: only {cpus} CPUs online", ctx.cpu));
    }
    ctx.other_cpu = (0..cpus).find(|&c| c != ctx.cpu);
    Ok(ctx)
}

fn main() -> ExitCode {
    let mut ctx = match parse_args() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vfio_bench: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = pin_to_cpu(ctx.cpu) {
        eprintln!("vfio_bench: cannot pin to CPU {}: {e}", ctx.cpu);
        return ExitCode::FAILURE;
    }
    let edu = device("VFIO_TEST_EDU");
    let nvme = device("VFIO_TEST_NVME");
    let mut meta = Obj::default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    meta.str("kernel", kernel.trim());
    meta.num("cpus", online_cpus() as f64);
    meta.num("pinned_cpu", ctx.cpu as f64);
    meta.str("edu", edu.as_ref().map(|a| a.to_string()).unwrap_or_default().as_str());
    meta.str(
        "nvme",
        nvme.as_ref().map(|a| a.to_string()).unwrap_or_default().as_str(),
    );
    meta.str("modes", &format!("{:?}", vfio_core::detect()));
    meta.num("free_hugepages_2m", HugePool::free(2048) as f64);
    meta.num("free_hugepages_1g", HugePool::free(1 << 20) as f64);
    meta.str("quick", if ctx.quick { "yes" } else { "no" });
    println!("@@BENCH-META {}", meta.finish());

    const PER_MODE: &[&str] = &["P1", "P2", "P3", "P4", "P5", "P6", "P8", "P9", "R1"];
    for mode in [Mode::GROUP, Mode::CDEV] {
        let m = mode.to_string();
        if let Some(why) = mode_unavailable(mode) {
            ctx.skip_all(PER_MODE, &m, &why);
            continue;
        }
        let addr = match &edu {
            Ok(a) => *a,
            Err(why) => {
                ctx.skip_all(PER_MODE, &m, why);
                continue;
            }
        };
        println!("==> {m} mode, edu {addr}, pinned to CPU {}", ctx.cpu);
        ctx.section(&["P1", "P5"], &m, |c| dma::p1_p5(c, mode, &addr));
        ctx.section(&["P1"], &m, |c| dma::p1_layers(c, mode, &addr));
        ctx.section(&["P2"], &m, |c| match mode {
            Mode::GROUP => dma::p2_group(c, &addr),
            _ => dma::p2_cdev(c, &addr),
        });
        ctx.section(&["P3"], &m, |c| mmio::p3(c, mode, &addr));
        ctx.section(&["P4"], &m, |c| dma::p4(c, mode, &addr));
        ctx.section(&["P6"], &m, |c| open::p6_open(c, mode, &addr));
        ctx.section(&["P6"], &m, |c| open::p6_step_costs(c, mode, &addr));
        ctx.section(&["P6"], &m, |c| open::p6_secondary(c, mode, &addr));
        ctx.section(&["P6"], &m, |c| mmio::p6_irq(c, mode, &addr));
        ctx.section(&["P8"], &m, |c| mmio::p8_ioeventfd(c, mode, &addr));
        ctx.section(&["R1"], &m, |c| restart::r1(c, mode, &addr));
        ctx.section(&["P9"], &m, |c| limits::p9(c, mode, &addr));
    }

    const MIGRATION: &[&str] = &["M1", "M2"];
    for mode in [Mode::GROUP, Mode::CDEV] {
        let m = mode.to_string();
        if let Some(why) = mode_unavailable(mode).or_else(vfio_tests::mtty::unavailable) {
            ctx.skip_all(MIGRATION, &m, &why);
            continue;
        }
        println!("==> {m} mode, mtty, pinned to CPU {}", ctx.cpu);
        ctx.section(&["M1"], &m, |c| migration::m1(c, mode));
        ctx.section(&["M2"], &m, |c| migration::m2(c, mode));
    }

    const CROSS: &[&str] = &["X1", "X2", "S1", "S2"];
    let both = mode_unavailable(Mode::GROUP).or_else(|| mode_unavailable(Mode::CDEV));
    match (&edu, &nvme, both) {
        (_, _, Some(why)) => ctx.skip_all(CROSS, "cdev/group", &why),
        (Err(why), _, _) | (_, Err(why), _) => {
            ctx.skip_all(CROSS, "cdev/group", &format!("needs two devices, one per mode: {why}"))
        }
        (Ok(edu), Ok(nvme), None) => {
            let (edu, nvme) = (*edu, *nvme);
            println!("==> group and cdev side by side (edu {edu} in group mode, nvme {nvme} in cdev mode)");
            for mode in [Mode::GROUP, Mode::CDEV] {
                ctx.section(&["X1"], &mode.to_string(), |c| scale::x1(c, mode, &edu, &nvme));
            }
            ctx.section(&["X2"], "cdev/group", |c| scale::x2(c, &edu, &nvme));
            ctx.section(&["S1"], "cdev/group", |c| scale::s1(c, &edu, &nvme));
            ctx.section(&["S2"], "cdev/group", scale::s2);
        }
    }

    // Issue #16: iommufd fault and event queues, against the selftest mock (cdev mode only).
    const QUEUES: &[&str] = &["Q1", "Q2"];
    if QUEUES.iter().any(|id| ctx.wants(id)) {
        match vfio_tests::iommufd_mock::open() {
            Err(why) => ctx.skip_all(QUEUES, "cdev", &format!("no iommufd selftest mock: {why}")),
            Ok(iommufd) => {
                println!(
                    "==> iommufd fault and event queues (selftest mock), pinned to CPU {}",
                    ctx.cpu
                );
                ctx.section(&["Q1"], "cdev", |c| iommufd_events::q1(c, &iommufd));
                ctx.section(&["Q2"], "cdev", |c| iommufd_events::q2(c, &iommufd));
            }
        }
    }
    p2p::all(&mut ctx);

    let count = |v: &str| ctx.records.iter().filter(|r| r.verdict() == v).count();
    let failed = count("FAILED");
    println!(
        "vfio_bench: {} goals met, {} missed, {} informational, {} skipped, {failed} failed",
        count("met"),
        count("missed"),
        count("info"),
        count("skipped")
    );
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
