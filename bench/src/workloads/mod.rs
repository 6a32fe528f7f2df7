//! The benchmark table.

use alloc::vec::Vec;

use crate::counters::Group;
use crate::driver::{single, Bench, Scope};
use crate::machine::Machine;

mod fault;
mod floor;
mod frames;
mod heap;
mod paged;
mod thrash;
pub(crate) mod space;
mod tlb;
mod vm;

pub fn all<M: Machine>() -> Vec<Bench<M>> {
    alloc::vec![
        Bench { name: "floor.clock", scope: Scope::EveryCpu, sample_every: 64, groups: &[], variants: single::<M>, run: floor::clock::<M> },
        Bench { name: "floor.rmw", scope: Scope::EveryCpu, sample_every: 64, groups: &[], variants: |_| floor::rmw_variants(), run: floor::rmw::<M> },
        Bench { name: "floor.zero", scope: Scope::EveryCpu, sample_every: 16, groups: &[], variants: single::<M>, run: floor::zero::<M> },
        Bench { name: "floor.ipi", scope: Scope::Directed, sample_every: 4, groups: &[Group::Tlb], variants: |m| floor::ipi_variants(m.cpus()), run: floor::ipi::<M> },
        Bench { name: "frames.pair", scope: Scope::EveryCpu, sample_every: 64, groups: &[Group::Frames], variants: |_| frames::variants(), run: frames::pair::<M> },
        Bench { name: "frames.batch", scope: Scope::EveryCpu, sample_every: 64, groups: &[Group::Frames], variants: |_| frames::variants(), run: frames::batch::<M> },
        Bench { name: "frames.remote", scope: Scope::EveryCpu, sample_every: 64, groups: &[Group::Frames], variants: |_| frames::variants(), run: frames::remote::<M> },
        Bench { name: "vm.local", scope: Scope::EveryCpu, sample_every: 16, groups: &[Group::Tlb], variants: |_| vm::local_variants(), run: vm::local::<M> },
        Bench { name: "vm.pipeline", scope: Scope::EveryCpu, sample_every: 16, groups: &[Group::Tlb], variants: single::<M>, run: vm::pipeline::<M> },
        Bench { name: "vm.global", scope: Scope::Directed, sample_every: 4, groups: &[Group::Tlb], variants: single::<M>, run: tlb::global::<M> },
        Bench { name: "tlb.shootdown", scope: Scope::Directed, sample_every: 4, groups: &[Group::Tlb], variants: |m| tlb::shootdown_variants(m.cpus()), run: tlb::shootdown::<M> },
        Bench { name: "fault.anon", scope: Scope::EveryCpu, sample_every: 64, groups: &[Group::Paging, Group::Tlb], variants: |_| fault::variants(), run: fault::anon::<M> },
        Bench { name: "fault.shared", scope: Scope::EveryCpu, sample_every: 64, groups: &[Group::Paging, Group::Tlb], variants: |_| fault::variants(), run: fault::shared::<M> },
        Bench { name: "paging.thrash", scope: Scope::EveryCpu, sample_every: 8, groups: &[Group::Paging, Group::StoreLatency], variants: thrash::variants::<M>, run: thrash::thrash::<M> },
        Bench { name: "heap.small", scope: Scope::EveryCpu, sample_every: 64, groups: &[Group::Frames], variants: single::<M>, run: heap::small::<M> },
    ]
}
