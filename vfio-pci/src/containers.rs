//! The default container of each mode: one per mode, shared by everyone who holds it, closed
//! when the last holder drops it. [`PciDevice::open`](crate::PciDevice::open) assigns devices
//! to it, and every device opened so holds it (until its fd closes), so the default container
//! lives exactly as long as a device opened through it or a [`DefaultContainer`] handle: a
//! program that drops all of them is back to the fds it had before.
//!
//! It holds a device only while the device is open: when the last handle of a device opened
//! through it goes (every clone of the [`PciDevice`](crate::PciDevice) and its `Device`, every
//! BAR mapping), its group leaves the container (group mode) or its cdev is unbound (cdev
//! mode), and another process can open it. A refused open holds nothing either.

use std::ops::Deref;
use std::sync::{Arc, Mutex, Weak};

use vfio_core::{Addressing, Container, Interface, Mode, Result, SharedContainer};

static GROUP: Mutex<Weak<vfio_group::Container>> = Mutex::new(Weak::new());
static GROUP_NOIOMMU: Mutex<Weak<vfio_group::Container>> = Mutex::new(Weak::new());
static CDEV: Mutex<Weak<vfio_cdev::Container>> = Mutex::new(Weak::new());
static CDEV_NOIOMMU: Mutex<Weak<vfio_cdev::Container>> = Mutex::new(Weak::new());

/// The live container in `slot`, or a new one (kept weakly in the slot) when nobody holds one.
fn get_or_open<C>(slot: &Mutex<Weak<C>>, open: impl FnOnce() -> Result<C>) -> Result<Arc<C>> {
    let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(c) = slot.upgrade() {
        return Ok(c);
    }
    let c = Arc::new(open()?);
    *slot = Arc::downgrade(&c);
    Ok(c)
}

/// A handle on the default container of one mode ([`default_container`]): a `/dev/vfio/vfio`
/// container (type1v2 or no-IOMMU) or an IOAS in an iommufd. Clones share it; it closes when the
/// last handle and the last device opened through it are gone (its `Drop` is the concrete
/// container's: groups leave, mappings go with them). It derefs to [`dyn Container`](Container)
/// for DMA and hot reset, and [`DefaultContainer::group`] / [`DefaultContainer::cdev`] reach the
/// concrete type (e.g. to take a group out with `vfio_group::Container::remove_group`).
#[derive(Clone)]
pub struct DefaultContainer(Inner);

#[derive(Clone)]
enum Inner {
    Group(Arc<vfio_group::Container>),
    Cdev(Arc<vfio_cdev::Container>),
}

impl DefaultContainer {
    /// The group-mode container (`/dev/vfio/vfio`), when this is one.
    pub fn group(&self) -> Option<&Arc<vfio_group::Container>> {
        match &self.0 {
            Inner::Group(c) => Some(c),
            Inner::Cdev(_) => None,
        }
    }

    /// The cdev-mode container (an IOAS in an iommufd), when this is one.
    pub fn cdev(&self) -> Option<&Arc<vfio_cdev::Container>> {
        match &self.0 {
            Inner::Cdev(c) => Some(c),
            Inner::Group(_) => None,
        }
    }

    /// A share of it as an `Arc<dyn Container>`, e.g. for a driver struct without lifetimes.
    pub fn shared(&self) -> Arc<dyn Container> {
        match &self.0 {
            Inner::Group(c) => c.clone(),
            Inner::Cdev(c) => c.clone(),
        }
    }

    /// Whether `a` and `b` are the same container.
    pub fn ptr_eq(a: &Self, b: &Self) -> bool {
        match (&a.0, &b.0) {
            (Inner::Group(x), Inner::Group(y)) => Arc::ptr_eq(x, y),
            (Inner::Cdev(x), Inner::Cdev(y)) => Arc::ptr_eq(x, y),
            _ => false,
        }
    }
}

impl Deref for DefaultContainer {
    type Target = dyn Container;
    fn deref(&self) -> &Self::Target {
        match &self.0 {
            Inner::Group(c) => c.as_ref(),
            Inner::Cdev(c) => c.as_ref(),
        }
    }
}

impl AsRef<dyn Container> for DefaultContainer {
    fn as_ref(&self) -> &(dyn Container + 'static) {
        &**self
    }
}

impl From<DefaultContainer> for Arc<dyn Container> {
    fn from(c: DefaultContainer) -> Self {
        c.shared()
    }
}

impl From<DefaultContainer> for SharedContainer {
    fn from(c: DefaultContainer) -> Self {
        SharedContainer::Shared(c.shared())
    }
}

impl std::fmt::Debug for DefaultContainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DefaultContainer({})", self.mode())
    }
}

/// The default container of `mode`: a `/dev/vfio/vfio` container (type1v2 or no-IOMMU) or an
/// IOAS in a fresh iommufd (for IOMMU or no-IOMMU devices). Opened when nobody holds one (no
/// handle, no device opened through it), shared by every caller while someone does, closed
/// when the last holder drops it. Errors: those of opening the container
/// (`vfio_group::Container::open`, `vfio_cdev::Container::new`).
///
/// In group mode, a device's group is in the container only while a device opened through it
/// is open. With the type1 driver (not iommufd's compatibility container), the last group out
/// takes every DMA mapping of the container with it: keep a device open for as long as its
/// mappings are needed (a mapping dropped afterwards is released quietly). A cdev container's
/// IOAS keeps its mappings whatever devices come and go.
///
/// When one thread drops the last holder while another asks for the container, the second may
/// get a new container while the old one still holds a group it is letting go (an open of that
/// group's device then fails with EBUSY): keep a handle for the whole program when threads
/// open and close devices concurrently.
pub fn default_container(mode: Mode) -> Result<DefaultContainer> {
    let addressing = mode.addressing();
    Ok(DefaultContainer(match (mode.interface(), addressing) {
        (Interface::Group, Addressing::Iova) => {
            Inner::Group(get_or_open(&GROUP, || vfio_group::Container::open(addressing))?)
        }
        (Interface::Group, Addressing::Physical) => {
            Inner::Group(get_or_open(&GROUP_NOIOMMU, || vfio_group::Container::open(addressing))?)
        }
        (Interface::Cdev, Addressing::Iova) => Inner::Cdev(get_or_open(&CDEV, vfio_cdev::Container::new)?),
        (Interface::Cdev, Addressing::Physical) => {
            Inner::Cdev(get_or_open(&CDEV_NOIOMMU, vfio_cdev::Container::new_noiommu)?)
        }
    }))
}
