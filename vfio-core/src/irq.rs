//! Device interrupts: `VFIO_DEVICE_GET_IRQ_INFO` and the requests of `VFIO_DEVICE_SET_IRQS`.

use std::os::fd::{AsRawFd, BorrowedFd};

use bitflags::bitflags;
use vfio_sys as sys;

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
pub enum IrqAction {
    /// Kernel-to-user signalling (also enables/disables the index).
    Trigger,
    /// Mask the vectors.
    Mask,
    /// Unmask the vectors.
    Unmask,
}

/// The data of a `VFIO_DEVICE_SET_IRQS` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IrqData {
    /// No data: act on all `count` vectors now (count 0 with Trigger disables the index).
    None {
        /// How many vectors, from the request's start.
        count: u32,
    },
    /// One boolean per vector.
    Bool(Vec<bool>),
    /// One eventfd per vector; -1 de-assigns.
    Eventfds(Vec<i32>),
}

/// A complete `VFIO_DEVICE_SET_IRQS` request for vectors `start..start+count` of `index`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IrqSet {
    /// IRQ index.
    pub index: u32,
    /// First vector.
    pub start: u32,
    /// What to do.
    pub action: IrqAction,
    /// With which data.
    pub data: IrqData,
}

impl IrqSet {
    /// Routes vectors `start..` of `index` to the given eventfds (`None` de-assigns one).
    pub fn eventfds(index: u32, start: u32, fds: &[Option<BorrowedFd<'_>>]) -> Self {
        let fds = fds.iter().map(|f| f.map_or(-1, |f| f.as_raw_fd())).collect();
        IrqSet {
            index,
            start,
            action: IrqAction::Trigger,
            data: IrqData::Eventfds(fds),
        }
    }

    /// Disables every vector of `index`.
    pub fn disable(index: u32) -> Self {
        IrqSet {
            index,
            start: 0,
            action: IrqAction::Trigger,
            data: IrqData::None { count: 0 },
        }
    }

    /// Unmasks vectors `start..start+count` (e.g. INTx after servicing it).
    pub fn unmask(index: u32, start: u32, count: u32) -> Self {
        IrqSet {
            index,
            start,
            action: IrqAction::Unmask,
            data: IrqData::None { count },
        }
    }

    /// Masks vectors `start..start+count`.
    pub fn mask(index: u32, start: u32, count: u32) -> Self {
        IrqSet {
            index,
            start,
            action: IrqAction::Mask,
            data: IrqData::None { count },
        }
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
    pub(crate) fn to_bytes(&self) -> Vec<u64> {
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
        let hdr = std::mem::size_of::<sys::vfio_irq_set>();
        let argsz = hdr + data_len;
        // One allocation, written in place: this runs on every interrupt (re)configuration.
        let mut words = vec![0u64; argsz.div_ceil(8)];
        let bytes = zerocopy::IntoBytes::as_mut_bytes(&mut words[..]);
        let header = [argsz as u32, dflag | aflag, self.index, self.start, self.count()];
        for (i, word) in header.iter().enumerate() {
            bytes[4 * i..4 * i + 4].copy_from_slice(&word.to_ne_bytes());
        }
        let data = &mut bytes[hdr..argsz];
        match &self.data {
            IrqData::None { .. } => {}
            IrqData::Bool(v) => {
                for (d, &b) in data.iter_mut().zip(v) {
                    *d = b as u8;
                }
            }
            IrqData::Eventfds(v) => {
                for (d, fd) in data.chunks_exact_mut(4).zip(v) {
                    d.copy_from_slice(&fd.to_ne_bytes());
                }
            }
        }
        words
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eventfd_request_layout() {
        let s = IrqSet {
            index: 2,
            start: 3,
            action: IrqAction::Trigger,
            data: IrqData::Eventfds(vec![7, -1]),
        };
        let w = s.to_bytes();
        let b: Vec<u8> = w.iter().flat_map(|x| x.to_ne_bytes()).collect();
        let u = |i: usize| u32::from_ne_bytes(b[i * 4..i * 4 + 4].try_into().unwrap());
        assert_eq!(u(0), 20 + 8);
        assert_eq!(u(1), sys::VFIO_IRQ_SET_DATA_EVENTFD | sys::VFIO_IRQ_SET_ACTION_TRIGGER);
        assert_eq!((u(2), u(3), u(4)), (2, 3, 2));
        assert_eq!((u(5) as i32, u(6) as i32), (7, -1));
    }

    #[test]
    fn bool_request_layout() {
        let s = IrqSet {
            index: 0,
            start: 0,
            action: IrqAction::Mask,
            data: IrqData::Bool(vec![true, false, true]),
        };
        let b: Vec<u8> = s.to_bytes().iter().flat_map(|x| x.to_ne_bytes()).collect();
        assert_eq!(u32::from_ne_bytes(b[0..4].try_into().unwrap()), 23);
        assert_eq!(
            u32::from_ne_bytes(b[4..8].try_into().unwrap()),
            sys::VFIO_IRQ_SET_DATA_BOOL | sys::VFIO_IRQ_SET_ACTION_MASK
        );
        assert_eq!(&b[20..23], &[1, 0, 1]);
        assert_eq!(b.len(), 24);
    }

    #[test]
    fn disable_has_no_data() {
        let w = IrqSet::disable(1).to_bytes();
        assert_eq!(w.len() * 8, 24);
        assert_eq!(w[0] as u32, 20);
    }
}
