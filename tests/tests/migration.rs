//! VFIO migration v2 and device DMA logging on the kernel's sample mediated device mtty
//! (STOP_COPY|P2P|PRE_COPY, a 60-byte state for one port): the typed state machine against the
//! kernel's table, the save/resume streams and pre-copy info, moving a UART's receive FIFO
//! from one instance to another (same process and two processes over a unix socket), and the
//! bad input: states the device does not offer, truncated and corrupted streams, data fds used
//! after their session, overlapping logging ranges.

use std::io::Write as _;
use std::os::unix::net::UnixStream;
use std::process::ExitCode;

use vfio_core::migration::transfer::{self, MAGIC, PrecopyPolicy};
use vfio_core::{Chunk, DmaLogRange, Error, MigState, Migration, PrecopyInfo};
use vfio_tests::mtty::{Mtty, Uart, Via};
use vfio_tests::{Outcome, TestResult, ensure, skip};

/// mtty's saved-state header (`struct mtty_data`): magic, version 1.0, ports, flags.
const MTTY_MAGIC: u64 = 0x7e9d_0989_8c3e_2c4e;
/// 24-byte header + one 36-byte port.
const MTTY1_SIZE: u64 = 60;

macro_rules! need_mtty {
    () => {
        if let Some(why) = vfio_tests::mtty::unavailable() {
            return skip(why);
        }
    };
}

fn mig(dev: &vfio_core::Device) -> Result<Migration, Error> {
    dev.migration()
}

/// Reads a save stream until End (STOP_COPY) or NotYet (PRE_COPY).
fn drain(s: &mut vfio_core::SaveStream) -> Result<(Vec<u8>, Chunk), Error> {
    let mut out = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        match s.read_chunk(&mut buf)? {
            Chunk::Data(n) => out.extend_from_slice(&buf[..n]),
            other => return Ok((out, other)),
        }
    }
}

/// A whole saved state of `m` (RUNNING -> STOP_COPY, read to the end), leaving it in STOP.
fn saved_state(m: &Migration) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let mut s = m
        .set_state(MigState::StopCopy)?
        .ok_or("no stream at STOP_COPY")?
        .into_save()?;
    let (data, end) = drain(&mut s)?;
    ensure!(end == Chunk::End, "STOP_COPY ended with {end:?}");
    drop(s);
    m.set_state(MigState::Stop)?;
    Ok(data)
}

fn flags_size_and_features(via: Via) -> TestResult {
    need_mtty!();
    let a = Mtty::create("mtty-1")?;
    let dev = a.open(via)?;
    let m = mig(&dev)?;
    ensure!(
        m.flags().bits() == 0x7,
        "flags {:?}, want STOP_COPY|P2P|PRE_COPY",
        m.flags()
    );
    ensure!(m.state()? == MigState::Running, "starts in {}", m.state()?);
    ensure!(
        m.stop_copy_size()? == MTTY1_SIZE,
        "MIG_DATA_SIZE {}",
        m.stop_copy_size()?
    );
    use vfio_core::FeatureAccess as A;
    use vfio_sys as s;
    for (f, acc) in [
        (s::VFIO_DEVICE_FEATURE_MIGRATION, A::GET),
        (s::VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE, A::GET | A::SET),
        (s::VFIO_DEVICE_FEATURE_DMA_LOGGING_START, A::SET),
        (s::VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP, A::SET),
        (s::VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT, A::GET),
        (s::VFIO_DEVICE_FEATURE_MIG_DATA_SIZE, A::GET),
        (s::VFIO_DEVICE_FEATURE_MIG_PRECOPY_INFOv2, A::SET),
    ] {
        ensure!(
            dev.feature_probe(f, acc)?,
            "feature {f} ({acc:?}) probes as unsupported"
        );
    }
    println!(
        "    {via}: {} flags {:?}, {MTTY1_SIZE}-byte state, features 1 2 6 7 8 9 12",
        a.uuid(),
        m.flags()
    );
    Ok(Outcome::Pass)
}

/// Every ordered pair of states: reach `from` (from RUNNING after a reset), ask for `to`; the
/// device ends in `to` with a stream exactly where the kernel's table opens one, and STOP_COPY
/// -> PRE_COPY(_P2P) is refused without a change. Entering RESUMING is fed a whole state, or
/// mtty refuses to leave it.
fn every_pair_follows_the_kernel_table() -> TestResult {
    need_mtty!();
    let a = Mtty::create("mtty-1")?;
    let dev = a.open(Via::Group)?;
    let m = mig(&dev)?;
    let blob = saved_state(&m)?;
    m.reset()?;
    let states = [
        MigState::Stop,
        MigState::Running,
        MigState::StopCopy,
        MigState::Resuming,
        MigState::RunningP2p,
        MigState::PreCopy,
        MigState::PreCopyP2p,
    ];
    let feed = |d: Option<vfio_core::DataStream>| -> Result<bool, Box<dyn std::error::Error>> {
        match d {
            Some(vfio_core::DataStream::Resume(mut r)) => {
                r.write_all(&blob)?;
                Ok(true)
            }
            Some(vfio_core::DataStream::Save(_)) => Ok(true),
            None => Ok(false),
        }
    };
    let mut pairs = 0;
    for from in states {
        for to in states {
            m.reset()?;
            feed(m.set_state(from)?)?;
            ensure!(m.state()? == from, "reached {} instead of {from}", m.state()?);
            let path = MigState::path(m.flags(), from, to);
            match (path, m.set_state(to)) {
                (None, Err(Error::InvalidArgument { .. })) => {
                    ensure!(m.state()? == from, "{from} -> {to} refused but now in {}", m.state()?);
                }
                (Some(path), Ok(d)) => {
                    let want = MigState::session_of(from, &path).is_some();
                    let got = feed(d)?;
                    ensure!(got == want, "{from} -> {to}: stream {got}, table says {want}");
                    ensure!(m.state()? == to, "{from} -> {to} ended in {}", m.state()?);
                }
                (p, r) => return Err(format!("{from} -> {to}: path {p:?}, set_state {r:?}").into()),
            }
            pairs += 1;
        }
    }
    // Raw states the uapi has no target for: ERROR (0) and 8.
    m.reset()?;
    for raw in [0u32, 8] {
        let mut bytes = [raw.to_ne_bytes(), (-1i32).to_ne_bytes()].concat();
        // SAFETY: MIG_DEVICE_STATE's payload is two integers; a refused SET returns no fd.
        let r = unsafe { dev.feature_set(vfio_sys::VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE, &mut bytes) };
        ensure!(
            r.as_ref().err().and_then(|e| e.errno()) == Some(vfio_core::Errno::INVAL),
            "raw state {raw}: {r:?}"
        );
        ensure!(
            m.state()? == MigState::Running,
            "raw state {raw} moved it to {}",
            m.state()?
        );
    }
    let e = m.set_state(MigState::Error).unwrap_err();
    ensure!(matches!(e, Error::InvalidArgument { .. }), "set_state(ERROR): {e:?}");
    println!("    {pairs} pairs follow the kernel table; raw 0 and 8 are EINVAL; ERROR is refused typed: {e}");
    Ok(Outcome::Pass)
}

/// PRE_COPY hands out the 24-byte header first and counts it down in PRECOPY_INFO; STOP_COPY
/// goes on on the same stream with the port (its FIFO holding what was written), then EOF.
fn precopy_info_and_stream_layout() -> TestResult {
    need_mtty!();
    let a = Mtty::create("mtty-1")?;
    let dev = a.open(Via::Group)?;
    Uart::new(&dev)?.write(b"hi")?;
    let m = mig(&dev)?;
    let mut s = m
        .set_state(MigState::PreCopy)?
        .ok_or("no stream at PRE_COPY")?
        .into_save()?;
    let info = s.precopy_info()?;
    ensure!(
        info == PrecopyInfo {
            initial_bytes: 24,
            dirty_bytes: 0,
            reinit: None
        },
        "first info {info:?}"
    );
    let mut head = [0u8; 10];
    ensure!(s.read_chunk(&mut head)? == Chunk::Data(10), "short first read");
    ensure!(
        s.precopy_info()?.initial_bytes == 14,
        "after 10 bytes: {:?}",
        s.precopy_info()?
    );
    let (rest, why) = drain(&mut s)?;
    ensure!(
        rest.len() == 14 && why == Chunk::NotYet,
        "rest {} bytes, then {why:?}",
        rest.len()
    );
    ensure!(
        s.precopy_info()?.initial_bytes == 0,
        "after the header: {:?}",
        s.precopy_info()?
    );
    ensure!(
        m.set_state(MigState::StopCopy)?.is_none(),
        "PRE_COPY -> STOP_COPY opened a new stream"
    );
    let (port, why) = drain(&mut s)?;
    ensure!(
        port.len() == 36 && why == Chunk::End,
        "port {} bytes, then {why:?}",
        port.len()
    );
    let data = [&head[..], &rest, &port].concat();
    ensure!(
        u64::from_ne_bytes(data[0..8].try_into()?) == MTTY_MAGIC,
        "magic {:02x?}",
        &data[0..8]
    );
    let words: Vec<u32> = (8..24)
        .step_by(4)
        .map(|i| u32::from_ne_bytes(data[i..i + 4].try_into().unwrap()))
        .collect();
    ensure!(words == [1, 0, 1, 0], "version/ports/flags {words:?}");
    ensure!(
        &port[8..10] == b"hi" && port[26] == 2,
        "port fifo {:02x?} count {}",
        &port[8..24],
        port[26]
    );
    let e = s.precopy_info().unwrap_err();
    ensure!(
        e.errno() == Some(vfio_core::Errno::INVAL),
        "PRECOPY_INFO in STOP_COPY: {e:?}"
    );
    drop(s);
    m.set_state(MigState::Running)?;
    println!("    info (24,0) -> (14,0) -> (0,0); 24 + 36 bytes, fifo \"hi\"; PRECOPY_INFO in STOP_COPY: EINVAL");
    Ok(Outcome::Pass)
}

/// `MIG_PRECOPY_INFOv2` (Linux 7.1) makes the flags an output: REINIT comes back (false).
fn precopy_info_v2_reports_reinit() -> TestResult {
    need_mtty!();
    let a = Mtty::create("mtty-1")?;
    let dev = a.open(Via::Group)?;
    let m = mig(&dev)?;
    m.enable_precopy_info_v2()?;
    let s = m.set_state(MigState::PreCopy)?.ok_or("no stream")?.into_save()?;
    let info = s.precopy_info()?;
    ensure!(info.reinit == Some(false), "v2 info {info:?}");
    drop(s);
    m.set_state(MigState::Running)?;
    println!("    v2: {info:?}");
    Ok(Outcome::Pass)
}

fn policy() -> PrecopyPolicy {
    PrecopyPolicy {
        max_rounds: 2,
        min_bytes: 0,
    }
}

/// A's FIFO moves into B through `send` and `receive` on a socket pair, in two threads.
fn uart_state_moves_between_instances(via: Via) -> TestResult {
    need_mtty!();
    let (a, b) = (Mtty::create("mtty-1")?, Mtty::create("mtty-1")?);
    let (da, db) = (a.open(via)?, b.open(via)?);
    Uart::new(&da)?.write(b"migrate")?;
    let (ma, mb) = (mig(&da)?, mig(&db)?);
    let (mut tx, mut rx) = UnixStream::pair()?;
    let (sent, got) = std::thread::scope(|sc| {
        let h = sc.spawn(|| transfer::receive(&mb, &mut rx));
        let sent = transfer::send(&ma, &mut tx, &policy());
        drop(tx);
        (sent, h.join())
    });
    let sent = sent?;
    let got = got.map_err(|_| "receiver panicked")??;
    ensure!(
        sent.rounds.first().map(|i| (i.initial_bytes, i.dirty_bytes)) == Some((24, 0)),
        "pre-copy rounds {:?}",
        sent.rounds
    );
    ensure!(sent.precopy_bytes == 24 && sent.stop_copy_bytes == 36, "sent {sent:?}");
    ensure!(got.bytes == MTTY1_SIZE, "received {got:?}");
    ensure!(ma.state()? == MigState::Stop, "source in {}", ma.state()?);
    ensure!(mb.state()? == MigState::Running, "destination in {}", mb.state()?);
    let back = Uart::new(&db)?.read_all()?;
    ensure!(
        back == b"migrate",
        "B's UART reads {:?}",
        String::from_utf8_lossy(&back)
    );
    println!(
        "    {via}: \"migrate\" moved A -> B: {} pre-copy + {} stop-copy bytes, rounds {:?}",
        sent.precopy_bytes, sent.stop_copy_bytes, sent.rounds
    );
    Ok(Outcome::Pass)
}

/// The same, with the destination in a forked child joined by a unix socket.
fn uart_state_moves_across_processes(via: Via) -> TestResult {
    need_mtty!();
    let (a, b) = (Mtty::create("mtty-1")?, Mtty::create("mtty-1")?);
    let (mut tx, rx) = UnixStream::pair()?;
    let b_uuid = b.uuid().to_string();
    let tx_fd = std::os::fd::AsRawFd::as_raw_fd(&tx);
    // SAFETY: the test harness runs tests one after another on the main thread; no other
    // thread is alive here (the scoped threads of other tests were joined).
    let pid = unsafe {
        vfio_tests::fork_child(move || {
            // The child's copy of the sending end would keep the socket open after the
            // parent closes it: close it, so a parent that stops early is an EOF here.
            // (Inside fork_child's unsafe block: tx_fd is the child's copy of the parent's
            // socket, which nothing in the child uses.)
            libc::close(tx_fd);
            let mut rx = rx;
            let db = Mtty::borrowed(&b_uuid)?.open(via)?;
            let mb = db.migration()?;
            let got = transfer::receive(&mb, &mut rx)?;
            ensure_child(mb.state()? == MigState::Running, format!("child: B in {}", mb.state()?))?;
            let back = Uart::new(&db)?.read_all()?;
            ensure_child(
                back == b"over a socket",
                format!("child: B reads {:?}", String::from_utf8_lossy(&back)),
            )?;
            println!(
                "    child: received {} bytes in {} frames; B reads \"over a socket\"",
                got.bytes, got.frames
            );
            Ok(())
        })
    }?;
    let res = (|| -> Result<transfer::SendReport, Box<dyn std::error::Error>> {
        let da = a.open(via)?;
        Uart::new(&da)?.write(b"over a socket")?;
        let ma = mig(&da)?;
        let sent = transfer::send(&ma, &mut tx, &policy())?;
        tx.flush()?;
        ensure_child(ma.state()? == MigState::Stop, format!("source in {}", ma.state()?))?;
        Ok(sent)
    })();
    drop(tx);
    let waited = vfio_tests::wait_child(pid);
    let sent = res?;
    waited?;
    ensure!(sent.precopy_bytes == 24 && sent.stop_copy_bytes == 36, "sent {sent:?}");
    drop(b);
    println!(
        "    {via}: A in STOP, B RUNNING in another process; rounds {:?}",
        sent.rounds
    );
    Ok(Outcome::Pass)
}

fn ensure_child(cond: bool, why: String) -> Result<(), Box<dyn std::error::Error>> {
    if cond { Ok(()) } else { Err(why.into()) }
}

/// A reset ends any session and leaves RUNNING; the old stream then gets the typed error.
fn reset_recovers_and_ends_sessions() -> TestResult {
    need_mtty!();
    let a = Mtty::create("mtty-1")?;
    let dev = a.open(Via::Group)?;
    let m = mig(&dev)?;
    for state in [MigState::PreCopy, MigState::StopCopy, MigState::Resuming] {
        let d = m.set_state(state)?.ok_or("no stream")?;
        m.reset()?;
        ensure!(
            m.state()? == MigState::Running,
            "after reset in {state}: {}",
            m.state()?
        );
        let e = match d {
            vfio_core::DataStream::Save(mut s) => s.read_chunk(&mut [0u8; 8]).unwrap_err(),
            vfio_core::DataStream::Resume(mut r) => r.write_all(&[0u8; 8]).unwrap_err(),
        };
        ensure!(
            matches!(e, Error::InvalidArgument { .. }) && e.to_string().contains("VFIO_DEVICE_RESET"),
            "{state} stream after reset: {e}"
        );
    }
    println!("    PRE_COPY, STOP_COPY, RESUMING: reset gives RUNNING; old streams refused typed");
    Ok(Outcome::Pass)
}

/// 59 of 60 bytes: RUNNING is refused (EINVAL) and the device stays RESUMING; the last byte
/// completes it.
fn truncated_resume_can_be_completed() -> TestResult {
    need_mtty!();
    let (a, b) = (Mtty::create("mtty-1")?, Mtty::create("mtty-1")?);
    let (da, db) = (a.open(Via::Group)?, b.open(Via::Group)?);
    Uart::new(&da)?.write(b"xyz")?;
    let blob = saved_state(&mig(&da)?)?;
    let mb = mig(&db)?;
    let mut r = mb.set_state(MigState::Resuming)?.ok_or("no stream")?.into_resume()?;
    r.write_all(&blob[..59])?;
    let e = mb.set_state(MigState::Running).unwrap_err();
    ensure!(
        e.errno() == Some(vfio_core::Errno::INVAL),
        "RUNNING with 59 bytes: {e:?}"
    );
    ensure!(mb.state()? == MigState::Resuming, "now in {}", mb.state()?);
    r.write_all(&blob[59..])?;
    drop(r);
    mb.set_state(MigState::Running)?;
    ensure!(Uart::new(&db)?.read_all()? == b"xyz", "B's FIFO after completing");
    println!("    59 bytes: {e}; the 60th completes it");
    Ok(Outcome::Pass)
}

/// A stream saved from A (with "A" in its FIFO), as bytes.
fn stream_of(dev: &vfio_core::Device) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    Uart::new(dev)?.write(b"A")?;
    let mut out = Vec::new();
    transfer::send(&mig(dev)?, &mut out, &policy())?;
    Ok(out)
}

/// Frame offsets in a stream from `stream_of`: magic 8, pre-copy frame (9 + 24), stop frame
/// (9 + 36), end frame (9 + 8).
const PRE_PAYLOAD: usize = 8 + 9;
const STOP_PAYLOAD: usize = PRE_PAYLOAD + 24 + 9;

fn resume_truncated_stream() -> TestResult {
    need_mtty!();
    let (a, b) = (Mtty::create("mtty-1")?, Mtty::create("mtty-1")?);
    let (da, db) = (a.open(Via::Group)?, b.open(Via::Group)?);
    let stream = stream_of(&da)?;
    ensure!(
        stream.len() == STOP_PAYLOAD + 36 + 9 + 8,
        "stream is {} bytes",
        stream.len()
    );
    let mb = mig(&db)?;
    Uart::new(&db)?.write(b"b")?;
    for cut in [PRE_PAYLOAD + 24, STOP_PAYLOAD + 20, stream.len() - 1] {
        let e = transfer::receive(&mb, &mut &stream[..cut]).unwrap_err();
        ensure!(
            matches!(e, Error::InvalidArgument { .. }) && e.to_string().contains("truncated"),
            "cut at {cut}: {e}"
        );
        ensure!(
            mb.state()? == MigState::Resuming,
            "cut at {cut}: destination in {}",
            mb.state()?
        );
        mb.reset()?;
    }
    ensure!(Uart::new(&db)?.read_all()? == b"b", "B's FIFO was touched");
    // The whole stream still works afterwards.
    transfer::receive(&mb, &mut stream.as_slice())?;
    ensure!(Uart::new(&db)?.read_all()? == b"A", "B after the whole stream");
    println!(
        "    cut after the header frame, inside the port, before the end: RESUMING every time; reset; whole stream then works"
    );
    Ok(Outcome::Pass)
}

fn resume_corrupt_stream() -> TestResult {
    need_mtty!();
    let (a, b) = (Mtty::create("mtty-1")?, Mtty::create("mtty-1")?);
    let (da, db) = (a.open(Via::Group)?, b.open(Via::Group)?);
    let stream = stream_of(&da)?;
    let mb = mig(&db)?;
    // A flipped payload byte (in mtty's header: H4) fails the CRC before the device sees it.
    let mut bad = stream.clone();
    bad[PRE_PAYLOAD + 1] ^= 0x40;
    let e = transfer::receive(&mb, &mut bad.as_slice()).unwrap_err();
    ensure!(e.to_string().contains("fails its CRC"), "flipped byte: {e}");
    ensure!(mb.state()? == MigState::Resuming, "after a CRC error: {}", mb.state()?);
    mb.reset()?;
    // The same flip with the CRC recomputed: mtty refuses its header (EFAULT), typed Kernel.
    let crc = transfer::crc32(&bad[PRE_PAYLOAD..PRE_PAYLOAD + 24]);
    bad[PRE_PAYLOAD - 4..PRE_PAYLOAD].copy_from_slice(&crc.to_le_bytes());
    let e = transfer::receive(&mb, &mut bad.as_slice()).unwrap_err();
    ensure!(
        matches!(e, Error::Kernel { .. }) && e.errno() == Some(vfio_core::Errno::FAULT),
        "foreign header: {e:?}"
    );
    ensure!(mb.state()? == MigState::Resuming, "after EFAULT: {}", mb.state()?);
    mb.reset()?;
    // Not a stream at all: refused before the device is touched.
    let e = transfer::receive(&mb, &mut &b"VFIOMIG\x02........"[..]).unwrap_err();
    ensure!(
        e.to_string().contains("not a vfio-rs migration stream"),
        "bad magic: {e}"
    );
    ensure!(
        mb.state()? == MigState::Running,
        "bad magic moved it to {}",
        mb.state()?
    );
    // A wrong total in the end frame.
    let mut bad = stream.clone();
    let end = bad.len() - 8;
    bad[end..].copy_from_slice(&61u64.to_le_bytes());
    let crc = transfer::crc32(&bad[end..]);
    bad[end - 4..end].copy_from_slice(&crc.to_le_bytes());
    let e = transfer::receive(&mb, &mut bad.as_slice()).unwrap_err();
    ensure!(
        e.to_string().contains("says 61 data bytes, 60 arrived"),
        "wrong total: {e}"
    );
    ensure!(
        mb.state()? == MigState::Resuming,
        "after a wrong total: {}",
        mb.state()?
    );
    mb.reset()?;
    ensure!(stream.starts_with(&MAGIC), "magic");
    println!("    CRC caught a flipped byte; mtty's EFAULT typed; bad magic and bad total refused; never RUNNING");
    Ok(Outcome::Pass)
}

fn data_fd_after_state_moved() -> TestResult {
    need_mtty!();
    let a = Mtty::create("mtty-1")?;
    let dev = a.open(Via::Group)?;
    let m = mig(&dev)?;
    let mut s = m.set_state(MigState::StopCopy)?.ok_or("no stream")?.into_save()?;
    m.set_state(MigState::Stop)?;
    let e = s.read_chunk(&mut [0u8; 8]).unwrap_err();
    ensure!(
        matches!(e, Error::InvalidArgument { .. }) && e.to_string().contains("STOP_COPY -> STOP"),
        "read after SC -> STOP: {e}"
    );
    m.set_state(MigState::Running)?;
    let s = m.set_state(MigState::PreCopy)?.ok_or("no stream")?.into_save()?;
    m.set_state(MigState::Running)?;
    let e2 = s.precopy_info().unwrap_err();
    ensure!(
        matches!(e2, Error::InvalidArgument { .. }) && e2.to_string().contains("PRE_COPY -> RUNNING"),
        "precopy_info after PC -> RUNNING: {e2}"
    );
    // Behind the handle's back (a second handle resets): the kernel's ENODEV, typed the same.
    let s = m.set_state(MigState::PreCopy)?.ok_or("no stream")?.into_save()?;
    let mut s = s;
    dev.reset()?;
    let e3 = s.read_chunk(&mut [0u8; 8]).unwrap_err();
    ensure!(
        matches!(e3, Error::InvalidArgument { .. }) && e3.to_string().contains("ENODEV"),
        "{e3}"
    );
    println!("    {e}\n    {e2}\n    {e3}");
    Ok(Outcome::Pass)
}

fn dma_logging_start_report_stop(via: Via) -> TestResult {
    need_mtty!();
    let a = Mtty::create("mtty-1")?;
    let dev = a.open(via)?;
    let ranges = [
        DmaLogRange::new(0x10_0000, 0x10_0000)?,
        DmaLogRange::new(0x40_0000, 0x1000)?,
    ];
    let log = dev.start_dma_logging(&ranges, 4096)?;
    ensure!(log.page_size() == 4096, "page size {}", log.page_size());
    let bm = log.report(0x10_0000, 0x10_0000, 4096)?;
    ensure!(bm.words().len() == 4 && bm.count() == 0, "report {:?}", bm.words());
    log.stop()?;
    let again = dev.start_dma_logging(&ranges[..1], 4096)?;
    drop(again);
    println!("    {via}: start (2 ranges, 4 KiB), 1 MiB report clean in 4 words, stop, start again, drop stops");
    Ok(Outcome::Pass)
}

fn dma_logging_overlap_refused() -> TestResult {
    need_mtty!();
    let a = Mtty::create("mtty-1")?;
    let dev = a.open(Via::Group)?;
    let r1 = DmaLogRange::new(0x10_0000, 0x2000)?;
    let r2 = DmaLogRange::new(0x10_1000, 0x2000)?;
    let e = dev.start_dma_logging(&[r1, r2], 4096).unwrap_err();
    ensure!(
        matches!(e, Error::InvalidArgument { .. })
            && e.to_string()
                .contains("[0x100000, 0x101fff] and [0x101000, 0x102fff] overlap"),
        "{e}"
    );
    // The kernel agrees: raw START with the same ranges is EINVAL.
    let raw = [0x10_0000u64, 0x2000, 0x10_1000, 0x2000];
    let mut control = [
        4096u64.to_ne_bytes(),
        2u64.to_ne_bytes(),
        (raw.as_ptr() as u64).to_ne_bytes(),
    ]
    .concat();
    // SAFETY: `ranges` points at two 16-byte ranges in `raw`, alive for the call; read only.
    let r = unsafe { dev.feature_set(vfio_sys::VFIO_DEVICE_FEATURE_DMA_LOGGING_START, &mut control) };
    ensure!(
        r.as_ref().err().and_then(|e| e.errno()) == Some(vfio_core::Errno::INVAL),
        "raw overlap: {r:?}"
    );
    let e2 = dev
        .start_dma_logging(&[r1], 4096)?
        .report(0x10_0000, 0x1000, 512)
        .unwrap_err();
    ensure!(matches!(e2, Error::InvalidArgument { .. }), "report at 512: {e2}");
    println!("    {e}\n    raw: EINVAL; report at 512 B: {e2}");
    Ok(Outcome::Pass)
}

/// edu has neither migration nor DMA logging: both typed Unsupported.
fn edu_has_no_migration_nor_logging() -> TestResult {
    let addr = match vfio_tests::device_from_env("VFIO_TEST_EDU") {
        Ok(a) => a,
        Err(why) => return skip(why),
    };
    let Some(mode) = vfio_core::Mode::ALL.into_iter().find(|&m| vfio_tests::offered(m)) else {
        return skip("no VFIO mode is offered");
    };
    let c = vfio_tests::new_container(mode)?;
    let pci = vfio_pci::PciDevice::open_in(c.as_ref(), &addr)?;
    let dev = pci.device();
    let e = dev.migration().unwrap_err();
    ensure!(matches!(e, Error::Unsupported { .. }), "migration(): {e:?}");
    let e2 = dev
        .start_dma_logging(&[DmaLogRange::new(0, 0x1000)?], 4096)
        .unwrap_err();
    ensure!(matches!(e2, Error::Unsupported { .. }), "start_dma_logging: {e2:?}");
    println!("    {mode}: {e}\n    {e2}");
    Ok(Outcome::Pass)
}

/// Runs `test` and checks it left no fd open (devices, groups, containers, iommufds, data
/// fds, sockets).
fn no_leak(test: fn() -> TestResult) -> TestResult {
    let before = vfio_tests::FdSnapshot::take()?;
    let outcome = test()?;
    before.check("fds leaked")?;
    Ok(outcome)
}

fn main() -> ExitCode {
    vfio_tests::run(&[
        ("mtty_flags_size_and_features_group", || {
            no_leak(|| flags_size_and_features(Via::Group))
        }),
        ("mtty_flags_size_and_features_cdev", || {
            no_leak(|| flags_size_and_features(Via::Cdev))
        }),
        ("every_pair_follows_the_kernel_table", || {
            no_leak(every_pair_follows_the_kernel_table)
        }),
        ("precopy_info_and_stream_layout", || {
            no_leak(precopy_info_and_stream_layout)
        }),
        ("precopy_info_v2_reports_reinit", || {
            no_leak(precopy_info_v2_reports_reinit)
        }),
        ("uart_state_moves_between_instances_group", || {
            no_leak(|| uart_state_moves_between_instances(Via::Group))
        }),
        ("uart_state_moves_between_instances_cdev", || {
            no_leak(|| uart_state_moves_between_instances(Via::Cdev))
        }),
        ("uart_state_moves_across_processes_group", || {
            no_leak(|| uart_state_moves_across_processes(Via::Group))
        }),
        ("uart_state_moves_across_processes_cdev", || {
            no_leak(|| uart_state_moves_across_processes(Via::Cdev))
        }),
        ("reset_recovers_and_ends_sessions", || {
            no_leak(reset_recovers_and_ends_sessions)
        }),
        ("truncated_resume_can_be_completed", || {
            no_leak(truncated_resume_can_be_completed)
        }),
        ("resume_truncated_stream", || no_leak(resume_truncated_stream)),
        ("resume_corrupt_stream", || no_leak(resume_corrupt_stream)),
        ("data_fd_after_state_moved", || no_leak(data_fd_after_state_moved)),
        ("dma_logging_start_report_stop_group", || {
            no_leak(|| dma_logging_start_report_stop(Via::Group))
        }),
        ("dma_logging_start_report_stop_cdev", || {
            no_leak(|| dma_logging_start_report_stop(Via::Cdev))
        }),
        ("dma_logging_overlap_refused", || no_leak(dma_logging_overlap_refused)),
        ("edu_has_no_migration_nor_logging", || {
            no_leak(edu_has_no_migration_nor_logging)
        }),
    ])
}
