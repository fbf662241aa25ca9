//! The VFIO migration v2 state machine (`enum vfio_device_mig_state`, Linux 5.18 and later) and
//! the kernel's rule for walking it: `vfio_mig_get_next_state` (drivers/vfio/vfio_main.c),
//! rewritten as data so the path from any state to any other is known before the first ioctl.

use bitflags::bitflags;
use vfio_sys as sys;

bitflags! {
    /// What `VFIO_DEVICE_FEATURE_MIGRATION` says a device offers (`VFIO_MIGRATION_*`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct MigFlags: u64 {
        /// STOP, RUNNING, STOP_COPY and RESUMING (every migratable device has it).
        const STOP_COPY = sys::VFIO_MIGRATION_STOP_COPY as u64;
        /// RUNNING_P2P: the device runs but issues no peer-to-peer DMA.
        const P2P = sys::VFIO_MIGRATION_P2P as u64;
        /// PRE_COPY (and PRE_COPY_P2P with P2P): state is saved while the device runs
        /// (Linux 6.2 and later).
        const PRE_COPY = sys::VFIO_MIGRATION_PRE_COPY as u64;
    }
}

/// A migration state (`VFIO_DEVICE_STATE_*`, uapi numbering).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MigState {
    /// The device failed a transition and must be reset (`VFIO_DEVICE_RESET`); never a target.
    Error = sys::VFIO_DEVICE_STATE_ERROR,
    /// Stopped: no DMA, no interrupts, state frozen.
    Stop = sys::VFIO_DEVICE_STATE_STOP,
    /// Running normally.
    Running = sys::VFIO_DEVICE_STATE_RUNNING,
    /// Stopped, its whole state readable from the data fd.
    StopCopy = sys::VFIO_DEVICE_STATE_STOP_COPY,
    /// Stopped, taking a saved state through the data fd.
    Resuming = sys::VFIO_DEVICE_STATE_RESUMING,
    /// Running without peer-to-peer DMA (needs [`MigFlags::P2P`]).
    RunningP2p = sys::VFIO_DEVICE_STATE_RUNNING_P2P,
    /// Running while its initial state is read from the data fd (needs [`MigFlags::PRE_COPY`]).
    PreCopy = sys::VFIO_DEVICE_STATE_PRE_COPY,
    /// PRE_COPY without peer-to-peer DMA (needs P2P and PRE_COPY).
    PreCopyP2p = sys::VFIO_DEVICE_STATE_PRE_COPY_P2P,
}

use MigState::{
    Error as E, PreCopy as PC, PreCopyP2p as PCP, Resuming as RES, Running as R, RunningP2p as RP, Stop as S,
    StopCopy as SC,
};

/// Every state, in uapi order.
pub const ALL_STATES: [MigState; 8] = [E, S, R, SC, RES, RP, PC, PCP];

/// `vfio_from_fsm_table`, `[from][to]` in uapi order: the next state on the way.
const NEXT: [[MigState; 8]; 8] = [
    [E, E, E, E, E, E, E, E],         // ERROR
    [E, S, RP, SC, RES, RP, RP, RP],  // STOP
    [E, RP, R, RP, RP, RP, PC, RP],   // RUNNING
    [E, S, S, SC, S, S, E, E],        // STOP_COPY
    [E, S, S, S, RES, S, S, S],       // RESUMING
    [E, S, R, S, S, RP, R, PCP],      // RUNNING_P2P
    [E, R, R, PCP, R, R, PC, PCP],    // PRE_COPY
    [E, RP, RP, SC, RP, RP, PC, PCP], // PRE_COPY_P2P
];

/// What kind of data stream an arc opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    /// A save session: the device's state is read from the data fd.
    Save,
    /// A resume session: a saved state is written into the data fd.
    Resume,
}

impl MigState {
    /// The state with uapi number `raw`, if there is one.
    pub fn from_raw(raw: u32) -> Option<Self> {
        ALL_STATES.get(raw as usize).copied()
    }

    /// The uapi number.
    pub fn raw(self) -> u32 {
        self as u32
    }

    /// The kernel's name (`"STOP_COPY"`).
    pub fn name(self) -> &'static str {
        match self {
            E => "ERROR",
            S => "STOP",
            R => "RUNNING",
            SC => "STOP_COPY",
            RES => "RESUMING",
            RP => "RUNNING_P2P",
            PC => "PRE_COPY",
            PCP => "PRE_COPY_P2P",
        }
    }

    /// The flags a device must offer for this state to exist (`state_flags_table`); ERROR
    /// needs every flag there is, so it is never a target.
    pub fn needs(self) -> MigFlags {
        self.needs_const()
    }

    const fn needs_const(self) -> MigFlags {
        match self {
            E => MigFlags::from_bits_retain(u64::MAX),
            S | R | SC | RES => MigFlags::STOP_COPY,
            RP => MigFlags::STOP_COPY.union(MigFlags::P2P),
            PC => MigFlags::STOP_COPY.union(MigFlags::PRE_COPY),
            PCP => MigFlags::STOP_COPY.union(MigFlags::P2P).union(MigFlags::PRE_COPY),
        }
    }

    /// Whether a device offering `flags` has this state.
    pub fn offered_by(self, flags: MigFlags) -> bool {
        flags.bits() & self.needs().bits() == self.needs().bits()
    }

    /// Whether the state belongs to a save session (PRE_COPY, PRE_COPY_P2P, STOP_COPY).
    pub fn is_saving(self) -> bool {
        matches!(self, PC | PCP | SC)
    }

    /// The kernel's `vfio_mig_get_next_state`: the next single arc a driver takes from `from`
    /// towards `to` on a device offering `flags`, skipping states the device lacks. `None`
    /// where the kernel answers EINVAL: `from` or `to` not offered (ERROR never is), or no way
    /// (STOP_COPY to PRE_COPY or PRE_COPY_P2P).
    pub fn next_step(flags: MigFlags, from: MigState, to: MigState) -> Option<MigState> {
        if !from.offered_by(flags) || !to.offered_by(flags) {
            return None;
        }
        let mut next = NEXT[from as usize][to as usize];
        while next != E && !next.offered_by(flags) {
            next = NEXT[next as usize][to as usize];
        }
        (next != E).then_some(next)
    }

    /// Every state the kernel passes through from `from` to `to` (not `from` itself; empty when
    /// they are equal), or `None` where [`MigState::next_step`] gives none.
    pub fn path(flags: MigFlags, from: MigState, to: MigState) -> Option<Vec<MigState>> {
        if !from.offered_by(flags) || !to.offered_by(flags) {
            return None;
        }
        let mut steps = Vec::new();
        let mut cur = from;
        while cur != to {
            cur = Self::next_step(flags, cur, to)?;
            steps.push(cur);
            if steps.len() > ALL_STATES.len() {
                return None;
            }
        }
        Some(steps)
    }

    /// The session a single arc opens, i.e. whether the kernel returns a new data fd for it
    /// (uapi vfio.h: RUNNING -> PRE_COPY, RUNNING_P2P -> PRE_COPY_P2P, STOP -> STOP_COPY for a
    /// save; STOP -> RESUMING for a resume). PRE_COPY(_P2P) -> STOP_COPY goes on with the fd
    /// of the pre-copy.
    pub fn arc_opens(from: MigState, to: MigState) -> Option<SessionKind> {
        Self::arc_opens_const(from, to)
    }

    const fn arc_opens_const(from: MigState, to: MigState) -> Option<SessionKind> {
        match (from, to) {
            (R, PC) | (RP, PCP) | (S, SC) => Some(SessionKind::Save),
            (S, RES) => Some(SessionKind::Resume),
            _ => None,
        }
    }

    /// Whether a single arc ends the session `from` belongs to: it leaves the saving states
    /// (PRE_COPY, PRE_COPY_P2P, STOP_COPY) or RESUMING.
    pub fn arc_ends_session(from: MigState, to: MigState) -> bool {
        Self::arc_ends_session_const(from, to)
    }

    const fn arc_ends_session_const(from: MigState, to: MigState) -> bool {
        (matches!(from, PC | PCP | SC) && !matches!(to, PC | PCP | SC)) || (matches!(from, RES) && !matches!(to, RES))
    }

    /// The session a whole path from `from` opens: the kind of its last arc, if that arc opens
    /// one (the kernel allows a data fd only at a path's end).
    pub fn session_of(from: MigState, path: &[MigState]) -> Option<SessionKind> {
        let last = *path.last()?;
        let before = if path.len() >= 2 { path[path.len() - 2] } else { from };
        Self::arc_opens(before, last)
    }
}

/// `needs()` by uapi number, for the const tables below.
const NEEDS: [u64; 8] = {
    let mut n = [0u64; 8];
    let mut i = 0;
    while i < 8 {
        n[i] = ALL_STATES[i].needs_const().bits();
        i += 1;
    }
    n
};

/// [`MigState::next_step`] on uapi numbers, usable in const context.
const fn next_raw(flags: u64, from: usize, to: usize) -> Option<usize> {
    if !offered_raw(flags, from) || !offered_raw(flags, to) {
        return None;
    }
    let mut next = NEXT[from][to] as usize;
    while next != E as usize && !offered_raw(flags, next) {
        next = NEXT[next][to] as usize;
    }
    if next == E as usize { None } else { Some(next) }
}

/// [`MigState::offered_by`] on uapi numbers.
const fn offered_raw(flags: u64, s: usize) -> bool {
    flags & NEEDS[s] == NEEDS[s]
}

/// A whole walk packed in a `u32`: the number of steps in bits 0-3, then one state per 4 bits
/// (the first step in bits 4-7). [`NO_WALK`] where the kernel has no path.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Walk(u32);

/// The packed "no path".
const NO_WALK: u32 = 0xf;

/// The walk of every `[flags & 7][from][to]`, computed at compile time from the kernel's table:
/// `set_state` looks its path up instead of stepping through `next_step`.
const WALKS: [[[u32; 8]; 8]; 8] = {
    let mut t = [[[NO_WALK; 8]; 8]; 8];
    let mut f = 0;
    while f < 8 {
        let mut from = 0;
        while from < 8 {
            let mut to = 0;
            while to < 8 {
                let flags = f as u64;
                if offered_raw(flags, from) && offered_raw(flags, to) {
                    let mut packed = 0u32;
                    let mut len = 0;
                    let mut cur = from;
                    let mut ok = true;
                    while cur != to {
                        match next_raw(flags, cur, to) {
                            Some(n) if len < 7 => {
                                packed |= (n as u32) << (4 + 4 * len);
                                len += 1;
                                cur = n;
                            }
                            _ => {
                                ok = false;
                                break;
                            }
                        }
                    }
                    if ok {
                        t[f][from][to] = packed | len as u32;
                    }
                }
                to += 1;
            }
            from += 1;
        }
        f += 1;
    }
    t
};

impl Walk {
    /// The kernel's path from `from` to `to` on a device offering `flags` ([`MigState::path`]).
    #[inline]
    pub(crate) fn new(flags: MigFlags, from: MigState, to: MigState) -> Option<Walk> {
        let w = WALKS[(flags.bits() & 7) as usize][from as usize][to as usize];
        (w != NO_WALK).then_some(Walk(w))
    }
}

impl Iterator for Walk {
    type Item = MigState;

    #[inline]
    fn next(&mut self) -> Option<MigState> {
        let len = self.0 & 0xf;
        if len == 0 {
            return None;
        }
        let step = ALL_STATES[((self.0 >> 4) & 7) as usize];
        self.0 = ((self.0 >> 8) << 4) | (len - 1);
        Some(step)
    }
}

/// What a single arc does to sessions, `[from][to]`: [`ENDS`], [`OPENS_SAVE`], [`OPENS_RESUME`]
/// ([`MigState::arc_ends_session`], [`MigState::arc_opens`] as one table load).
pub(crate) const ARCS: [[u8; 8]; 8] = {
    let mut t = [[0u8; 8]; 8];
    let mut from = 0;
    while from < 8 {
        let mut to = 0;
        while to < 8 {
            let (f, d) = (ALL_STATES[from], ALL_STATES[to]);
            let mut bits = 0;
            if MigState::arc_ends_session_const(f, d) {
                bits |= ENDS;
            }
            bits |= match MigState::arc_opens_const(f, d) {
                Some(SessionKind::Save) => OPENS_SAVE,
                Some(SessionKind::Resume) => OPENS_RESUME,
                None => 0,
            };
            t[from][to] = bits;
            to += 1;
        }
        from += 1;
    }
    t
};

/// [`ARCS`]: the arc ends the session its source state is in.
pub(crate) const ENDS: u8 = 1;
/// [`ARCS`]: the arc opens a save session (the kernel returns a data fd).
pub(crate) const OPENS_SAVE: u8 = 2;
/// [`ARCS`]: the arc opens a resume session (the kernel returns a data fd).
pub(crate) const OPENS_RESUME: u8 = 4;

impl std::fmt::Display for MigState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Names the flags as the uapi does: `STOP_COPY|P2P|PRE_COPY`.
pub(crate) fn flag_names(flags: MigFlags) -> String {
    let names: Vec<&str> = flags.iter_names().map(|(n, _)| n).collect();
    if names.is_empty() {
        format!("{:#x}", flags.bits())
    } else {
        names.join("|")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const F_SC: MigFlags = MigFlags::STOP_COPY;
    const F_P2P: MigFlags = MigFlags::STOP_COPY.union(MigFlags::P2P);
    const F_PRE: MigFlags = MigFlags::STOP_COPY.union(MigFlags::PRE_COPY);
    const F_ALL: MigFlags = F_P2P.union(MigFlags::PRE_COPY);

    /// The single arcs a driver implements for each flag set (vfio_main.c's comment above
    /// vfio_mig_get_next_state, uapi vfio.h): every step of every path must be one of them.
    fn arcs(flags: MigFlags) -> Vec<(MigState, MigState)> {
        let mut a = vec![(R, S), (S, R), (S, SC), (SC, S), (S, RES), (RES, S)];
        if flags.contains(MigFlags::P2P) {
            a.retain(|&x| x != (R, S) && x != (S, R));
            a.extend([(R, RP), (RP, R), (RP, S), (S, RP)]);
        }
        if flags.contains(MigFlags::PRE_COPY) {
            a.extend([(R, PC), (PC, R)]);
            if flags.contains(MigFlags::P2P) {
                a.extend([(RP, PCP), (PC, PCP), (PCP, PC), (PCP, RP), (PCP, SC)]);
            } else {
                a.push((PC, SC));
            }
        }
        a
    }

    /// Every (from, to, offered) triple: the walk ends at `to`, never passes a state the
    /// device lacks, takes only arcs the driver implements, opens a data fd only on its last
    /// arc, and fails exactly where the kernel answers EINVAL.
    #[test]
    fn every_triple_walks_only_driver_arcs() {
        for flags in [F_SC, F_P2P, F_PRE, F_ALL] {
            let allowed = arcs(flags);
            for from in ALL_STATES {
                for to in ALL_STATES {
                    let path = MigState::path(flags, from, to);
                    let offered = from.offered_by(flags) && to.offered_by(flags);
                    let blocked = from == SC && matches!(to, PC | PCP);
                    if !offered || blocked {
                        assert_eq!(path, None, "{flags:?} {from} -> {to}");
                        continue;
                    }
                    let path = path.unwrap_or_else(|| panic!("{flags:?} {from} -> {to}: no path"));
                    assert_eq!(path.last().copied().unwrap_or(from), to);
                    let mut cur = from;
                    for (i, &step) in path.iter().enumerate() {
                        assert!(step.offered_by(flags), "{flags:?} {from} -> {to} passes {step}");
                        assert!(
                            allowed.contains(&(cur, step)),
                            "{flags:?} {from} -> {to}: arc {cur} -> {step}"
                        );
                        if i + 1 < path.len() {
                            assert_eq!(MigState::arc_opens(cur, step), None, "{from} -> {to}: fd mid-path");
                        }
                        cur = step;
                    }
                }
            }
        }
    }

    /// The compile-time tables say what `path`, `arc_opens` and `arc_ends_session` say, for
    /// every flag set (unknown bits included) and pair of states.
    #[test]
    fn packed_tables_match_the_walk() {
        for bits in 0..16u64 {
            let flags = MigFlags::from_bits_retain(bits | (1 << 40));
            for from in ALL_STATES {
                for to in ALL_STATES {
                    let walk = Walk::new(flags, from, to).map(|w| w.collect::<Vec<_>>());
                    assert_eq!(walk, MigState::path(flags, from, to), "{flags:?} {from} -> {to}");
                }
            }
        }
        for from in ALL_STATES {
            for to in ALL_STATES {
                let bits = ARCS[from as usize][to as usize];
                assert_eq!(bits & ENDS != 0, MigState::arc_ends_session(from, to));
                let opens = match MigState::arc_opens(from, to) {
                    Some(SessionKind::Save) => OPENS_SAVE,
                    Some(SessionKind::Resume) => OPENS_RESUME,
                    None => 0,
                };
                assert_eq!(bits & (OPENS_SAVE | OPENS_RESUME), opens, "{from} -> {to}");
            }
        }
    }

    /// The mtty paths of docs/design/issue-15.md §2 (flags STOP_COPY|P2P|PRE_COPY), literally.
    #[test]
    fn mtty_paths_match_the_design_table() {
        let table: &[(MigState, MigState, &[MigState])] = &[
            (R, S, &[RP, S]),
            (R, SC, &[RP, S, SC]),
            (R, RES, &[RP, S, RES]),
            (R, RP, &[RP]),
            (R, PC, &[PC]),
            (R, PCP, &[RP, PCP]),
            (S, R, &[RP, R]),
            (S, SC, &[SC]),
            (S, RES, &[RES]),
            (S, RP, &[RP]),
            (S, PC, &[RP, R, PC]),
            (S, PCP, &[RP, PCP]),
            (SC, S, &[S]),
            (SC, R, &[S, RP, R]),
            (SC, RES, &[S, RES]),
            (SC, RP, &[S, RP]),
            (RES, S, &[S]),
            (RES, R, &[S, RP, R]),
            (RES, SC, &[S, SC]),
            (RES, RP, &[S, RP]),
            (RES, PC, &[S, RP, R, PC]),
            (RES, PCP, &[S, RP, PCP]),
            (RP, S, &[S]),
            (RP, R, &[R]),
            (RP, SC, &[S, SC]),
            (RP, RES, &[S, RES]),
            (RP, PC, &[R, PC]),
            (RP, PCP, &[PCP]),
            (PC, S, &[R, RP, S]),
            (PC, R, &[R]),
            (PC, SC, &[PCP, SC]),
            (PC, RES, &[R, RP, S, RES]),
            (PC, RP, &[R, RP]),
            (PC, PCP, &[PCP]),
            (PCP, S, &[RP, S]),
            (PCP, R, &[RP, R]),
            (PCP, SC, &[SC]),
            (PCP, RES, &[RP, S, RES]),
            (PCP, RP, &[RP]),
            (PCP, PC, &[PC]),
        ];
        for &(from, to, want) in table {
            assert_eq!(MigState::path(F_ALL, from, to).as_deref(), Some(want), "{from} -> {to}");
        }
        // A data fd exactly where the table has a `*`.
        let session = |from, to| MigState::session_of(from, &MigState::path(F_ALL, from, to).unwrap());
        assert_eq!(session(R, PC), Some(SessionKind::Save));
        assert_eq!(session(R, PCP), Some(SessionKind::Save));
        assert_eq!(session(R, SC), Some(SessionKind::Save));
        assert_eq!(session(PC, SC), None);
        assert_eq!(session(PCP, SC), None);
        assert_eq!(session(SC, RES), Some(SessionKind::Resume));
        assert_eq!(session(RES, R), None);
        assert_eq!(MigState::path(F_ALL, SC, PC), None);
        assert_eq!(MigState::path(F_ALL, SC, PCP), None);
        assert_eq!(MigState::path(F_ALL, R, E), None);
        assert_eq!(MigState::path(F_ALL, E, R), None);
    }

    /// Without P2P the kernel skips RUNNING_P2P: RUNNING -> STOP_COPY is R -> S -> SC; without
    /// PRE_COPY there is no way to PRE_COPY at all.
    #[test]
    fn missing_states_are_skipped_or_refused() {
        assert_eq!(MigState::path(F_SC, R, SC).as_deref(), Some(&[S, SC][..]));
        assert_eq!(MigState::path(F_PRE, PC, SC).as_deref(), Some(&[SC][..]));
        assert_eq!(MigState::path(F_PRE, PC, S).as_deref(), Some(&[R, S][..]));
        assert_eq!(MigState::path(F_SC, R, PC), None);
        assert_eq!(MigState::path(F_P2P, R, RP).as_deref(), Some(&[RP][..]));
        assert_eq!(MigState::path(F_SC, R, RP), None);
        assert_eq!(MigState::from_raw(8), None);
        assert_eq!(MigState::from_raw(7), Some(PCP));
        assert_eq!(flag_names(F_ALL), "STOP_COPY|P2P|PRE_COPY");
    }
}
