//! Hardware queues (`IOMMU_HW_QUEUE_ALLOC`, Linux >= 6.17): a queue of the physical IOMMU (e.g.
//! a Tegra241 CMDQV command queue) handed to the guest, backed by guest memory at an IOVA of the
//! vIOMMU's nest-parent IOAS. The kernel pins that range: unmapping it from the IOAS is refused
//! (EBUSY) until the queue is destroyed. Queues of one type depend on the one with the index
//! before them: destroy them in descending index order (drop order of the [`HwQueue`] values).

use std::sync::Arc;

use iommufd_sys as sys;
use vfio_core::ioctl::{self, Request, requests as req};
use vfio_core::{Errno, Error, Result};

use crate::object::Object;
use crate::{HwQueueId, Viommu, refused};

/// A hardware queue type (`enum iommu_hw_queue_type`).
pub trait HwQueueType {
    /// The queue `type`.
    const TYPE: u32;
}

/// `IOMMU_HW_QUEUE_TYPE_TEGRA241_CMDQV`: a Tegra241 CMDQV virtual command queue.
#[derive(Debug, Clone, Copy)]
pub struct Tegra241Vcmdq;

impl HwQueueType for Tegra241Vcmdq {
    const TYPE: u32 = sys::IOMMU_HW_QUEUE_TYPE_TEGRA241_CMDQV;
}

/// A hardware queue, from [`Viommu::alloc_hw_queue`]; destroyed (`IOMMU_DESTROY`) on drop
/// (EBUSY while a queue of a higher index depends on it: logged). It holds its vIOMMU.
#[derive(Debug)]
pub struct HwQueue {
    /// Destroys the queue (first, before its vIOMMU goes).
    object: Object,
    id: HwQueueId,
    viommu: Arc<Viommu>,
    index: u32,
    iova: u64,
    len: u64,
}

impl Viommu {
    /// `IOMMU_HW_QUEUE_ALLOC` (Linux >= 6.17) of queue `index` of type `Q`, its memory the
    /// `len` bytes at `iova` of the nest parent's IOAS (pinned until the queue is destroyed).
    /// Errors: InvalidArgument for `len` 0 or a range past the end of the IOVA space (checked
    /// first); Unsupported when the vIOMMU has no queues of that type (EOPNOTSUPP: every
    /// x86 IOMMU) or the kernel lacks the ioctl (ENOTTY); Kernel: ENOENT when the range is not
    /// mapped, EFAULT when it is not physically contiguous, EEXIST for an index in use, EINVAL
    /// for an index above the driver's, EIO when the queue before it is missing.
    #[doc(alias = "IOMMU_HW_QUEUE_ALLOC")]
    pub fn alloc_hw_queue<Q: HwQueueType>(self: &Arc<Self>, index: u32, iova: u64, len: u64) -> Result<HwQueue> {
        self.alloc_hw_queue_raw(Q::TYPE, index, iova, len)
    }

    /// [`Viommu::alloc_hw_queue`] with the queue type as a number (for types without a Rust
    /// type, and type 0, which the kernel refuses: Unsupported).
    #[doc(alias = "IOMMU_HW_QUEUE_ALLOC")]
    pub fn alloc_hw_queue_raw(self: &Arc<Self>, ty: u32, index: u32, iova: u64, len: u64) -> Result<HwQueue> {
        let iommufd = self.iommufd();
        let target = || {
            format!(
                "{} viommu {} type {ty:#x} index {index} iova {iova:#x} length {len:#x}",
                iommufd.target(),
                self.id()
            )
        };
        if len == 0 || iova.checked_add(len - 1).is_none() {
            return Err(Error::invalid(
                req::HwQueueAlloc::NAME,
                target(),
                "the range is empty or runs past the end of the IOVA space",
            ));
        }
        let mut a = sys::iommu_hw_queue_alloc {
            viommu_id: self.id().get(),
            type_: ty,
            index,
            nesting_parent_iova: iova,
            length: len,
            ..Default::default()
        };
        // SAFETY: no user pointer: the kernel pins [iova, iova + len) of the parent's IOAS, memory
        // that mappings made (and vouched for) by the caller already expose to the IOMMU.
        let res = unsafe { ioctl::call_unchecked::<req::HwQueueAlloc>(iommufd.ioctl_fd(), &mut a) };
        match res {
            Ok(_) => Ok(HwQueue {
                object: Object::new(iommufd.clone(), HwQueueId::from(a.out_hw_queue_id), "hw queue"),
                id: HwQueueId::from(a.out_hw_queue_id),
                viommu: self.clone(),
                index,
                iova,
                len,
            }),
            Err(e @ (Errno::NOTTY | Errno::OPNOTSUPP)) => Err(Error::unsupported(req::HwQueueAlloc::NAME, target(), e)),
            Err(e) => Err(refused::<req::HwQueueAlloc>(target, e)),
        }
    }
}

impl HwQueue {
    /// The object id.
    pub fn id(&self) -> HwQueueId {
        self.id
    }

    /// Its index among the vIOMMU's queues of its type.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The IOVA range of its memory, `(iova, len)`.
    pub fn range(&self) -> (u64, u64) {
        (self.iova, self.len)
    }

    /// The vIOMMU it belongs to.
    pub fn viommu(&self) -> &Arc<Viommu> {
        &self.viommu
    }

    /// `IOMMU_DESTROY` of the queue now (its IOVA range can then be unmapped). Errors: EBUSY
    /// (Kernel) while the queue with the next index exists.
    #[doc(alias = "IOMMU_DESTROY")]
    pub fn destroy(self) -> Result<()> {
        self.object.destroy()
    }
}
