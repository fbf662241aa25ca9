//! Physical addresses of process memory, from `/proc/self/pagemap`: what a device needs for DMA
//! when there is no IOMMU (no-IOMMU mode).
//!
//! Each virtual page has a 64-bit entry: bit 63 "present", bits 0..=54 the page frame number. The
//! kernel reports frame numbers only to a process with `CAP_SYS_ADMIN` (others read 0). The
//! memory must be resident and should be locked (`mlock`) so it is not swapped out while a device
//! uses the address; the kernel may still migrate pages (compaction), which only an IOMMU rules
//! out.

use std::fs::File;
use std::os::unix::fs::FileExt;

use crate::{Error, Result, page_size};

const PAGEMAP: &str = "/proc/self/pagemap";
const PRESENT: u64 = 1 << 63;
const PFN_MASK: u64 = (1 << 55) - 1;

/// The physical address of the byte at virtual address `vaddr` of this process.
///
/// Errors: [`Error::Path`] if `/proc/self/pagemap` cannot be opened or read;
/// [`Error::InvalidArgument`] if the page is not resident (touch or lock it first);
/// [`Error::Unsupported`] if the kernel hides frame numbers because the process lacks
/// `CAP_SYS_ADMIN`.
pub fn physical_address(vaddr: usize) -> Result<u64> {
    let file = open()?;
    let ps = page_size();
    Ok(pfn(&file, vaddr / ps)? * ps as u64 + (vaddr % ps) as u64)
}

/// The physical address of `[vaddr, vaddr + len)`, which must be physically contiguous (a range
/// inside one page always is). Errors as [`physical_address`], plus [`Error::Unsupported`] when
/// the pages are not contiguous, and [`Error::InvalidArgument`] for an empty or wrapping range.
pub fn physical_range(vaddr: usize, len: usize) -> Result<u64> {
    let last = len
        .checked_sub(1)
        .and_then(|l| vaddr.checked_add(l))
        .ok_or_else(|| Error::invalid("physical address", range(vaddr, len), "empty or wrapping range"))?;
    let file = open()?;
    let ps = page_size();
    let (first_page, last_page) = (vaddr / ps, last / ps);
    let first_pfn = pfn(&file, first_page)?;
    for (i, page) in (first_page..=last_page).enumerate().skip(1) {
        let p = pfn(&file, page)?;
        if p != first_pfn + i as u64 {
            return Err(Error::unsupported(
                "DMA by physical address",
                range(vaddr, len),
                format!(
                    "memory is not physically contiguous: page {i} is at frame {p:#x}, not {:#x}; \
                     use buffers of one page or an IOMMU",
                    first_pfn + i as u64
                ),
            ));
        }
    }
    Ok(first_pfn * ps as u64 + (vaddr % ps) as u64)
}

fn range(vaddr: usize, len: usize) -> String {
    format!("virtual range {vaddr:#x}+{len:#x}")
}

fn open() -> Result<File> {
    // std opens with O_CLOEXEC.
    File::open(PAGEMAP).map_err(|e| Error::path("open", PAGEMAP, e))
}

fn pfn(file: &File, page: usize) -> Result<u64> {
    let mut entry = [0u8; 8];
    let offset = (page as u64)
        .checked_mul(8)
        .ok_or_else(|| Error::invalid("read pagemap", format!("page {page:#x}"), "offset overflows"))?;
    file.read_exact_at(&mut entry, offset)
        .map_err(|e| Error::path("read", PAGEMAP, e))?;
    let entry = u64::from_ne_bytes(entry);
    let vaddr = page.wrapping_mul(page_size());
    if entry & PRESENT == 0 {
        return Err(Error::invalid(
            "physical address",
            format!("virtual page {vaddr:#x}"),
            "page is not resident (populate and lock the memory first)",
        ));
    }
    let pfn = entry & PFN_MASK;
    if pfn == 0 {
        return Err(Error::unsupported(
            "physical addresses from /proc/self/pagemap",
            format!("virtual page {vaddr:#x}"),
            "the kernel reports page frame numbers only to processes with CAP_SYS_ADMIN",
        ));
    }
    Ok(pfn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DmaBuffer;

    /// Whether this process may see frame numbers (effective CAP_SYS_ADMIN, from /proc).
    fn has_sys_admin() -> bool {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .is_some_and(|caps| caps & (1 << 21) != 0)
    }

    #[test]
    #[cfg_attr(miri, ignore = "real memory and /proc/self/pagemap, which mean nothing under Miri")]
    fn one_page_has_a_physical_address_or_says_why_not() {
        let buf = DmaBuffer::new(page_size()).unwrap();
        buf.fill(1);
        let vaddr = buf.as_ptr() as usize;
        match physical_range(vaddr + 16, 100) {
            Ok(pa) => {
                assert!(has_sys_admin());
                assert_eq!(pa % page_size() as u64, 16);
                assert_eq!(physical_address(vaddr + 16).unwrap(), pa);
            }
            Err(e) => {
                assert!(!has_sys_admin(), "root but: {e}");
                assert!(matches!(e, Error::Unsupported { .. }), "{e}");
                assert!(e.to_string().contains("CAP_SYS_ADMIN"), "{e}");
            }
        }
    }

    #[test]
    fn bad_ranges_are_refused() {
        assert!(matches!(physical_range(0x1000, 0), Err(Error::InvalidArgument { .. })));
        assert!(matches!(
            physical_range(usize::MAX, 2),
            Err(Error::InvalidArgument { .. })
        ));
    }

    #[test]
    #[cfg_attr(miri, ignore = "real memory and /proc/self/pagemap, which mean nothing under Miri")]
    fn unmapped_memory_is_not_resident() {
        // Page 0 is never mapped in a normal process.
        let e = physical_address(0).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    }

    #[test]
    #[cfg_attr(miri, ignore = "real memory and /proc/self/pagemap, which mean nothing under Miri")]
    fn multi_page_range_is_contiguous_or_unsupported() {
        if !has_sys_admin() {
            return;
        }
        let buf = DmaBuffer::new(16 * page_size()).unwrap();
        buf.fill(2);
        match physical_range(buf.as_ptr() as usize, buf.len()) {
            Ok(pa) => assert_eq!(pa % page_size() as u64, 0),
            Err(e) => assert!(matches!(e, Error::Unsupported { .. }) && e.to_string().contains("contiguous")),
        }
    }
}
