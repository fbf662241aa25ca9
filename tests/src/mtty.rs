//! The kernel's sample mediated device `mtty` (samples/vfio-mdev/mtty.c), made and opened with
//! plain sysfs writes and the low-level group/cdev APIs, for the migration tests (until the
//! library's own mdev management lands).
//!
//! Hazards (docs/design/issue-15.md §0) this helper keeps to: UART access is one byte (H3),
//! never more than 15 chars in the FIFO (H11), `Device::info()` right after opening (H9), and
//! an instance is removed only after every fd of it is closed (H10): each opened `Device`
//! keeps its instance alive through its owner, which drops after the device fd closes.

use std::path::PathBuf;
use std::sync::Arc;

use vfio_core::{Device, RegionInfo};

/// The mtty parent in sysfs.
pub const PARENT: &str = "/sys/class/mdev_bus/mtty";

type BoxError = Box<dyn std::error::Error>;

/// Why mtty tests cannot run here, if they cannot.
pub fn unavailable() -> Option<String> {
    if std::path::Path::new(PARENT).exists() {
        None
    } else {
        Some(format!(
            "{PARENT} is missing: this kernel has no mtty sample driver (SAMPLE_VFIO_MDEV_MTTY)"
        ))
    }
}

/// How to open an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// Its emulated IOMMU group in a type1 (or iommufd compat) container; `VFIO_GROUP_GET_DEVICE_FD`
    /// with the UUID.
    Group,
    /// `/dev/vfio/devices/vfioN`, bound to an iommufd and attached to an IOAS.
    Cdev,
}

impl std::fmt::Display for Via {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Via::Group => "group",
            Via::Cdev => "cdev",
        })
    }
}

struct Inner {
    uuid: String,
    keep: bool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        let remove = format!("/sys/bus/mdev/devices/{}/remove", self.uuid);
        if let Err(e) = std::fs::write(&remove, "1") {
            println!("    (removing mtty {}: {e})", self.uuid);
        }
    }
}

/// An mtty instance, removed when the last handle and the last device opened from it are gone.
#[derive(Clone)]
pub struct Mtty(Arc<Inner>);

impl Mtty {
    /// Creates an instance of `ty` (`mtty-1`: one port, `mtty-2`: two) with a random UUID.
    pub fn create(ty: &str) -> Result<Self, BoxError> {
        let uuid = std::fs::read_to_string("/proc/sys/kernel/random/uuid")?
            .trim()
            .to_lowercase();
        let create = format!("{PARENT}/mdev_supported_types/{ty}/create");
        std::fs::write(&create, &uuid).map_err(|e| format!("write {uuid} to {create}: {e}"))?;
        Ok(Mtty(Arc::new(Inner { uuid, keep: false })))
    }

    /// A handle on an instance that another process owns (not removed here).
    pub fn borrowed(uuid: &str) -> Self {
        Mtty(Arc::new(Inner {
            uuid: uuid.to_string(),
            keep: true,
        }))
    }

    /// The instance's UUID (lowercase: the name `VFIO_GROUP_GET_DEVICE_FD` wants).
    pub fn uuid(&self) -> &str {
        &self.0.uuid
    }

    /// `/sys/bus/mdev/devices/<uuid>`.
    pub fn dir(&self) -> PathBuf {
        PathBuf::from(format!("/sys/bus/mdev/devices/{}", self.0.uuid))
    }

    /// Its (emulated) IOMMU group number.
    pub fn group_id(&self) -> Result<u32, BoxError> {
        let link = std::fs::read_link(self.dir().join("iommu_group"))?;
        let name = link
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or("iommu_group link has no name")?;
        Ok(name.parse()?)
    }

    /// Its cdev node, `/dev/vfio/devices/vfioN`.
    pub fn cdev(&self) -> Result<PathBuf, BoxError> {
        let dir = self.dir().join("vfio-dev");
        for e in std::fs::read_dir(&dir)? {
            let name = e?.file_name();
            if let Some(n) = name.to_str().filter(|n| n.starts_with("vfio")) {
                return Ok(PathBuf::from(format!("/dev/vfio/devices/{n}")));
            }
        }
        Err(format!("no vfioN under {}", dir.display()).into())
    }

    /// Opens the instance, then calls `Device::info()` (H9). The device keeps the instance
    /// (and its container or IOAS) alive.
    pub fn open(&self, via: Via) -> Result<Device, BoxError> {
        let dev = match via {
            Via::Group => {
                let container = vfio_group::Container::open(vfio_core::Addressing::Iova)?;
                let group = container.add_group(self.group_id()?)?;
                let fd = group.device_fd(self.uuid())?;
                Device::from_fd(fd, self.uuid(), Some(Arc::new(((container, group), self.clone()))))
            }
            Via::Cdev => {
                let node = self.cdev()?;
                let fd = vfio_core::open_node(&node)?;
                let unbound = vfio_cdev::UnboundDevice::from_fd(fd, self.uuid(), false);
                let iommufd = vfio_cdev::Iommufd::open()?;
                let bound = unbound.bind(&iommufd)?;
                let ioas = iommufd.alloc_ioas()?;
                bound.attach(ioas.id())?;
                bound.into_device(Some(Arc::new((ioas, self.clone()))))
            }
        };
        dev.info()?;
        Ok(dev)
    }
}

/// mtty's UART on BAR0 (region 0), one byte at a time (H3).
pub struct Uart<'a> {
    dev: &'a Device,
    bar0: RegionInfo,
}

/// UART register offsets.
const RX_TX: u64 = 0;
const LSR: u64 = 5;

impl<'a> Uart<'a> {
    /// Port 0 of `dev`.
    pub fn new(dev: &'a Device) -> Result<Self, BoxError> {
        Ok(Uart {
            dev,
            bar0: dev.region_info(0)?,
        })
    }

    /// Writes `chars` (at most 15 in the FIFO: H11); mtty loops them into its receive FIFO.
    pub fn write(&self, chars: &[u8]) -> Result<(), BoxError> {
        if chars.len() > 15 {
            return Err("mtty's FIFO holds 15 chars".into());
        }
        for &c in chars {
            self.dev.write_region(&self.bar0, RX_TX, &[c])?;
        }
        Ok(())
    }

    /// The line status register.
    pub fn lsr(&self) -> Result<u8, BoxError> {
        let mut b = [0u8];
        self.dev.read_region(&self.bar0, LSR, &mut b)?;
        Ok(b[0])
    }

    /// Reads every char waiting (while LSR.DR is set), at most 16.
    pub fn read_all(&self) -> Result<Vec<u8>, BoxError> {
        let mut out = Vec::new();
        while self.lsr()? & 1 != 0 && out.len() < 16 {
            let mut b = [0u8];
            self.dev.read_region(&self.bar0, RX_TX, &mut b)?;
            out.push(b[0]);
        }
        Ok(out)
    }
}
