//! Migration v2 on the kernel's mtty sample (issue #15): M1 (a save and a restore cycle through
//! vfio-rs's `Migration`, `SaveStream` and `ResumeStream` vs the same kernel calls by hand) and
//! M2 (stop-to-destination-running through `transfer::send`/`receive` over a unix socketpair).
//!
//! Both M1 sides make the same syscalls, in the same order, on the same two devices: a
//! `MIG_DEVICE_STATE` GET, then one SET per arc of the kernel's path (what `set_state` issues,
//! design §7), `read(2)`/`write(2)` on the data fd until the end, `close(2)`, and the way back
//! to RUNNING. So every round starts and ends with both devices RUNNING, and the destination
//! holds the same state after each restore.

use std::hint::black_box;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use vfio_core::migration::transfer::{self, PrecopyPolicy};
use vfio_core::{Chunk, Device, MigState, Migration, Mode};
use vfio_sys as vsys;
use vfio_tests::mtty::{Mtty, Uart, Via};

use crate::Ctx;
use crate::fixtures::ioctl;
use crate::measure::{BenchResult, Goal, Record, Side, interleave};

/// `VFIO_DEVICE_FEATURE`, `_IO(VFIO_TYPE, VFIO_BASE + 17)`.
const VFIO_DEVICE_FEATURE: u32 = ((vsys::VFIO_TYPE as u32) << 8) | (vsys::VFIO_BASE + 17);

/// `struct vfio_device_feature` with a `vfio_device_feature_mig_state` payload, as a program
/// without a wrapper declares it.
#[repr(C)]
struct RawMigState {
    argsz: u32,
    flags: u32,
    device_state: u32,
    data_fd: i32,
}

/// The raw loop: `MIG_DEVICE_STATE` GET and SET with `libc::ioctl`.
struct Raw {
    fd: RawFd,
}

impl Raw {
    #[inline(always)]
    fn feature(&self, flags: u32, state: u32) -> BenchResult<RawMigState> {
        let mut f = RawMigState {
            argsz: size_of::<RawMigState>() as u32,
            flags: flags | vsys::VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE,
            device_state: state,
            data_fd: -1,
        };
        // SAFETY: VFIO_DEVICE_FEATURE takes this header + payload; no pointer in it. A returned
        // data fd is the caller's to close.
        unsafe { ioctl(self.fd, VFIO_DEVICE_FEATURE, &mut f)? };
        Ok(f)
    }

    #[inline(always)]
    fn get(&self) -> BenchResult<u32> {
        Ok(self.feature(vsys::VFIO_DEVICE_FEATURE_GET, 0)?.device_state)
    }

    /// One SET per step of `path`; the data fd the last arc returned (or -1).
    #[inline(always)]
    fn walk(&self, path: &[u32]) -> BenchResult<RawFd> {
        let mut fd = -1;
        for &s in path {
            fd = self.feature(vsys::VFIO_DEVICE_FEATURE_SET, s)?.data_fd;
        }
        Ok(fd)
    }
}

fn close(fd: RawFd) {
    // SAFETY: `fd` is a data fd the kernel returned to this side, closed once.
    unsafe { libc::close(fd) };
}

/// The raw save cycle: RUNNING -> STOP_COPY, the data fd read to its end, back to RUNNING.
/// `get`: issue the GET `set_state` issues before each move.
fn raw_save(raw: &Raw, to_sc: &[u32], back: &[u32], get: bool, buf: &mut [u8]) -> BenchResult<usize> {
    if get {
        black_box(raw.get()?);
    }
    let fd = raw.walk(to_sc)?;
    if fd < 0 {
        return Err("RUNNING -> STOP_COPY returned no data fd".into());
    }
    let mut total = 0;
    loop {
        // SAFETY: `buf` is writable for its length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            close(fd);
            return Err(format!("read migration data: {e}").into());
        }
        if n == 0 {
            break;
        }
        total += n as usize;
    }
    close(fd);
    if get {
        black_box(raw.get()?);
    }
    raw.walk(back)?;
    Ok(total)
}

/// The raw restore cycle: RUNNING -> RESUMING, `data` written, back to RUNNING.
fn raw_restore(raw: &Raw, to_res: &[u32], back: &[u32], get: bool, data: &[u8]) -> BenchResult {
    if get {
        black_box(raw.get()?);
    }
    let fd = raw.walk(to_res)?;
    if fd < 0 {
        return Err("RUNNING -> RESUMING returned no data fd".into());
    }
    let mut rest = data;
    while !rest.is_empty() {
        // SAFETY: `rest` is readable for its length.
        let n = unsafe { libc::write(fd, rest.as_ptr().cast(), rest.len()) };
        if n <= 0 {
            let e = std::io::Error::last_os_error();
            close(fd);
            return Err(format!("write migration data: {e}").into());
        }
        rest = &rest[n as usize..];
    }
    close(fd);
    if get {
        black_box(raw.get()?);
    }
    raw.walk(back)?;
    Ok(())
}

/// The vfio-rs save cycle.
fn ours_save(m: &Migration, buf: &mut [u8]) -> BenchResult<usize> {
    let mut s = m
        .set_state(MigState::StopCopy)?
        .ok_or("RUNNING -> STOP_COPY returned no data fd")?
        .into_save()?;
    let mut total = 0;
    while let Chunk::Data(n) = s.read_chunk(buf)? {
        total += n;
    }
    drop(s);
    m.set_state(MigState::Running)?;
    Ok(total)
}

/// The vfio-rs restore cycle.
fn ours_restore(m: &Migration, data: &[u8]) -> BenchResult {
    let mut s = m
        .set_state(MigState::Resuming)?
        .ok_or("RUNNING -> RESUMING returned no data fd")?
        .into_resume()?;
    s.write_all(data)?;
    drop(s);
    m.set_state(MigState::Running)?;
    Ok(())
}

fn paths(m: &Migration, from: MigState, to: MigState) -> BenchResult<Vec<u32>> {
    Ok(MigState::path(m.flags(), from, to)
        .ok_or_else(|| format!("no path {from} -> {to}"))?
        .iter()
        .map(|s| s.raw())
        .collect())
}

/// Two mtty-1 instances opened `via`, with a few chars in the source's FIFO. The devices are
/// dropped before their instances (H10: each `Device` holds its `Mtty`).
fn pair(via: Via) -> BenchResult<(Device, Device)> {
    let (a, b) = (Mtty::create("mtty-1")?, Mtty::create("mtty-1")?);
    let (src, dst) = (a.open(via)?, b.open(via)?);
    Uart::new(&src)?.write(b"migbench")?;
    Ok((src, dst))
}

fn via(mode: Mode) -> Via {
    if mode == Mode::CDEV { Via::Cdev } else { Via::Group }
}

/// M1: a save cycle and a restore cycle of mtty, vfio-rs vs the same calls by hand.
pub fn m1(ctx: &mut Ctx, mode: Mode) -> BenchResult {
    let (src, dst) = pair(via(mode))?;
    let (ms, md) = (src.migration()?, dst.migration()?);
    let (rs, rd) = (
        Raw {
            fd: src.as_fd().as_raw_fd(),
        },
        Raw {
            fd: dst.as_fd().as_raw_fd(),
        },
    );
    let to_sc = paths(&ms, MigState::Running, MigState::StopCopy)?;
    let sc_back = paths(&ms, MigState::StopCopy, MigState::Running)?;
    let to_res = paths(&md, MigState::Running, MigState::Resuming)?;
    let res_back = paths(&md, MigState::Resuming, MigState::Running)?;
    let arcs = format!(
        "{} + {} SETs out and back, each move after a GET",
        to_sc.len(),
        sc_back.len()
    );
    // The state to restore: one save, as the cycles will read it.
    let mut buf = vec![0u8; 4096];
    let n = ours_save(&ms, &mut buf)?;
    let state = buf[..n].to_vec();
    let plan = ctx.plan(201, 16);
    let iters = 8;
    let m = mode.to_string();

    let save_side = |name, get: Option<bool>| {
        let (ms, rs, to_sc, sc_back) = (&ms, &rs, &to_sc, &sc_back);
        let mut buf = vec![0u8; 4096];
        Side::new(name, iters, move |k| {
            let t = Instant::now();
            for _ in 0..k {
                let got = match get {
                    None => ours_save(ms, &mut buf)?,
                    Some(g) => raw_save(rs, to_sc, sc_back, g, &mut buf)?,
                };
                if got != n {
                    return Err(format!("saved {got} bytes, expected {n}").into());
                }
            }
            Ok(t.elapsed())
        })
    };
    let restore_side = |name, get: Option<bool>| {
        let (md, rd, to_res, res_back, state) = (&md, &rd, &to_res, &res_back, &state);
        Side::new(name, iters, move |k| {
            let t = Instant::now();
            for _ in 0..k {
                match get {
                    None => ours_restore(md, state)?,
                    Some(g) => raw_restore(rd, to_res, res_back, g, state)?,
                }
            }
            Ok(t.elapsed())
        })
    };

    let mut sides = [save_side("vfio-rs", None), save_side("raw", Some(true))];
    let t = interleave(plan, &mut sides)?;
    drop(sides);
    ctx.emit(
        Record::new(
            "M1",
            format!("save cycle: RUNNING -> STOP_COPY, read {n} bytes, RUNNING"),
            m.as_str(),
        )
        .compare(plan, ("vfio-rs", &t[0]), ("raw", &t[1]), iters)
        .note(format!(
            "set_state + SaveStream::read_chunk vs libc ioctl/read, {arcs}; the typed state \
             machine's cost per move (the goal is the stream rows)"
        )),
    );
    let mut sides = [restore_side("vfio-rs", None), restore_side("raw", Some(true))];
    let t = interleave(plan, &mut sides)?;
    drop(sides);
    ctx.emit(
        Record::new(
            "M1",
            format!("restore cycle: RUNNING -> RESUMING, write {n} bytes, RUNNING"),
            m.as_str(),
        )
        .compare(plan, ("vfio-rs", &t[0]), ("raw", &t[1]), iters)
        .note(format!(
            "set_state + ResumeStream::write_all vs libc ioctl/write, {arcs}; the typed state \
             machine's cost per move (the goal is the stream rows)"
        )),
    );

    // The goal rows: the data fd alone (the issue's "streams through the helper vs raw
    // read/write loops"):
    // only the reads to the end (the writes of the whole state) are timed; each side opens and
    // ends its session its own way, untimed.
    let mut sides = [
        {
            let ms = &ms;
            let mut buf = vec![0u8; 4096];
            Side::new("SaveStream::read_chunk", iters, move |k| {
                let mut spent = Duration::ZERO;
                for _ in 0..k {
                    let mut s = ms.set_state(MigState::StopCopy)?.ok_or("no data fd")?.into_save()?;
                    let t = Instant::now();
                    let mut total = 0;
                    while let Chunk::Data(n) = s.read_chunk(&mut buf)? {
                        total += n;
                    }
                    spent += t.elapsed();
                    black_box(total);
                    drop(s);
                    ms.set_state(MigState::Running)?;
                }
                Ok(spent)
            })
        },
        {
            let (rs, to_sc, sc_back) = (&rs, &to_sc, &sc_back);
            let mut buf = vec![0u8; 4096];
            Side::new("libc read", iters, move |k| {
                let mut spent = Duration::ZERO;
                for _ in 0..k {
                    black_box(rs.get()?);
                    let fd = rs.walk(to_sc)?;
                    let t = Instant::now();
                    let mut total = 0;
                    loop {
                        // SAFETY: `buf` is writable for its length.
                        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
                        if n <= 0 {
                            break;
                        }
                        total += n as usize;
                    }
                    spent += t.elapsed();
                    black_box(total);
                    close(fd);
                    black_box(rs.get()?);
                    rs.walk(sc_back)?;
                }
                Ok(spent)
            })
        },
    ];
    let t = interleave(plan, &mut sides)?;
    drop(sides);
    ctx.emit(
        Record::new("M1", format!("save stream only: read {n} bytes to the end"), m.as_str())
            .goal(Goal::AtMost(1.01))
            .compare(plan, ("SaveStream", &t[0]), ("libc read", &t[1]), iters)
            .note("only the data fd's reads timed (the data and the 0-byte end), state changes untimed"),
    );
    let mut sides = [
        {
            let (md, state) = (&md, &state);
            Side::new("ResumeStream::write_all", iters, move |k| {
                let mut spent = Duration::ZERO;
                for _ in 0..k {
                    let mut s = md.set_state(MigState::Resuming)?.ok_or("no data fd")?.into_resume()?;
                    let t = Instant::now();
                    s.write_all(state)?;
                    spent += t.elapsed();
                    drop(s);
                    md.set_state(MigState::Running)?;
                }
                Ok(spent)
            })
        },
        {
            let (rd, to_res, res_back, state) = (&rd, &to_res, &res_back, &state);
            Side::new("libc write", iters, move |k| {
                let mut spent = Duration::ZERO;
                for _ in 0..k {
                    black_box(rd.get()?);
                    let fd = rd.walk(to_res)?;
                    let t = Instant::now();
                    let mut rest = &state[..];
                    while !rest.is_empty() {
                        // SAFETY: `rest` is readable for its length.
                        let w = unsafe { libc::write(fd, rest.as_ptr().cast(), rest.len()) };
                        if w <= 0 {
                            break;
                        }
                        rest = &rest[w as usize..];
                    }
                    spent += t.elapsed();
                    close(fd);
                    black_box(rd.get()?);
                    rd.walk(res_back)?;
                }
                Ok(spent)
            })
        },
    ];
    let t = interleave(plan, &mut sides)?;
    drop(sides);
    ctx.emit(
        Record::new("M1", format!("restore stream only: write {n} bytes"), m.as_str())
            .goal(Goal::AtMost(1.01))
            .compare(plan, ("ResumeStream", &t[0]), ("libc write", &t[1]), iters)
            .note("only the data fd's writes timed, state changes untimed"),
    );

    // Layers: the GET alone, and a move that opens no stream.
    let mut sides = [
        {
            let ms = &ms;
            Side::new("Migration::state", iters, move |k| {
                let t = Instant::now();
                for _ in 0..k {
                    black_box(ms.state()?);
                }
                Ok(t.elapsed())
            })
        },
        {
            let rs = &rs;
            Side::new("raw GET", iters, move |k| {
                let t = Instant::now();
                for _ in 0..k {
                    black_box(rs.get()?);
                }
                Ok(t.elapsed())
            })
        },
    ];
    let t = interleave(plan, &mut sides)?;
    drop(sides);
    ctx.emit(Record::new("M1", "layer: MIG_DEVICE_STATE GET", m.as_str()).compare(
        plan,
        ("Migration::state", &t[0]),
        ("raw GET", &t[1]),
        iters,
    ));
    let to_stop = paths(&ms, MigState::Running, MigState::Stop)?;
    let stop_back = paths(&ms, MigState::Stop, MigState::Running)?;
    let mut sides = [
        {
            let ms = &ms;
            Side::new("set_state", iters, move |k| {
                let t = Instant::now();
                for _ in 0..k {
                    black_box(ms.set_state(MigState::Stop)?);
                    black_box(ms.set_state(MigState::Running)?);
                }
                Ok(t.elapsed())
            })
        },
        {
            let (rs, to_stop, stop_back) = (&rs, &to_stop, &stop_back);
            Side::new("raw", iters, move |k| {
                let t = Instant::now();
                for _ in 0..k {
                    black_box(rs.get()?);
                    rs.walk(to_stop)?;
                    black_box(rs.get()?);
                    rs.walk(stop_back)?;
                }
                Ok(t.elapsed())
            })
        },
    ];
    let t = interleave(plan, &mut sides)?;
    drop(sides);
    ctx.emit(
        Record::new("M1", "layer: RUNNING -> STOP -> RUNNING (no data fd)", m.as_str())
            .compare(plan, ("set_state", &t[0]), ("raw", &t[1]), iters)
            .note(format!(
                "a GET and {} + {} SETs on both sides",
                to_stop.len(),
                stop_back.len()
            )),
    );

    // What the library's way of moving (a GET, then one SET per arc) costs against a program
    // that issues one SET per move and lets the kernel walk the arcs.
    let direct_sc = [MigState::StopCopy.raw()];
    let direct_res = [MigState::Resuming.raw()];
    let direct_run = [MigState::Running.raw()];
    let mut sides = [save_side("vfio-rs", None), {
        let (rs, direct_sc, direct_run) = (&rs, &direct_sc, &direct_run);
        let mut buf = vec![0u8; 4096];
        Side::new("raw, one SET per move", iters, move |k| {
            let t = Instant::now();
            for _ in 0..k {
                raw_save(rs, direct_sc, direct_run, false, &mut buf)?;
            }
            Ok(t.elapsed())
        })
    }];
    let t = interleave(plan, &mut sides)?;
    drop(sides);
    ctx.emit(
        Record::new("M1", "save cycle vs one SET per move, no GET", m.as_str())
            .compare(plan, ("vfio-rs", &t[0]), ("raw, one SET per move", &t[1]), iters)
            .note("reference: the kernel walks the same arcs inside one SET"),
    );
    let mut sides = [restore_side("vfio-rs", None), {
        let (rd, direct_res, direct_run, state) = (&rd, &direct_res, &direct_run, &state);
        Side::new("raw, one SET per move", iters, move |k| {
            let t = Instant::now();
            for _ in 0..k {
                raw_restore(rd, direct_res, direct_run, false, state)?;
            }
            Ok(t.elapsed())
        })
    }];
    let t = interleave(plan, &mut sides)?;
    drop(sides);
    ctx.emit(
        Record::new("M1", "restore cycle vs one SET per move, no GET", m.as_str())
            .compare(plan, ("vfio-rs", &t[0]), ("raw, one SET per move", &t[1]), iters)
            .note("reference: the kernel walks the same arcs inside one SET"),
    );

    // transfer::send / receive through memory, against the raw cycles above (informational:
    // send pre-copies, so its kernel calls differ).
    let mut wire = Vec::with_capacity(4096);
    let policy = PrecopyPolicy::default();
    let mut sides = [
        {
            let (ms, wire, policy) = (&ms, &mut wire, &policy);
            Side::new("transfer::send + back to RUNNING", iters, move |k| {
                let t = Instant::now();
                for _ in 0..k {
                    wire.clear();
                    transfer::send(ms, wire, policy)?;
                    ms.set_state(MigState::Running)?;
                }
                Ok(t.elapsed())
            })
        },
        save_side("raw", Some(true)),
    ];
    let t = interleave(plan, &mut sides)?;
    drop(sides);
    ctx.emit(
        Record::new(
            "M1",
            "transfer::send into a Vec (pre-copy, STOP_COPY, STOP) vs raw save cycle",
            m.as_str(),
        )
        .compare(plan, ("transfer::send", &t[0]), ("raw", &t[1]), iters)
        .note(format!(
            "informational: send adds PRE_COPY, PRECOPY_INFO and framing; stream of {} bytes",
            wire.len()
        )),
    );
    let wire_ref = &wire;
    let mut sides = [
        {
            let md = &md;
            Side::new("transfer::receive", iters, move |k| {
                let t = Instant::now();
                for _ in 0..k {
                    transfer::receive(md, &mut wire_ref.as_slice())?;
                }
                Ok(t.elapsed())
            })
        },
        restore_side("raw", Some(true)),
    ];
    let t = interleave(plan, &mut sides)?;
    drop(sides);
    ctx.emit(
        Record::new("M1", "transfer::receive from a slice vs raw restore cycle", m.as_str())
            .compare(plan, ("transfer::receive", &t[0]), ("raw", &t[1]), iters)
            .note("informational: receive checks the magic and each frame's CRC"),
    );
    drop((ms, md));
    drop((src, dst));
    Ok(())
}

/// M2: from the source's stop to the destination RUNNING, through `transfer::send` and
/// `transfer::receive` over a unix socketpair in one process (the stream fits the socket
/// buffer, so the two run one after the other on one thread).
pub fn m2(ctx: &mut Ctx, mode: Mode) -> BenchResult {
    let (src, dst) = pair(via(mode))?;
    let (ms, md) = (src.migration()?, dst.migration()?);
    let (mut tx, mut rx) = UnixStream::pair()?;
    let plan = ctx.plan(51, 2);
    let iters = 4;
    let m = mode.to_string();
    for (case, policy) in [
        (
            "stop to destination RUNNING (no pre-copy: send begins with the stop)",
            PrecopyPolicy {
                max_rounds: 0,
                min_bytes: 0,
            },
        ),
        (
            "whole migration, pre-copy included (default policy)",
            PrecopyPolicy::default(),
        ),
    ] {
        let (ms, md, tx, rx) = (&ms, &md, &mut tx, &mut rx);
        let mut sides = [Side::new("send + receive", iters, move |k| {
            let mut spent = Duration::ZERO;
            for _ in 0..k {
                let t = Instant::now();
                transfer::send(ms, tx, &policy)?;
                transfer::receive(md, rx)?;
                spent += t.elapsed();
                // Untimed: the source back to RUNNING for the next round.
                ms.set_state(MigState::Running)?;
            }
            Ok(spent)
        })];
        let t = interleave(plan, &mut sides)?;
        drop(sides);
        ctx.emit(
            Record::new("M2", case, m.as_str())
                .single(plan, ("send + receive", &t[0]), iters)
                .note("mtty-1, transfer over a unix socketpair, one thread"),
        );
    }
    if md.state()? != MigState::Running {
        return Err("the destination is not RUNNING after the last receive".into());
    }
    drop((ms, md));
    drop((src, dst));
    Ok(())
}
