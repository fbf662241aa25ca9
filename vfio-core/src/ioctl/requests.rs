//! Every ioctl of `<linux/vfio.h>` and `<linux/iommufd.h>` that vfio-rs issues, one declaration
//! each: the type is named after the uapi macro without its `VFIO_`/`IOMMU_` prefix.
//!
//! Each line says which fd the request is for, what it takes, and how much the caller must vouch
//! for (see [`request!`](crate::request!)). The sPAPR (POWER) requests are not declared: vfio-rs
//! supports type1 and iommufd only.

#![allow(missing_docs)] // each declaration is documented by its uapi name

use iommufd_sys::*;
use vfio_sys::*;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The fixed part of `struct vfio_pci_hot_reset_info` (the generated struct holds a union in its
/// trailing array, so it cannot be built from bytes both ways).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct HotResetInfoHeader {
    /// `argsz`.
    pub argsz: u32,
    /// `flags` (`VFIO_PCI_HOT_RESET_FLAG_DEV_ID`, `..._DEV_ID_OWNED`).
    pub flags: u32,
    /// `count`: entries returned, or needed when the kernel answers ENOSPC.
    pub count: u32,
}
static_assertions::const_assert_eq!(size_of::<HotResetInfoHeader>(), size_of::<vfio_pci_hot_reset_info>());

/// `struct vfio_device_feature` with the `MIG_DEVICE_STATE` payload in place of its flexible
/// array: a fixed-size argument, so a migration state change costs no allocation (each is a
/// GET and a SET per arc).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct FeatureMigState {
    /// `argsz`.
    pub argsz: u32,
    /// `flags`: `VFIO_DEVICE_FEATURE_GET` or `_SET` with `VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE`.
    pub flags: u32,
    /// The payload.
    pub state: vfio_device_feature_mig_state,
}
static_assertions::const_assert_eq!(size_of::<FeatureMigState>(), 16);

crate::request! {
    // === containers (`/dev/vfio/vfio`) ===
    /// `VFIO_GET_API_VERSION`.
    pub GetApiVersion = VFIO_GET_API_VERSION on Container, int;
    /// `VFIO_CHECK_EXTENSION`.
    pub CheckExtension = VFIO_CHECK_EXTENSION on Container, int;
    /// `VFIO_SET_IOMMU`.
    pub SetIommu = VFIO_SET_IOMMU on Container, int;
    /// `VFIO_IOMMU_GET_INFO`: type1 info with its capability chain.
    pub IommuGetInfo = VFIO_IOMMU_GET_INFO on Container, vfio_iommu_type1_info, size argsz, argsz;
    /// `VFIO_IOMMU_MAP_DMA`: makes process memory reachable by devices.
    pub IommuMapDma = VFIO_IOMMU_MAP_DMA on Container, vfio_iommu_type1_dma_map, size argsz, unchecked;
    /// `VFIO_IOMMU_UNMAP_DMA` without trailing data. (With `GET_DIRTY_BITMAP` the kernel reads a
    /// bitmap description past the header, but only when argsz covers it, and argsz is the
    /// header's size here: see vfio-group's dirty-bitmap composite for that form.)
    pub IommuUnmapDma = VFIO_IOMMU_UNMAP_DMA on Container, vfio_iommu_type1_dma_unmap, size argsz, plain;
    /// `VFIO_IOMMU_DIRTY_PAGES`: its trailing data holds a bitmap pointer.
    pub IommuDirtyPages = VFIO_IOMMU_DIRTY_PAGES on Container, vfio_iommu_type1_dirty_bitmap, size argsz, unchecked;

    // === groups (`/dev/vfio/<group>`) ===
    /// `VFIO_GROUP_GET_STATUS`.
    pub GroupGetStatus = VFIO_GROUP_GET_STATUS on Group, vfio_group_status, size argsz, plain;
    /// `VFIO_GROUP_SET_CONTAINER`: takes a pointer to the container's fd number.
    pub GroupSetContainer = VFIO_GROUP_SET_CONTAINER on Group, i32, size none, plain;
    /// `VFIO_GROUP_UNSET_CONTAINER`.
    pub GroupUnsetContainer = VFIO_GROUP_UNSET_CONTAINER on Group, int;
    /// `VFIO_GROUP_GET_DEVICE_FD`: takes a NUL-terminated device name.
    pub GroupGetDeviceFd = VFIO_GROUP_GET_DEVICE_FD on Group, ptr;

    // === devices ===
    /// `VFIO_DEVICE_GET_INFO`, with its capability chain.
    pub DeviceGetInfo = VFIO_DEVICE_GET_INFO on Device, vfio_device_info, size argsz, argsz;
    /// `VFIO_DEVICE_GET_REGION_INFO`, with its capability chain.
    pub DeviceGetRegionInfo = VFIO_DEVICE_GET_REGION_INFO on Device, vfio_region_info, size argsz, argsz;
    /// `VFIO_DEVICE_GET_IRQ_INFO`.
    pub DeviceGetIrqInfo = VFIO_DEVICE_GET_IRQ_INFO on Device, vfio_irq_info, size argsz, plain;
    /// `VFIO_DEVICE_SET_IRQS`: the kernel checks the data against argsz before reading it.
    pub DeviceSetIrqs = VFIO_DEVICE_SET_IRQS on Device, vfio_irq_set, size argsz, argsz;
    /// `VFIO_DEVICE_RESET`.
    pub DeviceReset = VFIO_DEVICE_RESET on Device, int;
    /// `VFIO_DEVICE_GET_PCI_HOT_RESET_INFO`: ENOSPC with the count needed when argsz is short.
    pub DeviceGetPciHotResetInfo = VFIO_DEVICE_GET_PCI_HOT_RESET_INFO on Device, HotResetInfoHeader, size argsz, argsz;
    /// `VFIO_DEVICE_PCI_HOT_RESET`: the kernel reads `count` group fds, whatever argsz says.
    pub DevicePciHotReset = VFIO_DEVICE_PCI_HOT_RESET on Device, vfio_pci_hot_reset, size argsz, unchecked;
    /// `VFIO_DEVICE_QUERY_GFX_PLANE`.
    pub DeviceQueryGfxPlane = VFIO_DEVICE_QUERY_GFX_PLANE on Device, vfio_device_gfx_plane_info, size argsz, plain;
    /// `VFIO_DEVICE_GET_GFX_DMABUF`: takes a pointer to the plane's dmabuf id; returns an fd.
    pub DeviceGetGfxDmabuf = VFIO_DEVICE_GET_GFX_DMABUF on Device, u32, size none, plain;
    /// `VFIO_DEVICE_IOEVENTFD`.
    pub DeviceIoeventfd = VFIO_DEVICE_IOEVENTFD on Device, vfio_device_ioeventfd, size argsz, plain;
    /// `VFIO_DEVICE_FEATURE`: some payloads hold pointers (DMA logging reports); the kernel says
    /// "no such feature" with ENOTTY (before 5.17), EOPNOTSUPP or EINVAL.
    pub DeviceFeature = VFIO_DEVICE_FEATURE on Device, vfio_device_feature, size argsz, unchecked,
        unsupported [NOTTY, OPNOTSUPP, INVAL];
    /// `VFIO_DEVICE_FEATURE` with the `MIG_DEVICE_STATE` payload (two integers, no pointer;
    /// the handler reads and writes `argsz` = 16 bytes).
    pub DeviceFeatureMigState = VFIO_DEVICE_FEATURE on Device, FeatureMigState, size argsz, plain;
    /// `VFIO_DEVICE_BIND_IOMMUFD`: `token_uuid_ptr` points at a VF token.
    pub DeviceBindIommufd = VFIO_DEVICE_BIND_IOMMUFD on Device, vfio_device_bind_iommufd, size argsz, unchecked;
    /// `VFIO_DEVICE_ATTACH_IOMMUFD_PT`.
    pub DeviceAttachIommufdPt = VFIO_DEVICE_ATTACH_IOMMUFD_PT on Device, vfio_device_attach_iommufd_pt, size argsz, plain;
    /// `VFIO_DEVICE_DETACH_IOMMUFD_PT`.
    pub DeviceDetachIommufdPt = VFIO_DEVICE_DETACH_IOMMUFD_PT on Device, vfio_device_detach_iommufd_pt, size argsz, plain;

    // === migration data fds ===
    /// `VFIO_MIG_GET_PRECOPY_INFO`.
    pub MigGetPrecopyInfo = VFIO_MIG_GET_PRECOPY_INFO on MigrationData, vfio_precopy_info, size argsz, plain;

    // === iommufd (`/dev/iommu`) ===
    /// `IOMMU_DESTROY`.
    pub Destroy = IOMMU_DESTROY on Iommufd, iommu_destroy, size size, plain;
    /// `IOMMU_IOAS_ALLOC`.
    pub IoasAlloc = IOMMU_IOAS_ALLOC on Iommufd, iommu_ioas_alloc, size size, plain;
    /// `IOMMU_IOAS_IOVA_RANGES`: `allowed_iovas` points at an array of `num_iovas` ranges.
    pub IoasIovaRanges = IOMMU_IOAS_IOVA_RANGES on Iommufd, iommu_ioas_iova_ranges, size size, unchecked;
    /// `IOMMU_IOAS_ALLOW_IOVAS`: `allowed_iovas` points at an array of `num_iovas` ranges.
    pub IoasAllowIovas = IOMMU_IOAS_ALLOW_IOVAS on Iommufd, iommu_ioas_allow_iovas, size size, unchecked;
    /// `IOMMU_IOAS_MAP`: makes process memory reachable by devices.
    pub IoasMap = IOMMU_IOAS_MAP on Iommufd, iommu_ioas_map, size size, unchecked;
    /// `IOMMU_IOAS_MAP_FILE`: makes a file's pages reachable by devices.
    pub IoasMapFile = IOMMU_IOAS_MAP_FILE on Iommufd, iommu_ioas_map_file, size size, unchecked;
    /// `IOMMU_IOAS_COPY`: makes another mapping's memory reachable at a second IOVA.
    pub IoasCopy = IOMMU_IOAS_COPY on Iommufd, iommu_ioas_copy, size size, unchecked;
    /// `IOMMU_IOAS_UNMAP`.
    pub IoasUnmap = IOMMU_IOAS_UNMAP on Iommufd, iommu_ioas_unmap, size size, plain;
    /// `IOMMU_IOAS_NOIOMMU_GET_PA` (7.3).
    pub IoasNoiommuGetPa = IOMMU_IOAS_NOIOMMU_GET_PA on Iommufd, iommu_ioas_noiommu_get_pa, size size, plain;
    /// `IOMMU_IOAS_CHANGE_PROCESS` (6.13).
    pub IoasChangeProcess = IOMMU_IOAS_CHANGE_PROCESS on Iommufd, iommu_ioas_change_process, size size, plain;
    /// `IOMMU_OPTION`.
    pub IommuOption = IOMMU_OPTION on Iommufd, iommu_option, size size, plain;
    /// `IOMMU_VFIO_IOAS`.
    pub VfioIoas = IOMMU_VFIO_IOAS on Iommufd, iommu_vfio_ioas, size size, plain;
    /// `IOMMU_HWPT_ALLOC`: `data_uptr` points at `data_len` bytes of driver data.
    pub HwptAlloc = IOMMU_HWPT_ALLOC on Iommufd, iommu_hwpt_alloc, size size, unchecked;
    /// `IOMMU_GET_HW_INFO`: `data_uptr` points at `data_len` bytes the kernel fills.
    pub GetHwInfo = IOMMU_GET_HW_INFO on Iommufd, iommu_hw_info, size size, unchecked;
    /// `IOMMU_HWPT_SET_DIRTY_TRACKING`.
    pub HwptSetDirtyTracking = IOMMU_HWPT_SET_DIRTY_TRACKING on Iommufd, iommu_hwpt_set_dirty_tracking, size size, plain;
    /// `IOMMU_HWPT_GET_DIRTY_BITMAP`: `data` points at the bitmap the kernel fills.
    pub HwptGetDirtyBitmap = IOMMU_HWPT_GET_DIRTY_BITMAP on Iommufd, iommu_hwpt_get_dirty_bitmap, size size, unchecked;
    /// `IOMMU_HWPT_INVALIDATE`: `data_uptr` points at `entry_num` entries of `entry_len` bytes.
    pub HwptInvalidate = IOMMU_HWPT_INVALIDATE on Iommufd, iommu_hwpt_invalidate, size size, unchecked;
    /// `IOMMU_FAULT_QUEUE_ALLOC`: returns an fd in `out_fault_fd`.
    pub FaultQueueAlloc = IOMMU_FAULT_QUEUE_ALLOC on Iommufd, iommu_fault_alloc, size size, plain;
    /// `IOMMU_VIOMMU_ALLOC`: `data_uptr` points at `data_len` bytes of driver data.
    pub ViommuAlloc = IOMMU_VIOMMU_ALLOC on Iommufd, iommu_viommu_alloc, size size, unchecked;
    /// `IOMMU_VDEVICE_ALLOC`.
    pub VdeviceAlloc = IOMMU_VDEVICE_ALLOC on Iommufd, iommu_vdevice_alloc, size size, plain;
    /// `IOMMU_VEVENTQ_ALLOC`: returns an fd in `out_veventq_fd`.
    pub VeventqAlloc = IOMMU_VEVENTQ_ALLOC on Iommufd, iommu_veventq_alloc, size size, plain;
    /// `IOMMU_HW_QUEUE_ALLOC` (6.17): the hardware reads the queue at a guest IOVA.
    pub HwQueueAlloc = IOMMU_HW_QUEUE_ALLOC on Iommufd, iommu_hw_queue_alloc, size size, unchecked;
}
