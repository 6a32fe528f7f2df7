//! A host machine for `vm` tests: physical memory is a vector of frames
//! (frame i at physical i * 4096), frames come from a real `PhysAllocator`,
//! threads play CPUs, and shootdowns are recorded and act on a simulated
//! TLB (`tlb_sim`) instead of being sent. Before each platform call the
//! simulated TLBs refill, so freeing a frame a CPU may still hold panics.
//! A test can park one CPU's shootdown (`shootdown_gate`) to script races.
// Host tests map and free frames by address: host memory is a vector of
// atomics, so a wrong address is test data, never undefined behaviour.
#![allow(unsafe_code)]

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use super::shootdown_gate::{Park, ShootdownGate, Shot};
use super::tlb_sim::TlbSim;
use super::{ShootdownFailed, Table, Vm, VmPlatform, PAGE_SIZE};
use crate::buddy::Link;
use crate::frame::{Frame, FrameError, PhysAddr};
use crate::frame_db::{FrameDb, FrameEntry};
use crate::magazine::Magazine;
use crate::phys::{CpuShare, PhysAllocator};
use crate::testing::{on_cpu, Threads};
use crate::MAX_CPUS;
use cpus::{AtomicCpuSet, CachePadded, CpuSet, PerCpuRef};

pub struct SimMachine {
    memory: Vec<Table>,
    pub frames: PhysAllocator<'static, Threads>,
    pub online: AtomicCpuSet,
    /// (targets, start, pages) of every shootdown.
    pub shootdowns: Mutex<Vec<(CpuSet, u64, u64)>>,
    /// Makes every shootdown fail (CPUs that do not answer).
    pub fail_shootdowns: AtomicBool,
    /// Calls of `free_frames` (which, in the kernel, reads every CPU's
    /// magazine count): paging must not make one per fault.
    pub free_frame_reads: AtomicU64,
    tlb: TlbSim,
    gate: ShootdownGate,
}

impl SimMachine {
    /// A machine with `frames` frames of RAM (frame 0 is not RAM) and
    /// `cpus` CPUs online.
    pub fn new(frames: usize, cpus: usize) -> SimMachine {
        let entries: &'static [FrameEntry] = Vec::leak((0..frames).map(|_| FrameEntry::new()).collect());
        let links = Vec::leak(vec![Link::EMPTY; frames]);
        // Element by element on the heap: `MAX_CPUS` caches do not fit a
        // test thread's stack on the way to a `Box`.
        let shares = PerCpuRef::new(Vec::leak((0..MAX_CPUS).map(|_| CachePadded::new(CpuShare::new())).collect()));
        let depot = Vec::leak(vec![Magazine::new(); 8]);
        let db = FrameDb::new(PhysAddr::new(0), entries);
        SimMachine {
            memory: (0..frames).map(|_| core::array::from_fn(|_| AtomicU64::new(0))).collect(),
            frames: PhysAllocator::new(db, links, [1..frames], shares, 8, depot, Threads::new(MAX_CPUS)),
            online: AtomicCpuSet::new(CpuSet::first(cpus)),
            shootdowns: Mutex::new(Vec::new()),
            fail_shootdowns: AtomicBool::new(false),
            free_frame_reads: AtomicU64::new(0),
            tlb: TlbSim::new(),
            gate: ShootdownGate::new(),
        }
    }

    /// The root `cpu` has loaded (none until a `load_root` there).
    pub fn loaded_root(&self, cpu: usize) -> Option<u64> {
        self.tlb.root(cpu)
    }

    /// Each CPU in `cpus` loads `root`, as if it had called `load_root`.
    pub fn load_root_on(&self, cpus: CpuSet, root: u64) {
        for cpu in cpus.iter() {
            self.tlb.load_root(&self.memory, cpu, root);
        }
    }

    /// An access by `cpu` to `virt`: its TLB refills (and so holds the
    /// translation, if any). Returns the physical address reached, `None`
    /// where the access would fault.
    pub fn touch(&self, cpu: usize, virt: u64) -> Option<u64> {
        self.tlb.refill(&self.memory);
        let root = self.loaded_root(cpu)?;
        match super::table::lookup(self, root, virt, 0) {
            super::table::Lookup::Entry { entry, level } => {
                let e = entry.load(Ordering::Acquire);
                let bytes = super::table::span(level);
                // In huge entries bit 12 is the PAT bit, not address.
                super::pte::is_present(e).then(|| (super::pte::addr(e) & !(bytes - 1)) + (virt & (bytes - 1)))
            }
            super::table::Lookup::NoTable => None,
        }
    }

    /// The frames `cpu` may translate page `virt` to.
    pub fn may_hold(&self, cpu: usize, virt: u64) -> Vec<u64> {
        self.tlb.may_hold(cpu, virt)
    }

    /// Whether `cpu` may hold frame `phys` as a page table.
    pub fn holds_table(&self, cpu: usize, phys: u64) -> bool {
        self.tlb.holds_table(cpu, phys)
    }

    /// `cpu`'s next shootdown stops at `at` until `release_shootdown`.
    pub fn park_shootdowns_of(&self, cpu: usize, at: Park) {
        self.gate.arm(cpu, at);
    }

    /// Waits (at most `shootdown_gate::WAIT`) until `cpu`'s shootdown is
    /// parked; returns its arguments.
    pub fn wait_parked(&self, cpu: usize) -> Shot {
        self.gate.wait_parked(cpu)
    }

    pub fn release_shootdown(&self, cpu: usize) {
        self.gate.release(cpu);
    }

    /// Releases every parked shootdown and disarms the rest.
    pub fn release_all_shootdowns(&self) {
        self.gate.release_all();
    }

    /// The word at byte offset `offset` of frame `phys`.
    pub fn word(&self, phys: u64, offset: u64) -> u64 {
        self.memory[(phys / PAGE_SIZE) as usize][(offset / 8) as usize].load(Ordering::Relaxed)
    }

    pub fn set_word(&self, phys: u64, offset: u64, value: u64) {
        self.memory[(phys / PAGE_SIZE) as usize][(offset / 8) as usize].store(value, Ordering::Relaxed)
    }

    pub fn free_bytes(&self) -> u64 {
        self.frames.free_bytes()
    }

    /// A frame from the allocator that the test keeps by address (as `Vm`
    /// keeps its own frames in entries).
    pub fn alloc_phys(&self) -> u64 {
        self.frames.alloc_page().unwrap().into_phys().as_u64()
    }

    /// Frees frame `phys` by address, as `Vm` frees what it kept so, after
    /// the simulated TLBs' check that no CPU may still hold it.
    pub fn free_phys(&self, phys: u64) -> Result<(), FrameError> {
        self.tlb.check_free(&self.memory, phys);
        // SAFETY: host memory is a vector of atomics, so a wrong free is
        // an allocator error here, never undefined behaviour; the tests
        // free only frames they took (or test the refusals).
        unsafe { self.frames.free_raw(PhysAddr::new(phys)) }
    }
}

impl VmPlatform for SimMachine {
    // Every call but `cpu_index` and `now_ns` refills the simulated TLBs
    // first (between any two calls every CPU may have walked). `table`
    // too, though it runs at every step of every software walk: the code
    // writes entries through what it returns, so a mapping made and
    // removed with only walks between is seen only there.

    fn table(&self, phys: PhysAddr) -> &Table {
        self.tlb.refill(&self.memory);
        &self.memory[(phys.as_u64() / PAGE_SIZE) as usize]
    }

    fn fill_frame(&self, frame: &mut Frame, byte: u8) {
        self.tlb.refill(&self.memory);
        let word = u64::from_ne_bytes([byte; 8]);
        for w in self.table(frame.phys()) {
            w.store(word, Ordering::Relaxed);
        }
    }

    fn copy_frame(&self, from: &Frame, to: &mut Frame) {
        self.tlb.refill(&self.memory);
        for (a, b) in self.table(from.phys()).iter().zip(self.table(to.phys())) {
            b.store(a.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }

    fn alloc_frame(&self) -> Result<Frame, FrameError> {
        self.tlb.refill(&self.memory);
        self.frames.alloc_page()
    }

    fn free_frame(&self, frame: Frame) -> Result<(), FrameError> {
        self.tlb.check_free(&self.memory, frame.phys().as_u64());
        self.frames.free_page(frame)
    }

    fn table_cpus(&self, table: PhysAddr) -> Option<&cpus::AtomicCpuSet> {
        let db = self.frames.db();
        db.index_of(table).ok().map(|i| &db.entry(i).table_cpus)
    }

    fn cpu_index(&self) -> usize {
        crate::testing::current_cpu()
    }

    fn online_cpus(&self) -> CpuSet {
        self.tlb.refill(&self.memory);
        self.online.load(Ordering::Relaxed)
    }

    fn shootdown(&self, set: CpuSet, start: super::VirtAddr, pages: u64) -> Result<(), ShootdownFailed> {
        let (targets, start) = (set, start.as_u64());
        let (cpu, shot) = (self.cpu_index(), Shot { targets, start, pages });
        self.gate.pass(cpu, Park::BeforeSend, shot);
        if self.fail_shootdowns.load(Ordering::Relaxed) {
            // Nobody answered: every TLB keeps what it holds.
            self.tlb.refill(&self.memory);
            return Err(ShootdownFailed { cpus: set });
        }
        self.tlb.shootdown(&self.memory, targets, start, pages);
        self.shootdowns.lock().unwrap().push((targets, start, pages));
        self.gate.pass(cpu, Park::AfterAcks, shot);
        Ok(())
    }

    fn load_root(&self, root: &super::Root) {
        self.tlb.load_root(&self.memory, self.cpu_index(), root.phys().as_u64());
    }

    fn free_frames(&self) -> u64 {
        self.free_frame_reads.fetch_add(1, Ordering::Relaxed);
        self.tlb.refill(&self.memory);
        self.frames.free_bytes() / PAGE_SIZE
    }

    fn now_ns(&self) -> u64 {
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        START.get_or_init(std::time::Instant::now).elapsed().as_nanos() as u64
    }

    fn wait_step(&self, _: super::Waited) {
        self.tlb.refill(&self.memory);
        std::thread::yield_now();
    }

    fn without_interrupts<R>(&self, f: impl FnOnce() -> R) -> R {
        self.tlb.refill(&self.memory);
        f()
    }
}

/// A machine of `frames` frames and `cpus` CPUs with a `Vm` on it whose
/// kernel root every online CPU has loaded, as in the kernel, where every
/// CPU runs on the kernel space from boot (so kernel unmaps and evictions
/// are checked against every CPU's TLB). The calling thread is CPU 0.
pub fn boot(frames: usize, cpus: usize) -> Vm<SimMachine> {
    on_cpu(0);
    let m = SimMachine::new(frames, cpus);
    let mut frame = m.frames.alloc_page().unwrap();
    m.fill_frame(&mut frame, 0);
    let root = frame.into_phys().as_u64();
    let vm = Vm::new(m, PhysAddr::new(root)).unwrap();
    vm.platform().load_root_on(vm.platform().online.load(Ordering::Relaxed), root);
    vm
}

/// An access by `cpu` to `virt` as the hardware makes it: a miss in the
/// CPU's replica takes a soft fault there (`Vm::soft_fault`) and retries.
/// Returns the physical address reached, `None` where the access faults.
pub fn access(vm: &Vm<SimMachine>, cpu: usize, virt: u64) -> Option<u64> {
    let m = vm.platform();
    m.touch(cpu, virt).or_else(|| {
        let was = crate::testing::current_cpu();
        on_cpu(cpu);
        let linked = vm.soft_fault(virt);
        on_cpu(was);
        linked.then(|| m.touch(cpu, virt)).flatten()
    })
}
