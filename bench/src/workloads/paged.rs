//! Shared steps of the demand-paging workloads: the variant's pager mode,
//! and the checks that a run gave back everything (frames, commitments,
//! resident pages) and left the paging and frame audits clean.

use mm::paging::{Mode, Pager, Paging};
use mm::vm::KMemFlags;

use crate::failure::{check, fails, failure, Failure};
use crate::machine::{frame_ledger, Machine};

/// `busy` → per-page busy states; the baseline → one global lock.
pub fn mode(variant: &str) -> Result<Mode, Failure> {
    match variant.rsplit('-').next() {
        Some("busy") => Ok(Mode::BusyState),
        Some(v) if v == record::BASELINE_VARIANT => Ok(Mode::GlobalLock),
        _ => Err(failure(format_args!("no paging variant {variant:?}"))),
    }
}

/// The machine's paging: the paging calls and the audit.
pub fn paging<M: Machine>(m: &M) -> Result<Paging<'static, M::VmP>, Failure> {
    Paging::of(m.vm()).map_err(|e| fails("paging", e))
}

pub fn pager<M: Machine>(m: &M) -> Result<&'static Pager, Failure> {
    paging(m).map(|p| p.pager())
}

/// Runs `body` with the variant's mode and, if given, a resident limit;
/// restores both and checks the ledger and the audits after.
pub fn with_mode<M: Machine, T>(
    m: &M,
    variant: &str,
    resident_limit: Option<u64>,
    body: impl FnOnce() -> Result<T, Failure>,
) -> Result<T, Failure> {
    let pg = pager(m)?;
    let ledger = || frame_ledger(m);
    let (frames, committed, resident) = (ledger(), pg.committed(), pg.resident());
    let limit = pg.resident_limit();
    pg.set_mode(mode(variant)?);
    if let Some(l) = resident_limit {
        pg.set_resident_limit(l);
    }
    let r = body();
    pg.set_mode(Mode::BusyState);
    pg.set_resident_limit(limit);
    let t = r?;
    paging(m)?.audit().map_err(|e| fails("paging audit", e))?;
    m.frames().audit().map_err(|e| fails("frame audit", e))?;
    let after = (ledger(), pg.committed(), pg.resident());
    check!(
        after == (frames, committed, resident),
        "frames (free, heap, region tables), committed, resident: {:?} before, {after:?} after",
        (frames, committed, resident)
    );
    Ok(t)
}

/// An on-demand region of `pages` pages (nothing resident yet).
pub fn map<M: Machine>(m: &M, pages: u64) -> Result<u64, Failure> {
    m.vm().k_mem_map(pages * mm::PAGE_SIZE, KMemFlags::RW).map_err(|e| fails("k_mem_map", e))
}

pub fn unmap<M: Machine>(m: &M, addr: u64, pages: u64) -> Result<(), Failure> {
    m.vm().k_mem_unmap(addr, pages * mm::PAGE_SIZE).map_err(|e| fails("k_mem_unmap", e))
}

/// Faults this CPU has resolved so far.
pub fn my_faults<M: Machine>(m: &M) -> u64 {
    Paging::of(m.vm()).map(|p| p.pager().stats().cpu(m.cpu()).faults).unwrap_or(0)
}
