//! Device memory mapped into the process: [`MappedRegion`] (an `mmap(2)` of a region, volatile,
//! bounds- and alignment-checked) and [`Register`] (one register, checked once).

mod mapped;
mod register;

pub use mapped::MappedRegion;
pub use register::{Register, RegisterWidth};
