//! Which kernel symbol an address belongs to, from the kernel ELF's symbol
//! table, so a conflicting line can be named (`frames::FRAMES+0x40`).

use anyhow::{Context, Result};
use object::{Object, ObjectSection, ObjectSymbol, SectionKind, SymbolKind};
use std::path::Path;

pub struct Symbols {
    /// (start, size, demangled name), sorted by start.
    spans: Vec<(u64, u64, String)>,
    /// Link-time addresses of the tracer's window markers in the code.
    markers: Vec<u64>,
}

/// The guest's window marker (`kernel/src/trace_mark.rs`, the tracer's
/// `decode::MARKER`).
pub const MARKER: [u8; 8] = [0x0f, 0x1f, 0x84, 0x00, 0xce, 0x7a, 0xce, 0x5a];

impl Symbols {
    pub fn read(elf: &Path) -> Result<Symbols> {
        let data = std::fs::read(elf).with_context(|| format!("reading {}", elf.display()))?;
        Symbols::parse(&data).with_context(|| format!("reading the symbols of {}", elf.display()))
    }

    pub fn parse(data: &[u8]) -> Result<Symbols> {
        let file = object::File::parse(data)?;
        let mut spans: Vec<(u64, u64, String)> = file
            .symbols()
            .filter(|s| matches!(s.kind(), SymbolKind::Data | SymbolKind::Text | SymbolKind::Tls) && s.size() > 0)
            .filter_map(|s| Some((s.address(), s.size(), format!("{:#}", rustc_demangle::demangle(s.name().ok()?)))))
            .collect();
        spans.sort();
        let mut markers = Vec::new();
        for section in file.sections().filter(|s| s.kind() == SectionKind::Text) {
            let data = section.data()?;
            markers.extend(
                data.windows(MARKER.len())
                    .enumerate()
                    .filter(|(_, w)| *w == MARKER)
                    .map(|(i, _)| section.address() + i as u64),
            );
        }
        markers.sort_unstable();
        Ok(Symbols { spans, markers })
    }

    /// How far the kernel was moved from its link-time addresses (it is
    /// position-independent and the bootloader picks where it goes), from
    /// where a window's begin and end markers ran: the page-aligned offset
    /// that puts both on markers of the ELF.
    pub fn load_bias(&self, begin_pc: u64, end_pc: u64) -> Option<u64> {
        self.markers
            .iter()
            .map(|&m| begin_pc.wrapping_sub(m))
            .find(|&bias| bias % 4096 == 0 && self.markers.binary_search(&end_pc.wrapping_sub(bias)).is_ok())
    }

    /// `name` or `name+0xoff` for the symbol that contains `addr`.
    pub fn name(&self, addr: u64) -> Option<String> {
        let i = self.spans.partition_point(|&(start, ..)| start <= addr).checked_sub(1)?;
        let (start, size, name) = &self.spans[i];
        (addr - start < *size).then(|| match addr - start {
            0 => name.clone(),
            off => format!("{name}+{off:#x}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_addresses_inside_symbols_only() {
        let s = Symbols {
            spans: vec![(0x1000, 0x40, "a::COUNTER".into()), (0x1100, 8, "b::FLAG".into())],
            markers: vec![],
        };
        assert_eq!(s.name(0x1000).as_deref(), Some("a::COUNTER"));
        assert_eq!(s.name(0x1008).as_deref(), Some("a::COUNTER+0x8"));
        assert_eq!(s.name(0x1040), None, "past the end");
        assert_eq!(s.name(0x1104).as_deref(), Some("b::FLAG+0x4"));
        assert_eq!(s.name(0xfff), None);
    }

    #[test]
    fn the_load_bias_puts_both_markers_on_the_elf_markers() {
        let s = Symbols { spans: vec![], markers: vec![0x64790, 0x647ed, 0x90000] };
        let base = 0xffff_8000_0000_0000;
        assert_eq!(s.load_bias(base + 0x64790, base + 0x647ed), Some(base));
        assert_eq!(s.load_bias(base + 0x647ed, base + 0x64790), Some(base));
        assert_eq!(s.load_bias(base + 0x64791, base + 0x647ed), None, "not page-aligned");
        assert_eq!(s.load_bias(base + 0x64790, base + 0x70000), None, "end on no marker");
    }

    #[test]
    fn reads_a_real_elf() {
        // This test binary is an ELF with a symbol table: every sized
        // symbol must name its own start.
        let s = Symbols::read(&std::env::current_exe().unwrap()).unwrap();
        assert!(s.spans.len() > 100);
        let (start, _, name) = s.spans.iter().find(|(_, size, _)| *size > 1).unwrap().clone();
        assert_eq!(s.name(start), Some(name.clone()));
        assert_eq!(s.name(start + 1), Some(format!("{name}+0x1")));
    }
}
