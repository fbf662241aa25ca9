//! Handing VFIO objects to another process: the fds of containers, groups, iommufds and devices
//! travel over a unix socket as `SCM_RIGHTS`, each tagged with its kind and a name, so a secondary
//! process can use what a primary opened (DPDK's multi-process sync, without the sync daemon).
//! Received fds are close-on-exec (`MSG_CMSG_CLOEXEC`).

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage, SendFlags,
};

use crate::{Error, Result};

/// The most fds one message carries (the kernel's SCM_MAX_FD is 253).
pub const MAX_FDS: usize = 32;
const MAX_PAYLOAD: usize = 16 * 1024;

/// What a passed fd is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
#[non_exhaustive]
pub enum FdKind {
    /// A `/dev/vfio/vfio` container.
    Container = 1,
    /// A VFIO group.
    Group = 2,
    /// An iommufd.
    Iommufd = 3,
    /// A VFIO device.
    Device = 4,
    /// Anything else (an eventfd, a memfd, ...).
    Other = 5,
}

impl FdKind {
    fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => FdKind::Container,
            2 => FdKind::Group,
            3 => FdKind::Iommufd,
            4 => FdKind::Device,
            5 => FdKind::Other,
            _ => return None,
        })
    }
}

/// A received fd with its tag.
#[derive(Debug)]
pub struct SharedFd {
    /// What it is.
    pub kind: FdKind,
    /// The sender's name for it (a PCI address, a group number, an IOAS id ...).
    pub name: String,
    /// The fd, now owned by this process.
    pub fd: OwnedFd,
}

/// Sends `items` (kind, name, fd) in one message on a connected unix socket.
/// Errors: InvalidArgument for more than [`MAX_FDS`] items or names too long; the errno of
/// sendmsg otherwise.
pub fn send_fds(socket: BorrowedFd<'_>, items: &[(FdKind, &str, BorrowedFd<'_>)]) -> Result<()> {
    if items.is_empty() || items.len() > MAX_FDS {
        return Err(Error::invalid(
            "send fds",
            "unix socket",
            format!("{} fds (1 to {MAX_FDS} per message)", items.len()),
        ));
    }
    let mut payload = vec![items.len() as u8];
    for (kind, name, _) in items {
        let len = u16::try_from(name.len()).map_err(|_| Error::invalid("send fds", "unix socket", "name too long"))?;
        payload.push(*kind as u8);
        payload.extend(len.to_le_bytes());
        payload.extend(name.as_bytes());
    }
    if payload.len() > MAX_PAYLOAD {
        return Err(Error::invalid(
            "send fds",
            "unix socket",
            "names too long for one message",
        ));
    }
    let fds: Vec<BorrowedFd<'_>> = items.iter().map(|(_, _, fd)| *fd).collect();
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(Error::invalid("send fds", "unix socket", "control buffer too small"));
    }
    let sent = rustix::net::sendmsg(socket, &[IoSlice::new(&payload)], &mut control, SendFlags::NOSIGNAL);
    log::debug!(target: "vfio", "sendmsg(SCM_RIGHTS, {} fds) = {sent:?}", fds.len());
    let sent = sent.map_err(|e| Error::kernel("sendmsg SCM_RIGHTS", "unix socket", e))?;
    if sent != payload.len() {
        return Err(Error::malformed(
            "sendmsg SCM_RIGHTS",
            "unix socket",
            format!("sent {sent} of {} bytes", payload.len()),
        ));
    }
    Ok(())
}

/// Receives one message sent by [`send_fds`]. Errors: the errno of recvmsg; Malformed for a
/// truncated message or one whose tags and fds do not match (every fd received is closed then).
pub fn recv_fds(socket: BorrowedFd<'_>) -> Result<Vec<SharedFd>> {
    thread_local! {
        /// The receive buffer, zeroed once per thread: recvmsg overwrites it and only the bytes
        /// it received are read, so a receive does not zero 16 KiB again (under QEMU's TCG a
        /// `rep stosb` of 16 KiB is most of a receive's instructions and wall time).
        static PAYLOAD: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    PAYLOAD.with(|cell| match cell.try_borrow_mut() {
        Ok(mut payload) => {
            if payload.len() < MAX_PAYLOAD {
                payload.resize(MAX_PAYLOAD, 0);
            }
            recv_into(socket, &mut payload)
        }
        Err(_) => recv_into(socket, &mut vec![0u8; MAX_PAYLOAD]),
    })
}

/// [`recv_fds`] into `payload`.
fn recv_into(socket: BorrowedFd<'_>, payload: &mut [u8]) -> Result<Vec<SharedFd>> {
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = rustix::net::recvmsg(
        socket,
        &mut [IoSliceMut::new(payload)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    );
    log::debug!(target: "vfio", "recvmsg(SCM_RIGHTS, MSG_CMSG_CLOEXEC) = {:?}", msg.as_ref().map(|m| m.bytes));
    let msg = msg.map_err(|e| Error::kernel("recvmsg SCM_RIGHTS", "unix socket", e))?;
    let mut fds: Vec<OwnedFd> = Vec::new();
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = m {
            fds.extend(rights);
        }
    }
    let bad = |why: String| Error::malformed("recvmsg SCM_RIGHTS", "unix socket", why);
    if msg.flags.contains(rustix::net::ReturnFlags::CTRUNC) || msg.flags.contains(rustix::net::ReturnFlags::TRUNC) {
        return Err(bad("message truncated".into()));
    }
    let data = &payload[..msg.bytes];
    let count = *data.first().ok_or_else(|| bad("empty message (peer closed?)".into()))? as usize;
    if count == 0 && fds.is_empty() {
        let reason = String::from_utf8_lossy(&data[1..]);
        return Err(Error::invalid(
            "fd request",
            "primary process",
            format!("refused: {reason}"),
        ));
    }
    if count != fds.len() {
        return Err(bad(format!("{count} tags but {} fds", fds.len())));
    }
    let mut out = Vec::with_capacity(count);
    let mut at = 1;
    for fd in fds {
        let hdr = data.get(at..at + 3).ok_or_else(|| bad("tag cut short".into()))?;
        let kind = FdKind::from_u8(hdr[0]).ok_or_else(|| bad(format!("unknown kind {}", hdr[0])))?;
        let len = u16::from_le_bytes([hdr[1], hdr[2]]) as usize;
        let name = data
            .get(at + 3..at + 3 + len)
            .ok_or_else(|| bad("name cut short".into()))?;
        let name = String::from_utf8(name.to_vec()).map_err(|_| bad("name is not UTF-8".into()))?;
        at += 3 + len;
        out.push(SharedFd { kind, name, fd });
    }
    Ok(out)
}

/// What a secondary process asks a primary for: an object of `kind` named `name` (a PCI address
/// for a device, a group number, a container's name ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdRequest {
    /// The kind of object wanted.
    pub kind: FdKind,
    /// Which one.
    pub name: String,
}

/// Sends a request (no fds) on a connected `SOCK_SEQPACKET` unix socket.
pub fn send_request(socket: BorrowedFd<'_>, req: &FdRequest) -> Result<()> {
    let len =
        u16::try_from(req.name.len()).map_err(|_| Error::invalid("send request", "unix socket", "name too long"))?;
    let mut msg = vec![b'Q', req.kind as u8];
    msg.extend(len.to_le_bytes());
    msg.extend(req.name.as_bytes());
    let n = rustix::net::send(socket, &msg, SendFlags::NOSIGNAL)
        .map_err(|e| Error::kernel("send request", "unix socket", e))?;
    if n != msg.len() {
        return Err(Error::malformed(
            "send request",
            "unix socket",
            format!("sent {n} of {} bytes", msg.len()),
        ));
    }
    Ok(())
}

/// Receives a request sent by [`send_request`] (`recv(2)`). `Ok(None)` when the peer closed
/// the socket. Errors: the errno of recv (Kernel); Malformed for a message that is not a
/// request.
pub fn recv_request(socket: BorrowedFd<'_>) -> Result<Option<FdRequest>> {
    let mut buf = vec![0u8; 4 + u16::MAX as usize];
    let (n, _) = rustix::net::recv(socket, &mut buf, RecvFlags::empty())
        .map_err(|e| Error::kernel("recv request", "unix socket", e))?;
    if n == 0 {
        return Ok(None);
    }
    let bad = |why: &str| Error::malformed("recv request", "unix socket", why);
    if n < 4 || buf[0] != b'Q' {
        return Err(bad("not a request"));
    }
    let kind = FdKind::from_u8(buf[1]).ok_or_else(|| bad("unknown kind"))?;
    let len = u16::from_le_bytes([buf[2], buf[3]]) as usize;
    let name = buf
        .get(4..4 + len)
        .filter(|_| 4 + len == n)
        .ok_or_else(|| bad("name length does not match"))?;
    let name = String::from_utf8(name.to_vec()).map_err(|_| bad("name is not UTF-8"))?;
    Ok(Some(FdRequest { kind, name }))
}

/// Server side: answers a request that cannot be served, so the client's [`request`] (or
/// [`recv_fds`]) returns [`Error::InvalidArgument`] carrying `reason` instead of waiting forever.
pub fn send_refusal(socket: BorrowedFd<'_>, reason: &str) -> Result<()> {
    let mut msg = vec![0u8];
    msg.extend(reason.as_bytes().iter().take(MAX_PAYLOAD - 1));
    rustix::net::send(socket, &msg, SendFlags::NOSIGNAL)
        .map_err(|e| Error::kernel("send refusal", "unix socket", e))?;
    Ok(())
}

/// Client side: asks for an object and waits for the primary's answer (its fds, tagged):
/// [`send_request`] then [`recv_fds`]. Errors: theirs; InvalidArgument carrying the primary's
/// reason when it refused ([`send_refusal`]).
pub fn request(socket: BorrowedFd<'_>, req: &FdRequest) -> Result<Vec<SharedFd>> {
    send_request(socket, req)?;
    recv_fds(socket)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    use std::os::fd::AsFd;

    #[test]
    #[cfg_attr(miri, ignore = "sendmsg/recvmsg with SCM_RIGHTS, which Miri cannot run")]
    fn passes_tagged_fds_cloexec() {
        let (a, b) =
            rustix::net::socketpair(AddressFamily::UNIX, SocketType::SEQPACKET, SocketFlags::CLOEXEC, None).unwrap();
        let e1 = crate::EventFd::new().unwrap();
        let e2 = crate::EventFd::new().unwrap();
        send_fds(
            a.as_fd(),
            &[
                (FdKind::Device, "0000:00:03.0", e1.as_fd()),
                (FdKind::Other, "irq", e2.as_fd()),
            ],
        )
        .unwrap();
        let got = recv_fds(b.as_fd()).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].kind, got[0].name.as_str()), (FdKind::Device, "0000:00:03.0"));
        assert_eq!((got[1].kind, got[1].name.as_str()), (FdKind::Other, "irq"));
        let flags = rustix::io::fcntl_getfd(&got[0].fd).unwrap();
        assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));
        // The received fd is the same eventfd.
        e1.signal(5).unwrap();
        let mut buf = [0u8; 8];
        rustix::io::read(&got[0].fd, &mut buf).unwrap();
        assert_eq!(u64::from_ne_bytes(buf), 5);
        assert!(send_fds(a.as_fd(), &[]).is_err());
    }

    #[test]
    #[cfg_attr(miri, ignore = "sendmsg/recvmsg with SCM_RIGHTS, which Miri cannot run")]
    fn request_round_trip() {
        let (a, b) =
            rustix::net::socketpair(AddressFamily::UNIX, SocketType::SEQPACKET, SocketFlags::CLOEXEC, None).unwrap();
        let req = FdRequest {
            kind: FdKind::Device,
            name: "0000:00:03.0".into(),
        };
        send_request(a.as_fd(), &req).unwrap();
        assert_eq!(recv_request(b.as_fd()).unwrap(), Some(req));
        send_refusal(b.as_fd(), "no such device").unwrap();
        let err = recv_fds(a.as_fd()).unwrap_err();
        assert!(err.to_string().contains("refused: no such device"), "{err}");
        drop(a);
        assert_eq!(recv_request(b.as_fd()).unwrap(), None);
    }
}
