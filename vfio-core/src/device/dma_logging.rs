//! Device DMA logging (`VFIO_DEVICE_FEATURE_DMA_LOGGING_START` / `STOP` / `REPORT`, Linux 6.1):
//! the device itself tracks which pages it wrote, for the dirty-page phase of a migration.
//! Ranges are typed and checked before the kernel sees them; the report's bitmap is a
//! library-owned buffer sized for everything the kernel can write.

use std::os::fd::AsFd as _;

use vfio_sys as sys;
use zerocopy::IntoBytes;

use crate::{Device, Errno, Error, Result};

/// The most ranges one START takes: a page of 16-byte ranges (the kernel's `LOG_MAX_RANGES`
/// with 4 KiB pages; more gives E2BIG).
pub const MAX_LOG_RANGES: usize = 256;

/// One IOVA range to log: `len` bytes from `iova`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DmaLogRange {
    iova: u64,
    len: u64,
}

impl DmaLogRange {
    /// A range of `len` bytes at `iova`. Errors: InvalidArgument for a length of 0 or a range
    /// that wraps past 2^64.
    pub fn new(iova: u64, len: u64) -> Result<Self> {
        if len == 0 || iova.checked_add(len - 1).is_none() {
            return Err(Error::invalid(
                "DMA logging range",
                format!("[{iova:#x}, +{len:#x})"),
                if len == 0 {
                    "the length is 0"
                } else {
                    "the range wraps past 2^64"
                },
            ));
        }
        Ok(DmaLogRange { iova, len })
    }

    /// The first IOVA.
    pub fn iova(&self) -> u64 {
        self.iova
    }

    /// The length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Never: a range has at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The last IOVA in the range.
    pub fn last(&self) -> u64 {
        self.iova + (self.len - 1)
    }
}

impl std::fmt::Display for DmaLogRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{:#x}, {:#x}]", self.iova, self.last())
    }
}

/// A DMA logging session on a device, from [`Device::start_dma_logging`]. Dropping it stops
/// logging (a failure is logged); [`DmaLogging::stop`] returns it instead.
#[derive(Debug)]
pub struct DmaLogging {
    device: Device,
    page_size: u64,
    stopped: bool,
}

/// Which pages of a reported IOVA range the device wrote since the last report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirtyBitmap {
    iova: u64,
    page_size: u64,
    pages: u64,
    words: Vec<u64>,
}

impl DirtyBitmap {
    /// A zeroed bitmap for `len` bytes at `iova` in pages of `page_size`: one bit per page,
    /// `((len - 1) / page_size) / 64 + 1` words, which is all the kernel's iova_bitmap writes.
    fn new(iova: u64, len: u64, page_size: u64) -> Self {
        let pages = (len - 1) / page_size + 1;
        DirtyBitmap {
            iova,
            page_size,
            pages,
            words: vec![0; (pages as usize - 1) / 64 + 1],
        }
    }

    /// The first IOVA covered.
    pub fn iova(&self) -> u64 {
        self.iova
    }

    /// The page size of one bit.
    pub fn page_size(&self) -> u64 {
        self.page_size
    }

    /// The raw words (bit i of word w is the page at `iova + (64 w + i) * page_size`).
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// Whether the page holding `iova` is dirty (false outside the range).
    pub fn is_dirty(&self, iova: u64) -> bool {
        let Some(off) = iova.checked_sub(self.iova) else {
            return false;
        };
        let page = off / self.page_size;
        page < self.pages && self.words[(page / 64) as usize] & (1 << (page % 64)) != 0
    }

    /// The IOVAs of the dirty pages, in order.
    pub fn dirty(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.pages)
            .filter(|p| self.words[(p / 64) as usize] & (1 << (p % 64)) != 0)
            .map(|p| self.iova + p * self.page_size)
    }

    /// How many pages are dirty.
    pub fn count(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }
}

fn check_page_size(op: &'static str, dev: &str, page_size: u64) -> Result<()> {
    if page_size < 4096 || !page_size.is_power_of_two() {
        return Err(Error::invalid(
            op,
            dev,
            format!("page size {page_size:#x} is not a power of 2 of at least 4 KiB"),
        ));
    }
    Ok(())
}

impl Device {
    /// `VFIO_DEVICE_FEATURE_DMA_LOGGING_START` (Linux 6.1): the device starts tracking its
    /// writes to `ranges`, at a granularity of `page_size` (the driver may pick another one:
    /// [`DmaLogging::page_size`]). Checked before the kernel sees them: 1 to
    /// [`MAX_LOG_RANGES`] ranges, a power-of-2 page size of at least 4 KiB, each range aligned
    /// to it, no two overlapping (the error names both). Errors: those InvalidArguments;
    /// Unsupported when the device has no DMA logging (the kernel's ENOTTY: edu, vfio-pci
    /// without a variant driver); the driver's errno (e.g. EBUSY when it tracks already).
    #[doc(alias = "VFIO_DEVICE_FEATURE_DMA_LOGGING_START")]
    pub fn start_dma_logging(&self, ranges: &[DmaLogRange], page_size: u64) -> Result<DmaLogging> {
        const OP: &str = "VFIO_DEVICE_FEATURE_DMA_LOGGING_START";
        check_page_size(OP, self.name(), page_size)?;
        if ranges.is_empty() || ranges.len() > MAX_LOG_RANGES {
            return Err(Error::invalid(
                OP,
                self.name(),
                format!("{} ranges: the kernel takes 1 to {MAX_LOG_RANGES}", ranges.len()),
            ));
        }
        let mut sorted = ranges.to_vec();
        sorted.sort();
        for r in &sorted {
            if r.iova % page_size != 0 || r.len % page_size != 0 {
                return Err(Error::invalid(
                    OP,
                    self.name(),
                    format!("range {r} is not aligned to the page size {page_size:#x}"),
                ));
            }
        }
        for w in sorted.windows(2) {
            if w[1].iova <= w[0].last() {
                return Err(Error::invalid(
                    OP,
                    self.name(),
                    format!("ranges {} and {} overlap", w[0], w[1]),
                ));
            }
        }
        let raw: Vec<sys::vfio_device_feature_dma_logging_range> = sorted
            .iter()
            .map(|r| sys::vfio_device_feature_dma_logging_range {
                iova: r.iova,
                length: r.len,
            })
            .collect();
        let mut control = sys::vfio_device_feature_dma_logging_control {
            page_size,
            num_ranges: raw.len() as u32,
            __reserved: 0,
            ranges: raw.as_ptr() as u64,
        };
        // SAFETY: `ranges` points at `num_ranges` ranges in `raw`, alive for the call, which
        // the kernel only reads; the payload holds no other pointer.
        let res = unsafe { self.feature_set(sys::VFIO_DEVICE_FEATURE_DMA_LOGGING_START, control.as_mut_bytes()) };
        match res {
            Ok(_) => Ok(DmaLogging {
                device: self.clone(),
                page_size: control.page_size,
                stopped: false,
            }),
            Err(e) if e.errno() == Some(Errno::NOTTY) => Err(Error::unsupported(
                "device DMA logging",
                self.name(),
                "the device's driver has no DMA logging (ENOTTY)",
            )),
            Err(e) => Err(e),
        }
    }
}

impl DmaLogging {
    /// The page size the driver tracks at (what START answered).
    pub fn page_size(&self) -> u64 {
        self.page_size
    }

    /// `VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT` (Linux 6.1): which pages of `len` bytes at
    /// `iova` the device wrote since logging started or the last report (reporting clears
    /// them), at `page_size` granularity. Errors: InvalidArgument, before the kernel, for a
    /// length of 0, a wrap, a page size that is not a power of 2 of at least 4 KiB, or an
    /// `iova`/`len` not aligned to it; the driver's errno.
    #[doc(alias = "VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT")]
    pub fn report(&self, iova: u64, len: u64, page_size: u64) -> Result<DirtyBitmap> {
        const OP: &str = "VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT";
        let dev = self.device.name();
        check_page_size(OP, dev, page_size)?;
        let range = DmaLogRange::new(iova, len)?;
        if iova % page_size != 0 || len % page_size != 0 {
            return Err(Error::invalid(
                OP,
                dev,
                format!("range {range} is not aligned to the page size {page_size:#x}"),
            ));
        }
        let mut bitmap = DirtyBitmap::new(iova, len, page_size);
        let mut report = sys::vfio_device_feature_dma_logging_report {
            iova,
            length: len,
            page_size,
            bitmap: bitmap.words.as_mut_ptr() as u64,
        };
        // SAFETY: `bitmap` points at `words`, exclusively borrowed for the call and sized for
        // one bit per page of the range (all the kernel's iova_bitmap writes); the payload
        // holds no other pointer.
        unsafe {
            self.device
                .feature_get(sys::VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT, report.as_mut_bytes())
        }?;
        Ok(bitmap)
    }

    /// `VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP`: ends the session. Errors: the driver's errno.
    #[doc(alias = "VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP")]
    pub fn stop(mut self) -> Result<()> {
        self.stopped = true;
        self.stop_inner()
    }

    fn stop_inner(&self) -> Result<()> {
        // SAFETY: the feature has no payload.
        unsafe {
            self.device
                .feature_set(sys::VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP, &mut [])
        }
        .map(drop)
    }
}

impl Drop for DmaLogging {
    fn drop(&mut self) {
        if !self.stopped {
            if let Err(e) = self.stop_inner() {
                log::warn!(target: "vfio", "stopping DMA logging of {} (fd {:?}) on drop: {e}", self.device.name(), self.device.as_fd());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_bitmaps_are_sized_right() {
        assert!(DmaLogRange::new(0, 0).is_err());
        assert!(DmaLogRange::new(u64::MAX, 2).is_err());
        assert_eq!(DmaLogRange::new(u64::MAX, 1).unwrap().last(), u64::MAX);
        let b = DirtyBitmap::new(0x10_0000, 1 << 20, 4096);
        assert_eq!(b.words().len(), 4);
        let b = DirtyBitmap::new(0, 4096 * 65, 4096);
        assert_eq!(b.words().len(), 2);
        let mut b = DirtyBitmap::new(0x1000, 4096 * 3, 4096);
        assert_eq!(b.words().len(), 1);
        b.words[0] = 0b101;
        assert!(b.is_dirty(0x1000) && !b.is_dirty(0x2000) && b.is_dirty(0x3fff) && !b.is_dirty(0x4000));
        assert!(!b.is_dirty(0));
        assert_eq!(b.dirty().collect::<Vec<_>>(), vec![0x1000, 0x3000]);
        assert_eq!(b.count(), 2);
    }

    /// A memfd stands in for the device: every check that needs no kernel fires before it.
    #[test]
    #[cfg_attr(miri, ignore = "memfd_create, which Miri cannot run")]
    fn bad_ranges_are_refused_before_the_kernel() {
        let fd = rustix::fs::memfd_create("dev", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        let dev = Device::from_fd(fd, "mdev-x", None);
        let a = DmaLogRange::new(0x1000, 0x2000).unwrap();
        let b = DmaLogRange::new(0x2000, 0x1000).unwrap();
        let e = dev.start_dma_logging(&[a, b], 4096).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { .. }), "{e:?}");
        assert!(
            e.to_string().contains("[0x1000, 0x2fff] and [0x2000, 0x2fff] overlap"),
            "{e}"
        );
        assert!(e.to_string().contains("mdev-x"), "{e}");
        let e = dev.start_dma_logging(&[], 4096).unwrap_err();
        assert!(e.to_string().contains("0 ranges"), "{e}");
        let e = dev.start_dma_logging(&[a], 512).unwrap_err();
        assert!(e.to_string().contains("page size 0x200"), "{e}");
        let odd = DmaLogRange::new(0x1800, 0x1000).unwrap();
        let e = dev.start_dma_logging(&[odd], 4096).unwrap_err();
        assert!(e.to_string().contains("not aligned"), "{e}");
        let many: Vec<_> = (0..257)
            .map(|i| DmaLogRange::new(i * 0x1000, 0x1000).unwrap())
            .collect();
        assert!(
            dev.start_dma_logging(&many, 4096)
                .unwrap_err()
                .to_string()
                .contains("257 ranges")
        );
    }
}
