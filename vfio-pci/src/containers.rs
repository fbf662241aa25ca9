//! The process-wide default container of each mode, created on first use and never closed.
//! It holds a device only while the device is open: when the last handle of a device opened
//! through it goes (every clone of the [`PciDevice`](crate::PciDevice) and its `Device`, every
//! BAR mapping), its group leaves the container (group mode) or its cdev is unbound (cdev
//! mode), and another process can open it. A refused open holds nothing either.

use std::sync::Mutex;

use vfio_core::{Addressing, Container, Interface, Mode, Result};

static GROUP: Mutex<Option<&'static vfio_group::Container>> = Mutex::new(None);
static GROUP_NOIOMMU: Mutex<Option<&'static vfio_group::Container>> = Mutex::new(None);
static CDEV: Mutex<Option<&'static vfio_cdev::Container>> = Mutex::new(None);
static CDEV_NOIOMMU: Mutex<Option<&'static vfio_cdev::Container>> = Mutex::new(None);

fn get_or_open<C>(slot: &Mutex<Option<&'static C>>, open: impl FnOnce() -> Result<C>) -> Result<&'static C> {
    let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(c) = *slot {
        return Ok(c);
    }
    let c: &'static C = Box::leak(Box::new(open()?));
    *slot = Some(c);
    Ok(c)
}

/// The default container of `mode`: a `/dev/vfio/vfio` container (type1v2 or no-IOMMU) or an
/// IOAS in a fresh iommufd (for IOMMU or no-IOMMU devices). Opened on first use, shared by
/// every later caller, never closed.
///
/// In group mode, a device's group is in the container only while a device opened through it
/// is open. With the type1 driver (not iommufd's compatibility container), the last group out
/// takes every DMA mapping of the container with it: keep a device open for as long as its
/// mappings are needed (a mapping dropped afterwards is released quietly). A cdev container's
/// IOAS keeps its mappings whatever devices come and go.
pub fn default_container(mode: Mode) -> Result<&'static dyn Container> {
    let addressing = mode.addressing();
    Ok(match (mode.interface(), addressing) {
        (Interface::Group, Addressing::Iova) => get_or_open(&GROUP, || vfio_group::Container::open(addressing))?,
        (Interface::Group, Addressing::Physical) => {
            get_or_open(&GROUP_NOIOMMU, || vfio_group::Container::open(addressing))?
        }
        (Interface::Cdev, Addressing::Iova) => get_or_open(&CDEV, vfio_cdev::Container::new)?,
        (Interface::Cdev, Addressing::Physical) => get_or_open(&CDEV_NOIOMMU, vfio_cdev::Container::new_noiommu)?,
    })
}
