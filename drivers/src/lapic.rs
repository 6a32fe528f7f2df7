//! The local APIC of the current CPU, driven through the `x2apic` crate.
//!
//! x2APIC mode (MSR access, 32-bit ids) is used when CPUID offers it,
//! xAPIC (MMIO through the direct map, 8-bit ids) otherwise. This wrapper
//! hides the one difference callers would trip over: in xAPIC mode the id
//! register and the ICR destination keep the id in bits 24..31.

use x2apic::lapic::{IpiAllShorthand, LocalApic, LocalApicBuilder, TimerDivide, TimerMode};

pub const SPURIOUS_VECTOR: u8 = 0xFF;
pub const ERROR_VECTOR: u8 = 0xFE;
pub const TIMER_VECTOR: u8 = 0xFD;

/// Physical address of the local APIC MMIO page when the MADT says nothing.
pub const DEFAULT_XAPIC_PHYS: x86_64::PhysAddr = x86_64::PhysAddr::new(0xFEE0_0000);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApicMode {
    XApic,
    X2Apic,
}

/// Spins before concluding an xAPIC ICR never went idle (the delivery
/// status bit is cleared by hardware within microseconds).
const ICR_IDLE_SPINS: u32 = 1_000_000;

/// The current CPU's local APIC. Not `Send`: its registers belong to the
/// CPU that enabled it.
pub struct Lapic {
    inner: LocalApic,
    mode: ApicMode,
}

impl Lapic {
    /// Enables the local APIC of the CPU this runs on, with its timer off.
    ///
    /// # Safety
    /// `xapic_virt` must map the APIC MMIO page (only used in xAPIC mode),
    /// and no other `Lapic` may exist for this CPU.
    pub unsafe fn enable_current(xapic_virt: x86_64::VirtAddr) -> Lapic {
        let mut inner = LocalApicBuilder::new()
            .timer_vector(TIMER_VECTOR as usize)
            .error_vector(ERROR_VECTOR as usize)
            .spurious_vector(SPURIOUS_VECTOR as usize)
            .set_xapic_base(xapic_virt.as_u64())
            .build()
            .expect("all LocalApicBuilder fields are set");
        // SAFETY: per this function's contract the MMIO mapping is valid and
        // this is the only handle on this CPU's APIC.
        unsafe {
            inner.enable();
            // The crate starts a periodic timer; nothing here wants ticks yet.
            inner.disable_timer();
        }
        // The crate keeps its chosen mode private; it chooses by the same
        // CPUID bit as `cpu_has_x2apic`.
        let mode = if cpu_has_x2apic() { ApicMode::X2Apic } else { ApicMode::XApic };
        Lapic { inner, mode }
    }

    pub fn mode(&self) -> ApicMode {
        self.mode
    }

    /// This CPU's APIC id.
    pub fn id(&self) -> u32 {
        // SAFETY: reading the id register has no side effects.
        let raw = unsafe { self.inner.id() };
        match self.mode {
            ApicMode::X2Apic => raw,
            ApicMode::XApic => raw >> 24,
        }
    }

    fn dest(&self, apic_id: u32) -> u32 {
        match self.mode {
            ApicMode::X2Apic => apic_id,
            ApicMode::XApic => apic_id << 24,
        }
    }

    /// In xAPIC mode a new ICR write while the previous IPI is still being
    /// delivered can be lost, so wait (bounded) for the delivery status bit.
    fn wait_icr_idle(&self) {
        if self.mode == ApicMode::X2Apic {
            return; // x2APIC has no delivery status; writes never collide.
        }
        for _ in 0..ICR_IDLE_SPINS {
            // SAFETY: reading the ICR has no side effects.
            if !unsafe { self.inner.get_ipi_delivery_status() } {
                return;
            }
            core::hint::spin_loop();
        }
        log::warn!("lapic: ICR still busy after {ICR_IDLE_SPINS} spins; sending anyway");
    }

    /// Fixed-delivery IPI to one CPU.
    pub fn send_ipi(&mut self, vector: u8, apic_id: u32) {
        self.wait_icr_idle();
        let dest = self.dest(apic_id);
        // SAFETY: a fixed IPI only raises `vector` on the target, whose IDT
        // the kernel has populated before it is marked online.
        unsafe { self.inner.send_ipi(vector, dest) };
    }

    /// Fixed-delivery IPI to every CPU but this one (one ICR write).
    pub fn send_ipi_all_but_self(&mut self, vector: u8) {
        self.wait_icr_idle();
        // SAFETY: as for `send_ipi`.
        unsafe { self.inner.send_ipi_all(vector, IpiAllShorthand::AllExcludingSelf) };
    }

    /// INIT IPI: resets the target into wait-for-SIPI.
    pub fn send_init(&mut self, apic_id: u32) {
        self.wait_icr_idle();
        let dest = self.dest(apic_id);
        // SAFETY: only used by AP bring-up on CPUs that are not running.
        unsafe { self.inner.send_init_ipi(dest) };
    }

    /// Start-up IPI: the target starts in real mode at `page << 12`.
    pub fn send_sipi(&mut self, page: u8, apic_id: u32) {
        self.wait_icr_idle();
        let dest = self.dest(apic_id);
        // SAFETY: only used by AP bring-up, after the trampoline at `page`
        // has been written.
        unsafe { self.inner.send_sipi(page, dest) };
    }

    /// Raises one timer interrupt (`TIMER_VECTOR`) after `ticks` ticks of
    /// the APIC timer (undivided bus clock: 1 GHz under QEMU).
    pub fn one_shot(&mut self, ticks: u32) {
        // SAFETY: only this CPU's timer registers change; the timer vector
        // has a handler that just acknowledges it.
        unsafe {
            self.inner.set_timer_mode(TimerMode::OneShot);
            self.inner.set_timer_divide(TimerDivide::Div1);
            self.inner.enable_timer();
            self.inner.set_timer_initial(ticks.max(1));
        }
    }

    /// Signals end of interrupt for the vector being serviced.
    pub fn end_of_interrupt(&mut self) {
        // SAFETY: writing EOI only retires the in-service interrupt.
        unsafe { self.inner.end_of_interrupt() };
    }
}

/// CPUID.1:ECX bit 21, the same test the `x2apic` crate uses.
pub fn cpu_has_x2apic() -> bool {
    let leaf1 = core::arch::x86_64::__cpuid(1);
    leaf1.ecx & (1 << 21) != 0
}
