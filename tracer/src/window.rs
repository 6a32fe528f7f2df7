//! One measurement window: what each vCPU did (its own map of lines, filled
//! without sharing anything with the other vCPUs), and the merge at the
//! window's end that finds the conflicting lines. Pure, tested on the host.

use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

/// Cache line size the tracer assumes (x86).
pub const LINE_SHIFT: u32 = 6;
/// Conflicting lines listed per window, most accessed first.
pub const TOP_LINES: usize = 8;

/// A multiplicative hash for line numbers: the map is on the hot path of
/// every memory access and SipHash would dominate it.
#[derive(Default)]
pub struct LineHasher(u64);

impl Hasher for LineHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (n ^ n >> 29).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type LineMap = HashMap<u64, LineUse, BuildHasherDefault<LineHasher>>;

/// One vCPU's accesses to one line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LineUse {
    pub reads: u64,
    pub writes: u64,
    /// A virtual address this vCPU used for the line (the last one).
    pub vaddr: u64,
}

/// What one vCPU did in the current window, apart from the instruction
/// counts (which QEMU keeps inline).
#[derive(Debug, Default)]
pub struct VcpuLog {
    pub lines: LineMap,
    /// IPIs this vCPU sent (ICR writes), by vector.
    pub ipis: BTreeMap<u8, u64>,
}

impl VcpuLog {
    pub fn access(&mut self, phys: u64, vaddr: u64, store: bool) {
        let u = self.lines.entry(phys >> LINE_SHIFT).or_default();
        if store {
            u.writes += 1;
        } else {
            u.reads += 1;
        }
        u.vaddr = vaddr;
    }

    pub fn ipi(&mut self, sent: u64, vector: u8) {
        if sent > 0 {
            *self.ipis.entry(vector).or_default() += sent;
        }
    }
}

/// One vCPU's totals for a window (a line of the output).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VcpuTotals {
    pub insns: u64,
    pub locked: u64,
    pub ipis: u64,
    /// Its reads and writes to conflicting lines.
    pub conflicting: u64,
}

/// A conflicting line: two or more vCPUs accessed it, at least one wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConflictLine {
    /// Guest-physical address of the line's first byte.
    pub phys: u64,
    /// A virtual address some vCPU used for it (the lowest vCPU's).
    pub vaddr: u64,
    /// Reads and writes of all vCPUs.
    pub accesses: u64,
    pub writes: u64,
    pub vcpus: Vec<u32>,
}

/// The output for one window: one JSON line of the tracer's file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WindowReport {
    pub seq: u32,
    /// Virtual addresses of the begin and end markers that ran: the host
    /// finds them in the kernel ELF to learn where the (position-
    /// independent) kernel was loaded, to name lines by symbol.
    pub begin_pc: u64,
    pub end_pc: u64,
    /// Indexed by vCPU.
    pub vcpus: Vec<VcpuTotals>,
    /// IPIs of all vCPUs by vector (decimal keys).
    pub ipi_vectors: BTreeMap<u8, u64>,
    /// Conflicting lines in the window (all of them, not only the listed).
    pub conflicting_lines: u64,
    /// The `TOP_LINES` most accessed conflicting lines.
    pub lines: Vec<ConflictLine>,
}

/// Merges the vCPUs' logs of window `seq`; `counts[v]` is vCPU v's
/// (instructions, locked instructions) in the window.
pub fn merge(seq: u32, logs: &[VcpuLog], counts: &[(u64, u64)]) -> WindowReport {
    // Line -> (per-vCPU uses), in vCPU order.
    let mut all: HashMap<u64, Vec<(u32, LineUse)>, BuildHasherDefault<LineHasher>> = HashMap::default();
    for (v, log) in logs.iter().enumerate() {
        for (&line, &u) in &log.lines {
            all.entry(line).or_default().push((v as u32, u));
        }
    }
    let mut vcpus: Vec<VcpuTotals> = (0..logs.len().max(counts.len()))
        .map(|v| {
            let (insns, locked) = counts.get(v).copied().unwrap_or_default();
            let ipis = logs.get(v).map_or(0, |l| l.ipis.values().sum());
            VcpuTotals { insns, locked, ipis, conflicting: 0 }
        })
        .collect();
    let mut lines = Vec::new();
    for (line, mut uses) in all {
        let writes: u64 = uses.iter().map(|(_, u)| u.writes).sum();
        if uses.len() < 2 || writes == 0 {
            continue;
        }
        uses.sort_by_key(|(v, _)| *v);
        for (v, u) in &uses {
            vcpus[*v as usize].conflicting += u.reads + u.writes;
        }
        lines.push(ConflictLine {
            phys: line << LINE_SHIFT,
            vaddr: uses[0].1.vaddr,
            accesses: uses.iter().map(|(_, u)| u.reads + u.writes).sum(),
            writes,
            vcpus: uses.iter().map(|(v, _)| *v).collect(),
        });
    }
    let conflicting_lines = lines.len() as u64;
    lines.sort_by(|a, b| b.accesses.cmp(&a.accesses).then(a.phys.cmp(&b.phys)));
    lines.truncate(TOP_LINES);
    let mut ipi_vectors = BTreeMap::new();
    for log in logs {
        for (&vec, &n) in &log.ipis {
            *ipi_vectors.entry(vec).or_default() += n;
        }
    }
    WindowReport { seq, begin_pc: 0, end_pc: 0, vcpus, ipi_vectors, conflicting_lines, lines }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(accesses: &[(u64, bool)]) -> VcpuLog {
        let mut l = VcpuLog::default();
        for &(phys, store) in accesses {
            l.access(phys, phys | 0xffff_8000_0000_0000, store);
        }
        l
    }

    #[test]
    fn a_line_two_cpus_write_conflicts_with_every_access_counted() {
        // Both vCPUs increment one counter (read + write) 3 times; same
        // line, different bytes.
        let a =
            log(&[(0x1000, false), (0x1000, true), (0x1000, false), (0x1000, true), (0x1000, false), (0x1000, true)]);
        let b =
            log(&[(0x1008, false), (0x1008, true), (0x1008, false), (0x1008, true), (0x1008, false), (0x1008, true)]);
        let r = merge(4, &[a, b], &[(100, 3), (90, 3)]);
        assert_eq!(r.seq, 4);
        assert_eq!(r.conflicting_lines, 1);
        assert_eq!(
            r.lines,
            [ConflictLine { phys: 0x1000, vaddr: 0xffff_8000_0000_1000, accesses: 12, writes: 6, vcpus: vec![0, 1] }]
        );
        assert_eq!(r.vcpus[0], VcpuTotals { insns: 100, locked: 3, ipis: 0, conflicting: 6 });
        assert_eq!(r.vcpus[1].conflicting, 6);
    }

    #[test]
    fn private_lines_and_shared_reads_do_not_conflict() {
        // Private counters a line apart, and a line both only read.
        let a = log(&[(0x1000, true), (0x1000, true), (0x3000, false)]);
        let b = log(&[(0x1040, true), (0x3008, false), (0x3008, false)]);
        let r = merge(0, &[a, b], &[(1, 0), (1, 0)]);
        assert_eq!(r.conflicting_lines, 0);
        assert!(r.lines.is_empty());
        assert!(r.vcpus.iter().all(|v| v.conflicting == 0));
    }

    #[test]
    fn one_writer_many_readers_conflicts_and_lines_are_ranked() {
        let a = log(&[(0x2000, true)]);
        let b = log(&[(0x2000, false), (0x5000, true), (0x5000, true), (0x5000, true)]);
        let c = log(&[(0x2010, false), (0x5000, false), (0x9000, true)]);
        let r = merge(1, &[a, b, c], &[]);
        assert_eq!(r.conflicting_lines, 2);
        assert_eq!(
            r.lines.iter().map(|l| (l.phys, l.accesses, l.writes)).collect::<Vec<_>>(),
            [(0x5000, 4, 3), (0x2000, 3, 1)]
        );
        assert_eq!(r.lines[1].vcpus, [0, 1, 2]);
        assert_eq!(r.vcpus.iter().map(|v| v.conflicting).collect::<Vec<_>>(), [1, 4, 2]);
    }

    #[test]
    fn only_the_top_lines_are_listed_but_all_are_counted() {
        let lines: Vec<(u64, bool)> = (0..20u64).map(|i| (i << 6, true)).collect();
        let r = merge(0, &[log(&lines), log(&lines)], &[]);
        assert_eq!(r.conflicting_lines, 20);
        assert_eq!(r.lines.len(), TOP_LINES);
        assert_eq!(r.vcpus[0].conflicting, 20);
    }

    #[test]
    fn ipis_are_summed_per_vcpu_and_per_vector() {
        let mut a = VcpuLog::default();
        a.ipi(1, 0xf0);
        a.ipi(3, 0xf0);
        a.ipi(0, 0x10);
        let mut b = VcpuLog::default();
        b.ipi(1, 0xf1);
        let r = merge(0, &[a, b], &[]);
        assert_eq!(r.vcpus.iter().map(|v| v.ipis).collect::<Vec<_>>(), [4, 1]);
        assert_eq!(r.ipi_vectors, BTreeMap::from([(0xf0, 4), (0xf1, 1)]));
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains(r#""ipi_vectors":{"240":4,"241":1}"#), "{json}");
    }
}
