//! Peer-to-peer DMA with a PCI device's BARs: exporting a BAR range as a dma-buf, and mapping a
//! BAR for another device's DMA (see [`vfio_core::PeerMapping`]).

use vfio_core::{DmaAccess, DmaBuf, Error, PeerMapping, Result, SharedContainer};

use crate::{Bar, BarKind, PciDevice};

impl PciDevice {
    /// Exports `[offset, offset + len)` of BAR `bar` as a dma-buf
    /// ([`vfio_core::Device::export_dma_buf`]: `VFIO_DEVICE_FEATURE_DMA_BUF`, Linux 6.19). The
    /// BAR is decoded from config space first: InvalidArgument for a BAR number above 5, an
    /// unimplemented BAR (or the upper half of a 64-bit one) and an I/O-port BAR (the kernel has
    /// no peer-to-peer provider for it and would answer EINVAL). Otherwise the errors of
    /// `export_dma_buf` (InvalidArgument for a range outside the BAR or not page aligned;
    /// Unsupported on kernels without the feature).
    #[doc(alias = "VFIO_DEVICE_FEATURE_DMA_BUF")]
    pub fn export_bar(&self, bar: u32, offset: u64, len: u64) -> Result<DmaBuf> {
        const OP: &str = "export BAR as a dma-buf";
        if bar > 5 {
            return Err(Error::invalid(
                OP,
                self.address(),
                format!("BAR {bar} does not exist (0-5)"),
            ));
        }
        match self.bar_info(bar)? {
            None => Err(Error::invalid(
                OP,
                format!("{} BAR {bar}", self.address()),
                "the BAR is not implemented (or is the upper half of a 64-bit BAR)",
            )),
            Some(info) if info.kind == BarKind::Io => Err(Error::invalid(
                OP,
                format!("{} BAR {bar}", self.address()),
                format!("BAR {bar} is an I/O-port BAR: only memory BARs can be exported"),
            )),
            Some(_) => self.device().export_dma_buf(bar, &[(offset, len)]),
        }
    }

    /// Maps `[offset, offset + len)` of `bar`, one of this device's BARs (from
    /// [`PciDevice::bar`]), at `iova` in `container` for the DMA of the devices there
    /// (peer-to-peer): a [`PeerMapping`], by dma-buf where the container imports one (iommufd),
    /// by the BAR's mmap or the physical address elsewhere. Errors: InvalidArgument when `bar`
    /// belongs to another device or the range is not inside one mmapped area of it; those of
    /// [`PeerMapping::new`].
    pub fn map_peer_bar(
        &self,
        container: impl Into<SharedContainer>,
        bar: &Bar,
        offset: u64,
        len: u64,
        iova: u64,
        access: DmaAccess,
    ) -> Result<PeerMapping> {
        let target = || format!("{} BAR {}", self.address(), bar.index());
        let Some((area, at)) = bar.mapping_at(offset, len) else {
            return Err(Error::invalid(
                "peer-to-peer mapping",
                target(),
                format!("{len:#x} bytes at {offset:#x} are not inside one mmapped area of the BAR"),
            ));
        };
        if area.device().name() != self.device().name() {
            return Err(Error::invalid(
                "peer-to-peer mapping",
                target(),
                format!("the BAR belongs to {}, not to this device", area.device().name()),
            ));
        }
        PeerMapping::new(container, area, at, len, iova, access)
    }
}
