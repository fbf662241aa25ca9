//! The iommufd selftest mock's test ops for the object model of issue #16 (nested HWPTs, fault
//! queues, vIOMMU, vDEVICE, vEVENTQ, HW queues, PASID) and its driver data types, laid out from
//! the 7.3 kernel's `drivers/iommu/iommufd/iommufd_test.h`. Not a stable uapi: it stays here.

use vfio_cdev::{DeviceId, HwptId, Iommufd, ObjectId, PtId};
use vfio_core::Result;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::iommufd_mock::TestCmd;

/// `IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE`.
pub const OP_MOCK_DOMAIN_REPLACE: u32 = 10;
/// `IOMMU_TEST_OP_MD_CHECK_IOTLB`.
pub const OP_MD_CHECK_IOTLB: u32 = 14;
/// `IOMMU_TEST_OP_TRIGGER_IOPF`.
pub const OP_TRIGGER_IOPF: u32 = 15;
/// `IOMMU_TEST_OP_DEV_CHECK_CACHE`.
pub const OP_DEV_CHECK_CACHE: u32 = 16;
/// `IOMMU_TEST_OP_TRIGGER_VEVENT`.
pub const OP_TRIGGER_VEVENT: u32 = 17;
/// `IOMMU_TEST_OP_PASID_ATTACH`.
pub const OP_PASID_ATTACH: u32 = 18;
/// `IOMMU_TEST_OP_PASID_REPLACE`.
pub const OP_PASID_REPLACE: u32 = 19;
/// `IOMMU_TEST_OP_PASID_DETACH`.
pub const OP_PASID_DETACH: u32 = 20;
/// `IOMMU_TEST_OP_PASID_CHECK_HWPT`.
pub const OP_PASID_CHECK_HWPT: u32 = 21;

/// `MOCK_FLAGS_DEVICE_NO_DIRTY`.
pub const MOCK_FLAGS_DEVICE_NO_DIRTY: u32 = 1;
/// `MOCK_FLAGS_DEVICE_PASID`: the mock device has a 20-bit PASID space.
pub const MOCK_FLAGS_DEVICE_PASID: u32 = 4;
/// `MOCK_PASID_WIDTH`.
pub const MOCK_PASID_WIDTH: u8 = 20;
/// `IOMMU_TEST_PASID_RESERVED`: the second attach of this PASID fails (ENOMEM), for rollback.
pub const IOMMU_TEST_PASID_RESERVED: u32 = 1024;
/// `MOCK_NESTED_DOMAIN_IOTLB_NUM`.
pub const MOCK_IOTLB_NUM: u32 = 4;
/// `MOCK_DEV_CACHE_NUM`.
pub const MOCK_DEV_CACHE_NUM: u32 = 4;
/// `IOMMU_TEST_IOTLB_DEFAULT`.
pub const IOTLB_DEFAULT: u32 = 0xbadbeef;
/// `IOMMU_TEST_DEV_CACHE_DEFAULT`.
pub const DEV_CACHE_DEFAULT: u32 = 0xbaddad;
/// `IOMMU_TEST_INVALIDATE_FLAG_ALL`.
pub const INVALIDATE_FLAG_ALL: u32 = 1;
/// `IOMMU_HWPT_DATA_SELFTEST`.
pub const HWPT_DATA_SELFTEST: u32 = 0xdead;
/// `IOMMU_HWPT_INVALIDATE_DATA_SELFTEST` (nested HWPT) and `IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST`.
pub const INVALIDATE_DATA_SELFTEST: u32 = 0xdeadbeef;
/// `IOMMU_HWPT_INVALIDATE_DATA_SELFTEST_INVALID`.
pub const INVALIDATE_DATA_SELFTEST_INVALID: u32 = 0xdadbeef;
/// `IOMMU_VIOMMU_TYPE_SELFTEST`.
pub const VIOMMU_TYPE_SELFTEST: u32 = 0xdeadbeef;
/// `IOMMU_VEVENTQ_TYPE_SELFTEST`.
pub const VEVENTQ_TYPE_SELFTEST: u32 = 0xbeefbeef;
/// `IOMMU_HW_QUEUE_TYPE_SELFTEST`.
pub const HW_QUEUE_TYPE_SELFTEST: u32 = 0xdeadbeef;
/// `IOMMU_TEST_HW_QUEUE_MAX`.
pub const HW_QUEUE_MAX: u32 = 2;
/// `IOMMU_HW_INFO_TYPE_SELFTEST`.
pub const HW_INFO_TYPE_SELFTEST: u32 = 0xfeedbeef;
/// `IOMMU_HW_INFO_SELFTEST_REGVAL`.
pub const HW_INFO_SELFTEST_REGVAL: u32 = 0xdeadbeef;

/// `struct iommu_hwpt_selftest`: the mock's HWPT data (nested: the IOTLB start value).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct HwptSelftest {
    /// Initial value of every mock IOTLB slot.
    pub iotlb: u32,
    /// 0 default, 1 huge pages (paging domains).
    pub pagetable_type: u32,
}
// SAFETY: struct iommu_hwpt_selftest of IOMMU_HWPT_DATA_SELFTEST; no pointer.
unsafe impl vfio_cdev::HwptData for HwptSelftest {
    const DATA_TYPE: u32 = HWPT_DATA_SELFTEST;
}

/// `struct iommu_hwpt_invalidate_selftest`: one mock IOTLB invalidation.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct HwptInvalidateSelftest {
    /// `IOMMU_TEST_INVALIDATE_FLAG_ALL` or 0.
    pub flags: u32,
    /// The IOTLB slot (0..4).
    pub iotlb_id: u32,
}
// SAFETY: struct iommu_hwpt_invalidate_selftest of IOMMU_HWPT_INVALIDATE_DATA_SELFTEST.
unsafe impl vfio_cdev::InvalidationEntry for HwptInvalidateSelftest {
    const DATA_TYPE: u32 = INVALIDATE_DATA_SELFTEST;
}

/// `struct iommu_viommu_selftest`: the mock vIOMMU's data (in/out loopback, an mmap window).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct ViommuSelftest {
    /// Echoed into `out_data`.
    pub in_data: u32,
    /// `in_data`, written back.
    pub out_data: u32,
    /// An mmap offset of the iommufd.
    pub out_mmap_offset: u64,
    /// Its length.
    pub out_mmap_length: u64,
}
// SAFETY: struct iommu_viommu_selftest of IOMMU_VIOMMU_TYPE_SELFTEST; no pointer; any bytes valid.
unsafe impl vfio_cdev::ViommuData for ViommuSelftest {
    const TYPE: u32 = VIOMMU_TYPE_SELFTEST;
}

/// `struct iommu_viommu_invalidate_selftest`: one mock device-cache invalidation.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct ViommuInvalidateSelftest {
    /// `IOMMU_TEST_INVALIDATE_FLAG_ALL` or 0.
    pub flags: u32,
    /// The vDEVICE's virtual id.
    pub vdev_id: u32,
    /// The cache slot (0..4).
    pub cache_id: u32,
}
// SAFETY: struct iommu_viommu_invalidate_selftest of IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST.
unsafe impl vfio_cdev::InvalidationEntry for ViommuInvalidateSelftest {
    const DATA_TYPE: u32 = INVALIDATE_DATA_SELFTEST;
}

/// `struct iommu_viommu_event_selftest`: the mock's vEVENT data.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct VeventSelftest {
    /// The vDEVICE's virtual id.
    pub virt_id: u32,
}
impl vfio_cdev::VeventData for VeventSelftest {
    const TYPE: u32 = VEVENTQ_TYPE_SELFTEST;
}

/// `IOMMU_HW_QUEUE_TYPE_SELFTEST`.
#[derive(Debug, Clone, Copy)]
pub struct HwQueueSelftest;
impl vfio_cdev::HwQueueType for HwQueueSelftest {
    const TYPE: u32 = HW_QUEUE_TYPE_SELFTEST;
}

/// `struct iommu_test_hw_info`: the mock IOMMU's hw info.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct HwInfoSelftest {
    /// 0.
    pub flags: u32,
    /// `IOMMU_HW_INFO_SELFTEST_REGVAL`.
    pub test_reg: u32,
}
impl vfio_cdev::HwInfoType for HwInfoSelftest {
    const TYPE: u32 = HW_INFO_TYPE_SELFTEST;
}

fn issue(cmd: TestCmd, iommufd: &Iommufd) -> Result<TestCmd> {
    // SAFETY: every op issued through here carries ids and numbers only, no user pointer.
    unsafe { cmd.issue(iommufd) }
}

/// `IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE`: attaches mock device `stdev` to `pt` (an IOAS, a
/// paging or nested HWPT); returns the HWPT it is now attached to.
pub fn mock_domain_replace(iommufd: &Iommufd, stdev: ObjectId, pt: impl Into<PtId>) -> Result<HwptId> {
    let c = issue(
        TestCmd::new(OP_MOCK_DOMAIN_REPLACE, stdev.get()).set_u32(0, pt.into().get()),
        iommufd,
    )?;
    Ok(HwptId::from(c.u32_at(0)))
}

/// `IOMMU_TEST_OP_MD_CHECK_IOTLB`: mock IOTLB slot `slot` of nested HWPT `hwpt` holds `want`
/// (EINVAL otherwise).
pub fn check_iotlb(iommufd: &Iommufd, hwpt: HwptId, slot: u32, want: u32) -> Result<()> {
    issue(
        TestCmd::new(OP_MD_CHECK_IOTLB, hwpt.get())
            .set_u32(0, slot)
            .set_u32(4, want),
        iommufd,
    )
    .map(|_| ())
}

/// [`check_iotlb`] of every slot against `want`.
pub fn check_iotlb_all(iommufd: &Iommufd, hwpt: HwptId, want: [u32; 4]) -> Result<()> {
    for (slot, w) in want.into_iter().enumerate() {
        check_iotlb(iommufd, hwpt, slot as u32, w)?;
    }
    Ok(())
}

/// `IOMMU_TEST_OP_TRIGGER_IOPF`: the mock IOMMU reports an I/O page fault of device `idev`.
pub fn trigger_iopf(iommufd: &Iommufd, idev: DeviceId, pasid: u32, grpid: u32, perm: u32, addr: u64) -> Result<()> {
    issue(
        TestCmd::new(OP_TRIGGER_IOPF, 0)
            .set_u32(0, idev.get())
            .set_u32(4, pasid)
            .set_u32(8, grpid)
            .set_u32(12, perm)
            .set_u64(16, addr),
        iommufd,
    )
    .map(|_| ())
}

/// `IOMMU_TEST_OP_DEV_CHECK_CACHE`: mock device cache slot `slot` of `idev` holds `want`.
pub fn check_dev_cache(iommufd: &Iommufd, idev: DeviceId, slot: u32, want: u32) -> Result<()> {
    issue(
        TestCmd::new(OP_DEV_CHECK_CACHE, idev.get())
            .set_u32(0, slot)
            .set_u32(4, want),
        iommufd,
    )
    .map(|_| ())
}

/// [`check_dev_cache`] of every slot.
pub fn check_dev_cache_all(iommufd: &Iommufd, idev: DeviceId, want: [u32; 4]) -> Result<()> {
    for (slot, w) in want.into_iter().enumerate() {
        check_dev_cache(iommufd, idev, slot as u32, w)?;
    }
    Ok(())
}

/// `IOMMU_TEST_OP_TRIGGER_VEVENT`: the mock IOMMU raises one vEVENT for device `idev` (which
/// must have a vDEVICE with a non-zero virtual id and be attached to a nested HWPT of its vIOMMU).
pub fn trigger_vevent(iommufd: &Iommufd, idev: DeviceId) -> Result<()> {
    issue(TestCmd::new(OP_TRIGGER_VEVENT, 0).set_u32(0, idev.get()), iommufd).map(|_| ())
}

/// `IOMMU_TEST_OP_PASID_ATTACH`: attaches `pasid` of mock device `stdev` to `pt`.
pub fn pasid_attach(iommufd: &Iommufd, stdev: ObjectId, pasid: u32, pt: impl Into<PtId>) -> Result<()> {
    issue(
        TestCmd::new(OP_PASID_ATTACH, stdev.get())
            .set_u32(0, pasid)
            .set_u32(4, pt.into().get()),
        iommufd,
    )
    .map(|_| ())
}

/// `IOMMU_TEST_OP_PASID_REPLACE`: replaces the HWPT `pasid` of `stdev` is attached to.
pub fn pasid_replace(iommufd: &Iommufd, stdev: ObjectId, pasid: u32, pt: impl Into<PtId>) -> Result<()> {
    issue(
        TestCmd::new(OP_PASID_REPLACE, stdev.get())
            .set_u32(0, pasid)
            .set_u32(4, pt.into().get()),
        iommufd,
    )
    .map(|_| ())
}

/// `IOMMU_TEST_OP_PASID_DETACH`.
pub fn pasid_detach(iommufd: &Iommufd, stdev: ObjectId, pasid: u32) -> Result<()> {
    issue(TestCmd::new(OP_PASID_DETACH, stdev.get()).set_u32(0, pasid), iommufd).map(|_| ())
}

/// `IOMMU_TEST_OP_PASID_CHECK_HWPT`: `pasid` of `stdev` is attached to `hwpt` (0: detached);
/// EINVAL otherwise.
pub fn pasid_check(iommufd: &Iommufd, stdev: ObjectId, pasid: u32, hwpt: u32) -> Result<()> {
    issue(
        TestCmd::new(OP_PASID_CHECK_HWPT, stdev.get())
            .set_u32(0, pasid)
            .set_u32(4, hwpt),
        iommufd,
    )
    .map(|_| ())
}
