//! The QEMU side: what the tracer registers at translation time and what
//! its callbacks do when the guest runs. Everything that touches QEMU's
//! API is here; the counting itself is `window`'s and the decoding
//! `decode`'s.
//!
//! Hot path: every memory access calls `on_access`, which checks one
//! relaxed flag and, inside a window, updates the accessing vCPU's own map
//! under that vCPU's own mutex (uncontended: only the window's end, on the
//! marking vCPU, takes another vCPU's). Instruction and locked-instruction
//! counts are QEMU inline adds into a per-vCPU scoreboard, which the
//! window's ends read.

use crate::decode::{self, Mark};
use crate::window::{self, VcpuLog};
use qemu_plugin::sys::{qemu_plugin_cb_flags, qemu_plugin_mem_rw, qemu_plugin_op, qemu_plugin_u64};
use qemu_plugin::{
    qemu_plugin_get_registers, qemu_plugin_register_vcpu_insn_exec_inline_per_vcpu, qemu_plugin_u64_get, Args, Error,
    HasCallbacks, Info, MemValue, MemoryInfo, PluginId, Register, RegisterDescriptor, Result, TranslationBlock,
    VCPUIndex, Value,
};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

fn fail(msg: String) -> Error {
    Error::IoError(std::io::Error::other(format!("tracer: {msg}")))
}

/// The two per-vCPU counters QEMU adds to inline: instructions and locked
/// instructions, one scoreboard entry of two u64s per vCPU.
struct Counters {
    insns: qemu_plugin_u64,
    locked: qemu_plugin_u64,
}

// SAFETY: a scoreboard is QEMU's per-vCPU array made to be written by each
// vCPU's thread and read from others (`qemu_plugin_u64_get`); the handle
// itself is only a pointer QEMU keeps alive until the plugin is uninstalled.
unsafe impl Send for Counters {}
// SAFETY: as above; the plugin never frees the scoreboard.
unsafe impl Sync for Counters {}

impl Counters {
    fn new() -> Counters {
        // SAFETY: allocates a scoreboard of 16-byte entries; QEMU grows it
        // as vCPUs appear and zero-fills new entries.
        let score = unsafe { qemu_plugin::sys::qemu_plugin_scoreboard_new(16) };
        Counters { insns: qemu_plugin_u64 { score, offset: 0 }, locked: qemu_plugin_u64 { score, offset: 8 } }
    }

    fn read(&self, vcpu: usize) -> (u64, u64) {
        let v = vcpu as VCPUIndex;
        (qemu_plugin_u64_get(self.insns, v), qemu_plugin_u64_get(self.locked, v))
    }
}

/// RAX and RCX, for the marker's payload and `wrmsr`'s MSR number/value.
struct Regs {
    rax: RegisterDescriptor<'static>,
    rcx: RegisterDescriptor<'static>,
}

fn read_u64(reg: &RegisterDescriptor) -> Option<u64> {
    let bytes = reg.read().ok()?;
    // Target byte order: little-endian on x86.
    Some(u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?))
}

struct State {
    open: AtomicBool,
    seq: AtomicU32,
    /// The begin marker's address, for the window's report.
    begin_pc: AtomicU64,
    logs: Vec<Mutex<VcpuLog>>,
    counters: Counters,
    /// Each vCPU's counters when the window opened.
    start: Mutex<Vec<(u64, u64)>>,
    out: Mutex<BufWriter<File>>,
    regs: OnceLock<Regs>,
}

impl State {
    fn vcpus(&self) -> usize {
        self.logs.len()
    }

    fn log(&self, vcpu: VCPUIndex) -> Option<std::sync::MutexGuard<'_, VcpuLog>> {
        // A poisoned log (a panic in a callback) is still counts.
        self.logs.get(vcpu as usize).map(|l| l.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn on_access(&self, vcpu: VCPUIndex, info: MemoryInfo, vaddr: u64) {
        if !self.open.load(Ordering::Relaxed) {
            return;
        }
        let Some(hw) = info.hwaddr(vaddr) else { return };
        let (phys, store) = (hw.hwaddr(), info.is_store());
        if hw.is_io() {
            // MMIO is not cache lines; the one write that matters is the
            // xAPIC's ICR low word, which sends an IPI.
            if store && phys == decode::XAPIC_ICR_LOW {
                let icr = match info.value() {
                    MemValue::U32(v) => v,
                    MemValue::U64(v) => v as u32,
                    _ => return,
                };
                if let (Some(vector), Some(mut l)) = (decode::icr_send(icr), self.log(vcpu)) {
                    l.ipi(1, vector);
                }
            }
            return;
        }
        if let Some(mut l) = self.log(vcpu) {
            l.access(phys, vaddr, store);
        }
    }

    fn on_wrmsr(&self, vcpu: VCPUIndex) {
        if !self.open.load(Ordering::Relaxed) {
            return;
        }
        let Some(regs) = self.regs.get() else { return };
        if read_u64(&regs.rcx).map(|c| c as u32) != Some(decode::X2APIC_ICR_MSR) {
            return;
        }
        let Some(rax) = read_u64(&regs.rax) else { return };
        if let (Some(vector), Some(mut l)) = (decode::icr_send(rax as u32), self.log(vcpu)) {
            l.ipi(1, vector);
        }
    }

    fn on_marker(&self, pc: u64) {
        let Some(rax) = self.regs.get().and_then(|r| read_u64(&r.rax)) else { return };
        match Mark::from_payload(rax) {
            Some(Mark::Begin(seq)) => self.begin(seq, pc),
            Some(Mark::End(seq)) => self.end(seq, pc),
            None => {}
        }
    }

    fn begin(&self, seq: u32, pc: u64) {
        self.begin_pc.store(pc, Ordering::SeqCst);
        // A window still open had no end mark (its repetition failed): it
        // is dropped, and xtask finds no window for that sequence number.
        self.open.store(false, Ordering::SeqCst);
        for v in 0..self.vcpus() {
            if let Some(mut l) = self.log(v as VCPUIndex) {
                *l = VcpuLog::default();
            }
        }
        *self.start.lock().unwrap_or_else(|e| e.into_inner()) =
            (0..self.vcpus()).map(|v| self.counters.read(v)).collect();
        self.seq.store(seq, Ordering::SeqCst);
        self.open.store(true, Ordering::SeqCst);
    }

    fn end(&self, seq: u32, pc: u64) {
        if !self.open.swap(false, Ordering::SeqCst) || self.seq.load(Ordering::SeqCst) != seq {
            return;
        }
        let start = self.start.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let counts: Vec<(u64, u64)> = (0..self.vcpus())
            .map(|v| {
                let (i, l) = self.counters.read(v);
                let (i0, l0) = start.get(v).copied().unwrap_or_default();
                (i.wrapping_sub(i0), l.wrapping_sub(l0))
            })
            .collect();
        let logs: Vec<VcpuLog> = (0..self.vcpus())
            .map(|v| self.log(v as VCPUIndex).map(|mut l| std::mem::take(&mut *l)).unwrap_or_default())
            .collect();
        let report = window::WindowReport {
            begin_pc: self.begin_pc.load(Ordering::SeqCst),
            end_pc: pc,
            ..window::merge(seq, &logs, &counts)
        };
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        // A write error cannot be reported from inside the guest's run;
        // xtask sees the missing window and says so.
        if let Ok(line) = serde_json::to_string(&report) {
            let _ = writeln!(out, "{line}").and_then(|()| out.flush());
        }
    }
}

/// The plugin QEMU loads: `-plugin libtracer.so,out=PATH`.
#[derive(Default)]
pub struct Tracer {
    state: Option<Arc<State>>,
}

impl Register for Tracer {
    fn register(&mut self, _id: PluginId, args: &Args, info: &Info) -> Result<()> {
        let Some(system) = &info.system else {
            return Err(fail("needs system emulation (qemu-system-*), not user mode".into()));
        };
        if !info.target_name.starts_with("x86_64") {
            return Err(fail(format!("decodes x86-64 only, not {}", info.target_name)));
        }
        let path = match args.parsed.get("out") {
            Some(Value::String(p)) => p.clone(),
            _ => return Err(fail("missing argument out=PATH".into())),
        };
        let out = File::create(&path).map_err(|e| fail(format!("creating {path}: {e}")))?;
        let vcpus = system.smp_vcpus.max(system.max_vcpus).max(1) as usize;
        self.state = Some(Arc::new(State {
            open: AtomicBool::new(false),
            seq: AtomicU32::new(0),
            begin_pc: AtomicU64::new(0),
            logs: (0..vcpus).map(|_| Mutex::new(VcpuLog::default())).collect(),
            counters: Counters::new(),
            start: Mutex::new(Vec::new()),
            out: Mutex::new(BufWriter::new(out)),
            regs: OnceLock::new(),
        }));
        Ok(())
    }
}

impl HasCallbacks for Tracer {
    fn on_vcpu_init(&mut self, _id: PluginId, _vcpu: VCPUIndex) -> Result<()> {
        let Some(state) = &self.state else { return Ok(()) };
        if state.regs.get().is_some() {
            return Ok(());
        }
        // Register handles are the same for every vCPU of one target.
        let regs = qemu_plugin_get_registers()?;
        let find = |name: &str| regs.iter().find(|r| r.name == name).cloned();
        match (find("rax"), find("rcx")) {
            (Some(rax), Some(rcx)) => {
                let _ = state.regs.set(Regs { rax, rcx });
                Ok(())
            }
            _ => Err(fail("this QEMU names no rax/rcx registers".into())),
        }
    }

    fn on_translation_block_translate(&mut self, _id: PluginId, tb: TranslationBlock) -> Result<()> {
        let Some(state) = &self.state else { return Ok(()) };
        for insn in tb.instructions() {
            let bytes = insn.data();
            let add = qemu_plugin_op::QEMU_PLUGIN_INLINE_ADD_U64;
            qemu_plugin_register_vcpu_insn_exec_inline_per_vcpu(insn.clone(), add, state.counters.insns, 1);
            if decode::is_locked(&bytes) {
                qemu_plugin_register_vcpu_insn_exec_inline_per_vcpu(insn.clone(), add, state.counters.locked, 1);
            }
            if decode::is_marker(&bytes) {
                let (s, pc) = (state.clone(), insn.vaddr());
                insn.register_execute_callback_flags(
                    move |_| s.on_marker(pc),
                    qemu_plugin_cb_flags::QEMU_PLUGIN_CB_R_REGS,
                );
            } else if decode::is_wrmsr(&bytes) {
                let s = state.clone();
                insn.register_execute_callback_flags(
                    move |v| s.on_wrmsr(v),
                    qemu_plugin_cb_flags::QEMU_PLUGIN_CB_R_REGS,
                );
            }
            let s = state.clone();
            insn.register_memory_access_callback(
                move |v, info, vaddr| s.on_access(v, info, vaddr),
                qemu_plugin_mem_rw::QEMU_PLUGIN_MEM_RW,
            );
        }
        Ok(())
    }
}
