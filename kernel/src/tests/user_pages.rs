//! A user address space for the ring-3 tests: the program, a data page, a
//! stack page and a supervisor-only page, mapped with `mm::vm` into a
//! fresh user space that shares only the kernel half. `run` activates the
//! space on the running CPU around each ring-3 run.
//!
//! The kernel reads and writes these pages only through the direct map,
//! never through their user addresses, which SMAP forbids.

use mm::vm::{AddressSpace, Flags, PAGE_SIZE};

use super::{failure, Failure};
use crate::user_program::user_program;
use crate::usermode::{run_user, UserExit};
use crate::{memory, vm};

/// Where the pages go: an arbitrary lower-half address.
const BASE: u64 = 0x0000_1000_0000_0000;
/// The program (`user_program`): user, read-only, executable.
pub const CODE: u64 = BASE;
/// User, writable, not executable.
pub const DATA: u64 = BASE + PAGE_SIZE;
/// User, writable, not executable.
pub const STACK: u64 = BASE + 2 * PAGE_SIZE;
/// Present and writable but not user: ring 3 may not touch it.
pub const SUPERVISOR: u64 = BASE + 3 * PAGE_SIZE;

const LAYOUT: [(u64, Flags); 4] = [
    (CODE, Flags::USER.union(Flags::EXEC)),
    (DATA, Flags::USER.union(Flags::WRITE)),
    (STACK, Flags::USER.union(Flags::WRITE)),
    (SUPERVISOR, Flags::WRITE),
];

/// The program uses no stack (it never pushes or calls, and interrupts
/// from ring 3 switch to the TSS rsp0 stack), so each CPU gets a small
/// slice of the stack page.
const STACK_SLICE: u64 = 64;

/// The user space and its pages; destroyed (tables and frames freed) on
/// drop.
pub struct UserPages {
    space: Option<AddressSpace>,
}

impl UserPages {
    /// Maps `LAYOUT` with fresh zeroed frames (`vmalloc`) and copies the
    /// program into the code page.
    pub fn map() -> Result<UserPages, Failure> {
        let vm = vm::get();
        let space = vm.new_user_space().map_err(|e| failure(format_args!("new user space: {e:?}")))?;
        let pages = UserPages { space: Some(space) };
        for (virt, flags) in LAYOUT {
            let got = vm.vmalloc(pages.space(), virt, virt + PAGE_SIZE, 1, flags);
            if got != Ok(virt) {
                return Err(failure(format_args!("vmalloc at {virt:#x}: {got:?}")));
            }
        }
        let program = user_program();
        if program.len() > PAGE_SIZE as usize {
            return Err(failure(format_args!("the user program ({} bytes) does not fit a page", program.len())));
        }
        // SAFETY: the code frame is ours (just mapped) and a page long, and
        // the program fits in it (checked above).
        unsafe { core::ptr::copy_nonoverlapping(program.as_ptr(), pages.direct(CODE) as *mut u8, program.len()) };
        Ok(pages)
    }

    fn space(&self) -> &AddressSpace {
        self.space.as_ref().expect("space lives until drop")
    }

    /// Runs the program's `entry` in this space on the running CPU, with
    /// rdi = `arg0`, rsi = `arg1`.
    pub fn run(&self, entry: u64, arg0: u64, arg1: u64) -> UserExit {
        let stack_top = STACK + STACK_SLICE * (smp::percpu::current_index() as u64 + 1);
        // SAFETY: the kernel reaches the writable user pages (DATA, STACK)
        // only through raw direct-map pointers, never references; every
        // entry ends; none loads a segment register.
        self.while_active(|| unsafe { run_user(CODE + entry, stack_top, arg0, arg1) })
    }

    /// Runs `f` with this space active on the running CPU (for kernel
    /// accesses to user addresses, which SMAP and SMEP must stop).
    pub fn while_active<R>(&self, f: impl FnOnce() -> R) -> R {
        let _active = vm::get().activate(self.space()).expect("a replica for the user space");
        f()
    }

    /// Where user address `virt` (inside one of our pages) is in the
    /// direct map.
    fn direct(&self, virt: u64) -> u64 {
        let phys = vm::get().map_get(self.space(), virt).expect("one of our pages").phys.as_u64();
        memory::virt_of(phys)
    }

    /// The u64 at user address `virt`, read through the direct map.
    pub fn read(&self, virt: u64) -> u64 {
        // SAFETY: the frame is ours and mapped for as long as `self` lives;
        // ring 3 writes it only while the caller waits in `run_user`.
        unsafe { (self.direct(virt) as *const u64).read_volatile() }
    }

    /// Writes the u64 at user address `virt` through the direct map.
    pub fn write(&self, virt: u64, value: u64) {
        // SAFETY: as in `read`.
        unsafe { (self.direct(virt) as *mut u64).write_volatile(value) }
    }

    /// The bytes of the code page, read through the direct map.
    pub fn code_bytes(&self) -> &[u8] {
        // SAFETY: the code frame is ours, a page long, and nothing writes
        // it after `map` (ring 3 may not: it is read-only).
        unsafe { core::slice::from_raw_parts(self.direct(CODE) as *const u8, PAGE_SIZE as usize) }
    }
}

impl Drop for UserPages {
    /// Destroys the space: it is active nowhere (every `run` deactivates),
    /// so no CPU can hold its translations and its frames and tables go
    /// straight back.
    fn drop(&mut self) {
        if let Some(space) = self.space.take() {
            if let Err((e, space)) = vm::get().destroy_space(space) {
                log::error!("user_pages: destroying the space failed ({e:?}); its memory is leaked");
                // The leak is meant: `forget` keeps it a leak should the
                // space ever own what it frees on drop, which is why
                // clippy's `forget_non_drop` is overruled here.
                #[allow(clippy::forget_non_drop)]
                core::mem::forget(space);
            }
        }
    }
}
