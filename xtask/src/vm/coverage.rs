//! The expected coverage of the guest matrix: which results must run (pass or fail, never skip)
//! on which boot, which may skip and why, and which only real hardware can run. A skip is not a
//! pass: `cargo xtask vm test` fails when a required result skipped or is missing, or when a
//! result skipped that the table does not allow to.
//!
//! The table is `xtask/coverage.txt` (and `xtask/coverage.d/*.txt`), a line-based file meant
//! to be read and edited by hand (its header explains the format). This module parses it ([`Table::load`]), judges a run
//! against it ([`judge`]) and prints the verdict ([`print()`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

/// The table's file name, in the xtask directory.
pub const FILE: &str = "coverage.txt";

/// The kernel variants and IOMMUs a boot label (`variant/iommu`) may name.
const VARIANTS: &[&str] = &["a", "b", "debian61"];
const IOMMUS: &[&str] = &["intel", "virtio", "none"];

/// Where the checked-in table lives.
pub fn default_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(FILE)
}

/// What a table entry says about its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// Must run (pass or fail) on each of its boots.
    Require,
    /// May skip, for the block's reason.
    Skip,
    /// Only real hardware can run it: a skip here is expected, and counted apart.
    Hardware,
}

/// One row line of the table.
#[derive(Debug, Clone)]
struct Entry {
    kind: Kind,
    /// Boot labels, aliases expanded.
    boots: Vec<String>,
    /// The row (exact for `require`, a `*` pattern otherwise).
    row: String,
    /// Why it may skip (empty for `require`).
    reason: String,
    /// 1-based line number, for messages.
    line: usize,
}

/// The parsed table.
#[derive(Debug, Clone)]
pub struct Table {
    /// Where it was read from (for messages).
    pub origin: String,
    entries: Vec<Entry>,
    /// Required (boot, row) -> line, for the missing check.
    required: BTreeMap<(String, String), usize>,
}

impl Table {
    /// Reads and parses the table at `path`, followed by every `*.txt` file of the directory
    /// `<path without .txt>.d` in name order (one file per test binary or feature keeps
    /// parallel work from editing one file; the boot sets of `path` are visible in them).
    pub fn load(path: &Path) -> crate::Result<Table> {
        let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()));
        let mut sources = vec![(path.display().to_string(), read(path)?)];
        let dir = path.with_extension("d");
        if dir.is_dir() {
            let mut extra: Vec<PathBuf> = std::fs::read_dir(&dir)
                .map_err(|e| format!("cannot list {}: {e}", dir.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "txt"))
                .collect();
            extra.sort();
            for p in extra {
                sources.push((p.display().to_string(), read(&p)?));
            }
        }
        Ok(Table::parse_sources(&sources)?)
    }

    /// Parses one table text; `origin` names it in error messages.
    #[cfg(test)]
    pub fn parse(text: &str, origin: &str) -> Result<Table, String> {
        Table::parse_sources(&[(origin.to_owned(), text.to_owned())])
    }

    /// Parses `(origin, text)` sources as one table, in order; messages name `origin:line`.
    pub fn parse_sources(sources: &[(String, String)]) -> Result<Table, String> {
        // Lines are numbered across the sources; `at` turns a number back into `origin:line`.
        let mut text = String::new();
        let mut starts = Vec::new();
        for (origin, t) in sources {
            starts.push((text.lines().count(), origin.as_str()));
            text.push_str(t);
            if !t.ends_with('\n') {
                text.push('\n');
            }
        }
        let at = |line: usize| {
            let (start, origin) = starts
                .iter()
                .rev()
                .find(|(s, _)| *s < line)
                .copied()
                .unwrap_or((0, "?"));
            format!("{origin}:{}", line - start)
        };
        let origin = sources.iter().map(|(o, _)| o.as_str()).collect::<Vec<_>>().join(" + ");
        let err = |line: usize, msg: String| format!("{}: {msg}", at(line));
        let mut sets: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut entries = Vec::new();
        // The open block: its kind and reason.
        let mut block: Option<(Kind, String)> = None;
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            // A block never runs on into the next file.
            if starts.iter().any(|(s, _)| *s == i) {
                block = None;
            }
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let indented = raw.starts_with(|c: char| c.is_whitespace());
            if !indented {
                block = None;
                let (word, rest) = trimmed.split_once(char::is_whitespace).unwrap_or((trimmed, ""));
                let (word, rest) = match word.split_once(':') {
                    Some((w, after)) => (w, format!(":{after} {rest}")),
                    None => (word, rest.to_owned()),
                };
                let rest = rest.trim();
                match word {
                    "boots" => {
                        let (name, labels) = rest
                            .split_once('=')
                            .ok_or_else(|| err(line, "expected `boots NAME = LABEL...`".into()))?;
                        let name = name.trim();
                        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                            return Err(err(line, format!("bad boot set name `{name}`")));
                        }
                        if sets.contains_key(name) {
                            return Err(err(line, format!("boot set `{name}` defined twice")));
                        }
                        let boots = expand_boots(labels.split_whitespace(), &sets).map_err(|m| err(line, m))?;
                        sets.insert(name.to_owned(), boots);
                    }
                    "require" => {
                        let rest = rest.strip_prefix(':').unwrap_or(rest).trim();
                        if !rest.is_empty() {
                            return Err(err(line, format!("`require` takes no reason, got `{rest}`")));
                        }
                        block = Some((Kind::Require, String::new()));
                    }
                    "skip" | "hardware" => {
                        let reason = rest
                            .strip_prefix(':')
                            .map(str::trim)
                            .filter(|r| !r.is_empty())
                            .ok_or_else(|| err(line, format!("expected `{word}: REASON`")))?;
                        let kind = if word == "skip" { Kind::Skip } else { Kind::Hardware };
                        block = Some((kind, reason.to_owned()));
                    }
                    _ => {
                        return Err(err(
                            line,
                            format!("expected `boots`, `require`, `skip: REASON` or `hardware: REASON`, got `{word}`"),
                        ));
                    }
                }
                continue;
            }
            let Some((kind, reason)) = &block else {
                return Err(err(
                    line,
                    "an indented row line outside a require/skip/hardware block".into(),
                ));
            };
            let (boots, row) = trimmed
                .split_once(char::is_whitespace)
                .ok_or_else(|| err(line, "expected `BOOTS ROW`".into()))?;
            let row = row.trim();
            if *kind == Kind::Require && row.contains('*') {
                return Err(err(line, format!("a required row is named exactly (no `*`): `{row}`")));
            }
            let boots = expand_boots(boots.split(','), &sets).map_err(|m| err(line, m))?;
            entries.push(Entry {
                kind: *kind,
                boots,
                row: row.to_owned(),
                reason: reason.clone(),
                line,
            });
        }
        let mut required = BTreeMap::new();
        for e in entries.iter().filter(|e| e.kind == Kind::Require) {
            for boot in &e.boots {
                if let Some(first) = required.insert((boot.clone(), e.row.clone()), e.line) {
                    return Err(err(
                        e.line,
                        format!("{boot} {} is already required at {}", e.row, at(first)),
                    ));
                }
                // A `*` pattern may cover required rows (the requirement wins); naming a required
                // row exactly in a skip or hardware block contradicts it.
                let clash = entries
                    .iter()
                    .find(|o| o.kind != Kind::Require && o.boots.contains(boot) && o.row == e.row);
                if let Some(o) = clash {
                    return Err(err(
                        e.line,
                        format!(
                            "{boot} {} is required here but allowed to skip at {} (`{}`)",
                            e.row,
                            at(o.line),
                            o.row
                        ),
                    ));
                }
            }
        }
        Ok(Table {
            origin,
            entries,
            required,
        })
    }

    /// The entry that decides about `row` on `boot`: its requirement, else the first skip or
    /// hardware line matching it.
    fn rule(&self, boot: &str, row: &str) -> Option<&Entry> {
        let exact = self
            .entries
            .iter()
            .find(|e| e.kind == Kind::Require && e.row == row && e.boots.iter().any(|b| b == boot));
        exact.or_else(|| {
            self.entries
                .iter()
                .find(|e| e.kind != Kind::Require && e.boots.iter().any(|b| b == boot) && glob(&e.row, row))
        })
    }
}

/// Expands boot tokens (labels `variant/iommu` or set names defined earlier) into labels.
fn expand_boots<'a>(
    tokens: impl Iterator<Item = &'a str>,
    sets: &BTreeMap<String, Vec<String>>,
) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for token in tokens.map(str::trim).filter(|t| !t.is_empty()) {
        let labels = if let Some((v, i)) = token.split_once('/') {
            if !VARIANTS.contains(&v) || !IOMMUS.contains(&i) {
                return Err(format!(
                    "unknown boot `{token}`: a boot is VARIANT/IOMMU with VARIANT one of {} and IOMMU one of {}",
                    VARIANTS.join(", "),
                    IOMMUS.join(", ")
                ));
            }
            vec![token.to_owned()]
        } else {
            sets.get(token)
                .cloned()
                .ok_or_else(|| format!("unknown boot set `{token}` (define it first with `boots {token} = ...`)"))?
        };
        for l in labels {
            if !out.contains(&l) {
                out.push(l);
            }
        }
    }
    if out.is_empty() {
        return Err("no boots named".into());
    }
    Ok(out)
}

/// `*` matches any text (also none); everything else matches itself.
pub fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        // No `*` at all.
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// What a row showed on a boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Pass,
    Fail,
    Skip(String),
}

/// The rows of one boot that ran.
#[derive(Debug, Clone)]
pub struct BootRows {
    pub label: String,
    pub rows: Vec<(String, Seen)>,
}

/// What the run was asked to do, which decides what can be missing.
#[derive(Debug, Clone, Default)]
pub struct Asked {
    /// Labels of the boots asked for (`--variant` x `--iommu`).
    pub boots: Vec<String>,
    /// The boots asked for but not booted, with why.
    pub not_booted: Vec<(String, String)>,
    /// Whether the test binaries ran (not `--no-tests`).
    pub tests: bool,
    /// With `--test`: the only test binaries that ran (a row `bin::name` belongs to `bin`).
    pub only: Vec<String>,
    /// The example rows asked for (`example NAME ARGS`).
    pub examples: Vec<String>,
}

/// How a skip was judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    /// The table requires the row here: a failure.
    Required,
    /// The table does not mention the row here: a failure.
    NotAllowed,
    /// Allowed by a skip line.
    Allowed,
    /// Only real hardware can run it.
    HardwareOnly,
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Class::Required => "REQUIRED",
            Class::NotAllowed => "NOT ALLOWED",
            Class::Allowed => "allowed",
            Class::HardwareOnly => "hardware-only",
        })
    }
}

/// Why the run fails its coverage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A required row skipped.
    RequiredSkipped { boot: String, row: String, reason: String },
    /// A required row has no result.
    RequiredMissing { boot: String, row: String },
    /// A row skipped that the table does not allow to skip there.
    SkipNotAllowed { boot: String, row: String, reason: String },
    /// A boot with requirements was asked for but not booted.
    NotBooted { boot: String, why: String, required: usize },
}

impl Problem {
    fn boot(&self) -> &str {
        match self {
            Problem::RequiredSkipped { boot, .. }
            | Problem::RequiredMissing { boot, .. }
            | Problem::SkipNotAllowed { boot, .. }
            | Problem::NotBooted { boot, .. } => boot,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Problem::RequiredSkipped { boot, row, reason } => {
                write!(f, "{boot}: {row}: required, but skipped: {reason}")
            }
            Problem::RequiredMissing { boot, row } => write!(f, "{boot}: {row}: required, but missing (no result)"),
            Problem::SkipNotAllowed { boot, row, reason } => {
                write!(f, "{boot}: {row}: skipped, and the table allows no skip here: {reason}")
            }
            Problem::NotBooted { boot, why, required } => write!(
                f,
                "{boot}: not booted ({why}), but the table requires {required} result(s) there"
            ),
        }
    }
}

/// The verdict of a run against the table.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Everything that fails the run.
    pub problems: Vec<Problem>,
    /// Required (boot, row) pairs of the boots checked, and how many of them ran.
    pub required: usize,
    pub required_ran: usize,
    /// Skips by class.
    pub counts: BTreeMap<Class, usize>,
    /// (class, reason) -> the `boot row` pairs that skipped for it.
    pub by_reason: BTreeMap<(Class, String), Vec<String>>,
    /// The table's reason -> the `boot row` pairs of hardware-only skips.
    pub hardware: BTreeMap<String, Vec<String>>,
    /// `boot row` of results that passed but the table does not mention.
    pub unlisted_passes: Vec<String>,
    /// `boot row` of results the table lets skip (or marks hardware-only) that ran.
    pub ran_anyway: Vec<String>,
    /// The boots judged.
    pub boots: Vec<String>,
}

impl Verdict {
    /// Skips of `class`.
    pub fn count(&self, class: Class) -> usize {
        self.counts.get(&class).copied().unwrap_or(0)
    }
}

/// Whether the run was asked to produce `row` at all.
fn asked_for(asked: &Asked, row: &str) -> bool {
    if row.starts_with("example ") {
        asked.examples.iter().any(|e| e == row)
    } else {
        asked.tests
            && (asked.only.is_empty()
                || asked
                    .only
                    .iter()
                    .any(|b| row.split_once("::").is_some_and(|(r, _)| r == b)))
    }
}

/// Judges the boots that ran against the table. Only boots that ran are judged, so a subset run
/// (`--variant`, `--iommu`) checks exactly its own boots.
pub fn judge(table: &Table, asked: &Asked, boots: &[BootRows]) -> Verdict {
    let mut v = Verdict::default();
    for (boot, why) in &asked.not_booted {
        let required = table
            .required
            .keys()
            .filter(|(b, r)| b == boot && asked_for(asked, r))
            .count();
        if asked.boots.contains(boot) && required > 0 {
            v.problems.push(Problem::NotBooted {
                boot: boot.clone(),
                why: why.clone(),
                required,
            });
        }
    }
    for boot in boots {
        v.boots.push(boot.label.clone());
        let seen: BTreeSet<&str> = boot.rows.iter().map(|(r, _)| r.as_str()).collect();
        for (b, row) in table.required.keys() {
            if b != &boot.label || !asked_for(asked, row) {
                continue;
            }
            v.required += 1;
            if !seen.contains(row.as_str()) {
                v.problems.push(Problem::RequiredMissing {
                    boot: b.clone(),
                    row: row.clone(),
                });
            }
        }
        for (row, outcome) in &boot.rows {
            let rule = table.rule(&boot.label, row);
            let tag = format!("{} {row}", boot.label);
            match outcome {
                Seen::Pass | Seen::Fail => match rule.map(|e| e.kind) {
                    Some(Kind::Require) => v.required_ran += 1,
                    Some(Kind::Skip | Kind::Hardware) => v.ran_anyway.push(tag),
                    None if *outcome == Seen::Pass => v.unlisted_passes.push(tag),
                    // Failures are the result matrix's business.
                    None => {}
                },
                Seen::Skip(reason) => {
                    let class = match rule.map(|e| e.kind) {
                        Some(Kind::Require) => {
                            v.problems.push(Problem::RequiredSkipped {
                                boot: boot.label.clone(),
                                row: row.clone(),
                                reason: reason.clone(),
                            });
                            Class::Required
                        }
                        Some(Kind::Skip) => Class::Allowed,
                        Some(Kind::Hardware) => {
                            let why = rule.map(|e| e.reason.clone()).unwrap_or_default();
                            v.hardware.entry(why).or_default().push(tag.clone());
                            Class::HardwareOnly
                        }
                        None => {
                            v.problems.push(Problem::SkipNotAllowed {
                                boot: boot.label.clone(),
                                row: row.clone(),
                                reason: reason.clone(),
                            });
                            Class::NotAllowed
                        }
                    };
                    *v.counts.entry(class).or_default() += 1;
                    v.by_reason.entry((class, reason.clone())).or_default().push(tag);
                }
            }
        }
    }
    v
}

/// Prints the verdict: skips grouped by reason, the notes, and every problem (missing results
/// capped per boot: a boot that crashed would list them all).
pub fn print(table: &Table, v: &Verdict) {
    println!(
        "\n==> coverage against {} ({} boot(s): {})",
        table.origin,
        v.boots.len(),
        v.boots.join(", ")
    );
    println!(
        "required results that ran (pass or fail): {} of {}",
        v.required_ran, v.required
    );
    if !v.by_reason.is_empty() {
        println!("skips by reason (count, judged as, reason: where):");
        let mut groups: Vec<_> = v.by_reason.iter().collect();
        // Failures first, then the largest groups.
        groups.sort_by_key(|((class, reason), tags)| (*class, std::cmp::Reverse(tags.len()), reason.clone()));
        for ((class, reason), tags) in groups {
            println!("  {:>4}  {:<13}  {reason}", tags.len(), class.to_string());
            let shown: Vec<&str> = tags.iter().take(6).map(String::as_str).collect();
            let more = tags.len().saturating_sub(shown.len());
            let tail = if more > 0 {
                format!(", and {more} more")
            } else {
                String::new()
            };
            println!("          {}{tail}", shown.join(", "));
        }
    }
    let hw = v.count(Class::HardwareOnly);
    if hw > 0 {
        println!("{hw} hardware-only, not covered here:");
        for (why, tags) in &v.hardware {
            println!("  {why}:");
            println!("    {}", tags.join(", "));
        }
    }
    println!(
        "skips: {} allowed by the table, {hw} hardware-only (not covered here), {} required, {} not in the table",
        v.count(Class::Allowed),
        v.count(Class::Required),
        v.count(Class::NotAllowed)
    );
    let note = |what: &str, list: &[String]| {
        if list.is_empty() {
            return;
        }
        println!("note: {} {what}:", list.len());
        for t in list.iter().take(20) {
            println!("  {t}");
        }
        if list.len() > 20 {
            println!("  ... and {} more", list.len() - 20);
        }
    };
    note(
        "result(s) passed that the table does not list (add them as required)",
        &v.unlisted_passes,
    );
    note(
        "result(s) ran that the table lets skip or marks hardware-only (require them?)",
        &v.ran_anyway,
    );
    if v.problems.is_empty() {
        println!("coverage ok: every required result ran, every skip is allowed");
        return;
    }
    println!("\ncoverage FAILED ({} problem(s)):", v.problems.len());
    let mut missing_per_boot: BTreeMap<&str, usize> = BTreeMap::new();
    for p in &v.problems {
        if matches!(p, Problem::RequiredMissing { .. }) {
            let n = missing_per_boot.entry(p.boot()).or_default();
            *n += 1;
            if *n > 10 {
                continue;
            }
        }
        println!("  {p}");
    }
    for (boot, n) in missing_per_boot {
        if n > 10 {
            println!("  {boot}: ... and {} more required result(s) missing", n - 10);
        }
    }
    println!(
        "(a result must run where {} requires it; a skip needs a `skip:` or `hardware:` line)",
        table.origin
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "\
# comment
boots iommu = a/intel b/intel
boots all = iommu a/none

require
  all        core::modes_match
  iommu      conformance::map_errors@type1
  a/intel    example edu --mode cdev
  iommu,a/none  pci::hot_reset
skip: no-IOMMU modes are not offered with an IOMMU
  iommu      conformance::*@noiommu-*
hardware: QEMU's vIOMMUs have no dirty tracking
  iommu      cdev::cdev_dirty_tracking
";

    fn table() -> Table {
        Table::parse(TABLE, "t").expect("parses")
    }

    fn rows(label: &str, rows: &[(&str, Seen)]) -> BootRows {
        BootRows {
            label: label.into(),
            rows: rows.iter().map(|(r, s)| (r.to_string(), s.clone())).collect(),
        }
    }

    fn asked(boots: &[&str]) -> Asked {
        Asked {
            boots: boots.iter().map(|b| b.to_string()).collect(),
            not_booted: Vec::new(),
            tests: true,
            only: Vec::new(),
            examples: vec!["example edu --mode cdev".into()],
        }
    }

    fn skip(reason: &str) -> Seen {
        Seen::Skip(reason.into())
    }

    #[test]
    fn globs() {
        assert!(glob("a", "a"));
        assert!(!glob("a", "ab"));
        assert!(glob("conformance::*@type1", "conformance::x@type1"));
        assert!(!glob("conformance::*@type1", "conformance::x@type1v2"));
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "abc"));
        assert!(glob("a*b*c", "a-b-b-c"));
        assert!(!glob("a*b*c", "a-c"));
        assert!(!glob("ab*ba", "aba"));
        assert!(glob("x::*", "x::y"));
    }

    #[test]
    fn parses_sets_blocks_and_rows() {
        let t = table();
        assert_eq!(t.entries.len(), 6);
        let e = &t.entries[0];
        assert_eq!((e.kind, e.row.as_str()), (Kind::Require, "core::modes_match"));
        assert_eq!(e.boots, ["a/intel", "b/intel", "a/none"]);
        assert_eq!(t.entries[2].row, "example edu --mode cdev");
        assert_eq!(t.entries[3].boots, ["a/intel", "b/intel", "a/none"]);
        assert_eq!(t.entries[4].kind, Kind::Skip);
        assert_eq!(t.entries[4].reason, "no-IOMMU modes are not offered with an IOMMU");
        assert_eq!(t.entries[5].kind, Kind::Hardware);
        assert_eq!(t.required.len(), 3 + 2 + 1 + 3);
        assert_eq!(t.entries[5].line, 13);
    }

    #[test]
    fn rejects_malformed_tables() {
        let bad = |text: &str, want: &str| {
            let e = Table::parse(text, "t").expect_err(text);
            assert!(e.contains(want), "{text:?}: {e}");
        };
        bad("require\n  a/intel x::*\n", "exactly");
        bad("require\n  c/intel x::y\n", "unknown boot `c/intel`");
        bad("require\n  a/kvm x::y\n", "unknown boot");
        bad("require\n  nope x::y\n", "unknown boot set `nope`");
        bad("  a/intel x::y\n", "outside");
        bad("skip\n  a/intel x::y\n", "skip: REASON");
        bad("skip:   \n", "skip: REASON");
        bad("require: why\n", "no reason");
        bad("frobnicate\n", "got `frobnicate`");
        bad("require\n  a/intel\n", "BOOTS ROW");
        bad("boots x = a/intel\nboots x = b/intel\n", "defined twice");
        bad("boots = a/intel\n", "bad boot set name");
        bad("boots x a/intel\n", "boots NAME");
        bad(
            "require\n  a/intel x::y\n  a/intel,b/intel x::y\n",
            "already required at t:2",
        );
        bad(
            "skip: because\n  a/intel x::y\nrequire\n  a/intel x::y\n",
            "allowed to skip at t:2",
        );
        // Sources: sets carry over, blocks do not, messages name the file.
        let two = |b: &str| {
            vec![
                ("m".to_owned(), "boots x = a/intel\nrequire\n  x a::b\n".to_owned()),
                ("d".to_owned(), b.to_owned()),
            ]
        };
        let t = Table::parse_sources(&two("require\n  x a::c\n")).expect("two files");
        assert_eq!(t.required.len(), 2);
        let e = Table::parse_sources(&two("  x a::c\n")).expect_err("block ended with its file");
        assert!(e.starts_with("d:1: an indented row"), "{e}");
        let e = Table::parse_sources(&two("require\n  x a::b\n")).expect_err("twice");
        assert!(e.contains("d:2") && e.contains("already required at m:3"), "{e}");
        // The same row required on one boot and allowed to skip on another is fine, and so is a
        // pattern covering a required row: the requirement wins.
        Table::parse("skip: because\n  a/none x::y\nrequire\n  a/intel x::y\n", "t").expect("no clash");
        let t = Table::parse("skip: because\n  a/intel x::*\nrequire\n  a/intel x::y\n", "t").expect("wins");
        assert_eq!(t.rule("a/intel", "x::y").map(|e| e.kind), Some(Kind::Require));
        assert_eq!(t.rule("a/intel", "x::z").map(|e| e.kind), Some(Kind::Skip));
    }

    #[test]
    fn error_names_the_line() {
        let e = Table::parse("# c\n\nrequire\n  z/intel x::y\n", "cov.txt").unwrap_err();
        assert!(e.starts_with("cov.txt:4: "), "{e}");
    }

    #[test]
    fn all_required_ran_is_clean() {
        let t = table();
        let boots = [rows(
            "a/intel",
            &[
                ("core::modes_match", Seen::Pass),
                ("conformance::map_errors@type1", Seen::Fail),
                ("pci::hot_reset", Seen::Pass),
                ("example edu --mode cdev", Seen::Pass),
                ("conformance::map_errors@noiommu-cdev", skip("not offered")),
                ("cdev::cdev_dirty_tracking", skip("no dirty tracking")),
            ],
        )];
        let v = judge(&t, &asked(&["a/intel"]), &boots);
        assert!(v.problems.is_empty(), "{:?}", v.problems);
        assert_eq!((v.required, v.required_ran), (4, 4));
        assert_eq!(v.count(Class::Allowed), 1);
        assert_eq!(v.count(Class::HardwareOnly), 1);
        assert_eq!(v.count(Class::NotAllowed), 0);
        assert_eq!(
            v.by_reason[&(Class::HardwareOnly, "no dirty tracking".to_owned())],
            ["a/intel cdev::cdev_dirty_tracking"]
        );
    }

    #[test]
    fn required_but_skipped_fails() {
        let t = table();
        let boots = [rows(
            "b/intel",
            &[
                ("core::modes_match", Seen::Pass),
                ("conformance::map_errors@type1", skip("type1 unavailable")),
                ("pci::hot_reset", Seen::Pass),
            ],
        )];
        let v = judge(&t, &asked(&["b/intel"]), &boots);
        assert_eq!(
            v.problems,
            [Problem::RequiredSkipped {
                boot: "b/intel".into(),
                row: "conformance::map_errors@type1".into(),
                reason: "type1 unavailable".into()
            }]
        );
        assert_eq!(v.count(Class::Required), 1);
        assert_eq!((v.required, v.required_ran), (3, 2));
        let text = v.problems[0].to_string();
        assert!(text.contains("b/intel") && text.contains("map_errors@type1") && text.contains("type1 unavailable"));
    }

    #[test]
    fn required_but_missing_fails() {
        let t = table();
        let boots = [rows("a/none", &[("core::modes_match", Seen::Pass)])];
        let v = judge(&t, &asked(&["a/none"]), &boots);
        assert_eq!(
            v.problems,
            [Problem::RequiredMissing {
                boot: "a/none".into(),
                row: "pci::hot_reset".into()
            }]
        );
        assert!(v.problems[0].to_string().contains("missing"));
    }

    #[test]
    fn unlisted_skip_fails_and_unlisted_pass_is_a_note() {
        let t = table();
        let boots = [rows(
            "a/none",
            &[
                ("core::modes_match", Seen::Pass),
                ("pci::hot_reset", Seen::Pass),
                ("pci::new_test", Seen::Pass),
                ("pci::other_new_test", skip("why not")),
                // Allowed on iommu boots only, not on a/none.
                ("conformance::open@noiommu-group", skip("no device")),
            ],
        )];
        let v = judge(&t, &asked(&["a/none"]), &boots);
        assert_eq!(v.problems.len(), 2, "{:?}", v.problems);
        assert!(matches!(&v.problems[0], Problem::SkipNotAllowed { row, .. } if row == "pci::other_new_test"));
        assert!(
            matches!(&v.problems[1], Problem::SkipNotAllowed { row, .. } if row == "conformance::open@noiommu-group")
        );
        assert_eq!(v.count(Class::NotAllowed), 2);
        assert_eq!(v.unlisted_passes, ["a/none pci::new_test"]);
    }

    #[test]
    fn hardware_only_is_counted_apart_and_running_it_is_noted() {
        let t = table();
        let boots = [
            rows(
                "a/intel",
                &[
                    ("core::modes_match", Seen::Pass),
                    ("conformance::map_errors@type1", Seen::Pass),
                    ("pci::hot_reset", Seen::Pass),
                    ("example edu --mode cdev", Seen::Pass),
                    ("cdev::cdev_dirty_tracking", skip("no dirty tracking")),
                ],
            ),
            rows(
                "b/intel",
                &[
                    ("core::modes_match", Seen::Pass),
                    ("conformance::map_errors@type1", Seen::Pass),
                    ("pci::hot_reset", Seen::Pass),
                    ("cdev::cdev_dirty_tracking", Seen::Pass),
                ],
            ),
        ];
        let v = judge(&t, &asked(&["a/intel", "b/intel"]), &boots);
        assert!(v.problems.is_empty(), "{:?}", v.problems);
        assert_eq!(v.count(Class::HardwareOnly), 1);
        assert_eq!(v.count(Class::Allowed), 0);
        assert_eq!(
            v.hardware["QEMU's vIOMMUs have no dirty tracking"],
            ["a/intel cdev::cdev_dirty_tracking"]
        );
        assert_eq!(v.ran_anyway, ["b/intel cdev::cdev_dirty_tracking"]);
    }

    #[test]
    fn only_asked_rows_and_boots_are_expected() {
        let t = table();
        // --no-tests and no examples: nothing can be missing.
        let none = Asked {
            boots: vec!["a/intel".into()],
            ..Asked::default()
        };
        let v = judge(&t, &none, &[rows("a/intel", &[])]);
        assert!(v.problems.is_empty(), "{:?}", v.problems);
        assert_eq!(v.required, 0);
        // Tests but no example runs: the example row is not expected.
        let mut tests_only = asked(&["a/intel"]);
        tests_only.examples.clear();
        let v = judge(&t, &tests_only, &[rows("a/intel", &[])]);
        assert_eq!(v.required, 3);
        assert!(v.problems.iter().all(|p| !p.to_string().contains("example")));
        // Boots that did not run are not judged.
        let v = judge(&t, &asked(&["a/intel", "b/intel"]), &[]);
        assert!(v.problems.is_empty());
    }

    #[test]
    fn a_boot_not_booted_fails_only_if_it_has_requirements() {
        let t = table();
        let mut a = asked(&["a/intel", "a/virtio"]);
        a.not_booted = vec![
            ("a/intel".into(), "kernel lacks X".into()),
            ("a/virtio".into(), "kernel lacks Y".into()),
        ];
        let v = judge(&t, &a, &[]);
        assert_eq!(
            v.problems,
            [Problem::NotBooted {
                boot: "a/intel".into(),
                why: "kernel lacks X".into(),
                required: 4
            }]
        );
    }

    #[test]
    fn the_checked_in_table_parses() {
        let t = Table::load(&default_path()).expect("xtask/coverage.txt parses");
        assert!(t.required.len() > 100, "only {} required entries", t.required.len());
        // The one check known to skip in both no-IOMMU modes everywhere is allowed, not required.
        for boot in ["a/none", "b/none", "a/intel", "debian61/intel"] {
            for mode in ["noiommu-group", "noiommu-cdev"] {
                let row = format!("conformance::map_errors@{mode}");
                let rule = t
                    .rule(boot, &row)
                    .unwrap_or_else(|| panic!("{boot} {row} not in the table"));
                assert_eq!(rule.kind, Kind::Skip, "{boot} {row}");
            }
        }
    }
}
