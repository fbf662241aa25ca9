//! A legacy VFIO container (`/dev/vfio/vfio`): an IOMMU context holding groups, with DMA mapped
//! through the type1 (or no-IOMMU) backend.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use vfio_core::{DmaAccess, Error, IovaRange, Mode, PciAddress, Result, Sysfs, ioctl};
use vfio_sys as sys;

use crate::group::Group;

/// The IOMMU backend a container is set to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IommuType {
    /// `VFIO_TYPE1_IOMMU`.
    Type1,
    /// `VFIO_TYPE1v2_IOMMU`: no partial unmaps, reserved-region aware.
    Type1v2,
    /// `VFIO_NOIOMMU_IOMMU`: no translation; DMA uses physical addresses.
    NoIommu,
}

impl IommuType {
    fn raw(self) -> u32 {
        match self {
            IommuType::Type1 => sys::VFIO_TYPE1_IOMMU,
            IommuType::Type1v2 => sys::VFIO_TYPE1v2_IOMMU,
            IommuType::NoIommu => sys::VFIO_NOIOMMU_IOMMU,
        }
    }
}

/// The container fd, shared by the container and every group that joined it.
#[derive(Debug)]
pub(crate) struct ContainerFd {
    fd: OwnedFd,
    path: PathBuf,
}

impl AsFd for ContainerFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[derive(Debug, Default)]
struct State {
    groups: Vec<(u32, Arc<Group>)>,
    iommu: Option<IommuType>,
}

/// An open `/dev/vfio/vfio` container.
#[derive(Debug)]
pub struct Container {
    fd: Arc<ContainerFd>,
    sysfs: Sysfs,
    noiommu: bool,
    state: Mutex<State>,
}

impl Container {
    /// Opens `/dev/vfio/vfio` and checks `VFIO_GET_API_VERSION`. With `noiommu`, the groups it
    /// takes are no-IOMMU groups and the backend is `VFIO_NOIOMMU_IOMMU`.
    pub fn open(noiommu: bool) -> Result<Self> {
        Self::open_in(Sysfs::default(), noiommu)
    }

    /// As [`Container::open`], with sysfs and /dev taken from `sysfs`.
    pub fn open_in(sysfs: Sysfs, noiommu: bool) -> Result<Self> {
        let path = sysfs.dev_dir().join("vfio/vfio");
        let fd = vfio_core::open_node(&path)?;
        let c = Container {
            fd: Arc::new(ContainerFd { fd, path }),
            sysfs,
            noiommu,
            state: Mutex::default(),
        };
        let version = c.int_ioctl("VFIO_GET_API_VERSION", sys::VFIO_GET_API_VERSION, 0)?;
        if version != sys::VFIO_API_VERSION as i32 {
            return Err(Error::unsupported(
                "VFIO API",
                c.target(),
                format!("version {version}, expected {}", sys::VFIO_API_VERSION),
            ));
        }
        Ok(c)
    }

    fn target(&self) -> String {
        self.fd.path.display().to_string()
    }

    fn int_ioctl(&self, op: &'static str, request: u32, arg: usize) -> Result<i32> {
        // SAFETY: callers pass container ioctls that take an integer or no argument.
        unsafe { ioctl::with_int(self.fd.as_fd(), request, arg) }.map_err(|e| Error::kernel(op, self.target(), e))
    }

    /// `VFIO_CHECK_EXTENSION`: whether the container supports an IOMMU type.
    pub fn check_extension(&self, iommu: IommuType) -> Result<bool> {
        Ok(self.int_ioctl("VFIO_CHECK_EXTENSION", sys::VFIO_CHECK_EXTENSION, iommu.raw() as usize)? > 0)
    }

    /// The IOMMU type the container was set to (after the first group joined).
    pub fn iommu_type(&self) -> Option<IommuType> {
        self.lock().iommu
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens group `id` (unless already held), checks it is viable and adds it to the container,
    /// setting the IOMMU type when it is the first group: type1v2 if supported, else type1, or
    /// no-IOMMU for a no-IOMMU container.
    pub fn add_group(&self, id: u32) -> Result<Arc<Group>> {
        let mut state = self.lock();
        if let Some((_, g)) = state.groups.iter().find(|(gid, _)| *gid == id) {
            return Ok(g.clone());
        }
        let mut group = Group::open(self.sysfs.dev_dir(), id, self.noiommu)?;
        let status = group.status()?;
        if !status.viable {
            return Err(Error::invalid(
                "add group to container",
                group.path().display(),
                "group is not viable: a device in it is bound to a non-VFIO driver",
            ));
        }
        group.set_container(&self.fd)?;
        if state.iommu.is_none() {
            let ty = if self.noiommu {
                IommuType::NoIommu
            } else if self.check_extension(IommuType::Type1v2)? {
                IommuType::Type1v2
            } else {
                IommuType::Type1
            };
            self.int_ioctl("VFIO_SET_IOMMU", sys::VFIO_SET_IOMMU, ty.raw() as usize)?;
            state.iommu = Some(ty);
        }
        let group = Arc::new(group);
        state.groups.push((id, group.clone()));
        Ok(group)
    }

    /// The IOVA page sizes the IOMMU supports (`VFIO_IOMMU_GET_INFO.iova_pgsizes`); needs a group
    /// in the container.
    pub fn page_sizes(&self) -> Result<u64> {
        crate::info::page_sizes(self.fd.as_fd(), &self.target())
    }

    fn dma_target(&self, iova: u64, size: u64) -> String {
        format!("{} iova {iova:#x} size {size:#x}", self.target())
    }
}

impl vfio_core::Container for Container {
    fn mode(&self) -> Mode {
        if self.noiommu { Mode::NoIommu } else { Mode::Group }
    }

    /// IOVA ranges from the `VFIO_IOMMU_GET_INFO` capability chain (all of 64-bit space when the
    /// kernel gives none).
    fn iova_ranges(&self) -> Result<Vec<IovaRange>> {
        crate::info::iova_ranges(self.fd.as_fd(), &self.target())
    }

    fn assign_device(&self, addr: &PciAddress) -> Result<vfio_core::Device> {
        self.sysfs.require_vfio_pci(addr)?;
        let id = self.sysfs.iommu_group(addr)?;
        let group = self.add_group(id)?;
        let fd = group.device_fd(&addr.to_string())?;
        Ok(vfio_core::Device::from_fd(fd, addr.to_string(), Some(group)))
    }

    /// `VFIO_IOMMU_MAP_DMA`. Errors: EEXIST for an overlap, EINVAL for unaligned or out-of-range
    /// arguments, ENOMEM past the locked-memory limit; Unsupported in a no-IOMMU container.
    unsafe fn map_dma_raw(&self, vaddr: *mut u8, size: u64, iova: u64, access: DmaAccess) -> Result<u64> {
        if self.noiommu {
            return Err(Error::unsupported(
                "DMA mapping",
                self.target(),
                "a no-IOMMU container has no IOVA space; use physical addresses",
            ));
        }
        let mut flags = 0;
        if access.contains(DmaAccess::READ) {
            flags |= sys::VFIO_DMA_MAP_FLAG_READ;
        }
        if access.contains(DmaAccess::WRITE) {
            flags |= sys::VFIO_DMA_MAP_FLAG_WRITE;
        }
        let mut map = sys::vfio_iommu_type1_dma_map {
            argsz: ioctl::argsz::<sys::vfio_iommu_type1_dma_map>(),
            flags,
            vaddr: vaddr as u64,
            iova,
            size,
        };
        // SAFETY: a vfio_iommu_type1_dma_map on a container fd; the caller guarantees the memory.
        unsafe { ioctl::with_mut(self.fd.as_fd(), sys::VFIO_IOMMU_MAP_DMA, &mut map) }
            .map_err(|e| Error::kernel("VFIO_IOMMU_MAP_DMA", self.dma_target(iova, size), e))?;
        Ok(iova)
    }

    /// `VFIO_IOMMU_UNMAP_DMA`. Errors: EINVAL for unaligned arguments or (type1v2) a range that
    /// splits a mapping.
    fn unmap_dma(&self, iova: u64, size: u64) -> Result<u64> {
        let mut unmap = sys::vfio_iommu_type1_dma_unmap {
            argsz: ioctl::argsz::<sys::vfio_iommu_type1_dma_unmap>(),
            iova,
            size,
            ..Default::default()
        };
        // SAFETY: a vfio_iommu_type1_dma_unmap without trailing data, on a container fd.
        unsafe { ioctl::with_mut(self.fd.as_fd(), sys::VFIO_IOMMU_UNMAP_DMA, &mut unmap) }
            .map_err(|e| Error::kernel("VFIO_IOMMU_UNMAP_DMA", self.dma_target(iova, size), e))?;
        Ok(unmap.size)
    }
}

/// The path of the container node under a /dev directory.
pub fn container_path(dev: &Path) -> PathBuf {
    dev.join("vfio/vfio")
}
