//! Interleaved measurement and the records the benchmark prints.
//!
//! Absolute times in a TCG guest drift between boots (up to 25% here), so every comparison runs
//! its sides in rounds (A B, B A, A B ...) inside one process pinned to one vCPU, and reports each
//! side's median per-operation time and the median of the per-round ratios A/B with their first
//! and third quartiles.

use std::time::Duration;

/// What every benchmark step returns.
pub type BenchResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

/// One side of a comparison: `run(n)` performs `n` operations and returns the time spent in the
/// part being measured (setup and teardown around it excluded).
pub struct Side<'a> {
    /// Shown in the table ("vfio-rs", "raw ioctl", ...).
    pub name: &'static str,
    /// Operations per round.
    pub iters: u64,
    /// The operations.
    pub run: Box<dyn FnMut(u64) -> BenchResult<Duration> + 'a>,
}

impl<'a> Side<'a> {
    /// A side that runs `iters` operations per round.
    pub fn new(name: &'static str, iters: u64, run: impl FnMut(u64) -> BenchResult<Duration> + 'a) -> Self {
        Side {
            name,
            iters: iters.max(1),
            run: Box::new(run),
        }
    }
}

/// Rounds per comparison and warm-up operations per side.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Rounds; every side runs once per round, in the order given.
    pub rounds: usize,
    /// Operations each side runs (unmeasured) before the first round.
    pub warmup: u64,
}

/// Per-round per-operation times (ns), one vector per side, in the sides' order. Round `r`
/// starts with side `r % n` (A B, B A, A B ... for two sides), so no side always runs first or
/// always follows the same one.
pub fn interleave(plan: Plan, sides: &mut [Side<'_>]) -> BenchResult<Vec<Vec<f64>>> {
    for s in sides.iter_mut() {
        if plan.warmup > 0 {
            (s.run)(plan.warmup).map_err(|e| format!("{} (warm-up): {e}", s.name))?;
        }
    }
    let mut out = vec![Vec::with_capacity(plan.rounds); sides.len()];
    let n = sides.len();
    for r in 0..plan.rounds {
        for k in 0..n {
            let i = (r + k) % n;
            let s = &mut sides[i];
            let t = (s.run)(s.iters).map_err(|e| format!("{}: {e}", s.name))?;
            out[i].push(t.as_nanos() as f64 / s.iters as f64);
        }
    }
    Ok(out)
}

/// The `q` quantile (0..=1) of sorted values, interpolating between neighbours.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// Median and quartiles of one side.
#[derive(Debug, Clone)]
pub struct Stat {
    /// The side's name.
    pub name: String,
    /// Median per-operation time, ns.
    pub median: f64,
    /// First quartile, ns.
    pub q1: f64,
    /// Third quartile, ns.
    pub q3: f64,
}

impl Stat {
    /// Statistics of per-round values.
    pub fn of(name: &str, values: &[f64]) -> Self {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        Stat {
            name: name.to_owned(),
            median: quantile(&v, 0.5),
            q1: quantile(&v, 0.25),
            q3: quantile(&v, 0.75),
        }
    }
}

/// A goal on the ratio A/B.
#[derive(Debug, Clone, Copy)]
pub enum Goal {
    /// A/B must not exceed this.
    AtMost(f64),
    /// A/B must reach at least this.
    AtLeast(f64),
}

impl Goal {
    fn text(self) -> String {
        match self {
            Goal::AtMost(v) => format!("<= {v}"),
            Goal::AtLeast(v) => format!(">= {v}"),
        }
    }

    fn met(self, ratio: f64) -> bool {
        match self {
            Goal::AtMost(v) => ratio <= v,
            Goal::AtLeast(v) => ratio >= v,
        }
    }
}

/// One row of the results table.
#[derive(Debug, Clone)]
pub struct Record {
    /// The benchmark (P1..P6, S1.., X1..).
    pub id: &'static str,
    /// What is measured.
    pub case: String,
    /// `group`, `cdev`, `group+cdev` or `-`.
    pub mode: String,
    /// Side A (the numerator of the ratio).
    pub a: Option<Stat>,
    /// Side B (the denominator).
    pub b: Option<Stat>,
    /// The median of the per-round ratios A/B, and their first and third quartiles.
    pub ratio: Option<(f64, f64, f64)>,
    /// The goal on the ratio, if the issue sets one.
    pub goal: Option<Goal>,
    /// Rounds and operations per round (of side A).
    pub rounds: usize,
    /// Operations per round of side A.
    pub iters: u64,
    /// Anything the reader needs to know about this row.
    pub note: String,
    /// Why the case did not run.
    pub skipped: Option<String>,
    /// Why the case failed.
    pub error: Option<String>,
}

impl Record {
    /// A row that has not been measured yet.
    pub fn new(id: &'static str, case: impl Into<String>, mode: impl Into<String>) -> Self {
        Record {
            id,
            case: case.into(),
            mode: mode.into(),
            a: None,
            b: None,
            ratio: None,
            goal: None,
            rounds: 0,
            iters: 0,
            note: String::new(),
            skipped: None,
            error: None,
        }
    }

    /// Sets the goal.
    pub fn goal(mut self, goal: Goal) -> Self {
        self.goal = Some(goal);
        self
    }

    /// Adds a note.
    pub fn note(mut self, note: impl Into<String>) -> Self {
        let note = note.into();
        if !self.note.is_empty() && !note.is_empty() {
            self.note.push_str("; ");
        }
        self.note.push_str(&note);
        self
    }

    /// Fills in A and B (and the ratio) from per-round times.
    pub fn compare(mut self, plan: Plan, a: (&str, &[f64]), b: (&str, &[f64]), iters: u64) -> Self {
        let ratios: Vec<f64> = a.1.iter().zip(b.1).map(|(x, y)| x / y).collect();
        let (sa, sb) = (Stat::of(a.0, a.1), Stat::of(b.0, b.1));
        // Paired: each round's A and B ran back to back, so their ratio cancels the drift a
        // TCG guest shows between rounds, which a ratio of the two medians would keep.
        let r = Stat::of("ratio", &ratios);
        self.ratio = Some((r.median, r.q1, r.q3));
        self.a = Some(sa);
        self.b = Some(sb);
        self.rounds = plan.rounds;
        self.iters = iters;
        self
    }

    /// Fills in a single side (no ratio).
    pub fn single(mut self, plan: Plan, a: (&str, &[f64]), iters: u64) -> Self {
        self.a = Some(Stat::of(a.0, a.1));
        self.rounds = plan.rounds;
        self.iters = iters;
        self
    }

    /// Marks the row skipped.
    pub fn skip(mut self, why: impl Into<String>) -> Self {
        self.skipped = Some(why.into());
        self
    }

    /// Marks the row failed.
    pub fn fail(mut self, why: impl std::fmt::Display) -> Self {
        self.error = Some(why.to_string());
        self
    }

    /// `met`, `missed`, `info`, `skipped` or `FAILED`.
    pub fn verdict(&self) -> &'static str {
        if self.error.is_some() {
            return "FAILED";
        }
        if self.skipped.is_some() {
            return "skipped";
        }
        match (self.goal, self.ratio) {
            (Some(g), Some((r, _, _))) if g.met(r) => "met",
            (Some(_), Some(_)) => "missed",
            _ => "info",
        }
    }

    /// The record as one JSON object.
    pub fn json(&self) -> String {
        let mut o = Obj::default();
        o.str("id", self.id);
        o.str("case", &self.case);
        o.str("mode", &self.mode);
        for (key, side) in [("a", &self.a), ("b", &self.b)] {
            if let Some(s) = side {
                let mut so = Obj::default();
                so.str("name", &s.name);
                so.num("median_ns", s.median);
                so.num("q1_ns", s.q1);
                so.num("q3_ns", s.q3);
                o.raw(key, &so.finish());
            }
        }
        if let Some((r, q1, q3)) = self.ratio {
            o.num("ratio", r);
            o.num("ratio_q1", q1);
            o.num("ratio_q3", q3);
        }
        if let Some(g) = self.goal {
            o.str("goal", &g.text());
        }
        o.str("verdict", self.verdict());
        if self.rounds > 0 {
            o.num("rounds", self.rounds as f64);
            o.num("iters", self.iters as f64);
        }
        if !self.note.is_empty() {
            o.str("note", &self.note);
        }
        if let Some(s) = &self.skipped {
            o.str("skipped", s);
        }
        if let Some(e) = &self.error {
            o.str("error", e);
        }
        o.finish()
    }

    /// A line for people reading the console.
    pub fn human(&self) -> String {
        let head = format!("{} [{}] {}", self.id, self.mode, self.case);
        if let Some(e) = &self.error {
            return format!("{head}: FAILED: {e}");
        }
        if let Some(s) = &self.skipped {
            return format!("{head}: skipped: {s}");
        }
        let side = |s: &Option<Stat>| {
            s.as_ref()
                .map(|s| format!("{} {}", s.name, fmt_ns(s.median)))
                .unwrap_or_default()
        };
        let mut line = format!("{head}: {}", side(&self.a));
        if self.b.is_some() {
            line.push_str(&format!(" vs {}", side(&self.b)));
        }
        if let Some((r, q1, q3)) = self.ratio {
            line.push_str(&format!(" = {r:.3} [{q1:.3}..{q3:.3}]"));
        }
        if let Some(g) = self.goal {
            line.push_str(&format!(" goal {} {}", g.text(), self.verdict()));
        }
        if !self.note.is_empty() {
            line.push_str(&format!(" ({})", self.note));
        }
        line
    }
}

/// A duration in ns, in the unit that reads best.
pub fn fmt_ns(ns: f64) -> String {
    if ns < 1e3 {
        format!("{ns:.1} ns")
    } else if ns < 1e6 {
        format!("{:.2} us", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.3} s", ns / 1e9)
    }
}

/// A JSON object written by hand (the benchmark has no serde).
#[derive(Default)]
pub struct Obj {
    body: String,
}

impl Obj {
    fn key(&mut self, k: &str) {
        if !self.body.is_empty() {
            self.body.push(',');
        }
        self.body.push_str(&escape(k));
        self.body.push(':');
    }

    /// A string member.
    pub fn str(&mut self, k: &str, v: &str) {
        self.key(k);
        self.body.push_str(&escape(v));
    }

    /// A number member (`null` when not finite).
    pub fn num(&mut self, k: &str, v: f64) {
        self.key(k);
        if v.is_finite() {
            let s = if v.fract() == 0.0 && v.abs() < 1e15 {
                format!("{v:.0}")
            } else {
                format!("{v:.6}")
            };
            self.body.push_str(&s);
        } else {
            self.body.push_str("null");
        }
    }

    /// A member whose value is already JSON.
    pub fn raw(&mut self, k: &str, json: &str) {
        self.key(k);
        self.body.push_str(json);
    }

    /// The object text.
    pub fn finish(self) -> String {
        format!("{{{}}}", self.body)
    }
}

/// A JSON string literal.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
