//! Moving a device's state from a source [`Migration`] to a destination one through any byte
//! stream (a pipe, a unix socket to another process, a file), the way a VMM does it:
//! pre-copy rounds while the source runs, then STOP_COPY.
//!
//! Wire format: the magic `b"VFIOMIG\x01"`, then frames `[kind u8][len u32 LE][crc32 u32 LE]
//! [payload]`: kind 1 carries pre-copy data, 2 STOP_COPY data, 3 ends the stream and carries
//! the total number of data bytes (u64 LE). The CRC is CRC-32 (IEEE) of the payload. The
//! receiver writes a payload into the device only after its CRC checked, and sets the device
//! RUNNING only after an end frame whose total matches, so a truncated or corrupted stream
//! never leaves the destination running half a state: it stays in RESUMING (recover with
//! [`Migration::reset`]).

use std::io::{self, Read, Write};
use std::path::PathBuf;

use super::{Chunk, MigFlags, MigState, Migration, PrecopyInfo};
use crate::{Error, Result};

/// The stream's first 8 bytes.
pub const MAGIC: [u8; 8] = *b"VFIOMIG\x01";
/// The largest payload a frame carries; the receiver refuses larger ones.
pub const MAX_FRAME: usize = 1 << 20;
/// How much the sender reads from the data fd per frame, at most.
const CHUNK: usize = 64 << 10;
/// Its first read buffer: enough for small devices (mtty's state is 60-96 bytes), grown to
/// [`CHUNK`] after a read fills it, so small states do not pay for zeroing 64 KiB.
const FIRST_CHUNK: usize = 4 << 10;

/// After a read of `n` bytes into `buf`: a full buffer grows to [`CHUNK`].
fn grow(buf: &mut Vec<u8>, n: usize) {
    if n == buf.len() && buf.len() < CHUNK {
        buf.resize(CHUNK, 0);
    }
}

/// A frame's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// Pre-copy data (read while the source ran).
    PreCopy = 1,
    /// STOP_COPY data.
    StopCopy = 2,
    /// The end: the total number of data bytes, u64 LE.
    End = 3,
}

/// How many pre-copy rounds [`send`] runs.
#[derive(Debug, Clone, Copy)]
pub struct PrecopyPolicy {
    /// At most this many rounds (0: go straight to STOP_COPY).
    pub max_rounds: u32,
    /// After the first round, stop pre-copying once fewer bytes than this are pending.
    pub min_bytes: u64,
}

impl Default for PrecopyPolicy {
    fn default() -> Self {
        PrecopyPolicy {
            max_rounds: 3,
            min_bytes: 0,
        }
    }
}

/// What [`send`] did.
#[derive(Debug, Clone, Default)]
pub struct SendReport {
    /// `VFIO_MIG_GET_PRECOPY_INFO` at the start of each pre-copy round that ran.
    pub rounds: Vec<PrecopyInfo>,
    /// Data bytes sent during pre-copy.
    pub precopy_bytes: u64,
    /// Data bytes sent from STOP_COPY.
    pub stop_copy_bytes: u64,
}

/// What [`receive`] did.
#[derive(Debug, Clone, Default)]
pub struct ReceiveReport {
    /// Data bytes written into the device.
    pub bytes: u64,
    /// Frames received (the end frame included).
    pub frames: u32,
}

/// Saves the source's state into `out`. The source must be RUNNING (or RUNNING_P2P, or STOP:
/// then there is no pre-copy). With PRE_COPY offered and `policy.max_rounds > 0` it enters
/// PRE_COPY and sends, per round, what `VFIO_MIG_GET_PRECOPY_INFO` says is pending (the
/// initial bytes first), while the device runs; then STOP_COPY (the same data fd goes on),
/// whose data it sends to the end; then the end frame. The source is left in STOP.
///
/// Errors: those of [`Migration::set_state`] and the data fd; Path for a failed write to
/// `out` (naming it "migration stream of DEVICE"). On error the source is wherever it got to
/// (PRE_COPY or STOP_COPY): set it back to RUNNING to carry on.
pub fn send(src: &Migration, out: &mut impl Write, policy: &PrecopyPolicy) -> Result<SendReport> {
    let dev = src.device().name().to_string();
    let mut w = FrameWriter { out, dev: &dev };
    w.raw(&MAGIC)?;
    let mut report = SendReport::default();
    let from = src.state()?;
    let precopy = src.flags().contains(MigFlags::PRE_COPY)
        && policy.max_rounds > 0
        && matches!(from, MigState::Running | MigState::RunningP2p);
    let mut buf = vec![0u8; FIRST_CHUNK];
    let mut stream = None;
    if precopy {
        let mut s = src
            .set_state(MigState::PreCopy)?
            .ok_or_else(|| no_fd(&dev, MigState::PreCopy))?
            .into_save()?;
        for round in 0..policy.max_rounds {
            let info = s.precopy_info()?;
            let pending = info.initial_bytes.saturating_add(info.dirty_bytes);
            if pending == 0 || (round > 0 && pending < policy.min_bytes) {
                break;
            }
            report.rounds.push(info);
            while let Chunk::Data(n) = s.read_chunk(&mut buf)? {
                w.frame(FrameKind::PreCopy, &buf[..n])?;
                report.precopy_bytes += n as u64;
                grow(&mut buf, n);
            }
        }
        stream = Some(s);
    }
    let mut s = match src.set_state(MigState::StopCopy)? {
        Some(d) => d.into_save()?,
        None => stream.ok_or_else(|| no_fd(&dev, MigState::StopCopy))?,
    };
    loop {
        match s.read_chunk(&mut buf)? {
            Chunk::Data(n) => {
                w.frame(FrameKind::StopCopy, &buf[..n])?;
                report.stop_copy_bytes += n as u64;
                grow(&mut buf, n);
            }
            Chunk::End => break,
            Chunk::NotYet => {
                return Err(Error::malformed(
                    "read migration data",
                    &dev,
                    "the data fd said 'not yet' in STOP_COPY",
                ));
            }
        }
    }
    let total = report.precopy_bytes + report.stop_copy_bytes;
    w.frame(FrameKind::End, &total.to_le_bytes())?;
    w.out.flush().map_err(|e| w.io_error("flush", e))?;
    drop(s);
    src.set_state(MigState::Stop)?;
    Ok(report)
}

/// Restores the state [`send`] wrote into `input` into the destination, which ends RUNNING.
/// The magic is checked before the device is touched; then the device goes to RESUMING and
/// each frame's payload is written after its CRC checked; RUNNING is set only after an end
/// frame whose total matches the bytes written.
///
/// Errors: InvalidArgument for a stream that is not one (bad magic, unknown frame kind, a
/// frame over [`MAX_FRAME`], a CRC mismatch, a total that does not match, or an end before the
/// end frame: "truncated"); Path for a failed read of `input`; the driver's errno for data it
/// refuses (mtty: EFAULT for a foreign header, ENOMEM past its size, EINVAL on RUNNING with
/// too few bytes). After any error past the magic the destination stays in RESUMING.
pub fn receive(dst: &Migration, input: &mut impl Read) -> Result<ReceiveReport> {
    let dev = dst.device().name().to_string();
    let mut r = FrameReader {
        input,
        dev: &dev,
        read: 0,
    };
    let mut magic = [0u8; 8];
    r.exact(&mut magic, "the magic")?;
    if magic != MAGIC {
        return Err(Error::invalid(
            "receive migration stream",
            &dev,
            format!("not a vfio-rs migration stream (magic {magic:02x?})"),
        ));
    }
    let mut s = dst
        .set_state(MigState::Resuming)?
        .ok_or_else(|| no_fd(&dev, MigState::Resuming))?
        .into_resume()?;
    let mut report = ReceiveReport::default();
    let mut payload = Vec::new();
    loop {
        let kind = r.frame(&mut payload)?;
        report.frames += 1;
        match kind {
            FrameKind::PreCopy | FrameKind::StopCopy => {
                s.write_all(&payload)?;
                report.bytes += payload.len() as u64;
            }
            FrameKind::End => {
                let total = <[u8; 8]>::try_from(payload.as_slice())
                    .map(u64::from_le_bytes)
                    .map_err(|_| r.bad(format!("an end frame of {} bytes, not 8", payload.len())))?;
                if total != report.bytes {
                    return Err(r.bad(format!(
                        "the end frame says {total} data bytes, {} arrived",
                        report.bytes
                    )));
                }
                break;
            }
        }
    }
    drop(s);
    dst.set_state(MigState::Running)?;
    Ok(report)
}

/// Checks a whole stream without a device: the magic, every frame's kind, size and CRC, and
/// the end frame's total; returns the number of data bytes it carries. For a VMM that keeps
/// saved states in files and wants to know one is whole before a destination goes to
/// RESUMING. Errors: InvalidArgument as for [`receive`] (naming `name`); Path for a failed
/// read of `input`.
pub fn check_stream(input: &mut impl Read, name: &str) -> Result<u64> {
    let mut r = FrameReader {
        input,
        dev: name,
        read: 0,
    };
    let mut magic = [0u8; 8];
    r.exact(&mut magic, "the magic")?;
    if magic != MAGIC {
        return Err(r.bad(format!("not a vfio-rs migration stream (magic {magic:02x?})")));
    }
    let mut payload = Vec::new();
    let mut bytes = 0u64;
    loop {
        match r.frame(&mut payload)? {
            FrameKind::PreCopy | FrameKind::StopCopy => bytes += payload.len() as u64,
            FrameKind::End => {
                let total = <[u8; 8]>::try_from(payload.as_slice())
                    .map(u64::from_le_bytes)
                    .map_err(|_| r.bad(format!("an end frame of {} bytes, not 8", payload.len())))?;
                if total != bytes {
                    return Err(r.bad(format!("the end frame says {total} data bytes, {bytes} arrived")));
                }
                return Ok(bytes);
            }
        }
    }
}

fn no_fd(dev: &str, to: MigState) -> Error {
    Error::malformed(
        "VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE",
        dev,
        format!("the move to {to} returned no data fd"),
    )
}

struct FrameWriter<'a, W> {
    out: &'a mut W,
    dev: &'a str,
}

impl<W: Write> FrameWriter<'_, W> {
    fn raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.out.write_all(bytes).map_err(|e| self.io_error("write", e))
    }

    fn frame(&mut self, kind: FrameKind, payload: &[u8]) -> Result<()> {
        let mut header = [0u8; 9];
        header[0] = kind as u8;
        header[1..5].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        header[5..9].copy_from_slice(&crc32(payload).to_le_bytes());
        self.raw(&header)?;
        self.raw(payload)
    }

    fn io_error(&self, op: &'static str, e: io::Error) -> Error {
        let op = if op == "flush" {
            "flush migration stream"
        } else {
            "write migration stream"
        };
        Error::path(op, PathBuf::from(format!("migration stream of {}", self.dev)), e)
    }
}

struct FrameReader<'a, R> {
    input: &'a mut R,
    dev: &'a str,
    read: u64,
}

impl<R: Read> FrameReader<'_, R> {
    fn bad(&self, why: String) -> Error {
        Error::invalid(
            "receive migration stream",
            self.dev,
            format!("{why} (at stream byte {})", self.read),
        )
    }

    fn exact(&mut self, buf: &mut [u8], what: &str) -> Result<()> {
        match self.input.read_exact(buf) {
            Ok(()) => {
                self.read += buf.len() as u64;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(self.bad(format!(
                "the stream is truncated: it ended inside {what}, before the end frame"
            ))),
            Err(e) => Err(Error::path(
                "read migration stream",
                PathBuf::from(format!("migration stream of {}", self.dev)),
                e,
            )),
        }
    }

    /// Reads one frame into `payload`, checked: kind, size and CRC.
    fn frame(&mut self, payload: &mut Vec<u8>) -> Result<FrameKind> {
        let mut header = [0u8; 9];
        self.exact(&mut header, "a frame header")?;
        let kind = match header[0] {
            1 => FrameKind::PreCopy,
            2 => FrameKind::StopCopy,
            3 => FrameKind::End,
            k => return Err(self.bad(format!("unknown frame kind {k}"))),
        };
        let len = u32::from_le_bytes(header[1..5].try_into().unwrap_or_default()) as usize;
        let crc = u32::from_le_bytes(header[5..9].try_into().unwrap_or_default());
        if len > MAX_FRAME {
            return Err(self.bad(format!("a {len}-byte frame, above the {MAX_FRAME}-byte limit")));
        }
        payload.resize(len, 0);
        self.exact(payload, "a frame payload")?;
        let got = crc32(payload);
        if got != crc {
            return Err(self.bad(format!(
                "a {len}-byte {kind:?} frame fails its CRC (stream says {crc:#010x}, payload gives {got:#010x})"
            )));
        }
        Ok(kind)
    }
}

/// CRC-32 (IEEE 802.3, reflected, as zlib's `crc32`).
pub fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 { 0xedb8_8320 ^ (c >> 1) } else { c >> 1 };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    let mut c = !0u32;
    for &b in data {
        c = TABLE[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_stream_takes_whole_streams_only() {
        let mut whole = MAGIC.to_vec();
        whole.extend(frames(&[
            (FrameKind::PreCopy, b"ab"),
            (FrameKind::StopCopy, b"cde"),
            (FrameKind::End, &5u64.to_le_bytes()),
        ]));
        assert_eq!(check_stream(&mut whole.as_slice(), "f").unwrap(), 5);
        for cut in 0..whole.len() {
            let e = check_stream(&mut &whole[..cut], "f").unwrap_err();
            assert!(e.to_string().contains("truncated"), "cut {cut}: {e}");
        }
        let mut bad = whole.clone();
        let n = bad.len();
        bad[n - 8] = 6;
        assert!(check_stream(&mut bad.as_slice(), "f").is_err());
        bad = whole;
        bad[7] = 2;
        assert!(
            check_stream(&mut bad.as_slice(), "f")
                .unwrap_err()
                .to_string()
                .contains("magic")
        );
    }

    #[test]
    fn crc32_matches_zlib() {
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    fn frames(parts: &[(FrameKind, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = FrameWriter {
            out: &mut out,
            dev: "d",
        };
        for (k, p) in parts {
            w.frame(*k, p).unwrap();
        }
        out
    }

    #[test]
    fn frames_round_trip_and_corruption_is_caught() {
        let bytes = frames(&[(FrameKind::PreCopy, b"abc"), (FrameKind::End, &3u64.to_le_bytes())]);
        let mut input = bytes.as_slice();
        let mut r = FrameReader {
            input: &mut input,
            dev: "d",
            read: 0,
        };
        let mut p = Vec::new();
        assert_eq!(r.frame(&mut p).unwrap(), FrameKind::PreCopy);
        assert_eq!(p, b"abc");
        assert_eq!(r.frame(&mut p).unwrap(), FrameKind::End);
        // A flipped payload byte.
        let mut bad = bytes.clone();
        bad[9] ^= 1;
        let mut input = bad.as_slice();
        let mut r = FrameReader {
            input: &mut input,
            dev: "d",
            read: 0,
        };
        let e = r.frame(&mut p).unwrap_err();
        assert!(e.to_string().contains("fails its CRC"), "{e}");
        // Truncated inside a payload.
        let mut input = &bytes[..11];
        let mut r = FrameReader {
            input: &mut input,
            dev: "d",
            read: 0,
        };
        let e = r.frame(&mut p).unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
        // An unknown kind and an oversized frame.
        let mut bad = bytes.clone();
        bad[0] = 9;
        let mut input = bad.as_slice();
        let mut r = FrameReader {
            input: &mut input,
            dev: "d",
            read: 0,
        };
        assert!(
            r.frame(&mut p)
                .unwrap_err()
                .to_string()
                .contains("unknown frame kind 9")
        );
        let mut bad = bytes;
        bad[1..5].copy_from_slice(&(MAX_FRAME as u32 + 1).to_le_bytes());
        let mut input = bad.as_slice();
        let mut r = FrameReader {
            input: &mut input,
            dev: "d",
            read: 0,
        };
        assert!(r.frame(&mut p).unwrap_err().to_string().contains("above the"));
    }
}
