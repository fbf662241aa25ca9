//! Device interrupts: `VFIO_DEVICE_GET_IRQ_INFO` and the requests of `VFIO_DEVICE_SET_IRQS`.

use std::os::fd::{AsRawFd, BorrowedFd};

use bitflags::bitflags;
use vfio_sys as sys;

use crate::ioctl;

bitflags! {
    /// `vfio_irq_info.flags`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct IrqFlags: u32 {
        /// Signalling through an eventfd is supported.
        const EVENTFD = sys::VFIO_IRQ_INFO_EVENTFD;
        /// The interrupt can be masked and unmasked.
        const MASKABLE = sys::VFIO_IRQ_INFO_MASKABLE;
        /// The kernel masks it when it fires (level-triggered INTx); unmask after servicing.
        const AUTOMASKED = sys::VFIO_IRQ_INFO_AUTOMASKED;
        /// Vectors cannot be added once the index is enabled.
        const NORESIZE = sys::VFIO_IRQ_INFO_NORESIZE;
        const _ = !0;
    }
}

/// What one IRQ index offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IrqInfo {
    /// The index (for PCI: INTx = 0, MSI = 1, MSI-X = 2, ERR = 3, REQ = 4).
    pub index: u32,
    /// Its capabilities.
    pub flags: IrqFlags,
    /// How many vectors it has (0 when the device lacks it).
    pub count: u32,
}

impl IrqInfo {
    pub(crate) fn from_sys(info: &sys::vfio_irq_info) -> Self {
        IrqInfo {
            index: info.index,
            flags: IrqFlags::from_bits_retain(info.flags),
            count: info.count,
        }
    }
}

/// The action of a `VFIO_DEVICE_SET_IRQS` request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IrqAction {
    /// Kernel-to-user signalling (also enables/disables the index).
    Trigger,
    /// Mask the vectors.
    Mask,
    /// Unmask the vectors.
    Unmask,
}

/// The data of a `VFIO_DEVICE_SET_IRQS` request. The vector count is the data's length, so a
/// request cannot announce more data than it carries.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum IrqData<'fd> {
    /// No data: act on all `count` vectors now (count 0 with Trigger disables the index).
    None {
        /// How many vectors, from the request's start.
        count: u32,
    },
    /// One boolean per vector (`true`: act on it).
    Bool(Vec<bool>),
    /// One eventfd per vector (`None` de-assigns it), borrowed for as long as the request lives;
    /// the kernel takes its own reference to each when the request is issued.
    Eventfds(Vec<Option<BorrowedFd<'fd>>>),
}

/// A complete `VFIO_DEVICE_SET_IRQS` request for vectors `start..start+count` of `index`.
///
/// Built by the constructors below; its fields are private so the header always matches the
/// data (`count` is the data's length, the flags name its type).
#[derive(Debug, Clone)]
pub struct IrqSet<'fd> {
    index: u32,
    start: u32,
    action: IrqAction,
    data: IrqData<'fd>,
}

impl<'fd> IrqSet<'fd> {
    /// Any request: `action` on vectors `start..` of `index`, with `data`.
    pub fn new(index: u32, start: u32, action: IrqAction, data: IrqData<'fd>) -> Self {
        IrqSet {
            index,
            start,
            action,
            data,
        }
    }

    /// Routes vectors `start..` of `index` to the given eventfds, one per vector, taking what a
    /// driver holds: [`BorrowedFd`]s (`fds.iter().map(AsFd::as_fd)`), or `Option<BorrowedFd>`s
    /// where `None` de-assigns a vector. The kernel signals them when the device raises the
    /// vectors; the first such request enables the index. The request borrows the fds until it
    /// is issued; from then on the kernel holds its own reference to each eventfd (it takes one
    /// with `eventfd_ctx_fdget` while handling `VFIO_DEVICE_SET_IRQS`), so closing an fd
    /// afterwards does not stop the kernel from signalling its eventfd: disable or de-assign
    /// the vectors for that.
    ///
    /// [`AsFd::as_fd`]: std::os::fd::AsFd::as_fd
    pub fn eventfds<I>(index: u32, start: u32, fds: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<Option<BorrowedFd<'fd>>>,
    {
        let fds = fds.into_iter().map(Into::into).collect();
        Self::new(index, start, IrqAction::Trigger, IrqData::Eventfds(fds))
    }

    /// Disables every vector of `index`.
    pub fn disable(index: u32) -> Self {
        Self::new(index, 0, IrqAction::Trigger, IrqData::None { count: 0 })
    }

    /// Fires vectors `start..start+count` from software, as if the device had raised them (their
    /// eventfds are signalled; useful for tests and for VMMs injecting interrupts). The index
    /// must be enabled.
    pub fn trigger(index: u32, start: u32, count: u32) -> Self {
        Self::new(index, start, IrqAction::Trigger, IrqData::None { count })
    }

    /// Fires the vectors from `start` whose flag is true.
    pub fn trigger_some(index: u32, start: u32, which: &[bool]) -> Self {
        Self::new(index, start, IrqAction::Trigger, IrqData::Bool(which.to_vec()))
    }

    /// Unmasks the vectors from `start` whose flag is true (`DATA_BOOL | ACTION_UNMASK`).
    pub fn unmask_some(index: u32, start: u32, which: &[bool]) -> Self {
        Self::new(index, start, IrqAction::Unmask, IrqData::Bool(which.to_vec()))
    }

    /// Masks the vectors from `start` whose flag is true (`DATA_BOOL | ACTION_MASK`).
    pub fn mask_some(index: u32, start: u32, which: &[bool]) -> Self {
        Self::new(index, start, IrqAction::Mask, IrqData::Bool(which.to_vec()))
    }

    /// Unmasks vectors `start..start+count` (e.g. INTx after servicing it).
    pub fn unmask(index: u32, start: u32, count: u32) -> Self {
        Self::new(index, start, IrqAction::Unmask, IrqData::None { count })
    }

    /// Masks vectors `start..start+count`.
    pub fn mask(index: u32, start: u32, count: u32) -> Self {
        Self::new(index, start, IrqAction::Mask, IrqData::None { count })
    }

    /// Unmasks vector `start` of `index` whenever `fd` is signalled (an irqfd-style unmask, e.g.
    /// a VMM's resample eventfd for INTx); `None` removes it.
    pub fn unmask_on(index: u32, start: u32, fd: Option<BorrowedFd<'fd>>) -> Self {
        Self::new(index, start, IrqAction::Unmask, IrqData::Eventfds(vec![fd]))
    }

    /// Masks vector `start` of `index` whenever `fd` is signalled; `None` removes it.
    pub fn mask_on(index: u32, start: u32, fd: Option<BorrowedFd<'fd>>) -> Self {
        Self::new(index, start, IrqAction::Mask, IrqData::Eventfds(vec![fd]))
    }

    /// The IRQ index.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The first vector.
    pub fn start(&self) -> u32 {
        self.start
    }

    /// The action.
    pub fn action(&self) -> IrqAction {
        self.action
    }

    /// The data.
    pub fn data(&self) -> &IrqData<'fd> {
        &self.data
    }

    /// Number of vectors the request covers.
    pub fn count(&self) -> u32 {
        match &self.data {
            IrqData::None { count } => *count,
            IrqData::Bool(v) => v.len() as u32,
            IrqData::Eventfds(v) => v.len() as u32,
        }
    }

    /// The request as the kernel reads it: a `vfio_irq_set` header and its data, in u64 words
    /// so the buffer is 8-byte aligned.
    pub(crate) fn to_buf(&self) -> ioctl::VarBuf<sys::vfio_irq_set> {
        let (dflag, data_len) = match &self.data {
            IrqData::None { .. } => (sys::VFIO_IRQ_SET_DATA_NONE, 0),
            IrqData::Bool(v) => (sys::VFIO_IRQ_SET_DATA_BOOL, v.len()),
            IrqData::Eventfds(v) => (sys::VFIO_IRQ_SET_DATA_EVENTFD, 4 * v.len()),
        };
        let aflag = match self.action {
            IrqAction::Trigger => sys::VFIO_IRQ_SET_ACTION_TRIGGER,
            IrqAction::Mask => sys::VFIO_IRQ_SET_ACTION_MASK,
            IrqAction::Unmask => sys::VFIO_IRQ_SET_ACTION_UNMASK,
        };
        // One allocation, written in place: this runs on every interrupt (re)configuration.
        let header = sys::vfio_irq_set {
            flags: dflag | aflag,
            index: self.index,
            start: self.start,
            count: self.count(),
            ..Default::default()
        };
        let mut buf = ioctl::VarBuf::with_header(&header, data_len);
        let data = buf.tail_mut();
        match &self.data {
            IrqData::None { .. } => {}
            IrqData::Bool(v) => {
                for (d, &b) in data.iter_mut().zip(v) {
                    *d = b as u8;
                }
            }
            IrqData::Eventfds(v) => {
                for (d, fd) in data.chunks_exact_mut(4).zip(v) {
                    d.copy_from_slice(&fd.map_or(-1, |f| f.as_raw_fd()).to_ne_bytes());
                }
            }
        }
        buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eventfd_request_layout() {
        let stdin = std::io::stdin();
        let s = IrqSet::eventfds(2, 3, [Some(std::os::fd::AsFd::as_fd(&stdin)), None]);
        let mut w = s.to_buf();
        w.set_argsz();
        let b = w.bytes();
        let u = |i: usize| u32::from_ne_bytes(b[i * 4..i * 4 + 4].try_into().unwrap());
        assert_eq!(u(0), 20 + 8);
        assert_eq!(u(1), sys::VFIO_IRQ_SET_DATA_EVENTFD | sys::VFIO_IRQ_SET_ACTION_TRIGGER);
        assert_eq!((u(2), u(3), u(4)), (2, 3, 2));
        assert_eq!((u(5) as i32, u(6) as i32), (0, -1));
    }

    #[test]
    fn bool_request_layout() {
        let s = IrqSet::new(0, 0, IrqAction::Mask, IrqData::Bool(vec![true, false, true]));
        let mut w = s.to_buf();
        w.set_argsz();
        let b = w.bytes();
        assert_eq!(u32::from_ne_bytes(b[0..4].try_into().unwrap()), 23);
        assert_eq!(
            u32::from_ne_bytes(b[4..8].try_into().unwrap()),
            sys::VFIO_IRQ_SET_DATA_BOOL | sys::VFIO_IRQ_SET_ACTION_MASK
        );
        assert_eq!(&b[20..23], &[1, 0, 1]);
        assert_eq!(b.len(), 23);
    }

    /// Every constructor's header: the flags name the data type and action, `count` is the
    /// data's length, so the kernel reads exactly what was built.
    /// argsz, flags, index, start, count.
    type Header = (u32, u32, u32, u32, u32);

    #[test]
    fn every_constructor_builds_a_request_the_kernel_reads_as_meant() {
        use sys::{
            VFIO_IRQ_SET_ACTION_MASK as MASK, VFIO_IRQ_SET_ACTION_TRIGGER as TRIGGER,
            VFIO_IRQ_SET_ACTION_UNMASK as UNMASK, VFIO_IRQ_SET_DATA_BOOL as BOOL, VFIO_IRQ_SET_DATA_EVENTFD as EVENTFD,
            VFIO_IRQ_SET_DATA_NONE as NONE,
        };
        let stdin = std::io::stdin();
        let fd = std::os::fd::AsFd::as_fd(&stdin);
        let header = |s: &IrqSet<'_>| {
            let mut w = s.to_buf();
            w.set_argsz();
            let b = w.bytes().to_vec();
            let u = |i: usize| u32::from_ne_bytes(b[i * 4..i * 4 + 4].try_into().unwrap());
            (u(0), u(1), u(2), u(3), u(4))
        };
        let cases: Vec<(IrqSet<'_>, Header)> = vec![
            (IrqSet::trigger(2, 4, 3), (20, NONE | TRIGGER, 2, 4, 3)),
            (IrqSet::trigger(2, 7, 1), (20, NONE | TRIGGER, 2, 7, 1)),
            (
                IrqSet::trigger_some(1, 0, &[true, false]),
                (22, BOOL | TRIGGER, 1, 0, 2),
            ),
            (IrqSet::eventfds(2, 1, [Some(fd)]), (24, EVENTFD | TRIGGER, 2, 1, 1)),
            (IrqSet::eventfds(2, 0, [fd, fd, fd]), (32, EVENTFD | TRIGGER, 2, 0, 3)),
            (IrqSet::disable(1), (20, NONE | TRIGGER, 1, 0, 0)),
            (IrqSet::mask(0, 0, 1), (20, NONE | MASK, 0, 0, 1)),
            (IrqSet::unmask(0, 0, 1), (20, NONE | UNMASK, 0, 0, 1)),
            (IrqSet::mask_some(2, 3, &[true]), (21, BOOL | MASK, 2, 3, 1)),
            (IrqSet::unmask_some(2, 3, &[false, true]), (22, BOOL | UNMASK, 2, 3, 2)),
            (IrqSet::mask_on(0, 0, Some(fd)), (24, EVENTFD | MASK, 0, 0, 1)),
            (IrqSet::unmask_on(0, 0, None), (24, EVENTFD | UNMASK, 0, 0, 1)),
        ];
        for (set, want) in cases {
            assert_eq!(header(&set), want, "{set:?}");
            assert_eq!(set.count(), want.4);
        }
    }

    #[test]
    fn disable_has_no_data() {
        let mut w = IrqSet::disable(1).to_buf();
        w.set_argsz();
        assert_eq!(w.len(), 20);
        assert_eq!(w.reply_argsz(), 20);
    }
}
