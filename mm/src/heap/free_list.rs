//! Intrusive list of free heap objects: each free object's first word
//! holds the address of the next. The only raw memory access of the heap.

/// A stack of free objects. Address 0 ends the list.
pub struct FreeList {
    head: usize,
    len: usize,
}

impl FreeList {
    pub const fn new() -> FreeList {
        FreeList { head: 0, len: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// # Safety
    /// `addr` must be a free, writable, 8-byte aligned object of at least 8
    /// bytes that nothing else uses until it is popped again.
    pub unsafe fn push(&mut self, addr: usize) {
        // SAFETY: per the contract the object is ours to write.
        unsafe { (addr as *mut usize).write(self.head) };
        self.head = addr;
        self.len += 1;
    }

    pub fn pop(&mut self) -> Option<usize> {
        if self.head == 0 {
            return None;
        }
        let addr = self.head;
        // SAFETY: `addr` was pushed under `push`'s contract, so it is a free
        // object whose first word holds the next link.
        self.head = unsafe { (addr as *const usize).read() };
        self.len -= 1;
        Some(addr)
    }
}

impl Default for FreeList {
    fn default() -> Self {
        Self::new()
    }
}
