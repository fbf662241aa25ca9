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
    let sent = rustix::net::sendmsg(socket, &[IoSlice::new(&payload)], &mut control, SendFlags::NOSIGNAL)
        .map_err(|e| Error::kernel("sendmsg SCM_RIGHTS", "unix socket", e))?;
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
    let mut payload = vec![0u8; MAX_PAYLOAD];
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = rustix::net::recvmsg(
        socket,
        &mut [IoSliceMut::new(&mut payload)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )
    .map_err(|e| Error::kernel("recvmsg SCM_RIGHTS", "unix socket", e))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    use std::os::fd::AsFd;

    #[test]
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
}
