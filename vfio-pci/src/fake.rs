//! Unit-test stand-ins for a VFIO device fd: a memfd, so `pread`/`pwrite` at a region's offset
//! reach its bytes and `mmap` maps them, as they would on a vfio-pci device fd.

use std::os::fd::{AsFd, OwnedFd};

use vfio_core::{Device, RegionCap, RegionFlags, RegionInfo, SparseArea};

/// A memfd of `len` bytes, every byte `fill`.
pub fn memfd(len: usize, fill: u8) -> OwnedFd {
    let fd = rustix::fs::memfd_create("vfio-pci-test", rustix::fs::MemfdFlags::CLOEXEC).expect("memfd_create");
    rustix::fs::ftruncate(&fd, len as u64).expect("ftruncate");
    write_at(&fd, 0, &vec![fill; len]);
    fd
}

/// A device whose fd is `fd`.
pub fn device(fd: OwnedFd) -> Device {
    Device::from_fd(fd, "fake", None)
}

/// A region at `offset` in the fd, `size` bytes, mmappable only in `areas` (sparse) when given.
pub fn region(index: u32, offset: u64, size: u64, areas: Option<&[SparseArea]>) -> RegionInfo {
    let mut flags = RegionFlags::READ | RegionFlags::WRITE;
    let mut caps = Vec::new();
    if let Some(a) = areas {
        flags |= RegionFlags::MMAP | RegionFlags::CAPS;
        caps.push(RegionCap::SparseMmap(a.to_vec()));
    }
    RegionInfo {
        index,
        flags,
        size,
        offset,
        caps,
    }
}

/// `len` bytes of the fd at `pos`.
pub fn read_at(fd: &impl AsFd, pos: u64, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    assert_eq!(rustix::io::pread(fd, &mut b, pos).expect("pread"), len);
    b
}

/// Writes `data` into the fd at `pos`.
pub fn write_at(fd: &impl AsFd, pos: u64, data: &[u8]) {
    assert_eq!(rustix::io::pwrite(fd, data, pos).expect("pwrite"), data.len());
}
