//! The mode-independent container: an IOMMU address space that devices are assigned to and DMA
//! is mapped in. `vfio-group` implements it with a `/dev/vfio/vfio` container, `vfio-cdev` with an
//! IOAS in an iommufd.
//!
//! Two ways in for DMA: [`Container::map_dma`], safe, takes a [`DmaBuffer`] and stays sound even
//! if the mapping outlives the buffer (each backend maps it so that the device can then reach
//! only the buffer's own pages, kept from reuse: see the table on the method and the
//! [`dma`](crate::dma) module); and [`Container::map_dma_raw`], `unsafe`, takes any memory by
//! address and leaves its lifetime to the caller.

use crate::{
    Addressing, Device, DeviceRef, DmaAccess, DmaBuf, DmaBuffer, Error, HotResetInfo, Interface, MappedRegion, Mode,
    Owner, PciAddress, Result, Uuid,
};

/// The most IOVA ranges vfio-rs accepts from the kernel (`IOMMU_IOAS_IOVA_RANGES`, the type1
/// IOVA-range capability). Real IOMMUs report a handful (the aperture minus reserved regions);
/// a count above this is reported as a malformed reply instead of sizing an allocation.
pub const MAX_IOVA_RANGES: usize = 4096;

/// An inclusive range of IOVAs the container accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IovaRange {
    /// First usable IOVA.
    pub start: u64,
    /// Last usable IOVA (inclusive).
    pub last: u64,
}

/// A DMA address space plus the devices attached to it.
pub trait Container: Send + Sync {
    /// Which mode this container belongs to: its interface and addressing.
    fn mode(&self) -> Mode;

    /// Which interface its devices are opened through (group or cdev).
    fn interface(&self) -> Interface {
        self.mode().interface()
    }

    /// Whether mappings return IOVAs or physical addresses (no IOMMU).
    fn addressing(&self) -> Addressing {
        self.mode().addressing()
    }

    /// The IOVA ranges DMA may be mapped in: group mode asks `VFIO_IOMMU_GET_INFO` (its IOVA
    /// range capability; all of 64-bit space when the kernel gives none, and without an IOMMU),
    /// cdev mode `IOMMU_IOAS_IOVA_RANGES`. Errors: the kernel's errno (e.g. EINVAL from a group
    /// container before any group joined it).
    fn iova_ranges(&self) -> Result<Vec<IovaRange>>;

    /// The IOMMU page sizes mappings can use, as a bitmap (bit n set: 2^n-byte pages); the lowest
    /// set bit is the alignment every mapping needs. Group mode: `VFIO_IOMMU_GET_INFO`
    /// (needs a group in the container); cdev mode: the IOAS's IOVA alignment.
    fn page_sizes(&self) -> Result<u64>;

    /// Assigns the PCI device to this container and returns it ready for use: in group mode its
    /// group joins the container and the device fd is fetched from the group; in cdev mode the
    /// device cdev is opened, bound to the iommufd and attached to the IOAS. Errors:
    /// InvalidArgument naming the driver when the device is not on a VFIO driver, or when the
    /// device is already assigned here; the kernel's errno otherwise, with its typed
    /// [`Error::cause`](crate::Error::cause) where the library finds one (EPERM: the group is
    /// not viable, naming the members that make it so, or no MSI isolation without
    /// `allow_unsafe_interrupts`; EBUSY, or EINVAL from a cdev bind: the group or device is
    /// open elsewhere, naming the process; EACCES: a node this user may not open; ENOENT: no
    /// such device). A kernel without the mode: Unsupported.
    fn assign_device(&self, addr: &PciAddress) -> Result<Device>;

    /// Assigns any VFIO device, named by [`DeviceRef`]: a PCI function (as
    /// [`Container::assign_device`]), a mediated device by UUID, or any device by its sysfs
    /// directory. Group mode finds its group from its `iommu_group` link and passes its name
    /// (a mediated device's lowercase UUID) to `VFIO_GROUP_GET_DEVICE_FD`; cdev mode opens its
    /// `vfio-dev/vfioN`. A mediated device sits in an emulated-IOMMU group, which joins only an
    /// IOVA container (type1, or iommufd's compatibility container), on machines without an
    /// IOMMU too; a no-IOMMU group container refuses it with InvalidArgument naming the group.
    /// Devices that are not PCI answer IRQ requests only after `VFIO_DEVICE_GET_INFO` (mtty,
    /// mdpy): call [`Device::info`] first ([`crate::Mdev::open_in`] does). Errors: those of
    /// [`Container::assign_device`]; Path (ENOENT) naming the device's directory when it does
    /// not exist. The provided implementation takes PCI devices only (Unsupported otherwise).
    fn assign(&self, device: &DeviceRef) -> Result<Device> {
        match device {
            DeviceRef::Pci(a) => self.assign_device(a),
            other => Err(crate::Error::unsupported(
                "assigning a device that is not PCI",
                other,
                "this container implementation takes PCI devices only",
            )),
        }
    }

    /// As [`Container::assign_device`], with options: the SR-IOV VF token to present (a VF
    /// whose PF is owned through vfio-pci, or that PF again while its VFs are open), and an
    /// object the device keeps alive until its fd closes. Group mode sends
    /// `"<addr> vf_token=<uuid>"` to `VFIO_GROUP_GET_DEVICE_FD` (Linux 5.7); cdev mode binds with
    /// `VFIO_DEVICE_BIND_FLAG_TOKEN` (Linux 6.17: Unsupported before, found by a probe). Errors:
    /// those of `assign_device`, and EACCES (Kernel) when the token is missing or wrong, the
    /// message naming the VF and its PF; EINVAL when a token is given for a function that is
    /// neither a VF of a vfio-pci PF nor a PF. The default implementation, for containers that
    /// know no options, calls `assign_device` when none are set and is Unsupported otherwise.
    fn assign_device_with(&self, addr: &PciAddress, opts: &AssignOptions) -> Result<Device> {
        if opts.vf_token.is_some() || opts.hold.is_some() {
            return Err(Error::unsupported(
                "assign options (VF token, hold)",
                addr,
                "this container implements only assign_device",
            ));
        }
        self.assign_device(addr)
    }

    /// Maps the whole `buffer` at `iova` with the given access and returns the address the
    /// device must use (the IOVA, or the physical address without an IOMMU): the safe building
    /// block of [`DmaMapping`](crate::DmaMapping). Remove it with [`Container::unmap_dma`].
    ///
    /// Sound on its own, whatever happens to `buffer` afterwards: if the mapping outlives it (a
    /// leaked guard, `mem::forget`, or no guard at all), the device still reaches only the
    /// buffer's own pages, which stay allocated (leaked) until the mapping goes, never memory
    /// that the process or the kernel hands out later. Each backend takes the path that
    /// guarantees this, and refuses what it cannot map so with Unsupported, saying why and what
    /// to use instead:
    ///
    /// | backend | how | refused |
    /// |---|---|---|
    /// | type1 driver (`vfio_iommu_type1`) | `VFIO_IOMMU_MAP_DMA`: pinned at map time (the container has an IOMMU domain once `VFIO_SET_IOMMU` attached its first group; the pins hold until the unmap, and the last IOMMU group out unmaps everything) | while a mediated (emulated-IOMMU) group is in the container: its pages are pinned lazily, by address |
    /// | iommufd IOAS (cdev) and iommufd's compat `/dev/vfio/vfio` | `IOMMU_IOAS_MAP_FILE` of the buffer's memfd (Linux >= 6.13): the IOAS holds the file, so whether the pages are pinned now or when a device attaches later, they are the file's | buffers without a memfd ([`Backing::Anonymous`](crate::Backing)), kernels without `MAP_FILE`: an IOAS mapping by address is pinned only while a device or domain is attached, and is unpinned (then pinned again, by address, at the next attach) whenever the last one detaches |
    /// | no-IOMMU group | locked, with a reference held on every page (vfio-group's pin table), physical address from `/proc/self/pagemap` | memory not physically contiguous |
    /// | no-IOMMU cdev | `IOMMU_IOAS_MAP_FILE` then `IOMMU_IOAS_NOIOMMU_GET_PA` | as iommufd; and until a no-IOMMU device is attached (no physical address to give) |
    ///
    /// Errors: those of [`Container::map_dma_raw`] (EEXIST, EINVAL, ENOMEM...), and the
    /// refusals above.
    fn map_dma(&self, buffer: &DmaBuffer, iova: u64, access: DmaAccess) -> Result<u64>;

    /// Maps `size` bytes of process memory at `vaddr` to `iova`; returns the address the device
    /// must use (the IOVA, or the physical address without an IOMMU).
    ///
    /// # Safety
    /// `[vaddr, vaddr + size)` must stay allocated and must not be reached through Rust
    /// references while the device may access it, until [`Container::unmap_dma`] removes the
    /// range. The device may write it at any time while mapped with [`DmaAccess::WRITE`].
    /// Prefer the safe [`DmaMapping`](crate::DmaMapping), which guarantees all of this.
    ///
    /// Group mode: `VFIO_IOMMU_MAP_DMA`; cdev mode: `IOMMU_IOAS_MAP` at a fixed IOVA; without
    /// an IOMMU the memory is pinned and its physical address returned. Errors: EEXIST (Kernel)
    /// when the range overlaps a mapping; EINVAL for zero, unaligned or disallowed ranges;
    /// EOVERFLOW when `iova + size` wraps; ENOMEM past the locked-memory limit (RLIMIT_MEMLOCK).
    unsafe fn map_dma_raw(&self, vaddr: *mut u8, size: u64, iova: u64, access: DmaAccess) -> Result<u64>;

    /// Removes the mappings in `[iova, iova + size)`; returns how many bytes were unmapped.
    /// Group mode: `VFIO_IOMMU_UNMAP_DMA`; cdev mode: `IOMMU_IOAS_UNMAP`. Errors, alike in every
    /// mode: ENOENT (Kernel) when nothing was mapped in the range (type1 itself answers success
    /// with 0 bytes; that is reported as ENOENT too, as iommufd does); EINVAL or ENOENT for a
    /// range that would split a mapping the backend cannot split (see each mode's table);
    /// EOVERFLOW when `iova + size` wraps.
    fn unmap_dma(&self, iova: u64, size: u64) -> Result<u64>;

    /// PCI hot reset (secondary bus or slot reset) of `device`, which also resets every device
    /// [`Device::hot_reset_info`] lists. The kernel demands proof that the caller owns all of them:
    /// in group mode the fds of their groups, which must all be in this container; in cdev mode
    /// every one must be bound to this container's iommufd. Both are checked first, and a device
    /// this container does not own is named in an InvalidArgument error before any reset is tried.
    /// Returns what was reset. Errors: ENODEV when no bus or slot reset reaches the device (a
    /// root-bus device); the kernel's errno otherwise.
    fn hot_reset(&self, device: &Device) -> Result<HotResetInfo>;

    /// Imports a dma-buf of a peer device's BAR ([`Device::export_dma_buf`]) at `iova`, whole,
    /// so that devices of this container can DMA into that BAR (peer-to-peer); returns the
    /// address the device must use (the IOVA, or without an IOMMU the BAR's physical address).
    /// Remove it with [`Container::unmap_dma`]. [`PeerMapping`](crate::dma::PeerMapping) picks
    /// this route or [`Container::map_mmio_raw`], whichever the container offers.
    ///
    /// Safe: the container holds the dma-buf (the kernel's reference), not an address, and the
    /// exporter revokes it when its BAR stops decoding or its device closes (see [`DmaBuf`]):
    /// the mapping then reaches nothing, and stays so (unmap it and import again).
    ///
    /// | backend | how |
    /// |---|---|
    /// | iommufd IOAS (cdev), iommufd's compat `/dev/vfio/vfio` | `IOMMU_IOAS_MAP_FILE` of the dma-buf (Linux >= 6.19) |
    /// | no-IOMMU cdev | the same, then `IOMMU_IOAS_NOIOMMU_GET_PA` (Linux >= 7.3) |
    /// | type1 driver, no-IOMMU group | Unsupported: map the BAR's mmap ([`Container::map_mmio_raw`]) |
    ///
    /// Errors: Unsupported where the backend cannot import one, and for a dma-buf of several
    /// ranges (iommufd imports single-range vfio-pci dma-bufs: EOPNOTSUPP); ENODEV (Kernel)
    /// while it is revoked or after its exporter closed; EEXIST for an IOVA in use; EINVAL for
    /// an unaligned IOVA.
    #[doc(alias = "IOMMU_IOAS_MAP_FILE")]
    fn map_dma_buf(&self, buf: &DmaBuf, iova: u64, access: DmaAccess) -> Result<u64> {
        let _ = (iova, access);
        Err(Error::unsupported(
            "dma-buf import",
            buf.name(),
            format!("this container ({}) cannot import dma-bufs", self.mode()),
        ))
    }

    /// Maps `len` bytes at `offset` of an mmapped device region (a peer's BAR) at `iova`, for
    /// peer-to-peer DMA where the container cannot import a dma-buf; returns the address the
    /// device must use (the IOVA, or without an IOMMU the BAR's physical address). Remove it
    /// with [`Container::unmap_dma`].
    ///
    /// | backend | how |
    /// |---|---|
    /// | type1 driver | `VFIO_IOMMU_MAP_DMA` of the mmap: the kernel resolves the BAR's pages (PFNMAP) at map time and maps them until the unmap, through resets, memory-decode changes and `munmap` of the region (no revocation) |
    /// | no-IOMMU group | nothing is mapped: the BAR's physical address from sysfs `resource`, plus `offset` |
    /// | iommufd (cdev, compat) | Unsupported without asking the kernel: iommufd pins user memory, and a BAR mmap has no pages to pin (EFAULT): import a dma-buf ([`Container::map_dma_buf`]) |
    ///
    /// # Safety
    /// The mapping reaches the BAR's physical address for as long as it exists, whatever
    /// happens to the region's device: the caller keeps that device open (a clone of its
    /// [`Device`]) until the range is unmapped, so that the address stays that BAR's.
    /// [`PeerMapping`](crate::dma::PeerMapping) is the safe form.
    ///
    /// Errors: InvalidArgument for a range outside the mapping or not page aligned; those of
    /// [`Container::map_dma_raw`]; Unsupported as above.
    #[doc(alias = "VFIO_IOMMU_MAP_DMA")]
    unsafe fn map_mmio_raw(
        &self,
        region: &MappedRegion,
        offset: u64,
        len: u64,
        iova: u64,
        access: DmaAccess,
    ) -> Result<u64> {
        let _ = (offset, len, iova, access);
        Err(Error::unsupported(
            "BAR mapping for peer-to-peer DMA",
            region.device().name(),
            format!("this container ({}) cannot map device memory", self.mode()),
        ))
    }

    /// How many more DMA mappings the container accepts, where the kernel caps them: the type1
    /// driver's `VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL` capability of `VFIO_IOMMU_GET_INFO` (Linux >=
    /// 5.10; `vfio_iommu_type1.dma_entry_limit`, 65,535 by default, less the mappings made).
    /// `None` where nothing caps them (iommufd, its compat container, no-IOMMU containers) or
    /// the kernel does not say. [`DmaPool`](crate::DmaPool) reads it to keep within the limit.
    /// Errors: those of the query (EINVAL before a group joined a type1 container).
    #[doc(alias = "VFIO_IOMMU_GET_INFO", alias = "VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL")]
    fn dma_avail(&self) -> Result<Option<u32>> {
        Ok(None)
    }
}

/// Options of [`Container::assign_device_with`]; `AssignOptions::default()` is what
/// [`Container::assign_device`] does.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct AssignOptions {
    /// The SR-IOV VF token to present: the UUID the PF's owner set with
    /// [`Device::set_vf_token`]. Needed to open a VF whose PF is on vfio-pci, and to open the PF
    /// again while any of its VFs is open.
    pub vf_token: Option<Uuid>,
    /// Kept alive until the device fd closes, and released after it (e.g. the
    /// [`SriovVfs`](crate::SriovVfs) owning the VFs, which must outlive every VF fd).
    pub hold: Option<Owner>,
}

impl AssignOptions {
    /// No options: as [`Container::assign_device`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Presents `token` as the VF token.
    pub fn vf_token(mut self, token: Uuid) -> Self {
        self.vf_token = Some(token);
        self
    }

    /// Keeps `owner` alive until the device fd closes.
    pub fn hold(mut self, owner: Owner) -> Self {
        self.hold = Some(owner);
        self
    }
}

impl std::fmt::Debug for AssignOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AssignOptions")
            .field("vf_token", &self.vf_token)
            .field("hold", &self.hold.is_some())
            .finish()
    }
}
