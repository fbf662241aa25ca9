//! Why the kernel refused a DMA map, where the library can find out: type1's mapping limit
//! (ENOSPC from `VFIO_IOMMU_MAP_DMA`) and `RLIMIT_MEMLOCK` (ENOMEM from `VFIO_IOMMU_MAP_DMA`,
//! `IOMMU_IOAS_MAP` and `IOMMU_IOAS_MAP_FILE`). Only refused maps come here: nothing on the
//! success path reads sysfs or `/proc`.

use crate::host::doctor::{self, Finding};
use crate::{Errno, Error, Sysfs};

/// Which kernel code refused a map: the cause of an errno depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapBackend {
    /// `VFIO_IOMMU_MAP_DMA` on a `/dev/vfio/vfio` container: the type1 driver (ENOSPC past
    /// `dma_entry_limit`), or iommufd's compat layer (which has no such limit; the type1
    /// module, and its parameter, is then absent).
    Container,
    /// An iommufd request (`IOMMU_IOAS_MAP`, `IOMMU_IOAS_MAP_FILE`, `IOMMU_IOAS_COPY`): ENOSPC
    /// there means no free IOVA range, never a mapping limit.
    Iommufd,
}

/// `vfio_iommu_type1.dma_entry_limit`, where the type1 module is loaded.
pub fn dma_entry_limit(sysfs: &Sysfs) -> Option<u32> {
    let p = sysfs.root().join("module/vfio_iommu_type1/parameters/dma_entry_limit");
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// The cause of a refused map with `errno`, as far as the machine tells:
///
/// - ENOSPC from the type1 driver: every one of its `dma_entry_limit` mappings is in use
///   ([`Finding::DmaEntryLimit`], the limit read from the module parameter);
/// - ENOMEM with a finite `RLIMIT_MEMLOCK` and without `CAP_IPC_LOCK`: pinning the range would
///   pass the limit (type1 charges `locked_vm` of the process, iommufd that of the user or the
///   process) ([`Finding::MemlockLow`], with the soft limit; the error's target gives the size
///   that was asked).
///
/// `None` otherwise (the errno alone is all that is known).
#[cold]
#[inline(never)]
pub fn map_refusal_cause(errno: Errno, backend: MapBackend, sysfs: &Sysfs) -> Option<Finding> {
    match errno {
        Errno::NOSPC if backend == MapBackend::Container => {
            dma_entry_limit(sysfs).map(|limit| Finding::DmaEntryLimit { limit })
        }
        Errno::NOMEM => {
            let (limit, _) = doctor::memlock_limit();
            let status = std::fs::read_to_string(doctor::proc_dir(sysfs).join("self/status"));
            let exempt = status.is_ok_and(|s| doctor::status_has_ipc_lock(&s));
            (limit != u64::MAX && !exempt).then_some(Finding::MemlockLow { limit, exempt })
        }
        _ => None,
    }
}

/// `err` (a refused map) with its cause attached where [`map_refusal_cause`] finds one.
#[cold]
#[inline(never)]
pub fn explain_map_refusal(err: Error, backend: MapBackend, sysfs: &Sysfs) -> Error {
    match err.errno().and_then(|e| map_refusal_cause(e, backend, sysfs)) {
        Some(cause) => err.with_cause(cause),
        None => err,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg_attr(miri, ignore = "creates files and calls getrlimit, which Miri does not support")]
    fn enospc_from_type1_names_the_limit_only_where_type1_is_loaded() {
        let root = std::env::temp_dir().join(format!("vfio-refusal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let sys = root.join("sys");
        let sysfs = Sysfs::at(&sys, root.join("dev"));
        let e = || Error::kernel("VFIO_IOMMU_MAP_DMA", "container", Errno::NOSPC);
        assert_eq!(explain_map_refusal(e(), MapBackend::Container, &sysfs).cause(), None);
        let params = sys.join("module/vfio_iommu_type1/parameters");
        std::fs::create_dir_all(&params).unwrap();
        std::fs::write(params.join("dma_entry_limit"), "64\n").unwrap();
        let explained = explain_map_refusal(e(), MapBackend::Container, &sysfs);
        assert_eq!(explained.cause(), Some(&Finding::DmaEntryLimit { limit: 64 }));
        let text = explained.to_string();
        assert!(text.contains("64") && text.contains("dma_entry_limit"), "{text}");
        assert_eq!(
            explain_map_refusal(e(), MapBackend::Iommufd, &sysfs).cause(),
            None,
            "iommufd's ENOSPC is about IOVA space"
        );
        let einval = Error::kernel("VFIO_IOMMU_MAP_DMA", "container", Errno::INVAL);
        assert_eq!(explain_map_refusal(einval, MapBackend::Container, &sysfs).cause(), None);
        std::fs::remove_dir_all(root).unwrap();
    }
}
