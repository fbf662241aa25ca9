//! The mode matrix: the `conformance` test binary runs each device-level check once per mode
//! (`check@mode`); this regroups those results as check x (mode, IOMMU), across boots. On kernel
//! variant B `/dev/vfio/vfio` is served by iommufd, so its group modes are the compat ones.

use std::collections::BTreeMap;

use super::qemu::{Boot, Outcome};

/// The column a result of `mode` on the boot labelled `variant/iommu` belongs to.
fn column(label: &str, mode: &str) -> String {
    let (variant, iommu) = label.split_once('/').unwrap_or((label, "?"));
    let mode = if variant == "b" && mode.starts_with("type1") {
        format!("compat-{mode}")
    } else {
        mode.to_owned()
    };
    let col = if mode.starts_with("noiommu") {
        mode
    } else {
        format!("{mode}/{iommu}")
    };
    // Kernels other than the two 7.3 variants (e.g. a distribution's) get columns of their own.
    if variant == "a" || variant == "b" {
        col
    } else {
        format!("{col}@{variant}")
    }
}

/// The order columns are printed in.
fn rank(col: &str) -> (usize, String) {
    let order = [
        "type1/",
        "type1v2/",
        "compat-type1/",
        "compat-type1v2/",
        "cdev/",
        "noiommu",
    ];
    let i = order.iter().position(|p| col.starts_with(p)).unwrap_or(order.len());
    (i, col.to_owned())
}

/// Prints the matrix (nothing if no boot ran the conformance binary). A cell is `pass` when
/// every boot that ran it passed, `FAIL` if any failed, `skip` when all skipped.
pub fn print(boots: &[Boot]) {
    // (check, column) -> outcomes.
    let mut cells: BTreeMap<(String, String), Vec<&Outcome>> = BTreeMap::new();
    let mut checks: Vec<String> = Vec::new();
    for boot in boots {
        for t in boot.tests.iter().filter(|t| t.binary == "conformance") {
            let Some((check, mode)) = t.name.split_once('@') else {
                continue;
            };
            if !checks.iter().any(|c| c == check) {
                checks.push(check.to_owned());
            }
            cells
                .entry((check.to_owned(), column(&boot.label, mode)))
                .or_default()
                .push(&t.outcome);
        }
    }
    if checks.is_empty() {
        return;
    }
    let mut cols: Vec<String> = cells.keys().map(|(_, c)| c.clone()).collect();
    cols.sort_by_key(|c| rank(c));
    cols.dedup();
    // A column where every check skipped is a mode that boot does not offer (e.g. type1 on a
    // no-IOMMU boot): named once below instead of printed.
    let all_skip = |c: &String| {
        cells
            .iter()
            .filter(|((_, col), _)| col == c)
            .all(|(_, v)| v.iter().all(|o| matches!(o, Outcome::Skip(_))))
    };
    let (empty, cols): (Vec<String>, Vec<String>) = cols.into_iter().partition(all_skip);
    let width = checks.iter().map(String::len).max().unwrap_or(5).max(5);
    println!("\n==> mode matrix (conformance checks x mode/IOMMU)");
    let mut header = format!("{:<width$}", "check");
    for c in &cols {
        header.push_str(&format!("  {c:<w$}", w = c.len().max(4)));
    }
    println!("{}", header.trim_end());
    for check in &checks {
        let mut line = format!("{check:<width$}");
        for c in &cols {
            let value = match cells.get(&(check.clone(), c.clone())) {
                None => "-",
                Some(v) if v.iter().any(|o| **o == Outcome::Fail) => "FAIL",
                Some(v) if v.iter().all(|o| matches!(o, Outcome::Skip(_))) => "skip",
                Some(_) => "pass",
            };
            line.push_str(&format!("  {value:<w$}", w = c.len().max(4)));
        }
        println!("{}", line.trim_end());
    }
    if !empty.is_empty() {
        println!("not offered (every check skipped): {}", empty.join(", "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_name_compat_and_noiommu() {
        assert_eq!(column("a/intel", "type1"), "type1/intel");
        assert_eq!(column("b/virtio", "type1v2"), "compat-type1v2/virtio");
        assert_eq!(column("b/intel", "cdev"), "cdev/intel");
        assert_eq!(column("a/none", "noiommu-cdev"), "noiommu-cdev");
        assert_eq!(column("debian61/intel", "type1"), "type1/intel@debian61");
        let mut cols = vec!["cdev/intel", "compat-type1/intel", "type1/intel", "noiommu-group"];
        cols.sort_by_key(|c| rank(c));
        assert_eq!(
            cols,
            ["type1/intel", "compat-type1/intel", "cdev/intel", "noiommu-group"]
        );
    }
}
