//! Scaling and group vs cdev side by side: every run here has a group container and a cdev IOAS
//! live at once (one device in each, since a device is in one mode at a time) so the two modes
//! interleave in the same rounds.
//!
//! - X1: the device does not matter (both sit behind the same IOMMU): two devices, same mode.
//! - X2: map + unmap of small and large buffers, cdev vs group.
//! - S1: mapping N separate 4 KiB regions, N = 1, 16, 256, 4096.
//! - S2: N containers, N = 1, 16, 256.

use std::time::{Duration, Instant};

use vfio_core::{Backing, Container, DmaAccess, DmaBuffer, DmaMapping, Mode, PciAddress};

use crate::Ctx;
use crate::dma::time_map_unmap;
use crate::fixtures::{HugePool, IOVA_LARGE, IOVA_SMALL, Ours};
use crate::measure::{BenchResult, Plan, Record, Side, interleave};

/// X1: 4 KiB map + unmap in two containers of the same mode, one per device.
pub fn x1(ctx: &mut Ctx, mode: Mode, edu: &PciAddress, nvme: &PciAddress) -> BenchResult {
    let a = Ours::open(mode, edu)?;
    let b = Ours::open(mode, nvme)?;
    let buf = DmaBuffer::new(4096)?;
    let plan = ctx.plan(301, 100);
    let iters = 16;
    let mut sides = [
        Side::new("edu", iters, |n| time_map_unmap(a.c(), &buf, IOVA_SMALL, n)),
        Side::new("nvme", iters, |n| time_map_unmap(b.c(), &buf, IOVA_SMALL, n)),
    ];
    let t = interleave(plan, &mut sides)?;
    drop(sides);
    ctx.emit(
        Record::new(
            "X1",
            "map + unmap 4 KiB: container with edu vs with nvme",
            mode.to_string(),
        )
        .compare(plan, ("edu", &t[0]), ("nvme", &t[1]), iters)
        .note("check that the device behind a container does not change its map cost"),
    );
    Ok(())
}

/// The group + cdev pair: edu in a group container, nvme in a cdev IOAS.
struct Pair {
    group: Ours,
    cdev: Ours,
}

impl Pair {
    fn open(edu: &PciAddress, nvme: &PciAddress) -> BenchResult<Self> {
        Ok(Pair {
            group: Ours::open(Mode::GROUP, edu)?,
            cdev: Ours::open(Mode::CDEV, nvme)?,
        })
    }
}

/// One cdev-vs-group comparison of map + unmap of `buf`.
fn cdev_vs_group(pair: &Pair, plan: Plan, iters: u64, buf: &DmaBuffer, iova: u64) -> BenchResult<Vec<Vec<f64>>> {
    let mut sides = [
        Side::new("cdev", iters, |n| time_map_unmap(pair.cdev.c(), buf, iova, n)),
        Side::new("group", iters, |n| time_map_unmap(pair.group.c(), buf, iova, n)),
    ];
    interleave(plan, &mut sides)
}

/// X2: map + unmap per size and backing, cdev vs group, through the safe `DmaMapping` (4 KiB
/// pages of a memfd, as `DmaBuffer::new` allocates: iommufd maps a file, never anonymous memory,
/// through the safe API; and 2 MiB hugetlb pages).
pub fn x2(ctx: &mut Ctx, edu: &PciAddress, nvme: &PciAddress) -> BenchResult {
    let pair = Pair::open(edu, nvme)?;
    let backend = match pair.group.backend {
        Some(vfio_group::Backend::Type1) => "type1",
        Some(vfio_group::Backend::IommufdCompat) => "iommufd compat",
        _ => "?",
    };
    let cases: [(usize, Backing, u64, usize); 8] = [
        (4 << 10, Backing::Memfd, 16, 201),
        (64 << 10, Backing::Memfd, 4, 101),
        (2 << 20, Backing::Memfd, 1, 51),
        (64 << 20, Backing::Memfd, 1, 11),
        (1 << 30, Backing::Memfd, 1, 7),
        (2 << 20, Backing::Huge2M, 4, 101),
        (64 << 20, Backing::Huge2M, 1, 21),
        (1 << 30, Backing::Huge2M, 1, 7),
    ];
    for (len, backing, iters, rounds) in cases {
        let what = format!(
            "map + unmap {} {}",
            crate::dma::size_text(len),
            if backing == Backing::Memfd {
                "4 KiB pages (memfd)"
            } else {
                "2 MiB pages"
            }
        );
        let _pool = if backing == Backing::Huge2M {
            match HugePool::reserve(2048, (len as u64) >> 21, ctx.reserve_hugepages) {
                Ok(p) => Some(p),
                Err(why) => {
                    ctx.emit(Record::new("X2", what, "cdev/group").skip(why));
                    continue;
                }
            }
        } else {
            None
        };
        let buf = match DmaBuffer::with_backing(len, backing) {
            Ok(b) => b,
            Err(e) => {
                ctx.emit(Record::new("X2", what, "cdev/group").skip(e.to_string()));
                continue;
            }
        };
        let iova = if len >= 2 << 20 { IOVA_LARGE } else { IOVA_SMALL };
        let plan = ctx.plan(rounds, 1);
        let t = cdev_vs_group(&pair, plan, iters, &buf, iova)?;
        ctx.emit(
            Record::new("X2", what, "cdev/group")
                .compare(plan, ("cdev", &t[0]), ("group", &t[1]), iters)
                .note(format!("group container: {backend}; cdev on nvme, group on edu")),
        );
    }
    Ok(())
}

/// Maps `n` 4 KiB pages of `buf` as separate regions at consecutive IOVAs, then unmaps them
/// one by one, `reps` times; returns the total time.
fn map_regions(c: &dyn Container, buf: &DmaBuffer, n: usize, reps: u64) -> BenchResult<Duration> {
    let base = buf.as_ptr();
    let mut total = Duration::ZERO;
    for _ in 0..reps {
        let t = Instant::now();
        for i in 0..n {
            // SAFETY: each page lies inside `buf`, which outlives the mappings (all removed below
            // before this function returns); no Rust reference reaches it.
            unsafe {
                c.map_dma_raw(
                    base.wrapping_add(i * 4096),
                    4096,
                    IOVA_LARGE + (i as u64) * 4096,
                    DmaAccess::READ_WRITE,
                )?
            };
        }
        for i in 0..n {
            c.unmap_dma(IOVA_LARGE + (i as u64) * 4096, 4096)?;
        }
        total += t.elapsed();
    }
    Ok(total)
}

/// S1: N separate 4 KiB regions, cdev vs group; per-region cost and its growth with N.
pub fn s1(ctx: &mut Ctx, edu: &PciAddress, nvme: &PciAddress) -> BenchResult {
    let pair = Pair::open(edu, nvme)?;
    let buf = DmaBuffer::new(4096 * 4096)?;
    let mut first: Option<(f64, f64)> = None;
    for (n, reps, rounds) in [(1usize, 4u64, 301usize), (16, 1, 101), (256, 1, 31), (4096, 1, 7)] {
        let plan = ctx.plan(rounds, 1);
        let per = reps * n as u64;
        let (buf, pair) = (&buf, &pair);
        let mut sides = [
            Side::new("cdev", per, move |_| map_regions(pair.cdev.c(), buf, n, reps)),
            Side::new("group", per, move |_| map_regions(pair.group.c(), buf, n, reps)),
        ];
        let t = interleave(plan, &mut sides)?;
        drop(sides);
        let r = Record::new(
            "S1",
            format!("map + unmap N = {n} regions of 4 KiB (per region)"),
            "cdev/group",
        )
        .compare(plan, ("cdev", &t[0]), ("group", &t[1]), per);
        let (c, g) = (
            r.a.as_ref().map_or(f64::NAN, |s| s.median),
            r.b.as_ref().map_or(f64::NAN, |s| s.median),
        );
        let (c1, g1) = *first.get_or_insert((c, g));
        let note = format!(
            "per-region cost vs N = 1: cdev x{:.2}, group x{:.2}; total cdev {}, group {}",
            c / c1,
            g / g1,
            crate::measure::fmt_ns(c * n as f64),
            crate::measure::fmt_ns(g * n as f64)
        );
        ctx.emit(r.note(note));
    }
    Ok(())
}

/// S2: N containers. Creating them in both modes (cdev: an iommufd and an IOAS each; group: a
/// `/dev/vfio/vfio` fd each), and in cdev mode a 4 KiB map + unmap in each of N IOASes of one
/// iommufd (a type1 container cannot map before a group joins it, and a group is in one container
/// at a time).
pub fn s2(ctx: &mut Ctx) -> BenchResult {
    let mut first: Option<(f64, f64)> = None;
    for (n, rounds) in [(1usize, 301usize), (16, 101), (256, 15)] {
        let plan = ctx.plan(rounds, 1);
        let reps = if n == 1 { 4 } else { 1 };
        let per = reps * n as u64;
        let mut sides = [
            Side::new("cdev", per, move |_| {
                let mut total = Duration::ZERO;
                for _ in 0..reps {
                    let t = Instant::now();
                    let v: Vec<vfio_cdev::Container> =
                        (0..n).map(|_| vfio_cdev::Container::new()).collect::<Result<_, _>>()?;
                    total += t.elapsed();
                    drop(v);
                }
                Ok(total)
            }),
            Side::new("group", per, move |_| {
                let mut total = Duration::ZERO;
                for _ in 0..reps {
                    let t = Instant::now();
                    let v: Vec<vfio_group::Container> = (0..n)
                        .map(|_| vfio_group::Container::open(vfio_core::Addressing::Iova))
                        .collect::<Result<_, _>>()?;
                    total += t.elapsed();
                    drop(v);
                }
                Ok(total)
            }),
        ];
        let t = interleave(plan, &mut sides)?;
        drop(sides);
        let r = Record::new("S2", format!("create N = {n} containers (per container)"), "cdev/group").compare(
            plan,
            ("cdev", &t[0]),
            ("group", &t[1]),
            per,
        );
        let (c, g) = (
            r.a.as_ref().map_or(f64::NAN, |s| s.median),
            r.b.as_ref().map_or(f64::NAN, |s| s.median),
        );
        let (c1, g1) = *first.get_or_insert((c, g));
        ctx.emit(r.note(format!(
            "per-container cost vs N = 1: cdev x{:.2}, group x{:.2}; cdev: iommufd + IOAS each, group: open + API check",
            c / c1,
            g / g1
        )));
    }
    let buf = DmaBuffer::new(4096)?;
    let mut first: Option<f64> = None;
    for (n, rounds) in [(1usize, 301usize), (16, 101), (256, 15)] {
        let plan = ctx.plan(rounds, 1);
        let iommufd = vfio_cdev::Iommufd::open()?;
        let ioases: Vec<vfio_cdev::Container> = (0..n)
            .map(|_| vfio_cdev::Container::with_iommufd(&iommufd, vfio_core::Addressing::Iova))
            .collect::<Result<_, _>>()?;
        let reps = if n == 1 { 4 } else { 1 };
        let per = reps * n as u64;
        let (ioases_ref, buf_ref) = (&ioases, &buf);
        let mut sides = [Side::new("cdev", per, move |_| {
            let t = Instant::now();
            for _ in 0..reps {
                let maps: Vec<DmaMapping<'_>> = ioases_ref
                    .iter()
                    .map(|c| DmaMapping::new(c, buf_ref, IOVA_SMALL, DmaAccess::READ_WRITE))
                    .collect::<Result<_, _>>()?;
                drop(maps);
            }
            Ok(t.elapsed())
        })];
        let t = interleave(plan, &mut sides)?;
        drop(sides);
        let r = Record::new(
            "S2",
            format!("map + unmap 4 KiB in each of N = {n} IOASes of one iommufd (per IOAS)"),
            "cdev",
        )
        .single(plan, ("cdev", &t[0]), per);
        let c = r.a.as_ref().map_or(f64::NAN, |s| s.median);
        let c1 = *first.get_or_insert(c);
        ctx.emit(r.note(format!(
            "per-IOAS cost vs N = 1: x{:.2}; no device attached to these IOASes",
            c / c1
        )));
        drop(ioases);
        drop(iommufd);
    }
    ctx.emit(Record::new("S2", "map + unmap 4 KiB in each of N type1 containers", "group").skip(
        "a type1 container maps only once a group is in it, and a group is in one container at a time: N containers need N devices",
    ));
    Ok(())
}
