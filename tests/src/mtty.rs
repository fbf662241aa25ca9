//! The kernel's sample mediated device `mtty` (samples/vfio-mdev/mtty.c), made and opened
//! through the library's mdev API (`vfio_core::Mdev`), for the migration tests and benchmarks.
//!
//! Hazards (docs/design/issue-15.md §0) this helper keeps to: UART access is one byte (H3),
//! never more than 15 chars in the FIFO (H11), `Device::info()` right after opening (H9, done
//! by `Mdev::open_in`), and an instance is removed only after every fd of it is closed (H10):
//! each opened `Device` keeps its instance alive.

use vfio_core::{Addressing, Device, Mdev, MdevParent, RegionInfo, Sysfs, Uuid};

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

/// An mtty instance, removed when the last handle and the last device opened from it are gone
/// (or, from [`Mtty::borrowed`], never removed here).
#[derive(Clone)]
pub struct Mtty {
    mdev: Mdev,
    uuid: String,
}

impl Mtty {
    /// Creates an instance of `ty` (`mtty-1`: one port, `mtty-2`: two) with a random UUID.
    pub fn create(ty: &str) -> Result<Self, BoxError> {
        let mdev = MdevParent::open(&Sysfs::default(), "mtty")?
            .mdev_type(ty)?
            .create(Uuid::random()?)?;
        Ok(Mtty::from_mdev(mdev))
    }

    /// A handle on an instance that another process owns (not removed here).
    pub fn borrowed(uuid: &str) -> Result<Self, BoxError> {
        Ok(Mtty::from_mdev(Mdev::find(&Sysfs::default(), uuid.parse()?)?))
    }

    fn from_mdev(mdev: Mdev) -> Self {
        let uuid = mdev.uuid().to_string();
        Mtty { mdev, uuid }
    }

    /// The instance's UUID (lowercase: the name `VFIO_GROUP_GET_DEVICE_FD` wants).
    pub fn uuid(&self) -> &str {
        &self.uuid
    }

    /// Opens the instance in a container of its own (`Mdev::open_in`, which asks
    /// `VFIO_DEVICE_GET_INFO` first). The device keeps the instance and its container alive.
    pub fn open(&self, via: Via) -> Result<Device, BoxError> {
        Ok(match via {
            Via::Group => self.mdev.open_in(&vfio_group::Container::open(Addressing::Iova)?)?,
            Via::Cdev => self.mdev.open_in(&vfio_cdev::Container::new()?)?,
        })
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
