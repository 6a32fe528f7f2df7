//! The benchmark table.

use alloc::vec::Vec;

use crate::counters;
use crate::driver::{single, Bench};
use crate::machine::Machine;

mod fault;
mod frames;
mod heap;
mod paged;
mod thrash;
pub(crate) mod space;
mod tlb;
mod vm;

pub fn all<M: Machine>() -> Vec<Bench<M>> {
    alloc::vec![
        Bench { name: "frames.pair", groups: counters::FRAMES, variants: |_| frames::variants(), run: frames::pair::<M> },
        Bench { name: "frames.batch", groups: counters::FRAMES, variants: |_| frames::variants(), run: frames::batch::<M> },
        Bench { name: "frames.remote", groups: counters::FRAMES, variants: |_| frames::variants(), run: frames::remote::<M> },
        Bench { name: "vm.local", groups: counters::MAPPING, variants: |_| vm::local_variants(), run: vm::local::<M> },
        Bench { name: "vm.pipeline", groups: counters::MAPPING, variants: single::<M>, run: vm::pipeline::<M> },
        Bench { name: "vm.global", groups: counters::MAPPING, variants: single::<M>, run: tlb::global::<M> },
        Bench { name: "tlb.shootdown", groups: counters::MAPPING, variants: |m| tlb::shootdown_variants(m.cpus()), run: tlb::shootdown::<M> },
        Bench { name: "fault.anon", groups: counters::FAULTS, variants: |_| fault::variants(), run: fault::anon::<M> },
        Bench { name: "fault.shared", groups: counters::FAULTS, variants: |_| fault::variants(), run: fault::shared::<M> },
        Bench { name: "paging.thrash", groups: counters::THRASH, variants: thrash::variants::<M>, run: thrash::thrash::<M> },
        Bench { name: "heap.small", groups: counters::FRAMES, variants: single::<M>, run: heap::small::<M> },
    ]
}
