//! What the benchmarks work on: a device opened through vfio-rs in one mode with a raw handle on
//! the same container (so both sides of a comparison hit the same kernel objects), the raw libc
//! ioctls that are the floor, and the huge-page pool.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use iommufd_sys as isys;
use vfio_core::ioctl::{self, requests as req};
use vfio_core::{Container, Mode, PciAddress};
use vfio_pci::PciDevice;
use vfio_sys as vsys;

use crate::measure::BenchResult;

/// The IOVA the 4 KiB benchmarks map at (below edu's 28-bit DMA mask, like a real driver's).
pub const IOVA_SMALL: u64 = 0x0100_0000;
/// The IOVA of large maps: 1 GiB aligned, so the IOMMU may use 1 GiB pages.
pub const IOVA_LARGE: u64 = 0x4000_0000;

/// Why a mode cannot be benchmarked here, if it cannot.
pub fn mode_unavailable(mode: Mode) -> Option<String> {
    let m = vfio_core::detect();
    if mode.is_noiommu() {
        return Some("no-IOMMU modes have no IOMMU mapping to compare".into());
    }
    let ok = m.offers(mode);
    (!ok).then(|| format!("{mode} mode is not offered by this kernel ({m:?})"))
}

/// `ioctl(fd, request, arg)` through libc, as a program without any wrapper would issue it.
///
/// # Safety
/// `request` must take a pointer to a `T` on this kind of fd, and pointers inside `*arg` must be
/// valid for what the kernel does with them.
#[inline(always)]
pub unsafe fn ioctl<T>(fd: RawFd, request: u32, arg: &mut T) -> io::Result<i32> {
    // SAFETY: forwarded to the caller.
    let r = unsafe { libc::ioctl(fd, request as libc::c_ulong, arg as *mut T) };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r) }
}

/// `ioctl(fd, request, arg)` through libc with an integer (or no) argument.
///
/// # Safety
/// `request` must take an integer argument, or a pointer valid for what the kernel does with it.
#[inline(always)]
pub unsafe fn ioctl_int(fd: RawFd, request: u32, arg: libc::c_ulong) -> io::Result<i32> {
    // SAFETY: forwarded to the caller.
    let r = unsafe { libc::ioctl(fd, request as libc::c_ulong, arg) };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r) }
}

/// DMA map/unmap with bare ioctls on the fd of a type1 container or an iommufd.
pub struct RawDma {
    fd: OwnedFd,
    /// The IOAS, for an iommufd; `None` for a type1 container.
    ioas: Option<u32>,
    /// The IOAS that vfio-rs's safe map maps into by file (`IOMMU_IOAS_MAP_FILE` on `fd`): the
    /// IOAS of an iommufd, the compat IOAS of iommufd's `/dev/vfio/vfio`; `None` where the
    /// safe map goes by address (the type1 driver).
    file_ioas: Option<u32>,
}

impl RawDma {
    /// On a (duplicate of a) `/dev/vfio/vfio` container fd. On iommufd's compat container
    /// (a group joined, so it has its IOAS) the by-file floor goes to the compat IOAS.
    pub fn type1(fd: OwnedFd) -> Self {
        let mut v = isys::iommu_vfio_ioas {
            size: std::mem::size_of::<isys::iommu_vfio_ioas>() as u32,
            op: isys::IOMMU_VFIO_IOAS_GET as u16,
            ..Default::default()
        };
        // SAFETY: IOMMU_VFIO_IOAS takes an iommu_vfio_ioas (no pointers); the type1 driver does
        // not know it (ENOTTY).
        let file_ioas = unsafe { ioctl(fd.as_raw_fd(), isys::IOMMU_VFIO_IOAS, &mut v) }
            .ok()
            .map(|_| v.ioas_id);
        RawDma {
            fd,
            ioas: None,
            file_ioas,
        }
    }

    /// On a (duplicate of an) iommufd, in IOAS `id`.
    pub fn ioas(fd: OwnedFd, id: u32) -> Self {
        RawDma {
            fd,
            ioas: Some(id),
            file_ioas: Some(id),
        }
    }

    /// Whether vfio-rs's safe map goes by file here (`IOMMU_IOAS_MAP_FILE`).
    pub fn maps_by_file(&self) -> bool {
        self.file_ioas.is_some()
    }

    /// How vfio-rs's safe map ([`Container::map_dma`]) reaches the kernel here: "by file" or
    /// "by address".
    pub fn safe_route(&self) -> &'static str {
        if self.file_ioas.is_some() {
            "by file"
        } else {
            "by address"
        }
    }

    /// The kernel request vfio-rs's safe map issues for `buf` (see [`RawDma::safe_route`]):
    /// `IOMMU_IOAS_MAP_FILE` of its memfd, or the by-address map of [`RawDma::map`]. The
    /// floor of the safe API.
    pub fn map_like_safe(&self, buf: &vfio_core::DmaBuffer, iova: u64) -> io::Result<()> {
        let len = buf.len() as u64;
        let Some(ioas_id) = self.file_ioas else {
            // SAFETY: the by-address map of a DmaBuffer the caller unmaps before dropping it
            // (the bench loops unmap right after).
            return unsafe { self.map(buf.as_ptr(), iova, len) };
        };
        let memfd = buf
            .memfd()
            .ok_or_else(|| io::Error::other("the safe map needs a memfd-backed buffer"))?;
        let mut m = isys::iommu_ioas_map_file {
            size: std::mem::size_of::<isys::iommu_ioas_map_file>() as u32,
            flags: isys::IOMMU_IOAS_MAP_FIXED_IOVA | isys::IOMMU_IOAS_MAP_READABLE | isys::IOMMU_IOAS_MAP_WRITEABLE,
            ioas_id,
            fd: memfd.as_raw_fd(),
            start: 0,
            length: len,
            iova,
        };
        // SAFETY: IOMMU_IOAS_MAP_FILE takes an iommu_ioas_map_file; the IOAS holds the memfd's
        // pages, not an address.
        unsafe { ioctl(self.fd.as_raw_fd(), isys::IOMMU_IOAS_MAP_FILE, &mut m)? };
        Ok(())
    }

    /// The unmap matching [`RawDma::map_like_safe`].
    pub fn unmap_like_safe(&self, iova: u64, size: u64) -> io::Result<()> {
        let Some(ioas_id) = self.file_ioas else {
            return self.unmap(iova, size);
        };
        let mut u = isys::iommu_ioas_unmap {
            size: std::mem::size_of::<isys::iommu_ioas_unmap>() as u32,
            ioas_id,
            iova,
            length: size,
        };
        // SAFETY: IOMMU_IOAS_UNMAP takes an iommu_ioas_unmap; it holds no pointers.
        unsafe { ioctl(self.fd.as_raw_fd(), isys::IOMMU_IOAS_UNMAP, &mut u)? };
        Ok(())
    }

    /// The IOAS the maps go to (iommufd only).
    pub fn ioas_id(&self) -> Option<u32> {
        self.ioas
    }

    /// The fd the ioctls go to.
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// `VFIO_IOMMU_MAP_DMA` or `IOMMU_IOAS_MAP` (fixed IOVA), read + write.
    ///
    /// # Safety
    /// `[vaddr, vaddr + size)` must stay allocated until unmapped, and no Rust reference may
    /// reach it meanwhile.
    #[inline]
    pub unsafe fn map(&self, vaddr: *mut u8, iova: u64, size: u64) -> io::Result<()> {
        let fd = self.fd.as_raw_fd();
        match self.ioas {
            None => {
                let mut m = vsys::vfio_iommu_type1_dma_map {
                    argsz: std::mem::size_of::<vsys::vfio_iommu_type1_dma_map>() as u32,
                    flags: vsys::VFIO_DMA_MAP_FLAG_READ | vsys::VFIO_DMA_MAP_FLAG_WRITE,
                    vaddr: vaddr as u64,
                    iova,
                    size,
                };
                // SAFETY: VFIO_IOMMU_MAP_DMA takes a vfio_iommu_type1_dma_map; the caller vouches
                // for the memory.
                unsafe { ioctl(fd, vsys::VFIO_IOMMU_MAP_DMA, &mut m)? };
            }
            Some(ioas_id) => {
                let mut m = isys::iommu_ioas_map {
                    size: std::mem::size_of::<isys::iommu_ioas_map>() as u32,
                    flags: isys::IOMMU_IOAS_MAP_FIXED_IOVA
                        | isys::IOMMU_IOAS_MAP_READABLE
                        | isys::IOMMU_IOAS_MAP_WRITEABLE,
                    ioas_id,
                    __reserved: 0,
                    user_va: vaddr as u64,
                    length: size,
                    iova,
                };
                // SAFETY: IOMMU_IOAS_MAP takes an iommu_ioas_map; the caller vouches for the memory.
                unsafe { ioctl(fd, isys::IOMMU_IOAS_MAP, &mut m)? };
            }
        }
        Ok(())
    }

    /// As [`RawDma::map`], through vfio-core's ioctl helper (rustix's raw syscall) instead of libc.
    ///
    /// # Safety
    /// As [`RawDma::map`].
    #[inline]
    pub unsafe fn map_rustix(&self, vaddr: *mut u8, iova: u64, size: u64) -> io::Result<()> {
        let fd = self.fd.as_fd();
        let r = match self.ioas {
            None => {
                let mut m = vsys::vfio_iommu_type1_dma_map {
                    argsz: std::mem::size_of::<vsys::vfio_iommu_type1_dma_map>() as u32,
                    flags: vsys::VFIO_DMA_MAP_FLAG_READ | vsys::VFIO_DMA_MAP_FLAG_WRITE,
                    vaddr: vaddr as u64,
                    iova,
                    size,
                };
                // SAFETY: as in `map`.
                unsafe { ioctl::call_unchecked::<req::IommuMapDma>(ioctl::Fd::new_unchecked(fd), &mut m) }
            }
            Some(ioas_id) => {
                let mut m = isys::iommu_ioas_map {
                    size: std::mem::size_of::<isys::iommu_ioas_map>() as u32,
                    flags: isys::IOMMU_IOAS_MAP_FIXED_IOVA
                        | isys::IOMMU_IOAS_MAP_READABLE
                        | isys::IOMMU_IOAS_MAP_WRITEABLE,
                    ioas_id,
                    __reserved: 0,
                    user_va: vaddr as u64,
                    length: size,
                    iova,
                };
                // SAFETY: as in `map`.
                unsafe { ioctl::call_unchecked::<req::IoasMap>(ioctl::Fd::new_unchecked(fd), &mut m) }
            }
        };
        r.map(drop).map_err(io::Error::from)
    }

    /// As [`RawDma::unmap`], through vfio-core's ioctl helper.
    #[inline]
    pub fn unmap_rustix(&self, iova: u64, size: u64) -> io::Result<()> {
        let fd = self.fd.as_fd();
        let r = match self.ioas {
            None => {
                let mut u = vsys::vfio_iommu_type1_dma_unmap {
                    argsz: std::mem::size_of::<vsys::vfio_iommu_type1_dma_unmap>() as u32,
                    iova,
                    size,
                    ..Default::default()
                };
                // SAFETY: a VFIO container fd.
                ioctl::call::<req::IommuUnmapDma>(unsafe { ioctl::Fd::new_unchecked(fd) }, &mut u)
            }
            Some(ioas_id) => {
                let mut u = isys::iommu_ioas_unmap {
                    size: std::mem::size_of::<isys::iommu_ioas_unmap>() as u32,
                    ioas_id,
                    iova,
                    length: size,
                };
                // SAFETY: an iommufd fd.
                ioctl::call::<req::IoasUnmap>(unsafe { ioctl::Fd::new_unchecked(fd) }, &mut u)
            }
        };
        r.map(drop).map_err(io::Error::from)
    }

    /// `VFIO_IOMMU_UNMAP_DMA` or `IOMMU_IOAS_UNMAP`.
    #[inline]
    pub fn unmap(&self, iova: u64, size: u64) -> io::Result<()> {
        let fd = self.fd.as_raw_fd();
        match self.ioas {
            None => {
                let mut u = vsys::vfio_iommu_type1_dma_unmap {
                    argsz: std::mem::size_of::<vsys::vfio_iommu_type1_dma_unmap>() as u32,
                    flags: 0,
                    iova,
                    size,
                    ..Default::default()
                };
                // SAFETY: VFIO_IOMMU_UNMAP_DMA takes a vfio_iommu_type1_dma_unmap (no bitmap).
                unsafe { ioctl(fd, vsys::VFIO_IOMMU_UNMAP_DMA, &mut u)? };
            }
            Some(ioas_id) => {
                let mut u = isys::iommu_ioas_unmap {
                    size: std::mem::size_of::<isys::iommu_ioas_unmap>() as u32,
                    ioas_id,
                    iova,
                    length: size,
                };
                // SAFETY: IOMMU_IOAS_UNMAP takes an iommu_ioas_unmap; it holds no pointers.
                unsafe { ioctl(fd, isys::IOMMU_IOAS_UNMAP, &mut u)? };
            }
        }
        Ok(())
    }
}

/// A device opened through vfio-rs in one mode, with a raw handle on the same container.
pub struct Ours {
    // Field order is drop order: the device before its container.
    /// The device (its group or IOAS assignment keeps the container alive).
    pub pci: PciDevice,
    /// The vfio-rs container.
    pub container: Box<dyn Container>,
    /// Bare ioctls on the same kernel container / IOAS.
    pub raw: RawDma,
    /// For group mode: which kernel code serves the container.
    pub backend: Option<vfio_group::Backend>,
}

impl Ours {
    /// Opens the device at `addr` in `mode` in a fresh container. In group mode the container is
    /// opened here and adopted by vfio-rs (`Container::from_fd`), which is how the raw loop gets
    /// its fd; the map path is the same as after `Container::open`.
    pub fn open(mode: Mode, addr: &PciAddress) -> BenchResult<Self> {
        match mode {
            Mode::GROUP => {
                let fd = vfio_core::open_node(Path::new("/dev/vfio/vfio"))?;
                let c = vfio_group::Container::from_fd(fd.try_clone()?, vfio_core::Addressing::Iova)?;
                let pci = PciDevice::open_in(&c, addr)?;
                let backend = c.backend().ok();
                Ok(Ours {
                    pci,
                    container: Box::new(c),
                    raw: RawDma::type1(fd),
                    backend,
                })
            }
            Mode::CDEV => {
                let c = vfio_cdev::Container::new()?;
                let pci = PciDevice::open_in(&c, addr)?;
                let fd = c.ioas().iommufd().as_fd().try_clone_to_owned()?;
                let raw = RawDma::ioas(fd, c.ioas().id().get());
                Ok(Ours {
                    pci,
                    container: Box::new(c),
                    raw,
                    backend: None,
                })
            }
            _ => Err(format!("{mode} mode is not benchmarked").into()),
        }
    }

    /// The container as vfio-rs's trait object.
    pub fn c(&self) -> &dyn Container {
        self.container.as_ref()
    }
}

/// A close-on-exec duplicate of `fd`.
pub fn dup(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC only reads the fd number; a failure returns -1.
    let r = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

/// `open(path, O_RDWR | O_CLOEXEC)` with libc.
pub fn raw_open(path: &str) -> io::Result<OwnedFd> {
    let c = CString::new(path).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: a NUL-terminated path; the result is checked.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A huge-page pool size raised for a while and put back on drop.
pub struct HugePool {
    dir: PathBuf,
    old: Option<u64>,
}

fn read_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

impl HugePool {
    /// Free pages of `page_kb` KiB now.
    pub fn free(page_kb: u64) -> u64 {
        let dir = PathBuf::from(format!("/sys/kernel/mm/hugepages/hugepages-{page_kb}kB"));
        read_u64(&dir.join("free_hugepages")).unwrap_or(0)
    }

    /// Makes at least `count` pages of `page_kb` KiB free, raising the pool if `allowed`; the
    /// old size comes back on drop. Errors (as text) when the pool cannot reach that.
    pub fn reserve(page_kb: u64, count: u64, allowed: bool) -> Result<Self, String> {
        let dir = PathBuf::from(format!("/sys/kernel/mm/hugepages/hugepages-{page_kb}kB"));
        let free = read_u64(&dir.join("free_hugepages"))
            .ok_or_else(|| format!("this kernel has no {page_kb} KiB huge pages"))?;
        let mut pool = HugePool { dir, old: None };
        if free >= count {
            return Ok(pool);
        }
        if !allowed {
            return Err(format!(
                "{free} free {page_kb} KiB huge pages, {count} needed (run with --reserve-hugepages, as root)"
            ));
        }
        let nr_path = pool.dir.join("nr_hugepages");
        let nr = read_u64(&nr_path).unwrap_or(0);
        std::fs::write(&nr_path, (nr + count - free).to_string())
            .map_err(|e| format!("cannot raise {}: {e}", nr_path.display()))?;
        pool.old = Some(nr);
        let now = read_u64(&pool.dir.join("free_hugepages")).unwrap_or(0);
        if now < count {
            return Err(format!(
                "only {now} free {page_kb} KiB huge pages after raising the pool, {count} needed"
            ));
        }
        Ok(pool)
    }
}

impl Drop for HugePool {
    fn drop(&mut self) {
        if let Some(old) = self.old {
            let _ = std::fs::write(self.dir.join("nr_hugepages"), old.to_string());
        }
    }
}

/// Pins the calling thread (and its future children) to `cpu`.
pub fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    // SAFETY: an all-zero cpu_set_t is a valid empty set; CPU_SET and sched_setaffinity only
    // touch that local set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The number of CPUs online.
pub fn online_cpus() -> usize {
    // SAFETY: sysconf only reads a system value.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(n).unwrap_or(1).max(1)
}
