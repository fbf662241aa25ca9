//! What `IOMMU_GET_HW_INFO` ([`crate::Iommufd::hw_info`]) reports about the IOMMU behind a bound
//! device, before a HWPT is allocated for it.

use iommufd_sys as sys;

/// What `IOMMU_GET_HW_INFO` reports about the IOMMU behind a bound device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HwInfo {
    /// `enum iommu_hw_info_type` of `data` (0 when the driver reports none).
    pub data_type: u32,
    /// The driver-specific info (e.g. `struct iommu_hw_info_vtd`), as the kernel wrote it.
    pub data: Vec<u8>,
    /// `enum iommufd_hw_capabilities` bits.
    pub capabilities: u64,
    /// Width of PASIDs; 0 without PASID support.
    pub max_pasid_log2: u8,
}

impl HwInfo {
    /// The kernel's reply `h`, with `data` the buffer its `data_uptr` pointed at.
    pub(crate) fn from_reply(h: &sys::iommu_hw_info, mut data: Vec<u8>) -> Self {
        data.truncate((h.data_len as usize).min(data.len()));
        // SAFETY: both union members are a u32; the kernel wrote out_data_type.
        let data_type = unsafe { h.__bindgen_anon_1.out_data_type };
        HwInfo {
            data_type,
            data,
            capabilities: h.out_capabilities,
            max_pasid_log2: h.out_max_pasid_log2,
        }
    }

    /// Whether the IOMMU can track DMA writes (`IOMMU_HW_CAP_DIRTY_TRACKING`), i.e. a
    /// [`crate::HwptFlags::dirty_tracking`] HWPT can be allocated for this device.
    pub fn dirty_tracking(&self) -> bool {
        self.capabilities & u64::from(sys::IOMMU_HW_CAP_DIRTY_TRACKING) != 0
    }
}
