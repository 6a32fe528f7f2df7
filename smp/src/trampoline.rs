//! Places the real-mode AP trampoline (`trampoline.S`) and its temporary
//! page tables in low memory, and fills in its data block per AP.
//!
//! Low memory used (all below 1 MiB, kept out of every allocator):
//! `0x8000` code + data, `0x9000` PML4, `0xA000` PDPT, `0xB000` PD.

use core::ops::Range;
use core::ptr;
use core::sync::atomic::{AtomicU32, Ordering};

core::arch::global_asm!(include_str!("trampoline.S"), options(att_syntax));

extern "C" {
    static ap_trampoline_start: u8;
    static ap_trampoline_end: u8;
    static ap_tr_pml4: u8;
    static ap_tr_claim: u8;
    static ap_tr_stack: u8;
    static ap_tr_entry: u8;
    static ap_tr_arg: u8;
}

/// Physical page the SIPI vector points at.
pub const TRAMPOLINE_PHYS: u64 = 0x8000;
const PML4_PHYS: u64 = 0x9000;
const PDPT_PHYS: u64 = 0xA000;
const PD_PHYS: u64 = 0xB000;

/// Physical memory the trampoline occupies; must never be allocated.
pub const TRAMPOLINE_RESERVED: Range<x86_64::PhysAddr> =
    x86_64::PhysAddr::new(TRAMPOLINE_PHYS)..x86_64::PhysAddr::new(PD_PHYS + 0x1000);

const PRESENT_WRITABLE: u64 = 0b11;
const HUGE: u64 = 1 << 7;

/// SIPI vector: the page number of the trampoline.
pub const SIPI_PAGE: u8 = (TRAMPOLINE_PHYS >> 12) as u8;

/// Offset of a trampoline symbol from its start.
fn offset_of(sym: *const u8) -> usize {
    let start = ptr::addr_of!(ap_trampoline_start);
    sym as usize - start as usize
}

pub struct Trampoline {
    /// Virtual address of TRAMPOLINE_PHYS in the direct map.
    base: *mut u8,
    /// The temporary PML4 and the kernel's, in the direct map.
    temp_pml4: *mut u64,
    kernel_pml4: *const u64,
}

impl Trampoline {
    /// Copies the code, builds the temporary page tables (identity map of
    /// the first 2 MiB plus the kernel's upper half from `kernel_pml4_phys`).
    ///
    /// # Safety
    /// `phys_offset` must be the direct-map offset, the reserved low pages
    /// must be unused RAM, and the kernel must never run below 2 MiB.
    pub unsafe fn install(phys_offset: u64, kernel_pml4_phys: x86_64::PhysAddr) -> Trampoline {
        let kernel_pml4_phys = kernel_pml4_phys.as_u64();
        let virt = |phys: u64| (phys + phys_offset) as *mut u8;
        let (start, end) = (ptr::addr_of!(ap_trampoline_start), ptr::addr_of!(ap_trampoline_end));
        let len = end as usize - start as usize;
        assert!(len <= 0x1000, "AP trampoline is {len} bytes, more than a page");
        // SAFETY: the caller guarantees the reserved pages are ours; the
        // source is the trampoline's bytes in the kernel image.
        unsafe {
            ptr::copy_nonoverlapping(start, virt(TRAMPOLINE_PHYS), len);
            let pml4 = virt(PML4_PHYS) as *mut u64;
            let pdpt = virt(PDPT_PHYS) as *mut u64;
            let pd = virt(PD_PHYS) as *mut u64;
            ptr::write_bytes(pml4, 0, 512);
            ptr::write_bytes(pdpt, 0, 512);
            ptr::write_bytes(pd, 0, 512);
            pml4.write(PDPT_PHYS | PRESENT_WRITABLE);
            pdpt.write(PD_PHYS | PRESENT_WRITABLE);
            pd.write(PRESENT_WRITABLE | HUGE);
        }
        let t = Trampoline {
            base: virt(TRAMPOLINE_PHYS),
            temp_pml4: virt(PML4_PHYS) as *mut u64,
            kernel_pml4: (kernel_pml4_phys + phys_offset) as *const u64,
        };
        t.write_u32(offset_of(ptr::addr_of!(ap_tr_pml4)), PML4_PHYS as u32);
        t
    }

    fn field(&self, sym: *const u8) -> *mut u8 {
        // SAFETY: `sym` is one of the data-block symbols inside the copied
        // page, so the offset stays within it.
        unsafe { self.base.add(offset_of(sym)) }
    }

    fn write_u32(&self, off: usize, v: u32) {
        // SAFETY: in-page, 4-aligned field of the trampoline data block.
        unsafe { (self.base.add(off) as *mut u32).write_volatile(v) }
    }

    /// Prepares the data block for the next AP.
    pub fn arm(&self, stack_top: u64, entry: u64, arg: u64) {
        // The kernel lives in the upper half; share its top-level entries,
        // copied now so mappings made since `install` (this AP's stack) are
        // visible.
        for i in 256..512 {
            // SAFETY: both tables are whole pages in the direct map (see
            // `install`); the temporary one is only read by APs not yet started.
            unsafe { self.temp_pml4.add(i).write(self.kernel_pml4.add(i).read()) };
        }
        // SAFETY: the fields are 8-aligned
        // (`.balign 8` in trampoline.S) and inside the copied page.
        unsafe {
            (self.field(ptr::addr_of!(ap_tr_stack)) as *mut u64).write_volatile(stack_top);
            (self.field(ptr::addr_of!(ap_tr_entry)) as *mut u64).write_volatile(entry);
            (self.field(ptr::addr_of!(ap_tr_arg)) as *mut u64).write_volatile(arg);
        }
        self.claim().store(0, Ordering::Release);
    }

    /// The claim word the AP takes with `lock xchg`.
    pub fn claim(&self) -> &AtomicU32 {
        // SAFETY: 4-aligned u32 inside the copied page, which stays mapped
        // and reserved for the life of the kernel.
        unsafe { AtomicU32::from_ptr(self.field(ptr::addr_of!(ap_tr_claim)) as *mut u32) }
    }
}
