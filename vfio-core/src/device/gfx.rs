//! Display planes of mediated display devices: `VFIO_DEVICE_QUERY_GFX_PLANE` and
//! `VFIO_DEVICE_GET_GFX_DMABUF` (Linux >= 4.16). A device shows its framebuffer either as a
//! region of its own (mdpy: [`PlaneSource::Region`]) or as a dma-buf the caller asks for
//! (mbochs, Intel GVT-g: [`PlaneSource::Dmabuf`]).

use std::num::NonZeroU32;
use std::os::fd::{FromRawFd, OwnedFd};

use vfio_sys as sys;
use zerocopy::FromZeros;

use super::Device;
use crate::ioctl::{self, requests as req};
use crate::{DmaBuf, Errno, Error, Result};

/// How a device hands out a plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaneKind {
    /// As a device region (`VFIO_GFX_PLANE_TYPE_REGION`).
    Region,
    /// As a dma-buf (`VFIO_GFX_PLANE_TYPE_DMABUF`).
    Dmabuf,
}

impl PlaneKind {
    fn raw(self) -> u32 {
        match self {
            PlaneKind::Region => sys::VFIO_GFX_PLANE_TYPE_REGION,
            PlaneKind::Dmabuf => sys::VFIO_GFX_PLANE_TYPE_DMABUF,
        }
    }
}

/// Which plane (DRM's `DRM_PLANE_TYPE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
#[non_exhaustive]
pub enum DrmPlaneType {
    /// `DRM_PLANE_TYPE_OVERLAY`.
    Overlay = 0,
    /// `DRM_PLANE_TYPE_PRIMARY`: the framebuffer.
    Primary = 1,
    /// `DRM_PLANE_TYPE_CURSOR`.
    Cursor = 2,
}

/// The id of a plane's dma-buf, for [`Device::gfx_dmabuf`] (never 0: 0 means no plane).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DmabufId(pub NonZeroU32);

/// Where a plane's pixels are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaneSource {
    /// In this device region (map it with [`Device::map_region`]).
    Region(u32),
    /// In the dma-buf with this id ([`Device::gfx_dmabuf`]).
    Dmabuf(DmabufId),
}

/// A plane as `VFIO_DEVICE_QUERY_GFX_PLANE` describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GfxPlane {
    /// DRM fourcc format (e.g. `0x34325258`, XR24: XRGB8888).
    pub drm_format: u32,
    /// DRM format modifier (tiling; 0 is linear).
    pub drm_format_mod: u64,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Bytes per line.
    pub stride: u32,
    /// Size in bytes.
    pub size: u32,
    /// Cursor plane: horizontal position.
    pub x_pos: u32,
    /// Cursor plane: vertical position.
    pub y_pos: u32,
    /// Cursor plane: horizontal hotspot.
    pub x_hot: u32,
    /// Cursor plane: vertical hotspot.
    pub y_hot: u32,
    /// Where its pixels are.
    pub source: PlaneSource,
}

impl Device {
    fn gfx_query(
        &self,
        flags: u32,
        plane: DrmPlaneType,
    ) -> std::result::Result<sys::vfio_device_gfx_plane_info, Errno> {
        let mut info = sys::vfio_device_gfx_plane_info::new_zeroed();
        info.flags = flags;
        info.drm_plane_type = plane as u32;
        ioctl::call::<req::DeviceQueryGfxPlane>(self.ioctl_fd(), &mut info)?;
        Ok(info)
    }

    /// Whether the device hands out planes of `kind`: `VFIO_DEVICE_QUERY_GFX_PLANE` with
    /// `VFIO_GFX_PLANE_TYPE_PROBE`. EINVAL (another kind) and ENOTTY (not a display device)
    /// are `false`. Errors: any other errno.
    #[doc(alias = "VFIO_DEVICE_QUERY_GFX_PLANE")]
    pub fn gfx_plane_supported(&self, kind: PlaneKind) -> Result<bool> {
        match self.gfx_query(sys::VFIO_GFX_PLANE_TYPE_PROBE | kind.raw(), DrmPlaneType::Primary) {
            Ok(_) => Ok(true),
            Err(Errno::INVAL | Errno::NOTTY) => Ok(false),
            Err(e) => Err(ioctl::kernel_error::<req::DeviceQueryGfxPlane>(self.name(), e)),
        }
    }

    /// The current `plane` of `kind` (`VFIO_DEVICE_QUERY_GFX_PLANE`), `None` when there is none
    /// now (the guest set no mode: the kernel answers zeros, or dma-buf id 0). mbochs answers
    /// the first query after a mode change with ENOMEM although it made the dma-buf (a sample
    /// driver bug, samples/vfio-mdev/mbochs.c): one retry after ENOMEM is done here. Errors:
    /// the errno (EINVAL: the device does not hand out this kind; ENOTTY: not a display
    /// device), naming the device and plane.
    #[doc(alias = "VFIO_DEVICE_QUERY_GFX_PLANE")]
    pub fn query_gfx_plane(&self, kind: PlaneKind, plane: DrmPlaneType) -> Result<Option<GfxPlane>> {
        let info = match self.gfx_query(kind.raw(), plane) {
            Err(Errno::NOMEM) => self.gfx_query(kind.raw(), plane),
            other => other,
        }
        .map_err(|e| {
            ioctl::kernel_error::<req::DeviceQueryGfxPlane>(format!("{} {plane:?} {kind:?} plane", self.name()), e)
        })?;
        // SAFETY: both fields of the union are u32, for which every bit pattern is valid.
        let id = unsafe { info.__bindgen_anon_1.dmabuf_id };
        let source = match kind {
            PlaneKind::Dmabuf => match NonZeroU32::new(id) {
                Some(id) => PlaneSource::Dmabuf(DmabufId(id)),
                None => return Ok(None),
            },
            PlaneKind::Region => PlaneSource::Region(id),
        };
        if info.width == 0 && info.height == 0 && info.size == 0 && info.drm_format == 0 {
            return Ok(None);
        }
        Ok(Some(GfxPlane {
            drm_format: info.drm_format,
            drm_format_mod: info.drm_format_mod,
            width: info.width,
            height: info.height,
            stride: info.stride,
            size: info.size,
            x_pos: info.x_pos,
            y_pos: info.y_pos,
            x_hot: info.x_hot,
            y_hot: info.y_hot,
            source,
        }))
    }

    /// The dma-buf of a plane (`VFIO_DEVICE_GET_GFX_DMABUF`), as an owned fd with
    /// close-on-exec set (the kernel returns it without: it is set at once, so only a fork by
    /// another thread in between could inherit it). Errors: ENOENT for an id the device does
    /// not know (a plane that is gone); ENOTTY for a device without dma-bufs; the errno of
    /// `fcntl` or `lseek`.
    #[doc(alias = "VFIO_DEVICE_GET_GFX_DMABUF")]
    pub fn gfx_dmabuf(&self, id: DmabufId) -> Result<DmaBuf> {
        let mut raw_id = id.0.get();
        let target = || format!("{} dma-buf {}", self.name(), id.0);
        let fd = ioctl::call::<req::DeviceGetGfxDmabuf>(self.ioctl_fd(), &mut raw_id)
            .map_err(|e| ioctl::kernel_error::<req::DeviceGetGfxDmabuf>(target(), e))?;
        if fd < 0 {
            return Err(Error::malformed(
                "VFIO_DEVICE_GET_GFX_DMABUF",
                target(),
                format!("fd {fd}"),
            ));
        }
        // SAFETY: on success the ioctl returns a new fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC)
            .map_err(|e| Error::kernel("fcntl(F_SETFD, FD_CLOEXEC)", target(), e))?;
        DmaBuf::new(fd, target())
    }
}
