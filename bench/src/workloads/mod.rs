//! The benchmark table.

use alloc::vec::Vec;

use crate::counters;
use crate::driver::{single, Bench, Scope};
use crate::machine::Machine;

mod fault;
mod floor;
mod frames;
mod heap;
pub(crate) mod paged;
pub(crate) mod space;
mod thrash;
mod tlb;
mod vm;

pub fn all<M: Machine>() -> Vec<Bench<M>> {
    alloc::vec![
        Bench {
            name: "floor.clock",
            scope: Scope::EveryCpu,
            sample_every: 64,
            groups: &[],
            variants: single::<M>,
            run: floor::clock::<M>
        },
        Bench {
            name: "floor.rmw",
            scope: Scope::EveryCpu,
            sample_every: 64,
            groups: &[],
            variants: |_| floor::rmw_variants(),
            run: floor::rmw::<M>
        },
        Bench {
            name: "floor.zero",
            scope: Scope::EveryCpu,
            sample_every: 16,
            groups: &[],
            variants: single::<M>,
            run: floor::zero::<M>
        },
        Bench {
            name: "floor.ipi",
            scope: Scope::Directed,
            sample_every: 4,
            groups: counters::MAPPING,
            variants: |m| floor::ipi_variants(m.cpus()),
            run: floor::ipi::<M>
        },
        Bench {
            name: "frames.pair",
            scope: Scope::EveryCpu,
            sample_every: 64,
            groups: counters::FRAMES,
            variants: |_| frames::variants(),
            run: frames::pair::<M>
        },
        Bench {
            name: "frames.batch",
            scope: Scope::EveryCpu,
            sample_every: 64,
            groups: counters::FRAMES,
            variants: |_| frames::variants(),
            run: frames::batch::<M>
        },
        Bench {
            name: "frames.remote",
            scope: Scope::EveryCpu,
            sample_every: 64,
            groups: counters::FRAMES,
            variants: |_| frames::variants(),
            run: frames::remote::<M>
        },
        Bench {
            name: "vm.local",
            scope: Scope::EveryCpu,
            sample_every: 16,
            groups: counters::MAPPING,
            variants: |_| vm::local_variants(),
            run: vm::local::<M>
        },
        Bench {
            name: "vm.pipeline",
            scope: Scope::EveryCpu,
            sample_every: 16,
            groups: counters::MAPPING,
            variants: single::<M>,
            run: vm::pipeline::<M>
        },
        Bench {
            name: "vm.global",
            scope: Scope::Directed,
            sample_every: 4,
            groups: counters::MAPPING,
            variants: single::<M>,
            run: tlb::global::<M>
        },
        Bench {
            name: "tlb.shootdown",
            scope: Scope::Directed,
            sample_every: 4,
            groups: counters::MAPPING,
            variants: |m| tlb::shootdown_variants(m.cpus()),
            run: tlb::shootdown::<M>
        },
        Bench {
            name: "fault.anon",
            scope: Scope::EveryCpu,
            sample_every: 64,
            groups: counters::FAULTS,
            variants: |_| fault::variants(),
            run: fault::anon::<M>
        },
        Bench {
            name: "fault.shared",
            scope: Scope::EveryCpu,
            sample_every: 64,
            groups: counters::FAULTS,
            variants: |_| fault::variants(),
            run: fault::shared::<M>
        },
        Bench {
            name: "paging.thrash",
            scope: Scope::EveryCpu,
            sample_every: 8,
            groups: counters::THRASH,
            variants: thrash::variants::<M>,
            run: thrash::thrash::<M>
        },
        Bench {
            name: "heap.small",
            scope: Scope::EveryCpu,
            sample_every: 64,
            groups: counters::FRAMES,
            variants: single::<M>,
            run: heap::small::<M>
        },
    ]
}

#[cfg(test)]
mod tests {
    //! The table against `record::BENCHMARKS`, the list xtask checks
    //! `bench --only` with. `all` only builds function pointers, so a
    //! machine that cannot exist is enough to instantiate it.
    use super::*;
    use mm::frame::{Frame, FrameError};
    use mm::phys::PhysAllocator;
    use mm::vm::{ShootdownFailed, Table, Vm, VmPlatform};

    enum NoMachine {}

    impl mm::platform::CpuPlatform for NoMachine {
        fn cpu_index(&self) -> usize {
            match *self {}
        }
        fn without_interrupts<R>(&self, _: impl FnOnce(&cpus::CpuGuard) -> R) -> R {
            match *self {}
        }
        fn quiesce(&self, _: cpus::CpuSet) -> Result<(), mm::platform::NotQuiesced> {
            match *self {}
        }
    }

    impl VmPlatform for NoMachine {
        fn table(&self, _: mm::frame::PhysAddr) -> &Table {
            match *self {}
        }
        fn fill_frame(&self, _: &mut Frame, _: u8) {
            match *self {}
        }
        fn copy_frame(&self, _: &Frame, _: &mut Frame) {
            match *self {}
        }
        fn alloc_frame(&self) -> Result<Frame, FrameError> {
            match *self {}
        }
        fn free_frame(&self, _: Frame) -> Result<(), FrameError> {
            match *self {}
        }
        fn table_cpus(&self, _: mm::frame::PhysAddr) -> Option<&cpus::AtomicCpuSet> {
            match *self {}
        }
        fn cpu_index(&self) -> usize {
            match *self {}
        }
        fn online_cpus(&self) -> cpus::CpuSet {
            match *self {}
        }
        fn shootdown(&self, _: cpus::CpuSet, _: mm::vm::VirtAddr, _: u64) -> Result<(), ShootdownFailed> {
            match *self {}
        }
        fn load_root(&self, _: &mm::vm::Root) {
            match *self {}
        }
        fn free_frames(&self) -> u64 {
            match *self {}
        }
        fn now_ns(&self) -> u64 {
            match *self {}
        }
        fn wait_step(&self, _: mm::vm::Waited) {
            match *self {}
        }
        fn without_interrupts<R>(&self, _: impl FnOnce() -> R) -> R {
            match *self {}
        }
    }

    impl crate::Clock for NoMachine {
        fn now_ns(&self) -> u64 {
            match *self {}
        }
    }

    impl Machine for NoMachine {
        type Phys = NoMachine;
        type VmP = NoMachine;
        fn frames(&self) -> &'static PhysAllocator<'static, NoMachine> {
            match *self {}
        }
        fn vm(&self) -> &'static Vm<NoMachine> {
            match *self {}
        }
        fn cpu(&self) -> usize {
            match *self {}
        }
        fn cpus(&self) -> usize {
            match *self {}
        }
        fn run_on_all(&self, _: fn(usize), _: u64) -> Result<(), cpus::CpuSet> {
            match *self {}
        }
        fn wait_step(&self) {
            match *self {}
        }
        fn nap(&self, _: u32) {
            match *self {}
        }
        fn doze(&self, _: u32) {
            match *self {}
        }
        fn ipi_round_trip(&self, _: usize) -> Result<(), cpus::CpuSet> {
            match *self {}
        }
        fn emit(&self, _: &record::GuestRecord) {
            match *self {}
        }
        fn tlb_counts(&self, _: usize) -> record::TlbSnapshot {
            match *self {}
        }
        fn stores(&self) -> Vec<&'static str> {
            match *self {}
        }
        fn use_store(&self, _: &str) -> Result<(), mm::paging::StoreError> {
            match *self {}
        }
        fn heap_stats(&self) -> mm::heap::HeapStats {
            match *self {}
        }
        fn read_word(&self, _: u64) -> u64 {
            match *self {}
        }
        fn write_word(&self, _: u64, _: u64) {
            match *self {}
        }
        fn trace_mark(&self, _: crate::Mark, _: u32) {
            match *self {}
        }
    }

    #[test]
    fn the_table_is_record_benchmarks() {
        let names: Vec<&str> = all::<NoMachine>().iter().map(|b| b.name).collect();
        assert_eq!(
            names,
            record::BENCHMARKS,
            "update record::BENCHMARKS (xtask checks --only against it) with the table"
        );
    }
}
