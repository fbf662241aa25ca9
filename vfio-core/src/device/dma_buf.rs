//! [`DmaBuf`]: a dma-buf fd a device exported, and its CPU mapping. Two exporters: a display
//! plane of a mediated device (`VFIO_DEVICE_GET_GFX_DMABUF`, see `gfx.rs`), and ranges of a PCI
//! BAR (`VFIO_DEVICE_FEATURE_DMA_BUF`, Linux 6.19, here: [`Device::export_dma_buf`]), the way to
//! give another device peer-to-peer DMA access to this device's memory through iommufd
//! (`IOMMU_IOAS_MAP_FILE` imports it; mapping a BAR's mmap there fails with EFAULT).

use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;

use vfio_sys as sys;
use zerocopy::IntoBytes;

use crate::{Device, Errno, Error, Result};

/// The kernel support a BAR dma-buf export needs, for Unsupported errors.
const NEEDS: &str = "needs Linux >= 6.19 with CONFIG_VFIO_PCI_DMABUF (which needs CONFIG_PCI_P2PDMA and \
                     CONFIG_DMA_SHARED_BUFFER) and a vfio-pci device";

/// An owned dma-buf fd with its size. Dropping it closes the fd; the buffer lives on while a
/// mapping of it ([`DmaBufMapping`]) exists, or while an IOAS imported it. A dma-buf of BAR
/// ranges ([`Device::export_dma_buf`]) does not keep its device open: when every handle of the
/// device is closed the kernel revokes it for good.
///
/// # Revocation
///
/// vfio-pci (`drivers/vfio/pci/vfio_pci_dmabuf.c`) records the BAR's physical ranges and returns a
/// new dma-buf fd. It has no `mmap` (EINVAL): the CPU reaches the BAR through the device's own
/// region mmap. The dma-buf does **not** keep the device usable: vfio-pci *revokes* it (importers
/// must stop using it: iommufd unmaps it from every IOMMU domain) whenever the BAR stops decoding
/// or the device goes:
///
/// | event | dma-buf |
/// |---|---|
/// | `VFIO_DEVICE_RESET`, a hot reset, an FLR written through config space | revoked, then live again |
/// | COMMAND.MEM cleared (set again), PM state D3hot (back to D0) | revoked (live again) |
/// | `VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY` (exit) | revoked (live again) |
/// | the device fd closed | revoked for good |
/// | exported while COMMAND.MEM is clear | born revoked |
///
/// iommufd's import does not come back when the exporter is live again: the IOVA stays allocated
/// but maps nothing until it is unmapped and the dma-buf imported anew (which fails with ENODEV
/// while revoked, and for good once the exporter closed). Device DMA to a revoked import faults in
/// the IOMMU.
#[derive(Debug)]
pub struct DmaBuf {
    fd: OwnedFd,
    len: u64,
    name: String,
    /// For a BAR export: the region and its `(offset, length)` ranges.
    bar: Option<(u32, Vec<(u64, u64)>)>,
}

impl AsFd for DmaBuf {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl DmaBuf {
    /// Adopts a dma-buf fd; its size is `lseek(SEEK_END)` (dma-bufs answer it with their
    /// size). `name` is used in errors. Errors: the errno of lseek.
    pub fn new(fd: OwnedFd, name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        let len = rustix::fs::seek(&fd, rustix::fs::SeekFrom::End(0))
            .map_err(|e| Error::kernel("lseek(SEEK_END)", &name, e))?;
        Ok(DmaBuf {
            fd,
            len,
            name,
            bar: None,
        })
    }

    /// Its size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The name used in errors.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Gives the fd up (e.g. to pass to a compositor).
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    /// The region (BAR index) a BAR export ([`Device::export_dma_buf`]) covers; `None` for
    /// other dma-bufs.
    pub fn region(&self) -> Option<u32> {
        self.bar.as_ref().map(|(r, _)| *r)
    }

    /// The `(offset, length)` ranges of the BAR a BAR export covers, in order (empty for other
    /// dma-bufs).
    pub fn ranges(&self) -> &[(u64, u64)] {
        self.bar.as_ref().map_or(&[], |(_, r)| r.as_slice())
    }

    /// The error of a refused import of this dma-buf into an IOAS (`IOMMU_IOAS_MAP_FILE`, in cdev
    /// mode or through iommufd's compat container), with what the errno means for dma-bufs:
    /// EOPNOTSUPP (iommufd imports single-range vfio-pci dma-bufs only), ENOTTY (no
    /// `IOMMU_IOAS_MAP_FILE`: Linux < 6.19), ENODEV (revoked: the exporter is closed, reset, in
    /// low power or has memory decode off). `target` names the IOAS and the IOVA range.
    #[cold]
    #[inline(never)]
    pub fn import_error(&self, target: impl std::fmt::Display, errno: Errno) -> Error {
        use crate::ioctl::{Request, kernel_error, requests::IoasMapFile};
        let from = format!(
            "{target} (dma-buf of {}, {} range(s))",
            self.name(),
            self.ranges().len()
        );
        match errno {
            Errno::OPNOTSUPP => Error::unsupported(
                IoasMapFile::NAME,
                from,
                format!(
                    "iommufd imports single-range vfio-pci dma-bufs only (EOPNOTSUPP; this one has {} ranges)",
                    self.ranges().len()
                ),
            ),
            Errno::NOTTY => Error::unsupported(
                IoasMapFile::NAME,
                from,
                "the kernel has no IOMMU_IOAS_MAP_FILE (ENOTTY; dma-bufs need Linux >= 6.19)",
            ),
            Errno::NODEV => kernel_error::<IoasMapFile>(
                format!("{from}: revoked: the exporter is closed, reset, in low power or has memory decode off"),
                errno,
            ),
            _ => kernel_error::<IoasMapFile>(from, errno),
        }
    }

    /// A second handle on the same dma-buf (`dup` with `F_DUPFD_CLOEXEC`). Errors: the errno of
    /// fcntl (EMFILE).
    pub fn try_clone(&self) -> Result<Self> {
        let fd = self
            .fd
            .try_clone()
            .map_err(|e| Error::path("dup dma-buf", self.name.clone(), e))?;
        Ok(DmaBuf {
            fd,
            len: self.len,
            name: self.name.clone(),
            bar: self.bar.clone(),
        })
    }

    /// Whether the fd was opened for writing (`O_RDWR`): exporters choose; mbochs and most
    /// display exporters hand out read-only fds (`dma_buf_fd(buf, 0)`). Errors: the errno of
    /// `fcntl(F_GETFL)`.
    pub fn is_writable(&self) -> Result<bool> {
        let fl = rustix::fs::fcntl_getfl(&self.fd).map_err(|e| Error::kernel("fcntl(F_GETFL)", &self.name, e))?;
        Ok(fl.contains(rustix::fs::OFlags::RDWR) || fl.contains(rustix::fs::OFlags::WRONLY))
    }

    /// Maps the whole buffer (`mmap(2)`, MAP_SHARED: dma-bufs refuse private mappings),
    /// readable, and writable when the fd is ([`DmaBuf::is_writable`]; a writable shared
    /// mapping of a read-only fd is EACCES). Errors: InvalidArgument for an empty buffer;
    /// Unsupported for a read-only fd whose exporter maps only shared mappings (the kernel
    /// makes a shared mapping of a read-only file private: mbochs' dma-bufs cannot be mapped
    /// by the CPU at all); the errno of mmap otherwise (e.g. EINVAL from an exporter that does
    /// not allow CPU mappings).
    pub fn map(&self) -> Result<DmaBufMapping> {
        if self.len == 0 {
            return Err(Error::invalid("mmap dma-buf", &self.name, "the buffer is empty"));
        }
        let writable = self.is_writable()?;
        let mut prot = rustix::mm::ProtFlags::READ;
        if writable {
            prot |= rustix::mm::ProtFlags::WRITE;
        }
        let len = usize::try_from(self.len).map_err(|_| Error::invalid("mmap dma-buf", &self.name, "too large"))?;
        // SAFETY: a fresh shared mapping of the dma-buf at a kernel-chosen address; it aliases
        // no Rust object and is only reached through volatile accesses.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                rustix::mm::MapFlags::SHARED,
                &self.fd,
                0,
            )
        }
        .map_err(|e| match e {
            // A MAP_SHARED mapping of a read-only file loses VM_SHARED (mm/mmap.c), and
            // exporters that map only shared mappings (mbochs) refuse it.
            rustix::io::Errno::INVAL if !writable => Error::unsupported(
                "CPU mapping of a read-only dma-buf",
                &self.name,
                "the exporter handed out a read-only fd, so the kernel turns the shared mapping \
                 into a private one, which this exporter refuses (EINVAL; mbochs does so): \
                 import the dma-buf elsewhere (a GPU, a compositor) instead",
            ),
            e => Error::kernel("mmap dma-buf", format!("{} ({len:#x} bytes)", self.name), e),
        })?;
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| Error::malformed("mmap dma-buf", &self.name, "NULL"))?;
        Ok(DmaBufMapping {
            ptr,
            len,
            writable,
            name: self.name.clone(),
        })
    }
}

/// A CPU mapping of a [`DmaBuf`] (shared with the device and every other mapping of it),
/// reached through volatile copies; unmapped on drop (the buffer stays referenced until then).
#[derive(Debug)]
pub struct DmaBufMapping {
    ptr: NonNull<u8>,
    len: usize,
    writable: bool,
    name: String,
}

// SAFETY: the mapping is shared memory reached only through volatile accesses by raw pointer;
// no Rust reference into it is ever handed out.
unsafe impl Send for DmaBufMapping {}
// SAFETY: as above.
unsafe impl Sync for DmaBufMapping {}

impl DmaBufMapping {
    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it is empty (never: empty buffers are not mapped).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn check(&self, offset: usize, n: usize) -> Result<()> {
        if offset.checked_add(n).is_none_or(|end| end > self.len) {
            return Err(Error::invalid(
                "dma-buf copy",
                &self.name,
                format!("{n} bytes at {offset:#x} exceed the {:#x}-byte mapping", self.len),
            ));
        }
        Ok(())
    }

    /// Copies `out.len()` bytes at `offset` out of the buffer (volatile loads). Errors:
    /// InvalidArgument past the end.
    pub fn read_bytes(&self, offset: usize, out: &mut [u8]) -> Result<()> {
        self.check(offset, out.len())?;
        for (i, o) in out.iter_mut().enumerate() {
            // SAFETY: offset + i < len (checked), inside the mapping; volatile, no reference.
            *o = unsafe { self.ptr.as_ptr().add(offset + i).read_volatile() };
        }
        Ok(())
    }

    /// Whether the mapping can be written (the dma-buf fd was writable).
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// Copies `data` into the buffer at `offset` (volatile stores). Errors: InvalidArgument
    /// past the end, or for a read-only mapping (the store would fault).
    pub fn write_bytes(&self, offset: usize, data: &[u8]) -> Result<()> {
        self.check(offset, data.len())?;
        if !self.writable {
            return Err(Error::invalid(
                "dma-buf copy",
                &self.name,
                "the mapping is read-only: the exporter handed out a read-only fd",
            ));
        }
        for (i, b) in data.iter().enumerate() {
            // SAFETY: offset + i < len (checked), inside the mapping; volatile, no reference.
            unsafe { self.ptr.as_ptr().add(offset + i).write_volatile(*b) };
        }
        Ok(())
    }
}

impl Drop for DmaBufMapping {
    fn drop(&mut self) {
        // SAFETY: ptr/len are exactly the mapping made in DmaBuf::map, unmapped once here.
        if let Err(e) = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) } {
            log::warn!(target: "vfio", "munmap of dma-buf {}: {e}", self.name);
        }
    }
}

/// The `VFIO_DEVICE_FEATURE_DMA_BUF` payload: `vfio_device_feature_dma_buf` followed by its
/// ranges (the kernel reads `nr_ranges` of them, whatever argsz says).
pub(crate) fn request_bytes(region: u32, ranges: &[(u64, u64)]) -> Vec<u8> {
    let header = sys::vfio_device_feature_dma_buf {
        region_index: region,
        open_flags: (libc::O_RDWR | libc::O_CLOEXEC) as u32,
        flags: 0,
        nr_ranges: ranges.len() as u32,
        ..Default::default()
    };
    let mut bytes = header.as_bytes().to_vec();
    for &(offset, length) in ranges {
        bytes.extend_from_slice(sys::vfio_region_dma_range { offset, length }.as_bytes());
    }
    bytes
}

impl Device {
    /// `VFIO_DEVICE_FEATURE` GET of `VFIO_DEVICE_FEATURE_DMA_BUF` (Linux 6.19, vfio-pci built
    /// with `CONFIG_VFIO_PCI_DMABUF`): exports the `(offset, length)` `ranges` of BAR `region`
    /// as one dma-buf, opened `O_RDWR | O_CLOEXEC`. Import it into an iommufd IOAS
    /// ([`Container::map_dma_buf`](crate::Container::map_dma_buf)) for another device to DMA
    /// into this BAR; iommufd imports single-range dma-bufs only. See the
    /// [`DmaBuf`] for when the kernel revokes it.
    ///
    /// Checked first (InvalidArgument naming the device, region and range): `region` is a BAR
    /// (0-5) that is implemented; `ranges` is not empty; each range is non-empty, page aligned
    /// and inside the BAR; the total does not overflow. Kernel errors: EINVAL for an I/O-port
    /// BAR (only memory BARs have a P2P provider); ENODEV for the upper half of a 64-bit BAR or
    /// a device going away; Unsupported (ENOTTY, EOPNOTSUPP) on kernels without the feature
    /// (Linux 6.1 answers ENOTTY) or drivers without dma-buf export.
    #[doc(alias = "VFIO_DEVICE_FEATURE_DMA_BUF", alias = "VFIO_DEVICE_FEATURE")]
    pub fn export_dma_buf(&self, region: u32, ranges: &[(u64, u64)]) -> Result<DmaBuf> {
        const OP: &str = "VFIO_DEVICE_FEATURE_DMA_BUF";
        let target = || format!("{} region {region}", self.name());
        if region >= sys::VFIO_PCI_ROM_REGION_INDEX {
            return Err(Error::invalid(
                OP,
                target(),
                format!("only BARs (regions 0-5) can be exported as a dma-buf, not region {region}"),
            ));
        }
        let info = self.region_info(region)?;
        let len = check_ranges(info.size, ranges).map_err(|why| Error::invalid(OP, target(), why))?;
        let mut payload = request_bytes(region, ranges);
        // SAFETY: the payload holds no pointer: the header and exactly `nr_ranges` ranges, which
        // the kernel copies in (it reads no further). The fd the kernel returns is taken over
        // below, once, and nothing else is handed out.
        let ret = unsafe { self.feature_get(sys::VFIO_DEVICE_FEATURE_DMA_BUF, &mut payload) };
        let fd = match ret {
            Ok(fd) if fd >= 0 => fd,
            Ok(fd) => return Err(Error::malformed(OP, target(), format!("returned fd {fd}"))),
            Err(e) if matches!(e.errno(), Some(Errno::NOTTY | Errno::OPNOTSUPP)) => {
                return Err(Error::unsupported(
                    "dma-buf export",
                    target(),
                    format!(
                        "the kernel answered {}: {NEEDS}",
                        crate::errno_name(e.errno().unwrap_or(Errno::NOTTY)).unwrap_or("?")
                    ),
                ));
            }
            Err(Error::Kernel { errno, .. }) => {
                return Err(Error::kernel(OP, format!("{}{}", target(), kernel_hint(errno)), errno));
            }
            Err(e) => return Err(e),
        };
        // SAFETY: a successful DMA_BUF feature returns a new fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        log::debug!(target: "vfio", "{} region {region}: dma-buf of {len:#x} bytes ({} ranges)", self.name(), ranges.len());
        Ok(DmaBuf {
            fd,
            len,
            name: target(),
            bar: Some((region, ranges.to_vec())),
        })
    }
}

/// Why the kernel refused an export that passed the checks, where it can be told.
fn kernel_hint(errno: Errno) -> &'static str {
    match errno {
        Errno::INVAL => " (an I/O-port BAR, which has no peer-to-peer provider?)",
        Errno::NODEV => " (the upper half of a 64-bit BAR, a BAR vfio-pci did not claim, or a device going away)",
        _ => "",
    }
}

/// Checks `ranges` against a BAR of `size` bytes; returns their total length.
fn check_ranges(size: u64, ranges: &[(u64, u64)]) -> Result<u64, String> {
    if size == 0 {
        return Err("the BAR is not implemented (size 0)".into());
    }
    if ranges.is_empty() {
        return Err("no range given".into());
    }
    if ranges.len() > u32::MAX as usize {
        return Err(format!("{} ranges", ranges.len()));
    }
    let page = crate::page_size() as u64;
    let mut total = 0u64;
    for (i, &(offset, len)) in ranges.iter().enumerate() {
        if len == 0 {
            return Err(format!("range {i} ({offset:#x}+0) is empty"));
        }
        if offset % page != 0 || len % page != 0 {
            return Err(format!(
                "range {i} ({offset:#x}+{len:#x}) is not aligned to the {page:#x}-byte page size"
            ));
        }
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(format!(
                "range {i} ({offset:#x}+{len:#x}) is outside the BAR of {size:#x} bytes"
            ));
        }
        total = total
            .checked_add(len)
            .filter(|t| t & (1 << 63) == 0)
            .ok_or_else(|| format!("the ranges' total length overflows at range {i}"))?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_layout_is_the_uapi_one() {
        let b = request_bytes(2, &[(0x1000, 0x2000), (0x10_0000, 0x1000)]);
        assert_eq!(b.len(), 16 + 2 * 16);
        let u32_at = |o: usize| u32::from_ne_bytes(b[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_ne_bytes(b[o..o + 8].try_into().unwrap());
        assert_eq!(u32_at(0), 2, "region_index");
        assert_eq!(u32_at(4), (libc::O_RDWR | libc::O_CLOEXEC) as u32, "open_flags");
        assert_eq!(u32_at(8), 0, "flags");
        assert_eq!(u32_at(12), 2, "nr_ranges");
        assert_eq!((u64_at(16), u64_at(24)), (0x1000, 0x2000));
        assert_eq!((u64_at(32), u64_at(40)), (0x10_0000, 0x1000));
        // Behind the 8-byte vfio_device_feature header the ranges stay 8-byte aligned.
        assert_eq!(size_of::<sys::vfio_device_feature>() % 8, 0);
    }

    #[test]
    fn ranges_are_checked_before_the_kernel() {
        let mib2 = 2 << 20;
        assert_eq!(check_ranges(mib2, &[(0, mib2)]).unwrap(), mib2);
        assert_eq!(check_ranges(mib2, &[(0, 0x1000), (0x1000, 0x1000)]).unwrap(), 0x2000);
        for (size, ranges, word) in [
            (0, vec![(0, 0x1000)], "not implemented"),
            (mib2, vec![], "no range"),
            (mib2, vec![(0, 0)], "empty"),
            (mib2, vec![(0x800, 0x1000)], "aligned"),
            (mib2, vec![(0, 0x800)], "aligned"),
            (mib2, vec![(mib2, 0x1000)], "outside the BAR"),
            (mib2, vec![(!0xfffu64, 0x1000)], "outside the BAR"),
        ] {
            let e = check_ranges(size, &ranges).unwrap_err();
            assert!(e.contains(word), "{ranges:x?}: {e}");
        }
        let huge = !0xfffu64;
        let e = check_ranges(huge, &[(0, 1 << 63), (0x1000, 1 << 62)]).unwrap_err();
        assert!(e.contains("overflow"), "{e}");
    }
}
