//! The running kernel's version and the features of vfio-rs that need a newer kernel than
//! their mode: the one table in code behind README.md's feature table.

use std::fmt;

/// A kernel version, `major.minor` (the patch level does not decide any VFIO feature).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KernelVersion {
    /// The major number (`7` of `7.3.4`).
    pub major: u32,
    /// The minor number (`3` of `7.3.4`).
    pub minor: u32,
}

impl KernelVersion {
    /// `major.minor`.
    pub const fn new(major: u32, minor: u32) -> Self {
        KernelVersion { major, minor }
    }

    /// Parses a release string as `uname -r` (or `/proc/sys/kernel/osrelease`) gives it:
    /// `7.3.4`, `6.1.0-28-amd64`, `6.6.0-rc1+`. `None` when it does not start with
    /// `<number>.<number>`.
    pub fn parse_release(release: &str) -> Option<Self> {
        let mut parts = release.trim().split(|c: char| !c.is_ascii_digit());
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some(KernelVersion { major, minor })
    }
}

impl fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// One row of the feature table: a feature and the first mainline kernel that has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelFeature {
    /// What the feature is, as README.md's table names it.
    pub name: &'static str,
    /// Where vfio-rs offers it.
    pub api: &'static str,
    /// The first mainline release that has it.
    pub since: KernelVersion,
}

const fn row(name: &'static str, api: &'static str, major: u32, minor: u32) -> KernelFeature {
    KernelFeature {
        name,
        api,
        since: KernelVersion::new(major, minor),
    }
}

/// The features that need a newer kernel than their mode, as first released in mainline (the
/// same rows as README.md's feature table; distribution kernels may backport). Sorted by
/// version.
pub const KERNEL_FEATURES: &[KernelFeature] = &[
    row("no-IOMMU group mode", "Mode::GROUP_NOIOMMU", 4, 5),
    row("ioeventfd", "Device::add_ioeventfd", 4, 17),
    row("SR-IOV VF token", "Device::set_vf_token", 5, 7),
    row("type1 dirty page tracking", "vfio_group::Container::dirty_*", 5, 8),
    row("device features", "Device::feature_support", 5, 17),
    row("VFIO migration v2", "Device::migration", 5, 18),
    row("low-power entry/exit", "Device::low_power_enter", 6, 0),
    row("device DMA logging", "Device::start_dma_logging", 6, 1),
    row(
        "iommufd, IOAS, HWPT, compat container",
        "vfio_cdev::{Iommufd, Ioas, Hwpt}",
        6,
        2,
    ),
    row("PRE_COPY, MIG_DATA_SIZE", "SaveStream::precopy_info", 6, 2),
    row("MSI-X vectors added while enabled", "PciDevice::set_msix_vectors", 6, 5),
    row("device cdev (cdev mode)", "Mode::CDEV, vfio_cdev", 6, 6),
    row("HWPT dirty tracking", "vfio_cdev::Hwpt", 6, 7),
    row("bus mastering without config space", "Device::set_bus_master", 6, 17),
    row("zPCI error report", "Device::zpci_error", 6, 19),
    row("MIG_PRECOPY_INFOv2", "Migration::enable_precopy_info_v2", 7, 1),
    row("cdev without an IOMMU", "Mode::CDEV_NOIOMMU", 7, 3),
];

/// The feature of [`KERNEL_FEATURES`] named `name`.
pub fn kernel_feature(name: &str) -> Option<&'static KernelFeature> {
    KERNEL_FEATURES.iter().find(|f| f.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_parse() {
        assert_eq!(KernelVersion::parse_release("7.3.4\n"), Some(KernelVersion::new(7, 3)));
        assert_eq!(
            KernelVersion::parse_release("6.1.0-28-amd64"),
            Some(KernelVersion::new(6, 1))
        );
        assert_eq!(KernelVersion::parse_release("6.6-rc1+"), Some(KernelVersion::new(6, 6)));
        assert_eq!(KernelVersion::parse_release("linux"), None);
        assert!(KernelVersion::new(6, 10) > KernelVersion::new(6, 9));
    }

    #[test]
    fn table_is_sorted_and_names_are_unique() {
        for w in KERNEL_FEATURES.windows(2) {
            assert!(w[0].since <= w[1].since, "{w:?}");
        }
        for f in KERNEL_FEATURES {
            assert_eq!(kernel_feature(f.name), Some(f));
        }
        assert_eq!(
            kernel_feature("device cdev (cdev mode)").unwrap().since.to_string(),
            "6.6"
        );
    }
}
