//! DMA mapping: P1 (ours vs raw ioctls), P2 (ours vs rust-vmm's crates), P4 (1 GiB, and the
//! default huge-page path vs 4 KiB pages) and P5 (map per I/O vs the IOVA cache).

use std::hint::black_box;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vfio_core::{Backing, Container, DmaAccess, DmaBuffer, DmaMapping, DmaPool, IovaRange, Mode, PciAddress};

use crate::Ctx;
use crate::fixtures::{HugePool, IOVA_LARGE, IOVA_SMALL, Ours, RawDma, dup};
use crate::measure::{BenchResult, Goal, Record, Side, interleave};

/// One map + unmap of `buf` at `iova` through vfio-rs's safe API.
#[inline]
fn ours_map_unmap(c: &dyn Container, buf: &DmaBuffer, iova: u64) -> BenchResult {
    let m = DmaMapping::new(c, buf, iova, DmaAccess::READ_WRITE)?;
    black_box(m.device_addr());
    drop(m);
    Ok(())
}

/// A side running `n` map + unmap pairs through vfio-rs.
fn ours_side<'a>(name: &'static str, iters: u64, c: &'a dyn Container, buf: &'a DmaBuffer, iova: u64) -> Side<'a> {
    Side::new(name, iters, move |n| {
        let t = Instant::now();
        for _ in 0..n {
            ours_map_unmap(c, buf, iova)?;
        }
        Ok(t.elapsed())
    })
}

/// A side running `n` map + unmap pairs with bare libc ioctls.
fn raw_side<'a>(iters: u64, raw: &'a RawDma, buf: &'a DmaBuffer, iova: u64) -> Side<'a> {
    Side::new("raw ioctl", iters, move |n| {
        let len = buf.len() as u64;
        let t = Instant::now();
        for _ in 0..n {
            // SAFETY: `buf` outlives the mapping, which is removed right below; nothing holds a
            // reference into it.
            unsafe { raw.map(buf.as_ptr(), iova, len)? };
            raw.unmap(iova, len)?;
        }
        Ok(t.elapsed())
    })
}

/// A side running `n` map + unmap pairs with the bare ioctl vfio-rs's safe map issues here
/// (by file on iommufd, by address on the type1 driver: [`RawDma::safe_route`]).
fn raw_safe_side<'a>(iters: u64, raw: &'a RawDma, buf: &'a DmaBuffer, iova: u64) -> Side<'a> {
    if !raw.maps_by_file() {
        // The very loop of the by-address floor, not a detour through `map_like_safe`.
        return raw_side(iters, raw, buf, iova);
    }
    Side::new("raw ioctl", iters, move |n| {
        let len = buf.len() as u64;
        let t = Instant::now();
        for _ in 0..n {
            raw.map_like_safe(buf, iova)?;
            raw.unmap_like_safe(iova, len)?;
        }
        Ok(t.elapsed())
    })
}

/// P1 (4 KiB map + unmap, ours vs the floor) and P5 (map per I/O vs the IOVA cache) in `mode`.
pub fn p1_p5(ctx: &mut Ctx, mode: Mode, addr: &PciAddress) -> BenchResult {
    let f = Ours::open(mode, addr)?;
    let buf = DmaBuffer::new(4096)?;
    let plan = ctx.plan(301, 100);
    let iters = 16;
    if ctx.wants("P1") {
        let mut sides = [
            ours_side("vfio-rs", iters, f.c(), &buf, IOVA_SMALL),
            raw_safe_side(iters, &f.raw, &buf, IOVA_SMALL),
        ];
        let t = interleave(plan, &mut sides)?;
        drop(sides);
        ctx.emit(
            Record::new("P1", "map + unmap 4 KiB", mode.to_string())
                .goal(Goal::AtMost(1.01))
                .compare(plan, ("vfio-rs", &t[0]), ("raw ioctl", &t[1]), iters)
                .note(format!(
                    "safe DmaMapping vs the same kernel request, {}",
                    f.raw.safe_route()
                )),
        );
        // The resolution of the row above: the same loop on both sides, same container and
        // buffer. Whatever this shows is noise, not code.
        let mut sides = [
            raw_side(iters, &f.raw, &buf, IOVA_SMALL),
            raw_side(iters, &f.raw, &buf, IOVA_SMALL),
        ];
        let t = interleave(plan, &mut sides)?;
        drop(sides);
        ctx.emit(
            Record::new("P1", "noise control: raw ioctl vs itself", mode.to_string())
                .compare(plan, ("raw ioctl A", &t[0]), ("raw ioctl B", &t[1]), iters)
                .note("identical code, container and buffer on both sides: the resolution of P1"),
        );
    }
    if ctx.wants("P5") {
        // A driver's buffers, mapped once: 64 pages from a pool.
        let ranges = [IovaRange {
            start: 0x20_0000,
            last: IOVA_SMALL - 1,
        }];
        let mut pool = DmaPool::with_ranges(f.c(), &ranges);
        let mut ptrs = Vec::new();
        for _ in 0..64 {
            let h = pool.alloc(4096, DmaAccess::READ_WRITE)?;
            ptrs.push(pool.buffer(h)?.as_ptr() as usize);
        }
        let translate_iters = 2000;
        let pool_ref = &pool;
        let ptrs_ref = &ptrs;
        let mut sides = [
            ours_side("map + unmap per I/O", iters, f.c(), &buf, IOVA_SMALL),
            Side::new("IOVA cache translate", translate_iters, move |n| {
                let mut acc = 0u64;
                let t = Instant::now();
                for i in 0..n as usize {
                    // A 512-byte I/O somewhere in one of the buffers.
                    let p = ptrs_ref[i % 64] + (i * 512) % 4096;
                    acc ^= pool_ref
                        .translate(black_box(p as *const u8), 512)
                        .ok_or("IOVA cache miss")?;
                }
                black_box(acc);
                Ok(t.elapsed())
            }),
        ];
        let t = interleave(plan, &mut sides)?;
        drop(sides);
        ctx.emit(
            Record::new("P5", "per-I/O cost: map + unmap vs IOVA cache", mode.to_string())
                .goal(Goal::AtLeast(100.0))
                .compare(
                    plan,
                    ("map + unmap per I/O", &t[0]),
                    ("IOVA cache translate", &t[1]),
                    iters,
                )
                .note(format!(
                    "DmaPool::translate of 512-byte I/Os over 64 mapped 4 KiB buffers, {translate_iters} per round"
                )),
        );
    }
    Ok(())
}

/// P2 in group mode: vfio-ioctls' `VfioContainer` owns the container (and the device's group);
/// vfio-rs adopts a duplicate of its fd, and the raw loop uses another, so all three sides map
/// in the same kernel container.
pub fn p2_group(ctx: &mut Ctx, addr: &PciAddress) -> BenchResult {
    use vfio_ioctls::{VfioContainer, VfioDevice, VfioOps};
    let theirs = Arc::new(VfioContainer::new(None)?);
    let path = std::path::PathBuf::from(format!("/sys/bus/pci/devices/{addr}"));
    let ops: Arc<dyn VfioOps> = theirs.clone();
    let device = VfioDevice::new(&path, ops, false)?;
    let ours = vfio_group::Container::from_fd(dup(theirs.as_raw_fd())?, vfio_core::Addressing::Iova)?;
    let raw = RawDma::type1(dup(theirs.as_raw_fd())?);
    let buf = DmaBuffer::new(4096)?;
    let plan = ctx.plan(301, 100);
    let iters = 16;
    let theirs_ref = &theirs;
    let buf_ref = &buf;
    let mut sides = [
        ours_side("vfio-rs", iters, &ours, &buf, IOVA_SMALL),
        Side::new("vfio-ioctls", iters, move |n| {
            let t = Instant::now();
            for _ in 0..n {
                // SAFETY: `buf` outlives the mapping, removed right below; no reference into it.
                unsafe { theirs_ref.vfio_dma_map(IOVA_SMALL, buf_ref.len(), buf_ref.as_ptr())? };
                theirs_ref.vfio_dma_unmap(IOVA_SMALL, buf_ref.len())?;
            }
            Ok(t.elapsed())
        }),
        raw_side(iters, &raw, &buf, IOVA_SMALL),
    ];
    let t = interleave(plan, &mut sides)?;
    drop(sides);
    emit_p2(ctx, "group", "vfio-ioctls 0.10", plan, iters, &t);
    drop(device);
    Ok(())
}

/// P2 in cdev mode: vfio-rs owns the iommufd and IOAS (with the device attached); iommufd-ioctls'
/// `IommuFd` adopts a duplicate of the iommufd and maps in the same IOAS, as does the raw loop.
pub fn p2_cdev(ctx: &mut Ctx, addr: &PciAddress) -> BenchResult {
    use iommufd_bindings::iommufd as ib;
    let f = Ours::open(Mode::CDEV, addr)?;
    let raw_fd = f.raw.raw_fd();
    let theirs = iommufd_ioctls::IommuFd::new_from_fd(std::fs::File::from(dup(raw_fd)?));
    let ioas_id = f.raw.ioas_id().ok_or("the cdev fixture has no IOAS")?;
    let buf = DmaBuffer::new(4096)?;
    let plan = ctx.plan(301, 100);
    let iters = 16;
    let theirs_ref = &theirs;
    let buf_ref = &buf;
    let c = f.c();
    let mut sides = [
        // By address, as iommufd-ioctls maps: `DmaMapping` of this memfd buffer would map it with
        // IOMMU_IOAS_MAP_FILE, other kernel work (P1 compares that with its own raw request).
        Side::new("vfio-rs", iters, move |n| {
            let t = Instant::now();
            for _ in 0..n {
                // SAFETY: `buf` outlives the mapping, removed right below; no reference into it.
                black_box(unsafe { c.map_dma_raw(buf_ref.as_ptr(), 4096, IOVA_SMALL, DmaAccess::READ_WRITE)? });
                c.unmap_dma(IOVA_SMALL, 4096)?;
            }
            Ok(t.elapsed())
        }),
        Side::new("iommufd-ioctls", iters, move |n| {
            let t = Instant::now();
            for _ in 0..n {
                let map = ib::iommu_ioas_map {
                    size: std::mem::size_of::<ib::iommu_ioas_map>() as u32,
                    flags: ib::iommufd_ioas_map_flags_IOMMU_IOAS_MAP_FIXED_IOVA
                        | ib::iommufd_ioas_map_flags_IOMMU_IOAS_MAP_READABLE
                        | ib::iommufd_ioas_map_flags_IOMMU_IOAS_MAP_WRITEABLE,
                    ioas_id,
                    __reserved: 0,
                    user_va: buf_ref.as_ptr() as u64,
                    length: buf_ref.len() as u64,
                    iova: IOVA_SMALL,
                };
                theirs_ref.map_iommu_ioas(&map)?;
                let mut unmap = ib::iommu_ioas_unmap {
                    size: std::mem::size_of::<ib::iommu_ioas_unmap>() as u32,
                    ioas_id,
                    iova: IOVA_SMALL,
                    length: buf_ref.len() as u64,
                };
                theirs_ref.unmap_iommu_ioas(&mut unmap)?;
            }
            Ok(t.elapsed())
        }),
        raw_side(iters, &f.raw, &buf, IOVA_SMALL),
    ];
    let t = interleave(plan, &mut sides)?;
    drop(sides);
    emit_p2(ctx, "cdev", "iommufd-ioctls 0.4", plan, iters, &t);
    Ok(())
}

fn emit_p2(ctx: &mut Ctx, mode: &str, theirs: &'static str, plan: crate::measure::Plan, iters: u64, t: &[Vec<f64>]) {
    let their_name = if mode == "group" {
        "vfio-ioctls"
    } else {
        "iommufd-ioctls"
    };
    ctx.emit(
        Record::new("P2", format!("map + unmap 4 KiB vs {theirs}"), mode)
            .goal(Goal::AtMost(1.0))
            .compare(plan, ("vfio-rs", &t[0]), (their_name, &t[1]), iters)
            .note("same kernel container, interleaved with the raw loop"),
    );
    ctx.emit(
        Record::new("P2", format!("{theirs} vs raw ioctl"), mode)
            .compare(plan, (their_name, &t[1]), ("raw ioctl", &t[2]), iters)
            .note("reference: what the rust-vmm crate adds over the floor"),
    );
    ctx.emit(
        Record::new("P2", "vfio-rs vs raw ioctl (same rounds)", mode)
            .compare(plan, ("vfio-rs", &t[0]), ("raw ioctl", &t[2]), iters)
            .note("reference: P1 measured again in the P2 rounds"),
    );
}

/// The largest 4 KiB-page buffer (`DmaBuffer::new`) up to `max` bytes this guest can populate (halving on ENOMEM).
fn largest_anonymous(max: usize) -> BenchResult<DmaBuffer> {
    let mut len = max;
    loop {
        match DmaBuffer::new(len) {
            Ok(b) => return Ok(b),
            Err(e) if len > (64 << 20) => {
                println!("    {len} bytes of memory refused ({e}); halving");
                len /= 2;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

pub fn size_text(len: usize) -> String {
    if len >= 1 << 30 && len % (1 << 30) == 0 {
        format!("{} GiB", len >> 30)
    } else if len >= 1 << 20 && len % (1 << 20) == 0 {
        format!("{} MiB", len >> 20)
    } else {
        format!("{} KiB", len >> 10)
    }
}

/// P4 in `mode`: 1 GiB map + unmap ours vs raw, and the default DMA buffer path (huge pages when
/// the system has them) vs 4 KiB pages (`DmaBuffer::new`, a memfd).
pub fn p4(ctx: &mut Ctx, mode: Mode, addr: &PciAddress) -> BenchResult {
    let f = Ours::open(mode, addr)?;
    let anon = largest_anonymous(1 << 30)?;
    let len = anon.len();
    let size = size_text(len);
    let plan = ctx.plan(11, 1);
    let shrunk = if len < 1 << 30 {
        format!("1 GiB did not fit in the guest; {size} used")
    } else {
        String::new()
    };
    if ctx.wants("P4") {
        let mut sides = [
            ours_side("vfio-rs", 1, f.c(), &anon, IOVA_LARGE),
            // The request the safe map issues: by file on iommufd, by address on type1.
            raw_safe_side(1, &f.raw, &anon, IOVA_LARGE),
        ];
        let t = interleave(plan, &mut sides)?;
        drop(sides);
        ctx.emit(
            Record::new("P4", format!("map + unmap {size} 4 KiB pages"), mode.to_string())
                .goal(Goal::AtMost(1.01))
                .compare(plan, ("vfio-rs", &t[0]), ("raw ioctl", &t[1]), 1)
                .note(format!("the raw side maps {}", f.raw.safe_route()))
                .note(shrunk.clone())
                .note("DmaBuffer::new (4 KiB pages of a memfd) through DmaMapping vs the same kernel request"),
        );
    }
    let type1 = f.backend == Some(vfio_group::Backend::Type1);
    if ctx.wants("P4") {
        // The default path: DmaBuffer::new_preferred (1 GiB pages, else 2 MiB, else anonymous).
        let preferred = DmaBuffer::new_preferred(len)?;
        let backing = preferred.backing();
        let mut sides = [
            ours_side("4 KiB pages", 1, f.c(), &anon, IOVA_LARGE),
            ours_side("default path", 1, f.c(), &preferred, IOVA_LARGE),
        ];
        let t = interleave(plan, &mut sides)?;
        drop(sides);
        let mut r = Record::new(
            "P4",
            format!("map + unmap {size}: 4 KiB pages vs default path"),
            mode.to_string(),
        )
        .compare(plan, ("4 KiB pages", &t[0]), ("default path", &t[1]), 1)
        .note(format!("DmaBuffer::new_preferred chose {backing:?}"))
        .note(shrunk.clone());
        if type1 {
            r = r.goal(Goal::AtLeast(3.0));
        } else if mode == Mode::GROUP {
            r = r.note("goal applies to the type1 driver; this container is iommufd's compat layer");
        }
        ctx.emit(r);
    }
    if ctx.wants("P4") {
        // Each huge-page size on its own, for the docs.
        for (backing, kb) in [(Backing::Huge2M, 2048u64), (Backing::Huge1G, 1 << 20)] {
            let what = format!("map + unmap {size}: 4 KiB pages vs {backing:?}");
            let pages = (len as u64).div_ceil(kb * 1024);
            let pool = match HugePool::reserve(kb, pages, ctx.reserve_hugepages) {
                Ok(p) => p,
                Err(why) => {
                    ctx.emit(Record::new("P4", what, mode.to_string()).skip(why));
                    continue;
                }
            };
            let huge = match DmaBuffer::with_backing(len, backing) {
                Ok(b) => b,
                Err(e) => {
                    ctx.emit(Record::new("P4", what, mode.to_string()).skip(e.to_string()));
                    continue;
                }
            };
            let mut sides = [
                ours_side("4 KiB pages", 1, f.c(), &anon, IOVA_LARGE),
                ours_side("huge pages", 1, f.c(), &huge, IOVA_LARGE),
            ];
            let t = interleave(plan, &mut sides)?;
            drop(sides);
            ctx.emit(
                Record::new("P4", what, mode.to_string())
                    .compare(plan, ("4 KiB pages", &t[0]), (huge_name(backing), &t[1]), 1)
                    .note(shrunk.clone()),
            );
            drop(huge);
            drop(pool);
        }
    }
    Ok(())
}

fn huge_name(b: Backing) -> &'static str {
    match b {
        Backing::Huge2M => "2 MiB pages",
        Backing::Huge1G => "1 GiB pages",
        Backing::Anonymous => "anonymous",
        Backing::Memfd => "memfd",
        _ => "other",
    }
}

/// Times `n` map + unmap pairs of `buf` at `iova` through vfio-rs (for the scaling runs).
pub fn time_map_unmap(c: &dyn Container, buf: &DmaBuffer, iova: u64, n: u64) -> BenchResult<Duration> {
    let t = Instant::now();
    for _ in 0..n {
        ours_map_unmap(c, buf, iova)?;
    }
    Ok(t.elapsed())
}

/// P1 decomposed: the floor, the same ioctls through vfio-core's ioctl helper (rustix), the
/// container trait's raw map called directly; then the safe map's own floor (by file on
/// iommufd), `Container::map_dma` (the safe map's checks) and the `DmaMapping` guard,
/// interleaved, to show where the wrapper's cost sits.
pub fn p1_layers(ctx: &mut Ctx, mode: Mode, addr: &PciAddress) -> BenchResult {
    let f = Ours::open(mode, addr)?;
    let buf = DmaBuffer::new(4096)?;
    let plan = ctx.plan(301, 100);
    let iters = 16;
    let c = f.c();
    let raw = &f.raw;
    let bufr = &buf;
    let mut sides = [
        raw_side(iters, raw, bufr, IOVA_SMALL),
        Side::new("rustix ioctl", iters, move |n| {
            let t = Instant::now();
            for _ in 0..n {
                // SAFETY: as in raw_side.
                unsafe { raw.map_rustix(bufr.as_ptr(), IOVA_SMALL, 4096)? };
                raw.unmap_rustix(IOVA_SMALL, 4096)?;
            }
            Ok(t.elapsed())
        }),
        Side::new("Container trait", iters, move |n| {
            let t = Instant::now();
            for _ in 0..n {
                // SAFETY: as in raw_side.
                black_box(unsafe { c.map_dma_raw(bufr.as_ptr(), 4096, IOVA_SMALL, DmaAccess::READ_WRITE)? });
                c.unmap_dma(IOVA_SMALL, 4096)?;
            }
            Ok(t.elapsed())
        }),
        raw_safe_side(iters, raw, bufr, IOVA_SMALL),
        Side::new("Container::map_dma", iters, move |n| {
            let t = Instant::now();
            for _ in 0..n {
                black_box(c.map_dma(bufr, IOVA_SMALL, DmaAccess::READ_WRITE)?);
                c.unmap_dma(IOVA_SMALL, 4096)?;
            }
            Ok(t.elapsed())
        }),
        ours_side("DmaMapping", iters, c, bufr, IOVA_SMALL),
    ];
    let t = interleave(plan, &mut sides)?;
    drop(sides);
    // The raw layers against the by-address floor; the safe ones against the request the safe
    // map issues (the same floor on the type1 driver, IOMMU_IOAS_MAP_FILE on iommufd).
    let route = raw.safe_route();
    for (i, name, floor) in [
        (1, "rustix ioctl", 0),
        (2, "Container trait", 0),
        (4, "Container::map_dma", 3),
        (5, "DmaMapping", 3),
    ] {
        let mut r = Record::new("P1", format!("map + unmap 4 KiB, layer: {name}"), mode.to_string()).compare(
            plan,
            (name, &t[i]),
            ("raw ioctl", &t[floor]),
            iters,
        );
        if floor == 3 {
            r = r.note(format!("floor: the safe map's request, {route}"));
        } else {
            r = r.note("floor: map by address");
        }
        ctx.emit(r);
    }
    Ok(())
}
