//! Kernel module parameters (`/sys/module/MODULE/parameters/NAME`) that a test changes for a
//! moment and gives back, whether it passes, fails or panics (the harness unwinds).

use std::path::PathBuf;

/// The sysfs file of parameter `name` of `module`.
pub fn path(module: &str, name: &str) -> PathBuf {
    PathBuf::from(format!("/sys/module/{module}/parameters/{name}"))
}

/// The value of the parameter at `path`, without the trailing newline; `None` when the file is
/// not there or cannot be read (the module is not loaded, or has no such parameter).
pub fn read(path: &std::path::Path) -> Option<String> {
    Some(std::fs::read_to_string(path).ok()?.trim().to_string())
}

/// Parameters written while this lives: each gets back, on drop, the value it had before its
/// first [`ParamGuard::set`] (a failed restore is printed, not ignored).
#[derive(Debug, Default)]
pub struct ParamGuard {
    saved: Vec<(PathBuf, String)>,
}

impl ParamGuard {
    /// A guard that has changed nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes `value` to the parameter at `path`, remembering its value before.
    pub fn set(&mut self, path: impl Into<PathBuf>, value: &str) -> Result<(), String> {
        let path = path.into();
        let old = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if !self.saved.iter().any(|(p, _)| *p == path) {
            self.saved.push((path.clone(), old.trim().to_string()));
        }
        std::fs::write(&path, value).map_err(|e| format!("cannot write {value} to {}: {e}", path.display()))
    }
}

impl Drop for ParamGuard {
    fn drop(&mut self) {
        // Last changed, first given back.
        for (p, v) in self.saved.iter().rev() {
            if let Err(e) = std::fs::write(p, v) {
                println!("    could not restore {} to {v}: {e}", p.display());
            }
        }
    }
}

/// The `allow_unsafe_interrupts` parameters of vfio_iommu_type1 and iommufd, turned off until
/// dropped, which gives each its value back. The harness turns them on in the virtio-iommu
/// boots, whose IOMMU cannot isolate MSIs; with them off the kernel refuses opens there with
/// EPERM (at `VFIO_SET_IOMMU` on the type1 driver; at `VFIO_GROUP_GET_DEVICE_FD` on iommufd's
/// compatibility container, after `VFIO_GROUP_SET_CONTAINER` and `VFIO_SET_IOMMU` succeeded; at
/// `VFIO_DEVICE_BIND_IOMMUFD` in cdev mode).
#[derive(Debug)]
pub struct UnsafeInterruptsOff {
    _restore: ParamGuard,
}

impl UnsafeInterruptsOff {
    /// Turns off each of the parameters that is on. When none is on (the IOMMU remaps
    /// interrupts, or there is none) the error, for `skip`, is "unsafe interrupts are not
    /// allowed here (the values read): `why_not`".
    pub fn new(why_not: &str) -> Result<Self, String> {
        let values: Vec<(PathBuf, String)> = ["vfio_iommu_type1", "iommufd"]
            .iter()
            .map(|m| path(m, "allow_unsafe_interrupts"))
            .filter_map(|p| Some((p.clone(), read(&p)?)))
            .collect();
        if !values.iter().any(|(_, v)| v == "Y") {
            return Err(format!(
                "unsafe interrupts are not allowed here ({values:?}): {why_not}"
            ));
        }
        let mut guard = ParamGuard::new();
        for (p, v) in values {
            if v == "Y" {
                guard.set(p, "0")?;
            }
        }
        Ok(UnsafeInterruptsOff { _restore: guard })
    }
}
