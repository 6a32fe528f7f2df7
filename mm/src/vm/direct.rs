//! The direct map's address arithmetic, bounds-checked: `virtualize`
//! turns a physical address into its direct-map address and `phys` goes
//! back, each refusing addresses the window does not cover.

use super::VmError;
use crate::frame::PhysAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirectWindow {
    offset: u64,
    /// Physical bytes mapped, from physical 0.
    len: u64,
}

impl DirectWindow {
    /// The window mapping physical `0..len` at `offset`. `None` if it
    /// would wrap.
    pub fn new(offset: u64, len: u64) -> Option<DirectWindow> {
        offset.checked_add(len)?;
        Some(DirectWindow { offset, len })
    }

    /// Direct-map address of `phys`.
    pub fn virtualize(&self, phys: PhysAddr) -> Result<u64, VmError> {
        let phys = phys.as_u64();
        if phys >= self.len {
            return Err(VmError::BadPhys { phys });
        }
        Ok(self.offset + phys)
    }

    /// Physical address of the direct-map address `virt`.
    pub fn phys(&self, virt: u64) -> Result<PhysAddr, VmError> {
        match virt.checked_sub(self.offset) {
            // Below `len`, which `new` bounds by the offset's room: at
            // most 52 bits for any real direct map; truncation never bites.
            Some(p) if p < self.len => Ok(PhysAddr::new_truncate(p)),
            _ => Err(VmError::NotDirectMapped { virt }),
        }
    }

    /// Physical bytes the window covers.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_inside_and_refuses_outside() {
        let w = DirectWindow::new(0xFFFF_8000_0000_0000, 1 << 30).unwrap();
        assert_eq!(w.virtualize(PhysAddr::new(0x1234)), Ok(0xFFFF_8000_0000_1234));
        assert_eq!(w.phys(0xFFFF_8000_0000_1234), Ok(PhysAddr::new(0x1234)));
        assert_eq!(w.virtualize(PhysAddr::new(1 << 30)), Err(VmError::BadPhys { phys: 1 << 30 }));
        assert_eq!(w.phys(0xFFFF_8000_4000_0000), Err(VmError::NotDirectMapped { virt: 0xFFFF_8000_4000_0000 }));
        assert_eq!(w.phys(0x1000), Err(VmError::NotDirectMapped { virt: 0x1000 }));
        assert_eq!(DirectWindow::new(u64::MAX - 5, 10), None);
    }
}
