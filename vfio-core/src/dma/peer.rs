//! [`PeerMapping`]: a peer device's BAR made reachable by the devices of a container, for
//! peer-to-peer DMA, the same way in every mode.

use crate::{Device, DmaAccess, DmaBuf, Error, MappedRegion, Result, SharedContainer};

/// How a [`PeerMapping`] reaches the peer's BAR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerRoute {
    /// A dma-buf of the BAR range imported into the container (iommufd: cdev mode, the compat
    /// container, no-IOMMU cdev). The exporter revokes it when its BAR stops decoding (reset,
    /// memory decode off, low power) or its device closes; the mapping then reaches nothing.
    DmaBuf,
    /// The BAR's mmap mapped like memory (the type1 driver), or in a no-IOMMU group container
    /// the BAR's physical address. Never revoked: it holds until dropped.
    Mmap,
}

/// A live peer-to-peer mapping: `len` bytes of a peer device's mapped BAR at an IOVA of a
/// container, unmapped on drop. Leaking it is sound: on the dma-buf route it holds the dma-buf
/// (which the kernel revokes with the BAR; the peer device may close, and the mapping then
/// reaches nothing), on the mmap route a clone of the peer's [`Device`], so the BAR's addresses
/// stay that device's for as long as they are mapped.
#[must_use = "the mapping is removed when this guard is dropped"]
#[derive(Debug)]
pub struct PeerMapping {
    container: SharedContainer,
    iova: u64,
    len: u64,
    device_addr: u64,
    route: PeerRoute,
    _buf: Option<DmaBuf>,
    /// The peer, held open on the mmap route only: the dma-buf route must let it close (the
    /// kernel then revokes the import).
    _device: Option<Device>,
}

impl PeerMapping {
    /// Maps `[offset, offset + len)` of `bar` (a mapping of a peer device's BAR, e.g. from
    /// `PciDevice::bar`) at `iova` in `container`, whose devices may then DMA into it with
    /// `access`:
    ///
    /// - where the container imports dma-bufs ([`Container::map_dma_buf`](crate::Container::map_dma_buf):
    ///   iommufd), it exports the range (`VFIO_DEVICE_FEATURE_DMA_BUF`, Linux 6.19) and imports it
    ///   (`IOMMU_IOAS_MAP_FILE`);
    /// - elsewhere (the type1 driver, a no-IOMMU group, or a kernel without dma-buf export) it
    ///   maps the BAR itself ([`Container::map_mmio_raw`](crate::Container::map_mmio_raw):
    ///   `VFIO_IOMMU_MAP_DMA` of the mmap, or the physical address), keeping the peer device open.
    ///
    /// Errors: InvalidArgument for a range outside the mapping or not page aligned; Unsupported
    /// when neither route is open (both reasons given), e.g. iommufd on a kernel before 6.19;
    /// those of the map (EEXIST for an IOVA in use, ENODEV for a peer whose memory decode is
    /// off: a dma-buf is then born revoked).
    pub fn new(
        container: impl Into<SharedContainer>,
        bar: &MappedRegion,
        offset: u64,
        len: u64,
        iova: u64,
        access: DmaAccess,
    ) -> Result<Self> {
        let container = container.into();
        let device = bar.device().clone();
        let target = || {
            format!(
                "{} region {} offset {offset:#x} length {len:#x}",
                device.name(),
                bar.region()
            )
        };
        if len == 0 || offset.checked_add(len).is_none_or(|end| end > bar.len() as u64) {
            return Err(Error::invalid(
                "peer-to-peer mapping",
                target(),
                format!("the range is empty or outside the {:#x}-byte mapping", bar.len()),
            ));
        }
        let start = bar.region_offset() + offset;
        let via_dma_buf = device
            .export_dma_buf(bar.region(), &[(start, len)])
            .and_then(|buf| container.map_dma_buf(&buf, iova, access).map(|addr| (buf, addr)));
        let first = match via_dma_buf {
            Ok((buf, device_addr)) => {
                return Ok(PeerMapping {
                    container,
                    iova,
                    len,
                    device_addr,
                    route: PeerRoute::DmaBuf,
                    _buf: Some(buf),
                    _device: None,
                });
            }
            Err(e @ Error::Unsupported { .. }) => e,
            Err(e) => return Err(e),
        };
        // SAFETY: the guard holds a clone of the peer's Device until it unmaps (and leaks it if
        // leaked), so the device stays open, with its BAR where it is, while mapped.
        let mapped = unsafe { container.map_mmio_raw(bar, offset, len, iova, access) };
        match mapped {
            Ok(device_addr) => Ok(PeerMapping {
                container,
                iova,
                len,
                device_addr,
                route: PeerRoute::Mmap,
                _buf: None,
                _device: Some(device),
            }),
            Err(Error::Unsupported { reason, .. }) => Err(Error::unsupported(
                "peer-to-peer mapping",
                target(),
                format!(
                    "no route in a {} container: dma-buf: {first}; mmap: {reason}",
                    container.mode()
                ),
            )),
            Err(e) => Err(e),
        }
    }

    /// The IOVA of the first byte.
    pub fn iova(&self) -> u64 {
        self.iova
    }

    /// The length mapped.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the mapping is empty (never).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The address to program into the device: the IOVA, or without an IOMMU the BAR's
    /// physical address.
    pub fn device_addr(&self) -> u64 {
        self.device_addr
    }

    /// Which route the mapping took.
    pub fn route(&self) -> PeerRoute {
        self.route
    }

    /// The dma-buf, on the [`PeerRoute::DmaBuf`] route.
    pub fn dma_buf(&self) -> Option<&DmaBuf> {
        self._buf.as_ref()
    }
}

impl Drop for PeerMapping {
    fn drop(&mut self) {
        // A no-IOMMU group container maps nothing (ENOENT); an import the exporter revoked is
        // still unmapped.
        crate::dma::mapping::unmap_on_drop(&*self.container, self.iova, self.len);
    }
}
