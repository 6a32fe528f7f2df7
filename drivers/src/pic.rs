//! The legacy 8259 interrupt controllers. The kernel uses the local APIC
//! only, but the firmware leaves the PICs delivering the PIT on vector 8,
//! which would look like a double fault. Remap them above the exception
//! vectors and mask every line.

use x86_64::instructions::port::Port;

/// Where the PICs' vectors land after `disable`; a spurious IRQ 7 or 15
/// can still arrive on `SPURIOUS_MASTER` / `SPURIOUS_SLAVE`.
pub const MASTER_BASE: u8 = 0x20;
pub const SLAVE_BASE: u8 = 0x28;
pub const SPURIOUS_MASTER: u8 = MASTER_BASE + 7;
pub const SPURIOUS_SLAVE: u8 = SLAVE_BASE + 7;

pub fn disable() {
    let (mut cmd1, mut data1) = (Port::<u8>::new(0x20), Port::<u8>::new(0x21));
    let (mut cmd2, mut data2) = (Port::<u8>::new(0xA0), Port::<u8>::new(0xA1));
    // SAFETY: these are the 8259 ports on every PC; the ICW sequence below
    // is the standard re-initialisation, and masking all lines stops them
    // from raising interrupts at all.
    unsafe {
        cmd1.write(0x11); // ICW1: init, expect ICW4
        cmd2.write(0x11);
        data1.write(MASTER_BASE); // ICW2: vector base
        data2.write(SLAVE_BASE);
        data1.write(4); // ICW3: slave on IRQ2
        data2.write(2);
        data1.write(0x01); // ICW4: 8086 mode
        data2.write(0x01);
        data1.write(0xFF); // mask everything
        data2.write(0xFF);
    }
}
