//! Hardware-facing drivers for the PC platform QEMU emulates.
//!
//! Each module owns one device and keeps its `unsafe` (port I/O, MMIO, MSRs)
//! inside. Nothing here depends on the kernel's other crates; physical
//! memory is reached through the direct-map offset the caller passes in.
#![cfg_attr(not(test), no_std)]

pub mod acpi_tables;
pub mod calibrate;
pub mod fw_cfg;
pub mod hpet;
pub mod lapic;
pub mod pci;
pub mod pic;
pub mod pit;
pub mod pm_timer;
pub mod qemu_exit;
pub mod serial;
pub mod tsc;
