//! User spaces for the mapping workloads: made before a run, activated on
//! the CPUs that use them, destroyed after; pages mapped supervisor-only in
//! the lower half (so no SMAP window is needed), each CPU in its own 2 MiB
//! window. The frame ledger must balance once the spaces are gone.

use alloc::sync::Arc;
use alloc::vec::Vec;

use mm::frame::Frame;
use mm::vm::{AddressSpace, Flags, PageSize};

use crate::failure::{check, fails, Failure};
use crate::machine::{frames_accounted, Machine};

pub const BASE: u64 = 0x4000_0000;
/// Each CPU's window of addresses.
pub const WINDOW: u64 = 0x20_0000;

pub fn page(cpu: usize, i: u64) -> u64 {
    BASE + cpu as u64 * WINDOW + (i % (WINDOW / mm::PAGE_SIZE)) * mm::PAGE_SIZE
}

/// A word that fills a frame filled with `byte`.
pub fn filled(byte: u8) -> u64 {
    u64::from_ne_bytes([byte; 8])
}

/// Maps a fresh frame at `virt`, filled with `byte`; the mapping keeps it
/// until `unmap_poison` takes it back. Returns its address.
pub fn map_filled<M: Machine>(m: &M, space: &AddressSpace, virt: u64, byte: u8) -> Result<u64, Failure> {
    let mut frame = m.frames().alloc_page().map_err(|e| fails("alloc", e))?;
    m.vm().fill_frame(&mut frame, byte);
    let phys = frame.phys().as_u64();
    if let Err((e, frame)) = m.vm().map_frame(space, virt, frame, Flags::WRITE) {
        m.frames().free_page(frame).map_err(|e| fails("free", e))?;
        return Err(fails("map", e));
    }
    Ok(phys)
}

/// Unmaps `virt`, checks it was `phys`, poisons and frees the frame.
pub fn unmap_poison<M: Machine>(m: &M, space: &AddressSpace, virt: u64, phys: u64) -> Result<(), Failure> {
    let frame = unmap_poison_keep(m, space, virt, phys)?;
    m.frames().free_page(frame).map_err(|e| fails("free", e))
}

/// Unmaps `virt`, checks it was `phys` and poisons the frame, keeping it:
/// a CPU that still reads it through a stale translation sees the poison.
pub fn unmap_poison_keep<M: Machine>(m: &M, space: &AddressSpace, virt: u64, phys: u64) -> Result<Frame, Failure> {
    let mut frame = m.vm().umap_owned(space, virt, PageSize::Size4K).map_err(|e| fails("unmap", e))?;
    let back = frame.phys().as_u64();
    check!(back == phys, "unmap of {virt:#x} gave frame {back:#x}, mapped {phys:#x}");
    m.vm().fill_frame(&mut frame, POISON);
    Ok(frame)
}

pub const POISON: u8 = 0xEE;

/// Runs `f` with `space` active on this CPU and leaves the space after,
/// whatever `f` returned (activating makes this CPU's replica of the
/// space the first time, which may find no frame).
pub fn within<M: Machine, R>(
    m: &M,
    space: &AddressSpace,
    f: impl FnOnce() -> Result<R, Failure>,
) -> Result<R, Failure> {
    let _active = m.vm().activate(space).map_err(|e| fails("activate", e))?;
    f()
}

/// After a run in `spaces`: destroys them and checks the ledger, but
/// reports the run's own error first (a failed run may leave it short).
pub fn finish<M: Machine>(
    m: &M,
    ran: Result<(), Failure>,
    spaces: Arc<Vec<AddressSpace>>,
    before: u64,
) -> Result<(), Failure> {
    let destroyed = destroy(m, spaces, before);
    ran?;
    destroyed
}

/// `count` new user spaces, and the frame ledger before them.
pub fn make<M: Machine>(m: &M, count: usize) -> Result<(Arc<Vec<AddressSpace>>, u64), Failure> {
    let before = frames_accounted(m);
    let spaces = (0..count)
        .map(|_| m.vm().new_user_space())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fails("new space", e))?;
    Ok((Arc::new(spaces), before))
}

/// Destroys the spaces (no CPU may have them active) and checks that every
/// frame the run took is back.
pub fn destroy<M: Machine>(m: &M, spaces: Arc<Vec<AddressSpace>>, before: u64) -> Result<(), Failure> {
    let spaces =
        Arc::try_unwrap(spaces).map_err(|_| crate::failure::failure(format_args!("a CPU still holds the spaces")))?;
    for s in spaces {
        check!(s.active_cpus().is_empty(), "space still active on {:?}", s.active_cpus());
        m.vm().destroy_space(s).map_err(|(e, _)| fails("destroy space", e))?;
    }
    let after = frames_accounted(m);
    check!(after == before, "{before} frames free or in the heap before, {after} after");
    Ok(())
}
