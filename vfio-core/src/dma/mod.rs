//! Memory a device may reach by DMA: buffers, the guards that keep them mapped, and the tools that
//! place them in IOVA space (allocator, cache, pool) or find their physical addresses.

mod buffer;
mod iova;
pub(crate) mod mapping;
mod owned;
pub mod pagemap;
mod pool;

pub use buffer::{Backing, DmaBuffer, page_size};
pub use iova::{IovaAllocator, IovaCache};
pub use mapping::{DmaAccess, DmaMapping};
pub use owned::{OwnedDmaMapping, SharedContainer};
pub use pool::{DmaHandle, DmaPool};
