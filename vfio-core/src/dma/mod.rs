//! Memory a device may reach by DMA: buffers, the guards that keep them mapped, and the tools that
//! place them in IOVA space (allocator, cache, pool) or find their physical addresses.
//!
//! # What keeps DMA sound
//!
//! A device reaches memory through a mapping that the kernel keeps until it is unmapped. A guard
//! unmaps in its destructor, but Rust does not promise that a destructor runs: `mem::forget` is
//! safe. So every safe way to map memory must stay sound when the guard is leaked and the buffer
//! freed afterwards: the device may then reach the buffer's own pages, which stay allocated
//! (leaked) as long as the mapping exists, but never memory that the process or the kernel hands
//! out later. What the kernel holds for a mapping decides whether that is so:
//!
//! - **Pinned pages.** The type1 driver (`vfio_iommu_type1.c`, `vfio_dma_do_map`) pins the pages
//!   at map time whenever the container has an IOMMU domain, which it has from the moment
//!   `VFIO_SET_IOMMU` attached the first group (`vfio_iommu_type1_attach_group`); the pins hold
//!   until the unmap, and when the last IOMMU-backed group leaves, every mapping goes with it
//!   (`vfio_iommu_unmap_unpin_all`). A freed buffer's pages stay pinned, out of the allocator's
//!   reach. The exception: a container whose only groups are emulated (mediated devices) has no
//!   domain, records the virtual address and pins on the mdev's access (and a container whose
//!   last IOMMU group leaves while an emulated one stays is unpinned back to that state,
//!   `vfio_iommu_unmap_unpin_reaccount`).
//! - **A virtual address, pinned lazily.** An iommufd IOAS mapping by address (`IOMMU_IOAS_MAP`,
//!   also what iommufd's compat `/dev/vfio/vfio` does for `VFIO_IOMMU_MAP_DMA`) pins only while a
//!   domain is attached: with none, `iopt_map_user_pages` records the address, and the pages
//!   are pinned when a device attaches, by that address, at that moment. When the last domain
//!   detaches (`iopt_unfill_domain`), the pages are unpinned and the IOAS is back to holding an
//!   address. A leaked guard's mapping therefore lets the next attach pin whatever the process
//!   has at that address by then. Refusing the borrowing map "until a device is attached" is not
//!   enough: any later detach (a device closed, moved, or detached by
//!   `vfio_cdev::BoundDevice::detach`) makes the IOAS lazy again.
//! - **A file.** `IOMMU_IOAS_MAP_FILE` (Linux >= 6.13) maps a memfd's pages: the IOAS takes a
//!   reference on the file (`iopt_alloc_file_pages`) and pins its folios when a domain needs
//!   them (`memfd_pin_folios`). Whatever happens to the process's mapping, the IOAS reaches the
//!   file's pages and nothing else. This is why [`DmaBuffer::new`] allocates a sealed memfd.
//!
//! So [`Container::map_dma`](crate::Container::map_dma), which [`DmaMapping`] uses, maps by
//! file on iommufd (cdev, and the compat container), by address on the type1 driver (pinned at
//! map time), and refuses the rest with an error that says what to use instead: a memfd buffer,
//! an owned mapping, or the `unsafe` [`Container::map_dma_raw`](crate::Container::map_dma_raw).
//!
//! **Owned mappings** ([`OwnedDmaMapping`], [`DmaPool`]) own their buffers and free one only after
//! its unmap succeeded (an unmap that fails leaks the buffer instead; [`OwnedDmaMapping::into_buffer`]
//! and [`DmaPool::free`] unmap before they give up the memory, and [`DmaPool::buffer`] lends it
//! only for as long as the pool lives). Forgetting one leaks its buffer: the memory is never
//! freed, so the device reaches nothing else, whether its pages are pinned now or by address
//! later. They map any backing, by address ([`Container::map_dma_raw`](crate::Container::map_dma_raw)),
//! on every backend.
//!
//! **Without an IOMMU** the device is given physical addresses and can reach all memory anyway;
//! what the library guarantees is that the address it hands out stays the buffer's for as long as
//! the mapping lives, and is not reused if the guard leaks. In no-IOMMU cdev mode the kernel pins
//! (as for iommufd above, physical address from `IOMMU_IOAS_NOIOMMU_GET_PA`). In no-IOMMU group
//! mode, vfio-group pins in user space, as far as Linux lets a process: it locks the memory
//! (`mlock`: no swap), takes a reference on every page and holds it until the unmap (pages
//! spliced into a pipe the container keeps: the kernel can neither migrate a page with an extra
//! reference (compaction, NUMA balancing, khugepaged, CMA and memory offlining all give up on
//! it) nor free it when the buffer is unmapped), marks private memory `MADV_DONTFORK` (so a
//! `fork` cannot leave the device writing a page that copy-on-write took away from the parent),
//! and reads the physical address once all that is in place. See `vfio-group`'s `noiommu.rs` for
//! what still does not hold (memory failure, a kernel that ignores the extra reference).

mod buffer;
mod iova;
pub(crate) mod mapping;
mod owned;
pub mod pagemap;
mod peer;
mod pool;
pub mod refusal;

pub use buffer::{Backing, DmaBuffer, page_size};
pub use iova::{IovaAllocator, IovaCache};
pub use mapping::{DmaAccess, DmaMapping};
pub use owned::{OwnedDmaMapping, SharedContainer};
pub use peer::{PeerMapping, PeerRoute};
pub use pool::{DmaHandle, DmaPool, PoolBuffer};

use crate::{Error, Result};

/// The memfd of `buffer`, which a backend that maps by file (`IOMMU_IOAS_MAP_FILE`) needs for
/// the safe [`Container::map_dma`](crate::Container::map_dma); `target` names the container and
/// IOVA, `backend` the kernel code that would pin the memory lazily. Errors: Unsupported for a
/// buffer without one ([`Backing::Anonymous`]), saying why and what to do instead.
pub fn require_memfd<'b>(
    buffer: &'b DmaBuffer,
    target: impl FnOnce() -> String,
    backend: &str,
) -> Result<std::os::fd::BorrowedFd<'b>> {
    match buffer.memfd() {
        Some(fd) => Ok(fd),
        None => Err(lazy_refusal(target(), backend, buffer.backing())),
    }
}

/// The refusal of a safe map of memory that `backend` would pin lazily, by address.
#[cold]
#[inline(never)]
fn lazy_refusal(target: String, backend: &str, backing: Backing) -> Error {
    Error::unsupported(
        "safe DMA mapping",
        target,
        format!(
            "{backend} pins memory mapped by address lazily (when a device attaches, and again after \
             every detach of the last one), so a leaked guard could let a device reach whatever the \
             process later allocates there; it is mapped by file instead, which needs a memfd-backed \
             buffer, and this one is {backing:?}: allocate it with DmaBuffer::new (a memfd), or use \
             OwnedDmaMapping or DmaPool (they own their memory), or the unsafe Container::map_dma_raw"
        ),
    )
}
