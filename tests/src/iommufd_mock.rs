//! The iommufd selftest interface (`IOMMU_TEST_CMD` on `/dev/iommu`, kernels built with
//! `CONFIG_IOMMUFD_TEST`): mock devices and mock IOMMU domains, so IOAS and HWPT semantics can be
//! tested without hardware. Layout from the kernel's `drivers/iommu/iommufd/iommufd_test.h`; it is
//! not a stable uapi, which is why it lives here and not in a public crate.

use std::sync::Arc;

use vfio_cdev::{DeviceId, HwptId, Iommufd, ObjectId, PtId};
use vfio_core::ioctl;
use vfio_core::{Errno, Error, Result};

/// `IOMMU_TEST_CMD`: `_IO(IOMMUFD_TYPE, IOMMUFD_CMD_BASE + 32)`.
pub const IOMMU_TEST_CMD: u32 = 0x3b80 + 32;

vfio_core::request! {
    /// `IOMMU_TEST_CMD`: some ops' payloads hold user pointers (checked maps, dirty bitmaps).
    pub TestCmdRequest = IOMMU_TEST_CMD on Iommufd, TestCmd, size size, unchecked;
}

/// `IOMMU_TEST_OP_MOCK_DOMAIN`: a mock device attached to an IOAS/HWPT.
pub const OP_MOCK_DOMAIN: u32 = 2;
/// `IOMMU_TEST_OP_MD_CHECK_MAP`: checks a mock domain maps IOVAs to given user pages.
pub const OP_MD_CHECK_MAP: u32 = 3;
/// `IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS`: `OP_MOCK_DOMAIN` with device flags.
pub const OP_MOCK_DOMAIN_FLAGS: u32 = 12;
/// `IOMMU_TEST_OP_DIRTY`: marks IOVAs of a dirty-tracking mock domain as written.
pub const OP_DIRTY: u32 = 13;

/// First IOVA of the mock domain's aperture.
pub const MOCK_APERTURE_START: u64 = 1 << 24;
/// Last IOVA of the mock domain's aperture.
pub const MOCK_APERTURE_LAST: u64 = (1 << 31) - 1;
/// The mock IOMMU's page size.
pub const MOCK_PAGE_SIZE: u64 = 2048;

/// `struct iommu_test_cmd`: a header, a 48-byte union (8-byte aligned) and `last`.
#[repr(C, align(8))]
#[derive(Debug, Clone, Copy)]
pub struct TestCmd {
    size: u32,
    op: u32,
    id: u32,
    reserved: u32,
    payload: [u8; 48],
    last: u32,
}

// The kernel's layout: union at 16 (8-byte aligned), `last` at 64, size 72.
const _: () = {
    assert!(std::mem::size_of::<TestCmd>() == 72);
    assert!(std::mem::offset_of!(TestCmd, payload) == 16);
    assert!(std::mem::offset_of!(TestCmd, last) == 64);
};

impl TestCmd {
    /// A command `op` on object `id`, payload zeroed.
    pub fn new(op: u32, id: u32) -> Self {
        TestCmd {
            size: std::mem::size_of::<TestCmd>() as u32,
            op,
            id,
            reserved: 0,
            payload: [0; 48],
            last: 0,
        }
    }

    /// Sets the u32 at byte `off` of the union.
    pub fn set_u32(mut self, off: usize, v: u32) -> Self {
        self.payload[off..off + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }

    /// Sets the u64 at byte `off` of the union.
    pub fn set_u64(mut self, off: usize, v: u64) -> Self {
        self.payload[off..off + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }

    /// The u32 at byte `off` of the union.
    pub fn u32_at(&self, off: usize) -> u32 {
        let mut b = [0; 4];
        b.copy_from_slice(&self.payload[off..off + 4]);
        u32::from_ne_bytes(b)
    }

    /// The u64 at byte `off` of the union.
    pub fn u64_at(&self, off: usize) -> u64 {
        let mut b = [0; 8];
        b.copy_from_slice(&self.payload[off..off + 8]);
        u64::from_ne_bytes(b)
    }

    /// Issues the command. Pointers put in the payload must be valid for what `op` does.
    ///
    /// # Safety
    /// Any user pointer in the payload must point at memory valid for the op's access.
    pub unsafe fn issue(mut self, iommufd: &Iommufd) -> Result<Self> {
        // SAFETY: TestCmd lays out struct iommu_test_cmd (size 72, union at 16, last at 64, as
        // checked above); the caller vouches for the pointers in the payload.
        unsafe { ioctl::call_unchecked::<TestCmdRequest>(iommufd.ioctl_fd(), &mut self) }
            .map_err(|e| ioctl::kernel_error::<TestCmdRequest>(format!("op {} id {}", self.op, self.id), e))?;
        Ok(self)
    }
}

/// A mock device and the mock-domain HWPT it is attached to.
#[derive(Debug, Clone, Copy)]
pub struct MockDomain {
    /// The selftest device object id (destroy it to detach).
    pub stdev_id: ObjectId,
    /// The auto-allocated HWPT id (or the HWPT passed in).
    pub hwpt_id: HwptId,
    /// The device's bind id.
    pub idev_id: DeviceId,
}

/// `IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS`: creates a mock device attached to IOAS or HWPT `pt`.
pub fn mock_domain(iommufd: &Iommufd, pt: impl Into<PtId>, dev_flags: u32) -> Result<MockDomain> {
    // SAFETY: the mock_domain_flags payload holds no pointers.
    let c = unsafe {
        TestCmd::new(OP_MOCK_DOMAIN_FLAGS, pt.into().get())
            .set_u32(12, dev_flags)
            .issue(iommufd)?
    };
    Ok(MockDomain {
        stdev_id: c.u32_at(0).into(),
        hwpt_id: c.u32_at(4).into(),
        idev_id: c.u32_at(8).into(),
    })
}

/// `IOMMU_TEST_OP_MD_CHECK_MAP`: checks that mock HWPT `hwpt` maps `[iova, iova + len)` to
/// the pages of `buf` (the kernel answers EINVAL when not).
pub fn check_map(iommufd: &Iommufd, hwpt: HwptId, iova: u64, buf: &[u8]) -> Result<()> {
    // SAFETY: uptr points at buf.len() readable bytes for the call.
    unsafe {
        TestCmd::new(OP_MD_CHECK_MAP, hwpt.get())
            .set_u64(0, iova)
            .set_u64(8, buf.len() as u64)
            .set_u64(16, buf.as_ptr() as u64)
            .issue(iommufd)?
    };
    Ok(())
}

/// `IOMMU_TEST_OP_DIRTY`: marks as written the pages of `[iova, iova + len)` (of `page_size`)
/// whose bit is set in `bitmap`; returns how many the mock domain marked.
pub fn set_dirty(iommufd: &Iommufd, hwpt: HwptId, iova: u64, len: u64, page_size: u64, bitmap: &[u64]) -> Result<u64> {
    let pages = len / page_size.max(1);
    if (bitmap.len() as u64) * 64 < pages {
        return Err(Error::invalid("IOMMU_TEST_OP_DIRTY", hwpt, "bitmap too short"));
    }
    // SAFETY: uptr points at a bitmap of at least len / page_size bits, readable for the call.
    let c = unsafe {
        TestCmd::new(OP_DIRTY, hwpt.get())
            .set_u64(8, iova)
            .set_u64(16, len)
            .set_u64(24, page_size)
            .set_u64(32, bitmap.as_ptr() as u64)
            .issue(iommufd)?
    };
    Ok(c.u64_at(40))
}

/// Opens `/dev/iommu` and checks the selftest interface is there, or says why not.
pub fn open() -> std::result::Result<Arc<Iommufd>, String> {
    let iommufd = Iommufd::open().map_err(|e| format!("no iommufd: {e}"))?;
    // Op 0 is no op: EOPNOTSUPP from the selftest dispatcher, ENOTTY without CONFIG_IOMMUFD_TEST.
    // SAFETY: op 0 carries no payload.
    match unsafe { TestCmd::new(0, 0).issue(&iommufd) } {
        Err(e) if e.errno() == Some(Errno::NOTTY) => {
            Err("IOMMU_TEST_CMD answers ENOTTY: kernel without CONFIG_IOMMUFD_TEST".into())
        }
        _ => Ok(iommufd),
    }
}
