//! The page-table audit: walks spaces and checks the rules every mapping
//! obeys — no page both writable and executable in the kernel, the null
//! page never mapped, no allocator frame mapped twice unless pinned.

use core::sync::atomic::Ordering;

use alloc::vec::Vec;

use super::mapping::Vm;
use super::pte::{self, HUGE, NO_EXECUTE, SW_DEVICE, SW_PINNED, WRITABLE};
use super::space::{AddressSpace, SpaceKind};
use super::table::{canonical, span, TOP};
use super::{VmPlatform, KERNEL_AREA_START, USER_END};
use crate::frame::PhysAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PtViolation {
    /// A kernel page that is writable and executable.
    WriteAndExecute {
        virt: u64,
    },
    NullPageMapped {
        root: PhysAddr,
    },
    /// A frame mapped at two addresses (in the kernel area or user
    /// halves), neither mapping pinned.
    DoubleMapped {
        phys: PhysAddr,
        first: u64,
        second: u64,
    },
    /// The space's table lock stayed held past its bound: not audited.
    TablesBusy {
        root: PhysAddr,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AuditReport {
    /// Leaf entries checked.
    pub leaves: u64,
    /// Frames mapped more than once legitimately (pinned).
    pub pinned_aliases: u64,
}

struct Leaf {
    virt: u64,
    entry: u64,
}

impl<P: VmPlatform> Vm<P> {
    /// Audits the kernel space and `users`: W^X over the whole kernel half
    /// (the kernel image, the bootloader's mappings, ours), the null page
    /// in every space, and frames mapped twice in the kernel area and user
    /// halves (the direct map aliases all RAM by design and is left out).
    pub fn audit_tables(&self, users: &[&AddressSpace]) -> Result<AuditReport, PtViolation> {
        let mut report = AuditReport::default();
        let mut frames: Vec<(u64, u64, bool)> = Vec::new();
        let spaces = core::iter::once(self.kernel()).chain(users.iter().map(|u| &***u));
        for space in spaces {
            if self.map_get(space, 0).is_ok() {
                return Err(PtViolation::NullPageMapped { root: space.root() });
            }
            let half = match space.kind() {
                SpaceKind::Kernel => 256..512,
                SpaceKind::User => 0..256,
            };
            let mut result = Ok(());
            let _shared = self.shared(space).map_err(|_| PtViolation::TablesBusy { root: space.root() })?;
            self.walk(space.root, TOP, 0, WRITABLE, half, &mut |leaf| {
                report.leaves += 1;
                let e = leaf.entry;
                if space.kind() == SpaceKind::Kernel && e & WRITABLE != 0 && e & NO_EXECUTE == 0 && result.is_ok() {
                    result = Err(PtViolation::WriteAndExecute { virt: leaf.virt });
                }
                let ours = leaf.virt < USER_END || leaf.virt >= KERNEL_AREA_START;
                if ours && e & SW_DEVICE == 0 && e & HUGE == 0 {
                    frames.push((pte::addr(e), leaf.virt, e & SW_PINNED != 0));
                }
            });
            result?;
        }
        frames.sort_unstable();
        for w in frames.windows(2) {
            let ((pa, va, pin_a), (pb, vb, pin_b)) = (w[0], w[1]);
            if pa == pb {
                if !(pin_a || pin_b) {
                    // An entry holds at most 52 address bits.
                    return Err(PtViolation::DoubleMapped { phys: PhysAddr::new_truncate(pa), first: va, second: vb });
                }
                report.pinned_aliases += 1;
            }
        }
        Ok(report)
    }

    /// Calls `f` for every present leaf below `table` (at `level`, from
    /// `base`), visiting only entries `indexes` of the top table. `upper`
    /// carries what the levels above allow: their WRITABLE bits ANDed and
    /// their NO_EXECUTE bits ORed, so leaves are reported with the access
    /// they really give.
    fn walk(
        &self,
        table: u64,
        level: usize,
        base: u64,
        upper: u64,
        indexes: core::ops::Range<usize>,
        f: &mut dyn FnMut(Leaf),
    ) {
        let t = super::table::at(&self.p, table);
        for i in indexes {
            let e = t[i].load(Ordering::Acquire);
            if !pte::is_present(e) {
                continue;
            }
            let virt = canonical(base + i as u64 * span(level));
            let effective = (e & !WRITABLE) | (e & upper & WRITABLE) | (upper & NO_EXECUTE);
            if level == 0 || e & HUGE != 0 {
                f(Leaf { virt, entry: effective });
            } else {
                self.walk(pte::addr(e), level - 1, virt, effective & (WRITABLE | NO_EXECUTE), 0..512, f);
            }
        }
    }
}
