//! Leak checks: what this process holds (open fds, memory mappings, locked and pinned memory)
//! taken before a step and compared after it, so a refused or finished operation is seen to
//! give back everything it took.

use std::fmt::Display;

use crate::{mapping_count, open_fds, status_kb};

/// The fds open at one moment ([`open_fds`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdSnapshot(Vec<i32>);

impl FdSnapshot {
    /// The fds open now.
    pub fn take() -> std::io::Result<Self> {
        Ok(FdSnapshot(open_fds()?))
    }

    /// The fds, in ascending order.
    pub fn fds(&self) -> &[i32] {
        &self.0
    }

    /// How many fds were open.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether none was.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Ok when exactly these fds are open now; else `"{what}: {before:?} -> {now:?}"` (e.g.
    /// `what` = "fds leaked by the refusal").
    pub fn check(&self, what: impl Display) -> Result<(), String> {
        let now = open_fds().map_err(|e| format!("{what}: cannot read /proc/self/fd: {e}"))?;
        if now == self.0 {
            Ok(())
        } else {
            Err(format!("{what}: {:?} -> {now:?}", self.0))
        }
    }
}

/// What a teardown must give back, taken at one moment: open fds, memory mappings
/// (`/proc/self/maps` lines), locked and pinned memory (`VmLck`, `VmPin`, kB).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resources {
    /// The open fds.
    pub fds: Vec<i32>,
    /// How many memory mappings.
    pub mappings: usize,
    /// `VmLck` in kB.
    pub locked_kb: u64,
    /// `VmPin` in kB.
    pub pinned_kb: u64,
}

impl Resources {
    /// What this process holds now.
    pub fn now() -> std::io::Result<Self> {
        Ok(Resources {
            fds: open_fds()?,
            mappings: mapping_count()?,
            locked_kb: status_kb("VmLck")?,
            pinned_kb: status_kb("VmPin")?,
        })
    }

    /// Ok when this process holds the same now; else
    /// `"{what}: (fds, mappings, VmLck kB, VmPin kB) {before} -> {now}"`.
    pub fn check(&self, what: impl Display) -> Result<(), String> {
        let now = Resources::now().map_err(|e| format!("{what}: cannot read /proc/self: {e}"))?;
        if now == *self {
            Ok(())
        } else {
            Err(format!(
                "{what}: (fds, mappings, VmLck kB, VmPin kB) {:?} -> {:?}",
                self.tuple(),
                now.tuple()
            ))
        }
    }

    fn tuple(&self) -> (&[i32], usize, u64, u64) {
        (&self.fds, self.mappings, self.locked_kb, self.pinned_kb)
    }
}
