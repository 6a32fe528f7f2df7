//! What the tracer recognises in an instruction's bytes (at translation
//! time) and in the values it reads when one runs. Pure functions, tested
//! on the host.

/// The window marker: `nop dword ptr [rax + rax*1 + 0x5ace7ace]`, a
/// multi-byte NOP (it touches no memory and no flags) whose displacement no
/// compiler emits. The guest puts the payload in RAX (see [`Mark`]).
pub const MARKER: [u8; 8] = [0x0f, 0x1f, 0x84, 0x00, 0xce, 0x7a, 0xce, 0x5a];

/// High 16 bits of every marker payload, so a stray NOP with that
/// displacement (and some other value in RAX) is not taken for a mark.
pub const PAYLOAD_TAG: u64 = 0x7ace;

/// The x2APIC ICR (MSR 0x830) and the xAPIC ICR low word (at the default
/// APIC base): a write to either sends an IPI.
pub const X2APIC_ICR_MSR: u32 = 0x830;
pub const XAPIC_ICR_LOW: u64 = 0xfee0_0300;

/// A window mark decoded from RAX.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    Begin(u32),
    End(u32),
}

impl Mark {
    /// The payload the guest puts in RAX: tag, kind bit 32, sequence.
    pub fn payload(self) -> u64 {
        let (kind, seq) = match self {
            Mark::Begin(s) => (1u64, s),
            Mark::End(s) => (0, s),
        };
        PAYLOAD_TAG << 48 | kind << 32 | u64::from(seq)
    }

    pub fn from_payload(rax: u64) -> Option<Mark> {
        if rax >> 48 != PAYLOAD_TAG || (rax >> 33) & 0x7fff != 0 {
            return None;
        }
        let seq = rax as u32;
        Some(if rax >> 32 & 1 == 1 { Mark::Begin(seq) } else { Mark::End(seq) })
    }
}

/// Legacy prefixes and the REX byte of an x86-64 instruction, then the rest.
fn split_prefixes(bytes: &[u8]) -> (bool, &[u8]) {
    let mut lock = false;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            0xf0 => lock = true,
            0xf2 | 0xf3 | 0x2e | 0x36 | 0x3e | 0x26 | 0x64 | 0x65 | 0x66 | 0x67 => {}
            _ => break,
        }
        i += 1;
    }
    if let Some(0x40..=0x4f) = bytes.get(i) {
        i += 1;
    }
    (lock, &bytes[i.min(bytes.len())..])
}

/// A locked read-modify-write: a `lock` prefix, or `xchg` (0x86/0x87) with
/// a memory operand, which the CPU locks implicitly.
pub fn is_locked(bytes: &[u8]) -> bool {
    let (lock, rest) = split_prefixes(bytes);
    lock || match rest {
        [0x86 | 0x87, modrm, ..] => modrm >> 6 != 0b11,
        _ => false,
    }
}

/// `wrmsr` (0F 30).
pub fn is_wrmsr(bytes: &[u8]) -> bool {
    matches!(split_prefixes(bytes).1, [0x0f, 0x30, ..])
}

pub fn is_marker(bytes: &[u8]) -> bool {
    bytes == MARKER
}

/// What one ICR write sends, given the ICR's low 32 bits (the same layout
/// in xAPIC and x2APIC): its vector when it is an IPI (fixed or
/// lowest-priority delivery, bits 8-10 000 or 001), `None` for INIT, SIPI
/// and the other deliveries a benchmark never sends. One write is one IPI
/// sent whatever its destination shorthand, as the kernel counts them (a
/// broadcast to all but self is one write).
pub fn icr_send(icr_low: u32) -> Option<u8> {
    let mode = (icr_low >> 8) & 0b111;
    (mode <= 1).then_some(icr_low as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locked_instructions() {
        assert!(is_locked(&[0xf0, 0x48, 0x0f, 0xc1, 0x07]), "lock xadd [rdi], rax");
        assert!(is_locked(&[0xf0, 0x48, 0xff, 0x07]), "lock inc qword [rdi]");
        assert!(is_locked(&[0x66, 0xf0, 0x0f, 0xb1, 0x0e]), "prefix before lock");
        assert!(is_locked(&[0x48, 0x87, 0x07]), "xchg [rdi], rax");
        assert!(is_locked(&[0x86, 0x47, 0x08]), "xchg [rdi+8], al");
        assert!(!is_locked(&[0x48, 0x87, 0xc3]), "xchg rbx, rax: no memory");
        assert!(!is_locked(&[0x48, 0x8b, 0x07]), "mov rax, [rdi]");
        assert!(!is_locked(&[0x48, 0x0f, 0xb1, 0x0e]), "cmpxchg without lock");
        assert!(!is_locked(&[0x87]), "truncated");
        assert!(!is_locked(&[]));
        // A REX byte is not a prefix of what follows it when it is the opcode.
        assert!(!is_locked(&[0x40]));
    }

    #[test]
    fn wrmsr_and_marker() {
        assert!(is_wrmsr(&[0x0f, 0x30]));
        assert!(!is_wrmsr(&[0x0f, 0x32]), "rdmsr");
        assert!(!is_wrmsr(&[0x0f]));
        assert!(is_marker(&MARKER));
        assert!(!is_marker(&[0x0f, 0x1f, 0x84, 0x00, 0, 0, 0, 0]), "the compiler's padding NOP");
        assert!(!is_locked(&MARKER));
    }

    #[test]
    fn mark_payloads_round_trip_and_reject_strays() {
        for m in [Mark::Begin(0), Mark::End(7), Mark::Begin(u32::MAX)] {
            assert_eq!(Mark::from_payload(m.payload()), Some(m));
        }
        assert_eq!(Mark::Begin(5).payload(), 0x7ace_0001_0000_0005);
        assert_eq!(Mark::from_payload(5), None);
        assert_eq!(Mark::from_payload(0x7ace_0003_0000_0005), None, "unknown kind bits");
        assert_eq!(Mark::from_payload(0x7acf_0001_0000_0005), None);
    }

    #[test]
    fn icr_writes() {
        assert_eq!(icr_send(0xf0), Some(0xf0), "fixed, physical destination");
        assert_eq!(icr_send(0xf0 | 0b11 << 18), Some(0xf0), "all but self: one write");
        assert_eq!(icr_send(0xf1 | 0b10 << 18), Some(0xf1), "all including self");
        assert_eq!(icr_send(0xf2 | 0b001 << 8), Some(0xf2), "lowest priority");
        assert_eq!(icr_send(0x4500), None, "INIT");
        assert_eq!(icr_send(0x4608), None, "SIPI");
    }
}
