//! A host machine for `vm` tests: physical memory is a vector of frames
//! (frame i at physical i * 4096), frames come from a real `PhysAllocator`,
//! threads play CPUs, and shootdowns are recorded instead of sent.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use super::{ShootdownFailed, Table, VmPlatform, PAGE};
use crate::buddy::Link;
use crate::frame::FrameError;
use crate::frame_db::{FrameDb, FrameEntry};
use crate::magazine::Magazine;
use crate::phys::{CpuSlot, PhysAllocator};
use crate::platform::Platform;
use crate::testing::Threads;
use crate::MAX_CPUS;

pub struct Machine {
    memory: Vec<Table>,
    pub frames: PhysAllocator<'static, Threads>,
    pub online: AtomicU64,
    /// (targets, start, pages) of every shootdown.
    pub shootdowns: Mutex<Vec<(u64, u64, u64)>>,
    /// Makes every shootdown fail (CPUs that do not answer).
    pub fail_shootdowns: AtomicBool,
    pub roots: [AtomicU64; MAX_CPUS],
}

impl Machine {
    /// A machine with `frames` frames of RAM (frame 0 is not RAM) and
    /// `cpus` CPUs online.
    pub fn new(frames: usize, cpus: usize) -> Machine {
        let entries: &'static [FrameEntry] = Vec::leak((0..frames).map(|_| FrameEntry::new()).collect());
        let links = Vec::leak(vec![Link::EMPTY; frames]);
        let slots = Vec::leak((0..MAX_CPUS).map(|_| CpuSlot::new()).collect());
        let depot = Vec::leak(vec![Magazine::new(); 8]);
        let db = FrameDb::new(0, entries);
        Machine {
            memory: (0..frames).map(|_| core::array::from_fn(|_| AtomicU64::new(0))).collect(),
            frames: PhysAllocator::new(db, links, [1..frames], slots, 8, depot, Threads),
            online: AtomicU64::new((1u64 << cpus) - 1),
            shootdowns: Mutex::new(Vec::new()),
            fail_shootdowns: AtomicBool::new(false),
            roots: [const { AtomicU64::new(0) }; MAX_CPUS],
        }
    }

    /// The word at byte offset `offset` of frame `phys`.
    pub fn word(&self, phys: u64, offset: u64) -> u64 {
        self.memory[(phys / PAGE) as usize][(offset / 8) as usize].load(Ordering::Relaxed)
    }

    pub fn set_word(&self, phys: u64, offset: u64, value: u64) {
        self.memory[(phys / PAGE) as usize][(offset / 8) as usize].store(value, Ordering::Relaxed)
    }

    pub fn free_bytes(&self) -> u64 {
        self.frames.free_bytes()
    }
}

impl VmPlatform for Machine {
    fn table(&self, phys: u64) -> &Table {
        &self.memory[(phys / PAGE) as usize]
    }

    fn fill_frame(&self, phys: u64, byte: u8) {
        let word = u64::from_ne_bytes([byte; 8]);
        for w in self.table(phys) {
            w.store(word, Ordering::Relaxed);
        }
    }

    fn copy_frame(&self, from: u64, to: u64) {
        for (a, b) in self.table(from).iter().zip(self.table(to)) {
            b.store(a.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }

    fn alloc_frame(&self) -> Result<u64, FrameError> {
        self.frames.alloc_page()
    }

    fn free_frame(&self, phys: u64) -> Result<(), FrameError> {
        self.frames.free_page(phys)
    }

    fn cpu_index(&self) -> usize {
        Threads.cpu_index()
    }

    fn online_cpus(&self) -> u64 {
        self.online.load(Ordering::Relaxed)
    }

    fn shootdown(&self, targets: u64, start: u64, pages: u64) -> Result<(), ShootdownFailed> {
        if self.fail_shootdowns.load(Ordering::Relaxed) {
            return Err(ShootdownFailed { cpus: targets });
        }
        self.shootdowns.lock().unwrap().push((targets, start, pages));
        Ok(())
    }

    fn load_root(&self, root: u64) {
        self.roots[self.cpu_index()].store(root, Ordering::Relaxed);
    }

    fn free_frames(&self) -> u64 {
        self.frames.free_bytes() / PAGE
    }

    fn now_ns(&self) -> u64 {
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        START.get_or_init(std::time::Instant::now).elapsed().as_nanos() as u64
    }

    fn wait_step(&self) {
        std::thread::yield_now();
    }

    fn without_interrupts<R>(&self, f: impl FnOnce() -> R) -> R {
        f()
    }
}
