//! `cargo xtask bench`: runs the `vfio_bench` benchmark of `vfio-tests` in a guest (the same
//! harness as `cargo xtask vm`), collects its `@@BENCH` JSON lines from the console, and writes
//! `target/bench/results.json` and `target/bench/results.md` (also printed).
//!
//! A bench boot differs from a test boot in three ways: more memory (4 GiB, for 1 GiB maps of
//! anonymous and huge-page memory side by side), one 1 GiB huge page reserved on the kernel
//! command line (gigantic pages can only be had at boot), and a longer timeout. The benchmark
//! raises the 2 MiB pool itself (`--reserve-hugepages`) because `/init` sets it to 16.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::json::Json;
use super::qemu::{Boot, BootSpec};
use super::{
    Iommu, RemoveOnDrop, Variant, cache_dir, guest, initramfs, install, kernel, qemu, split_flag, workspace_dir,
};

const USAGE: &str = "\
usage: cargo xtask bench [OPTIONS]   run the vfio-rs benchmarks in a QEMU guest

options:
  --variant a|b              kernel variant(s), repeatable or comma separated (default: a)
  --iommu intel|virtio|none  guest IOMMU(s), repeatable or comma separated (default: intel)
  --quick                    fewer rounds (a smoke run; the ratios are noisier)
  --icount                   count instructions, not time: QEMU -icount shift=0 (1 ns of guest
                               time per emulated instruction; immune to host load, slower)
  --only IDS                 only these benchmarks, comma separated (P1..P9, M1, M2, Q1, Q2, R1, X1, X2, S1, S2)
  --memory SIZE              guest memory (default: 4G)
  --timeout SECS             per-boot timeout (default: 1800)
  --append ARGS              extra kernel command line

Writes target/bench/results.json and target/bench/results.md; see BENCHMARKS.md.";

/// Kernel command line of a bench boot: one 1 GiB huge page (only reservable at boot).
const BENCH_APPEND: &str = "hugepagesz=1G hugepages=1";

/// The results of one boot.
struct BootResults {
    label: String,
    kernel: String,
    /// The `@@BENCH-META` object, as JSON text.
    meta: Option<String>,
    /// Every `@@BENCH` record: parsed, and as the JSON text the benchmark printed.
    records: Vec<(Json, String)>,
    /// Why the boot or the benchmark run failed, if it did.
    problems: Vec<String>,
}

/// `cargo xtask bench ...`
pub fn main(args: &[String]) -> crate::Result {
    let mut quick = false;
    let mut icount = false;
    let mut only: Option<String> = None;
    let mut memory = "4G".to_owned();
    let mut timeout_given = false;
    let mut rest = Vec::new();
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
            "--quick" => quick = true,
            "--icount" => icount = true,
            "--only" => only = Some(value()?),
            "--memory" => memory = value()?,
            "--example" | "--no-tests" => return Err(format!("{flag} is not a bench option\n\n{USAGE}").into()),
            "-h" | "--help" | "help" => {
                println!("{USAGE}");
                return Ok(());
            }
            _ => {
                timeout_given |= flag == "--timeout";
                rest.push(arg.clone());
            }
        }
    }
    let mut opts = super::parse_options(&rest, &[Variant::A], &[Iommu::Intel])
        .map_err(|e| e.to_string().replace(super::USAGE, USAGE))?;
    if !timeout_given {
        opts.timeout = Duration::from_secs(1800);
    }

    let command = std::iter::once("cargo xtask bench".to_owned())
        .chain(args.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ");
    install::ensure()?;
    let workspace = workspace_dir();
    let cache = cache_dir()?;
    let bench = guest::build_bench(&workspace)?;
    guest::check_static(&bench.path)?;

    let guest_dir = workspace.join("target/guest");
    let run_dir = guest_dir.join(format!("run-bench-{}", std::process::id()));
    std::fs::create_dir_all(&run_dir)?;
    let _cleanup = RemoveOnDrop(run_dir.clone());
    let mut bench_args = "--reserve-hugepages".to_owned();
    if quick {
        bench_args.push_str(" --quick");
    }
    if let Some(ids) = &only {
        if ids.contains(|c: char| !(c.is_ascii_alphanumeric() || c == ',')) {
            return Err(format!("--only wants ids like P1,P4,S1, got `{ids}`").into());
        }
        bench_args.push_str(&format!(" --only {ids}"));
    }
    let runs = vec![(bench.name.clone(), bench_args)];
    let initrd = run_dir.join("initramfs.cpio.gz");
    let contents = initramfs::Contents {
        tests: &[],
        examples: std::slice::from_ref(&bench),
        runs: &runs,
    };
    initramfs::build(&initrd, Path::new(install::BUSYBOX), &contents)?;

    let source = kernel::resolve(&cache)?;
    let mut results = Vec::new();
    for &variant in &opts.variants {
        let kernel_image = kernel::ensure(&cache, &source, variant)?;
        for &iommu in &opts.iommus {
            let append = [BENCH_APPEND, opts.append.as_str()].join(" ").trim().to_owned();
            let spec = BootSpec {
                variant,
                iommu,
                kernel: kernel_image.clone(),
                initrd: initrd.clone(),
                nvme_img: run_dir.join("nvme.img"),
                timeout: opts.timeout,
                append,
                memory: memory.clone(),
                icount,
                // -icount runs one TCG thread anyway.
                parallel_vcpus: !icount,
            };
            let boot = qemu::boot(&spec)?;
            results.push(collect(&boot));
        }
    }

    let out_dir = workspace.join("target/bench");
    std::fs::create_dir_all(&out_dir)?;
    let header = Header {
        command,
        date: today(),
        qemu: qemu_version(),
        host_cpu: host_cpu(),
        memory,
        icount,
    };
    let json = results_json(&header, &results);
    let md = results_md(&header, &results);
    std::fs::write(out_dir.join("results.json"), json)?;
    std::fs::write(out_dir.join("results.md"), &md)?;
    println!("\n==> benchmark results\n\n{md}");
    println!(
        "written: {} and {}",
        out_dir.join("results.md").display(),
        out_dir.join("results.json").display()
    );

    let problems: Vec<String> = results
        .iter()
        .flat_map(|r| r.problems.iter().map(move |p| format!("{}: {p}", r.label)))
        .collect();
    if !problems.is_empty() {
        return Err(format!("benchmark run(s) failed:\n  {}", problems.join("\n  ")).into());
    }
    Ok(())
}

/// The benchmark's records and meta line from a boot's console, and what went wrong.
fn collect(boot: &Boot) -> BootResults {
    let mut problems = boot.problems();
    let kernel = boot
        .console
        .iter()
        .find_map(|l| l.split("@@VFIO-INFO ").nth(1)?.split(" kernel=").nth(1))
        .unwrap_or("?")
        .trim()
        .to_owned();
    let mut r = BootResults {
        label: boot.label.clone(),
        kernel,
        meta: None,
        records: Vec::new(),
        problems: Vec::new(),
    };
    let run = boot.runs.iter().find(|run| run.name.starts_with("vfio_bench"));
    let lines: &[String] = match run {
        Some(run) => {
            if run.rc != Some(0) {
                problems.push(format!("vfio_bench exited with rc={}", run.rc.unwrap_or(-1)));
            }
            &run.lines
        }
        None => {
            problems.push("vfio_bench did not run".to_owned());
            &[]
        }
    };
    for line in lines {
        let t = line.trim();
        if let Some(meta) = t.strip_prefix("@@BENCH-META ") {
            if Json::parse(meta).is_some() {
                r.meta = Some(meta.to_owned());
            }
        } else if let Some(rec) = t.strip_prefix("@@BENCH ") {
            match Json::parse(rec) {
                Some(j) => {
                    if str_of(&j, "verdict") == "FAILED" {
                        problems.push(format!(
                            "{} [{}] failed: {}",
                            str_of(&j, "id"),
                            str_of(&j, "mode"),
                            str_of(&j, "error")
                        ));
                    }
                    r.records.push((j, rec.to_owned()));
                }
                None => problems.push(format!("unreadable result line: {rec}")),
            }
        }
    }
    r.problems = problems;
    r
}

fn str_of<'a>(j: &'a Json, key: &str) -> &'a str {
    j.get(key).and_then(Json::as_str).unwrap_or("")
}

fn num_of(j: &Json, key: &str) -> Option<f64> {
    match j.get(key)? {
        Json::Num(s) => s.parse().ok(),
        _ => None,
    }
}

/// What the results were measured with.
struct Header {
    command: String,
    date: String,
    qemu: String,
    host_cpu: String,
    memory: String,
    /// Measured under `-icount`: every time is an instruction count.
    icount: bool,
}

fn results_json(h: &Header, results: &[BootResults]) -> String {
    let s = |v: &str| json_str(v);
    let mut out = String::from("{\n");
    let _ = writeln!(out, "  \"command\": {},", s(&h.command));
    let _ = writeln!(out, "  \"date\": {},", s(&h.date));
    let _ = writeln!(out, "  \"qemu\": {},", s(&h.qemu));
    let _ = writeln!(out, "  \"host_cpu\": {},", s(&h.host_cpu));
    let _ = writeln!(out, "  \"guest_memory\": {},", s(&h.memory));
    let _ = writeln!(out, "  \"clock\": {},", s(if h.icount { "icount" } else { "wall" }));
    out.push_str("  \"boots\": [\n");
    for (i, r) in results.iter().enumerate() {
        out.push_str("    {\n");
        let _ = writeln!(out, "      \"boot\": {},", s(&r.label));
        let _ = writeln!(out, "      \"kernel\": {},", s(&r.kernel));
        let _ = writeln!(out, "      \"meta\": {},", r.meta.as_deref().unwrap_or("null"));
        let problems: Vec<String> = r.problems.iter().map(|p| s(p)).collect();
        let _ = writeln!(out, "      \"problems\": [{}],", problems.join(", "));
        out.push_str("      \"records\": [\n");
        let recs: Vec<String> = r.records.iter().map(|(_, text)| format!("        {text}")).collect();
        out.push_str(&recs.join(",\n"));
        out.push_str("\n      ]\n    }");
        out.push_str(if i + 1 < results.len() { ",\n" } else { "\n" });
    }
    out.push_str("  ]\n}\n");
    out
}

fn json_str(v: &str) -> String {
    let mut out = String::from("\"");
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A time in ns in the unit that reads best.
fn fmt_ns(ns: f64) -> String {
    if ns < 1e3 {
        format!("{ns:.0} ns")
    } else if ns < 1e6 {
        format!("{:.2} us", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.3} s", ns / 1e9)
    }
}

/// A table cell: `|` would end it.
fn cell(s: &str) -> String {
    s.replace('|', "/")
}

fn results_md(h: &Header, results: &[BootResults]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Command: `{}`  ", h.command);
    let _ = writeln!(
        out,
        "Date: {}; QEMU: {}; host CPU: {}; guest: {} RAM, TCG",
        h.date, h.qemu, h.host_cpu, h.memory
    );
    if h.icount {
        let _ = writeln!(
            out,
            "\nClock: QEMU `-icount shift=0,sleep=off`: 1 ns of guest time is one emulated instruction, \
             so every time below is an instruction count (user and kernel), not a duration."
        );
    }
    for r in results {
        let _ = writeln!(out, "\n### Boot {} (kernel {})\n", r.label, r.kernel);
        if !r.problems.is_empty() {
            let _ = writeln!(out, "Problems: {}\n", r.problems.join("; "));
        }
        out.push_str("| id | mode | case | A | B | A/B (q1-q3 of per-round ratios) | goal | verdict | notes |\n");
        out.push_str("|---|---|---|---|---|---|---|---|---|\n");
        for (j, _) in &r.records {
            let side = |key: &str| {
                j.get(key)
                    .map(|s| {
                        let name = str_of(s, "name");
                        let median = num_of(s, "median_ns").map(fmt_ns).unwrap_or_default();
                        format!("{name} {median}")
                    })
                    .unwrap_or_default()
            };
            let ratio = match (num_of(j, "ratio"), num_of(j, "ratio_q1"), num_of(j, "ratio_q3")) {
                (Some(r), Some(q1), Some(q3)) => format!("{r:.3} ({q1:.3}-{q3:.3})"),
                _ => String::new(),
            };
            let verdict = str_of(j, "verdict");
            let mut notes = str_of(j, "note").to_owned();
            for key in ["skipped", "error"] {
                let v = str_of(j, key);
                if !v.is_empty() {
                    notes = format!("{key}: {v}");
                }
            }
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                cell(str_of(j, "id")),
                cell(str_of(j, "mode")),
                cell(str_of(j, "case")),
                cell(&side("a")),
                cell(&side("b")),
                ratio,
                cell(str_of(j, "goal")),
                verdict,
                cell(&notes)
            );
        }
        if r.records.is_empty() {
            out.push_str("| - | - | (no results) | | | | | | |\n");
        }
    }
    out
}

/// Today's date (UTC), `YYYY-MM-DD`.
fn today() -> String {
    let days = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400) as i64;
    civil_date(days)
}

/// `YYYY-MM-DD` of a day counted from 1970-01-01.
fn civil_date(days: i64) -> String {
    // Civil date from days since 1970-01-01 (the proleptic Gregorian calendar).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

fn qemu_version() -> String {
    std::process::Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).lines().next().map(str::to_owned))
        .map(|l| l.trim_start_matches("QEMU emulator version ").to_owned())
        .unwrap_or_else(|| "?".to_owned())
}

fn host_cpu() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "?".to_owned());
    let cores = info.lines().filter(|l| l.starts_with("processor")).count();
    format!("{model} ({cores} CPUs)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_from_epoch_days() {
        assert_eq!(civil_date(0), "1970-01-01");
        assert_eq!(civil_date(59), "1970-03-01");
        assert_eq!(civil_date(11_016), "2000-02-29");
        assert_eq!(civil_date(20_454), "2026-01-01");
        assert_eq!(today().len(), 10);
    }

    #[test]
    fn collects_records_and_failures() {
        let mut boot = Boot::default();
        boot.label = "a/intel".into();
        boot.runs.push(qemu::Run {
            kind: "example".into(),
            name: "vfio_bench --reserve-hugepages".into(),
            rc: Some(1),
            lines: vec![
                "@@BENCH-META {\"kernel\":\"7.3\"}".into(),
                "@@BENCH {\"id\":\"P1\",\"mode\":\"group\",\"case\":\"c\",\"a\":{\"name\":\"x\",\"median_ns\":1500},\"verdict\":\"met\"}".into(),
                "@@BENCH {\"id\":\"P2\",\"mode\":\"cdev\",\"verdict\":\"FAILED\",\"error\":\"boom\"}".into(),
            ],
        });
        let r = collect(&boot);
        assert_eq!(r.records.len(), 2);
        assert!(r.meta.is_some());
        assert!(r.problems.iter().any(|p| p.contains("rc=1")));
        assert!(r.problems.iter().any(|p| p.contains("boom")));
        let h = Header {
            command: "cargo xtask bench".into(),
            date: "2026-01-01".into(),
            qemu: "7.2".into(),
            host_cpu: "cpu".into(),
            memory: "4G".into(),
            icount: false,
        };
        let md = results_md(&h, &[r]);
        assert!(md.contains("| P1 | group | c | x 1.50 us |"), "{md}");
        assert!(Json::parse(&results_json(&h, &[])).is_some());
    }
}
