//! Binding a PCI function to vfio-pci from the program itself (opt-in; needs root), and giving it
//! back to its previous driver when done.

use vfio_core::{PciAddress, Result, Sysfs};

/// A function bound to vfio-pci by this process. With `give_back`, dropping it unbinds the
/// function from vfio-pci and rebinds its previous driver (errors on drop are logged, warn, target
/// `vfio`: call [`VfioPciBinding::release`] to get them). A failed bind changes nothing
/// ([`Sysfs::bind_vfio_pci`] undoes it).
#[derive(Debug)]
pub struct VfioPciBinding {
    sysfs: Sysfs,
    address: PciAddress,
    previous: Option<String>,
    give_back: bool,
}

impl VfioPciBinding {
    /// Binds `address` to vfio-pci (through `driver_override` and a re-probe), remembering the
    /// driver it had. A function already on vfio-pci is left as it is (and not given back).
    pub fn bind(address: PciAddress, give_back: bool) -> Result<Self> {
        let sysfs = Sysfs::default();
        let already = sysfs.driver(&address)?.as_deref() == Some("vfio-pci");
        let previous = sysfs.bind_vfio_pci(&address)?;
        Ok(VfioPciBinding {
            sysfs,
            address,
            previous,
            give_back: give_back && !already,
        })
    }

    /// The driver the function had before (None: no driver).
    pub fn previous_driver(&self) -> Option<&str> {
        self.previous.as_deref()
    }

    /// Gives the function back now, reporting errors.
    pub fn release(mut self) -> Result<()> {
        self.give_back = false;
        self.sysfs.restore_driver(&self.address, self.previous.as_deref())
    }
}

impl Drop for VfioPciBinding {
    fn drop(&mut self) {
        if self.give_back {
            if let Err(e) = self.sysfs.restore_driver(&self.address, self.previous.as_deref()) {
                log::warn!(target: "vfio", "{}: giving the function back to {:?} failed on drop: {e}", self.address, self.previous);
            }
        }
    }
}
