//! `tracer`: a QEMU TCG plugin that measures what predicts scaling on a
//! many-core machine whatever the host has (the method of RadixVM's
//! mtrace, on stock QEMU). Inside windows the guest marks (one per
//! measured benchmark repetition) it counts per vCPU: guest instructions,
//! locked instructions, IPIs sent, and accesses to conflicting lines (a
//! 64-byte line by guest-physical address that two or more vCPUs accessed
//! in the window, at least one of them writing). It writes one JSON line
//! per window to the file named by its `out=` argument.
//!
//! Licence: this crate is GPL-2.0-or-later, unlike the rest of the
//! workspace (MIT OR Apache-2.0), because it links the `qemu-plugin` crate,
//! which is GPL-2.0-or-later. Nothing else in the workspace depends on it:
//! xtask builds it as a separate shared object and reads its output file.
//!
//! The glue to QEMU (`plugin`) is left out of host unit tests, which
//! cannot resolve QEMU's symbols; the logic it calls is tested there.

pub mod decode;
pub mod window;

#[cfg(not(test))]
mod plugin;

#[cfg(not(test))]
qemu_plugin::register!(plugin::Tracer::default());
