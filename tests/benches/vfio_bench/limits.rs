//! P9 (issue #20): many small buffers. N 4 KiB buffers made DMA-ready through [`DmaPool`] (its
//! public API as it is: `alloc`, then dropping the pool) against one mapping per buffer (by
//! address, `Container::map_dma_raw`, as the pool maps), each side timed over the buffers' whole life (allocate, map, unmap, free), per buffer.
//!
//! type1 keeps one `vfio_dma` entry per mapping and refuses more than its `dma_entry_limit`
//! (65,535 by default; ENOSPC): one mapping per buffer cannot reach 100,000 there, and neither
//! can a pool that maps each buffer separately. Both are tried once at 100,000 first; a side
//! that fails becomes a skipped row saying at which buffer and why, and the timed comparison
//! runs at the largest count both sides reach (60,000 under type1's default limit).

use std::hint::black_box;
use std::time::{Duration, Instant};

use vfio_core::{Backing, Container, DmaAccess, DmaBuffer, DmaPool, Mode, PciAddress};

use crate::Ctx;
use crate::fixtures::Ours;
use crate::measure::{BenchResult, Plan, Record, Side, interleave};

/// Where the one-mapping-each side puts its buffers: above 4 GiB, one page apart.
const IOVA_BASE: u64 = 0x1_0000_0000;
/// The count.
const WANTED: u64 = 100_000;
/// Below type1's default `dma_entry_limit` (65,535), with room for nothing else.
const UNDER_TYPE1: u64 = 60_000;

/// `n` buffers through one pool; the pool's drop unmaps and frees them.
fn pool_side(c: &dyn Container, n: u64) -> Result<Duration, String> {
    let t = Instant::now();
    let mut pool = DmaPool::new(c).map_err(|e| e.to_string())?;
    for i in 0..n {
        let h = pool
            .alloc(4096, DmaAccess::READ_WRITE)
            .map_err(|e| format!("buffer {i}: {e}"))?;
        black_box(h);
    }
    drop(pool);
    Ok(t.elapsed())
}

/// `n` anonymous buffers, one mapping each, by address as the pool maps
/// ([`Container::map_dma_raw`]; the safe `DmaMapping` of a cdev container takes only memfd
/// buffers, and 100,000 memfds are past the fd and mapping-count limits); unmapped, then freed.
fn each_side(c: &dyn Container, n: u64) -> Result<Duration, String> {
    let t = Instant::now();
    let mut bufs = Vec::with_capacity(n as usize);
    for i in 0..n {
        bufs.push(DmaBuffer::with_backing(4096, Backing::Anonymous).map_err(|e| format!("buffer {i}: {e}"))?);
    }
    let mut mapped = 0;
    let mut res = Ok(());
    for (i, b) in bufs.iter().enumerate() {
        let iova = IOVA_BASE + 4096 * i as u64;
        // SAFETY: `b` stays allocated and untouched until every mapping is removed below (a
        // failed unmap leaks all the buffers instead of freeing them).
        if let Err(e) = unsafe { c.map_dma_raw(b.as_ptr(), 4096, iova, DmaAccess::READ_WRITE) } {
            res = Err(format!("mapping {i}: {e}"));
            break;
        }
        mapped += 1;
    }
    for i in 0..mapped {
        if let Err(e) = c.unmap_dma(IOVA_BASE + 4096 * i as u64, 4096) {
            std::mem::forget(bufs);
            return Err(format!("unmap {i}: {e}"));
        }
    }
    drop(bufs);
    res.map(|()| t.elapsed())
}

/// P9 in `mode`: the 100,000 attempt of each side, then the timed comparison.
pub fn p9(ctx: &mut Ctx, mode: Mode, addr: &PciAddress) -> BenchResult {
    let f = Ours::open(mode, addr)?;
    let c = f.c();
    let m = mode.to_string();
    let wanted = if ctx.quick { WANTED / 10 } else { WANTED };
    let pool_ok = pool_side(c, wanted);
    let each_ok = each_side(c, wanted);
    let plan = Plan { rounds: 3, warmup: 0 };
    let n = match (&pool_ok, &each_ok) {
        (Ok(_), Ok(_)) => wanted,
        _ => UNDER_TYPE1.min(wanted),
    };
    for (name, res) in [("DmaPool", &pool_ok), ("one mapping each", &each_ok)] {
        if let Err(why) = res {
            ctx.emit(
                Record::new("P9", format!("{wanted} buffers of 4 KiB: {name}"), m.clone())
                    .skip(format!("does not reach {wanted} here: {why}")),
            );
        }
    }
    let mut sides = [
        Side::new("DmaPool", n, |k| Ok(pool_side(c, k)?)),
        Side::new("one mapping each", n, |k| Ok(each_side(c, k)?)),
    ];
    let res = interleave(plan, &mut sides);
    drop(sides);
    let t = res?;
    let note = match (&pool_ok, &each_ok) {
        (Ok(_), Ok(_)) => "per buffer, its whole life: allocate, map, unmap, free".to_string(),
        _ => format!("per buffer, its whole life; at {n}, the most both sides reach here (see the skipped rows)"),
    };
    ctx.emit(
        Record::new("P9", format!("{n} buffers of 4 KiB: DmaPool vs one mapping each"), m)
            .compare(plan, ("DmaPool", &t[0]), ("one mapping each", &t[1]), n)
            .note(note),
    );
    Ok(())
}
