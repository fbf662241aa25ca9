//! What `IOMMU_GET_HW_INFO` ([`crate::Iommufd::hw_info`]) reports about the IOMMU behind a bound
//! device, before a HWPT is allocated for it.

use iommufd_sys as sys;
use zerocopy::{FromBytes, Immutable, KnownLayout};

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

/// The driver-specific info of a [`HwInfo`] in a typed form: a struct of
/// `enum iommu_hw_info_type` (`IOMMU_HW_INFO_TYPE_*`).
pub trait HwInfoType: FromBytes + KnownLayout + Immutable + Sized {
    /// The `out_data_type` (or `in_data_type`) of `IOMMU_GET_HW_INFO`.
    const TYPE: u32;
}

impl HwInfoType for sys::iommu_hw_info_vtd {
    const TYPE: u32 = sys::IOMMU_HW_INFO_TYPE_INTEL_VTD;
}

impl HwInfoType for sys::iommu_hw_info_arm_smmuv3 {
    const TYPE: u32 = sys::IOMMU_HW_INFO_TYPE_ARM_SMMUV3;
}

impl HwInfoType for sys::iommu_hw_info_tegra241_cmdqv {
    const TYPE: u32 = sys::IOMMU_HW_INFO_TYPE_TEGRA241_CMDQV;
}

impl HwInfoType for sys::iommu_hw_info_amd {
    const TYPE: u32 = sys::IOMMU_HW_INFO_TYPE_AMD;
}

/// The IOMMU behind a device, by the type of its [`HwInfo`], with its driver data.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum HwInfoKind {
    /// `IOMMU_HW_INFO_TYPE_NONE`: the driver reports no data (virtio-iommu).
    None,
    /// `IOMMU_HW_INFO_TYPE_INTEL_VTD`: the VT-d capability and extended capability registers.
    IntelVtd(sys::iommu_hw_info_vtd),
    /// `IOMMU_HW_INFO_TYPE_ARM_SMMUV3`: the SMMUv3 ID registers.
    ArmSmmuV3(sys::iommu_hw_info_arm_smmuv3),
    /// `IOMMU_HW_INFO_TYPE_TEGRA241_CMDQV`: the Tegra241 CMDQV.
    Tegra241Cmdqv(sys::iommu_hw_info_tegra241_cmdqv),
    /// `IOMMU_HW_INFO_TYPE_AMD`: the AMD extended feature registers.
    Amd(sys::iommu_hw_info_amd),
    /// A type this library does not know (e.g. the iommufd selftest mock's `0xfeedbeef`): see
    /// [`HwInfo::data_type`] and [`HwInfo::get`].
    Other(u32),
}

impl HwInfo {
    /// The driver data as `T`, when the reported type is `T::TYPE`; a shorter reply (an older
    /// kernel's struct) is zero-extended, a longer one truncated.
    pub fn get<T: HwInfoType>(&self) -> Option<T> {
        if self.data_type != T::TYPE {
            return None;
        }
        let mut bytes = vec![0u8; size_of::<T>()];
        let n = self.data.len().min(bytes.len());
        bytes[..n].copy_from_slice(&self.data[..n]);
        T::read_from_bytes(&bytes).ok()
    }

    /// The IOMMU kind with its typed data.
    pub fn kind(&self) -> HwInfoKind {
        match self.data_type {
            sys::IOMMU_HW_INFO_TYPE_NONE => HwInfoKind::None,
            sys::IOMMU_HW_INFO_TYPE_INTEL_VTD => self
                .get()
                .map_or(HwInfoKind::Other(self.data_type), HwInfoKind::IntelVtd),
            sys::IOMMU_HW_INFO_TYPE_ARM_SMMUV3 => self
                .get()
                .map_or(HwInfoKind::Other(self.data_type), HwInfoKind::ArmSmmuV3),
            sys::IOMMU_HW_INFO_TYPE_TEGRA241_CMDQV => self
                .get()
                .map_or(HwInfoKind::Other(self.data_type), HwInfoKind::Tegra241Cmdqv),
            sys::IOMMU_HW_INFO_TYPE_AMD => self.get().map_or(HwInfoKind::Other(self.data_type), HwInfoKind::Amd),
            other => HwInfoKind::Other(other),
        }
    }

    /// Whether the device can use PASIDs (a non-zero PASID width).
    pub fn pasid(&self) -> bool {
        self.max_pasid_log2 != 0
    }

    /// `IOMMU_HW_CAP_PCI_PASID_EXEC`: the device's PASID capability has Execute Permission.
    pub fn pasid_exec(&self) -> bool {
        self.capabilities & u64::from(sys::IOMMU_HW_CAP_PCI_PASID_EXEC) != 0
    }

    /// `IOMMU_HW_CAP_PCI_PASID_PRIV`: the device's PASID capability has Privileged Mode.
    pub fn pasid_priv(&self) -> bool {
        self.capabilities & u64::from(sys::IOMMU_HW_CAP_PCI_PASID_PRIV) != 0
    }

    /// `IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED`: ATS cannot be used with this device (a VMM should
    /// not expose it to the guest).
    pub fn ats_not_supported(&self) -> bool {
        self.capabilities & u64::from(sys::IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED) != 0
    }
}

impl std::fmt::Display for HwInfo {
    /// One line: the IOMMU kind, its key registers, PASID width and capabilities.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind() {
            HwInfoKind::None => write!(f, "no driver data")?,
            HwInfoKind::IntelVtd(v) => write!(f, "Intel VT-d cap {:#x} ecap {:#x}", v.cap_reg, v.ecap_reg)?,
            HwInfoKind::ArmSmmuV3(s) => write!(f, "ARM SMMUv3 idr {:x?} iidr {:#x} aidr {:#x}", s.idr, s.iidr, s.aidr)?,
            HwInfoKind::Tegra241Cmdqv(t) => write!(
                f,
                "Tegra241 CMDQV version {} log2vcmdqs {} log2vsids {}",
                t.version, t.log2vcmdqs, t.log2vsids
            )?,
            HwInfoKind::Amd(a) => write!(f, "AMD efr {:#x} efr2 {:#x}", a.efr, a.efr2)?,
            HwInfoKind::Other(t) => write!(f, "type {t:#x} ({} bytes)", self.data.len())?,
        }
        write!(f, ", PASID width {}", self.max_pasid_log2)?;
        let caps = [
            (self.dirty_tracking(), "dirty-tracking"),
            (self.pasid_exec(), "pasid-exec"),
            (self.pasid_priv(), "pasid-priv"),
            (self.ats_not_supported(), "no-ats"),
        ];
        for (on, name) in caps {
            if on {
                write!(f, ", {name}")?;
            }
        }
        Ok(())
    }
}
